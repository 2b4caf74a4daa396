//! Property tests of worker pods' GPUs (worker mode): random histories of
//! jobs arriving, being admitted and ending, and worker pods granted and
//! going, on one queue; after every step the queue's limits hold with the
//! worker pods counted: jobs' GPUs plus worker pods' GPUs within maxGPUs,
//! holders within maxRunning; a grant never exceeds what was asked and
//! leaves no room for one more pod when it gives less.

use proptest::prelude::*;

use super::*;

const Q: &str = "q";
const A: &str = "a";

#[derive(Debug, Clone)]
enum Step {
    /// A new job of this many GPUs (0 for a worker-mode job).
    Job(u32),
    Admit,
    /// The n-th holding job (mod their number) ends.
    End(usize),
    /// `gone` of the live worker pods go, then `wanted` more are asked for.
    Pods {
        gone: u32,
        wanted: u32,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u32..4).prop_map(Step::Job),
        Just(Step::Admit),
        (0usize..8).prop_map(Step::End),
        (0u32..3, 0u32..4).prop_map(|(gone, wanted)| Step::Pods { gone, wanted }),
    ]
}

fn spec(max_running: u32, max_gpus: u32) -> QueueSpec {
    QueueSpec {
        max_running,
        max_gpus: Some(max_gpus),
        max_pending: None,
        ordering: OrderPolicy::BestEffortFifo,
        paused: false,
        tenancy: None,
        preemption: preempt::Policy::default(),
    }
}

fn run(max_running: u32, max_gpus: u32, per_pod: u32, steps: Vec<Step>) {
    let mut p = WorkerPool::new();
    p.set_queue(Q, spec(max_running, max_gpus));
    p.set_algorithm(
        A,
        AlgorithmSpec {
            max_running: None,
            breaker: None,
        },
    );
    let (mut pods, mut holding, mut next) = (0u32, Vec::<JobKey>::new(), 0);
    for (now, step) in steps.into_iter().enumerate() {
        let now = now as i64;
        match step {
            Step::Job(gpus) => {
                next += 1;
                p.observe_job(PoolJob {
                    key: JobKey::new("ns", format!("j{next:03}")),
                    queue: Q.into(),
                    algorithm: A.into(),
                    priority: 0,
                    created_ms: now,
                    gpus,
                    phase: ObservedPhase::New,
                    tenant: String::new(),
                });
            }
            Step::Admit => holding.extend(p.admit(now).into_iter().map(|a| a.key)),
            Step::End(n) if !holding.is_empty() => {
                let key = holding.remove(n % holding.len());
                p.remove_job(&key);
            }
            Step::End(_) => {}
            Step::Pods { gone, wanted } => {
                pods -= gone.min(pods);
                let before = p.queue_stats(Q).unwrap().gpus_in_use;
                let granted = p.grant_worker_pods(Q, u64::from(pods * per_pod), per_pod, wanted);
                assert!(granted <= wanted, "granted more than asked");
                pods += granted;
                let free = u64::from(max_gpus).saturating_sub(before + u64::from(pods * per_pod));
                if granted < wanted {
                    assert!(
                        free < u64::from(per_pod),
                        "room left for another pod: {free}"
                    );
                }
            }
        }
        let stats = p.queue_stats(Q).unwrap();
        assert_eq!(p.worker_gpus(Q), u64::from(pods * per_pod));
        assert!(
            stats.gpus_in_use + p.worker_gpus(Q) <= u64::from(max_gpus),
            "jobs {} + worker pods {} GPUs over maxGPUs {max_gpus}",
            stats.gpus_in_use,
            p.worker_gpus(Q)
        );
        assert!(stats.holding <= max_running);
        assert_eq!(stats.holding as usize, holding.len());
    }
}

proptest! {
    #[test]
    fn the_queues_limits_hold_with_worker_pods_counted(
        max_running in 0u32..6,
        max_gpus in 0u32..10,
        per_pod in 1u32..3,
        steps in prop::collection::vec(step(), 1..60),
    ) {
        run(max_running, max_gpus, per_pod, steps);
    }
}

#[test]
fn worker_pods_and_jobs_share_the_gpu_quota() {
    let mut p = WorkerPool::new();
    p.set_queue(Q, spec(10, 4));
    p.set_algorithm(
        A,
        AlgorithmSpec {
            max_running: None,
            breaker: None,
        },
    );
    // Two worker pods of 1 GPU, then a job of 3 GPUs does not fit.
    assert_eq!(p.grant_worker_pods(Q, 0, 1, 2), 2);
    let job = |name: &str, gpus| PoolJob {
        key: JobKey::new("ns", name),
        queue: Q.into(),
        algorithm: A.into(),
        priority: 0,
        created_ms: 0,
        gpus,
        phase: ObservedPhase::New,
        tenant: String::new(),
    };
    p.observe_job(job("big", 3));
    p.observe_job(job("worker-task", 0));
    let admitted: Vec<String> = p.admit(1).into_iter().map(|a| a.key.name).collect();
    // The worker-mode job (0 GPUs) takes a slot; the big one waits.
    assert_eq!(admitted, vec!["worker-task".to_string()]);
    assert_eq!(
        p.explain(&JobKey::new("ns", "big"), 1).map(|w| w.reason),
        Some(WaitReason::GpuQuota {
            queue: Q.into(),
            gpus: 3,
            free: 2,
            max_gpus: 4,
        })
    );
    // Of 3 more pods asked for, 2 fit (4 GPUs in all).
    assert_eq!(p.grant_worker_pods(Q, 2, 1, 3), 2);
    // One pod goes: still no room for the 3-GPU job (3 held).
    assert_eq!(p.grant_worker_pods(Q, 3, 1, 0), 0);
    assert!(p.admit(2).is_empty());
    // All go: the big job is admitted.
    assert_eq!(p.grant_worker_pods(Q, 0, 1, 0), 0);
    let admitted: Vec<String> = p.admit(3).into_iter().map(|a| a.key.name).collect();
    assert_eq!(admitted, vec!["big".to_string()]);
    // An unknown queue grants nothing.
    assert_eq!(p.grant_worker_pods("nope", 0, 1, 3), 0);
}
