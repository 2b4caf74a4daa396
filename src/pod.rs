//! Pure builders from (job, algorithm, attempt) to the attempt's Pod, and the
//! reading of a pod back into what it means for the job. No I/O.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, DownwardAPIVolumeFile, DownwardAPIVolumeSource, EnvVar,
    ObjectFieldSelector, PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec,
    ResourceRequirements, SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use serde_json::json;

use crate::api::{ALGORITHM_CONTAINER, VisionAlgorithm, VisionJob};

pub use crate::api::contract::{
    ANNOTATION_JOB_JSON, ENV_JOB, ENV_OUTPUT_DIR, GPU_RESOURCE, JOB_DIR, JOB_FILE, LABEL_ALGORITHM,
    LABEL_ATTEMPT, LABEL_JOB, LABEL_JOB_UID, LABEL_MANAGED_BY, LABEL_QUEUE, MANAGER, OUTPUT_DIR,
    pod_name,
};
const JOB_VOLUME: &str = "vision-job";
/// The volume of a job's output claim (spec.output).
const OUTPUT_VOLUME: &str = "vision-output";

/// Why a pod cannot be built for a job: permanent, the job fails with this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("algorithm {0} has no container named \"algorithm\" in its template")]
    NoAlgorithmContainer(String),
    #[error("the job has no uid yet")]
    NoUid,
}

/// A label value is at most 63 characters of `[A-Za-z0-9_.-]`, alphanumeric at both ends.
pub(crate) fn is_label_value(v: &str) -> bool {
    v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && v.bytes().next().is_none_or(|b| b.is_ascii_alphanumeric())
        && v.bytes().last().is_none_or(|b| b.is_ascii_alphanumeric())
}

/// The GPUs a job gets: its own request, else the algorithm's default. A
/// job of an algorithm in worker mode whose worker pods count against a
/// queue (`workers.queue`) holds none itself: its task runs on a worker pod
/// whose GPUs are counted there (docs/WORKERS.md).
pub fn job_gpus(job: &VisionJob, algorithm: &VisionAlgorithm) -> i32 {
    if algorithm.spec.mode == crate::api::AlgorithmMode::Worker
        && algorithm
            .spec
            .workers
            .as_ref()
            .is_some_and(|w| w.queue.is_some())
    {
        return 0;
    }
    job.spec.gpus.unwrap_or(algorithm.spec.gpus_per_job)
}

/// The time limit of one attempt, in seconds.
pub fn job_timeout_seconds(job: &VisionJob, algorithm: &VisionAlgorithm) -> i64 {
    job.spec
        .timeout_seconds
        .unwrap_or(algorithm.spec.timeout_seconds)
}

/// How many retries a job gets.
pub fn job_retries(job: &VisionJob, algorithm: &VisionAlgorithm) -> i32 {
    job.spec.retries.unwrap_or(algorithm.spec.retries)
}

/// The JSON the algorithm receives (env VISION_JOB and /etc/vision/job.json).
/// A job with spec.output also gets `output`: the directory to write to in
/// the container (`dir`) and where that is on the claim (`claimName`, `path`).
pub fn job_json(job: &VisionJob, attempt: i32) -> String {
    let mut payload = json!({
        "name": job.metadata.name,
        "namespace": job.metadata.namespace,
        "uid": job.metadata.uid,
        "attempt": attempt,
        "algorithm": job.spec.algorithm,
        "input": job.spec.input.clone().unwrap_or_else(|| json!({})),
        "params": job.spec.params.clone().unwrap_or_else(|| json!({})),
    });
    // The previous attempt was preempted: the algorithm may resume from its
    // own checkpoint.
    if attempt > 1
        && job.status.as_ref().and_then(|s| s.last_preempted_attempt) == Some(attempt - 1)
    {
        payload["previousAttempt"] = json!({"attempt": attempt - 1, "preempted": true});
    }
    if let Some(location) = job.output_location(attempt) {
        payload["output"] = json!({
            "dir": OUTPUT_DIR,
            "claimName": location.claim_name,
            "path": location.path,
        });
    }
    payload.to_string()
}

