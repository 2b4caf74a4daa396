//! Unit tests: one per reason and edge case, with exact expected outputs.

use super::*;

const NS: &str = "team-a";

fn key(name: &str) -> JobKey {
    JobKey::new(NS, name)
}

/// A new job of `algo` in `queue`.
fn mk_job(
    name: &str,
    queue: &str,
    algo: &str,
    priority: i32,
    created_ms: i64,
    gpus: u32,
) -> PoolJob {
    PoolJob {
        key: key(name),
        queue: queue.into(),
        algorithm: algo.into(),
        priority,
        created_ms,
        gpus,
        phase: ObservedPhase::New,
        tenant: String::new(),
    }
}

fn with_phase(mut j: PoolJob, phase: ObservedPhase) -> PoolJob {
    j.phase = phase;
    j
}

fn qspec(max_running: u32, max_gpus: Option<u32>) -> QueueSpec {
    QueueSpec {
        max_running,
        max_gpus,
        max_pending: None,
        ordering: OrderPolicy::BestEffortFifo,
        paused: false,
        tenancy: None,
        preemption: Default::default(),
    }
}

fn strict(mut q: QueueSpec) -> QueueSpec {
    q.ordering = OrderPolicy::StrictFifo;
    q
}

fn aspec(max_running: Option<u32>) -> AlgorithmSpec {
    AlgorithmSpec {
        max_running,
        breaker: None,
    }
}

/// A pool with queue `q` (`max_running`, `max_gpus`) and unlimited algorithm `a`.
fn pool(max_running: u32, max_gpus: Option<u32>) -> WorkerPool {
    let mut p = WorkerPool::new();
    p.set_queue("q", qspec(max_running, max_gpus));
    p.set_algorithm("a", aspec(None));
    p
}

fn add(p: &mut WorkerPool, jobs: &[PoolJob]) {
    for j in jobs {
        assert_eq!(p.observe_job(j.clone()), None, "{} accepted", j.key);
    }
    p.check_consistency();
}

fn admit(p: &mut WorkerPool, now: i64) -> Vec<String> {
    let out = p.admit(now);
    p.check_consistency();
    out.into_iter().map(|a| a.key.name).collect()
}

fn why(p: &WorkerPool, name: &str, now: i64) -> (usize, WaitReason) {
    let s = p.explain(&key(name), now).expect("pending job");
    (s.position, s.reason)
}

#[test]
fn admits_by_priority_then_creation_then_name() {
    let mut p = pool(10, None);
    add(
        &mut p,
        &[
            mk_job("late", "q", "a", 0, 30, 1),
            mk_job("b-early", "q", "a", 0, 10, 1),
            mk_job("a-early", "q", "a", 0, 10, 1),
            mk_job("urgent", "q", "a", 5, 40, 1),
        ],
    );
    assert_eq!(
        p.pending_in_order("q"),
        vec![key("urgent"), key("a-early"), key("b-early"), key("late")]
    );
    assert_eq!(why(&p, "late", 0), (4, WaitReason::Admissible));
    assert_eq!(admit(&mut p, 0), ["urgent", "a-early", "b-early", "late"]);
    assert_eq!(admit(&mut p, 0), Vec::<String>::new());
}

#[test]
fn admission_reports_queue_algorithm_and_gpus() {
    let mut p = pool(1, None);
    add(&mut p, &[mk_job("j", "q", "a", 0, 0, 2)]);
    assert_eq!(
        p.admit(0),
        vec![Admission {
            key: key("j"),
            queue: "q".into(),
            algorithm: "a".into(),
            gpus: 2
        }]
    );
    assert_eq!(p.job_phase(&key("j")), Some(PoolState::Holding));
    assert_eq!(p.explain(&key("j"), 0), None, "holders have no wait status");
    assert_eq!(p.explain(&key("nope"), 0), None);
}

#[test]
fn zero_slots_admit_nothing() {
    let mut p = pool(0, None);
    add(&mut p, &[mk_job("j", "q", "a", 0, 0, 0)]);
    assert_eq!(admit(&mut p, 0), Vec::<String>::new());
    let (pos, r) = why(&p, "j", 0);
    assert_eq!(pos, 1);
    assert_eq!(r.label(), "SlotsFull");
    assert_eq!(r.to_string(), "queue q has no slots (maxRunning is 0)");
}

