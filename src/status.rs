//! Pure computation of every status the operator writes: a VisionJob's
//! transitions, and a VisionQueue's and VisionAlgorithm's status from the
//! worker pool's counts. Each returns the whole status as it must be written
//! (server-side apply under one field manager replaces every field the
//! manager owns, so a status is always written whole). No I/O, no clock:
//! `now` is an argument.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::Value;

use crate::admission::{AlgorithmStats, BreakerState, QueueStats};
use crate::api::{
    ALGORITHM_CONTAINER, JobPhase, VisionAlgorithm, VisionAlgorithmStatus, VisionJob,
    VisionJobStatus, VisionQueue, VisionQueueStatus,
};
use crate::clock::time_at;

/// Kubernetes keeps at most this much of a termination message.
pub const TERMINATION_MESSAGE_LIMIT: usize = 4096;

pub const CONDITION_ADMITTED: &str = "Admitted";
pub const CONDITION_RUNNING: &str = "Running";
pub const CONDITION_COMPLETE: &str = "Complete";
pub const CONDITION_FAILED: &str = "Failed";
/// True at every final phase (Succeeded, Failed, Rejected), with the phase
/// as its reason and the job's message as its message: the one condition a
/// client waits for (`kubectl wait --for=condition=Finished`) whatever the
/// outcome. False before, with the current phase as its reason.
pub const CONDITION_FINISHED: &str = "Finished";
/// The message of a False Finished condition.
pub const NOT_FINISHED: &str = "the job has not reached a final phase yet";

/// The reasons a job ends up Failed or Rejected, as written to status.reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    AlgorithmNotFound,
    InvalidAlgorithm,
    GpuLimitExceeded,
    NamespaceNotAllowed,
    Timeout,
    BackoffLimitExceeded,
    QueueFull,
    PodRejected,
    /// The job's input and params are more than its pod may carry.
    JobTooLarge,
    /// The kubelet cannot get the algorithm's image (ErrImagePull,
    /// ImagePullBackOff, ErrImageNeverPull, InvalidImageName).
    ImagePullFailed,
    /// The kubelet refuses the container's security settings (the image
    /// runs as root while runAsNonRoot is required).
    ContainerConfigInvalid,
    /// The last attempt's algorithm container went over its memory limit.
    OomKilled,
}

impl FailReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailReason::AlgorithmNotFound => "AlgorithmNotFound",
            FailReason::InvalidAlgorithm => "InvalidAlgorithm",
            FailReason::GpuLimitExceeded => "GPULimitExceeded",
            FailReason::NamespaceNotAllowed => "NamespaceNotAllowed",
            FailReason::Timeout => "Timeout",
            FailReason::BackoffLimitExceeded => "BackoffLimitExceeded",
            FailReason::QueueFull => "QueueFull",
            FailReason::PodRejected => "PodRejected",
            FailReason::JobTooLarge => "JobTooLarge",
            FailReason::ImagePullFailed => "ImagePullFailed",
            FailReason::ContainerConfigInvalid => "ContainerConfigInvalid",
            FailReason::OomKilled => "OOMKilled",
        }
    }
}

/// The status of a job as it is now (empty for a new job).
pub fn current(job: &VisionJob) -> VisionJobStatus {
    job.status.clone().unwrap_or_default()
}

/// May a job's phase go from `from` to `to`? Final phases never change, and
/// nothing returns to "no phase". Admitted -> Admitted is a retry.
/// Whether a job in phase `from` may be admitted: only a new or Queued job.
/// A job already holding a slot (Admitted, Running: its retry stays
/// Admitted through [`may_transition`]) is never admitted again, so a late
/// admission write or a second leader cannot give one job two live pods.
pub fn may_admit(from: Option<JobPhase>) -> bool {
    matches!(from, None | Some(JobPhase::Queued))
}

pub fn may_transition(from: Option<JobPhase>, to: JobPhase) -> bool {
    use JobPhase::*;
    match from {
        None => matches!(to, Queued | Admitted | Failed | Rejected | Suspended),
        Some(f) if f.is_final() => false,
        Some(Queued) => matches!(to, Queued | Admitted | Failed | Suspended),
        // Queued again: preempted (its pod is gone, it waits in its place).
        Some(Admitted) | Some(Running) => {
            matches!(
                to,
                Queued | Admitted | Running | Succeeded | Failed | Suspended
            )
        }
        Some(Suspended) => matches!(to, Queued | Suspended | Failed),
        Some(_) => false,
    }
}

