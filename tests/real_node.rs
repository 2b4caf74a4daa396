//! End-to-end on the local cluster's real node (hack/node/node.sh: containerd,
//! runc, the kubelet): real containers of images built offline by
//! hack/images, their logs through the API server (and through `visionctl
//! logs [-f]`), their termination messages, and GPU requests counted
//! against the node's fake capacity.
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

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::json;

use harness::Scenario;
use harness::cluster::{self, client, create_namespace, kubectl, unique_name, wait_for};
use harness::helm::{CHART, Release, helm_raw};
use harness::real_node::{GPU, NODE, TAINT, image, on_real_node, real_node};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use vision_api::testing::{AlgorithmFixture, JobFixture, mk_algorithm, mk_queue};
use vision_api::{JobPhase, VisionAlgorithm};
use vision_operator::workers;
use vision_operator::workers::worker_pod::build_worker_pod;

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

/// An algorithm `name` running the probe image with `args` on the real
/// node: no GPU, a small memory limit, the image imported (never pulled).
fn probe_algorithm(name: &str, probe: &str, args: &[&str]) -> VisionAlgorithm {
    let mut algorithm = on_real_node(mk_algorithm(name).with_gpus_per_job(0));
    let pod = algorithm.spec.template.spec.as_mut().unwrap();
    pod.termination_grace_period_seconds = Some(30);
    let container = &mut pod.containers[0];
    container.image = Some(probe.to_string());
    container.image_pull_policy = Some("Never".into());
    container.args = Some(args.iter().map(|a| a.to_string()).collect());
    container.resources = Some(
        serde_json::from_value(json!(
            {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}}
        ))
        .unwrap(),
    );
    algorithm
}

/// `visionctl --kubeconfig <the local cluster's> -n <ns>` with `args`.
fn visionctl(namespace: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(harness::workspace_binary("visionctl"));
    cmd.arg("--kubeconfig")
        .arg(cluster::kubeconfig_path())
        .args(["-n", namespace])
        .args(args);
    cmd
}

