//! `queue`: the queues, one queue with its waiting jobs in the operator's
//! admission order, or one job's position; as text, JSON or YAML.
//!
//! Positions need the waiting VisionJobs of every namespace, which only
//! platform admins may list. A user who may not (403) sees the waiting jobs
//! of their own namespace instead, told so: the queue's counts come from its
//! status (readable by everyone the chart's queue-reader binding covers),
//! and a position is then a lower bound ([`Scope::Namespace`]).

use kube::Api;
use kube::api::ListParams;
use serde::Serialize;

use crate::cluster::{Session, list_all};
use crate::jobs::summary as describe;
use crate::output::{self, Format, print_table};
use crate::{Error, Result};
use vision_api::{JobPhase, VisionJob, VisionQueue};

/// Whose waiting jobs a view is computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Scope {
    /// Every namespace's: positions are the queue's.
    Cluster,
    /// Only the session's namespace (listing VisionJobs in all namespaces
    /// was forbidden): a position counts only that namespace's jobs ahead,
    /// so the job's place in the queue is that or later.
    Namespace,
}

/// The waiting jobs of a queue that the user may list.
#[derive(Debug, Clone)]
pub struct Visible {
    pub scope: Scope,
    /// In the operator's admission order.
    pub jobs: Vec<VisionJob>,
}

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
    /// Whose waiting jobs `waitingTotal` and `waiting` are.
    pub scope: Scope,
    /// The namespace of the jobs listed, with [`Scope::Namespace`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Whether a `waiting[].position` is only a lower bound of the job's
    /// place in the queue (jobs of other namespaces were not counted).
    pub position_lower_bound: bool,
    /// The waiting jobs in scope.
    pub waiting_total: usize,
    pub waiting: Vec<Waiting>,
    /// Why only one namespace's jobs are shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `queue --job NAME -o json|yaml`: where a job stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobPosition {
    pub namespace: String,
    pub name: String,
    pub queue: String,
    pub phase: Option<String>,
    /// 1-based; `None` when the job does not wait. With
    /// [`Scope::Namespace`] only among its namespace's waiting jobs, so a
    /// lower bound of its place in the queue.
    pub position: Option<usize>,
    /// The waiting jobs in scope.
    pub waiting: usize,
    /// Whose waiting jobs `position` and `waiting` count.
    pub scope: Scope,
    /// Whether `position` is only a lower bound of the place in the queue.
    pub position_lower_bound: bool,
    /// The queue's waiting jobs: counted here with [`Scope::Cluster`],
    /// else as the queue's status counts them (`None` when the queue has no
    /// status yet or cannot be read).
    pub queue_waiting: Option<usize>,
    /// Why the position is a lower bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What a user of one namespace is told about the jobs they cannot see.
pub const NOT_VISIBLE: &str = "jobs of other namespaces are not visible to you";

/// The line under a queue's counts when only `namespace`'s waiting jobs
/// could be listed.
pub fn namespace_note(namespace: &str, queue_waiting: Option<usize>) -> String {
    let total = match queue_waiting {
        Some(n) => format!("the queue holds {n} waiting {}", jobs_word(n)),
        None => "the queue's status does not count its waiting jobs yet".to_string(),
    };
    format!(
        "showing only namespace {namespace}'s waiting jobs: you may not list VisionJobs in \
         all namespaces ({total})"
    )
}

