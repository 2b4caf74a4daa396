//! Typed fixtures for tests, built from the API types (feature `testing`):
//! the one set used by the operator's unit tests and the end-to-end tests. A
//! misspelt field is a compile error here, where an untyped JSON spec would
//! be dropped silently and the test would run on defaults.
//!
//! Each `mk_*` returns the smallest valid object; tests change the fields
//! they care about (`job.spec.priority = 5`) or use the `with_*` helpers.

use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use crate::{
    ALGORITHM_CONTAINER, CircuitBreaker, DEFAULT_QUEUE, JobPhase, QueueOrdering, VisionAlgorithm,
    VisionAlgorithmSpec, VisionJob, VisionJobSpec, VisionJobStatus, VisionQueue, VisionQueueSpec,
};

/// The uid every fixture job gets unless a test sets another.
pub const JOB_UID: &str = "6f1c2b7e-0000-4000-8000-000000000001";
/// The image of the fixture algorithm's container.
pub const IMAGE: &str = "registry.example/vision/algo:1";

/// A Kubernetes timestamp `ms` milliseconds after the Unix epoch.
pub fn at_ms(ms: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_millisecond(ms).expect("a valid timestamp"))
}

/// A new job (no status) of `algorithm` in the default queue, with a uid,
/// generation 1 and a creation time of 0 ms.
pub fn mk_job(namespace: &str, name: &str, algorithm: &str) -> VisionJob {
    let mut job = VisionJob::new(
        name,
        VisionJobSpec {
            algorithm: algorithm.to_string(),
            queue: DEFAULT_QUEUE.to_string(),
            priority: 0,
            input: None,
            params: None,
            gpus: None,
            timeout_seconds: None,
            retries: None,
            suspend: false,
            ttl_seconds_after_finished: None,
        },
    );
    job.metadata.namespace = Some(namespace.to_string());
    job.metadata.uid = Some(JOB_UID.to_string());
    job.metadata.generation = Some(1);
    job.metadata.creation_timestamp = Some(at_ms(0));
    job
}

/// Builder-style changes to a fixture job.
pub trait JobFixture: Sized {
    /// Sets the job's status to `phase` at `attempts`, keeping other fields.
    fn with_phase(self, phase: JobPhase, attempts: i32) -> Self;
    /// Replaces the whole status.
    fn with_status(self, status: VisionJobStatus) -> Self;
    fn with_queue(self, queue: &str) -> Self;
    fn with_priority(self, priority: i32) -> Self;
    fn with_uid(self, uid: &str) -> Self;
    fn created_at_ms(self, ms: i64) -> Self;
}

impl JobFixture for VisionJob {
    fn with_phase(mut self, phase: JobPhase, attempts: i32) -> Self {
        let status = self.status.get_or_insert_with(Default::default);
        status.phase = Some(phase);
        status.attempts = Some(attempts);
        self
    }
    fn with_status(mut self, status: VisionJobStatus) -> Self {
        self.status = Some(status);
        self
    }
    fn with_queue(mut self, queue: &str) -> Self {
        self.spec.queue = queue.to_string();
        self
    }
    fn with_priority(mut self, priority: i32) -> Self {
        self.spec.priority = priority;
        self
    }
    fn with_uid(mut self, uid: &str) -> Self {
        self.metadata.uid = Some(uid.to_string());
        self
    }
    fn created_at_ms(mut self, ms: i64) -> Self {
        self.metadata.creation_timestamp = Some(at_ms(ms));
        self
    }
}

/// A queue with `max_running` slots and nothing else set (BestEffortFIFO,
/// no GPU or pending limit, not paused).
pub fn mk_queue(name: &str, max_running: i32) -> VisionQueue {
    let mut queue = VisionQueue::new(
        name,
        VisionQueueSpec {
            max_running,
            max_gpus: None,
            max_pending: None,
            ordering: QueueOrdering::default(),
            paused: false,
        },
    );
    queue.metadata.generation = Some(1);
    queue
}

/// The container named `algorithm` that every valid template has.
pub fn algorithm_container(image: &str) -> Container {
    Container {
        name: ALGORITHM_CONTAINER.to_string(),
        image: Some(image.to_string()),
        ..Default::default()
    }
}

/// An algorithm whose template runs [`IMAGE`] in a container named
/// `algorithm`, with the CRD's defaults: 1 GPU per job, a 3600 s timeout,
/// 2 retries, no capacity limit, no namespace allow-list, no breaker.
pub fn mk_algorithm(name: &str) -> VisionAlgorithm {
    let mut algorithm = VisionAlgorithm::new(
        name,
        VisionAlgorithmSpec {
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta::default()),
                spec: Some(PodSpec {
                    containers: vec![algorithm_container(IMAGE)],
                    ..Default::default()
                }),
            },
            gpus_per_job: 1,
            max_gpus_per_job: None,
            timeout_seconds: 3600,
            retries: 2,
            max_running: None,
            allowed_namespaces: Vec::new(),
            circuit_breaker: None,
        },
    );
    algorithm.metadata.generation = Some(1);
    algorithm
}

/// A circuit breaker opening after `failure_threshold` failures within
/// `window_seconds`, for `cooldown_seconds`.
pub fn mk_breaker(
    failure_threshold: i32,
    window_seconds: i64,
    cooldown_seconds: i64,
) -> CircuitBreaker {
    CircuitBreaker {
        failure_threshold,
        window_seconds,
        cooldown_seconds,
    }
}
