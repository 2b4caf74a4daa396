//! `vision-dev bench fairness` (issue 17, docs/FAIRNESS.md): tenants of one
//! queue measured on the live cluster. Two tenants with weights 3:1 keep a
//! queue of `max_running` slots saturated (each keeps a backlog topped up)
//! for `minutes`; a third tenant starts submitting at `late_minute`; urgent
//! jobs of a higher priority arrive every `urgent_every`, with the queue's
//! preemption policy `preemption` (`LowerPriority` by default: the late
//! tenant then reaches its share from free slots only;
//! `LowerPriorityOrOverShare`: it may evict jobs of the tenants over their
//! share). Measured from outside, from the API server:
//!
//! - each tenant's share of slot-time over every window (sliding by 60 s,
//!   from the first minute on), from the jobs' `status.admittedAt` and
//!   `finishedAt`; a preempted attempt counts from its `admittedAt` to when
//!   the watch saw it `Queued` again;
//! - the third tenant's time from its first job to holding its share of the
//!   slots, and the jobs preempted (seen `Queued` again) in that time;
//! - each urgent job's admission latency: from its create call's answer to
//!   the watch seeing it `Admitted` (client clock, ms);
//! - invariants: every job submitted ends `Succeeded` (0 lost), every
//!   preempted job finishes after its preemption, and the pods that run at
//!   once (pod watch) never exceed the queue's `maxRunning`.
//!
//! It takes the end-to-end tests' cluster turn (the Lease of
//! `vision_chaos::turn`, same protocol) for the whole run and starts the
//! operator itself once it holds it, so that no test's operator competes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::PostParams;
use kube::runtime::watcher;
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{Error, Result, fail};
use crate::run::{RUN_KEY, apply, delete_all, run_id};
use crate::stats::Percentiles;
use crate::turn::Turn;
use vision_api::{
    JobPhase, PreemptionPolicy, QueueOrdering, QueuePreemption, QueueTenancy, TenantSpec,
    VisionAlgorithm, VisionJob, VisionJobSpec, VisionQueue, VisionQueueSpec,
};
use visionctl::cluster::ensure_namespace;

const SIM: &str = "sim.vision.zjlab.io/";
/// The label that names a job's tenant (the platform case: one namespace).
pub const TENANT_LABEL: &str = "bench.vision.zjlab.io/tenant";

/// How vision-dev starts the operator once it holds the turn.
#[derive(Debug, Clone)]
pub struct OperatorCmd {
    pub bin: PathBuf,
    pub args: Vec<String>,
    pub log: PathBuf,
    /// Polled until it answers 200 (http://host:port/readyz).
    pub ready_url: String,
}

/// Parameters of the scenario.
#[derive(Debug, Clone)]
pub struct FairnessArgs {
    pub namespace: String,
    pub queue: String,
    pub algorithm: String,
    pub minutes: f64,
    pub max_running: i32,
    pub job_ms: u64,
    /// Jobs each tenant keeps waiting.
    pub backlog: usize,
    /// When the third tenant starts submitting, minutes from the start.
    pub late_minute: f64,
    /// One urgent job this often (from the first minute on); 0: none.
    pub urgent_every: Duration,
    /// terminationGracePeriodSeconds of the algorithm's pods.
    pub grace_seconds: i64,
    /// The share window, seconds.
    pub window_seconds: u64,
    /// The queue's `spec.preemption.withinQueue`.
    pub preemption: PreemptionPolicy,
    pub operator: Option<OperatorCmd>,
    pub out: Option<PathBuf>,
}

/// Tenants, weights and priorities of the scenario.
const TENANTS: [(&str, i32); 3] = [("alice", 3), ("bob", 1), ("carol", 1)];
const URGENT_TENANT: &str = "ops";
const URGENT_PRIORITY: i32 = 10;

/// One window's slot-time per tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub from_s: f64,
    pub to_s: f64,
    /// alice / (alice + bob), percent: the 3:1 pair's split (target 75).
    pub alice_of_pair_percent: f64,
    /// Each tenant's part of all slot-time in the window, percent.
    pub share_percent: BTreeMap<String, f64>,
    /// Slot-time over maxRunning x window, percent.
    pub utilisation_percent: f64,
}

