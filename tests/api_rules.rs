//! The CRD's CEL rules, evaluated client-side with kube's CEL evaluator: what
//! may and may not change on a VisionJob after creation.

use serde_json::json;
use vision_api::testing::{JobFixture, mk_job};
use vision_api::{VisionJob, VisionQueue};

/// A job with every immutable field set.
fn base() -> VisionJob {
    mk_job("ns", "j", "yolo-detect")
        .with_input(json!({"uri": "s3://a"}))
        .with_params(json!({"c": 0.5}))
        .with_gpus(1)
        .with_retries(1)
}

/// The base job with one change.
fn with(change: impl FnOnce(&mut VisionJob)) -> VisionJob {
    let mut job = base();
    change(&mut job);
    job
}

#[test]
fn suspend_and_priority_may_change() {
    let old = base();
    kube::core::cel::validate_cel_update(&base().suspended(), &old).unwrap();
    kube::core::cel::validate_cel_update(&base().with_priority(7), &old).unwrap();
}

#[test]
fn identity_fields_are_immutable() {
    let old = base();
    let cases: [(&str, VisionJob, &str); 6] = [
        (
            "algorithm",
            with(|j| j.spec.algorithm = "sam-segment".into()),
            "spec.algorithm is immutable",
        ),
        (
            "queue",
            base().with_queue("other"),
            "spec.queue is immutable",
        ),
        ("gpus", base().with_gpus(2), "spec.gpus is immutable"),
        (
            "retries",
            base().with_retries(3),
            "spec.retries is immutable",
        ),
        (
            "input",
            base().with_input(json!({"uri": "s3://b"})),
            "spec.input is immutable",
        ),
        (
            "params",
            base().with_params(json!({"c": 0.9})),
            "spec.params is immutable",
        ),
    ];
    for (field, new, message) in cases {
        let err = kube::core::cel::validate_cel_update(&new, &old)
            .expect_err(field)
            .to_string();
        assert!(err.contains(message), "{field}: {err}");
    }
}

#[test]
fn names_must_be_dns_names() {
    let err =
        kube::core::cel::validate_cel(&with(|j| j.spec.algorithm = "Bad_Name".into())).unwrap_err();
    assert!(err.to_string().contains("lowercase DNS name"), "{err}");
    let err = kube::core::cel::validate_cel(&base().with_queue("Q 1")).unwrap_err();
    assert!(
        err.to_string()
            .contains("spec.queue must be a lowercase DNS name"),
        "{err}"
    );
}

/// What a manifest that omits the optional fields reads as (this one is
/// about parsing manifests, so its inputs are JSON as a user writes them).
#[test]
fn queue_defaults_apply_when_omitted() {
    let q: VisionQueue = serde_json::from_value(json!({
        "apiVersion": "vision.zjlab.io/v1alpha1", "kind": "VisionQueue",
        "metadata": {"name": "default"}, "spec": {"maxRunning": 3}
    }))
    .unwrap();
    assert_eq!(q.spec.max_running, 3);
    assert!(!q.spec.paused);
    let j: VisionJob = serde_json::from_value(json!({
        "apiVersion": "vision.zjlab.io/v1alpha1", "kind": "VisionJob",
        "metadata": {"name": "j", "namespace": "ns"}, "spec": {"algorithm": "a"}
    }))
    .unwrap();
    assert_eq!(j.spec.queue, "default");
    assert_eq!(j.spec.priority, 0);
}

#[cfg(feature = "e2e")]
mod harness;

/// One template of the chart as `helm template` renders it, with `extra`
/// arguments (e.g. `--api-versions`).
#[cfg(feature = "e2e")]
fn chart_template(template: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    use harness::helm::{CHART, KUBE_VERSION, helm, parse_docs};
    let mut args = vec![
        "template",
        "vo",
        CHART,
        "--kube-version",
        KUBE_VERSION,
        "--show-only",
        template,
    ];
    args.extend_from_slice(extra);
    parse_docs(&helm(&args))
}

