//! The messages into the dispatcher and the handle through which the
//! reconciler (and the watches) send them. Defined below both the dispatcher
//! and the reconciler so that neither depends on the other.

use std::sync::Arc;

use kube::ResourceExt;
use tokio::sync::mpsc;

use crate::admission::{JobKey, Outcome};
use crate::api::VisionJob;

/// Which watch an event comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Jobs = 0,
    Pods = 1,
    Queues = 2,
    Algorithms = 3,
}

/// What the dispatcher is told.
#[derive(Debug)]
pub enum PoolEvent {
    /// An object was added or changed: (namespace, name).
    Changed(Kind, (Option<String>, String)),
    /// An object was deleted.
    Deleted(Kind, (Option<String>, String)),
    /// A watch has listed everything (first start, or after a re-list).
    Synced(Kind),
    /// This replica became the leader.
    Leader,
    /// The reconciler freed the job's slot (final or suspended status
    /// written, or the deleted job's pods are gone).
    Released(JobKey),
    /// An attempt of the algorithm ended (feeds its circuit breaker). Sent
    /// again when the status write that follows it is retried; counted once
    /// per job and attempt.
    Outcome {
        algorithm: String,
        outcome: Outcome,
        job: JobKey,
        attempt: i32,
    },
    /// A status write of the dispatcher finished; on failure, the job as
    /// read back afterwards (None if it is gone).
    Written {
        key: JobKey,
        /// The queue, when the write was an admission.
        admission: Option<String>,
        result: Result<(), Option<Arc<VisionJob>>>,
    },
    /// A queue's or algorithm's status write finished.
    PoolStatusWritten(PoolStatusWrite),
    /// A fresh, consistent list of the jobs that hold a slot (or have no
    /// phase yet), read by a new leader: the pool is rebuilt from it and the
    /// cache's waiting jobs (never from a cache alone, which may lag a
    /// former leader's last admissions).
    Rebuild(Vec<VisionJob>),
    /// Worker mode: GPUs for a queue's worker pods (see
    /// `WorkerPool::grant_worker_pods`); the reply is how many pods may be
    /// created.
    WorkerPods {
        request: crate::workers::pods::GpuRequest,
        reply: tokio::sync::oneshot::Sender<u32>,
    },
}

/// Which pool status write finished, and whether it landed.
#[derive(Debug)]
pub enum PoolStatusWrite {
    /// `admitted`: the admissions the written `admittedTotal` added.
    Queue {
        name: String,
        admitted: i64,
        written: bool,
    },
    Algorithm {
        name: String,
        written: bool,
    },
}

/// The sending side of the dispatcher's inbox.
#[derive(Clone)]
pub struct PoolHandle(mpsc::UnboundedSender<PoolEvent>);

impl PoolHandle {
    /// A handle and the inbox the dispatcher reads.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<PoolEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (PoolHandle(tx), rx)
    }

    /// The job no longer holds its slot.
    pub fn released(&self, key: JobKey) {
        self.send(PoolEvent::Released(key));
    }

    /// Attempt `attempt` of `job`, of `algorithm`, ended with `outcome`.
    pub fn outcome(&self, algorithm: &str, outcome: Outcome, job: JobKey, attempt: i32) {
        self.send(PoolEvent::Outcome {
            algorithm: algorithm.to_string(),
            outcome,
            job,
            attempt,
        });
    }

    /// Asks for GPUs of worker pods; a stopped dispatcher grants none.
    pub fn grant_worker_pods(
        &self,
        request: crate::workers::pods::GpuRequest,
    ) -> tokio::sync::oneshot::Receiver<u32> {
        let (reply, granted) = tokio::sync::oneshot::channel();
        self.send(PoolEvent::WorkerPods { request, reply });
        granted
    }

    /// Any other message; a stopped dispatcher drops it (the process is ending).
    pub fn send(&self, event: PoolEvent) {
        let _ = self.0.send(event);
    }
}

/// The pool's key of a job.
pub fn job_key(job: &VisionJob) -> JobKey {
    JobKey::new(job.namespace().unwrap_or_default(), job.name_any())
}
