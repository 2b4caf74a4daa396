//! `vision-dev bench workers` (issue 18, docs/PERFORMANCE.md "Worker
//! mode"): pod mode and worker mode on the same workload in one run. N short
//! jobs (`task_ms` of work each) are submitted as a burst to one queue of
//! `max_running` slots:
//!
//! - **pod mode**: KWOK pods that run `task_ms` (the throughput scenario of
//!   [`crate::bench`], reused as it is);
//! - **worker mode**: `workers` warm workers of the Rust SDK in this
//!   process, each with a handler that sleeps `task_ms`, of total capacity
//!   `max_running`. The operator serves them in its TEST-ONLY trust mode
//!   (`--worker-trust-local-test-only`), which this command says loudly.
//!
//! Measured, from the API server's watch unless said: throughput (first
//! create answered to the last job seen final), dispatch latency (the
//! operator's `vision_operator_worker_dispatch_seconds`; beside it, from the
//! workers' own clock, the job seen Admitted to its task arriving), the
//! operator's API requests per job (`apiserver_request_total`), slot
//! utilisation while jobs wait (jobs holding a slot / maxRunning), and the
//! API server's ceiling for the writes a worker-mode job needs (the same
//! creates, PATCHes, status applies and Events, no operator).
//!
//! Then two fault bursts: one worker killed mid-burst, and the leader
//! killed mid-burst (a new operator started at once); every job must end
//! Succeeded, and no job's work may run to completion twice (the workers'
//! records; a task cancelled or killed before it finished does not count).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use vision_worker::{CancellationToken, Config, Task, TaskError};

use crate::bench::{
    self, ApiRequests, BenchArgs, Target, Throughput, apiserver_requests, delta, http_get,
    operator_requests, proc_sample, round, show,
};
use crate::error::{Error, Result, fail};
use crate::fairness::{OperatorCmd, start_operator, stop_operator, wait_ready};
use crate::run::{
    QueueLimits, RUN_KEY, Tracker, View, apply, delete_all, print_stuck, run_id, submit_all,
    track_jobs_and_pods,
};
use crate::stats::{Ev, Percentiles, analyze, parse_prometheus};
use crate::turn::Turn;
use vision_api::{JobPhase, VisionAlgorithm, VisionJob, VisionQueue};
use visionctl::cluster::ensure_namespace;

const NS_POD: &str = "vision-bench-wpod";
const NS_WORKER: &str = "vision-bench-wwork";
const NS_CEILING: &str = "vision-bench-wceil";
const QUEUE: &str = "vision-bench-w";
const ALG_POD: &str = "vision-bench-wpod-sim";
const ALG_WORKER: &str = "vision-bench-wworker";
const DISPATCH_METRIC: &str = "vision_operator_worker_dispatch_seconds_bucket";

/// Parameters of the scenario.
#[derive(Debug, Clone)]
pub struct WorkersArgs {
    /// Jobs of each measured burst (both modes).
    pub jobs: usize,
    pub max_running: i32,
    /// SDK workers; each gets max_running / workers task slots.
    pub workers: u32,
    /// Work of each job, ms (pod mode: the pods' simulated run time).
    pub task_ms: u64,
    /// Jobs of each fault burst (0: no fault runs).
    pub fault_jobs: usize,
    /// Creates in flight while submitting.
    pub concurrency: usize,
    /// Jobs in flight in the write-ceiling run.
    pub ceiling_concurrency: usize,
    /// http://host:port of the operator's worker endpoint.
    pub worker_url: String,
    /// The operator's /metrics URL.
    pub metrics_url: String,
    pub clk_tck: f64,
    /// How to start the operator (its args must serve workers, see above).
    pub operator: OperatorCmd,
    pub out: Option<PathBuf>,
    pub timeout: Duration,
}

/// What one worker's handler did with one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Slept its `task_ms` to the end and returned its result.
    Completed,
    /// The operator cancelled it first.
    Cancelled,
    /// Its worker was killed first.
    Killed,
}

#[derive(Debug, Clone)]
struct TaskRec {
    job: String,
    worker: String,
    /// ms since the driver's start (the same clock as the watches').
    arrived_ms: f64,
    ended_ms: f64,
    outcome: Outcome,
}

struct WorkerProc {
    handle: JoinHandle<std::result::Result<(), vision_worker::Error>>,
    stop: CancellationToken,
    /// Cancelled when the worker is "killed": its handlers stop unfinished.
    alive: CancellationToken,
}

/// The SDK workers of the run, in this process, and what their handlers did.
struct Fleet {
    url: String,
    capacity: u32,
    work: Duration,
    start: Instant,
    records: Arc<Mutex<Vec<TaskRec>>>,
    workers: Vec<WorkerProc>,
}

fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

