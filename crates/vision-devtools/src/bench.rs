//! `vision-dev bench`: the end-to-end benchmark scenarios on a live cluster
//! (throughput through the operator, the cluster's own ceiling with bare
//! pods, the operator's memory with many queued jobs). Each scenario returns
//! and writes a typed result ([`Throughput`], [`Ceiling`], [`Memory`], JSON
//! on disk); [`targets`] compares them with the goals of docs/PERFORMANCE.md.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;

use crate::error::{Error, Result, fail};
use crate::run::{
    End, Msg, RUN_KEY, Stages, Tracker, View, apply, delete_all, drain, follow, print_stuck,
    run_id, submit_all, track_jobs_and_pods, wait_synced, watch_jobs, watch_pods,
};
use crate::stats::{Ev, Percentiles, analyze, parse_prometheus};
use vision_api::{
    JobPhase, QueueOrdering, VisionAlgorithm, VisionAlgorithmSpec, VisionJob, VisionJobSpec,
    VisionQueue, VisionQueueSpec,
};
use visionctl::cluster::{ensure_namespace, list_all};

const SIM: &str = "sim.vision.zjlab.io/";
const CEILING_LABEL: &str = "visionctl.vision.zjlab.io/ceiling";

/// Parameters shared by the scenarios.
#[derive(Debug, Clone)]
pub struct BenchArgs {
    pub namespace: String,
    pub queue: String,
    pub algorithm: String,
    pub jobs: usize,
    pub max_running: i32,
    pub gpus: i32,
    pub runtime_ms: u64,
    pub concurrency: usize,
    pub operator_pid: Option<u32>,
    pub clk_tck: f64,
    pub out: Option<PathBuf>,
    pub timeout: Duration,
    /// The operator's /metrics URL (http://host:port/metrics).
    pub metrics_url: Option<String>,
}

/// Fetches a plain-HTTP URL (the operator's /metrics).
pub fn http_get(url: &str) -> Result<String> {
    let http = |source| Error::Http {
        url: url.to_string(),
        source: Box::new(source),
    };
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .build(),
    );
    agent
        .get(url)
        .call()
        .map_err(http)?
        .body_mut()
        .read_to_string()
        .map_err(http)
}

/// The operator's own counters worth reading next to the API server's, as
/// `name{label=value,...}` -> value; `None` when /metrics cannot be read.
fn operator_counters(url: &str) -> Option<BTreeMap<String, f64>> {
    let text = match http_get(url) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("operator counters: {}", crate::error::chain(&e));
            return None;
        }
    };
    let mut out = BTreeMap::new();
    for sample in parse_prometheus(&text) {
        let keep = [
            "reconcile_errors",
            "admission_rollbacks",
            "reconciles_total",
            "admissions_total",
            "job_retries",
        ]
        .iter()
        .any(|k| sample.name.contains(k));
        if !keep || sample.name.ends_with("_created") {
            continue;
        }
        let l: Vec<String> = sample
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let key = if l.is_empty() {
            sample.name
        } else {
            format!("{}{{{}}}", sample.name, l.join(","))
        };
        out.insert(key, sample.value);
    }
    Some(out)
}

/// What /proc says of a process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub cpu_ticks: u64,
}

pub fn proc_sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) start at field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(ProcSample {
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
        cpu_ticks: utime + stime,
    })
}

/// `apiserver_request_total` summed over codes: (verb, group, resource, subresource) -> n.
pub type RequestCounts = BTreeMap<(String, String, String, String), f64>;

pub async fn apiserver_requests(client: &Client) -> Result<RequestCounts> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(req).await?;
    let mut out = RequestCounts::new();
    for s in parse_prometheus(&text) {
        if s.name != "apiserver_request_total" {
            continue;
        }
        let key = [s.label("verb"), s.label("group"), s.label("resource")];
        *out.entry((
            key[0].to_string(),
            key[1].to_string(),
            key[2].to_string(),
            s.label("subresource").to_string(),
        ))
        .or_default() += s.value;
    }
    Ok(out)
}

pub(crate) fn delta(before: &RequestCounts, after: &RequestCounts) -> RequestCounts {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .map(|(k, v)| (k, v + 0.0))
        .collect()
}

fn sum(d: &RequestCounts, f: impl Fn(&str, &str, &str) -> bool) -> f64 {
    d.iter()
        .filter(|((verb, _, res, sub), _)| f(verb, res, sub))
        .map(|(_, v)| v)
        .sum::<f64>()
        + 0.0
}

const WRITE_VERBS: [&str; 5] = ["PATCH", "APPLY", "PUT", "DELETE", "DELETECOLLECTION"];

/// The benchmark's algorithm and queue.
/// The benchmarks' algorithm: pods of `template` on KWOK nodes, `gpus` per
/// job, no retries, no limit of its own.
pub(crate) fn sim_algorithm(
    name: &str,
    template: k8s_openapi::api::core::v1::PodTemplateSpec,
    gpus: i32,
) -> VisionAlgorithm {
    VisionAlgorithm::new(
        name,
        VisionAlgorithmSpec {
            template,
            gpus_per_job: gpus,
            max_gpus_per_job: Some(gpus),
            timeout_seconds: 3600,
            retries: 0,
            max_running: None,
            allowed_namespaces: vec![],
            circuit_breaker: None,
            mode: vision_api::AlgorithmMode::Pod,
            workers: None,
        },
    )
}

/// The pod template of the benchmarks' algorithm: KWOK runs its pods for
/// `runtime_ms` and ends them with a result.
pub(crate) fn sim_template(runtime_ms: u64) -> Result<k8s_openapi::api::core::v1::PodTemplateSpec> {
    Ok(serde_json::from_value(json!({
        "metadata": {"annotations": {
            format!("{SIM}duration"): format!("{runtime_ms}ms"),
            format!("{SIM}message"): "{\"ok\":true}",
        }},
        "spec": {"containers": [{"name": "algorithm", "image": "bench.invalid/sim:1"}]}
    }))?)
}

