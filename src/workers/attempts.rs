//! The seam between worker mode and the reconciler, pure: an attempt of a
//! worker-mode job is represented by the same Pod object pod mode would
//! create (`pod::build_pod`: name, labels, owner, tracking finalizer, job
//! JSON annotation, activeDeadlineSeconds), kept in memory instead of being
//! created, with a status that mirrors what its worker reported. The
//! reconciler's `plan` then decides exactly as in pod mode (Running, result,
//! retry with backoff, timeout, vanished attempt), so phases, reasons,
//! retries and results cannot drift between the two modes.
//!
//! - [`task_for`] turns the attempt's pod into the task sent to a worker;
//! - [`with_state`] gives the pod the status of what the worker reported.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus, Pod,
    PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::time::Duration;

use super::hub::{TaskSpec, task_id};
use super::registry::Lost;
use crate::api::ALGORITHM_CONTAINER;
use crate::api::contract::{ANNOTATION_JOB_JSON, LABEL_ALGORITHM, LABEL_ATTEMPT, LABEL_JOB_UID};

/// Annotation on an attempt's in-memory pod naming the worker that runs it.
pub const ANNOTATION_WORKER: &str = "vision.zjlab.io/worker";

/// The worker an attempt ran on (worker mode), from its in-memory pod.
pub fn worker_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(ANNOTATION_WORKER)
        .map(String::as_str)
}

/// The task of an attempt's pod: `None` if the pod lacks what pod mode
/// always sets (job UID, attempt, algorithm labels, the job JSON).
pub fn task_for(pod: &Pod) -> Option<TaskSpec> {
    let labels = pod.metadata.labels.as_ref()?;
    let job_uid = labels.get(LABEL_JOB_UID)?.clone();
    let attempt: i32 = labels.get(LABEL_ATTEMPT)?.parse().ok()?;
    let algorithm = labels.get(LABEL_ALGORITHM)?.clone();
    let job_json = pod
        .metadata
        .annotations
        .as_ref()?
        .get(ANNOTATION_JOB_JSON)?
        .clone();
    let timeout = pod
        .spec
        .as_ref()
        .and_then(|s| s.active_deadline_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs);
    Some(TaskSpec {
        task_id: task_id(&job_uid, attempt),
        job_uid,
        attempt,
        algorithm,
        job_json,
        timeout,
    })
}

/// Where an attempt of a worker-mode job is.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptState {
    /// Admitted; no worker of the algorithm has a free slot yet.
    Waiting,
    /// Sent to this worker at this time.
    Running { worker: String, since: Time },
    /// The worker's result (already checked: JSON, within the size limit).
    Succeeded {
        worker: String,
        result: serde_json::Value,
    },
    /// The algorithm failed (its reason), or the operator refused the
    /// result (ResultTooLarge, InvalidResult).
    Failed {
        worker: String,
        reason: String,
        message: String,
    },
    /// The worker died, hung or disconnected mid-task.
    Lost { worker: String, why: Lost },
}

/// The reason of a lost attempt, as a pod's would read.
pub fn lost_reason(why: &Lost) -> (&'static str, &'static str) {
    match why {
        Lost::Disconnected => ("WorkerLost", "the worker's stream ended mid-task"),
        Lost::MissedHeartbeats => ("WorkerLost", "the worker missed its heartbeats mid-task"),
        Lost::Timeout => ("DeadlineExceeded", "the attempt ran past its timeout"),
        Lost::NotReported => (
            "WorkerLost",
            "no worker reported the task after the operator's failover",
        ),
    }
}

fn terminated(exit_code: i32, reason: Option<String>, message: Option<String>) -> ContainerStatus {
    ContainerStatus {
        name: ALGORITHM_CONTAINER.into(),
        state: Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code,
                reason,
                message,
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        }),
        ..ContainerStatus::default()
    }
}

