//! Property tests: random event sequences against a brute-force reference
//! model, with invariants checked after every step.
//!
//! The model keeps plain maps and decides by scanning every job (O(n^2)),
//! written from the rules, not from the pool's index. After every event both
//! are asked to admit and must agree exactly; the pool must also pass its own
//! consistency check, respect every limit, admit no job twice, admit in
//! order, leave nothing admissible (work-conserving), reject only at
//! maxPending, and equal a pool rebuilt from the resulting set of jobs.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

use super::*;

const QUEUES: [&str; 3] = ["q0", "q1", "q2"];
const ALGOS: [&str; 3] = ["a0", "a1", "a2"];
const GUARD_MS: i64 = 15;

#[derive(Debug, Clone)]
struct MJob {
    queue: String,
    algo: String,
    priority: i32,
    created_ms: i64,
    gpus: u32,
    holding: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum MBreaker {
    Closed(Vec<i64>),
    Open(i64),
    Half(Option<JobKey>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum MGate {
    Pass,
    Probe,
    Blocked,
}

#[derive(Debug, Clone, Default)]
struct Model {
    queues: BTreeMap<String, QueueSpec>,
    algos: BTreeMap<String, AlgorithmSpec>,
    breakers: BTreeMap<String, MBreaker>,
    jobs: BTreeMap<JobKey, MJob>,
}

fn order_key(k: &JobKey, j: &MJob) -> (Reverse<i32>, i64, JobKey) {
    (Reverse(j.priority), j.created_ms, k.clone())
}

impl Model {
    fn breaker_spec(&self, algo: &str) -> Option<BreakerSpec> {
        self.algos
            .get(algo)?
            .breaker
            .clone()
            .filter(|b| b.failure_threshold > 0)
    }

    fn gate(&self, algo: &str, now: i64) -> MGate {
        if self.breaker_spec(algo).is_none() {
            return MGate::Pass;
        }
        match self.breakers.get(algo) {
            None | Some(MBreaker::Closed(_)) => MGate::Pass,
            Some(MBreaker::Open(until)) if now < *until => MGate::Blocked,
            Some(MBreaker::Open(_)) | Some(MBreaker::Half(None)) => MGate::Probe,
            Some(MBreaker::Half(Some(_))) => MGate::Blocked,
        }
    }

    fn set_algo(&mut self, name: &str, spec: AlgorithmSpec) {
        self.algos.insert(name.into(), spec);
        if self.breaker_spec(name).is_none() {
            self.breakers.remove(name);
        }
    }

    fn remove_algo(&mut self, name: &str) {
        self.algos.remove(name);
        self.breakers.remove(name);
    }

    fn release_probe(&mut self, algo: &str, key: &JobKey) {
        if self.breakers.get(algo) == Some(&MBreaker::Half(Some(key.clone()))) {
            self.breakers.insert(algo.into(), MBreaker::Half(None));
        }
    }

    fn pending_in(&self, queue: &str) -> usize {
        self.jobs
            .values()
            .filter(|j| !j.holding && j.queue == queue)
            .count()
    }

    fn observe(&mut self, s: &PoolJob) -> Option<Rejection> {
        if let Some(old) = self.jobs.get(&s.key).cloned() {
            let holding = old.holding || s.phase == ObservedPhase::Holding;
            if old.holding && old.algo != s.algorithm {
                self.release_probe(&old.algo, &s.key);
            }
            self.jobs.insert(
                s.key.clone(),
                MJob {
                    queue: s.queue.clone(),
                    algo: s.algorithm.clone(),
                    priority: s.priority,
                    created_ms: s.created_ms,
                    gpus: s.gpus,
                    holding,
                },
            );
            return None;
        }
        if s.phase == ObservedPhase::New
            && let Some(max) = self.queues.get(&s.queue).and_then(|q| q.max_pending)
            && self.pending_in(&s.queue) >= max as usize
        {
            return Some(Rejection {
                key: s.key.clone(),
                queue: s.queue.clone(),
                max_pending: max,
            });
        }
        self.jobs.insert(
            s.key.clone(),
            MJob {
                queue: s.queue.clone(),
                algo: s.algorithm.clone(),
                priority: s.priority,
                created_ms: s.created_ms,
                gpus: s.gpus,
                holding: s.phase == ObservedPhase::Holding,
            },
        );
        None
    }

    fn remove(&mut self, key: &JobKey) {
        if let Some(j) = self.jobs.remove(key)
            && j.holding
        {
            self.release_probe(&j.algo, key);
        }
    }

    fn rollback(&mut self, key: &JobKey) {
        if let Some(j) = self.jobs.get(key).cloned()
            && j.holding
        {
            self.release_probe(&j.algo, key);
            self.jobs.get_mut(key).expect("known").holding = false;
        }
    }

    fn outcome(&mut self, algo: &str, o: Outcome, now: i64) {
        let Some(spec) = self.breaker_spec(algo) else {
            return;
        };
        let b = self
            .breakers
            .entry(algo.into())
            .or_insert(MBreaker::Closed(Vec::new()));
        match b {
            MBreaker::Closed(fails) => {
                if o == Outcome::Failed {
                    fails.push(now);
                    fails.retain(|&t| t > now - spec.window_ms);
                    if fails.len() >= spec.failure_threshold as usize {
                        *b = MBreaker::Open(now + spec.cooldown_ms);
                    }
                }
            }
            MBreaker::Open(until) if now < *until => {}
            _ => {
                *b = match o {
                    Outcome::Succeeded => MBreaker::Closed(Vec::new()),
                    Outcome::Failed => MBreaker::Open(now + spec.cooldown_ms),
                }
            }
        }
    }

    fn holders_of_queue(&self, q: &str) -> (u32, u64) {
        let hs = self.jobs.values().filter(|j| j.holding && j.queue == q);
        hs.fold((0, 0), |(n, g), j| (n + 1, g + u64::from(j.gpus)))
    }

    fn holders_of_algo(&self, a: &str) -> u32 {
        self.jobs
            .values()
            .filter(|j| j.holding && j.algo == a)
            .count() as u32
    }

    /// Fits every limit except the ordering rules (None: cannot run here at all).
    fn fits(&self, j: &MJob, now: i64) -> Option<bool> {
        let q = self.queues.get(&j.queue)?;
        let a = self.algos.get(&j.algo)?;
        if q.max_gpus.is_some_and(|m| j.gpus > m) {
            return None;
        }
        let (holding, gpus) = self.holders_of_queue(&j.queue);
        Some(
            !q.paused
                && holding < q.max_running
                && a.max_running
                    .is_none_or(|m| self.holders_of_algo(&j.algo) < m)
                && self.gate(&j.algo, now) != MGate::Blocked
                && q.max_gpus
                    .is_none_or(|m| gpus + u64::from(j.gpus) <= u64::from(m)),
        )
    }

    /// Blocked only by the GPU quota.
    fn gpu_blocked(&self, j: &MJob, now: i64) -> bool {
        let (Some(q), Some(a)) = (self.queues.get(&j.queue), self.algos.get(&j.algo)) else {
            return false;
        };
        let (_, gpus) = self.holders_of_queue(&j.queue);
        q.max_gpus.is_some_and(|m| j.gpus <= m)
            && a.max_running
                .is_none_or(|m| self.holders_of_algo(&j.algo) < m)
            && self.gate(&j.algo, now) != MGate::Blocked
            && q.max_gpus
                .is_some_and(|m| gpus + u64::from(j.gpus) > u64::from(m))
    }

    fn pending_sorted(&self, queue: &str) -> Vec<(&JobKey, &MJob)> {
        let mut v: Vec<_> = self
            .jobs
            .iter()
            .filter(|(_, j)| !j.holding && j.queue == queue)
            .collect();
        v.sort_by_key(|(k, j)| order_key(k, j));
        v
    }

    fn admissible(&self, k: &JobKey, j: &MJob, now: i64) -> bool {
        if j.holding || self.fits(j, now) != Some(true) {
            return false;
        }
        let q = &self.queues[&j.queue];
        let pending = self.pending_sorted(&j.queue);
        match q.ordering {
            OrderPolicy::StrictFifo => {
                let head = pending
                    .iter()
                    .find(|(_, o)| self.fits(o, now).is_some())
                    .map(|(hk, _)| *hk);
                head == Some(k)
            }
            OrderPolicy::BestEffortFifo => {
                let r = pending.iter().find(|(_, o)| self.gpu_blocked(o, now));
                match r {
                    Some((rk, rj)) if now - rj.created_ms >= GUARD_MS => {
                        j.gpus == 0 || order_key(k, j) < order_key(rk, rj)
                    }
                    _ => true,
                }
            }
        }
    }

    fn admit(&mut self, now: i64) -> Vec<JobKey> {
        let mut out = Vec::new();
        loop {
            let best = self
                .jobs
                .iter()
                .filter(|(k, j)| self.admissible(k, j, now))
                .min_by_key(|(k, j)| order_key(k, j))
                .map(|(k, _)| k.clone());
            let Some(k) = best else { break };
            let algo = {
                let j = self.jobs.get_mut(&k).expect("known");
                j.holding = true;
                j.algo.clone()
            };
            if self.gate(&algo, now) == MGate::Probe {
                self.breakers.insert(algo, MBreaker::Half(Some(k.clone())));
            }
            out.push(k);
        }
        out
    }

    fn breakers_all_closed(&self, now: i64) -> bool {
        self.algos.keys().all(|a| self.gate(a, now) == MGate::Pass)
    }
}

#[derive(Debug, Clone)]
enum Ev {
    SetQueue(usize, QueueSpec),
    RemoveQueue(usize),
    SetAlgo(usize, AlgorithmSpec),
    RemoveAlgo(usize),
    Observe(PoolJob),
    Remove(usize),
    /// Finish the n-th holder (modulo their number).
    Finish(usize, Outcome),
    Outcome(usize, Outcome),
    Rollback(usize),
    Advance(i64),
}

fn job_key(i: usize) -> JobKey {
    JobKey::new(format!("n{}", i % 2), format!("j{i}"))
}

fn queue_spec() -> impl Strategy<Value = QueueSpec> {
    (
        0u32..5,
        prop::option::weighted(0.7, 0u32..7),
        prop::option::weighted(0.4, 0u32..6),
        prop::bool::weighted(0.5),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(max_running, max_gpus, max_pending, strict, paused)| QueueSpec {
                max_running,
                max_gpus,
                max_pending,
                ordering: if strict {
                    OrderPolicy::StrictFifo
                } else {
                    OrderPolicy::BestEffortFifo
                },
                paused,
                tenancy: None,
                preemption: Default::default(),
            },
        )
}

fn algo_spec() -> impl Strategy<Value = AlgorithmSpec> {
    (
        prop::option::weighted(0.5, 0u32..4),
        prop::option::weighted(0.5, (0u32..3, 1i64..20, 1i64..20)),
    )
        .prop_map(|(max_running, b)| AlgorithmSpec {
            max_running,
            breaker: b.map(|(failure_threshold, window_ms, cooldown_ms)| BreakerSpec {
                failure_threshold,
                window_ms,
                cooldown_ms,
            }),
        })
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![Just(Outcome::Succeeded), Just(Outcome::Failed)]
}

fn event(jobs: usize) -> impl Strategy<Value = Ev> {
    let observe = (
        0..jobs,
        0..QUEUES.len(),
        0..ALGOS.len(),
        0i32..3,
        0i64..20,
        0u32..5,
        prop_oneof![
            8 => Just(ObservedPhase::New),
            2 => Just(ObservedPhase::Queued),
            1 => Just(ObservedPhase::Holding)
        ],
    )
        .prop_map(|(i, q, a, priority, created_ms, gpus, phase)| {
            Ev::Observe(PoolJob {
                key: job_key(i),
                queue: QUEUES[q].into(),
                algorithm: ALGOS[a].into(),
                priority,
                created_ms,
                gpus,
                phase,
                tenant: String::new(),
            })
        });
    prop_oneof![
        2 => (0..QUEUES.len(), queue_spec()).prop_map(|(i, s)| Ev::SetQueue(i, s)),
        1 => (0..QUEUES.len()).prop_map(Ev::RemoveQueue),
        2 => (0..ALGOS.len(), algo_spec()).prop_map(|(i, s)| Ev::SetAlgo(i, s)),
        1 => (0..ALGOS.len()).prop_map(Ev::RemoveAlgo),
        10 => observe,
        2 => (0..jobs).prop_map(Ev::Remove),
        5 => (0usize..8, outcome()).prop_map(|(i, o)| Ev::Finish(i, o)),
        2 => (0..ALGOS.len(), outcome()).prop_map(|(i, o)| Ev::Outcome(i, o)),
        1 => (0usize..4).prop_map(Ev::Rollback),
        3 => (0i64..8).prop_map(Ev::Advance),
    ]
}

/// A pool rebuilt from the model's jobs (as the cluster shows them after a
/// restart), with specs and jobs fed in reverse order.
fn rebuild(m: &Model) -> WorkerPool {
    let mut p = WorkerPool::with_starvation_guard_ms(GUARD_MS);
    for (k, j) in m.jobs.iter().rev() {
        let r = p.observe_job(PoolJob {
            key: k.clone(),
            queue: j.queue.clone(),
            algorithm: j.algo.clone(),
            priority: j.priority,
            created_ms: j.created_ms,
            gpus: j.gpus,
            phase: if j.holding {
                ObservedPhase::Holding
            } else {
                ObservedPhase::Queued
            },
            tenant: String::new(),
        });
        assert_eq!(r, None, "rebuild never rejects");
    }
    for (name, s) in m.queues.iter().rev() {
        p.set_queue(name, s.clone());
    }
    for (name, s) in m.algos.iter().rev() {
        p.set_algorithm(name, s.clone());
    }
    p
}

fn same_state(a: &WorkerPool, b: &WorkerPool) {
    assert_eq!(a.jobs(), b.jobs(), "same jobs in the same phases");
    for q in QUEUES {
        let (sa, sb) = (a.queue_stats(q), b.queue_stats(q));
        let strip =
            |s: Option<QueueStats>| s.filter(|s| s.pending + s.holding > 0 || s.spec.is_some());
        assert_eq!(strip(sa), strip(sb), "queue {q}");
        assert_eq!(a.pending_in_order(q), b.pending_in_order(q), "order of {q}");
    }
    for al in ALGOS {
        let f = |p: &WorkerPool| {
            p.algorithm_stats(al)
                .map(|s| (s.holding, s.pending))
                .filter(|&(h, p)| h + p > 0)
        };
        assert_eq!(f(a), f(b), "algorithm {al}");
    }
}

fn run(events: Vec<Ev>) {
    let mut p = WorkerPool::with_starvation_guard_ms(GUARD_MS);
    let mut m = Model::default();
    let mut now = 0i64;
    let mut last_admitted: Vec<JobKey> = Vec::new();
    for ev in events {
        match ev {
            Ev::SetQueue(i, s) => {
                p.set_queue(QUEUES[i], s.clone());
                m.queues.insert(QUEUES[i].into(), s);
            }
            Ev::RemoveQueue(i) => {
                p.remove_queue(QUEUES[i]);
                m.queues.remove(QUEUES[i]);
            }
            Ev::SetAlgo(i, s) => {
                p.set_algorithm(ALGOS[i], s.clone());
                m.set_algo(ALGOS[i], s);
            }
            Ev::RemoveAlgo(i) => {
                p.remove_algorithm(ALGOS[i]);
                m.remove_algo(ALGOS[i]);
            }
            Ev::Observe(s) => {
                let pending_before = m.pending_in(&s.queue);
                let known = m.jobs.contains_key(&s.key);
                let got = p.observe_job(s.clone());
                let want = m.observe(&s);
                assert_eq!(got, want, "rejection of {}", s.key);
                if let Some(r) = got {
                    // Rejections only for new jobs, and only at maxPending.
                    assert!(!known && s.phase == ObservedPhase::New);
                    assert!(pending_before >= r.max_pending as usize);
                    assert_eq!(p.job_phase(&s.key), None);
                }
            }
            Ev::Remove(i) => {
                p.remove_job(&job_key(i));
                m.remove(&job_key(i));
            }
            Ev::Finish(i, o) => {
                let holders: Vec<_> = m.jobs.iter().filter(|(_, j)| j.holding).collect();
                if !holders.is_empty() {
                    let (k, j) = holders[i % holders.len()];
                    let (k, algo) = (k.clone(), j.algo.clone());
                    p.record_outcome(&algo, o, now);
                    m.outcome(&algo, o, now);
                    p.remove_job(&k);
                    m.remove(&k);
                }
            }
            Ev::Outcome(i, o) => {
                p.record_outcome(ALGOS[i], o, now);
                m.outcome(ALGOS[i], o, now);
            }
            Ev::Rollback(i) => {
                if let Some(k) = last_admitted.get(i).cloned() {
                    p.rollback(&k);
                    m.rollback(&k);
                }
            }
            Ev::Advance(dt) => now += dt,
        }
        p.check_consistency();

        // Rebuild from the state before admitting: same state, and (breaker
        // history aside, which is not in the jobs) the same decisions.
        let mut rebuilt = rebuild(&m);
        same_state(&p, &rebuilt);
        let comparable = m.breakers_all_closed(now);

        let holding_before: BTreeSet<JobKey> = p
            .jobs()
            .into_iter()
            .filter(|(_, ph)| *ph == PoolState::Holding)
            .map(|(k, _)| k)
            .collect();
        let admissions = p.admit(now);
        p.check_consistency();
        let keys: Vec<JobKey> = admissions.iter().map(|a| a.key.clone()).collect();
        assert_eq!(
            keys,
            m.admit(now),
            "pool and reference model admit the same"
        );
        if comparable {
            let again: Vec<JobKey> = rebuilt.admit(now).into_iter().map(|a| a.key).collect();
            assert_eq!(keys, again, "rebuilt pool admits the same");
            same_state(&p, &rebuilt);
        }

        // No job admitted twice; admissions in ascending global order.
        let distinct: BTreeSet<&JobKey> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len());
        for k in &keys {
            assert!(!holding_before.contains(k), "{k} admitted while holding");
            assert_eq!(p.job_phase(k), Some(PoolState::Holding));
        }
        for w in keys.windows(2) {
            assert!(order_key(&w[0], &m.jobs[&w[0]]) < order_key(&w[1], &m.jobs[&w[1]]));
        }
        // Limits hold wherever something was admitted (holders observed from
        // the cluster may exceed a lowered limit: those are never evicted).
        for a in &admissions {
            let qs = p.queue_stats(&a.queue).expect("queue");
            let spec = qs.spec.expect("admitted into an existing queue");
            assert!(!spec.paused);
            assert!(qs.holding <= spec.max_running);
            if let Some(mg) = spec.max_gpus {
                assert!(qs.gpus_in_use <= u64::from(mg));
            }
            let al = p.algorithm_stats(&a.algorithm).expect("algorithm");
            let aspec = al.spec.expect("admitted for an existing algorithm");
            if let Some(mr) = aspec.max_running {
                assert!(al.holding <= mr);
            }
        }
        // Work-conserving, and explain agrees: nothing left is admissible,
        // positions are ranks in the model's order.
        for q in QUEUES {
            for (pos, (k, j)) in m.pending_sorted(q).into_iter().enumerate() {
                assert!(!m.admissible(k, j, now));
                let w = p.explain(k, now).expect("pending");
                assert_eq!(w.position, pos + 1, "position of {k}");
                assert_ne!(w.reason, WaitReason::Admissible, "{k} left waiting");
                if w.reason.is_permanent() {
                    assert_eq!(m.fits(j, now), None);
                }
            }
        }
        last_admitted = keys;
    }
}

proptest! {
    // 256 cases each by default (PROPTEST_CASES overrides); failures found
    // are kept next to this file and replayed first.
    #![proptest_config(ProptestConfig {
        max_shrink_iters: 2000,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_histories_agree_with_the_reference_model(events in prop::collection::vec(event(12), 1..60)) {
        run(events);
    }

    /// Heavier traffic on fewer jobs: more collisions, re-observations and
    /// phase changes of the same keys.
    #[test]
    fn crowded_histories_agree_with_the_reference_model(events in prop::collection::vec(event(5), 1..40)) {
        run(events);
    }
}
