//! The everyday commands: submit, get, watch, result, queue.

use std::collections::BTreeMap;
use std::path::Path;
use std::pin::pin;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::Value;

use crate::{Result, fail};
use vision_api::{JobPhase, VisionJob, VisionJobSpec, VisionQueue};

/// A kube error as a person wants to read it: the API server's message.
pub fn short(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if !s.message.is_empty() => s.message.clone(),
        other => other.to_string(),
    }
}

/// Writes a line to stdout; a closed pipe (`| head`) ends the process quietly.
pub fn out(line: &str) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    if writeln!(o, "{line}").is_err() {
        std::process::exit(0);
    }
}

/// A client from `--kubeconfig`, else KUBECONFIG, in-cluster or ~/.kube/config.
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client> {
    match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| fail(format!("cannot read kubeconfig {}: {e}", path.display())))?;
            let config =
                kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
            Ok(Client::try_from(config)?)
        }
        None => Ok(Client::try_default().await?),
    }
}

/// Creates the namespace unless it exists.
pub async fn ensure_namespace(client: &Client, name: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    if api.get_opt(name).await?.is_some() {
        return Ok(());
    }
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    // Pods of a namespace are refused until its default ServiceAccount exists.
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), name);
    for _ in 0..60 {
        if sas.get_opt("default").await?.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// What `submit` sends.
pub struct SubmitArgs {
    pub namespace: String,
    pub algorithm: String,
    pub queue: String,
    pub input: Option<Value>,
    pub params: Option<Value>,
    pub priority: i32,
    pub gpus: Option<i32>,
    pub timeout_seconds: Option<i64>,
    pub retries: Option<i32>,
    pub ttl_seconds_after_finished: Option<i32>,
    pub annotations: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub name: Option<String>,
    pub generate_name: Option<String>,
    pub count: u32,
    pub concurrency: usize,
}

/// A new job (not yet sent).
pub fn job_of(a: &SubmitArgs, name: Option<String>) -> VisionJob {
    let spec = VisionJobSpec {
        algorithm: a.algorithm.clone(),
        queue: a.queue.clone(),
        priority: a.priority,
        input: a.input.clone(),
        params: a.params.clone(),
        gpus: a.gpus,
        timeout_seconds: a.timeout_seconds,
        retries: a.retries,
        suspend: false,
        ttl_seconds_after_finished: a.ttl_seconds_after_finished,
    };
    let mut job = VisionJob::new("", spec);
    job.metadata = ObjectMeta {
        name,
        generate_name: a
            .generate_name
            .clone()
            .or_else(|| Some(format!("{}-", a.algorithm))),
        namespace: Some(a.namespace.clone()),
        annotations: (!a.annotations.is_empty()).then(|| a.annotations.clone()),
        labels: (!a.labels.is_empty()).then(|| a.labels.clone()),
        ..Default::default()
    };
    if job.metadata.name.is_some() {
        job.metadata.generate_name = None;
    }
    job
}

/// Submits `count` jobs; prints the name of each (or a summary for many).
pub async fn submit(client: &Client, a: &SubmitArgs) -> Result<()> {
    if a.name.is_some() && a.count > 1 {
        return Err(fail(
            "--name takes a single job; use --generate-name with --count",
        ));
    }
    let api: Api<VisionJob> = Api::namespaced(client.clone(), &a.namespace);
    let jobs: Vec<VisionJob> = (0..a.count).map(|_| job_of(a, a.name.clone())).collect();
    let quiet = a.count > 20;
    let started = std::time::Instant::now();
    let results: Vec<Result<VisionJob>> = futures::stream::iter(jobs)
        .map(|job| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &job)
                    .await
                    .map_err(|e| fail(short(&e)))
            }
        })
        .buffer_unordered(a.concurrency.max(1))
        .collect()
        .await;
    let (mut ok, mut errors) = (0u32, BTreeMap::<String, u32>::new());
    for r in results {
        match r {
            Ok(job) => {
                ok += 1;
                if !quiet {
                    println!(
                        "visionjob.vision.zjlab.io/{} created",
                        job.metadata.name.unwrap_or_default()
                    );
                }
            }
            Err(e) => *errors.entry(e.to_string()).or_default() += 1,
        }
    }
    if quiet {
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{ok} VisionJobs created in {} in {:.1}s ({:.0}/s)",
            a.namespace,
            secs,
            ok as f64 / secs.max(1e-3)
        );
    }
    for (e, n) in &errors {
        eprintln!("error ({n}x): {e}");
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(fail(format!(
            "{} of {} submissions failed",
            a.count - ok,
            a.count
        )))
    }
}

