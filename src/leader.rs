//! Leader election on a coordination.k8s.io Lease. Every replica watches
//! and caches; only the holder of the lease admits and writes.
//!
//! The algorithm is the one of client-go's leaderelection, with optimistic
//! concurrency: a replica takes or renews the lease by replacing it with the
//! resourceVersion it read, so of two replicas racing for it exactly one
//! wins (the other gets 409). A standby looks at the lease every quarter of
//! its duration and takes it once it is released or has expired. A leader
//! renews every third of the duration.
//!
//! Fencing, as client-go does it: leadership has a hard validity deadline,
//! the start of the last successful renewal plus the renew deadline (two
//! thirds of the lease duration). [`Validity`] is checked before every write
//! the operator makes (the writer asks it), not only in this loop; a renewal
//! is time-boxed to the deadline, so a hung connection, 429 throttling or a
//! partition cannot stretch it. A standby judges a lease expired by its own
//! clock: a full duration after it last *saw* the lease change, never by
//! comparing the holder's renewTime with its own clock. So a new leader has
//! waited out the old one's validity before it writes anything (the renew
//! deadline is shorter than the duration). A graceful stop releases the
//! lease, so a standby takes over within a quarter of the duration instead
//! of waiting for it to expire.
//!
//! The leadership term is the lease's `leaseTransitions` as this replica
//! wrote it when it took or last renewed the lease ([`Validity::term`]).
//! The writer stamps it on every job status and pod, so a write of an older
//! term is recognisable, and it refuses to write over a newer term's status
//! (reporting the term with [`Validity::saw_term`]). Terms only grow: a
//! replica taking or renewing the lease writes a count above every term it
//! has seen, so a Lease deleted and created again (its count back at 0)
//! does not make the new leader's writes look older than the last ones.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::error::is_status;

#[derive(Debug, Clone)]
pub struct LeaderConfig {
    pub enabled: bool,
    pub lease_name: String,
    pub namespace: String,
    pub identity: String,
    /// How long a lease lasts without renewal.
    pub duration: Duration,
}

/// Until when this replica may write as the leader, and in which term.
/// Shared by the elector, which extends it on every successful renewal, and
/// the writer, which checks it before every write and stamps the term.
#[derive(Debug, Clone)]
pub struct Validity(Arc<Mutex<Option<Instant>>>, Arc<Mutex<Terms>>);

/// This replica's term, and the highest term it has seen stamped.
#[derive(Debug, Default)]
struct Terms {
    current: Option<i64>,
    seen: i64,
}

impl Validity {
    /// Never valid until the elector says so.
    pub fn new() -> Self {
        Validity(Arc::new(Mutex::new(None)), Arc::default())
    }

    /// The leadership term this replica writes in (the lease's
    /// `leaseTransitions` when it took or last renewed it); None without
    /// leader election.
    pub fn term(&self) -> Option<i64> {
        self.1.lock().unwrap().current
    }

    /// A write stamped with `term` was seen. Returns whether it is newer
    /// than this replica's own term: then this replica's writes would look
    /// older than what is recorded, and must wait until its next renewal
    /// lifts its term above it (or shows the lease is someone else's).
    pub fn saw_term(&self, term: i64) -> bool {
        let mut t = self.1.lock().unwrap();
        t.seen = t.seen.max(term);
        t.current.is_some_and(|own| term > own)
    }

    /// The count to write as `leaseTransitions`: `proposed`, raised above
    /// every term seen by a replica `taking` the lease (a new term), and
    /// above every term newer than its own by one renewing it.
    fn next_term(&self, proposed: i64, taking: bool) -> i64 {
        let t = self.1.lock().unwrap();
        if taking || t.seen > proposed {
            proposed.max(t.seen + 1)
        } else {
            proposed
        }
    }

    fn set_term(&self, term: i64) {
        self.1.lock().unwrap().current = Some(term);
    }

    /// Valid for the life of the process (no election).
    pub fn always() -> Self {
        let v = Validity::new();
        v.extend_to(Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600));
        v
    }

    /// Whether a write may be sent now.
    pub fn is_valid(&self) -> bool {
        self.0
            .lock()
            .unwrap()
            .is_some_and(|until| Instant::now() < until)
    }

    /// How long validity lasts from now (zero when not valid).
    pub fn remaining(&self) -> Duration {
        self.0
            .lock()
            .unwrap()
            .map(|until| until.saturating_duration_since(Instant::now()))
            .unwrap_or_default()
    }

    fn extend_to(&self, until: Instant) {
        *self.0.lock().unwrap() = Some(until);
    }

    fn revoke(&self) {
        *self.0.lock().unwrap() = None;
    }
}

