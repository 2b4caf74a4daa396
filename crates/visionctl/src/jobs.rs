//! The commands on VisionJobs: submit (flags or manifests, dry runs), get,
//! describe, watch, wait, result, logs, cancel, suspend, resume, retry.
//! Each returns an [`Error`] whose exit code says what went wrong.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::time::{Duration, Instant};

use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde_json::{Value, json};

use crate::cluster::{Session, list_all};
use crate::output::{self, Format, age, out, print_table};
use crate::{Error, Result};
use vision_api::contract::LABEL_JOB;
use vision_api::submit::ANNOTATION_REQUEST_ID;
use vision_api::{JobPhase, VisionJob, VisionJobSpec};

/// `kind.group/`, the prefix of `-o name` and of kubectl's messages.
pub const RESOURCE: &str = "visionjob.vision.zjlab.io";
const KIND: &str = "VisionJob";
/// The annotation a retried job carries: the job it repeats.
pub const RETRY_OF: &str = "vision.zjlab.io/retry-of";

fn api(s: &Session) -> Api<VisionJob> {
    Api::namespaced(s.client.clone(), &s.namespace)
}

fn job_id(s: &Session, name: &str) -> String {
    format!("{}/{name}", s.namespace)
}

/// Gets a job; a missing one is [`Error::NotFound`].
pub async fn fetch(s: &Session, name: &str) -> Result<VisionJob> {
    api(s)
        .get(name)
        .await
        .map_err(|e| Error::from_api(e, KIND, &job_id(s, name)))
}

/// What `submit` builds a job from when no manifest is given.
#[derive(Debug, Clone, Default)]
pub struct JobTemplate {
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
}

impl JobTemplate {
    /// The job (not yet sent), in `namespace`.
    pub fn job(&self, namespace: &str) -> VisionJob {
        let spec = VisionJobSpec {
            algorithm: self.algorithm.clone(),
            queue: self.queue.clone(),
            priority: self.priority,
            input: self.input.clone(),
            params: self.params.clone(),
            gpus: self.gpus,
            timeout_seconds: self.timeout_seconds,
            retries: self.retries,
            suspend: false,
            ttl_seconds_after_finished: self.ttl_seconds_after_finished,
            output: None,
        };
        let mut job = VisionJob::new("", spec);
        job.metadata = ObjectMeta {
            name: self.name.clone(),
            generate_name: match &self.name {
                Some(_) => None,
                None => Some(
                    self.generate_name
                        .clone()
                        .unwrap_or_else(|| format!("{}-", self.algorithm)),
                ),
            },
            namespace: Some(namespace.to_string()),
            annotations: (!self.annotations.is_empty()).then(|| self.annotations.clone()),
            labels: (!self.labels.is_empty()).then(|| self.labels.clone()),
            ..Default::default()
        };
        job
    }
}

/// Reads VisionJob manifests (YAML or JSON, several documents, `List`s);
/// `-` is stdin. Anything that is not a VisionJob of this API is refused.
pub fn read_manifests(paths: &[PathBuf]) -> Result<Vec<VisionJob>> {
    let mut jobs = Vec::new();
    for path in paths {
        let bad = |e: Box<dyn std::error::Error + Send + Sync>| Error::Manifest {
            path: path.clone(),
            source: e,
        };
        let text = if path == Path::new("-") {
            std::io::read_to_string(std::io::stdin()).map_err(|e| bad(e.into()))?
        } else {
            std::fs::read_to_string(path).map_err(|e| bad(e.into()))?
        };
        jobs.extend(parse_manifests(&text).map_err(bad)?);
    }
    if jobs.is_empty() {
        return Err(Error::Usage("the manifests hold no VisionJob".into()));
    }
    Ok(jobs)
}

