//! Why a pending job is not admitted: a machine label for `status.reason`
//! and a sentence with the numbers for `status.message`.

use std::fmt;

use super::{JobKey, LimitHit};

/// Where a pending job stands and why it waits (see `WorkerPool::explain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitStatus {
    /// 1-based position among the pending jobs of its queue, in admission
    /// order (priority descending, creation time, namespace/name).
    pub position: usize,
    pub reason: WaitReason,
}

/// The first reason, in the order listed, that keeps a pending job from being
/// admitted now. Only [`WaitReason::ExceedsQueueGpus`] is permanent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitReason {
    /// Its queue does not exist (never created, or deleted).
    QueueNotFound {
        queue: String,
    },
    /// Its algorithm does not exist (never registered, or deleted).
    AlgorithmNotFound {
        algorithm: String,
    },
    /// It asks for more GPUs than its queue may ever hold: it can never be
    /// admitted there, and it blocks no one.
    ExceedsQueueGpus {
        queue: String,
        gpus: u32,
        max_gpus: u32,
    },
    QueuePaused {
        queue: String,
    },
    /// Its tenant holds as much of the queue as the queue's tenancy allows
    /// one tenant (`limits.maxRunning` or `limits.maxGPUs`).
    TenantLimit {
        queue: String,
        tenant: String,
        hit: LimitHit,
    },
    /// Every slot is taken and its tenant has used more than its weighted
    /// share of the queue: freed slots go first to tenants below theirs
    /// (among jobs of the same priority).
    TenantShare {
        queue: String,
        tenant: String,
        usage_percent: u32,
        share_percent: u32,
    },
    /// Every slot of the queue is taken (or it has none: `max_running == 0`).
    SlotsFull {
        queue: String,
        max_running: u32,
        holding: u32,
    },
    /// The algorithm's backend capacity is used up, across all queues.
    AlgorithmCapacity {
        algorithm: String,
        max_running: u32,
        holding: u32,
    },
    /// The algorithm's circuit breaker is open until `until_ms`.
    BreakerOpen {
        algorithm: String,
        until_ms: i64,
    },
    /// The breaker is half-open and its one probe job is still out.
    BreakerProbing {
        algorithm: String,
    },
    /// Not enough of the queue's GPU quota is free.
    GpuQuota {
        queue: String,
        gpus: u32,
        free: u32,
        max_gpus: u32,
    },
    /// StrictFIFO: the head of the queue does not fit yet, and nothing passes it.
    BehindHead {
        queue: String,
        head: JobKey,
    },
    /// BestEffortFIFO starvation guard: the queue keeps its GPUs for `head`,
    /// a larger job that has waited long enough, until it fits.
    GpusReserved {
        queue: String,
        head: JobKey,
    },
    /// Nothing stops it: the next `admit` takes it.
    Admissible,
}

impl WaitReason {
    /// CamelCase label, suitable for `status.reason`.
    pub fn label(&self) -> &'static str {
        match self {
            WaitReason::QueueNotFound { .. } => "QueueNotFound",
            WaitReason::AlgorithmNotFound { .. } => "AlgorithmNotFound",
            WaitReason::ExceedsQueueGpus { .. } => "ExceedsQueueGpus",
            WaitReason::QueuePaused { .. } => "QueuePaused",
            WaitReason::TenantLimit { .. } => "TenantLimit",
            WaitReason::TenantShare { .. } => "TenantShare",
            WaitReason::SlotsFull { .. } => "SlotsFull",
            WaitReason::AlgorithmCapacity { .. } => "AlgorithmCapacity",
            WaitReason::BreakerOpen { .. } => "BreakerOpen",
            WaitReason::BreakerProbing { .. } => "BreakerProbing",
            WaitReason::GpuQuota { .. } => "GpuQuota",
            WaitReason::BehindHead { .. } => "BehindHead",
            WaitReason::GpusReserved { .. } => "GpusReserved",
            WaitReason::Admissible => "Admissible",
        }
    }

    /// True when waiting cannot help while the queue spec stays as it is.
    pub fn is_permanent(&self) -> bool {
        matches!(self, WaitReason::ExceedsQueueGpus { .. })
    }
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitReason::QueueNotFound { queue } => write!(f, "queue {queue} does not exist"),
            WaitReason::AlgorithmNotFound { algorithm } => {
                write!(f, "algorithm {algorithm} is not registered")
            }
            WaitReason::ExceedsQueueGpus {
                queue,
                gpus,
                max_gpus,
            } => write!(
                f,
                "asks for {gpus} GPUs but queue {queue} allows at most {max_gpus}: it can never be admitted there"
            ),
            WaitReason::QueuePaused { queue } => write!(f, "queue {queue} is paused"),
            WaitReason::TenantLimit {
                queue,
                tenant,
                hit: LimitHit::Running { holding, max },
            } => write!(
                f,
                "tenant {tenant} holds {holding} of the {max} jobs it may run at once in queue {queue}"
            ),
            WaitReason::TenantLimit {
                queue,
                tenant,
                hit: LimitHit::Gpus { in_use, gpus, max },
            } => write!(
                f,
                "needs {gpus} GPUs and tenant {tenant} uses {in_use} of the {max} it may use in queue {queue}"
            ),
            WaitReason::TenantShare {
                queue,
                tenant,
                usage_percent,
                share_percent,
            } => write!(
                f,
                "all slots of queue {queue} are in use and tenant {tenant} is over its share: it has {usage_percent}% of the queue's recent usage, its weighted share is {share_percent}%"
            ),
            WaitReason::SlotsFull {
                queue,
                max_running: 0,
                ..
            } => write!(f, "queue {queue} has no slots (maxRunning is 0)"),
            WaitReason::SlotsFull {
                queue,
                max_running,
                holding,
            } => write!(
                f,
                "all {max_running} slots of queue {queue} are in use ({holding} held)"
            ),
            WaitReason::AlgorithmCapacity {
                algorithm,
                max_running,
                holding,
            } => write!(
                f,
                "algorithm {algorithm} is at its capacity ({holding} of {max_running} running)"
            ),
            WaitReason::BreakerOpen {
                algorithm,
                until_ms,
            } => write!(
                f,
                "the circuit breaker of algorithm {algorithm} is open after repeated failures, until {until_ms} ms"
            ),
            WaitReason::BreakerProbing { algorithm } => write!(
                f,
                "the circuit breaker of algorithm {algorithm} is half-open and waits for its probe job"
            ),
            WaitReason::GpuQuota {
                queue,
                gpus,
                free,
                max_gpus,
            } => write!(
                f,
                "needs {gpus} GPUs, {free} of the {max_gpus} of queue {queue} are free"
            ),
            WaitReason::BehindHead { queue, head } => write!(
                f,
                "queue {queue} is StrictFIFO and its head {head} does not fit yet"
            ),
            WaitReason::GpusReserved { queue, head } => write!(
                f,
                "queue {queue} keeps its GPUs for {head}, which has waited long enough to stop being passed"
            ),
            WaitReason::Admissible => write!(f, "admissible now"),
        }
    }
}