fn base(job: &VisionJob, now: &Time) -> VisionJobStatus {
    let mut s = current(job);
    s.observed_generation = job.metadata.generation;
    if s.queued_at.is_none() {
        s.queued_at = Some(now.clone());
    }
    s
}

/// Sets a condition, keeping its transition time when its status is unchanged.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    let status = if status { "True" } else { "False" }.to_string();
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.last_transition_time = now.clone();
        }
        c.status = status;
        c.reason = reason.into();
        c.message = message.into();
        c.observed_generation = generation;
    } else {
        conditions.push(Condition {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message: message.into(),
            observed_generation: generation,
            last_transition_time: now.clone(),
        });
    }
}

/// Sets the Finished condition from the status's phase and message: every
/// transition ends with it, so the condition is True exactly when the phase
/// is final.
pub fn finish(s: &mut VisionJobStatus, now: &Time) {
    let Some(phase) = s.phase else { return };
    let message = if phase.is_final() {
        s.message.clone().unwrap_or_default()
    } else {
        NOT_FINISHED.to_string()
    };
    let generation = s.observed_generation;
    set_condition(
        &mut s.conditions,
        CONDITION_FINISHED,
        phase.is_final(),
        phase.as_str(),
        &message,
        generation,
        now,
    );
}

/// Accepted by its queue; waits for a slot for the given reason.
pub fn queued(job: &VisionJob, now: &Time, reason: &str, message: String) -> VisionJobStatus {
    let mut s = base(job, now);
    s.phase = Some(JobPhase::Queued);
    s.reason = Some(reason.into());
    s.message = Some(message);
    s.retry_after = None;
    let generation = s.observed_generation;
    set_condition(
        &mut s.conditions,
        CONDITION_ADMITTED,
        false,
        reason,
        "waiting for a slot",
        generation,
        now,
    );
    finish(&mut s, now);
    s
}

/// `status.reason` of a holder whose pod is being stopped for a preemptor.
pub const REASON_PREEMPTING: &str = "Preempting";
/// `status.reason` of a job waiting again after its attempt was preempted.
pub const REASON_PREEMPTED: &str = "Preempted";

/// A holder chosen as a victim: same phase, reason Preempting; the
/// reconciler stops its pod, then writes [`preempted`].
pub fn preempting(job: &VisionJob, now: &Time, by: &str, priority: i32) -> VisionJobStatus {
    let mut s = base(job, now);
    s.reason = Some(REASON_PREEMPTING.into());
    s.message = Some(format!(
        "preempted by {by} (priority {priority}) in queue {}: its pod is being stopped with its grace period; it then waits again in its place, spending no retry",
        job.spec.queue
    ));
    s
}

/// A preempted job whose pod is gone: Queued again (its queuedAt and
/// creation time keep its place), reason Preempted, the attempt counted as
/// preempted so that it spends no retry and the next attempt is told.
pub fn preempted(job: &VisionJob, now: &Time) -> VisionJobStatus {
    let attempt = current(job).attempts.unwrap_or(0);
    let mut s = queued(
        job,
        now,
        REASON_PREEMPTED,
        format!(
            "attempt {attempt} was preempted; waiting in queue {} again in its original place (no retry spent)",
            job.spec.queue
        ),
    );
    s.preemptions = Some(s.preemptions.unwrap_or(0) + 1);
    s.last_preempted_attempt = Some(attempt);
    s.started_at = None;
    let generation = s.observed_generation;
    if s.conditions.iter().any(|c| c.type_ == CONDITION_RUNNING) {
        set_condition(
            &mut s.conditions,
            CONDITION_RUNNING,
            false,
            REASON_PREEMPTED,
            "preempted",
            generation,
            now,
        );
    }
    s
}

/// Given a slot for its first attempt (or, after a suspension, the next one).
pub fn admitted(job: &VisionJob, now: &Time, queue: &str) -> VisionJobStatus {
    let mut s = base(job, now);
    let attempt = s.attempts.unwrap_or(0) + 1;
    s.phase = Some(JobPhase::Admitted);
    s.reason = Some("Admitted".into());
    s.message = Some(format!(
        "admitted by queue {queue}; creating pod for attempt {attempt}"
    ));
    s.attempts = Some(attempt);
    s.pod_name = Some(crate::pod::pod_name(
        job.metadata.name.as_deref().unwrap_or_default(),
        attempt,
    ));
    s.output = job.output_location(attempt);
    s.worker = None;
    s.admitted_at = Some(now.clone());
    s.started_at = None;
    s.retry_after = None;
    let generation = s.observed_generation;
    set_condition(
        &mut s.conditions,
        CONDITION_ADMITTED,
        true,
        "Admitted",
        &format!("admitted by queue {queue}"),
        generation,
        now,
    );
    finish(&mut s, now);
    s
}