/// The VisionJobs of a YAML or JSON text.
pub fn parse_manifests(
    text: &str,
) -> std::result::Result<Vec<VisionJob>, Box<dyn std::error::Error + Send + Sync>> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text)?;
    let mut items = Vec::new();
    for doc in docs.into_iter().filter(|d| !d.is_null()) {
        match doc.get("kind").and_then(Value::as_str) {
            Some("List") => items.extend(
                doc.get("items")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            ),
            _ => items.push(doc),
        }
    }
    let want = VisionJob::api_version(&());
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let kind = item.get("kind").and_then(Value::as_str).unwrap_or("");
            let version = item.get("apiVersion").and_then(Value::as_str).unwrap_or("");
            if kind != KIND || version != want {
                return Err(format!(
                    "document {}: kind {kind:?} apiVersion {version:?}; want kind VisionJob apiVersion {want}",
                    i + 1
                )
                .into());
            }
            serde_json::from_value::<VisionJob>(item)
                .map_err(|e| format!("document {}: {e}", i + 1).into())
        })
        .collect()
}

/// `--dry-run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DryRun {
    /// Send the jobs.
    None,
    /// Print what would be sent; send nothing.
    Client,
    /// Have the API server validate the jobs (schema, CEL rules) without storing them.
    Server,
}

/// What became of one job `submit` sent.
enum Submitted {
    Created(VisionJob),
    /// A job submitted for a request id existed already with the same spec:
    /// an earlier submission of the same request.
    Existing(VisionJob),
}

/// Creates one job. When its name is taken: a job submitted for a request
/// id (`vision_api::submit`, the annotation [`ANNOTATION_REQUEST_ID`]) is
/// this submission if the job there has the same spec, and a conflict if
/// not; any other job is a conflict.
async fn create(
    api: &Api<VisionJob>,
    pp: &PostParams,
    job: &VisionJob,
    id: &str,
) -> Result<Submitted> {
    let request_id = job
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_REQUEST_ID));
    // A job found taken but gone when read was deleted meanwhile: create again.
    for _ in 0..3 {
        let e = match api.create(pp, job).await {
            Ok(created) => return Ok(Submitted::Created(created)),
            Err(e) => e,
        };
        let (Some(name), kube::Error::Api(status)) = (&job.metadata.name, &e) else {
            return Err(Error::from_api(e, KIND, id));
        };
        if status.code != 409 {
            return Err(Error::from_api(e, KIND, id));
        }
        let Some(request_id) = request_id else {
            return Err(Error::Conflict {
                what: format!("VisionJob {id} already exists"),
            });
        };
        let Some(existing) = api
            .get_opt(name)
            .await
            .map_err(|e| Error::from_api(e, KIND, id))?
        else {
            continue;
        };
        let differences = vision_api::submit::differences(&existing, job);
        if differences.is_empty() {
            return Ok(Submitted::Existing(existing));
        }
        return Err(Error::Conflict {
            what: format!(
                "VisionJob {id} exists with another {}: request id {request_id:?} was submitted before with other values",
                differences.join(", ")
            ),
        });
    }
    Err(Error::Other(format!(
        "VisionJob {id} was deleted each time it was found taken; submit again"
    )))
}

