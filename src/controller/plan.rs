//! The reconciler's decisions as a pure function: from a job, its pods and
//! its algorithm at a given time, the one next step ([`plan`]). The
//! reconciler (`job`) performs the step through the writer and plans again
//! on the next event. No I/O, no clock: the time is in the [`View`].
//!
//! A job holding a slot (Admitted, Running) gets its attempt's pod created,
//! followed, timed out, retried with backoff or finished with its result; a
//! suspended job loses its pods; a finished job is deleted after its TTL; a
//! deleted job has its pods deleted before its slot is released. New and
//! queued jobs belong to the dispatcher (only their suspension is planned
//! here).
//!
//! Every pod carries the tracking finalizer [`POD_FINALIZER`], so a finished
//! pod cannot disappear before its outcome is read. The plan removes it
//! ([`Step::ReleasePods`]) only from a pod whose outcome no longer needs it:
//! a finished pod of a job whose status already holds that attempt's outcome
//! (the job is final or suspended, or a later attempt superseded it), any
//! finished pod of a job being deleted, and a pod that was deleted and
//! stopped without finishing (its deletion grace period is over, or it
//! never had a node): it will never say more.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::settings::Settings;
use crate::admission::Outcome;
use crate::api::contract::POD_FINALIZER;
use crate::api::{JobPhase, PodRetention, VisionAlgorithm, VisionJob, VisionJobStatus};
use crate::clock::{ms_of, time_at};
use crate::pod::{
    DISRUPTION_REASONS, PodState, build_pod, job_retries, job_timeout_seconds, memory_limit,
    owned_by, pod_name, pod_state,
};
use crate::status::{self, FailReason};

/// The timeout of an attempt when neither the job nor its (deleted)
/// algorithm gives one.
const DEFAULT_TIMEOUT_SECONDS: i64 = 3600;
/// How soon to look again at a pod that is being stopped.
const STOPPING_RECHECK_MS: u64 = 500;
/// How soon to look again at a suspended job whose pods are still live.
const SUSPENDING_RECHECK_MS: u64 = 5000;

/// What the reconciler knows about a job when it plans.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    pub job: &'a VisionJob,
    /// The pods of the job's attempts (pods not owned by the job are
    /// ignored), from the pod cache, plus the current attempt's pod when the
    /// API server was asked for it.
    pub pods: &'a [Arc<Pod>],
    pub algorithm: Option<&'a VisionAlgorithm>,
    /// The current attempt's pod was looked up in the API server, not only
    /// in the cache ([`Step::ReadPod`] was done).
    pub pod_read: bool,
    /// A create of one of the job's pods may still land: it was sent (or
    /// is being sent) and the pod watch has not shown the pod yet. Nothing
    /// releases the job's slot meanwhile: the pod would run unaccounted.
    pub creating: bool,
    /// The `spec.defaultTtlSecondsAfterFinished` of the job's queue (if the
    /// queue exists): the TTL of a finished job that sets none of its own.
    pub queue_default_ttl_seconds: Option<i32>,
    /// The `spec.podRetention` of the job's queue (defaults if unset or the
    /// queue is gone): how long finished pods are kept.
    pub pod_retention: PodRetention,
    pub now_ms: i64,
}

/// What to do after a step succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Then {
    /// Nothing until the job or one of its pods changes.
    AwaitChange,
    /// Plan again after this many milliseconds (or at the next change).
    RequeueAfterMs(u64),
    /// Plan again soon: pods are still being deleted.
    PodsTerminating,
}

/// The one next step for a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing to do now.
    Wait(Then),
    /// Report the attempt's `outcome` to the pool (its algorithm's breaker),
    /// write the job's whole status and, once written, if `release`, free
    /// the job's slot.
    Write {
        status: Box<VisionJobStatus>,
        outcome: Option<Outcome>,
        release: bool,
        then: Then,
    },
    /// The current attempt's pod (named here) is missing from the cache and
    /// the attempt had started: believing the cache would fail the attempt,
    /// so read the pod from the API server and plan again.
    ReadPod { name: String },
    /// Create the current attempt's pod.
    CreatePod { pod: Box<Pod>, then: Then },
    /// Delete these pods (the job's live pods not already being deleted).
    DeletePods { pods: Vec<Arc<Pod>>, then: Then },
    /// Remove the tracking finalizer ([`POD_FINALIZER`]) from these pods:
    /// the job's status holds their outcome, or they have none to give.
    ReleasePods { pods: Vec<Arc<Pod>>, then: Then },
    /// Delete the finished job: its TTL has passed.
    DeleteJob,
    /// The deleted job has no live pod left: free its slot (and let the
    /// finalizer go).
    Release,
}

