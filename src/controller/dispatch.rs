//! The dispatcher: the one admission loop. It owns the worker pool, feeds it
//! every change the watches report, asks it what to admit, and writes the
//! decisions: a new job's Queued, Rejected (QueueFull) or Failed (bad input)
//! status, and an admitted job's Admitted status. Admission is marked in the
//! pool first and written after; a failed write is rolled back. It also keeps
//! the queues' and algorithms' status and gauges current.
//!
//! A freed slot is refilled in the same turn of the loop that learns it is
//! free (a Released message from the reconciler or a job's watch event), so
//! nothing waits for a timer; the only timer is the breaker's cool-down.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{Context, FINALIZER, MANAGER, write};
use crate::admission::{
    self, AlgorithmSpec, BreakerSpec, BreakerState, JobKey, PoolState, ObservedPhase,
    Outcome, QueueSpec, WorkerPool,
};
use crate::api::{
    JobPhase, QueueOrdering, VisionAlgorithm, VisionAlgorithmStatus, VisionJob, VisionQueue,
    VisionQueueStatus,
};
use crate::clock::{now_ms, time_at};
use crate::status::{self, set_condition};
use crate::validate::validate;

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
pub enum DispatchEvent {
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
    /// An attempt of the algorithm ended (feeds its circuit breaker).
    Outcome { algorithm: String, outcome: Outcome },
    /// A status write of the dispatcher finished; on failure, the job as
    /// read back afterwards (None if it is gone).
    Written {
        key: JobKey,
        /// The queue, when the write was an admission.
        admission: Option<String>,
        result: Result<(), Option<Arc<VisionJob>>>,
    },
    /// A fresh, consistent list of the jobs, read by a new leader: the pool
    /// is rebuilt from it (never from a cache that may lag a former leader's
    /// last writes).
    Rebuild(Vec<VisionJob>),
}

pub struct Dispatcher {
    ctx: Arc<Context>,
    rx: mpsc::UnboundedReceiver<DispatchEvent>,
    pool: WorkerPool,
    synced: [bool; 4],
    leader: bool,
    rebuilt: bool,
    /// Jobs with a status write of the dispatcher in flight.
    inflight: HashSet<JobKey>,
    /// New jobs accepted as pending whose Queued status is still to be written.
    to_queue: ToQueue,

    admitted_total: HashMap<String, i64>,
    last_queue_status: HashMap<String, VisionQueueStatus>,
    last_algorithm_status: HashMap<String, VisionAlgorithmStatus>,
}

impl Dispatcher {
    pub fn new(ctx: Arc<Context>, rx: mpsc::UnboundedReceiver<DispatchEvent>) -> Self {
        Dispatcher {
            ctx,
            rx,
            pool: WorkerPool::new(),
            synced: [false; 4],
            leader: false,
            rebuilt: false,
            inflight: HashSet::new(),
            to_queue: ToQueue::default(),

            admitted_total: HashMap::new(),
            last_queue_status: HashMap::new(),
            last_algorithm_status: HashMap::new(),
        }
    }

    /// Leader, rebuilt from a fresh list, and the jobs, queues and algorithms are listed.
    fn active(&self) -> bool {
        self.leader
            && self.rebuilt
            && self.synced[Kind::Jobs as usize]
            && self.synced[Kind::Queues as usize]
            && self.synced[Kind::Algorithms as usize]
    }

