//! The job reconciler: everything after admission. It creates the pod of
//! each attempt, follows it, writes Running, Succeeded (with the result) or
//! Failed, retries with backoff, enforces the timeout, suspends and resumes,
//! deletes a job's pods before the job goes (finalizer) and deletes finished
//! jobs after their TTL. New and queued jobs belong to the dispatcher.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, Resource, ResourceExt};
use tracing::{Instrument, debug, info_span, warn};

use super::dispatch::{DispatchEvent, job_key};
use super::{Context, FINALIZER, write};
use crate::admission::Outcome;
use crate::api::{JobPhase, VisionJob, VisionJobStatus};
use crate::clock::{ms_of, now_ms, time_at};
use crate::error::{Error, Result, is_status};
use crate::pod::{PodState, build_pod, job_retries, job_timeout_seconds, pod_name, pod_state};
use crate::status::{self, FailReason};

pub async fn reconcile(job: Arc<VisionJob>, ctx: Arc<Context>) -> Result<Action> {
    if !ctx.is_leader() {
        return Ok(Action::await_change());
    }
    let span = info_span!("reconcile", namespace = %job.namespace().unwrap_or_default(), name = %job.name_any());
    async move {
        let started = std::time::Instant::now();
        let api: Api<VisionJob> =
            Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
        let key = write::key_of(job.as_ref());
        let result = finalizer(&api, FINALIZER, job, |event| async {
            match event {
                Finalizer::Apply(job) => apply(&job, &ctx).await,
                Finalizer::Cleanup(job) => cleanup(&job, &ctx).await,
            }
        })
        .await
        .or_else(|e| {
            use kube::runtime::finalizer::Error as F;
            match e {
                F::ApplyFailed(inner) | F::CleanupFailed(inner) => Err(inner),
                // The JSON patch that adds or removes the finalizer tests the
                // list it read first: a stale read fails the test (422) or
                // races another writer (409). Retry from the newer object.
                F::AddFinalizer(e) | F::RemoveFinalizer(e)
                    if is_status(&e, 409) || is_status(&e, 422) =>
                {
                    Err(Error::Conflict(format!("finalizer of {key}")))
                }
                // Gone already: nothing left to clean up.
                F::RemoveFinalizer(e) if is_status(&e, 404) => Ok(Action::await_change()),
                other => Err(Error::Finalizer(Box::new(other))),
            }
        });
        ctx.metrics.reconciled(started.elapsed());
        result
    }
    .instrument(span)
    .await
}

pub fn error_policy(_job: Arc<VisionJob>, error: &Error, ctx: Arc<Context>) -> Action {
    if !matches!(error, Error::Conflict(_) | Error::PodsTerminating(_)) {
        super::log_error(error);
    }
    ctx.metrics.reconcile_error(error.label());
    Action::requeue(error.requeue_after())
}

/// Everything a reconcile step needs to write and report a status.
struct Step<'a> {
    job: &'a VisionJob,
    ctx: &'a Context,
    now_ms: i64,
}

impl Step<'_> {
    fn now(&self) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
        time_at(self.now_ms)
    }

    async fn write(&self, status: VisionJobStatus) -> Result<VisionJob> {
        let phase = status.phase;
        let written = write::job_status(&self.ctx.client, self.job, status).await?;
        after_write(self.ctx, &written, phase);
        Ok(written)
    }

    /// Writes a status that frees the slot, then tells the dispatcher at once
    /// (without waiting for the watch to echo it).
    async fn write_release(&self, status: VisionJobStatus) -> Result<Action> {
        self.write(status).await?;
        let _ = self
            .ctx
            .dispatch
            .send(DispatchEvent::Released(job_key(self.job)));
        Ok(Action::await_change())
    }

    fn outcome(&self, outcome: Outcome) {
        let _ = self.ctx.dispatch.send(DispatchEvent::Outcome {
            algorithm: self.job.spec.algorithm.clone(),
            outcome,
        });
    }

    fn namespace(&self) -> String {
        self.job.namespace().unwrap_or_default()
    }

    fn attempt(&self) -> i32 {
        self.job
            .status
            .as_ref()
            .and_then(|s| s.attempts)
            .unwrap_or(1)
            .max(1)
    }

    /// The pods of this job's attempts that still run or may run.
    fn live_pods(&self) -> Vec<Arc<Pod>> {
        let name = self.job.name_any();
        (1..=self.attempt())
            .filter_map(|a| self.ctx.pod(&self.namespace(), &pod_name(&name, a)))
            .filter(|p| owned_by(p, self.job) && pod_state(p).is_live())
            .collect()
    }

    async fn delete_pod(&self, pod: &Pod) -> Result<()> {
        if pod.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.namespace());
        match api.delete(&pod.name_any(), &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(Error::Kube(e)),
        }
    }

    /// Deletes every live pod of the job; true when none is left.
    async fn stop_pods(&self) -> Result<bool> {
        let live = self.live_pods();
        for pod in &live {
            self.delete_pod(pod).await?;
        }
        Ok(live.is_empty())
    }
}

