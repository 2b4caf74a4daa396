//! End-to-end: a job's life on the local cluster with the operator running
//! as a process. Everything is checked by reading the cluster.
#![cfg(feature = "e2e")]

mod harness;

use std::time::Duration;

use harness::{Scenario, sim};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use vision_api::JobPhase;
use vision_api::testing::{AlgorithmFixture, JobFixture, mk_algorithm, mk_queue};

const T: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_job_runs_on_a_fake_gpu_node_and_reports_its_result() {
    let w = Scenario::new("lifecycle")
        .queue(mk_queue("pool", 2))
        .algorithm(
            mk_algorithm("detect")
                .with_gpus_per_job(1)
                .with_template_annotations(&[
                    (sim::DURATION, "1s"),
                    (sim::MESSAGE, r#"{"objects":[{"label":"car","score":0.9}]}"#),
                ]),
        )
        .operator()
        .start()
        .await;
    w.submit(
        w.job("frame-1", "detect")
            .with_params(json!({"confidence": 0.5})),
    )
    .await;

    let job = w.wait_phase("frame-1", JobPhase::Succeeded, T).await;
    let status = job.status.unwrap();
    assert_eq!(
        status.result,
        Some(json!({"objects": [{"label": "car", "score": 0.9}]}))
    );
    assert_eq!(status.attempts, Some(1));
    assert_eq!(status.reason.as_deref(), Some("Completed"));
    assert_eq!(status.pod_name.as_deref(), Some("frame-1-1"));
    assert_eq!(status.gpus, Some(1));
    assert!(
        status.queued_at.is_some()
            && status.admitted_at.is_some()
            && status.started_at.is_some()
            && status.finished_at.is_some()
    );
    let complete = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Complete")
        .expect("Complete condition");
    assert_eq!(complete.status, "True");
    assert_eq!(status.observed_generation, job.metadata.generation);

    // The real scheduler put the pod on a fake GPU node; the pod carries the contract.
    let pod = w.pods().get("frame-1-1").await.unwrap();
    let node_name = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .expect("pod scheduled");
    let node = Api::<Node>::all(w.client.clone())
        .get(&node_name)
        .await
        .unwrap();
    let gpus = node
        .status
        .and_then(|s| s.capacity)
        .and_then(|c| c.get("nvidia.com/gpu").cloned());
    assert!(gpus.is_some(), "node {node_name} has no GPU capacity");
    let spec = pod.spec.unwrap();
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    let c = spec
        .containers
        .iter()
        .find(|c| c.name == "algorithm")
        .unwrap();
    assert_eq!(
        c.resources.as_ref().unwrap().limits.as_ref().unwrap()["nvidia.com/gpu"].0,
        "1"
    );
    let env: serde_json::Value = serde_json::from_str(
        c.env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == "VISION_JOB")
            .unwrap()
            .value
            .as_deref()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(env["params"], json!({"confidence": 0.5}));
    assert_eq!(env["attempt"], json!(1));
    let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("VisionJob", "frame-1")
    );

    // With the default `--job-events outcomes`: an Event for how the job
    // ended, none for the steps its status shows (admittedAt, startedAt).
    // (Published in the background after the status write: wait for it.)
    let job_events = || {
        harness::kubectl([
            "get",
            "events.events.k8s.io",
            "-n",
            &w.namespace,
            "-o",
            r#"jsonpath={.items[?(@.regarding.kind=="VisionJob")].reason}"#,
        ])
    };
    harness::wait_for(T, || async { !job_events().trim().is_empty() }).await;
    let events = job_events();
    assert_eq!(
        events.split_whitespace().collect::<Vec<_>>(),
        vec!["Succeeded"],
        "{events:?}"
    );
}

