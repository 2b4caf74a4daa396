//! The operator's Kubernetes Events (events.k8s.io/v1), published by a
//! recorder of its own instead of kube-runtime's `Recorder`, which keeps a
//! full copy of every Event it published and scans all of them under a lock
//! on every publish (O(n) per Event, O(n^2) in a burst, and about 2.8 KiB of
//! memory per job until the cache's TTL).
//!
//! Here:
//! - Events are aggregated by (object, reason): a repeat within
//!   [`SERIES_WINDOW_MS`] of the last one becomes a `series` update (count,
//!   lastObservedTime) of the first Event instead of a new Event, as
//!   client-go's events/v1 recorder does.
//! - What is remembered for that is small (the Event's name, a count, a
//!   time) and bounded: an LRU cache of [`CACHE_CAPACITY`] keys; an evicted
//!   key only means its next repeat starts a new Event.
//! - Publishing never waits: notes go into a bounded queue
//!   ([`QUEUE_CAPACITY`]) drained by one task with at most [`IN_FLIGHT`]
//!   requests at once; when the queue is full (an API server that cannot
//!   keep up) a note is dropped and counted, as the Kubernetes event
//!   broadcaster does, so Events never hold back status writes or memory.

use std::hash::{Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use lru::LruCache;
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::error::is_status;

/// Keys (object, reason) remembered for aggregation.
pub const CACHE_CAPACITY: usize = 4096;
/// Notes waiting to be sent; beyond, new ones are dropped.
pub const QUEUE_CAPACITY: usize = 1024;
/// Event requests in flight at once.
pub const IN_FLIGHT: usize = 8;
/// A repeat within this long of the last occurrence updates the series.
pub const SERIES_WINDOW_MS: i64 = 6 * 60 * 1000;

/// Normal or Warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// One Event to publish about an object.
#[derive(Debug, Clone)]
pub struct Note {
    pub regarding: ObjectReference,
    pub type_: EventType,
    pub reason: String,
    pub action: String,
    pub note: Option<String>,
}

/// What aggregation is keyed on: the object (with its UID, so a new object
/// of the same name starts afresh) and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    namespace: String,
    name: String,
    uid: String,
    reason: String,
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.uid.hash(state);
        self.name.hash(state);
        self.reason.hash(state);
    }
}

impl Key {
    fn of(note: &Note) -> Key {
        let r = &note.regarding;
        Key {
            namespace: r.namespace.clone().unwrap_or_default(),
            name: r.name.clone().unwrap_or_default(),
            uid: r.uid.clone().unwrap_or_default(),
            reason: note.reason.clone(),
        }
    }
}

/// The Event a key was last published as.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    event: String,
    count: i32,
    last_ms: i64,
}

/// What to send for a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A new Event of this name.
    Create { name: String },
    /// The series of the existing Event of this name now counts `count`.
    Series { name: String, count: i32 },
}

/// The aggregation decisions, without I/O: a bounded LRU of what was
/// published.
pub struct Aggregator {
    cache: LruCache<Key, Seen>,
    /// Makes names unique among Events created in the same millisecond.
    seq: u32,
}

impl Aggregator {
    pub fn new(capacity: usize) -> Self {
        Aggregator {
            cache: LruCache::new(NonZeroUsize::new(capacity.max(1)).expect("capacity >= 1")),
            seq: 0,
        }
    }

    /// Keys remembered.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// Decides what `note`, observed at `now_ms`, is sent as, and remembers it.
    pub fn decide(&mut self, note: &Note, now_ms: i64) -> Delivery {
        let key = Key::of(note);
        if let Some(seen) = self.cache.get_mut(&key)
            && now_ms - seen.last_ms < SERIES_WINDOW_MS
        {
            seen.count += 1;
            seen.last_ms = now_ms;
            return Delivery::Series {
                name: seen.event.clone(),
                count: seen.count,
            };
        }
        let object = if key.name.is_empty() {
            "vision-operator"
        } else {
            &key.name
        };
        // Unique like kube's and client-go's: the object's name and the time.
        self.seq = self.seq.wrapping_add(1);
        let name = format!("{object}.{:x}{:08x}", now_ms.max(0), self.seq);
        self.cache.put(
            key,
            Seen {
                event: name.clone(),
                count: 1,
                last_ms: now_ms,
            },
        );
        Delivery::Create { name }
    }

    /// The Event sent for `note` is not there (deleted, expired, or its
    /// create failed): its next repeat starts a new one.
    pub fn forget(&mut self, note: &Note) {
        self.cache.pop(&Key::of(note));
    }
}

/// The publishing side: cheap to clone, never waits.
#[derive(Clone)]
pub struct Events {
    tx: mpsc::Sender<Note>,
    dropped: Arc<AtomicU64>,
}

impl Events {
    /// The publisher and the task that sends its notes (run it for as long
    /// as Events are published).
    pub fn new(
        client: Client,
        controller: String,
        instance: Option<String>,
    ) -> (
        Events,
        impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let sender = Sender {
            client,
            instance: instance.unwrap_or_else(|| controller.clone()),
            controller,
            aggregator: Mutex::new(Aggregator::new(CACHE_CAPACITY)),
        };
        let run = async move {
            let sender = Arc::new(sender);
            futures::stream::poll_fn({
                let mut rx = rx;
                move |cx| rx.poll_recv(cx)
            })
            .for_each_concurrent(IN_FLIGHT, |note| {
                let sender = sender.clone();
                async move { sender.send(note).await }
            })
            .await;
        };
        (
            Events {
                tx,
                dropped: Arc::default(),
            },
            run,
        )
    }