#[test]
fn slots_full_with_position() {
    let mut p = pool(2, None);
    add(
        &mut p,
        &[
            mk_job("j1", "q", "a", 0, 1, 1),
            mk_job("j2", "q", "a", 0, 2, 1),
            mk_job("j3", "q", "a", 0, 3, 1),
            mk_job("j4", "q", "a", 0, 4, 1),
        ],
    );
    assert_eq!(admit(&mut p, 0), ["j1", "j2"]);
    let (pos, r) = why(&p, "j4", 0);
    assert_eq!(pos, 2);
    assert_eq!(
        r,
        WaitReason::SlotsFull {
            queue: "q".into(),
            max_running: 2,
            holding: 2
        }
    );
    assert_eq!(r.to_string(), "all 2 slots of queue q are in use (2 held)");
    // A freed slot is refilled by the next admit, by the head.
    p.remove_job(&key("j1"));
    assert_eq!(admit(&mut p, 0), ["j3"]);
}

#[test]
fn gpu_quota_and_best_effort_backfill() {
    let mut p = pool(10, Some(4));
    add(
        &mut p,
        &[
            mk_job("small1", "q", "a", 0, 1, 3),
            mk_job("big", "q", "a", 0, 2, 4),
            mk_job("small2", "q", "a", 0, 3, 1),
        ],
    );
    // big does not fit next to small1; BestEffortFIFO lets small2 pass it.
    assert_eq!(admit(&mut p, 10), ["small1", "small2"]);
    let (pos, r) = why(&p, "big", 10);
    assert_eq!(pos, 1);
    assert_eq!(
        r,
        WaitReason::GpuQuota {
            queue: "q".into(),
            gpus: 4,
            free: 0,
            max_gpus: 4
        }
    );
    assert_eq!(
        r.to_string(),
        "needs 4 GPUs, 0 of the 4 of queue q are free"
    );
    p.remove_job(&key("small1"));
    p.remove_job(&key("small2"));
    assert_eq!(admit(&mut p, 10), ["big"]);
}

#[test]
fn strict_fifo_does_not_pass_the_head() {
    let mut p = WorkerPool::new();
    p.set_queue("q", strict(qspec(10, Some(4))));
    p.set_algorithm("a", aspec(None));
    add(
        &mut p,
        &[
            mk_job("small1", "q", "a", 0, 1, 3),
            mk_job("big", "q", "a", 0, 2, 4),
            mk_job("small2", "q", "a", 0, 3, 1),
        ],
    );
    assert_eq!(admit(&mut p, 0), ["small1"]);
    assert_eq!(why(&p, "big", 0).1.label(), "GpuQuota");
    let (pos, r) = why(&p, "small2", 0);
    assert_eq!(pos, 2);
    assert_eq!(
        r,
        WaitReason::BehindHead {
            queue: "q".into(),
            head: key("big")
        }
    );
    p.remove_job(&key("small1"));
    assert_eq!(admit(&mut p, 0), ["big"]);
}

#[test]
fn larger_than_the_queue_quota_is_permanent_and_blocks_no_one() {
    for ordering in [OrderPolicy::StrictFifo, OrderPolicy::BestEffortFifo] {
        let mut p = WorkerPool::new();
        let mut q = qspec(10, Some(4));
        q.ordering = ordering;
        p.set_queue("q", q);
        p.set_algorithm("a", aspec(None));
        add(
            &mut p,
            &[
                mk_job("huge", "q", "a", 9, 0, 5),
                mk_job("ok", "q", "a", 0, 1, 4),
            ],
        );
        assert_eq!(admit(&mut p, 0), ["ok"], "{ordering:?}");
        let (pos, r) = why(&p, "huge", 0);
        assert_eq!(pos, 1);
        assert!(r.is_permanent());
        assert_eq!(r.label(), "ExceedsQueueGpus");
        assert_eq!(
            r.to_string(),
            "asks for 5 GPUs but queue q allows at most 4: it can never be admitted there"
        );
        // Raising the quota makes it admissible (it was permanent only for that spec).
        p.set_queue("q", qspec(10, Some(9)));
        assert_eq!(admit(&mut p, 0), ["huge"]);
    }
}

