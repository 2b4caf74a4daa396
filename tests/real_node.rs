//! End-to-end on the local cluster's real node (hack/node/node.sh: containerd,
//! runc, the kubelet): real containers of images built offline by
//! hack/images, their logs through the API server, their termination
//! messages, and GPU requests counted against the node's fake capacity.
//!
//! The last test installs the Helm chart with the operator image built from
//! the repository's Dockerfile: two replicas on the real kubelet, leader
//! election, probes, the restricted security context with a read-only root
//! filesystem, in-cluster credentials through the ServiceAccount and the
//! `kubernetes` Service (kube-proxy); that operator runs a VisionJob of the
//! real face-detect algorithm (examples/algorithms/face-detect) to Succeeded
//! with its detections in `status.result`.
//!
//! Needs the real node: `hack/test.sh` (whole suite, or `--test real_node`)
//! starts it; by hand, `hack/cluster.sh up --real-node` (or `hack/cluster.sh
//! node up` on a running cluster). Without it every test fails naming that
//! fix; none is skipped.
#![cfg(feature = "e2e")]

mod harness;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;

use harness::Scenario;
use harness::cluster::{self, client, create_namespace, kubectl, unique_name, wait_for};
use harness::helm::{CHART, Release, helm_raw};
use harness::real_node::{GPU, NODE, TAINT, image, real_node};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt;
use vision_api::testing::{JobFixture, mk_queue};
use vision_api::{JobPhase, VisionAlgorithm};

/// A pod of one container `algorithm` on the real node.
fn pod(name: &str, image: &str, args: &[&str], gpus: u32) -> Pod {
    let mut resources =
        json!({"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}});
    if gpus > 0 {
        resources["requests"][GPU] = json!(gpus.to_string());
        resources["limits"][GPU] = json!(gpus.to_string());
    }
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {"type": "real"},
            "tolerations": [{"key": TAINT, "operator": "Exists", "effect": "NoSchedule"}],
            "terminationGracePeriodSeconds": 2,
            "containers": [{
                "name": "algorithm",
                "image": image,
                "imagePullPolicy": "Never",
                "args": args,
                "env": [{"name": "VISION_JOB", "value": "{\"name\":\"j1\",\"attempt\":1}"}],
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "resources": resources,
                "securityContext": {
                    "runAsNonRoot": true,
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]},
                    "seccompProfile": {"type": "RuntimeDefault"}
                }
            }]
        }
    }))
    .unwrap()
}

/// Waits until the pod has ended (Succeeded or Failed) and returns it.
async fn finished(pods: &Api<Pod>, name: &str) -> Pod {
    let done = wait_for(Duration::from_secs(90), || async {
        let phase = pods
            .get(name)
            .await
            .ok()
            .and_then(|p| p.status)
            .and_then(|s| s.phase);
        matches!(phase.as_deref(), Some("Succeeded" | "Failed"))
    })
    .await;
    let pod = pods.get(name).await.unwrap();
    assert!(done, "pod {name} did not finish in 90s: {:?}", pod.status);
    pod
}

fn terminated(pod: &Pod) -> k8s_openapi::api::core::v1::ContainerStateTerminated {
    let status = pod.status.as_ref().unwrap();
    let container = &status.container_statuses.as_ref().unwrap()[0];
    container
        .state
        .as_ref()
        .and_then(|s| s.terminated.clone())
        .unwrap_or_else(|| panic!("container not terminated: {container:?}"))
}

#[tokio::test]
async fn real_node_is_ready_tainted_with_fake_gpus() {
    let client = client().await;
    let node = real_node(&client).await;
    let labels = node.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("type").map(String::as_str), Some("real"));
    let taints = node
        .spec
        .as_ref()
        .unwrap()
        .taints
        .clone()
        .unwrap_or_default();
    let keys: Vec<_> = taints
        .iter()
        .map(|t| (t.key.as_str(), t.effect.as_str()))
        .collect();
    assert_eq!(keys, vec![(TAINT, "NoSchedule")]);
    let status = node.status.unwrap();
    let ready = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status);
    assert_eq!(ready.as_deref(), Some("True"));
    let gpus = status
        .allocatable
        .unwrap_or_default()
        .get(GPU)
        .map(|q| q.0.clone());
    assert_eq!(gpus.as_deref(), Some("2"));
    let runtime = status.node_info.unwrap().container_runtime_version;
    assert!(runtime.starts_with("containerd://2."), "{runtime}");
}

