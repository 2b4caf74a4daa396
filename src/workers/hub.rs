//! The operator's end of the worker protocol: a tonic service that
//! authenticates workers and keeps one stream per worker, the registry of
//! who runs what, and the API the controller drives (`dispatch`, `cancel`,
//! `adopt`, `tick`) with the outcomes coming back as [`WorkerEvent`]s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming};
use vision_worker::MAX_RESULT_BYTES;
use vision_worker::proto::{
    self, CancelReason, OperatorMessage, WorkerMessage, operator_message, worker_message,
    worker_server::{Worker, WorkerServer},
};

use super::auth::{Auth, Denied};
use super::registry::{Finish, Lost, Registry};

/// The most tasks one worker may declare it runs at once.
pub const MAX_CAPACITY: u32 = 1024;
/// The largest frame a worker may send; a larger one ends its stream.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// Tunables of the worker endpoint.
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// How often workers send heartbeats.
    pub heartbeat_interval: Duration,
    /// Heartbeats missed in a row before a worker is dead.
    pub missed_heartbeats: u32,
    /// How long a new stream may take to send its Register frame.
    pub register_timeout: Duration,
    /// After a failover, how long a task a worker reports and the new
    /// leader's adoption of it may wait for each other.
    pub adopt_grace: Duration,
    /// After a failover, how long an attempt the former leader may have
    /// sent (its job was written in a former term) waits for its worker to
    /// reconnect and report it before it is sent to a worker again.
    pub reconnect_hold: Duration,
}

impl Default for HubSettings {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(2),
            missed_heartbeats: 3,
            register_timeout: Duration::from_secs(10),
            adopt_grace: Duration::from_secs(30),
            // The SDKs reconnect with a backoff of at most 5 s.
            reconnect_hold: Duration::from_secs(10),
        }
    }
}

/// One attempt of a job, for a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    /// [`task_id`] of the job's UID and the attempt.
    pub task_id: String,
    pub job_uid: String,
    pub attempt: i32,
    pub algorithm: String,
    /// The job JSON exactly as pod mode passes it (`pod::job_json`).
    pub job_json: String,
    pub timeout: Option<Duration>,
}

/// The id of one attempt of a job: `<job uid>-<attempt>`.
pub fn task_id(job_uid: &str, attempt: i32) -> String {
    format!("{job_uid}-{attempt}")
}

/// What happened to a dispatched task.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerEvent {
    Progress {
        task_id: String,
        worker: String,
        fraction: f32,
        message: String,
    },
    /// The attempt succeeded with this result (valid JSON, at most
    /// [`MAX_RESULT_BYTES`]).
    Succeeded {
        task_id: String,
        worker: String,
        result: serde_json::Value,
    },
    /// The attempt failed: by the algorithm (its reason), or with
    /// ResultTooLarge / InvalidResult for a result the operator refused.
    Failed {
        task_id: String,
        worker: String,
        reason: String,
        message: String,
    },
    /// The attempt ended without an outcome: its worker died or vanished.
    Lost {
        task_id: String,
        worker: String,
        why: Lost,
    },
    /// The attempt ran past its time limit; its worker was told to cancel it.
    TimedOut {
        task_id: String,
        worker: Option<String>,
    },
}

/// The worker endpoint. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    events: mpsc::UnboundedSender<WorkerEvent>,
    auth: Auth,
    settings: HubSettings,
    /// What may register: given an algorithm, the most tasks one of its
    /// workers may run, or why it may have no workers. Unset: anything.
    admit: std::sync::OnceLock<Box<AdmitFn>>,
    /// Whether this replica leads. Unset: always.
    leading: std::sync::OnceLock<Box<dyn Fn() -> bool + Send + Sync>>,
}

type Outbound = mpsc::UnboundedSender<Result<OperatorMessage, Status>>;

/// See [`Hub::set_admission`].
type AdmitFn = dyn Fn(&str) -> Result<u32, String> + Send + Sync;

#[derive(Default)]
struct State {
    registry: Registry,
    /// The current stream of each worker, with its generation.
    streams: HashMap<String, (u64, Outbound)>,
    /// Outcomes of orphans (tasks reported by a worker, not yet adopted),
    /// for their adoption; dropped after the grace period.
    stash: HashMap<String, (Instant, WorkerEvent)>,
}

