//! Every write the operator makes to the API server, and what follows a
//! successful one (outcome metrics, Events). Nothing else in the operator
//! creates, patches or deletes an object, except the job finalizer's own
//! patch (kube's `finalizer` helper, in the reconciler) and the Lease.
//!
//! - Status (jobs, queues, algorithms): server-side apply of the whole
//!   status under the one field manager, preconditioned on the
//!   resourceVersion it was computed from, so that a status computed from a
//!   stale read is refused (409) instead of overwriting a newer one. A job's
//!   status also passes the status machine's transition check.
//! - Pods: created under a claim (see `claims`), so the dispatcher and the
//!   reconciler never create one twice; a 409 counts as created only when
//!   the existing pod is owned by this job. Deleted with a UID precondition,
//!   as is a job whose TTL has passed, so a newer object of the same name is
//!   never deleted by mistake. The tracking finalizer (`POD_FINALIZER`) is
//!   removed by a JSON patch that tests the pod's UID and the finalizer's
//!   place in the list it read.

use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::debug;

use super::claims::Claims;
use super::events::{EventType, Events, Note};
use super::plan::StopReason;
use super::settings::JobEvents;
use crate::api::contract::{LABEL_LEADER_TERM, MANAGER, POD_FINALIZER};
use crate::api::{
    JobPhase, VisionAlgorithm, VisionAlgorithmStatus, VisionJob, VisionJobStatus, VisionQueue,
    VisionQueueStatus,
};
use crate::clock::{ms_of, now_ms};
use crate::error::{Error, Result, is_status};
use crate::leader::Validity;
use crate::metrics::Metrics;
use crate::pod::owned_by;
use crate::status::{may_admit, may_transition};

/// What a pod create came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodCreate {
    /// Created now, or found already created for this job.
    Created,
    /// Another creation of the pod is claimed: its result is still to come.
    Claimed,
}

pub struct Writer {
    client: Client,
    metrics: Arc<Metrics>,
    events: Events,
    job_events: JobEvents,
    claims: Mutex<Claims>,
    /// Until when this replica leads: checked before every write.
    validity: Validity,
    /// Worker mode, when enabled: attempt pods of worker-mode algorithms
    /// are kept in memory and sent to workers instead of created.
    workers: std::sync::OnceLock<Arc<crate::workers::WorkerMode>>,
}

