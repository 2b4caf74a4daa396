//! Worker mode in the running operator: the in-memory attempt pods
//! (`super::attempts`) of worker-mode jobs, their dispatch to the hub, and
//! the loop that turns the hub's events into pod changes the reconciler
//! sees (through the same trigger channel as the pod watch).
//!
//! The writer routes an attempt pod of a worker-mode algorithm here instead
//! of to the API server: `create` (dispatch, or wait for a free worker slot),
//! `delete` (cancel the task), `release` (forget the finished attempt).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::mpsc;

use super::attempts::{AttemptState, task_for, with_state};
use super::hub::{Adopted, Hub, WorkerEvent};
use crate::api::contract::LABEL_ALGORITHM;
use crate::api::{AlgorithmMode, JobPhase, VisionAlgorithm, VisionJob};
use crate::pod::build_pod;
use vision_worker::proto::CancelReason;

/// How often attempts waiting for a free worker slot are offered again
/// (also right after any task ends).
const WAITING_RETRY: Duration = Duration::from_millis(200);

pub struct WorkerMode {
    hub: Hub,
    algorithms: Store<VisionAlgorithm>,
    state: Mutex<Attempts>,
    /// `vision_operator_worker_dispatch_seconds`.
    metrics: Arc<crate::metrics::Metrics>,
    /// Wakes the reconciler of the pod's job (the pod watch's channel).
    trigger: Box<dyn Fn(Pod) + Send + Sync>,
}

#[derive(Default)]
struct Attempts {
    /// By `namespace/name`.
    pods: BTreeMap<String, Arc<Pod>>,
    /// Task id -> pod key.
    tasks: HashMap<String, String>,
    /// Pod keys of attempts no worker had room for yet, oldest first, with
    /// when each was handed over.
    waiting: Vec<(String, Instant)>,
    /// Tasks released lately (newest last, at most [`RELEASED_KEPT`]): a
    /// stale read of their job must not adopt them again.
    released: std::collections::VecDeque<String>,
    /// Waiting attempts that a former leader may have sent, by pod key: not
    /// sent before then, so that their worker can reconnect and report
    /// them first (then they are adopted, never run twice).
    held: HashMap<String, Instant>,
}

const RELEASED_KEPT: usize = 10_000;

fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    crate::clock::time_at(crate::clock::now_ms())
}

