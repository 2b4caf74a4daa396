//! Prometheus metrics of the operator (`/metrics`), named the way Kueue
//! names its own where they mean the same thing. Every metric is documented
//! in docs/METRICS.md.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use vision_api::JobPhase;

use crate::admission::BreakerState;

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
pub struct QueuePhaseLabels {
    pub queue: String,
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueReasonLabels {
    pub queue: String,
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
    max_gpus: Family<QueueLabels, Gauge>,
    oldest_pending_age: Family<QueueLabels, Gauge<f64, AtomicU64>>,
    queue_jobs: Family<QueuePhaseLabels, Gauge>,
    head_reason: Family<QueueReasonLabels, Gauge>,
    /// The reason each queue's head series carries now.
    head_reasons: Mutex<BTreeMap<String, String>>,
    algorithm_pending: Family<AlgorithmLabels, Gauge>,
    algorithm_active: Family<AlgorithmLabels, Gauge>,
    breaker_state: Family<AlgorithmLabels, Gauge>,
    /// Queues and algorithms with pool series, to drop those of deleted ones.
    reported: Mutex<(BTreeSet<String>, BTreeSet<String>)>,
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
    worker_dispatch_seconds: Histogram,
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
            max_gpus: Family::default(),
            oldest_pending_age: Family::default(),
            queue_jobs: Family::default(),
            head_reason: Family::default(),
            head_reasons: Mutex::default(),
            algorithm_pending: Family::default(),
            algorithm_active: Family::default(),
            breaker_state: Family::default(),
            reported: Mutex::default(),
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
            // 0.25 ms .. ~8 s, doubling: fine enough for a 50 ms p99.
            worker_dispatch_seconds: Histogram::new(exponential_buckets(0.00025, 2.0, 16)),
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
            "GPUs held by the admitted and running jobs of a queue and by the worker pods that use its budget (workers.queue)",
            m.gpus_in_use.clone(),
        );
        registry.register(
            "queue_max_running",
            "The slots of a queue (spec.maxRunning)",
            m.max_running.clone(),
        );
        registry.register(
            "queue_max_gpus",
            "The GPU quota of a queue (spec.maxGpus); absent when unlimited",
            m.max_gpus.clone(),
        );
        registry.register_with_unit(
            "queue_oldest_pending_age",
            "Age (since creation) of the oldest job waiting in a queue; 0 when none waits",
            prometheus_client::registry::Unit::Seconds,
            m.oldest_pending_age.clone(),
        );
        registry.register(
            "queue_jobs",
            "Jobs of a queue that exist in the cluster, by status.phase (New: no status yet)",
            m.queue_jobs.clone(),
        );
        registry.register(
            "queue_head_wait_reason",
            "1 for why the first waiting job of a queue waits (SlotsFull, GpuQuota, BreakerOpen, ...); no series when none waits",
            m.head_reason.clone(),
        );
        registry.register(
            "algorithm_pending_jobs",
            "Jobs of an algorithm waiting in any queue",
            m.algorithm_pending.clone(),
        );
        registry.register(
            "algorithm_admitted_active_jobs",
            "Jobs of an algorithm holding a slot (Admitted or Running), across queues",
            m.algorithm_active.clone(),
        );
        registry.register(
            "algorithm_breaker_state",
            "Circuit breaker of an algorithm: 0 closed, 1 half-open, 2 open",
            m.breaker_state.clone(),
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
        registry.register_with_unit(
            "worker_dispatch",
            "Worker mode: from an admitted attempt handed to the worker hub to its task sent to a worker",
            prometheus_client::registry::Unit::Seconds,
            m.worker_dispatch_seconds.clone(),
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

    /// The pool series of one queue besides `queue_gauges`: its GPU quota
    /// (`None` = unlimited: no series), the age of its oldest waiting job
    /// and its jobs by phase (one count per entry of [`PHASES`]).
    pub fn queue_pool_gauges(
        &self,
        queue: &str,
        max_gpus: Option<i32>,
        oldest_pending_age_seconds: f64,
        jobs_by_phase: &[i64; PHASES.len()],
    ) {
        let q = Self::q(queue);
        match max_gpus {
            Some(g) => {
                self.max_gpus.get_or_create(&q).set(i64::from(g));
            }
            None => {
                self.max_gpus.remove(&q);
            }
        }
        self.oldest_pending_age
            .get_or_create(&q)
            .set(oldest_pending_age_seconds);
        for (phase, n) in PHASES.iter().zip(jobs_by_phase) {
            self.queue_jobs
                .get_or_create(&QueuePhaseLabels {
                    queue: queue.into(),
                    phase: (*phase).into(),
                })
                .set(*n);
        }
    }

    /// Why the head of `queue` waits (`None`: nothing waits): one series
    /// with value 1, whose `reason` label changes with the reason.
    pub fn queue_head_reason(&self, queue: &str, reason: Option<&str>) {
        let mut reasons = self.head_reasons.lock().unwrap_or_else(|e| e.into_inner());
        let old = match reason {
            Some(r) => reasons.insert(queue.to_owned(), r.to_owned()),
            None => reasons.remove(queue),
        };
        if let Some(old) = old.filter(|o| Some(o.as_str()) != reason) {
            self.head_reason.remove(&QueueReasonLabels {
                queue: queue.into(),
                reason: old,
            });
        }
        if let Some(r) = reason {
            self.head_reason
                .get_or_create(&QueueReasonLabels {
                    queue: queue.into(),
                    reason: r.into(),
                })
                .set(1);
        }
    }

    /// The pool series of one algorithm; `breaker` as [`breaker_state_value`].
    pub fn algorithm_gauges(&self, algorithm: &str, pending: u32, active: u32, breaker: i64) {
        let a = AlgorithmLabels {
            algorithm: algorithm.into(),
        };
        self.algorithm_pending
            .get_or_create(&a)
            .set(i64::from(pending));
        self.algorithm_active
            .get_or_create(&a)
            .set(i64::from(active));
        self.breaker_state.get_or_create(&a).set(breaker);
    }

    /// Drops the pool series of queues and algorithms not in `queues` /
    /// `algorithms` (deleted since the last refresh), so that a deleted
    /// queue does not keep reporting its last oldest-pending age.
    pub fn retain_pool_series(&self, queues: BTreeSet<String>, algorithms: BTreeSet<String>) {
        let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        for gone in reported.0.difference(&queues) {
            let q = Self::q(gone);
            self.pending.remove(&q);
            self.active.remove(&q);
            self.gpus_in_use.remove(&q);
            self.max_running.remove(&q);
            self.max_gpus.remove(&q);
            self.oldest_pending_age.remove(&q);
            for phase in PHASES {
                self.queue_jobs.remove(&QueuePhaseLabels {
                    queue: gone.clone(),
                    phase: phase.into(),
                });
            }
        }
        let gone: Vec<String> = {
            let reasons = self.head_reasons.lock().unwrap_or_else(|e| e.into_inner());
            reasons
                .keys()
                .filter(|q| !queues.contains(*q))
                .cloned()
                .collect()
        };
        for q in gone {
            self.queue_head_reason(&q, None);
        }
        for gone in reported.1.difference(&algorithms) {
            let a = AlgorithmLabels {
                algorithm: gone.clone(),
            };
            self.algorithm_pending.remove(&a);
            self.algorithm_active.remove(&a);
            self.breaker_state.remove(&a);
        }
        *reported = (queues, algorithms);
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

    /// Worker mode: an attempt's task was sent `waited` after it was handed over.
    pub fn worker_dispatched(&self, waited: Duration) {
        self.worker_dispatch_seconds.observe(waited.as_secs_f64());
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
        self.leader_since.store(
            if leader { crate::clock::now_ms() } else { 0 },
            Ordering::SeqCst,
        );
    }
}

/// The `phase` values of `vision_operator_queue_jobs`, in this order.
pub const PHASES: [&str; 8] = [
    "New",
    "Queued",
    "Admitted",
    "Running",
    "Suspended",
    "Succeeded",
    "Failed",
    "Rejected",
];

/// The index in [`PHASES`] of a job's phase (`None`: no status yet).
pub fn phase_index(phase: Option<JobPhase>) -> usize {
    match phase {
        None => 0,
        Some(JobPhase::Queued) => 1,
        Some(JobPhase::Admitted) => 2,
        Some(JobPhase::Running) => 3,
        Some(JobPhase::Suspended) => 4,
        Some(JobPhase::Succeeded) => 5,
        Some(JobPhase::Failed) => 6,
        Some(JobPhase::Rejected) => 7,
    }
}

/// Jobs by queue and phase: every queue of `queues` (all zero when it has
/// no jobs) and every queue named by a job (known or not).
pub fn jobs_by_phase<'a>(
    queues: impl IntoIterator<Item = &'a str>,
    jobs: impl IntoIterator<Item = (&'a str, Option<JobPhase>)>,
) -> BTreeMap<String, [i64; PHASES.len()]> {
    let mut out: BTreeMap<String, [i64; PHASES.len()]> = queues
        .into_iter()
        .map(|q| (q.to_owned(), [0; PHASES.len()]))
        .collect();
    for (queue, phase) in jobs {
        if !out.contains_key(queue) {
            out.insert(queue.to_owned(), [0; PHASES.len()]);
        }
        if let Some(counts) = out.get_mut(queue) {
            counts[phase_index(phase)] += 1;
        }
    }
    out
}

/// Seconds from `created_ms` (the oldest waiting job's creation) to
/// `now_ms`; 0 when nothing waits, and never negative (clock skew).
pub fn oldest_pending_age_seconds(created_ms: Option<i64>, now_ms: i64) -> f64 {
    created_ms.map_or(0.0, |c| (now_ms - c).max(0) as f64 / 1000.0)
}

/// `vision_operator_algorithm_breaker_state`: 0 closed, 1 half-open, 2
/// open. An open breaker whose cool-down has ended is half-open in effect
/// (the next admission pass may send a probe).
pub fn breaker_state_value(state: &BreakerState, now_ms: i64) -> i64 {
    match state {
        BreakerState::Closed => 0,
        BreakerState::HalfOpen { .. } => 1,
        BreakerState::Open { until_ms } if *until_ms <= now_ms => 1,
        BreakerState::Open { .. } => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::JobKey;

    #[test]
    fn oldest_pending_age_is_seconds_since_creation_and_zero_when_none_waits() {
        assert_eq!(oldest_pending_age_seconds(Some(1_000), 91_500), 90.5);
        assert_eq!(oldest_pending_age_seconds(None, 91_500), 0.0);
        assert_eq!(
            oldest_pending_age_seconds(Some(2_000), 1_000),
            0.0,
            "a creation time ahead of the clock counts as 0, not negative"
        );
    }

    #[test]
    fn breaker_state_is_0_closed_1_half_open_2_open() {
        assert_eq!(breaker_state_value(&BreakerState::Closed, 5_000), 0);
        assert_eq!(
            breaker_state_value(&BreakerState::Open { until_ms: 5_001 }, 5_000),
            2
        );
        assert_eq!(
            breaker_state_value(&BreakerState::Open { until_ms: 5_000 }, 5_000),
            1,
            "cool-down over: the next pass may probe"
        );
        assert_eq!(
            breaker_state_value(&BreakerState::HalfOpen { probe: None }, 5_000),
            1
        );
        assert_eq!(
            breaker_state_value(
                &BreakerState::HalfOpen {
                    probe: Some(JobKey::new("ns", "probe"))
                },
                5_000
            ),
            1
        );
    }

    #[test]
    fn jobs_by_phase_counts_every_known_queue_and_every_named_one() {
        let counts = jobs_by_phase(
            ["gpu", "idle"],
            [
                ("gpu", Some(JobPhase::Running)),
                ("gpu", Some(JobPhase::Running)),
                ("gpu", Some(JobPhase::Queued)),
                ("gpu", None),
                ("gpu", Some(JobPhase::Failed)),
                ("typo", Some(JobPhase::Rejected)),
            ],
        );
        assert_eq!(
            counts,
            BTreeMap::from([
                ("gpu".to_string(), [1, 1, 0, 2, 0, 0, 1, 0]),
                ("idle".to_string(), [0; 8]),
                ("typo".to_string(), [0, 0, 0, 0, 0, 0, 0, 1]),
            ])
        );
    }

    /// The lines of `encode()` that start with `prefix`.
    fn lines(m: &Metrics, prefix: &str) -> Vec<String> {
        m.encode()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn pool_series_are_encoded_and_dropped_with_their_queue() {
        let m = Metrics::new();
        let mut phases = [0; 8];
        phases[1] = 3;
        phases[3] = 2;
        m.queue_pool_gauges("gpu", Some(16), 42.25, &phases);
        m.algorithm_gauges("detect", 3, 2, 2);
        m.queue_head_reason("gpu", Some("SlotsFull"));
        m.queue_head_reason("gpu", Some("BreakerOpen"));
        m.retain_pool_series(
            BTreeSet::from(["gpu".to_string()]),
            BTreeSet::from(["detect".to_string()]),
        );
        assert_eq!(
            lines(&m, "vision_operator_queue_oldest_pending_age_seconds{"),
            ["vision_operator_queue_oldest_pending_age_seconds{queue=\"gpu\"} 42.25"]
        );
        assert_eq!(
            lines(&m, "vision_operator_queue_max_gpus{"),
            ["vision_operator_queue_max_gpus{queue=\"gpu\"} 16"]
        );
        let mut jobs = lines(&m, "vision_operator_queue_jobs{");
        jobs.sort();
        assert_eq!(
            jobs,
            [
                "vision_operator_queue_jobs{queue=\"gpu\",phase=\"Admitted\"} 0",
                "vision_operator_queue_jobs{queue=\"gpu\",phase=\"Failed\"} 0",
                "vision_operator_queue_jobs{queue=\"gpu\",phase=\"New\"} 0",
                "vision_operator_queue_jobs{queue=\"gpu\",phase=\"Queued\"} 3",
                "vision_operator_queue_jobs{queue=\"gpu\",phase=\"Rejected\"} 0",
                "vision_operator_queue_jobs{queue=\"gpu\",phase=\"Running\"} 2",
                "vision_operator_queue_jobs{queue=\"gpu\",phase=\"Succeeded\"} 0",
                "vision_operator_queue_jobs{queue=\"gpu\",phase=\"Suspended\"} 0",
            ]
        );
        assert_eq!(
            lines(&m, "vision_operator_queue_head_wait_reason{"),
            ["vision_operator_queue_head_wait_reason{queue=\"gpu\",reason=\"BreakerOpen\"} 1"],
            "the old reason's series is gone"
        );
        assert_eq!(
            lines(&m, "vision_operator_algorithm_breaker_state{"),
            ["vision_operator_algorithm_breaker_state{algorithm=\"detect\"} 2"]
        );
        assert_eq!(
            lines(&m, "vision_operator_algorithm_pending_jobs{"),
            ["vision_operator_algorithm_pending_jobs{algorithm=\"detect\"} 3"]
        );
        assert_eq!(
            lines(&m, "vision_operator_algorithm_admitted_active_jobs{"),
            ["vision_operator_algorithm_admitted_active_jobs{algorithm=\"detect\"} 2"]
        );

        // The quota lifted: no max_gpus series. Then the queue and the
        // algorithm deleted: none of their series.
        m.queue_pool_gauges("gpu", None, 0.0, &phases);
        assert_eq!(
            lines(&m, "vision_operator_queue_max_gpus{"),
            Vec::<String>::new()
        );
        m.retain_pool_series(BTreeSet::new(), BTreeSet::new());
        let encoded = m.encode();
        assert!(!encoded.contains("queue=\"gpu\""), "{encoded}");
        assert!(!encoded.contains("algorithm=\"detect\""), "{encoded}");
    }

    #[test]
    fn admissions_are_counted_per_queue() {
        let m = Metrics::new();
        m.admitted("gpu", Some(1.5));
        m.admitted("gpu", None);
        m.admitted("cpu", None);
        let mut admissions = lines(&m, "vision_operator_admissions_total{");
        admissions.sort();
        assert_eq!(
            admissions,
            [
                "vision_operator_admissions_total{queue=\"cpu\"} 1",
                "vision_operator_admissions_total{queue=\"gpu\"} 2",
            ]
        );
    }
}