/// Its pod runs.
pub fn running(job: &VisionJob, now: &Time, started: Option<Time>) -> VisionJobStatus {
    let mut s = base(job, now);
    s.phase = Some(JobPhase::Running);
    s.reason = Some("PodRunning".into());
    s.message = Some(format!(
        "pod {} is running",
        s.pod_name.clone().unwrap_or_default()
    ));
    s.started_at = Some(started.unwrap_or_else(|| now.clone()));
    s.retry_after = None;
    let generation = s.observed_generation;
    set_condition(
        &mut s.conditions,
        CONDITION_RUNNING,
        true,
        "PodRunning",
        "the algorithm runs",
        generation,
        now,
    );
    finish(&mut s, now);
    s
}

/// An attempt failed and another one follows after `retry_after`; the job
/// keeps its slot meanwhile.
pub fn retrying(job: &VisionJob, now: &Time, retry_after: Time, why: &str) -> VisionJobStatus {
    let mut s = base(job, now);
    let failed = s.attempts.unwrap_or(1);
    let next = failed + 1;
    s.phase = Some(JobPhase::Admitted);
    s.reason = Some("Retrying".into());
    s.message = Some(format!(
        "attempt {failed} failed ({why}); attempt {next} starts after backoff"
    ));
    s.attempts = Some(next);
    s.pod_name = Some(crate::pod::pod_name(
        job.metadata.name.as_deref().unwrap_or_default(),
        next,
    ));
    s.output = job.output_location(next);
    s.started_at = None;
    s.retry_after = Some(retry_after);
    let generation = s.observed_generation;
    set_condition(
        &mut s.conditions,
        CONDITION_RUNNING,
        false,
        "Retrying",
        why,
        generation,
        now,
    );
    finish(&mut s, now);
    s
}

/// The attempt's pod cannot start its algorithm container: `reason` and
/// `message` say why while the job keeps its phase and its slot (a cause
/// that may pass, like a missing ConfigMap, or a permanent one whose pod
/// is being deleted before the job fails with it).
pub fn cannot_start(job: &VisionJob, now: &Time, reason: &str, message: String) -> VisionJobStatus {
    let mut s = base(job, now);
    s.reason = Some(reason.into());
    s.message = Some(message);
    s
}

/// The algorithm finished with exit code 0.
pub fn succeeded(job: &VisionJob, now: &Time, message: Option<&str>) -> VisionJobStatus {
    let mut s = base(job, now);
    s.phase = Some(JobPhase::Succeeded);
    s.finished_at = Some(now.clone());
    s.retry_after = None;
    // The directory of the attempt that succeeded: its outputs are the ones
    // the result lists.
    if let Some(attempt) = s.attempts {
        s.output = job.output_location(attempt);
    }
    let (result, reason, msg) = match parse_result(message) {
        ParsedResult::Json(v) => (Some(v), "Completed", "the algorithm finished".to_string()),
        ParsedResult::Text(t) => (
            Some(Value::String(t)),
            "Completed",
            "the algorithm finished; its result is not JSON and is kept as text".to_string(),
        ),
        ParsedResult::Empty => (
            None,
            "Completed",
            "the algorithm finished without a result".to_string(),
        ),
        ParsedResult::TooLarge(n) => (
            None,
            "ResultTooLarge",
            format!(
                "the algorithm finished but its result ({n} bytes) reached Kubernetes' {TERMINATION_MESSAGE_LIMIT}-byte termination message limit and was cut; write large outputs to $VISION_OUTPUT_DIR (spec.output) and list them in the result"
            ),
        ),
    };
    s.result = result;
    s.reason = Some(reason.into());
    s.message = Some(msg.clone());
    let generation = s.observed_generation;
    set_condition(
        &mut s.conditions,
        CONDITION_RUNNING,
        false,
        "Completed",
        "the algorithm finished",
        generation,
        now,
    );
    set_condition(
        &mut s.conditions,
        CONDITION_COMPLETE,
        true,
        reason,
        &msg,
        generation,
        now,
    );
    finish(&mut s, now);
    s
}

