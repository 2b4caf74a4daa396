//! Pure checks of a new job against its algorithm: what makes it fail at
//! once, with a reason, before it ever takes a place in a queue.

use crate::api::contract::{ANNOTATION_JOB_JSON, POD_ANNOTATIONS_LIMIT};
use crate::api::{ALGORITHM_CONTAINER, VisionAlgorithm, VisionJob};
use crate::pod::{build_pod, job_retries};
use crate::status::FailReason;

/// A job that can never run, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub reason: FailReason,
    pub message: String,
}

/// Checks a job against its algorithm; on success returns the GPUs it gets.
pub fn validate(job: &VisionJob, algorithm: Option<&VisionAlgorithm>) -> Result<u32, Invalid> {
    let Some(algorithm) = algorithm else {
        return Err(Invalid {
            reason: FailReason::AlgorithmNotFound,
            message: format!(
                "algorithm {} is not registered (kubectl get visionalgorithms lists those that are)",
                job.spec.algorithm
            ),
        });
    };
    let spec = &algorithm.spec;
    let has_container = spec
        .template
        .spec
        .as_ref()
        .is_some_and(|p| p.containers.iter().any(|c| c.name == ALGORITHM_CONTAINER));
    if !has_container {
        return Err(Invalid {
            reason: FailReason::InvalidAlgorithm,
            message: format!(
                "algorithm {} has no container named \"{ALGORITHM_CONTAINER}\" in its template",
                job.spec.algorithm
            ),
        });
    }
    let namespace = job.metadata.namespace.as_deref().unwrap_or_default();
    if !spec.allowed_namespaces.is_empty()
        && !spec.allowed_namespaces.iter().any(|n| n == namespace)
    {
        return Err(Invalid {
            reason: FailReason::NamespaceNotAllowed,
            message: format!(
                "algorithm {} does not accept jobs from namespace {namespace} (allowed: {})",
                job.spec.algorithm,
                spec.allowed_namespaces.join(", ")
            ),
        });
    }
    let gpus = crate::pod::job_gpus(job, algorithm);
    let max = spec.max_gpus_per_job.unwrap_or(spec.gpus_per_job);
    if gpus > max {
        return Err(Invalid {
            reason: FailReason::GpuLimitExceeded,
            message: format!(
                "the job asks for {gpus} GPUs but algorithm {} allows at most {max} per job",
                job.spec.algorithm
            ),
        });
    }
    too_large(job, algorithm)?;
    Ok(gpus.max(0) as u32)
}

