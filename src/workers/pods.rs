//! The worker pods of algorithms in worker mode, kept by the leader: a
//! watch on the operator's worker pods in the workers' namespace, and a loop
//! that applies [`super::scale::decide`] to each worker-mode algorithm with
//! its backlog (`WorkerMode::backlog`) and its workers' load (the hub).
//!
//! Writes are fenced like the writer's: a pod is created or deleted only
//! while this replica's leadership is valid ([`Validity`]). A pod is
//! deleted only after the hub took its idle worker out of dispatch
//! ([`super::Hub::retire`]), so no task is sent to a worker whose pod is
//! going. For [`ADOPT_GRACE`] after becoming leader no live pod is deleted:
//! the workers of a former leader reconnect and report their tasks first.
//! Failures are published as Warning Events of the algorithm.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};

use super::mode::WorkerMode;
use super::registry::Load;
use super::scale::{Decision, PodPhase, PoolSpec, WorkerPod, decide};
use super::worker_pod::build_worker_pod;
use crate::api::contract::{LABEL_ALGORITHM, LABEL_MANAGED_BY, LABEL_ROLE, MANAGER, ROLE_WORKER};
use crate::api::{AlgorithmMode, VisionAlgorithm};
use crate::controller::events::{EventType, Events, Note};
use crate::error::is_status;
use crate::leader::Validity;

/// How often the pools are looked at.
const TICK: Duration = Duration::from_millis(500);
/// After becoming leader, how long no live worker pod is deleted.
pub const ADOPT_GRACE: Duration = Duration::from_secs(30);
/// How long a pod this replica created or deleted is left alone while the
/// watch catches up.
const SETTLE: Duration = Duration::from_secs(5);
/// How long the GPUs of a pod this replica created count before the watch
/// shows it (a watch that lags longer counts them late).
const CREATED_HELD: Duration = Duration::from_secs(60);
/// How often an algorithm whose pods wait for GPUs says so in an Event.
const GATED_EVENT_EVERY: Duration = Duration::from_secs(60);

/// `--worker-endpoint`: the operator keeps worker pods.
#[derive(Debug, Clone)]
pub struct PodsSettings {
    /// What the worker pods connect to (`VISION_WORKER_ENDPOINT`).
    pub endpoint: String,
    /// This replica's leadership: checked before every write.
    pub validity: Validity,
    /// The admission pool's grants of GPUs for worker pods of algorithms
    /// with `workers.queue`. None: such pods are not created.
    pub grants: Option<GpuGrants>,
}

/// A request for GPUs of a queue's worker pods (see
/// `WorkerPool::grant_worker_pods`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuRequest {
    pub queue: String,
    /// The GPUs the queue's worker pods hold now (live, terminating, or
    /// created and not yet seen).
    pub held: u64,
    pub gpus_per_pod: u32,
    /// More pods wanted.
    pub wanted: u32,
}

/// Sends a [`GpuRequest`] to the admission pool; the answer is how many
/// pods may be created.
#[derive(Clone)]
pub struct GpuGrants(Arc<GrantFn>);

type GrantFn = dyn Fn(GpuRequest) -> tokio::sync::oneshot::Receiver<u32> + Send + Sync;

impl GpuGrants {
    pub fn new(
        f: impl Fn(GpuRequest) -> tokio::sync::oneshot::Receiver<u32> + Send + Sync + 'static,
    ) -> Self {
        GpuGrants(Arc::new(f))
    }

    async fn grant(&self, request: GpuRequest) -> u32 {
        (self.0)(request).await.unwrap_or(0)
    }
}

impl std::fmt::Debug for GpuGrants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GpuGrants")
    }
}

/// The label selector of the operator's worker pods.
pub fn selector() -> String {
    format!("{LABEL_ROLE}={ROLE_WORKER},{LABEL_MANAGED_BY}={MANAGER}")
}

struct Pods {
    api: Api<Pod>,
    namespace: String,
    settings: PodsSettings,
    algorithms: Store<VisionAlgorithm>,
    mode: Arc<WorkerMode>,
    events: Events,
    /// Pod uid -> when its worker last had a task (ms).
    last_busy: HashMap<String, i64>,
    /// Pod names this replica wrote lately.
    settling: HashMap<String, Instant>,
    /// Pods this replica created lately, by name: their queue and GPUs,
    /// held until the watch shows them (at most [`CREATED_HELD`]).
    created: HashMap<String, (String, u64, Instant)>,
    /// When each algorithm's pods last reported waiting for GPUs (an Event
    /// at most every [`GATED_EVENT_EVERY`]).
    gated: HashMap<String, Instant>,
    /// Since when this replica's leadership has been valid.
    leading_since: Option<Instant>,
}

