//! Leader election on a coordination.k8s.io Lease (kube-lease-manager).
//! Every replica watches and caches; only the holder of the lease admits and
//! writes. The lease is released on a graceful stop so that a standby takes
//! over at once instead of waiting for the lease to expire.

use kube::Client;
use kube_lease_manager::{LeaseCreateMode, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

#[derive(Debug, Clone)]
pub struct LeaderConfig {
    pub enabled: bool,
    pub lease_name: String,
    pub namespace: String,
    pub identity: String,
    /// Seconds a lease lasts without renewal.
    pub duration_seconds: u64,
    /// Seconds before expiry at which the holder renews.
    pub grace_seconds: u64,
}

/// A running election: `leadership` says whether this replica leads.
pub struct Election {
    pub leadership: watch::Receiver<bool>,
    task: Option<JoinHandle<()>>,
    _always: Option<watch::Sender<bool>>,
}

impl Election {
    pub async fn start(
        client: Client,
        config: &LeaderConfig,
    ) -> Result<Self, kube_lease_manager::LeaseManagerError> {
        if !config.enabled {
            info!("leader election disabled: this process leads");
            let (tx, rx) = watch::channel(true);
            return Ok(Election {
                leadership: rx,
                task: None,
                _always: Some(tx),
            });
        }
        let manager = LeaseManagerBuilder::new(client, &config.lease_name)
            .with_namespace(&config.namespace)
            .with_identity(&config.identity)
            .with_duration(config.duration_seconds)
            .with_grace(config.grace_seconds)
            .with_field_manager("vision-operator")
            .with_create_mode(LeaseCreateMode::AutoCreate)
            .build()
            .await?;
        let (rx, handle) = manager.watch().await;
        info!(lease = %config.lease_name, namespace = %config.namespace, identity = %config.identity, "joined leader election");
        // The manager's task ends only on an error or when every receiver is
        // dropped (then it releases the lease); report how it ended.
        let task = tokio::spawn(async move {
            match handle.await {
                Ok(Ok(_)) => info!("leader election stopped; the lease was released"),
                Ok(Err(e)) => warn!(error = %e, "leader election ended with an error"),
                Err(e) => warn!(error = %e, "leader election task failed"),
            }
        });
        Ok(Election {
            leadership: rx,
            task: Some(task),
            _always: None,
        })
    }

    /// Gives the lease up (when held) and waits, briefly, for that to be written.
    pub async fn release(
        self,
        leadership_receivers_dropped: impl std::future::Future<Output = ()>,
    ) {
        let Election {
            leadership,
            task,
            _always,
        } = self;
        drop(leadership);
        leadership_receivers_dropped.await;
        if let Some(task) = task {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
        }
    }
}
