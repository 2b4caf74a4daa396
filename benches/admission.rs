//! Criterion benchmark of the admission core at 100,000 pending jobs spread
//! over 4 queues and 4 algorithms (GPU requests 0/1/1/2/4, 3 priorities).
//!
//! Measures, with the pool at ~100k pending jobs:
//! - `observe_job` of a new job (add),
//! - `remove_job` of a pending job (remove),
//! - one admission: a holder finishes (`remove_job`) and `admit` refills the
//!   slot(s); time per admitted job,
//! - `admit` when nothing is admissible (every slot full): the cost of the
//!   decision triggered by an event that frees nothing,
//! - `explain` of a random pending job.
//!
//! Before the criterion runs it prints the pool's heap bytes per pending job
//! (counted by a global allocator that tracks live bytes) and, for each
//! operation, the thread CPU time per op over 300,000 ops: the machine is
//! shared, and wall time also counts the time other processes held the CPU.
//!
//! Run: `cargo bench --bench admission` (defaults: 1 s warm-up, 3 s
//! measurement, 20 samples; criterion flags override).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use criterion::Criterion;
use vision_operator::admission::{
    AlgorithmSpec, BreakerSpec, JobKey, ObservedPhase, OrderPolicy, PoolJob, PoolState, QueueSpec,
    WorkerPool,
};

/// Live heap bytes, for the memory-per-job figure.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: forwards every call to the system allocator unchanged; it only
// adds a counter of live bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, AtomicOrdering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, AtomicOrdering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            AtomicOrdering::Relaxed,
        );
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const PENDING: usize = 100_000;
const QUEUES: [&str; 4] = ["default", "batch", "video", "ocr"];
const ALGOS: [&str; 4] = ["yolo-detect", "sam-segment", "paddle-ocr", "bytetrack"];
const GPUS: [u32; 5] = [0, 1, 1, 2, 4];
const T0: i64 = 1_790_000_000_000;

/// The i-th job: realistic name lengths, a few namespaces.
fn job(i: usize) -> PoolJob {
    PoolJob {
        key: JobKey::new(
            format!("team-{}", i % 8),
            format!("cam{:03}-frame-{:07}", i % 500, i),
        ),
        queue: QUEUES[i % QUEUES.len()].into(),
        algorithm: ALGOS[(i / 4) % ALGOS.len()].into(),
        priority: (i % 3) as i32,
        created_ms: T0 + i as i64,
        gpus: GPUS[(i / 16) % GPUS.len()],
        phase: ObservedPhase::New,
        tenant: String::new(),
    }
}

fn configure(p: &mut WorkerPool) {
    for q in QUEUES {
        p.set_queue(
            q,
            QueueSpec {
                max_running: 64,
                max_gpus: Some(96),
                max_pending: None,
                ordering: OrderPolicy::BestEffortFifo,
                paused: false,
                tenancy: None,
                preemption: Default::default(),
            },
        );
    }
    for (i, a) in ALGOS.iter().enumerate() {
        p.set_algorithm(
            a,
            AlgorithmSpec {
                max_running: (i % 2 == 0).then_some(60),
                breaker: Some(BreakerSpec {
                    failure_threshold: 5,
                    window_ms: 60_000,
                    cooldown_ms: 30_000,
                }),
            },
        );
    }
}

/// A pool holding jobs `0..n` as pending, nothing admitted.
fn pending_pool(n: usize) -> WorkerPool {
    let mut p = WorkerPool::new();
    configure(&mut p);
    for i in 0..n {
        assert!(p.observe_job(job(i)).is_none());
    }
    p
}

fn report_memory() {
    let before = LIVE.load(AtomicOrdering::Relaxed);
    let pool = pending_pool(PENDING);
    let after = LIVE.load(AtomicOrdering::Relaxed);
    let per_job = (after - before) as f64 / PENDING as f64;
    println!(
        "admission/memory: {PENDING} pending jobs, {} bytes live, {per_job:.1} bytes per pending job",
        after - before
    );
    black_box(&pool);
}

/// A steady pool: PENDING pending jobs plus every slot filled; returns the
/// holders in admission order and the next fresh job index.
fn steady_pool() -> (WorkerPool, VecDeque<JobKey>, usize) {
    let mut p = pending_pool(PENDING);
    let holders: VecDeque<JobKey> = p.admit(T0).into_iter().map(|a| a.key).collect();
    let mut next = PENDING;
    // Top up to PENDING pending again.
    for _ in 0..holders.len() {
        p.observe_job(job(next));
        next += 1;
    }
    (p, holders, next)
}

/// CPU time of this thread in ns (Linux `sum_exec_runtime`; 0 elsewhere).
/// The machine is shared, so wall time includes time other processes took
/// the CPU; thread CPU time does not.
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// One timed batch.
struct Timed {
    wall: Duration,
    cpu_ns: u64,
    ops: u64,
}

fn timed(f: impl FnOnce() -> u64) -> Timed {
    let c0 = cpu_ns();
    let t = Instant::now();
    let ops = f();
    let wall = t.elapsed();
    Timed {
        wall,
        cpu_ns: cpu_ns().saturating_sub(c0),
        ops,
    }
}

/// An operation measured at ~PENDING pending jobs: `batch(n)` does about `n`
/// of them timed, with untimed set-up/tear-down around so the pool stays
/// near its size.
trait Op {
    fn batch(&mut self, n: u64) -> Timed;
}

/// `observe_job` of a new job.
struct Add {
    p: WorkerPool,
    next: usize,
}