/// Failed for good.
pub fn failed(job: &VisionJob, now: &Time, reason: FailReason, message: String) -> VisionJobStatus {
    let mut s = base(job, now);
    s.phase = Some(JobPhase::Failed);
    s.reason = Some(reason.as_str().into());
    s.message = Some(message.clone());
    s.finished_at = Some(now.clone());
    s.retry_after = None;
    let generation = s.observed_generation;
    if s.conditions.iter().any(|c| c.type_ == CONDITION_RUNNING) {
        set_condition(
            &mut s.conditions,
            CONDITION_RUNNING,
            false,
            reason.as_str(),
            &message,
            generation,
            now,
        );
    }
    set_condition(
        &mut s.conditions,
        CONDITION_FAILED,
        true,
        reason.as_str(),
        &message,
        generation,
        now,
    );
    finish(&mut s, now);
    s
}

/// Refused by its queue at submission: maxPending jobs already wait.
pub fn rejected(job: &VisionJob, now: &Time, queue: &str, max_pending: u32) -> VisionJobStatus {
    let mut s = base(job, now);
    let message = format!(
        "queue {queue} already has {max_pending} jobs waiting (maxPending); submit again later"
    );
    s.phase = Some(JobPhase::Rejected);
    s.reason = Some(FailReason::QueueFull.as_str().into());
    s.message = Some(message.clone());
    s.finished_at = Some(now.clone());
    let generation = s.observed_generation;
    set_condition(
        &mut s.conditions,
        CONDITION_FAILED,
        true,
        "QueueFull",
        &message,
        generation,
        now,
    );
    finish(&mut s, now);
    s
}

/// Stopped by spec.suspend: no pod, no slot.
pub fn suspended(job: &VisionJob, now: &Time) -> VisionJobStatus {
    let mut s = base(job, now);
    s.phase = Some(JobPhase::Suspended);
    s.reason = Some("Suspended".into());
    s.message = Some("suspended by spec.suspend; set it to false to queue the job again".into());
    s.started_at = None;
    s.retry_after = None;
    let generation = s.observed_generation;
    set_condition(
        &mut s.conditions,
        CONDITION_ADMITTED,
        false,
        "Suspended",
        "suspended",
        generation,
        now,
    );
    if s.conditions.iter().any(|c| c.type_ == CONDITION_RUNNING) {
        set_condition(
            &mut s.conditions,
            CONDITION_RUNNING,
            false,
            "Suspended",
            "suspended",
            generation,
            now,
        );
    }
    finish(&mut s, now);
    s
}

/// What the algorithm's termination message holds.
#[derive(Debug, Clone, PartialEq)]
pub enum ParsedResult {
    Json(Value),
    Text(String),
    Empty,
    TooLarge(usize),
}

/// Reads a termination message as the algorithm's result.
pub fn parse_result(message: Option<&str>) -> ParsedResult {
    let Some(text) = message.map(str::trim).filter(|t| !t.is_empty()) else {
        return ParsedResult::Empty;
    };
    match serde_json::from_str::<Value>(text) {
        Ok(v) => ParsedResult::Json(v),
        // Kubernetes cuts messages at the limit: a cut JSON document is not a result.
        Err(_) if text.len() >= TERMINATION_MESSAGE_LIMIT => ParsedResult::TooLarge(text.len()),
        Err(_) => ParsedResult::Text(text.to_string()),
    }
}

/// Exponential backoff before retry number `retry` (1-based): base * 2^(retry-1), capped.
pub fn backoff_ms(retry: i32, base_ms: u64, cap_ms: u64) -> u64 {
    let shift = (retry.max(1) - 1).min(30) as u32;
    base_ms.saturating_mul(1u64 << shift).min(cap_ms)
}

