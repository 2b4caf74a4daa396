//! The pod of one warm worker of an algorithm in worker mode, built from the
//! algorithm's template (pure). The same template rules as an attempt's pod
//! (`crate::pod`): a container named "algorithm", the restricted security
//! context where the template sets none, the GPU limit; plus what a worker
//! needs to find and prove itself to the operator: the endpoint and its name
//! in the environment the SDKs read, and a projected ServiceAccount token
//! for the operator's audience at the SDKs' default token path.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EnvVar, EnvVarSource, ObjectFieldSelector, Pod, ProjectedVolumeSource,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use vision_worker::{DEFAULT_TOKEN_FILE, ENV_ENDPOINT, ENV_TOKEN_FILE, ENV_WORKER_ID};

use super::TOKEN_AUDIENCE;
use crate::api::contract::{LABEL_ALGORITHM, LABEL_MANAGED_BY, LABEL_ROLE, MANAGER, ROLE_WORKER};
use crate::api::{ALGORITHM_CONTAINER, VisionAlgorithm};
use crate::pod::{restrict, set_gpus};

/// The projected token's volume.
const TOKEN_VOLUME: &str = "vision-worker-token";
/// How long a projected token lives; the kubelet refreshes it before.
const TOKEN_EXPIRATION_SECONDS: i64 = 3600;

/// Why no worker pod can be made for an algorithm.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkerPodError {
    #[error("algorithm {0} has no container named \"algorithm\" in its template")]
    NoAlgorithmContainer(String),
    #[error("algorithm {0} has no uid yet")]
    NoUid(String),
    #[error(
        "algorithm {0}: its name is not a valid label value (63 characters at most), and a worker pod is recognised by that label"
    )]
    NameNotALabel(String),
}

