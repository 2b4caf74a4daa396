//! The run tracker shared by `vision-dev demo` and `vision-dev bench`: submit
//! a burst of jobs through the Kubernetes API as the vision platform would,
//! follow every job and pod of the run with watches into a [`Tracker`], draw
//! the live view, and clean a namespace up.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::pin::pin;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::mpsc;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::{Result, fail};
use crate::stats::{Ev, analyze, percentile};
use vision_api::{JobPhase, VisionJob, VisionQueue};

/// Label (on jobs) and annotation (on jobs, copied to their pods) naming the
/// driver run a job belongs to. The key keeps its historical `visionctl`
/// prefix so that jobs of earlier runs are still recognised.
pub const RUN_KEY: &str = "visionctl.vision.zjlab.io/run";

/// A short id for a run, from the clock (base 36).
pub fn run_id() -> String {
    let mut n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64 / 100)
        .unwrap_or_default()
        % (36u64.pow(6));
    let mut s = Vec::new();
    for _ in 0..6 {
        s.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize]);
        n /= 36;
    }
    s.reverse();
    String::from_utf8(s).unwrap_or_default()
}

/// What the watches and the submitter tell the driver, stamped with the
/// time (ms since the driver's start) at which they learnt it.
pub enum Msg {
    Job(f64, Box<VisionJob>),
    Pod(f64, Box<Pod>),
    PodGone(f64, String),
    Synced,
    Submitted(f64, String),
    SubmitFailed(String),
    WatchError(String),
}

/// Starts a watch of the run's jobs in `namespace`.
pub fn watch_jobs(
    client: &Client,
    namespace: &str,
    run: &str,
    start: Instant,
    tx: mpsc::UnboundedSender<Msg>,
) {
    let api: Api<VisionJob> = Api::namespaced(client.clone(), namespace);
    let cfg = watcher::Config::default().labels(&format!("{RUN_KEY}={run}"));
    tokio::spawn(async move {
        let mut stream = pin!(watcher(api, cfg).default_backoff());
        while let Some(ev) = stream.next().await {
            let t = start.elapsed().as_secs_f64() * 1000.0;
            let msg = match ev {
                Ok(watcher::Event::Apply(j)) | Ok(watcher::Event::InitApply(j)) => {
                    Msg::Job(t, Box::new(j))
                }
                Ok(watcher::Event::InitDone) => Msg::Synced,
                Ok(_) => continue,
                Err(e) => Msg::WatchError(format!("job watch: {e}")),
            };
            if tx.send(msg).is_err() {
                return;
            }
        }
    });
}

/// Starts a watch of the pods in `namespace` matching `labels`; only those
/// annotated with the run are reported.
pub fn watch_pods(
    client: &Client,
    namespace: &str,
    labels: &str,
    run: &str,
    start: Instant,
    tx: mpsc::UnboundedSender<Msg>,
) {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let cfg = watcher::Config::default().labels(labels);
    let run = run.to_string();
    tokio::spawn(async move {
        let mut stream = pin!(watcher(api, cfg).default_backoff());
        let ours = |p: &Pod| {
            p.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(RUN_KEY))
                .is_some_and(|r| *r == run)
        };
        while let Some(ev) = stream.next().await {
            let t = start.elapsed().as_secs_f64() * 1000.0;
            let msg = match ev {
                Ok(watcher::Event::Apply(p)) | Ok(watcher::Event::InitApply(p)) => {
                    if !ours(&p) {
                        continue;
                    }
                    Msg::Pod(t, Box::new(p))
                }
                Ok(watcher::Event::Delete(p)) => {
                    if !ours(&p) {
                        continue;
                    }
                    Msg::PodGone(t, p.metadata.name.unwrap_or_default())
                }
                Ok(watcher::Event::InitDone) => Msg::Synced,
                Ok(_) => continue,
                Err(e) => Msg::WatchError(format!("pod watch: {e}")),
            };
            if tx.send(msg).is_err() {
                return;
            }
        }
    });
}