/// End-to-end: the chart's admission policy (templates/job-size-policy.yaml)
/// refuses, at apply time and with a message that says what to do, a job
/// whose input and params are more than its pod may carry. Applied here as
/// the chart renders it, renamed and bound to the test's namespace only (the
/// cluster is shared).
#[cfg(feature = "e2e")]
#[tokio::test]
async fn a_job_too_large_for_its_pod_is_refused_at_apply_time() {
    use harness::cluster::ClusterObjects;
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    use kube::api::PostParams;
    use kube::{Api, ResourceExt};
    use std::time::Duration;

    let w = harness::Scenario::new("jobsize").start().await;
    let name = format!("{}-job-size", w.namespace);
    let docs = chart_template("templates/job-size-policy.yaml", &[]);
    let [policy, binding] = docs.as_slice() else {
        panic!("the template renders a policy and its binding: {docs:?}");
    };
    let mut policy: ValidatingAdmissionPolicy = serde_json::from_value(policy.clone()).unwrap();
    let mut binding: ValidatingAdmissionPolicyBinding =
        serde_json::from_value(binding.clone()).unwrap();
    assert_eq!(
        binding.spec.as_ref().unwrap().policy_name.as_deref(),
        policy.metadata.name.as_deref()
    );
    policy.metadata.name = Some(name.clone());
    binding.metadata.name = Some(name.clone());
    let spec = binding.spec.as_mut().unwrap();
    spec.policy_name = Some(name.clone());
    spec.match_resources = Some(
        serde_json::from_value(json!({
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": w.namespace}}
        }))
        .unwrap(),
    );
    let _cleanup = ClusterObjects(vec![
        format!("validatingadmissionpolicybinding/{name}"),
        format!("validatingadmissionpolicy/{name}"),
    ]);
    let pp = PostParams::default();
    Api::<ValidatingAdmissionPolicy>::all(w.client.clone())
        .create(&pp, &policy)
        .await
        .unwrap();
    Api::<ValidatingAdmissionPolicyBinding>::all(w.client.clone())
        .create(&pp, &binding)
        .await
        .unwrap();

    // As a user applies it: input {"uri": ...} and params {"blob": 200,000 x}.
    let job = |blob: usize| {
        let mut job = w
            .job("big", "detect")
            .with_input(json!({"uri": "s3://frames/big.jpg"}))
            .with_params(json!({"blob": "x".repeat(blob)}));
        job.metadata.uid = None;
        job.metadata.generation = None;
        job.metadata.creation_timestamp = None;
        job
    };
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let create = |blob: usize| {
        let (jobs, job, dry_run) = (w.jobs(), job(blob), dry_run.clone());
        async move { jobs.create(&dry_run, &job).await }
    };
    // The API server takes the new policy into account within a second or two.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let refusal = loop {
        match create(200_000).await {
            Err(e) => break e,
            Ok(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Ok(_) => panic!("the policy never refused the job"),
        }
    };
    let kube::Error::Api(status) = refusal else {
        panic!("not an API error: {refusal:?}");
    };
    // 200,040: the size of the two values' string form as CEL writes it.
    assert_eq!(status.code, 422);
    assert_eq!(
        status.message,
        format!(
            "visionjobs.vision.zjlab.io \"big\" is forbidden: \
             ValidatingAdmissionPolicy '{name}' with binding '{name}' denied request: \
             spec.input and spec.params may hold at most 131072 bytes together (128 KiB: \
             the pod passes them to the algorithm in an annotation, and Kubernetes limits \
             a pod's annotations to 256 KiB); this job's hold 200040: pass large data by \
             reference, e.g. a URI in spec.input"
        )
    );
    // Within the bound: accepted.
    let accepted = create(100_000).await.unwrap();
    assert_eq!(accepted.name_any(), "big");
}

