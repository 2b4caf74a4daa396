//! The Helm chart (charts/vision-operator) installed into the local cluster:
//!
//! - `helm install` (in a namespace that enforces the "restricted" Pod
//!   Security Standard) with every object accepted, `helm upgrade` with
//!   changed values, and `helm uninstall`;
//! - the operator, run as a host process with the chart's ServiceAccount
//!   token, takes the chart's Lease and runs a job to Succeeded (the RBAC is
//!   enough), while reading Secrets, deleting a Node and other calls outside
//!   the chart's rules get 403 (the RBAC is not too much);
//! - why the documented CRD upgrade needs `--force-conflicts`.
//!
//! Leader election: pods on the KWOK cluster never run the binary, so the
//! chart's own replicas never hold the Lease; still, the test scales the
//! release to `replicaCount: 0` (the `helm upgrade` step) before it starts
//! the host-process operator, which then uses the chart's Lease name exactly
//! as a replica would (the Role allows get/patch of that one Lease only).
//!
//! (The chart as files, no cluster: tests/helm_template.rs.) Run with
//! `hack/test.sh` (or `cargo test --features e2e --test helm_install`
//! against a running cluster). A missing cluster or helm is a failure,
//! never a skip.
#![cfg(feature = "e2e")]

mod harness;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use harness::cluster::{self, ClusterObjects};
use harness::helm::{CHART, Release, helm, helm_raw};
use harness::operator::http_get;
use harness::{Operator, OperatorOptions, Scenario, sim, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};
use vision_api::testing::{AlgorithmFixture, JobFixture, mk_algorithm};
use vision_api::{JobPhase, VisionAlgorithm, VisionQueue};

