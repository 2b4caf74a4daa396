//! How many worker pods an algorithm in worker mode should have, and which:
//! a pure decision from the algorithm's `spec.workers`, its backlog, its
//! live worker pods and the time (no I/O, no clock; unit- and
//! property-tested). `super::pods` applies it.
//!
//! Rules:
//! - **desired** = ceil(backlog / tasksPerWorker), clamped to [min, max];
//!   the backlog is the algorithm's tasks waiting for a worker plus those
//!   running (its admitted attempts that have not ended);
//! - a pod that is starting (Pending, or Running without a connected
//!   worker yet) counts as capacity to come: pods are created only up to
//!   `desired` counting them, so a slow start causes no create storm;
//! - **scale down** only above `desired`, only pods whose worker has had no
//!   task for `idle` (a pod never connected: since its creation), the
//!   longest idle first (pods without a connected worker before those with
//!   one); above `max` (max lowered) an idle pod goes at once;
//! - a pod whose worker has a task is **never** deleted;
//! - a finished pod (Succeeded, Failed: its worker exited) is deleted and
//!   does not count; a terminating one does not count and keeps its name.
//!
//! New pods are named `<algorithm>-worker-<n>` with the lowest `n` no
//! existing pod uses, so a create repeated from a stale cache meets the
//! first one (409) instead of making a second pod.

use std::collections::BTreeSet;

use crate::api::{DEFAULT_WORKER_IDLE_SECONDS, WorkerPool};

/// The pool an algorithm asks for, in the decision's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSpec {
    pub min: u32,
    pub max: u32,
    pub tasks_per_worker: u32,
    pub idle_ms: i64,
}

impl PoolSpec {
    /// From `spec.workers` (unset: the CRD's defaults, 1..1 of 1 task).
    pub fn of(workers: Option<&WorkerPool>) -> PoolSpec {
        let n = |v: i32| u32::try_from(v).unwrap_or(0);
        match workers {
            Some(w) => PoolSpec {
                min: n(w.min),
                max: n(w.max).max(n(w.min)),
                tasks_per_worker: n(w.tasks_per_worker).max(1),
                idle_ms: w
                    .idle_seconds
                    .unwrap_or(DEFAULT_WORKER_IDLE_SECONDS)
                    .max(0)
                    .saturating_mul(1000),
            },
            None => PoolSpec {
                min: 1,
                max: 1,
                tasks_per_worker: 1,
                idle_ms: DEFAULT_WORKER_IDLE_SECONDS * 1000,
            },
        }
    }

    /// The pods a backlog needs: ceil(backlog / tasksPerWorker) in [min, max].
    pub fn desired(&self, backlog: u32) -> u32 {
        backlog
            .div_ceil(self.tasks_per_worker.max(1))
            .clamp(self.min, self.max.max(self.min))
    }
}

/// Where a worker pod is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PodPhase {
    /// Pending or Running, not being deleted: serving or about to.
    Live,
    /// Being deleted.
    Terminating,
    /// Succeeded or Failed: its worker process is gone.
    Finished,
}

/// One worker pod of the algorithm, as the decision sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerPod {
    pub name: String,
    pub phase: PodPhase,
    /// Whether a worker of this pod is connected to the operator.
    pub connected: bool,
    /// The tasks its worker runs now.
    pub tasks: u32,
    /// Since when (ms since the epoch) its worker has had no task; its
    /// creation time if it never had one.
    pub idle_since_ms: i64,
}

/// What to change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Names of the pods to create.
    pub create: Vec<String>,
    /// Names of the pods to delete: finished ones, then idle ones.
    pub delete: Vec<String>,
}

/// The name of an algorithm's `n`th worker pod.
pub fn pod_name(algorithm: &str, n: u32) -> String {
    format!("{algorithm}-worker-{n}")
}