#[test]
fn algorithm_capacity_is_shared_across_queues_in_global_order() {
    let mut p = WorkerPool::new();
    p.set_queue("q1", qspec(10, None));
    p.set_queue("q2", qspec(10, None));
    p.set_algorithm("a", aspec(Some(2)));
    p.set_algorithm("b", aspec(None));
    add(
        &mut p,
        &[
            mk_job("x1", "q1", "a", 0, 5, 1),
            mk_job("y1", "q2", "a", 0, 3, 1),
            mk_job("y2", "q2", "a", 1, 9, 1),
            mk_job("x2", "q1", "b", 0, 7, 1),
        ],
    );
    assert_eq!(admit(&mut p, 0), ["y2", "y1", "x2"]);
    let (pos, r) = why(&p, "x1", 0);
    assert_eq!(pos, 1);
    assert_eq!(
        r,
        WaitReason::AlgorithmCapacity {
            algorithm: "a".into(),
            max_running: 2,
            holding: 2
        }
    );
    assert_eq!(
        r.to_string(),
        "algorithm a is at its capacity (2 of 2 running)"
    );
    assert_eq!(
        p.algorithm_stats("a").map(|s| (s.holding, s.pending)),
        Some((2, 1))
    );
}

#[test]
fn paused_queue_accepts_but_admits_nothing() {
    let mut p = pool(5, None);
    let mut q = qspec(5, None);
    q.paused = true;
    q.max_pending = Some(1);
    p.set_queue("q", q.clone());
    add(&mut p, &[mk_job("j", "q", "a", 0, 0, 1)]);
    assert_eq!(admit(&mut p, 0), Vec::<String>::new());
    assert_eq!(
        why(&p, "j", 0).1,
        WaitReason::QueuePaused { queue: "q".into() }
    );
    // Still subject to maxPending while paused.
    assert!(p.observe_job(mk_job("k", "q", "a", 0, 1, 1)).is_some());
    q.paused = false;
    p.set_queue("q", q);
    assert_eq!(admit(&mut p, 0), ["j"]);
}

#[test]
fn max_pending_rejects_new_jobs_only() {
    let mut p = WorkerPool::new();
    let mut q = qspec(0, None);
    q.max_pending = Some(2);
    p.set_queue("q", q);
    p.set_algorithm("a", aspec(None));
    add(
        &mut p,
        &[
            mk_job("j1", "q", "a", 0, 0, 1),
            mk_job("j2", "q", "a", 0, 1, 1),
        ],
    );
    assert_eq!(
        p.observe_job(mk_job("j3", "q", "a", 0, 2, 1)),
        Some(Rejection {
            key: key("j3"),
            queue: "q".into(),
            max_pending: 2
        })
    );
    assert_eq!(p.job_phase(&key("j3")), None, "a rejected job is not kept");
    // Already accepted jobs (Queued, e.g. on rebuild) and holders are never rejected.
    assert_eq!(
        p.observe_job(with_phase(
            mk_job("j4", "q", "a", 0, 3, 1),
            ObservedPhase::Queued
        )),
        None
    );
    assert_eq!(
        p.observe_job(with_phase(
            mk_job("j5", "q", "a", 0, 4, 1),
            ObservedPhase::Holding
        )),
        None
    );
    // Re-observing an accepted job as New does not reject it either.
    assert_eq!(p.observe_job(mk_job("j1", "q", "a", 0, 0, 1)), None);
    assert_eq!(
        p.queue_stats("q").map(|s| (s.pending, s.holding)),
        Some((3, 1))
    );
    p.check_consistency();
}

#[test]
fn resizing_live() {
    let mut p = pool(1, None);
    add(
        &mut p,
        &(0..5)
            .map(|i| mk_job(&format!("j{i}"), "q", "a", 0, i, 1))
            .collect::<Vec<_>>(),
    );
    assert_eq!(admit(&mut p, 0), ["j0"]);
    // Raising admits at once.
    p.set_queue("q", qspec(3, None));
    assert_eq!(admit(&mut p, 0), ["j1", "j2"]);
    // Lowering never evicts: it stops admitting until below.
    p.set_queue("q", qspec(1, None));
    assert_eq!(admit(&mut p, 0), Vec::<String>::new());
    assert_eq!(p.queue_stats("q").map(|s| s.holding), Some(3));
    p.remove_job(&key("j0"));
    p.remove_job(&key("j1"));
    assert_eq!(admit(&mut p, 0), Vec::<String>::new(), "2 held, limit 1");
    p.remove_job(&key("j2"));
    assert_eq!(admit(&mut p, 0), ["j3"]);
}