/// Creates `jobs` with `concurrency` requests in flight; reports each.
pub fn submit_all(
    client: &Client,
    namespace: &str,
    jobs: Vec<VisionJob>,
    concurrency: usize,
    start: Instant,
    tx: mpsc::UnboundedSender<Msg>,
) {
    let api: Api<VisionJob> = Api::namespaced(client.clone(), namespace);
    tokio::spawn(async move {
        let mut results = futures::stream::iter(jobs)
            .map(|job| {
                let api = api.clone();
                async move {
                    let name = job.metadata.name.clone().unwrap_or_default();
                    match api.create(&PostParams::default(), &job).await {
                        Ok(_) => Msg::Submitted(start.elapsed().as_secs_f64() * 1000.0, name),
                        Err(e) => Msg::SubmitFailed(format!("{e}")),
                    }
                }
            })
            .buffer_unordered(concurrency.max(1));
        while let Some(m) = results.next().await {
            if tx.send(m).is_err() {
                return;
            }
        }
    });
}

/// What the tracker knows of one job of the run; times in ms since the
/// driver's start.
#[derive(Debug, Clone, Default)]
pub struct JobTrack {
    pub submitted: Option<f64>,
    pub phase: Option<JobPhase>,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub gpus: i32,
    pub attempts: i32,
    pub admitted: Option<f64>,
    pub final_at: Option<f64>,
    pub had_pod: bool,
    /// When its first pod was seen, and when its last pod was seen ending.
    pub pod_created: Option<f64>,
    pub pod_ended: Option<f64>,
}

/// Everything a driver knows about its run.
#[derive(Default)]
pub struct Tracker {
    pub jobs: HashMap<String, JobTrack>,
    /// Pod name -> ended.
    pub pods: HashMap<String, bool>,
    pub events: Vec<(f64, Ev)>,
    pub holding: usize,
    pub gpus: i32,
    pub max_holding: usize,
    pub max_gpus: i32,
    pub live_pods: usize,
    pub max_live_pods: usize,
    pub submitted: usize,
    pub finals: usize,
    pub submit_errors: BTreeMap<String, u32>,
    pub watch_errors: BTreeMap<String, u32>,
    pub synced: usize,
    pub last_change: f64,
}

