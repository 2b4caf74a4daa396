//! End-to-end: high availability. Two operator processes share a lease;
//! the leader is killed (SIGKILL, and once SIGTERM) again and again during
//! a burst, and operators restart from the in-between states a crash can
//! leave. Checked by watching the cluster.
#![cfg(feature = "e2e")]

mod harness;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::future::join_all;
use harness::{Operator, Scenario, sim};
use kube::ResourceExt;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use vision_api::contract::LABEL_LEADER_TERM;
use vision_api::testing::{AlgorithmFixture, JobFixture, mk_algorithm, mk_queue};
use vision_api::{JobPhase, VisionJob, VisionJobStatus};

/// The leadership term of scenario `w`'s election: its Lease's leaseTransitions.
async fn lease_term(w: &Scenario) -> i64 {
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(w.client.clone(), "default");
    let lease = leases.get("e2e-failover").await.unwrap();
    i64::from(lease.spec.and_then(|s| s.lease_transitions).unwrap_or(0))
}

/// Waits until one of the operators leads; returns its index.
async fn leader_of(ops: &[Operator], timeout: Duration) -> Option<usize> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        for (i, op) in ops.iter().enumerate() {
            if op.is_leader().await {
                return Some(i);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test]
async fn killing_the_leader_during_a_burst_loses_nothing_and_never_over_admits() {
    const N: usize = 240;
    const MAX: usize = 6;
    // Two operators in one election (lease e2e-failover), started below.
    let mut w = Scenario::new("failover")
        .queue(mk_queue("pool", MAX as i32))
        .algorithm(
            mk_algorithm("detect")
                .with_retries(2)
                .with_template_annotations(&[
                    (sim::DURATION, "1s"),
                    (sim::MESSAGE, r#"{"ok":true}"#),
                ]),
        )
        .start()
        .await;
    let pods = w.watch_pods();
    let spawn = |w: &Scenario, identity: &str| Operator::spawn(&w.operator_options(identity));

    w.operators = vec![spawn(&w, "failover-a"), spawn(&w, "failover-b")];
    for op in &w.operators {
        op.wait_ready(Duration::from_secs(60)).await;
    }
    let mut leader = leader_of(&w.operators, Duration::from_secs(30))
        .await
        .expect("no leader elected");
    let first_term = lease_term(&w).await;
    // Exactly one leader: the other must not lead too (both started at once).
    for _ in 0..20 {
        let other = w.operators[1 - leader]
            .metric("vision_operator_is_leader", "")
            .await;
        assert_eq!(
            other,
            Some(0.0),
            "two leaders at once:\n{}",
            w.operators[1 - leader].log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every tenth job fails its first attempt: it must end with exactly two.
    for chunk in (0..N).collect::<Vec<_>>().chunks(40) {
        join_all(chunk.iter().map(|i| {
            let job = w.job(&format!("job-{i:04}"), "detect");
            let job = if i.is_multiple_of(10) {
                job.with_annotations(&[(sim::FAIL_ATTEMPTS, "1")])
            } else {
                job
            };
            w.submit(job)
        }))
        .await;
    }

    // Kill the leader four times (the last one gracefully) while jobs run.
    let mut gaps = vec![];
    for round in 0..4 {
        tokio::time::sleep(Duration::from_secs(6)).await;
        let killed_at = Instant::now();
        if round == 3 {
            let status = w.operators[leader].terminate();
            assert!(
                status.is_some_and(|s| s.success()),
                "SIGTERM must end the operator cleanly:\n{}",
                w.operators[leader].log_tail()
            );
        } else {
            w.operators[leader].kill();
        }
        let standby = 1 - leader;
        let took = leader_of(&w.operators[standby..=standby], Duration::from_secs(30)).await;
        assert!(
            took.is_some(),
            "the standby did not take over:\n{}",
            w.operators[standby].log_tail()
        );
        gaps.push((round == 3, killed_at.elapsed()));
        // A fresh process replaces the dead one, as the Deployment would.
        w.operators[leader] = spawn(&w, &format!("failover-{round}"));
        w.operators[leader]
            .wait_ready(Duration::from_secs(60))
            .await;
        leader = standby;
    }

    let jobs = w.wait_all_final(Duration::from_secs(300)).await;
    eprintln!(
        "leaderless gaps (graceful?, duration): {gaps:?}; max live pods {}",
        pods.max_live()
    );
    assert_eq!(jobs.len(), N);
    let mut succeeded_pods: HashMap<String, usize> = HashMap::new();
    for p in w.pods().list(&ListParams::default()).await.unwrap().items {
        if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded") {
            let job = p.labels()["vision.zjlab.io/job"].clone();
            *succeeded_pods.entry(job).or_default() += 1;
        }
    }
    for j in &jobs {
        let name = j.name_any();
        let s = j.status.as_ref().unwrap();
        assert_eq!(
            j.phase(),
            Some(JobPhase::Succeeded),
            "{name}: {:?}",
            s.message
        );
        let i: usize = name[4..].parse().unwrap();
        let expected = if i.is_multiple_of(10) { 2 } else { 1 };
        assert_eq!(
            s.attempts,
            Some(expected),
            "{name} ran {:?} attempts",
            s.attempts
        );
        assert_eq!(
            succeeded_pods.get(&name),
            Some(&1),
            "{name}: exactly one successful pod"
        );
    }
    assert!(
        pods.max_live() <= MAX,
        "saw {} live pods with maxRunning {MAX}",
        pods.max_live()
    );
    // Each leader stamps its term (the Lease's leaseTransitions) on what it
    // writes: every status carries one of this run's terms, and a job run
    // after the failovers carries the newest, on its status and its pod.
    let term = lease_term(&w).await;
    assert!(
        term >= first_term + 4,
        "four leader changes, but the term went from {first_term} to {term}"
    );
    for j in &jobs {
        let t = j.status.as_ref().unwrap().leader_term;
        assert!(
            t.is_some_and(|t| (first_term..=term).contains(&t)),
            "{}: leader term {t:?} not in {first_term}..={term}",
            j.name_any()
        );
    }
    w.submit(w.job("after-failover", "detect")).await;
    let after = w
        .wait_phase(
            "after-failover",
            JobPhase::Succeeded,
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(after.status.unwrap().leader_term, Some(term));
    let pod = w.pods().get("after-failover-1").await.unwrap();
    assert_eq!(
        pod.labels().get(LABEL_LEADER_TERM),
        Some(&term.to_string()),
        "the pod carries the term that created it"
    );

    // A graceful stop hands the lease over at once; a crash waits for expiry (4 s here).
    let graceful = gaps.iter().find(|(g, _)| *g).unwrap().1;
    assert!(
        graceful < Duration::from_secs(3),
        "graceful handover took {graceful:?}"
    );
}

/// Writes a job's status as a crashed operator would have left it (its
/// field manager, server-side apply).
async fn set_status(w: &Scenario, name: &str, status: VisionJobStatus) -> VisionJob {
    // Only the status: a typed VisionJob would also apply its spec.
    let body = json!({"apiVersion": "vision.zjlab.io/v1alpha1", "kind": "VisionJob", "metadata": {"name": name}, "status": status});
    w.jobs()
        .patch_status(
            name,
            &PatchParams::apply("vision-operator").force(),
            &Patch::Apply(&body),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn a_restart_resumes_from_what_a_crash_left_behind() {
    // No operator yet: it starts once the crash's leftovers are in place.
    let mut w = Scenario::new("restart")
        .queue(mk_queue("pool", 2))
        .algorithm(
            mk_algorithm("detect")
                .with_retries(0)
                .with_template_annotations(&[
                    (sim::DURATION, "1s"),
                    (sim::MESSAGE, r#"{"ok":true}"#),
                ]),
        )
        .start()
        .await;
    let algorithm = w.algorithms().get(&w.algorithm("detect")).await.unwrap();
    let now = vision_operator::clock::time_at(vision_operator::clock::now_ms());
    let finalizer = json!({"metadata": {"finalizers": ["vision.zjlab.io/cleanup"]}});

    // (1) Admitted, pod never created: the operator died between the two writes.
    w.submit(w.job("admitted-no-pod", "detect")).await;
    // (2) Its pod finished, the status still says Running: died before the status write.
    w.submit(w.job("finished-unrecorded", "detect")).await;
    // (3) Finished long ago: must never run again.
    w.submit(w.job("done", "detect")).await;
    // (4) Waiting behind them.
    w.submit(w.job("waiting", "detect")).await;
    for name in ["admitted-no-pod", "finished-unrecorded", "done", "waiting"] {
        w.jobs()
            .patch(name, &PatchParams::default(), &Patch::Merge(&finalizer))
            .await
            .unwrap();
    }
    let at = |phase: JobPhase| VisionJobStatus {
        phase: Some(phase),
        queued_at: Some(now.clone()),
        ..Default::default()
    };
    set_status(
        &w,
        "admitted-no-pod",
        VisionJobStatus {
            attempts: Some(1),
            pod_name: Some("admitted-no-pod-1".into()),
            gpus: Some(1),
            admitted_at: Some(now.clone()),
            ..at(JobPhase::Admitted)
        },
    )
    .await;
    let running = set_status(
        &w,
        "finished-unrecorded",
        VisionJobStatus {
            attempts: Some(1),
            pod_name: Some("finished-unrecorded-1".into()),
            gpus: Some(1),
            admitted_at: Some(now.clone()),
            started_at: Some(now.clone()),
            ..at(JobPhase::Running)
        },
    )
    .await;
    set_status(
        &w,
        "done",
        VisionJobStatus {
            attempts: Some(1),
            pod_name: Some("done-1".into()),
            result: Some(json!({"old": true})),
            finished_at: Some(now.clone()),
            ..at(JobPhase::Succeeded)
        },
    )
    .await;
    set_status(
        &w,
        "waiting",
        VisionJobStatus {
            gpus: Some(1),
            ..at(JobPhase::Queued)
        },
    )
    .await;
    let pod = vision_operator::pod::build_pod(&running, &algorithm, 1).unwrap();
    w.pods().create(&PostParams::default(), &pod).await.unwrap();
    let finished = harness::wait_for(Duration::from_secs(30), || async {
        w.pods()
            .get("finished-unrecorded-1")
            .await
            .ok()
            .and_then(|p| p.status)
            .and_then(|s| s.phase)
            .as_deref()
            == Some("Succeeded")
    })
    .await;
    assert!(finished, "the simulated pod did not finish");

    // Only now does an operator start.
    let pods = w.watch_pods();
    w.start_operator().await;
    let a = w
        .wait_phase(
            "admitted-no-pod",
            JobPhase::Succeeded,
            Duration::from_secs(60),
        )
        .await
        .status
        .unwrap();
    assert_eq!(a.attempts, Some(1));
    let f = w
        .wait_phase(
            "finished-unrecorded",
            JobPhase::Succeeded,
            Duration::from_secs(60),
        )
        .await
        .status
        .unwrap();
    assert_eq!((f.attempts, f.result), (Some(1), Some(json!({"ok": true}))));
    w.wait_phase("waiting", JobPhase::Succeeded, Duration::from_secs(60))
        .await;
    let done = w.get("done").await.status.unwrap();
    assert_eq!(
        (done.phase, done.result),
        (Some(JobPhase::Succeeded), Some(json!({"old": true})))
    );
    assert!(
        w.pods().get_opt("done-1").await.unwrap().is_none(),
        "a finished job must never run again"
    );
    assert!(
        w.pods()
            .get_opt("finished-unrecorded-2")
            .await
            .unwrap()
            .is_none(),
        "no second pod for a finished attempt"
    );
    // (1) and (2) held both slots when the operator started: "waiting" ran only after.
    assert!(
        pods.max_live() <= 2,
        "{} live pods with maxRunning 2",
        pods.max_live()
    );
}
