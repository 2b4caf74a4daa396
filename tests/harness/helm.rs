//! The helm binary that hack/cluster.sh builds, run on the repository's
//! chart with its caches kept under .local/helm, and a release guard.
//! `helm template` and `helm lint` need no running cluster.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

use super::cluster;

/// The chart, relative to the repository root.
pub const CHART: &str = "charts/vision-operator";
/// `helm template` and `helm lint` check the chart against the oldest
/// Kubernetes it supports (Chart.yaml kubeVersion).
pub const KUBE_VERSION: &str = "1.33.0";
/// What `helm template` must be told (`--api-versions`) to render the
/// chart's MutatingAdmissionPolicy: `helm install` learns it from the API
/// server (Kubernetes 1.36+, the local cluster's 1.37).
pub const MUTATING_POLICY_API: &str = "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy";

/// The helm binary: `$VISION_HELM`, else the one next to the kubectl that
/// `hack/cluster.sh` built. A missing helm is a failure, never a skip.
pub fn helm_path() -> PathBuf {
    if let Some(p) = std::env::var_os("VISION_HELM").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(p.exists(), "VISION_HELM={} does not exist", p.display());
        return p;
    }
    let helm = cluster::kubectl_path().with_file_name("helm");
    assert!(
        helm.exists(),
        "helm not found at {} (run hack/cluster.sh up, or set VISION_HELM)",
        helm.display()
    );
    helm
}

/// Whether [`helm_path`] would find helm (without panicking).
fn helm_found() -> bool {
    match std::env::var_os("VISION_HELM").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p).exists(),
        None => cluster::kubectl_path().with_file_name("helm").exists(),
    }
}

fn helm_command() -> Command {
    let root = cluster::repo_root();
    let home = root.join(".local/helm");
    let mut cmd = Command::new(helm_path());
    cmd.current_dir(&root)
        .env("KUBECONFIG", cluster::kubeconfig_path())
        // Keep helm's repositories and caches out of the user's home.
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    cmd
}

/// Runs helm in the repository root; its whole output.
pub fn helm_raw(args: &[&str]) -> Output {
    helm_command()
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running helm {args:?}: {e}"))
}

/// Runs helm; returns stdout, panics with stderr on failure.
pub fn helm(args: &[&str]) -> String {
    let out = helm_raw(args);
    assert!(
        out.status.success(),
        "helm {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Parses a multi-document YAML stream into its non-empty documents.
pub fn parse_docs(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .expect("helm output is valid YAML")
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

/// A Helm release uninstalled (and its namespace deleted) when dropped, also
/// when the test panics.
pub struct Release {
    pub name: String,
    pub namespace: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        // A cleanup that panics while the test is already unwinding aborts
        // the whole test binary and hides the first failure: without helm
        // (the failure the test reports) there is nothing to uninstall.
        if !helm_found() {
            return;
        }
        let _ = helm_raw(&[
            "uninstall",
            &self.name,
            "-n",
            &self.namespace,
            "--wait",
            "--timeout",
            "60s",
        ]);
        let _ = cluster::kubectl_output([
            "delete",
            "namespace",
            &self.namespace,
            "--wait=false",
            "--ignore-not-found",
        ]);
    }
}
