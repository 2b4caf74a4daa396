//! Prometheus metrics of the operator (`/metrics`), named the way Kueue
//! names its own where they mean the same thing. Every metric is documented
//! in docs/METRICS.md.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlgorithmLabels {
    pub algorithm: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub queue: String,
    pub algorithm: String,
    pub phase: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
}

pub struct Metrics {
    registry: Registry,
    pending: Family<QueueLabels, Gauge>,
    active: Family<QueueLabels, Gauge>,
    gpus_in_use: Family<QueueLabels, Gauge>,
    max_running: Family<QueueLabels, Gauge>,
    admissions: Family<QueueLabels, Counter>,
    rejections: Family<QueueLabels, Counter>,
    rollbacks: Counter,
    outcomes: Family<OutcomeLabels, Counter>,
    retries: Family<AlgorithmLabels, Counter>,
    wait_seconds: Family<QueueLabels, Histogram>,
    run_seconds: Family<AlgorithmLabels, Histogram>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    reconciles: Counter,
    reconcile_seconds: Histogram,
    leader: Gauge,
    leader_since: AtomicI64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn wait_histogram() -> Histogram {
    // 10 ms .. ~3 h
    Histogram::new(exponential_buckets(0.01, 3.0, 14))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("vision_operator");
        let m = Metrics {
            pending: Family::default(),
            active: Family::default(),
            gpus_in_use: Family::default(),
            max_running: Family::default(),
            admissions: Family::default(),
            rejections: Family::default(),
            rollbacks: Counter::default(),
            outcomes: Family::default(),
            retries: Family::default(),
            wait_seconds: Family::new_with_constructor(wait_histogram),
            run_seconds: Family::new_with_constructor(wait_histogram),
            reconcile_errors: Family::default(),
            reconciles: Counter::default(),
            reconcile_seconds: Histogram::new(exponential_buckets(0.0005, 4.0, 10)),
            leader: Gauge::default(),
            leader_since: AtomicI64::new(0),
            registry: Registry::default(),
        };
        registry.register(
            "pending_jobs",
            "Jobs waiting in a queue (Queued)",
            m.pending.clone(),
        );
        registry.register(
            "admitted_active_jobs",
            "Jobs holding a slot of a queue (Admitted or Running)",
            m.active.clone(),
        );
        registry.register(
            "gpus_in_use",
            "GPUs held by the admitted and running jobs of a queue",
            m.gpus_in_use.clone(),
        );
        registry.register(
            "queue_max_running",
            "The slots of a queue (spec.maxRunning)",
            m.max_running.clone(),
        );
        registry.register(
            "admissions",
            "Jobs admitted by a queue",
            m.admissions.clone(),
        );
        registry.register(
            "rejections",
            "Jobs rejected by a queue because maxPending was reached",
            m.rejections.clone(),
        );
        registry.register(
            "admission_rollbacks",
            "Admissions rolled back because their status write failed",
            m.rollbacks.clone(),
        );
        registry.register(
            "job_outcomes",
            "Jobs that reached a final phase, by phase and reason",
            m.outcomes.clone(),
        );
        registry.register(
            "job_retries",
            "Failed attempts that were retried",
            m.retries.clone(),
        );
        registry.register_with_unit(
            "admission_wait",
            "Time from a job's creation to its admission",
            prometheus_client::registry::Unit::Seconds,
            m.wait_seconds.clone(),
        );
        registry.register_with_unit(
            "job_run",
            "Time from a job's pod starting to the job finishing",
            prometheus_client::registry::Unit::Seconds,
            m.run_seconds.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconcile errors by kind",
            m.reconcile_errors.clone(),
        );
        registry.register("reconciles", "Job reconciles run", m.reconciles.clone());
        registry.register_with_unit(
            "reconcile_duration",
            "Duration of a job reconcile",
            prometheus_client::registry::Unit::Seconds,
            m.reconcile_seconds.clone(),
        );
        registry.register(
            "is_leader",
            "1 when this replica is the leader and admits jobs",
            m.leader.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    fn q(queue: &str) -> QueueLabels {
        QueueLabels {
            queue: queue.into(),
        }
    }

    pub fn queue_gauges(
        &self,
        queue: &str,
        pending: u32,
        active: u32,
        gpus: u64,
        max_running: i32,
    ) {
        self.pending
            .get_or_create(&Self::q(queue))
            .set(i64::from(pending));
        self.active
            .get_or_create(&Self::q(queue))
            .set(i64::from(active));
        self.gpus_in_use
            .get_or_create(&Self::q(queue))
            .set(gpus as i64);
        self.max_running
            .get_or_create(&Self::q(queue))
            .set(i64::from(max_running));
    }

    pub fn admitted(&self, queue: &str, waited_seconds: Option<f64>) {
        self.admissions.get_or_create(&Self::q(queue)).inc();
        if let Some(w) = waited_seconds {
            self.wait_seconds.get_or_create(&Self::q(queue)).observe(w);
        }
    }

    pub fn rejected(&self, queue: &str) {
        self.rejections.get_or_create(&Self::q(queue)).inc();
    }

    pub fn admission_rolled_back(&self) {
        self.rollbacks.inc();
    }

    pub fn job_finished(&self, queue: &str, algorithm: &str, phase: &str, reason: &str) {
        self.outcomes
            .get_or_create(&OutcomeLabels {
                queue: queue.into(),
                algorithm: algorithm.into(),
                phase: phase.into(),
                reason: reason.into(),
            })
            .inc();
    }

    pub fn job_run_time(&self, algorithm: &str, seconds: Option<f64>) {
        if let Some(s) = seconds {
            self.run_seconds
                .get_or_create(&AlgorithmLabels {
                    algorithm: algorithm.into(),
                })
                .observe(s);
        }
    }

    pub fn retried(&self, algorithm: &str) {
        self.retries
            .get_or_create(&AlgorithmLabels {
                algorithm: algorithm.into(),
            })
            .inc();
    }

    pub fn reconcile_error(&self, kind: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels { kind: kind.into() })
            .inc();
    }

    pub fn reconciled(&self, took: Duration) {
        self.reconciles.inc();
        self.reconcile_seconds.observe(took.as_secs_f64());
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
        self.leader_since.store(
            if leader { crate::clock::now_ms() } else { 0 },
            Ordering::SeqCst,
        );
    }
}
