//! The CEL rules of a VisionJob's spec.output, evaluated client-side with
//! kube's CEL evaluator (the API server runs the same rules at apply time):
//! a path that would leave the claim's root or the job's directory, or a
//! claim name that is no PersistentVolumeClaim name, is refused.

use vision_api::testing::mk_job;
use vision_api::{JobOutput, OutputClaim, VisionJob};

fn job_with_output(claim: &str, path: Option<&str>) -> VisionJob {
    let mut job = mk_job("ns", "j", "face-detect");
    job.spec.output = Some(JobOutput {
        persistent_volume_claim: OutputClaim {
            claim_name: claim.into(),
        },
        path: path.map(str::to_string),
    });
    job
}

#[test]
fn relative_paths_and_the_default_are_accepted() {
    for path in [
        None,
        Some("results"),
        Some("cams/42/frames"),
        Some("a..b/c"),
        Some("./x"),
        Some("x/"),
    ] {
        kube::core::cel::validate_cel(&job_with_output("vision-results", path))
            .unwrap_or_else(|e| panic!("{path:?}: {e}"));
    }
}

#[test]
fn absolute_paths_are_refused() {
    let err = kube::core::cel::validate_cel(&job_with_output("results", Some("/etc")))
        .expect_err("absolute path")
        .to_string();
    assert!(
        err.contains("spec.output.path must be relative to the claim's root"),
        "{err}"
    );
}

#[test]
fn paths_with_a_parent_element_are_refused() {
    for path in ["..", "../other-team", "a/../../b", "a/.."] {
        let err = kube::core::cel::validate_cel(&job_with_output("results", Some(path)))
            .expect_err(path)
            .to_string();
        assert!(
            err.contains("spec.output.path must not contain a '..' element"),
            "{path}: {err}"
        );
    }
}

#[test]
fn claim_names_must_be_dns_names() {
    let err = kube::core::cel::validate_cel(&job_with_output("Results_1", None))
        .expect_err("bad claim name")
        .to_string();
    assert!(
        err.contains("spec.output.persistentVolumeClaim.claimName must be a lowercase DNS name"),
        "{err}"
    );
}

#[test]
fn the_output_is_immutable() {
    let old = job_with_output("results", None);
    for new in [
        job_with_output("results", Some("elsewhere")),
        job_with_output("other", None),
        mk_job("ns", "j", "face-detect"),
    ] {
        let err = kube::core::cel::validate_cel_update(&new, &old)
            .expect_err("changed output")
            .to_string();
        assert!(err.contains("spec.output is immutable"), "{err}");
    }
    kube::core::cel::validate_cel_update(&old.clone(), &old).unwrap();
}

#[test]
fn each_attempt_writes_to_a_directory_of_its_own() {
    let default = job_with_output("results", None);
    assert_eq!(default.output_location(1).unwrap().path, "j/1");
    assert_eq!(default.output_location(2).unwrap().path, "j/2");
    let own = job_with_output("results", Some("cams/42/"));
    let location = own.output_location(3).unwrap();
    assert_eq!(location.claim_name, "results");
    assert_eq!(location.path, "cams/42/3");
    assert_eq!(mk_job("ns", "j", "a").output_location(1), None);
}