impl Fleet {
    fn spawn(&mut self, id: &str) {
        let mut config = Config::new(&self.url, ALG_WORKER, self.capacity, id);
        config.backoff_initial = Duration::from_millis(50);
        config.backoff_max = Duration::from_millis(500);
        let stop = CancellationToken::new();
        let alive = CancellationToken::new();
        let (records, start, work, worker, dies) = (
            self.records.clone(),
            self.start,
            self.work,
            id.to_string(),
            alive.clone(),
        );
        let handler = move |job: Value, task: Task| {
            let (records, dies, worker) = (records.clone(), dies.clone(), worker.clone());
            async move {
                let arrived_ms = ms_since(start);
                let outcome = tokio::select! {
                    () = tokio::time::sleep(work) => Outcome::Completed,
                    () = task.cancel.cancelled() => Outcome::Cancelled,
                    () = dies.cancelled() => Outcome::Killed,
                };
                records.lock().expect("records").push(TaskRec {
                    job: job["name"].as_str().unwrap_or_default().to_string(),
                    worker,
                    arrived_ms,
                    ended_ms: ms_since(start),
                    outcome,
                });
                match outcome {
                    Outcome::Completed => Ok(json!({"ok": true})),
                    _ => Err(TaskError::new("Cancelled", "stopped before the end")),
                }
            }
        };
        let handle = tokio::spawn(vision_worker::run(config, handler, stop.clone()));
        self.workers.push(WorkerProc {
            handle,
            stop,
            alive,
        });
    }

    /// As a process killed: its stream drops, its handlers stop unfinished.
    fn kill(&mut self, i: usize) {
        if let Some(w) = self.workers.get(i) {
            w.alive.cancel();
            w.handle.abort();
        }
    }

    fn stop_all(&mut self) {
        for w in &self.workers {
            w.stop.cancel();
            w.alive.cancel();
        }
    }

    fn take_records(&self) -> Vec<TaskRec> {
        std::mem::take(&mut *self.records.lock().expect("records"))
    }
}

/// The worker-mode burst's numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerRun {
    pub jobs: usize,
    pub workers: u32,
    pub tasks_per_worker: i32,
    pub makespan_s: f64,
    pub jobs_per_s: f64,
    /// Jobs holding a slot (first seen admitted to seen final) / maxRunning,
    /// while at least one submitted job was not yet admitted.
    pub utilisation_while_waiting: Option<f64>,
    /// Tasks running on the workers (their own clock) / maxRunning, same time.
    pub worker_busy_while_waiting: Option<f64>,
    pub waiting_s: f64,
    /// A job seen final -> the next job seen admitted, while jobs waited.
    pub refill_ms: Percentiles,
    /// The operator's histogram: attempt handed to the hub -> task sent.
    pub dispatch_ms: Percentiles,
    /// The job seen Admitted by this driver's watch -> its task arriving at
    /// the worker (same clock; negative when the task beat the watch).
    pub seen_admitted_to_task_ms: Percentiles,
    /// Job created (answer) -> task arriving at its worker.
    pub created_to_task_ms: Percentiles,
    pub max_holding: usize,
    /// Per phase, the jobs the watch saw in it (a status written in that
    /// phase), divided by the jobs: which status writes a job cost.
    #[serde(default)]
    pub phases_seen_per_job: BTreeMap<String, f64>,
    pub failures: BTreeMap<String, u32>,
    pub api_requests: ApiRequests,
    pub operator_cpu_s: Option<f64>,
    pub cpu_ms_per_job: Option<f64>,
}

/// The API server alone taking the writes a worker-mode job needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteCeiling {
    pub jobs: usize,
    /// Per job, in this order: 1 create, then these.
    pub metadata_patches: usize,
    pub status_applies: usize,
    pub events: usize,
    pub jobs_in_flight: usize,
    pub seconds: f64,
    pub jobs_per_s: f64,
    pub writes_per_s: f64,
    pub errors: BTreeMap<String, u32>,
}

/// A fault burst's invariants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultCheck {
    pub fault: String,
    pub jobs: usize,
    /// Jobs of the run the API server has, and how many are Succeeded.
    pub found: usize,
    pub succeeded: usize,
    /// Jobs not Succeeded, by phase/reason ("missing" when gone).
    pub not_succeeded: BTreeMap<String, u32>,
    /// Jobs whose work a worker ran to completion more than once.
    pub completed_twice: usize,
    pub completed_twice_examples: Vec<String>,
    /// Jobs that needed more than one attempt.
    pub retried: usize,
    /// Handler runs stopped unfinished (killed worker, cancelled task).
    pub unfinished_runs: usize,
    /// When the fault was injected -> every job final, s.
    pub recovery_s: Option<f64>,
    pub pass: bool,
}

/// The scenario's result (JSON with --out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkersResult {
    pub jobs: usize,
    pub max_running: i32,
    pub task_ms: u64,
    pub pod_mode: Throughput,
    pub worker_mode: WorkerRun,
    pub write_ceiling: Option<WriteCeiling>,
    pub faults: Vec<FaultCheck>,
}

fn bench_args(a: &WorkersArgs, namespace: &str, algorithm: &str, pid: u32) -> BenchArgs {
    BenchArgs {
        namespace: namespace.into(),
        queue: QUEUE.into(),
        algorithm: algorithm.into(),
        jobs: a.jobs,
        max_running: a.max_running,
        gpus: 1,
        runtime_ms: a.task_ms,
        concurrency: a.concurrency,
        operator_pid: Some(pid),
        clk_tck: a.clk_tck,
        out: None,
        timeout: a.timeout,
        metrics_url: Some(a.metrics_url.clone()),
    }
}

