//! Smoke test of the local cluster (hack/cluster.sh): the real scheduler binds
//! GPU pods to the KWOK GPU nodes, the KWOK stages drive them through Running
//! to Succeeded/Failed as the pod annotations script, oversized pods stay
//! Pending, and the garbage collector deletes pods of a deleted owner.
//!
//! Run with `hack/test.sh` (or `cargo test --features e2e --test cluster_smoke`
//! against a cluster started by `hack/cluster.sh up`).
#![cfg(feature = "e2e")]

mod harness;

use std::collections::BTreeMap;
use std::time::Duration;

use harness::{Scenario, wait_for};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Node, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Resource};

const GPU: &str = "nvidia.com/gpu";

/// A bare pod (no operator involved) asking for `gpus` GPUs, scripted by
/// its sim annotations.
fn gpu_pod(name: &str, gpus: u32, annotations: &[(&str, &str)], labels: &[(&str, &str)]) -> Pod {
    let map = |entries: &[(&str, &str)]| -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let quantity = |q: &str| Quantity(q.to_string());
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            annotations: Some(map(annotations)),
            labels: Some(map(labels)),
            ..Default::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            containers: vec![Container {
                name: "algorithm".into(),
                image: Some("example.invalid/vision/algorithm:smoke".into()),
                resources: Some(ResourceRequirements {
                    requests: Some(BTreeMap::from([
                        ("cpu".to_string(), quantity("100m")),
                        ("memory".to_string(), quantity("128Mi")),
                    ])),
                    limits: Some(BTreeMap::from([(
                        GPU.to_string(),
                        quantity(&gpus.to_string()),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

async fn get(pods: &Api<Pod>, name: &str) -> Option<Pod> {
    pods.get_opt(name)
        .await
        .unwrap_or_else(|e| panic!("get pod {name}: {e}"))
}

/// Waits until the pod reaches `want` phase, recording the phases seen.
async fn wait_phase(
    pods: &Api<Pod>,
    name: &str,
    want: &str,
    timeout: Duration,
    seen: &mut Vec<String>,
) -> Pod {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let pod = get(pods, name)
            .await
            .unwrap_or_else(|| panic!("pod {name} not found"));
        let ph = phase(&pod).to_string();
        if seen.last() != Some(&ph) {
            seen.push(ph.clone());
        }
        if ph == want {
            return pod;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "pod {name} not {want} after {timeout:?}; phases seen {seen:?}; status: {:#?}",
                pod.status
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn terminated(pod: &Pod) -> k8s_openapi::api::core::v1::ContainerStateTerminated {
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    assert_eq!(statuses.len(), 1, "container statuses: {statuses:?}");
    statuses[0]
        .state
        .as_ref()
        .and_then(|s| s.terminated.clone())
        .unwrap_or_else(|| panic!("container not terminated: {:?}", statuses[0]))
}

async fn assert_on_gpu_node(pod: &Pod) {
    let node_name = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .expect("pod has no nodeName");
    let nodes: Api<Node> = Api::all(harness::cluster::client().await);
    let node = nodes.get(&node_name).await.unwrap();
    let labels = node.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("type").map(String::as_str),
        Some("kwok"),
        "node {node_name} labels {labels:?}"
    );
    let gpus = node
        .status
        .and_then(|s| s.allocatable)
        .and_then(|a| a.get(GPU).cloned());
    assert!(gpus.is_some(), "node {node_name} has no allocatable {GPU}");
}

#[tokio::test]
async fn fake_gpu_nodes_are_ready_untainted_with_gpu_capacity() {
    let client = harness::cluster::client().await;
    let nodes: Api<Node> = Api::all(client);
    let list = nodes
        .list(&ListParams::default().labels("type=kwok"))
        .await
        .unwrap();
    assert!(
        !list.items.is_empty(),
        "no fake nodes (label type=kwok): run hack/cluster.sh up"
    );
    for node in list.items {
        let name = node.metadata.name.clone().unwrap();
        let labels = node.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get("nvidia.com/gpu.present").map(String::as_str),
            Some("true"),
            "{name}"
        );
        let spec = node.spec.clone().unwrap_or_default();
        assert!(
            spec.taints.unwrap_or_default().is_empty(),
            "{name} is tainted"
        );
        let status = node.status.clone().unwrap();
        let gpus = status
            .allocatable
            .as_ref()
            .and_then(|a| a.get(GPU))
            .map(|q| q.0.clone());
        assert!(
            gpus.as_deref()
                .is_some_and(|g| g.parse::<u32>().unwrap_or(0) > 0),
            "{name}: {GPU} = {gpus:?}"
        );
        let ready = status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        assert!(ready, "{name} is not Ready");
    }
}

#[tokio::test]
async fn gpu_pod_is_scheduled_runs_and_succeeds_with_message() {
    let s = Scenario::new("smoke-succeed").start().await;
    let pods = s.pods();
    let result = r#"{"detections":[{"label":"cat","score":0.93}]}"#;
    let pod = gpu_pod(
        "ok",
        1,
        &[
            ("sim.vision.zjlab.io/duration", "2s"),
            ("sim.vision.zjlab.io/message", result),
        ],
        &[],
    );
    pods.create(&PostParams::default(), &pod).await.unwrap();

    let mut seen = Vec::new();
    let running = wait_phase(&pods, "ok", "Running", Duration::from_secs(30), &mut seen).await;
    assert_on_gpu_node(&running).await;
    let status = running.status.clone().unwrap();
    assert!(status.start_time.is_some(), "Running pod has no startTime");
    let cs = &status.container_statuses.clone().unwrap()[0];
    assert!(
        cs.ready && cs.state.as_ref().unwrap().running.is_some(),
        "{cs:?}"
    );
    let ready = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    assert!(ready, "Running pod is not Ready");

    let done = wait_phase(&pods, "ok", "Succeeded", Duration::from_secs(30), &mut seen).await;
    let t = terminated(&done);
    assert_eq!(t.exit_code, 0);
    assert_eq!(t.reason.as_deref(), Some("Completed"));
    assert_eq!(t.message.as_deref(), Some(result));
    assert!(t.started_at.is_some() && t.finished_at.is_some());
    let ran = t
        .finished_at
        .unwrap()
        .0
        .duration_since(t.started_at.unwrap().0);
    assert!(ran.as_millis() >= 1500, "ran only {ran:?}, scripted 2s");
    assert!(
        seen.contains(&"Running".to_string()),
        "phases seen {seen:?}"
    );
}

#[tokio::test]
async fn scripted_failures_report_exit_code_and_message() {
    let s = Scenario::new("smoke-fail").start().await;
    let pods = s.pods();
    let fast = ("sim.vision.zjlab.io/duration", "300ms");
    let cases = [
        // (name, annotations, labels, expected phase, exit code)
        (
            "outcome-fail",
            vec![
                fast,
                ("sim.vision.zjlab.io/outcome", "fail"),
                ("sim.vision.zjlab.io/exit-code", "3"),
                ("sim.vision.zjlab.io/message", "CUDA out of memory"),
            ],
            vec![],
            "Failed",
            3,
        ),
        (
            "default-exit-code",
            vec![fast, ("sim.vision.zjlab.io/outcome", "fail")],
            vec![],
            "Failed",
            1,
        ),
        // fail-attempts=2: attempts 1 and 2 fail, attempt 3 succeeds; no label is attempt 1.
        (
            "attempt-none",
            vec![fast, ("sim.vision.zjlab.io/fail-attempts", "2")],
            vec![],
            "Failed",
            1,
        ),
        (
            "attempt-2",
            vec![fast, ("sim.vision.zjlab.io/fail-attempts", "2")],
            vec![("vision.zjlab.io/attempt", "2")],
            "Failed",
            1,
        ),
        (
            "attempt-3",
            vec![fast, ("sim.vision.zjlab.io/fail-attempts", "2")],
            vec![("vision.zjlab.io/attempt", "3")],
            "Succeeded",
            0,
        ),
        (
            "plain",
            vec![fast],
            vec![("vision.zjlab.io/attempt", "1")],
            "Succeeded",
            0,
        ),
    ];
    for (name, ann, labels, _, _) in &cases {
        pods.create(&PostParams::default(), &gpu_pod(name, 1, ann, labels))
            .await
            .unwrap();
    }
    for (name, ann, _, want, code) in &cases {
        let mut seen = Vec::new();
        let pod = wait_phase(&pods, name, want, Duration::from_secs(30), &mut seen).await;
        let t = terminated(&pod);
        assert_eq!(t.exit_code, *code, "{name}");
        let reason = if *want == "Failed" {
            "Error"
        } else {
            "Completed"
        };
        assert_eq!(t.reason.as_deref(), Some(reason), "{name}");
        let msg = ann
            .iter()
            .find(|(k, _)| *k == "sim.vision.zjlab.io/message")
            .map(|(_, v)| *v)
            .unwrap_or("");
        assert_eq!(t.message.as_deref().unwrap_or(""), msg, "{name}");
    }
}

#[tokio::test]
async fn pod_wanting_more_gpus_than_any_node_stays_pending_unschedulable() {
    let s = Scenario::new("smoke-pending").start().await;
    let pods = s.pods();
    pods.create(&PostParams::default(), &gpu_pod("huge", 100_000, &[], &[]))
        .await
        .unwrap();
    let unschedulable = wait_for(Duration::from_secs(30), || {
        let pods = pods.clone();
        async move {
            let pod = get(&pods, "huge").await.unwrap();
            pod.status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                })
        }
    })
    .await;
    assert!(
        unschedulable,
        "pod never marked Unschedulable: {:#?}",
        get(&pods, "huge").await.unwrap().status
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pod = get(&pods, "huge").await.unwrap();
    assert_eq!(phase(&pod), "Pending");
    assert!(
        pod.spec.unwrap().node_name.is_none(),
        "oversized pod was bound"
    );
}

#[tokio::test]
async fn deleting_the_owner_garbage_collects_its_pod() {
    let s = Scenario::new("smoke-gc").start().await;
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), &s.namespace);
    let pods = s.pods();
    let owner = ConfigMap {
        metadata: ObjectMeta {
            name: Some("owner".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let owner = cms.create(&PostParams::default(), &owner).await.unwrap();
    let mut pod = gpu_pod("owned", 1, &[("sim.vision.zjlab.io/duration", "1h")], &[]);
    pod.metadata.owner_references = Some(vec![owner.controller_owner_ref(&()).unwrap()]);
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let mut seen = Vec::new();
    wait_phase(
        &pods,
        "owned",
        "Running",
        Duration::from_secs(30),
        &mut seen,
    )
    .await;

    cms.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    let gone = wait_for(Duration::from_secs(30), || {
        let pods = pods.clone();
        async move { get(&pods, "owned").await.is_none() }
    })
    .await;
    assert!(
        gone,
        "pod of the deleted owner still exists after 30s (garbage collector not running?)"
    );
}
