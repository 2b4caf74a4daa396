// kube-derive takes one `printcolumn(...)` per column; clippy mistakes the repeated
// keys inside them for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A vision task: one run of a registered algorithm on one input, admitted
/// through a worker pool and executed as a GPU pod.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "vision.zjlab.io",
    version = "v1alpha1",
    kind = "VisionJob",
    namespaced,
    shortname = "vj",
    category = "vision",
    status = "VisionJobStatus",
    doc = "A vision task: one run of a registered VisionAlgorithm on one input, admitted by a VisionQueue and executed as a GPU pod. The result is written to status.result.",
    printcolumn(name = "Algorithm", type_ = "string", json_path = ".spec.algorithm"),
    printcolumn(name = "Queue", type_ = "string", json_path = ".spec.queue"),
    printcolumn(
        name = "Priority",
        type_ = "integer",
        json_path = ".spec.priority",
        priority = "1"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.reason"),
    printcolumn(name = "Attempts", type_ = "integer", json_path = ".status.attempts"),
    printcolumn(
        name = "Pod",
        type_ = "string",
        json_path = ".status.podName",
        priority = "1"
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.message",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    selectable = ".spec.algorithm",
    selectable = ".spec.queue",
    selectable = ".status.phase"
)]
#[x_kube(validation = Rule::new("self.algorithm == oldSelf.algorithm").message("spec.algorithm is immutable"))]
#[x_kube(validation = Rule::new("self.queue == oldSelf.queue").message("spec.queue is immutable"))]
#[x_kube(validation = Rule::new("has(self.input) == has(oldSelf.input) && (!has(self.input) || self.input == oldSelf.input)").message("spec.input is immutable"))]
#[x_kube(validation = Rule::new("has(self.params) == has(oldSelf.params) && (!has(self.params) || self.params == oldSelf.params)").message("spec.params is immutable"))]
#[x_kube(validation = Rule::new("has(self.gpus) == has(oldSelf.gpus) && (!has(self.gpus) || self.gpus == oldSelf.gpus)").message("spec.gpus is immutable"))]
#[x_kube(validation = Rule::new("has(self.timeoutSeconds) == has(oldSelf.timeoutSeconds) && (!has(self.timeoutSeconds) || self.timeoutSeconds == oldSelf.timeoutSeconds)").message("spec.timeoutSeconds is immutable"))]
#[x_kube(validation = Rule::new("has(self.retries) == has(oldSelf.retries) && (!has(self.retries) || self.retries == oldSelf.retries)").message("spec.retries is immutable"))]
#[x_kube(validation = Rule::new("has(self.output) == has(oldSelf.output) && (!has(self.output) || self.output == oldSelf.output)").message("spec.output is immutable"))]
#[serde(rename_all = "camelCase")]
pub struct VisionJobSpec {
    /// Name of the VisionAlgorithm that runs this job (cluster-scoped). A job
    /// naming an algorithm that does not exist fails with reason
    /// AlgorithmNotFound; no pod is created. Immutable.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')").message("spec.algorithm must be a lowercase DNS name such as yolo-detect"))]
    pub algorithm: String,

    /// Name of the VisionQueue (worker pool) that admits this job. Defaults
    /// to "default". While the queue does not exist the job waits, and its
    /// status.message says so. Immutable.
    #[serde(default = "default_queue")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')").message("spec.queue must be a lowercase DNS name such as default"))]
    pub queue: String,

    /// Admission priority within the queue: higher is admitted first; equal
    /// priorities are admitted in creation order (then by namespace/name).
    /// Range -1000000..1000000, default 0. May be changed while the job waits.
    #[serde(default)]
    #[schemars(range(min = -1_000_000, max = 1_000_000))]
    pub priority: i32,

    /// Free-form JSON handed to the algorithm (for example
    /// {"uri": "s3://frames/cam42/0001.jpg"}). The pod receives it in the
    /// VISION_JOB environment variable and file. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub input: Option<Value>,

    /// Free-form JSON parameters handed to the algorithm (for example
    /// {"confidence": 0.5}). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub params: Option<Value>,

    /// GPUs (nvidia.com/gpu) for this job's pod. Defaults to the algorithm's
    /// gpusPerJob; more than the algorithm's maxGPUsPerJob fails the job with
    /// reason GPULimitExceeded. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 64))]
    pub gpus: Option<i32>,

