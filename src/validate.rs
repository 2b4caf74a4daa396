//! Pure checks of a new job against its algorithm: what makes it fail at
//! once, with a reason, before it ever takes a place in a queue.

use crate::api::{ALGORITHM_CONTAINER, VisionAlgorithm, VisionJob};
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
    Ok(gpus.max(0) as u32)
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
