//! End-to-end: the guarantees under faults that a single scenario can stage
//! (issue 12), each checked from the API server. The chaos suite
//! (tests/chaos.rs) throws many faults at once; these pin one sequence each.
#![cfg(feature = "e2e")]

mod harness;

use std::sync::Arc;
use std::time::Duration;

use harness::{Scenario, sim};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, VolumeMount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use vision_api::contract::POD_FINALIZER;
use vision_api::testing::{AlgorithmFixture, IMAGE, algorithm_container, mk_algorithm, mk_queue};
use vision_api::{JobPhase, VisionQueueStatus};
use vision_operator::controller::JobEvents;
use vision_operator::controller::events::Events;
use vision_operator::controller::plan::StopReason;
use vision_operator::controller::writer::Writer;
use vision_operator::error::Error;
use vision_operator::leader::Validity;
use vision_operator::metrics::Metrics;

const T: Duration = Duration::from_secs(60);
/// A finalizer of someone else's (a CSI driver, a log shipper) that keeps a
/// deleted pod Terminating, as a slow kubelet or a long grace period would.
const FOREIGN_FINALIZER: &str = "e2e.vision.zjlab.io/hold";

/// The routine sequence of issue 12: a job is deleted while its pod is slow
/// to terminate, the leader is replaced (a rolling upgrade), and a new job
/// arrives. The deleted job's pod still runs, so it still holds the only
/// slot: the new leader must count it and keep the new job waiting.
#[tokio::test]
async fn a_deleted_job_holds_its_slot_across_a_leader_change_until_its_pod_is_gone() {
    let mut w = Scenario::new("delhold")
        .queue(mk_queue("pool", 1))
        .algorithm(mk_algorithm("long").with_template_annotations(&[(sim::DURATION, "1h")]))
        .operator()
        .start()
        .await;
    let pods = w.watch_pods();
    w.submit(w.job("a", "long")).await;
    w.wait_phase("a", JobPhase::Running, T).await;

    let hold = json!({"metadata": {"finalizers": [FOREIGN_FINALIZER]}});
    w.pods()
        .patch("a-1", &PatchParams::default(), &Patch::Merge(&hold))
        .await
        .unwrap();
    w.jobs()
        .delete("a", &DeleteParams::default())
        .await
        .unwrap();
    let terminating = harness::wait_for(T, || async {
        w.pods()
            .get_opt("a-1")
            .await
            .unwrap()
            .is_some_and(|p| p.metadata.deletion_timestamp.is_some())
    })
    .await;

    // A rolling upgrade: the leader stops gracefully, a new one takes over.
    let stopped = w.operators[0].terminate();
    w.operators.clear();
    w.start_operator().await;
    w.submit(w.job("b", "long")).await;
    // The new leader decides about b (Queued, or wrongly Admitted); then
    // give it time to (wrongly) admit b while a's pod lives. Nothing here
    // panics before a's pod is released, so a failure leaves nothing stuck.
    let decided = harness::wait_for(T, || async {
        w.get("b").await.status.and_then(|s| s.phase).is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let b = w.get("b").await.status.unwrap_or_default();
    let b_pod_while_a_terminates = w.pods().get_opt("b-1").await.unwrap().is_some();
    let a_pod_still_there = w.pods().get_opt("a-1").await.unwrap().is_some();

    // Let a's pod go (before asserting, so that a failure leaves nothing stuck).
    let release = json!({"metadata": {"finalizers": null}});
    w.pods()
        .patch("a-1", &PatchParams::default(), &Patch::Merge(&release))
        .await
        .unwrap();

    assert!(terminating, "a's pod never became Terminating");
    assert!(
        stopped.is_some(),
        "the first leader did not stop on SIGTERM"
    );
    assert!(decided, "the new leader never wrote b's status");
    assert!(
        a_pod_still_there,
        "a's pod must still have been Terminating"
    );
    assert!(
        !b_pod_while_a_terminates,
        "b's pod was created while a's pod still held the only slot"
    );
    assert_eq!(
        (b.phase, b.reason.as_deref()),
        (Some(JobPhase::Queued), Some("SlotsFull")),
        "b must wait for the slot a's Terminating pod holds"
    );

    // Once a's pod is gone, b gets the slot.
    w.wait_phase("b", JobPhase::Running, T).await;
    let gone = harness::wait_for(T, || async {
        w.jobs().get_opt("a").await.unwrap().is_none()
    })
    .await;
    assert!(gone, "the deleted job a is still there after its pod went");
    assert_eq!(pods.max_live(), 1, "never more live pods than maxRunning 1");
}

/// A finished pod deleted before the operator recorded its outcome (the
/// terminated-pod garbage collector, a node's deletion, an admin's `kubectl
/// delete pod`) must still give the job its outcome: the pod's tracking
/// finalizer keeps it until the status holds it.
///
/// Without the finalizer (the code before it, e.g. c6ca22f) the pod is gone
/// when the operator comes back; the attempt had started, so its pod's
/// absence reads as a failure: the job is retried and runs a second time
/// (attempt 2, pod `a-2`), and this test fails.
#[tokio::test]
async fn a_finished_pod_deleted_before_its_outcome_is_recorded_still_gives_it() {
    let mut w = Scenario::new("unrecorded")
        .queue(mk_queue("pool", 1))
        .algorithm(
            mk_algorithm("detect")
                .with_retries(2)
                .with_template_annotations(&[
                    (sim::DURATION, "4s"),
                    (sim::MESSAGE, r#"{"boxes":3}"#),
                ]),
        )
        .operator()
        .start()
        .await;
    let pods = w.watch_pods();
    w.submit(w.job("a", "detect")).await;
    w.wait_phase("a", JobPhase::Running, T).await;

    // The operator goes down while the pod runs...
    w.operators[0].kill();
    w.operators.clear();
    assert_eq!(
        w.get("a").await.phase(),
        Some(JobPhase::Running),
        "the job finished before the operator was stopped: nothing tested"
    );
    // ... the pod finishes meanwhile, and is deleted before anyone read it.
    let succeeded = harness::wait_for(T, || async {
        w.pods()
            .get_opt("a-1")
            .await
            .unwrap()
            .and_then(|p| p.status?.phase)
            .as_deref()
            == Some("Succeeded")
    })
    .await;
    assert!(succeeded, "pod a-1 did not succeed");
    w.delete_pod("a-1").await;
    // Its node confirmed the deletion (grace period 0); only the finalizer holds it.
    let held = harness::wait_for(T, || async {
        w.pods()
            .get_opt("a-1")
            .await
            .unwrap()
            .is_some_and(|p| p.metadata.deletion_grace_period_seconds == Some(0))
    })
    .await;
    let pod = w.pods().get_opt("a-1").await.unwrap();
    assert!(
        held,
        "pod a-1 must stay, deleted, while its outcome is unrecorded: {:?}",
        pod.map(|p| p.metadata)
    );
    let pod = pod.unwrap();
    assert!(pod.metadata.deletion_timestamp.is_some());
    assert_eq!(
        pod.metadata.finalizers,
        Some(vec![POD_FINALIZER.to_string()])
    );

    // The operator comes back: the outcome is read from the held pod.
    w.start_operator().await;
    let a = w
        .wait_phase("a", JobPhase::Succeeded, T)
        .await
        .status
        .unwrap();
    assert_eq!(
        (a.attempts, a.result),
        (Some(1), Some(json!({"boxes": 3}))),
        "the job must succeed with attempt 1's result"
    );
    // Recorded: the pod is let go.
    let gone = harness::wait_for(T, || async {
        w.pods().get_opt("a-1").await.unwrap().is_none()
    })
    .await;
    assert!(gone, "pod a-1 still there after its outcome was recorded");
    assert_eq!(
        pods.with(|t| t.pods.iter().map(|p| p.0.clone()).collect::<Vec<_>>()),
        vec!["a-1".to_string()],
        "exactly one pod was ever created"
    );
}

/// A pod the API server refuses as invalid is a permanent error: the job
/// fails at once with reason `PodRejected` and the API server's message,
/// and its slot goes to the next job. The template here mounts a volume it
/// does not define: the CRD's schema accepts that, pod validation does not.
///
/// On the code before 3d486d8 (e.g. c6ca22f) the operator retried the
/// refused create every 2 s until the job's timeout (3600 s here), holding
/// the only slot: `bad` never failed, `good` never ran, and this test fails.
#[tokio::test]
async fn a_pod_the_api_server_refuses_fails_its_job_at_once_and_frees_its_slot() {
    let mut container = algorithm_container(IMAGE);
    container.volume_mounts = Some(vec![VolumeMount {
        name: "undefined".into(),
        mount_path: "/data".into(),
        ..Default::default()
    }]);
    let w = Scenario::new("refused")
        .queue(mk_queue("pool", 1))
        .algorithm(mk_algorithm("broken").with_pod_spec(PodSpec {
            containers: vec![container],
            ..Default::default()
        }))
        .algorithm(mk_algorithm("detect").with_template_annotations(&[(sim::DURATION, "1s")]))
        .operator()
        .start()
        .await;
    let pods = w.watch_pods();
    w.submit(w.job("bad", "broken")).await;
    w.submit(w.job("good", "detect")).await;

    let bad = w
        .wait_phase("bad", JobPhase::Failed, T)
        .await
        .status
        .unwrap();
    assert_eq!(
        (bad.reason.as_deref(), bad.attempts, bad.message.as_deref()),
        (
            Some("PodRejected"),
            Some(1),
            Some(
                "the API server refused the pod of attempt 1: Pod \"bad-1\" is invalid: \
                 spec.containers[0].volumeMounts[0].name: Not found: \"undefined\""
            )
        ),
    );
    let good = w
        .wait_phase("good", JobPhase::Succeeded, T)
        .await
        .status
        .unwrap();
    assert_eq!(good.attempts, Some(1));
    assert_eq!(
        pods.with(|t| t.pods.iter().map(|p| p.0.clone()).collect::<Vec<_>>()),
        vec!["good-1".to_string()],
        "the refused pod was never created"
    );
    assert_eq!(pods.max_live(), 1, "never more live pods than maxRunning 1");
}

/// A pod that is not the job's own (here a plain pod nobody owns) under the
/// name of the job's first attempt: the operator's create gets 409, and the
/// existing pod is not taken as the job's. The job stays Admitted with no
/// pod of its own, the operator counts the error `pod_name_taken` and
/// retries, the foreign pod is left as it was; once it is gone, the job's
/// own pod is created and the job succeeds.
///
/// On c6ca22f any 409 was taken as "pod exists already" and the attempt's
/// deadline (the job's timeout, 3600 s here) became the next look at the
/// job. Run against its operator (`VISION_OPERATOR_BIN`), this test fails
/// at its first wait: no error counted, the job Admitted with `podName`
/// `a-1` (the foreign pod), its log "pod exists already pod=a-1".
#[tokio::test]
async fn a_foreign_pod_of_the_attempts_name_is_not_taken_as_the_jobs_pod() {
    let w = Scenario::new("taken")
        .queue(mk_queue("pool", 1))
        .algorithm(mk_algorithm("detect").with_template_annotations(&[(sim::DURATION, "1s")]))
        .operator()
        .start()
        .await;
    let foreign = unscheduled_pod("a-1", "other", IMAGE);
    let foreign = w
        .pods()
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    w.submit(w.job("a", "detect")).await;

    let taken = harness::wait_for(T, || async {
        w.operator()
            .metric(
                "vision_operator_reconcile_errors_total",
                r#"kind="pod_name_taken""#,
            )
            .await
            .is_some_and(|n| n >= 1.0)
    })
    .await;
    assert!(
        taken,
        "the operator never reported the pod name as taken; job a: {:#?}\npods (name, is the foreign one): {:?}\nlog:\n{}",
        w.get("a").await.status,
        w.pods()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|p| (
                p.metadata.name.clone(),
                p.metadata.uid == foreign.metadata.uid
            ))
            .collect::<Vec<_>>(),
        w.operator().log_tail()
    );
    let a = w.get("a").await.status.unwrap_or_default();
    assert_eq!(
        (a.phase, a.started_at),
        (Some(JobPhase::Admitted), None),
        "the job must not run on a pod that is not its own"
    );
    let still = w.pods().get("a-1").await.unwrap();
    assert_eq!(
        still.metadata.uid, foreign.metadata.uid,
        "the foreign pod was replaced"
    );
    assert_eq!(
        still.metadata.owner_references, None,
        "the foreign pod was adopted"
    );
    assert_eq!(
        still.metadata.deletion_timestamp, None,
        "the foreign pod was deleted"
    );

    // Once the name is free, the job's own pod is created and runs.
    w.delete_pod("a-1").await;
    let a = w
        .wait_phase("a", JobPhase::Succeeded, T)
        .await
        .status
        .unwrap();
    assert_eq!(a.attempts, Some(1));
}

/// A writer of the operator's, against the local cluster, valid for the
/// whole test (no election). Its Events are never sent.
fn writer(client: &kube::Client) -> Writer {
    let (events, _sender) = Events::new(client.clone(), "vision-e2e".into(), None);
    Writer::new(
        client.clone(),
        Arc::new(Metrics::new()),
        events,
        JobEvents::None,
        Validity::always(),
    )
}

/// A pod or a finished job the operator read, then replaced by another of
/// the same name (another UID) before the operator's delete: the delete
/// carries the UID it read as a precondition, so the newer object survives,
/// and the stale delete is not an error. The writer is called directly, no
/// operator runs: the replacement happens between the read and the delete
/// exactly.
///
/// On c6ca22f (by reading `job.rs`; not run) the pod delete and the TTL
/// delete sent `DeleteParams::default()`, by name only: they would have
/// deleted the newer pod and the newer job. `Writer` did not exist there,
/// so this test was not run on it.
#[tokio::test]
async fn a_pod_or_job_replaced_under_the_same_name_is_not_deleted_by_a_stale_delete() {
    let w = Scenario::new("staledel").start().await;
    let writer = writer(&w.client);
    let pod = |image: &str| unscheduled_pod("p", "c", image);
    let gone = |name: &'static str| {
        let pods = w.pods();
        async move { pods.get_opt(name).await.unwrap().is_none() }
    };

    // The pod.
    let read = w
        .pods()
        .create(&PostParams::default(), &pod(IMAGE))
        .await
        .unwrap();
    w.delete_pod("p").await;
    assert!(harness::wait_for(T, || gone("p")).await, "pod p not gone");
    let newer = w
        .pods()
        .create(&PostParams::default(), &pod(IMAGE))
        .await
        .unwrap();
    assert_ne!(read.metadata.uid, newer.metadata.uid);
    writer
        .delete_pod(&read, StopReason::JobDeleted)
        .await
        .expect("a stale delete is not an error");
    let after = w.pods().get("p").await.unwrap();
    assert_eq!(
        (
            after.metadata.uid.as_ref(),
            after.metadata.deletion_timestamp.as_ref()
        ),
        (newer.metadata.uid.as_ref(), None),
        "the newer pod must be left alone"
    );
    // The same delete with the current UID does delete.
    writer
        .delete_pod(&newer, StopReason::JobDeleted)
        .await
        .unwrap();
    assert!(
        harness::wait_for(T, || gone("p")).await,
        "the current pod p was not deleted"
    );

    // The job (the TTL delete).
    let read = w.submit(w.job("j", "detect")).await;
    w.jobs()
        .delete("j", &DeleteParams::default())
        .await
        .unwrap();
    let jobs = w.jobs();
    let job_gone = || {
        let jobs = jobs.clone();
        async move { jobs.get_opt("j").await.unwrap().is_none() }
    };
    assert!(harness::wait_for(T, job_gone).await, "job j not gone");
    let newer = w.submit(w.job("j", "detect")).await;
    assert_ne!(read.metadata.uid, newer.metadata.uid);
    writer
        .delete_job(&read)
        .await
        .expect("a stale delete is not an error");
    assert_eq!(
        w.get("j").await.metadata.uid,
        newer.metadata.uid,
        "the newer job must be left alone"
    );
    writer.delete_job(&newer).await.unwrap();
    assert!(
        harness::wait_for(T, job_gone).await,
        "the current job j was not deleted"
    );
}

/// A queue's status computed from a stale read is refused (409, mapped to
/// `Conflict`) instead of overwriting a newer one: the write carries the
/// resourceVersion it was computed from. Here the `admittedTotal` written
/// from the first read (5) is not taken back to 3 by a second write from
/// the same, now stale, read. The writer is called directly, no operator
/// runs.
///
/// On c6ca22f (by reading `dispatch::spawn_status_patch`; not run) the
/// queue's status apply had only the name in its metadata, so the second
/// write would have landed and `admittedTotal` gone back to 3. `Writer` did
/// not exist there, so this test was not run on it.
#[tokio::test]
async fn a_queue_status_computed_from_a_stale_read_is_refused() {
    let w = Scenario::new("stalequeue")
        .queue(mk_queue("pool", 1))
        .start()
        .await;
    let writer = writer(&w.client);
    let read = w.queues().get(w.queue()).await.unwrap();
    let status = |admitted_total| VisionQueueStatus {
        admitted_total,
        ..Default::default()
    };
    writer.queue_status(&read, status(5)).await.unwrap();
    let stale = writer.queue_status(&read, status(3)).await;
    assert!(
        matches!(stale, Err(Error::Conflict(_))),
        "a write from a stale read must be refused: {stale:?}"
    );
    let now = w.queues().get(w.queue()).await.unwrap();
    assert_eq!(now.status.map(|s| s.admitted_total), Some(5));
}

/// A pod of one container that no node takes (a node selector nothing
/// matches): it stays Pending, and goes at once when deleted.
fn unscheduled_pod(name: &str, container: &str, image: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: container.into(),
                image: Some(image.into()),
                ..Default::default()
            }],
            node_selector: Some(
                [(
                    "e2e.vision.zjlab.io/nowhere".to_string(),
                    "true".to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}