/// Runs the scenario holding the cluster turn, with its own operator.
pub async fn workers(client: &Client, a: &WorkersArgs) -> Result<WorkersResult> {
    let holder = format!("bench-workers-{}", run_id());
    let turn = Turn::take(client, &holder, Duration::from_secs(30 * 60))
        .await
        .map_err(fail)?;
    eprintln!("holding the cluster turn");
    println!(
        "NOTE: the operator serves workers in its TEST-ONLY trust mode (--worker-trust-local-test-only): the bench's SDK workers are local processes without a ServiceAccount token. Never run an operator so in a cluster."
    );
    let mut operator = match start_operator(&a.operator) {
        Ok(child) => child,
        Err(e) => {
            turn.release().await;
            return Err(e);
        }
    };
    if let Err(e) = wait_ready(&mut operator, &a.operator.ready_url).await {
        stop_operator(&mut operator);
        turn.release().await;
        return Err(e);
    }
    let result = scenario(client, a, &mut operator).await;
    stop_operator(&mut operator);
    turn.release().await;
    let mut r = result?;
    // The ceiling runs with no operator, as the bare-pod ceiling does.
    match write_ceiling(client, a, &r.worker_mode.api_requests).await {
        Ok(c) => r.write_ceiling = Some(c),
        Err(e) => eprintln!("write ceiling: {}", crate::error::chain(&e)),
    }
    let _ = delete_all(client, NS_CEILING, Duration::from_secs(300)).await;
    print(&r, a);
    if let Some(path) = &a.out {
        std::fs::write(path, serde_json::to_string_pretty(&r)?).map_err(|source| Error::File {
            path: path.clone(),
            source,
        })?;
        eprintln!("wrote {}", path.display());
    }
    Ok(r)
}

