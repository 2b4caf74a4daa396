//! Unit tests of the status transitions, with whole expected statuses.
//!
//! The statuses of one job's life are written out once as literals
//! (`s_queued`, `s_admitted`, ...): each is the expected output of one
//! transition and the input of the next.

use serde_json::json;
use vision_api::testing::{JobFixture, mk_job};
use vision_api::{JobOutput, OutputClaim, OutputLocation};

use super::*;

const JOB: &str = "cam42-frame-0001";
const NS: &str = "team-a";

fn t(s: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())
}

/// The usual job without a status (generation 1).
fn fresh() -> VisionJob {
    mk_job(NS, JOB, "yolo-detect").with_queue("gpu-a")
}

/// The usual job with the given status.
fn with(status: VisionJobStatus) -> VisionJob {
    VisionJob {
        status: Some(status),
        ..fresh()
    }
}

fn cond(type_: &str, status: &str, reason: &str, message: &str, at: i64) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: Some(1),
        last_transition_time: t(at),
    }
}

/// The Finished condition while the job is in `phase` (not final).
fn unfinished(phase: &str, at: i64) -> Condition {
    cond("Finished", "False", phase, NOT_FINISHED, at)
}

/// The Finished condition of a job that ended in `phase` with `message`.
fn finished(phase: &str, message: &str, at: i64) -> Condition {
    cond("Finished", "True", phase, message, at)
}

const WAITING: &str = "position 3 in queue gpu-a: all 4 slots are taken";

// The life of the usual job: queued at 100, admitted at 200, running at 300
// (started at 250), attempt 1 failed at 400, attempt 2 running at 500.

fn s_queued() -> VisionJobStatus {
    VisionJobStatus {
        phase: Some(JobPhase::Queued),
        reason: Some("SlotsFull".into()),
        message: Some(WAITING.into()),
        queued_at: Some(t(100)),
        conditions: vec![
            cond("Admitted", "False", "SlotsFull", "waiting for a slot", 100),
            unfinished("Queued", 100),
        ],
        observed_generation: Some(1),
        ..Default::default()
    }
}

fn s_admitted() -> VisionJobStatus {
    VisionJobStatus {
        phase: Some(JobPhase::Admitted),
        reason: Some("Admitted".into()),
        message: Some("admitted by queue gpu-a; creating pod for attempt 1".into()),
        attempts: Some(1),
        pod_name: Some("cam42-frame-0001-1".into()),
        queued_at: Some(t(100)),
        admitted_at: Some(t(200)),
        conditions: vec![
            cond(
                "Admitted",
                "True",
                "Admitted",
                "admitted by queue gpu-a",
                200,
            ),
            // Still False since the job was queued: its transition time stays.
            unfinished("Admitted", 100),
        ],
        observed_generation: Some(1),
        ..Default::default()
    }
}

fn s_running() -> VisionJobStatus {
    VisionJobStatus {
        phase: Some(JobPhase::Running),
        reason: Some("PodRunning".into()),
        message: Some("pod cam42-frame-0001-1 is running".into()),
        attempts: Some(1),
        pod_name: Some("cam42-frame-0001-1".into()),
        queued_at: Some(t(100)),
        admitted_at: Some(t(200)),
        started_at: Some(t(250)),
        conditions: vec![
            cond(
                "Admitted",
                "True",
                "Admitted",
                "admitted by queue gpu-a",
                200,
            ),
            unfinished("Running", 100),
            cond("Running", "True", "PodRunning", "the algorithm runs", 300),
        ],
        observed_generation: Some(1),
        ..Default::default()
    }
}

