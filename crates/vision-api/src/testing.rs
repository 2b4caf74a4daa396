//! Typed fixtures for tests, built from the API types (feature `testing`):
//! the one set used by the operator's unit tests and the end-to-end tests. A
//! misspelt field is a compile error here, where an untyped JSON spec would
//! be dropped silently and the test would run on defaults.
//!
//! Each `mk_*` returns the smallest valid object; tests change the fields
//! they care about (`job.spec.priority = 5`) or use the `with_*` helpers.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde_json::Value;

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
            output: None,
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
    /// The job's own GPU count (`spec.gpus`).
    fn with_gpus(self, gpus: i32) -> Self;
    fn with_timeout_seconds(self, seconds: i64) -> Self;
    fn with_retries(self, retries: i32) -> Self;
    /// `spec.input`: free-form JSON handed to the algorithm.
    fn with_input(self, input: Value) -> Self;
    /// `spec.params`: free-form JSON handed to the algorithm.
    fn with_params(self, params: Value) -> Self;
    fn suspended(self) -> Self;
    /// Adds annotations to the job's metadata (they reach its pods).
    fn with_annotations(self, annotations: &[(&str, &str)]) -> Self;
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
    fn with_gpus(mut self, gpus: i32) -> Self {
        self.spec.gpus = Some(gpus);
        self
    }
    fn with_timeout_seconds(mut self, seconds: i64) -> Self {
        self.spec.timeout_seconds = Some(seconds);
        self
    }
    fn with_retries(mut self, retries: i32) -> Self {
        self.spec.retries = Some(retries);
        self
    }
    fn with_input(mut self, input: Value) -> Self {
        self.spec.input = Some(input);
        self
    }
    fn with_params(mut self, params: Value) -> Self {
        self.spec.params = Some(params);
        self
    }
    fn suspended(mut self) -> Self {
        self.spec.suspend = true;
        self
    }
    fn with_annotations(mut self, annotations: &[(&str, &str)]) -> Self {
        insert_all(&mut self.metadata.annotations, annotations);
        self
    }
}

/// Adds `entries` to a label or annotation map, creating it if absent.
fn insert_all(map: &mut Option<BTreeMap<String, String>>, entries: &[(&str, &str)]) {
    let map = map.get_or_insert_with(BTreeMap::new);
    for (key, value) in entries {
        map.insert(key.to_string(), value.to_string());
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
            tenancy: None,
            preemption: None,
            default_ttl_seconds_after_finished: None,
            pod_retention: None,
        },
    );
    queue.metadata.generation = Some(1);
    queue
}

/// Builder-style changes to a fixture queue.
pub trait QueueFixture: Sized {
    fn with_max_gpus(self, max_gpus: i32) -> Self;
    fn with_max_pending(self, max_pending: i32) -> Self;
    fn with_ordering(self, ordering: QueueOrdering) -> Self;
    fn paused(self) -> Self;
    /// `spec.defaultTtlSecondsAfterFinished`: the TTL of its jobs that set none.
    fn with_default_ttl_seconds(self, seconds: i32) -> Self;
    /// `spec.podRetention`: how long its jobs' finished pods are kept.
    fn with_pod_retention(self, succeeded_seconds: i32, failed_seconds: i32) -> Self;
}

impl QueueFixture for VisionQueue {
    fn with_max_gpus(mut self, max_gpus: i32) -> Self {
        self.spec.max_gpus = Some(max_gpus);
        self
    }
    fn with_max_pending(mut self, max_pending: i32) -> Self {
        self.spec.max_pending = Some(max_pending);
        self
    }
    fn with_ordering(mut self, ordering: QueueOrdering) -> Self {
        self.spec.ordering = ordering;
        self
    }
    fn paused(mut self) -> Self {
        self.spec.paused = true;
        self
    }
    fn with_default_ttl_seconds(mut self, seconds: i32) -> Self {
        self.spec.default_ttl_seconds_after_finished = Some(seconds);
        self
    }
    fn with_pod_retention(mut self, succeeded_seconds: i32, failed_seconds: i32) -> Self {
        self.spec.pod_retention = Some(crate::PodRetention {
            succeeded_seconds: Some(succeeded_seconds),
            failed_seconds: Some(failed_seconds),
        });
        self
    }
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
            mode: crate::AlgorithmMode::Pod,
            workers: None,
        },
    );
    algorithm.metadata.generation = Some(1);
    algorithm
}

/// Builder-style changes to a fixture algorithm.
pub trait AlgorithmFixture: Sized {
    fn with_gpus_per_job(self, gpus: i32) -> Self;
    fn with_max_gpus_per_job(self, gpus: i32) -> Self;
    fn with_timeout_seconds(self, seconds: i64) -> Self;
    fn with_retries(self, retries: i32) -> Self;
    fn with_max_running(self, max_running: i32) -> Self;
    fn with_allowed_namespaces(self, namespaces: &[&str]) -> Self;
    fn with_breaker(self, breaker: CircuitBreaker) -> Self;
    /// Replaces the pod template.
    fn with_template(self, template: PodTemplateSpec) -> Self;
    /// Replaces the template's pod spec, keeping its metadata.
    fn with_pod_spec(self, spec: PodSpec) -> Self;
    /// Adds annotations to the template's metadata (they reach every pod).
    fn with_template_annotations(self, annotations: &[(&str, &str)]) -> Self;
    /// Adds labels to the template's metadata.
    fn with_template_labels(self, labels: &[(&str, &str)]) -> Self;
}

impl AlgorithmFixture for VisionAlgorithm {
    fn with_gpus_per_job(mut self, gpus: i32) -> Self {
        self.spec.gpus_per_job = gpus;
        self
    }
    fn with_max_gpus_per_job(mut self, gpus: i32) -> Self {
        self.spec.max_gpus_per_job = Some(gpus);
        self
    }
    fn with_timeout_seconds(mut self, seconds: i64) -> Self {
        self.spec.timeout_seconds = seconds;
        self
    }
    fn with_retries(mut self, retries: i32) -> Self {
        self.spec.retries = retries;
        self
    }
    fn with_max_running(mut self, max_running: i32) -> Self {
        self.spec.max_running = Some(max_running);
        self
    }
    fn with_allowed_namespaces(mut self, namespaces: &[&str]) -> Self {
        self.spec.allowed_namespaces = namespaces.iter().map(|n| n.to_string()).collect();
        self
    }
    fn with_breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.spec.circuit_breaker = Some(breaker);
        self
    }
    fn with_template(mut self, template: PodTemplateSpec) -> Self {
        self.spec.template = template;
        self
    }
    fn with_pod_spec(mut self, spec: PodSpec) -> Self {
        self.spec.template.spec = Some(spec);
        self
    }
    fn with_template_annotations(mut self, annotations: &[(&str, &str)]) -> Self {
        let metadata = self
            .spec
            .template
            .metadata
            .get_or_insert_with(Default::default);
        insert_all(&mut metadata.annotations, annotations);
        self
    }
    fn with_template_labels(mut self, labels: &[(&str, &str)]) -> Self {
        let metadata = self
            .spec
            .template
            .metadata
            .get_or_insert_with(Default::default);
        insert_all(&mut metadata.labels, labels);
        self
    }
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