    /// Longest time one attempt may run, in seconds, after which its pod is
    /// stopped and the job fails with reason Timeout (a timeout is not
    /// retried). Defaults to the algorithm's timeoutSeconds. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 604_800))]
    pub timeout_seconds: Option<i64>,

    /// How many times a failed attempt is retried (with exponential backoff)
    /// before the job fails with reason BackoffLimitExceeded. Defaults to the
    /// algorithm's retries. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 20))]
    pub retries: Option<i32>,

    /// true stops the job: a running pod is deleted, the slot is freed, and
    /// the job stays with phase Suspended. Setting it back to false queues the
    /// job again (with its original place in line).
    #[serde(default)]
    pub suspend: bool,

    /// Seconds after the job finished (Succeeded, Failed or Rejected) after
    /// which the operator deletes it. Unset: its queue's
    /// defaultTtlSecondsAfterFinished applies; if that is unset too, the
    /// finished job is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i32>,

    /// Where the algorithm writes outputs too large for status.result (which
    /// Kubernetes caps at 4 KiB): a directory on a PersistentVolumeClaim of
    /// the job's namespace. Each attempt gets a directory of its own,
    /// <path>/<attempt>, mounted at /var/run/vision/output in the algorithm
    /// container and named by $VISION_OUTPUT_DIR; the algorithm lists what it
    /// wrote there in its result ("outputs": [{"path", "size", "sha256"}]),
    /// and status.output says which claim and directory they are in. Unset:
    /// no output volume is mounted. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<JobOutput>,
}

/// Where a job's large outputs go: a directory on a PersistentVolumeClaim.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct JobOutput {
    /// The PersistentVolumeClaim, in the job's namespace, that the outputs
    /// are written to. The algorithm's pod mounts it for writing (use
    /// ReadWriteMany when jobs run on several nodes at once), and its root
    /// directory must be writable by the algorithm's user or group: the
    /// kubelet creates each attempt's directory with the root's mode.
    pub persistent_volume_claim: OutputClaim,

    /// The directory within the claim, relative to its root (no leading "/",
    /// no ".." element). Each attempt writes into <path>/<attempt>, so a
    /// retry never mixes its files with those of the attempt before it.
    /// Defaults to the job's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("!self.startsWith('/')").message("spec.output.path must be relative to the claim's root, such as results/cam42"))]
    #[x_kube(validation = Rule::new("!self.matches('(^|/)[.][.](/|$)')").message("spec.output.path must not contain a '..' element"))]
    pub path: Option<String>,
}

/// A PersistentVolumeClaim by name, in the job's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OutputClaim {
    /// Name of the PersistentVolumeClaim in the job's namespace.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')").message("spec.output.persistentVolumeClaim.claimName must be a lowercase DNS name such as vision-results"))]
    pub claim_name: String,
}

/// Where an attempt's outputs are: the claim and the directory within it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputLocation {
    /// The PersistentVolumeClaim (in the job's namespace) holding the outputs.
    pub claim_name: String,
    /// The attempt's directory within the claim: <spec.output.path>/<attempt>.
    pub path: String,
}

impl JobOutput {
    /// The directory within the claim that attempt `attempt` of the job
    /// `job_name` writes to: `<path>/<attempt>`, `path` defaulting to the
    /// job's name.
    pub fn attempt_path(&self, job_name: &str, attempt: i32) -> String {
        let base = self
            .path
            .as_deref()
            .map(|p| p.trim_end_matches('/'))
            .filter(|p| !p.is_empty())
            .unwrap_or(job_name);
        format!("{base}/{attempt}")
    }

    /// Where attempt `attempt` of the job `job_name` writes its outputs.
    pub fn location(&self, job_name: &str, attempt: i32) -> OutputLocation {
        OutputLocation {
            claim_name: self.persistent_volume_claim.claim_name.clone(),
            path: self.attempt_path(job_name, attempt),
        }
    }
}

fn default_queue() -> String {
    crate::DEFAULT_QUEUE.to_string()
}

/// Schema of a free-form JSON object: any fields, kept as given.
pub(crate) fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// Where a job is in its life. Succeeded, Failed and Rejected are final.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum JobPhase {
    /// Accepted by its queue, waiting for a free slot; status.message says why.
    Queued,
    /// Given a slot; its pod is being created or scheduled.
    Admitted,
    /// Its pod runs.
    Running,
    /// The algorithm finished with exit code 0; status.result holds its result.
    Succeeded,
    /// The job failed for good; status.reason says why.
    Failed,
    /// Refused at submission: the queue had maxPending jobs waiting (reason QueueFull).
    Rejected,
    /// Stopped by spec.suspend; holds no slot.
    Suspended,
}