/// Keeps the worker pods of every worker-mode algorithm in `namespace`,
/// until the process ends.
pub async fn run(
    client: kube::Client,
    namespace: String,
    settings: PodsSettings,
    algorithms: Store<VisionAlgorithm>,
    mode: Arc<WorkerMode>,
) {
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let (store, writer) = reflector::store::<Pod>();
    let watch = watcher(api.clone(), watcher::Config::default().labels(&selector()))
        .default_backoff()
        .reflect(writer)
        .for_each(|_| async {});
    tokio::spawn(watch);
    let (events, publishing) = Events::new(client, MANAGER.into(), std::env::var("POD_NAME").ok());
    tokio::spawn(publishing);
    if store.wait_until_ready().await.is_err() || algorithms.wait_until_ready().await.is_err() {
        return;
    }
    tracing::info!(%namespace, endpoint = %settings.endpoint, "keeping the worker pods of worker-mode algorithms");
    let mut pods = Pods {
        api,
        namespace,
        settings,
        algorithms,
        mode,
        events,
        last_busy: HashMap::new(),
        settling: HashMap::new(),
        created: HashMap::new(),
        gated: HashMap::new(),
        leading_since: None,
    };
    let mut tick = tokio::time::interval(TICK);
    loop {
        tick.tick().await;
        pods.pass(&store.state()).await;
    }
}

/// The queue whose GPU budget an algorithm's worker pods use.
fn counted_queue(algorithm: &VisionAlgorithm) -> Option<&str> {
    (algorithm.spec.mode == AlgorithmMode::Worker)
        .then(|| algorithm.spec.workers.as_ref()?.queue.as_deref())
        .flatten()
}

/// The GPUs a worker pod holds: its algorithm container's limit.
fn pod_gpus(pod: &Pod) -> u64 {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .filter_map(|c| {
            c.resources
                .as_ref()?
                .limits
                .as_ref()?
                .get(crate::pod::GPU_RESOURCE)
        })
        .filter_map(|q| q.0.parse::<u64>().ok())
        .sum()
}

fn phase(pod: &Pod) -> PodPhase {
    if pod.metadata.deletion_timestamp.is_some() {
        return PodPhase::Terminating;
    }
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Succeeded" | "Failed") => PodPhase::Finished,
        _ => PodPhase::Live,
    }
}

