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
//! Before the timings it prints the pool's heap bytes per pending job, counted
//! by a global allocator that tracks live bytes.
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
    AlgorithmSpec, BreakerSpec, JobKey, JobPhase, JobSpec, ObservedPhase, Ordering, QueueSpec,
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
fn job(i: usize) -> JobSpec {
    JobSpec {
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
                ordering: Ordering::BestEffortFifo,
                paused: false,
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

/// Timed batches are at most this long; between them, untimed set-up and
/// tear-down keep the pool near PENDING pending jobs.
const CHUNK: u64 = 1000;

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("admission_100k");

    let (mut p, _, mut next) = steady_pool();
    g.bench_function("add", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let n = CHUNK.min(iters - done);
                let batch: Vec<JobSpec> = (next..next + n as usize).map(job).collect();
                let keys: Vec<JobKey> = batch.iter().map(|j| j.key.clone()).collect();
                next += n as usize;
                let t = Instant::now();
                for j in batch {
                    black_box(p.observe_job(j));
                }
                total += t.elapsed();
                for k in &keys {
                    p.remove_job(k);
                }
                done += n;
            }
            total
        })
    });

    g.bench_function("remove", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let n = CHUNK.min(iters - done);
                let keys: Vec<JobKey> = (next..next + n as usize)
                    .map(|i| {
                        let j = job(i);
                        let k = j.key.clone();
                        p.observe_job(j);
                        k
                    })
                    .collect();
                next += n as usize;
                let t = Instant::now();
                for k in &keys {
                    p.remove_job(black_box(k));
                }
                total += t.elapsed();
                done += n;
            }
            total
        })
    });
    drop(p);

    let (mut p, mut holders, mut next) = steady_pool();
    let mut now = T0;
    g.bench_function("admit_per_admission", |b| {
        // One iteration = one admitted job: a holder finishes and `admit`
        // refills the freed room (a 4-GPU holder may make room for several).
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let n = CHUNK.min(iters - done);
                let mut admitted = 0;
                let t = Instant::now();
                while admitted < n {
                    let k = holders.pop_front().expect("a holder");
                    p.remove_job(&k);
                    now += 1;
                    for a in p.admit(now) {
                        holders.push_back(a.key);
                        admitted += 1;
                    }
                }
                total += t.elapsed();
                for _ in 0..admitted {
                    p.observe_job(job(next));
                    next += 1;
                }
                done += admitted;
            }
            total
        })
    });

    g.bench_function("admit_nothing_admissible", |b| {
        b.iter(|| {
            let out = p.admit(black_box(now));
            debug_assert!(out.is_empty());
            black_box(out)
        })
    });

    // 10,000 jobs still pending, spread over the order.
    let keys: Vec<JobKey> = (0..next)
        .step_by(7)
        .map(|i| job(i).key)
        .filter(|k| p.job_phase(k) == Some(JobPhase::Pending))
        .take(10_000)
        .collect();
    assert_eq!(keys.len(), 10_000);
    let mut i = 0usize;
    g.bench_function("explain", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            black_box(p.explain(&keys[i], now))
        })
    });

    g.finish();
}

fn main() {
    report_memory();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args();
    benches(&mut c);
    c.final_summary();
}
