//! Shared helpers for the end-to-end tests against the local cluster started
//! by `hack/cluster.sh up` (see hack/README.md).
//!
//! A missing or unreachable cluster is a test failure, never a skip: every
//! helper that needs the cluster panics with a message naming the fix.
#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

const NOT_REACHABLE: &str = "local cluster not reachable: run hack/cluster.sh up";

/// The repository root (where Cargo.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Kubeconfig of the local cluster: `$VISION_KUBECONFIG`, else
/// `<repo>/.local/cluster/kubeconfig`.
pub fn kubeconfig_path() -> PathBuf {
    match std::env::var_os("VISION_KUBECONFIG") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => repo_root().join(".local/cluster/kubeconfig"),
    }
}

/// A client for the local cluster. Panics if the kubeconfig is missing or the
/// API server does not answer.
pub async fn client() -> Client {
    let path = kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(&path)
        .unwrap_or_else(|e| panic!("{NOT_REACHABLE} (kubeconfig {}: {e})", path.display()));
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{NOT_REACHABLE} (kubeconfig {}: {e})", path.display()));
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(Duration::from_secs(60));
    let client = Client::try_from(config)
        .unwrap_or_else(|e| panic!("{NOT_REACHABLE} (client from {}: {e})", path.display()));
    match tokio::time::timeout(Duration::from_secs(10), client.apiserver_version()).await {
        Ok(Ok(_)) => client,
        Ok(Err(e)) => panic!("{NOT_REACHABLE} (API server of {}: {e})", path.display()),
        Err(_) => panic!(
            "{NOT_REACHABLE} (API server of {} did not answer in 10s)",
            path.display()
        ),
    }
}

/// Polls `pred` every 100 ms until it returns true; false if `timeout` passes
/// first.
pub async fn wait_for<F, Fut>(timeout: Duration, mut pred: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if pred().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates a fresh namespace `<prefix>-<unique suffix>` and waits until its
/// default ServiceAccount exists (pods can be created in it). Returns its
/// name. Delete it with [`delete_namespace`] or use [`TestNamespace`].
pub async fn unique_namespace(client: &Client, prefix: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    let name = format!(
        "{}-{:x}{:x}{}",
        prefix.trim_matches('-'),
        std::process::id(),
        (nanos % 0xffff_ffff) as u32,
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": name, "labels": { "vision.zjlab.io/e2e": "true" } }
    }))
    .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
    let ready = wait_for(Duration::from_secs(30), || {
        let sas = sas.clone();
        async move { matches!(sas.get_opt("default").await, Ok(Some(_))) }
    })
    .await;
    assert!(
        ready,
        "namespace {name}: default ServiceAccount not created in 30s (is kube-controller-manager running?)"
    );
    name
}

/// Starts deleting a namespace (does not wait for it to be gone).
pub async fn delete_namespace(client: &Client, name: &str) {
    let _ = Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::background())
        .await;
}

/// A namespace deleted when dropped (also when the test panics).
pub struct TestNamespace {
    pub client: Client,
    pub name: String,
}

impl TestNamespace {
    pub async fn new(prefix: &str) -> Self {
        let client = client().await;
        let name = unique_namespace(&client, prefix).await;
        TestNamespace { client, name }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Delete through kubectl: Drop cannot await, and this also works
        // while a panicking test's runtime is being torn down.
        let _ = kubectl_command()
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ])
            .output();
    }
}

/// Path of the kubectl binary built by hack/cluster.sh: `$VISION_KUBECTL`,
/// else the PATH entry printed by `hack/cluster.sh env`.
pub fn kubectl_path() -> PathBuf {
    if let Some(p) = std::env::var_os("VISION_KUBECTL").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    static FOUND: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    FOUND
        .get_or_init(|| {
            let out = Command::new("bash")
                .arg(repo_root().join("hack/cluster.sh"))
                .arg("env")
                .output()
                .expect("running hack/cluster.sh env");
            assert!(
                out.status.success(),
                "hack/cluster.sh env failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout);
            let dir = text
                .lines()
                .find_map(|l| {
                    l.strip_prefix("export PATH=")
                        .and_then(|p| p.split(':').next())
                })
                .expect("hack/cluster.sh env printed no PATH");
            let path = PathBuf::from(dir).join("kubectl");
            assert!(
                path.exists(),
                "{} missing: run hack/cluster.sh up",
                path.display()
            );
            path
        })
        .clone()
}

fn kubectl_command() -> Command {
    let mut cmd = Command::new(kubectl_path());
    cmd.arg("--kubeconfig").arg(kubeconfig_path());
    cmd
}

/// Runs the cached kubectl against the local cluster; returns stdout. Panics
/// with stderr when kubectl fails.
pub fn kubectl<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let args: Vec<std::ffi::OsString> = args
        .into_iter()
        .map(|a| a.as_ref().to_os_string())
        .collect();
    let out = kubectl_command()
        .args(&args)
        .output()
        .expect("running kubectl");
    assert!(
        out.status.success(),
        "kubectl {:?} failed: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