async fn scenario(client: &Client, a: &WorkersArgs, operator: &mut Child) -> Result<WorkersResult> {
    // Pod mode: the throughput scenario as it is, 100 ms pods.
    println!();
    println!(
        "== pod mode: {} jobs of {} ms, maxRunning {}",
        a.jobs, a.task_ms, a.max_running
    );
    let pod = bench::throughput(client, &bench_args(a, NS_POD, ALG_POD, operator.id())).await?;
    eprintln!("cleaning up the pod-mode jobs ...");
    delete_all(client, NS_POD, Duration::from_secs(600)).await?;

    // Worker mode: the same queue, an algorithm in worker mode.
    let b = bench_args(a, NS_WORKER, ALG_WORKER, operator.id());
    ensure_namespace(client, NS_WORKER).await?;
    delete_all(client, NS_WORKER, Duration::from_secs(600)).await?;
    let per_worker = (a.max_running / a.workers.max(1) as i32).max(1);
    let mut algorithm: VisionAlgorithm =
        bench::sim_algorithm(ALG_WORKER, bench::sim_template(a.task_ms)?, 1);
    algorithm.spec.mode = vision_api::AlgorithmMode::Worker;
    // A killed worker's attempt fails (WorkerLost) and must retry elsewhere.
    algorithm.spec.retries = 2;
    algorithm.spec.workers = Some(serde_json::from_value(json!({
        "min": a.workers, "max": a.workers, "tasksPerWorker": per_worker
    }))?);
    apply(
        &Api::<VisionAlgorithm>::all(client.clone()),
        ALG_WORKER,
        &algorithm,
    )
    .await?;
    apply(
        &Api::<VisionQueue>::all(client.clone()),
        QUEUE,
        &bench::bench_queue(QUEUE, a.max_running, false),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let start = Instant::now();
    let mut fleet = Fleet {
        url: a.worker_url.clone(),
        capacity: per_worker as u32,
        work: Duration::from_millis(a.task_ms),
        start,
        records: Arc::default(),
        workers: Vec::new(),
    };
    for i in 0..a.workers {
        fleet.spawn(&format!("w-{i}"));
    }
    let result = worker_runs(client, a, &b, &mut fleet, operator, start, per_worker).await;
    if result.is_ok() {
        eprintln!("cleaning up the worker-mode jobs ...");
        let _ = delete_all(client, NS_WORKER, Duration::from_secs(600)).await;
    }
    fleet.stop_all();
    let (worker_mode, faults) = result?;
    Ok(WorkersResult {
        jobs: a.jobs,
        max_running: a.max_running,
        task_ms: a.task_ms,
        pod_mode: pod,
        worker_mode,
        write_ceiling: None,
        faults,
    })
}

async fn worker_runs(
    client: &Client,
    a: &WorkersArgs,
    b: &BenchArgs,
    fleet: &mut Fleet,
    operator: &mut Child,
    start: Instant,
    per_worker: i32,
) -> Result<(WorkerRun, Vec<FaultCheck>)> {
    // Warm-up: every worker registered and serving before the measured burst.
    println!();
    println!(
        "== worker mode: {} SDK workers x {per_worker} tasks of {} ms (in this process)",
        a.workers, a.task_ms
    );
    let mut ready = false;
    for _ in 0..5 {
        let warm = (a.max_running as usize).max(a.workers as usize);
        burst(client, b, warm, start, "warm-up", None, &mut || Ok(())).await?;
        let records = fleet.take_records();
        let served: std::collections::BTreeSet<&str> =
            records.iter().map(|r| r.worker.as_str()).collect();
        if served.len() >= a.workers as usize {
            ready = true;
            break;
        }
        eprintln!(
            "warm-up: {} of {} workers served; again",
            served.len(),
            a.workers
        );
    }
    if !ready {
        return Err(fail("not every worker registered within 5 warm-up bursts"));
    }

    // The measured burst.
    let hist_before = dispatch_histogram(&a.metrics_url);
    let proc_before = proc_sample(operator.id());
    let req_before = apiserver_requests(client).await?;
    let (run, tr, _, seen) = burst(
        client,
        b,
        a.jobs,
        start,
        "worker mode",
        None,
        &mut || Ok(()),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let req_after = apiserver_requests(client).await?;
    let proc_after = proc_sample(operator.id());
    let hist_after = dispatch_histogram(&a.metrics_url);
    let records = fleet.take_records();
    let d = delta(&req_before, &req_after);
    let n = a.jobs as f64;
    let api_requests = operator_requests(client, &d, NS_WORKER, &format!("b-{run}-"), n).await?;
    let mut run_result = summarize(
        a,
        &tr,
        &records,
        api_requests,
        per_worker,
        hist_delta(&hist_before, &hist_after),
        match (proc_before, proc_after) {
            (Some(x), Some(y)) => Some((y.cpu_ticks - x.cpu_ticks) as f64 / a.clk_tck),
            _ => None,
        },
    );
    let mut per_phase: BTreeMap<String, f64> = BTreeMap::new();
    for phases in seen.values() {
        for p in phases {
            *per_phase.entry(p.clone()).or_default() += 1.0 / n;
        }
    }
    run_result.phases_seen_per_job = per_phase
        .into_iter()
        .map(|(p, x)| (p, round(x, 3)))
        .collect();
    print_worker_run(&run_result);

    let mut faults = Vec::new();
    if a.fault_jobs > 0 {
        let at = a.fault_jobs / 3;
        println!();
        println!(
            "== fault: one worker killed mid-burst ({} jobs; after {at} are final)",
            a.fault_jobs
        );
        let mut injected = None;
        let (run, _, recovery, _) = {
            let mut inject = || {
                fleet.kill(0);
                fleet.spawn(&format!("w-{}-replacement", a.workers));
                injected = Some(Instant::now());
                eprintln!("killed worker w-0, started a replacement");
                Ok(())
            };
            burst(
                client,
                b,
                a.fault_jobs,
                start,
                "worker kill",
                Some(at),
                &mut inject,
            )
            .await?
        };
        let records = fleet.take_records();
        faults.push(
            check(
                client,
                "worker killed mid-burst",
                &run,
                a.fault_jobs,
                &records,
                recovery,
            )
            .await?,
        );

        println!();
        println!(
            "== fault: the leader killed mid-burst ({} jobs; after {at} are final; a new operator started at once)",
            a.fault_jobs
        );
        let op_cmd = a.operator.clone();
        let (run, _, recovery, _) = {
            let mut inject = || {
                let _ = operator.kill();
                let _ = operator.wait();
                *operator = start_operator(&op_cmd)?;
                eprintln!("killed the leader (SIGKILL), started a new operator");
                Ok(())
            };
            burst(
                client,
                b,
                a.fault_jobs,
                start,
                "leader kill",
                Some(at),
                &mut inject,
            )
            .await?
        };
        let records = fleet.take_records();
        faults.push(
            check(
                client,
                "leader killed mid-burst",
                &run,
                a.fault_jobs,
                &records,
                recovery,
            )
            .await?,
        );
        for f in &faults {
            print_fault(f);
        }
    }
    Ok((run_result, faults))
}

/// Per job of a burst, the phases the watch saw it in.
type PhasesSeen = std::collections::HashMap<String, std::collections::BTreeSet<String>>;

fn note(seen: &mut PhasesSeen, m: &crate::run::Msg) {
    if let crate::run::Msg::Job(_, job) = m
        && let Some(phase) = job.status.as_ref().and_then(|s| s.phase)
    {
        seen.entry(job.metadata.name.clone().unwrap_or_default())
            .or_default()
            .insert(phase.to_string());
    }
}

/// Submits `n` jobs at once and follows them until all are final; calls
/// `inject` once when `inject_at` jobs are final. Returns the run id, what
/// the watches saw, and the time from the injection to the last final (s).
async fn burst(
    client: &Client,
    b: &BenchArgs,
    n: usize,
    start: Instant,
    title: &str,
    inject_at: Option<usize>,
    inject: &mut dyn FnMut() -> Result<()>,
) -> Result<(String, Tracker, Option<f64>, PhasesSeen)> {
    let run = run_id();
    let mut seen = PhasesSeen::new();
    let (tx, mut rx, mut tr) = track_jobs_and_pods(client, &b.namespace, &run, start).await?;
    submit_all(
        client,
        &b.namespace,
        bench::bench_jobs(b, &b.queue, &run, n),
        b.concurrency,
        start,
        tx.clone(),
    );
    drop(tx);
    let mut view = View::new(
        format!("{title}: {n} jobs -> {}", b.queue),
        Duration::from_secs(5),
    );
    let limits = QueueLimits {
        slots: Some(b.max_running),
        gpus: None,
    };
    let deadline = Instant::now() + b.timeout;
    let mut injected: Option<Instant> = None;
    loop {
        let errors = tr.submit_errors.values().sum::<u32>() as usize;
        if tr.finals + errors >= n {
            break;
        }
        if let Some(at) = inject_at
            && injected.is_none()
            && tr.finals >= at
        {
            inject()?;
            injected = Some(Instant::now());
        }
        if Instant::now() > deadline {
            view.finish();
            print_stuck(&tr);
            return Err(fail(format!(
                "{title}: only {} of {n} jobs final",
                tr.finals
            )));
        }
        view.draw(&tr, n, limits, start.elapsed(), false);
        match tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
            Ok(Some(m)) => {
                note(&mut seen, &m);
                tr.handle(m);
                while let Ok(m) = rx.try_recv() {
                    note(&mut seen, &m);
                    tr.handle(m);
                }
            }
            Ok(None) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(_) => {}
        }
    }
    view.draw(&tr, n, limits, start.elapsed(), true);
    view.finish();
    if !tr.submit_errors.is_empty() {
        eprintln!("{title}: submission errors {:?}", tr.submit_errors);
    }
    Ok((run, tr, injected.map(|t| t.elapsed().as_secs_f64()), seen))
}

/// Cumulative buckets (le -> count) of the dispatch histogram, if readable.
fn dispatch_histogram(url: &str) -> Vec<(f64, f64)> {
    let Ok(text) = http_get(url) else {
        return Vec::new();
    };
    let mut b: Vec<(f64, f64)> = parse_prometheus(&text)
        .into_iter()
        .filter(|s| s.name == DISPATCH_METRIC)
        .filter_map(|s| {
            let le = s.label("le");
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, s.value))
        })
        .collect();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    b
}