/// The worker pod `name` of `algorithm` in `namespace`; its workers connect
/// to `endpoint` (the operator's `--worker-endpoint`).
pub fn build_worker_pod(
    algorithm: &VisionAlgorithm,
    name: &str,
    namespace: &str,
    endpoint: &str,
) -> Result<Pod, WorkerPodError> {
    let algorithm_name = algorithm.metadata.name.clone().unwrap_or_default();
    let uid = algorithm
        .metadata
        .uid
        .clone()
        .ok_or_else(|| WorkerPodError::NoUid(algorithm_name.clone()))?;
    if !crate::pod::is_label_value(&algorithm_name) {
        return Err(WorkerPodError::NameNotALabel(algorithm_name));
    }
    let template = &algorithm.spec.template;
    let mut spec = template.spec.clone().unwrap_or_default();
    if !spec
        .containers
        .iter()
        .any(|c| c.name == ALGORITHM_CONTAINER)
    {
        return Err(WorkerPodError::NoAlgorithmContainer(algorithm_name));
    }

    let mut labels: BTreeMap<String, String> = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(LABEL_MANAGED_BY.into(), MANAGER.into());
    labels.insert(LABEL_ALGORITHM.into(), algorithm_name.clone());
    labels.insert(LABEL_ROLE.into(), ROLE_WORKER.into());
    let annotations = template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.clone());

    // A worker serves until it is removed: a crashed process restarts in
    // place, its pod (and name) stay.
    spec.restart_policy = Some("Always".into());
    restrict(&mut spec);
    let (token_dir, token_file) = DEFAULT_TOKEN_FILE
        .rsplit_once('/')
        .expect("the token path has a directory");
    spec.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: TOKEN_VOLUME.into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(TOKEN_AUDIENCE.into()),
                    expiration_seconds: Some(TOKEN_EXPIRATION_SECONDS),
                    path: token_file.into(),
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    });
    let container = spec
        .containers
        .iter_mut()
        .find(|c| c.name == ALGORITHM_CONTAINER)
        .expect("checked above");
    let env = container.env.get_or_insert_with(Vec::new);
    env.retain(|e| ![ENV_ENDPOINT, ENV_WORKER_ID, ENV_TOKEN_FILE].contains(&e.name.as_str()));
    env.extend([
        EnvVar {
            name: ENV_ENDPOINT.into(),
            value: Some(endpoint.into()),
            ..Default::default()
        },
        EnvVar {
            name: ENV_WORKER_ID.into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
        EnvVar {
            name: ENV_TOKEN_FILE.into(),
            value: Some(DEFAULT_TOKEN_FILE.into()),
            ..Default::default()
        },
    ]);
    container
        .volume_mounts
        .get_or_insert_with(Vec::new)
        .push(VolumeMount {
            name: TOKEN_VOLUME.into(),
            mount_path: token_dir.into(),
            read_only: Some(true),
            ..Default::default()
        });
    set_gpus(container, algorithm.spec.gpus_per_job);

    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(labels),
            annotations,
            owner_references: Some(vec![OwnerReference {
                api_version: VisionAlgorithm::api_version(&()).into_owned(),
                kind: VisionAlgorithm::kind(&()).into_owned(),
                name: algorithm_name,
                uid,
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use vision_api::testing::{AlgorithmFixture, mk_algorithm};

    #[test]
    fn the_worker_pod_of_an_algorithm() {
        let mut algorithm = mk_algorithm("detect")
            .with_gpus_per_job(2)
            .with_template_labels(&[("team", "vision")])
            .with_template_annotations(&[("sim.vision.zjlab.io/duration", "1h")]);
        algorithm.metadata.uid = Some("a-uid".into());
        let pod = build_worker_pod(
            &algorithm,
            "detect-worker-0",
            "vision-system",
            "http://vision-operator-workers.vision-system:9090",
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&pod).unwrap(),
            json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": "detect-worker-0",
                    "namespace": "vision-system",
                    "labels": {
                        "app.kubernetes.io/managed-by": "vision-operator",
                        "team": "vision",
                        "vision.zjlab.io/algorithm": "detect",
                        "vision.zjlab.io/role": "worker",
                    },
                    "annotations": {"sim.vision.zjlab.io/duration": "1h"},
                    "ownerReferences": [{
                        "apiVersion": "vision.zjlab.io/v1alpha1",
                        "kind": "VisionAlgorithm",
                        "name": "detect",
                        "uid": "a-uid",
                        "controller": true,
                        "blockOwnerDeletion": true,
                    }],
                },
                "spec": {
                    "restartPolicy": "Always",
                    "automountServiceAccountToken": false,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "volumes": [{
                        "name": "vision-worker-token",
                        "projected": {"sources": [{"serviceAccountToken": {
                            "audience": "vision-operator",
                            "expirationSeconds": 3600,
                            "path": "token",
                        }}]},
                    }],
                    "containers": [{
                        "name": "algorithm",
                        "image": "registry.example/vision/algo:1",
                        "env": [
                            {"name": "VISION_WORKER_ENDPOINT", "value": "http://vision-operator-workers.vision-system:9090"},
                            {"name": "VISION_WORKER_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            {"name": "VISION_WORKER_TOKEN_FILE", "value": "/var/run/secrets/vision.zjlab.io/worker/token"},
                        ],
                        "volumeMounts": [{
                            "name": "vision-worker-token",
                            "mountPath": "/var/run/secrets/vision.zjlab.io/worker",
                            "readOnly": true,
                        }],
                        "resources": {
                            "limits": {"nvidia.com/gpu": "2"},
                            "requests": {"nvidia.com/gpu": "2"},
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }],
                },
            })
        );
    }

    #[test]
    fn a_template_without_the_algorithm_container_or_an_algorithm_without_uid_is_refused() {
        let mut algorithm = mk_algorithm("detect");
        assert_eq!(
            build_worker_pod(&algorithm, "p", "ns", "http://x"),
            Err(WorkerPodError::NoUid("detect".into()))
        );
        algorithm.metadata.uid = Some("a-uid".into());
        algorithm.spec.template.spec.as_mut().unwrap().containers[0].name = "main".into();
        assert_eq!(
            build_worker_pod(&algorithm, "p", "ns", "http://x"),
            Err(WorkerPodError::NoAlgorithmContainer("detect".into()))
        );
    }
}
