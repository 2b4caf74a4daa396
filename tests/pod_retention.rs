//! End-to-end: finished pods are cleaned up by the queue's `podRetention`
//! (KWOK pods): a succeeded job's pod with 0 seconds goes once the job's
//! status holds its outcome, a failed job's last pod is kept for its
//! failed retention, earlier attempts' pods go once their failure is
//! recorded, and every job keeps its outcome after its pods are gone.
#![cfg(feature = "e2e")]

mod harness;

use std::collections::BTreeSet;
use std::time::Duration;

use harness::{Scenario, sim};
use kube::ResourceExt;
use kube::api::ListParams;
use vision_api::JobPhase;
use vision_api::testing::{AlgorithmFixture, JobFixture, QueueFixture, mk_algorithm, mk_queue};

const T: Duration = Duration::from_secs(90);

#[tokio::test]
async fn finished_pods_go_by_the_queues_retention_and_jobs_keep_their_outcome() {
    let s = Scenario::new("retention")
        // Succeeded: deleted at once; Failed: kept an hour.
        .queue(mk_queue("pool", 4).with_pod_retention(0, 3600))
        .algorithm(
            mk_algorithm("detect")
                .with_retries(1)
                .with_template_annotations(&[
                    (sim::DURATION, "200ms"),
                    (sim::MESSAGE, r#"{"boxes":2}"#),
                ]),
        )
        .operator()
        .start()
        .await;
    s.submit(s.job("ok", "detect")).await;
    // Attempt 1 fails, attempt 2 succeeds.
    s.submit(
        s.job("flaky", "detect")
            .with_annotations(&[(sim::FAIL_ATTEMPTS, "1")]),
    )
    .await;
    // Both attempts fail.
    s.submit(
        s.job("broken", "detect")
            .with_annotations(&[(sim::OUTCOME, "fail"), (sim::EXIT_CODE, "3")]),
    )
    .await;

    let jobs = s.wait_all_final(T).await;
    let outcome = |name: &str| {
        let job = jobs.iter().find(|j| j.name_any() == name).unwrap();
        let status = job.status.clone().unwrap();
        (job.phase(), status.attempts)
    };
    assert_eq!(outcome("ok"), (Some(JobPhase::Succeeded), Some(1)));
    assert_eq!(outcome("flaky"), (Some(JobPhase::Succeeded), Some(2)));
    assert_eq!(outcome("broken"), (Some(JobPhase::Failed), Some(2)));

    // Only the failed job's last pod is left.
    let pods = s.pods();
    let names = || async {
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|p| p.name_any())
            .collect::<BTreeSet<_>>()
    };
    let left = BTreeSet::from(["broken-2".to_string()]);
    let gone = harness::cluster::wait_for(T, || async { names().await == left }).await;
    let names = names().await;
    assert!(gone, "pods left: {names:?}, expected {left:?}");
    let kept = s.pods().get("broken-2").await.unwrap();
    assert_eq!(
        kept.status.and_then(|st| st.phase).as_deref(),
        Some("Failed")
    );

    // The jobs still say what happened, their pods gone.
    let ok = s.get("ok").await;
    let status = ok.status.unwrap();
    assert_eq!(ok.metadata.deletion_timestamp, None);
    assert_eq!(status.phase, Some(JobPhase::Succeeded));
    assert_eq!(status.result, Some(serde_json::json!({"boxes": 2})));
    let flaky = s.get("flaky").await.status.unwrap();
    assert_eq!(
        (flaky.phase, flaky.result),
        (
            Some(JobPhase::Succeeded),
            Some(serde_json::json!({"boxes": 2}))
        )
    );
    let broken = s.get("broken").await.status.unwrap();
    assert_eq!(broken.phase, Some(JobPhase::Failed));
    assert!(
        broken
            .message
            .as_deref()
            .is_some_and(|m| m.contains("exit code 3")),
        "{:?}",
        broken.message
    );
}