fn hist_delta(before: &[(f64, f64)], after: &[(f64, f64)]) -> Vec<(f64, f64)> {
    after
        .iter()
        .map(|(le, n)| {
            let was = before
                .iter()
                .find(|(l, _)| l == le)
                .map_or(0.0, |(_, v)| *v);
            (*le, n - was)
        })
        .collect()
}

/// A quantile of cumulative buckets, interpolated within its bucket (as
/// PromQL's histogram_quantile), in the buckets' unit.
pub fn bucket_quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let inside = count - below;
            let frac = if inside > 0.0 {
                (rank - below) / inside
            } else {
                1.0
            };
            return Some(lower + (le - lower) * frac);
        }
        lower = le;
        below = count;
    }
    Some(lower)
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    a: &WorkersArgs,
    tr: &Tracker,
    records: &[TaskRec],
    api_requests: ApiRequests,
    per_worker: i32,
    hist: Vec<(f64, f64)>,
    cpu_s: Option<f64>,
) -> WorkerRun {
    let slots = a.max_running.max(1) as u32;
    // Slots from the API server: a job holds one from first seen admitted
    // to seen final (no pods in this mode: the analysis reads them as pods).
    let mut ev: Vec<(f64, Ev)> = Vec::new();
    for j in tr.jobs.values() {
        if let Some(t) = j.submitted {
            ev.push((t, Ev::Submitted));
        }
        if let Some(t) = j.admitted {
            ev.push((t, Ev::Admitted));
            ev.push((t, Ev::PodCreated { first: true }));
        }
        match (j.admitted, j.final_at) {
            (Some(_), Some(t)) => {
                ev.push((t, Ev::PodEnded));
                ev.push((t, Ev::Final));
            }
            (None, Some(t)) => ev.push((t, Ev::FinalWithoutPod)),
            _ => {}
        }
    }
    let an = analyze(&ev, slots);
    // The workers' own view: a slot is busy while a handler runs.
    let mut first_task: BTreeMap<&str, f64> = BTreeMap::new();
    for r in records {
        let t = first_task.entry(r.job.as_str()).or_insert(r.arrived_ms);
        *t = t.min(r.arrived_ms);
    }
    let mut busy: Vec<(f64, Ev)> = Vec::new();
    for (name, j) in &tr.jobs {
        if let Some(t) = j.submitted {
            busy.push((t, Ev::Submitted));
        }
        if let Some(t) = j.final_at {
            busy.push((t, Ev::Final));
        }
        if !first_task.contains_key(name.as_str())
            && let Some(t) = j.final_at
        {
            busy.push((t, Ev::FinalWithoutPod));
        }
    }
    for r in records {
        let first = first_task.get(r.job.as_str()) == Some(&r.arrived_ms);
        busy.push((r.arrived_ms, Ev::PodCreated { first }));
        busy.push((r.ended_ms, Ev::PodEnded));
    }
    let worker_busy = analyze(&busy, slots).utilisation_while_waiting;
    let seen_to_task: Vec<f64> = first_task
        .iter()
        .filter_map(|(name, t)| Some(t - tr.jobs.get(*name)?.admitted?))
        .collect();
    let created_to_task: Vec<f64> = first_task
        .iter()
        .filter_map(|(name, t)| Some(t - tr.jobs.get(*name)?.submitted?))
        .collect();
    let samples = hist.last().map(|(_, n)| *n as usize);
    let q = |q| bucket_quantile(&hist, q).map(|s| round(s * 1000.0, 1));
    let makespan_s = an.makespan_ms / 1000.0;
    WorkerRun {
        jobs: a.jobs,
        workers: a.workers,
        tasks_per_worker: per_worker,
        makespan_s: round(makespan_s, 2),
        jobs_per_s: round(a.jobs as f64 / makespan_s.max(1e-3), 2),
        utilisation_while_waiting: an.utilisation_while_waiting,
        worker_busy_while_waiting: worker_busy,
        waiting_s: an.waiting_ms / 1000.0,
        refill_ms: Percentiles::full(&an.refill_ms),
        dispatch_ms: Percentiles {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            samples,
            ..Default::default()
        },
        seen_admitted_to_task_ms: Percentiles::full(&seen_to_task),
        created_to_task_ms: Percentiles::short(&created_to_task),
        max_holding: tr.max_holding,
        phases_seen_per_job: BTreeMap::new(),
        failures: tr.failures(),
        api_requests,
        operator_cpu_s: cpu_s,
        cpu_ms_per_job: cpu_s.map(|c| round(c * 1000.0 / a.jobs as f64, 2)),
    }
}