impl Writer {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        events: Events,
        job_events: JobEvents,
        validity: Validity,
    ) -> Self {
        Writer {
            client,
            metrics,
            events,
            job_events,
            claims: Mutex::default(),
            validity,
            workers: std::sync::OnceLock::new(),
        }
    }

    /// Turns worker mode on (once, at start).
    pub fn set_workers(&self, workers: Arc<crate::workers::WorkerMode>) {
        let _ = self.workers.set(workers);
    }

    /// Worker mode, if on and `pod` is an attempt of a worker-mode algorithm.
    fn worker_mode(&self, pod: &Pod) -> Option<&crate::workers::WorkerMode> {
        self.workers.get().map(|w| &**w).filter(|w| w.handles(pod))
    }

    /// The in-memory attempt pods of a worker-mode job.
    pub fn worker_pods(&self, job: &VisionJob) -> Vec<Arc<Pod>> {
        match self.workers.get() {
            Some(w) => w.pods_of(job),
            None => Vec::new(),
        }
    }

    /// The leadership term this replica writes in (None without election).
    pub fn term(&self) -> Option<i64> {
        self.validity.term()
    }

    /// Fencing: nothing is written once this replica's leadership may have
    /// lapsed, whatever the rest of the process still believes.
    pub fn fence(&self) -> Result<()> {
        if self.validity.is_valid() {
            Ok(())
        } else {
            Err(Error::NotLeader)
        }
    }

    /// Writes a job's whole status; refuses a transition the status machine
    /// forbids. After the write: counts the outcome and publishes the Event.
    /// The status is stamped with this replica's leadership term; a status
    /// recorded in a newer term is never overwritten.
    pub async fn job_status(
        &self,
        job: &VisionJob,
        mut status: VisionJobStatus,
    ) -> Result<VisionJob> {
        self.fence()?;
        let recorded = job.status.as_ref().and_then(|s| s.leader_term);
        if let Some(recorded) = recorded
            && self.validity.saw_term(recorded)
        {
            return Err(Error::StaleTerm {
                job: key_of(job),
                recorded,
                own: self.validity.term().unwrap_or_default(),
            });
        }
        status.leader_term = self.validity.term();
        let from = job.phase();
        let phase = status.phase;
        if let Some(to) = phase
            && from != Some(to)
            && !may_transition(from, to)
        {
            return Err(Error::Transition {
                job: key_of(job),
                from: from.map(|p| p.to_string()).unwrap_or_else(|| "new".into()),
                to: to.to_string(),
            });
        }
        let api: Api<VisionJob> = Api::namespaced(self.client.clone(), &namespace_of(job));
        let written = apply_status(&api, job, status).await?;
        self.count(&written, phase);
        self.publish(&written, phase);
        Ok(written)
    }

    /// Writes an admission (phase Admitted) of a job read as new or Queued;
    /// refuses any other (see [`may_admit`]). The resourceVersion
    /// precondition makes the phase it was read in the phase it moves from.
    pub async fn admit(&self, job: &VisionJob, status: VisionJobStatus) -> Result<VisionJob> {
        if !may_admit(job.phase()) || status.phase != Some(JobPhase::Admitted) {
            return Err(Error::Transition {
                job: key_of(job),
                from: job
                    .phase()
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "new".into()),
                to: "Admitted (admission)".into(),
            });
        }
        self.job_status(job, status).await
    }

    /// Writes a queue's whole status, computed from `queue` as read.
    pub async fn queue_status(
        &self,
        queue: &VisionQueue,
        status: VisionQueueStatus,
    ) -> Result<VisionQueue> {
        self.fence()?;
        apply_status(&Api::all(self.client.clone()), queue, status).await
    }

    /// Writes an algorithm's whole status, computed from `algorithm` as read.
    pub async fn algorithm_status(
        &self,
        algorithm: &VisionAlgorithm,
        status: VisionAlgorithmStatus,
    ) -> Result<VisionAlgorithm> {
        self.fence()?;
        apply_status(&Api::all(self.client.clone()), algorithm, status).await
    }

    /// Creates an attempt's pod of `job` unless another creation of it is
    /// claimed. The caller has seen no such pod in the cache.
    pub async fn create_pod(&self, job: &VisionJob, pod: &Pod) -> Result<PodCreate> {
        self.fence()?;
        if let Some(workers) = self.worker_mode(pod) {
            // A former leader may have sent this attempt's task before it
            // lost the lease (it wrote the job's status in its own term).
            let former_term = job
                .status
                .as_ref()
                .and_then(|s| s.leader_term)
                .zip(self.validity.term())
                .is_some_and(|(written, own)| written < own);
            workers.create(pod, former_term);
            return Ok(PodCreate::Created);
        }
        let namespace = pod.namespace().unwrap_or_default();
        let key = format!("{namespace}/{}", pod.name_any());
        if !self.claims().claim(&key) {
            return Ok(PodCreate::Claimed);
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let params = PostParams {
            field_manager: Some(MANAGER.into()),
            ..Default::default()
        };
        // The term that created it, so that a late create of a former
        // leader's is recognisable.
        let mut pod = pod.clone();
        if let Some(term) = self.validity.term() {
            pod.labels_mut()
                .insert(LABEL_LEADER_TERM.into(), term.to_string());
        }
        let pod = &pod;
        let result = match api.create(&params, pod).await {
            Ok(_) => {
                debug!(pod = %key, "created pod");
                Ok(PodCreate::Created)
            }
            // Same deterministic name: the same attempt's pod if this job
            // owns it; a pod of a former job of the same name otherwise.
            Err(e) if is_status(&e, 409) => match api.get_opt(&pod.name_any()).await {
                Ok(Some(existing)) if owned_by(&existing, job) => {
                    debug!(pod = %key, "pod exists already");
                    Ok(PodCreate::Created)
                }
                Ok(_) => Err(Error::PodNameTaken(key.clone())),
                Err(e) => Err(Error::Kube(e)),
            },
            Err(kube::Error::Api(status)) if status.code == 422 || status.code == 400 => {
                Err(Error::PodRefused {
                    pod: key.clone(),
                    message: status.message.clone(),
                })
            }
            Err(e) => Err(Error::Kube(e)),
        };
        match &result {
            Ok(_) => self.claims().created(&key),
            Err(_) => self.claims().failed(&key),
        }
        result
    }

    /// Whether a create of one of `pods` (names in the job's namespace) is
    /// claimed: sent or being sent, and not yet shown by the pod watch.
    pub fn creating_any(&self, job: &VisionJob, pods: &[String]) -> bool {
        let namespace = job.namespace().unwrap_or_default();
        let claims = self.claims();
        pods.iter()
            .any(|name| claims.is_claimed(&format!("{namespace}/{name}")))
    }

    /// The pod watch shows this pod: its creation, if claimed, is settled.
    pub fn pod_shown(&self, namespace: &str, name: &str) {
        self.claims().shown(&format!("{namespace}/{name}"));
    }

    /// The pod watch begins a (re-)list.
    pub fn pods_relisting(&self) {
        self.claims().relist_started();
    }

    /// The pod watch's list is complete and in the cache.
    pub fn pods_relisted(&self) {
        self.claims().relist_done();
    }

    /// Deletes a pod, only if it is still the one read (same UID); a pod
    /// already gone is not an error.
    pub async fn delete_pod(&self, pod: &Pod, why: StopReason) -> Result<()> {
        self.fence()?;
        if let Some(workers) = self.worker_mode(pod) {
            workers.delete(pod, cancel_reason(why));
            return Ok(());
        }
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        delete_exact(&api, pod, DeleteParams::default()).await
    }

    /// Removes the operator's tracking finalizer from a pod, only if it is
    /// still the one read (same UID) and the finalizer is still where it was
    /// read; a pod already gone, or without the finalizer, is not an error.
    /// A stale read (the test fails: 422, or 409) is a conflict: planned again.
    pub async fn release_pod(&self, pod: &Pod) -> Result<()> {
        self.fence()?;
        if let Some(workers) = self.worker_mode(pod) {
            workers.release(pod);
            return Ok(());
        }
        let key = key_of(pod);
        let Some(index) = pod
            .metadata
            .finalizers
            .iter()
            .flatten()
            .position(|f| f == POD_FINALIZER)
        else {
            return Ok(());
        };
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let patch: json_patch::Patch = serde_json::from_value(json!([
            {"op": "test", "path": "/metadata/uid", "value": pod.uid()},
            {"op": "test", "path": format!("/metadata/finalizers/{index}"), "value": POD_FINALIZER},
            {"op": "remove", "path": format!("/metadata/finalizers/{index}")},
        ]))
        .map_err(|e| Error::Conflict(format!("finalizer patch of pod {key}: {e}")))?;
        let params = PatchParams {
            field_manager: Some(MANAGER.into()),
            ..Default::default()
        };
        match api
            .patch(&pod.name_any(), &params, &Patch::<()>::Json(patch))
            .await
        {
            Ok(_) => {
                debug!(pod = %key, "released the pod's tracking finalizer");
                Ok(())
            }
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) if is_status(&e, 409) || is_status(&e, 422) => {
                Err(Error::Conflict(format!("tracking finalizer of pod {key}")))
            }
            Err(e) => Err(Error::Kube(e)),
        }
    }

    /// Deletes a finished job (its TTL passed), only if it is still the one
    /// read; its pods go with it (owner references).
    pub async fn delete_job(&self, job: &VisionJob) -> Result<()> {
        self.fence()?;
        let api: Api<VisionJob> = Api::namespaced(self.client.clone(), &namespace_of(job));
        delete_exact(&api, job, DeleteParams::background()).await
    }

    fn claims(&self) -> std::sync::MutexGuard<'_, Claims> {
        self.claims
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts what a written job status means: an admission, a retry, or a
    /// final outcome with its run time. Counted here, once the write landed,
    /// so a write that lost a race is counted when it is retried, not twice.
    fn count(&self, job: &VisionJob, phase: Option<JobPhase>) {
        let Some(phase) = phase else { return };
        let status = job.status.as_ref();
        let reason = status.and_then(|s| s.reason.as_deref()).unwrap_or_default();
        if phase == JobPhase::Admitted {
            match reason {
                "Retrying" => self.metrics.retried(&job.spec.algorithm),
                _ => {
                    let waited = job
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|c| (now_ms() - ms_of(c)).max(0) as f64 / 1000.0);
                    self.metrics.admitted(&job.spec.queue, waited);
                }
            }
        }
        if phase.is_final() {
            self.metrics
                .job_finished(&job.spec.queue, &job.spec.algorithm, phase.as_str(), reason);
            if phase == JobPhase::Rejected {
                self.metrics.rejected(&job.spec.queue);
            }
            let run = status
                .and_then(|s| Some((s.started_at.as_ref()?, s.finished_at.as_ref()?)))
                .map(|(a, b)| (ms_of(b) - ms_of(a)).max(0) as f64 / 1000.0);
            self.metrics.job_run_time(&job.spec.algorithm, run);
        }
    }

    /// Publishes a Kubernetes Event for a job's new phase, in the background
    /// (aggregated and bounded: see `events`).
    fn publish(&self, job: &VisionJob, phase: Option<JobPhase>) {
        let Some(phase) = phase else { return };
        let status = job.status.clone().unwrap_or_default();
        let retrying = status.reason.as_deref() == Some("Retrying");
        let preempted = status.reason.as_deref() == Some(crate::status::REASON_PREEMPTED);
        // A holder whose pod cannot start (`status::cannot_start`): the
        // kubelet's reason, or the one the job is about to fail with.
        let cannot_start = matches!(phase, JobPhase::Admitted | JobPhase::Running)
            && !matches!(
                status.reason.as_deref(),
                None | Some("Admitted" | "Retrying" | "PodRunning")
            );
        if !self
            .job_events
            .covers(phase, retrying || cannot_start || preempted)
        {
            return;
        }
        let (type_, reason) = match phase {
            JobPhase::Queued if preempted => (EventType::Warning, "Preempted"),
            JobPhase::Queued => (EventType::Normal, "Queued"),
            JobPhase::Admitted if retrying => (EventType::Warning, "Retrying"),
            JobPhase::Admitted | JobPhase::Running if cannot_start => (
                EventType::Warning,
                status.reason.as_deref().unwrap_or_default(),
            ),
            JobPhase::Admitted => (EventType::Normal, "Admitted"),
            JobPhase::Running => (EventType::Normal, "Started"),
            JobPhase::Succeeded => (EventType::Normal, "Succeeded"),
            JobPhase::Failed => (EventType::Warning, "Failed"),
            JobPhase::Rejected => (EventType::Warning, "Rejected"),
            JobPhase::Suspended => (EventType::Normal, "Suspended"),
        };
        self.events.publish(Note {
            regarding: job.object_ref(&()),
            type_,
            reason: reason.into(),
            note: status.message.map(|m| m.chars().take(1000).collect()),
            action: phase.as_str().into(),
        });
    }
}