#[test]
fn breaker_opens_cools_down_and_probes() {
    let mut p = WorkerPool::new();
    p.set_queue("q", qspec(10, None));
    p.set_algorithm(
        "a",
        AlgorithmSpec {
            max_running: None,
            breaker: Some(BreakerSpec {
                failure_threshold: 2,
                window_ms: 100,
                cooldown_ms: 1000,
            }),
        },
    );
    // Two failures further apart than the window do not open it.
    p.record_outcome("a", Outcome::Failed, 0);
    p.record_outcome("a", Outcome::Failed, 100);
    assert_eq!(
        p.algorithm_stats("a")
            .map(|s| (s.breaker, s.recent_failures)),
        Some((BreakerState::Closed, 1))
    );
    p.record_outcome("a", Outcome::Failed, 150);
    assert_eq!(
        p.algorithm_stats("a").map(|s| s.breaker),
        Some(BreakerState::Open { until_ms: 1150 })
    );
    add(
        &mut p,
        &[
            mk_job("j1", "q", "a", 0, 1, 0),
            mk_job("j2", "q", "a", 0, 2, 0),
        ],
    );
    assert_eq!(admit(&mut p, 200), Vec::<String>::new());
    let r = why(&p, "j1", 200).1;
    assert_eq!(
        r,
        WaitReason::BreakerOpen {
            algorithm: "a".into(),
            until_ms: 1150
        }
    );
    assert_eq!(p.next_wakeup(200), Some(1150));
    // Outcomes of attempts admitted before it opened are ignored while open.
    p.record_outcome("a", Outcome::Succeeded, 300);
    assert_eq!(admit(&mut p, 1149), Vec::<String>::new());
    // Half-open: exactly one probe.
    assert_eq!(admit(&mut p, 1150), ["j1"]);
    assert_eq!(p.next_wakeup(1150), None);
    assert_eq!(
        why(&p, "j2", 1150).1,
        WaitReason::BreakerProbing {
            algorithm: "a".into()
        }
    );
    assert_eq!(
        p.algorithm_stats("a").map(|s| s.breaker),
        Some(BreakerState::HalfOpen {
            probe: Some(key("j1"))
        })
    );
    // The probe fails: open again for a cool-down.
    p.record_outcome("a", Outcome::Failed, 1200);
    p.remove_job(&key("j1"));
    assert_eq!(admit(&mut p, 1300), Vec::<String>::new());
    assert_eq!(p.next_wakeup(1300), Some(2200));
    assert_eq!(admit(&mut p, 2200), ["j2"]);
    // The probe succeeds: closed, everything flows.
    p.record_outcome("a", Outcome::Succeeded, 2300);
    add(
        &mut p,
        &[
            mk_job("j3", "q", "a", 0, 3, 0),
            mk_job("j4", "q", "a", 0, 4, 0),
        ],
    );
    assert_eq!(admit(&mut p, 2300), ["j3", "j4"]);
}

#[test]
fn a_removed_or_rolled_back_probe_lets_another_probe() {
    let mut p = WorkerPool::new();
    p.set_queue("q", qspec(10, None));
    let spec = AlgorithmSpec {
        max_running: None,
        breaker: Some(BreakerSpec {
            failure_threshold: 1,
            window_ms: 10,
            cooldown_ms: 10,
        }),
    };
    p.set_algorithm("a", spec);
    p.record_outcome("a", Outcome::Failed, 0);
    add(
        &mut p,
        &[
            mk_job("j1", "q", "a", 0, 1, 0),
            mk_job("j2", "q", "a", 0, 2, 0),
        ],
    );
    assert_eq!(admit(&mut p, 10), ["j1"]);
    p.rollback(&key("j1"));
    assert_eq!(
        admit(&mut p, 10),
        ["j1"],
        "rolled back probe: probe again, same job"
    );
    p.remove_job(&key("j1"));
    assert_eq!(
        admit(&mut p, 10),
        ["j2"],
        "deleted probe: another job probes"
    );
    // Disabling the breaker forgets it.
    p.record_outcome("a", Outcome::Failed, 11);
    p.set_algorithm("a", aspec(None));
    add(&mut p, &[mk_job("j3", "q", "a", 0, 3, 0)]);
    assert_eq!(admit(&mut p, 12), ["j3"]);
}

