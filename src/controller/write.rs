//! Status writes: server-side apply of the whole status under the one field
//! manager, preconditioned on the resourceVersion the new status was computed
//! from, so that a status computed from a stale read is refused (409) instead
//! of overwriting a newer one. This is what keeps a job's status from ever
//! going backwards when the dispatcher and the reconciler both write.

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::MANAGER;
use crate::api::{VisionJob, VisionJobStatus};
use crate::error::{Error, Result};
use crate::status::may_transition;

/// Writes a job's whole status; refuses a transition the status machine forbids.
pub async fn job_status(
    client: &kube::Client,
    job: &VisionJob,
    status: VisionJobStatus,
) -> Result<VisionJob> {
    let from = job.phase();
    if let Some(to) = status.phase
        && from != Some(to)
        && !may_transition(from, to)
    {
        return Err(Error::Transition {
            job: key_of(job),
            from: from.map(|p| p.to_string()).unwrap_or_else(|| "new".into()),
            to: to.to_string(),
        });
    }
    let namespace = job.namespace().unwrap_or_default();
    let api: Api<VisionJob> = Api::namespaced(client.clone(), &namespace);
    let body = json!({
        "apiVersion": VisionJob::api_version(&()),
        "kind": VisionJob::kind(&()),
        "metadata": {
            "name": job.name_any(),
            "namespace": namespace,
            "resourceVersion": job.resource_version(),
        },
        "status": status,
    });
    api.patch_status(
        &job.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|e| Error::from_kube(key_of(job), e))
}

/// `namespace/name` of an object, for messages.
pub fn key_of<K: Resource>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}
