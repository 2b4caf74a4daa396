//! End-to-end: the manifests under examples/ work as the README says, applied
//! with kubectl as a user would: the queue and algorithms register, the jobs
//! run to their scripted results (the OCR job through one retry), and the
//! invalid job is refused by the API server.
#![cfg(feature = "e2e")]

mod harness;

use std::time::Duration;

use harness::Scenario;
use kube::Api;
use kube::api::DeleteParams;
use serde_json::json;
use vision_api::{JobPhase, VisionJob};

#[tokio::test]
async fn the_examples_run_as_documented() {
    // paddle-ocr only accepts jobs from default, team-a and team-b. The
    // examples' queue and algorithms are the user's: applied as they are.
    let ns = "team-a";
    let mut s = Scenario::new("examples").in_namespace(ns).start().await;
    let examples = harness::repo_root().join("examples");
    let path = |p: &str| examples.join(p).display().to_string();
    harness::kubectl([
        "apply",
        "-f",
        &path("queue-default.yaml"),
        "-f",
        &path("algorithms.yaml"),
    ]);
    // The operator runs first: it removes the finalizers of jobs a former
    // run left behind.
    s.start_operator().await;
    let jobs: Api<VisionJob> = s.jobs();
    delete_jobs(&jobs).await;
    for file in [
        "jobs/detect.yaml",
        "jobs/segment-urgent.yaml",
        "jobs/ocr.yaml",
    ] {
        harness::kubectl(["apply", "-n", ns, "-f", &path(file)]);
    }

    let wait = |name: &'static str| {
        let jobs = jobs.clone();
        async move {
            let ok = harness::wait_for(Duration::from_secs(90), || async {
                jobs.get(name)
                    .await
                    .ok()
                    .and_then(|j| j.phase())
                    .is_some_and(|p| p.is_final())
            })
            .await;
            let job = jobs.get(name).await.unwrap();
            assert!(ok, "{name} did not finish: {:#?}", job.status);
            job.status.unwrap()
        }
    };
    let detect = wait("cam42-frame-0001").await;
    assert_eq!(
        detect.phase,
        Some(JobPhase::Succeeded),
        "{:?}",
        detect.message
    );
    assert_eq!(
        detect.result,
        Some(json!({"objects": [{"label": "car", "score": 0.91, "box": [12, 40, 230, 180]}]}))
    );
    let segment = wait("incident-7-segment").await;
    assert_eq!(
        segment.phase,
        Some(JobPhase::Succeeded),
        "{:?}",
        segment.message
    );
    assert_eq!(segment.gpus, Some(4));
    let ocr = wait("plate-0042-ocr").await;
    assert_eq!(ocr.phase, Some(JobPhase::Succeeded), "{:?}", ocr.message);
    assert_eq!(
        ocr.attempts,
        Some(2),
        "the simulated OCR backend fails the first attempt"
    );
    assert_eq!(
        ocr.result,
        Some(json!({"text": "ZJ-LAB 2026", "confidence": 0.97}))
    );

    let out = harness::kubectl_output(["apply", "-n", ns, "-f", &path("jobs/invalid.yaml")]);
    assert!(!out.status.success(), "the invalid example must be refused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.algorithm must be a lowercase DNS name such as yolo-detect"),
        "{err}"
    );
    assert!(err.contains("spec.gpus"), "{err}");

    delete_jobs(&jobs).await;
}

const JOBS: [&str; 3] = ["cam42-frame-0001", "incident-7-segment", "plate-0042-ocr"];

/// Deletes the example jobs and waits until they are gone.
async fn delete_jobs(jobs: &Api<VisionJob>) {
    for name in JOBS {
        let _ = jobs.delete(name, &DeleteParams::default()).await;
    }
    let gone = harness::wait_for(Duration::from_secs(30), || async {
        let mut gone = true;
        for name in JOBS {
            gone &= jobs.get_opt(name).await.unwrap().is_none();
        }
        gone
    })
    .await;
    assert!(gone, "the example jobs were not deleted");
}
