//! How `pod_state` reads what a real kubelet reports when a container
//! cannot start, is killed for memory, or is evicted: the statuses below are
//! the ones the local cluster's real node gave (tests/real_runtime.rs).

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, PodCondition, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use vision_api::testing::{mk_algorithm, mk_job};

use super::*;

const IMAGE: &str = "registry.invalid/vision/nope:1";

fn t(s: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())
}

fn pod(status: PodStatus, deleting: bool) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("cam-1-1".into()),
            deletion_timestamp: deleting.then(|| t(1_767_225_600)),
            ..Default::default()
        },
        spec: None,
        status: Some(status),
    }
}

fn container(name: &str, state: ContainerState) -> ContainerStatus {
    ContainerStatus {
        name: name.into(),
        image: IMAGE.into(),
        state: Some(state),
        ..Default::default()
    }
}

fn waiting(name: &str, reason: &str, message: Option<&str>) -> ContainerStatus {
    container(
        name,
        ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.into()),
                message: message.map(String::from),
            }),
            ..Default::default()
        },
    )
}

fn terminated(exit_code: i32, reason: &str, message: Option<&str>) -> ContainerStatus {
    container(
        "algorithm",
        ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code,
                reason: Some(reason.into()),
                message: message.map(String::from),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
}

fn in_phase(phase: &str, containers: Vec<ContainerStatus>) -> PodStatus {
    PodStatus {
        phase: Some(phase.into()),
        container_statuses: Some(containers),
        ..Default::default()
    }
}

fn disruption(reason: &str, message: &str) -> PodCondition {
    PodCondition {
        type_: "DisruptionTarget".into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        ..Default::default()
    }
}

#[test]
fn a_container_that_cannot_start_is_read_with_its_waiting_reason() {
    let cases = [
        (
            "ErrImageNeverPull",
            "Container image \"localhost/vision/nope:1\" is not present with pull policy of Never",
        ),
        (
            "ImagePullBackOff",
            "Back-off pulling image \"registry.invalid/vision/nope:1\": ErrImagePull: failed to resolve image",
        ),
        ("ErrImagePull", "failed to pull and unpack image"),
        (
            "InvalidImageName",
            "couldn't parse image name \"localhost/vision/UPPER:1\"",
        ),
        (
            "CreateContainerConfigError",
            "container has runAsNonRoot and image will run as root (pod: \"x\", container: algorithm)",
        ),
        ("CreateContainerConfigError", "configmap \"cfg\" not found"),
    ];
    for (reason, message) in cases {
        let status = in_phase("Pending", vec![waiting("algorithm", reason, Some(message))]);
        assert_eq!(
            pod_state(&pod(status, false)),
            PodState::CannotStart {
                container: "algorithm".into(),
                image: IMAGE.into(),
                reason: reason.into(),
                message: Some(message.into()),
            },
            "{reason}"
        );
    }
}

#[test]
fn a_container_being_created_is_pending() {
    for reason in ["ContainerCreating", "PodInitializing", ""] {
        let status = in_phase("Pending", vec![waiting("algorithm", reason, None)]);
        assert_eq!(
            pod_state(&pod(status, false)),
            PodState::Pending,
            "{reason}"
        );
    }
}

#[test]
fn an_init_container_that_cannot_start_blocks_the_algorithm() {
    let status = PodStatus {
        init_container_statuses: Some(vec![waiting(
            "fetch-model",
            "ErrImagePull",
            Some("not found"),
        )]),
        ..in_phase(
            "Pending",
            vec![waiting("algorithm", "PodInitializing", None)],
        )
    };
    assert_eq!(
        pod_state(&pod(status, false)),
        PodState::CannotStart {
            container: "fetch-model".into(),
            image: IMAGE.into(),
            reason: "ErrImagePull".into(),
            message: Some("not found".into()),
        }
    );
}

#[test]
fn a_sidecar_that_cannot_start_is_not_the_algorithms_problem() {
    let running = container(
        "algorithm",
        ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(t(100)),
            }),
            ..Default::default()
        },
    );
    let status = PodStatus {
        start_time: Some(t(90)),
        ..in_phase(
            "Running",
            vec![waiting("uploader", "ImagePullBackOff", None), running],
        )
    };
    assert_eq!(
        pod_state(&pod(status, false)),
        PodState::Running {
            started: Some(t(90))
        }
    );
}

