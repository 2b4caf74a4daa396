//! The reconciler's decisions, without a cluster: one test per path of an
//! admitted job (create, follow, retry, time out, vanish, succeed), of a
//! suspended, deleted and finished job. Jobs, algorithms and statuses are
//! built from the typed fixtures and the status transitions themselves.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStatus, Pod, PodStatus,
};
use serde_json::json;
use vision_api::testing::{JobFixture, at_ms, mk_algorithm, mk_job};

use super::*;
use crate::api::VisionAlgorithm;

/// When the fixture job was admitted.
const T0: i64 = 1_800_000_000_000;
const TIMEOUT_MS: i64 = 60_000;

fn settings() -> Settings {
    Settings {
        retry_backoff_base: Duration::from_millis(1000),
        retry_backoff_max: Duration::from_millis(60_000),
        ..Settings::default()
    }
}

fn algorithm() -> VisionAlgorithm {
    mk_algorithm("yolo")
}

/// A new job with a 60 s timeout and the algorithm's two retries.
fn new_job() -> VisionJob {
    let mut job = mk_job("team-a", "cam-1", "yolo");
    job.spec.timeout_seconds = Some(60);
    job
}

/// Admitted at T0 for its first attempt.
fn admitted() -> VisionJob {
    let job = new_job();
    let status = status::admitted(&job, &at_ms(T0), "default");
    job.with_status(status)
}

/// Running since `started_ms` (attempt 1).
fn running(started_ms: i64) -> VisionJob {
    let job = admitted();
    let status = status::running(&job, &at_ms(started_ms), Some(at_ms(started_ms)));
    job.with_status(status)
}

/// Attempt 1 failed at `failed_ms`; attempt 2 is due at `retry_ms`.
fn retrying(failed_ms: i64, retry_ms: i64) -> VisionJob {
    let job = running(T0 + 1000);
    let status = status::retrying(&job, &at_ms(failed_ms), at_ms(retry_ms), "exit code 1");
    job.with_status(status)
}

/// The pod of an attempt, bound to a node, in `status`.
fn pod_with(job: &VisionJob, attempt: i32, status: PodStatus) -> Arc<Pod> {
    let mut pod = build_pod(job, &algorithm(), attempt).expect("a valid pod");
    if let Some(spec) = pod.spec.as_mut() {
        spec.node_name = Some("gpu-node-1".into());
    }
    pod.status = Some(status);
    Arc::new(pod)
}

fn pending_pod(job: &VisionJob, attempt: i32) -> Arc<Pod> {
    pod_with(
        job,
        attempt,
        PodStatus {
            phase: Some("Pending".into()),
            ..Default::default()
        },
    )
}

fn running_pod(job: &VisionJob, attempt: i32, started_ms: i64) -> Arc<Pod> {
    pod_with(
        job,
        attempt,
        PodStatus {
            phase: Some("Running".into()),
            start_time: Some(at_ms(started_ms)),
            ..Default::default()
        },
    )
}