/// The next step for the job in `view`.
pub fn plan(view: &View<'_>, settings: &Settings) -> Step {
    let job = view.job;
    if job.metadata.deletion_timestamp.is_some() {
        // No outcome matters any more: let every finished or stopped pod go
        // first (a stopped one is still counted live until it is gone).
        let done = tracked(view, |_| true);
        if !done.is_empty() {
            return Step::ReleasePods {
                pods: done,
                then: Then::RequeueAfterMs(STOPPING_RECHECK_MS),
            };
        }
        return match (live_pods(view).is_empty(), view.creating) {
            (true, false) => Step::Release,
            // The pod being created shows up, then is deleted like the rest.
            (true, true) => Step::Wait(Then::PodsTerminating),
            (false, _) => stop_pods(view, Then::PodsTerminating),
        };
    }
    let now = time_at(view.now_ms);
    // Finished pods whose outcome the status holds: every one of a final
    // job; of any other, those of the attempts its status has counted and
    // closed: all of them for a job not holding a slot, the former ones for
    // a job that does. (A job read from a lagging cache, e.g. still Queued
    // while its first pod already finished, keeps its pods.)
    let closed = match job.phase() {
        Some(p) if p.is_final() => i32::MAX,
        Some(JobPhase::Admitted) | Some(JobPhase::Running) => attempt_of(job) - 1,
        _ => status::current(job).attempts.unwrap_or(0),
    };
    let is_closed = |p: &Pod| {
        closed == i32::MAX || (1..=closed).any(|a| p.name_any() == pod_name(&job.name_any(), a))
    };
    let recorded = tracked(view, is_closed);
    if !recorded.is_empty() {
        return Step::ReleasePods {
            pods: recorded,
            then: Then::AwaitChange,
        };
    }
    // Released pods (their outcome is recorded) whose retention is over.
    let (due, next_due_ms) = retention(view, is_closed);
    if !due.is_empty() {
        return Step::DeletePods {
            pods: due,
            then: Then::AwaitChange,
        };
    }
    match job.phase() {
        None | Some(JobPhase::Queued) if job.spec.suspend => {
            write_release(status::suspended(job, &now), None)
        }
        None | Some(JobPhase::Queued) => Step::Wait(Then::AwaitChange),
        Some(JobPhase::Suspended) if !job.spec.suspend => {
            let status = status::queued(
                job,
                &now,
                "Resumed",
                format!("resumed; waiting in queue {}", job.spec.queue),
            );
            write(status, Then::AwaitChange)
        }
        Some(JobPhase::Suspended) => stop_pods(view, Then::AwaitChange),
        Some(JobPhase::Admitted) | Some(JobPhase::Running) => active(view, settings),
        Some(_) => finished(view, next_due_ms),
    }
}