/// The invariants of a fault burst, from the API server and the workers'
/// records.
async fn check(
    client: &Client,
    fault: &str,
    run: &str,
    jobs: usize,
    records: &[TaskRec],
    recovery_s: Option<f64>,
) -> Result<FaultCheck> {
    let api: Api<VisionJob> = Api::namespaced(client.clone(), NS_WORKER);
    let listed = api
        .list(&ListParams::default().labels(&format!("{RUN_KEY}={run}")))
        .await?
        .items;
    let mut not_succeeded: BTreeMap<String, u32> = BTreeMap::new();
    let (mut succeeded, mut retried) = (0, 0);
    for j in &listed {
        let s = j.status.clone().unwrap_or_default();
        if s.attempts.unwrap_or(0) > 1 {
            retried += 1;
        }
        if s.phase == Some(JobPhase::Succeeded) {
            succeeded += 1;
        } else {
            let k = format!(
                "{}/{}",
                s.phase.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                s.reason.as_deref().unwrap_or("-")
            );
            *not_succeeded.entry(k).or_default() += 1;
        }
    }
    if listed.len() < jobs {
        not_succeeded.insert("missing".into(), (jobs - listed.len()) as u32);
    }
    let mut completions: BTreeMap<&str, usize> = BTreeMap::new();
    for r in records.iter().filter(|r| r.outcome == Outcome::Completed) {
        *completions.entry(r.job.as_str()).or_default() += 1;
    }
    let twice: Vec<String> = completions
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(j, n)| format!("{j} ({n}x)"))
        .collect();
    let pass = succeeded == jobs && listed.len() == jobs && twice.is_empty();
    Ok(FaultCheck {
        fault: fault.into(),
        jobs,
        found: listed.len(),
        succeeded,
        not_succeeded,
        completed_twice: twice.len(),
        completed_twice_examples: twice.into_iter().take(5).collect(),
        retried,
        unfinished_runs: records
            .iter()
            .filter(|r| r.outcome != Outcome::Completed)
            .count(),
        recovery_s: recovery_s.map(|s| round(s, 1)),
        pass,
    })
}

/// The API server alone, with no operator: per job, the create and then
/// the writes the worker-mode run measured per job (rounded), each job's
/// requests one after the other, `ceiling_concurrency` jobs at once.
async fn write_ceiling(client: &Client, a: &WorkersArgs, r: &ApiRequests) -> Result<WriteCeiling> {
    let n = a.jobs.max(1) as f64;
    let count = |pred: &dyn Fn(&str) -> bool| {
        r.by_verb
            .iter()
            .filter(|(k, _)| pred(k))
            .map(|(_, v)| v)
            .sum::<f64>()
    };
    let metadata_patches = (count(&|k| k == "PATCH visionjobs") / n).round() as usize;
    let status_applies = (count(&|k| {
        k.starts_with("APPLY visionjobs/status") || k == "PATCH visionjobs/status"
    }) / n)
        .round() as usize;
    let events = (r.operator_event_writes as f64 / n).round() as usize;
    ensure_namespace(client, NS_CEILING).await?;
    delete_all(client, NS_CEILING, Duration::from_secs(300)).await?;
    let b = BenchArgs {
        namespace: NS_CEILING.into(),
        queue: "vision-bench-none".into(),
        algorithm: ALG_WORKER.into(),
        ..bench_args(a, NS_CEILING, ALG_WORKER, 0)
    };
    let run = run_id();
    let jobs = bench::bench_jobs(&b, &b.queue, &run, a.jobs);
    let api: Api<VisionJob> = Api::namespaced(client.clone(), NS_CEILING);
    let events_api: Api<Event> = Api::namespaced(client.clone(), NS_CEILING);
    println!();
    println!(
        "== write ceiling (no operator): {} jobs x (1 create + {metadata_patches} PATCH + {status_applies} status apply + {events} Event), {} jobs in flight",
        a.jobs, a.ceiling_concurrency
    );
    let phases = ["Queued", "Admitted", "Running", "Succeeded"];
    let t0 = Instant::now();
    use futures::StreamExt;
    let results: Vec<std::result::Result<(), String>> = futures::stream::iter(jobs)
        .map(|job| {
            let (api, events_api) = (api.clone(), events_api.clone());
            async move {
                let e = |e: kube::Error| e.to_string();
                let name = job.metadata.name.clone().unwrap_or_default();
                let created = api.create(&PostParams::default(), &job).await.map_err(e)?;
                for i in 0..metadata_patches {
                    let patch = json!({"metadata": {"annotations": {"bench.vision.zjlab.io/patch": i.to_string()}}});
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map_err(e)?;
                }
                let skip = phases.len().saturating_sub(status_applies);
                for i in 0..status_applies {
                    let phase = phases[(skip + i).min(phases.len() - 1)];
                    let status = json!({
                        "apiVersion": VisionJob::api_version(&()),
                        "kind": VisionJob::kind(&()),
                        "status": {"phase": phase, "attempts": 1, "message": format!("ceiling write {i}")}
                    });
                    api.patch_status(
                        &name,
                        &PatchParams::apply("vision-bench-ceiling").force(),
                        &Patch::Apply(&status),
                    )
                    .await
                    .map_err(e)?;
                }
                for i in 0..events {
                    let ev = Event {
                        metadata: ObjectMeta {
                            name: Some(format!("{name}.{i}")),
                            ..Default::default()
                        },
                        involved_object: ObjectReference {
                            api_version: Some(VisionJob::api_version(&()).into()),
                            kind: Some("VisionJob".into()),
                            name: Some(name.clone()),
                            namespace: Some(NS_CEILING.into()),
                            uid: created.metadata.uid.clone(),
                            ..Default::default()
                        },
                        reason: Some("Succeeded".into()),
                        message: Some("ceiling".into()),
                        type_: Some("Normal".into()),
                        event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
                        action: Some("Finish".into()),
                        reporting_component: Some("vision-bench-ceiling".into()),
                        reporting_instance: Some("vision-bench-ceiling".into()),
                        ..Default::default()
                    };
                    events_api
                        .create(&PostParams::default(), &ev)
                        .await
                        .map_err(e)?;
                }
                Ok(())
            }
        })
        .buffer_unordered(a.ceiling_concurrency.max(1))
        .collect()
        .await;
    let seconds = t0.elapsed().as_secs_f64();
    let mut errors: BTreeMap<String, u32> = BTreeMap::new();
    for e in results.into_iter().filter_map(|r| r.err()) {
        *errors.entry(e).or_default() += 1;
    }
    let ok = a.jobs - errors.values().sum::<u32>() as usize;
    let writes = ok * (1 + metadata_patches + status_applies + events);
    Ok(WriteCeiling {
        jobs: a.jobs,
        metadata_patches,
        status_applies,
        events,
        jobs_in_flight: a.ceiling_concurrency,
        seconds: round(seconds, 2),
        jobs_per_s: round(ok as f64 / seconds, 2),
        writes_per_s: round(writes as f64 / seconds, 1),
        errors,
    })
}