#[tokio::test]
async fn a_real_container_runs_and_reports_its_result_and_logs() {
    let client = client().await;
    real_node(&client).await;
    let probe = image("probe");
    let ns = create_namespace(&client, "real-run").await;
    let _cleanup = cluster::ClusterObjects(vec![format!("namespace/{ns}")]);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let args = [
        "--log",
        "detecting",
        "--job",
        "--result",
        "{\"objects\":[]}",
    ];
    pods.create(&PostParams::default(), &pod("ok", &probe, &args, 1))
        .await
        .unwrap();
    let pod = finished(&pods, "ok").await;
    assert_eq!(
        pod.status.as_ref().unwrap().phase.as_deref(),
        Some("Succeeded")
    );
    assert_eq!(pod.spec.as_ref().unwrap().node_name.as_deref(), Some(NODE));
    let state = terminated(&pod);
    assert_eq!(state.exit_code, 0);
    assert_eq!(state.message.as_deref(), Some("{\"objects\":[]}"));
    let container_id = pod
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .container_id
        .clone()
        .unwrap_or_default();
    assert!(container_id.starts_with("containerd://"), "{container_id}");
    // The API server fetches the log from the kubelet (its client certificate,
    // the node's InternalIP).
    let log = kubectl(["logs", "-n", &ns, "ok"]);
    assert_eq!(
        log,
        "detecting\nVISION_JOB={\"name\":\"j1\",\"attempt\":1}\nprobe: cannot open /etc/vision/job.json\n"
    );
}

#[tokio::test]
async fn a_failing_container_reports_its_log_tail() {
    let client = client().await;
    real_node(&client).await;
    let probe = image("probe");
    let ns = create_namespace(&client, "real-fail").await;
    let _cleanup = cluster::ClusterObjects(vec![format!("namespace/{ns}")]);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let args = ["--log", "model file missing: /models/x.onnx", "--exit", "3"];
    pods.create(&PostParams::default(), &pod("fails", &probe, &args, 0))
        .await
        .unwrap();
    let pod = finished(&pods, "fails").await;
    assert_eq!(
        pod.status.as_ref().unwrap().phase.as_deref(),
        Some("Failed")
    );
    let state = terminated(&pod);
    assert_eq!(state.exit_code, 3);
    assert_eq!(state.reason.as_deref(), Some("Error"));
    // No termination message was written: FallbackToLogsOnError gives the log.
    assert_eq!(
        state.message.as_deref(),
        Some("model file missing: /models/x.onnx\n")
    );
}

#[tokio::test]
async fn gpu_requests_count_against_the_real_nodes_capacity() {
    let client = client().await;
    real_node(&client).await;
    let probe = image("probe");
    let ns = create_namespace(&client, "real-gpu").await;
    let _cleanup = cluster::ClusterObjects(vec![format!("namespace/{ns}")]);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    // More GPUs than the node has: never scheduled, with the scheduler's reason.
    pods.create(&PostParams::default(), &pod("too-big", &probe, &[], 3))
        .await
        .unwrap();
    let unschedulable = wait_for(Duration::from_secs(30), || async {
        let pod = pods.get("too-big").await.unwrap();
        pod.status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.message
                        .as_deref()
                        .is_some_and(|m| m.contains("Insufficient nvidia.com/gpu"))
            })
    })
    .await;
    assert!(
        unschedulable,
        "{:?}",
        pods.get("too-big").await.unwrap().status
    );
    pods.delete("too-big", &DeleteParams::default())
        .await
        .unwrap();
}