/// Decides which worker pods of `algorithm` to create and delete.
pub fn decide(
    algorithm: &str,
    spec: &PoolSpec,
    backlog: u32,
    pods: &[WorkerPod],
    now_ms: i64,
) -> Decision {
    let desired = spec.desired(backlog);
    let max = spec.max.max(spec.min);
    let mut decision = Decision::default();
    for pod in pods.iter().filter(|p| p.phase == PodPhase::Finished) {
        decision.delete.push(pod.name.clone());
    }
    let live: Vec<&WorkerPod> = pods.iter().filter(|p| p.phase == PodPhase::Live).collect();
    let count = u32::try_from(live.len()).unwrap_or(u32::MAX);

    if count < desired {
        let taken: BTreeSet<&str> = pods.iter().map(|p| p.name.as_str()).collect();
        decision.create = (0..)
            .map(|n| pod_name(algorithm, n))
            .filter(|name| !taken.contains(name.as_str()))
            .take((desired - count) as usize)
            .collect();
        return decision;
    }

    // Above desired: idle pods go, the longest idle first; above max an
    // idle pod goes without waiting out the idle period.
    let mut idle: Vec<&WorkerPod> = live.iter().copied().filter(|p| p.tasks == 0).collect();
    idle.sort_by(|a, b| {
        (a.connected, a.idle_since_ms, &a.name).cmp(&(b.connected, b.idle_since_ms, &b.name))
    });
    let over_max = count.saturating_sub(max) as usize;
    let over_desired = (count - desired) as usize;
    let mut removed = 0;
    for pod in idle {
        let idle_long_enough = now_ms.saturating_sub(pod.idle_since_ms) >= spec.idle_ms;
        if removed < over_max || (removed < over_desired && idle_long_enough) {
            decision.delete.push(pod.name.clone());
            removed += 1;
        }
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SPEC: PoolSpec = PoolSpec {
        min: 1,
        max: 3,
        tasks_per_worker: 2,
        idle_ms: 60_000,
    };

    fn pod(
        name: &str,
        phase: PodPhase,
        connected: bool,
        tasks: u32,
        idle_since_ms: i64,
    ) -> WorkerPod {
        WorkerPod {
            name: name.into(),
            phase,
            connected,
            tasks,
            idle_since_ms,
        }
    }

    fn live(name: &str, tasks: u32, idle_since_ms: i64) -> WorkerPod {
        pod(name, PodPhase::Live, true, tasks, idle_since_ms)
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn spec_defaults_and_clamping() {
        let w = WorkerPool {
            min: 2,
            max: 5,
            tasks_per_worker: 4,
            idle_seconds: None,
            queue: None,
        };
        assert_eq!(
            PoolSpec::of(Some(&w)),
            PoolSpec {
                min: 2,
                max: 5,
                tasks_per_worker: 4,
                idle_ms: 60_000
            }
        );
        assert_eq!(
            PoolSpec::of(None),
            PoolSpec {
                min: 1,
                max: 1,
                tasks_per_worker: 1,
                idle_ms: 60_000
            }
        );
        let spec = PoolSpec::of(Some(&w));
        assert_eq!(
            [0, 1, 8, 9, 20, 21, 1000].map(|b| spec.desired(b)),
            [2, 2, 2, 3, 5, 5, 5]
        );
    }

    #[test]
    fn an_empty_pool_gets_min_pods() {
        let d = decide("detect", &SPEC, 0, &[], 0);
        assert_eq!(
            d,
            Decision {
                create: names(&["detect-worker-0"]),
                delete: vec![]
            }
        );
    }

    #[test]
    fn a_backlog_scales_up_to_max_with_the_lowest_free_names() {
        let pods = [live("detect-worker-1", 2, 0)];
        // 5 tasks of 2 per worker: 3 pods.
        let d = decide("detect", &SPEC, 5, &pods, 0);
        assert_eq!(d.create, names(&["detect-worker-0", "detect-worker-2"]));
        // 100 tasks: still max.
        assert_eq!(decide("detect", &SPEC, 100, &pods, 0).create.len(), 2);
    }

    #[test]
    fn starting_pods_count_as_capacity_to_come() {
        let pods = [
            pod("detect-worker-0", PodPhase::Live, false, 0, 0),
            pod("detect-worker-1", PodPhase::Live, false, 0, 0),
            live("detect-worker-2", 2, 0),
        ];
        assert_eq!(decide("detect", &SPEC, 6, &pods, 1), Decision::default());
    }

    #[test]
    fn terminating_pods_do_not_count_and_keep_their_names() {
        let pods = [pod("detect-worker-0", PodPhase::Terminating, true, 0, 0)];
        let d = decide("detect", &SPEC, 0, &pods, 0);
        assert_eq!(
            d,
            Decision {
                create: names(&["detect-worker-1"]),
                delete: vec![]
            }
        );
    }

    #[test]
    fn finished_pods_are_deleted_and_replaced() {
        let pods = [
            pod("detect-worker-0", PodPhase::Finished, false, 0, 0),
            live("detect-worker-1", 1, 0),
        ];
        let d = decide("detect", &SPEC, 3, &pods, 0);
        assert_eq!(
            d,
            Decision {
                create: names(&["detect-worker-2"]),
                delete: names(&["detect-worker-0"]),
            }
        );
    }

    #[test]
    fn idle_pods_go_after_the_idle_period_busy_ones_never() {
        let pods = [
            live("detect-worker-0", 0, 10_000),
            live("detect-worker-1", 1, 0),
            live("detect-worker-2", 0, 5_000),
        ];
        // Backlog 1: desired 1. Not idle long enough yet.
        assert_eq!(
            decide("detect", &SPEC, 1, &pods, 64_999),
            Decision::default()
        );
        // worker-2 has been idle for 60 s: it goes, the longest idle first.
        assert_eq!(
            decide("detect", &SPEC, 1, &pods, 65_000).delete,
            names(&["detect-worker-2"])
        );
        // Both idle ones may go; the busy one stays although desired is 1.
        assert_eq!(
            decide("detect", &SPEC, 1, &pods, 70_000).delete,
            names(&["detect-worker-2", "detect-worker-0"])
        );
        // With no backlog min is 1: the busy one is that one.
        assert_eq!(
            decide("detect", &SPEC, 0, &pods, 70_000).delete,
            names(&["detect-worker-2", "detect-worker-0"])
        );
    }

    #[test]
    fn min_is_kept_even_when_all_are_idle() {
        let pods = [live("detect-worker-0", 0, 0), live("detect-worker-1", 0, 0)];
        assert_eq!(
            decide("detect", &SPEC, 0, &pods, 1_000_000).delete,
            names(&["detect-worker-0"])
        );
    }

    #[test]
    fn unconnected_pods_go_before_connected_ones() {
        let pods = [
            live("detect-worker-0", 0, 0),
            pod("detect-worker-1", PodPhase::Live, false, 0, 50_000),
        ];
        assert_eq!(
            decide("detect", &SPEC, 0, &pods, 200_000).delete,
            names(&["detect-worker-1"])
        );
    }

    #[test]
    fn above_a_lowered_max_idle_pods_go_at_once() {
        let spec = PoolSpec { max: 1, ..SPEC };
        let pods = [
            live("detect-worker-0", 1, 0),
            live("detect-worker-1", 0, 1_000),
            live("detect-worker-2", 0, 2_000),
        ];
        assert_eq!(
            decide("detect", &spec, 10, &pods, 2_000).delete,
            names(&["detect-worker-1", "detect-worker-2"])
        );
    }

    fn arb_pod() -> impl Strategy<Value = WorkerPod> {
        (
            0u32..8,
            prop_oneof![
                Just(PodPhase::Live),
                Just(PodPhase::Terminating),
                Just(PodPhase::Finished)
            ],
            any::<bool>(),
            0u32..3,
            0i64..200_000,
        )
            .prop_map(|(n, phase, connected, tasks, idle)| {
                pod(&pod_name("a", n), phase, connected, tasks, idle)
            })
    }

    proptest! {
        #[test]
        fn invariants(
            min in 0u32..4,
            extra in 0u32..4,
            tpw in 1u32..4,
            idle_ms in 0i64..100_000,
            backlog in 0u32..20,
            pods in prop::collection::vec(arb_pod(), 0..8)
                .prop_map(|mut v| { v.sort_by(|a, b| a.name.cmp(&b.name)); v.dedup_by(|a, b| a.name == b.name); v }),
            now in 0i64..300_000,
        ) {
            let spec = PoolSpec { min, max: min + extra.max(if min == 0 { 1 } else { 0 }), tasks_per_worker: tpw, idle_ms };
            let d = decide("a", &spec, backlog, &pods, now);
            let by_name = |n: &str| pods.iter().find(|p| p.name == n);
            // Never deletes a busy worker's pod, a terminating one, or one twice.
            for name in &d.delete {
                let p = by_name(name).expect("deletes only existing pods");
                prop_assert!(p.phase == PodPhase::Finished || (p.phase == PodPhase::Live && p.tasks == 0));
            }
            let deleted: BTreeSet<&String> = d.delete.iter().collect();
            prop_assert_eq!(deleted.len(), d.delete.len());
            // Creates fresh names only, and never creates and deletes at once (beyond finished pods).
            let created: BTreeSet<&String> = d.create.iter().collect();
            prop_assert_eq!(created.len(), d.create.len());
            for name in &d.create {
                prop_assert!(by_name(name).is_none());
            }
            let live = pods.iter().filter(|p| p.phase == PodPhase::Live).count() as u32;
            let live_deleted = d.delete.iter().filter(|n| by_name(n).unwrap().phase == PodPhase::Live).count() as u32;
            prop_assert!(d.create.is_empty() || live_deleted == 0);
            let after = live + d.create.len() as u32 - live_deleted;
            let busy = pods.iter().filter(|p| p.phase == PodPhase::Live && p.tasks > 0).count() as u32;
            let desired = spec.desired(backlog);
            // Never fewer than desired (so than min), never more than max
            // unless busy workers hold it above; exactly desired when short.
            prop_assert!(after >= desired);
            prop_assert!(after >= spec.min);
            prop_assert!(after <= spec.max.max(busy));
            if live <= desired { prop_assert_eq!(after, desired); }
            // A pod idle for less than the period goes only above max.
            for name in &d.delete {
                let p = by_name(name).unwrap();
                if p.phase == PodPhase::Live && now - p.idle_since_ms < spec.idle_ms {
                    prop_assert!(live > spec.max);
                }
            }
        }
    }
}