impl Op for Add {
    fn batch(&mut self, n: u64) -> Timed {
        let batch: Vec<PoolJob> = (self.next..self.next + n as usize).map(job).collect();
        let keys: Vec<JobKey> = batch.iter().map(|j| j.key.clone()).collect();
        self.next += n as usize;
        let p = &mut self.p;
        let t = timed(|| {
            for j in batch {
                black_box(p.observe_job(j));
            }
            n
        });
        for k in &keys {
            p.remove_job(k);
        }
        t
    }
}

/// `remove_job` of a pending job.
struct Remove {
    p: WorkerPool,
    next: usize,
}

impl Op for Remove {
    fn batch(&mut self, n: u64) -> Timed {
        let p = &mut self.p;
        let keys: Vec<JobKey> = (self.next..self.next + n as usize)
            .map(|i| {
                let j = job(i);
                let k = j.key.clone();
                p.observe_job(j);
                k
            })
            .collect();
        self.next += n as usize;
        timed(|| {
            for k in &keys {
                p.remove_job(black_box(k));
            }
            n
        })
    }
}

/// One admitted job: a holder finishes (`remove_job`) and `admit` refills
/// the freed room (a 4-GPU holder may make room for several). Counts
/// admitted jobs, not calls. The clock stays still: with it advancing, old
/// jobs would reach the starvation guard's age and the workload (not the
/// structure) would change, with several holders finishing per admission.
struct Admit {
    p: WorkerPool,
    holders: VecDeque<JobKey>,
    next: usize,
    now: i64,
}

impl Op for Admit {
    fn batch(&mut self, n: u64) -> Timed {
        let Admit {
            p, holders, now, ..
        } = self;
        let t = timed(|| {
            let mut admitted = 0;
            while admitted < n {
                let k = holders.pop_front().expect("a holder");
                p.remove_job(&k);
                for a in p.admit(*now) {
                    holders.push_back(a.key);
                    admitted += 1;
                }
            }
            admitted
        });
        for _ in 0..t.ops {
            self.p.observe_job(job(self.next));
            self.next += 1;
        }
        t
    }
}

/// `explain` of a pending job (10,000 of them, spread over the order).
struct Explain {
    p: WorkerPool,
    keys: Vec<JobKey>,
    i: usize,
    now: i64,
}

impl Op for Explain {
    fn batch(&mut self, n: u64) -> Timed {
        let Explain { p, keys, i, now } = self;
        timed(|| {
            for _ in 0..n {
                *i = (*i + 7919) % keys.len();
                black_box(p.explain(&keys[*i], *now));
            }
            n
        })
    }
}

fn ops() -> Vec<(&'static str, Box<dyn Op>)> {
    let (p, _, next) = steady_pool();
    let add = Add { p, next };
    let (p, _, next) = steady_pool();
    let remove = Remove { p, next };
    let (p, holders, next) = steady_pool();
    let mut admit = Admit {
        p,
        holders,
        next,
        now: T0,
    };
    // Churn a while so that admissions are measured in steady state.
    admit.batch(50_000);
    let (p, _, next) = steady_pool();
    let keys: Vec<JobKey> = (0..next)
        .step_by(7)
        .map(|i| job(i).key)
        .filter(|k| p.job_phase(k) == Some(PoolState::Pending))
        .take(10_000)
        .collect();
    assert_eq!(keys.len(), 10_000);
    let explain = Explain {
        p,
        keys,
        i: 0,
        now: T0 + 1,
    };
    vec![
        ("add", Box::new(add)),
        ("remove", Box::new(remove)),
        ("admit_per_admission", Box::new(admit)),
        ("explain", Box::new(explain)),
    ]
}

/// Thread CPU time per operation over 300,000 operations in batches of
/// 20,000 (the pool stays between ~80k and ~100k pending).
fn report_cpu(ops: &mut [(&'static str, Box<dyn Op>)]) {
    for (name, op) in ops.iter_mut() {
        let (mut cpu, mut wall, mut n) = (0u64, Duration::ZERO, 0u64);
        while n < 300_000 {
            let t = op.batch(20_000);
            cpu += t.cpu_ns;
            wall += t.wall;
            n += t.ops;
        }
        println!(
            "admission/cpu: {name}: {:.0} ns CPU per op ({:.0} ns wall) over {n} ops",
            cpu as f64 / n as f64,
            wall.as_nanos() as f64 / n as f64
        );
    }
}

/// Timed batches are at most this long.
const CHUNK: u64 = 10_000;

fn benches(c: &mut Criterion, ops: &mut [(&'static str, Box<dyn Op>)]) {
    let mut g = c.benchmark_group("admission_100k");
    for (name, op) in ops.iter_mut() {
        g.bench_function(*name, |b| {
            b.iter_custom(|iters| {
                let (mut total, mut done) = (Duration::ZERO, 0);
                while done < iters {
                    let t = op.batch(CHUNK.min(iters - done));
                    total += t.wall;
                    done += t.ops;
                }
                total
            })
        });
    }
    // The decision triggered by an event that frees nothing (all slots full).
    let (mut p, _, _) = steady_pool();
    g.bench_function("admit_nothing_admissible", |b| {
        b.iter(|| {
            let out = p.admit(black_box(T0 + 1));
            debug_assert!(out.is_empty());
            black_box(out)
        })
    });
    g.finish();
}

fn main() {
    report_memory();
    let mut ops = ops();
    report_cpu(&mut ops);
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args();
    benches(&mut c, &mut ops);
    c.final_summary();
}