async fn install(client: &Client, a: &BenchArgs, queue: &str, paused: bool) -> Result<()> {
    let alg = sim_algorithm(&a.algorithm, sim_template(a.runtime_ms)?, a.gpus);
    apply(
        &Api::<VisionAlgorithm>::all(client.clone()),
        &a.algorithm,
        &alg,
    )
    .await?;
    apply(
        &Api::<VisionQueue>::all(client.clone()),
        queue,
        &bench_queue(queue, a.max_running, paused),
    )
    .await
}

/// The benchmarks' queue: `max_running` slots, no GPU limit, FIFO.
pub(crate) fn bench_queue(queue: &str, max_running: i32, paused: bool) -> VisionQueue {
    VisionQueue::new(
        queue,
        VisionQueueSpec {
            max_running,
            max_gpus: None,
            max_pending: None,
            ordering: QueueOrdering::BestEffortFIFO,
            paused,
            tenancy: None,
            preemption: None,
            default_ttl_seconds_after_finished: None,
            pod_retention: None,
        },
    )
}

pub(crate) fn bench_jobs(a: &BenchArgs, queue: &str, run: &str, n: usize) -> Vec<VisionJob> {
    (0..n)
        .map(|i| {
            let mut job = VisionJob::new(
                "",
                VisionJobSpec {
                    algorithm: a.algorithm.clone(),
                    queue: queue.into(),
                    priority: 0,
                    input: Some(json!({"frame": i})),
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
                name: Some(format!("b-{run}-{i:05}")),
                namespace: Some(a.namespace.clone()),
                labels: Some(BTreeMap::from([(RUN_KEY.to_string(), run.to_string())])),
                annotations: Some(BTreeMap::from([(RUN_KEY.to_string(), run.to_string())])),
                ..Default::default()
            };
            job
        })
        .collect()
}

/// Writes a scenario's result as pretty JSON to `--out`, if given.
fn write_out(a: &BenchArgs, result: &impl Serialize) -> Result<()> {
    if let Some(path) = &a.out {
        let file = |source| Error::File {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(file)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(result)?).map_err(file)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Reads a scenario's result written by [`write_out`].
pub fn read_result<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::File {
        path: path.into(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| Error::Parse {
        path: path.into(),
        source,
    })
}

pub(crate) fn round(x: f64, digits: i32) -> f64 {
    let k = 10f64.powi(digits);
    (x * k).round() / k
}

/// The result of the throughput scenario. Field names are those of the JSON
/// files earlier runs wrote, so that old results still read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Throughput {
    pub scenario: String,
    pub params: ThroughputParams,
    /// First submission to the last final phase.
    pub makespan_s: f64,
    /// ceil(jobs / maxRunning) x runtime.
    pub ideal_makespan_s: f64,
    pub makespan_over_ideal: f64,
    pub jobs_per_s: f64,
    pub utilisation_while_waiting: Option<f64>,
    pub waiting_s: f64,
    /// A pod ending -> the next pod created, while jobs waited.
    pub refill_ms: Percentiles,
    /// Created -> first seen admitted.
    pub wait_ms: Percentiles,
    pub stages_ms: RefillStages,
    pub admissions: usize,
    pub admissions_per_s: Option<f64>,
    pub max_live_pods: usize,
    pub max_holding: usize,
    /// Final jobs other than Succeeded, by `phase/reason`.
    pub failures: BTreeMap<String, u32>,
    pub api_requests: ApiRequests,
    pub operator: OperatorUsage,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThroughputParams {
    pub jobs: usize,
    pub max_running: i32,
    pub gpus_per_job: i32,
    pub runtime_ms: u64,
    pub submit_concurrency: usize,
}

/// The two stages of a refill (see [`Stages`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefillStages {
    pub pod_ended_to_job_final: Percentiles,
    pub job_admitted_to_pod_created: Percentiles,
}

/// API server requests during the run, from its `apiserver_request_total`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiRequests {
    pub visionjobs_writes: f64,
    pub pod_creates: f64,
    pub pod_deletes: f64,
    /// PATCHes of pods (not their status, which the kubelet or KWOK
    /// writes): the operator releasing a pod's tracking finalizer once the
    /// job's status holds its outcome. Missing in results before 2026-11-30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_patches: Option<f64>,
    /// The operator's Event writes: a POST per object, a PATCH per repetition.
    pub operator_event_writes: i64,
    pub operator_event_objects: usize,
    pub all_event_writes_in_cluster: f64,
    pub leases: f64,
    /// Job writes + pod creates, patches and deletes + its events + leases.
    pub operator_total: f64,
    pub per_job: f64,
    pub queue_and_algorithm_status_writes: f64,
    pub reads: f64,
    pub events_by_source: BTreeMap<String, i64>,
    /// `VERB resource[/subresource]` -> requests.
    pub by_verb: BTreeMap<String, f64>,
}

/// What the operator process used (from /proc and its /metrics).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperatorUsage {
    pub pid: Option<u32>,
    #[serde(rename = "peakRssMiB")]
    pub peak_rss_mib: Option<f64>,
    #[serde(rename = "rssMiB")]
    pub rss_mib: Option<f64>,
    pub cpu_s: Option<f64>,
    pub cpu_ms_per_job: Option<f64>,
    pub counters: Option<BTreeMap<String, f64>>,
}

/// The result of the ceiling scenario (bare pods, no operator).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ceiling {
    pub scenario: String,
    pub params: CeilingParams,
    pub makespan_s: f64,
    pub ideal_makespan_s: f64,
    pub pods_per_s: f64,
    pub max_live_pods: usize,
    pub submit_errors: BTreeMap<String, u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CeilingParams {
    pub pods: usize,
    pub gpus_per_pod: i32,
    pub runtime_ms: u64,
    #[serde(rename = "clusterGPUs")]
    pub cluster_gpus: i64,
}

