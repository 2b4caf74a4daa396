//! End-to-end, the short mode of the chaos suite (issue 12): 150 jobs
//! through two operator replicas (one behind the fault proxy) while the
//! leader is SIGKILLed three times, paused once for longer than its lease,
//! and cut off by one proxy fault episode of each kind (blackhole, delay,
//! 429, 500, 500 after commit). The invariants are checked by
//! `vision_chaos`'s watcher from the API server's own watch streams. The
//! long mode, with API-server and etcd restarts, is `hack/chaos.sh`.
#![cfg(feature = "e2e")]

mod harness;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use vision_api::VisionQueue;
use vision_chaos::invariants::ViolationKind;
use vision_chaos::run::{Options, run};
use vision_chaos::watch::{InvariantWatcher, Scope};

fn kubeconfig() -> PathBuf {
    std::env::var_os("VISION_KUBECONFIG")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".local/cluster/kubeconfig")
        })
}

/// The watcher itself, with no operator: pods created by hand over a
/// queue's limits, two of them for one job, are reported from the API
/// server's streams with the exact counts and pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_reports_pods_over_the_limits_from_the_api_server() {
    let client = Client::try_from(
        vision_chaos::load_config(&kubeconfig())
            .await
            .expect("local cluster not reachable: run hack/cluster.sh up"),
    )
    .unwrap();
    // On a fresh cluster this may be the first test to need the CRDs.
    harness::scenario::ensure_crds(&client).await;
    let ns = format!(
        "chaos-watcher-{:x}",
        vision_chaos::watch::now_ms() % 0xff_ffff
    );
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .unwrap();
    let queues: Api<VisionQueue> = Api::all(client.clone());
    let queue = json!({"apiVersion": "vision.zjlab.io/v1alpha1", "kind": "VisionQueue",
        "metadata": {"name": ns}, "spec": {"maxRunning": 1, "maxGPUs": 1}});
    queues
        .patch(
            &ns,
            &PatchParams::apply("vision-chaos-test").force(),
            &Patch::Apply(&queue),
        )
        .await
        .unwrap();
    let watcher = InvariantWatcher::start(
        &client,
        &Scope {
            namespace: Some(ns.clone()),
            lease: None,
        },
        None,
    );
    assert!(watcher.wait_synced(Duration::from_secs(30)).await);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    // Wait until the default ServiceAccount exists, then two pods of one job.
    for name in ["attempt-1", "attempt-2"] {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name,
                "labels": {"vision.zjlab.io/job-uid": "uid-of-job", "vision.zjlab.io/queue": ns},
                "annotations": {"sim.vision.zjlab.io/duration": "1s"}},
            "spec": {"restartPolicy": "Never", "automountServiceAccountToken": false,
                "containers": [{"name": "algorithm", "image": "registry.example.com/vision/chaos:1",
                    "resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
        }))
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Err(e) = pods.create(&PostParams::default(), &pod).await {
            assert!(Instant::now() < deadline, "creating {name}: {e}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while watcher.checker().duplicated_runs() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let finished = watcher.checker().finish(vision_chaos::watch::now_ms());
    let mut seen: Vec<(ViolationKind, String, i64, i64, Vec<String>)> = watcher
        .checker()
        .violations()
        .iter()
        .map(|v| {
            (
                v.kind,
                v.subject.clone(),
                v.count,
                v.limit,
                v.objects.clone(),
            )
        })
        .collect();
    seen.sort();
    let _ = namespaces.delete(&ns, &DeleteParams::background()).await;
    let _ = queues.delete(&ns, &DeleteParams::background()).await;
    let both = vec![format!("{ns}/attempt-1"), format!("{ns}/attempt-2")];
    assert_eq!(finished, vec![]);
    assert_eq!(
        seen,
        vec![
            (ViolationKind::QueueRunning, ns.clone(), 2, 1, both.clone()),
            (ViolationKind::QueueGpus, ns.clone(), 2, 1, both.clone()),
            (
                ViolationKind::JobConcurrentPods,
                "job uid uid-of-job".into(),
                2,
                1,
                both.clone()
            ),
            (
                ViolationKind::JobSucceededTwice,
                "job uid uid-of-job".into(),
                2,
                1,
                both
            ),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_chaos_run_keeps_every_invariant() {
    // Its operators act on every job of the cluster: no other test run's
    // scenario may run meanwhile, nor this run during theirs.
    let client = harness::cluster::client().await;
    let _turn = harness::turn::Turn::take(&client).await;
    harness::scenario::ensure_crds(&client).await;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut o = Options::new(
        kubeconfig(),
        PathBuf::from(env!("CARGO_BIN_EXE_vision-operator")),
        root.join(".local/cluster"),
    );
    o.log_dir = root.join(".local/logs/chaos");
    o.jobs = 150;
    o.replicas = 2;
    o.kills = 3;
    o.pauses = 1;
    o.proxy_faults = 1;
    o.restarts = 0;
    o.seed = 12;
    // The turn is held above, by the harness.
    o.take_turn = false;
    o.timeout = Duration::from_secs(300);
    let report = run(o)
        .await
        .unwrap_or_else(|e| panic!("the chaos run could not be set up: {e}"));
    let table = report.render();
    println!("{table}");

    let faults: BTreeMap<&str, u64> = report
        .faults
        .iter()
        .map(|(k, n)| (k.as_str(), *n))
        .collect();
    // Kills beyond the three planned ones hand leadership to the proxied replica.
    assert!(faults["leader SIGKILL"] >= 3, "{table}");
    let injected: Vec<(&str, u64)> = faults
        .iter()
        .filter(|(k, _)| **k != "leader SIGKILL")
        .map(|(k, n)| (*k, *n))
        .collect();
    assert_eq!(
        injected,
        vec![
            ("etcd restart", 0),
            ("kube-apiserver restart", 0),
            ("leader SIGSTOP longer than the lease", 1),
            ("proxy: 429 on lease renewals", 1),
            ("proxy: 500 after commit on status writes", 1),
            ("proxy: 500 on pod creates", 1),
            ("proxy: blackhole on lease renewals", 1),
            ("proxy: delay on pod creates", 1),
        ],
        "{table}"
    );
    assert_eq!(report.violations, vec![], "{table}");
    assert_eq!(report.duplicated_runs_listed, 0, "{table}");
    assert_eq!(report.jobs_submitted, 150, "{table}");
    // Every job succeeds: the faults are transient, the retries (one
    // scripted failure in ten jobs) stay within the algorithm's budget.
    assert_eq!(
        report.phases,
        BTreeMap::from([("Succeeded".to_string(), 150)]),
        "{table}"
    );
    assert!(report.handovers >= 5, "{table}");
}
