//! The CRD's CEL rules, evaluated client-side with kube's CEL evaluator: what
//! may and may not change on a VisionJob after creation.

use serde_json::json;
use vision_operator::api::{VisionJob, VisionQueue};

fn mk_job(spec: serde_json::Value) -> VisionJob {
    serde_json::from_value(json!({
        "apiVersion": "vision.zjlab.io/v1alpha1",
        "kind": "VisionJob",
        "metadata": {"name": "j", "namespace": "ns"},
        "spec": spec,
    }))
    .unwrap()
}

fn base() -> serde_json::Value {
    json!({"algorithm": "yolo-detect", "input": {"uri": "s3://a"}, "params": {"c": 0.5}, "gpus": 1, "retries": 1})
}

fn with(field: &str, value: serde_json::Value) -> VisionJob {
    let mut spec = base();
    spec[field] = value;
    mk_job(spec)
}

#[test]
fn suspend_and_priority_may_change() {
    let old = mk_job(base());
    kube::core::cel::validate_cel_update(&with("suspend", json!(true)), &old).unwrap();
    kube::core::cel::validate_cel_update(&with("priority", json!(7)), &old).unwrap();
}

#[test]
fn identity_fields_are_immutable() {
    let old = mk_job(base());
    for (field, value, message) in [
        (
            "algorithm",
            json!("sam-segment"),
            "spec.algorithm is immutable",
        ),
        ("queue", json!("other"), "spec.queue is immutable"),
        ("gpus", json!(2), "spec.gpus is immutable"),
        ("retries", json!(3), "spec.retries is immutable"),
        ("input", json!({"uri": "s3://b"}), "spec.input is immutable"),
        ("params", json!({"c": 0.9}), "spec.params is immutable"),
    ] {
        let err = kube::core::cel::validate_cel_update(&with(field, value), &old)
            .expect_err(field)
            .to_string();
        assert!(err.contains(message), "{field}: {err}");
    }
}

#[test]
fn names_must_be_dns_names() {
    let err = kube::core::cel::validate_cel(&with("algorithm", json!("Bad_Name"))).unwrap_err();
    assert!(err.to_string().contains("lowercase DNS name"), "{err}");
    let err = kube::core::cel::validate_cel(&with("queue", json!("Q 1"))).unwrap_err();
    assert!(
        err.to_string()
            .contains("spec.queue must be a lowercase DNS name"),
        "{err}"
    );
}

#[test]
fn queue_defaults_apply_when_omitted() {
    let q: VisionQueue = serde_json::from_value(json!({
        "apiVersion": "vision.zjlab.io/v1alpha1", "kind": "VisionQueue",
        "metadata": {"name": "default"}, "spec": {"maxRunning": 3}
    }))
    .unwrap();
    assert_eq!(q.spec.max_running, 3);
    assert!(!q.spec.paused);
    let j = mk_job(json!({"algorithm": "a"}));
    assert_eq!(j.spec.queue, "default");
    assert_eq!(j.spec.priority, 0);
}