/// The finished pods of closed attempts that no longer hold the tracking
/// finalizer (their outcome is in the job's status) and whose retention is
/// over, and when the next of the others is due. The last attempt's pod of
/// a final job is kept for the queue's `podRetention` (succeeded or failed
/// seconds after the job finished); any other (an earlier attempt of a
/// retried job, or a pod of a job that is no longer final) goes at once.
fn retention(view: &View<'_>, is_closed: impl Fn(&Pod) -> bool) -> (Vec<Arc<Pod>>, Option<i64>) {
    let job = view.job;
    let keep_seconds = match job.phase() {
        Some(JobPhase::Succeeded) => Some(view.pod_retention.succeeded()),
        Some(p) if p.is_final() => Some(view.pod_retention.failed()),
        _ => None,
    };
    let last = pod_name(&job.name_any(), attempt_of(job));
    let finished_ms = job
        .status
        .as_ref()
        .and_then(|s| s.finished_at.as_ref())
        .map(ms_of)
        .unwrap_or(view.now_ms);
    let mut due = Vec::new();
    let mut next: Option<i64> = None;
    for pod in view.pods {
        let finished = matches!(
            pod_state(pod),
            PodState::Succeeded { .. } | PodState::Failed { .. }
        );
        if !owned_by(pod, job)
            || holds_outcome(pod)
            || pod.metadata.deletion_timestamp.is_some()
            || !finished
            || !is_closed(pod)
        {
            continue;
        }
        let at_ms = match keep_seconds {
            Some(keep) if pod.name_any() == last => finished_ms + i64::from(keep) * 1000,
            _ => view.now_ms,
        };
        if at_ms <= view.now_ms {
            due.push(pod.clone());
        } else {
            next = Some(next.map_or(at_ms, |n| n.min(at_ms)));
        }
    }
    (due, next)
}