/// Builds the pod of one attempt of a job.
pub fn build_pod(
    job: &VisionJob,
    algorithm: &VisionAlgorithm,
    attempt: i32,
) -> Result<Pod, BuildError> {
    let job_name = job.metadata.name.clone().unwrap_or_default();
    let uid = job.metadata.uid.clone().ok_or(BuildError::NoUid)?;
    let algorithm_name = algorithm.metadata.name.clone().unwrap_or_default();
    let template = &algorithm.spec.template;
    let mut spec = template.spec.clone().unwrap_or_default();
    if !spec
        .containers
        .iter()
        .any(|c| c.name == ALGORITHM_CONTAINER)
    {
        return Err(BuildError::NoAlgorithmContainer(algorithm_name));
    }
    let gpus = job_gpus(job, algorithm);
    let payload = job_json(job, attempt);

    let mut labels: BTreeMap<String, String> = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(LABEL_MANAGED_BY.into(), MANAGER.into());
    labels.insert(LABEL_JOB_UID.into(), uid.clone());
    labels.insert(LABEL_ATTEMPT.into(), attempt.to_string());
    for (key, value) in [
        (LABEL_JOB, &job_name),
        (LABEL_ALGORITHM, &algorithm_name),
        (LABEL_QUEUE, &job.spec.queue),
    ] {
        if is_label_value(value) {
            labels.insert(key.into(), value.clone());
        }
    }

    // The template's annotations, then the job's own (they script the
    // simulated pods of the local cluster and carry users' metadata).
    let mut annotations: BTreeMap<String, String> = template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default();
    for (k, v) in job.metadata.annotations.iter().flatten() {
        if k != "kubectl.kubernetes.io/last-applied-configuration" {
            annotations.insert(k.clone(), v.clone());
        }
    }
    annotations.insert(ANNOTATION_JOB_JSON.into(), payload.clone());

    spec.restart_policy = Some("Never".into());
    spec.active_deadline_seconds = Some(job_timeout_seconds(job, algorithm));
    restrict(&mut spec);
    spec.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: JOB_VOLUME.into(),
        downward_api: Some(DownwardAPIVolumeSource {
            items: Some(vec![DownwardAPIVolumeFile {
                path: JOB_FILE.into(),
                field_ref: Some(ObjectFieldSelector {
                    field_path: format!("metadata.annotations['{ANNOTATION_JOB_JSON}']"),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    });
    let output = job.output_location(attempt);
    if let Some(location) = &output {
        spec.volumes.get_or_insert_with(Vec::new).push(Volume {
            name: OUTPUT_VOLUME.into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: location.claim_name.clone(),
                read_only: None,
            }),
            ..Default::default()
        });
    }
    for container in spec.containers.iter_mut() {
        if container.name == ALGORITHM_CONTAINER {
            prepare_algorithm_container(container, &payload, gpus);
            if let Some(location) = &output {
                mount_output(container, &location.path);
            }
        }
    }

    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(&job_name, attempt)),
            namespace: job.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner_reference(job, uid)]),
            finalizers: Some(vec![crate::api::contract::POD_FINALIZER.into()]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    })
}