/// The `tenants` lines of `queue NAME` for a queue with spec.tenancy: each
/// tenant's weight, holdings, waiting jobs, weighted share and usage (from
/// the operator's status). Within a priority, the operator admits first from
/// the tenant furthest below its share, so the waiting list below (priority,
/// then creation) is not the exact admission order then.
pub fn tenant_lines(q: &VisionQueue) -> Vec<String> {
    let Some(t) = &q.spec.tenancy else {
        return Vec::new();
    };
    let by = t
        .tenant_label
        .as_deref()
        .map(|l| format!("label {l}"))
        .unwrap_or_else(|| "namespace".into());
    let preemption = q
        .spec
        .preemption
        .as_ref()
        .map(|p| format!("{:?}", p.within_queue))
        .unwrap_or_else(|| "Never".into());
    let mut out = vec![format!(
        "  tenants   by {by}, usage half-life {}, preemption {preemption}",
        humantime::format_duration(std::time::Duration::from_secs(
            t.usage_half_life_seconds.max(0) as u64
        ))
    )];
    let tenants = q
        .status
        .as_ref()
        .map(|s| s.tenants.as_slice())
        .unwrap_or_default();
    if tenants.is_empty() {
        out.push("            (none with jobs or recent usage)".into());
    }
    for s in tenants {
        out.push(format!(
            "  tenant    {} weight {}: {} running ({} GPUs), {} waiting, share {:.1}%, usage {:.1}% ({:.0} GPU-s decayed)",
            s.name,
            s.weight,
            s.running,
            s.gpus_in_use,
            s.pending,
            s.share_percent,
            s.usage_percent,
            s.usage_gpu_seconds
        ));
    }
    out
}

fn jobs_word(n: usize) -> &'static str {
    if n == 1 { "job" } else { "jobs" }
}

/// How many jobs wait in the queue by its status, but never fewer than the
/// `visible` ones (the status may be a moment old).
pub fn status_waiting(queue: Option<&VisionQueue>, visible: usize) -> Option<usize> {
    let st = queue?.status.as_ref()?;
    Some(usize::try_from(st.pending).unwrap_or(0).max(visible))
}

/// Where job `namespace/name` stands among `visible` (1-based), with the
/// counts of the queue (its status, `queue`) for a namespace-only view.
pub fn locate(
    visible: &Visible,
    namespace: &str,
    name: &str,
    queue_name: &str,
    phase: Option<String>,
    queue: Option<&VisionQueue>,
) -> JobPosition {
    let position = visible
        .jobs
        .iter()
        .position(|w| {
            w.metadata.namespace.as_deref() == Some(namespace)
                && w.metadata.name.as_deref() == Some(name)
        })
        .map(|i| i + 1);
    let waiting = visible.jobs.len();
    let namespaced = visible.scope == Scope::Namespace;
    JobPosition {
        namespace: namespace.to_string(),
        name: name.to_string(),
        queue: queue_name.to_string(),
        phase,
        position,
        waiting,
        scope: visible.scope,
        position_lower_bound: namespaced && position.is_some(),
        queue_waiting: if namespaced {
            status_waiting(queue, waiting)
        } else {
            Some(waiting)
        },
        note: (namespaced && position.is_some()).then(|| {
            format!("only namespace {namespace}'s waiting jobs were counted: {NOT_VISIBLE}")
        }),
    }
}