impl Tracker {
    pub fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Submitted(t, name) => {
                self.submitted += 1;
                self.events.push((t, Ev::Submitted));
                let j = self.jobs.entry(name).or_default();
                j.submitted = Some(t);
                self.last_change = self.last_change.max(t);
            }
            Msg::SubmitFailed(e) => *self.submit_errors.entry(e).or_default() += 1,
            Msg::WatchError(e) => *self.watch_errors.entry(e).or_default() += 1,
            Msg::Synced => self.synced += 1,
            Msg::Job(t, job) => self.on_job(t, &job),
            Msg::Pod(t, pod) => self.on_pod(t, &pod),
            Msg::PodGone(t, name) => {
                if let Some(ended) = self.pods.get_mut(&name)
                    && !*ended
                {
                    *ended = true;
                    self.live_pods -= 1;
                    self.events.push((t, Ev::PodEnded));
                }
            }
        }
    }

    fn on_job(&mut self, t: f64, job: &VisionJob) {
        let name = job.metadata.name.clone().unwrap_or_default();
        let st = job.status.clone().unwrap_or_default();
        let j = self.jobs.entry(name).or_default();
        let phase = st.phase;
        let gpus = st.gpus.or(job.spec.gpus).unwrap_or(1);
        let held = j.phase.is_some_and(|p| p.holds_slot());
        let holds = phase.is_some_and(|p| p.holds_slot());
        if held {
            self.holding -= 1;
            self.gpus -= j.gpus;
        }
        if holds {
            self.holding += 1;
            self.gpus += gpus;
        }
        self.max_holding = self.max_holding.max(self.holding);
        self.max_gpus = self.max_gpus.max(self.gpus);
        if j.phase != phase || j.reason != st.reason || j.attempts != st.attempts.unwrap_or(0) {
            self.last_change = self.last_change.max(t);
        }
        j.gpus = gpus;
        j.phase = phase;
        j.reason = st.reason.clone();
        j.message = st.message.clone();
        j.attempts = st.attempts.unwrap_or(0);
        if j.admitted.is_none() && st.admitted_at.is_some() {
            j.admitted = Some(t);
            self.events.push((t, Ev::Admitted));
        }
        if j.final_at.is_none() && phase.is_some_and(|p| p.is_final()) {
            j.final_at = Some(t);
            self.finals += 1;
            if j.attempts == 0 && !j.had_pod {
                self.events.push((t, Ev::FinalWithoutPod));
                // A pod seen later would make it wait twice; mark it.
                j.had_pod = true;
            } else {
                self.events.push((t, Ev::Final));
            }
        }
    }

    fn on_pod(&mut self, t: f64, pod: &Pod) {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
        let ended_now = matches!(phase.as_deref(), Some("Succeeded") | Some("Failed"))
            || pod.metadata.deletion_timestamp.is_some();
        if !self.pods.contains_key(&name) {
            self.pods.insert(name.clone(), false);
            self.live_pods += 1;
            self.max_live_pods = self.max_live_pods.max(self.live_pods);
            let job = pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(vision_api::contract::LABEL_JOB))
                .cloned()
                .unwrap_or_else(|| name.clone());
            let j = self.jobs.entry(job).or_default();
            let first = !j.had_pod;
            j.had_pod = true;
            j.pod_created.get_or_insert(t);
            self.events.push((t, Ev::PodCreated { first }));
            self.last_change = self.last_change.max(t);
        }
        if ended_now
            && let Some(ended) = self.pods.get_mut(&name)
            && !*ended
        {
            *ended = true;
            let job = pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(vision_api::contract::LABEL_JOB))
                .cloned()
                .unwrap_or_else(|| name.clone());
            if let Some(j) = self.jobs.get_mut(&job) {
                j.pod_ended = Some(t);
            }
            self.live_pods -= 1;
            self.events.push((t, Ev::PodEnded));
            self.last_change = self.last_change.max(t);
        }
    }

    /// How many of the known jobs are in each state.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for j in self.jobs.values() {
            match j.phase {
                None | Some(JobPhase::Queued) | Some(JobPhase::Suspended) => c.queued += 1,
                Some(JobPhase::Admitted) | Some(JobPhase::Running) => c.holding += 1,
                Some(JobPhase::Succeeded) => c.succeeded += 1,
                Some(JobPhase::Failed) | Some(JobPhase::Rejected) => c.failed += 1,
            }
        }
        c
    }

    /// Creation (as acknowledged to this client) to first seen admitted, ms.
    pub fn waits_ms(&self) -> Vec<f64> {
        self.jobs
            .values()
            .filter_map(|j| Some(j.admitted? - j.submitted?))
            .map(|w| w.max(0.0))
            .collect()
    }

    /// Where the time between a pod ending and the next pod goes, per job.
    pub fn stages_ms(&self) -> Stages {
        let ended_to_final = self
            .jobs
            .values()
            .filter_map(|j| Some(j.final_at? - j.pod_ended?))
            .collect();
        let admitted_to_pod = self
            .jobs
            .values()
            .filter_map(|j| Some(j.pod_created? - j.admitted?))
            .collect();
        Stages {
            ended_to_final,
            admitted_to_pod,
        }
    }

    /// Final jobs other than Succeeded, by phase and reason.
    pub fn failures(&self) -> BTreeMap<String, u32> {
        let mut m = BTreeMap::new();
        for j in self.jobs.values() {
            if let Some(p) = j.phase
                && p.is_final()
                && p != JobPhase::Succeeded
            {
                let k = format!("{p}/{}", j.reason.as_deref().unwrap_or("-"));
                *m.entry(k).or_default() += 1;
            }
        }
        m
    }
}

/// The jobs of a run by state (see [`Tracker::counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Waiting, suspended, or not yet seen with a status.
    pub queued: usize,
    /// Admitted or Running: holding a slot.
    pub holding: usize,
    pub succeeded: usize,
    /// Failed or Rejected.
    pub failed: usize,
}