/// The result of the memory scenario (jobs queued into a paused queue).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Memory {
    pub scenario: String,
    pub params: MemoryParams,
    pub queued: usize,
    pub submit_s: Option<f64>,
    pub all_queued_s: f64,
    pub operator: OperatorMemory,
    pub submit_errors: BTreeMap<String, u32>,
    /// The operator's RSS (MiB) when the driver first saw this many jobs
    /// Queued (every 10,000), to read the growth per job.
    #[serde(rename = "rssAtQueuedMiB", default)]
    pub rss_at_queued_mib: BTreeMap<usize, f64>,
    /// Jobs created per second: the API server's rate for the driver's
    /// creates, the ceiling the operator's Queued writes are held to.
    #[serde(default)]
    pub creates_per_s: Option<f64>,
    /// Jobs created but not yet seen Queued (sampled at most every 250 ms):
    /// the largest gap of the run, and the largest after its first minute
    /// (the watches and the first burst settle in that minute).
    #[serde(default)]
    pub max_lag_jobs: usize,
    #[serde(default)]
    pub max_lag_after_first_minute_jobs: Option<usize>,
}

impl Memory {
    /// The lag after the first minute in seconds of creations.
    pub fn lag_after_first_minute_s(&self) -> Option<f64> {
        let jobs = self.max_lag_after_first_minute_jobs? as f64;
        self.creates_per_s.filter(|r| *r > 0.0).map(|r| jobs / r)
    }

    /// The RSS (MiB) when `n` jobs were Queued: the sample taken then, or
    /// the final one when the run queued about `n` (within 10%).
    pub fn rss_at(&self, n: usize) -> Option<f64> {
        self.rss_at_queued_mib.get(&n).copied().or_else(|| {
            let near = self.queued.abs_diff(n) * 10 <= n;
            self.operator.rss_mib.filter(|_| near)
        })
    }
}

/// A new leader with the memory scenario's jobs queued (hack/bench.sh's
/// `failover`, written by the script): from its process start to its lease,
/// its rebuild and its first admission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failover {
    pub jobs: usize,
    pub start_to_lease_s: Option<f64>,
    pub lease_to_first_admission_s: Option<f64>,
    pub start_to_first_admission_s: Option<f64>,
    pub rebuild_ms: Option<f64>,
    #[serde(rename = "rssMiB")]
    pub rss_mib: Option<f64>,
    #[serde(rename = "peakRssMiB")]
    pub peak_rss_mib: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryParams {
    pub jobs: usize,
    pub queue: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorMemory {
    #[serde(rename = "rssBeforeMiB")]
    pub rss_before_mib: Option<f64>,
    #[serde(rename = "rssMiB")]
    pub rss_mib: Option<f64>,
    #[serde(rename = "peakRssMiB")]
    pub peak_rss_mib: Option<f64>,
}

/// Events about the objects of this run (named `<prefix>...`) in
/// `namespace`, written by the operator: (objects, writes), where writes
/// counts a POST per object and a PATCH per repetition; and the writes of
/// every source.
async fn operator_events(
    client: &Client,
    namespace: &str,
    prefix: &str,
) -> Result<(usize, i64, BTreeMap<String, i64>)> {
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    let events = list_all(&api, ListParams::default()).await?;
    let (mut objects, mut writes) = (0usize, 0i64);
    let mut by_source: BTreeMap<String, i64> = BTreeMap::new();
    for e in &events {
        if !e
            .involved_object
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with(prefix))
        {
            continue;
        }
        let source = e
            .reporting_component
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| e.source.as_ref().and_then(|s| s.component.clone()))
            .unwrap_or_else(|| "?".into());
        let n = e
            .series
            .as_ref()
            .and_then(|s| s.count)
            .or(e.count)
            .unwrap_or(1)
            .max(1) as i64;
        *by_source.entry(source.clone()).or_default() += n;
        if source == vision_api::contract::MANAGER {
            objects += 1;
            writes += n;
        }
    }
    Ok((objects, writes, by_source))
}

/// The operator's API requests in a run's delta of `apiserver_request_total`
/// (see docs/PERFORMANCE.md for what is counted), with its Events about the
/// run's objects (named `prefix...` in `namespace`), for `n` jobs.
pub(crate) async fn operator_requests(
    client: &Client,
    d: &RequestCounts,
    namespace: &str,
    prefix: &str,
    n: f64,
) -> Result<ApiRequests> {
    let jobs_writes = sum(d, |v, r, _| r == "visionjobs" && WRITE_VERBS.contains(&v));
    let pod_creates = sum(d, |v, r, s| r == "pods" && v == "POST" && s.is_empty());
    let pod_deletes = sum(d, |v, r, _| r == "pods" && v == "DELETE");
    let pod_patches = sum(d, |v, r, s| r == "pods" && v == "PATCH" && s.is_empty());
    let events_all = sum(d, |v, r, _| r == "events" && (v == "POST" || v == "PATCH"));
    let leases = sum(d, |v, r, _| r == "leases" && v != "WATCH");
    let pool_status = sum(d, |v, r, _| {
        (r == "visionqueues" || r == "visionalgorithms") && WRITE_VERBS.contains(&v)
    });
    let reads = sum(d, |v, r, _| {
        matches!(
            r,
            "visionjobs" | "pods" | "visionqueues" | "visionalgorithms"
        ) && (v == "GET" || v == "LIST")
    });
    let (ev_objects, ev_writes, ev_by_source) = operator_events(client, namespace, prefix).await?;
    let operator_requests =
        jobs_writes + pod_creates + pod_patches + pod_deletes + ev_writes as f64 + leases;
    let by_verb: BTreeMap<String, f64> = d
        .iter()
        .filter(|((_, _, r, _), _)| {
            matches!(
                r.as_str(),
                "visionjobs" | "pods" | "events" | "leases" | "visionqueues" | "visionalgorithms"
            )
        })
        .map(|((v, _, r, s), n)| {
            let k = if s.is_empty() {
                format!("{v} {r}")
            } else {
                format!("{v} {r}/{s}")
            };
            (k, *n)
        })
        .collect();
    Ok(ApiRequests {
        visionjobs_writes: jobs_writes,
        pod_creates,
        pod_deletes,
        pod_patches: Some(pod_patches),
        operator_event_writes: ev_writes,
        operator_event_objects: ev_objects,
        all_event_writes_in_cluster: events_all,
        leases,
        operator_total: operator_requests,
        per_job: round(operator_requests / n, 2),
        queue_and_algorithm_status_writes: pool_status,
        reads,
        events_by_source: ev_by_source,
        by_verb,
    })
}

