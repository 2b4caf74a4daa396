//! End-to-end: API errors between the operator and the API server (issue
//! 12), staged one at a time through `vision_chaos`'s fault proxy and
//! checked from the API server's own view (a pod watch, the jobs' status).
//!
//! - An admission write that commits but answers 500 (ambiguous) must keep
//!   the job counted: the limit holds and nothing runs twice.
//! - A job cancelled or suspended while its pod's create is still on the
//!   wire must not release its slot before that create has landed, and must
//!   leave no pod behind.
#![cfg(feature = "e2e")]

mod harness;

use std::time::Duration;

use harness::{Scenario, sim};
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use vision_api::JobPhase;
use vision_api::testing::{AlgorithmFixture, mk_algorithm, mk_queue};
use vision_chaos::proxy::{FaultAction, FaultProxy, RequestKind};

const T: Duration = Duration::from_secs(90);

/// Every status write the operator makes commits but is answered 500, and
/// reading the job back fails too, so for a while it cannot learn whether
/// its admission of a job took. It must go on counting that job: with one
/// slot, three jobs run one after the other, each exactly once. (Before the
/// fix a failed read-back rolled the admission back in memory and gave the
/// slot to the next job while the first one's admission had committed.)
#[tokio::test]
async fn an_ambiguous_admission_write_keeps_the_job_counted() {
    let mut w = Scenario::new("ambig")
        .queue(mk_queue("pool", 1))
        .algorithm(mk_algorithm("short").with_template_annotations(&[(sim::DURATION, "2s")]))
        .start()
        .await;
    let pods = w.watch_pods();
    let proxy = w.start_operator_behind_proxy().await;
    proxy.set(
        RequestKind::StatusWrite,
        FaultAction::ServerErrorAfterCommit,
    );
    proxy.set(RequestKind::JobRead, FaultAction::ServerError);

    for name in ["a", "b", "c"] {
        w.submit(w.job(name, "short")).await;
    }
    // The first admission commits (the API server has it) while the
    // operator is told it failed and cannot read it back; keep it so for
    // a few read-back retries, then lift the faults.
    let committed = harness::wait_for(T, || async {
        w.jobs()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|j| j.status.as_ref().is_some_and(|s| s.admitted_at.is_some()))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let hits = proxy.hits();
    proxy.clear();
    let jobs = w.wait_all_final(T).await;

    assert!(committed, "no admission reached the API server");
    assert!(
        hits.get(&(RequestKind::JobRead, "500"))
            .copied()
            .unwrap_or(0)
            >= 1,
        "the operator never tried to read a job back: {hits:?}"
    );
    assert!(
        hits.get(&(RequestKind::StatusWrite, "500 after commit"))
            .copied()
            .unwrap_or(0)
            >= 1,
        "the fault never hit a status write: {hits:?}"
    );
    assert_eq!(pods.max_live(), 1, "more live pods than maxRunning 1");
    let outcomes: Vec<_> = jobs
        .iter()
        .map(|j| {
            let s = j.status.clone().unwrap_or_default();
            (j.metadata.name.clone().unwrap(), s.phase, s.attempts)
        })
        .collect();
    assert_eq!(
        outcomes,
        ["a", "b", "c"]
            .map(|n| (n.to_string(), Some(JobPhase::Succeeded), Some(1)))
            .to_vec(),
        "each job runs exactly once"
    );
    assert_eq!(pods.created(), 3, "one pod per job, none twice");
}

/// A job is deleted while its first pod's create is held on the wire (the
/// proxy delays pod creates by 3 s). The job's slot must stay taken until
/// that create has landed and its pod is gone, and the pod must not be left
/// behind; only then does the next job run. (Before the fix cleanup saw no
/// pod, let the job go and released the slot: the late pod ran next to the
/// next job's, an orphan under a limit of 1.)
#[tokio::test]
async fn a_job_cancelled_while_its_pod_create_is_in_flight_leaves_no_pod_and_holds_its_slot() {
    let mut w = Scenario::new("cancelfly")
        .queue(mk_queue("pool", 1))
        .algorithm(mk_algorithm("long").with_template_annotations(&[(sim::DURATION, "1h")]))
        .start()
        .await;
    let pods = w.watch_pods();
    let proxy = w.start_operator_behind_proxy().await;
    proxy.set(RequestKind::PodCreate, FaultAction::Delay(3000));

    w.submit(w.job("a", "long")).await;
    let sent = create_on_the_wire(&proxy).await;
    // a's create stays held; later creates (b's) go through at once, so a
    // slot released too early shows as b's pod beside a's late one.
    proxy.clear();
    w.jobs()
        .delete("a", &DeleteParams::default())
        .await
        .unwrap();
    w.submit(w.job("b", "long")).await;

    let a_gone = harness::wait_for(T, || async {
        w.jobs().get_opt("a").await.unwrap().is_none()
            && w.pods().get_opt("a-1").await.unwrap().is_none()
    })
    .await;
    let b = w.wait_phase("b", JobPhase::Running, T).await;

    assert!(sent, "a's pod create never reached the proxy");
    assert!(a_gone, "a or its pod a-1 is still there");
    let seen: Vec<String> = pods.with(|t| t.pods.iter().map(|(n, _, _)| n.clone()).collect());
    assert_eq!(
        pods.max_live(),
        1,
        "a's late pod ran next to b's (pods seen: {seen:?})"
    );
    assert_eq!(b.status.unwrap().attempts, Some(1));
}

/// A job is suspended while its first pod's create is held on the wire,
/// and another job waits for the only slot. The suspended job must keep the
/// slot until that create has landed and its pod is gone: never two live
/// pods. Resumed after the other job, it runs. (Before the fix suspend saw
/// no pod and released the slot at once; the late pod then ran beside the
/// next job's.)
#[tokio::test]
async fn a_job_suspended_while_its_pod_create_is_in_flight_holds_its_slot_until_the_pod_is_gone() {
    let mut w = Scenario::new("suspfly")
        .queue(mk_queue("pool", 1))
        .algorithm(mk_algorithm("short").with_template_annotations(&[(sim::DURATION, "3s")]))
        .start()
        .await;
    let pods = w.watch_pods();
    let proxy = w.start_operator_behind_proxy().await;
    proxy.set(RequestKind::PodCreate, FaultAction::Delay(3000));

    w.submit(w.job("a", "short")).await;
    let sent = create_on_the_wire(&proxy).await;
    proxy.clear();
    let suspend = |on: bool| json!({"spec": {"suspend": on}});
    w.jobs()
        .patch("a", &PatchParams::default(), &Patch::Merge(&suspend(true)))
        .await
        .unwrap();
    w.submit(w.job("b", "short")).await;
    w.wait_phase("b", JobPhase::Succeeded, T).await;
    w.jobs()
        .patch("a", &PatchParams::default(), &Patch::Merge(&suspend(false)))
        .await
        .unwrap();
    let a = w.wait_phase("a", JobPhase::Succeeded, T).await;

    assert!(sent, "a's pod create never reached the proxy");
    assert_eq!(
        pods.max_live(),
        1,
        "a's late pod ran beside b's under a limit of 1: {:?}",
        a.status
    );
}

/// Waits until the proxy holds a pod create (the first job's, delayed).
async fn create_on_the_wire(proxy: &FaultProxy) -> bool {
    harness::wait_for(T, || async {
        proxy
            .hits()
            .get(&(RequestKind::PodCreate, "delay"))
            .is_some_and(|n| *n >= 1)
    })
    .await
}