#[test]
fn the_algorithm_waiting_in_a_running_pod_cannot_start() {
    // A sidecar runs (so the pod is Running), the algorithm cannot start.
    let sidecar = container(
        "uploader",
        ContainerState {
            running: Some(ContainerStateRunning::default()),
            ..Default::default()
        },
    );
    let status = in_phase(
        "Running",
        vec![
            sidecar,
            waiting(
                "algorithm",
                "CreateContainerConfigError",
                Some("secret \"s\" not found"),
            ),
        ],
    );
    assert_eq!(
        pod_state(&pod(status, false)),
        PodState::CannotStart {
            container: "algorithm".into(),
            image: IMAGE.into(),
            reason: "CreateContainerConfigError".into(),
            message: Some("secret \"s\" not found".into()),
        }
    );
}

#[test]
fn a_pod_that_cannot_start_and_is_being_deleted_is_terminating() {
    let status = in_phase(
        "Pending",
        vec![waiting("algorithm", "ErrImageNeverPull", None)],
    );
    assert_eq!(pod_state(&pod(status, true)), PodState::Terminating);
}

#[test]
fn a_pod_that_cannot_start_is_live() {
    let state = PodState::CannotStart {
        container: "algorithm".into(),
        image: IMAGE.into(),
        reason: "ErrImagePull".into(),
        message: None,
    };
    assert!(state.is_live());
}

#[test]
fn an_oom_kill_is_the_reason_even_with_a_pod_level_reason() {
    // What the real node reports (no pod reason), and the container's
    // OOMKilled kept over a pod-level reason.
    for pod_reason in [None, Some("Evicted")] {
        let status = PodStatus {
            reason: pod_reason.map(String::from),
            ..in_phase("Failed", vec![terminated(137, "OOMKilled", None)])
        };
        assert_eq!(
            pod_state(&pod(status, false)),
            PodState::Failed {
                exit_code: Some(137),
                reason: Some("OOMKilled".into()),
                message: None,
            },
            "{pod_reason:?}"
        );
    }
}

#[test]
fn an_evicted_pod_reads_its_disruption_reason_and_message() {
    // kubectl drain: the container got SIGTERM and exited 143 ("Error").
    let status = PodStatus {
        conditions: Some(vec![disruption(
            "EvictionByEvictionAPI",
            "Eviction API: evicting",
        )]),
        ..in_phase(
            "Failed",
            vec![terminated(143, "Error", Some("probe: SIGTERM\n"))],
        )
    };
    assert_eq!(
        pod_state(&pod(status, true)),
        PodState::Failed {
            exit_code: Some(143),
            reason: Some("EvictionByEvictionAPI".into()),
            message: Some("Eviction API: evicting".into()),
        }
    );
}

#[test]
fn a_pod_level_reason_wins_over_the_disruption() {
    let status = PodStatus {
        reason: Some("Evicted".into()),
        message: Some("The node was low on resource: memory.".into()),
        conditions: Some(vec![disruption(
            "TerminationByKubelet",
            "The node was low on resource: memory.",
        )]),
        ..in_phase("Failed", vec![terminated(137, "Error", None)])
    };
    assert_eq!(
        pod_state(&pod(status, false)),
        PodState::Failed {
            exit_code: Some(137),
            reason: Some("Evicted".into()),
            message: Some("The node was low on resource: memory.".into()),
        }
    );
}

#[test]
fn a_disruption_condition_that_is_false_or_unknown_is_ignored() {
    let mut condition = disruption("EvictionByEvictionAPI", "Eviction API: evicting");
    condition.status = "False".into();
    let status = PodStatus {
        conditions: Some(vec![condition]),
        ..in_phase("Failed", vec![terminated(1, "Error", Some("bad input"))])
    };
    assert_eq!(
        pod_state(&pod(status, false)),
        PodState::Failed {
            exit_code: Some(1),
            reason: Some("Error".into()),
            message: Some("bad input".into()),
        }
    );
}

#[test]
fn the_memory_limit_is_the_algorithm_containers() {
    let mut job = mk_job("team-a", "cam-1", "yolo");
    job.metadata.uid = Some("uid-1".into());
    let mut algorithm = mk_algorithm("yolo");
    let pod = build_pod(&job, &algorithm, 1).unwrap();
    assert_eq!(memory_limit(&pod), None);
    let container = &mut algorithm.spec.template.spec.as_mut().unwrap().containers[0];
    container.resources = Some(ResourceRequirements {
        limits: Some([("memory".to_string(), Quantity("32Mi".into()))].into()),
        ..Default::default()
    });
    let pod = build_pod(&job, &algorithm, 1).unwrap();
    assert_eq!(memory_limit(&pod).as_deref(), Some("32Mi"));
}
