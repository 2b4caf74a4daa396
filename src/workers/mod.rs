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
pub mod pods;
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

/// The label the leader keeps on its own pod: the chart's workers Service
/// selects it, so workers connect to the leader (a follower refuses them
/// anyway, see [`Hub::set_leading`]).
pub const LABEL_SERVES_WORKERS: &str = "vision.zjlab.io/serves-workers";

/// Starts worker mode: binds the endpoint, serves it (to workers only while
/// `leading`), and applies the hub's events to the attempts; `install` hands
/// the attempts to the writer.
pub async fn start(
    client: &kube::Client,
    settings: WorkerSettings,
    algorithms: kube::runtime::reflector::Store<crate::api::VisionAlgorithm>,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    trigger: impl Fn(k8s_openapi::api::core::v1::Pod) + Send + Sync + 'static,
    install: impl FnOnce(std::sync::Arc<WorkerMode>),
    leading: impl Fn() -> bool + Clone + Send + Sync + 'static,
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
    hub.set_leading(leading.clone());
    if let Some((namespace, name)) = settings.pod.clone() {
        tokio::spawn(advertise_leader(client.clone(), namespace, name, leading));
    }
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
    let scaled = algorithms.clone();
    let mode = std::sync::Arc::new(WorkerMode::new(hub.clone(), algorithms, metrics, trigger));
    install(mode.clone());
    if let Some(pods) = settings.pods.clone() {
        tokio::spawn(pods::run(
            client.clone(),
            settings.namespace.clone(),
            pods,
            scaled,
            mode.clone(),
        ));
    }
    tokio::spawn(mode.run(events));
    tokio::spawn(async move {
        if let Err(e) = hub.serve(listener, std::future::pending()).await {
            tracing::error!(error = %e, "the worker endpoint stopped");
        }
    });
    Ok(())
}

/// Keeps [`LABEL_SERVES_WORKERS`] on this replica's pod exactly while it
/// leads. It starts by removing it: a restarted container's pod keeps the
/// label of its former life. A failed patch is tried again next round; the
/// follower's refusal keeps workers correct meanwhile.
async fn advertise_leader(
    client: kube::Client,
    namespace: String,
    name: String,
    leading: impl Fn() -> bool,
) {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, Patch, PatchParams};
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    let mut labelled: Option<bool> = None;
    let mut every = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        every.tick().await;
        let lead = leading();
        if labelled == Some(lead) {
            continue;
        }
        let value = if lead {
            serde_json::json!("true")
        } else {
            serde_json::Value::Null
        };
        let patch = serde_json::json!({"metadata": {"labels": {LABEL_SERVES_WORKERS: value}}});
        match pods
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(pod = %name, serves_workers = lead, "labelled this replica's pod for the workers' Service");
                labelled = Some(lead);
            }
            Err(e) => {
                tracing::warn!(pod = %name, error = %e, "cannot label this replica's pod for the workers' Service")
            }
        }
    }
}
