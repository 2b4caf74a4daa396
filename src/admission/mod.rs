//! The worker pool: a pure, synchronous, deterministic admission core.
//!
//! [`WorkerPool`] owns, for every `VisionQueue`, the pending jobs in
//! admission order and the count of jobs holding a slot (admitted or running),
//! with their GPUs; for every `VisionAlgorithm`, its holders across all queues
//! and its circuit breaker. The controller feeds it what it observes (jobs,
//! queue and algorithm specs, attempt outcomes) and asks [`WorkerPool::admit`]
//! what to admit now. It does no I/O, never reads a clock (every time is an
//! argument, in ms since the Unix epoch) and iterates no hash map to decide
//! anything, so the same calls always give the same answers.
//!
//! # Guarantees
//!
//! - **Never over-admits.** An admission happens only if, with it, the
//!   queue's holders stay within `max_running` and `max_gpus`, the
//!   algorithm's holders within its `max_running` (shared by all queues), the
//!   queue is not paused and the algorithm's breaker lets it through. Holders
//!   observed from the cluster are taken as given (never evicted), so after a
//!   limit is lowered the pool only stops admitting until it is below.
//! - **Never admits twice.** An admitted job is marked holding before
//!   `admit` returns; observing it again as New/Queued (a status write still
//!   in flight) does not make it pending again; only [`WorkerPool::rollback`]
//!   (the write failed) or [`WorkerPool::remove_job`] (finished) does.
//! - **Work-conserving.** `admit` loops until nothing is admissible: no job
//!   that fits every limit is left waiting, and one call fills every free slot.
//! - **Order.** Highest priority first, then oldest creation time, then
//!   namespace/name. Across queues (algorithm capacity is shared) the pool
//!   takes, each time, the first in that order among the queues' admissible
//!   candidates, so `admit` returns admissions in ascending order.
//!   `StrictFifo`: a queue admits only its head (its first pending job that
//!   could ever run: one with a registered algorithm and within the queue's
//!   GPU quota). `BestEffortFifo`: a queue admits its first job that fits.
//! - **Rebuild.** The state is a function of the set of jobs with their
//!   phases plus the specs: observing the cluster's jobs after a restart (the
//!   holders as `Holding`, the waiting as `Queued`) in any order gives the
//!   same pool as the one fed the history. The starvation guard below is
//!   stateless for that reason. Only breaker history (outcomes) is not in the
//!   jobs; a restart starts breakers closed.
//!   The pool cannot tell a finished job from a new one: the caller
//!   removes a job when it finishes and never observes finished ones, so a
//!   finished job is never admitted again.
//! - **Backpressure.** A job observed as `New` is rejected (and not kept)
//!   exactly when its queue already has `max_pending` pending jobs. Jobs
//!   already accepted are never rejected or evicted.
//!
//! # Starvation guard (BestEffortFifo)
//!
//! Letting smaller jobs pass a head that does not fit could starve a large job
//! forever: there is always some small job holding part of the quota. The
//! guard: consider the first pending job of the queue that is blocked *only*
//! by the queue's GPU quota (slots free, algorithm has capacity, breaker
//! closed). Once it has waited [`DEFAULT_STARVATION_GUARD_MS`] since its
//! creation (configurable with [`WorkerPool::with_starvation_guard_ms`]), the
//! queue *reserves* for it: no job ordered after it that takes GPUs is
//! admitted from that queue (reason `GpusReserved`) until it fits; jobs
//! ordered before it and GPU-less jobs still go. GPU holders then only drain,
//! so it fits once the jobs already holding end (plus any job of higher
//! priority arriving meanwhile: priority wins by design).
//!
//! Limit of the guard: it covers the queue's own GPU quota. A job that is
//! alternately blocked by its GPU quota and by its algorithm's capacity
//! (shared with other queues) gets no reservation while capacity is the
//! blocker, so in that mix it can still be passed.
//!
//! The guard is a function of the job's creation time and the current time,
//! not of a "times passed" counter, so a rebuilt pool makes the same
//! decisions (a counter would be lost on restart), and it is sticky by
//! construction (age only grows). A job larger than the queue's `max_gpus`
//! can never fit: it gets the permanent reason `ExceedsQueueGpus`, is never
//! reserved for, and never blocks anyone, under either ordering.
//!
//! # Cost
//!
//! Pending jobs of a queue are split by (algorithm, gpus) group; each group is
//! an order-statistic treap with its head cached. All members of a group are
//! equally constrained, so only group heads are candidates. Observe, remove
//! and rollback are O(log n); one admission is O(log n + G) where G is the
//! number of non-empty groups over all queues; `explain` is O(G log n);
//! `next_wakeup` is O(number of algorithms). Nothing scans the pending jobs.

mod breaker;
mod fair;
mod index;
pub mod preempt;
mod reason;

#[cfg(test)]
mod fair_props;
#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod worker_props;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use breaker::{Breaker, Gate};
use fair::Tenant;
pub use fair::{LimitHit, TenancySpec, TenantLimits, TenantStats};
use index::{Job, JobId, NIL, Slab, State, Tree, mix};
pub use reason::{WaitReason, WaitStatus};

/// How long a job blocked only by its queue's GPU quota may be passed by
/// smaller jobs (measured from its creation) before the queue reserves for it.
pub const DEFAULT_STARVATION_GUARD_MS: i64 = 10 * 60 * 1000;

/// A job's identity: namespace and name. Ordered by namespace, then name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobKey {
    pub namespace: String,
    pub name: String,
}

impl JobKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        JobKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for JobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The phase the caller observed in the job's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObservedPhase {
    /// No status yet: never accepted, subject to `max_pending`.
    New,
    /// Accepted and waiting.
    Queued,
    /// Admitted or Running: holds a slot, its GPUs and algorithm capacity.
    Holding,
}

/// A job as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolJob {
    pub key: JobKey,
    pub queue: String,
    pub algorithm: String,
    pub priority: i32,
    pub created_ms: i64,
    pub gpus: u32,
    pub phase: ObservedPhase,
    /// Its tenant in its queue (see [`TenancySpec`]): its namespace or the
    /// label the queue names; "" for a queue without tenancy.
    pub tenant: String,
}

/// How a queue orders admission (the API's `QueueOrdering`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderPolicy {
    BestEffortFifo,
    StrictFifo,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    /// Slots: admitted + running jobs at most. 0 admits nothing.
    pub max_running: u32,
    /// GPUs held by admitted + running jobs at most; `None` = unlimited.
    pub max_gpus: Option<u32>,
    /// Pending jobs at most; beyond it new jobs are rejected. `None` = unlimited.
    pub max_pending: Option<u32>,
    pub ordering: OrderPolicy,
    /// Admits nothing; new jobs are still accepted as pending.
    pub paused: bool,
    /// Weighted fair share between tenants and their limits; `None`: one
    /// tenant, FIFO within a priority.
    pub tenancy: Option<TenancySpec>,
    /// Whom a waiting job may evict (see [`preempt`]).
    pub preemption: preempt::Policy,
}

