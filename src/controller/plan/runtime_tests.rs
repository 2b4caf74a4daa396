//! The decisions on what a real kubelet reports (tests/real_runtime.rs
//! runs each on the local cluster's real node): a container that cannot
//! start (missing image, root under runAsNonRoot, missing ConfigMap), an
//! OOM kill, and an eviction (kubectl drain).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, Pod,
    PodCondition, PodStatus, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use vision_api::testing::{AlgorithmFixture, JobFixture, at_ms, mk_algorithm, mk_job};

use super::*;

const T0: i64 = 1_800_000_000_000;
const IMAGE: &str = "registry.invalid/vision/nope:1";

fn settings() -> Settings {
    Settings {
        retry_backoff_base: Duration::from_millis(1000),
        retry_backoff_max: Duration::from_millis(60_000),
        ..Settings::default()
    }
}

/// yolo with `retries` and a 32Mi memory limit on its algorithm container.
fn algorithm(retries: i32) -> VisionAlgorithm {
    let mut algorithm = mk_algorithm("yolo").with_retries(retries);
    let container = &mut algorithm.spec.template.spec.as_mut().unwrap().containers[0];
    container.resources = Some(ResourceRequirements {
        limits: Some([("memory".to_string(), Quantity("32Mi".into()))].into()),
        ..Default::default()
    });
    algorithm
}

/// Admitted at T0 for attempt 1, with a 60 s timeout.
fn admitted() -> VisionJob {
    let mut job = mk_job("team-a", "cam-1", "yolo");
    job.spec.timeout_seconds = Some(60);
    let status = status::admitted(&job, &at_ms(T0), "default");
    job.with_status(status)
}

fn running() -> VisionJob {
    let job = admitted();
    let status = status::running(&job, &at_ms(T0 + 1000), Some(at_ms(T0 + 1000)));
    job.with_status(status)
}

fn pod_with(job: &VisionJob, status: PodStatus) -> Arc<Pod> {
    let mut pod = build_pod(job, &algorithm(2), 1).expect("a valid pod");
    pod.spec.as_mut().unwrap().node_name = Some("vision-node".into());
    pod.status = Some(status);
    Arc::new(pod)
}