/// Refuses a job whose pod the API server would refuse for the size of its
/// annotations: the job JSON (with its input and params) is one of them,
/// next to the template's and the job's own. Measured on the pod of its last
/// possible attempt, exactly as it would be created.
fn too_large(job: &VisionJob, algorithm: &VisionAlgorithm) -> Result<(), Invalid> {
    let last_attempt = job_retries(job, algorithm).max(0) + 1;
    let Ok(pod) = build_pod(job, algorithm, last_attempt) else {
        // Not buildable at all: the reconciler fails it with the reason.
        return Ok(());
    };
    let annotations = pod.metadata.annotations.unwrap_or_default();
    let total: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total <= POD_ANNOTATIONS_LIMIT {
        return Ok(());
    }
    let payload = annotations.get(ANNOTATION_JOB_JSON).map_or(0, String::len);
    Err(Invalid {
        reason: FailReason::JobTooLarge,
        message: format!(
            "the job's pod would carry {total} bytes of annotations, more than the {POD_ANNOTATIONS_LIMIT} (256 KiB) Kubernetes allows; \
             {payload} of them are the job JSON with spec.input and spec.params: pass large data by reference (e.g. a URI in spec.input)"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mk_job(ns: &str, spec: serde_json::Value) -> VisionJob {
        serde_json::from_value(json!({
            "apiVersion": "vision.zjlab.io/v1alpha1", "kind": "VisionJob",
            "metadata": {"name": "j", "namespace": ns}, "spec": spec
        }))
        .unwrap()
    }

    fn mk_algorithm(spec: serde_json::Value) -> VisionAlgorithm {
        let mut spec = spec;
        if spec.get("template").is_none() {
            spec["template"] =
                json!({"spec": {"containers": [{"name": "algorithm", "image": "x"}]}});
        }
        serde_json::from_value(json!({
            "apiVersion": "vision.zjlab.io/v1alpha1", "kind": "VisionAlgorithm",
            "metadata": {"name": "det"}, "spec": spec
        }))
        .unwrap()
    }

    #[test]
    fn gpus_default_to_the_algorithm() {
        let a = mk_algorithm(json!({"gpusPerJob": 2, "maxGPUsPerJob": 4}));
        assert_eq!(
            validate(&mk_job("ns", json!({"algorithm": "det"})), Some(&a)),
            Ok(2)
        );
        assert_eq!(
            validate(
                &mk_job("ns", json!({"algorithm": "det", "gpus": 4})),
                Some(&a)
            ),
            Ok(4)
        );
        assert_eq!(
            validate(
                &mk_job("ns", json!({"algorithm": "det", "gpus": 0})),
                Some(&a)
            ),
            Ok(0)
        );
    }

    #[test]
    fn a_job_larger_than_its_pod_may_carry_is_too_large() {
        let a = mk_algorithm(json!({"gpusPerJob": 1}));
        let sized = |n: usize| {
            let mut job = mk_job(
                "ns",
                json!({"algorithm": "det", "params": {"blob": "x".repeat(n)}}),
            );
            job.metadata.uid = Some("00000000-0000-4000-8000-000000000001".into());
            job
        };
        assert_eq!(validate(&sized(200 * 1024), Some(&a)), Ok(1));
        let e = validate(&sized(300 * 1024), Some(&a)).unwrap_err();
        assert_eq!(e.reason, FailReason::JobTooLarge);
        let pod = build_pod(&sized(300 * 1024), &a, 3).unwrap();
        let annotations = pod.metadata.annotations.unwrap();
        let total: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
        let payload = annotations[ANNOTATION_JOB_JSON].len();
        assert_eq!(
            e.message,
            format!(
                "the job's pod would carry {total} bytes of annotations, more than the 262144 (256 KiB) Kubernetes allows; \
                 {payload} of them are the job JSON with spec.input and spec.params: pass large data by reference (e.g. a URI in spec.input)"
            )
        );
        // At the limit exactly: accepted.
        let at = |n| {
            let pod = build_pod(&sized(n), &a, 3).unwrap();
            let total: usize = pod
                .metadata
                .annotations
                .unwrap()
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum();
            total
        };
        let overhead = at(0);
        let fits = POD_ANNOTATIONS_LIMIT - overhead;
        assert!(validate(&sized(fits), Some(&a)).is_ok());
        assert_eq!(
            validate(&sized(fits + 1), Some(&a)).unwrap_err().reason,
            FailReason::JobTooLarge
        );
    }

    #[test]
    fn each_reason() {
        let job = mk_job("team-a", json!({"algorithm": "det", "gpus": 3}));
        assert_eq!(
            validate(&job, None).unwrap_err().reason,
            FailReason::AlgorithmNotFound
        );
        let a = mk_algorithm(json!({"gpusPerJob": 1}));
        let e = validate(&job, Some(&a)).unwrap_err();
        assert_eq!(e.reason, FailReason::GpuLimitExceeded);
        assert_eq!(
            e.message,
            "the job asks for 3 GPUs but algorithm det allows at most 1 per job"
        );
        let a = mk_algorithm(json!({"gpusPerJob": 4, "allowedNamespaces": ["team-b"]}));
        let e = validate(&job, Some(&a)).unwrap_err();
        assert_eq!(e.reason, FailReason::NamespaceNotAllowed);
        assert_eq!(
            e.message,
            "algorithm det does not accept jobs from namespace team-a (allowed: team-b)"
        );
        let a = mk_algorithm(
            json!({"template": {"spec": {"containers": [{"name": "main", "image": "x"}]}}}),
        );
        assert_eq!(
            validate(&job, Some(&a)).unwrap_err().reason,
            FailReason::InvalidAlgorithm
        );
    }
}
