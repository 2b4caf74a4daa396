//! The worker side of the protocol: connect, register, heartbeat, run tasks
//! with the algorithm's handler, report results and failures, obey
//! cancellations, reconnect with backoff.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::proto::{self, operator_message, worker_client::WorkerClient, worker_message};

/// The largest result the operator accepts, in bytes of JSON: the same limit
/// as pod mode's termination message (Kubernetes keeps 4096 bytes of it).
pub const MAX_RESULT_BYTES: usize = 4096;
/// Where the operator's worker endpoint is read from (`http://host:port`).
pub const ENV_ENDPOINT: &str = "VISION_WORKER_ENDPOINT";
/// The worker's name; in a cluster its pod's name (downward API).
pub const ENV_WORKER_ID: &str = "VISION_WORKER_ID";
/// The file holding the pod's projected ServiceAccount token.
pub const ENV_TOKEN_FILE: &str = "VISION_WORKER_TOKEN_FILE";
/// The token file's default path (a projected volume of the worker pod).
pub const DEFAULT_TOKEN_FILE: &str = "/var/run/secrets/vision.zjlab.io/worker/token";
/// What the SDK tells the operator it is.
pub const SDK: &str = concat!("vision-worker-rust/", env!("CARGO_PKG_VERSION"));

/// How a worker connects.
#[derive(Clone, Debug)]
pub struct Config {
    /// The operator's worker endpoint, `http://host:port`.
    pub endpoint: String,
    /// The VisionAlgorithm this worker serves.
    pub algorithm: String,
    /// Tasks run at once (at least 1).
    pub capacity: u32,
    /// The worker's stable name (its pod's name).
    pub worker_id: String,
    /// The projected ServiceAccount token's file; `None` sends no token (only
    /// an operator in its test-only trust mode accepts that).
    pub token_file: Option<PathBuf>,
    /// First wait before a reconnect; doubled after each failure.
    pub backoff_initial: Duration,
    /// The longest wait between reconnects.
    pub backoff_max: Duration,
    /// How long a cancelled handler may take to return before it is dropped.
    pub cancel_grace: Duration,
}

impl Config {
    /// The configuration of a worker pod: endpoint, worker id and token file
    /// from the environment ([`ENV_ENDPOINT`], [`ENV_WORKER_ID`] else the
    /// host name, [`ENV_TOKEN_FILE`] else [`DEFAULT_TOKEN_FILE`]).
    pub fn from_env(algorithm: &str, capacity: u32) -> Result<Self, Error> {
        let endpoint = std::env::var(ENV_ENDPOINT)
            .map_err(|_| Error::Config(format!("{ENV_ENDPOINT} is not set")))?;
        let worker_id = std::env::var(ENV_WORKER_ID)
            .or_else(|_| std::env::var("HOSTNAME"))
            .map_err(|_| Error::Config(format!("neither {ENV_WORKER_ID} nor HOSTNAME is set")))?;
        let config = Self::new(endpoint, algorithm, capacity, worker_id);
        // Set but empty: no token (only test-only operators accept that).
        Ok(match std::env::var(ENV_TOKEN_FILE) {
            Ok(path) if path.is_empty() => config,
            Ok(path) => config.with_token_file(path),
            Err(_) => config.with_token_file(DEFAULT_TOKEN_FILE),
        })
    }

    /// A configuration without a token, with default backoff.
    pub fn new(
        endpoint: impl Into<String>,
        algorithm: impl Into<String>,
        capacity: u32,
        worker_id: impl Into<String>,
    ) -> Self {
        Self {
            endpoint: endpoint.into(),
            algorithm: algorithm.into(),
            capacity: capacity.max(1),
            worker_id: worker_id.into(),
            token_file: None,
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
            cancel_grace: Duration::from_secs(10),
        }
    }

    pub fn with_token_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.token_file = Some(path.into());
        self
    }
}

/// Why the worker stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    /// The operator refused the worker (authentication, wrong algorithm):
    /// retrying would not help.
    #[error("the operator refused this worker: {code}: {message}")]
    Refused { code: String, message: String },
}

/// How a task failed; the attempt fails with this reason and message (and
/// the job retries as in pod mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    /// CamelCase, like a Kubernetes reason ("AlgorithmError", "BadInput").
    pub reason: String,
    pub message: String,
}

impl TaskError {
    pub fn new(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            message: message.into(),
        }
    }
}

impl<E: std::error::Error> From<E> for TaskError {
    fn from(e: E) -> Self {
        TaskError::new("AlgorithmError", e.to_string())
    }
}

