//! The queues' and algorithms' status as computed from the pool's counts:
//! exact statuses, conditions included.

use k8s_openapi::api::core::v1::{Container, PodSpec};
use vision_api::testing::{at_ms, mk_algorithm, mk_queue};

use super::*;
use crate::admission::JobKey;

const NOW: i64 = 1_800_000_000_000;

fn condition(type_: &str, status: &str, reason: &str, message: &str, at: i64) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: Some(1),
        last_transition_time: at_ms(at),
    }
}

fn queue_stats(pending: u32, holding: u32, gpus_in_use: u64, head: Option<JobKey>) -> QueueStats {
    QueueStats {
        spec: None,
        pending,
        holding,
        gpus_in_use,
        head,
    }
}

fn algorithm_stats(holding: u32, recent_failures: u32, breaker: BreakerState) -> AlgorithmStats {
    AlgorithmStats {
        spec: None,
        holding,
        pending: 0,
        breaker,
        recent_failures,
    }
}

#[test]
fn a_full_queue_counts_its_jobs_and_adds_the_unwritten_admissions() {
    let mut queue = mk_queue("default", 4);
    queue.spec.max_pending = Some(2);
    queue.status = Some(VisionQueueStatus {
        admitted_total: 10,
        ..Default::default()
    });
    let stats = queue_stats(2, 3, 3, Some(JobKey::new("team-a", "cam-9")));
    assert_eq!(
        queue_status(&queue, &stats, Some("NoFreeSlot".into()), 3, &at_ms(NOW)),
        VisionQueueStatus {
            running: 3,
            pending: 2,
            gpus_in_use: 3,
            admitted_total: 13,
            head: Some("team-a/cam-9".into()),
            head_reason: Some("NoFreeSlot".into()),
            conditions: vec![
                condition("Active", "True", "Admitting", "3 of 4 slots in use", NOW),
                condition("Full", "True", "MaxPendingReached", "2 of 2 waiting", NOW),
            ],
            observed_generation: Some(1),
            tenants: vec![],
            usage_time: None,
        }
    );
}

#[test]
fn a_paused_queue_is_inactive_and_keeps_unchanged_conditions_transition_times() {
    let mut queue = mk_queue("default", 4);
    queue.spec.paused = true;
    let earlier = NOW - 60_000;
    queue.status = Some(VisionQueueStatus {
        admitted_total: 7,
        conditions: vec![
            condition(
                "Active",
                "True",
                "Admitting",
                "1 of 4 slots in use",
                earlier,
            ),
            condition(
                "Full",
                "False",
                "AcceptingJobs",
                "0 of unlimited waiting",
                earlier,
            ),
        ],
        ..Default::default()
    });
    assert_eq!(
        queue_status(&queue, &queue_stats(0, 0, 0, None), None, 0, &at_ms(NOW)),
        VisionQueueStatus {
            running: 0,
            pending: 0,
            gpus_in_use: 0,
            admitted_total: 7,
            head: None,
            head_reason: None,
            conditions: vec![
                // Active changed: a new transition time.
                condition(
                    "Active",
                    "False",
                    "Paused",
                    "spec.paused is true: no job is admitted",
                    NOW
                ),
                // Full did not: its transition time stays.
                condition(
                    "Full",
                    "False",
                    "AcceptingJobs",
                    "0 of unlimited waiting",
                    earlier
                ),
            ],
            observed_generation: Some(1),
            tenants: vec![],
            usage_time: None,
        }
    );
}

#[test]
fn an_algorithm_with_a_closed_breaker_is_ready_and_not_degraded() {
    let algorithm = mk_algorithm("yolo");
    assert_eq!(
        algorithm_status(
            &algorithm,
            &algorithm_stats(2, 1, BreakerState::Closed),
            &at_ms(NOW)
        ),
        VisionAlgorithmStatus {
            running: 2,
            recent_failures: 1,
            breaker: Some("Closed".into()),
            conditions: vec![
                condition(
                    "Degraded",
                    "False",
                    "Closed",
                    "the circuit breaker is closed",
                    NOW
                ),
                condition(
                    "Ready",
                    "True",
                    "TemplateValid",
                    "the pod template has a container named algorithm",
                    NOW
                ),
            ],
            observed_generation: Some(1),
        }
    );
}

#[test]
fn an_open_breaker_degrades_the_algorithm_until_its_probe() {
    let algorithm = mk_algorithm("yolo");
    let status = algorithm_status(
        &algorithm,
        &algorithm_stats(
            0,
            0,
            BreakerState::Open {
                until_ms: NOW + 30_000,
            },
        ),
        &at_ms(NOW),
    );
    assert_eq!(status.breaker.as_deref(), Some("Open"));
    assert_eq!(
        status.conditions[0],
        condition(
            "Degraded",
            "True",
            "Open",
            "the circuit breaker is open after repeated failures; a probe job is admitted after 2027-01-15T08:00:30Z",
            NOW
        )
    );
    let half_open = algorithm_status(
        &algorithm,
        &algorithm_stats(1, 0, BreakerState::HalfOpen { probe: None }),
        &at_ms(NOW),
    );
    assert_eq!(half_open.breaker.as_deref(), Some("HalfOpen"));
    assert_eq!(
        half_open.conditions[0],
        condition(
            "Degraded",
            "True",
            "HalfOpen",
            "the circuit breaker lets one probe job through",
            NOW
        )
    );
}

#[test]
fn an_algorithm_without_an_algorithm_container_is_not_ready() {
    let mut algorithm = mk_algorithm("yolo");
    algorithm.spec.template.spec = Some(PodSpec {
        containers: vec![Container {
            name: "main".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    let status = algorithm_status(
        &algorithm,
        &algorithm_stats(0, 0, BreakerState::Closed),
        &at_ms(NOW),
    );
    assert_eq!(
        status.conditions[1],
        condition(
            "Ready",
            "False",
            "NoAlgorithmContainer",
            "the pod template needs a container named algorithm",
            NOW
        )
    );
}
