//! End-to-end: tenants of one queue (issue 17): per-tenant limits with
//! their reason, weighted fair share (3:1 on a one-slot queue), and the
//! tenants in the queue's status. Every job is submitted from the
//! scenario's one namespace and labelled with its tenant, as a platform
//! that submits for many users does.
#![cfg(feature = "e2e")]

mod harness;

use std::collections::BTreeMap;
use std::time::Duration;

use harness::{Scenario, sim};
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use vision_api::testing::{AlgorithmFixture, JobFixture, QueueFixture, mk_algorithm, mk_queue};
use vision_api::{
    JobPhase, PreemptionPolicy, QueuePreemption, QueueTenancy, TenantLimits, TenantSpec, VisionJob,
    VisionQueue,
};

const T: Duration = Duration::from_secs(90);
const LABEL: &str = "example.com/tenant";

fn tenancy(tenants: &[(&str, i32)], default_limits: Option<TenantLimits>) -> QueueTenancy {
    QueueTenancy {
        tenant_label: Some(LABEL.into()),
        default_weight: 1,
        default_limits,
        tenants: tenants
            .iter()
            .map(|(name, weight)| TenantSpec {
                name: (*name).into(),
                weight: Some(*weight),
                limits: None,
            })
            .collect(),
        usage_half_life_seconds: 600,
    }
}

fn with_tenancy(mut q: VisionQueue, t: QueueTenancy) -> VisionQueue {
    q.spec.tenancy = Some(t);
    q
}

fn of_tenant(mut job: VisionJob, tenant: &str) -> VisionJob {
    job.metadata.labels = Some(BTreeMap::from([(LABEL.to_string(), tenant.to_string())]));
    job
}

#[tokio::test]
async fn a_tenant_at_its_limit_waits_and_says_so_while_others_run() {
    let limits = TenantLimits {
        max_running: Some(1),
        max_gpus: None,
    };
    let w = Scenario::new("tenant-limit")
        .queue(with_tenancy(
            mk_queue("pool", 4),
            tenancy(&[], Some(limits)),
        ))
        .algorithm(mk_algorithm("detect").with_template_annotations(&[(sim::DURATION, "4s")]))
        .operator()
        .start()
        .await;
    let pods = w.watch_pods();
    w.submit(of_tenant(w.job("a-0", "detect"), "alice")).await;
    w.wait_phase("a-0", JobPhase::Running, T).await;
    w.submit(of_tenant(w.job("a-1", "detect"), "alice")).await;
    w.submit(of_tenant(w.job("b-0", "detect"), "bob")).await;
    let queued = w.wait_phase("a-1", JobPhase::Queued, T).await;
    let s = queued.status.as_ref().unwrap();
    assert_eq!(s.reason.as_deref(), Some("TenantLimit"), "{:?}", s.message);
    let message = s.message.as_deref().unwrap_or_default();
    assert!(
        message.contains("tenant alice holds 1 of the 1 jobs it may run at once"),
        "{message}"
    );
    // bob is not held back by alice's limit.
    w.wait_phase("b-0", JobPhase::Running, T).await;
    // The queue's status lists both tenants.
    let listed = harness::wait_for(T, || async {
        let q = w.queues().get(w.queue()).await.unwrap();
        let names: Vec<String> = q
            .status
            .map(|s| s.tenants.into_iter().map(|t| t.name).collect())
            .unwrap_or_default();
        names == ["alice", "bob"]
    })
    .await;
    assert!(listed, "status.tenants must list alice and bob");
    let jobs = w.wait_all_final(T).await;
    assert!(jobs.iter().all(|j| j.phase() == Some(JobPhase::Succeeded)));
    // At no instant did alice have two pods (nor anyone more than its one).
    assert!(
        pods.max_live() <= 2,
        "alice 1 + bob 1 at most, saw {}",
        pods.max_live()
    );
}