impl Default for Validity {
    fn default() -> Self {
        Validity::new()
    }
}

/// A running election: `leadership` says whether this replica leads;
/// `validity` until when it may write.
pub struct Election {
    pub leadership: watch::Receiver<bool>,
    pub validity: Validity,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    /// Without election, keeps `leadership` open (and true) for the process's life.
    _always: Option<watch::Sender<bool>>,
}

impl Election {
    /// Joins the election; campaigns once `ready` resolves (the caches are
    /// listed): a replica that takes the lease before it can act would
    /// leave the jobs without a working leader meanwhile.
    pub async fn start(
        client: Client,
        config: &LeaderConfig,
        ready: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<Self, kube::Error> {
        let (tx, rx) = watch::channel(!config.enabled);
        let (stop, stopped) = watch::channel(false);
        if !config.enabled {
            info!("leader election disabled: this process leads");
            return Ok(Election {
                leadership: rx,
                validity: Validity::always(),
                stop,
                task: None,
                _always: Some(tx),
            });
        }
        let validity = Validity::new();
        let elector = Elector {
            api: Api::namespaced(client, &config.namespace),
            name: config.lease_name.clone(),
            identity: config.identity.clone(),
            duration: config.duration,
            validity: validity.clone(),
            observed: Mutex::new(None),
        };
        // Fail early (RBAC, namespace) rather than in the background.
        elector.api.get_opt(&elector.name).await?;
        info!(lease = %config.lease_name, namespace = %config.namespace, identity = %config.identity, "joined leader election");
        let task = tokio::spawn(elector.run(ready, tx, stopped));
        Ok(Election {
            leadership: rx,
            validity,
            stop,
            task: Some(task),
            _always: None,
        })
    }

    /// Stops campaigning and gives the lease up when held.
    pub async fn release(self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    validity: Validity,
    /// The lease as this replica last saw it change (holder, renewTime,
    /// resourceVersion) and when, by its own clock.
    observed: Mutex<Option<(String, Instant)>>,
}

fn now_micro() -> MicroTime {
    let ms = crate::clock::now_ms();
    MicroTime(k8s_openapi::jiff::Timestamp::from_millisecond(ms).unwrap_or_default())
}

impl Elector {
    /// The renew deadline: how long after a successful renewal began this
    /// replica may still write. Shorter than the lease duration, so that it
    /// has stopped writing before any standby may take the lease over.
    fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }

    async fn run(
        self,
        ready: impl std::future::Future<Output = ()>,
        tx: watch::Sender<bool>,
        mut stop: watch::Receiver<bool>,
    ) {
        tokio::select! {
            _ = ready => {}
            _ = stop.changed() => return,
        }
        let renew_every = self.duration / 3;
        let retry_every = (self.duration / 4).min(Duration::from_secs(2));
        let mut leading = false;
        loop {
            let attempt = Instant::now();
            // Time-boxed: a leader's renewal may take until its validity
            // ends, a standby's attempt a retry period.
            let budget = if leading {
                self.validity.remaining()
            } else {
                retry_every.max(Duration::from_millis(500))
            };
            let outcome = tokio::time::timeout(budget, self.try_acquire_or_renew()).await;
            match outcome {
                Ok(Ok(true)) => {
                    self.validity.extend_to(attempt + self.renew_deadline());
                    if !leading {
                        info!(identity = %self.identity, "acquired the lease");
                        leading = true;
                        let _ = tx.send(true);
                    }
                }
                Ok(Ok(false)) => {
                    self.validity.revoke();
                    if leading {
                        warn!(identity = %self.identity, "the lease was taken by another replica");
                        leading = false;
                        let _ = tx.send(false);
                    }
                }
                Ok(Err(e)) => {
                    warn!(error = %e, "leader election: reading or writing the lease failed")
                }
                Err(_) => {
                    warn!(identity = %self.identity, "leader election: renewing the lease timed out")
                }
            }
            if leading && !self.validity.is_valid() {
                warn!(identity = %self.identity, "could not renew the lease within the renew deadline: stepping down");
                self.validity.revoke();
                leading = false;
                let _ = tx.send(false);
            }
            let pause = if leading {
                renew_every.min(self.validity.remaining())
            } else {
                retry_every
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => break,
            }
        }
        self.validity.revoke();
        if leading {
            let _ = tx.send(false);
            let released = tokio::time::timeout(self.duration, self.release()).await;
            match released {
                Ok(Ok(())) => info!(identity = %self.identity, "released the lease"),
                Ok(Err(e)) => {
                    warn!(error = %e, "releasing the lease failed; it expires on its own")
                }
                Err(_) => warn!("releasing the lease timed out; it expires on its own"),
            }
        }
    }

    /// Whether another holder's lease has expired, judged by this replica's
    /// own clock: a full lease duration after it last saw the lease change.
    fn expired_by_observation(&self, lease: &Lease, duration: Duration) -> bool {
        let spec = lease.spec.clone().unwrap_or_default();
        let version = format!(
            "{:?}/{:?}/{:?}",
            spec.holder_identity,
            spec.renew_time.as_ref().map(|t| t.0.as_microsecond()),
            lease.metadata.resource_version
        );
        let mut observed = self.observed.lock().unwrap();
        match observed.as_ref() {
            Some((seen, at)) if *seen == version => at.elapsed() >= duration,
            _ => {
                *observed = Some((version, Instant::now()));
                false
            }
        }
    }

    /// Takes the lease if it is free or expired, renews it if ours. Ok(true)
    /// when this replica holds it now.
    async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = now_micro();
        let secs = self.duration.as_secs().max(1) as i32;
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(self.validity.next_term(0, true) as i32),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => Ok(self.took(&created)),
                Err(e) if is_status(&e, 409) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let ours = holder.as_deref() == Some(self.identity.as_str());
        // A lease without a renewal time was released; otherwise wait out
        // its duration (the holder's, or ours if it names none) by our clock.
        let held_for = spec
            .lease_duration_seconds
            .map(|d| Duration::from_secs(d.max(1) as u64))
            .unwrap_or(self.duration);
        let expired = spec.renew_time.is_none() || self.expired_by_observation(&lease, held_for);
        if !ours && holder.is_some() && !expired {
            return Ok(false);
        }
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(secs),
            acquire_time: if ours {
                spec.acquire_time
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(self.validity.next_term(
                i64::from(spec.lease_transitions.unwrap_or(0) + i32::from(!ours)),
                !ours,
            ) as i32),
            ..spec
        });
        // Replacing with the resourceVersion just read: a concurrent
        // taker makes this fail with 409 instead of both succeeding.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => Ok(self.took(&written)),
            Err(e) if is_status(&e, 409) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The lease as written by this replica: its count is the term.
    fn took(&self, lease: &Lease) -> bool {
        let term = lease
            .spec
            .as_ref()
            .and_then(|s| s.lease_transitions)
            .unwrap_or(0);
        self.validity.set_term(i64::from(term));
        true
    }

    async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        lease.spec = Some(spec);
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_only_grow_and_a_newer_stamp_is_recognised() {
        let v = Validity::new();
        assert_eq!(v.term(), None);
        // No election yet: nothing is newer than "no term".
        assert!(!v.saw_term(3));
        // Taking over a lease counted at 2 (3 proposed) after seeing stamps
        // of term 3: the new term is above them, 4.
        assert_eq!(v.next_term(3, true), 4);
        v.set_term(4);
        assert_eq!(v.term(), Some(4));
        // Its own stamps and older ones are not newer; renewing keeps the term.
        assert!(!v.saw_term(4));
        assert!(!v.saw_term(2));
        assert_eq!(v.next_term(4, false), 4);
        // A stamp of a newer term (another leader's, or a Lease deleted and
        // created again, its count back at 0): recognised, and the next
        // renewal or take-over writes a term above it.
        assert!(v.saw_term(9));
        assert_eq!(v.next_term(4, false), 10);
        assert_eq!(v.next_term(0, true), 10);
        assert_eq!(v.next_term(12, true), 12);
        v.set_term(10);
        assert!(!v.saw_term(9));
    }
}