/// What adopting a task found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Adopted {
    /// A worker runs it: its outcome will come as an event.
    Running(String),
    /// It ended before the adoption: its outcome was emitted now.
    Ended(String),
    /// No worker reported it yet: it is lost if none does within the grace.
    Awaiting,
}

fn out(kind: operator_message::Kind) -> Result<OperatorMessage, Status> {
    Ok(OperatorMessage { kind: Some(kind) })
}

fn error_frame(code: &str, message: String, task_id: &str) -> Result<OperatorMessage, Status> {
    out(operator_message::Kind::Error(proto::Error {
        code: code.into(),
        message,
        task_id: task_id.into(),
    }))
}

impl Hub {
    pub fn new(auth: Auth, settings: HubSettings) -> (Self, mpsc::UnboundedReceiver<WorkerEvent>) {
        let (events, receiver) = mpsc::unbounded_channel();
        let hub = Hub {
            inner: Arc::new(Inner {
                state: Mutex::default(),
                events,
                auth,
                settings,
                admit: std::sync::OnceLock::new(),
                leading: std::sync::OnceLock::new(),
            }),
        };
        (hub, receiver)
    }

    /// Restricts registrations: `admit(algorithm)` is the most tasks a
    /// worker of it may declare, or why it may have no workers (refused
    /// with FAILED_PRECONDITION: the worker retries, the algorithm may yet
    /// be created or switched to worker mode).
    pub fn set_admission(
        &self,
        admit: impl Fn(&str) -> Result<u32, String> + Send + Sync + 'static,
    ) {
        let _ = self.inner.admit.set(Box::new(admit));
    }

    /// Only while `leading` says so are workers accepted. A follower must
    /// not take them: it would find their running tasks unknown and cancel
    /// them. A refused worker reconnects (UNAVAILABLE), through the
    /// workers' Service, until it reaches the leader.
    pub fn set_leading(&self, leading: impl Fn() -> bool + Send + Sync + 'static) {
        let _ = self.inner.leading.set(Box::new(leading));
    }

    /// See [`HubSettings::reconnect_hold`].
    pub fn reconnect_hold(&self) -> Duration {
        self.inner.settings.reconnect_hold
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().expect("the hub's lock")
    }

    fn emit(&self, event: WorkerEvent) {
        let _ = self.inner.events.send(event);
    }

    /// Free task slots of the connected workers of an algorithm.
    pub fn free_slots(&self, algorithm: &str) -> u32 {
        self.state().registry.free_slots(algorithm)
    }

    /// The connected workers of an algorithm.
    pub fn workers(&self, algorithm: &str) -> Vec<String> {
        self.state().registry.workers_of(algorithm)
    }

    /// The connected workers of an algorithm and the tasks each holds.
    pub fn loads(&self, algorithm: &str) -> Vec<super::registry::Load> {
        self.state().registry.loads(algorithm)
    }

    /// Takes an idle connected worker out of dispatch (its pod is about to
    /// be removed); false if it holds a task or is not connected.
    pub fn retire(&self, worker: &str) -> bool {
        self.state().registry.retire(worker)
    }