fn owned_by(pod: &Pod, job: &VisionJob) -> bool {
    let uid = job.uid();
    pod.owner_references()
        .iter()
        .any(|o| Some(&o.uid) == uid.as_ref())
}

async fn apply(job: &VisionJob, ctx: &Context) -> Result<Action> {
    let step = Step {
        job,
        ctx,
        now_ms: now_ms(),
    };
    match job.phase() {
        // New: the dispatcher decides; only a suspension is ours.
        None | Some(JobPhase::Queued) if job.spec.suspend => {
            step.write_release(status::suspended(job, &step.now()))
                .await
        }
        None | Some(JobPhase::Queued) => Ok(Action::await_change()),
        Some(JobPhase::Suspended) if !job.spec.suspend => {
            let status = status::queued(
                job,
                &step.now(),
                "Resumed",
                format!("resumed; waiting in queue {}", job.spec.queue),
            );
            step.write(status).await?;
            Ok(Action::await_change())
        }
        Some(JobPhase::Suspended) => {
            step.stop_pods().await?;
            Ok(Action::await_change())
        }
        Some(JobPhase::Admitted) | Some(JobPhase::Running) => active(&step).await,
        Some(_) => finished(&step).await,
    }
}

/// A job holding a slot: make its attempt's pod exist and follow it.
async fn active(step: &Step<'_>) -> Result<Action> {
    let job = step.job;
    let status = status::current(job);
    let attempt = step.attempt();
    if job.spec.suspend {
        if step.stop_pods().await? {
            return step
                .write_release(status::suspended(job, &step.now()))
                .await;
        }
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    let algorithm = step.ctx.algorithm(&job.spec.algorithm);
    let timeout_ms = algorithm
        .as_deref()
        .map(|a| job_timeout_seconds(job, a))
        .or(job.spec.timeout_seconds)
        .unwrap_or(3600)
        * 1000;
    // The attempt's clock starts when its pod runs, or else when it was
    // admitted (or its retry became due): a pod that never schedules times out too.
    let attempt_start = status
        .started_at
        .as_ref()
        .or(status.retry_after.as_ref())
        .or(status.admitted_at.as_ref())
        .map(ms_of)
        .unwrap_or(step.now_ms);
    let deadline = attempt_start + timeout_ms;
    let name = pod_name(&job.name_any(), attempt);
    let mut pod = step
        .ctx
        .pod(&step.namespace(), &name)
        .filter(|p| owned_by(p, job));
    if pod.is_none() && status.started_at.is_some() {
        // A started attempt's pod missing from the cache would fail the
        // attempt: confirm with the API server before believing it.
        let api: Api<Pod> = Api::namespaced(step.ctx.client.clone(), &step.namespace());
        pod = api
            .get_opt(&name)
            .await
            .map_err(Error::Kube)?
            .filter(|p| owned_by(p, job))
            .map(Arc::new);
        if pod.is_some() {
            warn!(pod = %name, pods_cached = step.ctx.pods.state().len(), "pod missing from the cache but present in the API; using the API's copy");
        }
    }

    if pod.is_some() {
        step.ctx.pod_seen(&step.namespace(), &name);
    }
    match pod.as_deref().map(pod_state) {
        None if status.started_at.is_some() || step.now_ms >= deadline => {
            // The pod of a started attempt is gone: deleted or evicted from
            // outside, or by us at the deadline.
            if step.now_ms >= deadline {
                step.outcome(Outcome::Failed);
                return timed_out(step, timeout_ms).await;
            }
            step.outcome(Outcome::Failed);
            attempt_failed(
                step,
                "PodDeleted",
                format!("pod {name} was deleted before it finished"),
            )
            .await
        }
        None => {
            if let Some(after) = status.retry_after.as_ref().map(ms_of)
                && after > step.now_ms
            {
                return Ok(Action::requeue(Duration::from_millis(
                    (after - step.now_ms) as u64 + 1,
                )));
            }
            // One live pod per job: a former attempt's pod must be gone first.
            if !step.live_pods().is_empty() {
                step.stop_pods().await?;
                return Err(Error::PodsTerminating(write::key_of(job)));
            }
            let Some(algorithm) = algorithm else {
                let message = format!(
                    "algorithm {} was deleted before the pod of attempt {attempt} was created",
                    job.spec.algorithm
                );
                return step
                    .write_release(status::failed(
                        job,
                        &step.now(),
                        FailReason::AlgorithmNotFound,
                        message,
                    ))
                    .await;
            };
            let pod = match build_pod(job, &algorithm, attempt) {
                Ok(pod) => pod,
                Err(e) => {
                    return step
                        .write_release(status::failed(
                            job,
                            &step.now(),
                            FailReason::InvalidAlgorithm,
                            e.to_string(),
                        ))
                        .await;
                }
            };
            // The dispatcher creates the first pod right after admitting;
            // if that is under way, its pod event brings us back.
            if !step.ctx.start_creating(&step.namespace(), &name) {
                return Ok(Action::requeue(Duration::from_secs(1)));
            }
            if let Err(e) = create_pod(step.ctx, &pod).await {
                step.ctx.creation_failed(&step.namespace(), &name);
                return Err(Error::Kube(e));
            }
            Ok(requeue_at(step.now_ms, deadline))
        }
        Some(PodState::Pending) => {
            if step.now_ms >= deadline {
                step.stop_pods().await?;
                return Ok(Action::requeue(Duration::from_millis(500)));
            }
            Ok(requeue_at(step.now_ms, deadline))
        }
        Some(PodState::Running { started }) => {
            if step.now_ms >= deadline {
                step.stop_pods().await?;
                return Ok(Action::requeue(Duration::from_millis(500)));
            }
            if job.phase() != Some(JobPhase::Running) {
                let started_ms = started.as_ref().map(ms_of).unwrap_or(step.now_ms);
                step.write(status::running(job, &step.now(), started.clone()))
                    .await?;
                return Ok(requeue_at(step.now_ms, started_ms + timeout_ms));
            }
            Ok(requeue_at(step.now_ms, deadline))
        }
        Some(PodState::Terminating) => Ok(Action::requeue(Duration::from_millis(500))),
        Some(PodState::Succeeded { message }) => {
            step.outcome(Outcome::Succeeded);
            let status = status::succeeded(job, &step.now(), message.as_deref());
            step.write_release(status).await
        }
        Some(PodState::Failed {
            exit_code,
            reason,
            message,
        }) => {
            step.outcome(Outcome::Failed);
            if reason.as_deref() == Some("DeadlineExceeded") {
                return timed_out(step, timeout_ms).await;
            }
            let why = match (exit_code, reason.as_deref()) {
                (Some(code), _) => format!("exit code {code}"),
                (None, Some(r)) => r.to_string(),
                (None, None) => "the pod failed".to_string(),
            };
            let detail = message
                .map(|m| format!("{why}: {}", m.trim()))
                .unwrap_or(why);
            attempt_failed(step, "AttemptFailed", detail).await
        }
    }
}

/// Creates an attempt's pod; one that exists already (same deterministic
/// name) is the same attempt's pod, not an error.
pub async fn create_pod(ctx: &Context, pod: &Pod) -> Result<(), kube::Error> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let params = PostParams {
        field_manager: Some(super::MANAGER.into()),
        ..Default::default()
    };
    match api.create(&params, pod).await {
        Ok(_) => debug!(pod = %pod.name_any(), "created pod"),
        Err(e) if is_status(&e, 409) => debug!(pod = %pod.name_any(), "pod exists already"),
        Err(e) => return Err(e),
    }
    Ok(())
}