/// The line of `queue --job` that says where the job stands.
pub fn position_line(p: &JobPosition, priority: i32) -> String {
    let Some(k) = p.position else {
        return format!("not waiting in queue {}", p.queue);
    };
    match p.scope {
        Scope::Cluster => format!(
            "position {k} of {} waiting in queue {} (priority {priority}; order: priority desc, \
             creation time, namespace/name)",
            p.waiting, p.queue
        ),
        Scope::Namespace => {
            let of = p
                .queue_waiting
                .map(|n| format!(" of {n} waiting"))
                .unwrap_or_default();
            format!(
                "at least position {k}{of} in queue {} (priority {priority}): position {k} of the \
                 {} waiting {} of namespace {}; {NOT_VISIBLE}",
                p.queue,
                p.waiting,
                jobs_word(p.waiting),
                p.namespace
            )
        }
    }
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
        let visible = visible_waiting_jobs(s, &j.spec.queue).await?;
        let q = readable(queues.get_opt(&j.spec.queue).await)?;
        let p = locate(
            &visible,
            ns,
            job_name,
            &j.spec.queue,
            j.phase().map(|p| p.to_string()),
            q.as_ref(),
        );
        if structured {
            return output::print(&p, format);
        }
        println!("{ns}/{job_name}: {}", describe(&j));
        println!("{}", position_line(&p, j.spec.priority));
        if p.position.is_some()
            && q.is_some_and(|q| q.spec.ordering == vision_api::QueueOrdering::BestEffortFIFO)
        {
            println!("(BestEffortFIFO: a job that fits the free GPUs may pass one that does not)");
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
            let Visible {
                scope,
                jobs: waiting,
            } = visible_waiting_jobs(s, name).await?;
            let namespaced = scope == Scope::Namespace;
            let note = namespaced
                .then(|| namespace_note(&s.namespace, status_waiting(Some(&q), waiting.len())));
            if structured {
                return output::print(
                    &QueueView {
                        scope,
                        namespace: namespaced.then(|| s.namespace.clone()),
                        position_lower_bound: namespaced,
                        waiting_total: waiting.len(),
                        waiting: waiting_rows(&waiting, top),
                        note,
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
            for line in tenant_lines(&q) {
                println!("{line}");
            }
            for c in &st.conditions {
                println!(
                    "  condition {}={} {}: {}",
                    c.type_, c.status, c.reason, c.message
                );
            }
            match &note {
                None => println!(
                    "  waiting   {} jobs (computed here, in admission order)",
                    waiting.len()
                ),
                Some(note) => {
                    println!(
                        "  waiting   {} {} of namespace {} (computed here, in admission order)",
                        waiting.len(),
                        jobs_word(waiting.len()),
                        s.namespace
                    );
                    println!("note: {note}");
                }
            }
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
                // Among one namespace's jobs a position is a lower bound.
                let pos = if namespaced { "MIN-POS" } else { "POS" };
                print_table(&[pos, "JOB", "PRIORITY", "ALGORITHM", "WAITS-FOR"], &rows);
                if waiting.len() > top {
                    println!("... and {} more", waiting.len() - top);
                }
            }
        }
    }
    Ok(())
}

/// The jobs waiting in a queue (Queued, or not yet seen by the operator),
/// in the operator's admission order, of every namespace.
pub async fn waiting_jobs(s: &Session, queue: &str) -> Result<Vec<VisionJob>> {
    waiting_in(&Api::all(s.client.clone()), queue).await
}

/// The waiting jobs of every namespace; if the user may not list them
/// (403), those of the session's namespace.
pub async fn visible_waiting_jobs(s: &Session, queue: &str) -> Result<Visible> {
    match waiting_jobs(s, queue).await {
        Ok(jobs) => Ok(Visible {
            scope: Scope::Cluster,
            jobs,
        }),
        Err(e) if is_forbidden(&e) => Ok(Visible {
            scope: Scope::Namespace,
            jobs: waiting_in(&Api::namespaced(s.client.clone(), &s.namespace), queue).await?,
        }),
        Err(e) => Err(e),
    }
}

/// Whether the API server refused the request to this user (403).
fn is_forbidden(e: &Error) -> bool {
    matches!(e, Error::Api(kube::Error::Api(s)) if s.code == 403)
}

/// An object that the user may not read (403) is not there for them.
fn readable<K>(r: std::result::Result<Option<K>, kube::Error>) -> Result<Option<K>> {
    match r {
        Err(kube::Error::Api(s)) if s.code == 403 => Ok(None),
        r => Ok(r?),
    }
}

async fn waiting_in(api: &Api<VisionJob>, queue: &str) -> Result<Vec<VisionJob>> {
    let lp = ListParams::default().fields(&format!("spec.queue={queue}"));
    let mut jobs: Vec<VisionJob> = list_all(api, lp)
        .await?
        .into_iter()
        .filter(is_waiting)
        .collect();
    jobs.sort_by(queue_order);
    Ok(jobs)
}

/// Queued (or not yet seen by the operator), not suspended, not being
/// deleted.
fn is_waiting(j: &VisionJob) -> bool {
    matches!(j.phase(), None | Some(JobPhase::Queued))
        && !j.spec.suspend
        && j.metadata.deletion_timestamp.is_none()
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use vision_api::VisionQueueStatus;
    use vision_api::testing::{JobFixture, mk_job, mk_queue};

    /// Waiting jobs in admission order: `(namespace, name, priority, created ms)`.
    fn ordered(jobs: &[(&str, &str, i32, i64)]) -> Vec<VisionJob> {
        let mut v: Vec<VisionJob> = jobs
            .iter()
            .map(|(ns, n, p, t)| {
                mk_job(ns, n, "detect")
                    .with_queue("q")
                    .with_priority(*p)
                    .created_at_ms(*t)
            })
            .collect();
        v.sort_by(queue_order);
        v
    }

    fn with_pending(pending: i32) -> VisionQueue {
        let mut q = mk_queue("q", 4);
        q.status = Some(VisionQueueStatus {
            pending,
            ..Default::default()
        });
        q
    }

    #[test]
    fn tenants_show_weight_holdings_share_and_usage() {
        let mut q = mk_queue("pool", 4);
        assert!(tenant_lines(&q).is_empty(), "no tenancy, no lines");
        q.spec.tenancy = Some(vision_api::QueueTenancy {
            tenant_label: Some("example.com/user".into()),
            default_weight: 1,
            usage_half_life_seconds: 600,
            ..Default::default()
        });
        q.status = Some(VisionQueueStatus {
            tenants: vec![vision_api::TenantStatus {
                name: "alice".into(),
                weight: 3,
                running: 2,
                gpus_in_use: 2,
                pending: 5,
                share_percent: 75.0,
                usage_percent: 60.25,
                usage_gpu_seconds: 1234.4,
            }],
            ..Default::default()
        });
        assert_eq!(
            tenant_lines(&q),
            [
                "  tenants   by label example.com/user, usage half-life 10m, preemption Never",
                "  tenant    alice weight 3: 2 running (2 GPUs), 5 waiting, share 75.0%, usage 60.2% (1234 GPU-s decayed)",
            ]
        );
    }

    #[test]
    fn admission_order_is_priority_then_creation_then_namespace_name() {
        let jobs = ordered(&[
            ("b", "late", 0, 3_000),
            ("b", "same-second", 0, 1_000),
            ("a", "same-second", 0, 1_000),
            ("z", "urgent", 5, 9_000),
        ]);
        let names: Vec<String> = jobs
            .iter()
            .map(|j| {
                format!(
                    "{}/{}",
                    j.metadata.namespace.as_deref().unwrap(),
                    j.metadata.name.as_deref().unwrap()
                )
            })
            .collect();
        assert_eq!(
            names,
            ["z/urgent", "a/same-second", "b/same-second", "b/late"]
        );
    }

    #[test]
    fn waiting_means_queued_or_unseen_and_neither_suspended_nor_deleted() {
        let queued = mk_job("a", "q", "detect").with_phase(JobPhase::Queued, 0);
        let mut suspended = mk_job("a", "s", "detect");
        suspended.spec.suspend = true;
        let running = mk_job("a", "r", "detect").with_phase(JobPhase::Running, 1);
        assert!(is_waiting(&mk_job("a", "new", "detect")));
        assert!(is_waiting(&queued));
        assert!(!is_waiting(&suspended));
        assert!(!is_waiting(&running));
    }

    #[test]
    fn every_namespace_gives_the_exact_position() {
        let visible = Visible {
            scope: Scope::Cluster,
            jobs: ordered(&[
                ("a", "x", 0, 1_000),
                ("b", "y", 0, 2_000),
                ("a", "z", 0, 3_000),
            ]),
        };
        let p = locate(&visible, "a", "z", "q", Some("Queued".into()), None);
        assert_eq!(
            (
                p.position,
                p.waiting,
                p.queue_waiting,
                p.position_lower_bound
            ),
            (Some(3), 3, Some(3), false)
        );
        assert_eq!(p.note, None);
        assert_eq!(
            position_line(&p, 0),
            "position 3 of 3 waiting in queue q (priority 0; order: priority desc, creation \
             time, namespace/name)"
        );
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["scope"], "cluster");
        assert_eq!(json["positionLowerBound"], false);
        assert!(json.get("note").is_none(), "{json}");
    }

    #[test]
    fn one_namespace_gives_a_lower_bound_and_says_so() {
        // Namespace a sees its own two waiting jobs; the queue's status
        // counts 40.
        let visible = Visible {
            scope: Scope::Namespace,
            jobs: ordered(&[("a", "x", 0, 1_000), ("a", "z", 0, 3_000)]),
        };
        let q = with_pending(40);
        let p = locate(&visible, "a", "z", "q", Some("Queued".into()), Some(&q));
        assert_eq!(
            (
                p.position,
                p.waiting,
                p.queue_waiting,
                p.position_lower_bound
            ),
            (Some(2), 2, Some(40), true)
        );
        assert_eq!(
            position_line(&p, 0),
            "at least position 2 of 40 waiting in queue q (priority 0): position 2 of the 2 \
             waiting jobs of namespace a; jobs of other namespaces are not visible to you"
        );
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!({
                "namespace": "a",
                "name": "z",
                "queue": "q",
                "phase": "Queued",
                "position": 2,
                "waiting": 2,
                "scope": "namespace",
                "positionLowerBound": true,
                "queueWaiting": 40,
                "note": "only namespace a's waiting jobs were counted: jobs of other \
                         namespaces are not visible to you",
            })
        );

        // A queue without status (no operator yet), or one that cannot be
        // read: the total is not known and not invented.
        let p = locate(&visible, "a", "x", "q", None, None);
        assert_eq!(p.queue_waiting, None);
        assert_eq!(
            position_line(&p, 3),
            "at least position 1 in queue q (priority 3): position 1 of the 2 waiting jobs of \
             namespace a; jobs of other namespaces are not visible to you"
        );

        // A job that does not wait has no position to bound.
        let p = locate(
            &visible,
            "a",
            "done",
            "q",
            Some("Succeeded".into()),
            Some(&q),
        );
        assert_eq!(
            (p.position, p.position_lower_bound, p.note.as_deref()),
            (None, false, None)
        );
        assert_eq!(position_line(&p, 0), "not waiting in queue q");
    }

    #[test]
    fn a_stale_queue_status_never_counts_fewer_than_the_visible_jobs() {
        assert_eq!(status_waiting(Some(&with_pending(40)), 2), Some(40));
        assert_eq!(status_waiting(Some(&with_pending(0)), 2), Some(2));
        assert_eq!(status_waiting(Some(&mk_queue("q", 4)), 2), None);
        assert_eq!(status_waiting(None, 2), None);
    }

    #[test]
    fn the_namespace_note_names_the_namespace_and_the_queue_total() {
        assert_eq!(
            namespace_note("team-a", Some(412)),
            "showing only namespace team-a's waiting jobs: you may not list VisionJobs in all \
             namespaces (the queue holds 412 waiting jobs)"
        );
        assert_eq!(
            namespace_note("team-a", Some(1)),
            "showing only namespace team-a's waiting jobs: you may not list VisionJobs in all \
             namespaces (the queue holds 1 waiting job)"
        );
        assert_eq!(
            namespace_note("team-a", None),
            "showing only namespace team-a's waiting jobs: you may not list VisionJobs in all \
             namespaces (the queue's status does not count its waiting jobs yet)"
        );
    }

    #[test]
    fn only_a_403_falls_back_to_the_namespace() {
        let api = |code: u16| {
            Error::Api(kube::Error::Api(
                kube::core::Status::failure("no", "Forbidden")
                    .with_code(code)
                    .boxed(),
            ))
        };
        assert!(is_forbidden(&api(403)));
        assert!(!is_forbidden(&api(401)));
        assert!(!is_forbidden(&api(500)));
        assert!(!is_forbidden(&Error::Other("x".into())));
        let forbidden: std::result::Result<Option<VisionQueue>, kube::Error> =
            Err(kube::Error::Api(
                kube::core::Status::failure("no", "Forbidden")
                    .with_code(403)
                    .boxed(),
            ));
        assert!(readable(forbidden).unwrap().is_none());
        let unavailable: std::result::Result<Option<VisionQueue>, kube::Error> =
            Err(kube::Error::Api(
                kube::core::Status::failure("down", "ServiceUnavailable")
                    .with_code(503)
                    .boxed(),
            ));
        assert_eq!(readable(unavailable).unwrap_err().exit_code(), 5);
    }
}
