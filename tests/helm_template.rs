//! The Helm chart (charts/vision-operator) as files, with no cluster:
//!
//! - `helm lint --strict`;
//! - `helm template`: the restricted security context, the probes and
//!   resources, and the RBAC rules exactly as intended (nothing more);
//! - the values schema refuses wrong values with a message naming the value.
//!
//! (Installing it into the local cluster: tests/helm_install.rs.) These need
//! the helm binary built by `hack/cluster.sh` (or `$VISION_HELM`) but no
//! running cluster; they run with the end-to-end tests (`hack/test.sh`, or
//! `cargo test --features e2e --test helm_template`). A missing helm is a
//! failure, never a skip.
#![cfg(feature = "e2e")]

mod harness;

use std::collections::{BTreeMap, BTreeSet};

use harness::helm::{CHART, KUBE_VERSION, MUTATING_POLICY_API, helm, helm_raw, parse_docs};
use serde_json::{Value, json};

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
    let chart: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(harness::repo_root().join(CHART).join("Chart.yaml")).unwrap(),
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
            &["get", "list", "watch", "create", "patch", "delete"],
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

/// The policy that gives new jobs the operator's finalizer renders only
/// where the API server serves MutatingAdmissionPolicy v1 (helm install
/// reads that from discovery), matches job CREATEs only, never refuses a job
/// (Ignore), adds exactly the finalizer the operator uses, and is left out
/// when no operator runs (replicaCount 0).
#[test]
fn template_job_finalizer_policy_where_the_api_exists() {
    assert_eq!(count(&render(&[]), "MutatingAdmissionPolicy"), 0);
    // No operator (replicaCount 0): nobody would remove the finalizer.
    let none = render(&[
        "--api-versions",
        MUTATING_POLICY_API,
        "--set",
        "replicaCount=0",
    ]);
    assert_eq!(count(&none, "MutatingAdmissionPolicy"), 0);
    let objs = render(&["--api-versions", MUTATING_POLICY_API]);
    let name = "vo-vision-operator-job-finalizer";
    let policy = find(&objs, "MutatingAdmissionPolicy", name);
    let binding = find(&objs, "MutatingAdmissionPolicyBinding", name);
    assert_eq!(binding["spec"], json!({"policyName": name}));
    assert_eq!(policy["spec"]["failurePolicy"], "Ignore");
    assert_eq!(
        policy["spec"]["matchConstraints"],
        json!({"resourceRules": [{
            "apiGroups": ["vision.zjlab.io"],
            "apiVersions": ["*"],
            "operations": ["CREATE"],
            "resources": ["visionjobs"],
        }]})
    );
    assert_eq!(
        policy["spec"]["mutations"],
        json!([{
            "patchType": "ApplyConfiguration",
            "applyConfiguration": {"expression": format!(
                "Object{{metadata: Object.metadata{{finalizers: [\"{}\"]}}}}",
                vision_operator::controller::FINALIZER
            )},
        }])
    );
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
                "ValidatingAdmissionPolicy",
                "ValidatingAdmissionPolicyBinding",
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
    assert_eq!(val("GLIBC_TUNABLES"), "glibc.malloc.arena_max=1");
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

    // Roles for people, aggregated into the built-in ones (namespaced:
    // VisionJobs only), never a status write.
    let g = "vision.zjlab.io";
    let all_verbs = [
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection",
    ];
    let edit = find(&objs, "ClusterRole", "vo-vision-operator-edit");
    assert_eq!(
        aggregation_labels(edit),
        BTreeMap::from([
            ("rbac.authorization.k8s.io/aggregate-to-admin", "true"),
            ("rbac.authorization.k8s.io/aggregate-to-edit", "true"),
        ])
    );
    assert_eq!(
        rules(edit),
        BTreeSet::from([rule(&[g], &["visionjobs"], &[], &all_verbs)])
    );
    let view = find(&objs, "ClusterRole", "vo-vision-operator-view");
    assert_eq!(
        aggregation_labels(view),
        BTreeMap::from([("rbac.authorization.k8s.io/aggregate-to-view", "true")])
    );
    assert_eq!(
        rules(view),
        BTreeSet::from([
            rule(&[g], &["visionjobs"], &[], &["get", "list", "watch"]),
            rule(&[g], &["visionjobs/status"], &[], &["get"]),
        ])
    );
    // Queues and algorithms (cluster-scoped): read by every authenticated
    // identity through a ClusterRoleBinding, not aggregated.
    let reader = find(&objs, "ClusterRole", "vo-vision-operator-queue-reader");
    assert_eq!(aggregation_labels(reader), BTreeMap::new());
    assert_eq!(
        rules(reader),
        BTreeSet::from([
            rule(
                &[g],
                &["visionqueues", "visionalgorithms"],
                &[],
                &["get", "list", "watch"]
            ),
            rule(
                &[g],
                &["visionqueues/status", "visionalgorithms/status"],
                &[],
                &["get"]
            ),
        ])
    );
    let reader_binding = find(
        &objs,
        "ClusterRoleBinding",
        "vo-vision-operator-queue-reader",
    );
    assert_eq!(
        reader_binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "vo-vision-operator-queue-reader"})
    );
    assert_eq!(
        reader_binding["subjects"],
        json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"}])
    );
    // The platform's admins: all three kinds everywhere, no status write;
    // created, bound only to the groups the values name (none by default).
    let platform = find(&objs, "ClusterRole", "vo-vision-operator-platform-admin");
    assert_eq!(aggregation_labels(platform), BTreeMap::new());
    assert_eq!(
        rules(platform),
        BTreeSet::from([
            rule(
                &[g],
                &["visionqueues", "visionalgorithms", "visionjobs"],
                &[],
                &all_verbs
            ),
            rule(
                &[g],
                &[
                    "visionqueues/status",
                    "visionalgorithms/status",
                    "visionjobs/status"
                ],
                &[],
                &["get"]
            ),
        ])
    );
    assert_eq!(count(&objs, "ClusterRole"), 5);
    assert_eq!(
        count(&objs, "ClusterRoleBinding"),
        2,
        "the operator's role and the queue reader's are bound"
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
    assert_eq!(count(&objs, "ClusterRole"), 5);
    let objs = render(&["--set", "rbac.create=false"]);
    for k in ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"] {
        assert_eq!(count(&objs, k), 0, "{k} rendered with rbac.create=false");
    }
    let objs = render(&["--set", "rbac.aggregateToDefaultRoles=false"]);
    assert_eq!(
        names(&objs, "ClusterRole"),
        BTreeSet::from([
            "vo-vision-operator",
            "vo-vision-operator-queue-reader",
            "vo-vision-operator-platform-admin"
        ])
    );
    // No queue readers: the role stays (to bind yourself), its binding goes.
    let objs = render(&["--set-json", "rbac.queueReaderGroups=[]"]);
    find(&objs, "ClusterRole", "vo-vision-operator-queue-reader");
    assert_eq!(
        names(&objs, "ClusterRoleBinding"),
        BTreeSet::from(["vo-vision-operator"])
    );
    // Groups of your own, for both.
    let objs = render(&[
        "--set-json",
        r#"rbac.queueReaderGroups=["vision-users","system:serviceaccounts:team-a"]"#,
        "--set-json",
        r#"rbac.platformAdminGroups=["platform-team"]"#,
    ]);
    let group = |name: &str| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": name});
    assert_eq!(
        find(
            &objs,
            "ClusterRoleBinding",
            "vo-vision-operator-queue-reader"
        )["subjects"],
        json!([
            group("vision-users"),
            group("system:serviceaccounts:team-a")
        ])
    );
    let admins = find(
        &objs,
        "ClusterRoleBinding",
        "vo-vision-operator-platform-admin",
    );
    assert_eq!(admins["subjects"], json!([group("platform-team")]));
    assert_eq!(
        admins["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "vo-vision-operator-platform-admin"})
    );
}