/// A job holding a slot: make its attempt's pod exist and follow it.
fn active(view: &View<'_>, settings: &Settings) -> Step {
    let job = view.job;
    let now_ms = view.now_ms;
    let now = time_at(now_ms);
    let status = status::current(job);
    if job.spec.suspend {
        if live_pods(view).is_empty() {
            if view.creating {
                return Step::Wait(Then::RequeueAfterMs(STOPPING_RECHECK_MS));
            }
            return write_release(status::suspended(job, &now), None);
        }
        return stop_pods(view, Then::RequeueAfterMs(SUSPENDING_RECHECK_MS));
    }
    // Preempted (the dispatcher chose it as a victim): its pod is stopped
    // with its grace period, then it waits again and frees its slot; the
    // preemptor is admitted only then.
    if status.reason.as_deref() == Some(status::REASON_PREEMPTING) {
        if !live_pods(view).is_empty() {
            return stop_pods(view, Then::PodsTerminating);
        }
        if view.creating {
            return Step::Wait(Then::RequeueAfterMs(STOPPING_RECHECK_MS));
        }
        return write_release(status::preempted(job, &now), None);
    }
    // The attempt's container can never start (see `start_failure`): its
    // pod goes first, then the job fails with the reason already shown and
    // frees its slot.
    if let Some(reason) = failing_to_start(&status) {
        if !live_pods(view).is_empty() {
            return stop_pods(view, Then::PodsTerminating);
        }
        if view.creating {
            return Step::Wait(Then::RequeueAfterMs(STOPPING_RECHECK_MS));
        }
        let message = status.message.clone().unwrap_or_default();
        return write_release(
            status::failed(job, &now, reason, message),
            Some(Outcome::Failed),
        );
    }
    let attempt = attempt_of(job);
    let timeout_ms = timeout_ms(view);
    // The attempt's clock starts when its pod runs, or else when it was
    // admitted (or its retry became due): a pod that never schedules times out too.
    let attempt_start = status
        .started_at
        .as_ref()
        .or(status.retry_after.as_ref())
        .or(status.admitted_at.as_ref())
        .map(ms_of)
        .unwrap_or(now_ms);
    let deadline = attempt_start + timeout_ms;
    let name = pod_name(&job.name_any(), attempt);
    let pod = view
        .pods
        .iter()
        .find(|p| p.name_any() == name && owned_by(p, job));
    let started = status.started_at.is_some();
    if pod.is_none() && started && !view.pod_read {
        return Step::ReadPod { name };
    }
    let worker = pod.and_then(|p| crate::workers::worker_of(p));
    let step = match pod.map(|p| pod_state(p)) {
        // The pod of a started attempt is gone (deleted or evicted from
        // outside, or by us at the deadline), or never came in time.
        None if now_ms >= deadline => timed_out(view, timeout_ms),
        None if started => attempt_failed(
            view,
            settings,
            format!("pod {name} was deleted before it finished"),
            FailReason::BackoffLimitExceeded,
            Some(Outcome::Failed),
        ),
        None => {
            if let Some(after) = status.retry_after.as_ref().map(ms_of)
                && after > now_ms
            {
                return Step::Wait(Then::RequeueAfterMs((after - now_ms) as u64 + 1));
            }
            // One live pod per job: a former attempt's pod must be gone first.
            if !live_pods(view).is_empty() {
                return stop_pods(view, Then::PodsTerminating);
            }
            let Some(algorithm) = view.algorithm else {
                let message = format!(
                    "algorithm {} was deleted before the pod of attempt {attempt} was created",
                    job.spec.algorithm
                );
                return write_release(
                    status::failed(job, &now, FailReason::AlgorithmNotFound, message),
                    None,
                );
            };
            match build_pod(job, algorithm, attempt) {
                Ok(pod) => Step::CreatePod {
                    pod: Box::new(pod),
                    then: requeue_at(now_ms, deadline),
                },
                Err(e) => write_release(
                    status::failed(job, &now, FailReason::InvalidAlgorithm, e.to_string()),
                    None,
                ),
            }
        }
        Some(PodState::CannotStart {
            container,
            image,
            reason,
            message,
        }) => {
            let kubelet = match message.as_deref().map(str::trim) {
                Some(m) if !m.is_empty() => format!("{reason}: {m}"),
                _ => reason.clone(),
            };
            if let Some((fail, fix)) = start_failure(&reason, message.as_deref(), &image) {
                let message = format!(
                    "the {container} container of pod {name} cannot start ({kubelet}); {fix}"
                );
                return write(
                    status::cannot_start(job, &now, fail.as_str(), message),
                    Then::AwaitChange,
                );
            }
            if now_ms >= deadline {
                return stop_pods(view, Then::RequeueAfterMs(STOPPING_RECHECK_MS));
            }
            // Maybe only for now (a missing ConfigMap or Secret may yet be
            // created): say why while the attempt's clock runs.
            let message =
                format!("the {container} container of pod {name} cannot start yet ({kubelet})");
            if status.reason.as_deref() == Some(reason.as_str())
                && status.message.as_deref() == Some(message.as_str())
            {
                return Step::Wait(requeue_at(now_ms, deadline));
            }
            write(
                status::cannot_start(job, &now, &reason, message),
                requeue_at(now_ms, deadline),
            )
        }
        Some(PodState::Pending) if now_ms >= deadline => {
            stop_pods(view, Then::RequeueAfterMs(STOPPING_RECHECK_MS))
        }
        Some(PodState::Pending) => Step::Wait(requeue_at(now_ms, deadline)),
        Some(PodState::Running { .. }) if now_ms >= deadline => {
            stop_pods(view, Then::RequeueAfterMs(STOPPING_RECHECK_MS))
        }
        Some(PodState::Running { started }) if job.phase() != Some(JobPhase::Running) => {
            let started_ms = started.as_ref().map(ms_of).unwrap_or(now_ms);
            write(
                status::running(job, &now, started),
                requeue_at(now_ms, started_ms + timeout_ms),
            )
        }
        Some(PodState::Running { .. }) => Step::Wait(requeue_at(now_ms, deadline)),
        Some(PodState::Terminating) => Step::Wait(Then::RequeueAfterMs(STOPPING_RECHECK_MS)),
        Some(PodState::Succeeded { message }) => write_release(
            status::succeeded(job, &now, message.as_deref()),
            Some(Outcome::Succeeded),
        ),
        Some(PodState::Failed { reason, .. }) if reason.as_deref() == Some("DeadlineExceeded") => {
            timed_out(view, timeout_ms)
        }
        // Stopped at its deadline (above): killed, not failed on its own.
        Some(PodState::Failed { .. })
            if now_ms >= deadline
                && pod.is_some_and(|p| p.metadata.deletion_timestamp.is_some()) =>
        {
            timed_out(view, timeout_ms)
        }
        Some(PodState::Failed {
            exit_code,
            reason,
            message,
        }) => {
            let tail = |why: String| match message.as_deref().map(str::trim) {
                Some(m) if !m.is_empty() => format!("{why}: {m}"),
                _ => why,
            };
            match reason.as_deref() {
                Some("OOMKilled") => {
                    let why = match pod.and_then(|p| memory_limit(p)) {
                        Some(limit) => format!(
                            "OOMKilled: the algorithm container used more than its memory limit of {limit}; raise resources.limits.memory in the algorithm's template"
                        ),
                        None => "OOMKilled: the node ran out of memory and the algorithm container has no memory limit; give it resources.limits.memory in the algorithm's template".to_string(),
                    };
                    let why = match exit_code {
                        Some(code) => format!("{why} (exit code {code})"),
                        None => why,
                    };
                    attempt_failed(
                        view,
                        settings,
                        tail(why),
                        FailReason::OomKilled,
                        Some(Outcome::Failed),
                    )
                }
                // Stopped from outside (kubectl drain, preemption): not the
                // algorithm's failure, so its breaker does not count it.
                Some(r) if DISRUPTION_REASONS.contains(&r) => attempt_failed(
                    view,
                    settings,
                    tail(format!("pod {name} was evicted ({r})")),
                    FailReason::BackoffLimitExceeded,
                    None,
                ),
                _ => {
                    let why = match (exit_code, reason.as_deref()) {
                        (Some(code), _) => format!("exit code {code}"),
                        (None, Some(r)) => r.to_string(),
                        (None, None) => "the pod failed".to_string(),
                    };
                    attempt_failed(
                        view,
                        settings,
                        tail(why),
                        FailReason::BackoffLimitExceeded,
                        Some(Outcome::Failed),
                    )
                }
            }
        }
    };
    on_worker(step, worker)
}