fn ms_pair(p: &Percentiles) -> String {
    format!("{} / {}", show(p.p50, " ms"), show(p.p99, " ms"))
}

fn print_worker_run(w: &WorkerRun) {
    let q = &w.api_requests;
    println!();
    println!("Worker-mode burst");
    println!(
        "  {} jobs in {} s: {} jobs/s; slot utilisation while jobs waited {} (workers busy {}) over {:.1} s",
        w.jobs,
        w.makespan_s,
        w.jobs_per_s,
        show(w.utilisation_while_waiting, "%"),
        show(w.worker_busy_while_waiting, "%"),
        w.waiting_s
    );
    println!(
        "  dispatch (operator histogram) p50 / p90 / p99: {} / {} / {} ({} samples)",
        show(w.dispatch_ms.p50, " ms"),
        show(w.dispatch_ms.p90, " ms"),
        show(w.dispatch_ms.p99, " ms"),
        w.dispatch_ms.samples.unwrap_or(0)
    );
    println!(
        "  job seen Admitted -> task at the worker p50 / p99: {}; created -> task p50 / p99: {}",
        ms_pair(&w.seen_admitted_to_task_ms),
        ms_pair(&w.created_to_task_ms)
    );
    println!(
        "  refill (a job seen final -> the next seen admitted) p50 / p99: {}",
        ms_pair(&w.refill_ms)
    );
    println!(
        "  operator API requests: {} per job (visionjobs writes {}, Events {}, leases {}); by verb {:?}",
        q.per_job, q.visionjobs_writes, q.operator_event_writes, q.leases, q.by_verb
    );
    println!(
        "  status phases the watch saw, per job: {:?}",
        w.phases_seen_per_job
    );
    println!(
        "  most jobs holding a slot {}; failures {:?}; operator CPU {} s ({} ms/job)",
        w.max_holding,
        w.failures,
        show(w.operator_cpu_s, ""),
        show(w.cpu_ms_per_job, "")
    );
}

fn print_fault(f: &FaultCheck) {
    println!(
        "{}: {}: {} of {} jobs Succeeded ({} found; not Succeeded {:?}), {} retried, {} jobs' work completed twice {:?}, {} handler runs stopped unfinished, all final {} s after the fault",
        if f.pass { "PASS" } else { "FAIL" },
        f.fault,
        f.succeeded,
        f.jobs,
        f.found,
        f.not_succeeded,
        f.retried,
        f.completed_twice,
        f.completed_twice_examples,
        f.unfinished_runs,
        show(f.recovery_s, "")
    );
}