/// Running jobs to evict so that `preemptor` can be admitted once they are
/// gone (see [`WorkerPool::preempt`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preemption {
    pub queue: String,
    pub preemptor: JobKey,
    pub priority: i32,
    pub victims: Vec<JobKey>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerSpec {
    /// Failures inside the window that open the breaker; 0 disables it.
    pub failure_threshold: u32,
    pub window_ms: i64,
    pub cooldown_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlgorithmSpec {
    /// Backend capacity shared by all queues; `None` = unlimited.
    pub max_running: Option<u32>,
    pub breaker: Option<BreakerSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
}

/// A job the caller must now mark Admitted (the pool already counts it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    pub key: JobKey,
    pub queue: String,
    pub algorithm: String,
    pub gpus: u32,
}

/// A new job refused because its queue is full (reason `QueueFull`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub key: JobKey,
    pub queue: String,
    pub max_pending: u32,
}

/// The pool's view of a known job: waiting, or holding a slot (admitted or running).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PoolState {
    Pending,
    Holding,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStats {
    /// `None` when the queue is known only from its jobs (or was deleted).
    pub spec: Option<QueueSpec>,
    pub pending: u32,
    pub holding: u32,
    pub gpus_in_use: u64,
    /// The first pending job in admission order.
    pub head: Option<JobKey>,
}

/// The breaker as last updated (an `Open` whose `until_ms` has passed is in
/// effect half-open: the next `admit` may send a probe).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open { until_ms: i64 },
    HalfOpen { probe: Option<JobKey> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlgorithmStats {
    pub spec: Option<AlgorithmSpec>,
    pub holding: u32,
    pub pending: u32,
    pub breaker: BreakerState,
    /// Failures inside the window when last recorded (closed breaker only).
    pub recent_failures: u32,
}

/// Pending jobs of one queue with the same tenant, algorithm and GPU count:
/// equally constrained, so only the head can be the queue's candidate.
#[derive(Debug)]
struct Group {
    tenant: u32,
    algo: u32,
    gpus: u32,
    tree: Tree,
    /// The tree's head with its order fields (valid: empty groups are
    /// dropped). Kept here so that scanning the groups reads one contiguous
    /// vector instead of one randomly placed job record per group.
    head: Cand,
}

impl Group {
    fn refresh_head(&mut self, jobs: &Slab) {
        if let Some(h) = self.tree.head() {
            self.head = Cand::of(jobs, h);
        }
    }
}

/// A job with a copy of its order fields: comparing two touches the job
/// records only when priority and creation time tie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cand {
    id: JobId,
    priority: i32,
    created_ms: i64,
}

impl Cand {
    fn of(jobs: &Slab, id: JobId) -> Cand {
        let j = &jobs[id];
        Cand {
            id,
            priority: j.priority,
            created_ms: j.created_ms,
        }
    }

    fn precedes(self, other: Cand, jobs: &Slab) -> bool {
        other
            .priority
            .cmp(&self.priority)
            .then(self.created_ms.cmp(&other.created_ms))
            .then_with(|| jobs[self.id].key.cmp(&jobs[other.id].key))
            == std::cmp::Ordering::Less
    }
}

#[derive(Debug)]
struct QueueState {
    name: String,
    spec: Option<QueueSpec>,
    groups: Vec<Group>,
    pending: u32,
    holding: u32,
    gpus_in_use: u64,
    /// GPUs held by the queue's live worker pods (worker mode, see
    /// [`WorkerPool::grant_worker_pods`]): counted against `max_gpus`
    /// beside the jobs' GPUs.
    worker_gpus: u64,
    /// Interned tenants (never removed: their usage outlives their jobs).
    tenants: Vec<Tenant>,
    tenant_ids: HashMap<String, u32>,
}

impl QueueState {
    /// GPUs counted against `max_gpus`: the holding jobs' and the worker pods'.
    fn gpus_held(&self) -> u64 {
        self.gpus_in_use + self.worker_gpus
    }

    /// The usage mean life when the queue has tenancy.
    fn tau(&self) -> Option<f64> {
        self.spec
            .as_ref()?
            .tenancy
            .as_ref()
            .map(TenancySpec::tau_ms)
    }

    /// The fair-share score of tenant `t` at `now` (0 without tenancy, so
    /// that the order is plain priority-then-FIFO).
    fn score(&self, t: u32, now_ms: i64) -> f64 {
        match self.tau() {
            Some(tau) => self.tenants[t as usize].score(now_ms, tau),
            None => 0.0,
        }
    }

    /// The tenant limit admitting one more job of `t` with `gpus` would exceed.
    fn limit_hit(&self, t: u32, gpus: u32) -> Option<LimitHit> {
        self.spec.as_ref()?.tenancy.as_ref()?;
        self.tenants[t as usize].limit_hit(gpus)
    }
}

#[derive(Debug)]
struct AlgoState {
    name: String,
    spec: Option<AlgorithmSpec>,
    pending: u32,
    holding: u32,
    breaker: Breaker,
}

impl AlgoState {
    fn breaker_spec(&self) -> Option<&BreakerSpec> {
        self.spec
            .as_ref()
            .and_then(|s| s.breaker.as_ref())
            .filter(|b| b.failure_threshold > 0)
    }

    fn gate(&self, now_ms: i64) -> Gate {
        if self.breaker_spec().is_some() {
            self.breaker.gate(now_ms)
        } else {
            Gate::Pass
        }
    }

    fn at_capacity(&self) -> Option<u32> {
        let max = self.spec.as_ref()?.max_running?;
        (self.holding >= max).then_some(max)
    }
}

/// What an algorithm says about admitting one more of its jobs now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AlgoGate {
    /// Not registered: its jobs can never run (until it is).
    Missing,
    /// At capacity, or its breaker holds jobs back.
    Blocked,
    Open,
}

/// The result of looking at a queue's group heads.
#[derive(Debug, Default)]
struct Scan {
    /// First pending job that could ever run here (algorithm registered,
    /// within the GPU quota, its tenant within its limits): the StrictFIFO head.
    runnable: Option<FCand>,
    /// First job that fits every limit now.
    admissible: Option<FCand>,
    /// First job taking no GPUs that fits every limit now.
    admissible_gpuless: Option<FCand>,
    /// First job blocked only by the GPU quota.
    gpu_blocked: Option<FCand>,
}

/// A candidate with its tenant's fair-share score at the time of the scan.
/// The order within a queue: priority descending, then score ascending,
/// then creation time, then namespace/name. Without tenancy every score is
/// 0 and this is the plain admission order.
#[derive(Debug, Clone, Copy)]
struct FCand {
    c: Cand,
    score: f64,
}

