//! The VisionAlgorithm CRD's CEL rules, evaluated client-side with kube's CEL
//! evaluator (the API server runs the same rules at apply time;
//! tests/api_rules.rs shows its refusal there).

use vision_api::testing::{algorithm_container, mk_algorithm};

#[test]
fn a_template_with_an_algorithm_container_is_accepted() {
    kube::core::cel::validate_cel(&mk_algorithm("yolo-detect")).unwrap();
}

#[test]
fn a_template_without_an_algorithm_container_is_refused() {
    let mut algorithm = mk_algorithm("yolo-detect");
    let spec = algorithm.spec.template.spec.as_mut().unwrap();
    spec.containers = vec![{
        let mut c = algorithm_container("registry.example/vision/algo:1");
        c.name = "main".into();
        c
    }];
    let err = kube::core::cel::validate_cel(&algorithm).expect_err("no algorithm container");
    assert!(
        err.to_string()
            .contains("must include a container named \"algorithm\""),
        "{err}"
    );
}

#[test]
fn a_template_without_a_pod_spec_is_refused() {
    let mut algorithm = mk_algorithm("yolo-detect");
    algorithm.spec.template.spec = None;
    kube::core::cel::validate_cel(&algorithm).expect_err("no pod spec");
}