/// The default scenario: `jobs` jobs into a queue of `max_running` slots.
pub async fn throughput(client: &Client, a: &BenchArgs) -> Result<Throughput> {
    ensure_namespace(client, &a.namespace).await?;
    eprintln!("cleaning namespace {} ...", a.namespace);
    delete_all(client, &a.namespace, Duration::from_secs(600)).await?;
    install(client, a, &a.queue, false).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let run = run_id();
    let start = Instant::now();
    let (tx, mut rx, mut tr) = track_jobs_and_pods(client, &a.namespace, &run, start).await?;

    let proc_before = a.operator_pid.and_then(proc_sample);
    let req_before = apiserver_requests(client).await?;
    let jobs = bench_jobs(a, &a.queue, &run, a.jobs);
    eprintln!(
        "run {run}: {} jobs x {} GPU, {} ms each, queue {} with maxRunning {}",
        a.jobs, a.gpus, a.runtime_ms, a.queue, a.max_running
    );
    submit_all(client, &a.namespace, jobs, a.concurrency, start, tx.clone());
    drop(tx);
    let mut view = View::new(
        format!("bench: {} jobs -> {}", a.jobs, a.queue),
        Duration::from_secs(5),
    );
    let end = follow(
        client,
        &mut rx,
        &mut tr,
        &mut view,
        &a.queue,
        a.jobs,
        start,
        Duration::from_secs(60),
        a.timeout,
    )
    .await;
    if !matches!(end, End::Done) {
        eprintln!("the benchmark did not finish; not final:");
        print_stuck(&tr);
        return Err(fail("benchmark run did not finish (see above)"));
    }
    // Let trailing writes (last statuses, events) land before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    drain(&mut rx, &mut tr);
    let req_after = apiserver_requests(client).await?;
    let proc_after = a.operator_pid.and_then(proc_sample);
    let d = delta(&req_before, &req_after);

    let an = analyze(&tr.events, a.max_running.max(1) as u32);
    let n = a.jobs as f64;
    let rounds = a.jobs.div_ceil(a.max_running.max(1) as usize) as f64;
    let ideal_ms = rounds * a.runtime_ms as f64;
    let api_requests = operator_requests(client, &d, &a.namespace, &format!("b-{run}-"), n).await?;
    let cpu_s = match (proc_before, proc_after) {
        (Some(b), Some(af)) => Some((af.cpu_ticks - b.cpu_ticks) as f64 / a.clk_tck),
        _ => None,
    };
    let waits = tr.waits_ms();
    let Stages {
        ended_to_final,
        admitted_to_pod,
    } = tr.stages_ms();
    let makespan_s = an.makespan_ms / 1000.0;
    let mib = |kib: u64| kib as f64 / 1024.0;
    let result = Throughput {
        scenario: "throughput".into(),
        params: ThroughputParams {
            jobs: a.jobs,
            max_running: a.max_running,
            gpus_per_job: a.gpus,
            runtime_ms: a.runtime_ms,
            submit_concurrency: a.concurrency,
        },
        makespan_s: round(makespan_s, 2),
        ideal_makespan_s: ideal_ms / 1000.0,
        makespan_over_ideal: round(an.makespan_ms / ideal_ms, 3),
        jobs_per_s: round(n / makespan_s, 2),
        utilisation_while_waiting: an.utilisation_while_waiting,
        waiting_s: an.waiting_ms / 1000.0,
        refill_ms: Percentiles::full(&an.refill_ms),
        wait_ms: Percentiles::short(&waits),
        stages_ms: RefillStages {
            pod_ended_to_job_final: Percentiles::short(&ended_to_final),
            job_admitted_to_pod_created: Percentiles::short(&admitted_to_pod),
        },
        admissions: an.admissions,
        admissions_per_s: (an.admission_span_ms > 0.0).then(|| {
            round(
                (an.admissions as f64 - 1.0) / (an.admission_span_ms / 1000.0),
                1,
            )
        }),
        max_live_pods: an.max_live_pods,
        max_holding: tr.max_holding,
        failures: tr.failures(),
        api_requests,
        operator: OperatorUsage {
            pid: a.operator_pid,
            peak_rss_mib: proc_after.map(|p| mib(p.hwm_kib)),
            rss_mib: proc_after.map(|p| mib(p.rss_kib)),
            cpu_s,
            cpu_ms_per_job: cpu_s.map(|c| round(c * 1000.0 / n, 2)),
            counters: a.metrics_url.as_deref().and_then(operator_counters),
        },
    };
    print_throughput(&result);
    write_out(a, &result)?;
    Ok(result)
}

/// `x` with a unit; "%" shows a fraction as a percentage; "-" when unknown.
pub(crate) fn show(v: Option<f64>, unit: &str) -> String {
    match v {
        Some(x) if unit == "%" => format!("{:.1}%", x * 100.0),
        Some(x) => format!("{x:.2}{unit}"),
        None => "-".into(),
    }
}

