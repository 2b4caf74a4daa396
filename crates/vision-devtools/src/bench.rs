//! `visionctl bench`: the end-to-end benchmark scenarios on a live cluster.
//! Each scenario prints what it measured and writes it as JSON; `bench
//! report` puts the scenarios side by side with the targets.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::run::{
    End, Msg, RUN_KEY, Tracker, View, apply, delete_all, drain, follow, print_stuck, run_id,
    submit_all, track_jobs_and_pods, wait_synced, watch_jobs, watch_pods,
};
use super::stats::{analyze, parse_prometheus, percentile};
use super::{Result, fail};
use vision_api::{
    JobPhase, QueueOrdering, VisionAlgorithm, VisionAlgorithmSpec, VisionJob, VisionJobSpec,
    VisionQueue, VisionQueueSpec,
};
use visionctl::commands::{ensure_namespace, list_all};

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

/// Fetches a plain-HTTP URL (the operator's /metrics) with a std socket.
pub fn http_get(url: &str) -> Result<String> {
    use std::io::{Read, Write};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| fail(format!("{url}: only http:// URLs")))?;
    let (host, path) = match rest.split_once('/') {
        Some((h, p)) => (h, format!("/{p}")),
        None => (rest, "/".to_string()),
    };
    let mut stream = std::net::TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    Ok(body
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

/// The operator's own counters worth reading next to the API server's.
fn operator_counters(url: &str) -> Value {
    let Ok(text) = http_get(url) else {
        return Value::Null;
    };
    let mut out = serde_json::Map::new();
    for (name, labels, value) in parse_prometheus(&text) {
        let keep = [
            "reconcile_errors",
            "admission_rollbacks",
            "reconciles_total",
            "admissions_total",
            "job_retries",
        ]
        .iter()
        .any(|k| name.contains(k));
        if !keep || name.ends_with("_created") {
            continue;
        }
        let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let key = if l.is_empty() {
            name
        } else {
            format!("{name}{{{}}}", l.join(","))
        };
        out.insert(key, json!(value));
    }
    Value::Object(out)
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
    for (name, labels, value) in parse_prometheus(&text) {
        if name != "apiserver_request_total" {
            continue;
        }
        let get = |k: &str| {
            labels
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        *out.entry((
            get("verb"),
            get("group"),
            get("resource"),
            get("subresource"),
        ))
        .or_default() += value;
    }
    Ok(out)
}

fn delta(before: &RequestCounts, after: &RequestCounts) -> RequestCounts {
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
async fn install(client: &Client, a: &BenchArgs, queue: &str, paused: bool) -> Result<()> {
    let template: k8s_openapi::api::core::v1::PodTemplateSpec = serde_json::from_value(json!({
        "metadata": {"annotations": {
            format!("{SIM}duration"): format!("{}ms", a.runtime_ms),
            format!("{SIM}message"): "{\"ok\":true}",
        }},
        "spec": {"containers": [{"name": "algorithm", "image": "bench.invalid/sim:1"}]}
    }))?;
    let mut alg = VisionAlgorithm::new(
        &a.algorithm,
        VisionAlgorithmSpec {
            template,
            gpus_per_job: a.gpus,
            max_gpus_per_job: Some(a.gpus),
            timeout_seconds: 3600,
            retries: 0,
            max_running: None,
            allowed_namespaces: vec![],
            circuit_breaker: None,
        },
    );
    alg.metadata.managed_fields = None;
    apply(
        &Api::<VisionAlgorithm>::all(client.clone()),
        &a.algorithm,
        &alg,
    )
    .await?;
    let q = VisionQueue::new(
        queue,
        VisionQueueSpec {
            max_running: a.max_running,
            max_gpus: None,
            max_pending: None,
            ordering: QueueOrdering::BestEffortFIFO,
            paused,
        },
    );
    apply(&Api::<VisionQueue>::all(client.clone()), queue, &q).await?;
    Ok(())
}

fn bench_jobs(a: &BenchArgs, queue: &str, run: &str, n: usize) -> Vec<VisionJob> {
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

fn write_out(a: &BenchArgs, v: &Value) -> Result<()> {
    if let Some(path) = &a.out {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(v)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn ms(v: Option<f64>) -> Value {
    v.map(|x| json!((x * 10.0).round() / 10.0))
        .unwrap_or(Value::Null)
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

/// The default scenario: `jobs` jobs into a queue of `max_running` slots.
pub async fn throughput(client: &Client, a: &BenchArgs) -> Result<Value> {
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
    let jobs_writes = sum(&d, |v, r, _| r == "visionjobs" && WRITE_VERBS.contains(&v));
    let pod_creates = sum(&d, |v, r, s| r == "pods" && v == "POST" && s.is_empty());
    let pod_deletes = sum(&d, |v, r, _| r == "pods" && v == "DELETE");
    let events_all = sum(&d, |v, r, _| r == "events" && (v == "POST" || v == "PATCH"));
    let leases = sum(&d, |v, r, _| r == "leases" && v != "WATCH");
    let pool_status = sum(&d, |v, r, _| {
        (r == "visionqueues" || r == "visionalgorithms") && WRITE_VERBS.contains(&v)
    });
    let reads = sum(&d, |v, r, _| {
        matches!(
            r,
            "visionjobs" | "pods" | "visionqueues" | "visionalgorithms"
        ) && (v == "GET" || v == "LIST")
    });
    let (ev_objects, ev_writes, ev_by_source) =
        operator_events(client, &a.namespace, &format!("b-{run}-")).await?;
    let operator_requests = jobs_writes + pod_creates + pod_deletes + ev_writes as f64 + leases;
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
    let cpu_s = match (proc_before, proc_after) {
        (Some(b), Some(af)) => Some((af.cpu_ticks - b.cpu_ticks) as f64 / a.clk_tck),
        _ => None,
    };
    let waits = tr.waits_ms();
    let (ended_to_final, admitted_to_pod) = tr.stages_ms();
    let makespan_s = an.makespan_ms / 1000.0;
    let v = json!({
        "scenario": "throughput",
        "params": {"jobs": a.jobs, "maxRunning": a.max_running, "gpusPerJob": a.gpus,
                   "runtimeMs": a.runtime_ms, "submitConcurrency": a.concurrency},
        "makespanS": (makespan_s * 100.0).round() / 100.0,
        "idealMakespanS": ideal_ms / 1000.0,
        "makespanOverIdeal": (an.makespan_ms / ideal_ms * 1000.0).round() / 1000.0,
        "jobsPerS": (n / makespan_s * 100.0).round() / 100.0,
        "utilisationWhileWaiting": an.utilisation_while_waiting,
        "waitingS": an.waiting_ms / 1000.0,
        "refillMs": {"p50": ms(percentile(&an.refill_ms, 50.0)), "p90": ms(percentile(&an.refill_ms, 90.0)),
                     "p95": ms(percentile(&an.refill_ms, 95.0)), "p99": ms(percentile(&an.refill_ms, 99.0)),
                     "max": ms(percentile(&an.refill_ms, 100.0)), "samples": an.refill_ms.len()},
        "waitMs": {"p50": ms(percentile(&waits, 50.0)), "p99": ms(percentile(&waits, 99.0))},
        "stagesMs": {
            "podEndedToJobFinal": {"p50": ms(percentile(&ended_to_final, 50.0)), "p99": ms(percentile(&ended_to_final, 99.0))},
            "jobAdmittedToPodCreated": {"p50": ms(percentile(&admitted_to_pod, 50.0)), "p99": ms(percentile(&admitted_to_pod, 99.0))},
        },
        "admissions": an.admissions,
        "admissionsPerS": if an.admission_span_ms > 0.0 { json!(((an.admissions as f64 - 1.0) / (an.admission_span_ms / 1000.0) * 10.0).round() / 10.0) } else { Value::Null },
        "maxLivePods": an.max_live_pods,
        "maxHolding": tr.max_holding,
        "failures": tr.failures(),
        "apiRequests": {
            "visionjobsWrites": jobs_writes, "podCreates": pod_creates, "podDeletes": pod_deletes,
            "operatorEventWrites": ev_writes, "operatorEventObjects": ev_objects,
            "allEventWritesInCluster": events_all, "leases": leases,
            "operatorTotal": operator_requests, "perJob": (operator_requests / n * 100.0).round() / 100.0,
            "queueAndAlgorithmStatusWrites": pool_status, "reads": reads,
            "eventsBySource": ev_by_source, "byVerb": by_verb,
        },
        "operator": {
            "pid": a.operator_pid,
            "peakRssMiB": proc_after.map(|p| p.hwm_kib as f64 / 1024.0),
            "rssMiB": proc_after.map(|p| p.rss_kib as f64 / 1024.0),
            "cpuS": cpu_s,
            "cpuMsPerJob": cpu_s.map(|c| (c * 1000.0 / n * 100.0).round() / 100.0),
            "counters": a.metrics_url.as_deref().map(operator_counters),
        },
    });
    print_throughput(&v);
    write_out(a, &v)?;
    Ok(v)
}

fn f(v: &Value, path: &[&str]) -> Option<f64> {
    let mut x = v;
    for p in path {
        x = x.get(p)?;
    }
    x.as_f64()
}

fn show(v: Option<f64>, unit: &str) -> String {
    match v {
        Some(x) if unit == "%" => format!("{:.1}%", x * 100.0),
        Some(x) => format!("{x:.2}{unit}"),
        None => "-".into(),
    }
}

fn print_throughput(v: &Value) {
    println!();
    println!("Throughput scenario");
    println!(
        "  makespan {}  (ideal ceil(jobs/maxRunning) x runtime = {}; ratio {})",
        show(f(v, &["makespanS"]), "s"),
        show(f(v, &["idealMakespanS"]), "s"),
        show(f(v, &["makespanOverIdeal"]), "")
    );
    println!("  throughput {} jobs/s", show(f(v, &["jobsPerS"]), ""));
    println!(
        "  slot utilisation while jobs waited {} (over {})",
        show(f(v, &["utilisationWhileWaiting"]), "%"),
        show(f(v, &["waitingS"]), "s")
    );
    println!(
        "  refill latency p50 {}  p90 {}  p95 {}  p99 {}  max {}  ({} samples)",
        show(f(v, &["refillMs", "p50"]), "ms"),
        show(f(v, &["refillMs", "p90"]), "ms"),
        show(f(v, &["refillMs", "p95"]), "ms"),
        show(f(v, &["refillMs", "p99"]), "ms"),
        show(f(v, &["refillMs", "max"]), "ms"),
        v["refillMs"]["samples"]
    );
    println!(
        "  refill stages: pod ended -> job seen final p50 {} p99 {}; job seen admitted -> its pod seen p50 {} p99 {}",
        show(f(v, &["stagesMs", "podEndedToJobFinal", "p50"]), "ms"),
        show(f(v, &["stagesMs", "podEndedToJobFinal", "p99"]), "ms"),
        show(f(v, &["stagesMs", "jobAdmittedToPodCreated", "p50"]), "ms"),
        show(f(v, &["stagesMs", "jobAdmittedToPodCreated", "p99"]), "ms")
    );
    println!(
        "  admissions {} at {} /s; wait p50 {} p99 {}",
        v["admissions"],
        show(f(v, &["admissionsPerS"]), ""),
        show(f(v, &["waitMs", "p50"]), "ms"),
        show(f(v, &["waitMs", "p99"]), "ms")
    );
    println!(
        "  most pods alive at once {} (maxRunning {}), most jobs holding a slot {}",
        v["maxLivePods"], v["params"]["maxRunning"], v["maxHolding"]
    );
    let r = &v["apiRequests"];
    println!(
        "  operator API requests: {} per job = visionjobs writes {} + pod creates {} + pod deletes {} + its events {} + leases {} (total {})",
        show(f(r, &["perJob"]), ""),
        r["visionjobsWrites"],
        r["podCreates"],
        r["podDeletes"],
        r["operatorEventWrites"],
        r["leases"],
        r["operatorTotal"]
    );
    println!(
        "    besides: queue/algorithm status writes {}, GETs/LISTs {}; events by source {}",
        r["queueAndAlgorithmStatusWrites"], r["reads"], r["eventsBySource"]
    );
    println!("    by verb: {}", r["byVerb"]);
    if !v["operator"]["counters"].is_null() {
        println!("  operator counters: {}", v["operator"]["counters"]);
    }
    println!(
        "  operator peak RSS {} MiB, CPU {} s ({} ms per job)",
        show(f(v, &["operator", "peakRssMiB"]), ""),
        show(f(v, &["operator", "cpuS"]), ""),
        show(f(v, &["operator", "cpuMsPerJob"]), "")
    );
}

/// The ceiling: bare pods with the same annotations and GPUs, all at once,
/// with no operator and no limit but the nodes' GPUs.
pub async fn ceiling(client: &Client, a: &BenchArgs) -> Result<Value> {
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
    let specs: Vec<Pod> = (0..a.jobs)
        .map(|i| {
            serde_json::from_value(json!({
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
            .expect("a valid pod")
        })
        .collect();
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
        .filter(|(_, e)| matches!(e, super::stats::Ev::PodEnded))
        .map(|(t, _)| *t)
        .fold(0.0, f64::max);
    let makespan_s = (last_end - t_start) / 1000.0;
    let slots = (gpu_capacity / a.gpus.max(1) as i64).max(1) as usize;
    let ideal_s = a.jobs.div_ceil(slots) as f64 * a.runtime_ms as f64 / 1000.0;
    let v = json!({
        "scenario": "ceiling",
        "params": {"pods": a.jobs, "gpusPerPod": a.gpus, "runtimeMs": a.runtime_ms, "clusterGPUs": gpu_capacity},
        "makespanS": (makespan_s * 100.0).round() / 100.0,
        "idealMakespanS": ideal_s,
        "podsPerS": (a.jobs as f64 / makespan_s * 100.0).round() / 100.0,
        "maxLivePods": tr.max_live_pods,
        "submitErrors": tr.submit_errors,
    });
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
    write_out(a, &v)?;
    eprintln!("deleting the ceiling pods ...");
    let _ = pods
        .delete_collection(
            &DeleteParams::background(),
            &ListParams::default().labels(CEILING_LABEL),
        )
        .await?;
    Ok(v)
}

/// Memory: `jobs` jobs queued into a paused queue; the operator's RSS once
/// they are all Queued.
pub async fn memory(client: &Client, a: &BenchArgs) -> Result<Value> {
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
    let queued = loop {
        let queued = tr
            .jobs
            .values()
            .filter(|j| j.phase == Some(JobPhase::Queued))
            .count();
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
    let v = json!({
        "scenario": "memory",
        "params": {"jobs": a.jobs, "queue": a.queue},
        "queued": queued,
        "submitS": submitted_s,
        "allQueuedS": all_queued_s,
        "operator": {
            "rssBeforeMiB": mib(before, |p| p.rss_kib),
            "rssMiB": mib(after, |p| p.rss_kib),
            "peakRssMiB": mib(after, |p| p.hwm_kib),
        },
        "submitErrors": tr.submit_errors,
    });
    println!();
    println!("Memory scenario");
    println!(
        "  {queued} jobs Queued in {all_queued_s:.1}s (submitted in {:.1}s); operator RSS {} MiB (before {} MiB, peak {} MiB)",
        submitted_s.unwrap_or(0.0),
        show(f(&v, &["operator", "rssMiB"]), ""),
        show(f(&v, &["operator", "rssBeforeMiB"]), ""),
        show(f(&v, &["operator", "peakRssMiB"]), ""),
    );
    write_out(a, &v)?;
    Ok(v)
}

/// Puts the scenarios next to the targets; Ok(true) when all are met.
pub fn report(throughput: &Value, ceiling: Option<&Value>, memory: Option<&Value>) -> bool {
    let mut rows: Vec<(String, String, String, Option<bool>)> = Vec::new();
    let u = f(throughput, &["utilisationWhileWaiting"]);
    rows.push((
        "slot utilisation while jobs wait".into(),
        show(u, "%"),
        ">= 95%".into(),
        u.map(|u| u >= 0.95),
    ));
    let r = f(throughput, &["refillMs", "p99"]);
    rows.push((
        "refill latency p99".into(),
        show(r, " ms"),
        "<= 250 ms".into(),
        r.map(|r| r <= 250.0),
    ));
    let q = f(throughput, &["apiRequests", "perJob"]);
    rows.push((
        "operator API requests per job".into(),
        show(q, ""),
        "<= 6".into(),
        q.map(|q| q <= 6.0),
    ));
    if let Some(m) = memory {
        let rss = f(m, &["operator", "rssMiB"]);
        rows.push((
            format!("operator RSS at {} queued jobs", m["queued"]),
            show(rss, " MiB"),
            "<= 64 MiB".into(),
            rss.map(|r| r <= 64.0),
        ));
    }
    if let Some(c) = ceiling {
        let op = f(throughput, &["jobsPerS"]);
        let cap = f(c, &["podsPerS"]);
        let frac = match (op, cap) {
            (Some(o), Some(c)) if c > 0.0 => Some(o / c),
            _ => None,
        };
        rows.push((
            format!(
                "throughput vs ceiling ({} jobs/s vs {} pods/s)",
                show(op, ""),
                show(cap, "")
            ),
            show(frac, "%"),
            ">= 80%".into(),
            frac.map(|f| f >= 0.8),
        ));
    }
    println!();
    println!("| target | measured | goal | met |");
    println!("|---|---|---|---|");
    let mut all = true;
    for (name, got, goal, met) in &rows {
        let m = match met {
            Some(true) => "yes",
            Some(false) => {
                all = false;
                "**no**"
            }
            None => {
                all = false;
                "?"
            }
        };
        println!("| {name} | {got} | {goal} | {m} |");
    }
    all
}