impl FCand {
    fn precedes(self, other: FCand, jobs: &Slab) -> bool {
        other
            .c
            .priority
            .cmp(&self.c.priority)
            .then(self.score.total_cmp(&other.score))
            .then(self.c.created_ms.cmp(&other.c.created_ms))
            .then_with(|| jobs[self.c.id].key.cmp(&jobs[other.c.id].key))
            == std::cmp::Ordering::Less
    }
}

fn fair_first(s: &Slab, a: Option<FCand>, b: FCand) -> Option<FCand> {
    match a {
        Some(a) if a.precedes(b, s) => Some(a),
        _ => Some(b),
    }
}

/// The admission core. See the module documentation.
#[derive(Debug)]
pub struct WorkerPool {
    queues: Vec<QueueState>,
    queue_ids: HashMap<String, u32>,
    /// Queues with a spec, ascending: the only ones `admit` looks at, so
    /// names known only from jobs (typos, deleted queues) cost nothing there.
    live_queues: Vec<u32>,
    algos: Vec<AlgoState>,
    algo_ids: HashMap<String, u32>,
    jobs: Slab,
    ids: HashMap<Arc<JobKey>, JobId>,
    /// Feeds the treap weights (deterministic).
    seq: u64,
    starvation_guard_ms: i64,
    /// The latest time the pool was given: tenant usage is integrated up to
    /// it when what a tenant holds changes.
    clock_ms: i64,
    /// When each holder started holding (admitted by this pool, or as the
    /// caller said): the victims' "most recently started" order.
    held_since: HashMap<JobId, i64>,
    /// Holders being evicted: they still hold (their pods are terminating)
    /// and are not chosen as victims again.
    evicting: std::collections::BTreeSet<JobId>,
}

impl Default for WorkerPool {
    fn default() -> Self {
        Self::new()
    }
}

/// The one of `a` and `b` that comes first in admission order.
fn first(s: &Slab, a: Option<Cand>, b: Cand) -> Option<Cand> {
    match a {
        Some(a) if a.precedes(b, s) => Some(a),
        _ => Some(b),
    }
}

impl WorkerPool {
    pub fn new() -> Self {
        Self::with_starvation_guard_ms(DEFAULT_STARVATION_GUARD_MS)
    }

    /// A pool whose BestEffortFIFO queues reserve GPUs for a job blocked by
    /// the GPU quota once it is `ms` old.
    pub fn with_starvation_guard_ms(ms: i64) -> Self {
        WorkerPool {
            queues: Vec::new(),
            queue_ids: HashMap::new(),
            live_queues: Vec::new(),
            algos: Vec::new(),
            algo_ids: HashMap::new(),
            jobs: Slab::default(),
            ids: HashMap::new(),
            seq: 0,
            starvation_guard_ms: ms,
            clock_ms: 0,
            held_since: HashMap::new(),
            evicting: std::collections::BTreeSet::new(),
        }
    }