fn print_throughput(t: &Throughput) {
    let r = &t.refill_ms;
    let st = &t.stages_ms;
    let q = &t.api_requests;
    let o = &t.operator;
    println!();
    println!("Throughput scenario");
    println!(
        "  makespan {}  (ideal ceil(jobs/maxRunning) x runtime = {}; ratio {})",
        show(Some(t.makespan_s), "s"),
        show(Some(t.ideal_makespan_s), "s"),
        show(Some(t.makespan_over_ideal), "")
    );
    println!("  throughput {} jobs/s", show(Some(t.jobs_per_s), ""));
    println!(
        "  slot utilisation while jobs waited {} (over {})",
        show(t.utilisation_while_waiting, "%"),
        show(Some(t.waiting_s), "s")
    );
    println!(
        "  refill latency p50 {}  p90 {}  p95 {}  p99 {}  max {}  ({} samples)",
        show(r.p50, "ms"),
        show(r.p90, "ms"),
        show(r.p95, "ms"),
        show(r.p99, "ms"),
        show(r.max, "ms"),
        r.samples.unwrap_or(0)
    );
    println!(
        "  refill stages: pod ended -> job seen final p50 {} p99 {}; job seen admitted -> its pod seen p50 {} p99 {}",
        show(st.pod_ended_to_job_final.p50, "ms"),
        show(st.pod_ended_to_job_final.p99, "ms"),
        show(st.job_admitted_to_pod_created.p50, "ms"),
        show(st.job_admitted_to_pod_created.p99, "ms")
    );
    println!(
        "  admissions {} at {} /s; wait p50 {} p99 {}",
        t.admissions,
        show(t.admissions_per_s, ""),
        show(t.wait_ms.p50, "ms"),
        show(t.wait_ms.p99, "ms")
    );
    println!(
        "  most pods alive at once {} (maxRunning {}), most jobs holding a slot {}",
        t.max_live_pods, t.params.max_running, t.max_holding
    );
    println!(
        "  operator API requests: {} per job = visionjobs writes {} + pod creates {} + pod finalizer releases {} + pod deletes {} + its events {} + leases {} (total {})",
        show(Some(q.per_job), ""),
        q.visionjobs_writes,
        q.pod_creates,
        q.pod_patches.unwrap_or(0.0),
        q.pod_deletes,
        q.operator_event_writes,
        q.leases,
        q.operator_total
    );
    println!(
        "    besides: queue/algorithm status writes {}, GETs/LISTs {}; events by source {:?}",
        q.queue_and_algorithm_status_writes, q.reads, q.events_by_source
    );
    println!("    by verb: {:?}", q.by_verb);
    if let Some(c) = &o.counters {
        println!("  operator counters: {c:?}");
    }
    println!(
        "  operator peak RSS {} MiB, CPU {} s ({} ms per job)",
        show(o.peak_rss_mib, ""),
        show(o.cpu_s, ""),
        show(o.cpu_ms_per_job, "")
    );
}

/// The ceiling: bare pods with the same annotations and GPUs, all at once,
/// with no operator and no limit but the nodes' GPUs.
pub async fn ceiling(client: &Client, a: &BenchArgs) -> Result<Ceiling> {
    ensure_namespace(client, &a.namespace).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &a.namespace);
    eprintln!("cleaning namespace {} ...", a.namespace);
    delete_all(client, &a.namespace, Duration::from_secs(300)).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let gpu_capacity: i64 = nodes
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter_map(|n| {
            n.status
                .as_ref()?
                .allocatable
                .as_ref()?
                .get(vision_api::contract::GPU_RESOURCE)?
                .0
                .parse::<i64>()
                .ok()
        })
        .sum();
    let run = run_id();
    let start = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut tr = Tracker::default();
    watch_pods(client, &a.namespace, CEILING_LABEL, &run, start, tx.clone());
    wait_synced(&mut rx, &mut tr, 1).await?;
    let specs = (0..a.jobs)
        .map(|i| {
            serde_json::from_value::<Pod>(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {
                    "name": format!("c-{run}-{i:05}"),
                    "labels": {CEILING_LABEL: run},
                    "annotations": {
                        RUN_KEY: run,
                        format!("{SIM}duration"): format!("{}ms", a.runtime_ms),
                        format!("{SIM}message"): "{\"ok\":true}",
                    }
                },
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": false,
                    "containers": [{"name": "algorithm", "image": "bench.invalid/sim:1",
                        "resources": {"limits": {vision_api::contract::GPU_RESOURCE: a.gpus.to_string()}}}]
                }
            }))
        })
        .collect::<Result<Vec<Pod>, _>>()?;
    eprintln!(
        "ceiling run {run}: {} bare pods x {} GPU, {} ms each (cluster GPUs {gpu_capacity})",
        a.jobs, a.gpus, a.runtime_ms
    );
    let start2 = Instant::now();
    let t_start = start2.duration_since(start).as_secs_f64() * 1000.0;
    {
        let tx = tx.clone();
        let pods = pods.clone();
        let concurrency = a.concurrency.max(1);
        tokio::spawn(async move {
            use futures::StreamExt;
            let mut s = futures::stream::iter(specs)
                .map(|p| {
                    let pods = pods.clone();
                    async move {
                        let name = p.metadata.name.clone().unwrap_or_default();
                        match pods.create(&kube::api::PostParams::default(), &p).await {
                            Ok(_) => Msg::Submitted(start.elapsed().as_secs_f64() * 1000.0, name),
                            Err(e) => Msg::SubmitFailed(e.to_string()),
                        }
                    }
                })
                .buffer_unordered(concurrency);
            while let Some(m) = s.next().await {
                if tx.send(m).is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let mut last_print = Instant::now();
    let deadline = Instant::now() + a.timeout;
    loop {
        let ended = tr.pods.values().filter(|e| **e).count();
        if ended + tr.submit_errors.values().sum::<u32>() as usize >= a.jobs {
            break;
        }
        if Instant::now() > deadline {
            return Err(fail(format!(
                "ceiling run: only {ended} of {} pods ended",
                a.jobs
            )));
        }
        if last_print.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "[{:>6.1}s] pods created {} alive {} ended {ended} of {}",
                start2.elapsed().as_secs_f64(),
                tr.pods.len(),
                tr.live_pods,
                a.jobs
            );
            last_print = Instant::now();
        }
        match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
            Ok(Some(m)) => {
                tr.handle(m);
                drain(&mut rx, &mut tr);
            }
            Ok(None) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(_) => {}
        }
    }
    let last_end = tr
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Ev::PodEnded))
        .map(|(t, _)| *t)
        .fold(0.0, f64::max);
    let makespan_s = (last_end - t_start) / 1000.0;
    let slots = (gpu_capacity / a.gpus.max(1) as i64).max(1) as usize;
    let ideal_s = a.jobs.div_ceil(slots) as f64 * a.runtime_ms as f64 / 1000.0;
    let result = Ceiling {
        scenario: "ceiling".into(),
        params: CeilingParams {
            pods: a.jobs,
            gpus_per_pod: a.gpus,
            runtime_ms: a.runtime_ms,
            cluster_gpus: gpu_capacity,
        },
        makespan_s: round(makespan_s, 2),
        ideal_makespan_s: ideal_s,
        pods_per_s: round(a.jobs as f64 / makespan_s, 2),
        max_live_pods: tr.max_live_pods,
        submit_errors: tr.submit_errors.clone(),
    };
    println!();
    println!("Ceiling scenario (bare pods, no operator)");
    println!(
        "  {} pods in {:.2}s: {:.2} pods/s (GPU-bound ideal {:.1}s for {} concurrent pods); most alive at once {}",
        a.jobs,
        makespan_s,
        a.jobs as f64 / makespan_s,
        ideal_s,
        slots,
        tr.max_live_pods
    );
    write_out(a, &result)?;
    eprintln!("deleting the ceiling pods ...");
    let _ = pods
        .delete_collection(
            &DeleteParams::background(),
            &ListParams::default().labels(CEILING_LABEL),
        )
        .await?;
    Ok(result)
}