/// The two stages of a refill, per job, in ms.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stages {
    /// Its last pod seen ending -> the job seen final.
    pub ended_to_final: Vec<f64>,
    /// The job seen admitted -> its first pod seen created.
    pub admitted_to_pod: Vec<f64>,
}

/// A queue's limits as last read; `None` when unknown or unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueLimits {
    /// `maxRunning`; `None` also when the queue does not exist.
    pub slots: Option<i32>,
    /// `maxGPUs`.
    pub gpus: Option<i32>,
}

/// Drains every message already waiting.
pub fn drain(rx: &mut mpsc::UnboundedReceiver<Msg>, tr: &mut Tracker) {
    while let Ok(m) = rx.try_recv() {
        tr.handle(m);
    }
}

/// Watches one run's jobs and their pods in a namespace, and waits until
/// both watches have listed what exists.
pub async fn track_jobs_and_pods(
    client: &Client,
    namespace: &str,
    run: &str,
    start: Instant,
) -> Result<(
    mpsc::UnboundedSender<Msg>,
    mpsc::UnboundedReceiver<Msg>,
    Tracker,
)> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut tr = Tracker::default();
    watch_jobs(client, namespace, run, start, tx.clone());
    watch_pods(
        client,
        namespace,
        vision_api::contract::LABEL_JOB_UID,
        run,
        start,
        tx.clone(),
    );
    wait_synced(&mut rx, &mut tr, 2).await?;
    Ok((tx, rx, tr))
}

/// Waits until `n` watches have listed what exists.
pub async fn wait_synced(
    rx: &mut mpsc::UnboundedReceiver<Msg>,
    tr: &mut Tracker,
    n: usize,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while tr.synced < n {
        match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            Ok(Some(m)) => tr.handle(m),
            Ok(None) => return Err(fail("the watches ended")),
            Err(_) => return Err(fail("the watches did not sync within 60s")),
        }
    }
    Ok(())
}

/// The live view of a run: indicatif bars on a terminal (they fit its
/// width), plain lines every `every` otherwise (CI, `NO_BARS=1`).
pub struct View {
    bars: Option<Bars>,
    last_plain: Option<Instant>,
    every: Duration,
    title: String,
}

struct Bars {
    header: ProgressBar,
    queued: ProgressBar,
    running: ProgressBar,
    done: ProgressBar,
    failed: ProgressBar,
}

impl Bars {
    fn new(total: usize) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(5));
        let header = multi.add(ProgressBar::new_spinner());
        header.set_style(ProgressStyle::with_template("{msg}").expect("a valid template"));
        let bar = |name: &'static str, len: usize| {
            let b = multi.add(ProgressBar::new(len as u64));
            b.set_style(
                ProgressStyle::with_template("  {prefix:8} {wide_bar} {pos:>6}/{len} {msg}")
                    .expect("a valid template")
                    .progress_chars("█▉░"),
            );
            b.set_prefix(name);
            b
        };
        Bars {
            queued: bar("queued", total),
            running: bar("running", total),
            done: bar("done", total),
            failed: bar("failed", total),
            header,
        }
    }
}

impl View {
    pub fn new(title: String, plain_every: Duration) -> Self {
        let tty = std::io::stderr().is_terminal() && std::env::var_os("NO_BARS").is_none();
        View {
            bars: tty.then(|| Bars::new(0)),
            last_plain: None,
            every: plain_every,
            title,
        }
    }

    pub fn is_tty(&self) -> bool {
        self.bars.is_some()
    }