fn requeue_at(now_ms: i64, at_ms: i64) -> Action {
    Action::requeue(Duration::from_millis((at_ms - now_ms).max(0) as u64 + 10))
}

async fn timed_out(step: &Step<'_>, timeout_ms: i64) -> Result<Action> {
    let message = format!(
        "attempt {} ran longer than its timeout of {}s and was stopped",
        step.attempt(),
        timeout_ms / 1000
    );
    let status = status::failed(step.job, &step.now(), FailReason::Timeout, message);
    step.write_release(status).await
}

/// An attempt failed: retry after a backoff (keeping the slot) or fail.
async fn attempt_failed(step: &Step<'_>, _kind: &str, why: String) -> Result<Action> {
    let job = step.job;
    let attempt = step.attempt();
    let retries = step
        .ctx
        .algorithm(&job.spec.algorithm)
        .map(|a| job_retries(job, &a))
        .or(job.spec.retries)
        .unwrap_or(0);
    if attempt <= retries {
        let settings = &step.ctx.settings;
        let backoff = status::backoff_ms(
            attempt,
            settings.retry_backoff_base.as_millis() as u64,
            settings.retry_backoff_max.as_millis() as u64,
        );
        let retry_at = step.now_ms + backoff as i64;
        step.write(status::retrying(job, &step.now(), time_at(retry_at), &why))
            .await?;
        step.ctx.metrics.retried(&job.spec.algorithm);
        return Ok(Action::requeue(Duration::from_millis(backoff + 1)));
    }
    let message = format!("attempt {attempt} failed ({why}); no retries left (retries: {retries})");
    let status = status::failed(job, &step.now(), FailReason::BackoffLimitExceeded, message);
    step.write_release(status).await
}