/// Memory: `jobs` jobs queued into a paused queue; the operator's RSS once
/// they are all Queued.
pub async fn memory(client: &Client, a: &BenchArgs) -> Result<Memory> {
    ensure_namespace(client, &a.namespace).await?;
    eprintln!("cleaning namespace {} ...", a.namespace);
    delete_all(client, &a.namespace, Duration::from_secs(600)).await?;
    install(client, a, &a.queue, true).await?;
    let before = a.operator_pid.and_then(proc_sample);
    let run = run_id();
    let start = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut tr = Tracker::default();
    watch_jobs(client, &a.namespace, &run, start, tx.clone());
    wait_synced(&mut rx, &mut tr, 1).await?;
    let jobs = bench_jobs(a, &a.queue, &run, a.jobs);
    eprintln!(
        "memory run {run}: {} jobs into paused queue {}",
        a.jobs, a.queue
    );
    let t0 = Instant::now();
    submit_all(client, &a.namespace, jobs, a.concurrency, start, tx.clone());
    drop(tx);
    let mut last_print = Instant::now();
    let mut submitted_s = None;
    let mut rss_at_queued = BTreeMap::new();
    let (mut max_lag, mut max_lag_late) = (0usize, None::<usize>);
    // Counting walks every job: at most every 250 ms, not per event (at
    // 100,000 jobs a count per event would take the driver's CPU from the
    // operator on a 2-core machine).
    let mut counted: Option<Instant> = None;
    let queued = loop {
        if counted.is_some_and(|c| c.elapsed() < Duration::from_millis(250)) {
            match tokio::time::timeout(Duration::from_millis(250), rx.recv()).await {
                Ok(Some(m)) => {
                    tr.handle(m);
                    drain(&mut rx, &mut tr);
                }
                Ok(None) => tokio::time::sleep(Duration::from_millis(250)).await,
                Err(_) => {}
            }
            continue;
        }
        counted = Some(Instant::now());
        let queued = tr
            .jobs
            .values()
            .filter(|j| j.phase == Some(JobPhase::Queued))
            .count();
        let lag = tr.submitted.saturating_sub(queued);
        max_lag = max_lag.max(lag);
        if t0.elapsed() > Duration::from_secs(60) {
            max_lag_late = Some(max_lag_late.unwrap_or(0).max(lag));
        }
        let mark = queued / 10_000 * 10_000;
        if mark > 0
            && !rss_at_queued.contains_key(&mark)
            && let Some(p) = a.operator_pid.and_then(proc_sample)
        {
            rss_at_queued.insert(mark, p.rss_kib as f64 / 1024.0);
            eprintln!(
                "[{:>6.1}s] {mark} Queued: operator RSS {:.1} MiB",
                t0.elapsed().as_secs_f64(),
                p.rss_kib as f64 / 1024.0
            );
        }
        if submitted_s.is_none()
            && tr.submitted + tr.submit_errors.values().sum::<u32>() as usize >= a.jobs
        {
            submitted_s = Some(t0.elapsed().as_secs_f64());
        }
        if queued >= tr.submitted
            && tr.submitted + tr.submit_errors.values().sum::<u32>() as usize >= a.jobs
        {
            break queued;
        }
        if t0.elapsed() > a.timeout {
            print_stuck(&tr);
            return Err(fail(format!(
                "only {queued} of {} jobs were Queued",
                a.jobs
            )));
        }
        if last_print.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "[{:>6.1}s] submitted {} queued {queued} of {} ; operator RSS {} MiB",
                t0.elapsed().as_secs_f64(),
                tr.submitted,
                a.jobs,
                a.operator_pid
                    .and_then(proc_sample)
                    .map(|p| format!("{:.1}", p.rss_kib as f64 / 1024.0))
                    .unwrap_or_else(|| "?".into())
            );
            last_print = Instant::now();
        }
        match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
            Ok(Some(m)) => {
                tr.handle(m);
                drain(&mut rx, &mut tr);
            }
            Ok(None) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(_) => {}
        }
    };
    let all_queued_s = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = a.operator_pid.and_then(proc_sample);
    let mib = |p: Option<ProcSample>, f: fn(&ProcSample) -> u64| p.map(|p| f(&p) as f64 / 1024.0);
    let result = Memory {
        scenario: "memory".into(),
        params: MemoryParams {
            jobs: a.jobs,
            queue: a.queue.clone(),
        },
        queued,
        submit_s: submitted_s,
        all_queued_s,
        operator: OperatorMemory {
            rss_before_mib: mib(before, |p| p.rss_kib),
            rss_mib: mib(after, |p| p.rss_kib),
            peak_rss_mib: mib(after, |p| p.hwm_kib),
        },
        submit_errors: tr.submit_errors.clone(),
        rss_at_queued_mib: rss_at_queued,
        creates_per_s: submitted_s
            .filter(|s| *s > 0.0)
            .map(|s| tr.submitted as f64 / s),
        max_lag_jobs: max_lag,
        max_lag_after_first_minute_jobs: max_lag_late,
    };
    println!();
    println!("Memory scenario");
    println!(
        "  {queued} jobs Queued in {all_queued_s:.1}s (submitted in {:.1}s); operator RSS {} MiB (before {} MiB, peak {} MiB)",
        submitted_s.unwrap_or(0.0),
        show(result.operator.rss_mib, ""),
        show(result.operator.rss_before_mib, ""),
        show(result.operator.peak_rss_mib, ""),
    );
    for (n, mib) in &result.rss_at_queued_mib {
        println!("  RSS when {n} jobs were seen Queued: {mib:.1} MiB");
    }
    println!(
        "  creation rate {} jobs/s (the API server's, for these creates); jobs created but not yet Queued: at most {max_lag}, after the first minute {}",
        show(result.creates_per_s, ""),
        max_lag_late.map_or("-".into(), |l| l.to_string()),
    );
    write_out(a, &result)?;
    Ok(result)
}