#[test]
fn starvation_guard_reserves_for_an_old_large_job() {
    let mut p = WorkerPool::with_starvation_guard_ms(1000);
    p.set_queue("q", qspec(10, Some(4)));
    p.set_algorithm("a", aspec(None));
    add(
        &mut p,
        &[
            mk_job("s0", "q", "a", 0, 0, 2),
            mk_job("big", "q", "a", 0, 1, 4),
        ],
    );
    assert_eq!(admit(&mut p, 1), ["s0"]);
    // Young: smaller jobs pass it.
    add(&mut p, &[mk_job("s1", "q", "a", 0, 2, 1)]);
    assert_eq!(admit(&mut p, 2), ["s1"]);
    // Old: the queue keeps its GPUs for it; GPU-less jobs still pass.
    add(
        &mut p,
        &[
            mk_job("s2", "q", "a", 0, 3, 1),
            mk_job("cpu", "q", "a", 0, 4, 0),
        ],
    );
    assert_eq!(admit(&mut p, 1001), ["cpu"]);
    let (pos, r) = why(&p, "s2", 1001);
    assert_eq!(pos, 2);
    assert_eq!(
        r,
        WaitReason::GpusReserved {
            queue: "q".into(),
            head: key("big")
        }
    );
    assert_eq!(why(&p, "big", 1001).1.label(), "GpuQuota");
    // A higher-priority job is ahead of it and still goes.
    add(&mut p, &[mk_job("vip", "q", "a", 1, 5, 1)]);
    assert_eq!(admit(&mut p, 1002), ["vip"]);
    p.remove_job(&key("s0"));
    p.remove_job(&key("s1"));
    assert_eq!(
        admit(&mut p, 1003),
        Vec::<String>::new(),
        "1 of 4 GPUs still held by vip"
    );
    p.remove_job(&key("vip"));
    assert_eq!(admit(&mut p, 1004), ["big"]);
    // Reservation lifted with it gone from the pending set.
    p.remove_job(&key("big"));
    assert_eq!(admit(&mut p, 1005), ["s2"]);
}

#[test]
fn queue_deleted_jobs_wait_and_holders_keep_counting() {
    let mut p = WorkerPool::new();
    p.set_queue("q", qspec(10, None));
    p.set_queue("r", qspec(10, None));
    p.set_algorithm("a", aspec(Some(1)));
    add(
        &mut p,
        &[
            mk_job("h", "q", "a", 0, 0, 1),
            mk_job("w", "q", "a", 0, 1, 1),
        ],
    );
    assert_eq!(admit(&mut p, 0), ["h"]);
    p.remove_queue("q");
    assert_eq!(
        why(&p, "w", 0),
        (1, WaitReason::QueueNotFound { queue: "q".into() })
    );
    add(&mut p, &[mk_job("x", "r", "a", 0, 2, 1)]);
    assert_eq!(
        admit(&mut p, 0),
        Vec::<String>::new(),
        "h of the deleted queue still holds a"
    );
    assert_eq!(why(&p, "x", 0).1.label(), "AlgorithmCapacity");
    p.remove_job(&key("h"));
    assert_eq!(admit(&mut p, 0), ["x"]);
    // A job naming a queue that never existed waits too; creating it admits.
    add(&mut p, &[mk_job("y", "later", "b", 0, 3, 1)]);
    assert_eq!(why(&p, "y", 0).1.to_string(), "queue later does not exist");
    p.set_queue("later", qspec(1, None));
    assert_eq!(
        why(&p, "y", 0).1.to_string(),
        "algorithm b is not registered"
    );
    p.set_algorithm("b", aspec(None));
    assert_eq!(admit(&mut p, 0), ["y"]);
}

#[test]
fn algorithm_deleted_jobs_wait_and_block_no_one() {
    let mut p = WorkerPool::new();
    p.set_queue("q", strict(qspec(10, None)));
    p.set_algorithm("a", aspec(None));
    p.set_algorithm("b", aspec(None));
    p.remove_algorithm("a");
    add(
        &mut p,
        &[
            mk_job("orphan", "q", "a", 5, 0, 1),
            mk_job("ok", "q", "b", 0, 1, 1),
        ],
    );
    assert_eq!(admit(&mut p, 0), ["ok"]);
    assert_eq!(
        why(&p, "orphan", 0),
        (
            1,
            WaitReason::AlgorithmNotFound {
                algorithm: "a".into()
            }
        )
    );
    assert_eq!(
        p.algorithm_stats("a").map(|s| (s.spec, s.pending)),
        Some((None, 1))
    );
}