/// In worker mode, a status written about an attempt names the worker
/// that runs or ran it (a short task may be seen finished before its
/// Running status is written, so every write carries it).
fn on_worker(step: Step, worker: Option<&str>) -> Step {
    match (step, worker) {
        (
            Step::Write {
                mut status,
                outcome,
                release,
                then,
            },
            Some(worker),
        ) => {
            if status.reason.as_deref() == Some("PodRunning") {
                // No pod to `kubectl get`: name where it runs instead.
                let attempt = status.attempts.unwrap_or(1);
                status.message = Some(format!("attempt {attempt} runs on worker {worker}"));
            }
            status.worker = Some(worker.to_string());
            Step::Write {
                status,
                outcome,
                release,
                then,
            }
        }
        (step, _) => step,
    }
}

/// A waiting reason of the kubelet that no later attempt would get past:
/// the reason the job fails with and what to change. The kubelet's own
/// retries are the retries here: an image that is missing or refused stays
/// so (the job fails at once rather than hold its slot until its timeout),
/// and so does an image that runs as root under runAsNonRoot. Other
/// reasons (a missing ConfigMap or Secret: CreateContainerConfigError;
/// CreateContainerError) may pass and wait for the timeout.
fn start_failure(reason: &str, message: Option<&str>, image: &str) -> Option<(FailReason, String)> {
    let message = message.unwrap_or_default();
    match reason {
        "ErrImagePull" | "ImagePullBackOff" | "ErrImageNeverPull" | "InvalidImageName" => Some((
            FailReason::ImagePullFailed,
            format!(
                "the node cannot get the image {image}; make it available to the nodes or correct the image in the algorithm's template, then submit the job again"
            ),
        )),
        "CreateContainerConfigError"
            if message.contains("runAsNonRoot") || message.contains("non-root") =>
        {
            let what = if message.contains("runAsUser") {
                "the container sets runAsUser: 0".to_string()
            } else if message.contains("non-numeric") {
                format!(
                    "the image {image} names its USER, not a numeric UID, so the kubelet cannot tell that it is not root"
                )
            } else {
                format!("the image {image} runs as root")
            };
            Some((
                FailReason::ContainerConfigInvalid,
                format!(
                    "the pod must not run as root (runAsNonRoot, the operator's default when the algorithm's template sets no pod securityContext) and {what}: set securityContext.runAsUser to a non-zero UID for this container in the algorithm's template, or build the image with a numeric non-root USER (e.g. USER 65532)"
                ),
            ))
        }
        _ => None,
    }
}