#[tokio::test]
async fn weights_three_to_one_order_admission_on_a_one_slot_queue() {
    let w = Scenario::new("tenant-weights")
        // Paused: every job waits, then the one slot admits by fair share.
        .queue(with_tenancy(
            mk_queue("pool", 1).paused(),
            tenancy(&[("heavy", 3), ("light", 1)], None),
        ))
        // Longer than a second, so admission times (second precision) order them.
        .algorithm(mk_algorithm("detect").with_template_annotations(&[(sim::DURATION, "1100ms")]))
        .operator()
        .start()
        .await;
    // light's jobs are submitted first.
    for i in 0..4 {
        w.submit(of_tenant(w.job(&format!("light-{i}"), "detect"), "light"))
            .await;
    }
    for i in 0..8 {
        w.submit(of_tenant(w.job(&format!("heavy-{i}"), "detect"), "heavy"))
            .await;
    }
    for j in w.jobs().list(&Default::default()).await.unwrap() {
        w.wait_phase(&j.name_any(), JobPhase::Queued, T).await;
    }
    let patch = json!({"spec": {"paused": false}});
    w.queues()
        .patch(w.queue(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let jobs = w.wait_all_final(Duration::from_secs(180)).await;
    let mut order: Vec<(String, String)> = jobs
        .iter()
        .map(|j| {
            let s = j.status.as_ref().unwrap();
            assert_eq!(j.phase(), Some(JobPhase::Succeeded), "{:?}", s.message);
            (s.admitted_at.as_ref().unwrap().0.to_string(), j.name_any())
        })
        .collect();
    order.sort();
    let tenants: Vec<&str> = order
        .iter()
        .map(|(_, n)| n.split('-').next().unwrap())
        .collect();
    // Within a tenant: FIFO.
    for t in ["heavy", "light"] {
        let mine: Vec<&str> = order
            .iter()
            .map(|(_, n)| n.as_str())
            .filter(|n| n.starts_with(t))
            .collect();
        let mut sorted = mine.clone();
        sorted.sort();
        assert_eq!(mine, sorted, "{t}'s jobs in creation order");
    }
    // FIFO would run light's 4 jobs first. Fair share: heavy, whose usage
    // counts a third, gets 3 of every 4 slots: of the first 8 admissions, 6
    // (give or take one: the job durations are real), and light one of the
    // first two.
    assert!(tenants[..2].contains(&"light"), "{tenants:?}");
    let heavy = tenants[..8].iter().filter(|t| **t == "heavy").count();
    assert!(
        (5..=7).contains(&heavy),
        "heavy got {heavy} of the first 8: {tenants:?}"
    );
    // light is never starved: never more than 4 heavy in a row while light waits.
    let light_last = tenants.iter().rposition(|t| *t == "light").unwrap();
    for win in tenants[..=light_last].windows(5) {
        assert!(win.contains(&"light"), "{tenants:?}");
    }
}

#[tokio::test]
async fn an_urgent_job_preempts_a_lower_priority_one_which_resumes_without_spending_a_retry() {
    let mut queue = mk_queue("pool", 1);
    queue.spec.preemption = Some(QueuePreemption {
        within_queue: PreemptionPolicy::LowerPriority,
    });
    let w = Scenario::new("preempt")
        .queue(queue)
        .algorithm(mk_algorithm("slow").with_template_annotations(&[(sim::DURATION, "8s")]))
        .algorithm(mk_algorithm("fast").with_template_annotations(&[(sim::DURATION, "1s")]))
        .operator()
        .start()
        .await;
    let pods = w.watch_pods();
    w.submit(w.job("low", "slow")).await;
    let running = w.wait_phase("low", JobPhase::Running, T).await;
    let queued_at = running.status.and_then(|s| s.queued_at);
    assert!(queued_at.is_some(), "low was queued before it ran");
    // Same priority as low, created after it: it waits behind low.
    w.submit(w.job("next", "fast")).await;
    w.wait_phase("next", JobPhase::Queued, T).await;
    w.submit(w.job("urgent", "fast").with_priority(10)).await;
    // The victim waits again, in its place, told why.
    let requeued = harness::wait_for(T, || async {
        let j = w.get("low").await;
        j.status.and_then(|s| s.preemptions) == Some(1)
    })
    .await;
    assert!(requeued, "low must be preempted once");
    let jobs = w.wait_all_final(Duration::from_secs(120)).await;
    for j in &jobs {
        let s = j.status.as_ref().unwrap();
        assert_eq!(
            j.phase(),
            Some(JobPhase::Succeeded),
            "{}: {:?}",
            j.name_any(),
            s.message
        );
    }
    let low = w.get("low").await.status.unwrap();
    assert_eq!(
        (low.attempts, low.preemptions, low.last_preempted_attempt),
        (Some(2), Some(1), Some(1)),
        "a preempted attempt, then a whole one"
    );
    let urgent = w.get("urgent").await.status.unwrap();
    assert_eq!(urgent.attempts, Some(1));
    // Back in its original place: its queuedAt is kept, and its second
    // attempt was admitted before "next", which was created after it (with
    // 8 s jobs, well apart at the admission times' one-second resolution).
    assert_eq!(low.queued_at, queued_at, "queuedAt kept");
    let next = w.get("next").await.status.unwrap();
    assert_eq!((next.attempts, next.preemptions), (Some(1), None));
    assert!(
        low.admitted_at.as_ref().unwrap().0 < next.admitted_at.as_ref().unwrap().0,
        "low (attempt 2) at {:?}, next at {:?}",
        low.admitted_at,
        next.admitted_at
    );
    // Limits held at every instant: the urgent pod started only once the
    // victim's was gone.
    assert_eq!(pods.max_live(), 1, "one slot, never two live pods");
    // The next attempt is told its predecessor was preempted.
    let pod = w
        .pods()
        .get(&vision_api::contract::pod_name("low", 2))
        .await
        .unwrap();
    let job_json: serde_json::Value =
        serde_json::from_str(&pod.annotations()[vision_api::contract::ANNOTATION_JOB_JSON])
            .unwrap();
    assert_eq!(
        job_json["previousAttempt"],
        json!({"attempt": 1, "preempted": true})
    );
    // An Event says it was preempted.
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(w.client.clone(), &w.namespace);
    let preempted = harness::wait_for(T, || async {
        events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("Preempted")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("low")
            })
    })
    .await;
    assert!(preempted, "an Event with reason Preempted on low");
}