    pub async fn run(mut self) {
        let mut status_tick = tokio::time::interval(Duration::from_secs(1));
        status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wakeup = self
                .pool
                .next_wakeup(now_ms())
                .map(|at| Duration::from_millis((at - now_ms()).max(0) as u64 + 1))
                .unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                event = self.rx.recv() => {
                    let Some(event) = event else { return };
                    self.handle(event);
                    // Take everything already waiting before admitting, so a
                    // burst is decided in one pass.
                    while let Ok(event) = self.rx.try_recv() {
                        self.handle(event);
                    }
                }
                _ = tokio::time::sleep(wakeup) => {}
                _ = status_tick.tick() => {
                    if self.active() {
                        self.write_pool_statuses();
                    }
                }
            }
            if self.active() {
                self.admit();
            }
        }
    }

    fn handle(&mut self, event: DispatchEvent) {
        let was_active = self.active();
        match event {
            DispatchEvent::Synced(kind) => {
                self.synced[kind as usize] = true;
                if was_active && kind != Kind::Pods {
                    // A re-list after a watch gap: deletions in the gap sent
                    // no event. Reconcile the pool with the stores, keeping
                    // what it knows better (admissions still being written).
                    self.resync();
                }
            }
            DispatchEvent::Leader => self.leader = true,
            DispatchEvent::Rebuild(jobs) => self.rebuild(&jobs),
            _ if !was_active => {}
            DispatchEvent::Changed(Kind::Jobs, (ns, name)) => {
                let r = ObjectRef::new(&name).within(ns.as_deref().unwrap_or_default());
                if let Some(job) = self.ctx.jobs.get(&r) {
                    self.on_job(&job);
                }
            }
            DispatchEvent::Deleted(Kind::Jobs, (ns, name)) => {
                let key = JobKey::new(ns.unwrap_or_default(), name);
                self.pool.remove_job(&key);
            }
            DispatchEvent::Changed(Kind::Queues, (_, name)) => {
                if let Some(q) = self.ctx.queues.get(&ObjectRef::new(&name)) {
                    self.pool.set_queue(&name, queue_spec(&q));
                }
            }
            DispatchEvent::Deleted(Kind::Queues, (_, name)) => {
                self.pool.remove_queue(&name);
                self.last_queue_status.remove(&name);
            }
            DispatchEvent::Changed(Kind::Algorithms, (_, name)) => {
                if let Some(a) = self.ctx.algorithms.get(&ObjectRef::new(&name)) {
                    self.pool.set_algorithm(&name, algorithm_spec(&a));
                }
            }
            DispatchEvent::Deleted(Kind::Algorithms, (_, name)) => {
                self.pool.remove_algorithm(&name);
                self.last_algorithm_status.remove(&name);
            }
            DispatchEvent::Changed(Kind::Pods, _) | DispatchEvent::Deleted(Kind::Pods, _) => {}
            DispatchEvent::Released(key) => self.pool.remove_job(&key),
            DispatchEvent::Outcome { algorithm, outcome } => {
                self.pool.record_outcome(&algorithm, outcome, now_ms())
            }
            DispatchEvent::Written {
                key,
                admission,
                result,
            } => {
                self.inflight.remove(&key);
                if let (Ok(()), Some(queue)) = (&result, &admission) {
                    *self.admitted_total.entry(queue.clone()).or_default() += 1;
                }
                if let Err(fresh) = result {
                    if admission.is_some() {
                        self.pool.rollback(&key);
                        self.ctx.metrics.admission_rolled_back();
                    }
                    match fresh {
                        Some(job) => self.on_job(&job),
                        None => self.pool.remove_job(&key),
                    }
                }
            }
        }
    }

    /// Makes the pool a function of the cluster: the queues and algorithms
    /// of the stores and `jobs`, a consistent list read after leadership was
    /// gained. A new leader never trusts a former pool, and admits nothing
    /// before this.
    fn rebuild(&mut self, jobs: &[VisionJob]) {
        let started = std::time::Instant::now();
        self.pool = WorkerPool::new();
        self.to_queue.clear();
        self.inflight.clear();
        for q in self.ctx.queues.state() {
            self.pool.set_queue(&q.name_any(), queue_spec(&q));
        }
        for a in self.ctx.algorithms.state() {
            self.pool.set_algorithm(&a.name_any(), algorithm_spec(&a));
        }
        // Observe holders and accepted jobs first, so that a new job's
        // acceptance sees every job accepted before it.
        let mut order: Vec<&VisionJob> = jobs.iter().collect();
        order.sort_by_key(|j| j.phase().is_none());
        for job in order {
            self.on_job(job);
        }
        self.rebuilt = true;
        info!(
            jobs = jobs.len(),
            pool = self.pool.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "worker pool rebuilt from the cluster's state"
        );
    }

    /// After a re-list: forget jobs that are gone, observe every job again.
    /// Observation never moves a job the pool holds back to waiting, so
    /// admissions whose writes are not yet echoed by the watch stay counted.
    fn resync(&mut self) {
        for q in self.ctx.queues.state() {
            self.pool.set_queue(&q.name_any(), queue_spec(&q));
        }
        for a in self.ctx.algorithms.state() {
            self.pool.set_algorithm(&a.name_any(), algorithm_spec(&a));
        }
        let jobs = self.ctx.jobs.state();
        let present: HashSet<JobKey> = jobs.iter().map(|j| job_key(j)).collect();
        for (key, _) in self.pool.jobs() {
            if !present.contains(&key) && !self.inflight.contains(&key) {
                self.pool.remove_job(&key);
            }
        }
        for job in &jobs {
            self.on_job(job);
        }
        debug!(
            jobs = jobs.len(),
            pool = self.pool.len(),
            "worker pool resynced after a re-list"
        );
    }

    fn on_job(&mut self, job: &VisionJob) {
        let key = job_key(job);
        if job.metadata.deletion_timestamp.is_some() {
            // A waiting job being deleted leaves the queue now; a holder keeps
            // its slot until the reconciler has removed its pods.
            if self.pool.job_phase(&key) == Some(PoolState::Pending) {
                self.pool.remove_job(&key);
            }
            return;
        }
        match job.phase() {
            None => self.on_new_job(job, key),
            Some(JobPhase::Queued) if job.spec.suspend => {
                if self.pool.job_phase(&key) == Some(PoolState::Pending) {
                    self.pool.remove_job(&key);
                }
            }
            Some(JobPhase::Queued) => {
                self.pool
                    .observe_job(self.pool_job(job, ObservedPhase::Queued));
            }
            Some(JobPhase::Admitted) | Some(JobPhase::Running) => {
                self.pool
                    .observe_job(self.pool_job(job, ObservedPhase::Holding));
            }
            Some(_) => self.pool.remove_job(&key),
        }
    }

    fn on_new_job(&mut self, job: &VisionJob, key: JobKey) {
        // The reconciler adds the finalizer first; writing before that would
        // only race its metadata patch.
        if !job.finalizers().iter().any(|f| f == FINALIZER)
            || job.spec.suspend
            || self.inflight.contains(&key)
        {
            return;
        }
        match self.pool.job_phase(&key) {
            // Accepted earlier; its Queued write failed or is still to come.
            Some(PoolState::Pending) => {
                self.to_queue.push(key);
                return;
            }
            Some(PoolState::Holding) => return,
            None => {}
        }
        let algorithm = self.ctx.algorithm(&job.spec.algorithm);
        match validate(job, algorithm.as_deref()) {
            Err(invalid) => {
                let now = time_at(now_ms());
                let status = status::failed(job, &now, invalid.reason, invalid.message);
                self.write(job, status, None);
            }
            Ok(gpus) => {
                let mut spec = self.pool_job(job, ObservedPhase::New);
                spec.gpus = gpus;
                if let Some(rejection) = self.pool.observe_job(spec) {
                    let now = time_at(now_ms());
                    let status =
                        status::rejected(job, &now, &rejection.queue, rejection.max_pending);
                    self.write(job, status, None);
                } else {
                    self.to_queue.push(key);
                }
            }
        }
    }

    /// Admits everything admissible and writes the decisions, then writes the
    /// Queued status of the new jobs that still wait.
    fn admit(&mut self) {
        let now_ms = now_ms();
        let now = time_at(now_ms);
        let admissions = self.pool.admit(now_ms);
        for admission in admissions {
            let r = ObjectRef::new(&admission.key.name).within(&admission.key.namespace);
            let Some(job) = self.ctx.jobs.get(&r) else {
                self.pool.remove_job(&admission.key);
                continue;
            };

            let mut status = status::admitted(&job, &now, &admission.queue);
            status.gpus = Some(admission.gpus as i32);
            debug!(job = %admission.key, queue = %admission.queue, "admitted");
            self.write(&job, status, Some(admission.queue));
        }
        // Queued writes take a write permit before they are spawned: in a
        // burst the rest wait here as bare keys, not as tasks holding a copy
        // of their job. Each returning permit brings the loop back here.
        while let Some(key) = self.to_queue.front() {
            if self.pool.job_phase(key) != Some(PoolState::Pending) || self.inflight.contains(key) {
                self.to_queue.pop();
                continue;
            }
            let Ok(permit) = self.ctx.writes.clone().try_acquire_owned() else {
                break;
            };
            let Some(key) = self.to_queue.pop() else {
                break;
            };
            let r = ObjectRef::new(&key.name).within(&key.namespace);
            let Some(job) = self.ctx.jobs.get(&r) else {
                continue;
            };
            let Some(wait) = self.pool.explain(&key, now_ms) else {
                continue;
            };
            let message = format!(
                "waiting in queue {} at position {}: {}",
                job.spec.queue, wait.position, wait.reason
            );
            let mut status = status::queued(&job, &now, wait.reason.label(), message);
            status.gpus = Some(self.pool_gpus(&job) as i32);
            self.write_with(&job, status, None, Some(permit));
        }
    }

    /// The GPUs the pool counts for a job: what its status recorded when it
    /// was accepted, else what its algorithm gives it, else its own request
    /// (an algorithm deleted under a waiting job), else one.
    fn pool_gpus(&self, job: &VisionJob) -> u32 {
        job.status
            .as_ref()
            .and_then(|s| s.gpus)
            .or_else(|| {
                self.ctx
                    .algorithm(&job.spec.algorithm)
                    .map(|a| crate::pod::job_gpus(job, &a))
            })
            .or(job.spec.gpus)
            .unwrap_or(1)
            .max(0) as u32
    }

    fn pool_job(&self, job: &VisionJob, phase: ObservedPhase) -> admission::PoolJob {
        admission::PoolJob {
            key: job_key(job),
            queue: job.spec.queue.clone(),
            algorithm: job.spec.algorithm.clone(),
            priority: job.spec.priority,
            created_ms: job
                .metadata
                .creation_timestamp
                .as_ref()
                .map(crate::clock::ms_of)
                .unwrap_or_default(),
            gpus: self.pool_gpus(job),
            phase,
        }
    }

    /// Writes a job's status in the background; the result comes back as a
    /// `Written` event.
    fn write(
        &mut self,
        job: &VisionJob,
        status: crate::api::VisionJobStatus,
        admission: Option<String>,
    ) {
        self.write_with(job, status, admission, None)
    }

    fn write_with(
        &mut self,
        job: &VisionJob,
        status: crate::api::VisionJobStatus,
        admission: Option<String>,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        let key = job_key(job);
        self.inflight.insert(key.clone());
        let ctx = self.ctx.clone();
        let job = job.clone();
        let writes = self.ctx.writes.clone();
        tokio::spawn(async move {
            let _permit = match permit {
                Some(p) => p,
                None => match writes.acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            if !ctx.is_leader() {
                return;
            }
            let phase = status.phase;
            let result = match write::job_status(&ctx.client, &job, status).await {
                Ok(written) => {
                    if admission.is_some() {
                        // Create the attempt's pod now rather than after the
                        // watch echoes the admission to the reconciler: one
                        // hop less between a freed slot and the next pod.
                        create_first_pod(&ctx, &written).await;
                    }
                    if let Some(queue) = &admission {
                        // Counted once the admission is written (a rolled-back
                        // admission is not one).
                        let waited =
                            written.metadata.creation_timestamp.as_ref().map(|c| {
                                (now_ms() - crate::clock::ms_of(c)).max(0) as f64 / 1000.0
                            });
                        ctx.metrics.admitted(queue, waited);
                    }
                    super::job::after_write(&ctx, &written, phase);
                    Ok(())
                }
                Err(e) => {
                    debug!(job = %key, error = %e, "dispatcher status write failed");
                    ctx.metrics.reconcile_error(e.label());
                    let api: Api<VisionJob> = Api::namespaced(ctx.client.clone(), &key.namespace);
                    match api.get_opt(&key.name).await {
                        Ok(fresh) => Err(fresh.map(Arc::new)),
                        // Cannot tell: keep what the pool believes and let the
                        // next event of this job settle it.
                        Err(_) => Err(Some(Arc::new(job))),
                    }
                }
            };
            let _ = ctx.dispatch.send(DispatchEvent::Written {
                key,
                admission,
                result,
            });
        });
    }

    /// Writes the queues' and algorithms' status (at most once a second,
    /// only what changed) and refreshes the gauges.
    fn write_pool_statuses(&mut self) {
        let now_ms = now_ms();
        let now = time_at(now_ms);
        for q in self.ctx.queues.state() {
            let name = q.name_any();
            let Some(stats) = self.pool.queue_stats(&name) else {
                continue;
            };
            self.ctx.metrics.queue_gauges(
                &name,
                stats.pending,
                stats.holding,
                stats.gpus_in_use,
                q.spec.max_running,
            );
            let head_reason = stats
                .head
                .as_ref()
                .and_then(|h| self.pool.explain(h, now_ms))
                .map(|w| w.reason.to_string());
            let old = q.status.clone().unwrap_or_default();
            let mut status = VisionQueueStatus {
                running: stats.holding as i32,
                pending: stats.pending as i32,
                gpus_in_use: stats.gpus_in_use as i32,
                admitted_total: old.admitted_total.max(0)
                    + self.admitted_total.remove(&name).unwrap_or(0),
                head: stats.head.as_ref().map(|k| k.to_string()),
                head_reason,
                conditions: old.conditions.clone(),
                observed_generation: q.metadata.generation,
            };
            let full = q
                .spec
                .max_pending
                .is_some_and(|m| stats.pending as i32 >= m);
            let (active, reason, message) = if q.spec.paused {
                (
                    false,
                    "Paused",
                    "spec.paused is true: no job is admitted".to_string(),
                )
            } else {
                (
                    true,
                    "Admitting",
                    format!("{} of {} slots in use", stats.holding, q.spec.max_running),
                )
            };
            set_condition(
                &mut status.conditions,
                "Active",
                active,
                reason,
                &message,
                q.metadata.generation,
                &now,
            );
            set_condition(
                &mut status.conditions,
                "Full",
                full,
                if full {
                    "MaxPendingReached"
                } else {
                    "AcceptingJobs"
                },
                &format!(
                    "{} of {} waiting",
                    stats.pending,
                    q.spec
                        .max_pending
                        .map(|m| m.to_string())
                        .unwrap_or_else(|| "unlimited".into())
                ),
                q.metadata.generation,
                &now,
            );
            if self.last_queue_status.get(&name) == Some(&status)
                || (q.status.as_ref() == Some(&status))
            {
                continue;
            }
            self.last_queue_status.insert(name.clone(), status.clone());
            let api: Api<VisionQueue> = Api::all(self.ctx.client.clone());
            spawn_status_patch(
                api,
                name,
                "VisionQueue",
                serde_json::to_value(status).unwrap_or_default(),
            );
        }
        for a in self.ctx.algorithms.state() {
            let name = a.name_any();
            let Some(stats) = self.pool.algorithm_stats(&name) else {
                continue;
            };
            let (breaker, degraded, message) = match &stats.breaker {
                BreakerState::Closed => {
                    ("Closed", false, "the circuit breaker is closed".to_string())
                }
                BreakerState::Open { until_ms } => (
                    "Open",
                    true,
                    format!(
                        "the circuit breaker is open after repeated failures; a probe job is admitted after {}",
                        time_at(*until_ms).0
                    ),
                ),
                BreakerState::HalfOpen { .. } => (
                    "HalfOpen",
                    true,
                    "the circuit breaker lets one probe job through".to_string(),
                ),
            };
            let old = a.status.clone().unwrap_or_default();
            let mut status = VisionAlgorithmStatus {
                running: stats.holding as i32,
                recent_failures: stats.recent_failures as i32,
                breaker: Some(breaker.into()),
                conditions: old.conditions.clone(),
                observed_generation: a.metadata.generation,
            };
            set_condition(
                &mut status.conditions,
                "Degraded",
                degraded,
                breaker,
                &message,
                a.metadata.generation,
                &now,
            );
            let ready = a.spec.template.spec.as_ref().is_some_and(|p| {
                p.containers
                    .iter()
                    .any(|c| c.name == crate::api::ALGORITHM_CONTAINER)
            });
            set_condition(
                &mut status.conditions,
                "Ready",
                ready,
                if ready {
                    "TemplateValid"
                } else {
                    "NoAlgorithmContainer"
                },
                if ready {
                    "the pod template has a container named algorithm"
                } else {
                    "the pod template needs a container named algorithm"
                },
                a.metadata.generation,
                &now,
            );
            if self.last_algorithm_status.get(&name) == Some(&status)
                || a.status.as_ref() == Some(&status)
            {
                continue;
            }
            self.last_algorithm_status
                .insert(name.clone(), status.clone());
            let api: Api<VisionAlgorithm> = Api::all(self.ctx.client.clone());
            spawn_status_patch(
                api,
                name,
                "VisionAlgorithm",
                serde_json::to_value(status).unwrap_or_default(),
            );
        }
    }
}