/// Creates `jobs` in the session's namespace (unless a job names its own),
/// `concurrency` requests at a time; prints each (or a summary for many).
/// A job submitted for a request id that exists with the same spec is
/// printed as `unchanged`. Returns the created (or existing) jobs; any
/// refusal is an error after all were tried.
pub async fn submit(
    s: &Session,
    jobs: Vec<VisionJob>,
    dry_run: DryRun,
    output: Format,
    concurrency: usize,
) -> Result<Vec<VisionJob>> {
    let jobs: Vec<VisionJob> = jobs
        .into_iter()
        .map(|mut j| {
            j.metadata
                .namespace
                .get_or_insert_with(|| s.namespace.clone());
            j
        })
        .collect();
    if dry_run == DryRun::Client {
        print_jobs(&jobs, output, " created (dry run)")?;
        return Ok(jobs);
    }
    let pp = PostParams {
        dry_run: dry_run == DryRun::Server,
        ..Default::default()
    };
    let total = jobs.len();
    let quiet = total > 20 && output == Format::Name;
    let started = Instant::now();
    let results: Vec<Result<Submitted>> = futures::stream::iter(jobs)
        .map(|job| {
            let api: Api<VisionJob> = Api::namespaced(
                s.client.clone(),
                job.metadata.namespace.as_deref().unwrap_or(&s.namespace),
            );
            let pp = pp.clone();
            async move {
                let id = format!(
                    "{}/{}",
                    job.metadata.namespace.as_deref().unwrap_or_default(),
                    job.metadata
                        .name
                        .clone()
                        .or(job.metadata.generate_name.clone().map(|g| format!("{g}*")))
                        .unwrap_or_default()
                );
                create(&api, &pp, &job, &id).await
            }
        })
        .buffered(concurrency.max(1))
        .collect()
        .await;
    let mut created = Vec::new();
    let mut existing = Vec::new();
    let mut first_error = None;
    let mut errors = BTreeMap::<String, u32>::new();
    for r in results {
        match r {
            Ok(Submitted::Created(job)) => created.push(job),
            Ok(Submitted::Existing(job)) => existing.push(job),
            Err(e) => {
                *errors.entry(crate::error::chain(&e)).or_default() += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let suffix = if dry_run == DryRun::Server {
        " created (server dry run)"
    } else {
        " created"
    };
    if quiet {
        let secs = started.elapsed().as_secs_f64();
        out(&format!(
            "{} VisionJobs created in {} in {secs:.1}s ({:.0}/s)",
            created.len(),
            s.namespace,
            created.len() as f64 / secs.max(1e-3)
        ));
    } else {
        if !created.is_empty() || existing.is_empty() {
            print_jobs(&created, output, suffix)?;
        }
        if !existing.is_empty() {
            print_jobs(&existing, output, " unchanged (already submitted)")?;
        }
    }
    created.extend(existing);
    match first_error {
        None => Ok(created),
        Some(e) if total == 1 => Err(e),
        Some(e) => {
            for (text, n) in &errors {
                eprintln!("error ({n}x): {text}");
            }
            eprintln!("{} of {total} submissions failed", total - created.len());
            Err(e)
        }
    }
}

/// Prints jobs as submit does: `-o name` lines with `suffix`, or the objects.
fn print_jobs(jobs: &[VisionJob], output: Format, suffix: &str) -> Result<()> {
    match output {
        Format::Json | Format::Yaml if jobs.len() == 1 => output::print(&jobs[0], output),
        Format::Json | Format::Yaml => output::print(&output::list(jobs)?, output),
        _ => {
            for j in jobs {
                let name = j
                    .metadata
                    .name
                    .clone()
                    .or(j
                        .metadata
                        .generate_name
                        .clone()
                        .map(|g| format!("{g}<generated>")))
                    .unwrap_or_default();
                out(&format!("{RESOURCE}/{name}{suffix}"));
            }
            Ok(())
        }
    }
}

fn ts_ms(t: &Option<Time>) -> Option<i64> {
    t.as_ref().map(|t| t.0.as_millisecond())
}

fn now_ms() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_millisecond()
}

fn phase_str(job: &VisionJob) -> String {
    job.phase()
        .map(|p| p.to_string())
        .unwrap_or_else(|| "-".into())
}

/// Filters of `get`.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// `None`: every namespace (`-A`).
    pub all_namespaces: bool,
    pub queue: Option<String>,
    pub phase: Option<String>,
    pub algorithm: Option<String>,
    pub selector: Option<String>,
}

/// Lists jobs (all matching `filters`, or the named ones) as a table, JSON,
/// YAML or names. One named job in JSON/YAML is printed as itself, as
/// `kubectl get vj NAME -o json` does; otherwise a `List`.
pub async fn get(s: &Session, names: &[String], f: &Filters, output: Format) -> Result<()> {
    let jobs = if names.is_empty() {
        let api: Api<VisionJob> = if f.all_namespaces {
            Api::all(s.client.clone())
        } else {
            api(s)
        };
        let mut fields = Vec::new();
        if let Some(q) = &f.queue {
            fields.push(format!("spec.queue={q}"));
        }
        if let Some(p) = &f.phase {
            fields.push(format!("status.phase={p}"));
        }
        if let Some(alg) = &f.algorithm {
            fields.push(format!("spec.algorithm={alg}"));
        }
        let mut lp = ListParams::default();
        if !fields.is_empty() {
            lp = lp.fields(&fields.join(","));
        }
        if let Some(sel) = &f.selector {
            lp = lp.labels(sel);
        }
        list_all(&api, lp).await?
    } else {
        let mut jobs = Vec::new();
        for n in names {
            jobs.push(fetch(s, n).await?);
        }
        jobs
    };
    match output {
        Format::Json | Format::Yaml if names.len() == 1 => return output::print(&jobs[0], output),
        Format::Json | Format::Yaml => return output::print(&output::list(&jobs)?, output),
        Format::Name => {
            for j in &jobs {
                out(&format!(
                    "{RESOURCE}/{}",
                    j.metadata.name.as_deref().unwrap_or_default()
                ));
            }
            return Ok(());
        }
        Format::Table | Format::Wide => {}
    }
    if jobs.is_empty() {
        eprintln!(
            "No VisionJobs found{}.",
            if f.all_namespaces {
                String::new()
            } else {
                format!(" in {} namespace", s.namespace)
            }
        );
        return Ok(());
    }
    let (header, rows) = job_rows(&jobs, f.all_namespaces, output == Format::Wide, now_ms());
    print_table(&header, &rows);
    Ok(())
}

/// The table of `get`: header and rows.
pub fn job_rows(
    jobs: &[VisionJob],
    all: bool,
    wide: bool,
    now: i64,
) -> (Vec<&'static str>, Vec<Vec<String>>) {
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
    let rows = jobs
        .iter()
        .map(|j| {
            let st = j.status.clone().unwrap_or_default();
            let created = ts_ms(&j.metadata.creation_timestamp);
            let waited = match (created, ts_ms(&st.admitted_at)) {
                (Some(c), Some(a)) => age(a - c),
                (Some(c), None) if matches!(j.phase(), None | Some(JobPhase::Queued)) => {
                    format!("{}+", age(now - c))
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
                created.map(|c| age(now - c)).unwrap_or_else(|| "-".into()),
            ]);
            if wide {
                row.push(st.pod_name.clone().unwrap_or_else(|| "-".into()));
                row.push(st.message.clone().unwrap_or_default());
            }
            row
        })
        .collect();
    (header, rows)
}

/// One line describing where a job stands.
pub fn summary(job: &VisionJob) -> String {
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

/// Ok for a Succeeded job, [`Error::JobFailed`] for another final phase.
fn outcome(s: &Session, job: &VisionJob) -> Result<()> {
    match job.phase() {
        Some(JobPhase::Succeeded) => Ok(()),
        _ => {
            let st = job.status.clone().unwrap_or_default();
            let mut outcome = phase_str(job);
            if let Some(r) = st.reason {
                outcome.push_str(&format!(" ({r})"));
            }
            if let Some(m) = st.message.filter(|m| !m.is_empty()) {
                outcome.push_str(&format!(": {m}"));
            }
            Err(Error::JobFailed {
                name: job_id(s, job.metadata.name.as_deref().unwrap_or_default()),
                outcome,
            })
        }
    }
}

/// Follows a job until it is final, calling `each` with every version seen;
/// returns the final job. `timeout`: the client's patience.
async fn follow(
    s: &Session,
    name: &str,
    timeout: Option<Duration>,
    mut each: impl FnMut(&VisionJob) -> Result<()>,
) -> Result<VisionJob> {
    fetch(s, name).await?;
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = pin!(watcher(api(s), cfg).default_backoff().applied_objects());
    let run = async {
        while let Some(job) = stream
            .try_next()
            .await
            .map_err(|e| Error::Other(format!("watching VisionJob {}: {e}", job_id(s, name))))?
        {
            each(&job)?;
            if job.phase().is_some_and(|p| p.is_final()) {
                return Ok(job);
            }
        }
        Err(Error::Other(format!(
            "the watch of VisionJob {} ended",
            job_id(s, name)
        )))
    };
    match timeout {
        Some(t) => tokio::time::timeout(t, run)
            .await
            .map_err(|_| Error::Timeout {
                what: format!("VisionJob {} did not finish", job_id(s, name)),
                after: t,
            })?,
        None => run.await,
    }
}

/// `watch`: prints a line at every change of the job, then its result;
/// Ok only if it succeeded.
pub async fn watch(s: &Session, name: &str, timeout: Option<Duration>) -> Result<()> {
    let start = Instant::now();
    let mut last = String::new();
    let job = follow(s, name, timeout, |job| {
        let line = summary(job);
        if line != last {
            let t = k8s_openapi::jiff::Zoned::now();
            out(&format!("{}  {line}", t.strftime("%H:%M:%S%.3f")));
            last = line;
        }
        Ok(())
    })
    .await?;
    if let Some(r) = job.status.as_ref().and_then(|s| s.result.as_ref()) {
        out(&format!("result: {}", serde_json::to_string(r)?));
    }
    out(&format!(
        "{} after {:.1}s",
        phase_str(&job),
        start.elapsed().as_secs_f64()
    ));
    outcome(s, &job)
}

/// `wait`: waits quietly until each job is final; prints
/// `visionjob.vision.zjlab.io/NAME PHASE` for each. Ok only if all succeeded;
/// else the first failure.
pub async fn wait(s: &Session, names: &[String], timeout: Option<Duration>) -> Result<()> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut first_failure = None;
    for name in names {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let job = follow(s, name, left, |_| Ok(()))
            .await
            .map_err(|e| match e {
                Error::Timeout { what, .. } => Error::Timeout {
                    what,
                    after: timeout.unwrap_or_default(),
                },
                e => e,
            })?;
        out(&format!("{RESOURCE}/{name} {}", phase_str(&job)));
        if let Err(e) = outcome(s, &job) {
            first_failure.get_or_insert(e);
        }
    }
    first_failure.map_or(Ok(()), Err)
}

/// `result`: prints status.result. Ok only for a Succeeded job; a failed
/// job's result (if any) is still printed.
pub async fn result(s: &Session, name: &str, output: Format) -> Result<()> {
    let job = fetch(s, name).await?;
    let st = job.status.clone().unwrap_or_default();
    if let Some(r) = &st.result {
        output::print(
            r,
            if output == Format::Yaml {
                Format::Yaml
            } else {
                Format::Json
            },
        )?;
    }
    match job.phase() {
        Some(p) if p.is_final() => outcome(s, &job),
        _ => Err(Error::Other(format!(
            "VisionJob {} has no result yet: {}",
            job_id(s, name),
            summary(&job)
        ))),
    }
}

/// The pods of a job, oldest attempt first.
async fn pods_of(s: &Session, name: &str) -> Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), &s.namespace);
    let mut list = pods
        .list(&ListParams::default().labels(&format!("{LABEL_JOB}={name}")))
        .await?
        .items;
    list.sort_by_key(|p| {
        p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(vision_api::contract::LABEL_ATTEMPT))
            .and_then(|a| a.parse::<i32>().ok())
            .unwrap_or(0)
    });
    Ok(list)
}

