//! The contract between the operator, its pods and its clients: how an
//! attempt's pod is named and labelled, where the algorithm finds its job, and
//! the field manager the operator writes under. Clients select a job's pods
//! with these labels; algorithm images read these paths.

/// Label on every pod the operator creates; the pod watch selects on it.
pub const LABEL_JOB_UID: &str = "vision.zjlab.io/job-uid";
/// Label with the job's name (when it is a valid label value).
pub const LABEL_JOB: &str = "vision.zjlab.io/job";
/// Label with the attempt number, 1-based.
pub const LABEL_ATTEMPT: &str = "vision.zjlab.io/attempt";
pub const LABEL_ALGORITHM: &str = "vision.zjlab.io/algorithm";
pub const LABEL_QUEUE: &str = "vision.zjlab.io/queue";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Label on the worker pods the operator keeps for an algorithm in worker
/// mode (value [`ROLE_WORKER`]); with [`LABEL_ALGORITHM`], it selects them.
pub const LABEL_ROLE: &str = "vision.zjlab.io/role";
pub const ROLE_WORKER: &str = "worker";
/// Finalizer on every pod the operator creates (as the Kubernetes Job
/// controller's `batch.kubernetes.io/job-tracking`): a finished pod is not
/// removed (terminated-pod garbage collection, node deletion, an admin's
/// `kubectl delete pod`) before the job's status holds that attempt's outcome.
/// The operator removes it once the outcome is recorded, the attempt is
/// superseded, or the job is finished, suspended, being deleted or gone.
pub const POD_FINALIZER: &str = "vision.zjlab.io/outcome";
/// Label with the leadership term (the election Lease's `leaseTransitions`)
/// of the operator replica that created the pod.
pub const LABEL_LEADER_TERM: &str = "vision.zjlab.io/leader-term";
/// The most a pod's annotations may hold together (the sum of their keys'
/// and values, in bytes): Kubernetes' limit. The job JSON (with the job's
/// input and params) is one of them.
pub const POD_ANNOTATIONS_LIMIT: usize = 256 * 1024;
/// Annotation holding the job JSON that the downward-API volume exposes as a file.
pub const ANNOTATION_JOB_JSON: &str = "vision.zjlab.io/job-json";
/// The environment variable that carries the job JSON.
pub const ENV_JOB: &str = "VISION_JOB";
/// Where the job JSON file is mounted in the algorithm container.
pub const JOB_DIR: &str = "/etc/vision";
pub const JOB_FILE: &str = "job.json";
/// Where a job's output directory (spec.output: `<path>/<attempt>` on its
/// PersistentVolumeClaim) is mounted in the algorithm container.
pub const OUTPUT_DIR: &str = "/var/run/vision/output";
/// The environment variable naming the output directory; set only for a job
/// with spec.output.
pub const ENV_OUTPUT_DIR: &str = "VISION_OUTPUT_DIR";
/// The key of the result (status.result) that lists the files the algorithm
/// wrote to its output directory: `[{"path": <relative to the directory>,
/// "size": <bytes>, "sha256": <hex>}]`.
pub const RESULT_OUTPUTS: &str = "outputs";
/// The extended resource that GPUs are requested as.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// The field manager of every write the operator makes (server-side apply
/// and creates), so `managedFields` and the API server's metrics name it.
pub const MANAGER: &str = "vision-operator";

/// The name of a job's pod for an attempt: `<job>-<attempt>`, shortened with a
/// stable hash when the job's name leaves no room for the suffix.
pub fn pod_name(job_name: &str, attempt: i32) -> String {
    let suffix = format!("-{attempt}");
    if job_name.len() + suffix.len() <= 253 {
        return format!("{job_name}{suffix}");
    }
    let hash = fnv1a(job_name.as_bytes());
    let keep = 253 - suffix.len() - 9;
    let mut cut = keep;
    while !job_name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{}-{hash:08x}{suffix}",
        job_name[..cut].trim_end_matches(['-', '.'])
    )
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}
