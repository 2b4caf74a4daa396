//! The Helm chart (charts/vision-operator):
//!
//! - `helm lint --strict`;
//! - `helm template`: the restricted security context, the probes and
//!   resources, and the RBAC rules exactly as intended (nothing more);
//! - the values schema refuses wrong values with a message naming the value;
//! - `helm install` into the local cluster (in a namespace that enforces the
//!   "restricted" Pod Security Standard) with every object accepted, `helm
//!   upgrade` with changed values, and `helm uninstall`;
//! - the operator, run as a host process with the chart's ServiceAccount
//!   token, takes the chart's Lease and runs a job to Succeeded (the RBAC is
//!   enough), while reading Secrets, deleting a Node and other calls outside
//!   the chart's rules get 403 (the RBAC is not too much).
//!
//! Leader election: pods on the KWOK cluster never run the binary, so the
//! chart's own replicas never hold the Lease; still, the test scales the
//! release to `replicaCount: 0` (the `helm upgrade` step) before it starts
//! the host-process operator, which then uses the chart's Lease name exactly
//! as a replica would (the Role allows get/patch of that one Lease only).
//!
//! All of these need the helm binary built by `hack/cluster.sh` (or
//! `$VISION_HELM`), so they are end-to-end tests: run them with `hack/test.sh`
//! (or `cargo test --features e2e --test helm` against a running cluster).
//! A missing helm is a failure, never a skip.
#![cfg(feature = "e2e")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{TestNamespace, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde::Deserialize;
use serde_json::{Value, json};

const CHART: &str = "charts/vision-operator";
/// `helm template` and `helm lint` run without a cluster: they check the
/// chart against the oldest Kubernetes it supports (Chart.yaml kubeVersion).
const KUBE_VERSION: &str = "1.33.0";

// ---------------------------------------------------------------------------
// helm

/// The helm binary: `$VISION_HELM`, else the one next to the kubectl that
/// `hack/cluster.sh` built.
fn helm_path() -> PathBuf {
    if let Some(p) = std::env::var_os("VISION_HELM").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(p.exists(), "VISION_HELM={} does not exist", p.display());
        return p;
    }
    let kubectl = common::kubectl_path();
    let helm = kubectl.with_file_name("helm");
    assert!(
        helm.exists(),
        "helm not found at {} (run hack/cluster.sh up, or set VISION_HELM)",
        helm.display()
    );
    helm
}

fn helm_command() -> Command {
    let root = common::repo_root();
    let home = root.join(".local/helm");
    let mut cmd = Command::new(helm_path());
    cmd.current_dir(&root)
        .env("KUBECONFIG", common::kubeconfig_path())
        // Keep helm's repositories and caches out of the user's home.
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    cmd
}

fn helm_raw(args: &[&str]) -> Output {
    helm_command()
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running helm {args:?}: {e}"))
}

