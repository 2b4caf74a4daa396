//! The web view's in-memory index: one compact row per VisionJob (no spec
//! input, no result, no conditions: those are fetched for one job when its
//! page opens), the queues' and algorithms' specs and statuses, and what the
//! page shows computed from them: per-queue and per-algorithm aggregates,
//! throughput and wait time over the last ten minutes, and pages of the job
//! list. Pure: no I/O, time is passed in, so the tests state exact outputs.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;

use serde::Serialize;
use vision_api::{JobPhase, VisionAlgorithm, VisionJob, VisionQueue};

/// Width of one bucket of the charts.
pub const BUCKET_MS: i64 = 10_000;
/// Buckets of the charts: ten minutes.
pub const BUCKETS: usize = 60;
/// The most rows one page of the job list returns.
pub const MAX_PAGE: usize = 200;
/// The reason a waiting job without status has: the operator has not seen it.
pub const NOT_SEEN: &str = "NotSeenYet";

/// Strings shared by many rows (namespaces, queues, algorithms, reasons)
/// are stored once.
#[derive(Debug, Default)]
struct Interner(HashSet<Arc<str>>);

impl Interner {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.0.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.0.insert(a.clone());
        a
    }
}

/// What the index keeps of one job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    pub queue: Arc<str>,
    pub algorithm: Arc<str>,
    pub phase: Option<JobPhase>,
    pub reason: Option<Arc<str>>,
    pub priority: i32,
    pub gpus: i32,
    pub attempts: i32,
    pub created_ms: i64,
    pub queued_ms: Option<i64>,
    pub admitted_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub suspend: bool,
    pub deleting: bool,
    /// The relist generation that last saw the job (rows a relist did not
    /// see are gone).
    seen: u32,
}

impl JobRow {
    /// Waiting for a slot: Queued or not yet seen by the operator, not
    /// suspended, not being deleted (as `visionctl queue` counts).
    pub fn is_waiting(&self) -> bool {
        matches!(self.phase, None | Some(JobPhase::Queued)) && !self.suspend && !self.deleting
    }
}

type Key = (Arc<str>, Box<str>);

/// A finished job's point on the charts, kept after the job is deleted.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Finished {
    at_ms: i64,
    failed: bool,
}

/// Every job, queue and algorithm the user may read.
#[derive(Debug, Default)]
pub struct Index {
    strings: Interner,
    jobs: BTreeMap<Key, JobRow>,
    queues: BTreeMap<String, VisionQueue>,
    algorithms: BTreeMap<String, VisionAlgorithm>,
    /// Finishes and admissions of jobs deleted since, within the window.
    gone_finished: VecDeque<Finished>,
    gone_admitted: VecDeque<(i64, i64)>,
    generation: u32,
    /// Bumped by every change: the server pushes a summary only when it moved.
    pub version: u64,
}