impl JobPhase {
    /// Final phases: the job never runs again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobPhase::Succeeded | JobPhase::Failed | JobPhase::Rejected
        )
    }

    /// Phases in which the job holds a slot of its queue.
    pub fn holds_slot(self) -> bool {
        matches!(self, JobPhase::Admitted | JobPhase::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobPhase::Queued => "Queued",
            JobPhase::Admitted => "Admitted",
            JobPhase::Running => "Running",
            JobPhase::Succeeded => "Succeeded",
            JobPhase::Failed => "Failed",
            JobPhase::Rejected => "Rejected",
            JobPhase::Suspended => "Suspended",
        }
    }
}

impl std::fmt::Display for JobPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the operator observed of a job. Written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VisionJobStatus {
    /// Queued, Admitted, Running, Succeeded, Failed, Rejected or Suspended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<JobPhase>,

    /// A CamelCase word for why the job is in its phase, to filter on:
    /// QueueFull, AlgorithmNotFound, GPULimitExceeded, NamespaceNotAllowed,
    /// Timeout, BackoffLimitExceeded, JobTooLarge, PodRejected, PodDeleted,
    /// Completed, Suspended, or
    /// for a waiting job the reason it waits (SlotsFull, GPUQuotaFull, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,

    /// A human-readable explanation, including why a waiting job still waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// Attempts started so far (pods created); the current pod is attempt
    /// number `attempts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,

    /// GPUs given to the job's pods (its own request or the algorithm's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<i32>,

    /// Name of the pod of the current (or last) attempt: <job>-<attempt>.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,

    /// Worker mode: the worker (its pod's name) that runs the current
    /// attempt, or ran the last one that started. Unset in pod mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,

    /// When the job was accepted by its queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_at: Option<Time>,

    /// When the job was last given a slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admitted_at: Option<Time>,

    /// When the current attempt's pod started running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,

    /// When the job reached a final phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,

    /// Earliest time the next attempt's pod is created, while a failed attempt
    /// backs off before its retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<Time>,

    /// Attempts of this job that were preempted (stopped so that a job of
    /// higher priority, or of a tenant below its share, could run: see the
    /// queue's spec.preemption). They spend no retry; the job waited again
    /// in its original place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preemptions: Option<i32>,

    /// The last attempt that was preempted. The next attempt's job JSON
    /// says so (`"previousAttempt": {"attempt": N, "preempted": true}`), so
    /// that the algorithm can resume from its own checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_preempted_attempt: Option<i32>,

    /// The algorithm's result: the JSON it wrote to /dev/termination-log, or
    /// the text itself if it was not JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_any")]
    pub result: Option<Value>,

    /// Where the current (or last) attempt writes its large outputs, for a
    /// job with spec.output: the claim and the directory within it
    /// (<spec.output.path>/<attempt>). The algorithm lists the files, with
    /// their size and sha256, in the "outputs" of status.result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<OutputLocation>,

    /// Standard conditions: Admitted, Running, Complete, Failed, and
    /// Finished: True once the job reached a final phase (Succeeded, Failed
    /// or Rejected) whatever its outcome, with the phase as its reason and
    /// status.message as its message; False before, with the current phase
    /// as its reason. `kubectl wait --for=condition=Finished` returns for
    /// every outcome.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// The spec generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The leadership term of the operator replica that wrote this status:
    /// the election Lease's leaseTransitions when it wrote. Terms only grow,
    /// so a write of an older term than the one recorded comes from a
    /// replica that lost leadership; the operator never overwrites a status
    /// of a newer term. Its pods carry the term that created them in the
    /// label vision.zjlab.io/leader-term.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_term: Option<i64>,
}

/// Schema of any JSON value (object, array, string, number), kept as given.
fn free_form_any(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "x-kubernetes-preserve-unknown-fields": true
    })
}

impl VisionJob {
    /// The job's phase; a job without status has none yet.
    pub fn phase(&self) -> Option<JobPhase> {
        self.status.as_ref().and_then(|s| s.phase)
    }

    /// Where attempt `attempt` writes its outputs, for a job with spec.output.
    pub fn output_location(&self, attempt: i32) -> Option<OutputLocation> {
        let name = self.metadata.name.as_deref().unwrap_or_default();
        self.spec.output.as_ref().map(|o| o.location(name, attempt))
    }
}
