//! Whose turn it is on the shared cluster. An operator acts on every job of
//! the cluster, so two scenarios with operators at once (two threads of one
//! test binary, or two people's test runs on one cluster) would admit each
//! other's jobs. A scenario holds the turn from start to drop: first the
//! binary's own mutex, then a Lease that every test process on the cluster
//! competes for.
//!
//! The Lease is renewed every few seconds while held; a holder that died
//! without releasing it loses it after [`LEASE_SECONDS`].

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::{Api, Client};
use tokio::sync::MutexGuard;
use tokio::task::JoinHandle;

use super::cluster;

/// The Lease every test process competes for (namespace default).
pub const LEASE_NAME: &str = "vision-e2e-turn";
const LEASE_NAMESPACE: &str = "default";
/// How long a turn outlives its last renewal.
pub const LEASE_SECONDS: i32 = 30;
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// The longest a scenario waits for its turn (another run's whole binary
/// may come first).
const WAIT_AT_MOST: Duration = Duration::from_secs(30 * 60);

/// One test binary's scenarios take turns among themselves first.
static IN_PROCESS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The turn, held until dropped.
pub struct Turn {
    holder: String,
    uid: String,
    renewal: JoinHandle<()>,
    _in_process: MutexGuard<'static, ()>,
}

impl Turn {
    /// Waits for this binary's turn, then for the cluster's.
    pub async fn take(client: &Client) -> Turn {
        let in_process = IN_PROCESS.lock().await;
        let holder = cluster::unique_name("e2e");
        let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
        let deadline = tokio::time::Instant::now() + WAIT_AT_MOST;
        let mut last_holder = String::new();
        let uid = loop {
            if let Some(uid) = try_take(&leases, &holder, &mut last_holder).await {
                break uid;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "another test run has held the cluster ({LEASE_NAMESPACE}/{LEASE_NAME}, holder {last_holder}) for {WAIT_AT_MOST:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let renewal = tokio::spawn(renew(leases, holder.clone()));
        Turn {
            holder,
            uid,
            renewal,
            _in_process: in_process,
        }
    }
}

/// One attempt: creates the Lease, or takes it over once it expired. The
/// API server's create (name taken) and update (resourceVersion changed)
/// let only one contender win. Returns the Lease's uid when this one did.
async fn try_take(leases: &Api<Lease>, holder: &str, last_holder: &mut String) -> Option<String> {
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let spec = LeaseSpec {
        holder_identity: Some(holder.to_string()),
        lease_duration_seconds: Some(LEASE_SECONDS),
        acquire_time: Some(now.clone()),
        renew_time: Some(now.clone()),
        ..Default::default()
    };
    match leases.get_opt(LEASE_NAME).await.ok()? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.to_string()),
                    ..Default::default()
                },
                spec: Some(spec),
            };
            let created = leases.create(&PostParams::default(), &lease).await.ok()?;
            created.metadata.uid
        }
        Some(mut current) => {
            let held = current.spec.as_ref().and_then(|s| {
                let renewed = s.renew_time.as_ref()?.0;
                let seconds = i64::from(s.lease_duration_seconds?);
                let expires = renewed.checked_add(jiff_seconds(seconds)).ok()?;
                (expires > now.0).then(|| s.holder_identity.clone().unwrap_or_default())
            });
            if let Some(other) = held {
                *last_holder = other;
                return None;
            }
            current.spec = Some(spec);
            let replaced = leases
                .replace(LEASE_NAME, &PostParams::default(), &current)
                .await
                .ok()?;
            replaced.metadata.uid
        }
    }
}

fn jiff_seconds(seconds: i64) -> k8s_openapi::jiff::SignedDuration {
    k8s_openapi::jiff::SignedDuration::from_secs(seconds)
}

/// Keeps the Lease ours: moves its renewTime forward every few seconds.
async fn renew(leases: Api<Lease>, holder: String) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        let Ok(mut lease) = leases.get(LEASE_NAME).await else {
            continue;
        };
        let Some(spec) = lease.spec.as_mut() else {
            continue;
        };
        if spec.holder_identity.as_deref() != Some(holder.as_str()) {
            eprintln!("the cluster turn ({LEASE_NAME}) was taken over: {spec:?}");
            return;
        }
        spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
        let _ = leases
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await;
    }
}

/// Gives the turn back: stops renewing and deletes the Lease if it is still
/// the one this turn created or took (its uid), then lets the binary's next
/// scenario go. Drop cannot await, and the test's runtime may be unwinding:
/// a thread of its own runs the calls on a runtime of its own.
impl Drop for Turn {
    fn drop(&mut self) {
        self.renewal.abort();
        let (holder, uid) = (self.holder.clone(), self.uid.clone());
        let released = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the release")
                .block_on(delete_if_ours(&holder, &uid))
        })
        .join();
        if let Ok(Err(e)) | Err(e) = released.map_err(|_| "panicked".to_string()) {
            eprintln!("releasing the cluster turn: {e}");
        }
    }
}

async fn delete_if_ours(holder: &str, uid: &str) -> Result<(), String> {
    let client = cluster::plain_client().await?;
    let leases: Api<Lease> = Api::namespaced(client, LEASE_NAMESPACE);
    let lease = leases.get(LEASE_NAME).await.map_err(|e| e.to_string())?;
    let ours = lease.spec.and_then(|s| s.holder_identity).as_deref() == Some(holder);
    if !ours {
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
