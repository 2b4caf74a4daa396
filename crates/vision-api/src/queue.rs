// kube-derive takes one `printcolumn(...)` per column; clippy mistakes the repeated
// keys inside them for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A cluster-wide worker pool: admits VisionJobs up to a number of slots and
/// GPUs, in priority order, with a bound on how many may wait.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "vision.zjlab.io",
    version = "v1alpha1",
    kind = "VisionQueue",
    shortname = "vq",
    category = "vision",
    status = "VisionQueueStatus",
    doc = "A cluster-wide worker pool of VisionJobs: at most maxRunning jobs (and maxGPUs GPUs) hold a slot at once, waiting jobs are admitted in priority order, and beyond maxPending waiting jobs new ones are rejected.",
    printcolumn(name = "Running", type_ = "integer", json_path = ".status.running"),
    printcolumn(name = "Max", type_ = "integer", json_path = ".spec.maxRunning"),
    printcolumn(name = "Pending", type_ = "integer", json_path = ".status.pending"),
    printcolumn(name = "GPUs", type_ = "integer", json_path = ".status.gpusInUse"),
    printcolumn(name = "MaxGPUs", type_ = "integer", json_path = ".spec.maxGPUs"),
    printcolumn(name = "Paused", type_ = "boolean", json_path = ".spec.paused"),
    printcolumn(
        name = "Head",
        type_ = "string",
        json_path = ".status.head",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("!has(self.maxPending) || self.maxPending >= 0").message("spec.maxPending must be >= 0"))]
#[serde(rename_all = "camelCase")]
pub struct VisionQueueSpec {
    /// Slots: the most jobs of this queue that may be admitted or running at
    /// once. Changing it takes effect at once; lowering it never stops a
    /// running job, it only stops admitting until fewer run. 0 drains the pool.
    #[schemars(range(min = 0, max = 100_000))]
    pub max_running: i32,

    /// The most GPUs the admitted and running jobs of this queue may use
    /// together. Unset: only maxRunning limits. A job asking for more GPUs
    /// than this never fits and says so in its status.
    #[serde(rename = "maxGPUs", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1_000_000))]
    pub max_gpus: Option<i32>,

    /// The most jobs that may wait in this queue. A job submitted while this
    /// many wait is Rejected at once with reason QueueFull; jobs already
    /// waiting are never evicted. Unset: unbounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10_000_000))]
    pub max_pending: Option<i32>,

    /// BestEffortFIFO (default): a job that fits may pass a higher-ordered job
    /// that does not fit the free GPUs (a job passed over too often gets the
    /// GPUs reserved for it). StrictFIFO: nothing passes the head of the queue.
    #[serde(default)]
    pub ordering: QueueOrdering,

    /// true stops admitting new jobs; running jobs continue, and jobs are
    /// still accepted into the queue.
    #[serde(default)]
    pub paused: bool,

    /// Tenants: who shares this queue and by which weights and limits
    /// (weighted fair share among jobs of the same priority). Unset: one
    /// tenant, jobs of the same priority are admitted first come, first
    /// served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenancy: Option<crate::tenancy::QueueTenancy>,

    /// Whether a waiting job may evict running jobs of this queue to be
    /// admitted. Unset: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preemption: Option<crate::tenancy::QueuePreemption>,

    /// Seconds after a job of this queue finished (Succeeded, Failed or
    /// Rejected) after which the operator deletes it, for jobs that set no
    /// spec.ttlSecondsAfterFinished of their own (a job's own value always
    /// wins, 0 included). Unset: such jobs are kept until someone deletes
    /// them. The operator reads it when a job finishes (and for every
    /// finished job when it starts leading), so a change applies to jobs
    /// finishing from then on; jobs finished earlier follow it after the
    /// next operator restart or failover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub default_ttl_seconds_after_finished: Option<i32>,

    /// How long the operator keeps the pods of this queue's jobs once their
    /// outcome is in the job's status. Unset: the defaults below. A pod is
    /// deleted only after the job's status records its attempt's outcome,
    /// and the job keeps that outcome after its pods are gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_retention: Option<PodRetention>,
}

/// How long finished pods are kept (`spec.podRetention` of a queue).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodRetention {
    /// Seconds the pod of a Succeeded job's last attempt is kept after the
    /// job finished, so that `kubectl logs` still works. 0 deletes it as soon
    /// as the job's status records the outcome. Default 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub succeeded_seconds: Option<i32>,

    /// Seconds the pod of a Failed job's last attempt is kept after the job
    /// finished, for its logs. 0 deletes it as soon as the job's status
    /// records the outcome. Default 3600. The pods of earlier attempts of a
    /// retried job are deleted as soon as the job's status records that the
    /// attempt failed (its message says why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub failed_seconds: Option<i32>,
}

impl PodRetention {
    /// The default `succeededSeconds`.
    pub const DEFAULT_SUCCEEDED_SECONDS: i32 = 300;
    /// The default `failedSeconds`.
    pub const DEFAULT_FAILED_SECONDS: i32 = 3600;

    /// `succeededSeconds` with its default.
    pub fn succeeded(&self) -> i32 {
        self.succeeded_seconds
            .unwrap_or(Self::DEFAULT_SUCCEEDED_SECONDS)
            .max(0)
    }

    /// `failedSeconds` with its default.
    pub fn failed(&self) -> i32 {
        self.failed_seconds
            .unwrap_or(Self::DEFAULT_FAILED_SECONDS)
            .max(0)
    }
}

/// How strictly the queue keeps its order when the head does not fit.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum QueueOrdering {
    /// A smaller job may pass a head that does not fit the free GPUs.
    #[default]
    BestEffortFIFO,
    /// Jobs are admitted strictly in order; a head that does not fit blocks the queue.
    StrictFIFO,
}

/// What the operator observed of a queue. Written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VisionQueueStatus {
    /// Jobs holding a slot (Admitted or Running).
    #[serde(default)]
    pub running: i32,
    /// Jobs waiting (Queued).
    #[serde(default)]
    pub pending: i32,
    /// GPUs used by the jobs holding a slot, and by the worker pods of
    /// algorithms whose workers.queue is this queue.
    #[serde(rename = "gpusInUse", default)]
    pub gpus_in_use: i32,
    /// Jobs admitted since the operator's leader started.
    #[serde(default)]
    pub admitted_total: i64,
    /// The next waiting job in line, as namespace/name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    /// Why the head of the queue waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_reason: Option<String>,
    /// Standard conditions: Active (admitting), Paused, Full (maxPending reached).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The spec generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// With spec.tenancy: each tenant with jobs or recent usage, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<crate::tenancy::TenantStatus>,
    /// When the tenants' usageGPUSeconds were computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_time: Option<crate::tenancy::UsageTime>,
}