/// A finished pod: `phase` Succeeded or Failed, the algorithm container's
/// exit code and termination message, and the pod-level reason.
fn finished_pod(
    job: &VisionJob,
    attempt: i32,
    phase: &str,
    exit_code: i32,
    message: Option<&str>,
    pod_reason: Option<&str>,
) -> Arc<Pod> {
    pod_with(
        job,
        attempt,
        PodStatus {
            phase: Some(phase.into()),
            reason: pod_reason.map(String::from),
            container_statuses: Some(vec![ContainerStatus {
                name: "algorithm".into(),
                state: Some(ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code,
                        message: message.map(String::from),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        },
    )
}

fn terminating(pod: &Arc<Pod>) -> Arc<Pod> {
    let mut pod = (**pod).clone();
    pod.metadata.deletion_timestamp = Some(at_ms(T0));
    pod.metadata.deletion_grace_period_seconds = Some(30);
    Arc::new(pod)
}

/// Deleted and stopped: the grace period is over (the kubelet or kwok
/// confirmed), only the tracking finalizer keeps the pod.
fn stopped(pod: &Arc<Pod>) -> Arc<Pod> {
    let mut pod = (*terminating(pod)).clone();
    pod.metadata.deletion_grace_period_seconds = Some(0);
    Arc::new(pod)
}

/// The pod once its tracking finalizer was removed.
fn released(pod: &Arc<Pod>) -> Arc<Pod> {
    let mut pod = (**pod).clone();
    pod.metadata.finalizers = Some(vec![]);
    Arc::new(pod)
}

fn release(pods: &[&Arc<Pod>], then: Then) -> Step {
    Step::ReleasePods {
        pods: pods.iter().map(|p| (*p).clone()).collect(),
        then,
    }
}

fn plan_at(job: &VisionJob, pods: &[Arc<Pod>], now_ms: i64) -> Step {
    let algorithm = algorithm();
    plan(
        &View {
            job,
            pods,
            algorithm: Some(&algorithm),
            pod_read: false,
            creating: false,
            queue_default_ttl_seconds: None,
            pod_retention: Default::default(),
            now_ms,
        },
        &settings(),
    )
}

/// As `plan_at`, after the shell read the current pod from the API server.
fn plan_after_read(job: &VisionJob, pods: &[Arc<Pod>], now_ms: i64) -> Step {
    let algorithm = algorithm();
    plan(
        &View {
            job,
            pods,
            algorithm: Some(&algorithm),
            pod_read: true,
            creating: false,
            queue_default_ttl_seconds: None,
            pod_retention: Default::default(),
            now_ms,
        },
        &settings(),
    )
}

fn write(status: VisionJobStatus, outcome: Option<Outcome>, release: bool, then: Then) -> Step {
    Step::Write {
        status: Box::new(status),
        outcome,
        release,
        then,
    }
}

fn status_of(step: &Step) -> &VisionJobStatus {
    match step {
        Step::Write { status, .. } => status,
        other => panic!("expected a status write, got {other:?}"),
    }
}

#[test]
fn new_and_queued_jobs_are_left_to_the_dispatcher() {
    assert_eq!(plan_at(&new_job(), &[], T0), Step::Wait(Then::AwaitChange));
    let queued = new_job().with_phase(JobPhase::Queued, 0);
    assert_eq!(plan_at(&queued, &[], T0), Step::Wait(Then::AwaitChange));
}

#[test]
fn an_admitted_job_without_a_pod_gets_its_first_pod() {
    let job = admitted();
    let now = T0 + 5;
    let expected_pod = build_pod(&job, &algorithm(), 1).expect("a valid pod");
    assert_eq!(expected_pod.metadata.name.as_deref(), Some("cam-1-1"));
    assert_eq!(
        plan_at(&job, &[], now),
        Step::CreatePod {
            pod: Box::new(expected_pod),
            // Looked at again just after the attempt's deadline.
            then: Then::RequeueAfterMs((T0 + TIMEOUT_MS - now + 10) as u64),
        }
    );
}

#[test]
fn a_pod_of_a_former_job_of_the_same_name_is_not_this_jobs_pod() {
    let job = admitted();
    let former = job.clone().with_uid("00000000-0000-4000-8000-00000000dead");
    let foreign = running_pod(&former, 1, T0);
    let step = plan_at(&job, &[foreign], T0 + 5);
    assert!(
        matches!(&step, Step::CreatePod { pod, .. } if pod.metadata.name.as_deref() == Some("cam-1-1")),
        "{step:?}"
    );
}

#[test]
fn a_pending_pod_is_followed_until_its_deadline() {
    let job = admitted();
    let pod = pending_pod(&job, 1);
    assert_eq!(
        plan_at(&job, std::slice::from_ref(&pod), T0 + 20_000),
        Step::Wait(Then::RequeueAfterMs(40_010))
    );
}

#[test]
fn a_running_pod_makes_the_job_running() {
    let job = admitted();
    let started = T0 + 2000;
    let now = T0 + 3000;
    assert_eq!(
        plan_at(&job, &[running_pod(&job, 1, started)], now),
        write(
            status::running(&job, &at_ms(now), Some(at_ms(started))),
            None,
            false,
            Then::RequeueAfterMs((started + TIMEOUT_MS - now + 10) as u64),
        )
    );
    let job = running(started);
    assert_eq!(
        plan_at(&job, &[running_pod(&job, 1, started)], now),
        Step::Wait(Then::RequeueAfterMs(
            (started + TIMEOUT_MS - now + 10) as u64
        ))
    );
}

#[test]
fn a_failed_attempt_is_retried_after_a_backoff_keeping_the_slot() {
    let job = running(T0 + 1000);
    let now = T0 + 10_000;
    let pod = finished_pod(&job, 1, "Failed", 3, Some("boom\n"), None);
    let step = plan_at(&job, &[pod], now);
    assert_eq!(
        step,
        write(
            status::retrying(&job, &at_ms(now), at_ms(now + 1000), "exit code 3: boom"),
            Some(Outcome::Failed),
            false,
            Then::RequeueAfterMs(1001),
        )
    );
    let status = status_of(&step);
    assert_eq!(status.phase, Some(JobPhase::Admitted));
    assert_eq!(status.attempts, Some(2));
    assert_eq!(status.pod_name.as_deref(), Some("cam-1-2"));
    assert_eq!(status.retry_after, Some(at_ms(now + 1000)));
}

#[test]
fn the_backoff_doubles_per_retry() {
    // Attempt 2 failed: the second retry waits 2 s.
    let job = retrying(T0 + 10_000, T0 + 11_000);
    let job = {
        let status = status::running(&job, &at_ms(T0 + 12_000), Some(at_ms(T0 + 12_000)));
        job.with_status(status)
    };
    let now = T0 + 20_000;
    let pod = finished_pod(&job, 2, "Failed", 1, None, None);
    assert_eq!(
        plan_at(&job, &[pod], now),
        write(
            status::retrying(&job, &at_ms(now), at_ms(now + 2000), "exit code 1"),
            Some(Outcome::Failed),
            false,
            Then::RequeueAfterMs(2001),
        )
    );
}

#[test]
fn a_retry_waits_for_its_backoff() {
    let job = retrying(T0 + 10_000, T0 + 11_000);
    let failed = finished_pod(&job, 1, "Failed", 1, None, None);
    // The status holds attempt 1's outcome: its pod may go.
    assert_eq!(
        plan_at(&job, std::slice::from_ref(&failed), T0 + 10_400),
        release(&[&failed], Then::AwaitChange)
    );
    // Released, it is deleted (an earlier attempt's pod is not kept).
    assert_eq!(
        plan_at(&job, &[released(&failed)], T0 + 10_400),
        Step::DeletePods {
            pods: vec![released(&failed)],
            then: Then::AwaitChange,
        }
    );
    assert_eq!(
        plan_at(&job, &[], T0 + 10_400),
        Step::Wait(Then::RequeueAfterMs(601))
    );
}

#[test]
fn a_retrys_pod_is_created_only_after_the_former_one_is_gone() {
    let job = retrying(T0 + 10_000, T0 + 11_000);
    let now = T0 + 12_000;
    // The former attempt's pod still runs: delete it first.
    let former = running_pod(&job, 1, T0 + 1000);
    assert_eq!(
        plan_at(&job, std::slice::from_ref(&former), now),
        Step::DeletePods {
            pods: vec![former.clone()],
            then: Then::PodsTerminating,
        }
    );
    // Being deleted: wait for it.
    assert_eq!(
        plan_at(&job, &[terminating(&former)], now),
        Step::Wait(Then::PodsTerminating)
    );
    // Finished and released: deleted (its outcome is recorded), then the
    // next attempt's pod.
    let finished = released(&finished_pod(&job, 1, "Failed", 1, None, None));
    assert_eq!(
        plan_at(&job, std::slice::from_ref(&finished), now),
        Step::DeletePods {
            pods: vec![finished.clone()],
            then: Then::AwaitChange,
        }
    );
    assert_eq!(
        plan_at(&job, &[], now),
        Step::CreatePod {
            pod: Box::new(build_pod(&job, &algorithm(), 2).expect("a valid pod")),
            then: Then::RequeueAfterMs((T0 + 11_000 + TIMEOUT_MS - now + 10) as u64),
        }
    );
}

#[test]
fn no_retries_left_fails_the_job_with_backoff_limit_exceeded() {
    let mut job = running(T0 + 1000);
    job.spec.retries = Some(0);
    let now = T0 + 10_000;
    let pod = finished_pod(&job, 1, "Failed", 1, Some("out of memory"), None);
    let step = plan_at(&job, &[pod], now);
    let message = "attempt 1 failed (exit code 1: out of memory); no retries left (retries: 0)";
    assert_eq!(
        step,
        write(
            status::failed(
                &job,
                &at_ms(now),
                FailReason::BackoffLimitExceeded,
                message.into()
            ),
            Some(Outcome::Failed),
            true,
            Then::AwaitChange,
        )
    );
    assert_eq!(
        status_of(&step).reason.as_deref(),
        Some("BackoffLimitExceeded")
    );
}

#[test]
fn a_pod_still_pending_at_the_deadline_is_stopped() {
    let job = admitted();
    let pod = pending_pod(&job, 1);
    assert_eq!(
        plan_at(&job, std::slice::from_ref(&pod), T0 + TIMEOUT_MS),
        Step::DeletePods {
            pods: vec![pod],
            then: Then::RequeueAfterMs(500),
        }
    );
}

#[test]
fn a_pod_still_running_at_the_deadline_is_stopped() {
    let job = running(T0 + 1000);
    let pod = running_pod(&job, 1, T0 + 1000);
    assert_eq!(
        plan_at(&job, std::slice::from_ref(&pod), T0 + 1000 + TIMEOUT_MS),
        Step::DeletePods {
            pods: vec![pod.clone()],
            then: Then::RequeueAfterMs(500),
        }
    );
    // Its deletion under way: look again soon.
    assert_eq!(
        plan_at(&job, &[terminating(&pod)], T0 + 1000 + TIMEOUT_MS),
        Step::Wait(Then::RequeueAfterMs(500))
    );
}

#[test]
fn a_pod_gone_after_the_deadline_fails_the_job_with_timeout() {
    let job = running(T0 + 1000);
    let now = T0 + 1000 + TIMEOUT_MS + 1;
    let timeout = write(
        status::failed(
            &job,
            &at_ms(now),
            FailReason::Timeout,
            "attempt 1 ran longer than its timeout of 60s and was stopped".into(),
        ),
        Some(Outcome::Failed),
        true,
        Then::AwaitChange,
    );
    // A started attempt's pod missing from the cache is read first.
    assert_eq!(
        plan_at(&job, &[], now),
        Step::ReadPod {
            name: "cam-1-1".into()
        }
    );
    assert_eq!(plan_after_read(&job, &[], now), timeout);
    // An attempt whose pod never appeared before the deadline times out too.
    let job = admitted();
    let now = T0 + TIMEOUT_MS;
    assert_eq!(
        plan_at(&job, &[], now),
        write(
            status::failed(
                &job,
                &at_ms(now),
                FailReason::Timeout,
                "attempt 1 ran longer than its timeout of 60s and was stopped".into(),
            ),
            Some(Outcome::Failed),
            true,
            Then::AwaitChange,
        )
    );
}

#[test]
fn a_pod_killed_by_its_active_deadline_fails_the_job_with_timeout() {
    let job = running(T0 + 1000);
    let now = T0 + 30_000;
    let pod = finished_pod(&job, 1, "Failed", 137, None, Some("DeadlineExceeded"));
    assert_eq!(
        plan_at(&job, &[pod], now),
        write(
            status::failed(
                &job,
                &at_ms(now),
                FailReason::Timeout,
                "attempt 1 ran longer than its timeout of 60s and was stopped".into(),
            ),
            Some(Outcome::Failed),
            true,
            Then::AwaitChange,
        )
    );
}

#[test]
fn a_vanished_pod_is_confirmed_then_fails_the_attempt() {
    let job = running(T0 + 1000);
    let now = T0 + 5000;
    assert_eq!(
        plan_at(&job, &[], now),
        Step::ReadPod {
            name: "cam-1-1".into()
        }
    );
    // The API server has it: the cache lagged, follow the pod.
    let pod = running_pod(&job, 1, T0 + 1000);
    assert_eq!(
        plan_after_read(&job, &[pod], now),
        Step::Wait(Then::RequeueAfterMs(
            (T0 + 1000 + TIMEOUT_MS - now + 10) as u64
        ))
    );
    // The API server has none either: the attempt failed, retried.
    let step = plan_after_read(&job, &[], now);
    assert_eq!(
        step,
        write(
            status::retrying(
                &job,
                &at_ms(now),
                at_ms(now + 1000),
                "pod cam-1-1 was deleted before it finished"
            ),
            Some(Outcome::Failed),
            false,
            Then::RequeueAfterMs(1001),
        )
    );
}

#[test]
fn a_succeeded_pod_finishes_the_job_with_its_result() {
    let job = running(T0 + 1000);
    let now = T0 + 9000;
    let pod = finished_pod(&job, 1, "Succeeded", 0, Some(r#"{"boxes": 3}"#), None);
    let step = plan_at(&job, &[pod], now);
    assert_eq!(
        step,
        write(
            status::succeeded(&job, &at_ms(now), Some(r#"{"boxes": 3}"#)),
            Some(Outcome::Succeeded),
            true,
            Then::AwaitChange,
        )
    );
    let status = status_of(&step);
    assert_eq!(status.phase, Some(JobPhase::Succeeded));
    assert_eq!(status.result, Some(json!({"boxes": 3})));
    assert_eq!(status.finished_at, Some(at_ms(now)));
}

#[test]
fn an_algorithm_deleted_before_the_pod_fails_the_job() {
    let job = admitted();
    let step = plan(
        &View {
            job: &job,
            pods: &[],
            algorithm: None,
            pod_read: false,
            creating: false,
            queue_default_ttl_seconds: None,
            pod_retention: Default::default(),
            now_ms: T0 + 5,
        },
        &settings(),
    );
    assert_eq!(
        step,
        write(
            status::failed(
                &job,
                &at_ms(T0 + 5),
                FailReason::AlgorithmNotFound,
                "algorithm yolo was deleted before the pod of attempt 1 was created".into()
            ),
            None,
            true,
            Then::AwaitChange,
        )
    );
}

#[test]
fn suspending_a_holder_deletes_its_pods_then_releases_its_slot() {
    let mut job = running(T0 + 1000);
    job.spec.suspend = true;
    let now = T0 + 5000;
    let pod = running_pod(&job, 1, T0 + 1000);
    assert_eq!(
        plan_at(&job, std::slice::from_ref(&pod), now),
        Step::DeletePods {
            pods: vec![pod.clone()],
            then: Then::RequeueAfterMs(5000),
        }
    );
    assert_eq!(
        plan_at(&job, &[terminating(&pod)], now),
        Step::Wait(Then::RequeueAfterMs(5000))
    );
    let step = plan_at(&job, &[], now);
    assert_eq!(
        step,
        write(
            status::suspended(&job, &at_ms(now)),
            None,
            true,
            Then::AwaitChange
        )
    );
    assert_eq!(status_of(&step).phase, Some(JobPhase::Suspended));
}

#[test]
fn suspending_a_waiting_job_suspends_it_at_once() {
    let mut job = new_job().with_phase(JobPhase::Queued, 0);
    job.spec.suspend = true;
    assert_eq!(
        plan_at(&job, &[], T0),
        write(
            status::suspended(&job, &at_ms(T0)),
            None,
            true,
            Then::AwaitChange
        )
    );
}

#[test]
fn a_suspended_job_keeps_no_pod_and_resumes_into_its_queue() {
    let mut job = running(T0 + 1000);
    job.spec.suspend = true;
    let job = {
        let status = status::suspended(&job, &at_ms(T0 + 2000));
        job.with_status(status)
    };
    // A pod that outlived the suspension (e.g. a stale cache) is deleted.
    let pod = running_pod(&job, 1, T0 + 1000);
    assert_eq!(
        plan_at(&job, std::slice::from_ref(&pod), T0 + 3000),
        Step::DeletePods {
            pods: vec![pod],
            then: Then::AwaitChange,
        }
    );
    assert_eq!(plan_at(&job, &[], T0 + 3000), Step::Wait(Then::AwaitChange));
    let mut resumed = job.clone();
    resumed.spec.suspend = false;
    let step = plan_at(&resumed, &[], T0 + 4000);
    assert_eq!(
        step,
        write(
            status::queued(
                &resumed,
                &at_ms(T0 + 4000),
                "Resumed",
                "resumed; waiting in queue default".into()
            ),
            None,
            false,
            Then::AwaitChange,
        )
    );
    assert_eq!(status_of(&step).phase, Some(JobPhase::Queued));
}

#[test]
fn a_deleted_job_has_its_pods_deleted_before_its_slot_is_released() {
    let mut job = running(T0 + 1000);
    job.metadata.deletion_timestamp = Some(at_ms(T0 + 2000));
    let pod = running_pod(&job, 1, T0 + 1000);
    assert_eq!(
        plan_at(&job, std::slice::from_ref(&pod), T0 + 3000),
        Step::DeletePods {
            pods: vec![pod.clone()],
            then: Then::PodsTerminating,
        }
    );
    assert_eq!(
        plan_at(&job, &[terminating(&pod)], T0 + 3000),
        Step::Wait(Then::PodsTerminating)
    );
    // Stopped: no outcome matters any more, the pod may go.
    assert_eq!(
        plan_at(&job, &[stopped(&pod)], T0 + 3000),
        release(&[&stopped(&pod)], Then::RequeueAfterMs(STOPPING_RECHECK_MS))
    );
    let done = finished_pod(&job, 1, "Succeeded", 0, None, None);
    assert_eq!(
        plan_at(&job, std::slice::from_ref(&done), T0 + 3000),
        release(&[&done], Then::RequeueAfterMs(STOPPING_RECHECK_MS))
    );
    assert_eq!(plan_at(&job, &[released(&done)], T0 + 3000), Step::Release);
    assert_eq!(plan_at(&job, &[], T0 + 3000), Step::Release);
}

#[test]
fn a_finished_job_is_deleted_once_its_ttl_has_passed() {
    let job = running(T0 + 1000);
    let finished_ms = T0 + 9000;
    let mut job = {
        let status = status::succeeded(&job, &at_ms(finished_ms), None);
        job.with_status(status)
    };
    assert_eq!(
        plan_at(&job, &[], finished_ms + 1_000_000),
        Step::Wait(Then::AwaitChange)
    );
    job.spec.ttl_seconds_after_finished = Some(60);
    assert_eq!(
        plan_at(&job, &[], finished_ms + 30_000),
        Step::Wait(Then::RequeueAfterMs(30_010))
    );
    assert_eq!(plan_at(&job, &[], finished_ms + 60_000), Step::DeleteJob);
}

/// As `plan_at`, for a job whose queue sets `defaultTtlSecondsAfterFinished`.
fn plan_with_queue_ttl(job: &VisionJob, queue_ttl: Option<i32>, now_ms: i64) -> Step {
    let algorithm = algorithm();
    plan(
        &View {
            job,
            pods: &[],
            algorithm: Some(&algorithm),
            pod_read: false,
            creating: false,
            queue_default_ttl_seconds: queue_ttl,
            pod_retention: Default::default(),
            now_ms,
        },
        &settings(),
    )
}

#[test]
fn a_finished_job_without_a_ttl_of_its_own_gets_its_queues_default() {
    let finished_ms = T0 + 9000;
    let succeeded = {
        let job = running(T0 + 1000);
        let status = status::succeeded(&job, &at_ms(finished_ms), None);
        job.with_status(status)
    };
    let failed = {
        let job = running(T0 + 1000);
        let status = status::failed(
            &job,
            &at_ms(finished_ms),
            FailReason::BackoffLimitExceeded,
            "exit code 1".into(),
        );
        job.with_status(status)
    };
    for job in [&succeeded, &failed] {
        assert_eq!(
            plan_with_queue_ttl(job, Some(120), finished_ms + 30_000),
            Step::Wait(Then::RequeueAfterMs(90_010))
        );
        assert_eq!(
            plan_with_queue_ttl(job, Some(120), finished_ms + 120_000),
            Step::DeleteJob
        );
    }
    // The job's own TTL wins, shorter or longer, 0 included.
    let mut own = succeeded.clone();
    own.spec.ttl_seconds_after_finished = Some(600);
    assert_eq!(
        plan_with_queue_ttl(&own, Some(120), finished_ms + 120_000),
        Step::Wait(Then::RequeueAfterMs(480_010))
    );
    own.spec.ttl_seconds_after_finished = Some(0);
    assert_eq!(
        plan_with_queue_ttl(&own, Some(120), finished_ms),
        Step::DeleteJob
    );
    // Neither: kept.
    assert_eq!(
        plan_with_queue_ttl(&succeeded, None, finished_ms + 1_000_000_000),
        Step::Wait(Then::AwaitChange)
    );
}

#[test]
fn the_queues_default_ttl_never_deletes_an_unfinished_job() {
    for job in [admitted(), running(T0 + 1000)] {
        assert_ne!(
            plan_with_queue_ttl(&job, Some(0), T0 + 2000),
            Step::DeleteJob
        );
    }
}

/// As `plan_at`, while a create of one of the job's pods may still land.
fn plan_while_creating(job: &VisionJob, now_ms: i64) -> Step {
    let algorithm = algorithm();
    plan(
        &View {
            job,
            pods: &[],
            algorithm: Some(&algorithm),
            pod_read: false,
            creating: true,
            queue_default_ttl_seconds: None,
            pod_retention: Default::default(),
            now_ms,
        },
        &settings(),
    )
}

#[test]
fn a_deleted_job_keeps_its_slot_while_its_first_pod_may_still_be_created() {
    let mut job = running(T0 + 1000);
    job.metadata.deletion_timestamp = Some(at_ms(T0 + 2000));
    assert_eq!(
        plan_while_creating(&job, T0 + 3000),
        Step::Wait(Then::PodsTerminating)
    );
    assert_eq!(plan_at(&job, &[], T0 + 3000), Step::Release);
}

#[test]
fn a_suspended_job_keeps_its_slot_while_its_pod_may_still_be_created() {
    let mut job = running(T0 + 1000);
    job.spec.suspend = true;
    assert_eq!(
        plan_while_creating(&job, T0 + 3000),
        Step::Wait(Then::RequeueAfterMs(STOPPING_RECHECK_MS))
    );
    assert_eq!(
        plan_at(&job, &[], T0 + 3000),
        write(
            status::suspended(&job, &at_ms(T0 + 3000)),
            None,
            true,
            Then::AwaitChange
        )
    );
}

/// The finished pod of the current attempt keeps its tracking finalizer
/// until the status holds its outcome, also when it is deleted meanwhile
/// (terminated-pod GC, an admin): its outcome is read from it, not lost.
#[test]
fn a_finished_pod_keeps_its_finalizer_until_its_outcome_is_recorded() {
    let job = running(T0 + 1000);
    let now = T0 + 9000;
    let result = Some(r#"{"boxes": 3}"#);
    let pod = finished_pod(&job, 1, "Succeeded", 0, result, None);
    let deleted = stopped(&pod);
    let expected = write(
        status::succeeded(&job, &at_ms(now), result),
        Some(Outcome::Succeeded),
        true,
        Then::AwaitChange,
    );
    assert_eq!(plan_at(&job, std::slice::from_ref(&pod), now), expected);
    assert_eq!(plan_at(&job, std::slice::from_ref(&deleted), now), expected);
    // Recorded: now it may go.
    let done = job
        .clone()
        .with_status(status::succeeded(&job, &at_ms(now), result));
    assert_eq!(
        plan_at(&done, std::slice::from_ref(&deleted), now + 10),
        release(&[&deleted], Then::AwaitChange)
    );
    // Released, it is kept for the default retention (podRetention), then
    // looked at again.
    assert_eq!(
        plan_at(&done, &[released(&pod)], now + 10),
        Step::Wait(Then::RequeueAfterMs(300_000 - 10 + 10))
    );
    // A failed attempt likewise: recorded as a retry, then released.
    let failed = stopped(&finished_pod(&job, 1, "Failed", 2, None, None));
    let step = plan_at(&job, std::slice::from_ref(&failed), now);
    assert_eq!(status_of(&step).attempts, Some(2));
    let retrying = job.clone().with_status(status_of(&step).clone());
    assert_eq!(
        plan_at(&retrying, std::slice::from_ref(&failed), now + 10),
        release(&[&failed], Then::AwaitChange)
    );
}

/// A pod deleted before it finished has no outcome to keep: once stopped
/// (or if it never had a node), it is let go, and its absence is what the
/// attempt's outcome is judged on, as without the finalizer.
#[test]
fn a_stopped_unfinished_pod_is_let_go() {
    let job = running(T0 + 1000);
    let pod = running_pod(&job, 1, T0 + 1000);
    // Still stopping (grace period running): it may yet finish; wait.
    assert_eq!(
        plan_at(&job, &[terminating(&pod)], T0 + 5000),
        Step::Wait(Then::RequeueAfterMs(STOPPING_RECHECK_MS))
    );
    assert_eq!(
        plan_at(&job, &[stopped(&pod)], T0 + 5000),
        release(&[&stopped(&pod)], Then::AwaitChange)
    );
    // Never bound to a node: deleted at once, nothing to wait for.
    let job = admitted();
    let mut unbound = (*pending_pod(&job, 1)).clone();
    unbound.spec.as_mut().unwrap().node_name = None;
    let unbound = terminating(&Arc::new(unbound));
    assert_eq!(
        plan_at(&job, std::slice::from_ref(&unbound), T0 + TIMEOUT_MS),
        release(&[&unbound], Then::AwaitChange)
    );
}

/// On a real node a pod stopped at its deadline ends Failed (killed) and,
/// held by the finalizer, is still there: the job times out, not retried.
#[test]
fn a_pod_killed_at_its_deadline_times_the_job_out() {
    let job = running(T0 + 1000);
    let now = T0 + 1000 + TIMEOUT_MS + 500;
    let killed = stopped(&finished_pod(&job, 1, "Failed", 137, None, None));
    assert_eq!(
        plan_at(&job, &[killed], now),
        write(
            status::failed(
                &job,
                &at_ms(now),
                FailReason::Timeout,
                "attempt 1 ran longer than its timeout of 60s and was stopped".into(),
            ),
            Some(Outcome::Failed),
            true,
            Then::AwaitChange,
        )
    );
}

#[test]
fn a_suspended_job_lets_its_finished_pods_go() {
    let mut job = running(T0 + 1000);
    job.spec.suspend = true;
    let job = {
        let status = status::suspended(&job, &at_ms(T0 + 2000));
        job.with_status(status)
    };
    let killed = stopped(&finished_pod(&job, 1, "Failed", 143, None, None));
    assert_eq!(
        plan_at(&job, std::slice::from_ref(&killed), T0 + 3000),
        release(&[&killed], Then::AwaitChange)
    );
}

/// A job read from a lagging cache (still new, or Queued, while its first
/// attempt's pod already finished) has not recorded that pod's outcome: the
/// pod keeps its finalizer.
#[test]
fn a_pod_of_an_attempt_the_status_does_not_count_yet_keeps_its_finalizer() {
    let job = running(T0 + 1000);
    let pod = finished_pod(&job, 1, "Succeeded", 0, None, None);
    let stale = new_job();
    assert_eq!(
        plan_at(&stale, std::slice::from_ref(&pod), T0 + 5000),
        Step::Wait(Then::AwaitChange)
    );
    let queued = new_job().with_phase(JobPhase::Queued, 0);
    assert_eq!(
        plan_at(&queued, std::slice::from_ref(&pod), T0 + 5000),
        Step::Wait(Then::AwaitChange)
    );
    // Resumed after a suspension of attempt 1: Queued, attempt 1 counted.
    let resumed = job.with_phase(JobPhase::Queued, 1);
    assert_eq!(
        plan_at(&resumed, std::slice::from_ref(&pod), T0 + 5000),
        release(&[&pod], Then::AwaitChange)
    );
}

/// Chosen as a victim by the dispatcher while running attempt 1.
fn preempting() -> VisionJob {
    let job = running(T0 + 1000);
    let status = status::preempting(&job, &at_ms(T0 + 5000), "team-b/urgent", 10);
    job.with_status(status)
}

#[test]
fn a_preempted_job_stops_its_pod_then_waits_again_and_frees_its_slot() {
    let job = preempting();
    let pod = running_pod(&job, 1, T0 + 1000);
    // Its pod is stopped (SIGTERM and the grace period of its template).
    assert_eq!(
        plan_at(&job, std::slice::from_ref(&pod), T0 + 5000),
        Step::DeletePods {
            pods: vec![pod.clone()],
            then: Then::PodsTerminating,
        }
    );
    // While it terminates (and even if it exits with a failure meanwhile),
    // the job holds its slot: no retry, no failure.
    assert_eq!(
        plan_at(&job, &[terminating(&pod)], T0 + 6000),
        Step::Wait(Then::PodsTerminating)
    );
    // Gone: Queued again, in its place, counted as preempted, slot released.
    let step = plan_at(&job, &[], T0 + 7000);
    let s = status_of(&step);
    assert_eq!(
        (
            s.phase,
            s.reason.as_deref(),
            s.attempts,
            s.preemptions,
            s.last_preempted_attempt,
            s.queued_at.clone()
        ),
        (
            Some(JobPhase::Queued),
            Some("Preempted"),
            Some(1),
            Some(1),
            Some(1),
            job.status.as_ref().unwrap().queued_at.clone()
        )
    );
    assert!(matches!(
        step,
        Step::Write {
            release: true,
            outcome: None,
            ..
        }
    ));
}

#[test]
fn the_attempt_after_a_preemption_is_told_and_spends_no_retry() {
    let preempted = preempting();
    let queued = preempted
        .clone()
        .with_status(status::preempted(&preempted, &at_ms(T0 + 7000)));
    let again = queued
        .clone()
        .with_status(status::admitted(&queued, &at_ms(T0 + 8000), "default"));
    assert_eq!(again.status.as_ref().unwrap().attempts, Some(2));
    let json: serde_json::Value = serde_json::from_str(&crate::pod::job_json(&again, 2)).unwrap();
    assert_eq!(
        json["previousAttempt"],
        json!({"attempt": 1, "preempted": true})
    );
    let first: serde_json::Value =
        serde_json::from_str(&crate::pod::job_json(&admitted(), 1)).unwrap();
    assert_eq!(first.get("previousAttempt"), None);
    // Attempt 2 fails. Attempt 1 was preempted, so attempt 2 was the first
    // real one: with no retries the job fails, with one it retries.
    let mut no_retries = again.clone();
    no_retries.spec.retries = Some(0);
    let step = attempt_failed(
        &View {
            job: &no_retries,
            pods: &[],
            algorithm: None,
            pod_read: true,
            creating: false,
            queue_default_ttl_seconds: None,
            pod_retention: Default::default(),
            now_ms: T0 + 9000,
        },
        &settings(),
        "exit code 1".into(),
        FailReason::BackoffLimitExceeded,
        Some(Outcome::Failed),
    );
    assert_eq!(
        status_of(&step).phase,
        Some(JobPhase::Failed),
        "retries 0: the one real attempt failed"
    );
    let mut one_retry = again;
    one_retry.spec.retries = Some(1);
    let step = attempt_failed(
        &View {
            job: &one_retry,
            pods: &[],
            algorithm: None,
            pod_read: true,
            creating: false,
            queue_default_ttl_seconds: None,
            pod_retention: Default::default(),
            now_ms: T0 + 9000,
        },
        &settings(),
        "exit code 1".into(),
        FailReason::BackoffLimitExceeded,
        Some(Outcome::Failed),
    );
    assert_eq!(
        status_of(&step).reason.as_deref(),
        Some("Retrying"),
        "attempt 2 is its first real attempt: its one retry is left"
    );
}

/// Every pod `plan` stops is stopped for a reason a worker is told: the
/// reason follows the same checks as the decision itself.
#[test]
fn every_stopped_pod_has_the_reason_the_plan_stopped_it_for() {
    let at_deadline = admitted();
    let mut suspended = running(T0 + 1000);
    suspended.spec.suspend = true;
    let mut deleted = running(T0 + 1000);
    deleted.metadata.deletion_timestamp = Some(at_ms(T0 + 2000));
    let preempted = {
        let job = running(T0 + 1000);
        let status = status::preempting(&job, &at_ms(T0 + 2000), "team-b/urgent", 100);
        job.with_status(status)
    };
    // Attempt 2 is due while attempt 1's pod still runs.
    let superseded = retrying(T0 + 2000, T0 + 3000);
    let cases = [
        (
            &at_deadline,
            pending_pod(&at_deadline, 1),
            T0 + TIMEOUT_MS,
            StopReason::TimedOut,
        ),
        (
            &suspended,
            running_pod(&suspended, 1, T0 + 1000),
            T0 + 2000,
            StopReason::Suspended,
        ),
        (
            &deleted,
            running_pod(&deleted, 1, T0 + 1000),
            T0 + 2000,
            StopReason::JobDeleted,
        ),
        (
            &preempted,
            running_pod(&preempted, 1, T0 + 1000),
            T0 + 2000,
            StopReason::Preempted,
        ),
        (
            &superseded,
            running_pod(&superseded, 1, T0 + 1000),
            T0 + 3000,
            StopReason::Superseded,
        ),
    ];
    for (job, pod, now_ms, why) in cases {
        let step = plan_at(job, std::slice::from_ref(&pod), now_ms);
        let Step::DeletePods { pods, .. } = step else {
            panic!("{why:?}: expected the pod stopped, got {step:?}");
        };
        assert_eq!(pods, vec![pod.clone()], "{why:?}");
        assert_eq!(stop_reason(job, &pod), why);
    }
}