#[test]
fn in_flight_admission_stays_held_and_rollback_restores_position() {
    let mut p = pool(1, None);
    add(
        &mut p,
        &[
            mk_job("j1", "q", "a", 0, 1, 1),
            mk_job("j2", "q", "a", 0, 2, 1),
            mk_job("j3", "q", "a", 0, 3, 1),
        ],
    );
    assert_eq!(admit(&mut p, 0), ["j1"]);
    // The watch still shows j1 as Queued (our write is in flight): keep it held.
    assert_eq!(
        p.observe_job(with_phase(
            mk_job("j1", "q", "a", 0, 1, 1),
            ObservedPhase::Queued
        )),
        None
    );
    assert_eq!(p.job_phase(&key("j1")), Some(PoolState::Holding));
    assert_eq!(admit(&mut p, 0), Vec::<String>::new());
    // The write failed: back at the head, the slot free.
    p.rollback(&key("j1"));
    p.check_consistency();
    assert_eq!(why(&p, "j1", 0), (1, WaitReason::Admissible));
    assert_eq!(
        p.queue_stats("q").map(|s| (s.holding, s.head)),
        Some((0, Some(key("j1"))))
    );
    assert_eq!(admit(&mut p, 0), ["j1"]);
    // Rollback of a pending or unknown job is a no-op.
    p.rollback(&key("j2"));
    p.rollback(&key("zz"));
    p.check_consistency();
}

#[test]
fn rebuild_from_cluster_state_never_over_admits() {
    let mut p = pool(2, Some(3));
    // After a restart: two holders found in the cluster, three waiting.
    let h = ObservedPhase::Holding;
    let w = ObservedPhase::Queued;
    add(
        &mut p,
        &[
            with_phase(mk_job("w1", "q", "a", 0, 3, 1), w),
            with_phase(mk_job("h1", "q", "a", 0, 1, 1), h),
            with_phase(mk_job("w2", "q", "a", 0, 4, 1), w),
            with_phase(mk_job("h2", "q", "a", 0, 2, 1), h),
        ],
    );
    assert_eq!(admit(&mut p, 0), Vec::<String>::new());
    // A finished job is removed, never re-admitted; a held job re-observed
    // as holding changes nothing.
    p.remove_job(&key("h1"));
    assert_eq!(
        p.observe_job(with_phase(mk_job("h2", "q", "a", 0, 2, 1), h)),
        None
    );
    assert_eq!(admit(&mut p, 0), ["w1"]);
    assert_eq!(
        p.queue_stats("q")
            .map(|s| (s.pending, s.holding, s.gpus_in_use)),
        Some((1, 2, 2))
    );
}

#[test]
fn changing_a_pending_job_reindexes_it() {
    let mut p = pool(0, Some(8));
    add(
        &mut p,
        &[
            mk_job("j1", "q", "a", 0, 1, 1),
            mk_job("j2", "q", "a", 0, 2, 1),
            mk_job("j3", "q", "a", 0, 3, 1),
        ],
    );
    assert_eq!(why(&p, "j3", 0).0, 3);
    add(
        &mut p,
        &[with_phase(
            mk_job("j3", "q", "a", 7, 3, 2),
            ObservedPhase::Queued,
        )],
    );
    assert_eq!(why(&p, "j3", 0).0, 1);
    add(
        &mut p,
        &[with_phase(
            mk_job("j3", "other", "a", 7, 3, 2),
            ObservedPhase::Queued,
        )],
    );
    assert_eq!(why(&p, "j3", 0).0, 1);
    assert_eq!(p.queue_stats("q").map(|s| s.pending), Some(2));
    assert_eq!(p.queue_stats("other").map(|s| s.pending), Some(1));
    // A holder moved to another queue moves its GPUs with it.
    add(
        &mut p,
        &[with_phase(
            mk_job("j1", "q", "a", 0, 1, 1),
            ObservedPhase::Holding,
        )],
    );
    add(
        &mut p,
        &[with_phase(
            mk_job("j1", "other", "a", 0, 1, 3),
            ObservedPhase::Holding,
        )],
    );
    assert_eq!(p.queue_stats("q").map(|s| s.gpus_in_use), Some(0));
    assert_eq!(p.queue_stats("other").map(|s| s.gpus_in_use), Some(3));
}