/// One goal of docs/PERFORMANCE.md and what a run measured against it.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub name: String,
    pub measured: String,
    pub goal: &'static str,
    /// `None` when the run did not measure it.
    pub met: Option<bool>,
}

/// The scenarios' results against the goals.
pub fn targets(
    t: &Throughput,
    ceiling: Option<&Ceiling>,
    memory: Option<&Memory>,
    failover: Option<&Failover>,
) -> Vec<Target> {
    let u = t.utilisation_while_waiting;
    let r = t.refill_ms.p99;
    let q = t.api_requests.per_job;
    let mut rows = vec![
        Target {
            name: "slot utilisation while jobs wait".into(),
            measured: show(u, "%"),
            goal: ">= 95%",
            met: u.map(|u| u >= 0.95),
        },
        Target {
            name: "refill latency p99".into(),
            measured: show(r, " ms"),
            goal: "<= 250 ms",
            met: r.map(|r| r <= 250.0),
        },
        Target {
            name: "operator API requests per job".into(),
            measured: show(Some(q), ""),
            goal: "<= 6",
            met: Some(q <= 6.0),
        },
    ];
    if let Some(m) = memory {
        for (n, name, goal, limit) in [
            (10_000, "10,000", "<= 64 MiB", 64.0),
            (100_000, "100,000", "<= 256 MiB", 256.0),
        ] {
            if n > m.params.jobs.max(m.queued) && n > 10_000 {
                continue;
            }
            let rss = m.rss_at(n);
            rows.push(Target {
                name: format!("operator RSS at {name} queued jobs"),
                measured: show(rss, " MiB"),
                goal,
                met: rss.map(|r| r <= limit),
            });
        }
        let lag = m.lag_after_first_minute_s();
        rows.push(Target {
            name: format!(
                "creation -> Queued lag after the first minute (at {} creates/s)",
                show(m.creates_per_s, "")
            ),
            measured: match (m.max_lag_after_first_minute_jobs, lag) {
                (Some(jobs), Some(s)) => format!("{jobs} jobs ({s:.1} s)"),
                _ => "-".into(),
            },
            goal: "bounded: <= 10 s of creations",
            met: lag.map(|s| s <= 10.0),
        });
    }
    if let Some(f) = failover {
        let s = f.lease_to_first_admission_s;
        rows.push(Target {
            name: format!(
                "new leader with {} jobs queued: lease -> first admission",
                f.jobs
            ),
            measured: show(s, " s"),
            goal: "<= 5 s",
            met: s.map(|s| s <= 5.0),
        });
    }
    if let Some(c) = ceiling {
        let frac = (c.pods_per_s > 0.0).then(|| t.jobs_per_s / c.pods_per_s);
        rows.push(Target {
            name: format!(
                "throughput vs ceiling ({} jobs/s vs {} pods/s)",
                show(Some(t.jobs_per_s), ""),
                show(Some(c.pods_per_s), "")
            ),
            measured: show(frac, "%"),
            goal: ">= 80%",
            met: frac.map(|f| f >= 0.8),
        });
    }
    rows
}

