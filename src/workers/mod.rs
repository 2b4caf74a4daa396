//! Worker mode (docs/WORKERS.md): warm, long-lived worker processes of an
//! algorithm connect to the operator over one gRPC stream each
//! (`proto/vision/worker/v1/worker.proto`) and receive the jobs' attempts as
//! tasks, instead of one pod per attempt.
//!
//! - `registry`: who is connected, with what capacity, running which task
//!   (pure, unit-tested);
//! - `auth`: which workers may serve an algorithm (TokenReview of the pod's
//!   projected ServiceAccount token; a test-only trust mode);
//! - `hub`: the gRPC service and the API the controller drives.

pub mod attempts;
pub mod auth;
pub mod hub;
pub mod mode;
pub mod registry;
pub mod scale;
pub mod worker_pod;

pub use attempts::worker_of;
pub use auth::{Auth, TOKEN_AUDIENCE};
pub use hub::{Adopted, Hub, HubSettings, TaskSpec, WorkerEvent, task_id};
pub use mode::{WorkerMode, WorkerSettings};
pub use registry::Lost;
pub use vision_worker::proto::CancelReason;

#[cfg(test)]
mod tests;

/// Starts worker mode: binds the endpoint, serves it, and applies the
/// hub's events to the attempts; `install` hands the attempts to the writer.
pub async fn start(
    client: &kube::Client,
    settings: WorkerSettings,
    algorithms: kube::runtime::reflector::Store<crate::api::VisionAlgorithm>,
    trigger: impl Fn(k8s_openapi::api::core::v1::Pod) + Send + Sync + 'static,
    install: impl FnOnce(std::sync::Arc<WorkerMode>),
) -> std::io::Result<()> {
    let auth = if settings.trust_local_test_only {
        tracing::warn!(
            "worker endpoint in TEST-ONLY trust mode: any process that connects may serve any algorithm"
        );
        Auth::TrustLocalTestOnly
    } else {
        Auth::TokenReview {
            client: client.clone(),
            namespace: settings.namespace.clone(),
        }
    };
    let listener = tokio::net::TcpListener::bind(settings.addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving workers (gRPC)");
    let (hub, events) = Hub::new(auth, settings.hub);
    let admitted = algorithms.clone();
    hub.set_admission(move |name| {
        let algorithm = admitted
            .get(&kube::runtime::reflector::ObjectRef::new(name))
            .ok_or_else(|| format!("algorithm {name} does not exist"))?;
        if algorithm.spec.mode != crate::api::AlgorithmMode::Worker {
            return Err(format!(
                "algorithm {name} is not in worker mode (spec.mode)"
            ));
        }
        Ok(algorithm
            .spec
            .workers
            .as_ref()
            .map_or(1, |w| u32::try_from(w.tasks_per_worker).unwrap_or(1)))
    });
    let mode = std::sync::Arc::new(WorkerMode::new(hub.clone(), algorithms, trigger));
    install(mode.clone());
    tokio::spawn(mode.run(events));
    tokio::spawn(async move {
        if let Err(e) = hub.serve(listener, std::future::pending()).await {
            tracing::error!(error = %e, "the worker endpoint stopped");
        }
    });
    Ok(())
}