/// The scenario's result (JSON with --out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fairness {
    pub minutes: f64,
    pub max_running: i32,
    pub job_ms: u64,
    pub windows: Vec<Window>,
    /// Largest |alice_of_pair - 75| over the windows, percentage points.
    pub worst_deviation_pp: Option<f64>,
    /// The queue's preemption policy (results written before it was an
    /// option ran `LowerPriority`).
    #[serde(default = "lower_priority")]
    pub preemption: PreemptionPolicy,
    /// The late tenant: first job created -> it holds floor(its share x slots), ms.
    pub late_tenant_to_share_ms: Option<f64>,
    pub late_tenant_share_slots: usize,
    /// The target for `late_tenant_to_share_ms` under `preemption`
    /// ([`late_target_ms`]); None in results written before it was recorded.
    #[serde(default)]
    pub late_tenant_target_ms: Option<u64>,
    /// Jobs seen preempted between the late tenant's first job and its
    /// reaching its share (an urgent job's victims in that time included).
    #[serde(default)]
    pub preempted_while_late_tenant_caught_up: usize,
    /// terminationGracePeriodSeconds of the pods (None: not recorded).
    #[serde(default)]
    pub grace_seconds: Option<i64>,
    /// Urgent jobs: create answered -> seen Admitted, ms.
    pub urgent_admission_ms: Percentiles,
    pub jobs_submitted: usize,
    pub jobs_succeeded: usize,
    pub jobs_lost: usize,
    pub preempted_jobs: usize,
    pub preempted_finished_later: usize,
    pub max_running_pods: usize,
}

#[derive(Debug, Default)]
struct JobRec {
    tenant: String,
    created_ms: Option<i64>,
    /// Client time the watch first saw it Admitted or Running.
    admitted_seen_ms: Option<i64>,
    /// admittedAt of the attempt that holds now.
    holding_since_ms: Option<i64>,
    /// Attempts' [admittedAt, end) in ms.
    spans: Vec<(i64, i64)>,
    preempted_seen_ms: Option<i64>,
    finished_ms: Option<i64>,
    phase: Option<JobPhase>,
}

#[derive(Debug, Default)]
struct State {
    jobs: HashMap<String, JobRec>,
    live_pods: HashSet<String>,
    max_pods: usize,
    late_first_ms: Option<i64>,
    late_reached_ms: Option<i64>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn ms(t: &Time) -> i64 {
    t.0.as_millisecond()
}

fn holds(p: Option<&JobPhase>) -> bool {
    matches!(p, Some(JobPhase::Admitted | JobPhase::Running))
}

impl State {
    fn observe(&mut self, job: &VisionJob, late_share: usize) {
        let Some(name) = job.metadata.name.clone() else {
            return;
        };
        let now = now_ms();
        let tenant = job
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(TENANT_LABEL))
            .cloned()
            .unwrap_or_default();
        let rec = self.jobs.entry(name).or_default();
        rec.tenant = tenant;
        let Some(s) = job.status.as_ref() else {
            return;
        };
        let phase = s.phase;
        if holds(phase.as_ref()) {
            rec.admitted_seen_ms.get_or_insert(now);
            if let Some(at) = s.admitted_at.as_ref() {
                rec.holding_since_ms = Some(ms(at));
            }
        }
        if phase == Some(JobPhase::Queued)
            && let Some(since) = rec.holding_since_ms.take()
        {
            rec.spans.push((since, now));
            rec.preempted_seen_ms = Some(now);
        }
        if matches!(phase, Some(JobPhase::Succeeded | JobPhase::Failed))
            && rec.finished_ms.is_none()
            && let (Some(a), Some(f)) = (s.admitted_at.as_ref(), s.finished_at.as_ref())
        {
            rec.holding_since_ms = None;
            rec.spans.push((ms(a), ms(f)));
            rec.finished_ms = Some(ms(f));
        }
        rec.phase = phase;
        if self.late_reached_ms.is_none() && self.late_first_ms.is_some() {
            let late = TENANTS[2].0;
            let held = self
                .jobs
                .values()
                .filter(|r| r.tenant == late && holds(r.phase.as_ref()))
                .count();
            if held >= late_share {
                self.late_reached_ms = Some(now);
            }
        }
    }
}

/// The slot-time of each tenant within [from, to), ms.
pub fn slot_time(spans: &[(String, i64, i64)], from: i64, to: i64) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for (tenant, a, b) in spans {
        let d = (*b).min(to) - (*a).max(from);
        if d > 0 {
            *out.entry(tenant.clone()).or_insert(0) += d;
        }
    }
    out
}