/// `describe`: the job's spec, status, conditions, pods and recent events.
pub async fn describe(s: &Session, name: &str) -> Result<()> {
    let job = fetch(s, name).await?;
    let pods = pods_of(s, name).await?;
    let events: Api<Event> = Api::namespaced(s.client.clone(), &s.namespace);
    let mut events = events
        .list(&ListParams::default().fields(&format!(
            "involvedObject.kind={KIND},involvedObject.name={name}"
        )))
        .await?
        .items;
    events.sort_by_key(|e| {
        e.last_timestamp
            .as_ref()
            .map(|t| t.0.as_millisecond())
            .or(e.event_time.as_ref().map(|t| t.0.as_millisecond()))
            .unwrap_or(0)
    });
    for line in describe_lines(&job, &pods, &events, now_ms()) {
        out(&line);
    }
    Ok(())
}

/// The text of `describe` (pure, for tests).
pub fn describe_lines(job: &VisionJob, pods: &[Pod], events: &[Event], now: i64) -> Vec<String> {
    let st = job.status.clone().unwrap_or_default();
    let opt = |v: Option<String>| v.unwrap_or_else(|| "<none>".into());
    let json_of = |v: &Option<Value>| {
        v.as_ref()
            .map(|v| v.to_string())
            .unwrap_or_else(|| "<none>".into())
    };
    let when = |t: &Option<Time>| {
        t.as_ref()
            .map(|t| format!("{} ({} ago)", t.0, age(now - t.0.as_millisecond())))
            .unwrap_or_else(|| "<none>".into())
    };
    let sp = &job.spec;
    let mut l = vec![
        format!(
            "Name:         {}",
            job.metadata.name.clone().unwrap_or_default()
        ),
        format!(
            "Namespace:    {}",
            job.metadata.namespace.clone().unwrap_or_default()
        ),
        format!("Created:      {}", when(&job.metadata.creation_timestamp)),
        format!("Algorithm:    {}", sp.algorithm),
        format!("Queue:        {}", sp.queue),
        format!("Priority:     {}", sp.priority),
        format!(
            "GPUs:         {}",
            opt(st.gpus.or(sp.gpus).map(|g| g.to_string()))
        ),
        format!(
            "Timeout:      {}",
            opt(sp.timeout_seconds.map(|t| format!("{t}s")))
        ),
        format!("Retries:      {}", opt(sp.retries.map(|r| r.to_string()))),
        format!("Suspend:      {}", sp.suspend),
        format!("Input:        {}", json_of(&sp.input)),
        format!("Params:       {}", json_of(&sp.params)),
        format!("Phase:        {}", phase_str(job)),
        format!("Reason:       {}", opt(st.reason.clone())),
        format!("Message:      {}", opt(st.message.clone())),
        format!("Attempts:     {}", st.attempts.unwrap_or(0)),
        format!("Pod:          {}", opt(st.pod_name.clone())),
        format!("Queued:       {}", when(&st.queued_at)),
        format!("Admitted:     {}", when(&st.admitted_at)),
        format!("Started:      {}", when(&st.started_at)),
        format!("Finished:     {}", when(&st.finished_at)),
        format!("Result:       {}", json_of(&st.result)),
    ];
    if let Some(w) = &st.worker {
        // Worker mode: the attempt ran in a long-lived worker, not its own pod.
        l.insert(l.len() - 5, format!("Worker:       {w}"));
    }
    l.push("Conditions:".into());
    if st.conditions.is_empty() {
        l.push("  <none>".into());
    }
    for c in &st.conditions {
        l.push(format!(
            "  {}={} {}: {}",
            c.type_, c.status, c.reason, c.message
        ));
    }
    l.push("Pods:".into());
    if pods.is_empty() {
        l.push("  <none>".into());
    }
    for p in pods {
        let phase = p
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Pending".into());
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_else(|| "-".into());
        l.push(format!(
            "  {}  {phase}  node {node}",
            p.metadata.name.clone().unwrap_or_default()
        ));
    }
    l.push("Events:".into());
    if events.is_empty() {
        l.push("  <none>".into());
    }
    for e in events {
        l.push(format!(
            "  {}  {}  {}",
            e.type_.clone().unwrap_or_default(),
            e.reason.clone().unwrap_or_default(),
            e.message.clone().unwrap_or_default()
        ));
    }
    l
}