fn ts_ms(t: &Option<Time>) -> Option<i64> {
    t.as_ref().map(|t| t.0.as_millisecond())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// "42s", "3m", "2h5m", "3d".
pub fn human_duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=119 => format!("{s}s"),
        120..=3599 => format!("{}m", s / 60),
        3600..=86_399 => {
            let m = (s % 3600) / 60;
            if m == 0 {
                format!("{}h", s / 3600)
            } else {
                format!("{}h{m}m", s / 3600)
            }
        }
        _ => format!("{}d", s / 86_400),
    }
}

/// Prints rows as aligned columns.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        out(s.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

fn phase_str(job: &VisionJob) -> String {
    job.phase()
        .map(|p| p.to_string())
        .unwrap_or_else(|| "-".into())
}

/// Filters of `get`.
pub struct GetArgs {
    pub namespace: Option<String>,
    pub queue: Option<String>,
    pub phase: Option<String>,
    pub algorithm: Option<String>,
    pub selector: Option<String>,
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Wide,
    Json,
    Name,
}

/// Lists jobs as a table (or JSON, or names).
pub async fn get(client: &Client, a: &GetArgs) -> Result<()> {
    let api: Api<VisionJob> = match &a.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut fields = Vec::new();
    if let Some(q) = &a.queue {
        fields.push(format!("spec.queue={q}"));
    }
    if let Some(p) = &a.phase {
        fields.push(format!("status.phase={p}"));
    }
    if let Some(alg) = &a.algorithm {
        fields.push(format!("spec.algorithm={alg}"));
    }
    let mut lp = ListParams::default();
    if !fields.is_empty() {
        lp = lp.fields(&fields.join(","));
    }
    if let Some(s) = &a.selector {
        lp = lp.labels(s);
    }
    let jobs = list_all(&api, lp).await?;
    match a.output {
        Output::Json => {
            out(&serde_json::to_string_pretty(&jobs)?);
            return Ok(());
        }
        Output::Name => {
            for j in &jobs {
                out(j.metadata.name.as_deref().unwrap_or_default());
            }
            return Ok(());
        }
        _ => {}
    }
    if jobs.is_empty() {
        eprintln!("No VisionJobs found.");
        return Ok(());
    }
    let all = a.namespace.is_none();
    let wide = a.output == Output::Wide;
    let now = now_ms();
    let mut header = vec![];
    if all {
        header.push("NAMESPACE");
    }
    header.extend([
        "NAME",
        "ALGORITHM",
        "QUEUE",
        "PRIORITY",
        "PHASE",
        "REASON",
        "ATTEMPTS",
        "WAITED",
        "AGE",
    ]);
    if wide {
        header.extend(["POD", "MESSAGE"]);
    }
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            let st = j.status.clone().unwrap_or_default();
            let created = ts_ms(&j.metadata.creation_timestamp);
            let waited = match (created, ts_ms(&st.admitted_at)) {
                (Some(c), Some(a)) => human_duration(a - c),
                (Some(c), None) if j.phase() == Some(JobPhase::Queued) || j.phase().is_none() => {
                    format!("{}+", human_duration(now - c))
                }
                _ => "-".into(),
            };
            let mut row = vec![];
            if all {
                row.push(j.metadata.namespace.clone().unwrap_or_default());
            }
            row.extend([
                j.metadata.name.clone().unwrap_or_default(),
                j.spec.algorithm.clone(),
                j.spec.queue.clone(),
                j.spec.priority.to_string(),
                phase_str(j),
                st.reason.clone().unwrap_or_else(|| "-".into()),
                st.attempts.unwrap_or(0).to_string(),
                waited,
                created
                    .map(|c| human_duration(now - c))
                    .unwrap_or_else(|| "-".into()),
            ]);
            if wide {
                row.push(st.pod_name.clone().unwrap_or_else(|| "-".into()));
                row.push(st.message.clone().unwrap_or_default());
            }
            row
        })
        .collect();
    print_table(&header, &rows);
    Ok(())
}