/// Prints the targets as a Markdown table; true when every one is met.
pub fn print_targets(rows: &[Target]) -> bool {
    println!();
    println!("| target | measured | goal | met |");
    println!("|---|---|---|---|");
    for row in rows {
        let met = match row.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "?",
        };
        println!("| {} | {} | {} | {met} |", row.name, row.measured, row.goal);
    }
    rows.iter().all(|r| r.met == Some(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A throughput result as the untyped writer of earlier runs wrote it
    /// (trimmed to one verb and source): old files must still read.
    const OLD_THROUGHPUT: &str = r#"{
      "scenario": "throughput",
      "params": {"jobs": 1000, "maxRunning": 32, "gpusPerJob": 1, "runtimeMs": 2000, "submitConcurrency": 16},
      "makespanS": 70.12, "idealMakespanS": 64.0, "makespanOverIdeal": 1.096, "jobsPerS": 14.26,
      "utilisationWhileWaiting": 0.962, "waitingS": 66.1,
      "refillMs": {"p50": 41.2, "p90": 90.0, "p95": 120.5, "p99": 180.3, "max": 400.0, "samples": 968},
      "waitMs": {"p50": 30000.0, "p99": 61000.0},
      "stagesMs": {"podEndedToJobFinal": {"p50": 20.0, "p99": 80.0}, "jobAdmittedToPodCreated": {"p50": 10.0, "p99": 50.0}},
      "admissions": 1000, "admissionsPerS": 14.9, "maxLivePods": 32, "maxHolding": 32, "failures": {},
      "apiRequests": {"visionjobsWrites": 3000.0, "podCreates": 1000.0, "podDeletes": 0.0,
        "operatorEventWrites": 1000, "operatorEventObjects": 1000, "allEventWritesInCluster": 5000.0,
        "leases": 30.0, "operatorTotal": 5030.0, "perJob": 5.03, "queueAndAlgorithmStatusWrites": 60.0,
        "reads": 4.0, "eventsBySource": {"vision-operator": 1000}, "byVerb": {"POST pods": 1000.0}},
      "operator": {"pid": 42, "peakRssMiB": 30.5, "rssMiB": 28.0, "cpuS": 12.0, "cpuMsPerJob": 12.0, "counters": null}
    }"#;

    #[test]
    fn an_old_result_file_reads_and_round_trips() {
        let t: Throughput = serde_json::from_str(OLD_THROUGHPUT).unwrap();
        assert_eq!(t.refill_ms.p99, Some(180.3));
        assert_eq!(t.refill_ms.samples, Some(968));
        assert_eq!(t.api_requests.per_job, 5.03);
        assert_eq!(t.operator.peak_rss_mib, Some(30.5));
        assert_eq!(t.operator.counters, None);
        let again: serde_json::Value = serde_json::to_value(&t).unwrap();
        let old: serde_json::Value = serde_json::from_str(OLD_THROUGHPUT).unwrap();
        assert_eq!(again, old);
    }

    #[test]
    fn targets_compare_with_the_goals() {
        let t: Throughput = serde_json::from_str(OLD_THROUGHPUT).unwrap();
        let ceiling = Ceiling {
            scenario: "ceiling".into(),
            params: CeilingParams {
                pods: 1000,
                gpus_per_pod: 1,
                runtime_ms: 2000,
                cluster_gpus: 32,
            },
            makespan_s: 62.5,
            ideal_makespan_s: 64.0,
            pods_per_s: 16.0,
            max_live_pods: 32,
            submit_errors: BTreeMap::new(),
        };
        let rows = targets(&t, Some(&ceiling), None, None);
        let got: Vec<(&str, &str, Option<bool>)> = rows
            .iter()
            .map(|r| (r.measured.as_str(), r.goal, r.met))
            .collect();
        assert_eq!(
            got,
            vec![
                ("96.2%", ">= 95%", Some(true)),
                ("180.30 ms", "<= 250 ms", Some(true)),
                ("5.03", "<= 6", Some(true)),
                ("89.1%", ">= 80%", Some(true)),
            ]
        );
        assert_eq!(
            rows[3].name,
            "throughput vs ceiling (14.26 jobs/s vs 16.00 pods/s)"
        );
        let mut slow = t.clone();
        slow.refill_ms.p99 = Some(251.0);
        slow.utilisation_while_waiting = None;
        let met: Vec<Option<bool>> = targets(&slow, None, None, None)
            .iter()
            .map(|r| r.met)
            .collect();
        assert_eq!(met, vec![None, Some(false), Some(true)]);
    }

    fn mk_memory(jobs: usize, rss_at: &[(usize, f64)], rss_mib: f64) -> Memory {
        Memory {
            scenario: "memory".into(),
            params: MemoryParams {
                jobs,
                queue: "vision-bench-paused".into(),
            },
            queued: jobs,
            submit_s: Some(1000.0),
            all_queued_s: 1002.0,
            operator: OperatorMemory {
                rss_before_mib: Some(20.0),
                rss_mib: Some(rss_mib),
                peak_rss_mib: Some(rss_mib + 10.0),
            },
            submit_errors: BTreeMap::new(),
            rss_at_queued_mib: rss_at.iter().copied().collect(),
            creates_per_s: Some(100.0),
            max_lag_jobs: 800,
            max_lag_after_first_minute_jobs: Some(150),
        }
    }

    #[test]
    fn the_scale_run_has_a_row_per_target() {
        let t: Throughput = serde_json::from_str(OLD_THROUGHPUT).unwrap();
        let m = mk_memory(100_000, &[(10_000, 70.0), (100_000, 300.0)], 301.0);
        let f = Failover {
            jobs: 100_000,
            start_to_lease_s: Some(12.0),
            lease_to_first_admission_s: Some(0.8),
            start_to_first_admission_s: Some(12.8),
            rebuild_ms: Some(400.0),
            rss_mib: Some(280.0),
            peak_rss_mib: Some(320.0),
        };
        let rows = targets(&t, None, Some(&m), Some(&f));
        let got: Vec<(&str, &str, &str, Option<bool>)> = rows[3..]
            .iter()
            .map(|r| (r.name.as_str(), r.measured.as_str(), r.goal, r.met))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "operator RSS at 10,000 queued jobs",
                    "70.00 MiB",
                    "<= 64 MiB",
                    Some(false)
                ),
                (
                    "operator RSS at 100,000 queued jobs",
                    "300.00 MiB",
                    "<= 256 MiB",
                    Some(false)
                ),
                (
                    "creation -> Queued lag after the first minute (at 100.00 creates/s)",
                    "150 jobs (1.5 s)",
                    "bounded: <= 10 s of creations",
                    Some(true)
                ),
                (
                    "new leader with 100000 jobs queued: lease -> first admission",
                    "0.80 s",
                    "<= 5 s",
                    Some(true)
                ),
            ]
        );
    }

    #[test]
    fn a_10000_job_run_reports_no_100000_row_and_old_memory_files_read() {
        let m = mk_memory(10_000, &[], 60.0);
        assert_eq!(m.rss_at(10_000), Some(60.0));
        assert_eq!(m.rss_at(100_000), None);
        let t: Throughput = serde_json::from_str(OLD_THROUGHPUT).unwrap();
        let names: Vec<String> = targets(&t, None, Some(&m), None)
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names[3], "operator RSS at 10,000 queued jobs");
        assert!(names[4].starts_with("creation -> Queued lag"));
        assert_eq!(names.len(), 5);
        let old = r#"{"scenario":"memory","params":{"jobs":10,"queue":"q"},"queued":10,"submitS":1.0,
          "allQueuedS":2.0,"operator":{"rssBeforeMiB":1.0,"rssMiB":2.0,"peakRssMiB":3.0},"submitErrors":{}}"#;
        let m: Memory = serde_json::from_str(old).unwrap();
        assert_eq!(
            (m.creates_per_s, m.max_lag_after_first_minute_jobs),
            (None, None)
        );
    }
}
