//! Leader election on a coordination.k8s.io Lease. Every replica watches
//! and caches; only the holder of the lease admits and writes.
//!
//! The algorithm is the one of client-go's leaderelection, with optimistic
//! concurrency: a replica takes or renews the lease by replacing it with the
//! resourceVersion it read, so of two replicas racing for it exactly one
//! wins (the other gets 409). A standby looks at the lease every quarter of
//! its duration and takes it once it is released or has expired. A leader
//! renews every third of the duration, and steps down on its own (fencing)
//! as soon as its last successful renewal is older than the duration: by
//! then a standby may have taken the lease, so it must stop writing even if
//! it cannot reach the API server to find out. A graceful stop releases the
//! lease, so a standby takes over within a quarter of the duration instead
//! of waiting for it to expire.

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

/// A running election: `leadership` says whether this replica leads.
pub struct Election {
    pub leadership: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    /// Without election, keeps `leadership` open (and true) for the process's life.
    _always: Option<watch::Sender<bool>>,
}

impl Election {
    pub async fn start(client: Client, config: &LeaderConfig) -> Result<Self, kube::Error> {
        let (tx, rx) = watch::channel(!config.enabled);
        let (stop, stopped) = watch::channel(false);
        if !config.enabled {
            info!("leader election disabled: this process leads");
            return Ok(Election {
                leadership: rx,
                stop,
                task: None,
                _always: Some(tx),
            });
        }
        let elector = Elector {
            api: Api::namespaced(client, &config.namespace),
            name: config.lease_name.clone(),
            identity: config.identity.clone(),
            duration: config.duration,
        };
        // Fail early (RBAC, namespace) rather than in the background.
        elector.api.get_opt(&elector.name).await?;
        info!(lease = %config.lease_name, namespace = %config.namespace, identity = %config.identity, "joined leader election");
        let task = tokio::spawn(elector.run(tx, stopped));
        Ok(Election {
            leadership: rx,
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
}

fn now_micro() -> MicroTime {
    let ms = crate::clock::now_ms();
    MicroTime(k8s_openapi::jiff::Timestamp::from_millisecond(ms).unwrap_or_default())
}

impl Elector {
    async fn run(self, tx: watch::Sender<bool>, mut stop: watch::Receiver<bool>) {
        let renew_every = self.duration / 3;
        let retry_every = (self.duration / 4).min(Duration::from_secs(2));
        let mut leading = false;
        // When the last successful renewal was *sent*: the lease is ours at
        // most `duration` after that.
        let mut valid_from: Option<Instant> = None;
        loop {
            let attempt = Instant::now();
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    valid_from = Some(attempt);
                    if !leading {
                        info!(identity = %self.identity, "acquired the lease");
                        leading = true;
                        let _ = tx.send(true);
                    }
                }
                Ok(false) => {
                    if leading {
                        warn!(identity = %self.identity, "the lease was taken by another replica");
                        leading = false;
                        let _ = tx.send(false);
                    }
                }
                Err(e) => warn!(error = %e, "leader election: reading or writing the lease failed"),
            }
            if leading && valid_from.is_none_or(|t| t.elapsed() >= self.duration) {
                warn!(identity = %self.identity, "could not renew the lease in time: stepping down");
                leading = false;
                let _ = tx.send(false);
            }
            let pause = if leading { renew_every } else { retry_every };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => break,
            }
        }
        if leading {
            let _ = tx.send(false);
            match self.release().await {
                Ok(()) => info!(identity = %self.identity, "released the lease"),
                Err(e) => warn!(error = %e, "releasing the lease failed; it expires on its own"),
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
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_status(&e, 409) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let ours = holder.as_deref() == Some(self.identity.as_str());
        let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
            (Some(renewed), Some(d)) => {
                crate::clock::now_ms() > renewed.0.as_millisecond() + i64::from(d) * 1000
            }
            _ => true,
        };
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
            lease_transitions: Some(spec.lease_transitions.unwrap_or(0) + i32::from(!ours)),
            ..spec
        });
        // Replacing with the resourceVersion just read: a concurrent
        // taker makes this fail with 409 instead of both succeeding.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_status(&e, 409) => Ok(false),
            Err(e) => Err(e),
        }
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
