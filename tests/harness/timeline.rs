//! Pods as the API server shows them over time: one watch of a namespace's
//! pods records how many were live (not Succeeded/Failed, not gone) at once,
//! when each was first seen and ended, and the order of what happened to
//! them ([`PodEvent`]: created, being deleted, finished, gone).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};

/// Records, from one watch of a namespace's pods, how many were live (not
/// Succeeded/Failed, not gone) at once, and when each was created and ended.
#[derive(Clone, Default)]
pub struct PodTimeline {
    inner: Arc<Mutex<Timeline>>,
}

#[derive(Default)]
pub struct Timeline {
    live: HashMap<String, Instant>,
    pub max_live: usize,
    /// (pod, first seen, ended) in the order pods were first seen.
    pub pods: Vec<(String, Instant, Option<Instant>)>,
    /// Times at which a pod stopped being live.
    pub ends: Vec<Instant>,
    pub live_now: usize,
    /// What happened to each pod, in the order the watch saw it.
    pub events: Vec<PodEvent>,
}

/// One change of one pod, as the watch saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct PodEvent {
    pub pod: String,
    pub change: PodChange,
}

#[derive(Clone, Debug, PartialEq)]
pub enum PodChange {
    /// First seen.
    Created,
    /// Its deletionTimestamp was set (Terminating).
    Deleting,
    /// Phase Succeeded or Failed: the first container's exit code and
    /// termination message.
    Finished {
        phase: String,
        exit_code: Option<i32>,
        message: Option<String>,
    },
    /// Removed from the API.
    Gone,
}

impl Timeline {
    /// The index of the first event of `pod` that `matches`.
    pub fn index_of(&self, pod: &str, matches: impl Fn(&PodChange) -> bool) -> Option<usize> {
        self.events
            .iter()
            .position(|e| e.pod == pod && matches(&e.change))
    }

    fn record(&mut self, pod: &str, change: PodChange) {
        let seen = |c: &PodChange| std::mem::discriminant(c) == std::mem::discriminant(&change);
        if self.index_of(pod, seen).is_none() {
            self.events.push(PodEvent {
                pod: pod.to_string(),
                change,
            });
        }
    }
}

/// What `p` says now that may be news: its deletion, its end.
fn changes(p: &Pod) -> Vec<PodChange> {
    let mut changes = Vec::new();
    if p.metadata.deletion_timestamp.is_some() {
        changes.push(PodChange::Deleting);
    }
    let status = p.status.as_ref();
    if let Some(phase @ ("Succeeded" | "Failed")) = status.and_then(|s| s.phase.as_deref()) {
        let terminated = status
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.first())
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.terminated.as_ref());
        changes.push(PodChange::Finished {
            phase: phase.to_string(),
            exit_code: terminated.map(|t| t.exit_code),
            message: terminated.and_then(|t| t.message.clone()),
        });
    }
    changes
}

fn pod_is_live(p: &Pod) -> bool {
    !matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

impl PodTimeline {
    /// Starts watching the namespace's pods; runs until the test ends.
    pub fn watch(client: &Client, namespace: &str) -> PodTimeline {
        let timeline = PodTimeline::default();
        let inner = timeline.inner.clone();
        let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()));
            while let Some(Ok(event)) = stream.next().await {
                let now = Instant::now();
                let mut t = inner.lock().unwrap();
                let see = |t: &mut Timeline, p: &Pod, gone: bool| {
                    let name = p.name_any();
                    t.record(&name, PodChange::Created);
                    for change in changes(p) {
                        t.record(&name, change);
                    }
                    if gone {
                        t.record(&name, PodChange::Gone);
                    }
                    let live = !gone && pod_is_live(p);
                    if !t.pods.iter().any(|(n, _, _)| *n == name) {
                        t.pods.push((name.clone(), now, None));
                    }
                    match (live, t.live.contains_key(&name)) {
                        (true, false) => {
                            t.live.insert(name, now);
                        }
                        (false, true) => {
                            t.live.remove(&name);
                            t.ends.push(now);
                            if let Some(e) = t.pods.iter_mut().find(|(n, _, _)| *n == name) {
                                e.2 = Some(now);
                            }
                        }
                        _ => {}
                    }
                    t.live_now = t.live.len();
                    t.max_live = t.max_live.max(t.live.len());
                };
                match event {
                    watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                        see(&mut t, &p, false)
                    }
                    watcher::Event::Delete(p) => see(&mut t, &p, true),
                    _ => {}
                }
            }
        });
        timeline
    }

    pub fn max_live(&self) -> usize {
        self.inner.lock().unwrap().max_live
    }

    pub fn live_now(&self) -> usize {
        self.inner.lock().unwrap().live_now
    }

    pub fn created(&self) -> usize {
        self.inner.lock().unwrap().pods.len()
    }

    pub fn with<R>(&self, f: impl FnOnce(&Timeline) -> R) -> R {
        f(&self.inner.lock().unwrap())
    }
}
