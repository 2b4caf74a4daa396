//! `queue`: the queues, one queue with its waiting jobs in the operator's
//! admission order, or one job's position; as text, JSON or YAML.

use kube::Api;
use kube::api::ListParams;
use serde::Serialize;

use crate::cluster::{Session, list_all};
use crate::jobs::summary as describe;
use crate::output::{self, Format, print_table};
use crate::{Error, Result};
use vision_api::{JobPhase, VisionJob, VisionQueue};

/// One waiting job and its place (`queue NAME -o json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Waiting {
    pub position: usize,
    pub namespace: String,
    pub name: String,
    pub priority: i32,
    pub algorithm: String,
    pub reason: Option<String>,
}

/// `queue NAME -o json|yaml`: the queue and its waiting jobs.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueView {
    pub queue: VisionQueue,
    pub waiting_total: usize,
    pub waiting: Vec<Waiting>,
}

/// `queue --job NAME -o json|yaml`: where a job stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobPosition {
    pub namespace: String,
    pub name: String,
    pub queue: String,
    pub phase: Option<String>,
    /// 1-based; `None` when the job does not wait.
    pub position: Option<usize>,
    pub waiting: usize,
}

fn waiting_rows(waiting: &[VisionJob], top: usize) -> Vec<Waiting> {
    waiting
        .iter()
        .take(top)
        .enumerate()
        .map(|(i, j)| Waiting {
            position: i + 1,
            namespace: j.metadata.namespace.clone().unwrap_or_default(),
            name: j.metadata.name.clone().unwrap_or_default(),
            priority: j.spec.priority,
            algorithm: j.spec.algorithm.clone(),
            reason: j.status.as_ref().and_then(|s| s.reason.clone()),
        })
        .collect()
}

/// Queues as a table; a queue in detail with its first waiting jobs; or a
/// job's position in its queue.
pub async fn queue(
    s: &Session,
    name: Option<&str>,
    job: Option<&str>,
    top: usize,
    format: Format,
) -> Result<()> {
    let client = &s.client;
    let queues: Api<VisionQueue> = Api::all(client.clone());
    let structured = matches!(format, Format::Json | Format::Yaml);
    if let Some(job_name) = job {
        let ns = s.namespace.as_str();
        let j = crate::jobs::fetch(s, job_name).await?;
        let waiting = waiting_jobs(s, &j.spec.queue).await?;
        let position = waiting.iter().position(|w| {
            w.metadata.namespace.as_deref() == Some(ns)
                && w.metadata.name.as_deref() == Some(job_name)
        });
        if structured {
            return output::print(
                &JobPosition {
                    namespace: ns.to_string(),
                    name: job_name.to_string(),
                    queue: j.spec.queue.clone(),
                    phase: j.phase().map(|p| p.to_string()),
                    position: position.map(|i| i + 1),
                    waiting: waiting.len(),
                },
                format,
            );
        }
        println!("{ns}/{job_name}: {}", describe(&j));
        match position {
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
            if structured {
                return output::print(&output::list(&all)?, format);
            }
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
            let q = queues.get_opt(name).await?.ok_or_else(|| Error::NotFound {
                kind: "VisionQueue",
                name: name.to_string(),
            })?;
            let waiting = waiting_jobs(s, name).await?;
            if structured {
                return output::print(
                    &QueueView {
                        waiting_total: waiting.len(),
                        waiting: waiting_rows(&waiting, top),
                        queue: q,
                    },
                    format,
                );
            }
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
            match q.spec.default_ttl_seconds_after_finished {
                Some(t) => println!(
                    "  job ttl   {} after they finish, for jobs without a TTL of their own",
                    humantime::format_duration(std::time::Duration::from_secs(t.max(0) as u64))
                ),
                None => {
                    println!("  job ttl   none: finished jobs without a TTL of their own are kept")
                }
            }
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
            println!(
                "  waiting   {} jobs (computed here, in admission order)",
                waiting.len()
            );
            let rows: Vec<Vec<String>> = waiting_rows(&waiting, top)
                .into_iter()
                .map(|w| {
                    vec![
                        w.position.to_string(),
                        format!("{}/{}", w.namespace, w.name),
                        w.priority.to_string(),
                        w.algorithm,
                        w.reason.unwrap_or_else(|| "-".into()),
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
pub async fn waiting_jobs(s: &Session, queue: &str) -> Result<Vec<VisionJob>> {
    let api: Api<VisionJob> = Api::all(s.client.clone());
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