fn s_retrying() -> VisionJobStatus {
    VisionJobStatus {
        phase: Some(JobPhase::Admitted),
        reason: Some("Retrying".into()),
        message: Some(
            "attempt 1 failed (exit code 1: CUDA out of memory); attempt 2 starts after backoff"
                .into(),
        ),
        attempts: Some(2),
        pod_name: Some("cam42-frame-0001-2".into()),
        queued_at: Some(t(100)),
        admitted_at: Some(t(200)),
        retry_after: Some(t(410)),
        conditions: vec![
            cond(
                "Admitted",
                "True",
                "Admitted",
                "admitted by queue gpu-a",
                200,
            ),
            unfinished("Admitted", 100),
            cond(
                "Running",
                "False",
                "Retrying",
                "exit code 1: CUDA out of memory",
                400,
            ),
        ],
        observed_generation: Some(1),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------
// current, base fields

#[test]
fn current_of_a_fresh_job_is_empty() {
    assert_eq!(current(&fresh()), VisionJobStatus::default());
    assert_eq!(current(&with(s_running())), s_running());
}

#[test]
fn queued_fresh() {
    assert_eq!(
        queued(&fresh(), &t(100), "SlotsFull", WAITING.into()),
        s_queued()
    );
}

#[test]
fn queued_again_keeps_queued_at_and_the_conditions_transition_time() {
    let moved = "position 1 in queue gpu-a: the queue's GPUs are in use";
    assert_eq!(
        queued(&with(s_queued()), &t(150), "GPUQuotaFull", moved.into()),
        VisionJobStatus {
            reason: Some("GPUQuotaFull".into()),
            message: Some(moved.into()),
            conditions: vec![
                cond(
                    "Admitted",
                    "False",
                    "GPUQuotaFull",
                    "waiting for a slot",
                    100
                ),
                unfinished("Queued", 100),
            ],
            ..s_queued()
        }
    );
}

#[test]
fn queued_after_suspension_keeps_the_attempts_and_clears_retry_after() {
    let suspended_status = VisionJobStatus {
        phase: Some(JobPhase::Suspended),
        reason: Some("Suspended".into()),
        message: Some("suspended".into()),
        retry_after: Some(t(410)),
        ..s_retrying()
    };
    assert_eq!(
        queued(
            &with(suspended_status),
            &t(900),
            "SlotsFull",
            WAITING.into()
        ),
        VisionJobStatus {
            phase: Some(JobPhase::Queued),
            reason: Some("SlotsFull".into()),
            message: Some(WAITING.into()),
            retry_after: None,
            conditions: vec![
                cond("Admitted", "False", "SlotsFull", "waiting for a slot", 900),
                unfinished("Queued", 100),
                cond(
                    "Running",
                    "False",
                    "Retrying",
                    "exit code 1: CUDA out of memory",
                    400
                ),
            ],
            ..s_retrying()
        }
    );
}

#[test]
fn observed_generation_comes_from_the_job() {
    let mut job = with(s_queued());
    job.metadata.generation = Some(3);
    let mut expected = s_queued();
    expected.observed_generation = Some(3);
    for c in &mut expected.conditions {
        c.observed_generation = Some(3);
    }
    assert_eq!(queued(&job, &t(150), "SlotsFull", WAITING.into()), expected);

    // A job the API server gave no generation (never happens, but no panic).
    let mut job = fresh();
    job.metadata.generation = None;
    let s = queued(&job, &t(100), "SlotsFull", WAITING.into());
    assert_eq!(s.observed_generation, None);
    assert!(s.conditions.iter().all(|c| c.observed_generation.is_none()));
}

// ---------------------------------------------------------------------------
// admitted, running, retrying

#[test]
fn admitted_from_queued() {
    assert_eq!(admitted(&with(s_queued()), &t(200), "gpu-a"), s_admitted());
}

#[test]
fn admitted_fresh_is_queued_at_once() {
    assert_eq!(
        admitted(&fresh(), &t(200), "gpu-a"),
        VisionJobStatus {
            queued_at: Some(t(200)),
            conditions: vec![
                cond(
                    "Admitted",
                    "True",
                    "Admitted",
                    "admitted by queue gpu-a",
                    200
                ),
                unfinished("Admitted", 200),
            ],
            ..s_admitted()
        }
    );
}

#[test]
fn admitted_after_suspension_takes_the_next_attempt() {
    let requeued = VisionJobStatus {
        phase: Some(JobPhase::Queued),
        reason: Some("SlotsFull".into()),
        message: Some(WAITING.into()),
        started_at: Some(t(250)),
        conditions: vec![
            cond("Admitted", "False", "SlotsFull", "waiting for a slot", 700),
            unfinished("Queued", 100),
            cond("Running", "False", "Suspended", "suspended", 700),
        ],
        ..s_running()
    };
    assert_eq!(
        admitted(&with(requeued), &t(800), "gpu-a"),
        VisionJobStatus {
            phase: Some(JobPhase::Admitted),
            reason: Some("Admitted".into()),
            message: Some("admitted by queue gpu-a; creating pod for attempt 2".into()),
            attempts: Some(2),
            pod_name: Some("cam42-frame-0001-2".into()),
            admitted_at: Some(t(800)),
            started_at: None,
            conditions: vec![
                cond(
                    "Admitted",
                    "True",
                    "Admitted",
                    "admitted by queue gpu-a",
                    800
                ),
                unfinished("Admitted", 100),
                cond("Running", "False", "Suspended", "suspended", 700),
            ],
            ..s_running()
        }
    );
}

#[test]
fn admitted_pod_name_of_a_long_job_is_the_pods() {
    let name = "a".repeat(253);
    let job = mk_job(NS, &name, "yolo-detect");
    let s = admitted(&job, &t(200), "default");
    assert_eq!(s.pod_name, Some(crate::pod::pod_name(&name, 1)));
    assert_eq!(s.pod_name.unwrap().len(), 253);
}

#[test]
fn running_keeps_admitted_at_and_sets_started_at() {
    assert_eq!(
        running(&with(s_admitted()), &t(300), Some(t(250))),
        s_running()
    );
}

#[test]
fn running_without_a_start_time_started_now() {
    assert_eq!(
        running(&with(s_admitted()), &t(300), None),
        VisionJobStatus {
            started_at: Some(t(300)),
            ..s_running()
        }
    );
}

#[test]
fn running_again_keeps_the_conditions_transition_time() {
    assert_eq!(
        running(&with(s_running()), &t(333), Some(t(250))),
        s_running()
    );
}

#[test]
fn retrying_takes_the_next_attempt_and_keeps_the_slot() {
    let s = retrying(
        &with(s_running()),
        &t(400),
        t(410),
        "exit code 1: CUDA out of memory",
    );
    assert_eq!(s, s_retrying());
    assert!(s.phase.unwrap().holds_slot());
}

#[test]
fn running_after_a_retry() {
    assert_eq!(
        running(&with(s_retrying()), &t(500), None),
        VisionJobStatus {
            phase: Some(JobPhase::Running),
            reason: Some("PodRunning".into()),
            message: Some("pod cam42-frame-0001-2 is running".into()),
            started_at: Some(t(500)),
            retry_after: None,
            conditions: vec![
                cond(
                    "Admitted",
                    "True",
                    "Admitted",
                    "admitted by queue gpu-a",
                    200
                ),
                unfinished("Running", 100),
                cond("Running", "True", "PodRunning", "the algorithm runs", 500),
            ],
            ..s_retrying()
        }
    );
}

#[test]
fn retrying_twice() {
    let s = retrying(&with(s_retrying()), &t(600), t(620), "exit code 2");
    assert_eq!(
        s,
        VisionJobStatus {
            message: Some("attempt 2 failed (exit code 2); attempt 3 starts after backoff".into()),
            attempts: Some(3),
            pod_name: Some("cam42-frame-0001-3".into()),
            retry_after: Some(t(620)),
            conditions: vec![
                cond(
                    "Admitted",
                    "True",
                    "Admitted",
                    "admitted by queue gpu-a",
                    200
                ),
                unfinished("Admitted", 100),
                // Still False: the transition time stays.
                cond("Running", "False", "Retrying", "exit code 2", 400),
            ],
            ..s_retrying()
        }
    );
}

// ---------------------------------------------------------------------------
// succeeded

fn s_succeeded(reason: &str, message: &str, result: Option<serde_json::Value>) -> VisionJobStatus {
    VisionJobStatus {
        phase: Some(JobPhase::Succeeded),
        reason: Some(reason.into()),
        message: Some(message.into()),
        finished_at: Some(t(600)),
        result,
        conditions: vec![
            cond(
                "Admitted",
                "True",
                "Admitted",
                "admitted by queue gpu-a",
                200,
            ),
            finished("Succeeded", message, 600),
            cond(
                "Running",
                "False",
                "Completed",
                "the algorithm finished",
                600,
            ),
            cond("Complete", "True", reason, message, 600),
        ],
        ..s_running()
    }
}

#[test]
fn succeeded_with_a_json_result() {
    assert_eq!(
        succeeded(
            &with(s_running()),
            &t(600),
            Some("{\"boxes\": [[1, 2, 3, 4]], \"n\": 1}\n")
        ),
        s_succeeded(
            "Completed",
            "the algorithm finished",
            Some(json!({"boxes": [[1, 2, 3, 4]], "n": 1}))
        )
    );
}

#[test]
fn succeeded_with_a_text_result() {
    assert_eq!(
        succeeded(&with(s_running()), &t(600), Some("  3 boxes found\n")),
        s_succeeded(
            "Completed",
            "the algorithm finished; its result is not JSON and is kept as text",
            Some(json!("3 boxes found"))
        )
    );
}

#[test]
fn succeeded_without_a_result() {
    let expected = s_succeeded("Completed", "the algorithm finished without a result", None);
    assert_eq!(succeeded(&with(s_running()), &t(600), None), expected);
    assert_eq!(succeeded(&with(s_running()), &t(600), Some("")), expected);
    assert_eq!(
        succeeded(&with(s_running()), &t(600), Some(" \n\t")),
        expected
    );
}

#[test]
fn succeeded_with_a_result_cut_at_the_limit() {
    let cut = format!("{{\"boxes\": [{}", "[1, 2, 3, 4], ".repeat(400))[..4096].to_string();
    assert_eq!(
        succeeded(&with(s_running()), &t(600), Some(&cut)),
        s_succeeded(
            "ResultTooLarge",
            "the algorithm finished but its result (4096 bytes) reached Kubernetes' 4096-byte \
             termination message limit and was cut; write large outputs to $VISION_OUTPUT_DIR \
             (spec.output) and list them in the result",
            None
        )
    );
}

#[test]
fn succeeded_clears_retry_after() {
    let s = succeeded(&with(s_retrying()), &t(600), Some("{}"));
    assert_eq!(s.retry_after, None);
    assert_eq!(s.result, Some(json!({})));
    assert_eq!(s.attempts, Some(2));
}

// ---------------------------------------------------------------------------
// spec.output: status.output names the claim and the attempt's directory

/// The usual job writing its outputs to the claim `results` (at `path`).
fn with_output(status: VisionJobStatus, path: Option<&str>) -> VisionJob {
    let mut job = with(status);
    job.spec.output = Some(JobOutput {
        persistent_volume_claim: OutputClaim {
            claim_name: "results".into(),
        },
        path: path.map(str::to_string),
    });
    job
}

fn at(path: &str) -> Option<OutputLocation> {
    Some(OutputLocation {
        claim_name: "results".into(),
        path: path.into(),
    })
}

#[test]
fn admitted_with_an_output_names_the_first_attempts_directory() {
    assert_eq!(
        admitted(&with_output(s_queued(), None), &t(200), "gpu-a"),
        VisionJobStatus {
            output: at("cam42-frame-0001/1"),
            ..s_admitted()
        }
    );
}

#[test]
fn a_retry_writes_to_a_directory_of_its_own() {
    let running = VisionJobStatus {
        output: at("cams/42/1"),
        ..s_running()
    };
    assert_eq!(
        retrying(
            &with_output(running, Some("cams/42/")),
            &t(400),
            t(410),
            "exit code 1: CUDA out of memory",
        ),
        VisionJobStatus {
            output: at("cams/42/2"),
            ..s_retrying()
        }
    );
}

#[test]
fn succeeded_names_the_directory_of_the_attempt_that_succeeded() {
    // Admitted before status.output existed: the success still names it.
    let result = "{\"outputs\":[{\"path\":\"a.jpg\",\"size\":3,\"sha256\":\"ab\"}]}";
    assert_eq!(
        succeeded(&with_output(s_running(), None), &t(600), Some(result)),
        VisionJobStatus {
            output: at("cam42-frame-0001/1"),
            ..s_succeeded(
                "Completed",
                "the algorithm finished",
                Some(json!({"outputs": [{"path": "a.jpg", "size": 3, "sha256": "ab"}]}))
            )
        }
    );
}

#[test]
fn a_job_without_output_has_no_output_location() {
    assert_eq!(admitted(&with(s_queued()), &t(200), "gpu-a").output, None);
    assert_eq!(
        succeeded(&with(s_running()), &t(600), Some("{}")).output,
        None
    );
}

// ---------------------------------------------------------------------------
// failed, rejected

#[test]
fn failed_while_running() {
    let message = "attempt 3 failed (exit code 1); no retries left";
    assert_eq!(
        failed(
            &with(s_running()),
            &t(600),
            FailReason::BackoffLimitExceeded,
            message.into()
        ),
        VisionJobStatus {
            phase: Some(JobPhase::Failed),
            reason: Some("BackoffLimitExceeded".into()),
            message: Some(message.into()),
            finished_at: Some(t(600)),
            conditions: vec![
                cond(
                    "Admitted",
                    "True",
                    "Admitted",
                    "admitted by queue gpu-a",
                    200
                ),
                finished("Failed", message, 600),
                cond("Running", "False", "BackoffLimitExceeded", message, 600),
                cond("Failed", "True", "BackoffLimitExceeded", message, 600),
            ],
            ..s_running()
        }
    );
}

#[test]
fn failed_while_backing_off_clears_retry_after() {
    let message = "attempt 2 ran longer than its timeout of 60s and was stopped";
    assert_eq!(
        failed(
            &with(s_retrying()),
            &t(700),
            FailReason::Timeout,
            message.into()
        ),
        VisionJobStatus {
            phase: Some(JobPhase::Failed),
            reason: Some("Timeout".into()),
            message: Some(message.into()),
            finished_at: Some(t(700)),
            retry_after: None,
            conditions: vec![
                cond(
                    "Admitted",
                    "True",
                    "Admitted",
                    "admitted by queue gpu-a",
                    200
                ),
                finished("Failed", message, 700),
                // Already False: its transition time stays.
                cond("Running", "False", "Timeout", message, 400),
                cond("Failed", "True", "Timeout", message, 700),
            ],
            ..s_retrying()
        }
    );
}

#[test]
fn failed_fresh_adds_no_running_condition() {
    let message = "algorithm yolo-detect does not exist";
    assert_eq!(
        failed(
            &fresh(),
            &t(100),
            FailReason::AlgorithmNotFound,
            message.into()
        ),
        VisionJobStatus {
            phase: Some(JobPhase::Failed),
            reason: Some("AlgorithmNotFound".into()),
            message: Some(message.into()),
            queued_at: Some(t(100)),
            finished_at: Some(t(100)),
            conditions: vec![
                cond("Failed", "True", "AlgorithmNotFound", message, 100),
                finished("Failed", message, 100),
            ],
            observed_generation: Some(1),
            ..Default::default()
        }
    );
}

#[test]
fn failed_while_queued() {
    let message = "namespace team-a may not use algorithm yolo-detect";
    assert_eq!(
        failed(
            &with(s_queued()),
            &t(150),
            FailReason::NamespaceNotAllowed,
            message.into()
        ),
        VisionJobStatus {
            phase: Some(JobPhase::Failed),
            reason: Some("NamespaceNotAllowed".into()),
            message: Some(message.into()),
            finished_at: Some(t(150)),
            conditions: vec![
                cond("Admitted", "False", "SlotsFull", "waiting for a slot", 100),
                finished("Failed", message, 150),
                cond("Failed", "True", "NamespaceNotAllowed", message, 150),
            ],
            ..s_queued()
        }
    );
}

#[test]
fn rejected_when_the_queue_is_full() {
    let message = "queue gpu-a already has 1000 jobs waiting (maxPending); submit again later";
    assert_eq!(
        rejected(&fresh(), &t(100), "gpu-a", 1000),
        VisionJobStatus {
            phase: Some(JobPhase::Rejected),
            reason: Some("QueueFull".into()),
            message: Some(message.into()),
            queued_at: Some(t(100)),
            finished_at: Some(t(100)),
            conditions: vec![
                cond("Failed", "True", "QueueFull", message, 100),
                finished("Rejected", message, 100),
            ],
            observed_generation: Some(1),
            ..Default::default()
        }
    );
}

#[test]
fn fail_reasons_as_written_to_status() {
    let cases = [
        (FailReason::AlgorithmNotFound, "AlgorithmNotFound"),
        (FailReason::InvalidAlgorithm, "InvalidAlgorithm"),
        (FailReason::GpuLimitExceeded, "GPULimitExceeded"),
        (FailReason::NamespaceNotAllowed, "NamespaceNotAllowed"),
        (FailReason::Timeout, "Timeout"),
        (FailReason::BackoffLimitExceeded, "BackoffLimitExceeded"),
        (FailReason::QueueFull, "QueueFull"),
    ];
    for (reason, text) in cases {
        assert_eq!(reason.as_str(), text);
    }
}

// ---------------------------------------------------------------------------
// suspended

const SUSPENDED: &str = "suspended by spec.suspend; set it to false to queue the job again";

#[test]
fn suspended_while_running() {
    assert_eq!(
        suspended(&with(s_running()), &t(700)),
        VisionJobStatus {
            phase: Some(JobPhase::Suspended),
            reason: Some("Suspended".into()),
            message: Some(SUSPENDED.into()),
            started_at: None,
            conditions: vec![
                cond("Admitted", "False", "Suspended", "suspended", 700),
                unfinished("Suspended", 100),
                cond("Running", "False", "Suspended", "suspended", 700),
            ],
            ..s_running()
        }
    );
}

#[test]
fn suspended_while_backing_off() {
    assert_eq!(
        suspended(&with(s_retrying()), &t(700)),
        VisionJobStatus {
            phase: Some(JobPhase::Suspended),
            reason: Some("Suspended".into()),
            message: Some(SUSPENDED.into()),
            retry_after: None,
            conditions: vec![
                cond("Admitted", "False", "Suspended", "suspended", 700),
                unfinished("Suspended", 100),
                cond("Running", "False", "Suspended", "suspended", 400),
            ],
            ..s_retrying()
        }
    );
}

#[test]
fn suspended_fresh() {
    assert_eq!(
        suspended(&fresh(), &t(100)),
        VisionJobStatus {
            phase: Some(JobPhase::Suspended),
            reason: Some("Suspended".into()),
            message: Some(SUSPENDED.into()),
            queued_at: Some(t(100)),
            conditions: vec![
                cond("Admitted", "False", "Suspended", "suspended", 100),
                unfinished("Suspended", 100),
            ],
            observed_generation: Some(1),
            ..Default::default()
        }
    );
}

#[test]
fn suspended_while_queued_keeps_the_admitted_conditions_time() {
    assert_eq!(
        suspended(&with(s_queued()), &t(150)),
        VisionJobStatus {
            phase: Some(JobPhase::Suspended),
            reason: Some("Suspended".into()),
            message: Some(SUSPENDED.into()),
            conditions: vec![
                cond("Admitted", "False", "Suspended", "suspended", 100),
                unfinished("Suspended", 100),
            ],
            ..s_queued()
        }
    );
}

// ---------------------------------------------------------------------------
// set_condition

#[test]
fn set_condition_appends_a_new_condition() {
    let mut conditions = vec![cond("Admitted", "True", "Admitted", "admitted", 200)];
    set_condition(
        &mut conditions,
        "Running",
        true,
        "PodRunning",
        "runs",
        Some(1),
        &t(300),
    );
    assert_eq!(
        conditions,
        vec![
            cond("Admitted", "True", "Admitted", "admitted", 200),
            cond("Running", "True", "PodRunning", "runs", 300),
        ]
    );
}

#[test]
fn set_condition_keeps_the_transition_time_when_the_status_is_unchanged() {
    let mut conditions = vec![
        cond("Admitted", "True", "Admitted", "admitted", 200),
        cond("Running", "True", "PodRunning", "runs", 300),
    ];
    set_condition(
        &mut conditions,
        "Running",
        true,
        "StillRunning",
        "still runs",
        Some(2),
        &t(900),
    );
    assert_eq!(
        conditions,
        vec![
            cond("Admitted", "True", "Admitted", "admitted", 200),
            Condition {
                observed_generation: Some(2),
                ..cond("Running", "True", "StillRunning", "still runs", 300)
            },
        ]
    );
}

#[test]
fn set_condition_updates_the_transition_time_when_the_status_changes() {
    let mut conditions = vec![
        cond("Admitted", "True", "Admitted", "admitted", 200),
        cond("Running", "True", "PodRunning", "runs", 300),
    ];
    set_condition(
        &mut conditions,
        "Admitted",
        false,
        "Suspended",
        "suspended",
        Some(1),
        &t(900),
    );
    assert_eq!(
        conditions,
        vec![
            cond("Admitted", "False", "Suspended", "suspended", 900),
            cond("Running", "True", "PodRunning", "runs", 300),
        ]
    );
}

// ---------------------------------------------------------------------------
// may_transition

#[test]
fn may_transition_table() {
    use JobPhase::*;
    let all = [
        Queued, Admitted, Running, Succeeded, Failed, Rejected, Suspended,
    ];
    let allowed: [(Option<JobPhase>, &[JobPhase]); 8] = [
        (None, &[Queued, Admitted, Failed, Rejected, Suspended]),
        (Some(Queued), &[Queued, Admitted, Failed, Suspended]),
        (
            Some(Admitted),
            &[Queued, Admitted, Running, Succeeded, Failed, Suspended],
        ),
        (
            Some(Running),
            &[Queued, Admitted, Running, Succeeded, Failed, Suspended],
        ),
        (Some(Succeeded), &[]),
        (Some(Failed), &[]),
        (Some(Rejected), &[]),
        (Some(Suspended), &[Queued, Failed, Suspended]),
    ];
    for (from, to_allowed) in allowed {
        for to in all {
            assert_eq!(
                may_transition(from, to),
                to_allowed.contains(&to),
                "{from:?} -> {to:?}"
            );
        }
    }
}

#[test]
fn final_phases_never_change() {
    use JobPhase::*;
    let all = [
        Queued, Admitted, Running, Succeeded, Failed, Rejected, Suspended,
    ];
    for from in all.into_iter().filter(|p| p.is_final()) {
        for to in all {
            assert!(!may_transition(Some(from), to), "{from:?} -> {to:?}");
        }
    }
}

#[test]
fn each_transition_writes_a_phase_it_may_reach() {
    // The phase each transition writes, from the phase of the status it was given.
    let steps: [(Option<JobPhase>, VisionJobStatus); 8] = [
        (None, queued(&fresh(), &t(100), "SlotsFull", WAITING.into())),
        (
            Some(JobPhase::Queued),
            admitted(&with(s_queued()), &t(200), "gpu-a"),
        ),
        (
            Some(JobPhase::Admitted),
            running(&with(s_admitted()), &t(300), None),
        ),
        (
            Some(JobPhase::Running),
            retrying(&with(s_running()), &t(400), t(410), "x"),
        ),
        (
            Some(JobPhase::Running),
            succeeded(&with(s_running()), &t(600), None),
        ),
        (
            Some(JobPhase::Running),
            failed(&with(s_running()), &t(600), FailReason::Timeout, "x".into()),
        ),
        (None, rejected(&fresh(), &t(100), "gpu-a", 1)),
        (
            Some(JobPhase::Running),
            suspended(&with(s_running()), &t(700)),
        ),
    ];
    for (from, status) in steps {
        let to = status.phase.unwrap();
        assert!(may_transition(from, to), "{from:?} -> {to:?}");
    }
}

#[test]
fn finished_is_true_exactly_at_the_final_phases() {
    // Every transition, as the job's life reaches it; each final one from a
    // job that had not finished yet (Finished False since 100).
    let statuses = [
        queued(&fresh(), &t(100), "SlotsFull", WAITING.into()),
        admitted(&with(s_queued()), &t(200), "gpu-a"),
        running(&with(s_admitted()), &t(300), None),
        retrying(&with(s_running()), &t(400), t(410), "x"),
        suspended(&with(s_running()), &t(700)),
        succeeded(&with(s_running()), &t(600), Some("{}")),
        failed(
            &with(s_running()),
            &t(600),
            FailReason::Timeout,
            "too slow".into(),
        ),
        rejected(&with(s_queued()), &t(600), "gpu-a", 1),
    ];
    for s in statuses {
        let phase = s.phase.unwrap();
        let found: Vec<&Condition> = s
            .conditions
            .iter()
            .filter(|c| c.type_ == CONDITION_FINISHED)
            .collect();
        let expected = if phase.is_final() {
            finished(phase.as_str(), s.message.as_deref().unwrap(), 600)
        } else {
            unfinished(phase.as_str(), 100)
        };
        assert_eq!(found, [&expected], "{phase}");
    }
}

#[test]
fn finish_without_a_phase_adds_nothing() {
    let mut s = VisionJobStatus::default();
    finish(&mut s, &t(100));
    assert_eq!(s, VisionJobStatus::default());
}

// ---------------------------------------------------------------------------
// parse_result

#[test]
fn parse_result_cases() {
    let cut_json = format!("{{\"a\": \"{}", "x".repeat(5000))[..4096].to_string();
    let big_json = format!("{{\"a\": \"{}\"}}", "x".repeat(5000));
    let text_4095 = "x".repeat(4095);
    let text_4096 = "x".repeat(4096);
    let cases: Vec<(Option<&str>, ParsedResult)> = vec![
        (None, ParsedResult::Empty),
        (Some(""), ParsedResult::Empty),
        (Some(" \n "), ParsedResult::Empty),
        (Some("{\"n\": 1}"), ParsedResult::Json(json!({"n": 1}))),
        (Some("\n [1, 2] \n"), ParsedResult::Json(json!([1, 2]))),
        (Some("42"), ParsedResult::Json(json!(42))),
        (Some("\"done\""), ParsedResult::Json(json!("done"))),
        (Some("null"), ParsedResult::Json(json!(null))),
        (Some(" done \n"), ParsedResult::Text("done".into())),
        (Some("{\"n\": "), ParsedResult::Text("{\"n\":".into())),
        (Some(&text_4095), ParsedResult::Text(text_4095.clone())),
        (Some(&text_4096), ParsedResult::TooLarge(4096)),
        (Some(&cut_json), ParsedResult::TooLarge(4096)),
        // Whole JSON is a result, however it got here.
        (
            Some(&big_json),
            ParsedResult::Json(json!({"a": "x".repeat(5000)})),
        ),
    ];
    for (message, expected) in cases {
        assert_eq!(parse_result(message), expected, "{message:?}");
    }
}

// ---------------------------------------------------------------------------
// backoff_ms

#[test]
fn backoff_doubles_from_the_base() {
    let got: Vec<u64> = (1..=6).map(|r| backoff_ms(r, 1000, 60_000)).collect();
    assert_eq!(got, vec![1000, 2000, 4000, 8000, 16_000, 32_000]);
}

#[test]
fn backoff_is_capped() {
    assert_eq!(backoff_ms(7, 1000, 60_000), 60_000);
    assert_eq!(backoff_ms(8, 1000, 60_000), 60_000);
    assert_eq!(backoff_ms(20, 1000, 60_000), 60_000);
    assert_eq!(backoff_ms(1, 90_000, 60_000), 60_000);
}

#[test]
fn backoff_never_overflows() {
    assert_eq!(backoff_ms(31, 1000, u64::MAX), 1000 << 30);
    assert_eq!(backoff_ms(i32::MAX, 1000, u64::MAX), 1000 << 30);
    assert_eq!(backoff_ms(40, u64::MAX / 2, u64::MAX), u64::MAX);
    assert_eq!(backoff_ms(i32::MAX, 1000, 300_000), 300_000);
}

#[test]
fn backoff_of_retry_zero_or_less_is_the_base() {
    assert_eq!(backoff_ms(0, 1000, 60_000), 1000);
    assert_eq!(backoff_ms(-5, 1000, 60_000), 1000);
    assert_eq!(backoff_ms(i32::MIN, 1000, 60_000), 1000);
}

#[test]
fn backoff_of_zero_base_is_zero() {
    assert_eq!(backoff_ms(5, 0, 60_000), 0);
}

#[test]
fn only_a_new_or_queued_job_may_be_admitted() {
    use crate::status::may_admit;
    use JobPhase::*;
    assert!(may_admit(None));
    assert!(may_admit(Some(Queued)));
    for holding_or_done in [Admitted, Running, Succeeded, Failed, Rejected, Suspended] {
        assert!(
            !may_admit(Some(holding_or_done)),
            "{holding_or_done:?} must not be admitted again"
        );
    }
    // A retry stays Admitted through the status machine, not through admission.
    assert!(crate::status::may_transition(Some(Admitted), Admitted));
}

#[test]
fn holders_are_counted_by_the_term_that_wrote_them() {
    let stamped = |phase: JobPhase, term: Option<i64>| {
        let mut job = fresh().with_phase(phase, 1);
        job.status.as_mut().unwrap().leader_term = term;
        job
    };
    let jobs = [
        stamped(JobPhase::Admitted, Some(3)),
        stamped(JobPhase::Running, Some(3)),
        stamped(JobPhase::Running, Some(4)),
        stamped(JobPhase::Admitted, None),
        stamped(JobPhase::Succeeded, Some(4)),
        stamped(JobPhase::Queued, Some(4)),
    ];
    assert_eq!(
        holders_by_term(&jobs),
        std::collections::BTreeMap::from([(None, 1), (Some(3), 2), (Some(4), 1)])
    );
}