    /// Draws the state of `tr` against the queue's `limits`.
    pub fn draw(
        &mut self,
        tr: &Tracker,
        total: usize,
        limits: QueueLimits,
        elapsed: Duration,
        force: bool,
    ) {
        let c = tr.counts();
        let queued = c.queued + total.saturating_sub(tr.jobs.len());
        let gpus = match limits.gpus {
            Some(m) => format!("{}/{m}", tr.gpus),
            None => tr.gpus.to_string(),
        };
        if let Some(b) = &self.bars {
            let slots = limits.slots.map(|m| m.max(0) as usize).unwrap_or(total);
            b.header
                .set_message(format!("{}  {:.1}s", self.title, elapsed.as_secs_f64()));
            for (bar, n, len) in [
                (&b.queued, queued, total),
                (&b.running, c.holding, slots.max(1)),
                (&b.done, c.succeeded, total),
                (&b.failed, c.failed, total),
            ] {
                bar.set_length(len as u64);
                bar.set_position(n as u64);
            }
            b.running
                .set_message(format!("GPUs {gpus}  pods {}", tr.live_pods));
            return;
        }
        let due = self.last_plain.is_none_or(|t| t.elapsed() >= self.every);
        if due || force {
            let running_of = limits
                .slots
                .map(|m| format!("/{m} slots"))
                .unwrap_or_default();
            eprintln!(
                "[{:>6.1}s] queued {queued}  running {}{running_of}  GPUs {gpus}  done {}  failed {}  (of {total})",
                elapsed.as_secs_f64(),
                c.holding,
                c.succeeded,
                c.failed
            );
            self.last_plain = Some(Instant::now());
        }
    }

    /// Leaves the bars drawn as they are, so that what follows prints below.
    pub fn finish(&mut self) {
        if let Some(b) = self.bars.take() {
            for bar in [&b.header, &b.queued, &b.running, &b.done, &b.failed] {
                bar.abandon();
            }
        }
    }
}

/// The queue's limits, if it exists (and can be read).
pub async fn queue_limits(client: &Client, queue: &str) -> QueueLimits {
    let api: Api<VisionQueue> = Api::all(client.clone());
    match api.get_opt(queue).await {
        Ok(Some(q)) => QueueLimits {
            slots: Some(q.spec.max_running),
            gpus: q.spec.max_gpus,
        },
        _ => QueueLimits::default(),
    }
}

/// How a followed run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Done,
    Stalled,
    TimedOut,
    Interrupted,
}

/// Follows a run until every job is final (or it stalls, times out, or is
/// interrupted), drawing the view.
#[allow(clippy::too_many_arguments)]
pub async fn follow(
    client: &Client,
    rx: &mut mpsc::UnboundedReceiver<Msg>,
    tr: &mut Tracker,
    view: &mut View,
    queue: &str,
    total: usize,
    start: Instant,
    stall: Duration,
    timeout: Duration,
) -> End {
    let end = follow_until_end(client, rx, tr, view, queue, total, start, stall, timeout).await;
    view.finish();
    end
}

#[allow(clippy::too_many_arguments)]
async fn follow_until_end(
    client: &Client,
    rx: &mut mpsc::UnboundedReceiver<Msg>,
    tr: &mut Tracker,
    view: &mut View,
    queue: &str,
    total: usize,
    start: Instant,
    stall: Duration,
    timeout: Duration,
) -> End {
    let mut tick = tokio::time::interval(Duration::from_millis(if view.is_tty() {
        200
    } else {
        1000
    }));
    let mut limits = queue_limits(client, queue).await;
    let mut last_limits = Instant::now();
    let ctrl_c = tokio::signal::ctrl_c();
    let mut ctrl_c = pin!(ctrl_c);
    loop {
        tokio::select! {
            m = rx.recv() => {
                match m {
                    Some(m) => tr.handle(m),
                    None => return End::Interrupted,
                }
                drain(rx, tr);
            }
            _ = tick.tick() => {
                if last_limits.elapsed() > Duration::from_secs(2) {
                    limits = queue_limits(client, queue).await;
                    last_limits = Instant::now();
                }
                view.draw(tr, total, limits, start.elapsed(), false);
                let now = start.elapsed().as_secs_f64() * 1000.0;
                if now - tr.last_change > stall.as_secs_f64() * 1000.0 {
                    return End::Stalled;
                }
                if start.elapsed() > timeout {
                    return End::TimedOut;
                }
            }
            _ = &mut ctrl_c => return End::Interrupted,
        }
        let failed_submissions: u32 = tr.submit_errors.values().sum();
        if tr.finals + failed_submissions as usize >= total {
            view.draw(tr, total, limits, start.elapsed(), true);
            return End::Done;
        }
    }
}