/// `logs`: the log of the job's pod of `attempt`, else of its current or
/// last attempt; `follow` streams it until the pod ends.
pub async fn logs(s: &Session, name: &str, attempt: Option<i32>, follow: bool) -> Result<()> {
    let job = fetch(s, name).await?;
    let pod = match attempt {
        Some(a) => vision_api::contract::pod_name(name, a),
        None => match job.status.as_ref().and_then(|st| st.pod_name.clone()) {
            Some(p) => p,
            None => pods_of(s, name)
                .await?
                .last()
                .and_then(|p| p.metadata.name.clone())
                .ok_or_else(|| Error::NotFound {
                    kind: "pod of VisionJob",
                    name: format!(
                        "{} (it has not started: {})",
                        job_id(s, name),
                        summary(&job)
                    ),
                })?,
        },
    };
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), &s.namespace);
    let lp = LogParams {
        container: Some(vision_api::ALGORITHM_CONTAINER.to_string()),
        follow,
        ..Default::default()
    };
    let pod_id = format!("{}/{pod}", s.namespace);
    if follow {
        let mut lines = pods
            .log_stream(&pod, &lp)
            .await
            .map_err(|e| Error::from_api(e, "Pod", &pod_id))?
            .lines();
        while let Some(line) = lines
            .try_next()
            .await
            .map_err(|e| Error::Other(format!("reading the log of {pod_id}: {e}")))?
        {
            out(&line);
        }
    } else {
        let text = pods
            .logs(&pod, &lp)
            .await
            .map_err(|e| Error::from_api(e, "Pod", &pod_id))?;
        let text = text.strip_suffix('\n').unwrap_or(&text);
        if !text.is_empty() {
            out(text);
        }
    }
    Ok(())
}