/// The comparison against issue 18's targets.
pub fn targets(r: &WorkersResult) -> Vec<Target> {
    let (p, w) = (&r.pod_mode, &r.worker_mode);
    let ratio = (p.jobs_per_s > 0.0).then(|| w.jobs_per_s / p.jobs_per_s);
    let mut rows = vec![Target {
        name: format!(
            "worker-mode throughput vs pod mode ({} vs {} jobs/s)",
            w.jobs_per_s, p.jobs_per_s
        ),
        measured: show(ratio, "x"),
        goal: ">= 5x",
        met: ratio.map(|x| x >= 5.0),
    }];
    if let Some(c) = &r.write_ceiling {
        let f = (c.jobs_per_s > 0.0).then(|| w.jobs_per_s / c.jobs_per_s);
        rows.push(Target {
            name: format!(
                "worker-mode throughput vs the API server's write ceiling ({} jobs/s)",
                c.jobs_per_s
            ),
            measured: show(f, "%"),
            goal: ">= 80%",
            met: f.map(|f| f >= 0.8),
        });
    }
    rows.extend([
        Target {
            name: "dispatch latency p99 (operator histogram)".into(),
            measured: show(w.dispatch_ms.p99, " ms"),
            goal: "<= 50 ms",
            met: w.dispatch_ms.p99.map(|x| x <= 50.0),
        },
        Target {
            name: "operator API requests per worker-mode job".into(),
            measured: show(Some(w.api_requests.per_job), ""),
            goal: "<= 3",
            met: Some(w.api_requests.per_job <= 3.0),
        },
        Target {
            name: "slot utilisation while jobs wait (worker mode)".into(),
            measured: show(w.utilisation_while_waiting, "%"),
            goal: ">= 95%",
            met: w.utilisation_while_waiting.map(|u| u >= 0.95),
        },
    ]);
    for f in &r.faults {
        rows.push(Target {
            name: format!("lost or duplicated jobs, {}", f.fault),
            measured: format!(
                "{} not Succeeded, {} run twice",
                f.jobs - f.succeeded.min(f.jobs),
                f.completed_twice
            ),
            goal: "0",
            met: Some(f.pass),
        });
    }
    rows
}

fn print(r: &WorkersResult, a: &WorkersArgs) {
    let (p, w) = (&r.pod_mode, &r.worker_mode);
    println!();
    println!(
        "Pod mode vs worker mode: {} jobs of {} ms, one queue of maxRunning {}",
        r.jobs, r.task_ms, r.max_running
    );
    println!();
    println!("| measure | pod mode | worker mode |");
    println!("|---|---|---|");
    println!(
        "| throughput (first create answered -> last job seen final) | {} jobs/s ({} s) | {} jobs/s ({} s) |",
        p.jobs_per_s, p.makespan_s, w.jobs_per_s, w.makespan_s
    );
    println!(
        "| dispatch p50 / p99 | {} (job seen admitted -> its pod seen) | {} (operator: handed to the hub -> task sent) |",
        ms_pair(&p.stages_ms.job_admitted_to_pod_created),
        ms_pair(&w.dispatch_ms)
    );
    println!(
        "| job seen Admitted -> work starts p50 / p99 | - | {} (the worker's clock) |",
        ms_pair(&w.seen_admitted_to_task_ms)
    );
    println!(
        "| operator API requests per job | {} | {} |",
        p.api_requests.per_job, w.api_requests.per_job
    );
    println!(
        "| slot utilisation while jobs wait | {} (live pods) | {} (jobs holding a slot; workers busy {}) |",
        show(p.utilisation_while_waiting, "%"),
        show(w.utilisation_while_waiting, "%"),
        show(w.worker_busy_while_waiting, "%")
    );
    println!(
        "| refill p50 / p99 | {} (pod ended -> next pod) | {} (job final -> next admitted) |",
        ms_pair(&p.refill_ms),
        ms_pair(&w.refill_ms)
    );
    println!(
        "| operator CPU per job | {} ms | {} ms |",
        show(p.operator.cpu_ms_per_job, ""),
        show(w.cpu_ms_per_job, "")
    );
    println!(
        "| jobs not Succeeded | {:?} | {:?} |",
        p.failures, w.failures
    );
    if let Some(c) = &r.write_ceiling {
        println!();
        println!(
            "API server write ceiling (no operator, {} jobs in flight): {} jobs x (1 create + {} PATCH + {} status apply + {} Event) in {} s: {} jobs/s, {} writes/s{}",
            c.jobs_in_flight,
            c.jobs,
            c.metadata_patches,
            c.status_applies,
            c.events,
            c.seconds,
            c.jobs_per_s,
            c.writes_per_s,
            if c.errors.is_empty() {
                String::new()
            } else {
                format!("; errors {:?}", c.errors)
            }
        );
    }
    if !r.faults.is_empty() {
        println!();
        for f in &r.faults {
            print_fault(f);
        }
    }
    let _ = a;
    bench::print_targets(&targets(r));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_quantiles_interpolate_within_the_bucket() {
        let b = [
            (0.001, 50.0),
            (0.002, 90.0),
            (0.004, 100.0),
            (f64::INFINITY, 100.0),
        ];
        let ms = |q| bucket_quantile(&b, q).map(|s| round(s * 1000.0, 3));
        assert_eq!(ms(0.5), Some(1.0));
        assert_eq!(ms(0.25), Some(0.5));
        assert_eq!(ms(0.99), Some(3.8));
        assert_eq!(
            bucket_quantile(&[(0.001, 0.0), (f64::INFINITY, 0.0)], 0.5),
            None
        );
        let over = [(0.001, 0.0), (f64::INFINITY, 4.0)];
        assert_eq!(bucket_quantile(&over, 0.5), Some(0.001));
    }
}