/// The attempt's pod with the status that says what its worker reported,
/// read by `pod::pod_state` as pod mode's would be: Pending, Running since
/// the dispatch, Succeeded with the result as the termination message,
/// Failed with the reason and message.
pub fn with_state(mut pod: Pod, state: &AttemptState) -> Pod {
    let worker = match state {
        AttemptState::Waiting => None,
        AttemptState::Running { worker, .. }
        | AttemptState::Succeeded { worker, .. }
        | AttemptState::Failed { worker, .. }
        | AttemptState::Lost { worker, .. } => Some(worker.clone()),
    };
    if let Some(worker) = worker {
        pod.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(ANNOTATION_WORKER.into(), worker);
    }
    let started = pod.status.as_ref().and_then(|s| s.start_time.clone());
    pod.status = Some(match state {
        AttemptState::Waiting => PodStatus {
            phase: Some("Pending".into()),
            ..PodStatus::default()
        },
        AttemptState::Running { since, .. } => PodStatus {
            phase: Some("Running".into()),
            start_time: Some(since.clone()),
            container_statuses: Some(vec![ContainerStatus {
                name: ALGORITHM_CONTAINER.into(),
                ready: true,
                started: Some(true),
                state: Some(ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: Some(since.clone()),
                    }),
                    ..ContainerState::default()
                }),
                ..ContainerStatus::default()
            }]),
            ..PodStatus::default()
        },
        AttemptState::Succeeded { result, .. } => PodStatus {
            phase: Some("Succeeded".into()),
            start_time: started,
            container_statuses: Some(vec![terminated(
                0,
                Some("Completed".into()),
                Some(result.to_string()),
            )]),
            ..PodStatus::default()
        },
        AttemptState::Failed {
            reason, message, ..
        } => PodStatus {
            phase: Some("Failed".into()),
            start_time: started,
            container_statuses: Some(vec![terminated(
                1,
                Some(reason.clone()),
                Some(message.clone()),
            )]),
            ..PodStatus::default()
        },
        AttemptState::Lost { why, .. } => {
            let (reason, message) = lost_reason(why);
            PodStatus {
                phase: Some("Failed".into()),
                start_time: started,
                reason: Some(reason.into()),
                message: Some(message.into()),
                container_statuses: Some(vec![terminated(137, Some("Error".into()), None)]),
                ..PodStatus::default()
            }
        }
    });
    pod
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::json;
    use vision_api::testing::{JobFixture, at_ms, mk_algorithm, mk_job};

    use super::*;
    use crate::api::{AlgorithmMode, JobPhase, VisionAlgorithm, VisionJob};
    use crate::controller::Settings;
    use crate::controller::plan::{Step, View, plan};
    use crate::pod::{PodState, build_pod, pod_state};
    use crate::status;

    const T0: i64 = 1_800_000_000_000;

    fn algorithm() -> VisionAlgorithm {
        let mut a = mk_algorithm("detect");
        a.spec.mode = AlgorithmMode::Worker;
        a
    }

    fn running_job() -> VisionJob {
        let mut job = mk_job("team-a", "img-1", "detect");
        job.spec.timeout_seconds = Some(60);
        let job = job
            .clone()
            .with_status(status::admitted(&job, &at_ms(T0), "default"));
        let status = status::running(&job, &at_ms(T0 + 5), Some(at_ms(T0 + 5)));
        job.with_status(status)
    }

    fn attempt(job: &VisionJob, state: &AttemptState) -> Arc<Pod> {
        Arc::new(with_state(build_pod(job, &algorithm(), 1).unwrap(), state))
    }

    fn step(job: &VisionJob, pod: Arc<Pod>, now_ms: i64) -> Step {
        let pods = [pod];
        let view = View {
            job,
            pods: &pods,
            algorithm: Some(&algorithm()),
            pod_read: false,
            creating: false,
            queue_default_ttl_seconds: None,
            pod_retention: Default::default(),
            now_ms,
        };
        plan(
            &view,
            &Settings {
                retry_backoff_base: Duration::from_millis(1000),
                ..Settings::default()
            },
        )
    }

    fn written(step: Step) -> vision_api::VisionJobStatus {
        match step {
            Step::Write { status, .. } => *status,
            other => panic!("expected a status write, got {other:?}"),
        }
    }

    #[test]
    fn the_task_carries_the_pod_modes_job_json_and_timeout() {
        let job = running_job();
        let pod = build_pod(&job, &algorithm(), 1).unwrap();
        let task = task_for(&pod).expect("a task");
        assert_eq!(
            task.task_id,
            format!("{}-1", job.metadata.uid.clone().unwrap())
        );
        assert_eq!(task.algorithm, "detect");
        assert_eq!(task.attempt, 1);
        assert_eq!(task.job_json, crate::pod::job_json(&job, 1));
        assert_eq!(task.timeout, Some(Duration::from_secs(60)));
    }

    #[test]
    fn the_states_read_as_pod_mode_pods() {
        let job = running_job();
        let running = AttemptState::Running {
            worker: "w-1".into(),
            since: at_ms(T0 + 5),
        };
        assert!(matches!(
            pod_state(&attempt(&job, &running)),
            PodState::Running { .. }
        ));
        assert_eq!(
            pod_state(&attempt(&job, &AttemptState::Waiting)),
            PodState::Pending
        );
        let ok = AttemptState::Succeeded {
            worker: "w-1".into(),
            result: json!({"boxes": [[1, 2, 3, 4]]}),
        };
        assert_eq!(
            pod_state(&attempt(&job, &ok)),
            PodState::Succeeded {
                message: Some(r#"{"boxes":[[1,2,3,4]]}"#.into())
            }
        );
        assert_eq!(
            attempt(&job, &ok)
                .metadata
                .annotations
                .as_ref()
                .unwrap()
                .get(ANNOTATION_WORKER)
                .map(String::as_str),
            Some("w-1")
        );
    }

    #[test]
    fn a_workers_result_lands_in_status_result_as_in_pod_mode() {
        let job = running_job();
        let ok = AttemptState::Succeeded {
            worker: "w-1".into(),
            result: json!({"boxes": []}),
        };
        let status = written(step(&job, attempt(&job, &ok), T0 + 100));
        assert_eq!(status.phase, Some(JobPhase::Succeeded));
        assert_eq!(status.result, Some(json!({"boxes": []})));
        assert_eq!(status.worker.as_deref(), Some("w-1"));
    }

    #[test]
    fn the_status_names_the_worker_that_runs_the_attempt() {
        let mut job = mk_job("team-a", "img-1", "detect");
        job.spec.timeout_seconds = Some(60);
        let admitted = job
            .clone()
            .with_status(status::admitted(&job, &at_ms(T0), "default"));
        let running = AttemptState::Running {
            worker: "detect-worker-2".into(),
            since: at_ms(T0 + 5),
        };
        let status = written(step(&admitted, attempt(&admitted, &running), T0 + 10));
        assert_eq!(status.phase, Some(JobPhase::Running));
        assert_eq!(status.worker.as_deref(), Some("detect-worker-2"));
        assert_eq!(
            status.message.as_deref(),
            Some("attempt 1 runs on worker detect-worker-2")
        );
        // The next admission (after a preemption) starts with no worker.
        let again = status::admitted(
            &admitted.clone().with_status(status),
            &at_ms(T0 + 20),
            "default",
        );
        assert_eq!(again.worker, None);
    }

    #[test]
    fn a_lost_or_failed_attempt_retries_with_backoff() {
        let job = running_job();
        for state in [
            AttemptState::Lost {
                worker: "w-1".into(),
                why: Lost::Disconnected,
            },
            AttemptState::Lost {
                worker: "w-1".into(),
                why: Lost::MissedHeartbeats,
            },
            AttemptState::Failed {
                worker: "w-1".into(),
                reason: "AlgorithmError".into(),
                message: "bad frame".into(),
            },
        ] {
            let status = written(step(&job, attempt(&job, &state), T0 + 100));
            assert_eq!(status.phase, Some(JobPhase::Admitted), "{state:?}");
            assert_eq!(status.attempts, Some(2), "{state:?}");
        }
    }
}