/// Exit code, stdout and stderr of a finished `visionctl` run.
fn ran(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("running visionctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn visionctl_logs_prints_a_jobs_log_and_follows_it_until_the_pod_ends() {
    let client = client().await;
    real_node(&client).await;
    let probe = image("probe");
    let s = Scenario::new("real-logs")
        .queue(mk_queue("pool", 2))
        .algorithm(probe_algorithm(
            "done",
            &probe,
            &["--log", "loading model", "--result", r#"{"objects":1}"#],
        ))
        // Logs a line, runs until stopped, and logs while it stops.
        .algorithm(probe_algorithm(
            "slow",
            &probe,
            &["--log", "started", "--sleep", "600", "--term-delay", "1"],
        ))
        .operator()
        .start()
        .await;
    let ns = s.namespace.clone();
    s.submit(s.job("done", "done")).await;
    s.submit(s.job("slow", "slow")).await;

    // A finished job: the log of its last attempt's pod, by default or by
    // number; `-f` of a pod that has ended prints it and returns.
    s.wait_phase("done", JobPhase::Succeeded, Duration::from_secs(90))
        .await;
    for args in [
        &["logs", "done"][..],
        &["logs", "done", "--attempt", "1"],
        &["logs", "done", "-f"],
    ] {
        assert_eq!(
            ran(&mut visionctl(&ns, args)),
            (0, "loading model\n".to_string(), String::new()),
            "visionctl {args:?}"
        );
    }
    // An attempt that never ran has no pod: exit 3.
    assert_eq!(
        ran(&mut visionctl(&ns, &["logs", "done", "--attempt", "2"])),
        (
            3,
            String::new(),
            format!("visionctl: Pod {ns}/done-2 not found\n")
        )
    );

    // `-f` of a running pod streams its log: the first line arrives while
    // the container runs; what it logs while it stops (its job suspended,
    // its pod deleted) follows, and the command ends with the pod, exit 0.
    s.wait_phase("slow", JobPhase::Running, Duration::from_secs(90))
        .await;
    let mut follow = visionctl(&ns, &["logs", "slow", "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running visionctl logs -f");
    let stdout = std::io::BufReader::new(follow.stdout.take().unwrap());
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines() {
            if lines.send(line.expect("visionctl's stdout")).is_err() {
                return;
            }
        }
    });
    let patience = Duration::from_secs(60);
    let first = received.recv_timeout(patience);
    if first.as_deref() != Ok("started") {
        let _ = follow.kill();
        panic!("visionctl logs -f: first line {first:?}, not \"started\"");
    }
    assert_eq!(
        ran(&mut visionctl(&ns, &["suspend", "slow"])),
        (
            0,
            "visionjob.vision.zjlab.io/slow suspended\n".to_string(),
            String::new()
        )
    );
    let mut rest = Vec::new();
    loop {
        match received.recv_timeout(patience) {
            Ok(line) => rest.push(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = follow.kill();
                panic!("visionctl logs -f did not end with the pod; it printed {rest:?}");
            }
        }
    }
    assert_eq!(
        rest,
        ["probe: SIGTERM", "probe: stopping for 1s", "probe: stopped"]
    );
    let out = follow.wait_with_output().expect("visionctl logs -f");
    assert_eq!(
        (out.status.code(), String::from_utf8_lossy(&out.stderr)),
        (Some(0), "".into()),
        "visionctl logs -f"
    );
    s.wait_phase("slow", JobPhase::Suspended, Duration::from_secs(90))
        .await;
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

/// The endpoint the operator gives its worker pods (the chart's
/// `workers.endpoint`). The local cluster runs no DNS, so not the workers
/// Service's name but its ClusterIP, from the Service's environment
/// variable in the worker pod (same namespace): the kubelet expands
/// `$(VAR)` in a container's env, and `$$` keeps the operator's own pod
/// from expanding it first.
const WORKERS_ENDPOINT: &str = "http://$$(VISION_VISION_OPERATOR_WORKERS_SERVICE_HOST):9090";

/// The chart installed in a fresh namespace `<prefix>-<suffix>` with the
/// operator image built from the repository's Dockerfile: two replicas on
/// the real kubelet, the "restricted" Pod Security Standard, worker mode
/// on (`workers.enabled`). Returns once both replicas are ready, as
/// restricted as the chart says, one of them leads, and the workers'
/// Service routes to the leader alone. Dropping it uninstalls the release
/// and deletes its namespace.
struct Installed {
    /// The release namespace (also the workers' namespace).
    namespace: String,
    _release: Release,
}

/// `operator_image`: `image("operator")`, built before the test takes its
/// turn on the cluster.
async fn helm_install_operator(
    client: &kube::Client,
    prefix: &str,
    operator_image: &str,
) -> Installed {
    let (repository, tag) = operator_image.rsplit_once(':').unwrap();

    // The release namespace enforces the "restricted" Pod Security Standard.
    let ns = unique_name(prefix);
    kubectl(["create", "namespace", &ns]);
    let release = Release {
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
        "workers": {
            "enabled": true,
            "port": 9090,
            "namespace": "",
            "endpoint": WORKERS_ENDPOINT
        },
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
    let _ = std::fs::remove_file(values_file);

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
        assert_eq!(container.image.as_deref(), Some(operator_image));
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

    // Worker mode's Service reaches the leader only: its pod alone carries
    // the label the Service selects, and it alone backs the Service.
    let routed = wait_for(Duration::from_secs(60), || async {
        let Some(holder) = leases
            .get_opt(&lease)
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
        else {
            return false;
        };
        let labelled: Vec<String> = pods
            .list(&ListParams::default().labels(&format!("{}=true", workers::LABEL_SERVES_WORKERS)))
            .await
            .map(|l| l.items.iter().map(ResourceExt::name_any).collect())
            .unwrap_or_default();
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
        let backends: Vec<String> = slices
            .list(
                &ListParams::default()
                    .labels("kubernetes.io/service-name=vision-vision-operator-workers"),
            )
            .await
            .map(|l| {
                l.items
                    .iter()
                    .flat_map(|s| s.endpoints.iter())
                    .filter_map(|e| e.target_ref.as_ref().and_then(|r| r.name.clone()))
                    .collect()
            })
            .unwrap_or_default();
        labelled == [holder.clone()] && backends == [holder]
    })
    .await;
    assert!(
        routed,
        "the workers' Service does not route to the leader alone: {}",
        diagnose(&ns)
    );

    Installed {
        namespace: ns,
        _release: release,
    }
}

#[tokio::test]
async fn helm_installs_the_operator_image_which_runs_the_real_algorithm() {
    let client = client().await;
    real_node(&client).await;
    let operator_image = image("operator");
    let algorithm_image = image("face-detect");

    // The scenario's queue and algorithm; no operator of its own: the one the
    // chart runs in the cluster does the work.
    let s = Scenario::new("real-helm")
        .queue(mk_queue("pool", 2))
        .algorithm(face_detect(&algorithm_image))
        .start()
        .await;
    let installed = helm_install_operator(&client, "real-helm-system", &operator_image).await;
    let ns = installed.namespace.clone();

    // The real algorithm, run by that operator on the real node.
    let status = detect_the_astronaut(&s, "face-detect", || diagnose(&ns)).await;
    let pod = s
        .pods()
        .get(status.pod_name.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(pod.spec.unwrap().node_name.as_deref(), Some(NODE));
}

/// Submits the astronaut photo to `algorithm` (face-detect, in either
/// mode), waits for Succeeded and checks the exact detections; its status.
/// `diagnose` says what the cluster shows when it fails.
async fn detect_the_astronaut(
    s: &Scenario,
    algorithm: &str,
    diagnose: impl Fn() -> String,
) -> vision_api::VisionJobStatus {
    let job = s
        .job("astronaut", algorithm)
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
        "job astronaut of {algorithm} not Succeeded: {:#?}\n{}",
        done.status,
        diagnose()
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
    status
}

/// The worker-mode face-detect of examples/ (face-detect-worker.yaml: the
/// same image, worker.py as its command), with the locally built image and
/// the toleration and node selector of the real node.
fn face_detect_worker(image: &str) -> VisionAlgorithm {
    let path = cluster::repo_root().join("examples/algorithms/face-detect-worker.yaml");
    let mut algorithm: VisionAlgorithm =
        serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let container = &mut algorithm.spec.template.spec.as_mut().unwrap().containers[0];
    container.image = Some(image.to_string());
    container.image_pull_policy = Some("Never".to_string());
    on_real_node(algorithm)
}

/// A pod's log, for a failure message.
fn pod_log(namespace: &str, pod: &str) -> String {
    let out = cluster::kubectl_output(["logs", "-n", namespace, pod, "--tail", "40"]);
    format!(
        "--- log of {pod} ---\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Worker mode for real: a warm worker container of the real face-detect
/// (examples/algorithms/face-detect/worker.py, the Python SDK) in the
/// worker pod the operator keeps on the real node authenticates to the Helm-installed operator with its pod's
/// projected ServiceAccount token (the operator's TokenReview) and serves a
/// job end to end, with no pod per job; a pod without the algorithm's label
/// presenting its own valid token is refused.
#[tokio::test]
async fn a_worker_container_on_the_real_node_serves_a_job_of_the_installed_operator() {
    let client = client().await;
    real_node(&client).await;
    let operator_image = image("operator");
    let algorithm_image = image("face-detect");
    let mut s = Scenario::new("real-worker")
        .queue(mk_queue("pool", 2))
        .start()
        .await;
    let installed = helm_install_operator(&client, "real-worker-system", &operator_image).await;
    let ns = installed.namespace.clone();
    s.apply_algorithm(face_detect_worker(&algorithm_image))
        .await;
    let name = s.algorithm("face-detect-worker");
    let algorithm = s.algorithms().get(&name).await.unwrap();

    // The operator keeps the algorithm's one worker pod (workers.min and
    // max are 1), built from its template, in the release namespace (the
    // workers' namespace) under its "restricted" Pod Security Standard: the
    // label vision.zjlab.io/algorithm, the projected token for the audience
    // vision-operator, the SDK's env. Its worker dials the workers Service,
    // which routes to the leader.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let worker = workers::scale::pod_name(&name, 0);
    let created = wait_for(Duration::from_secs(60), || async {
        pods.get_opt(&worker).await.ok().flatten().is_some()
    })
    .await;
    assert!(
        created,
        "the operator created no worker pod {worker}: {}",
        diagnose(&ns)
    );
    // The operator's endpoint, with the ClusterIP the kubelet put in.
    let endpoint = WORKERS_ENDPOINT.replace("$$", "$");

    // An intruder: the same container and its own valid projected token,
    // but its pod lacks the algorithm's label. It asks to serve the
    // algorithm all the same; the operator refuses it and worker.py exits.
    let intruder = format!("{name}-unlabelled");
    let mut pod = build_worker_pod(&algorithm, &intruder, &ns, &endpoint).unwrap();
    pod.metadata.labels = None;
    pod.metadata.owner_references = None;
    let spec = pod.spec.as_mut().unwrap();
    spec.restart_policy = Some("Never".into());
    for env in spec.containers[0].env.iter_mut().flatten() {
        if env.name == "VISION_WORKER_ALGORITHM" {
            env.value = Some(name.clone());
            env.value_from = None;
        }
    }
    pods.create(&PostParams::default(), &pod).await.unwrap();

    // The same result as the pod-mode algorithm's, from the worker pod.
    let status = detect_the_astronaut(&s, "face-detect-worker", || {
        format!(
            "{}\n{}\n{}",
            diagnose(&ns),
            pod_log(&ns, &worker),
            pod_log(&ns, &intruder)
        )
    })
    .await;
    assert_eq!(status.worker.as_deref(), Some(worker.as_str()));
    let served = pods.get(&worker).await.unwrap();
    assert_eq!(served.spec.unwrap().node_name.as_deref(), Some(NODE));
    let labels = served.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels.get(vision_api::contract::LABEL_ALGORITHM),
        Some(&name)
    );
    // No pod per job: the job's namespace holds none.
    let job_pods: Vec<String> = s
        .pods()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    assert_eq!(job_pods, Vec::<String>::new());

    // The intruder was refused by the TokenReview check of its pod's label.
    let refused = finished(&pods, &intruder).await;
    assert_eq!(
        refused.status.as_ref().unwrap().phase.as_deref(),
        Some("Failed"),
        "{}",
        pod_log(&ns, &intruder)
    );
    let state = terminated(&refused);
    assert_eq!(state.exit_code, 4);
    assert_eq!(
        state.message.as_deref(),
        Some(
            format!(
                "face-detect worker: the operator refused this worker: PERMISSION_DENIED: \
                 pod {intruder} may not serve algorithm {name}: its label {} is unset",
                vision_api::contract::LABEL_ALGORITHM
            )
            .as_str()
        )
    );
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