    /// Queues `note`; drops it (and counts it) if the queue is full.
    pub fn publish(&self, note: Note) {
        if let Err(e) = self.tx.try_send(note) {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            debug!(dropped = n, error = %e, "event queue full; dropped an event");
        }
    }

    /// Notes dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

struct Sender {
    client: Client,
    controller: String,
    instance: String,
    aggregator: Mutex<Aggregator>,
}

impl Sender {
    fn aggregator(&self) -> std::sync::MutexGuard<'_, Aggregator> {
        self.aggregator
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn send(&self, note: Note) {
        let now = Timestamp::now();
        let decision = self.aggregator().decide(&note, now.as_millisecond());
        let namespace = note
            .regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
        let result = match &decision {
            Delivery::Series { name, count } => {
                let series = EventSeries {
                    count: *count,
                    last_observed_time: MicroTime(now),
                };
                let patch = json!({ "series": series });
                match api
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Err(e) if is_status(&e, 404) => {
                        // Gone (its TTL passed): start a new one.
                        self.aggregator().forget(&note);
                        let Delivery::Create { name } =
                            self.aggregator().decide(&note, now.as_millisecond())
                        else {
                            return;
                        };
                        api.create(&PostParams::default(), &self.event(&note, name, now))
                            .await
                            .map(|_| ())
                    }
                    other => other.map(|_| ()),
                }
            }
            Delivery::Create { name } => api
                .create(
                    &PostParams::default(),
                    &self.event(&note, name.clone(), now),
                )
                .await
                .map(|_| ()),
        };
        if let Err(e) = result {
            self.aggregator().forget(&note);
            warn!(error = %e, reason = %note.reason, "publishing an event failed");
        }
    }

    fn event(&self, note: &Note, name: String, now: Timestamp) -> K8sEvent {
        K8sEvent {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: note.regarding.namespace.clone(),
                ..Default::default()
            },
            action: Some(note.action.clone()),
            reason: Some(note.reason.clone()),
            note: note.note.clone(),
            event_time: Some(MicroTime(now)),
            regarding: Some(note.regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(
                match note.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(name: &str, uid: &str, reason: &str) -> Note {
        Note {
            regarding: ObjectReference {
                namespace: Some("team-a".into()),
                name: Some(name.into()),
                uid: Some(uid.into()),
                ..Default::default()
            },
            type_: EventType::Warning,
            reason: reason.into(),
            action: "Admitted".into(),
            note: None,
        }
    }

    #[test]
    fn a_repeat_within_the_window_updates_the_series_of_the_first_event() {
        let mut a = Aggregator::new(16);
        let Delivery::Create { name } = a.decide(&note("cam-1", "u1", "Retrying"), 1000) else {
            panic!("first is a create")
        };
        assert!(name.starts_with("cam-1."), "{name}");
        assert_eq!(
            a.decide(&note("cam-1", "u1", "Retrying"), 2000),
            Delivery::Series {
                name: name.clone(),
                count: 2
            }
        );
        assert_eq!(
            a.decide(&note("cam-1", "u1", "Retrying"), 3000),
            Delivery::Series {
                name: name.clone(),
                count: 3
            }
        );
        // Past the window since the last one: a new Event.
        assert!(matches!(
            a.decide(&note("cam-1", "u1", "Retrying"), 3000 + SERIES_WINDOW_MS),
            Delivery::Create { .. }
        ));
    }

    #[test]
    fn another_reason_or_another_object_of_the_same_name_is_another_event() {
        let mut a = Aggregator::new(16);
        assert!(matches!(
            a.decide(&note("cam-1", "u1", "Retrying"), 1000),
            Delivery::Create { .. }
        ));
        assert!(matches!(
            a.decide(&note("cam-1", "u1", "Failed"), 1001),
            Delivery::Create { .. }
        ));
        assert!(matches!(
            a.decide(&note("cam-1", "u2", "Retrying"), 1002),
            Delivery::Create { .. }
        ));
        assert_eq!(a.len(), 3);
    }

    #[test]
    fn the_cache_is_bounded_and_forgets_the_least_recently_used() {
        let mut a = Aggregator::new(2);
        a.decide(&note("a", "ua", "Retrying"), 1);
        a.decide(&note("b", "ub", "Retrying"), 2);
        // "a" used again: "b" is the least recently used.
        assert!(matches!(
            a.decide(&note("a", "ua", "Retrying"), 3),
            Delivery::Series { count: 2, .. }
        ));
        a.decide(&note("c", "uc", "Retrying"), 4);
        assert_eq!(a.len(), 2);
        assert!(matches!(
            a.decide(&note("b", "ub", "Retrying"), 5),
            Delivery::Create { .. }
        ));
    }

    #[test]
    fn a_forgotten_event_starts_afresh() {
        let mut a = Aggregator::new(4);
        let n = note("cam-1", "u1", "Retrying");
        a.decide(&n, 1);
        a.forget(&n);
        assert!(a.is_empty());
        assert!(matches!(a.decide(&n, 2), Delivery::Create { .. }));
    }
}