/// A queue's status from the pool's counts. `head_reason` says why the head
/// waits; `admitted_unwritten` is the admissions not yet counted in the
/// queue's written `admittedTotal`.
pub fn queue_status(
    queue: &VisionQueue,
    stats: &QueueStats,
    head_reason: Option<String>,
    admitted_unwritten: i64,
    now: &Time,
) -> VisionQueueStatus {
    let old = queue.status.clone().unwrap_or_default();
    let generation = queue.metadata.generation;
    let mut status = VisionQueueStatus {
        running: stats.holding as i32,
        pending: stats.pending as i32,
        gpus_in_use: stats.gpus_in_use as i32,
        admitted_total: old.admitted_total.max(0) + admitted_unwritten,
        head: stats.head.as_ref().map(|k| k.to_string()),
        head_reason,
        conditions: old.conditions,
        observed_generation: generation,
        tenants: Vec::new(),
        usage_time: None,
    };
    let spec = &queue.spec;
    let (active, reason, message) = if spec.paused {
        (
            false,
            "Paused",
            "spec.paused is true: no job is admitted".to_string(),
        )
    } else {
        (
            true,
            "Admitting",
            format!("{} of {} slots in use", stats.holding, spec.max_running),
        )
    };
    set_condition(
        &mut status.conditions,
        "Active",
        active,
        reason,
        &message,
        generation,
        now,
    );
    let full = spec.max_pending.is_some_and(|m| stats.pending as i32 >= m);
    let limit = spec
        .max_pending
        .map(|m| m.to_string())
        .unwrap_or_else(|| "unlimited".into());
    set_condition(
        &mut status.conditions,
        "Full",
        full,
        if full {
            "MaxPendingReached"
        } else {
            "AcceptingJobs"
        },
        &format!("{} of {limit} waiting", stats.pending),
        generation,
        now,
    );
    status
}

/// An algorithm's status from the pool's counts and its breaker.
pub fn algorithm_status(
    algorithm: &VisionAlgorithm,
    stats: &AlgorithmStats,
    now: &Time,
) -> VisionAlgorithmStatus {
    let (breaker, degraded, message) = match &stats.breaker {
        BreakerState::Closed => ("Closed", false, "the circuit breaker is closed".to_string()),
        BreakerState::Open { until_ms } => (
            "Open",
            true,
            format!(
                "the circuit breaker is open after repeated failures; a probe job is admitted after {}",
                time_at(*until_ms).0
            ),
        ),
        BreakerState::HalfOpen { .. } => (
            "HalfOpen",
            true,
            "the circuit breaker lets one probe job through".to_string(),
        ),
    };
    let generation = algorithm.metadata.generation;
    let mut status = VisionAlgorithmStatus {
        running: stats.holding as i32,
        recent_failures: stats.recent_failures as i32,
        breaker: Some(breaker.into()),
        conditions: algorithm
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default(),
        observed_generation: generation,
    };
    set_condition(
        &mut status.conditions,
        "Degraded",
        degraded,
        breaker,
        &message,
        generation,
        now,
    );
    let ready = algorithm
        .spec
        .template
        .spec
        .as_ref()
        .is_some_and(|p| p.containers.iter().any(|c| c.name == ALGORITHM_CONTAINER));
    let (reason, message) = if ready {
        (
            "TemplateValid",
            "the pod template has a container named algorithm",
        )
    } else {
        (
            "NoAlgorithmContainer",
            "the pod template needs a container named algorithm",
        )
    };
    set_condition(
        &mut status.conditions,
        "Ready",
        ready,
        reason,
        message,
        generation,
        now,
    );
    status
}

/// The jobs holding a slot (Admitted, Running), counted by the leadership
/// term that wrote their status (None: written before terms were stamped).
/// A new leader's rebuild reports which admissions came from which term.
pub fn holders_by_term<'a>(
    jobs: impl IntoIterator<Item = &'a VisionJob>,
) -> std::collections::BTreeMap<Option<i64>, usize> {
    let mut by_term = std::collections::BTreeMap::new();
    for job in jobs {
        if matches!(
            job.phase(),
            Some(JobPhase::Admitted) | Some(JobPhase::Running)
        ) {
            let term = job.status.as_ref().and_then(|s| s.leader_term);
            *by_term.entry(term).or_default() += 1;
        }
    }
    by_term
}

#[cfg(test)]
mod pool_tests;
#[cfg(test)]
mod tests;

/// `status.tenants` of a queue from the pool's view of its tenants
/// (percentages to one decimal, usage to the millisecond).
pub fn tenant_statuses(tenants: &[crate::admission::TenantStats]) -> Vec<crate::api::TenantStatus> {
    let tenth = |x: f64| (x * 10.0).round() / 10.0;
    tenants
        .iter()
        .map(|t| crate::api::TenantStatus {
            name: t.name.clone(),
            weight: t.weight as i32,
            running: t.holding as i32,
            gpus_in_use: t.gpus_in_use as i32,
            pending: t.pending as i32,
            share_percent: tenth(t.share_percent),
            usage_percent: tenth(t.usage_percent),
            usage_gpu_seconds: (t.usage_gpu_seconds * 1000.0).round() / 1000.0,
        })
        .collect()
}
