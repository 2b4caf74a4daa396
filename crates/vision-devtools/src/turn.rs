//! The cluster turn of the end-to-end tests (`tests/harness/turn.rs`): a
//! Lease `default/vision-e2e-turn` that every test run holding operators
//! takes before its scenario, because an operator acts on every job of the
//! cluster. `vision-chaos run` and `vision-dev bench fairness` take it too (the same protocol: create, or
//! take over once expired, renew every 5 s, delete on release), so its
//! replicas never meet another run's scenario, nor its restarts hit one.
//! The test harness uses these functions too: one implementation of the
//! protocol.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::{Api, Client};
use tokio::task::JoinHandle;

pub const LEASE_NAME: &str = "vision-e2e-turn";
pub const LEASE_NAMESPACE: &str = "default";
/// How long a turn outlives its last renewal.
pub const LEASE_SECONDS: i32 = 30;
const RENEW_EVERY: Duration = Duration::from_secs(5);

/// The turn, held until [`Turn::release`].
pub struct Turn {
    leases: Api<Lease>,
    holder: String,
    uid: String,
    renewal: JoinHandle<()>,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl Turn {
    /// Waits up to `wait` for the turn; Err names the holder if it stays taken.
    pub async fn take(client: &Client, holder: &str, wait: Duration) -> Result<Turn, String> {
        let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match try_take(&leases, holder).await {
                Ok(uid) => {
                    let renewal = tokio::spawn(renew(leases.clone(), holder.to_string()));
                    return Ok(Turn {
                        leases,
                        holder: holder.to_string(),
                        uid,
                        renewal,
                    });
                }
                Err(other) if tokio::time::Instant::now() >= deadline => {
                    return Err(format!(
                        "the cluster turn ({LEASE_NAMESPACE}/{LEASE_NAME}) stayed with {other} for {wait:?}"
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// Stops renewing and deletes the Lease if it is still this turn's.
    pub async fn release(self) {
        self.renewal.abort();
        let _ = release_lease(&self.leases, &self.holder, &self.uid).await;
    }
}

/// Deletes the turn's Lease if `holder` still holds it and it is the one
/// with `uid` (not a newer Lease of the same name).
pub async fn release_lease(leases: &Api<Lease>, holder: &str, uid: &str) -> Result<(), String> {
    let lease = leases.get(LEASE_NAME).await.map_err(|e| e.to_string())?;
    if lease.spec.and_then(|s| s.holder_identity).as_deref() != Some(holder) {
        return Ok(());
    }
    let only_this_one = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: lease.metadata.resource_version,
        }),
        ..Default::default()
    };
    leases
        .delete(LEASE_NAME, &only_this_one)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// One attempt; Ok(uid of the Lease) when this holder won, Err(holder) when
/// someone else holds it (or the attempt failed).
pub async fn try_take(leases: &Api<Lease>, holder: &str) -> Result<String, String> {
    let spec = LeaseSpec {
        holder_identity: Some(holder.to_string()),
        lease_duration_seconds: Some(LEASE_SECONDS),
        acquire_time: Some(now()),
        renew_time: Some(now()),
        ..Default::default()
    };
    let current = leases
        .get_opt(LEASE_NAME)
        .await
        .map_err(|e| e.to_string())?;
    let taken = match current {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.to_string()),
                    ..Default::default()
                },
                spec: Some(spec),
            };
            leases.create(&PostParams::default(), &lease).await
        }
        Some(mut current) => {
            let held = current.spec.as_ref().and_then(|s| {
                let renewed = s.renew_time.as_ref()?.0.as_millisecond();
                let expires = renewed + i64::from(s.lease_duration_seconds?) * 1000;
                (expires > now().0.as_millisecond())
                    .then(|| s.holder_identity.clone().unwrap_or_default())
            });
            if let Some(other) = held {
                return Err(other);
            }
            current.spec = Some(spec);
            leases
                .replace(LEASE_NAME, &PostParams::default(), &current)
                .await
        }
    };
    taken
        .map_err(|e| e.to_string())?
        .metadata
        .uid
        .ok_or_else(|| "a Lease without uid".to_string())
}

/// Keeps the Lease `holder`'s: moves its renewTime forward every few
/// seconds, until someone else holds it.
pub async fn renew(leases: Api<Lease>, holder: String) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        let Ok(mut lease) = leases.get(LEASE_NAME).await else {
            continue;
        };
        let Some(spec) = lease.spec.as_mut() else {
            continue;
        };
        if spec.holder_identity.as_deref() != Some(holder.as_str()) {
            return;
        }
        spec.renew_time = Some(now());
        let _ = leases
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await;
    }
}