/// What a handler gets besides the job: which task it is, its cancellation
/// token, and a way to report progress.
#[derive(Clone, Debug)]
pub struct Task {
    pub task_id: String,
    pub attempt: i32,
    /// Cancelled when the operator cancels the task (job deleted, suspended,
    /// timed out): return soon, the outcome is ignored.
    pub cancel: CancellationToken,
    outbox: mpsc::UnboundedSender<proto::WorkerMessage>,
}

impl Task {
    /// Reports progress (fraction in 0..=1, or negative when unknown).
    pub fn progress(&self, fraction: f32, message: impl Into<String>) {
        let _ = self
            .outbox
            .send(frame(worker_message::Kind::Progress(proto::Progress {
                task_id: self.task_id.clone(),
                fraction,
                message: message.into(),
            })));
    }
}

fn frame(kind: worker_message::Kind) -> proto::WorkerMessage {
    proto::WorkerMessage { kind: Some(kind) }
}

/// Runs `handler` as the algorithm `algorithm` with `capacity` tasks at once,
/// configured from the environment ([`Config::from_env`]), until the
/// operator refuses the worker or the process ends.
pub async fn serve<H, F>(algorithm: &str, capacity: u32, handler: H) -> Result<(), Error>
where
    H: Fn(Value, Task) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Value, TaskError>> + Send + 'static,
{
    let config = Config::from_env(algorithm, capacity)?;
    run(config, handler, CancellationToken::new()).await
}

/// The tasks a worker runs now: their cancellation tokens.
type Running = Arc<Mutex<HashMap<String, CancellationToken>>>;

/// Outcomes (results, failures) of the last [`RECENT_KEEP`], at most
/// [`RECENT_MAX`], oldest first: after a reconnect they are reported as
/// running in Register and sent again. The operator that got them may have
/// died before recording them (a leader failover: the new leader would
/// otherwise send the task again), and frames queued on a stream that broke
/// are lost with it. The operator holds an outcome of a task it does not
/// know until a new leader adopts the task, and drops it otherwise
/// (docs/WORKERS.md): sent twice, it still counts once.
type Recent = Arc<Mutex<VecDeque<(Instant, String, proto::WorkerMessage)>>>;

/// How long an outcome is sent again after a reconnect: a new leader's
/// lease and adoption take longer than the old one's last status writes.
const RECENT_KEEP: Duration = Duration::from_secs(30);
/// At most this many (a Register frame with their ids stays far below the
/// operator's 64 KiB frame limit).
const RECENT_MAX: usize = 512;