#[test]
fn next_wakeup_only_for_breakers_with_waiting_jobs() {
    let mut p = pool(10, None);
    let b = AlgorithmSpec {
        max_running: None,
        breaker: Some(BreakerSpec {
            failure_threshold: 1,
            window_ms: 10,
            cooldown_ms: 50,
        }),
    };
    p.set_algorithm("a", b);
    p.record_outcome("a", Outcome::Failed, 0);
    assert_eq!(p.next_wakeup(0), None, "nothing waits for a");
    add(&mut p, &[mk_job("j", "q", "a", 0, 0, 0)]);
    assert_eq!(p.next_wakeup(0), Some(50));
    assert_eq!(p.next_wakeup(50), None, "already half-open: admit now");
}

/// A 4-GPU job in a 4-GPU queue while 1-GPU jobs arrive every tick and run
/// 3 ticks: returns the tick at which the big job is admitted, if any.
fn big_job_admitted_at(guard_ms: i64, ticks: i64) -> Option<i64> {
    let mut p = WorkerPool::with_starvation_guard_ms(guard_ms);
    p.set_queue("q", qspec(100, Some(4)));
    p.set_algorithm("a", aspec(None));
    let mut started: Vec<(i64, String)> = Vec::new();
    for t in 0..ticks {
        if t == 5 {
            add(&mut p, &[mk_job("big", "q", "a", 0, t, 4)]);
        }
        add(&mut p, &[mk_job(&format!("s{t}"), "q", "a", 0, t, 1)]);
        started.retain(|(at, name)| {
            let done = t - at >= 3;
            if done {
                p.remove_job(&key(name));
            }
            !done
        });
        for name in admit(&mut p, t) {
            if name == "big" {
                return Some(t);
            }
            started.push((t, name));
        }
    }
    None
}

#[test]
fn best_effort_never_starves_a_large_job() {
    // Without the guard the stream of small jobs always holds 3 of 4 GPUs.
    assert_eq!(big_job_admitted_at(i64::MAX, 1000), None);
    // With it: reserved from tick 105 (created at 5); the two small jobs
    // still holding then (started at 103 and 104) finish by 107.
    assert_eq!(big_job_admitted_at(100, 1000), Some(107));
}

#[test]
fn starvation_guard_starts_exactly_at_its_age() {
    let mut p = WorkerPool::with_starvation_guard_ms(100);
    p.set_queue("q", qspec(10, Some(2)));
    p.set_algorithm("a", aspec(None));
    add(
        &mut p,
        &[
            mk_job("h", "q", "a", 0, 0, 1),
            mk_job("big", "q", "a", 0, 50, 2),
        ],
    );
    assert_eq!(admit(&mut p, 50), ["h"]);
    add(
        &mut p,
        &[
            mk_job("s1", "q", "a", 0, 60, 1),
            mk_job("s2", "q", "a", 0, 61, 1),
        ],
    );
    assert_eq!(
        why(&p, "s1", 149).1,
        WaitReason::Admissible,
        "99 ms old: not yet"
    );
    assert_eq!(
        why(&p, "s1", 150).1.label(),
        "GpusReserved",
        "100 ms old: reserved"
    );
    assert_eq!(admit(&mut p, 150), Vec::<String>::new());
    assert_eq!(admit(&mut p, 149), ["s1"]);
}

#[test]
fn oldest_pending_is_the_earliest_created_waiting_job_of_each_queue() {
    let mut p = pool(1, None);
    p.set_queue("r", qspec(5, None));
    add(
        &mut p,
        &[
            // The oldest of "q" is admitted first, so it no longer counts.
            mk_job("q-first", "q", "a", 0, 100, 0),
            // Higher priority: the head of "q", though younger than q-old.
            mk_job("q-urgent", "q", "a", 10, 300, 0),
            mk_job("q-old", "q", "a", 0, 200, 1),
            mk_job("r-only", "r", "a", 0, 250, 0),
        ],
    );
    assert_eq!(
        p.oldest_pending_created_ms(),
        HashMap::from([("q".to_string(), 100), ("r".to_string(), 250)])
    );
    assert_eq!(admit(&mut p, 1000), ["q-urgent", "r-only"]);
    assert_eq!(
        p.oldest_pending_created_ms(),
        HashMap::from([("q".to_string(), 100)]),
        "r has nothing waiting: no entry"
    );
    p.remove_job(&key("q-first"));
    assert_eq!(
        p.oldest_pending_created_ms(),
        HashMap::from([("q".to_string(), 200)])
    );
}