/// The defaults of every pod the operator makes from a template (an
/// attempt's, a worker's): where the template sets none, the restricted Pod
/// Security Standard's security contexts (pod, containers and init
/// containers) and no ServiceAccount token mounted.
pub(crate) fn restrict(spec: &mut PodSpec) {
    if spec.security_context.is_none() {
        spec.security_context = Some(PodSecurityContext {
            run_as_non_root: Some(true),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    if spec.service_account_name.is_none() && spec.automount_service_account_token.is_none() {
        // The algorithm talks to no Kubernetes API unless its template says so.
        spec.automount_service_account_token = Some(false);
    }
    // Init containers too: the restricted Pod Security Standard checks them all.
    for container in spec
        .init_containers
        .iter_mut()
        .flatten()
        .chain(spec.containers.iter_mut())
    {
        if container.security_context.is_none() {
            container.security_context = Some(restricted_container_context());
        }
    }
}

fn restricted_container_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn prepare_algorithm_container(container: &mut Container, payload: &str, gpus: i32) {
    let env = container.env.get_or_insert_with(Vec::new);
    env.retain(|e| e.name != ENV_JOB);
    env.push(EnvVar {
        name: ENV_JOB.into(),
        value: Some(payload.to_string()),
        ..Default::default()
    });
    container
        .volume_mounts
        .get_or_insert_with(Vec::new)
        .push(VolumeMount {
            name: JOB_VOLUME.into(),
            mount_path: JOB_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    container.termination_message_policy = Some("FallbackToLogsOnError".into());
    set_gpus(container, gpus);
}

/// Sets the container's GPU limit and request to `gpus` (none for 0).
pub(crate) fn set_gpus(container: &mut Container, gpus: i32) {
    let resources = container
        .resources
        .get_or_insert_with(ResourceRequirements::default);
    let limits = resources.limits.get_or_insert_with(BTreeMap::new);
    if gpus > 0 {
        limits.insert(GPU_RESOURCE.into(), Quantity(gpus.to_string()));
        // Extended resources need request == limit; set it so nothing differs.
        resources
            .requests
            .get_or_insert_with(BTreeMap::new)
            .insert(GPU_RESOURCE.into(), Quantity(gpus.to_string()));
    } else {
        limits.remove(GPU_RESOURCE);
        if let Some(r) = resources.requests.as_mut() {
            r.remove(GPU_RESOURCE);
        }
    }
}

/// Mounts the attempt's directory of the output claim (`sub_path`, created
/// by the kubelet) at OUTPUT_DIR and names it in VISION_OUTPUT_DIR.
fn mount_output(container: &mut Container, sub_path: &str) {
    let env = container.env.get_or_insert_with(Vec::new);
    env.retain(|e| e.name != ENV_OUTPUT_DIR);
    env.push(EnvVar {
        name: ENV_OUTPUT_DIR.into(),
        value: Some(OUTPUT_DIR.into()),
        ..Default::default()
    });
    container
        .volume_mounts
        .get_or_insert_with(Vec::new)
        .push(VolumeMount {
            name: OUTPUT_VOLUME.into(),
            mount_path: OUTPUT_DIR.into(),
            sub_path: Some(sub_path.into()),
            ..Default::default()
        });
}

fn owner_reference(job: &VisionJob, uid: String) -> OwnerReference {
    OwnerReference {
        api_version: VisionJob::api_version(&()).into_owned(),
        kind: VisionJob::kind(&()).into_owned(),
        name: job.metadata.name.clone().unwrap_or_default(),
        uid,
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether `pod` belongs to `job` (an owner reference with the job's UID):
/// a pod of a former job of the same name does not.
pub fn owned_by(pod: &Pod, job: &VisionJob) -> bool {
    let Some(uid) = job.metadata.uid.as_deref() else {
        return false;
    };
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid)
}

/// What a pod says about its attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum PodState {
    /// Created, not yet running (scheduling, pulling, or unschedulable).
    Pending,
    /// Not finished, and the kubelet cannot start the algorithm container
    /// (or an init container before it): the container's name and image,
    /// and its waiting reason (ErrImagePull, ImagePullBackOff,
    /// ErrImageNeverPull, InvalidImageName, CreateContainerConfigError,
    /// CreateContainerError, ...) with the kubelet's message.
    CannotStart {
        container: String,
        image: String,
        reason: String,
        message: Option<String>,
    },
    /// Running since the given time (if the kubelet reported it).
    Running {
        started: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    },
    /// Exit code 0; the algorithm container's termination message.
    Succeeded { message: Option<String> },
    /// Failed: the exit code, the kubelet's reason and the message. The
    /// reason is the algorithm container's `OOMKilled`, else the pod's own
    /// (DeadlineExceeded, Evicted), else the reason of its DisruptionTarget
    /// condition ([`DISRUPTION_REASONS`], with the condition's message), else
    /// the container's.
    Failed {
        exit_code: Option<i32>,
        reason: Option<String>,
        message: Option<String>,
    },
    /// Being deleted (deletionTimestamp set) and not finished.
    Terminating,
}

impl PodState {
    /// A pod that still occupies (or may yet occupy) a node and its GPUs.
    pub fn is_live(&self) -> bool {
        matches!(
            self,
            PodState::Pending
                | PodState::CannotStart { .. }
                | PodState::Running { .. }
                | PodState::Terminating
        )
    }
}

/// The reasons of a pod's DisruptionTarget condition: the pod was stopped
/// from outside, not by its algorithm (`kubectl drain` and other uses of
/// the Eviction API, preemption, a NoExecute taint, the pod garbage
/// collector, the kubelet's node-pressure eviction or shutdown).
pub const DISRUPTION_REASONS: [&str; 5] = [
    "EvictionByEvictionAPI",
    "PreemptionByScheduler",
    "DeletionByTaintManager",
    "DeletionByPodGC",
    "TerminationByKubelet",
];

/// Waiting reasons of a container that is on its way to run.
const STARTING_REASONS: [&str; 2] = ["ContainerCreating", "PodInitializing"];

/// The memory limit of the pod's algorithm container, as written
/// (`512Mi`), if it has one.
pub fn memory_limit(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == ALGORITHM_CONTAINER)?
        .resources
        .as_ref()?
        .limits
        .as_ref()?
        .get("memory")
        .map(|q| q.0.clone())
}

/// The container that keeps the algorithm from starting, if one waits for
/// a reason other than being created: an init container (they run first),
/// else the algorithm container.
fn cannot_start(pod: &Pod) -> Option<PodState> {
    let status = pod.status.as_ref()?;
    let algorithm = status
        .container_statuses
        .iter()
        .flatten()
        .filter(|c| c.name == ALGORITHM_CONTAINER);
    status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(algorithm)
        .find_map(|c| {
            let waiting = c.state.as_ref()?.waiting.as_ref()?;
            let reason = waiting.reason.as_deref().filter(|r| !r.is_empty())?;
            (!STARTING_REASONS.contains(&reason)).then(|| PodState::CannotStart {
                container: c.name.clone(),
                image: c.image.clone(),
                reason: reason.to_string(),
                message: waiting.message.clone(),
            })
        })
}

/// Reads a pod's phase and the algorithm container's termination state.
pub fn pod_state(pod: &Pod) -> PodState {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    let terminated = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.name == ALGORITHM_CONTAINER)
                .or_else(|| cs.first())
        })
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    match phase {
        "Succeeded" => PodState::Succeeded {
            message: terminated.and_then(|t| t.message.clone()),
        },
        "Failed" => {
            let oom_killed = terminated
                .and_then(|t| t.reason.as_deref())
                .filter(|r| *r == "OOMKilled");
            // Why it was stopped from outside (kubectl drain: the
            // container's own reason is just "Error", exit code 143).
            let disruption = status
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| {
                    cs.iter()
                        .find(|c| c.type_ == "DisruptionTarget" && c.status == "True")
                })
                .filter(|c| {
                    c.reason
                        .as_deref()
                        .is_some_and(|r| DISRUPTION_REASONS.contains(&r))
                });
            let pod_reason = status.and_then(|s| s.reason.as_deref());
            // A pod-level reason (DeadlineExceeded, Evicted) says more than the
            // container's, which is just "Error" for a container the kubelet
            // killed; but an OOM kill is the container's own.
            let (reason, message) = match (oom_killed, pod_reason, disruption) {
                (Some(oom), _, _) => (Some(oom.to_string()), None),
                (None, Some(r), _) => (Some(r.to_string()), None),
                (None, None, Some(c)) => (c.reason.clone(), c.message.clone()),
                (None, None, None) => (terminated.and_then(|t| t.reason.clone()), None),
            };
            PodState::Failed {
                exit_code: terminated.map(|t| t.exit_code),
                reason,
                message: message
                    .or_else(|| terminated.and_then(|t| t.message.clone()))
                    .or_else(|| status.and_then(|s| s.message.clone())),
            }
        }
        _ if pod.metadata.deletion_timestamp.is_some() => PodState::Terminating,
        _ => cannot_start(pod).unwrap_or_else(|| match phase {
            "Running" => PodState::Running {
                started: status.and_then(|s| s.start_time.clone()),
            },
            _ => PodState::Pending,
        }),
    }
}

#[cfg(test)]
mod runtime_tests;
#[cfg(test)]
mod tests;