fn ms(t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> Option<i64> {
    t.as_ref().map(|t| t.0.as_millisecond())
}

impl Index {
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Adds or replaces a job.
    pub fn apply_job(&mut self, job: &VisionJob) {
        let (Some(ns), Some(name)) = (&job.metadata.namespace, &job.metadata.name) else {
            return;
        };
        let st = job.status.as_ref();
        let row = JobRow {
            queue: self.strings.get(&job.spec.queue),
            algorithm: self.strings.get(&job.spec.algorithm),
            phase: st.and_then(|s| s.phase),
            reason: st
                .and_then(|s| s.reason.as_deref())
                .map(|r| self.strings.get(r)),
            priority: job.spec.priority,
            gpus: st.and_then(|s| s.gpus).unwrap_or(0),
            attempts: st.and_then(|s| s.attempts).unwrap_or(0),
            created_ms: ms(&job.metadata.creation_timestamp).unwrap_or(0),
            queued_ms: st.and_then(|s| ms(&s.queued_at)),
            admitted_ms: st.and_then(|s| ms(&s.admitted_at)),
            finished_ms: st.and_then(|s| ms(&s.finished_at)),
            suspend: job.spec.suspend,
            deleting: job.metadata.deletion_timestamp.is_some(),
            seen: self.generation,
        };
        let key: Key = (self.strings.get(ns), name.as_str().into());
        if self.jobs.get(&key) != Some(&row) {
            self.jobs.insert(key, row);
            self.version += 1;
        } else if let Some(r) = self.jobs.get_mut(&key) {
            r.seen = self.generation;
        }
    }

    /// Removes a job; its finish and admission stay on the charts.
    pub fn delete_job(&mut self, namespace: &str, name: &str) {
        let key: Key = (Arc::from(namespace), name.into());
        if let Some(row) = self.jobs.remove(&key) {
            self.remember(&row);
            self.version += 1;
        }
    }

    fn remember(&mut self, row: &JobRow) {
        if let Some(at_ms) = row.finished_ms {
            self.gone_finished.push_back(Finished {
                at_ms,
                failed: row.phase != Some(JobPhase::Succeeded),
            });
        }
        if let (Some(q), Some(a)) = (row.queued_ms, row.admitted_ms) {
            self.gone_admitted.push_back((a, a - q));
        }
    }

    /// A relist of the jobs begins: rows it does not see are removed at
    /// [`Index::relist_done`].
    pub fn relist_start(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    pub fn relist_done(&mut self) {
        let g = self.generation;
        let gone: Vec<Key> = self
            .jobs
            .iter()
            .filter(|(_, r)| r.seen != g)
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            if let Some(row) = self.jobs.remove(&k) {
                self.remember(&row);
                self.version += 1;
            }
        }
    }

    pub fn apply_queue(&mut self, q: &VisionQueue) {
        if let Some(n) = &q.metadata.name {
            self.queues.insert(n.clone(), q.clone());
            self.version += 1;
        }
    }

    pub fn delete_queue(&mut self, name: &str) {
        if self.queues.remove(name).is_some() {
            self.version += 1;
        }
    }

    /// Replaces every queue (a relist).
    pub fn set_queues(&mut self, qs: Vec<VisionQueue>) {
        self.queues.clear();
        for q in &qs {
            self.apply_queue(q);
        }
        self.version += 1;
    }

    pub fn apply_algorithm(&mut self, a: &VisionAlgorithm) {
        if let Some(n) = &a.metadata.name {
            self.algorithms.insert(n.clone(), a.clone());
            self.version += 1;
        }
    }

    pub fn delete_algorithm(&mut self, name: &str) {
        if self.algorithms.remove(name).is_some() {
            self.version += 1;
        }
    }

    pub fn set_algorithms(&mut self, all: Vec<VisionAlgorithm>) {
        self.algorithms.clear();
        for a in &all {
            self.apply_algorithm(a);
        }
        self.version += 1;
    }

    /// Forgets chart points older than the window.
    fn trim(&mut self, now_ms: i64) {
        let start = window_start(now_ms);
        while self.gone_finished.front().is_some_and(|f| f.at_ms < start) {
            self.gone_finished.pop_front();
        }
        while self.gone_admitted.front().is_some_and(|a| a.0 < start) {
            self.gone_admitted.pop_front();
        }
    }

    /// Everything the page's panels show, at `now_ms`.
    pub fn summary(&mut self, now_ms: i64) -> Summary {
        self.trim(now_ms);
        let mut queues: BTreeMap<String, QueueSummary> = self
            .queues
            .iter()
            .map(|(n, q)| (n.clone(), QueueSummary::of(q)))
            .collect();
        let mut algorithms: BTreeMap<String, AlgorithmSummary> = self
            .algorithms
            .iter()
            .map(|(n, a)| (n.clone(), AlgorithmSummary::of(a)))
            .collect();
        let mut by_phase: BTreeMap<String, usize> = BTreeMap::new();
        let mut series = Series::new(now_ms);
        // The first waiting job of each queue in the operator's order.
        let mut heads: BTreeMap<&str, (&Key, &JobRow)> = BTreeMap::new();
        for (key, row) in &self.jobs {
            let phase = phase_name(row.phase);
            *by_phase.entry(phase.to_string()).or_default() += 1;
            let q = queues
                .entry(row.queue.to_string())
                .or_insert_with(|| QueueSummary::missing(&row.queue));
            *q.jobs_by_phase.entry(phase.to_string()).or_default() += 1;
            if row.phase.is_some_and(JobPhase::holds_slot) {
                q.slots_used += 1;
                q.gpus_used += i64::from(row.gpus.max(0));
            }
            if row.is_waiting() {
                q.waiting += 1;
                let reason = row.reason.as_deref().unwrap_or(NOT_SEEN);
                *q.waiting_by_reason.entry(reason.to_string()).or_default() += 1;
                let better = heads
                    .get(&*row.queue)
                    .is_none_or(|(k, r)| queue_order((key, row), (k, r)).is_lt());
                if better {
                    heads.insert(&row.queue, (key, row));
                }
            }
            let a = algorithms
                .entry(row.algorithm.to_string())
                .or_insert_with(|| AlgorithmSummary::missing(&row.algorithm));
            if row.phase.is_some_and(JobPhase::holds_slot) {
                a.jobs_running += 1;
            }
            if row.phase == Some(JobPhase::Failed) {
                a.jobs_failed += 1;
            }
            if let Some(f) = row.finished_ms {
                series.finish(f, row.phase != Some(JobPhase::Succeeded));
            }
            if let (Some(qd), Some(ad)) = (row.queued_ms, row.admitted_ms) {
                series.admit(ad, ad - qd);
            }
        }
        for f in &self.gone_finished {
            series.finish(f.at_ms, f.failed);
        }
        for (a, w) in &self.gone_admitted {
            series.admit(*a, *w);
        }
        for q in queues.values_mut() {
            // The reason word of the job the queue's status names.
            let Some((ns, name)) = q.head.as_deref().and_then(|h| h.split_once('/')) else {
                continue;
            };
            let key: Key = (Arc::from(ns), name.into());
            q.head_wait_reason = self
                .jobs
                .get(&key)
                .map(|r| r.reason.as_deref().unwrap_or(NOT_SEEN).to_string());
        }
        for (qname, ((ns, name), row)) in heads {
            if let Some(q) = queues.get_mut(qname) {
                q.first_waiting = Some(HeadJob {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                    priority: row.priority,
                    reason: row.reason.as_deref().unwrap_or(NOT_SEEN).to_string(),
                });
            }
        }
        Summary {
            version: self.version,
            now_ms,
            jobs: self.jobs.len(),
            jobs_by_phase: by_phase,
            queues: queues.into_values().collect(),
            algorithms: algorithms.into_values().collect(),
            series: series.finish_up(),
        }
    }

    /// One page of the job list, filtered, in namespace/name order.
    pub fn page(&self, f: &JobFilter) -> JobPage {
        let limit = f.limit.clamp(1, MAX_PAGE);
        let query =
            f.q.as_deref()
                .map(str::to_lowercase)
                .filter(|q| !q.is_empty());
        let matches = |(ns, name): &Key, r: &JobRow| {
            f.namespace
                .as_deref()
                .is_none_or(|n| n.is_empty() || **ns == *n)
                && f.queue
                    .as_deref()
                    .is_none_or(|q| q.is_empty() || *r.queue == *q)
                && f.algorithm
                    .as_deref()
                    .is_none_or(|a| a.is_empty() || *r.algorithm == *a)
                && f.phase
                    .as_deref()
                    .is_none_or(|p| p.is_empty() || phase_name(r.phase) == p)
                && query
                    .as_deref()
                    .is_none_or(|q| name.to_lowercase().contains(q))
        };
        let mut total = 0;
        let mut items = Vec::new();
        for (k, r) in &self.jobs {
            if !matches(k, r) {
                continue;
            }
            if total >= f.offset && items.len() < limit {
                items.push(JobItem {
                    namespace: k.0.to_string(),
                    name: k.1.to_string(),
                    queue: r.queue.to_string(),
                    algorithm: r.algorithm.to_string(),
                    phase: phase_name(r.phase).to_string(),
                    reason: r.reason.as_deref().map(str::to_string),
                    priority: r.priority,
                    attempts: r.attempts,
                    created_ms: r.created_ms,
                });
            }
            total += 1;
        }
        JobPage {
            total,
            offset: f.offset,
            limit,
            items,
        }
    }

    /// The namespaces, queues and algorithms the filters offer.
    pub fn choices(&self) -> Choices {
        let mut c = Choices::default();
        let mut ns = std::collections::BTreeSet::new();
        let mut qs: std::collections::BTreeSet<String> = self.queues.keys().cloned().collect();
        let mut als: std::collections::BTreeSet<String> = self.algorithms.keys().cloned().collect();
        for ((n, _), r) in &self.jobs {
            if ns.last() != Some(n) {
                ns.insert(n.clone());
            }
            if !qs.contains(&*r.queue) {
                qs.insert(r.queue.to_string());
            }
            if !als.contains(&*r.algorithm) {
                als.insert(r.algorithm.to_string());
            }
        }
        c.namespaces = ns.into_iter().map(|n| n.to_string()).collect();
        c.queues = qs.into_iter().collect();
        c.algorithms = als.into_iter().collect();
        c
    }

    /// The heap the job rows take, counted from their parts (map nodes
    /// estimated as key + row + three words): what one more job costs.
    pub fn job_bytes(&self) -> usize {
        let per_entry = std::mem::size_of::<Key>() + std::mem::size_of::<JobRow>() + 24;
        let names: usize = self.jobs.keys().map(|(_, n)| n.len()).sum();
        let strings: usize = self.strings.0.iter().map(|s| s.len() + 16 + 8).sum();
        self.jobs.len() * per_entry + names + strings
    }
}

/// The operator's order of waiting jobs: priority descending, creation
/// time, namespace/name (as `visionctl queue` and admission order them).
fn queue_order(a: (&Key, &JobRow), b: (&Key, &JobRow)) -> std::cmp::Ordering {
    b.1.priority
        .cmp(&a.1.priority)
        .then(a.1.created_ms.cmp(&b.1.created_ms))
        .then_with(|| a.0.cmp(b.0))
}

/// The phase's name; `Pending` for a job without status yet.
pub fn phase_name(p: Option<JobPhase>) -> &'static str {
    p.map(JobPhase::as_str).unwrap_or("Pending")
}