#[tokio::test]
async fn failures_are_retried_then_fail_with_backoff_limit_exceeded() {
    let w = Scenario::new("retries")
        .queue(mk_queue("pool", 4))
        .algorithm(
            mk_algorithm("ocr")
                .with_retries(2)
                .with_template_annotations(&[
                    (sim::DURATION, "500ms"),
                    (sim::MESSAGE, r#"{"text":"ok"}"#),
                ]),
        )
        .operator()
        .start()
        .await;
    // Attempt 1 fails, attempt 2 succeeds.
    w.submit(
        w.job("flaky", "ocr")
            .with_annotations(&[(sim::FAIL_ATTEMPTS, "1")]),
    )
    .await;
    // Always fails; one retry allowed.
    w.submit(w.job("broken", "ocr").with_retries(1).with_annotations(&[
        (sim::OUTCOME, "fail"),
        (sim::EXIT_CODE, "3"),
        (sim::MESSAGE, "model file missing"),
    ]))
    .await;

    let flaky = w
        .wait_phase("flaky", JobPhase::Succeeded, T)
        .await
        .status
        .unwrap();
    assert_eq!(flaky.attempts, Some(2));
    assert_eq!(flaky.pod_name.as_deref(), Some("flaky-2"));
    assert_eq!(flaky.result, Some(json!({"text": "ok"})));

    let broken = w
        .wait_phase("broken", JobPhase::Failed, T)
        .await
        .status
        .unwrap();
    assert_eq!(broken.reason.as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!(broken.attempts, Some(2));
    let message = broken.message.unwrap();
    assert!(
        message.contains("exit code 3") && message.contains("model file missing"),
        "{message}"
    );
    // One pod per attempt, named <job>-<attempt>; the last attempt's is kept
    // (the queue's default podRetention), the earlier ones go once the job's
    // status has recorded their failure.
    for pod in ["flaky-2", "broken-2"] {
        w.pods()
            .get(pod)
            .await
            .unwrap_or_else(|e| panic!("pod {pod}: {e}"));
    }
    let earlier_gone = harness::wait_for(T, || async {
        w.pods().get_opt("flaky-1").await.unwrap().is_none()
            && w.pods().get_opt("broken-1").await.unwrap().is_none()
    })
    .await;
    assert!(earlier_gone, "the pods of attempt 1 were not deleted");
    assert!(w.pods().get_opt("broken-3").await.unwrap().is_none());
}

#[tokio::test]
async fn a_job_past_its_timeout_fails_with_timeout_and_its_pod_is_removed() {
    let w = Scenario::new("timeout")
        .queue(mk_queue("pool", 1))
        .algorithm(
            mk_algorithm("slow")
                .with_retries(3)
                .with_template_annotations(&[(sim::DURATION, "1h")]),
        )
        .operator()
        .start()
        .await;
    w.submit(w.job("stuck", "slow").with_timeout_seconds(2))
        .await;
    let job = w
        .wait_phase("stuck", JobPhase::Failed, T)
        .await
        .status
        .unwrap();
    assert_eq!(job.reason.as_deref(), Some("Timeout"));
    assert_eq!(job.attempts, Some(1), "a timeout is not retried");
    let gone = harness::wait_for(T, || async {
        w.pods().get_opt("stuck-1").await.unwrap().is_none()
    })
    .await;
    assert!(gone, "the timed-out pod was not deleted");
}

#[tokio::test]
async fn a_pod_deleted_from_outside_counts_as_a_failed_attempt() {
    let w = Scenario::new("poddel")
        .queue(mk_queue("pool", 1))
        .algorithm(
            mk_algorithm("long")
                .with_retries(0)
                .with_template_annotations(&[(sim::DURATION, "1h")]),
        )
        .operator()
        .start()
        .await;
    w.submit(w.job("victim", "long")).await;
    w.wait_phase("victim", JobPhase::Running, T).await;
    w.delete_pod("victim-1").await;
    let job = w
        .wait_phase("victim", JobPhase::Failed, T)
        .await
        .status
        .unwrap();
    assert_eq!(job.reason.as_deref(), Some("BackoffLimitExceeded"));
    assert!(
        job.message
            .as_deref()
            .unwrap_or_default()
            .contains("deleted"),
        "{:?}",
        job.message
    );
}

#[tokio::test]
async fn bad_input_fails_with_a_reason_and_creates_no_pod() {
    let w = Scenario::new("badinput")
        .queue(mk_queue("pool", 4))
        .algorithm(
            mk_algorithm("seg")
                .with_gpus_per_job(1)
                .with_max_gpus_per_job(2)
                .with_allowed_namespaces(&["somewhere-else"]),
        )
        .algorithm(
            mk_algorithm("open")
                .with_gpus_per_job(1)
                .with_max_gpus_per_job(2),
        )
        .operator()
        .start()
        .await;
    w.submit(w.job("no-such-algorithm", "does-not-exist")).await;
    w.submit(w.job("too-many-gpus", "open").with_gpus(8)).await;
    w.submit(w.job("wrong-namespace", "seg")).await;
    for (name, reason) in [
        ("no-such-algorithm", "AlgorithmNotFound"),
        ("too-many-gpus", "GPULimitExceeded"),
        ("wrong-namespace", "NamespaceNotAllowed"),
    ] {
        let s = w
            .wait_phase(name, JobPhase::Failed, T)
            .await
            .status
            .unwrap();
        assert_eq!(s.reason.as_deref(), Some(reason), "{name}: {:?}", s.message);
        assert!(s.message.is_some_and(|m| !m.is_empty()));
    }
    let pods = w.pods().list(&Default::default()).await.unwrap();
    assert!(
        pods.items.is_empty(),
        "no pod may be created for bad input: {:?}",
        pods.items.len()
    );

    // (The invalid example manifest is refused at apply time: tests/examples_e2e.rs.)

    // Immutable fields are refused by the API server too.
    w.submit(w.job("immutable", "open")).await;
    let patch = json!({"spec": {"input": {"uri": "s3://other"}}});
    let err = w
        .jobs()
        .patch("immutable", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("spec.input is immutable"), "{err}");
    let patch = json!({"spec": {"algorithm": "other"}});
    let err = w
        .jobs()
        .patch("immutable", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("spec.algorithm is immutable"),
        "{err}"
    );
}

#[tokio::test]
async fn delete_and_suspend_free_the_slot_and_remove_the_pod() {
    let w = Scenario::new("cancel")
        .queue(mk_queue("pool", 1))
        .algorithm(mk_algorithm("long").with_template_annotations(&[(sim::DURATION, "1h")]))
        .operator()
        .start()
        .await;
    let pods = w.watch_pods();
    w.submit(w.job("a", "long")).await;
    w.wait_phase("a", JobPhase::Running, T).await;
    w.submit(w.job("b", "long")).await;
    w.submit(w.job("c", "long")).await;
    let b = w.wait_phase("b", JobPhase::Queued, T).await.status.unwrap();
    assert_eq!(b.reason.as_deref(), Some("SlotsFull"));
    assert!(
        b.message.as_deref().unwrap().contains("position 1"),
        "{:?}",
        b.message
    );

    // Suspending the running job stops its pod, frees its slot for b, keeps the job.
    let suspend = json!({"spec": {"suspend": true}});
    w.jobs()
        .patch("a", &PatchParams::default(), &Patch::Merge(&suspend))
        .await
        .unwrap();
    w.wait_phase("a", JobPhase::Suspended, T).await;
    w.wait_phase("b", JobPhase::Running, T).await;
    assert!(
        w.pods().get_opt("a-1").await.unwrap().is_none(),
        "the suspended job's pod must be gone"
    );

    // Deleting the running job deletes its pod and frees the slot for c.
    w.jobs()
        .delete("b", &DeleteParams::default())
        .await
        .unwrap();
    w.wait_phase("c", JobPhase::Running, T).await;
    let gone = harness::wait_for(T, || async {
        w.jobs().get_opt("b").await.unwrap().is_none()
            && w.pods().get_opt("b-1").await.unwrap().is_none()
    })
    .await;
    assert!(gone, "deleted job b or its pod is still there");

    // Resuming queues a again; it runs once c is gone.
    let resume = json!({"spec": {"suspend": false}});
    w.jobs()
        .patch("a", &PatchParams::default(), &Patch::Merge(&resume))
        .await
        .unwrap();
    w.wait_phase("a", JobPhase::Queued, T).await;
    w.jobs()
        .delete("c", &DeleteParams::default())
        .await
        .unwrap();
    let a = w
        .wait_phase("a", JobPhase::Running, T)
        .await
        .status
        .unwrap();
    assert_eq!(a.attempts, Some(2), "a resumed job starts a new attempt");
    assert_eq!(pods.max_live(), 1, "never more live pods than maxRunning");
}

/// A job whose input and params are more than its pod may carry fails at
/// once with reason JobTooLarge: never admitted, no pod, no slot held, so
/// the job queued behind it (maxRunning 1) runs. Its params are 50,000
/// control characters: small as the chart's admission policy measures them
/// (CEL's string form writes them raw), 300,000 bytes as the pod's JSON
/// annotation escapes them (`\u0001`), so the operator's exact check is what
/// refuses it, policy or not.
#[tokio::test]
async fn a_job_too_large_for_its_pod_fails_before_it_takes_a_slot() {
    let w = Scenario::new("toolarge")
        .queue(mk_queue("pool", 1))
        .algorithm(mk_algorithm("detect").with_template_annotations(&[(sim::DURATION, "1s")]))
        .operator()
        .start()
        .await;
    let pods = w.watch_pods();
    let blob = "\u{1}".repeat(50_000);
    let created = w
        .submit(w.job("huge", "detect").with_params(json!({ "blob": blob })))
        .await;
    w.submit(w.job("after", "detect")).await;

    let huge = w
        .wait_phase("huge", JobPhase::Failed, T)
        .await
        .status
        .unwrap();
    assert_eq!(huge.reason.as_deref(), Some("JobTooLarge"));
    // The message of the pure check (tests in src/validate.rs), on the job
    // and algorithm as the API server holds them.
    let algorithm = w.algorithms().get(&w.algorithm("detect")).await.unwrap();
    let invalid = vision_operator::validate::validate(&created, Some(&algorithm)).unwrap_err();
    assert_eq!(huge.message, Some(invalid.message));
    assert_eq!(huge.attempts, None, "never admitted");
    assert_eq!(huge.admitted_at, None, "never admitted");
    w.wait_phase("after", JobPhase::Succeeded, T).await;
    assert_eq!(
        pods.with(|t| t.pods.iter().map(|p| p.0.clone()).collect::<Vec<_>>()),
        vec!["after-1".to_string()],
        "no pod for the job too large"
    );
}
