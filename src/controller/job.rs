//! The job reconciler: runs on every change of a job or of its pods (and on
//! a new leader's full pass), asks `plan` for the job's next step and
//! performs it through the writer. It owns the job's finalizer. The
//! dispatcher decides new and queued jobs and creates an admitted job's first
//! pod; everything after that is planned here.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, ResourceExt};
use tracing::{Instrument, info_span, warn};

use super::context::Context;
use super::handle::job_key;
use super::plan::{Step, Then, View, plan};
use super::settings::FINALIZER;
use super::writer::{PodCreate, key_of};
use crate::api::{VisionJob, VisionJobStatus};
use crate::clock::{now_ms, time_at};
use crate::error::{Error, Result, is_status};
use crate::pod::{owned_by, pod_name};
use crate::status::{self, FailReason};

/// How soon to look again when another creation of the pod is claimed; its
/// pod event usually brings the reconciler back sooner.
const CLAIMED_RECHECK: Duration = Duration::from_secs(1);

pub async fn reconcile(job: Arc<VisionJob>, ctx: Arc<Context>) -> Result<Action> {
    if !ctx.is_leader() {
        return Ok(Action::await_change());
    }
    let span = info_span!("reconcile", namespace = %job.namespace().unwrap_or_default(), name = %job.name_any());
    async move {
        let started = std::time::Instant::now();
        let api: Api<VisionJob> =
            Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
        let key = key_of(job.as_ref());
        // kube's helper patches the finalizer itself: on, before Apply, for
        // a job without it; off, after Cleanup returned Ok. Both are fenced
        // like every write of the writer: a leader paused past its lease
        // must not let a deleted job go from a stale view.
        if !job.finalizers().iter().any(|f| f == FINALIZER) {
            ctx.writer.fence()?;
        }
        // Apply and Cleanup both plan: the plan tells a deleted job apart.
        let result = finalizer(&api, FINALIZER, job, |event| async {
            match event {
                Finalizer::Apply(job) => step(&job, &ctx).await,
                Finalizer::Cleanup(job) => {
                    let action = step(&job, &ctx).await?;
                    ctx.writer.fence()?;
                    Ok(action)
                }
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
        warn!(error = %error, kind = error.label(), "reconcile failed");
    }
    ctx.metrics.reconcile_error(error.label());
    Action::requeue(error.requeue_after())
}

/// Plans the job's next step from the caches and performs it.
async fn step(job: &VisionJob, ctx: &Context) -> Result<Action> {
    let algorithm = ctx.algorithm(&job.spec.algorithm);
    let mut pods = cached_pods(job, ctx);
    let queue = ctx.queue(&job.spec.queue);
    let mut view = View {
        job,
        pods: &[],
        algorithm: algorithm.as_deref(),
        pod_read: false,
        creating: ctx.writer.creating_any(job, &attempt_pod_names(job)),
        queue_default_ttl_seconds: queue
            .as_ref()
            .and_then(|q| q.spec.default_ttl_seconds_after_finished),
        pod_retention: queue
            .as_ref()
            .and_then(|q| q.spec.pod_retention)
            .unwrap_or_default(),
        now_ms: now_ms(),
    };
    let next = plan(
        &View {
            pods: &pods,
            ..view
        },
        &ctx.settings,
    );
    let Step::ReadPod { name } = next else {
        return perform(job, ctx, next).await;
    };
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    if let Some(pod) = api
        .get_opt(&name)
        .await
        .map_err(Error::Kube)?
        .filter(|p| owned_by(p, job))
    {
        warn!(pod = %name, pods_cached = ctx.pods.state().len(), "pod missing from the cache but present in the API; using the API's copy");
        pods.push(Arc::new(pod));
    }
    view.pods = &pods;
    view.pod_read = true;
    let next = plan(&view, &ctx.settings);
    perform(job, ctx, next).await
}

/// The names of the pods of the job's attempts so far.
fn attempt_pod_names(job: &VisionJob) -> Vec<String> {
    let attempts = job
        .status
        .as_ref()
        .and_then(|s| s.attempts)
        .unwrap_or(1)
        .max(1);
    (1..=attempts)
        .map(|a| pod_name(&job.name_any(), a))
        .collect()
}

/// The cached pods of the job's attempts so far.
fn cached_pods(job: &VisionJob, ctx: &Context) -> Vec<Arc<Pod>> {
    let namespace = job.namespace().unwrap_or_default();
    attempt_pod_names(job)
        .iter()
        .filter_map(|name| ctx.pod(&namespace, name))
        .chain(ctx.writer.worker_pods(job))
        .collect()
}

async fn perform(job: &VisionJob, ctx: &Context, step: Step) -> Result<Action> {
    match step {
        Step::Wait(then) => after(job, then),
        Step::Write {
            status,
            outcome,
            release,
            then,
        } => {
            // The outcome goes first: the written status frees the slot (the
            // job watch tells the dispatcher too), and the breaker must have
            // counted a failure before the slot is refilled. A write that
            // fails is planned again and reports its outcome again.
            if let Some(outcome) = outcome {
                let attempt = job.status.as_ref().and_then(|s| s.attempts).unwrap_or(1);
                ctx.pool
                    .outcome(&job.spec.algorithm, outcome, job_key(job), attempt);
            }
            ctx.writer.job_status(job, *status).await?;
            if release {
                // At once, without waiting for the watch to echo the status.
                ctx.pool.released(job_key(job));
            }
            after(job, then)
        }
        // The plan asks for a read only before one (tested); asked again,
        // say so rather than loop.
        Step::ReadPod { name } => Err(Error::PodUnconfirmed(format!(
            "{}/{name}",
            job.namespace().unwrap_or_default()
        ))),
        Step::CreatePod { pod, then } => match ctx.writer.create_pod(job, &pod).await {
            Ok(PodCreate::Created) => after(job, then),
            Ok(PodCreate::Claimed) => Ok(Action::requeue(CLAIMED_RECHECK)),
            // Permanent: retrying would hold the slot until the timeout.
            Err(Error::PodRefused { message, .. }) => {
                let attempt = job.status.as_ref().and_then(|s| s.attempts).unwrap_or(1);
                let status = status::failed(
                    job,
                    &time_at(now_ms()),
                    FailReason::PodRejected,
                    format!("the API server refused the pod of attempt {attempt}: {message}"),
                );
                perform_write(job, ctx, status).await
            }
            Err(e) => Err(e),
        },
        Step::DeletePods { pods, then } => {
            for pod in &pods {
                let why = super::plan::stop_reason(job, pod);
                ctx.writer.delete_pod(pod, why).await?;
            }
            after(job, then)
        }
        Step::ReleasePods { pods, then } => {
            for pod in &pods {
                ctx.writer.release_pod(pod).await?;
            }
            after(job, then)
        }
        Step::DeleteJob => {
            ctx.writer.delete_job(job).await?;
            Ok(Action::await_change())
        }
        Step::Release => {
            ctx.pool.released(job_key(job));
            Ok(Action::await_change())
        }
    }
}

fn after(job: &VisionJob, then: Then) -> Result<Action> {
    match then {
        Then::AwaitChange => Ok(Action::await_change()),
        Then::RequeueAfterMs(ms) => Ok(Action::requeue(Duration::from_millis(ms))),
        Then::PodsTerminating => Err(Error::PodsTerminating(key_of(job))),
    }
}

/// Writes a final status the executor decided itself (a refused pod) and
/// frees the slot, as a planned final write does.
async fn perform_write(job: &VisionJob, ctx: &Context, status: VisionJobStatus) -> Result<Action> {
    Box::pin(perform(
        job,
        ctx,
        Step::Write {
            status: Box::new(status),
            outcome: None,
            release: true,
            then: Then::AwaitChange,
        },
    ))
    .await
}
