//! Finished pods and the queue's `podRetention`: a pod goes only once its
//! attempt's outcome is in the job's status and its tracking finalizer is
//! released; the last attempt's pod of a final job is kept for the
//! succeeded or failed retention after the job finished, 0 deletes it at
//! once, and earlier attempts' pods go as soon as their outcome is recorded.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStatus, Pod, PodStatus,
};
use vision_api::testing::{JobFixture, at_ms, mk_algorithm, mk_job};

use super::*;
use crate::api::PodRetention;

const T0: i64 = 1_800_000_000_000;

fn running(attempt_started_ms: i64) -> VisionJob {
    let job = mk_job("team-a", "cam-1", "yolo");
    let job = {
        let status = status::admitted(&job, &at_ms(T0), "default");
        job.with_status(status)
    };
    let status = status::running(
        &job,
        &at_ms(attempt_started_ms),
        Some(at_ms(attempt_started_ms)),
    );
    job.with_status(status)
}

/// The attempt's pod, finished in `phase`; `tracked`: it still holds the
/// tracking finalizer.
fn finished_pod(job: &VisionJob, attempt: i32, phase: &str, tracked: bool) -> Arc<Pod> {
    let mut pod = build_pod(job, &mk_algorithm("yolo"), attempt).expect("a valid pod");
    pod.spec.as_mut().unwrap().node_name = Some("gpu-node-1".into());
    pod.status = Some(PodStatus {
        phase: Some(phase.into()),
        container_statuses: Some(vec![ContainerStatus {
            name: "algorithm".into(),
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: if phase == "Succeeded" { 0 } else { 1 },
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ..Default::default()
    });
    if !tracked {
        pod.metadata.finalizers = Some(vec![]);
    }
    Arc::new(pod)
}

fn plan_kept(job: &VisionJob, pods: &[Arc<Pod>], retention: PodRetention, now_ms: i64) -> Step {
    let algorithm = mk_algorithm("yolo");
    plan(
        &View {
            job,
            pods,
            algorithm: Some(&algorithm),
            pod_read: true,
            creating: false,
            queue_default_ttl_seconds: None,
            pod_retention: retention,
            now_ms,
        },
        &Settings::default(),
    )
}

fn retention(succeeded: i32, failed: i32) -> PodRetention {
    PodRetention {
        succeeded_seconds: Some(succeeded),
        failed_seconds: Some(failed),
    }
}

fn delete(pods: &[&Arc<Pod>]) -> Step {
    Step::DeletePods {
        pods: pods.iter().map(|p| (*p).clone()).collect(),
        then: Then::AwaitChange,
    }
}

#[test]
fn the_defaults_keep_a_succeeded_pod_five_minutes_and_a_failed_one_an_hour() {
    let d = PodRetention::default();
    assert_eq!((d.succeeded(), d.failed()), (300, 3600));
    let half = PodRetention {
        succeeded_seconds: Some(0),
        failed_seconds: None,
    };
    assert_eq!((half.succeeded(), half.failed()), (0, 3600));
}

#[test]
fn a_succeeded_jobs_pod_is_kept_for_the_succeeded_retention_then_deleted() {
    let job = running(T0 + 1000);
    let finished_ms = T0 + 5000;
    let done = job
        .clone()
        .with_status(status::succeeded(&job, &at_ms(finished_ms), None));
    let tracked = finished_pod(&job, 1, "Succeeded", true);
    let released = finished_pod(&job, 1, "Succeeded", false);
    // Its finalizer goes first: the status holds the outcome.
    assert_eq!(
        plan_kept(
            &done,
            std::slice::from_ref(&tracked),
            retention(60, 600),
            finished_ms + 10
        ),
        Step::ReleasePods {
            pods: vec![tracked.clone()],
            then: Then::AwaitChange
        }
    );
    // Then it is kept until 60 s after the job finished (looked at again then).
    assert_eq!(
        plan_kept(
            &done,
            std::slice::from_ref(&released),
            retention(60, 600),
            finished_ms + 10
        ),
        Step::Wait(Then::RequeueAfterMs(60_000 - 10 + 10))
    );
    assert_eq!(
        plan_kept(
            &done,
            std::slice::from_ref(&released),
            retention(60, 600),
            finished_ms + 60_000
        ),
        delete(&[&released])
    );
    // Gone: the job keeps its outcome and waits for nothing more.
    assert_eq!(
        plan_kept(&done, &[], retention(60, 600), finished_ms + 60_000),
        Step::Wait(Then::AwaitChange)
    );
}

#[test]
fn a_failed_jobs_pod_is_kept_for_the_failed_retention() {
    let job = running(T0 + 1000);
    let finished_ms = T0 + 5000;
    let failed = job.clone().with_status(status::failed(
        &job,
        &at_ms(finished_ms),
        FailReason::BackoffLimitExceeded,
        "exit code 1".into(),
    ));
    let pod = finished_pod(&job, 1, "Failed", false);
    // The succeeded retention (0) does not apply to it.
    assert_eq!(
        plan_kept(
            &failed,
            std::slice::from_ref(&pod),
            retention(0, 600),
            finished_ms + 60_000
        ),
        Step::Wait(Then::RequeueAfterMs(540_000 + 10))
    );
    assert_eq!(
        plan_kept(
            &failed,
            std::slice::from_ref(&pod),
            retention(0, 600),
            finished_ms + 600_000
        ),
        delete(&[&pod])
    );
}

#[test]
fn zero_deletes_the_pod_as_soon_as_the_outcome_is_recorded() {
    let job = running(T0 + 1000);
    let now = T0 + 5000;
    let done = job
        .clone()
        .with_status(status::succeeded(&job, &at_ms(now), None));
    let released = finished_pod(&job, 1, "Succeeded", false);
    assert_eq!(
        plan_kept(&done, std::slice::from_ref(&released), retention(0, 0), now),
        delete(&[&released])
    );
}

#[test]
fn a_pod_whose_outcome_is_not_recorded_is_never_deleted() {
    let job = running(T0 + 1000);
    let now = T0 + 5000;
    // The job is still Running (its status has not taken the outcome): the
    // pod's outcome is written first, whatever the retention.
    for pod in [
        finished_pod(&job, 1, "Succeeded", true),
        finished_pod(&job, 1, "Succeeded", false),
    ] {
        let step = plan_kept(&job, std::slice::from_ref(&pod), retention(0, 0), now);
        assert!(
            matches!(&step, Step::Write { status, .. } if status.phase == Some(JobPhase::Succeeded)),
            "{step:?}"
        );
    }
    // A final job whose pod still holds the tracking finalizer: released
    // first, not deleted.
    let done = job
        .clone()
        .with_status(status::succeeded(&job, &at_ms(now), None));
    let tracked = finished_pod(&job, 1, "Succeeded", true);
    assert!(matches!(
        plan_kept(&done, std::slice::from_ref(&tracked), retention(0, 0), now),
        Step::ReleasePods { .. }
    ));
}

#[test]
fn an_earlier_attempts_pod_goes_once_its_failure_is_recorded() {
    let job = running(T0 + 1000);
    let now = T0 + 5000;
    let first = finished_pod(&job, 1, "Failed", false);
    // Attempt 1's failure is recorded (attempt 2 is due after a backoff):
    // its pod goes at once, whatever the failed retention.
    let retrying = job.clone().with_status(status::retrying(
        &job,
        &at_ms(now),
        at_ms(now + 1000),
        "exit code 1",
    ));
    assert_eq!(
        plan_kept(
            &retrying,
            std::slice::from_ref(&first),
            retention(300, 3600),
            now + 10
        ),
        delete(&[&first])
    );
    // The job later succeeds with attempt 2: attempt 1's pod goes at once,
    // attempt 2's is kept for the succeeded retention.
    let second = finished_pod(&retrying, 2, "Succeeded", false);
    let done = retrying
        .clone()
        .with_status(status::succeeded(&retrying, &at_ms(now + 9000), None));
    assert_eq!(
        plan_kept(
            &done,
            &[first.clone(), second.clone()],
            retention(300, 3600),
            now + 9010
        ),
        delete(&[&first])
    );
    assert_eq!(
        plan_kept(
            &done,
            std::slice::from_ref(&second),
            retention(300, 3600),
            now + 9010
        ),
        Step::Wait(Then::RequeueAfterMs(300_000 - 10 + 10))
    );
}

#[test]
fn the_earlier_of_the_jobs_ttl_and_a_pods_retention_is_looked_at() {
    let job = running(T0 + 1000);
    let now = T0 + 5000;
    let mut done = job
        .clone()
        .with_status(status::succeeded(&job, &at_ms(now), None));
    done.spec.ttl_seconds_after_finished = Some(100);
    let released = finished_pod(&job, 1, "Succeeded", false);
    assert_eq!(
        plan_kept(
            &done,
            std::slice::from_ref(&released),
            retention(30, 30),
            now
        ),
        Step::Wait(Then::RequeueAfterMs(30_000 + 10))
    );
    assert_eq!(
        plan_kept(
            &done,
            std::slice::from_ref(&released),
            retention(300, 300),
            now
        ),
        Step::Wait(Then::RequeueAfterMs(100_000 + 10))
    );
}