/// Runs the worker until `shutdown` is cancelled (returns Ok) or the
/// operator refuses it. Tasks survive reconnects: after one, the worker
/// registers with the tasks it still runs and sends their outcomes then.
pub async fn run<H, F>(config: Config, handler: H, shutdown: CancellationToken) -> Result<(), Error>
where
    H: Fn(Value, Task) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Value, TaskError>> + Send + 'static,
{
    let handler = Arc::new(handler);
    let running: Running = Arc::default();
    let recent: Recent = Arc::default();
    // Frames of tasks (progress, results, failures) outlive a connection:
    // those made while disconnected wait here for the next one.
    let (outbox, mut frames) = mpsc::unbounded_channel::<proto::WorkerMessage>();
    let mut backoff = config.backoff_initial;
    loop {
        let session = session(
            &config,
            &handler,
            &running,
            &recent,
            &outbox,
            &mut frames,
            &shutdown,
        );
        let outcome = tokio::select! {
            outcome = session => outcome,
            () = shutdown.cancelled() => Ok(Ended::Shutdown),
        };
        match outcome {
            Ok(Ended::Shutdown) => {
                for token in running.lock().expect("running").values() {
                    token.cancel();
                }
                return Ok(());
            }
            Ok(Ended::Lost { registered }) => {
                if registered {
                    backoff = config.backoff_initial;
                }
                tracing::warn!(worker = %config.worker_id, "stream to the operator lost; reconnecting");
            }
            Err(Failed::Refused(code, message)) => return Err(Error::Refused { code, message }),
            Err(Failed::Retry(why)) => {
                tracing::warn!(worker = %config.worker_id, %why, retry_in = ?backoff, "cannot reach the operator");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => return Ok(()),
        }
        backoff = (backoff * 2).min(config.backoff_max);
    }
}

enum Ended {
    Shutdown,
    Lost { registered: bool },
}

enum Failed {
    Refused(String, String),
    Retry(String),
}

/// Codes of an Error frame after which reconnecting cannot help.
const FATAL_CODES: [&str; 3] = ["Unauthenticated", "PermissionDenied", "WrongAlgorithm"];

async fn session<H, F>(
    config: &Config,
    handler: &Arc<H>,
    running: &Running,
    recent: &Recent,
    outbox: &mpsc::UnboundedSender<proto::WorkerMessage>,
    frames: &mut mpsc::UnboundedReceiver<proto::WorkerMessage>,
    shutdown: &CancellationToken,
) -> Result<Ended, Failed>
where
    H: Fn(Value, Task) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Value, TaskError>> + Send + 'static,
{
    let token = match &config.token_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| Failed::Retry(format!("reading the token {}: {e}", path.display())))?
            .trim()
            .to_string(),
        None => String::new(),
    };
    let channel = tonic::transport::Endpoint::from_shared(config.endpoint.clone())
        .map_err(|e| Failed::Refused("BadEndpoint".into(), e.to_string()))?
        .connect()
        .await
        .map_err(|e| Failed::Retry(e.to_string()))?;
    let (tx, rx) = mpsc::channel::<proto::WorkerMessage>(64);
    let mut running_ids: Vec<String> = running.lock().expect("running").keys().cloned().collect();
    // Recent outcomes: reported as running, sent again once registered.
    let resend: Vec<(String, proto::WorkerMessage)> = {
        let mut recent = recent.lock().expect("recent");
        let now = Instant::now();
        while recent
            .front()
            .is_some_and(|(at, _, _)| now.duration_since(*at) > RECENT_KEEP)
        {
            recent.pop_front();
        }
        recent
            .iter()
            .map(|(_, id, f)| (id.clone(), f.clone()))
            .collect()
    };
    running_ids.extend(resend.iter().map(|(id, _)| id.clone()));
    let _ = tx
        .send(frame(worker_message::Kind::Register(proto::Register {
            algorithm: config.algorithm.clone(),
            capacity: config.capacity,
            worker_id: config.worker_id.clone(),
            running_task_ids: running_ids,
            token,
            sdk: SDK.into(),
        })))
        .await;
    let mut inbound = WorkerClient::new(channel)
        .session(ReceiverStream::new(rx))
        .await
        .map_err(status_failure)?
        .into_inner();

    // The first frame answers the registration.
    let registered = match inbound.message().await.map_err(status_failure)? {
        Some(proto::OperatorMessage {
            kind: Some(operator_message::Kind::Registered(r)),
        }) => r,
        Some(proto::OperatorMessage {
            kind: Some(operator_message::Kind::Error(e)),
        }) => return Err(Failed::Refused(e.code, e.message)),
        other => return Err(Failed::Retry(format!("expected Registered, got {other:?}"))),
    };
    for id in &registered.unknown_task_ids {
        cancel(running, id);
    }
    // The recent outcomes, then what waited for a stream (but not those
    // outcomes a second time).
    let resent: HashSet<String> = resend.iter().map(|(id, _)| id.clone()).collect();
    for (_, f) in resend {
        if tx.send(f).await.is_err() {
            return Ok(Ended::Lost { registered: true });
        }
    }
    while let Ok(f) = frames.try_recv() {
        if outcome_of(&f).is_some_and(|id| resent.contains(id)) {
            continue;
        }
        if let Err(mpsc::error::SendError(f)) = tx.send(f).await {
            let _ = outbox.send(f);
            return Ok(Ended::Lost { registered: true });
        }
    }
    let max_result = usize::try_from(registered.max_result_bytes)
        .ok()
        .filter(|n| *n > 0)
        .unwrap_or(MAX_RESULT_BYTES)
        .min(MAX_RESULT_BYTES);
    let mut heartbeat = tokio::time::interval(Duration::from_millis(u64::from(
        registered.heartbeat_interval_ms.max(50),
    )));
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    tracing::info!(worker = %config.worker_id, algorithm = %config.algorithm, "registered");
    loop {
        tokio::select! {
            _ = heartbeat.tick() => {
                seq += 1;
                let running_task_ids = running.lock().expect("running").keys().cloned().collect();
                if tx.send(frame(worker_message::Kind::Heartbeat(proto::Heartbeat { seq, running_task_ids }))).await.is_err() {
                    return Ok(Ended::Lost { registered: true });
                }
            }
            Some(out) = frames.recv() => {
                if let Err(mpsc::error::SendError(out)) = tx.send(out).await {
                    // Keep it for the next stream.
                    let _ = outbox.send(out);
                    return Ok(Ended::Lost { registered: true });
                }
            }
            message = inbound.message() => match message {
                Ok(Some(proto::OperatorMessage { kind: Some(kind) })) => match kind {
                    operator_message::Kind::Task(task) => start(task, config, handler, running, recent, outbox, max_result),
                    operator_message::Kind::Cancel(c) => cancel(running, &c.task_id),
                    operator_message::Kind::Error(e) if e.task_id.is_empty() => {
                        if FATAL_CODES.contains(&e.code.as_str()) {
                            return Err(Failed::Refused(e.code, e.message));
                        }
                        tracing::warn!(code = %e.code, message = %e.message, "the operator ended the stream");
                    }
                    operator_message::Kind::Error(e) => {
                        tracing::warn!(task = %e.task_id, code = %e.code, message = %e.message, "the operator refused a frame");
                    }
                    operator_message::Kind::Registered(_) => {}
                },
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return Ok(Ended::Lost { registered: true }),
            },
            () = shutdown.cancelled() => return Ok(Ended::Shutdown),
        }
    }
}