/// The face-detect VisionAlgorithm of examples/, with the locally built image
/// and the toleration and node selector of the real node.
fn face_detect(image: &str) -> VisionAlgorithm {
    let path = cluster::repo_root().join("examples/algorithms/face-detect/algorithm.yaml");
    let mut algorithm: VisionAlgorithm =
        serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let pod = algorithm.spec.template.spec.as_mut().unwrap();
    pod.containers[0].image = Some(image.to_string());
    pod.containers[0].image_pull_policy = Some("Never".to_string());
    pod.node_selector = Some([("type".to_string(), "real".to_string())].into());
    pod.tolerations = Some(vec![
        serde_json::from_value(json!(
            {"key": TAINT, "operator": "Exists", "effect": "NoSchedule"}
        ))
        .unwrap(),
    ]);
    algorithm
}

/// What the release namespace holds, for a failure message.
fn diagnose(ns: &str) -> String {
    let out = cluster::kubectl_output(["get", "deployments,pods,events", "-n", ns, "-o", "wide"]);
    // The replicas' own words (also of a container that restarted): a
    // failure on a loaded CI machine is only understood from these.
    let logs = cluster::kubectl_output([
        "logs",
        "-n",
        ns,
        "-l",
        "app.kubernetes.io/name=vision-operator",
        "--all-containers",
        "--prefix",
        "--tail",
        "40",
    ]);
    let previous = cluster::kubectl_output([
        "logs",
        "-n",
        ns,
        "-l",
        "app.kubernetes.io/name=vision-operator",
        "--previous",
        "--prefix",
        "--tail",
        "20",
    ]);
    format!(
        "{}{}\n--- logs ---\n{}{}\n--- previous containers ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&logs.stdout),
        String::from_utf8_lossy(&logs.stderr),
        String::from_utf8_lossy(&previous.stdout),
    )
}

#[tokio::test]
async fn helm_installs_the_operator_image_which_runs_the_real_algorithm() {
    let client = client().await;
    real_node(&client).await;
    let operator_image = image("operator");
    let (repository, tag) = operator_image.rsplit_once(':').unwrap();
    let algorithm_image = image("face-detect");

    // The scenario's queue and algorithm; no operator of its own: the one the
    // chart runs in the cluster does the work.
    let s = Scenario::new("real-helm")
        .queue(mk_queue("pool", 2))
        .algorithm(face_detect(&algorithm_image))
        .start()
        .await;

    // The release namespace enforces the "restricted" Pod Security Standard.
    let ns = unique_name("real-helm-system");
    kubectl(["create", "namespace", &ns]);
    let _release = Release {
        name: "vision".to_string(),
        namespace: ns.clone(),
    };
    kubectl([
        "label",
        "namespace",
        &ns,
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    let lease = unique_name("vision-operator");
    let values = json!({
        "replicaCount": 2,
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "leaderElection": {"leaseName": lease},
        "defaultQueue": {"create": false},
        "logging": {"format": "text"},
        "resources": {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"cpu": "1", "memory": "256Mi"}
        },
        "nodeSelector": {"type": "real"},
        "tolerations": [{"key": TAINT, "operator": "Exists", "effect": "NoSchedule"}]
    });
    let values_file = std::env::temp_dir().join(format!("{ns}-values.json"));
    std::fs::write(&values_file, values.to_string()).unwrap();
    let install = helm_raw(&[
        "install",
        "vision",
        CHART,
        "-n",
        &ns,
        "-f",
        values_file.to_str().unwrap(),
        "--wait",
        "--timeout",
        "180s",
    ]);
    assert!(
        install.status.success(),
        "helm install failed: {}\n{}",
        String::from_utf8_lossy(&install.stderr),
        diagnose(&ns)
    );

    // Two ready replicas, both real containers of the image on the real node,
    // as restricted as the chart says.
    // `helm --wait` saw both Ready; wait again rather than read once: on a
    // loaded machine a replica may restart in between (a leader that misses
    // its renew deadline exits by design, and its container comes back).
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let both_ready = wait_for(Duration::from_secs(120), || async {
        deployments
            .get("vision-vision-operator")
            .await
            .ok()
            .and_then(|d| d.status)
            .and_then(|s| s.ready_replicas)
            == Some(2)
    })
    .await;
    assert!(both_ready, "not 2 ready replicas: {}", diagnose(&ns));
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let list = pods.list(&Default::default()).await.unwrap().items;
    assert_eq!(list.len(), 2, "{}", diagnose(&ns));
    let names: Vec<String> = list.iter().map(|p| p.name_any()).collect();
    for pod in &list {
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some(NODE));
        let container = &spec.containers[0];
        assert_eq!(container.image.as_deref(), Some(operator_image.as_str()));
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.run_as_non_root, Some(true));
        let status = &pod
            .status
            .as_ref()
            .unwrap()
            .container_statuses
            .as_ref()
            .unwrap()[0];
        let id = status.container_id.clone().unwrap_or_default();
        assert!(id.starts_with("containerd://"), "{id}");
    }
    // One of them leads, through the chart's Lease (the in-cluster client
    // reached the API server with the ServiceAccount's token).
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let led = wait_for(Duration::from_secs(60), || async {
        let holder = leases
            .get_opt(&lease)
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity);
        holder.is_some_and(|h| names.contains(&h))
    })
    .await;
    assert!(led, "no replica holds the Lease {lease}: {}", diagnose(&ns));

    // The real algorithm, run by that operator on the real node.
    let job = s
        .job("astronaut", "face-detect")
        .with_input(json!({"image": "astronaut.jpg"}))
        .with_params(json!({"minNeighbors": 5}));
    s.submit(job).await;
    let jobs = s.jobs();
    let succeeded = wait_for(Duration::from_secs(240), || async {
        jobs.get("astronaut")
            .await
            .is_ok_and(|j| j.phase() == Some(JobPhase::Succeeded))
    })
    .await;
    let done = s.get("astronaut").await;
    assert!(
        succeeded,
        "job astronaut not Succeeded: {:#?}\n{}",
        done.status,
        diagnose(&ns)
    );
    let status = done.status.unwrap();
    assert_eq!(
        status.result,
        Some(json!({
            "image": "astronaut.jpg",
            "width": 512,
            "height": 512,
            "model": "opencv-4.12.0/haarcascade_frontalface_default.xml",
            "detections": [{"label": "face", "box": [176, 65, 95, 95], "score": 7.448}]
        }))
    );
    let pod = s
        .pods()
        .get(status.pod_name.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(pod.spec.unwrap().node_name.as_deref(), Some(NODE));
    let _ = std::fs::remove_file(values_file);
}