/// The attempt's pod, Pending, its algorithm container waiting for `reason`.
fn waiting_pod(job: &VisionJob, reason: &str, message: &str) -> Arc<Pod> {
    pod_with(
        job,
        PodStatus {
            phase: Some("Pending".into()),
            container_statuses: Some(vec![ContainerStatus {
                name: "algorithm".into(),
                image: IMAGE.into(),
                state: Some(ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some(reason.into()),
                        message: Some(message.into()),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        },
    )
}

/// The attempt's pod, Failed: the algorithm container's exit code, reason
/// and message, and the pod's conditions.
fn failed_pod(
    job: &VisionJob,
    exit_code: i32,
    reason: &str,
    message: Option<&str>,
    conditions: Vec<PodCondition>,
) -> Arc<Pod> {
    pod_with(
        job,
        PodStatus {
            phase: Some("Failed".into()),
            conditions: Some(conditions),
            container_statuses: Some(vec![ContainerStatus {
                name: "algorithm".into(),
                image: IMAGE.into(),
                state: Some(ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code,
                        reason: Some(reason.into()),
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

fn deleting(pod: &Arc<Pod>) -> Arc<Pod> {
    let mut pod = (**pod).clone();
    pod.metadata.deletion_timestamp = Some(at_ms(T0));
    Arc::new(pod)
}

fn plan_with(
    job: &VisionJob,
    pods: &[Arc<Pod>],
    retries: i32,
    creating: bool,
    now_ms: i64,
) -> Step {
    let algorithm = algorithm(retries);
    plan(
        &View {
            job,
            pods,
            algorithm: Some(&algorithm),
            pod_read: true,
            creating,
            queue_default_ttl_seconds: None,
            pod_retention: Default::default(),
            now_ms,
        },
        &settings(),
    )
}

fn plan_at(job: &VisionJob, pods: &[Arc<Pod>], now_ms: i64) -> Step {
    plan_with(job, pods, 2, false, now_ms)
}

fn write(status: VisionJobStatus, outcome: Option<Outcome>, release: bool, then: Then) -> Step {
    Step::Write {
        status: Box::new(status),
        outcome,
        release,
        then,
    }
}

const NEVER_PULL: &str =
    "Container image \"registry.invalid/vision/nope:1\" is not present with pull policy of Never";

#[test]
fn a_missing_image_is_shown_then_its_pod_deleted_then_the_job_fails() {
    let job = admitted();
    let pod = waiting_pod(&job, "ErrImageNeverPull", NEVER_PULL);
    let message = format!(
        "the algorithm container of pod cam-1-1 cannot start (ErrImageNeverPull: {NEVER_PULL}); the node cannot get the image {IMAGE}; make it available to the nodes or correct the image in the algorithm's template, then submit the job again"
    );
    // 1. Long before the deadline, the job shows why (phase and slot kept).
    let shown = status::cannot_start(&job, &at_ms(T0 + 2000), "ImagePullFailed", message.clone());
    assert_eq!(shown.phase, Some(JobPhase::Admitted));
    assert_eq!(
        plan_at(&job, std::slice::from_ref(&pod), T0 + 2000),
        write(shown.clone(), None, false, Then::AwaitChange)
    );
    // 2. Then its pod is deleted.
    let job = job.with_status(shown);
    assert_eq!(
        plan_at(&job, std::slice::from_ref(&pod), T0 + 2100),
        Step::DeletePods {
            pods: vec![pod.clone()],
            then: Then::PodsTerminating
        }
    );
    assert_eq!(
        plan_at(&job, &[deleting(&pod)], T0 + 2200),
        Step::Wait(Then::PodsTerminating)
    );
    // 3. Gone (and no create in flight): the job fails and frees its slot.
    assert_eq!(
        plan_with(&job, &[], 2, true, T0 + 2300),
        Step::Wait(Then::RequeueAfterMs(STOPPING_RECHECK_MS))
    );
    let failed = status::failed(
        &job,
        &at_ms(T0 + 2300),
        FailReason::ImagePullFailed,
        message,
    );
    assert_eq!(failed.reason.as_deref(), Some("ImagePullFailed"));
    assert_eq!(
        plan_at(&job, &[], T0 + 2300),
        write(failed, Some(Outcome::Failed), true, Then::AwaitChange)
    );
}

#[test]
fn every_image_pull_failure_fails_the_job_whatever_its_retries() {
    for reason in [
        "ErrImagePull",
        "ImagePullBackOff",
        "ErrImageNeverPull",
        "InvalidImageName",
    ] {
        let job = admitted();
        let pod = waiting_pod(&job, reason, "no such host");
        let step = plan_with(&job, &[pod], 5, false, T0 + 1000);
        let Step::Write {
            status,
            release: false,
            ..
        } = &step
        else {
            panic!("{reason}: {step:?}");
        };
        assert_eq!(
            status.reason.as_deref(),
            Some("ImagePullFailed"),
            "{reason}"
        );
        assert!(
            status
                .message
                .as_deref()
                .unwrap()
                .contains(&format!("({reason}: no such host)")),
            "{reason}: {status:?}"
        );
    }
}

#[test]
fn an_image_running_as_root_under_run_as_non_root_fails_with_the_fix() {
    let job = admitted();
    let kubelet = "container has runAsNonRoot and image will run as root (pod: \"cam-1-1_team-a(uid)\", container: algorithm)";
    let pod = waiting_pod(&job, "CreateContainerConfigError", kubelet);
    let message = format!(
        "the algorithm container of pod cam-1-1 cannot start (CreateContainerConfigError: {kubelet}); the pod must not run as root (runAsNonRoot, the operator's default when the algorithm's template sets no pod securityContext) and the image {IMAGE} runs as root: set securityContext.runAsUser to a non-zero UID for this container in the algorithm's template, or build the image with a numeric non-root USER (e.g. USER 65532)"
    );
    let shown = status::cannot_start(
        &job,
        &at_ms(T0 + 1000),
        "ContainerConfigInvalid",
        message.clone(),
    );
    assert_eq!(
        plan_at(&job, std::slice::from_ref(&pod), T0 + 1000),
        write(shown.clone(), None, false, Then::AwaitChange)
    );
    let job = job.with_status(shown);
    assert_eq!(
        plan_at(&job, &[], T0 + 1500),
        write(
            status::failed(
                &job,
                &at_ms(T0 + 1500),
                FailReason::ContainerConfigInvalid,
                message
            ),
            Some(Outcome::Failed),
            true,
            Then::AwaitChange
        )
    );
}

#[test]
fn the_other_non_root_refusals_say_what_is_wrong() {
    let cases = [
        (
            "container's runAsUser breaks non-root policy (pod: \"x\", container: algorithm)",
            "and the container sets runAsUser: 0:",
        ),
        (
            "container has runAsNonRoot and image has non-numeric user (app), cannot verify user is non-root (pod: \"x\", container: algorithm)",
            "names its USER, not a numeric UID",
        ),
    ];
    for (kubelet, says) in cases {
        let job = admitted();
        let pod = waiting_pod(&job, "CreateContainerConfigError", kubelet);
        let step = plan_at(&job, &[pod], T0 + 1000);
        let Step::Write { status, .. } = &step else {
            panic!("{step:?}");
        };
        assert_eq!(status.reason.as_deref(), Some("ContainerConfigInvalid"));
        assert!(
            status.message.as_deref().unwrap().contains(says),
            "{status:?}"
        );
    }
}

#[test]
fn a_missing_config_map_is_shown_while_the_attempt_waits_for_its_timeout() {
    let job = admitted();
    let kubelet = "configmap \"cfg\" not found";
    let pod = waiting_pod(&job, "CreateContainerConfigError", kubelet);
    let deadline = T0 + 60_000;
    let message = format!(
        "the algorithm container of pod cam-1-1 cannot start yet (CreateContainerConfigError: {kubelet})"
    );
    let shown = status::cannot_start(
        &job,
        &at_ms(T0 + 1000),
        "CreateContainerConfigError",
        message.clone(),
    );
    assert_eq!(
        plan_at(&job, std::slice::from_ref(&pod), T0 + 1000),
        write(
            shown.clone(),
            None,
            false,
            Then::RequeueAfterMs((deadline - T0 - 1000) as u64 + 10)
        )
    );
    // Written once: the same status is not written again.
    let job = job.with_status(shown);
    assert_eq!(
        plan_at(&job, std::slice::from_ref(&pod), T0 + 2000),
        Step::Wait(Then::RequeueAfterMs((deadline - T0 - 2000) as u64 + 10))
    );
    // At the deadline the pod is stopped; once it is gone the job times
    // out, saying why the container never started.
    assert_eq!(
        plan_at(&job, std::slice::from_ref(&pod), deadline),
        Step::DeletePods {
            pods: vec![pod.clone()],
            then: Then::RequeueAfterMs(STOPPING_RECHECK_MS)
        }
    );
    let timed_out = status::failed(
        &job,
        &at_ms(deadline + 500),
        FailReason::Timeout,
        format!("attempt 1 ran longer than its timeout of 60s and was stopped; {message}"),
    );
    assert_eq!(
        plan_at(&job, &[], deadline + 500),
        write(timed_out, Some(Outcome::Failed), true, Then::AwaitChange)
    );
}

#[test]
fn an_oom_kill_is_retried_then_fails_the_job_with_oom_killed_and_the_limit() {
    let job = running();
    let pod = failed_pod(&job, 137, "OOMKilled", None, vec![]);
    let why = "OOMKilled: the algorithm container used more than its memory limit of 32Mi; raise resources.limits.memory in the algorithm's template (exit code 137)";
    let now = T0 + 5000;
    assert_eq!(
        plan_with(&job, std::slice::from_ref(&pod), 1, false, now),
        write(
            status::retrying(&job, &at_ms(now), at_ms(now + 1000), why),
            Some(Outcome::Failed),
            false,
            Then::RequeueAfterMs(1001)
        )
    );
    assert_eq!(
        plan_with(&job, &[pod], 0, false, now),
        write(
            status::failed(
                &job,
                &at_ms(now),
                FailReason::OomKilled,
                format!("attempt 1 failed ({why}); no retries left (retries: 0)")
            ),
            Some(Outcome::Failed),
            true,
            Then::AwaitChange
        )
    );
}

#[test]
fn an_evicted_pod_is_retried_without_counting_against_the_algorithm() {
    let job = running();
    let evicted = PodCondition {
        type_: "DisruptionTarget".into(),
        status: "True".into(),
        reason: Some("EvictionByEvictionAPI".into()),
        message: Some("Eviction API: evicting".into()),
        ..Default::default()
    };
    let pod = deleting(&failed_pod(
        &job,
        143,
        "Error",
        Some("probe: SIGTERM\n"),
        vec![evicted],
    ));
    let why = "pod cam-1-1 was evicted (EvictionByEvictionAPI): Eviction API: evicting";
    let now = T0 + 5000;
    // The slot is kept through the backoff; the breaker is not told.
    assert_eq!(
        plan_with(&job, std::slice::from_ref(&pod), 2, false, now),
        write(
            status::retrying(&job, &at_ms(now), at_ms(now + 1000), why),
            None,
            false,
            Then::RequeueAfterMs(1001)
        )
    );
    assert_eq!(
        plan_with(&job, &[pod], 0, false, now),
        write(
            status::failed(
                &job,
                &at_ms(now),
                FailReason::BackoffLimitExceeded,
                format!("attempt 1 failed ({why}); no retries left (retries: 0)")
            ),
            None,
            true,
            Then::AwaitChange
        )
    );
}
