// kube-derive takes one `printcolumn(...)` per column; clippy mistakes the repeated
// keys inside them for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The container of the pod template that runs the algorithm and receives the job.
pub const ALGORITHM_CONTAINER: &str = "algorithm";

/// A registered algorithm backend: how to run one job of it as a pod.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "vision.zjlab.io",
    version = "v1alpha1",
    kind = "VisionAlgorithm",
    shortname = "va",
    category = "vision",
    status = "VisionAlgorithmStatus",
    doc = "A registered vision algorithm backend: the pod template that runs one VisionJob, its GPU needs and limits, default timeout and retries, backend capacity and circuit breaker.",
    printcolumn(name = "GPUs", type_ = "integer", json_path = ".spec.gpusPerJob"),
    printcolumn(name = "Running", type_ = "integer", json_path = ".status.running"),
    printcolumn(name = "Max", type_ = "integer", json_path = ".spec.maxRunning"),
    printcolumn(name = "Breaker", type_ = "string", json_path = ".status.breaker"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("!has(self.maxGPUsPerJob) || self.maxGPUsPerJob >= self.gpusPerJob").message("spec.maxGPUsPerJob must be >= spec.gpusPerJob"))]
// Refused at apply time: without it every job of the algorithm would fail later.
#[x_kube(validation = Rule::new("has(self.template.spec) && self.template.spec.containers.exists(c, c.name == 'algorithm')").message("spec.template.spec.containers must include a container named \"algorithm\": it runs the job, receives it in $VISION_JOB and /etc/vision/job.json, and writes the result to /dev/termination-log"))]
#[serde(rename_all = "camelCase")]
pub struct VisionAlgorithmSpec {
    /// The pod that runs one attempt of a job. It must have a container named
    /// "algorithm": it receives the job as JSON in the VISION_JOB environment
    /// variable and the file /etc/vision/job.json, and writes its result as
    /// JSON to /dev/termination-log. The operator sets restartPolicy Never,
    /// the GPU limit, activeDeadlineSeconds and, where the template sets none,
    /// a restricted security context.
    pub template: PodTemplateSpec,

    /// GPUs a job of this algorithm gets when it does not ask. Default 1.
    #[serde(rename = "gpusPerJob", default = "one")]
    #[schemars(range(min = 0, max = 64))]
    pub gpus_per_job: i32,

    /// The most GPUs one job may ask for. Default: gpusPerJob.
    #[serde(
        rename = "maxGPUsPerJob",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0, max = 64))]
    pub max_gpus_per_job: Option<i32>,

    /// Default time limit of one attempt, in seconds. Default 3600.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1, max = 604_800))]
    pub timeout_seconds: i64,

    /// Default number of retries of a failed job. Default 2.
    #[serde(default = "default_retries")]
    #[schemars(range(min = 0, max = 20))]
    pub retries: i32,

    /// Backend capacity: the most jobs of this algorithm admitted or running
    /// at once, across all queues. Unset: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100_000))]
    pub max_running: Option<i32>,

    /// Namespaces whose jobs may use this algorithm. Unset or empty: all.
    /// A job from another namespace fails with reason NamespaceNotAllowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub allowed_namespaces: Vec<String>,

    /// Pauses admission of this algorithm after repeated failures. Unset: no breaker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,

    /// How an admitted job runs. Pod (the default): one pod per attempt,
    /// from the template. Worker: the attempt is sent as a task over gRPC to
    /// a warm worker process of this algorithm that already runs (see
    /// `workers` and docs/WORKERS.md); the job's API, phases, retries,
    /// timeouts and result are the same. Needs the operator's worker
    /// endpoint (--worker-addr); with --worker-endpoint the operator keeps
    /// the worker pods (`workers`), else they are run beside it.
    #[serde(default, skip_serializing_if = "AlgorithmMode::is_pod")]
    pub mode: AlgorithmMode,

    /// The warm workers of an algorithm in Worker mode. Ignored in Pod mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<WorkerPool>,
}

/// How an algorithm's jobs run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AlgorithmMode {
    /// One pod per attempt of a job.
    #[default]
    Pod,
    /// Attempts are tasks streamed to warm worker processes over gRPC.
    Worker,
}

impl AlgorithmMode {
    pub fn is_pod(&self) -> bool {
        *self == AlgorithmMode::Pod
    }
}

/// The warm workers of an algorithm: between min and max worker pods from
/// the template, each running up to tasksPerWorker tasks at once.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "self.min <= self.max", "message": "workers.min must be <= workers.max"}]))]
pub struct WorkerPool {
    /// Worker pods kept even when no job waits. Default 1.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 10_000))]
    pub min: i32,
    /// The most worker pods. Default 1.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 10_000))]
    pub max: i32,
    /// Tasks one worker runs at once (its Register.capacity may not exceed
    /// it). Default 1.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1024))]
    pub tasks_per_worker: i32,
    /// How long a worker pod above the number the backlog needs must have
    /// had no task before the operator removes it, in seconds (never below
    /// min, never a worker with a task). Short: GPUs come back sooner;
    /// long: a burst after a pause finds its workers warm. Default 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86_400))]
    pub idle_seconds: Option<i64>,
    /// The VisionQueue whose GPU budget (maxGPUs) the worker pods use: a
    /// worker pod (gpusPerJob GPUs) is created only while that queue has
    /// room for its GPUs beside its jobs', and counts against it while it
    /// lives; the algorithm's jobs then hold a slot (maxRunning) of their
    /// own queue but no GPUs. Unset: the worker pods count against no
    /// queue, and each running job counts its GPUs as in Pod mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
}

/// The idle time of [`WorkerPool::idle_seconds`] when unset.
pub const DEFAULT_WORKER_IDLE_SECONDS: i64 = 60;

fn one() -> i32 {
    1
}
fn default_timeout() -> i64 {
    3600
}
fn default_retries() -> i32 {
    2
}

/// Circuit breaker: failureThreshold failed attempts within windowSeconds open
/// it; while open no job of the algorithm is admitted (they wait, with reason
/// BreakerOpen) and the algorithm reports Degraded; after cooldownSeconds one
/// job is admitted as a probe: success closes it, failure opens it again.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreaker {
    /// Failed attempts within the window that open the breaker. Default 5.
    #[serde(default = "default_threshold")]
    #[schemars(range(min = 1, max = 10_000))]
    pub failure_threshold: i32,
    /// Length of the sliding window, in seconds. Default 300.
    #[serde(default = "default_window")]
    #[schemars(range(min = 1, max = 86_400))]
    pub window_seconds: i64,
    /// How long the breaker stays open before a probe, in seconds. Default 60.
    #[serde(default = "default_cooldown")]
    #[schemars(range(min = 1, max = 86_400))]
    pub cooldown_seconds: i64,
}

fn default_threshold() -> i32 {
    5
}
fn default_window() -> i64 {
    300
}
fn default_cooldown() -> i64 {
    60
}

/// What the operator observed of an algorithm. Written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VisionAlgorithmStatus {
    /// Jobs of this algorithm holding a slot (Admitted or Running).
    #[serde(default)]
    pub running: i32,
    /// Failed attempts within the breaker's window.
    #[serde(default)]
    pub recent_failures: i32,
    /// Closed, Open or HalfOpen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<String>,
    /// Standard conditions: Ready (the template is usable), Degraded (the breaker is open).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The spec generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