fn spawn_status_patch<K>(api: Api<K>, name: String, kind: &'static str, status: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    tokio::spawn(async move {
        let body = json!({
            "apiVersion": "vision.zjlab.io/v1alpha1",
            "kind": kind,
            "metadata": {"name": name},
            "status": status,
        });
        if let Err(e) = api
            .patch_status(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
        {
            warn!(%kind, %name, error = %e, "status write failed; retried at the next change");
        }
    });
}

/// Creates the pod of a just-admitted job. On failure the reconciler, which
/// also sees the admission, creates it.
async fn create_first_pod(ctx: &Context, job: &VisionJob) {
    let Some(algorithm) = ctx.algorithm(&job.spec.algorithm) else {
        return;
    };
    let attempt = job.status.as_ref().and_then(|s| s.attempts).unwrap_or(1);
    let Ok(pod) = crate::pod::build_pod(job, &algorithm, attempt) else {
        return;
    };
    let (namespace, name) = (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.name_any(),
    );
    if ctx.pod(&namespace, &name).is_some() || !ctx.start_creating(&namespace, &name) {
        return;
    }
    if let Err(e) = super::job::create_pod(ctx, &pod).await {
        debug!(pod = %name, error = %e, "creating the pod after admission failed; the reconciler retries");
        ctx.creation_failed(&namespace, &name);
    }
}

