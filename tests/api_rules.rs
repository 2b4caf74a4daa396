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