/// A finished job: delete it once its TTL has passed.
async fn finished(step: &Step<'_>) -> Result<Action> {
    let job = step.job;
    let Some(ttl) = job.spec.ttl_seconds_after_finished else {
        return Ok(Action::await_change());
    };
    let finished = job
        .status
        .as_ref()
        .and_then(|s| s.finished_at.as_ref())
        .map(ms_of)
        .unwrap_or(step.now_ms);
    let expires = finished + i64::from(ttl) * 1000;
    if step.now_ms < expires {
        return Ok(requeue_at(step.now_ms, expires));
    }
    let api: Api<VisionJob> = Api::namespaced(step.ctx.client.clone(), &step.namespace());
    match api
        .delete(&job.name_any(), &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(Action::await_change()),
        Err(e) if is_status(&e, 404) => Ok(Action::await_change()),
        Err(e) => Err(Error::Kube(e)),
    }
}

/// The job is being deleted: delete its pods, and once none is live, free
/// its slot and let the finalizer go.
async fn cleanup(job: &VisionJob, ctx: &Context) -> Result<Action> {
    let step = Step {
        job,
        ctx,
        now_ms: now_ms(),
    };
    if !step.stop_pods().await? {
        return Err(Error::PodsTerminating(write::key_of(job)));
    }
    let _ = ctx.dispatch.send(DispatchEvent::Released(job_key(job)));
    Ok(Action::await_change())
}

/// After a status write succeeded: count a final outcome (once: a write
/// that lost a race is retried and counted then) and publish the Event.
pub fn after_write(ctx: &Context, job: &VisionJob, phase: Option<JobPhase>) {
    if let Some(p) = phase.filter(|p| p.is_final()) {
        let status = job.status.as_ref();
        let reason = status.and_then(|s| s.reason.as_deref()).unwrap_or_default();
        ctx.metrics
            .job_finished(&job.spec.queue, &job.spec.algorithm, p.as_str(), reason);
        if p == JobPhase::Rejected {
            ctx.metrics.rejected(&job.spec.queue);
        }
        let run = status
            .and_then(|s| Some((s.started_at.as_ref()?, s.finished_at.as_ref()?)))
            .map(|(a, b)| (ms_of(b) - ms_of(a)).max(0) as f64 / 1000.0);
        ctx.metrics.job_run_time(&job.spec.algorithm, run);
    }
    publish_transition(ctx, job, phase);
}

/// Publishes a Kubernetes Event for a job's new phase, in the background.
fn publish_transition(ctx: &Context, job: &VisionJob, phase: Option<JobPhase>) {
    let Some(phase) = phase else { return };
    if !ctx.settings.job_events.covers(phase) {
        return;
    }
    let status = job.status.clone().unwrap_or_default();
    let retrying = status.reason.as_deref() == Some("Retrying");
    if ctx.settings.job_events == super::JobEvents::Problems
        && phase == JobPhase::Admitted
        && !retrying
    {
        return;
    }
    let (type_, reason) = match phase {
        JobPhase::Queued => (EventType::Normal, "Queued"),
        JobPhase::Admitted if status.reason.as_deref() == Some("Retrying") => {
            (EventType::Warning, "Retrying")
        }
        JobPhase::Admitted => (EventType::Normal, "Admitted"),
        JobPhase::Running => (EventType::Normal, "Started"),
        JobPhase::Succeeded => (EventType::Normal, "Succeeded"),
        JobPhase::Failed => (EventType::Warning, "Failed"),
        JobPhase::Rejected => (EventType::Warning, "Rejected"),
        JobPhase::Suspended => (EventType::Normal, "Suspended"),
    };
    let event = KubeEvent {
        type_,
        reason: reason.into(),
        note: status.message.map(|m| m.chars().take(1000).collect()),
        action: phase.as_str().into(),
        secondary: None,
    };
    let recorder = ctx.recorder.clone();
    let reference = job.object_ref(&());
    tokio::spawn(async move {
        if let Err(e) = recorder.publish(&event, &reference).await {
            warn!(error = %e, "publishing an event failed");
        }
    });
}