/// The reason an active job is failing with while its pod is deleted (the
/// status [`start_failure`] wrote), if it is.
fn failing_to_start(status: &VisionJobStatus) -> Option<FailReason> {
    [
        FailReason::ImagePullFailed,
        FailReason::ContainerConfigInvalid,
    ]
    .into_iter()
    .find(|r| status.reason.as_deref() == Some(r.as_str()))
}

/// The attempt ran out of time: the job fails with reason Timeout.
fn timed_out(view: &View<'_>, timeout_ms: i64) -> Step {
    let mut message = format!(
        "attempt {} ran longer than its timeout of {}s and was stopped",
        attempt_of(view.job),
        timeout_ms / 1000
    );
    // Why its container never started, if the kubelet said (written by the
    // CannotStart case of `active`).
    let status = status::current(view.job);
    if status.started_at.is_none()
        && !matches!(
            status.reason.as_deref(),
            None | Some("Admitted" | "Retrying")
        )
        && let Some(why) = status.message
    {
        message = format!("{message}; {why}");
    }
    let status = status::failed(
        view.job,
        &time_at(view.now_ms),
        FailReason::Timeout,
        message,
    );
    write_release(status, Some(Outcome::Failed))
}

/// An attempt failed: retry after a backoff (keeping the slot) or fail
/// with `reason`. `outcome` is what the algorithm's breaker counts.
fn attempt_failed(
    view: &View<'_>,
    settings: &Settings,
    why: String,
    reason: FailReason,
    outcome: Option<Outcome>,
) -> Step {
    let job = view.job;
    let now = time_at(view.now_ms);
    let attempt = attempt_of(job);
    let retries = view
        .algorithm
        .map(|a| job_retries(job, a))
        .or(job.spec.retries)
        .unwrap_or(0);
    // Preempted attempts spend no retry.
    let preempted = job.status.as_ref().and_then(|s| s.preemptions).unwrap_or(0);
    if attempt - preempted <= retries {
        let backoff = status::backoff_ms(
            attempt,
            settings.retry_backoff_base.as_millis() as u64,
            settings.retry_backoff_max.as_millis() as u64,
        );
        let retry_at = time_at(view.now_ms + backoff as i64);
        return Step::Write {
            status: Box::new(status::retrying(job, &now, retry_at, &why)),
            outcome,
            release: false,
            then: Then::RequeueAfterMs(backoff + 1),
        };
    }
    let message = format!("attempt {attempt} failed ({why}); no retries left (retries: {retries})");
    write_release(status::failed(job, &now, reason, message), outcome)
}

/// A finished job: delete it once its TTL has passed: its own, else its
/// queue's default; look again when a kept pod's retention ends
/// (`pod_due_ms`), whichever comes first.
fn finished(view: &View<'_>, pod_due_ms: Option<i64>) -> Step {
    let job = view.job;
    let Some(ttl) = job
        .spec
        .ttl_seconds_after_finished
        .or(view.queue_default_ttl_seconds)
    else {
        return Step::Wait(match pod_due_ms {
            Some(at) => requeue_at(view.now_ms, at),
            None => Then::AwaitChange,
        });
    };
    let finished = job
        .status
        .as_ref()
        .and_then(|s| s.finished_at.as_ref())
        .map(ms_of)
        .unwrap_or(view.now_ms);
    let expires = finished + i64::from(ttl) * 1000;
    if view.now_ms < expires {
        let at = pod_due_ms.map_or(expires, |due| due.min(expires));
        return Step::Wait(requeue_at(view.now_ms, at));
    }
    Step::DeleteJob
}

/// The attempt number of the job's current (or next) pod, from 1.
fn attempt_of(job: &VisionJob) -> i32 {
    job.status
        .as_ref()
        .and_then(|s| s.attempts)
        .unwrap_or(1)
        .max(1)
}

/// The time limit of one attempt: the job's, else its algorithm's, else
/// the default.
fn timeout_ms(view: &View<'_>) -> i64 {
    view.algorithm
        .map(|a| job_timeout_seconds(view.job, a))
        .or(view.job.spec.timeout_seconds)
        .unwrap_or(DEFAULT_TIMEOUT_SECONDS)
        * 1000
}