/// `cancel`: deletes jobs (their pods go with them); `wait`: until gone.
pub async fn cancel(s: &Session, names: &[String], wait: Option<Duration>) -> Result<()> {
    for name in names {
        api(s)
            .delete(name, &DeleteParams::background())
            .await
            .map_err(|e| Error::from_api(e, KIND, &job_id(s, name)))?;
        if let Some(t) = wait {
            let deadline = Instant::now() + t;
            while api(s).get_opt(name).await?.is_some() {
                if Instant::now() > deadline {
                    return Err(Error::Timeout {
                        what: format!("VisionJob {} was not gone", job_id(s, name)),
                        after: t,
                    });
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        out(&format!("{RESOURCE}/{name} deleted"));
    }
    Ok(())
}

/// `suspend` / `resume`: sets spec.suspend (the operator deletes a
/// suspended job's pod and frees its slot; a resumed job waits again).
pub async fn set_suspend(s: &Session, names: &[String], suspend: bool) -> Result<()> {
    for name in names {
        api(s)
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"suspend": suspend}})),
            )
            .await
            .map_err(|e| Error::from_api(e, KIND, &job_id(s, name)))?;
        out(&format!(
            "{RESOURCE}/{name} {}",
            if suspend { "suspended" } else { "resumed" }
        ));
    }
    Ok(())
}