/// The `rbac.authorization.k8s.io/aggregate-to-*` labels of a role.
fn aggregation_labels(role: &Value) -> BTreeMap<&str, &str> {
    role["metadata"]["labels"]
        .as_object()
        .expect("labels")
        .iter()
        .filter(|(k, _)| k.starts_with("rbac.authorization.k8s.io/aggregate-to-"))
        .map(|(k, v)| (k.as_str(), v.as_str().expect("a string label")))
        .collect()
}

/// The names of the rendered objects of a kind.
fn names<'a>(objs: &'a [Value], kind: &str) -> BTreeSet<&'a str> {
    objs.iter()
        .filter(|o| o["kind"] == kind)
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect()
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
        ("rbac.queueReaderGroups=everyone", "queueReaderGroups"),
        ("rbac.platformAdminGroups=admins", "platformAdminGroups"),
        ("monitoring.dashboard.enabled=yes", "enabled"),
        ("monitoring.prometheusRule.noLeader.for=5 minutes", "for"),
        (
            "monitoring.prometheusRule.algorithmFailing.ratio=2",
            "ratio",
        ),
        (
            "monitoring.prometheusRule.namespace=Not_A_Name",
            "namespace",
        ),
        ("monitoring.grafana=true", "grafana"),
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

#[test]
fn template_monitoring_is_opt_in() {
    // Disabled by default: neither object.
    let objs = render(&[]);
    assert_eq!(count(&objs, "PrometheusRule"), 0);
    assert_eq!(
        objs.iter()
            .filter(|o| o["kind"] == "ConfigMap"
                && o["metadata"]["name"] == "vo-vision-operator-dashboard")
            .count(),
        0
    );

    // The dashboard alone.
    let objs = render(&["--set", "monitoring.dashboard.enabled=true"]);
    assert_eq!(count(&objs, "PrometheusRule"), 0);
    let cm = find(&objs, "ConfigMap", "vo-vision-operator-dashboard");
    assert_eq!(cm["metadata"]["namespace"], "vision-system");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let data: Vec<&String> = cm["data"].as_object().unwrap().keys().collect();
    assert_eq!(data, ["vision-operator.json"]);
    let shipped = std::fs::read_to_string(format!("{CHART}/dashboards/vision-operator.json"))
        .expect("the dashboard file");
    assert_eq!(
        cm["data"]["vision-operator.json"].as_str().unwrap(),
        shipped.trim_end(),
        "the ConfigMap carries the chart's dashboard file as it is"
    );
    let dashboard: Value = serde_json::from_str(&shipped).expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "vision-operator");
    let titles: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        titles,
        [
            "Operator",
            "Leader replicas",
            "Leader by pod",
            "Reconcile errors",
            "Queues",
            "Slots in use vs maxRunning",
            "GPUs in use vs maxGpus",
            "Pending jobs by the head's wait reason",
            "Oldest waiting job",
            "Admission rate",
            "Admission wait (p50, p99)",
            "Jobs by phase",
            "Algorithms",
            "Running per algorithm",
            "Breaker state",
            "Job outcomes",
            "Failure ratio",
        ]
    );

    // The rules alone, with their options.
    let objs = render(&[
        "--set",
        "monitoring.prometheusRule.enabled=true,monitoring.prometheusRule.labels.release=prom",
        "--set",
        "monitoring.prometheusRule.namespace=monitoring,monitoring.prometheusRule.queueStalled.window=30m",
        "--set-string",
        r#"monitoring.prometheusRule.selector=namespace="vision-system""#,
    ]);
    assert_eq!(count(&objs, "ConfigMap"), 0);
    let rule = find(&objs, "PrometheusRule", "vo-vision-operator");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["metadata"]["namespace"], "monitoring");
    assert_eq!(rule["metadata"]["labels"]["release"], "prom");
    let rules = rule["spec"]["groups"][0]["rules"].as_array().unwrap();
    let alerts: Vec<(&str, &str, &str)> = rules
        .iter()
        .map(|r| {
            (
                r["alert"].as_str().unwrap(),
                r["for"].as_str().unwrap(),
                r["annotations"]["runbook_url"].as_str().unwrap(),
            )
        })
        .collect();
    let runbook = "https://github.com/zjlab/vision-operator/blob/main/docs/RUNBOOKS.md";
    assert_eq!(
        alerts,
        [
            (
                "VisionOperatorNoLeader",
                "5m",
                &*format!("{runbook}#visionoperatornoleader")
            ),
            (
                "VisionOperatorTwoLeaders",
                "2m",
                &*format!("{runbook}#visionoperatortwoleaders")
            ),
            (
                "VisionQueueStalled",
                "5m",
                &*format!("{runbook}#visionqueuestalled")
            ),
            (
                "VisionAlgorithmBreakerOpen",
                "2m",
                &*format!("{runbook}#visionalgorithmbreakeropen")
            ),
            (
                "VisionOperatorReconcileErrors",
                "10m",
                &*format!("{runbook}#visionoperatorreconcileerrors")
            ),
            (
                "VisionAlgorithmFailing",
                "5m",
                &*format!("{runbook}#visionalgorithmfailing")
            ),
        ]
    );
    assert_eq!(
        rules[0]["expr"],
        r#"(sum(vision_operator_is_leader{namespace="vision-system"}) or vector(0)) < 1"#
    );
    assert_eq!(
        rules[4]["expr"],
        r#"sum(rate(vision_operator_reconcile_errors_total{namespace="vision-system",kind!~"conflict|pods_terminating"}[5m])) > 0.1"#
    );
    assert!(
        rules[2]["expr"].as_str().unwrap().contains(
            r#"increase(vision_operator_admissions_total{namespace="vision-system"}[30m])"#
        ),
        "{}",
        rules[2]["expr"]
    );
    // Every runbook anchor is a heading of docs/RUNBOOKS.md.
    let runbooks = std::fs::read_to_string("docs/RUNBOOKS.md").expect("docs/RUNBOOKS.md");
    for (alert, _, _) in &alerts {
        assert!(
            runbooks.lines().any(|l| l == format!("## {alert}")),
            "docs/RUNBOOKS.md has no section \"## {alert}\""
        );
    }
}