/// Lists every object, a page at a time.
pub async fn list_all<K>(api: &Api<K>, lp: ListParams) -> Result<Vec<K>>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut out = Vec::new();
    let mut lp = lp.limit(500);
    loop {
        let page = api.list(&lp).await?;
        let cont = page.metadata.continue_.clone();
        out.extend(page.items);
        match cont {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    Ok(out)
}

/// One line describing where a job stands.
fn describe(job: &VisionJob) -> String {
    let st = job.status.clone().unwrap_or_default();
    let mut s = phase_str(job);
    if let Some(r) = st.reason.as_ref().filter(|r| **r != s) {
        s.push_str(&format!(" ({r})"));
    }
    if let Some(a) = st.attempts.filter(|a| *a > 0) {
        s.push_str(&format!(" attempt {a}"));
    }
    if let Some(p) = &st.pod_name
        && job.phase().is_some_and(|p| p.holds_slot())
    {
        s.push_str(&format!(" pod {p}"));
    }
    if let Some(m) = st.message.as_ref().filter(|m| !m.is_empty()) {
        s.push_str(&format!(": {m}"));
    }
    s
}

/// Follows one job until it reaches a final phase; prints every change.
/// Ok(true) when it succeeded.
pub async fn watch_job(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Option<Duration>,
) -> Result<bool> {
    let api: Api<VisionJob> = Api::namespaced(client.clone(), namespace);
    if api.get_opt(name).await?.is_none() {
        return Err(fail(format!("VisionJob {namespace}/{name} not found")));
    }
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = pin!(watcher(api, cfg).default_backoff().applied_objects());
    let start = std::time::Instant::now();
    let mut last = String::new();
    let follow = async {
        while let Some(job) = stream.try_next().await? {
            let line = describe(&job);
            if line != last {
                let t = k8s_openapi::jiff::Zoned::now();
                println!("{}  {line}", t.strftime("%H:%M:%S%.3f"));
                last = line;
            }
            if let Some(p) = job.phase()
                && p.is_final()
            {
                if let Some(r) = job.status.as_ref().and_then(|s| s.result.as_ref()) {
                    println!("result: {}", serde_json::to_string(r)?);
                }
                println!("{} after {:.1}s", p, start.elapsed().as_secs_f64());
                return Ok::<bool, crate::Error>(p == JobPhase::Succeeded);
            }
        }
        Err(fail("the watch ended"))
    };
    match timeout {
        Some(t) => tokio::time::timeout(t, follow)
            .await
            .map_err(|_| fail(format!("{name} did not finish within {}s", t.as_secs())))?,
        None => follow.await,
    }
}

/// Prints a job's status.result. Err when the job has not finished
/// successfully (the error says why).
pub async fn result(client: &Client, namespace: &str, name: &str) -> Result<()> {
    let api: Api<VisionJob> = Api::namespaced(client.clone(), namespace);
    let job = api
        .get_opt(name)
        .await?
        .ok_or_else(|| fail(format!("VisionJob {namespace}/{name} not found")))?;
    let st = job.status.clone().unwrap_or_default();
    if let Some(r) = &st.result {
        println!("{}", serde_json::to_string_pretty(r)?);
    }
    match job.phase() {
        Some(JobPhase::Succeeded) => Ok(()),
        Some(p) if p.is_final() => Err(fail(format!("{name}: {}", describe(&job)))),
        _ => Err(fail(format!(
            "{name} has no result yet: {}",
            describe(&job)
        ))),
    }
}

/// Queues as a table; a queue in detail with its first waiting jobs; or a
/// job's position in its queue.
pub async fn queue(
    client: &Client,
    name: Option<&str>,
    job: Option<(&str, &str)>,
    top: usize,
) -> Result<()> {
    let queues: Api<VisionQueue> = Api::all(client.clone());
    if let Some((ns, job_name)) = job {
        let jobs: Api<VisionJob> = Api::namespaced(client.clone(), ns);
        let j = jobs
            .get_opt(job_name)
            .await?
            .ok_or_else(|| fail(format!("VisionJob {ns}/{job_name} not found")))?;
        let waiting = waiting_jobs(client, &j.spec.queue).await?;
        println!("{ns}/{job_name}: {}", describe(&j));
        match waiting.iter().position(|w| {
            w.metadata.namespace.as_deref() == Some(ns)
                && w.metadata.name.as_deref() == Some(job_name)
        }) {
            Some(i) => {
                println!(
                    "position {} of {} waiting in queue {} (priority {}; order: priority desc, creation time, namespace/name)",
                    i + 1,
                    waiting.len(),
                    j.spec.queue,
                    j.spec.priority
                );
                if let Some(q) = queues.get_opt(&j.spec.queue).await?
                    && q.spec.ordering == vision_api::QueueOrdering::BestEffortFIFO
                {
                    println!(
                        "(BestEffortFIFO: a job that fits the free GPUs may pass one that does not)"
                    );
                }
            }
            None => println!("not waiting in queue {}", j.spec.queue),
        }
        return Ok(());
    }
    match name {
        None => {
            let all = queues.list(&ListParams::default()).await?.items;
            if all.is_empty() {
                eprintln!("No VisionQueues found.");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|q| {
                    let st = q.status.clone().unwrap_or_default();
                    vec![
                        q.metadata.name.clone().unwrap_or_default(),
                        format!("{}/{}", st.running, q.spec.max_running),
                        match q.spec.max_gpus {
                            Some(m) => format!("{}/{m}", st.gpus_in_use),
                            None => st.gpus_in_use.to_string(),
                        },
                        match q.spec.max_pending {
                            Some(m) => format!("{}/{m}", st.pending),
                            None => st.pending.to_string(),
                        },
                        q.spec.paused.to_string(),
                        st.admitted_total.to_string(),
                        st.head.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            print_table(
                &[
                    "NAME", "RUNNING", "GPUS", "PENDING", "PAUSED", "ADMITTED", "HEAD",
                ],
                &rows,
            );
        }
        Some(name) => {
            let q = queues
                .get_opt(name)
                .await?
                .ok_or_else(|| fail(format!("VisionQueue {name} not found")))?;
            let st = q.status.clone().unwrap_or_default();
            println!("queue {name}");
            println!("  running   {}/{} slots", st.running, q.spec.max_running);
            match q.spec.max_gpus {
                Some(m) => println!("  gpus      {}/{m}", st.gpus_in_use),
                None => println!("  gpus      {} (no GPU limit)", st.gpus_in_use),
            }
            match q.spec.max_pending {
                Some(m) => println!("  pending   {}/{m}", st.pending),
                None => println!("  pending   {}", st.pending),
            }
            println!("  ordering  {:?}", q.spec.ordering);
            println!("  paused    {}", q.spec.paused);
            println!(
                "  admitted  {} since the operator's leader started",
                st.admitted_total
            );
            if let Some(h) = &st.head {
                println!(
                    "  head      {h}{}",
                    st.head_reason
                        .as_ref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                );
            }
            for c in &st.conditions {
                println!(
                    "  condition {}={} {}: {}",
                    c.type_, c.status, c.reason, c.message
                );
            }
            let waiting = waiting_jobs(client, name).await?;
            println!(
                "  waiting   {} jobs (computed here, in admission order)",
                waiting.len()
            );
            let rows: Vec<Vec<String>> = waiting
                .iter()
                .take(top)
                .enumerate()
                .map(|(i, j)| {
                    vec![
                        (i + 1).to_string(),
                        format!(
                            "{}/{}",
                            j.metadata.namespace.as_deref().unwrap_or_default(),
                            j.metadata.name.as_deref().unwrap_or_default()
                        ),
                        j.spec.priority.to_string(),
                        j.spec.algorithm.clone(),
                        j.status
                            .as_ref()
                            .and_then(|s| s.reason.clone())
                            .unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            if !rows.is_empty() {
                println!();
                print_table(&["POS", "JOB", "PRIORITY", "ALGORITHM", "WAITS-FOR"], &rows);
                if waiting.len() > top {
                    println!("... and {} more", waiting.len() - top);
                }
            }
        }
    }
    Ok(())
}

/// The jobs waiting in a queue (Queued, or not yet seen by the operator),
/// in the operator's admission order.
pub async fn waiting_jobs(client: &Client, queue: &str) -> Result<Vec<VisionJob>> {
    let api: Api<VisionJob> = Api::all(client.clone());
    let lp = ListParams::default().fields(&format!("spec.queue={queue}"));
    let mut jobs: Vec<VisionJob> = list_all(&api, lp)
        .await?
        .into_iter()
        .filter(|j| matches!(j.phase(), None | Some(JobPhase::Queued)) && !j.spec.suspend)
        .filter(|j| j.metadata.deletion_timestamp.is_none())
        .collect();
    jobs.sort_by(queue_order);
    Ok(jobs)
}

/// The operator's admission order of waiting jobs: priority descending, then
/// creation time ascending, then namespace/name (see `admission::index`).
/// Creation timestamps have a resolution of one second, so jobs created in
/// the same second are ordered by namespace/name, as the operator does.
fn queue_order(a: &VisionJob, b: &VisionJob) -> std::cmp::Ordering {
    let created = |j: &VisionJob| {
        j.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_millisecond())
            .unwrap_or(i64::MAX)
    };
    let key = |j: &VisionJob| {
        (
            j.metadata.namespace.clone().unwrap_or_default(),
            j.metadata.name.clone().unwrap_or_default(),
        )
    };
    b.spec
        .priority
        .cmp(&a.spec.priority)
        .then(created(a).cmp(&created(b)))
        .then_with(|| key(a).cmp(&key(b)))
}