/// Prints the jobs that are not final, grouped by phase and message.
pub fn print_stuck(tr: &Tracker) {
    let mut groups: BTreeMap<String, (u32, String)> = BTreeMap::new();
    for (name, j) in &tr.jobs {
        if j.phase.is_some_and(|p| p.is_final()) {
            continue;
        }
        let key = format!(
            "{} {} {}",
            j.phase
                .map(|p| p.to_string())
                .unwrap_or_else(|| "(no status)".into()),
            j.reason.as_deref().unwrap_or("-"),
            j.message.as_deref().unwrap_or("")
        );
        let e = groups.entry(key).or_insert((0, name.clone()));
        e.0 += 1;
    }
    for (k, (n, example)) in groups.iter().take(20) {
        eprintln!("  {n:>5} x {k}   (e.g. {example})");
    }
}

fn pct(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

fn secs(ms: Option<f64>) -> String {
    match ms {
        Some(ms) if ms >= 10_000.0 => format!("{:.1}s", ms / 1000.0),
        Some(ms) => format!("{:.0}ms", ms),
        None => "-".into(),
    }
}

/// The summary of a demo run.
pub fn print_summary(tr: &Tracker, limits: QueueLimits) {
    let a = analyze(&tr.events, limits.slots.unwrap_or(1).max(1) as u32);
    let Counts {
        succeeded: s,
        failed: f,
        ..
    } = tr.counts();
    let waits = tr.waits_ms();
    let p = |q| percentile(&waits, q);
    println!();
    println!("Summary");
    println!(
        "  {} jobs finished in {:.1}s: {:.1} jobs/s ({s} succeeded, {f} failed or rejected)",
        a.finals,
        a.makespan_ms / 1000.0,
        a.finals as f64 / (a.makespan_ms / 1000.0).max(1e-3)
    );
    println!(
        "  wait (created -> admitted, as seen by this client): p50 {}  p99 {}  max {}",
        secs(p(50.0)),
        secs(p(99.0)),
        secs(p(100.0))
    );
    if let Some(u) = a.utilisation_while_waiting {
        println!(
            "  slot utilisation while jobs waited: {} (live pods / {} slots, over {:.1}s of waiting)",
            pct(u),
            limits.slots.unwrap_or(0),
            a.waiting_ms / 1000.0
        );
    }
    let refill = |q| percentile(&a.refill_ms, q);
    println!(
        "  refill latency (pod ended -> next pod created, while jobs waited): p50 {}  p99 {}",
        secs(refill(50.0)),
        secs(refill(99.0))
    );
    let over = |seen: usize, limit: Option<i32>| match limit {
        Some(l) if seen as i64 > l as i64 => "  <-- OVER THE LIMIT",
        _ => "",
    };
    println!(
        "  highest concurrency: {} jobs holding a slot, {} pods alive at once (limit {}){}",
        tr.max_holding,
        tr.max_live_pods,
        limits
            .slots
            .map(|l| l.to_string())
            .unwrap_or_else(|| "?".into()),
        over(tr.max_holding.max(tr.max_live_pods), limits.slots)
    );
    println!(
        "  highest GPUs in use: {} (limit {}){}",
        tr.max_gpus,
        limits
            .gpus
            .map(|l| l.to_string())
            .unwrap_or_else(|| "none".into()),
        over(tr.max_gpus.max(0) as usize, limits.gpus)
    );
    let retried = tr.jobs.values().filter(|j| j.attempts > 1).count();
    println!("  jobs that needed a retry: {retried}");
    let failures = tr.failures();
    if failures.is_empty() {
        println!("  failures: none");
    } else {
        println!("  failures by reason:");
        for (k, n) in &failures {
            println!("    {n:>5}  {k}");
        }
    }
    for (e, n) in &tr.submit_errors {
        println!("  submission errors ({n}x): {e}");
    }
    for (e, n) in &tr.watch_errors {
        println!("  watch errors ({n}x): {e}");
    }
}

/// Server-side applies an object with the field manager `visionctl` (which
/// earlier runs used, so that a re-run owns the same fields).
pub async fn apply<K>(api: &Api<K>, name: &str, obj: &K) -> Result<()>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply("visionctl").force(),
        &Patch::Apply(obj),
    )
    .await?;
    Ok(())
}