/// End-to-end: the chart's finalizer policy
/// (templates/job-finalizer-policy.yaml) gives a job the operator's
/// finalizer as the API server creates it, so the operator need not PATCH it
/// on (one request per job less), keeps the job's own finalizers and never
/// writes the operator's twice. Applied as the chart renders it for this
/// cluster (Kubernetes 1.37), renamed and bound to the test's namespace.
#[cfg(feature = "e2e")]
#[tokio::test]
async fn a_new_job_gets_the_operators_finalizer_from_the_chart_policy() {
    use harness::cluster::ClusterObjects;
    use harness::helm::MUTATING_POLICY_API;
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
    use kube::{Api, ResourceExt};
    use std::time::Duration;
    use vision_operator::controller::FINALIZER;

    let w = harness::Scenario::new("jobfin").start().await;
    let name = format!("{}-job-finalizer", w.namespace);
    let docs = chart_template(
        "templates/job-finalizer-policy.yaml",
        &["--api-versions", MUTATING_POLICY_API],
    );
    let [policy, binding] = docs.as_slice() else {
        panic!("the template renders a policy and its binding: {docs:?}");
    };
    let mut policy: DynamicObject = serde_json::from_value(policy.clone()).unwrap();
    let mut binding: DynamicObject = serde_json::from_value(binding.clone()).unwrap();
    policy.metadata.name = Some(name.clone());
    binding.metadata.name = Some(name.clone());
    binding.data["spec"] = json!({
        "policyName": name,
        "matchResources": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": w.namespace}}
        },
    });
    let _cleanup = ClusterObjects(vec![
        format!("mutatingadmissionpolicybinding/{name}"),
        format!("mutatingadmissionpolicy/{name}"),
    ]);
    let api = |kind: &str| {
        let gvk = GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind);
        Api::<DynamicObject>::all_with(w.client.clone(), &ApiResource::from_gvk(&gvk))
    };
    let pp = PostParams::default();
    api("MutatingAdmissionPolicy")
        .create(&pp, &policy)
        .await
        .unwrap();
    api("MutatingAdmissionPolicyBinding")
        .create(&pp, &binding)
        .await
        .unwrap();

    // Dry runs: the API server mutates them as it would, stores nothing
    // (no operator runs in this scenario to remove a finalizer).
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let create = |finalizers: Vec<String>| {
        let mut job = w.job("fin", "detect");
        job.metadata.uid = None;
        job.metadata.generation = None;
        job.metadata.creation_timestamp = None;
        job.metadata.finalizers = (!finalizers.is_empty()).then_some(finalizers);
        let (jobs, dry_run) = (w.jobs(), dry_run.clone());
        async move { jobs.create(&dry_run, &job).await.unwrap() }
    };
    // The API server takes the new policy into account within a second or two.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let created = create(vec![]).await;
        if !created.finalizers().is_empty() {
            assert_eq!(created.finalizers(), [FINALIZER.to_string()]);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the policy never added the finalizer"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let theirs = "example.com/keep".to_string();
    let created = create(vec![theirs.clone()]).await;
    assert_eq!(created.finalizers(), [theirs, FINALIZER.to_string()]);
    let created = create(vec![FINALIZER.to_string()]).await;
    assert_eq!(created.finalizers(), [FINALIZER.to_string()]);
}

/// End-to-end: the API server itself refuses a VisionAlgorithm whose
/// template has no container named `algorithm` (the CRD's CEL rule; the
/// client-side check is crates/vision-api/tests/algorithm_rules.rs), with
/// the rule's message. Before 6b7b2ec (e.g. c6ca22f) it was accepted and
/// every job of it failed later.
#[cfg(feature = "e2e")]
#[tokio::test]
async fn an_algorithm_without_an_algorithm_container_is_refused_at_apply_time() {
    use kube::api::PostParams;
    use vision_api::testing::{AlgorithmFixture, algorithm_container, mk_algorithm};

    let w = harness::Scenario::new("algrule").start().await;
    let mut main = algorithm_container(vision_api::testing::IMAGE);
    main.name = "main".into();
    let mut algorithm = mk_algorithm(&format!("{}-noalg", w.namespace)).with_pod_spec(
        k8s_openapi::api::core::v1::PodSpec {
            containers: vec![main],
            ..Default::default()
        },
    );
    algorithm.metadata.generation = None;
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let refusal = w
        .algorithms()
        .create(&dry_run, &algorithm)
        .await
        .expect_err("an algorithm without an algorithm container must be refused");
    let kube::Error::Api(status) = refusal else {
        panic!("not an API error: {refusal:?}");
    };
    assert_eq!(status.code, 422);
    assert_eq!(
        status.message,
        format!(
            "VisionAlgorithm.vision.zjlab.io \"{}-noalg\" is invalid: spec: Invalid value: \
             spec.template.spec.containers must include a container named \"algorithm\": \
             it runs the job, receives it in $VISION_JOB and /etc/vision/job.json, and \
             writes the result to /dev/termination-log",
            w.namespace
        )
    );
}
