//! The one harness of the tests that use the local cluster (hack/cluster.sh)
//! or its tools. Every test binary that needs it says `mod harness;`.
//!
//! - [`cluster`]: kubeconfig, client, kubectl, polling, fresh namespaces. A
//!   missing or unreachable cluster fails the test with a message naming the
//!   fix (`hack/cluster.sh up`); nothing is ever skipped.
//! - [`scenario`]: one test's world (namespace, queues, algorithms,
//!   operators) started in one statement, cleaned up in order by its guard.
//! - [`turn`]: one scenario at a time on the cluster, across test runs.
//! - [`operator`]: the operator as a child process, its HTTP endpoint, the
//!   free port and the HTTP GET every test uses.
//! - [`timeline`]: the live pods of a namespace over time, from a watch.
//! - [`helm`]: the helm binary and the chart.
//! - [`real_node`]: the real kubelet node and the images built for it.
//! - [`sim`]: the annotations that script a simulated (KWOK) pod.
//!
//! The objects a test creates are typed fixtures of `vision_api::testing`.
//
// Each test binary compiles the whole harness and uses a part of it.
#![allow(dead_code, unused_imports)]

pub mod cluster;
pub mod helm;
pub mod operator;
pub mod real_node;
pub mod scenario;
pub mod timeline;
pub mod turn;

pub use cluster::{kubectl, kubectl_output, repo_root, wait_for};
pub use operator::{Operator, OperatorOptions};
pub use scenario::Scenario;
pub use timeline::PodTimeline;

/// The pod annotations that script a pod on the local cluster's KWOK nodes
/// (hack/cluster): how long it runs, how it ends, what it reports. Put them
/// on an algorithm's template or on a job (its pods carry both).
pub mod sim {
    /// How long the pod runs (`1s`, `500ms`, `1h`).
    pub const DURATION: &str = "sim.vision.zjlab.io/duration";
    /// The termination message: the algorithm's result.
    pub const MESSAGE: &str = "sim.vision.zjlab.io/message";
    /// `fail` ends the pod Failed.
    pub const OUTCOME: &str = "sim.vision.zjlab.io/outcome";
    /// The exit code of a failed pod (default 1).
    pub const EXIT_CODE: &str = "sim.vision.zjlab.io/exit-code";
    /// Attempts 1..=n fail, later ones succeed.
    pub const FAIL_ATTEMPTS: &str = "sim.vision.zjlab.io/fail-attempts";
}

/// The arguments of `cargo build` that build every binary of the workspace
/// with the same features as `cargo test --workspace --features e2e`
/// (hack/test.sh): `--tests` turns on the dev-dependencies' features, so
/// after the test run's build nothing is rebuilt. A narrower build (`-p
/// visionctl`) unifies features differently and compiled kube and
/// k8s-openapi a second and third time, which filled CI's disk.
pub const WORKSPACE_BUILD: [&str; 6] = [
    "build",
    "--workspace",
    "--bins",
    "--tests",
    "--features",
    "e2e",
];

/// What cargo sets in the environment of a test it runs (besides
/// `CARGO_PKG_*` and `CARGO_BIN_EXE_*`).
const CARGO_SET_FOR_TESTS: [&str; 8] = [
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "OUT_DIR",
];

/// The workspace binary `name`, built from the current sources
/// ([`WORKSPACE_BUILD`], once per test process) into the target directory
/// this test binary runs from (`target/<profile>/deps/..`). Cargo gives a
/// test no `CARGO_BIN_EXE_` of another package's binaries; an up-to-date
/// build takes a second.
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("the test binary lives in target/<profile>/deps")
        .to_path_buf();
    BUILT.get_or_init(|| {
        let target = dir.parent().expect("target/").to_path_buf();
        let mut cmd = std::process::Command::new(env!("CARGO"));
        cmd.args(WORKSPACE_BUILD).env("CARGO_TARGET_DIR", &target);
        // Not the variables cargo set for this test process: a build script
        // that watches one (ring's watches CARGO_MANIFEST_DIR) would see it
        // changed and rebuild its crate and every crate above it.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if CARGO_SET_FOR_TESTS.contains(&name.as_ref())
                || name.starts_with("CARGO_PKG_")
                || name.starts_with("CARGO_BIN_EXE_")
            {
                cmd.env_remove(name.as_ref());
            }
        }
        if dir.file_name().is_some_and(|p| p == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo build");
        assert!(
            status.success(),
            "cargo {} failed",
            WORKSPACE_BUILD.join(" ")
        );
    });
    dir.join(name)
}