/// Runs helm; returns stdout, panics with stderr on failure.
fn helm(args: &[&str]) -> String {
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
fn parse_docs(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("helm output is valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// `helm template` of the chart as release `vo` in namespace `vision-system`
/// with extra arguments (`--set`...); the rendered objects.
fn render(extra: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "template",
        "vo",
        CHART,
        "--namespace",
        "vision-system",
        "--kube-version",
        KUBE_VERSION,
    ];
    args.extend_from_slice(extra);
    parse_docs(&helm(&args))
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| {
            let have: Vec<String> = objs
                .iter()
                .map(|o| format!("{}/{}", o["kind"], o["metadata"]["name"]))
                .collect();
            panic!("no {kind} {name} rendered; rendered: {have:?}")
        })
}

fn kinds(objs: &[Value]) -> BTreeSet<String> {
    objs.iter()
        .map(|o| o["kind"].as_str().unwrap().to_string())
        .collect()
}

fn count(objs: &[Value], kind: &str) -> usize {
    objs.iter().filter(|o| o["kind"] == kind).count()
}

fn chart_app_version() -> String {
    let chart: Value = serde_yaml::from_str(
        &std::fs::read_to_string(common::repo_root().join(CHART).join("Chart.yaml")).unwrap(),
    )
    .unwrap();
    chart["appVersion"].as_str().unwrap().to_string()
}

/// A policy rule normalised for comparison: (apiGroups, resources,
/// resourceNames, verbs), each sorted.
type Rule = (Vec<String>, Vec<String>, Vec<String>, Vec<String>);

fn strings(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

fn rules(role: &Value) -> BTreeSet<Rule> {
    role["rules"]
        .as_array()
        .expect("role has rules")
        .iter()
        .map(|r| {
            (
                strings(&r["apiGroups"]),
                strings(&r["resources"]),
                strings(&r["resourceNames"]),
                strings(&r["verbs"]),
            )
        })
        .collect()
}

fn rule(groups: &[&str], resources: &[&str], names: &[&str], verbs: &[&str]) -> Rule {
    let s = |x: &[&str]| {
        let mut v: Vec<String> = x.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    };
    (s(groups), s(resources), s(names), s(verbs))
}

/// The operator's ClusterRole: exactly the calls it makes.
fn expected_cluster_rules() -> BTreeSet<Rule> {
    let g = "vision.zjlab.io";
    BTreeSet::from([
        rule(
            &[g],
            &["visionjobs"],
            &[],
            &["get", "list", "watch", "patch", "delete"],
        ),
        rule(&[g], &["visionjobs/status"], &[], &["get", "patch"]),
        rule(&[g], &["visionjobs/finalizers"], &[], &["update"]),
        rule(
            &[g],
            &["visionqueues", "visionalgorithms"],
            &[],
            &["get", "list", "watch"],
        ),
        rule(
            &[g],
            &["visionqueues/status", "visionalgorithms/status"],
            &[],
            &["get", "patch"],
        ),
        rule(
            &[""],
            &["pods"],
            &[],
            &["get", "list", "watch", "create", "delete"],
        ),
        rule(&["events.k8s.io"], &["events"], &[], &["create", "patch"]),
    ])
}

/// The operator's Role in the release namespace: leader election on one Lease.
fn expected_lease_rules(lease: &str) -> BTreeSet<Rule> {
    BTreeSet::from([
        rule(&["coordination.k8s.io"], &["leases"], &[], &["create"]),
        rule(
            &["coordination.k8s.io"],
            &["leases"],
            &[lease],
            &["get", "update"],
        ),
    ])
}

// ---------------------------------------------------------------------------
// lint, template, schema

#[test]
fn lint_strict() {
    helm(&["lint", "--strict", "--kube-version", KUBE_VERSION, CHART]);
    helm(&[
        "lint",
        "--strict",
        "--kube-version",
        KUBE_VERSION,
        CHART,
        "--set",
        "serviceMonitor.enabled=true,exampleAlgorithms.enabled=true,replicaCount=1",
    ]);
}

#[test]
fn template_deployment_is_restricted_and_complete() {
    let objs = render(&[]);
    assert_eq!(
        kinds(&objs),
        BTreeSet::from(
            [
                "ClusterRole",
                "ClusterRoleBinding",
                "Deployment",
                "PodDisruptionBudget",
                "Role",
                "RoleBinding",
                "Service",
                "ServiceAccount",
                "VisionQueue",
            ]
            .map(String::from)
        ),
        "the default install renders these kinds and nothing else"
    );
    for o in &objs {
        let labels = &o["metadata"]["labels"];
        assert_eq!(labels["app.kubernetes.io/instance"], "vo", "{o}");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "Helm", "{o}");
    }

    let d = find(&objs, "Deployment", "vo-vision-operator");
    assert_eq!(d["metadata"]["namespace"], "vision-system");
    assert_eq!(d["spec"]["replicas"], 2);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "vo-vision-operator");
    assert_eq!(pod["automountServiceAccountToken"], true);
    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true);
    assert!(psc["runAsUser"].as_i64().unwrap() > 0);
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault");

    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(
        c["image"],
        format!("ghcr.io/zjlab/vision-operator:{}", chart_app_version())
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert!(sc["capabilities"].get("add").is_none());
    assert!(pod.get("hostNetwork").is_none() && pod.get("hostPID").is_none());
    assert!(
        pod.get("volumes").is_none(),
        "the operator needs no volumes"
    );

    for key in ["requests", "limits"] {
        for res in ["cpu", "memory"] {
            assert!(
                c["resources"][key][res].is_string(),
                "resources.{key}.{res} must be set: {}",
                c["resources"]
            );
        }
    }
    assert_eq!(
        c["ports"],
        json!([{"name": "http", "containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["startupProbe"]["httpGet"]["path"], "/healthz");
    for p in ["livenessProbe", "readinessProbe", "startupProbe"] {
        assert_eq!(c[p]["httpGet"]["port"], "http");
    }

    let env: BTreeMap<String, Value> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e.clone()))
        .collect();
    let val = |k: &str| {
        env.get(k)
            .map(|e| e["value"].clone())
            .unwrap_or(Value::Null)
    };
    assert_eq!(val("VISION_HTTP_ADDR"), "0.0.0.0:8080");
    assert_eq!(val("VISION_LEADER_ELECTION"), "true");
    assert_eq!(val("VISION_LEASE_NAME"), "vision-operator");
    assert_eq!(val("VISION_LOG_FORMAT"), "json");
    assert_eq!(val("VISION_LOG"), "info");
    assert_eq!(
        env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(
        env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(val("VISION_LEASE_SECONDS"), "15");
    assert_eq!(val("VISION_RETRY_BACKOFF_BASE_MS"), "1000");
    assert_eq!(val("VISION_RETRY_BACKOFF_MAX_MS"), "60000");
    assert!(
        c.get("args").is_none() && c.get("command").is_none(),
        "settings go through the environment"
    );

    // Two replicas: prefer different nodes; never both down in a drain.
    assert_eq!(
        pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
            ["topologyKey"],
        "kubernetes.io/hostname"
    );
    let pdb = find(&objs, "PodDisruptionBudget", "vo-vision-operator");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        d["spec"]["selector"]["matchLabels"]
    );

    let svc = find(&objs, "Service", "vo-vision-operator-metrics");
    assert_eq!(
        svc["spec"]["selector"],
        d["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(
        svc["spec"]["ports"],
        json!([{"name": "http-metrics", "port": 8080, "targetPort": "http", "protocol": "TCP"}])
    );

    let sa = find(&objs, "ServiceAccount", "vo-vision-operator");
    assert_eq!(sa["automountServiceAccountToken"], false);

    let q = find(&objs, "VisionQueue", "default");
    assert_eq!(
        q["spec"],
        json!({"maxRunning": 8, "ordering": "BestEffortFIFO", "paused": false})
    );
}

#[test]
fn template_rbac_is_exactly_what_the_operator_uses() {
    let objs = render(&[]);
    let cr = find(&objs, "ClusterRole", "vo-vision-operator");
    assert_eq!(rules(cr), expected_cluster_rules());
    let role = find(&objs, "Role", "vo-vision-operator-leader-election");
    assert_eq!(role["metadata"]["namespace"], "vision-system");
    assert_eq!(rules(role), expected_lease_rules("vision-operator"));

    let subject = json!([{
        "kind": "ServiceAccount",
        "name": "vo-vision-operator",
        "namespace": "vision-system",
    }]);
    let crb = find(&objs, "ClusterRoleBinding", "vo-vision-operator");
    assert_eq!(crb["subjects"], subject);
    assert_eq!(
        crb["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "vo-vision-operator"})
    );
    let rb = find(&objs, "RoleBinding", "vo-vision-operator-leader-election");
    assert_eq!(rb["metadata"]["namespace"], "vision-system");
    assert_eq!(rb["subjects"], subject);
    assert_eq!(
        rb["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "vo-vision-operator-leader-election"})
    );

    // Roles for people, aggregated into the built-in ones: VisionJobs only.
    let edit = find(&objs, "ClusterRole", "vo-vision-operator-edit");
    assert_eq!(
        edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"],
        "true"
    );
    assert_eq!(
        edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"],
        "true"
    );
    assert_eq!(
        rules(edit),
        BTreeSet::from([rule(
            &["vision.zjlab.io"],
            &["visionjobs"],
            &[],
            &[
                "get",
                "list",
                "watch",
                "create",
                "update",
                "patch",
                "delete",
                "deletecollection"
            ],
        )])
    );
    let view = find(&objs, "ClusterRole", "vo-vision-operator-view");
    assert_eq!(
        view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"],
        "true"
    );
    assert_eq!(
        rules(view),
        BTreeSet::from([rule(
            &["vision.zjlab.io"],
            &["visionjobs"],
            &[],
            &["get", "list", "watch"]
        )])
    );
    assert_eq!(count(&objs, "ClusterRole"), 3);
    assert_eq!(
        count(&objs, "ClusterRoleBinding"),
        1,
        "only the operator's own role is bound"
    );

    // No wildcard, no secret anywhere.
    for o in objs
        .iter()
        .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
    {
        for (groups, resources, _, verbs) in rules(o) {
            for s in groups.iter().chain(&resources).chain(&verbs) {
                assert_ne!(s, "*", "wildcard in {}", o["metadata"]["name"]);
            }
            assert!(!resources.iter().any(|r| r.starts_with("secrets")));
        }
    }

    // A renamed lease is the one the Role allows; without leader election
    // there is no Role; without rbac.create nothing RBAC is rendered.
    let objs = render(&["--set", "leaderElection.leaseName=vo-lease"]);
    let role = find(&objs, "Role", "vo-vision-operator-leader-election");
    assert_eq!(rules(role), expected_lease_rules("vo-lease"));
    let objs = render(&["--set", "leaderElection.enabled=false,replicaCount=1"]);
    assert_eq!(count(&objs, "Role") + count(&objs, "RoleBinding"), 0);
    assert_eq!(count(&objs, "ClusterRole"), 3);
    let objs = render(&["--set", "rbac.create=false"]);
    for k in ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"] {
        assert_eq!(count(&objs, k), 0, "{k} rendered with rbac.create=false");
    }
    let objs = render(&["--set", "rbac.aggregateToDefaultRoles=false"]);
    assert_eq!(count(&objs, "ClusterRole"), 1);
}

#[test]
fn template_options() {
    // One replica: no PodDisruptionBudget (it would block every drain).
    let objs = render(&["--set", "replicaCount=1"]);
    assert_eq!(count(&objs, "PodDisruptionBudget"), 0);

    let objs = render(&[
        "--set",
        "serviceMonitor.enabled=true,serviceMonitor.labels.release=prom",
        "--set",
        "exampleAlgorithms.enabled=true,exampleAlgorithms.namePrefix=try-",
        "--set",
        "image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "--set",
        "defaultQueue.name=gpu,defaultQueue.maxGPUs=16,defaultQueue.maxPending=100,defaultQueue.ordering=StrictFIFO",
        "--set",
        "logging.format=text,logging.level=debug",
    ]);
    let sm = find(&objs, "ServiceMonitor", "vo-vision-operator");
    assert_eq!(sm["metadata"]["labels"]["release"], "prom");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "http-metrics");
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    let svc = find(&objs, "Service", "vo-vision-operator-metrics");
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            &svc["metadata"]["labels"][k], v,
            "ServiceMonitor must select the Service"
        );
    }
    for name in ["try-echo", "try-gpu-check"] {
        let a = find(&objs, "VisionAlgorithm", name);
        let containers = a["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(containers[0]["name"], "algorithm");
        assert_eq!(
            containers[0]["securityContext"]["allowPrivilegeEscalation"],
            false
        );
    }
    let d = find(&objs, "Deployment", "vo-vision-operator");
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        c["image"],
        "ghcr.io/zjlab/vision-operator@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    );
    let q = find(&objs, "VisionQueue", "gpu");
    assert_eq!(
        q["spec"],
        json!({"maxRunning": 8, "maxGPUs": 16, "maxPending": 100, "ordering": "StrictFIFO", "paused": false})
    );
    let env = c["env"].as_array().unwrap();
    assert!(env.contains(&json!({"name": "VISION_LOG_FORMAT", "value": "text"})));
    assert!(env.contains(&json!({"name": "VISION_LOG", "value": "debug"})));

    // Big numbers stay integers (Helm reads values as floats).
    let objs = render(&[
        "--set",
        "defaultQueue.maxPending=10000000,retryBackoff.maxMs=3600000",
    ]);
    assert_eq!(
        find(&objs, "VisionQueue", "default")["spec"]["maxPending"],
        10_000_000
    );
    let d = find(&objs, "Deployment", "vo-vision-operator");
    assert!(
        d["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "VISION_RETRY_BACKOFF_MAX_MS", "value": "3600000"}))
    );

    let objs = render(&["--set", "defaultQueue.create=false"]);
    assert_eq!(count(&objs, "VisionQueue"), 0);

    // The CRDs come from the chart's crds/ folder (helm template --include-crds).
    let objs = parse_docs(&helm(&[
        "template",
        "vo",
        CHART,
        "--include-crds",
        "--kube-version",
        KUBE_VERSION,
    ]));
    let crds: BTreeSet<String> = objs
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        crds,
        BTreeSet::from(
            [
                "visionalgorithms.vision.zjlab.io",
                "visionjobs.vision.zjlab.io",
                "visionqueues.vision.zjlab.io"
            ]
            .map(String::from)
        )
    );
}

/// Each wrong value makes `helm template` (the same check as `helm install`)
/// fail with a message that names the value.
#[test]
fn schema_rejects_wrong_values() {
    let cases: &[(&str, &str)] = &[
        ("replicaCount=-1", "replicaCount"),
        ("replicaCount=two", "replicaCount"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("image.digest=latest", "digest"),
        ("logging.format=xml", "format"),
        (
            "securityContext.readOnlyRootFilesystem=false",
            "readOnlyRootFilesystem",
        ),
        (
            "securityContext.allowPrivilegeEscalation=true",
            "allowPrivilegeEscalation",
        ),
        ("podSecurityContext.runAsUser=0", "runAsUser"),
        (
            "podSecurityContext.seccompProfile.type=Unconfined",
            "seccompProfile",
        ),
        ("httpPort=80", "httpPort"),
        ("defaultQueue.ordering=Random", "ordering"),
        ("defaultQueue.maxRunning=-3", "maxRunning"),
        ("defaultQueue.name=Not_A_Name", "name"),
        ("leaderElection.enabled=false", "replicaCount"),
        ("replicas=3", "replicas"),
        ("resources.limits.memory=lots", "memory"),
    ];
    for (set, needle) in cases {
        let out = helm_raw(&[
            "template",
            "vo",
            CHART,
            "--kube-version",
            KUBE_VERSION,
            "--set",
            set,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--set {set} was accepted");
        assert!(
            stderr.contains("values don't meet the specifications of the schema")
                && stderr.contains(needle),
            "--set {set}: the error should name {needle}: {stderr}"
        );
    }
    // The whole restricted context cannot be switched off either.
    let out = helm_raw(&[
        "template",
        "vo",
        CHART,
        "--kube-version",
        KUBE_VERSION,
        "--set",
        "securityContext.capabilities.drop={NET_RAW}",
    ]);
    assert!(
        !out.status.success(),
        "capabilities.drop without ALL was accepted"
    );
}

// ---------------------------------------------------------------------------
// install, upgrade, RBAC in action, uninstall

/// A Helm release uninstalled (and its namespace deleted) when dropped, also
/// when the test panics.
struct Release {
    name: String,
    namespace: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = helm_raw(&[
            "uninstall",
            &self.name,
            "-n",
            &self.namespace,
            "--wait",
            "--timeout",
            "60s",
        ]);
        let _ = Command::new(common::kubectl_path())
            .arg("--kubeconfig")
            .arg(common::kubeconfig_path())
            .args([
                "delete",
                "namespace",
                &self.namespace,
                "--wait=false",
                "--ignore-not-found",
            ])
            .output();
    }
}

/// Cluster-scoped objects deleted with kubectl when dropped.
struct ClusterScoped(Vec<String>);

impl Drop for ClusterScoped {
    fn drop(&mut self) {
        for o in &self.0 {
            let _ = Command::new(common::kubectl_path())
                .arg("--kubeconfig")
                .arg(common::kubeconfig_path())
                .args(["delete", o, "--ignore-not-found", "--wait=false"])
                .output();
        }
    }
}

/// The operator as a child process: SIGTERM, then SIGKILL, when dropped.
struct Operator {
    child: Child,
    log: PathBuf,
}

impl Operator {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the release namespace holds, for a failure message.
fn diagnose(ns: &str) -> String {
    let out = Command::new(common::kubectl_path())
        .arg("--kubeconfig")
        .arg(common::kubeconfig_path())
        .args([
            "get",
            "deployments,replicasets,pods,events",
            "-n",
            ns,
            "-o",
            "wide",
        ])
        .output();
    match out {
        Ok(o) => format!(
            "kubectl get deployments,replicasets,pods,events -n {ns}:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => format!("(kubectl failed: {e})"),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// HTTP GET on 127.0.0.1; the status code, or None when nothing answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.split_whitespace().nth(1)?.parse().ok()
}

/// A kubeconfig that authenticates with `token`, for the cluster of the
/// local cluster's admin kubeconfig.
fn token_kubeconfig(token: &str, dir: &Path) -> PathBuf {
    let admin_path = common::kubeconfig_path();
    let admin: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&admin_path).unwrap()).unwrap();
    let current = admin["current-context"]
        .as_str()
        .expect("admin kubeconfig has a current-context");
    let ctx = admin["contexts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str() == Some(current))
        .expect("current context");
    let cluster_name = ctx["context"]["cluster"].as_str().unwrap();
    let mut cluster = admin["clusters"]
        .as_sequence()
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
        cluster["certificate-authority"] = serde_yaml::Value::String(ca.display().to_string());
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
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    path
}

async fn client_from(kubeconfig: &Path) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).unwrap();
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

fn status_code<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> u16 {
    match r {
        Err(kube::Error::Api(s)) => s.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn vision(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("vision.zjlab.io", "v1alpha1", kind))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_upgrade_operate_with_chart_rbac_uninstall() {
    let admin = common::client().await;
    let ns = common::unique_namespace(&admin, "helm").await;
    let release = Release {
        name: ns.clone(),
        namespace: ns.clone(),
    };
    // The release namespace enforces the restricted Pod Security Standard:
    // the API server refuses operator pods that do not meet it.
    common::kubectl([
        "label",
        "namespace",
        &ns,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    ]);
    let fullname = format!("{ns}-vision-operator");
    let queue = format!("{ns}-q");
    let prefix = format!("{ns}-");
    let mut cluster_objects = ClusterScoped(vec![
        format!("visionqueue/{queue}"),
        format!("visionalgorithm/{prefix}echo"),
        format!("visionalgorithm/{prefix}gpu-check"),
        format!("clusterrole/{fullname}"),
        format!("clusterrole/{fullname}-edit"),
        format!("clusterrole/{fullname}-view"),
        format!("clusterrolebinding/{fullname}"),
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
        common::kubectl(["get", "-n", &ns, kind, &name]);
    }
    for o in &cluster_objects.0 {
        common::kubectl(["get", o]);
    }
    let queues: Api<DynamicObject> = Api::all_with(admin.clone(), &vision("VisionQueue"));
    let q = queues.get(&queue).await.unwrap();
    assert_eq!(q.data["spec"]["maxRunning"], 2);

    // The CRD upgrade step of docs/INSTALL.md, then `helm upgrade` with
    // changed values: scale to 0 (the host-process operator below is then
    // the only contender for the Lease), another log level, a bigger queue.
    common::kubectl([
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        &common::repo_root()
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
    assert_eq!(
        queues.get(&queue).await.unwrap().data["spec"]["maxRunning"],
        4
    );
    let pdbs = common::kubectl(["get", "poddisruptionbudget", "-n", &ns, "-o", "name"]);
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
    let token = common::kubectl(["create", "token", &fullname, "-n", &ns, "--duration=1h"]);
    let dir = common::repo_root().join(".local/helm").join(&ns);
    std::fs::create_dir_all(&dir).unwrap();
    let sa_kubeconfig = token_kubeconfig(token.trim(), &dir);
    let sa = client_from(&sa_kubeconfig).await;
    let jobs_ns = TestNamespace::new("helm-jobs").await;

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
                Api::<Secret>::namespaced(sa.clone(), &jobs_ns.name)
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
                Api::<DynamicObject>::all_with(sa.clone(), &vision("VisionAlgorithm"))
                    .create(
                        &PostParams::default(),
                        &algorithm(&format!("{ns}-forbidden"), &vision("VisionAlgorithm")),
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
                Api::<Lease>::namespaced(sa.clone(), &jobs_ns.name)
                    .create(
                        &PostParams::default(),
                        &serde_json::from_value(json!({"metadata": {"name": "vision-operator"}}))
                            .unwrap(),
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
    let port = free_port();
    let log = dir.join("operator.log");
    let identity = format!("{ns}-host");
    let logf = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_vision-operator"))
        .args(["--kubeconfig", sa_kubeconfig.to_str().unwrap()])
        .args(["--http-addr", &format!("127.0.0.1:{port}")])
        .args(["--leader-election", "true"])
        .args(["--lease-name", "vision-operator"])
        .args(["--lease-namespace", &ns])
        .args(["--identity", &identity])
        .args(["--log-format", "text"])
        .env("KUBECONFIG", &sa_kubeconfig)
        .env("VISION_LOG", "info")
        .stdin(Stdio::null())
        .stdout(logf.try_clone().unwrap())
        .stderr(logf)
        .spawn()
        .expect("starting target/debug/vision-operator");
    let mut operator = Operator { child, log };

    let algo_name = format!("{ns}-sim");
    cluster_objects
        .0
        .push(format!("visionalgorithm/{algo_name}"));
    let algos: Api<DynamicObject> = Api::all_with(admin.clone(), &vision("VisionAlgorithm"));
    algos
        .create(
            &PostParams::default(),
            &algorithm(&algo_name, &vision("VisionAlgorithm")),
        )
        .await
        .unwrap();
    let job_ar = vision("VisionJob");
    let mut job = DynamicObject::new("hello", &job_ar).within(&jobs_ns.name);
    job.data = json!({"spec": {"algorithm": algo_name, "queue": queue, "input": {"uri": "s3://frames/0001.jpg"}}});
    let jobs: Api<DynamicObject> = Api::namespaced_with(admin.clone(), &jobs_ns.name, &job_ar);
    jobs.create(&PostParams::default(), &job).await.unwrap();

    let mut last = Value::Null;
    let done = {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = operator.child.try_wait() {
                panic!("the operator exited ({status}):\n{}", operator.log_tail());
            }
            if let Ok(j) = jobs.get("hello").await {
                last = j.data["status"].clone();
                if last["phase"] == "Succeeded" && last["result"] == json!({"ok": true}) {
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
        "job not Succeeded with result {{\"ok\":true}} in 60s; status: {last}\noperator log:\n{}",
        operator.log_tail()
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
    assert_eq!(
        http_status(port, "/healthz"),
        Some(200),
        "operator /healthz"
    );
    assert_eq!(http_status(port, "/readyz"), Some(200), "operator /readyz");
    assert_eq!(
        http_status(port, "/metrics"),
        Some(200),
        "operator /metrics"
    );

    // A graceful stop (SIGTERM) hands the Lease back: also within the Role.
    operator.stop();
    let log = std::fs::read_to_string(&operator.log).unwrap_or_default();
    assert!(
        // (An RBAC denial names the user; other 403s, such as writing into a
        // namespace being deleted by another test, do not.)
        !log.contains("is forbidden: User"),
        "the operator was refused an API call:\n{}",
        operator.log_tail()
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
    let _ = algos.delete(&algo_name, &DeleteParams::default()).await;
    helm(&["uninstall", &ns, "-n", &ns, "--wait", "--timeout", "60s"]);
    assert!(helm(&["list", "-n", &ns, "-q"]).trim().is_empty());
    let left = common::kubectl([
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
        let out = common::kubectl(["get", o, "--ignore-not-found", "-o", "name"]);
        assert!(out.trim().is_empty(), "{o} left after uninstall");
    }
    for crd in ["visionjobs", "visionqueues", "visionalgorithms"] {
        common::kubectl(["get", "crd", &format!("{crd}.vision.zjlab.io")]);
    }
    // The job's namespace and the release namespace go with the guards.
    cluster_objects.0.clear();
    drop(release);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A VisionAlgorithm whose simulated pod runs 1 s and returns {"ok":true}.
fn algorithm(name: &str, ar: &ApiResource) -> DynamicObject {
    let mut a = DynamicObject::new(name, ar);
    a.data = json!({"spec": {
        "gpusPerJob": 1,
        "timeoutSeconds": 60,
        "retries": 0,
        "template": {
            "metadata": {"annotations": {
                "sim.vision.zjlab.io/duration": "1s",
                "sim.vision.zjlab.io/message": "{\"ok\":true}",
            }},
            "spec": {"containers": [{
                "name": "algorithm",
                "image": "registry.example.com/vision/sim:1",
                "command": ["/bin/algorithm"],
            }]},
        },
    }});
    a
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
    let dir = common::repo_root().join(".local/helm");
    std::fs::create_dir_all(&dir).unwrap();
    let (v1, v2) = (
        dir.join(format!("{group}-1.yaml")),
        dir.join(format!("{group}-2.yaml")),
    );
    std::fs::write(&v1, crd("one")).unwrap();
    std::fs::write(&v2, crd("two")).unwrap();
    let _cleanup = ClusterScoped(vec![format!("crd/widgets.{group}")]);
    let kubectl = |args: &[&str]| {
        Command::new(common::kubectl_path())
            .arg("--kubeconfig")
            .arg(common::kubeconfig_path())
            .args(args)
            .output()
            .unwrap()
    };
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