impl Pods {
    /// One look at every pool: decide and apply.
    async fn pass(&mut self, pods: &[Arc<Pod>]) {
        if !self.settings.validity.is_valid() {
            self.leading_since = None;
            return;
        }
        let since = *self.leading_since.get_or_insert_with(Instant::now);
        let may_remove_live = since.elapsed() >= ADOPT_GRACE;
        let now_ms = crate::clock::now_ms();
        self.settling.retain(|_, at| at.elapsed() < SETTLE);
        let live_uids: std::collections::HashSet<String> =
            pods.iter().filter_map(|p| p.uid()).collect();
        self.last_busy.retain(|uid, _| live_uids.contains(uid));

        let mut by_algorithm: HashMap<String, Vec<&Pod>> = HashMap::new();
        for pod in pods {
            let algorithm = pod
                .labels()
                .get(LABEL_ALGORITHM)
                .cloned()
                .unwrap_or_default();
            by_algorithm.entry(algorithm).or_default().push(pod);
        }
        // Worker-mode algorithms, with or without pods; then pods whose
        // algorithm is gone or no longer in worker mode (none are kept).
        let mut names: Vec<String> = self
            .algorithms
            .state()
            .iter()
            .filter(|a| a.spec.mode == AlgorithmMode::Worker)
            .map(|a| a.name_any())
            .collect();
        for name in by_algorithm.keys() {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names.sort();
        let mut held = self.held_gpus(pods);
        for name in names {
            let own = by_algorithm.remove(&name).unwrap_or_default();
            let algorithm = self
                .algorithms
                .get(&reflector::ObjectRef::new(&name))
                .filter(|a| a.spec.mode == AlgorithmMode::Worker);
            let spec = match &algorithm {
                Some(a) => PoolSpec::of(a.spec.workers.as_ref()),
                None => PoolSpec {
                    min: 0,
                    max: 0,
                    tasks_per_worker: 1,
                    idle_ms: 0,
                },
            };
            let backlog = self.mode.backlog(&name);
            let loads: HashMap<String, Load> = self
                .mode
                .hub()
                .loads(&name)
                .into_iter()
                .map(|l| (l.worker.clone(), l))
                .collect();
            let view: Vec<WorkerPod> = own.iter().map(|p| self.view(p, &loads, now_ms)).collect();
            let mut decision = decide(&name, &spec, backlog, &view, now_ms);
            if !may_remove_live {
                decision.delete.retain(|n| {
                    view.iter()
                        .any(|p| &p.name == n && p.phase == PodPhase::Finished)
                });
            }
            if decision != Decision::default() {
                tracing::debug!(algorithm = %name, backlog, ?decision, "worker pods");
            }
            if let Some(a) = algorithm.as_deref() {
                self.grant(a, &mut decision, &mut held).await;
            }
            self.apply(algorithm.as_deref(), &name, decision, &own, &loads)
                .await;
        }
        // The queues' worker GPUs as they are now, also where no pod was
        // wanted (pods that went free theirs).
        if let Some(grants) = &self.settings.grants {
            for (queue, gpus) in held {
                grants
                    .grant(GpuRequest {
                        queue,
                        held: gpus,
                        gpus_per_pod: 0,
                        wanted: 0,
                    })
                    .await;
            }
        }
    }

    /// The GPUs held by worker pods per queue (`workers.queue`): live and
    /// terminating pods, and those created and not yet seen.
    fn held_gpus(&mut self, pods: &[Arc<Pod>]) -> std::collections::BTreeMap<String, u64> {
        let mut held = std::collections::BTreeMap::new();
        for algorithm in self.algorithms.state() {
            if let Some(queue) = counted_queue(&algorithm) {
                held.insert(queue.to_string(), 0u64);
            }
        }
        let seen: std::collections::HashSet<String> = pods.iter().map(|p| p.name_any()).collect();
        self.created
            .retain(|name, (_, _, at)| !seen.contains(name) && at.elapsed() < CREATED_HELD);
        for (queue, gpus, _) in self.created.values() {
            *held.entry(queue.clone()).or_default() += gpus;
        }
        for pod in pods.iter().filter(|p| phase(p) != PodPhase::Finished) {
            let Some(algorithm) = pod
                .labels()
                .get(LABEL_ALGORITHM)
                .and_then(|a| self.algorithms.get(&reflector::ObjectRef::new(a)))
            else {
                continue;
            };
            if let Some(queue) = counted_queue(&algorithm) {
                *held.entry(queue.to_string()).or_default() += pod_gpus(pod);
            }
        }
        held
    }

    /// Keeps of `decision.create` only the pods the admission pool grants
    /// GPUs for, when the algorithm's pods count against a queue.
    async fn grant(
        &mut self,
        algorithm: &VisionAlgorithm,
        decision: &mut Decision,
        held: &mut std::collections::BTreeMap<String, u64>,
    ) {
        let Some(queue) = counted_queue(algorithm) else {
            return;
        };
        if decision.create.is_empty() {
            return;
        }
        let per_pod = u32::try_from(algorithm.spec.gpus_per_job).unwrap_or(0);
        let wanted = u32::try_from(decision.create.len()).unwrap_or(u32::MAX);
        let total = held.entry(queue.to_string()).or_default();
        let granted = match &self.settings.grants {
            Some(grants) => {
                grants
                    .grant(GpuRequest {
                        queue: queue.to_string(),
                        held: *total,
                        gpus_per_pod: per_pod,
                        wanted,
                    })
                    .await
            }
            None => 0,
        };
        *total += u64::from(granted) * u64::from(per_pod);
        let name = algorithm.name_any();
        let quiet = self
            .gated
            .get(&name)
            .is_some_and(|at| at.elapsed() < GATED_EVENT_EVERY);
        if granted < wanted && !quiet {
            self.gated.insert(name, Instant::now());
            tracing::info!(algorithm = %algorithm.name_any(), %queue, wanted, granted, "worker pods wait for GPUs of their queue");
            self.warn(
                algorithm,
                "WorkerPodsWaitForGpus",
                format!(
                    "{} of {wanted} worker pods wait: queue {queue} has no room for their GPUs (maxGPUs)",
                    wanted - granted
                ),
            );
        }
        decision.create.truncate(granted as usize);
    }

    fn view(&mut self, pod: &Pod, loads: &HashMap<String, Load>, now_ms: i64) -> WorkerPod {
        let name = pod.name_any();
        let load = loads.get(&name);
        let tasks = load.map_or(0, |l| l.tasks);
        let uid = pod.uid().unwrap_or_default();
        // Busy now, or given a task since the last look (a task shorter
        // than a tick is seen here only).
        let assigned_ms = load
            .and_then(|l| l.last_assigned)
            .map(|at| now_ms - i64::try_from(at.elapsed().as_millis()).unwrap_or(i64::MAX));
        let busy_ms = if tasks > 0 { Some(now_ms) } else { assigned_ms };
        if let Some(busy_ms) = busy_ms {
            let last = self.last_busy.entry(uid.clone()).or_insert(busy_ms);
            *last = (*last).max(busy_ms);
        }
        let created = pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(now_ms, crate::clock::ms_of);
        WorkerPod {
            name: name.clone(),
            phase: phase(pod),
            connected: loads.contains_key(&name),
            tasks,
            idle_since_ms: self.last_busy.get(&uid).copied().unwrap_or(created),
        }
    }

    async fn apply(
        &mut self,
        algorithm: Option<&VisionAlgorithm>,
        name: &str,
        decision: Decision,
        own: &[&Pod],
        loads: &HashMap<String, Load>,
    ) {
        for pod_name in decision.create {
            let Some(algorithm) = algorithm else { break };
            if self.settling.contains_key(&pod_name) {
                continue;
            }
            let pod = match build_worker_pod(
                algorithm,
                &pod_name,
                &self.namespace,
                &self.settings.endpoint,
            ) {
                Ok(pod) => pod,
                Err(e) => {
                    self.warn(algorithm, "WorkerPodInvalid", e.to_string());
                    break;
                }
            };
            // Fencing: checked right before the write, as the writer does.
            if !self.settings.validity.is_valid() {
                return;
            }
            self.settling.insert(pod_name.clone(), Instant::now());
            if let Some(queue) = counted_queue(algorithm) {
                self.created.insert(
                    pod_name.clone(),
                    (queue.to_string(), pod_gpus(&pod), Instant::now()),
                );
            }
            let params = PostParams {
                field_manager: Some(MANAGER.into()),
                ..Default::default()
            };
            match self.api.create(&params, &pod).await {
                Ok(_) => tracing::info!(algorithm = %name, pod = %pod_name, "created a worker pod"),
                Err(e) if is_status(&e, 409) => {}
                Err(e) => {
                    self.created.remove(&pod_name);
                    tracing::warn!(algorithm = %name, pod = %pod_name, error = %e, "creating a worker pod failed");
                    self.warn(
                        algorithm,
                        "WorkerPodCreateFailed",
                        format!("creating worker pod {}/{pod_name}: {e}", self.namespace),
                    );
                }
            }
        }
        for pod_name in decision.delete {
            let Some(pod) = own.iter().find(|p| p.name_any() == pod_name) else {
                continue;
            };
            if self.settling.contains_key(&pod_name) {
                continue;
            }
            // A connected worker leaves dispatch first; one that took a
            // task meanwhile keeps its pod.
            if phase(pod) == PodPhase::Live
                && loads.contains_key(&pod_name)
                && !self.mode.hub().retire(&pod_name)
            {
                continue;
            }
            if !self.settings.validity.is_valid() {
                return;
            }
            self.settling.insert(pod_name.clone(), Instant::now());
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: pod.uid(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match self.api.delete(&pod_name, &params).await {
                Ok(_) => tracing::info!(algorithm = %name, pod = %pod_name, "deleted a worker pod"),
                Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
                Err(e) => {
                    tracing::warn!(algorithm = %name, pod = %pod_name, error = %e, "deleting a worker pod failed");
                    if let Some(algorithm) = algorithm {
                        self.warn(
                            algorithm,
                            "WorkerPodDeleteFailed",
                            format!("deleting worker pod {}/{pod_name}: {e}", self.namespace),
                        );
                    }
                }
            }
        }
    }

    fn warn(&self, algorithm: &VisionAlgorithm, reason: &str, note: String) {
        self.events.publish(Note {
            regarding: algorithm.object_ref(&()),
            type_: EventType::Warning,
            reason: reason.into(),
            action: "WorkerPods".into(),
            note: Some(note.chars().take(1000).collect()),
        });
    }
}
