//! The local cluster itself: where its kubeconfig and kubectl are, a client
//! that fails with the fix when the cluster is down, polling, fresh
//! namespaces, and cluster-scoped objects deleted when a guard drops.

use std::ffi::OsString;
use std::future::Future;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// What every failure to reach the cluster says: the fix.
pub const NOT_REACHABLE: &str = "local cluster not reachable: run hack/cluster.sh up";
/// Label on every namespace the tests create (to find leftovers).
pub const E2E_LABEL: &str = "vision.zjlab.io/e2e";

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

/// A client for the local cluster as its admin. Panics, naming the fix, if
/// the kubeconfig is missing or the API server does not answer: a missing
/// cluster fails a test, it never skips it.
pub async fn client() -> Client {
    client_from(&kubeconfig_path()).await
}

/// A client for the cluster of `kubeconfig` (e.g. one holding a
/// ServiceAccount's token); panics like [`client`].
pub async fn client_from(kubeconfig: &std::path::Path) -> Client {
    let path = kubeconfig.display();
    let parsed = Kubeconfig::read_from(kubeconfig)
        .unwrap_or_else(|e| panic!("{NOT_REACHABLE} (kubeconfig {path}: {e})"));
    let mut config = Config::from_custom_kubeconfig(parsed, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{NOT_REACHABLE} (kubeconfig {path}: {e})"));
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(Duration::from_secs(60));
    let client = Client::try_from(config)
        .unwrap_or_else(|e| panic!("{NOT_REACHABLE} (client from {path}: {e})"));
    match tokio::time::timeout(Duration::from_secs(10), client.apiserver_version()).await {
        Ok(Ok(_)) => client,
        Ok(Err(e)) => panic!("{NOT_REACHABLE} (API server of {path}: {e})"),
        Err(_) => panic!("{NOT_REACHABLE} (API server of {path} did not answer in 10s)"),
    }
}

/// A client for the local cluster without the reachability check, for the
/// cleanup of guards (which must not panic): an error instead.
pub async fn plain_client() -> Result<Client, String> {
    let path = kubeconfig_path();
    let parsed = Kubeconfig::read_from(&path).map_err(|e| e.to_string())?;
    let config = Config::from_custom_kubeconfig(parsed, &KubeConfigOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    Client::try_from(config).map_err(|e| e.to_string())
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

/// A namespace name `<prefix>-<unique suffix>`, unique across processes and
/// calls.
pub fn unique_name(prefix: &str) -> String {
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
    format!(
        "{}-{:x}{:x}{}",
        prefix.trim_matches('-'),
        std::process::id(),
        (nanos % 0xffff_ffff) as u32,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates a fresh namespace `<prefix>-<unique suffix>` labelled
/// [`E2E_LABEL`] and waits until its default ServiceAccount exists (pods can
/// be created in it). Returns its name; the caller deletes it (a
/// [`crate::harness::Scenario`] or [`ClusterObjects`] guard).
pub async fn create_namespace(client: &Client, prefix: &str) -> String {
    let name = unique_name(prefix);
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some([(E2E_LABEL.to_string(), "true".to_string())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
    wait_for_default_service_account(client, &name).await;
    name
}

/// Waits until the namespace's default ServiceAccount exists.
pub async fn wait_for_default_service_account(client: &Client, namespace: &str) {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let ready = wait_for(Duration::from_secs(30), || {
        let sas = sas.clone();
        async move { matches!(sas.get_opt("default").await, Ok(Some(_))) }
    })
    .await;
    assert!(
        ready,
        "namespace {namespace}: default ServiceAccount not created in 30s (is kube-controller-manager running?)"
    );
}

/// Path of the kubectl binary built by hack/cluster.sh: `$VISION_KUBECTL`,
/// else the PATH entry printed by `hack/cluster.sh env`.
pub fn kubectl_path() -> PathBuf {
    if let Some(p) = std::env::var_os("VISION_KUBECTL").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    static FOUND: OnceLock<PathBuf> = OnceLock::new();
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

/// Runs the cached kubectl against the local cluster; its whole output,
/// whether it succeeded or not.
pub fn kubectl_output<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(kubeconfig_path())
        .args(args)
        .output()
        .expect("running kubectl")
}

/// Runs the cached kubectl against the local cluster; returns stdout. Panics
/// with stderr when kubectl fails.
pub fn kubectl<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let args: Vec<OsString> = args
        .into_iter()
        .map(|a| a.as_ref().to_os_string())
        .collect();
    let out = kubectl_output(&args);
    assert!(
        out.status.success(),
        "kubectl {:?} failed: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Objects (`kind/name`, cluster-scoped or a namespace) deleted with kubectl
/// when dropped, also when the test panics. Drop cannot await, and kubectl
/// works while a panicking test's runtime is being torn down.
#[derive(Default)]
pub struct ClusterObjects(pub Vec<String>);

impl Drop for ClusterObjects {
    fn drop(&mut self) {
        for object in &self.0 {
            let _ = kubectl_output(["delete", object, "--wait=false", "--ignore-not-found"]);
        }
    }
}

/// Writes to `path` a kubeconfig for the local cluster (the server and CA of
/// the admin kubeconfig) that authenticates with `token` only, e.g. a
/// ServiceAccount's from the TokenRequest API: a user's credentials, not the
/// admin's impersonating them. Its context's namespace is `namespace`.
pub fn token_kubeconfig(token: &str, namespace: &str, path: &std::path::Path) {
    use kube::config::{AuthInfo, Context, NamedAuthInfo, NamedCluster, NamedContext};
    let admin_path = kubeconfig_path();
    // read_from makes the CA path absolute.
    let admin = Kubeconfig::read_from(&admin_path)
        .unwrap_or_else(|e| panic!("{NOT_REACHABLE} (kubeconfig {}: {e})", admin_path.display()));
    let current = admin
        .current_context
        .as_deref()
        .expect("the admin kubeconfig has a current-context");
    let cluster_name = admin
        .contexts
        .iter()
        .find(|c| c.name == current)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .expect("the admin kubeconfig's current context");
    let cluster = admin
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.clone())
        .expect("the admin kubeconfig's current cluster");
    let config = Kubeconfig {
        clusters: vec![NamedCluster {
            name: "local".into(),
            cluster: Some(cluster),
            ..Default::default()
        }],
        auth_infos: vec![NamedAuthInfo {
            name: "user".into(),
            auth_info: Some(AuthInfo {
                token: Some(token.to_string().into()),
                ..Default::default()
            }),
            ..Default::default()
        }],
        contexts: vec![NamedContext {
            name: "user".into(),
            context: Some(Context {
                cluster: "local".into(),
                user: Some("user".into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            }),
            ..Default::default()
        }],
        current_context: Some("user".into()),
        api_version: Some("v1".into()),
        kind: Some("Config".into()),
        ..Default::default()
    };
    // JSON is YAML: every kubeconfig reader takes it.
    let text = serde_json::to_string_pretty(&config).expect("a kubeconfig serializes");
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}
