//! Whose turn it is on the shared cluster. An operator acts on every job of
//! the cluster, so two scenarios with operators at once (two threads of one
//! test binary, or two people's test runs on one cluster) would admit each
//! other's jobs. A scenario holds the turn from start to drop: first the
//! binary's own mutex, then a Lease that every test process on the cluster
//! competes for.
//!
//! The Lease is renewed every few seconds while held; a holder that died
//! without releasing it loses it after [`LEASE_SECONDS`]. The protocol is
//! `vision_chaos::turn`'s (the chaos driver takes the same turn); this
//! module adds the in-process turn and the release on drop.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use tokio::sync::MutexGuard;
use tokio::task::JoinHandle;
use vision_chaos::turn;
pub use vision_chaos::turn::{LEASE_NAME, LEASE_NAMESPACE, LEASE_SECONDS};

use super::cluster;
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
        let uid = loop {
            let other = match turn::try_take(&leases, &holder).await {
                Ok(uid) => break uid,
                Err(other) => other,
            };
            assert!(
                tokio::time::Instant::now() < deadline,
                "another test run has held the cluster ({LEASE_NAMESPACE}/{LEASE_NAME}, holder {other}) for {WAIT_AT_MOST:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let renewal = tokio::spawn(turn::renew(leases, holder.clone()));
        Turn {
            holder,
            uid,
            renewal,
            _in_process: in_process,
        }
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
    turn::release_lease(&leases, holder, uid).await
}