/// Large outputs: a job with `spec.output` writes into its attempt's
/// directory on a PersistentVolumeClaim, and its result lists the files.
mod output_volume {
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use k8s_openapi::api::core::v1::{
        HostPathVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
        ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec,
        PersistentVolumeSpec, VolumeNodeAffinity, VolumeResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::Client;
    use kube::api::{Patch, PatchParams};
    use vision_api::{JobOutput, OutputClaim, OutputLocation};

    use super::*;

    /// The group the PersistentVolume's root belongs to. The kubelet adds a
    /// PV's `pv.beta.kubernetes.io/gid` to the supplemental groups of the
    /// pods that mount it, so the algorithm (UID/GID 65532) may write to a
    /// root owned by root:GID with mode 2775, and to the attempt directories
    /// the kubelet creates there with the root's mode (setgid: same group).
    const GID: u32 = 4242;

    /// A hostPath PersistentVolume on the real node (this host: the test
    /// reads what the pod wrote from the same directory) and a claim bound to
    /// it. The local cluster runs no PersistentVolume controller, so the
    /// binding is what that controller would write: the claim's volumeName
    /// and bind-completed annotation, the volume's claimRef to the claim's
    /// UID, and both statuses Bound. Dropping it removes both (and their
    /// protection finalizers, which no controller here removes) and the
    /// directory.
    struct HostClaim {
        namespace: String,
        claim: String,
        volume: String,
        dir: PathBuf,
    }

    impl HostClaim {
        async fn create(client: &Client, namespace: &str, claim: &str) -> HostClaim {
            let volume = unique_name("vision-output");
            let dir = Path::new("/var/lib/vision-test").join(&volume);
            std::fs::create_dir_all(&dir).unwrap();
            std::os::unix::fs::chown(&dir, Some(0), Some(GID)).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o2775)).unwrap();
            let host_claim = HostClaim {
                namespace: namespace.to_string(),
                claim: claim.to_string(),
                volume: volume.clone(),
                dir: dir.clone(),
            };
            let size: std::collections::BTreeMap<String, Quantity> =
                [("storage".to_string(), Quantity("1Gi".into()))].into();
            let access = vec!["ReadWriteOnce".to_string()];

            let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
            let created = claims
                .create(
                    &PostParams::default(),
                    &PersistentVolumeClaim {
                        metadata: ObjectMeta {
                            name: Some(claim.to_string()),
                            annotations: Some(
                                [(
                                    "pv.kubernetes.io/bind-completed".to_string(),
                                    "yes".to_string(),
                                )]
                                .into(),
                            ),
                            ..Default::default()
                        },
                        spec: Some(PersistentVolumeClaimSpec {
                            access_modes: Some(access.clone()),
                            storage_class_name: Some(String::new()),
                            volume_name: Some(volume.clone()),
                            resources: Some(VolumeResourceRequirements {
                                requests: Some(size.clone()),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        status: None,
                    },
                )
                .await
                .unwrap();

            let volumes: Api<PersistentVolume> = Api::all(client.clone());
            volumes
                .create(
                    &PostParams::default(),
                    &PersistentVolume {
                        metadata: ObjectMeta {
                            name: Some(volume.clone()),
                            annotations: Some(
                                [("pv.beta.kubernetes.io/gid".to_string(), GID.to_string())].into(),
                            ),
                            ..Default::default()
                        },
                        spec: Some(PersistentVolumeSpec {
                            access_modes: Some(access.clone()),
                            capacity: Some(size.clone()),
                            storage_class_name: Some(String::new()),
                            persistent_volume_reclaim_policy: Some("Retain".into()),
                            host_path: Some(HostPathVolumeSource {
                                path: dir.to_string_lossy().into_owned(),
                                type_: Some("Directory".into()),
                            }),
                            claim_ref: Some(ObjectReference {
                                api_version: Some("v1".into()),
                                kind: Some("PersistentVolumeClaim".into()),
                                namespace: Some(namespace.to_string()),
                                name: Some(claim.to_string()),
                                uid: created.metadata.uid.clone(),
                                ..Default::default()
                            }),
                            node_affinity: Some(VolumeNodeAffinity {
                                required: Some(NodeSelector {
                                    node_selector_terms: vec![NodeSelectorTerm {
                                        match_expressions: Some(vec![NodeSelectorRequirement {
                                            key: "kubernetes.io/hostname".into(),
                                            operator: "In".into(),
                                            values: Some(vec![NODE.to_string()]),
                                        }]),
                                        ..Default::default()
                                    }],
                                }),
                            }),
                            ..Default::default()
                        }),
                        status: None,
                    },
                )
                .await
                .unwrap();

            let status = PatchParams::default();
            volumes
                .patch_status(
                    &volume,
                    &status,
                    &Patch::Merge(json!({"status": {"phase": "Bound"}})),
                )
                .await
                .unwrap();
            claims
                .patch_status(
                    claim,
                    &status,
                    &Patch::Merge(json!({"status": {
                        "phase": "Bound", "accessModes": access, "capacity": size
                    }})),
                )
                .await
                .unwrap();
            host_claim
        }
    }

    impl Drop for HostClaim {
        fn drop(&mut self) {
            let unprotect = r#"{"metadata":{"finalizers":null}}"#;
            let claim = format!("persistentvolumeclaim/{}", self.claim);
            let volume = format!("persistentvolume/{}", self.volume);
            for (object, namespace) in [(&claim, Some(&self.namespace)), (&volume, None)] {
                let mut args = vec!["patch", object.as_str(), "--type=merge", "-p", unprotect];
                if let Some(ns) = namespace {
                    args.extend(["-n", ns.as_str()]);
                }
                let _ = cluster::kubectl_output(args);
                let mut args = vec![
                    "delete",
                    object.as_str(),
                    "--wait=false",
                    "--ignore-not-found",
                ];
                if let Some(ns) = namespace {
                    args.extend(["-n", ns.as_str()]);
                }
                let _ = cluster::kubectl_output(args);
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn sha256_hex(path: &Path) -> String {
        let out = Command::new("sha256sum").arg(path).output().unwrap();
        assert!(out.status.success(), "sha256sum {}", path.display());
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    }

    #[tokio::test]
    async fn a_job_writes_its_large_output_to_its_claim_and_lists_it_in_the_result() {
        let client = client().await;
        real_node(&client).await;
        let algorithm_image = image("face-detect");
        let s = Scenario::new("real-output")
            .queue(mk_queue("pool", 2))
            .algorithm(face_detect(&algorithm_image))
            .operator()
            .start()
            .await;
        // Declared after the scenario: dropped first, before its namespace goes.
        let storage = HostClaim::create(&s.client, &s.namespace, "results").await;

        // A path out of the claim's root is refused at create time (CEL).
        let mut escaping = s.job("escaping", "face-detect");
        escaping.spec.output = Some(JobOutput {
            persistent_volume_claim: OutputClaim {
                claim_name: "results".into(),
            },
            path: Some("../other-team".into()),
        });
        match s.jobs().create(&PostParams::default(), &escaping).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{status:?}");
                assert!(
                    status
                        .message
                        .contains("spec.output.path must not contain a '..' element"),
                    "{status:?}"
                );
            }
            other => panic!("a job writing outside its claim was not refused: {other:?}"),
        }

        let mut job = s
            .job("astronaut", "face-detect")
            .with_input(json!({"image": "astronaut.jpg"}))
            .with_params(json!({"minNeighbors": 5}));
        job.spec.output = Some(JobOutput {
            persistent_volume_claim: OutputClaim {
                claim_name: "results".into(),
            },
            path: None,
        });
        s.submit(job).await;
        let done = s
            .wait_phase("astronaut", JobPhase::Succeeded, Duration::from_secs(180))
            .await;
        let status = done.status.unwrap();

        // Where the outputs went: the claim and the attempt's directory.
        assert_eq!(
            status.output,
            Some(OutputLocation {
                claim_name: "results".into(),
                path: "astronaut/1".into(),
            })
        );
        // The directory holds exactly the listed file, whole.
        let attempt_dir = storage.dir.join("astronaut/1");
        let file = attempt_dir.join("astronaut-faces.jpg");
        let mut names: Vec<String> = std::fs::read_dir(&attempt_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["astronaut-faces.jpg"]);
        let bytes = std::fs::read(&file).unwrap();
        assert_eq!(&bytes[..3], [0xFF, 0xD8, 0xFF], "a JPEG starts with SOI");
        assert_eq!(
            &bytes[bytes.len() - 2..],
            [0xFF, 0xD9],
            "a JPEG ends with EOI"
        );
        // The result is the one without an output, plus the list of outputs
        // with the file's size and digest.
        assert_eq!(
            status.result,
            Some(json!({
                "image": "astronaut.jpg",
                "width": 512,
                "height": 512,
                "model": "opencv-4.12.0/haarcascade_frontalface_default.xml",
                "detections": [{"label": "face", "box": [176, 65, 95, 95], "score": 7.448}],
                "outputs": [{
                    "path": "astronaut-faces.jpg",
                    "size": bytes.len(),
                    "sha256": sha256_hex(&file),
                    "mediaType": "image/jpeg",
                }]
            }))
        );
        // The pod mounted only its attempt's directory of the claim.
        let pod = s
            .pods()
            .get(status.pod_name.as_deref().unwrap())
            .await
            .unwrap();
        let spec = pod.spec.unwrap();
        assert_eq!(spec.node_name.as_deref(), Some(NODE));
        let mount = spec.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path == vision_api::contract::OUTPUT_DIR)
            .cloned();
        assert_eq!(
            mount.and_then(|m| m.sub_path).as_deref(),
            Some("astronaut/1")
        );
    }
}