fn key(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

impl WorkerMode {
    pub fn new(
        hub: Hub,
        algorithms: Store<VisionAlgorithm>,
        metrics: Arc<crate::metrics::Metrics>,
        trigger: impl Fn(Pod) + Send + Sync + 'static,
    ) -> Self {
        WorkerMode {
            hub,
            algorithms,
            state: Mutex::default(),
            metrics,
            trigger: Box::new(trigger),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Attempts> {
        self.state.lock().expect("worker attempts lock")
    }

    /// The endpoint the workers connect to.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// An algorithm's backlog for its worker pods: its attempts waiting for
    /// a worker slot plus those running (not ended).
    pub fn backlog(&self, algorithm: &str) -> u32 {
        let state = self.state();
        let open = state.pods.values().filter(|p| {
            p.labels().get(LABEL_ALGORITHM).map(String::as_str) == Some(algorithm)
                && !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
        });
        u32::try_from(open.count()).unwrap_or(u32::MAX)
    }

    /// Whether this pod is an attempt of a worker-mode algorithm's job.
    pub fn handles(&self, pod: &Pod) -> bool {
        pod.labels()
            .get(LABEL_ALGORITHM)
            .and_then(|a| self.algorithms.get(&ObjectRef::new(a)))
            .is_some_and(|a| a.spec.mode == AlgorithmMode::Worker)
    }

    /// The in-memory attempt pods of a job. A started attempt of a
    /// worker-mode job without one ran before this replica led: it is
    /// adopted (see [`Hub::adopt`]), never sent again.
    pub fn pods_of(&self, job: &VisionJob) -> Vec<Arc<Pod>> {
        let Some(uid) = job.metadata.uid.as_deref() else {
            return Vec::new();
        };
        let mut state = self.state();
        let mut pods: Vec<Arc<Pod>> = state
            .pods
            .values()
            .filter(|p| p.owner_references().iter().any(|o| o.uid == uid))
            .cloned()
            .collect();
        if let Some(adopted) = self.adopt_started(&mut state, job, &pods) {
            pods.push(adopted);
        }
        pods
    }

    fn adopt_started(
        &self,
        state: &mut Attempts,
        job: &VisionJob,
        pods: &[Arc<Pod>],
    ) -> Option<Arc<Pod>> {
        let status = job.status.as_ref()?;
        let since = status.started_at.clone()?;
        if job.metadata.deletion_timestamp.is_some() || job.phase() != Some(JobPhase::Running) {
            return None;
        }
        let attempt = status.attempts.unwrap_or(1);
        let algorithm = self.algorithms.get(&ObjectRef::new(&job.spec.algorithm))?;
        if algorithm.spec.mode != AlgorithmMode::Worker {
            return None;
        }
        let pod = build_pod(job, &algorithm, attempt).ok()?;
        if pods.iter().any(|p| p.name_any() == pod.name_any()) {
            return None;
        }
        let task = task_for(&pod)?;
        if state.released.contains(&task.task_id) {
            return None;
        }
        let mut pod = pod;
        pod.metadata.uid = Some(task.task_id.clone());
        let worker = match self.hub.adopt(&task.task_id, &task.algorithm, None) {
            Adopted::Running(worker) | Adopted::Ended(worker) => worker,
            Adopted::Awaiting => String::new(),
        };
        tracing::info!(pod = %key(&pod), task = %task.task_id, %worker, "adopted a running attempt");
        let key = key(&pod);
        state.tasks.insert(task.task_id, key.clone());
        let pod = Arc::new(with_state(pod, &AttemptState::Running { worker, since }));
        state.pods.insert(key, pod.clone());
        Some(pod)
    }

    /// A new attempt: sent to a worker now, or kept waiting for a slot.
    /// `maybe_sent`: a former leader may have sent it already (its job's
    /// status was written in a former term), so unless a worker reports it
    /// it waits for [`Hub::reconnect_hold`] before it is sent.
    pub fn create(&self, pod: &Pod, maybe_sent: bool) {
        let handed = Instant::now();
        let mut pod = pod.clone();
        let Some(task) = task_for(&pod) else {
            tracing::error!(pod = %key(&pod), "an attempt pod without the labels of a task");
            return;
        };
        pod.metadata.uid = Some(task.task_id.clone());
        let key = key(&pod);
        let mut state = self.state();
        if state.pods.contains_key(&key) {
            return;
        }
        state.tasks.insert(task.task_id.clone(), key.clone());
        let task_id = task.task_id.clone();
        // Sent by a former leader, and its worker reported it: adopt it.
        let dispatched = if self.hub.is_orphan(&task_id) {
            match self.hub.adopt(&task_id, &task.algorithm, None) {
                Adopted::Running(worker) | Adopted::Ended(worker) => Ok(worker),
                Adopted::Awaiting => self.hub.dispatch(task),
            }
        } else if maybe_sent {
            tracing::info!(pod = %key, task = %task_id, "attempt of a former term: waiting for its worker to reconnect before sending it");
            state
                .held
                .insert(key.clone(), Instant::now() + self.hub.reconnect_hold());
            Err(task)
        } else {
            self.hub.dispatch(task)
        };
        tracing::debug!(pod = %key, task = %task_id, worker = ?dispatched.as_ref().ok(), "attempt on a worker");
        if dispatched.is_ok() {
            self.metrics.worker_dispatched(handed.elapsed());
        }
        let pod = match dispatched {
            Ok(worker) => with_state(
                pod,
                &AttemptState::Running {
                    worker,
                    since: now(),
                },
            ),
            Err(_) => {
                state.waiting.push((key.clone(), handed));
                with_state(pod, &AttemptState::Waiting)
            }
        };
        self.set(&mut state, key, pod);
    }

    fn set(&self, state: &mut Attempts, key: String, pod: Pod) {
        (self.trigger)(pod.clone());
        state.pods.insert(key, Arc::new(pod));
    }

    /// The attempt is stopped (job deleted, suspended, timed out): its task
    /// is cancelled, telling the worker why, and the attempt forgotten.
    pub fn delete(&self, pod: &Pod, why: CancelReason) {
        let key = key(pod);
        tracing::debug!(pod = %key, "attempt on a worker stopped");
        let mut state = self.state();
        state.waiting.retain(|(k, _)| *k != key);
        state.held.remove(&key);
        if let Some(removed) = state.pods.remove(&key) {
            if let Some(task_id) = removed.metadata.uid.clone() {
                state.tasks.remove(&task_id);
                self.hub.cancel(&task_id, why);
            }
            // The reconciler sees the pod gone.
            let mut gone = (*removed).clone();
            gone.metadata.deletion_timestamp = Some(now());
            (self.trigger)(gone);
        }
    }

    /// The job's status holds the attempt's outcome: forget it.
    pub fn release(&self, pod: &Pod) {
        let key = key(pod);
        tracing::debug!(pod = %key, "attempt on a worker released");
        let mut state = self.state();
        if let Some(removed) = state.pods.get(&key).cloned() {
            let finished = matches!(
                removed.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded") | Some("Failed")
            );
            if finished {
                state.pods.remove(&key);
                if let Some(task_id) = &removed.metadata.uid {
                    state.tasks.remove(task_id);
                    state.released.push_back(task_id.clone());
                    if state.released.len() > RELEASED_KEPT {
                        state.released.pop_front();
                    }
                }
                // As the pod watch would show the released pod: plan again.
                (self.trigger)((*removed).clone());
            }
        }
    }

    /// Applies the hub's events to the attempts, and offers waiting
    /// attempts again, until the hub is gone.
    pub async fn run(self: Arc<Self>, mut events: mpsc::UnboundedReceiver<WorkerEvent>) {
        let mut retry = tokio::time::interval(WAITING_RETRY);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => { self.on_event(event); self.offer_waiting(); }
                    None => return,
                },
                _ = retry.tick() => self.offer_waiting(),
            }
        }
    }

    fn on_event(&self, event: WorkerEvent) {
        let (task_id, state) = match event {
            WorkerEvent::Progress { .. } | WorkerEvent::TimedOut { .. } => return,
            WorkerEvent::Succeeded {
                task_id,
                worker,
                result,
            } => (task_id, AttemptState::Succeeded { worker, result }),
            WorkerEvent::Failed {
                task_id,
                worker,
                reason,
                message,
            } => (
                task_id,
                AttemptState::Failed {
                    worker,
                    reason,
                    message,
                },
            ),
            WorkerEvent::Lost {
                task_id,
                worker,
                why,
            } => (task_id, AttemptState::Lost { worker, why }),
        };
        let mut attempts = self.state();
        tracing::debug!(task = %task_id, ?state, "worker reported");
        let Some(key) = attempts.tasks.get(&task_id).cloned() else {
            return;
        };
        let Some(pod) = attempts.pods.get(&key).cloned() else {
            return;
        };
        let pod = with_state((*pod).clone(), &state);
        self.set(&mut attempts, key, pod);
    }

    fn offer_waiting(&self) {
        let mut state = self.state();
        if state.waiting.is_empty() {
            return;
        }
        let waiting = std::mem::take(&mut state.waiting);
        for (key, handed) in waiting {
            let Some(pod) = state.pods.get(&key).cloned() else {
                continue;
            };
            let Some(task) = task_for(&pod) else { continue };
            // Only an attempt a former leader may have sent (held, now or
            // before) can be reported by a worker; others skip that lookup,
            // which would cost one more hub lock per waiting task per pass.
            let former = state.held.get(&key).copied();
            let held = former.is_some_and(|until| until > Instant::now());
            let dispatched = if former.is_some() && self.hub.is_orphan(&task.task_id) {
                // Its worker reported it after a failover: adopt it.
                match self.hub.adopt(&task.task_id, &task.algorithm, None) {
                    Adopted::Running(worker) | Adopted::Ended(worker) => Ok(worker),
                    Adopted::Awaiting => Err(task),
                }
            } else if held {
                Err(task)
            } else {
                self.hub.dispatch(task)
            };
            if dispatched.is_ok() {
                state.held.remove(&key);
            }
            match dispatched {
                Ok(worker) => {
                    self.metrics.worker_dispatched(handed.elapsed());
                    let pod = with_state(
                        (*pod).clone(),
                        &AttemptState::Running {
                            worker,
                            since: now(),
                        },
                    );
                    self.set(&mut state, key, pod);
                }
                Err(_) => state.waiting.push((key, handed)),
            }
        }
    }
}

/// How the operator serves workers (`--worker-addr` and friends).
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Where the worker endpoint listens.
    pub addr: std::net::SocketAddr,
    /// The namespace whose pods may be workers (TokenReview mode).
    pub namespace: String,
    /// TEST ONLY: trust every worker (see `Auth::TrustLocalTestOnly`).
    pub trust_local_test_only: bool,
    /// This replica's pod (namespace, name), labelled
    /// [`LABEL_SERVES_WORKERS`](super::LABEL_SERVES_WORKERS) while it leads
    /// so the workers' Service routes to the leader only. None outside a
    /// cluster.
    pub pod: Option<(String, String)>,
    pub hub: super::hub::HubSettings,
    /// Worker pods kept by the operator (`--worker-endpoint`); None: the
    /// operator creates none, workers are run beside it.
    pub pods: Option<super::pods::PodsSettings>,
}