fn status_failure(status: tonic::Status) -> Failed {
    match status.code() {
        // A capacity over the algorithm's tasksPerWorker: retrying cannot help.
        tonic::Code::Unauthenticated
        | tonic::Code::PermissionDenied
        | tonic::Code::InvalidArgument => {
            Failed::Refused(format!("{:?}", status.code()), status.message().to_string())
        }
        _ => Failed::Retry(status.to_string()),
    }
}

/// The task whose outcome (result or failure) a frame is.
fn outcome_of(f: &proto::WorkerMessage) -> Option<&str> {
    match &f.kind {
        Some(worker_message::Kind::Result(r)) => Some(&r.task_id),
        Some(worker_message::Kind::Failure(f)) => Some(&f.task_id),
        _ => None,
    }
}

fn cancel(running: &Running, task_id: &str) {
    if let Some(token) = running.lock().expect("running").get(task_id) {
        token.cancel();
    }
}

fn start<H, F>(
    task: proto::Task,
    config: &Config,
    handler: &Arc<H>,
    running: &Running,
    recent: &Recent,
    outbox: &mpsc::UnboundedSender<proto::WorkerMessage>,
    max_result: usize,
) where
    H: Fn(Value, Task) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Value, TaskError>> + Send + 'static,
{
    let task_id = task.task_id.clone();
    let token = CancellationToken::new();
    {
        let mut running = running.lock().expect("running");
        if running.contains_key(&task_id) {
            // A task is never run twice, whatever the operator sends.
            return;
        }
        if running.len() >= config.capacity as usize {
            let _ = outbox.send(failure(
                &task_id,
                "WorkerOverCapacity",
                format!("the worker already runs {} tasks", running.len()),
            ));
            return;
        }
        running.insert(task_id.clone(), token.clone());
    }
    let job: Value = match serde_json::from_str(&task.job_json) {
        Ok(job) => job,
        Err(e) => {
            running.lock().expect("running").remove(&task_id);
            let _ = outbox.send(failure(
                &task_id,
                "BadTask",
                format!("the task's job JSON does not parse: {e}"),
            ));
            return;
        }
    };
    let context = Task {
        task_id: task_id.clone(),
        attempt: task.attempt,
        cancel: token.clone(),
        outbox: outbox.clone(),
    };
    let work = handler(job, context);
    let outbox = outbox.clone();
    let running = running.clone();
    let recent = recent.clone();
    let grace = config.cancel_grace;
    let attempt = task.attempt;
    tokio::spawn(async move {
        let outcome = tokio::select! {
            outcome = work => Some(outcome),
            () = async { token.cancelled().await; tokio::time::sleep(grace).await } => None,
        };
        running.lock().expect("running").remove(&task_id);
        let message = match outcome {
            _ if token.is_cancelled() => failure(
                &task_id,
                "Cancelled",
                "the operator cancelled the task".into(),
            ),
            None => failure(
                &task_id,
                "Cancelled",
                "the operator cancelled the task".into(),
            ),
            Some(Ok(result)) => {
                let bytes = serde_json::to_vec(&result).expect("a JSON value serializes");
                if bytes.len() > max_result {
                    failure(
                        &task_id,
                        "ResultTooLarge",
                        format!(
                            "the result ({} bytes) is over the {max_result}-byte limit; write large outputs to $VISION_OUTPUT_DIR (spec.output) and list them in the result",
                            bytes.len()
                        ),
                    )
                } else {
                    frame(worker_message::Kind::Result(proto::Result {
                        task_id: task_id.clone(),
                        attempt,
                        result_json: bytes,
                    }))
                }
            }
            Some(Err(e)) => failure(&task_id, &e.reason, e.message),
        };
        {
            let mut recent = recent.lock().expect("recent");
            if recent.len() >= RECENT_MAX {
                recent.pop_front();
            }
            recent.push_back((Instant::now(), task_id.clone(), message.clone()));
        }
        let _ = outbox.send(message);
    });
}

fn failure(task_id: &str, reason: &str, message: String) -> proto::WorkerMessage {
    frame(worker_message::Kind::Failure(proto::Failure {
        task_id: task_id.into(),
        reason: reason.into(),
        message,
    }))
}
