//! The local cluster's real node (hack/node/node.sh: containerd, runc, the
//! kubelet) and the images built offline for it (hack/images): what the
//! tests of the real runtime share (tests/real_node.rs,
//! tests/real_runtime.rs).

use std::process::Command;

use k8s_openapi::api::core::v1::{Node, Toleration};
use kube::{Api, Client};
use vision_api::VisionAlgorithm;

use super::cluster;

/// The real node's name, its taint and its label (hack/node/node.sh).
pub const NODE: &str = "vision-node";
pub const TAINT: &str = "vision.zjlab.io/real-node";
pub const GPU: &str = "nvidia.com/gpu";

/// Builds (or finds cached) the image NAME of hack/images, imports it into
/// the real node, and returns its reference.
pub fn image(name: &str) -> String {
    // One build at a time in this process: two tests wanting the operator
    // image would otherwise both build it (the second then finds it cached).
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new("bash")
        .arg(cluster::repo_root().join("hack/cluster.sh"))
        .args(["image", name])
        .output()
        .expect("running hack/cluster.sh image");
    assert!(
        out.status.success(),
        "hack/cluster.sh image {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let reference = stdout
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("hack/cluster.sh image {name} printed no reference: {stdout}"));
    reference.to_string()
}

/// Fails with the fix when the real node is not there.
pub async fn real_node(client: &Client) -> Node {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes.get_opt(NODE).await.unwrap().unwrap_or_else(|| {
        panic!("no node {NODE}: start the real node with hack/cluster.sh node up")
    })
}

/// The toleration of the real node's taint.
pub fn toleration() -> Toleration {
    Toleration {
        key: Some(TAINT.into()),
        operator: Some("Exists".into()),
        effect: Some("NoSchedule".into()),
        ..Default::default()
    }
}

/// Sends the algorithm's pods to the real node: its node selector and the
/// toleration of its taint.
pub fn on_real_node(mut algorithm: VisionAlgorithm) -> VisionAlgorithm {
    let pod = algorithm
        .spec
        .template
        .spec
        .as_mut()
        .expect("the algorithm has a pod template");
    pod.node_selector = Some([("type".to_string(), "real".to_string())].into());
    pod.tolerations = Some(vec![toleration()]);
    algorithm
}