/// A VisionAlgorithm whose simulated pod runs 1 s and returns {"ok":true}.
fn sim_algorithm(name: &str) -> VisionAlgorithm {
    mk_algorithm(name)
        .with_gpus_per_job(1)
        .with_timeout_seconds(60)
        .with_retries(0)
        .with_template_annotations(&[(sim::DURATION, "1s"), (sim::MESSAGE, r#"{"ok":true}"#)])
}

/// What the release namespace holds, for a failure message.
fn diagnose(ns: &str) -> String {
    let o = harness::kubectl_output([
        "get",
        "deployments,replicasets,pods,events",
        "-n",
        ns,
        "-o",
        "wide",
    ]);
    format!(
        "kubectl get deployments,replicasets,pods,events -n {ns}:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A kubeconfig that authenticates with `token`, for the cluster of the
/// local cluster's admin kubeconfig.
fn token_kubeconfig(token: &str, dir: &Path) -> PathBuf {
    let admin_path = cluster::kubeconfig_path();
    let admin: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(&admin_path).unwrap()).unwrap();
    let current = admin["current-context"]
        .as_str()
        .expect("admin kubeconfig has a current-context");
    let ctx = admin["contexts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str() == Some(current))
        .expect("current context");
    let cluster_name = ctx["context"]["cluster"].as_str().unwrap();
    let mut cluster = admin["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str() == Some(cluster_name))
        .expect("current cluster")["cluster"]
        .clone();
    // A relative CA path is relative to the admin kubeconfig's directory.
    if let Some(ca) = cluster
        .get("certificate-authority")
        .and_then(|v| v.as_str())
    {
        let ca = admin_path.parent().unwrap().join(ca);
        cluster["certificate-authority"] = serde_json::Value::String(ca.display().to_string());
    }
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": serde_json::to_value(&cluster).unwrap()}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "local", "user": "operator"}}],
        "current-context": "operator",
    });
    let path = dir.join("operator.kubeconfig");
    // JSON is YAML: kubeconfig readers take it as it is.
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    path
}

fn status_code<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> u16 {
    match r {
        Err(kube::Error::Api(s)) => s.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_upgrade_operate_with_chart_rbac_uninstall() {
    let admin = cluster::client().await;
    let ns = cluster::create_namespace(&admin, "helm").await;
    let release = Release {
        name: ns.clone(),
        namespace: ns.clone(),
    };
    // The release namespace enforces the restricted Pod Security Standard:
    // the API server refuses operator pods that do not meet it.
    harness::kubectl([
        "label",
        "namespace",
        &ns,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    ]);
    let fullname = format!("{ns}-vision-operator");
    let queue = format!("{ns}-q");
    let prefix = format!("{ns}-");
    let mut cluster_objects = ClusterObjects(vec![
        format!("visionqueue/{queue}"),
        format!("visionalgorithm/{prefix}echo"),
        format!("visionalgorithm/{prefix}gpu-check"),
        format!("clusterrole/{fullname}"),
        format!("clusterrole/{fullname}-edit"),
        format!("clusterrole/{fullname}-view"),
        format!("clusterrole/{fullname}-queue-reader"),
        format!("clusterrole/{fullname}-platform-admin"),
        format!("clusterrolebinding/{fullname}"),
        // Bound to rbac.queueReaderGroups (default: system:authenticated)
        // and to rbac.platformAdminGroups (set below: the default is none).
        format!("clusterrolebinding/{fullname}-queue-reader"),
        format!("clusterrolebinding/{fullname}-platform-admin"),
        format!("validatingadmissionpolicy/{fullname}-job-size"),
        format!("validatingadmissionpolicybinding/{fullname}-job-size"),
        // Rendered on this cluster (1.37 serves MutatingAdmissionPolicy v1).
        format!("mutatingadmissionpolicy/{fullname}-job-finalizer"),
        format!("mutatingadmissionpolicybinding/{fullname}-job-finalizer"),
    ]);

    // A wrong value fails the install with a clear message, and installs nothing.
    let out = helm_raw(&[
        "install",
        &ns,
        CHART,
        "-n",
        &ns,
        "--set",
        "logging.format=xml",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "install with logging.format=xml succeeded"
    );
    assert!(
        stderr.contains("format") && stderr.contains("schema"),
        "{stderr}"
    );
    assert!(helm(&["list", "-n", &ns, "-q"]).trim().is_empty());

    // Install: CRDs (created unless present), the Deployment, RBAC, Service,
    // PDB, the queue and the example algorithms. The KWOK pods of the
    // Deployment complete after 1s unless told otherwise: keep them running.
    let install = helm_raw(&[
        "install",
        &ns,
        CHART,
        "-n",
        &ns,
        "--wait",
        // (Where the time went, should the install fail.)
        "--debug",
        "--timeout",
        "120s",
        "--set",
        &format!("defaultQueue.name={queue},defaultQueue.maxRunning=2"),
        "--set",
        &format!("exampleAlgorithms.enabled=true,exampleAlgorithms.namePrefix={prefix}"),
        "--set-string",
        "podAnnotations.sim\\.vision\\.zjlab\\.io/duration=87600h",
        // A group of nobody: the binding exists, and must go with the release.
        "--set-json",
        &format!(r#"rbac.platformAdminGroups=["{ns}-platform-admins"]"#),
    ]);
    let install_err = String::from_utf8_lossy(&install.stderr);
    assert!(
        install.status.success(),
        "helm install failed:\n{}\n{install_err}\n{}",
        String::from_utf8_lossy(&install.stdout),
        diagnose(&ns)
    );
    assert!(
        !install_err.contains("PodSecurity") && !install_err.contains("would violate"),
        "the API server warned about Pod Security: {install_err}"
    );
    let notes = String::from_utf8_lossy(&install.stdout);
    assert!(
        notes.contains("kubectl apply --server-side"),
        "NOTES: {notes}"
    );

    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &ns);
    let d = deployments.get(&fullname).await.unwrap();
    let st = d.status.unwrap_or_default();
    assert_eq!(st.ready_replicas, Some(2), "both replicas ready: {st:?}");
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &ns);
    let running = pods
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={ns}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .count();
    assert_eq!(
        running, 2,
        "two operator pods admitted under enforce=restricted"
    );
    for (kind, name) in [
        ("serviceaccount", fullname.clone()),
        ("service", format!("{fullname}-metrics")),
        ("poddisruptionbudget", fullname.clone()),
        ("role", format!("{fullname}-leader-election")),
        ("rolebinding", format!("{fullname}-leader-election")),
    ] {
        harness::kubectl(["get", "-n", &ns, kind, &name]);
    }
    for o in &cluster_objects.0 {
        harness::kubectl(["get", o]);
    }
    let queues: Api<VisionQueue> = Api::all(admin.clone());
    let q = queues.get(&queue).await.unwrap();
    assert_eq!(q.spec.max_running, 2);

    // The CRD upgrade step of docs/INSTALL.md, then `helm upgrade` with
    // changed values: scale to 0 (the host-process operator below is then
    // the only contender for the Lease), another log level, a bigger queue.
    harness::kubectl([
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        &harness::repo_root()
            .join(CHART)
            .join("crds")
            .display()
            .to_string(),
    ]);
    helm(&[
        "upgrade",
        &ns,
        CHART,
        "-n",
        &ns,
        "--reset-then-reuse-values",
        "--wait",
        "--timeout",
        "120s",
        "--set",
        "replicaCount=0,logging.level=debug,defaultQueue.maxRunning=4",
    ]);
    let status: Value =
        serde_json::from_str(&helm(&["status", &ns, "-n", &ns, "-o", "json"])).unwrap();
    assert_eq!(status["version"], 2);
    assert_eq!(status["info"]["status"], "deployed");
    let d = deployments.get(&fullname).await.unwrap();
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(0));
    let env = spec.template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    assert!(
        env.iter()
            .any(|e| e.name == "VISION_LOG" && e.value.as_deref() == Some("debug"))
    );
    assert_eq!(queues.get(&queue).await.unwrap().spec.max_running, 4);
    let pdbs = harness::kubectl(["get", "poddisruptionbudget", "-n", &ns, "-o", "name"]);
    assert!(pdbs.trim().is_empty(), "PDB left with 0 replicas: {pdbs}");
    let gone = wait_for(Duration::from_secs(30), || {
        let pods = pods.clone();
        let ns = ns.clone();
        async move {
            pods.list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={ns}")))
                .await
                .map(|l| l.items.is_empty())
                .unwrap_or(false)
        }
    })
    .await;
    assert!(gone, "operator pods still there after scaling to 0");

    // The chart's ServiceAccount, as the operator would see it in a pod.
    let token = harness::kubectl(["create", "token", &fullname, "-n", &ns, "--duration=1h"]);
    let dir = harness::repo_root().join(".local/helm").join(&ns);
    std::fs::create_dir_all(&dir).unwrap();
    let sa_kubeconfig = token_kubeconfig(token.trim(), &dir);
    let sa = cluster::client_from(&sa_kubeconfig).await;
    // Where the job runs: a scenario with the algorithm, its operator added
    // below (it must run with the chart's ServiceAccount).
    let mut s = Scenario::new("helm-jobs")
        .algorithm(sim_algorithm("sim"))
        .start()
        .await;

    // Not too much: 403 outside the chart's rules.
    let forbidden = [
        (
            "list secrets",
            status_code(
                Api::<Secret>::namespaced(sa.clone(), &ns)
                    .list(&ListParams::default())
                    .await,
            ),
        ),
        (
            "get a secret",
            status_code(
                Api::<Secret>::namespaced(sa.clone(), &s.namespace)
                    .get("any")
                    .await,
            ),
        ),
        (
            "delete a node",
            status_code(
                Api::<Node>::all(sa.clone())
                    .delete("kwok-gpu-0", &DeleteParams::default())
                    .await,
            ),
        ),
        (
            "list configmaps",
            status_code(
                Api::<ConfigMap>::all(sa.clone())
                    .list(&ListParams::default())
                    .await,
            ),
        ),
        (
            "create a VisionAlgorithm",
            status_code(
                Api::<VisionAlgorithm>::all(sa.clone())
                    .create(
                        &PostParams::default(),
                        &sim_algorithm(&format!("{ns}-forbidden")),
                    )
                    .await,
            ),
        ),
        (
            "get another Lease",
            status_code(
                Api::<Lease>::namespaced(sa.clone(), &ns)
                    .get("someone-else")
                    .await,
            ),
        ),
        (
            "create a Lease elsewhere",
            status_code(
                Api::<Lease>::namespaced(sa.clone(), &s.namespace)
                    .create(
                        &PostParams::default(),
                        &Lease {
                            metadata: ObjectMeta {
                                name: Some("vision-operator".into()),
                                ..Default::default()
                            },
                            ..Default::default()
                        },
                    )
                    .await,
            ),
        ),
    ];
    for (what, code) in forbidden {
        assert_eq!(code, 403, "{what} with the operator's ServiceAccount");
    }

    // Enough: the operator, with only this ServiceAccount's token, runs a
    // job end to end.
    let identity = format!("{ns}-host");
    let mut options = OperatorOptions::new("vision-operator", &identity);
    options.kubeconfig = sa_kubeconfig.clone();
    options.lease_namespace = ns.clone();
    options.args = [
        "--leader-election",
        "true",
        "--log-format",
        "text",
        "--log-level",
        "info",
    ]
    .map(String::from)
    .to_vec();
    s.operators.push(Operator::spawn(&options));
    let port = s.operator().port;

    s.submit(
        s.job("hello", "sim")
            .with_queue(&queue)
            .with_input(json!({"uri": "s3://frames/0001.jpg"})),
    )
    .await;
    let jobs = s.jobs();

    let mut last = None;
    let done = {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = s.operators[0].exited() {
                panic!(
                    "the operator exited ({status}):\n{}",
                    s.operator().log_tail()
                );
            }
            if let Ok(j) = jobs.get("hello").await {
                last = j.status;
                if last.as_ref().is_some_and(|l| {
                    l.phase == Some(JobPhase::Succeeded) && l.result == Some(json!({"ok": true}))
                }) {
                    break true;
                }
            }
            if Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    assert!(
        done,
        "job not Succeeded with result {{\"ok\":true}} in 60s; status: {last:?}\noperator log:\n{}",
        s.operator().log_tail()
    );

    // It held the chart's Lease, and served its probes.
    let lease = Api::<Lease>::namespaced(admin.clone(), &ns)
        .get("vision-operator")
        .await
        .unwrap();
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some(identity.as_str()),
        "the host-process operator should hold the chart's Lease"
    );
    for path in ["/healthz", "/readyz", "/metrics"] {
        let code = http_get(port, path).map(|(code, _)| code);
        assert_eq!(code, Some(200), "operator {path}");
    }

    // A graceful stop (SIGTERM) hands the Lease back: also within the Role.
    s.operators[0].terminate();
    let log = std::fs::read_to_string(&s.operator().log).unwrap_or_default();
    assert!(
        // (An RBAC denial names the user; other 403s, such as writing into a
        // namespace being deleted by another test, do not.)
        !log.contains("is forbidden: User"),
        "the operator was refused an API call:\n{}",
        s.operator().log_tail()
    );
    let lease = Api::<Lease>::namespaced(admin.clone(), &ns)
        .get("vision-operator")
        .await
        .unwrap();
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    assert!(
        holder.is_empty(),
        "the Lease should be released on SIGTERM (the Role allows patching it); holder: {holder}"
    );

    // Uninstall: every object of the release is deleted; the CRDs stay.
    helm(&["uninstall", &ns, "-n", &ns, "--wait", "--timeout", "60s"]);
    assert!(helm(&["list", "-n", &ns, "-q"]).trim().is_empty());
    let left = harness::kubectl([
        "get",
        "deployment,serviceaccount,service,role,rolebinding,poddisruptionbudget",
        "-n",
        &ns,
        "-l",
        &format!("app.kubernetes.io/instance={ns}"),
        "-o",
        "name",
    ]);
    assert!(left.trim().is_empty(), "left after uninstall: {left}");
    for o in &cluster_objects.0 {
        let out = harness::kubectl(["get", o, "--ignore-not-found", "-o", "name"]);
        assert!(out.trim().is_empty(), "{o} left after uninstall");
    }
    for crd in ["visionjobs", "visionqueues", "visionalgorithms"] {
        harness::kubectl(["get", "crd", &format!("{crd}.vision.zjlab.io")]);
    }
    // The job's namespace (with its algorithm) and the release namespace go
    // with the guards.
    cluster_objects.0.clear();
    drop(release);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Why docs/INSTALL.md upgrades the CRDs with `--force-conflicts`: Helm
/// creates the CRDs of crds/ (field manager "helm"), so a server-side apply
/// that changes them conflicts with "helm" unless it forces.
#[test]
fn crd_upgrade_needs_force_conflicts() {
    let group = format!(
        "g{}{}.helm-test.example.com",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            % 1_000_000
    );
    let crd = |description: &str| {
        format!(
            "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: widgets.{group}}}
spec:
  group: {group}
  names: {{kind: Widget, plural: widgets}}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {{type: object, description: {description}}}
"
        )
    };
    let dir = harness::repo_root().join(".local/helm");
    std::fs::create_dir_all(&dir).unwrap();
    let (v1, v2) = (
        dir.join(format!("{group}-1.yaml")),
        dir.join(format!("{group}-2.yaml")),
    );
    std::fs::write(&v1, crd("one")).unwrap();
    std::fs::write(&v2, crd("two")).unwrap();
    let _cleanup = ClusterObjects(vec![format!("crd/widgets.{group}")]);
    let kubectl = |args: &[&str]| harness::kubectl_output(args);
    let (v1s, v2s) = (v1.display().to_string(), v2.display().to_string());
    let created = kubectl(&["create", "--field-manager=helm", "-f", &v1s]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let plain = kubectl(&["apply", "--server-side", "-f", &v2s]);
    assert!(
        !plain.status.success(),
        "the changed CRD applied without --force-conflicts"
    );
    assert!(
        String::from_utf8_lossy(&plain.stderr).contains("conflict with \"helm\""),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    let forced = kubectl(&["apply", "--server-side", "--force-conflicts", "-f", &v2s]);
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    let _ = std::fs::remove_file(&v1);
    let _ = std::fs::remove_file(&v2);
}