/// The job `retry` creates: the finished job's spec, labels and annotations
/// (not kubectl's or the operator's bookkeeping), a new name, and the
/// annotation naming the job it retries.
pub fn retry_of(job: &VisionJob, new_name: Option<String>) -> VisionJob {
    let old = job.metadata.name.clone().unwrap_or_default();
    let mut annotations = job.metadata.annotations.clone().unwrap_or_default();
    annotations.retain(|k, _| !k.starts_with("kubectl.kubernetes.io/"));
    annotations.insert(RETRY_OF.to_string(), old.clone());
    let mut spec = job.spec.clone();
    spec.suspend = false;
    let mut new = VisionJob::new("", spec);
    new.metadata = ObjectMeta {
        generate_name: new_name.is_none().then(|| format!("{old}-retry-")),
        name: new_name,
        namespace: job.metadata.namespace.clone(),
        labels: job.metadata.labels.clone(),
        annotations: Some(annotations),
        ..Default::default()
    };
    new
}

/// `retry`: resubmits a finished job as a new one; prints its name.
pub async fn retry(
    s: &Session,
    name: &str,
    new_name: Option<String>,
    output: Format,
) -> Result<VisionJob> {
    let job = fetch(s, name).await?;
    if !job.phase().is_some_and(|p| p.is_final()) {
        return Err(Error::Usage(format!(
            "VisionJob {} has not finished ({}); only a finished job can be retried",
            job_id(s, name),
            summary(&job)
        )));
    }
    let mut created = submit(s, vec![retry_of(&job, new_name)], DryRun::None, output, 1).await?;
    Ok(created.remove(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vision_api::testing::{JobFixture, at_ms, mk_job};

    #[test]
    fn manifests_yaml_json_and_lists() {
        let yaml = "apiVersion: vision.zjlab.io/v1alpha1\nkind: VisionJob\nmetadata: {name: a}\nspec: {algorithm: yolo}\n---\n{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": [{\"apiVersion\": \"vision.zjlab.io/v1alpha1\", \"kind\": \"VisionJob\", \"metadata\": {\"name\": \"b\"}, \"spec\": {\"algorithm\": \"ocr\", \"priority\": 5}}]}\n";
        let jobs = parse_manifests(yaml).unwrap();
        let got: Vec<(Option<&str>, &str, i32, &str)> = jobs
            .iter()
            .map(|j| {
                (
                    j.metadata.name.as_deref(),
                    j.spec.algorithm.as_str(),
                    j.spec.priority,
                    j.spec.queue.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (Some("a"), "yolo", 0, "default"),
                (Some("b"), "ocr", 5, "default")
            ]
        );
        let err = parse_manifests("apiVersion: vision.zjlab.io/v1alpha1\nkind: VisionJob\nmetadata: {name: a}\nspec: {priority: 1}\n")
            .unwrap_err();
        assert_eq!(err.to_string(), "document 1: missing field `algorithm`");
    }

    #[test]
    fn a_retry_copies_the_spec_and_names_its_origin() {
        let mut old = mk_job("ns", "cam-1", "yolo")
            .with_priority(7)
            .suspended()
            .with_annotations(&[
                ("team", "a"),
                ("kubectl.kubernetes.io/last-applied-configuration", "{}"),
            ])
            .with_phase(JobPhase::Failed, 3);
        old.metadata.resource_version = Some("42".into());
        let new = retry_of(&old, None);
        assert_eq!(new.metadata.generate_name.as_deref(), Some("cam-1-retry-"));
        assert_eq!(new.metadata.name, None);
        assert_eq!(new.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(new.metadata.resource_version, None);
        assert_eq!(new.status, None);
        assert_eq!(new.spec.priority, 7);
        assert!(!new.spec.suspend);
        let annotations: Vec<(&str, &str)> = new
            .metadata
            .annotations
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(annotations, vec![("team", "a"), (RETRY_OF, "cam-1")]);
        let named = retry_of(&old, Some("cam-1b".into()));
        assert_eq!(
            (named.metadata.name.as_deref(), named.metadata.generate_name),
            (Some("cam-1b"), None)
        );
    }

    #[test]
    fn the_table_shows_waits_and_ages() {
        let queued = mk_job("ns", "q", "yolo")
            .created_at_ms(0)
            .with_phase(JobPhase::Queued, 0);
        let mut ran = mk_job("ns", "r", "ocr")
            .created_at_ms(0)
            .with_phase(JobPhase::Succeeded, 2);
        ran.status.as_mut().unwrap().admitted_at = Some(at_ms(12_000));
        let (header, rows) = job_rows(&[queued, ran], false, false, 90_000);
        assert_eq!(header[4], "PHASE");
        assert_eq!(
            rows,
            vec![
                vec![
                    "q", "yolo", "default", "0", "Queued", "-", "0", "1m30s+", "1m30s"
                ],
                vec![
                    "r",
                    "ocr",
                    "default",
                    "0",
                    "Succeeded",
                    "-",
                    "2",
                    "12s",
                    "1m30s"
                ],
            ]
        );
    }
}