fn lower_priority() -> PreemptionPolicy {
    PreemptionPolicy::LowerPriority
}

/// `--preemption`: the policy's name as in `spec.preemption.withinQueue`.
pub fn parse_preemption(s: &str) -> std::result::Result<PreemptionPolicy, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
        format!("expected Never, LowerPriority or LowerPriorityOrOverShare, got '{s}'")
    })
}

/// Issue 17's bound on the late tenant's time to its share, ms: with
/// `LowerPriorityOrOverShare` it may evict the tenants over their share, so
/// its victims' grace period + 1 s; otherwise it waits for free slots, so one
/// job's run time + 1 s of refill.
pub fn late_target_ms(policy: PreemptionPolicy, job_ms: u64, grace_seconds: i64) -> u64 {
    match policy {
        PreemptionPolicy::LowerPriorityOrOverShare => {
            u64::try_from(grace_seconds).unwrap_or(0) * 1000 + 1000
        }
        PreemptionPolicy::Never | PreemptionPolicy::LowerPriority => job_ms + 1000,
    }
}

/// How many of the preemption times fall within [from, to] (ms).
pub fn preempted_between(seen_ms: impl IntoIterator<Item = i64>, from: i64, to: i64) -> usize {
    seen_ms
        .into_iter()
        .filter(|t| (from..=to).contains(t))
        .count()
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Windows of `len` s sliding by 60 s from the first minute to `total` s.
pub fn windows(
    spans: &[(String, i64, i64)],
    t0: i64,
    total_s: u64,
    len_s: u64,
    slots: i32,
) -> Vec<Window> {
    let mut out = Vec::new();
    let mut from = 60u64;
    while from + len_s <= total_s {
        let (a, b) = (t0 + from as i64 * 1000, t0 + (from + len_s) as i64 * 1000);
        let st = slot_time(spans, a, b);
        let total: i64 = st.values().sum();
        let get = |t: &str| st.get(t).copied().unwrap_or(0) as f64;
        let pair = get(TENANTS[0].0) + get(TENANTS[1].0);
        out.push(Window {
            from_s: from as f64,
            to_s: (from + len_s) as f64,
            alice_of_pair_percent: if pair > 0.0 {
                round1(100.0 * get(TENANTS[0].0) / pair)
            } else {
                0.0
            },
            share_percent: st
                .iter()
                .map(|(t, v)| (t.clone(), round1(100.0 * *v as f64 / total.max(1) as f64)))
                .collect(),
            utilisation_percent: round1(
                100.0 * total as f64 / (f64::from(slots) * len_s as f64 * 1000.0),
            ),
        });
        from += 60;
    }
    out
}

pub(crate) fn start_operator(op: &OperatorCmd) -> Result<Child> {
    let file = |source| Error::File {
        path: op.log.clone(),
        source,
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&op.log)
        .map_err(file)?;
    let err = log.try_clone().map_err(file)?;
    Command::new(&op.bin)
        .args(&op.args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(|source| Error::File {
            path: op.bin.clone(),
            source,
        })
}

pub(crate) async fn wait_ready(child: &mut Child, url: &str) -> Result<()> {
    for _ in 0..240 {
        let u = url.to_string();
        if tokio::task::spawn_blocking(move || crate::bench::http_get(&u).is_ok())
            .await
            .unwrap_or(false)
        {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(fail(format!("the operator exited: {status}")));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(fail("the operator did not become ready in 120 s"))
}

/// SIGTERM (the operator releases its lease), then SIGKILL after 10 s.
pub(crate) fn stop_operator(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    for _ in 0..40 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let _ = child.kill();
    let _ = child.wait();
}

async fn install(client: &Client, a: &FairnessArgs) -> Result<()> {
    let template: k8s_openapi::api::core::v1::PodTemplateSpec = serde_json::from_value(json!({
        "metadata": {"annotations": {
            format!("{SIM}duration"): format!("{}ms", a.job_ms),
            format!("{SIM}message"): "{\"ok\":true}",
        }},
        "spec": {
            "terminationGracePeriodSeconds": a.grace_seconds,
            "containers": [{"name": "algorithm", "image": "bench.invalid/sim:1"}]
        }
    }))?;
    let alg = crate::bench::sim_algorithm(&a.algorithm, template, 1);
    apply(
        &Api::<VisionAlgorithm>::all(client.clone()),
        &a.algorithm,
        &alg,
    )
    .await?;
    let q = VisionQueue::new(
        &a.queue,
        VisionQueueSpec {
            max_running: a.max_running,
            max_gpus: None,
            max_pending: None,
            ordering: QueueOrdering::BestEffortFIFO,
            paused: false,
            tenancy: Some(QueueTenancy {
                tenant_label: Some(TENANT_LABEL.into()),
                default_weight: 1,
                default_limits: None,
                tenants: TENANTS
                    .iter()
                    .map(|(name, w)| TenantSpec {
                        name: (*name).into(),
                        weight: Some(*w),
                        limits: None,
                    })
                    .collect(),
                usage_half_life_seconds: 600,
            }),
            preemption: Some(QueuePreemption {
                within_queue: a.preemption,
            }),
            default_ttl_seconds_after_finished: None,
            pod_retention: None,
        },
    );
    apply(&Api::<VisionQueue>::all(client.clone()), &a.queue, &q).await?;
    Ok(())
}

fn job(a: &FairnessArgs, run: &str, tenant: &str, i: usize, priority: i32) -> VisionJob {
    let mut job = VisionJob::new(
        "",
        VisionJobSpec {
            algorithm: a.algorithm.clone(),
            queue: a.queue.clone(),
            priority,
            input: Some(json!({"n": i})),
            params: None,
            gpus: None,
            timeout_seconds: None,
            retries: None,
            suspend: false,
            ttl_seconds_after_finished: None,
            output: None,
        },
    );
    job.metadata = ObjectMeta {
        name: Some(format!("f-{run}-{tenant}-{i:05}")),
        namespace: Some(a.namespace.clone()),
        labels: Some(BTreeMap::from([
            (RUN_KEY.to_string(), run.to_string()),
            (TENANT_LABEL.to_string(), tenant.to_string()),
        ])),
        ..Default::default()
    };
    job
}

/// Creates a job and records its creation (client time after the answer).
async fn create(api: &Api<VisionJob>, state: &Arc<Mutex<State>>, j: VisionJob) -> Result<()> {
    let name = j.metadata.name.clone().unwrap_or_default();
    let tenant = j
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(TENANT_LABEL))
        .cloned()
        .unwrap_or_default();
    api.create(&PostParams::default(), &j).await?;
    let now = now_ms();
    let mut s = state.lock().expect("state");
    let rec = s.jobs.entry(name).or_default();
    rec.created_ms = Some(now);
    rec.tenant = tenant;
    Ok(())
}

/// Runs the scenario; prints and returns its result.
pub async fn fairness(client: &Client, a: &FairnessArgs) -> Result<Fairness> {
    let holder = format!("bench-fairness-{}", run_id());
    let turn = Turn::take(client, &holder, Duration::from_secs(30 * 60))
        .await
        .map_err(fail)?;
    eprintln!("holding the cluster turn");
    let mut operator = match &a.operator {
        Some(op) => {
            let mut child = start_operator(op)?;
            if let Err(e) = wait_ready(&mut child, &op.ready_url).await {
                stop_operator(&mut child);
                turn.release().await;
                return Err(e);
            }
            Some(child)
        }
        None => None,
    };
    let result = scenario(client, a).await;
    if let Some(child) = operator.as_mut() {
        stop_operator(child);
    }
    turn.release().await;
    let r = result?;
    print(&r);
    if let Some(path) = &a.out {
        std::fs::write(path, serde_json::to_string_pretty(&r)?).map_err(|source| Error::File {
            path: path.clone(),
            source,
        })?;
        eprintln!("wrote {}", path.display());
    }
    Ok(r)
}

async fn scenario(client: &Client, a: &FairnessArgs) -> Result<Fairness> {
    ensure_namespace(client, &a.namespace).await?;
    delete_all(client, &a.namespace, Duration::from_secs(300)).await?;
    install(client, a).await?;
    let run = run_id();
    let weights: i32 = TENANTS.iter().map(|t| t.1).sum();
    let late_share = (a.max_running as usize * TENANTS[2].1 as usize) / weights as usize;
    let state = Arc::new(Mutex::new(State::default()));
    let selector = format!("{RUN_KEY}={run}");

    // The job watch.
    let jobs: Api<VisionJob> = Api::namespaced(client.clone(), &a.namespace);
    let st = state.clone();
    let cfg = watcher::Config::default().labels(&selector);
    let job_watch = tokio::spawn(async move {
        let mut w = watcher(jobs, cfg).boxed();
        while let Some(ev) = w.next().await {
            if let Ok(watcher::Event::Apply(j) | watcher::Event::InitApply(j)) = ev {
                st.lock().expect("state").observe(&j, late_share);
            }
        }
    });
    // The pod watch: pods that exist and have not ended.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &a.namespace);
    let st = state.clone();
    let pod_watch = tokio::spawn(async move {
        let mut w = watcher(pods, watcher::Config::default()).boxed();
        while let Some(ev) = w.next().await {
            let mut s = st.lock().expect("state");
            match ev {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    let ended = matches!(
                        p.status.as_ref().and_then(|x| x.phase.as_deref()),
                        Some("Succeeded" | "Failed")
                    );
                    if ended {
                        s.live_pods.remove(&name);
                    } else {
                        s.live_pods.insert(name);
                    }
                    s.max_pods = s.max_pods.max(s.live_pods.len());
                }
                Ok(watcher::Event::Delete(p)) => {
                    s.live_pods.remove(&p.metadata.name.unwrap_or_default());
                }
                _ => {}
            }
        }
    });

    let api: Api<VisionJob> = Api::namespaced(client.clone(), &a.namespace);
    let t0 = now_ms();
    let start = Instant::now();
    let total = Duration::from_secs_f64(a.minutes * 60.0);
    let late_at = Duration::from_secs_f64(a.late_minute * 60.0);
    let mut next: HashMap<&str, usize> = HashMap::new();
    let mut urgent_n = 0usize;
    let mut urgent_next = Duration::from_secs(60);
    eprintln!(
        "run {run}: {} min, {} slots, jobs of {} ms, backlog {} per tenant",
        a.minutes, a.max_running, a.job_ms, a.backlog
    );
    let mut last_print = 0u64;
    while start.elapsed() < total {
        let el = start.elapsed();
        for (i, (tenant, _)) in TENANTS.iter().enumerate() {
            if i == 2 && el < late_at {
                continue;
            }
            let waiting = {
                let s = state.lock().expect("state");
                s.jobs
                    .values()
                    .filter(|r| {
                        r.tenant == *tenant
                            && (r.phase.is_none() || r.phase == Some(JobPhase::Queued))
                    })
                    .count()
            };
            for _ in waiting..a.backlog {
                let n = next.entry(tenant).or_insert(0);
                let j = job(a, &run, tenant, *n, 0);
                *n += 1;
                create(&api, &state, j).await?;
                if i == 2 {
                    let mut s = state.lock().expect("state");
                    s.late_first_ms.get_or_insert_with(now_ms);
                }
            }
        }
        if !a.urgent_every.is_zero() && el >= urgent_next {
            let j = job(a, &run, URGENT_TENANT, urgent_n, URGENT_PRIORITY);
            urgent_n += 1;
            create(&api, &state, j).await?;
            urgent_next += a.urgent_every;
        }
        if el.as_secs() / 30 != last_print {
            last_print = el.as_secs() / 30;
            let s = state.lock().expect("state");
            let mut held: BTreeMap<&str, usize> = BTreeMap::new();
            for r in s.jobs.values().filter(|r| holds(r.phase.as_ref())) {
                *held.entry(r.tenant.as_str()).or_default() += 1;
            }
            eprintln!(
                "t={:>4}s holding {held:?}, pods {} (max {})",
                el.as_secs(),
                s.live_pods.len(),
                s.max_pods
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("submissions stopped; waiting for every job to end");
    let drain_deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let open = {
            let s = state.lock().expect("state");
            s.jobs.values().filter(|r| r.finished_ms.is_none()).count()
        };
        if open == 0 {
            break;
        }
        if Instant::now() > drain_deadline {
            eprintln!("{open} jobs still open after 600 s");
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    job_watch.abort();
    pod_watch.abort();

    let r = summarize(&state.lock().expect("state"), a, t0, late_share);
    delete_all(client, &a.namespace, Duration::from_secs(600)).await?;
    Ok(r)
}

fn summarize(s: &State, a: &FairnessArgs, t0: i64, late_share: usize) -> Fairness {
    let spans: Vec<(String, i64, i64)> = s
        .jobs
        .values()
        .flat_map(|r| r.spans.iter().map(|(x, y)| (r.tenant.clone(), *x, *y)))
        .collect();
    let total_s = (a.minutes * 60.0) as u64;
    let ws = windows(&spans, t0, total_s, a.window_seconds, a.max_running);
    let worst = ws
        .iter()
        .map(|w| round1((w.alice_of_pair_percent - 75.0).abs()))
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    let urgent: Vec<f64> = s
        .jobs
        .values()
        .filter(|r| r.tenant == URGENT_TENANT)
        .filter_map(|r| Some((r.admitted_seen_ms? - r.created_ms?) as f64))
        .collect();
    let preempted: Vec<&JobRec> = s
        .jobs
        .values()
        .filter(|r| r.preempted_seen_ms.is_some())
        .collect();
    let succeeded = s
        .jobs
        .values()
        .filter(|r| r.phase == Some(JobPhase::Succeeded))
        .count();
    Fairness {
        minutes: a.minutes,
        max_running: a.max_running,
        job_ms: a.job_ms,
        windows: ws,
        worst_deviation_pp: worst,
        late_tenant_to_share_ms: match (s.late_first_ms, s.late_reached_ms) {
            (Some(f), Some(r)) => Some((r - f) as f64),
            _ => None,
        },
        late_tenant_share_slots: late_share,
        preemption: a.preemption,
        late_tenant_target_ms: Some(late_target_ms(a.preemption, a.job_ms, a.grace_seconds)),
        preempted_while_late_tenant_caught_up: match (s.late_first_ms, s.late_reached_ms) {
            (Some(f), Some(r)) => {
                preempted_between(s.jobs.values().filter_map(|j| j.preempted_seen_ms), f, r)
            }
            _ => 0,
        },
        grace_seconds: Some(a.grace_seconds),
        urgent_admission_ms: Percentiles::full(&urgent),
        jobs_submitted: s.jobs.len(),
        jobs_succeeded: succeeded,
        jobs_lost: s.jobs.len() - succeeded,
        preempted_jobs: preempted.len(),
        preempted_finished_later: preempted
            .iter()
            .filter(|r| {
                r.phase == Some(JobPhase::Succeeded)
                    && r.finished_ms
                        .zip(r.preempted_seen_ms)
                        .is_some_and(|(f, p)| f > p - 1000)
            })
            .count(),
        max_running_pods: s.max_pods,
    }
}

fn print(r: &Fairness) {
    println!(
        "\nFairness: weights alice 3, bob 1 (carol 1 from the late minute, ops urgent priority {URGENT_PRIORITY}); {} slots, jobs of {} ms, {} min",
        r.max_running, r.job_ms, r.minutes
    );
    println!(
        "  preemption: {:?}, pods' grace period {}",
        r.preemption,
        r.grace_seconds
            .map_or("-".to_string(), |g| format!("{g} s"))
    );
    println!(
        "  window       alice/(alice+bob)  shares of slot-time                      utilisation"
    );
    for w in &r.windows {
        let shares: Vec<String> = w
            .share_percent
            .iter()
            .map(|(t, p)| format!("{t} {p}%"))
            .collect();
        println!(
            "  {:>4}-{:<4}s  {:>5.1}%             {:<40} {:.1}%",
            w.from_s,
            w.to_s,
            w.alice_of_pair_percent,
            shares.join(", "),
            w.utilisation_percent
        );
    }
    let show = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.0} ms"));
    println!(
        "  worst deviation from 75/25: {} pp (target <= 5)",
        r.worst_deviation_pp
            .map_or("-".to_string(), |x| format!("{x:.1}"))
    );
    let target = r.late_tenant_target_ms.unwrap_or(r.job_ms + 1000);
    let how = if r.preemption == PreemptionPolicy::LowerPriorityOrOverShare {
        "grace period + 1 s, with preemption"
    } else {
        "one job + 1 s refill, without preemption"
    };
    println!(
        "  late tenant carol: first job -> holds {} slots: {} (target <= {target} ms: {how}); {} jobs preempted meanwhile",
        r.late_tenant_share_slots,
        show(r.late_tenant_to_share_ms),
        r.preempted_while_late_tenant_caught_up
    );
    let u = &r.urgent_admission_ms;
    println!(
        "  urgent jobs ({}): create -> Admitted p50 {} / p99 {} / max {}",
        u.samples.unwrap_or(0),
        show(u.p50),
        show(u.p99),
        show(u.max)
    );
    println!(
        "  jobs: {} submitted, {} succeeded, {} lost; {} preempted, {} of them finished later; max pods at once {} (maxRunning {})",
        r.jobs_submitted,
        r.jobs_succeeded,
        r.jobs_lost,
        r.preempted_jobs,
        r.preempted_finished_later,
        r.max_running_pods,
        r.max_running
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_time_clips_spans_to_the_window() {
        let spans = vec![
            ("alice".to_string(), 0, 10_000),
            ("bob".to_string(), 5_000, 20_000),
            ("alice".to_string(), 30_000, 40_000),
        ];
        let st = slot_time(&spans, 8_000, 35_000);
        assert_eq!(
            st,
            BTreeMap::from([("alice".to_string(), 7_000), ("bob".to_string(), 12_000)])
        );
    }

    #[test]
    fn preemption_policy_by_its_api_name() {
        assert_eq!(
            parse_preemption("LowerPriorityOrOverShare"),
            Ok(PreemptionPolicy::LowerPriorityOrOverShare)
        );
        assert_eq!(
            parse_preemption("LowerPriority"),
            Ok(PreemptionPolicy::LowerPriority)
        );
        assert_eq!(
            parse_preemption("lowerpriority"),
            Err(
                "expected Never, LowerPriority or LowerPriorityOrOverShare, got 'lowerpriority'"
                    .to_string()
            )
        );
    }

    #[test]
    fn late_target_is_the_grace_period_only_with_share_preemption() {
        assert_eq!(
            late_target_ms(PreemptionPolicy::LowerPriorityOrOverShare, 5000, 1),
            2000
        );
        assert_eq!(
            late_target_ms(PreemptionPolicy::LowerPriority, 5000, 1),
            6000
        );
        assert_eq!(late_target_ms(PreemptionPolicy::Never, 5000, 30), 6000);
    }

    #[test]
    fn preempted_between_counts_both_ends() {
        assert_eq!(
            preempted_between([999, 1000, 1500, 2000, 2001], 1000, 2000),
            3
        );
        assert_eq!(preempted_between([], 1000, 2000), 0);
    }

    #[test]
    fn results_written_before_the_policy_was_an_option_read_as_lower_priority() {
        let r = Fairness {
            minutes: 3.0,
            max_running: 32,
            job_ms: 5000,
            windows: vec![],
            worst_deviation_pp: None,
            preemption: PreemptionPolicy::LowerPriority,
            late_tenant_to_share_ms: Some(1370.0),
            late_tenant_share_slots: 6,
            late_tenant_target_ms: None,
            preempted_while_late_tenant_caught_up: 0,
            grace_seconds: None,
            urgent_admission_ms: Percentiles::full(&[]),
            jobs_submitted: 1,
            jobs_succeeded: 1,
            jobs_lost: 0,
            preempted_jobs: 0,
            preempted_finished_later: 0,
            max_running_pods: 1,
        };
        let mut v = serde_json::to_value(&r).expect("json");
        let o = v.as_object_mut().expect("object");
        for new in [
            "preemption",
            "late_tenant_target_ms",
            "preempted_while_late_tenant_caught_up",
            "grace_seconds",
        ] {
            assert!(o.remove(new).is_some(), "{new}");
        }
        assert_eq!(serde_json::from_value::<Fairness>(v).expect("old json"), r);
    }

    #[test]
    fn windows_slide_by_a_minute_from_the_first() {
        let spans: Vec<(String, i64, i64)> = (0..2)
            .flat_map(|slot| {
                let tenant = if slot == 0 { "alice" } else { "bob" };
                [(tenant.to_string(), 0, 300_000)]
            })
            .collect();
        let ws = windows(&spans, 0, 300, 120, 2);
        assert_eq!(
            ws.iter().map(|w| (w.from_s, w.to_s)).collect::<Vec<_>>(),
            vec![(60.0, 180.0), (120.0, 240.0), (180.0, 300.0)]
        );
        assert_eq!(ws[0].alice_of_pair_percent, 50.0);
        assert_eq!(ws[0].utilisation_percent, 100.0);
    }
}