/// The job's pods that still run or may run.
fn live_pods<'a>(view: &View<'a>) -> Vec<&'a Arc<Pod>> {
    view.pods
        .iter()
        .filter(|p| owned_by(p, view.job) && pod_state(p).is_live())
        .collect()
}

/// Whether the pod still carries the operator's tracking finalizer.
fn holds_outcome(pod: &Pod) -> bool {
    pod.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == POD_FINALIZER)
}

/// A pod that was deleted and will never finish: its deletion grace period
/// is over (the kubelet, or kwok, confirmed its containers stopped; or it was
/// force-deleted), or it was never bound to a node. Only the tracking
/// finalizer keeps it; without it, it would be gone.
fn stopped_unfinished(pod: &Pod) -> bool {
    let meta = &pod.metadata;
    let unbound = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_none_or(str::is_empty);
    meta.deletion_timestamp.is_some()
        && (meta.deletion_grace_period_seconds == Some(0) || unbound)
        && pod_state(pod) == PodState::Terminating
}

/// The job's pods holding the tracking finalizer that may let it go: the
/// stopped ones (they have no outcome to give), and the finished ones for
/// which `recorded` says the job's status holds their outcome.
fn tracked(view: &View<'_>, recorded: impl Fn(&Pod) -> bool) -> Vec<Arc<Pod>> {
    view.pods
        .iter()
        .filter(|p| owned_by(p, view.job) && holds_outcome(p))
        .filter(|p| {
            stopped_unfinished(p)
                || (matches!(
                    pod_state(p),
                    PodState::Succeeded { .. } | PodState::Failed { .. }
                ) && recorded(p))
        })
        .cloned()
        .collect()
}

/// Why a job's pod is stopped: what a worker running the attempt is told
/// (worker mode), so an algorithm can tell a user's cancel from a timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The job was deleted.
    JobDeleted,
    /// The job was suspended.
    Suspended,
    /// A job of higher priority, or of a tenant below its share, took the slot.
    Preempted,
    /// The attempt ran past its timeout.
    TimedOut,
    /// Not the job's current attempt (a leftover of an earlier one, or a
    /// finished job's kept pod), or an attempt whose container can never
    /// start.
    Superseded,
}

/// Why `plan` stops `pod` of `job` (a [`Step::DeletePods`] pod): the same
/// order of checks as `plan` itself.
pub fn stop_reason(job: &VisionJob, pod: &Pod) -> StopReason {
    let status = status::current(job);
    if job.metadata.deletion_timestamp.is_some() {
        StopReason::JobDeleted
    } else if job.spec.suspend {
        StopReason::Suspended
    } else if status.reason.as_deref() == Some(status::REASON_PREEMPTING) {
        StopReason::Preempted
    } else if job.phase().is_some_and(JobPhase::is_final)
        || pod.name_any() != pod_name(&job.name_any(), attempt_of(job))
        || failing_to_start(&status).is_some()
    {
        StopReason::Superseded
    } else {
        // A live job stops its current attempt's pod only at the deadline.
        StopReason::TimedOut
    }
}

/// Deletes the job's live pods not already being deleted, then `then`.
fn stop_pods(view: &View<'_>, then: Then) -> Step {
    let pods: Vec<Arc<Pod>> = live_pods(view)
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .cloned()
        .collect();
    if pods.is_empty() {
        return Step::Wait(then);
    }
    Step::DeletePods { pods, then }
}

fn write(status: VisionJobStatus, then: Then) -> Step {
    Step::Write {
        status: Box::new(status),
        outcome: None,
        release: false,
        then,
    }
}

/// A status that frees the slot: the dispatcher is told once it is written.
fn write_release(status: VisionJobStatus, outcome: Option<Outcome>) -> Step {
    Step::Write {
        status: Box::new(status),
        outcome,
        release: true,
        then: Then::AwaitChange,
    }
}

/// Plan again a little after `at_ms`.
fn requeue_at(now_ms: i64, at_ms: i64) -> Then {
    Then::RequeueAfterMs((at_ms - now_ms).max(0) as u64 + 10)
}

#[cfg(test)]
mod retention_tests;
#[cfg(test)]
mod runtime_tests;
#[cfg(test)]
mod tests;