    fn queue_id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.queue_ids.get(name) {
            return id;
        }
        let id = self.queues.len() as u32;
        self.queues.push(QueueState {
            name: name.to_owned(),
            spec: None,
            groups: Vec::new(),
            pending: 0,
            holding: 0,
            gpus_in_use: 0,
            worker_gpus: 0,
            tenants: Vec::new(),
            tenant_ids: HashMap::new(),
        });
        self.queue_ids.insert(name.to_owned(), id);
        id
    }

    fn algo_id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.algo_ids.get(name) {
            return id;
        }
        let id = self.algos.len() as u32;
        self.algos.push(AlgoState {
            name: name.to_owned(),
            spec: None,
            pending: 0,
            holding: 0,
            breaker: Breaker::default(),
        });
        self.algo_ids.insert(name.to_owned(), id);
        id
    }

    /// Creates the queue or changes it live. Raising a limit lets the next
    /// `admit` fill the new room; lowering one never evicts.
    pub fn set_queue(&mut self, name: &str, spec: QueueSpec) {
        let q = self.queue_id(name);
        let clock = self.clock_ms;
        let queue = &mut self.queues[q as usize];
        // Usage so far accrued under the old half-life.
        if let Some(tau) = queue.tau() {
            for t in &mut queue.tenants {
                t.advance(clock, tau);
            }
        }
        if queue.spec.replace(spec).is_none() {
            let at = self.live_queues.partition_point(|&l| l < q);
            self.live_queues.insert(at, q);
        }
        let queue = &mut self.queues[q as usize];
        let tenancy = queue.spec.as_ref().and_then(|s| s.tenancy.as_ref());
        for t in &mut queue.tenants {
            t.usage_at = t.usage_at.max(clock);
            (t.weight, t.limits) = match tenancy {
                Some(ts) => (ts.weight(&t.name), ts.limits(&t.name)),
                None => (1, TenantLimits::default()),
            };
        }
    }

    /// Moves the pool's clock forward (never back): tenant usage is
    /// integrated up to it. `admit` does this too.
    pub fn advance_clock(&mut self, now_ms: i64) {
        self.clock_ms = self.clock_ms.max(now_ms);
    }

    fn tenant_id(&mut self, q: u32, name: &str) -> u32 {
        let clock = self.clock_ms;
        let queue = &mut self.queues[q as usize];
        if let Some(&t) = queue.tenant_ids.get(name) {
            return t;
        }
        let id = queue.tenants.len() as u32;
        let mut tenant = Tenant::new(name.to_owned(), clock);
        if let Some(ts) = queue.spec.as_ref().and_then(|s| s.tenancy.as_ref()) {
            tenant.weight = ts.weight(name);
            tenant.limits = ts.limits(name);
        }
        queue.tenants.push(tenant);
        queue.tenant_ids.insert(name.to_owned(), id);
        id
    }

    /// Sets a tenant's decayed usage (GPU-ms) as of `at_ms`, from the
    /// queue's persisted status after a restart. Call it after observing the
    /// jobs: usage from `at_ms` on accrues at the rate of the holders.
    pub fn restore_usage(&mut self, queue: &str, tenant: &str, usage_gpu_ms: f64, at_ms: i64) {
        let q = self.queue_id(queue);
        let t = self.tenant_id(q, tenant);
        let t = &mut self.queues[q as usize].tenants[t as usize];
        t.usage = usage_gpu_ms.max(0.0);
        t.usage_at = at_ms;
    }

    /// Each tenant's decayed usage (GPU-ms) at `now_ms`, by name, for
    /// persisting (see `restore_usage`). Empty without tenancy.
    pub fn usage_snapshot(&self, queue: &str, now_ms: i64) -> Vec<(String, f64)> {
        let Some(&q) = self.queue_ids.get(queue) else {
            return Vec::new();
        };
        let queue = &self.queues[q as usize];
        let Some(tau) = queue.tau() else {
            return Vec::new();
        };
        let mut v: Vec<_> = queue
            .tenants
            .iter()
            .map(|t| (t.name.clone(), t.usage_at_time(now_ms, tau)))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The tenants of a queue with tenancy at `now_ms`, by name: those with
    /// jobs or at least half a GPU-second of usage.
    pub fn tenant_stats(&self, queue: &str, now_ms: i64) -> Vec<TenantStats> {
        let Some(&q) = self.queue_ids.get(queue) else {
            return Vec::new();
        };
        let queue = &self.queues[q as usize];
        let Some(tau) = queue.tau() else {
            return Vec::new();
        };
        let shares = fair::shares(&queue.tenants, now_ms, tau);
        let mut v: Vec<TenantStats> = queue
            .tenants
            .iter()
            .zip(shares)
            .map(|(t, (share, usage))| TenantStats {
                name: t.name.clone(),
                weight: t.weight,
                pending: t.pending,
                holding: t.holding,
                gpus_in_use: t.gpus,
                share_percent: share,
                usage_percent: usage,
                usage_gpu_seconds: t.usage_at_time(now_ms, tau) / 1000.0,
            })
            .filter(|t| t.pending > 0 || t.holding > 0 || t.usage_gpu_seconds >= 0.5)
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Its jobs stay known and wait with `QueueNotFound`; its holders keep
    /// counting for their algorithms (their pods still run).
    pub fn remove_queue(&mut self, name: &str) {
        if let Some(&q) = self.queue_ids.get(name) {
            self.queues[q as usize].spec = None;
            self.live_queues.retain(|&l| l != q);
        }
    }

    pub fn set_algorithm(&mut self, name: &str, spec: AlgorithmSpec) {
        let a = self.algo_id(name);
        let algo = &mut self.algos[a as usize];
        algo.spec = Some(spec);
        if algo.breaker_spec().is_none() {
            // A disabled breaker forgets its history; re-enabling starts closed.
            algo.breaker = Breaker::default();
        }
    }

    /// Its pending jobs wait with `AlgorithmNotFound`; its holders keep
    /// counting. A re-registered algorithm starts with a closed breaker.
    pub fn remove_algorithm(&mut self, name: &str) {
        if let Some(&a) = self.algo_ids.get(name) {
            let algo = &mut self.algos[a as usize];
            algo.spec = None;
            algo.breaker = Breaker::default();
        }
    }

    fn group_index(&self, q: u32, tenant: u32, algo: u32, gpus: u32) -> Option<usize> {
        self.queues[q as usize]
            .groups
            .iter()
            .position(|g| g.tenant == tenant && g.algo == algo && g.gpus == gpus)
    }

    /// Puts a pending job into its group tree.
    fn link(&mut self, id: JobId) {
        let (q, t, a, gpus) = {
            let j = &self.jobs[id];
            (j.queue, j.tenant, j.algo, j.gpus)
        };
        self.seq += 1;
        self.jobs[id].weight = mix(self.seq);
        let gi = match self.group_index(q, t, a, gpus) {
            Some(gi) => gi,
            None => {
                let groups = &mut self.queues[q as usize].groups;
                groups.push(Group {
                    tenant: t,
                    algo: a,
                    gpus,
                    tree: Tree::default(),
                    head: Cand::of(&self.jobs, id),
                });
                groups.len() - 1
            }
        };
        let queue = &mut self.queues[q as usize];
        let group = &mut queue.groups[gi];
        group.tree.insert(&mut self.jobs, id);
        group.refresh_head(&self.jobs);
        queue.pending += 1;
        queue.tenants[t as usize].pending += 1;
        self.algos[a as usize].pending += 1;
    }

    /// Takes a pending job out of its group tree (with the order fields it
    /// was inserted with).
    fn unlink(&mut self, id: JobId) {
        let (q, t, a, gpus) = {
            let j = &self.jobs[id];
            (j.queue, j.tenant, j.algo, j.gpus)
        };
        let gi = self
            .group_index(q, t, a, gpus)
            .expect("a pending job's group exists");
        let queue = &mut self.queues[q as usize];
        let group = &mut queue.groups[gi];
        group.tree.remove(&mut self.jobs, id);
        if group.tree.is_empty() {
            // Empty groups are dropped so that admission scans stay short.
            queue.groups.swap_remove(gi);
        } else {
            group.refresh_head(&self.jobs);
        }
        queue.pending -= 1;
        queue.tenants[t as usize].pending -= 1;
        self.algos[a as usize].pending -= 1;
    }

    fn hold(&mut self, id: JobId) {
        self.held_since.insert(id, self.clock_ms);
        let j = &self.jobs[id];
        let queue = &mut self.queues[j.queue as usize];
        queue.holding += 1;
        queue.gpus_in_use += u64::from(j.gpus);
        let tau = queue.tau();
        let t = &mut queue.tenants[j.tenant as usize];
        if let Some(tau) = tau {
            t.advance(self.clock_ms, tau);
        }
        t.holding += 1;
        t.gpus += u64::from(j.gpus);
        t.rate += fair::cost(j.gpus);
        self.algos[j.algo as usize].holding += 1;
    }

    fn unhold(&mut self, id: JobId) {
        self.held_since.remove(&id);
        self.evicting.remove(&id);
        let j = &self.jobs[id];
        let queue = &mut self.queues[j.queue as usize];
        queue.holding -= 1;
        queue.gpus_in_use -= u64::from(j.gpus);
        let tau = queue.tau();
        let t = &mut queue.tenants[j.tenant as usize];
        if let Some(tau) = tau {
            t.advance(self.clock_ms, tau);
        }
        t.holding -= 1;
        t.gpus -= u64::from(j.gpus);
        t.rate -= fair::cost(j.gpus);
        self.algos[j.algo as usize].holding -= 1;
    }

    /// Observes a job (add or change). See the module docs for the rules;
    /// in short: `New` may be rejected when the queue is full, `Queued` and
    /// `Holding` are taken as given, and a job the pool holds stays held.
    pub fn observe_job(&mut self, job: PoolJob) -> Option<Rejection> {
        let q = self.queue_id(&job.queue);
        let a = self.algo_id(&job.algorithm);
        let t = self.tenant_id(q, &job.tenant);
        if let Some(&id) = self.ids.get(&job.key) {
            let cur = &self.jobs[id];
            let (cur_state, cur_algo) = (cur.state, cur.algo);
            let target = match (cur.state, job.phase) {
                // The pool's own state never goes backwards: an admission
                // whose status write is in flight stays held.
                (State::Holding, _) | (_, ObservedPhase::Holding) => State::Holding,
                _ => State::Pending,
            };
            let unchanged = cur.state == target
                && cur.queue == q
                && cur.tenant == t
                && cur.algo == a
                && cur.gpus == job.gpus
                && cur.priority == job.priority
                && cur.created_ms == job.created_ms;
            if unchanged {
                // The common case (a status update of a known job): O(1).
                return None;
            }
            match cur_state {
                State::Pending => self.unlink(id),
                State::Holding => {
                    if cur_algo != a {
                        self.algos[cur_algo as usize].breaker.on_release(id);
                    }
                    self.unhold(id);
                }
            }
            let j = &mut self.jobs[id];
            j.queue = q;
            j.tenant = t;
            j.algo = a;
            j.gpus = job.gpus;
            j.priority = job.priority;
            j.created_ms = job.created_ms;
            j.state = target;
            match target {
                State::Pending => self.link(id),
                State::Holding => self.hold(id),
            }
            return None;
        }
        let queue = &self.queues[q as usize];
        if job.phase == ObservedPhase::New
            && let Some(max_pending) = queue.spec.as_ref().and_then(|s| s.max_pending)
            && queue.pending >= max_pending
        {
            return Some(Rejection {
                key: job.key,
                queue: job.queue,
                max_pending,
            });
        }
        let key = Arc::new(job.key);
        let state = if job.phase == ObservedPhase::Holding {
            State::Holding
        } else {
            State::Pending
        };
        let id = self.jobs.insert(Job {
            key: Arc::clone(&key),
            created_ms: job.created_ms,
            priority: job.priority,
            gpus: job.gpus,
            queue: q,
            tenant: t,
            algo: a,
            state,
            left: NIL,
            right: NIL,
            size: 0,
            weight: 0,
        });
        self.ids.insert(key, id);
        match state {
            State::Pending => self.link(id),
            State::Holding => self.hold(id),
        }
        None
    }

    /// The job no longer waits nor holds anything (finished, failed,
    /// suspended, rejected, deleted): forget it and free what it held.
    pub fn remove_job(&mut self, key: &JobKey) {
        let Some(id) = self.ids.remove(key) else {
            return;
        };
        match self.jobs[id].state {
            State::Pending => self.unlink(id),
            State::Holding => self.release(id),
        }
        self.jobs.remove(id);
    }

    fn release(&mut self, id: JobId) {
        let a = self.jobs[id].algo;
        self.algos[a as usize].breaker.on_release(id);
        self.unhold(id);
    }

    /// An attempt of a job of this algorithm ended (feeds the breaker). Does
    /// not free the slot: `remove_job` does.
    pub fn record_outcome(&mut self, algorithm: &str, outcome: Outcome, now_ms: i64) {
        let Some(&a) = self.algo_ids.get(algorithm) else {
            return;
        };
        let algo = &mut self.algos[a as usize];
        if let Some(spec) = algo.breaker_spec().cloned() {
            algo.breaker.record(&spec, outcome, now_ms);
        }
    }

    /// Whether algorithm `a` exists and can take one more job now.
    fn algo_gate(&self, a: u32, now_ms: i64) -> AlgoGate {
        let algo = &self.algos[a as usize];
        if algo.spec.is_none() {
            AlgoGate::Missing
        } else if algo.at_capacity().is_none()
            && matches!(algo.gate(now_ms), Gate::Pass | Gate::Probe)
        {
            AlgoGate::Open
        } else {
            AlgoGate::Blocked
        }
    }

    /// `algo_gate` of every algorithm, computed once per admission step
    /// rather than once per group.
    fn algo_gates(&self, now_ms: i64) -> Vec<AlgoGate> {
        (0..self.algos.len() as u32)
            .map(|a| self.algo_gate(a, now_ms))
            .collect()
    }

    /// Looks at the group heads of queue `q`. Assumes nothing about slots or
    /// pause (callers check those first).
    fn scan(&self, q: u32, gates: &[AlgoGate], now_ms: i64) -> Scan {
        let queue = &self.queues[q as usize];
        let spec = queue.spec.as_ref().expect("scan of a queue with a spec");
        // Fits when the GPUs in use plus its own stay within the quota: a
        // queue over a lowered quota admits nothing at all (not even GPU-less
        // jobs), like one over a lowered maxRunning, until it is back within.
        let fits = |gpus: u32| {
            spec.max_gpus
                .is_none_or(|m| queue.gpus_held() + u64::from(gpus) <= u64::from(m))
        };
        let mut s = Scan::default();
        let tau = queue.tau();
        for g in &queue.groups {
            let gate = gates[g.algo as usize];
            if gate == AlgoGate::Missing || spec.max_gpus.is_some_and(|m| g.gpus > m) {
                continue; // can never run here: blocks no one
            }
            let score = match tau {
                Some(tau) => {
                    let t = &queue.tenants[g.tenant as usize];
                    if t.limit_hit(g.gpus).is_some() {
                        continue; // its tenant's business: blocks no other tenant
                    }
                    t.score(now_ms, tau)
                }
                None => 0.0,
            };
            let head = FCand { c: g.head, score };
            s.runnable = fair_first(&self.jobs, s.runnable, head);
            if gate == AlgoGate::Blocked {
                continue;
            }
            if fits(g.gpus) {
                s.admissible = fair_first(&self.jobs, s.admissible, head);
                if g.gpus == 0 {
                    s.admissible_gpuless = fair_first(&self.jobs, s.admissible_gpuless, head);
                }
            } else {
                s.gpu_blocked = fair_first(&self.jobs, s.gpu_blocked, head);
            }
        }
        s
    }

    /// The job the starvation guard reserves for in queue `q`, if any.
    fn reserved_for(&self, scan: &Scan, now_ms: i64) -> Option<FCand> {
        let r = scan.gpu_blocked?;
        (now_ms.saturating_sub(r.c.created_ms) >= self.starvation_guard_ms).then_some(r)
    }

    /// Whether the queue as a whole may admit (exists, not paused, a slot free).
    fn queue_open(&self, q: u32) -> Option<&QueueSpec> {
        let queue = &self.queues[q as usize];
        let spec = queue.spec.as_ref()?;
        (!spec.paused && queue.holding < spec.max_running).then_some(spec)
    }

    /// The job queue `q` would admit next, if any.
    fn candidate(&self, q: u32, gates: &[AlgoGate], now_ms: i64) -> Option<Cand> {
        let spec = self.queue_open(q)?;
        let scan = self.scan(q, gates, now_ms);
        let pick = match spec.ordering {
            OrderPolicy::StrictFifo => scan
                .admissible
                .filter(|j| Some(j.c) == scan.runnable.map(|r| r.c)),
            OrderPolicy::BestEffortFifo => {
                let Some(r) = self.reserved_for(&scan, now_ms) else {
                    return scan.admissible.map(|a| a.c);
                };
                match scan.admissible {
                    // Jobs ahead of the reserved one are not held back.
                    Some(a) if a.precedes(r, &self.jobs) => Some(a),
                    // Behind it only GPU-less jobs go: they take no GPU the
                    // reserved job waits for.
                    _ => scan.admissible_gpuless,
                }
            }
        };
        pick.map(|p| p.c)
    }

    /// Everything admissible now, in admission order, already counted as
    /// holding (the caller writes the statuses after; on a failed write it
    /// calls `rollback`).
    pub fn admit(&mut self, now_ms: i64) -> Vec<Admission> {
        self.advance_clock(now_ms);
        let mut out = Vec::new();
        let mut gates = self.algo_gates(now_ms);
        loop {
            let mut best = None;
            for &q in &self.live_queues {
                if let Some(j) = self.candidate(q, &gates, now_ms) {
                    best = first(&self.jobs, best, j);
                }
            }
            let Some(Cand { id, .. }) = best else {
                break;
            };
            self.unlink(id);
            self.jobs[id].state = State::Holding;
            self.hold(id);
            let j = &self.jobs[id];
            let algo = &mut self.algos[j.algo as usize];
            if algo.breaker_spec().is_some() {
                algo.breaker.on_admit(id, now_ms);
            }
            let a = j.algo;
            out.push(Admission {
                key: (*j.key).clone(),
                queue: self.queues[j.queue as usize].name.clone(),
                algorithm: algo.name.clone(),
                gpus: j.gpus,
            });
            // Of the gates, only the admitted job's algorithm's can have
            // changed (its capacity, its breaker probe).
            gates[a as usize] = self.algo_gate(a, now_ms);
        }
        out
    }

    /// When a holder started (its pod's start or its admission), for the
    /// victims' order; by default the pool's clock when it was first seen
    /// holding. A no-op unless the pool holds the job.
    pub fn set_started(&mut self, key: &JobKey, started_ms: i64) {
        if let Some(&id) = self.ids.get(key)
            && self.jobs[id].state == State::Holding
        {
            self.held_since.insert(id, started_ms);
        }
    }

    /// Marks a holder as being evicted (its status says so) or not. A no-op
    /// unless the pool holds the job.
    pub fn set_evicting(&mut self, key: &JobKey, evicting: bool) {
        if let Some(&id) = self.ids.get(key)
            && self.jobs[id].state == State::Holding
        {
            if evicting {
                self.evicting.insert(id);
            } else {
                self.evicting.remove(&id);
            }
        }
    }

    /// For each queue whose preemption policy allows it: the first waiting
    /// job (fair order) that is blocked only by the queue's slots or GPU
    /// quota even once the holders already being evicted are gone, and the
    /// running jobs to evict for it ([`preempt::choose_victims`]), now
    /// marked evicting. They keep holding until the caller removes them (or
    /// observes them waiting again): the preemptor is admitted by `admit`
    /// only once they are gone, so the limits hold at every instant. At most
    /// one preemptor per queue per call.
    pub fn preempt(&mut self, now_ms: i64) -> Vec<Preemption> {
        self.advance_clock(now_ms);
        let gates = self.algo_gates(now_ms);
        let mut out = Vec::new();
        for qi in 0..self.live_queues.len() {
            let q = self.live_queues[qi];
            if let Some(p) = self.preempt_in(q, &gates, now_ms) {
                out.push(p);
            }
        }
        out
    }

    fn preempt_in(&mut self, q: u32, gates: &[AlgoGate], now_ms: i64) -> Option<Preemption> {
        let queue = &self.queues[q as usize];
        let spec = queue.spec.as_ref()?;
        if spec.preemption == preempt::Policy::Never || spec.paused {
            return None;
        }
        let scan = self.scan(q, gates, now_ms);
        // Something fits now (slots free and within every limit): admission,
        // not preemption.
        if queue.holding < spec.max_running && scan.admissible.is_some() {
            return None;
        }
        let head = scan.runnable?;
        let pre = &self.jobs[head.c.id];
        if gates[pre.algo as usize] != AlgoGate::Open {
            return None; // its algorithm's capacity or breaker: not ours to free
        }
        let (mut holding, mut gpus) = (queue.holding, queue.gpus_held());
        let mut running = Vec::new();
        for (&id, &since) in &self.held_since {
            let j = &self.jobs[id];
            if j.queue != q {
                continue;
            }
            if self.evicting.contains(&id) {
                holding -= 1;
                gpus -= u64::from(j.gpus);
                continue;
            }
            running.push(preempt::Running {
                key: (*j.key).clone(),
                priority: j.priority,
                started_ms: since,
                gpus: j.gpus,
                tenant: j.tenant as usize,
            });
        }
        // Deterministic input order (the choice does not depend on it).
        running.sort_by(|a, b| a.key.cmp(&b.key));
        let slots = (holding + 1).saturating_sub(spec.max_running);
        let gpus_to_free = spec.max_gpus.map_or(0, |m| {
            (gpus + u64::from(pre.gpus)).saturating_sub(u64::from(m))
        });
        let tau = queue.tau();
        let tenants = queue
            .tenants
            .iter()
            .map(|t| preempt::TenantLoad {
                load: tau.map_or(t.rate as f64, |tau| t.load(now_ms, tau)),
                weight: f64::from(t.weight.max(1)),
            })
            .collect();
        let req = preempt::Request {
            policy: spec.preemption,
            priority: pre.priority,
            gpus: pre.gpus,
            tenant: pre.tenant as usize,
            slots,
            gpus_to_free,
            tenants,
        };
        let victims = preempt::choose_victims(&req, &running, 100_000)?;
        let keys: Vec<JobKey> = victims.iter().map(|&v| running[v].key.clone()).collect();
        for k in &keys {
            let id = self.ids[k];
            self.evicting.insert(id);
        }
        Some(Preemption {
            queue: queue.name.clone(),
            preemptor: (*pre.key).clone(),
            priority: pre.priority,
            victims: keys,
        })
    }

    /// The status write of this admission failed: the job is pending again,
    /// at the same position (its order fields did not change), and what it
    /// took is free. A no-op unless the pool holds the job.
    pub fn rollback(&mut self, key: &JobKey) {
        let Some(&id) = self.ids.get(key) else { return };
        if self.jobs[id].state != State::Holding {
            return;
        }
        self.release(id);
        self.jobs[id].state = State::Pending;
        self.link(id);
    }

    /// For a pending job: its 1-based position in its queue and the first
    /// reason it is not admitted now. `None` for unknown or holding jobs.
    pub fn explain(&self, key: &JobKey, now_ms: i64) -> Option<WaitStatus> {
        let &id = self.ids.get(key)?;
        let j = &self.jobs[id];
        if j.state != State::Pending {
            return None;
        }
        let queue = &self.queues[j.queue as usize];
        let position = 1 + queue
            .groups
            .iter()
            .map(|g| g.tree.rank(&self.jobs, id))
            .sum::<usize>();
        Some(WaitStatus {
            position,
            reason: self.reason(id, now_ms),
        })
    }

    fn reason(&self, id: JobId, now_ms: i64) -> WaitReason {
        let j = &self.jobs[id];
        let queue = &self.queues[j.queue as usize];
        let algo = &self.algos[j.algo as usize];
        let Some(spec) = &queue.spec else {
            return WaitReason::QueueNotFound {
                queue: queue.name.clone(),
            };
        };
        if algo.spec.is_none() {
            return WaitReason::AlgorithmNotFound {
                algorithm: algo.name.clone(),
            };
        }
        if let Some(max_gpus) = spec.max_gpus
            && j.gpus > max_gpus
        {
            return WaitReason::ExceedsQueueGpus {
                queue: queue.name.clone(),
                gpus: j.gpus,
                max_gpus,
            };
        }
        if spec.paused {
            return WaitReason::QueuePaused {
                queue: queue.name.clone(),
            };
        }
        if let Some(hit) = queue.limit_hit(j.tenant, j.gpus) {
            return WaitReason::TenantLimit {
                queue: queue.name.clone(),
                tenant: queue.tenants[j.tenant as usize].name.clone(),
                hit,
            };
        }
        if queue.holding >= spec.max_running {
            if let Some(tau) = queue.tau()
                && queue.tenants.iter().filter(|t| t.is_active()).count() > 1
            {
                let (share, usage) = fair::shares(&queue.tenants, now_ms, tau)[j.tenant as usize];
                if usage > share {
                    return WaitReason::TenantShare {
                        queue: queue.name.clone(),
                        tenant: queue.tenants[j.tenant as usize].name.clone(),
                        usage_percent: usage.round() as u32,
                        share_percent: share.round() as u32,
                    };
                }
            }
            return WaitReason::SlotsFull {
                queue: queue.name.clone(),
                max_running: spec.max_running,
                holding: queue.holding,
            };
        }
        if let Some(max_running) = algo.at_capacity() {
            return WaitReason::AlgorithmCapacity {
                algorithm: algo.name.clone(),
                max_running,
                holding: algo.holding,
            };
        }
        match algo.gate(now_ms) {
            Gate::Open { until_ms } => {
                return WaitReason::BreakerOpen {
                    algorithm: algo.name.clone(),
                    until_ms,
                };
            }
            Gate::Probing => {
                return WaitReason::BreakerProbing {
                    algorithm: algo.name.clone(),
                };
            }
            Gate::Pass | Gate::Probe => {}
        }
        if let Some(max_gpus) = spec.max_gpus
            && queue.gpus_held() + u64::from(j.gpus) > u64::from(max_gpus)
        {
            let free = u64::from(max_gpus).saturating_sub(queue.gpus_held());
            return WaitReason::GpuQuota {
                queue: queue.name.clone(),
                gpus: j.gpus,
                free: free as u32,
                max_gpus,
            };
        }
        let scan = self.scan(j.queue, &self.algo_gates(now_ms), now_ms);
        match spec.ordering {
            OrderPolicy::StrictFifo => {
                if let Some(head) = scan.runnable
                    && head.c.id != id
                {
                    return WaitReason::BehindHead {
                        queue: queue.name.clone(),
                        head: (*self.jobs[head.c.id].key).clone(),
                    };
                }
            }
            OrderPolicy::BestEffortFifo => {
                let me = FCand {
                    c: Cand::of(&self.jobs, id),
                    score: queue.score(j.tenant, now_ms),
                };
                if let Some(r) = self.reserved_for(&scan, now_ms)
                    && j.gpus > 0
                    && !me.precedes(r, &self.jobs)
                {
                    return WaitReason::GpusReserved {
                        queue: queue.name.clone(),
                        head: (*self.jobs[r.c.id].key).clone(),
                    };
                }
            }
        }
        WaitReason::Admissible
    }

    /// GPUs of queue `name` held by live worker pods.
    pub fn worker_gpus(&self, name: &str) -> u64 {
        self.queue_ids
            .get(name)
            .map_or(0, |&q| self.queues[q as usize].worker_gpus)
    }

    /// Worker mode (docs/WORKERS.md): the worker pods whose GPUs count
    /// against queue `name`. Sets the GPUs its live worker pods hold to
    /// `held` (taken as given, like holders observed from the cluster), then
    /// grants up to `wanted` more pods of `gpus_per_pod` GPUs each, as many
    /// as fit within `max_gpus` beside the jobs' GPUs, counts them as held
    /// and returns how many. A queue without a spec grants none. Admission
    /// and grants both check the sum, so with the caller creating only
    /// granted pods the quota holds at every instant.
    pub fn grant_worker_pods(
        &mut self,
        name: &str,
        held: u64,
        gpus_per_pod: u32,
        wanted: u32,
    ) -> u32 {
        let q = self.queue_id(name);
        let queue = &mut self.queues[q as usize];
        queue.worker_gpus = held;
        let Some(spec) = &queue.spec else {
            return 0;
        };
        let granted = match (spec.max_gpus, gpus_per_pod) {
            (_, 0) | (None, _) => wanted,
            (Some(max), per) => {
                let free = u64::from(max).saturating_sub(queue.gpus_held());
                wanted.min(u32::try_from(free / u64::from(per)).unwrap_or(u32::MAX))
            }
        };
        queue.worker_gpus += u64::from(granted) * u64::from(gpus_per_pod);
        granted
    }

    /// The worker pods' GPUs of every queue that has some, for a rebuilt
    /// pool to start from (they are not in the jobs).
    pub fn all_worker_gpus(&self) -> Vec<(String, u64)> {
        self.queues
            .iter()
            .filter(|q| q.worker_gpus > 0)
            .map(|q| (q.name.clone(), q.worker_gpus))
            .collect()
    }

    pub fn queue_stats(&self, name: &str) -> Option<QueueStats> {
        let queue = &self.queues[*self.queue_ids.get(name)? as usize];
        let mut head = None;
        for g in &queue.groups {
            head = first(&self.jobs, head, g.head);
        }
        Some(QueueStats {
            spec: queue.spec.clone(),
            pending: queue.pending,
            holding: queue.holding,
            gpus_in_use: queue.gpus_in_use,
            head: head.map(|h| (*self.jobs[h.id].key).clone()),
        })
    }

    pub fn algorithm_stats(&self, name: &str) -> Option<AlgorithmStats> {
        let algo = &self.algos[*self.algo_ids.get(name)? as usize];
        let breaker = match &algo.breaker {
            Breaker::Closed { .. } => BreakerState::Closed,
            Breaker::Open { until_ms } => BreakerState::Open {
                until_ms: *until_ms,
            },
            Breaker::HalfOpen { probe } => BreakerState::HalfOpen {
                probe: probe.map(|p| (*self.jobs[p].key).clone()),
            },
        };
        Some(AlgorithmStats {
            spec: algo.spec.clone(),
            holding: algo.holding,
            pending: algo.pending,
            breaker,
            recent_failures: algo.breaker.recent_failures(),
        })
    }

    /// The earliest time after `now_ms` at which the passing of time alone
    /// (a breaker cool-down ending) could make a pending job admissible.
    /// Everything else that frees room is an event the caller sees anyway.
    pub fn next_wakeup(&self, now_ms: i64) -> Option<i64> {
        self.algos
            .iter()
            .filter(|a| a.pending > 0)
            .filter_map(|a| match a.gate(now_ms) {
                Gate::Open { until_ms } => Some(until_ms),
                _ => None,
            })
            .min()
    }

    pub fn job_phase(&self, key: &JobKey) -> Option<PoolState> {
        let &id = self.ids.get(key)?;
        Some(match self.jobs[id].state {
            State::Pending => PoolState::Pending,
            State::Holding => PoolState::Holding,
        })
    }

    /// Number of jobs known (pending + holding).
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Every known job with the pool's view of it, sorted by key: O(n), for
    /// diagnostics and tests.
    pub fn jobs(&self) -> Vec<(JobKey, PoolState)> {
        let mut v: Vec<_> = self
            .jobs
            .iter()
            .map(|(_, j)| {
                let p = match j.state {
                    State::Pending => PoolState::Pending,
                    State::Holding => PoolState::Holding,
                };
                ((*j.key).clone(), p)
            })
            .collect();
        v.sort();
        v
    }

    /// The pending jobs of a queue in admission order: O(n log n), for
    /// diagnostics and tests.
    pub fn pending_in_order(&self, queue: &str) -> Vec<JobKey> {
        let Some(&q) = self.queue_ids.get(queue) else {
            return Vec::new();
        };
        let mut ids: Vec<JobId> = self.queues[q as usize]
            .groups
            .iter()
            .flat_map(|g| g.tree.members(&self.jobs))
            .collect();
        ids.sort_by(|&a, &b| self.jobs[a].order(&self.jobs[b]));
        ids.into_iter()
            .map(|id| (*self.jobs[id].key).clone())
            .collect()
    }

    /// The creation time of the oldest pending job of each queue that has
    /// one, by queue name: one O(n) pass over the jobs, for the metrics
    /// refresh (the trees order by priority first, so their heads are not
    /// necessarily the oldest).
    pub fn oldest_pending_created_ms(&self) -> HashMap<String, i64> {
        let mut oldest: HashMap<u32, i64> = HashMap::new();
        for (_, j) in self.jobs.iter() {
            if j.state == State::Pending {
                oldest
                    .entry(j.queue)
                    .and_modify(|o| *o = (*o).min(j.created_ms))
                    .or_insert(j.created_ms);
            }
        }
        oldest
            .into_iter()
            .map(|(q, created)| (self.queues[q as usize].name.clone(), created))
            .collect()
    }

    /// Recomputes every counter and checks every tree (tests only).
    #[cfg(test)]
    fn check_consistency(&self) {
        let mut pending = vec![0u32; self.queues.len()];
        let mut holding = vec![0u32; self.queues.len()];
        let mut gpus = vec![0u64; self.queues.len()];
        let mut apending = vec![0u32; self.algos.len()];
        let mut aholding = vec![0u32; self.algos.len()];
        for (id, j) in self.jobs.iter() {
            assert_eq!(self.ids.get(&*j.key), Some(&id));
            match j.state {
                State::Pending => {
                    pending[j.queue as usize] += 1;
                    apending[j.algo as usize] += 1;
                    let gi = self
                        .group_index(j.queue, j.tenant, j.algo, j.gpus)
                        .expect("group");
                    let tree = &self.queues[j.queue as usize].groups[gi].tree;
                    assert!(tree.members(&self.jobs).contains(&id));
                }
                State::Holding => {
                    holding[j.queue as usize] += 1;
                    gpus[j.queue as usize] += u64::from(j.gpus);
                    aholding[j.algo as usize] += 1;
                }
            }
        }
        assert_eq!(self.ids.len(), self.jobs.iter().count());
        for (i, q) in self.queues.iter().enumerate() {
            assert_eq!(q.pending, pending[i], "pending of {}", q.name);
            assert_eq!(q.holding, holding[i], "holding of {}", q.name);
            assert_eq!(q.gpus_in_use, gpus[i], "gpus of {}", q.name);
            let mut n = 0;
            for g in &q.groups {
                assert!(!g.tree.is_empty(), "empty groups are dropped");
                assert_eq!(Some(g.head), g.tree.head().map(|h| Cand::of(&self.jobs, h)));
                g.tree.check(&self.jobs);
                for m in g.tree.members(&self.jobs) {
                    let j = &self.jobs[m];
                    assert_eq!(
                        (j.queue, j.tenant, j.algo, j.gpus, j.state),
                        (i as u32, g.tenant, g.algo, g.gpus, State::Pending)
                    );
                }
                n += g.tree.len(&self.jobs);
            }
            assert_eq!(n, q.pending);
            let mut tp = vec![0u32; q.tenants.len()];
            let mut th = vec![(0u32, 0u64, 0u64); q.tenants.len()];
            for (_, j) in self.jobs.iter().filter(|(_, j)| j.queue == i as u32) {
                match j.state {
                    State::Pending => tp[j.tenant as usize] += 1,
                    State::Holding => {
                        let h = &mut th[j.tenant as usize];
                        h.0 += 1;
                        h.1 += u64::from(j.gpus);
                        h.2 += fair::cost(j.gpus);
                    }
                }
            }
            for (k, t) in q.tenants.iter().enumerate() {
                assert_eq!(t.pending, tp[k], "pending of tenant {}", t.name);
                assert_eq!(
                    (t.holding, t.gpus, t.rate),
                    th[k],
                    "holders of tenant {}",
                    t.name
                );
            }
        }
        let live: Vec<u32> = (0..self.queues.len() as u32)
            .filter(|&q| self.queues[q as usize].spec.is_some())
            .collect();
        assert_eq!(live, self.live_queues);
        for (i, a) in self.algos.iter().enumerate() {
            assert_eq!(a.pending, apending[i], "pending of {}", a.name);
            assert_eq!(a.holding, aholding[i], "holding of {}", a.name);
            if let Breaker::HalfOpen { probe: Some(p) } = a.breaker {
                assert_eq!(self.jobs[p].state, State::Holding, "the probe holds");
                assert_eq!(self.jobs[p].algo, i as u32);
            }
        }
    }
}
