//! End to end: the contract a platform backend builds on (docs/CLIENTS.md),
//! on the local cluster with the operator running. `kubectl wait
//! --for=condition=Finished` returns for every outcome, with the outcome as
//! the condition's reason; a queue's default TTL deletes the finished jobs
//! that set no TTL of their own. (Exactly-once submission through visionctl
//! is in tests/visionctl.rs.)
#![cfg(feature = "e2e")]

mod harness;

use std::time::Duration;

use harness::{Scenario, sim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use vision_api::testing::{AlgorithmFixture, JobFixture, QueueFixture, mk_algorithm, mk_queue};
use vision_api::{JobPhase, VisionJob};

const T: Duration = Duration::from_secs(60);

fn finished_condition(job: &VisionJob) -> Condition {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Finished"))
        .cloned()
        .unwrap_or_else(|| panic!("no Finished condition: {:#?}", job.status))
}

#[tokio::test]
async fn kubectl_wait_for_finished_returns_for_every_outcome() {
    let mut w = Scenario::new("finished")
        .queue(mk_queue("pool", 4))
        .algorithm(mk_algorithm("detect").with_template_annotations(&[
            (sim::DURATION, "500ms"),
            (sim::MESSAGE, r#"{"objects":2}"#),
        ]))
        .operator()
        .start()
        .await;
    // A queue that lets no job wait: every job sent to it is Rejected.
    w.apply_queue(mk_queue("full", 0).with_max_pending(0)).await;
    let full = w.name("full");

    w.submit(w.job("ok", "detect")).await;
    w.submit(
        w.job("broken", "detect")
            .with_retries(0)
            .with_annotations(&[
                (sim::OUTCOME, "fail"),
                (sim::EXIT_CODE, "3"),
                (sim::MESSAGE, "model file missing"),
            ]),
    )
    .await;
    w.submit(w.job("refused", "detect").with_queue(&full)).await;

    // What a backend runs: one wait, whatever the outcome.
    let out = harness::kubectl_output([
        "wait",
        "-n",
        &w.namespace,
        "--for=condition=Finished",
        "--timeout=60s",
        "vj/ok",
        "vj/broken",
        "vj/refused",
    ]);
    assert!(
        out.status.success(),
        "kubectl wait: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let reason = |name: &str| {
        harness::kubectl([
            "get",
            "-n",
            &w.namespace,
            &format!("vj/{name}"),
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="Finished")].reason}"#,
        ])
    };
    assert_eq!(reason("ok"), "Succeeded");
    assert_eq!(reason("broken"), "Failed");
    assert_eq!(reason("refused"), "Rejected");

    // True, with the job's message, at each final phase.
    for (name, phase, job_reason) in [
        ("ok", JobPhase::Succeeded, "Completed"),
        ("broken", JobPhase::Failed, "BackoffLimitExceeded"),
        ("refused", JobPhase::Rejected, "QueueFull"),
    ] {
        let job = w.get(name).await;
        let status = job.status.clone().unwrap();
        assert_eq!(
            (status.phase, status.reason.as_deref()),
            (Some(phase), Some(job_reason)),
            "{name}"
        );
        let c = finished_condition(&job);
        assert_eq!(c.status, "True", "{name}");
        assert_eq!(c.reason, phase.as_str(), "{name}");
        assert_eq!(Some(c.message), status.message, "{name}");
    }
    let broken = finished_condition(&w.get("broken").await);
    assert!(
        broken.message.contains("exit code 3") && broken.message.contains("model file missing"),
        "{}",
        broken.message
    );
}

#[tokio::test]
async fn kubectl_wait_for_finished_waits_while_a_job_runs() {
    let w = Scenario::new("unfinished")
        .queue(mk_queue("pool", 1))
        .algorithm(mk_algorithm("long").with_template_annotations(&[(sim::DURATION, "1h")]))
        .operator()
        .start()
        .await;
    w.submit(w.job("long-1", "long")).await;
    let job = w.wait_phase("long-1", JobPhase::Running, T).await;
    let c = finished_condition(&job);
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "Running"));
    // A running job does not satisfy the wait: it times out (exit 1).
    let out = harness::kubectl_output([
        "wait",
        "-n",
        &w.namespace,
        "--for=condition=Finished",
        "--timeout=2s",
        "vj/long-1",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_queues_default_ttl_deletes_finished_jobs_without_a_ttl_of_their_own() {
    let w = Scenario::new("queue-ttl")
        .queue(mk_queue("pool", 4).with_default_ttl_seconds(2))
        .algorithm(mk_algorithm("detect").with_template_annotations(&[(sim::DURATION, "300ms")]))
        .operator()
        .start()
        .await;
    // Its own TTL wins over the queue's.
    let mut own = w.job("own-ttl", "detect");
    own.spec.ttl_seconds_after_finished = Some(3600);
    w.submit(own).await;
    w.submit(w.job("queue-ttl", "detect")).await;
    w.submit(
        w.job("failing", "detect")
            .with_retries(0)
            .with_annotations(&[(sim::OUTCOME, "fail")]),
    )
    .await;

    w.wait_phase("own-ttl", JobPhase::Succeeded, T).await;
    for name in ["queue-ttl", "failing"] {
        let jobs = w.jobs();
        let gone = harness::wait_for(T, || {
            let jobs = jobs.clone();
            async move { matches!(jobs.get_opt(name).await, Ok(None)) }
        })
        .await;
        assert!(gone, "job {name} not deleted after its queue's TTL of 2s");
    }
    let kept = w.get("own-ttl").await;
    assert_eq!(kept.phase(), Some(JobPhase::Succeeded));
    assert!(kept.metadata.deletion_timestamp.is_none());
}