/// The operator container's env as name -> value (literal values only).
fn env_of(objs: &[Value]) -> BTreeMap<String, String> {
    let deploy = find(objs, "Deployment", "vo-vision-operator");
    deploy["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_string(),
                e["value"].as_str()?.to_string(),
            ))
        })
        .collect()
}

#[test]
fn template_worker_mode_is_opt_in_and_routes_workers_to_the_leader() {
    // Off by default: no endpoint, no Service, no TokenReviews.
    let objs = render(&[]);
    assert!(!env_of(&objs).contains_key("VISION_WORKER_ADDR"));
    assert!(
        names(&objs, "Service")
            .iter()
            .all(|n| !n.ends_with("-workers"))
    );
    assert_eq!(
        rules(find(&objs, "ClusterRole", "vo-vision-operator")),
        expected_cluster_rules()
    );

    let objs = render(&[
        "--set",
        "workers.enabled=true,workers.port=9191,workers.namespace=gpu-workers",
    ]);
    let env = env_of(&objs);
    assert_eq!(env["VISION_WORKER_ADDR"], "0.0.0.0:9191");
    assert_eq!(env["VISION_WORKER_NAMESPACE"], "gpu-workers");
    assert_eq!(
        env["VISION_WORKER_POD_ENDPOINT"],
        "http://vo-vision-operator-workers.vision-system.svc:9191"
    );
    let deploy = find(&objs, "Deployment", "vo-vision-operator");
    let ports = &deploy["spec"]["template"]["spec"]["containers"][0]["ports"];
    assert!(
        ports
            .as_array()
            .unwrap()
            .contains(&json!({"name": "grpc-workers", "containerPort": 9191, "protocol": "TCP"})),
        "{ports}"
    );
    // The Service selects the operator's pods that the leader labelled.
    let svc = find(&objs, "Service", "vo-vision-operator-workers");
    assert_eq!(svc["metadata"]["namespace"], "vision-system");
    assert_eq!(
        svc["spec"]["selector"],
        json!({
            "app.kubernetes.io/name": "vision-operator",
            "app.kubernetes.io/instance": "vo",
            vision_operator::workers::LABEL_SERVES_WORKERS: "true",
        })
    );
    assert_eq!(
        svc["spec"]["ports"],
        json!([{"name": "grpc-workers", "port": 9191, "targetPort": "grpc-workers", "protocol": "TCP", "appProtocol": "kubernetes.io/h2c"}])
    );
    // Exactly two more rules: TokenReviews for the workers' tokens, and
    // the worker pods' blocking ownerReference to their algorithm.
    let mut want = expected_cluster_rules();
    want.insert(rule(
        &["authentication.k8s.io"],
        &["tokenreviews"],
        &[],
        &["create"],
    ));
    want.insert(rule(
        &["vision.zjlab.io"],
        &["visionalgorithms/finalizers"],
        &[],
        &["update"],
    ));
    assert_eq!(
        rules(find(&objs, "ClusterRole", "vo-vision-operator")),
        want
    );

    // Where pods cannot resolve cluster DNS, the endpoint is set.
    let env = env_of(&render(&[
        "--set",
        "workers.enabled=true,workers.endpoint=http://10.96.0.9:9090",
    ]));
    assert_eq!(env["VISION_WORKER_POD_ENDPOINT"], "http://10.96.0.9:9090");

    // The namespace defaults to the release's.
    let env = env_of(&render(&["--set", "workers.enabled=true"]));
    assert_eq!(env["VISION_WORKER_NAMESPACE"], "vision-system");
    assert_eq!(env["VISION_WORKER_ADDR"], "0.0.0.0:9090");
}