fn window_start(now_ms: i64) -> i64 {
    bucket_of(now_ms) - (BUCKETS as i64 - 1) * BUCKET_MS
}

fn bucket_of(t_ms: i64) -> i64 {
    t_ms.div_euclid(BUCKET_MS) * BUCKET_MS
}

/// The job list's query.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct JobFilter {
    /// A substring of the name (any case).
    pub q: Option<String>,
    pub phase: Option<String>,
    pub queue: Option<String>,
    pub algorithm: Option<String>,
    pub namespace: Option<String>,
    #[serde(default)]
    pub offset: usize,
    #[serde(default = "default_limit")]
    pub limit: usize,
}

fn default_limit() -> usize {
    50
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobItem {
    pub namespace: String,
    pub name: String,
    pub queue: String,
    pub algorithm: String,
    pub phase: String,
    pub reason: Option<String>,
    pub priority: i32,
    pub attempts: i32,
    pub created_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobPage {
    /// Jobs matching the filter.
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    pub items: Vec<JobItem>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Choices {
    pub namespaces: Vec<String>,
    pub queues: Vec<String>,
    pub algorithms: Vec<String>,
}

/// The first waiting job of a queue, as the index orders them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeadJob {
    pub namespace: String,
    pub name: String,
    pub priority: i32,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueSummary {
    pub name: String,
    /// False for a queue that jobs name but that does not exist (or the
    /// user may not read).
    pub exists: bool,
    pub paused: bool,
    pub max_running: Option<i32>,
    pub max_gpus: Option<i32>,
    pub max_pending: Option<i32>,
    /// Jobs of the queue in Admitted or Running, counted from the jobs.
    pub slots_used: i64,
    /// Their GPUs (status.gpus), counted from the jobs.
    pub gpus_used: i64,
    /// Waiting jobs counted from the jobs.
    pub waiting: i64,
    pub waiting_by_reason: BTreeMap<String, i64>,
    pub jobs_by_phase: BTreeMap<String, i64>,
    /// The queue's own status, as the operator wrote it.
    pub status_running: Option<i32>,
    pub status_pending: Option<i32>,
    pub status_gpus_in_use: Option<i32>,
    pub head: Option<String>,
    /// Why the head waits, as the operator explains it (a sentence).
    pub head_reason: Option<String>,
    /// The head job's status.reason (SlotsFull, GpuQuota, ...).
    pub head_wait_reason: Option<String>,
    pub admitted_total: Option<i64>,
    pub first_waiting: Option<HeadJob>,
}

impl QueueSummary {
    fn of(q: &VisionQueue) -> Self {
        let st = q.status.as_ref();
        QueueSummary {
            name: q.metadata.name.clone().unwrap_or_default(),
            exists: true,
            paused: q.spec.paused,
            max_running: Some(q.spec.max_running),
            max_gpus: q.spec.max_gpus,
            max_pending: q.spec.max_pending,
            slots_used: 0,
            gpus_used: 0,
            waiting: 0,
            waiting_by_reason: BTreeMap::new(),
            jobs_by_phase: BTreeMap::new(),
            status_running: st.map(|s| s.running),
            status_pending: st.map(|s| s.pending),
            status_gpus_in_use: st.map(|s| s.gpus_in_use),
            head: st.and_then(|s| s.head.clone()),
            head_reason: st.and_then(|s| s.head_reason.clone()),
            head_wait_reason: None,
            admitted_total: st.map(|s| s.admitted_total),
            first_waiting: None,
        }
    }

    fn missing(name: &str) -> Self {
        QueueSummary {
            name: name.to_string(),
            exists: false,
            paused: false,
            max_running: None,
            max_gpus: None,
            max_pending: None,
            slots_used: 0,
            gpus_used: 0,
            waiting: 0,
            waiting_by_reason: BTreeMap::new(),
            jobs_by_phase: BTreeMap::new(),
            status_running: None,
            status_pending: None,
            status_gpus_in_use: None,
            head: None,
            head_reason: None,
            head_wait_reason: None,
            admitted_total: None,
            first_waiting: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlgorithmSummary {
    pub name: String,
    pub exists: bool,
    pub max_running: Option<i32>,
    /// Admitted or Running jobs of the algorithm, counted from the jobs.
    pub jobs_running: i64,
    /// Failed jobs still in the cluster.
    pub jobs_failed: i64,
    /// The algorithm's status, as the operator wrote it.
    pub status_running: Option<i32>,
    pub recent_failures: Option<i32>,
    /// Closed, Open or HalfOpen; none without a breaker.
    pub breaker: Option<String>,
    pub has_breaker: bool,
}

impl AlgorithmSummary {
    fn of(a: &VisionAlgorithm) -> Self {
        let st = a.status.as_ref();
        AlgorithmSummary {
            name: a.metadata.name.clone().unwrap_or_default(),
            exists: true,
            max_running: a.spec.max_running,
            jobs_running: 0,
            jobs_failed: 0,
            status_running: st.map(|s| s.running),
            recent_failures: st.map(|s| s.recent_failures),
            breaker: st.and_then(|s| s.breaker.clone()),
            has_breaker: a.spec.circuit_breaker.is_some(),
        }
    }

    fn missing(name: &str) -> Self {
        AlgorithmSummary {
            name: name.to_string(),
            exists: false,
            max_running: None,
            jobs_running: 0,
            jobs_failed: 0,
            status_running: None,
            recent_failures: None,
            breaker: None,
            has_breaker: false,
        }
    }
}

/// The charts: [`BUCKETS`] buckets of [`BUCKET_MS`], the last one holding
/// `now`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Series {
    pub start_ms: i64,
    pub bucket_ms: i64,
    /// Jobs that reached Succeeded per bucket (by status.finishedAt).
    pub succeeded: Vec<u32>,
    /// Jobs that reached Failed or Rejected per bucket.
    pub failed: Vec<u32>,
    /// Admissions per bucket (by status.admittedAt).
    pub admitted: Vec<u32>,
    /// Mean and longest wait (queuedAt to admittedAt) of those admissions.
    pub wait_mean_ms: Vec<Option<i64>>,
    pub wait_max_ms: Vec<Option<i64>>,
    #[serde(skip)]
    wait_sum: Vec<i64>,
}

impl Series {
    fn new(now_ms: i64) -> Self {
        Series {
            start_ms: window_start(now_ms),
            bucket_ms: BUCKET_MS,
            succeeded: vec![0; BUCKETS],
            failed: vec![0; BUCKETS],
            admitted: vec![0; BUCKETS],
            wait_mean_ms: vec![None; BUCKETS],
            wait_max_ms: vec![None; BUCKETS],
            wait_sum: vec![0; BUCKETS],
        }
    }

    fn slot(&self, t_ms: i64) -> Option<usize> {
        let i = (t_ms - self.start_ms).div_euclid(BUCKET_MS);
        (0..BUCKETS as i64).contains(&i).then_some(i as usize)
    }

    fn finish(&mut self, at_ms: i64, failed: bool) {
        if let Some(i) = self.slot(at_ms) {
            if failed {
                self.failed[i] += 1;
            } else {
                self.succeeded[i] += 1;
            }
        }
    }

    fn admit(&mut self, at_ms: i64, wait_ms: i64) {
        if let Some(i) = self.slot(at_ms) {
            let w = wait_ms.max(0);
            self.admitted[i] += 1;
            self.wait_sum[i] += w;
            self.wait_max_ms[i] = Some(self.wait_max_ms[i].map_or(w, |m| m.max(w)));
        }
    }

    fn finish_up(mut self) -> Self {
        for i in 0..BUCKETS {
            if self.admitted[i] > 0 {
                self.wait_mean_ms[i] = Some(self.wait_sum[i] / i64::from(self.admitted[i]));
            }
        }
        self
    }
}

/// What the page's panels show; pushed to the page as it changes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub version: u64,
    pub now_ms: i64,
    pub jobs: usize,
    pub jobs_by_phase: BTreeMap<String, usize>,
    pub queues: Vec<QueueSummary>,
    pub algorithms: Vec<AlgorithmSummary>,
    pub series: Series,
}

#[cfg(test)]
mod tests {
    use super::*;
    use vision_api::VisionJobStatus;
    use vision_api::testing::{JobFixture, at_ms, mk_algorithm, mk_breaker, mk_job, mk_queue};

    fn waiting(ns: &str, name: &str, reason: &str) -> VisionJob {
        mk_job(ns, name, "detect")
            .with_queue("gpu")
            .with_status(VisionJobStatus {
                phase: Some(JobPhase::Queued),
                reason: Some(reason.into()),
                queued_at: Some(at_ms(1_000)),
                ..Default::default()
            })
    }

    fn running(ns: &str, name: &str, gpus: i32, queued: i64, admitted: i64) -> VisionJob {
        mk_job(ns, name, "detect")
            .with_queue("gpu")
            .with_status(VisionJobStatus {
                phase: Some(JobPhase::Running),
                gpus: Some(gpus),
                attempts: Some(1),
                queued_at: Some(at_ms(queued)),
                admitted_at: Some(at_ms(admitted)),
                ..Default::default()
            })
    }

    fn finished(ns: &str, name: &str, phase: JobPhase, at: i64) -> VisionJob {
        mk_job(ns, name, "detect")
            .with_queue("gpu")
            .with_status(VisionJobStatus {
                phase: Some(phase),
                finished_at: Some(at_ms(at)),
                ..Default::default()
            })
    }

    fn fixture() -> Index {
        let mut ix = Index::default();
        let mut q = mk_queue("gpu", 2);
        q.spec.max_gpus = Some(4);
        q.status = Some(vision_api::VisionQueueStatus {
            running: 2,
            pending: 3,
            gpus_in_use: 3,
            head: Some("team-a/w-late".into()),
            head_reason: Some("SlotsFull".into()),
            ..Default::default()
        });
        ix.apply_queue(&q);
        let mut a = mk_algorithm("detect");
        a.spec.circuit_breaker = Some(mk_breaker(3, 60, 30));
        a.status = Some(vision_api::VisionAlgorithmStatus {
            running: 2,
            recent_failures: 1,
            breaker: Some("Closed".into()),
            ..Default::default()
        });
        ix.apply_algorithm(&a);
        // now = 600_000: the window is [10_000, 610_000).
        ix.apply_job(&running("team-a", "r1", 1, 1_000, 21_000));
        ix.apply_job(&running("team-b", "r2", 2, 15_000, 25_000));
        ix.apply_job(
            &waiting("team-a", "w-late", "SlotsFull")
                .created_at_ms(2_000)
                .with_priority(5),
        );
        ix.apply_job(&waiting("team-a", "w-early", "SlotsFull").created_at_ms(1_000));
        ix.apply_job(&waiting("team-b", "w-gpu", "GpuQuota").created_at_ms(1_000));
        ix.apply_job(&mk_job("team-b", "fresh", "other").with_queue("gpu"));
        ix.apply_job(&waiting("team-b", "paused-one", "SlotsFull").suspended());
        ix.apply_job(&finished("team-a", "ok-1", JobPhase::Succeeded, 595_000));
        ix.apply_job(&finished("team-a", "ok-2", JobPhase::Succeeded, 599_999));
        ix.apply_job(&finished("team-b", "bad", JobPhase::Failed, 15_000));
        ix.apply_job(&finished("team-b", "ancient", JobPhase::Succeeded, 5_000));
        ix
    }

    #[test]
    fn the_summary_counts_each_queue_and_algorithm_from_the_jobs() {
        let mut ix = fixture();
        let s = ix.summary(600_000);
        assert_eq!(s.jobs, 11);
        assert_eq!(
            s.jobs_by_phase,
            BTreeMap::from([
                ("Failed".to_string(), 1),
                ("Pending".to_string(), 1),
                ("Queued".to_string(), 4),
                ("Running".to_string(), 2),
                ("Succeeded".to_string(), 3),
            ])
        );
        assert_eq!(s.queues.len(), 1);
        let q = &s.queues[0];
        assert_eq!((q.slots_used, q.gpus_used, q.waiting), (2, 3, 4));
        assert_eq!(
            q.waiting_by_reason,
            BTreeMap::from([
                ("GpuQuota".to_string(), 1),
                (NOT_SEEN.to_string(), 1),
                ("SlotsFull".to_string(), 2),
            ])
        );
        assert_eq!((q.max_running, q.max_gpus), (Some(2), Some(4)));
        assert_eq!(
            (q.head.as_deref(), q.head_reason.as_deref()),
            (Some("team-a/w-late"), Some("SlotsFull"))
        );
        assert_eq!(q.head_wait_reason.as_deref(), Some("SlotsFull"));
        // Priority 5 goes first although it was created later.
        assert_eq!(
            q.first_waiting,
            Some(HeadJob {
                namespace: "team-a".into(),
                name: "w-late".into(),
                priority: 5,
                reason: "SlotsFull".into(),
            })
        );
        let names: Vec<_> = s.algorithms.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["detect", "other"]);
        let d = &s.algorithms[0];
        assert_eq!(
            (
                d.jobs_running,
                d.jobs_failed,
                d.status_running,
                d.breaker.as_deref(),
                d.has_breaker
            ),
            (2, 1, Some(2), Some("Closed"), true)
        );
        assert!(!s.algorithms[1].exists);
    }

    #[test]
    fn the_charts_bucket_finishes_and_waits_over_ten_minutes() {
        let mut ix = fixture();
        let s = ix.summary(600_000).series;
        assert_eq!(s.start_ms, 10_000);
        let nonzero = |v: &[u32]| -> Vec<(usize, u32)> {
            v.iter()
                .copied()
                .enumerate()
                .filter(|(_, n)| *n > 0)
                .collect()
        };
        // The last bucket is [600_000, 610_000): 595_000 and 599_999 are
        // in bucket 58; 15_000 in bucket 0; 5_000 is before the window.
        assert_eq!(nonzero(&s.succeeded), [(58, 2)]);
        assert_eq!(nonzero(&s.failed), [(0, 1)]);
        // r1 (waited 20 s) and r2 (10 s) were admitted in bucket 1.
        assert_eq!(nonzero(&s.admitted), [(1, 2)]);
        assert_eq!(
            (s.wait_mean_ms[1], s.wait_max_ms[1]),
            (Some(15_000), Some(20_000))
        );
        assert_eq!(s.wait_mean_ms.iter().flatten().count(), 1);
    }

    #[test]
    fn a_deleted_job_stays_on_the_charts_and_leaves_the_counts() {
        let mut ix = fixture();
        ix.delete_job("team-a", "ok-2");
        let s = ix.summary(600_000);
        assert_eq!(s.jobs, 10);
        assert_eq!(s.series.succeeded[58], 2);
        // Ten minutes later it is gone from the charts too.
        let later = ix.summary(1_300_000);
        assert_eq!(later.series.succeeded.iter().sum::<u32>(), 0);
    }

    #[test]
    fn a_relist_removes_the_jobs_it_did_not_see() {
        let mut ix = fixture();
        ix.relist_start();
        ix.apply_job(&running("team-a", "r1", 1, 1_000, 21_000));
        ix.relist_done();
        assert_eq!(ix.len(), 1);
        let v = ix.version;
        ix.apply_job(&running("team-a", "r1", 1, 1_000, 21_000));
        assert_eq!(ix.version, v, "an unchanged job changes nothing");
    }

    #[test]
    fn pages_filter_by_phase_queue_algorithm_namespace_and_name() {
        let ix = fixture();
        let names = |f: JobFilter| -> (usize, Vec<String>) {
            let p = ix.page(&f);
            (
                p.total,
                p.items
                    .into_iter()
                    .map(|i| format!("{}/{}", i.namespace, i.name))
                    .collect(),
            )
        };
        let base = JobFilter {
            limit: 3,
            ..Default::default()
        };
        assert_eq!(
            names(base.clone()),
            (
                11,
                vec![
                    "team-a/ok-1".into(),
                    "team-a/ok-2".into(),
                    "team-a/r1".into()
                ]
            )
        );
        assert_eq!(
            names(JobFilter {
                offset: 9,
                ..base.clone()
            }),
            (11, vec!["team-b/r2".into(), "team-b/w-gpu".into()])
        );
        assert_eq!(
            names(JobFilter {
                phase: Some("Queued".into()),
                namespace: Some("team-a".into()),
                ..base.clone()
            }),
            (2, vec!["team-a/w-early".into(), "team-a/w-late".into()])
        );
        assert_eq!(
            names(JobFilter {
                q: Some("W-".into()),
                ..base.clone()
            }),
            (
                3,
                vec![
                    "team-a/w-early".into(),
                    "team-a/w-late".into(),
                    "team-b/w-gpu".into()
                ]
            )
        );
        assert_eq!(
            names(JobFilter {
                algorithm: Some("other".into()),
                phase: Some("Pending".into()),
                ..base.clone()
            }),
            (1, vec!["team-b/fresh".into()])
        );
        assert_eq!(
            names(JobFilter {
                queue: Some("cpu".into()),
                ..base
            }),
            (0, vec![])
        );
        assert_eq!(
            ix.choices(),
            Choices {
                namespaces: vec!["team-a".into(), "team-b".into()],
                queues: vec!["gpu".into()],
                algorithms: vec!["detect".into(), "other".into()],
            }
        );
    }

    /// The memory of the index at 100,000 jobs (docs/WEBVIEW.md quotes the
    /// number this prints): `cargo test -p visionctl --lib
    /// ui::index::tests::memory -- --nocapture`.
    #[test]
    fn memory_at_100k_jobs() {
        let mut ix = Index::default();
        let n = 100_000;
        let before = rss_kib();
        for i in 0..n {
            let job = running(
                &format!("team-{}", i % 20),
                &format!("burst-{i:06}"),
                1,
                1_000,
                2_000,
            )
            .with_uid(&format!("uid-{i}"));
            ix.apply_job(&job);
        }
        let after = rss_kib();
        assert_eq!(ix.len(), n);
        let bytes = ix.job_bytes();
        println!(
            "index of {n} jobs: {bytes} bytes counted ({} per job); process RSS grew {} KiB ({} bytes per job)",
            bytes / n,
            after.saturating_sub(before),
            after.saturating_sub(before) * 1024 / n as u64
        );
        let t = std::time::Instant::now();
        let s = ix.summary(600_000);
        let page = ix.page(&JobFilter {
            q: Some("099".into()),
            limit: 50,
            ..Default::default()
        });
        println!("summary and a searched page of {n} jobs: {:?}", t.elapsed());
        assert_eq!(s.jobs, n);
        let expected = (0..n)
            .filter(|i| format!("burst-{i:06}").contains("099"))
            .count();
        assert_eq!(page.total, expected);
        assert!(bytes / n < 400, "{} bytes per job", bytes / n);
    }

    fn rss_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }
}