/// Server-side apply of `status` as the whole status of `obj`, under the one
/// field manager, preconditioned on the resourceVersion `obj` was read at.
async fn apply_status<K, S>(api: &Api<K>, obj: &K, status: S) -> Result<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let mut metadata = json!({
        "name": obj.name_any(),
        "resourceVersion": obj.resource_version(),
    });
    if let Some(namespace) = obj.namespace() {
        metadata["namespace"] = namespace.into();
    }
    let body = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": metadata,
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|e| Error::from_kube(key_of(obj), e))
}

/// Deletes `obj` only if the object of its name still has its UID. Gone
/// (404), or replaced by another of the same name (409: the precondition
/// failed), it is not there to delete.
async fn delete_exact<K>(api: &Api<K>, obj: &K, params: DeleteParams) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: obj.uid(),
            resource_version: None,
        }),
        ..params
    };
    match api.delete(&obj.name_any(), &params).await {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(()),
        Err(e) => Err(Error::Kube(e)),
    }
}

fn namespace_of<K: Resource>(obj: &K) -> String {
    obj.namespace().unwrap_or_default()
}

/// `namespace/name` of an object (just `name` when cluster-scoped), for messages.
pub fn key_of<K: Resource>(obj: &K) -> String {
    match obj.namespace() {
        Some(namespace) => format!("{namespace}/{}", obj.name_any()),
        None => obj.name_any(),
    }
}

/// What a worker is told when the reconciler stops its attempt (worker
/// mode). Here, not in `workers`: the workers module must not depend on
/// the reconciler's plan (tests/module_graph).
fn cancel_reason(why: StopReason) -> crate::workers::CancelReason {
    use crate::workers::CancelReason;
    match why {
        StopReason::JobDeleted => CancelReason::Deleted,
        StopReason::Suspended => CancelReason::Suspended,
        StopReason::Preempted => CancelReason::Preempted,
        StopReason::TimedOut => CancelReason::Timeout,
        StopReason::Superseded => CancelReason::UnknownTask,
    }
}