    /// Sends a task to the least loaded worker of its algorithm; returns the
    /// worker, or the task back when no worker has a free slot.
    pub fn dispatch(&self, task: TaskSpec) -> Result<String, TaskSpec> {
        let mut state = self.state();
        let now = Instant::now();
        let deadline = task.timeout.map(|t| now + t);
        let Some(worker) = state
            .registry
            .assign(&task.task_id, &task.algorithm, deadline, now)
        else {
            return Err(task);
        };
        let frame = out(operator_message::Kind::Task(proto::Task {
            task_id: task.task_id.clone(),
            job_uid: task.job_uid,
            attempt: task.attempt,
            job_json: task.job_json,
            timeout_seconds: task
                .timeout
                .map_or(0, |t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX)),
        }));
        if let Some((_, stream)) = state.streams.get(&worker) {
            // A stream that just ended is noticed by its reader, which
            // reports the task lost.
            let _ = stream.send(frame);
        }
        Ok(worker)
    }

    /// Cancels a task (its job was deleted, suspended or timed out): the
    /// worker is told, and the task's outcome will be ignored. False when
    /// the task is not running.
    pub fn cancel(&self, task_id: &str, reason: CancelReason) -> bool {
        let mut state = self.state();
        match state.registry.cancel(task_id) {
            Some(worker) => {
                if let Some((_, stream)) = state.streams.get(&worker) {
                    let _ = stream.send(out(operator_message::Kind::Cancel(proto::Cancel {
                        task_id: task_id.into(),
                        reason: reason.into(),
                    })));
                }
                true
            }
            None => false,
        }
    }

    /// Adopts a task that may have been sent before this replica led (a
    /// started attempt of a worker-mode job, or one about to be sent): it
    /// is never sent again, its worker's outcome counts.
    pub fn adopt(&self, task_id: &str, algorithm: &str, deadline: Option<Instant>) -> Adopted {
        let mut state = self.state();
        if let Some((_, event)) = state.stash.remove(task_id) {
            let worker = match &event {
                WorkerEvent::Succeeded { worker, .. } | WorkerEvent::Failed { worker, .. } => {
                    worker.clone()
                }
                _ => String::new(),
            };
            self.emit(event);
            return Adopted::Ended(worker);
        }
        match state
            .registry
            .adopt(task_id, algorithm, deadline, Instant::now())
        {
            Some(worker) => Adopted::Running(worker),
            None => Adopted::Awaiting,
        }
    }

    /// Whether a worker reported this task without the operator knowing it
    /// (or its outcome is stashed): then it is adopted, not sent again.
    pub fn is_orphan(&self, task_id: &str) -> bool {
        let state = self.state();
        state.stash.contains_key(task_id) || state.registry.orphan(task_id).is_some()
    }

    /// Declares workers silent for too long dead (their tasks lost) and
    /// cancels tasks past their deadline. `serve` calls it twice per
    /// heartbeat interval; tests call it with the time they want.
    pub fn tick(&self, now: Instant) {
        let settings = &self.inner.settings;
        let timeout = settings.heartbeat_interval * settings.missed_heartbeats;
        let mut state = self.state();
        let grace = settings.adopt_grace;
        let expired = state.registry.expire(now, timeout, grace);
        state
            .stash
            .retain(|_, (since, _)| now.saturating_duration_since(*since) <= grace);
        for (task_id, worker) in expired.orphans {
            if let Some((_, stream)) = state.streams.get(&worker) {
                let _ = stream.send(out(operator_message::Kind::Cancel(proto::Cancel {
                    task_id,
                    reason: CancelReason::UnknownTask.into(),
                })));
            }
        }
        for task_id in expired.unclaimed {
            self.emit(WorkerEvent::Lost {
                task_id,
                worker: String::new(),
                why: Lost::NotReported,
            });
        }
        for (worker, lost) in expired.dead {
            if let Some((_, stream)) = state.streams.remove(&worker) {
                let _ = stream.send(error_frame(
                    "MissedHeartbeats",
                    format!("no heartbeat for {timeout:?}: the worker is considered dead"),
                    "",
                ));
            }
            tracing::warn!(%worker, tasks = lost.len(), "worker missed its heartbeats");
            for task_id in lost {
                self.emit(WorkerEvent::Lost {
                    task_id,
                    worker: worker.clone(),
                    why: Lost::MissedHeartbeats,
                });
            }
        }
        for (task_id, worker) in expired.timed_out {
            if let Some(w) = &worker {
                bench_on_failure(&mut state, w, false);
            }
            if let Some((_, stream)) = worker.as_ref().and_then(|w| state.streams.get(w)) {
                let _ = stream.send(out(operator_message::Kind::Cancel(proto::Cancel {
                    task_id: task_id.clone(),
                    reason: CancelReason::Timeout.into(),
                })));
            }
            self.emit(WorkerEvent::TimedOut { task_id, worker });
        }
    }

    /// The gRPC service, with the frame size limit.
    pub fn service(&self) -> WorkerServer<Hub> {
        WorkerServer::new(self.clone()).max_decoding_message_size(MAX_FRAME_BYTES)
    }

    /// Serves workers on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let ticker = {
            let hub = self.clone();
            let period = self.inner.settings.heartbeat_interval / 2;
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(period);
                loop {
                    interval.tick().await;
                    hub.tick(Instant::now());
                }
            })
        };
        let served = tonic::transport::Server::builder()
            .add_service(self.service())
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
            .await;
        ticker.abort();
        served
    }

    /// Handles one frame of a registered worker's stream; `false` ends the
    /// stream (a protocol violation).
    fn on_frame(&self, worker: &str, generation: u64, frame: WorkerMessage) -> bool {
        let mut state = self.state();
        let Some((current, stream)) = state.streams.get(worker).cloned() else {
            return false;
        };
        if current != generation {
            return false;
        }
        let refuse = |code: &str, message: String, task_id: &str| {
            let _ = stream.send(error_frame(code, message, task_id));
        };
        match frame.kind {
            Some(worker_message::Kind::Heartbeat(_)) => {
                state.registry.heartbeat(worker, generation, Instant::now());
            }
            Some(worker_message::Kind::Progress(p)) => {
                if state.registry.owns(worker, generation, &p.task_id) {
                    self.emit(WorkerEvent::Progress {
                        task_id: p.task_id,
                        worker: worker.into(),
                        fraction: p.fraction,
                        message: p.message,
                    });
                } else {
                    refuse(
                        "UnknownTask",
                        format!("task {:?} is not this worker's", p.task_id),
                        &p.task_id,
                    );
                }
            }
            Some(worker_message::Kind::Result(r)) => {
                let verdict = if r.result_json.len() > MAX_RESULT_BYTES {
                    Err((
                        "ResultTooLarge",
                        format!(
                            "the result ({} bytes) is over the {MAX_RESULT_BYTES}-byte limit; write large outputs to $VISION_OUTPUT_DIR (spec.output) and list them in the result",
                            r.result_json.len()
                        ),
                    ))
                } else {
                    serde_json::from_slice::<serde_json::Value>(&r.result_json)
                        .map_err(|e| ("InvalidResult", format!("the result is not JSON: {e}")))
                };
                let finish = state.registry.finish(worker, generation, &r.task_id);
                if finish == Finish::NotYours {
                    refuse(
                        "UnknownTask",
                        format!("task {:?} is not this worker's", r.task_id),
                        &r.task_id,
                    );
                    return true;
                }
                if let Err((code, message)) = &verdict {
                    refuse(code, message.clone(), &r.task_id);
                }
                let event = match verdict {
                    Ok(result) => WorkerEvent::Succeeded {
                        task_id: r.task_id.clone(),
                        worker: worker.into(),
                        result,
                    },
                    Err((code, message)) => WorkerEvent::Failed {
                        task_id: r.task_id.clone(),
                        worker: worker.into(),
                        reason: code.into(),
                        message,
                    },
                };
                match finish {
                    Finish::Counts => {
                        let succeeded = matches!(event, WorkerEvent::Succeeded { .. });
                        bench_on_failure(&mut state, worker, succeeded);
                        self.emit(event);
                    }
                    Finish::Orphan => {
                        state.stash.insert(r.task_id, (Instant::now(), event));
                    }
                    // A cancelled task's late result is dropped quietly.
                    Finish::Cancelled | Finish::NotYours => {}
                }
            }
            Some(worker_message::Kind::Failure(f)) => {
                let event = WorkerEvent::Failed {
                    task_id: f.task_id.clone(),
                    worker: worker.into(),
                    reason: if f.reason.is_empty() {
                        "AlgorithmError".into()
                    } else {
                        f.reason
                    },
                    message: f.message,
                };
                match state.registry.finish(worker, generation, &f.task_id) {
                    Finish::Counts => {
                        bench_on_failure(&mut state, worker, false);
                        self.emit(event);
                    }
                    Finish::Orphan => {
                        state.stash.insert(f.task_id, (Instant::now(), event));
                    }
                    Finish::Cancelled => {}
                    Finish::NotYours => refuse(
                        "UnknownTask",
                        format!("task {:?} is not this worker's", f.task_id),
                        &f.task_id,
                    ),
                }
            }
            Some(worker_message::Kind::Register(_)) => {
                refuse(
                    "BadFrame",
                    "Register is only the first frame of a stream".into(),
                    "",
                );
                return false;
            }
            None => {
                refuse("BadFrame", "a frame of an unknown kind".into(), "");
                return false;
            }
        }
        true
    }

    /// A stream ended: its tasks are lost, unless a newer stream of the
    /// worker replaced it.
    fn on_end(&self, worker: &str, generation: u64) {
        let mut state = self.state();
        if state
            .streams
            .get(worker)
            .is_some_and(|(g, _)| *g == generation)
        {
            state.streams.remove(worker);
        }
        for task_id in state.registry.disconnect(worker, generation) {
            self.emit(WorkerEvent::Lost {
                task_id,
                worker: worker.into(),
                why: Lost::Disconnected,
            });
        }
    }
}

