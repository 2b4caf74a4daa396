//! The chaos suite of vision-operator (issue 12): it proves the operator's
//! guarantees under real faults. It owns
//! - [`invariants`]: the invariants as a pure state machine fed with watch
//!   observations, and [`lease`]: leaderless gaps measured from the Lease;
//! - [`watch`]: the independent watcher feeding them from the API server's
//!   own watch streams (reusable by benchmarks);
//! - [`proxy`]: a fault-injecting reverse proxy between one replica and the
//!   API server;
//! - [`cluster`]: restarts of the local cluster's kube-apiserver and etcd;
//! - [`replicas`]: operator replicas as processes (kill, pause, replace);
//! - [`turn`]: the end-to-end tests' cluster turn, so no other test's
//!   operators run meanwhile;
//! - [`run`]: the driver that combines them, and [`report`]: its table.
#![forbid(unsafe_code)]

pub mod cluster;
mod error;
pub mod invariants;
pub mod lease;
pub mod proxy;
pub mod replicas;
pub mod report;
pub mod run;
pub use vision_devtools::turn;
pub mod watch;

pub use error::Error;

/// Reads a kubeconfig file into a client configuration (its current context).
pub async fn load_config(path: &std::path::Path) -> Result<kube::Config, Error> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
    let mut config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    config.connect_timeout = Some(std::time::Duration::from_secs(5));
    Ok(config)
}