/// Deletes every VisionJob (and pod) of `namespace` and waits until they are
/// gone (the operator removes its finalizer first, so it must run).
pub async fn delete_all(client: &Client, namespace: &str, timeout: Duration) -> Result<()> {
    let jobs: Api<VisionJob> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let dp = DeleteParams::background();
    let lp = ListParams::default();
    // Deleting thousands of jobs in one request can outlast the API server's
    // request timeout; it goes on server-side, so retry and then poll.
    for attempt in 1..=5 {
        let j = jobs.delete_collection(&dp, &lp).await;
        let p = pods.delete_collection(&dp, &lp).await;
        match (j, p) {
            (Ok(_), Ok(_)) => break,
            (j, p) => {
                let e = j
                    .err()
                    .or(p.err())
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                eprintln!("delete in {namespace} (attempt {attempt}): {e}");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
    let deadline = Instant::now() + timeout;
    let mut last_print = Instant::now();
    loop {
        let j = jobs.list_metadata(&ListParams::default().limit(1)).await;
        let p = pods.list_metadata(&ListParams::default().limit(1)).await;
        if let (Ok(j), Ok(p)) = (&j, &p)
            && j.items.is_empty()
            && p.items.is_empty()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            let left = jobs
                .list_metadata(&ListParams::default())
                .await
                .map(|l| l.items.len())
                .unwrap_or(0);
            return Err(fail(format!(
                "{left} VisionJobs of {namespace} still exist after {}s (is the operator running? it removes their finalizer)",
                timeout.as_secs()
            )));
        }
        if last_print.elapsed() > Duration::from_secs(15) {
            let left = j
                .ok()
                .and_then(|l| l.metadata.remaining_item_count)
                .map(|n| (n + 1).to_string())
                .unwrap_or_else(|| "some".into());
            eprintln!("waiting for {left} VisionJobs of {namespace} to go ...");
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vision_api::testing::{JobFixture, mk_job};

    fn job(name: &str, phase: JobPhase, attempts: i32) -> Msg {
        Msg::Job(
            0.0,
            Box::new(mk_job("ns", name, "detect").with_phase(phase, attempts)),
        )
    }

    #[test]
    fn the_tracker_counts_states_slots_and_finals() {
        let mut tr = Tracker::default();
        tr.handle(Msg::Submitted(1.0, "a".into()));
        tr.handle(Msg::Submitted(2.0, "b".into()));
        tr.handle(Msg::Submitted(3.0, "c".into()));
        tr.handle(job("a", JobPhase::Running, 1));
        tr.handle(job("b", JobPhase::Queued, 0));
        tr.handle(job("c", JobPhase::Rejected, 0));
        assert_eq!(
            tr.counts(),
            Counts {
                queued: 1,
                holding: 1,
                succeeded: 0,
                failed: 1
            }
        );
        assert_eq!((tr.holding, tr.gpus, tr.finals), (1, 1, 1));
        tr.handle(job("a", JobPhase::Succeeded, 1));
        assert_eq!(
            (tr.holding, tr.gpus, tr.max_holding, tr.finals),
            (0, 0, 1, 2)
        );
        let mut failures = BTreeMap::new();
        failures.insert("Rejected/-".to_string(), 1);
        assert_eq!(tr.failures(), failures);
        tr.handle(Msg::SubmitFailed("quota".into()));
        tr.handle(Msg::SubmitFailed("quota".into()));
        assert_eq!(tr.submit_errors.get("quota"), Some(&2));
    }
}