fn denied(d: Denied) -> Status {
    match d {
        Denied::Unauthenticated(m) => Status::unauthenticated(m),
        Denied::WrongAlgorithm(m) => Status::permission_denied(m),
        Denied::Unavailable(m) => Status::unavailable(m),
    }
}

/// Records a counted outcome of `worker`'s task; says so when it benches
/// the worker (see `Registry::outcome`).
fn bench_on_failure(state: &mut State, worker: &str, succeeded: bool) {
    if state.registry.outcome(worker, succeeded, Instant::now()) {
        tracing::warn!(
            %worker,
            failures = super::registry::WORKER_FAILURE_LIMIT,
            bench = ?super::registry::WORKER_BENCH,
            "worker failed its tasks in a row: it gets no task for a while"
        );
    }
}

#[tonic::async_trait]
impl Worker for Hub {
    type SessionStream = UnboundedReceiverStream<Result<OperatorMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<WorkerMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(self.inner.settings.register_timeout, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Register frame in time"))??;
        let Some(WorkerMessage {
            kind: Some(worker_message::Kind::Register(register)),
        }) = first
        else {
            return Err(Status::invalid_argument(
                "the first frame of a stream must be Register",
            ));
        };
        if register.algorithm.is_empty() || register.worker_id.is_empty() {
            return Err(Status::invalid_argument(
                "Register needs an algorithm and a worker_id",
            ));
        }
        if !(1..=MAX_CAPACITY).contains(&register.capacity) {
            return Err(Status::invalid_argument(format!(
                "Register.capacity must be 1..={MAX_CAPACITY}, not {}",
                register.capacity
            )));
        }
        if self.inner.leading.get().is_some_and(|leading| !leading()) {
            return Err(Status::unavailable(
                "this operator replica is not the leader: reconnect (only the leader serves workers)",
            ));
        }
        if let Some(admit) = self.inner.admit.get() {
            let most = admit(&register.algorithm).map_err(Status::failed_precondition)?;
            if register.capacity > most {
                return Err(Status::invalid_argument(format!(
                    "Register.capacity {} is over algorithm {}'s workers.tasksPerWorker ({most})",
                    register.capacity, register.algorithm
                )));
            }
        }
        let identity = self
            .inner
            .auth
            .authenticate(&register.token, &register.algorithm, &register.worker_id)
            .await
            .map_err(denied)?;
        // Authenticated workers are named by their pod, whatever they claim.
        let worker = identity.pod;
        let (tx, rx) = mpsc::unbounded_channel();
        let generation = {
            let mut state = self.state();
            let registration = state.registry.register(
                &worker,
                &register.algorithm,
                register.capacity,
                &register.running_task_ids,
                Instant::now(),
            );
            let _ = tx.send(out(operator_message::Kind::Registered(proto::Registered {
                heartbeat_interval_ms: u32::try_from(
                    self.inner.settings.heartbeat_interval.as_millis(),
                )
                .unwrap_or(u32::MAX),
                max_result_bytes: MAX_RESULT_BYTES as u32,
                unknown_task_ids: registration.unknown.clone(),
            })));
            for task_id in &registration.unknown {
                let _ = tx.send(out(operator_message::Kind::Cancel(proto::Cancel {
                    task_id: task_id.clone(),
                    reason: CancelReason::UnknownTask.into(),
                })));
            }
            // Replacing the sender ends the worker's older stream.
            state
                .streams
                .insert(worker.clone(), (registration.generation, tx));
            for task_id in registration.lost {
                self.emit(WorkerEvent::Lost {
                    task_id,
                    worker: worker.clone(),
                    why: Lost::Disconnected,
                });
            }
            registration.generation
        };
        tracing::info!(%worker, algorithm = %register.algorithm, capacity = register.capacity, sdk = %register.sdk, "worker registered");
        let hub = self.clone();
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(frame)) => {
                        if !hub.on_frame(&worker, generation, frame) {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        tracing::info!(%worker, %status, "worker stream failed");
                        break;
                    }
                }
            }
            hub.on_end(&worker, generation);
        });
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}