/// New jobs whose Queued status is still to be written, in arrival order,
/// each at most once.
#[derive(Default)]
struct ToQueue {
    order: std::collections::VecDeque<JobKey>,
    members: HashSet<JobKey>,
}

impl ToQueue {
    fn push(&mut self, key: JobKey) {
        if self.members.insert(key.clone()) {
            self.order.push_back(key);
        }
    }

    fn front(&self) -> Option<&JobKey> {
        self.order.front()
    }

    fn pop(&mut self) -> Option<JobKey> {
        let key = self.order.pop_front()?;
        self.members.remove(&key);
        Some(key)
    }

    fn clear(&mut self) {
        self.order.clear();
        self.members.clear();
    }
}

pub fn job_key(job: &VisionJob) -> JobKey {
    JobKey::new(job.namespace().unwrap_or_default(), job.name_any())
}

pub fn queue_spec(q: &VisionQueue) -> QueueSpec {
    QueueSpec {
        max_running: q.spec.max_running.max(0) as u32,
        max_gpus: q.spec.max_gpus.map(|g| g.max(0) as u32),
        max_pending: q.spec.max_pending.map(|p| p.max(0) as u32),
        ordering: match q.spec.ordering {
            QueueOrdering::BestEffortFIFO => admission::OrderPolicy::BestEffortFifo,
            QueueOrdering::StrictFIFO => admission::OrderPolicy::StrictFifo,
        },
        paused: q.spec.paused,
    }
}

pub fn algorithm_spec(a: &VisionAlgorithm) -> AlgorithmSpec {
    AlgorithmSpec {
        max_running: a.spec.max_running.map(|m| m.max(0) as u32),
        breaker: a.spec.circuit_breaker.as_ref().map(|b| BreakerSpec {
            failure_threshold: b.failure_threshold.max(0) as u32,
            window_ms: b.window_seconds * 1000,
            cooldown_ms: b.cooldown_seconds * 1000,
        }),
    }
}
