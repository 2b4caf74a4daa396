//! Real-runtime failures on the local cluster's real node (containerd,
//! runc, the kubelet: hack/node/), each with the job status it must give:
//! an image that does not exist, an image that runs as root under the
//! operator's default runAsNonRoot, a missing ConfigMap, an OOM kill, a
//! container that exits non-zero (its log tail), a result over 4 KiB, an
//! eviction by `kubectl drain`, and a slow SIGTERM on cancel and on timeout.
//! The algorithm is the probe of hack/images (its arguments choose what it
//! does); the operator is the tests' local process (`Scenario::operator`):
//! what is real here is the runtime.
//!
//! Needs the real node, like tests/real_node.rs: `hack/test.sh` (or `--test
//! real_runtime`) starts it; by hand, `hack/cluster.sh node up`.
#![cfg(feature = "e2e")]

mod harness;

use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ConfigMapKeySelector, EnvVar, EnvVarSource, Event, ResourceRequirements, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use vision_api::contract::LABEL_JOB_UID;
use vision_api::testing::{AlgorithmFixture, JobFixture, mk_algorithm, mk_queue};
use vision_api::{JobPhase, VisionAlgorithm, VisionJob};

use harness::cluster::{kubectl_output, wait_for};
use harness::real_node::{NODE, image, on_real_node, real_node};
use harness::timeline::PodChange;
use harness::{Scenario, cluster};

/// Long enough for any of these jobs' pods to start on the real node.
const WAIT: Duration = Duration::from_secs(90);

/// An algorithm `name` running `image` with `args` on the real node: no
/// GPU, 2 retries, a small memory limit, the image imported (never pulled).
fn probe_algorithm(name: &str, image: &str, args: &[&str]) -> VisionAlgorithm {
    let mut algorithm = on_real_node(mk_algorithm(name).with_gpus_per_job(0));
    let pod = algorithm.spec.template.spec.as_mut().unwrap();
    pod.termination_grace_period_seconds = Some(30);
    let container = &mut pod.containers[0];
    container.image = Some(image.to_string());
    container.image_pull_policy = Some("Never".into());
    container.args = Some(args.iter().map(|a| a.to_string()).collect());
    container.resources = Some(ResourceRequirements {
        requests: Some(
            [
                ("cpu".to_string(), Quantity("10m".into())),
                ("memory".to_string(), Quantity("16Mi".into())),
            ]
            .into(),
        ),
        limits: Some([("memory".to_string(), Quantity("64Mi".into()))].into()),
        ..Default::default()
    });
    algorithm
}

fn with_image(mut algorithm: VisionAlgorithm, image: &str, pull_policy: &str) -> VisionAlgorithm {
    let container = &mut algorithm.spec.template.spec.as_mut().unwrap().containers[0];
    container.image = Some(image.to_string());
    container.image_pull_policy = Some(pull_policy.to_string());
    algorithm
}

fn reason(job: &VisionJob) -> String {
    job.status
        .as_ref()
        .and_then(|s| s.reason.clone())
        .unwrap_or_default()
}

fn message(job: &VisionJob) -> String {
    job.status
        .as_ref()
        .and_then(|s| s.message.clone())
        .unwrap_or_default()
}

fn attempts(job: &VisionJob) -> i32 {
    job.status.as_ref().and_then(|s| s.attempts).unwrap_or(0)
}

/// Waits until none of the scenario's pods is left but those named in
/// `kept` (a succeeded job keeps its pod).
async fn no_pods_left(s: &Scenario, kept: &[&str]) {
    let pods = s.pods();
    let left = || async {
        pods.list(&ListParams::default())
            .await
            .map(|l| {
                l.items
                    .iter()
                    .map(|p| p.name_any())
                    .filter(|n| !kept.contains(&n.as_str()))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_else(|e| vec![e.to_string()])
    };
    let gone = wait_for(WAIT, || async { left().await.is_empty() }).await;
    assert!(gone, "pods left: {:?}", left().await);
}

/// The queue's `status.running` (slots in use) once it reads `expected`.
async fn queue_running(s: &Scenario, expected: i32) {
    let queues = s.queues();
    let name = s.queue().to_string();
    let ok = wait_for(Duration::from_secs(30), || async {
        queues
            .get(&name)
            .await
            .ok()
            .and_then(|q| q.status)
            .is_some_and(|st| st.running == expected)
    })
    .await;
    let status = queues.get(&name).await.unwrap().status;
    assert!(ok, "queue {name} not running {expected}: {status:?}");
}

#[tokio::test]
async fn an_image_that_does_not_exist_fails_the_job_at_once_naming_the_image() {
    let client = cluster::client().await;
    real_node(&client).await;
    let probe = image("probe");
    let base = probe_algorithm("absent", &probe, &["--result", "{}"]).with_timeout_seconds(600);
    // Not imported, never pulled; and a registry that cannot be resolved
    // (no internet here: the pull fails at once).
    let never = "localhost/vision/absent:1";
    let unresolvable = "registry.invalid/vision/absent:1";
    let s = Scenario::new("rt-image")
        .queue(mk_queue("pool", 2))
        .algorithm(with_image(base.clone(), never, "Never"))
        .algorithm(with_image(
            probe_algorithm("unresolvable", &probe, &[]).with_timeout_seconds(600),
            unresolvable,
            "IfNotPresent",
        ))
        .operator()
        .start()
        .await;
    let timeline = s.watch_pods();
    s.submit(s.job("never", "absent")).await;
    s.submit(s.job("unresolvable", "unresolvable")).await;

    // Failed long before its 600 s timeout, after one attempt, its pod gone.
    let job = s.wait_phase("never", JobPhase::Failed, WAIT).await;
    assert_eq!(reason(&job), "ImagePullFailed");
    assert_eq!(attempts(&job), 1);
    assert_eq!(
        message(&job),
        format!(
            "the algorithm container of pod never-1 cannot start (ErrImageNeverPull: Container image \"{never}\" is not present with pull policy of Never); the node cannot get the image {never}; make it available to the nodes or correct the image in the algorithm's template, then submit the job again"
        )
    );
    // Shown as a Warning while its pod was being deleted.
    let notes = event_notes(&s, "never", "ImagePullFailed").await;
    assert!(
        !notes.is_empty() && notes.iter().all(|n| *n == message(&job)),
        "{notes:?}"
    );
    let job = s.wait_phase("unresolvable", JobPhase::Failed, WAIT).await;
    assert_eq!(reason(&job), "ImagePullFailed");
    assert_eq!(attempts(&job), 1);
    let text = message(&job);
    assert!(
        text.starts_with("the algorithm container of pod unresolvable-1 cannot start (")
            && text.contains(&format!("the node cannot get the image {unresolvable};"))
            && text.contains("registry.invalid")
            && text.contains("no such host"),
        "{text}"
    );
    // Each pod was deleted before its job failed and freed its slot.
    no_pods_left(&s, &[]).await;
    timeline.with(|t| {
        for pod in ["never-1", "unresolvable-1"] {
            assert!(
                t.index_of(pod, |c| *c == PodChange::Deleting).is_some(),
                "{:?}",
                t.events
            );
        }
    });
    queue_running(&s, 0).await;
}

#[tokio::test]
async fn an_image_running_as_root_fails_saying_what_to_change_and_the_change_works() {
    let client = cluster::client().await;
    real_node(&client).await;
    let root = image("probe-root");
    let args = ["--result", "{\"user\":\"non-root\"}"];
    // The template sets no security context: the operator's default
    // (runAsNonRoot) applies, and the image has no USER.
    let as_is = probe_algorithm("root", &root, &args).with_timeout_seconds(600);
    // The change the message asks for: a non-zero runAsUser.
    let mut fixed = probe_algorithm("fixed", &root, &args);
    fixed.spec.template.spec.as_mut().unwrap().containers[0].security_context =
        Some(SecurityContext {
            run_as_user: Some(65532),
            allow_privilege_escalation: Some(false),
            ..Default::default()
        });
    let s = Scenario::new("rt-root")
        .queue(mk_queue("pool", 2))
        .algorithm(as_is)
        .algorithm(fixed)
        .operator()
        .start()
        .await;
    s.submit(s.job("as-is", "root")).await;
    s.submit(s.job("fixed", "fixed")).await;

    let job = s.wait_phase("as-is", JobPhase::Failed, WAIT).await;
    assert_eq!(reason(&job), "ContainerConfigInvalid");
    assert_eq!(attempts(&job), 1);
    // The kubelet's message names the pod by its UID, in the middle.
    let text = message(&job);
    let kubelet = format!(
        "the algorithm container of pod as-is-1 cannot start (CreateContainerConfigError: container has runAsNonRoot and image will run as root (pod: \"as-is-1_{}(",
        s.namespace
    );
    let fix = format!(
        ")\", container: algorithm)); the pod must not run as root (runAsNonRoot, the operator's default when the algorithm's template sets no pod securityContext) and the image {root} runs as root: set securityContext.runAsUser to a non-zero UID for this container in the algorithm's template, or build the image with a numeric non-root USER (e.g. USER 65532)"
    );
    assert!(text.starts_with(&kubelet) && text.ends_with(&fix), "{text}");
    let job = s.wait_phase("fixed", JobPhase::Succeeded, WAIT).await;
    assert_eq!(
        job.status.unwrap().result,
        Some(json!({"user": "non-root"}))
    );
    no_pods_left(&s, &["fixed-1"]).await;
}

#[tokio::test]
async fn a_missing_config_map_is_shown_while_the_job_waits_then_it_times_out() {
    let client = cluster::client().await;
    real_node(&client).await;
    let probe = image("probe");
    let mut algorithm = probe_algorithm("config", &probe, &["--result", "{}"]);
    algorithm.spec.template.spec.as_mut().unwrap().containers[0].env = Some(vec![EnvVar {
        name: "MODEL".into(),
        value_from: Some(EnvVarSource {
            config_map_key_ref: Some(ConfigMapKeySelector {
                name: "absent".into(),
                key: "model".into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }]);
    let s = Scenario::new("rt-config")
        .queue(mk_queue("pool", 1))
        .algorithm(algorithm)
        .operator()
        .start()
        .await;
    // The timeout must outlast the pod's start on a loaded node (sandbox,
    // then the kubelet's attempt to build the container's environment), or
    // the job times out before the kubelet ever says what it waits for.
    s.submit(s.job("cfg", "config").with_timeout_seconds(45))
        .await;
    // While it waits (a ConfigMap may yet be created), its status says why.
    let waiting = "the algorithm container of pod cfg-1 cannot start yet (CreateContainerConfigError: configmap \"absent\" not found)";
    let jobs = s.jobs();
    let shown = wait_for(WAIT, || async {
        jobs.get("cfg").await.is_ok_and(|j| {
            j.phase() == Some(JobPhase::Admitted)
                && reason(&j) == "CreateContainerConfigError"
                && message(&j) == waiting
        })
    })
    .await;
    assert!(shown, "{:?}", s.get("cfg").await.status);
    let job = s.wait_phase("cfg", JobPhase::Failed, WAIT).await;
    assert_eq!(reason(&job), "Timeout");
    assert_eq!(
        message(&job),
        format!("attempt 1 ran longer than its timeout of 45s and was stopped; {waiting}")
    );
    no_pods_left(&s, &[]).await;
}

#[tokio::test]
async fn an_oom_kill_is_retried_then_fails_the_job_with_oom_killed_and_the_limit() {
    let client = cluster::client().await;
    real_node(&client).await;
    let probe = image("probe");
    let mut algorithm =
        probe_algorithm("hungry", &probe, &["--alloc-mib", "200", "--result", "{}"])
            .with_retries(1);
    let container = &mut algorithm.spec.template.spec.as_mut().unwrap().containers[0];
    container.resources.as_mut().unwrap().limits =
        Some([("memory".to_string(), Quantity("32Mi".into()))].into());
    let s = Scenario::new("rt-oom")
        .queue(mk_queue("pool", 1))
        .algorithm(algorithm)
        .operator()
        .start()
        .await;
    s.submit(s.job("hungry", "hungry")).await;
    let job = s.wait_phase("hungry", JobPhase::Failed, WAIT).await;
    assert_eq!(reason(&job), "OOMKilled");
    assert_eq!(attempts(&job), 2);
    assert_eq!(
        message(&job),
        "attempt 2 failed (OOMKilled: the algorithm container used more than its memory limit of 32Mi; raise resources.limits.memory in the algorithm's template (exit code 137)); no retries left (retries: 1)"
    );
}

#[tokio::test]
async fn a_container_that_exits_non_zero_fails_the_job_with_its_log_tail() {
    let client = cluster::client().await;
    real_node(&client).await;
    let probe = image("probe");
    // Writes no result, logs two lines and exits 3: the operator's pod
    // (FallbackToLogsOnError) gives the kubelet's log tail as the message.
    let args = [
        "--log",
        "loading /models/x.onnx",
        "--log",
        "model file missing: /models/x.onnx",
        "--exit",
        "3",
    ];
    let s = Scenario::new("rt-exit")
        .queue(mk_queue("pool", 1))
        .algorithm(probe_algorithm("broken", &probe, &args).with_retries(1))
        .operator()
        .start()
        .await;
    s.submit(s.job("broken", "broken")).await;
    let job = s.wait_phase("broken", JobPhase::Failed, WAIT).await;
    assert_eq!(reason(&job), "BackoffLimitExceeded");
    assert_eq!(attempts(&job), 2);
    assert_eq!(
        message(&job),
        "attempt 2 failed (exit code 3: loading /models/x.onnx\nmodel file missing: /models/x.onnx); no retries left (retries: 1)"
    );
}

#[tokio::test]
async fn results_of_4_kib_are_kept_and_longer_ones_are_result_too_large() {
    let client = cluster::client().await;
    real_node(&client).await;
    let probe = image("probe");
    let s = Scenario::new("rt-result")
        .queue(mk_queue("pool", 2))
        .algorithm(probe_algorithm("big", &probe, &["--result-bytes", "5000"]))
        .algorithm(probe_algorithm("full", &probe, &["--result-bytes", "4096"]))
        .operator()
        .start()
        .await;
    s.submit(s.job("big", "big")).await;
    s.submit(s.job("full", "full")).await;
    // 5000 bytes: the kubelet keeps the last 4096, which are not JSON.
    let job = s.wait_phase("big", JobPhase::Succeeded, WAIT).await;
    assert_eq!(reason(&job), "ResultTooLarge");
    assert!(
        message(&job).starts_with("the algorithm finished but its result (4096 bytes) reached Kubernetes' 4096-byte termination message limit and was cut"),
        "{}",
        message(&job)
    );
    assert_eq!(job.status.unwrap().result, None);
    // Exactly 4096 bytes of JSON: all of it arrived (a cut one keeps the end
    // of the document, which does not parse), so it is the result.
    let job = s.wait_phase("full", JobPhase::Succeeded, WAIT).await;
    assert_eq!(reason(&job), "Completed");
    let pad = "x".repeat(4096 - 10);
    assert_eq!(job.status.unwrap().result, Some(json!({"pad": pad})));
}

/// Uncordons the real node when dropped: a drain must never leave the
/// shared node unschedulable, even when the test fails.
struct Uncordon;

impl Drop for Uncordon {
    fn drop(&mut self) {
        let out = kubectl_output(["uncordon", NODE]);
        if !out.status.success() {
            eprintln!(
                "kubectl uncordon {NODE} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// The notes of the job's Events with this reason.
async fn event_notes(s: &Scenario, job: &str, reason: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(s.client.clone(), &s.namespace);
    let selector = format!("involvedObject.name={job},reason={reason}");
    events
        .list(&ListParams::default().fields(&selector))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.message)
        .collect()
}

#[tokio::test]
async fn a_pod_evicted_by_a_drain_is_retried_while_the_job_keeps_its_slot() {
    let client = cluster::client().await;
    real_node(&client).await;
    let probe = image("probe");
    // The first attempt runs until it is evicted; the second one finishes.
    let args = [
        "--first-sleep",
        "120",
        "--term-delay",
        "1",
        "--result",
        "{\"done\":true}",
    ];
    let s = Scenario::new("rt-drain")
        .queue(mk_queue("pool", 1))
        .algorithm(probe_algorithm("drained", &probe, &args))
        .operator()
        .start()
        .await;
    let timeline = s.watch_pods();
    let first = s.submit(s.job("first", "drained")).await;
    s.wait_phase("first", JobPhase::Running, WAIT).await;
    // A second job waits for the one slot.
    s.submit(s.job("second", "drained")).await;
    s.wait_phase("second", JobPhase::Queued, WAIT).await;

    // Drain only this job's pod (other tests' pods share the node), and
    // uncordon at once, whatever happens.
    {
        let _uncordon = Uncordon;
        let selector = format!("--pod-selector={LABEL_JOB_UID}={}", first.uid().unwrap());
        let drain = kubectl_output([
            "drain",
            NODE,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--force",
            &selector,
            "--timeout=60s",
        ]);
        assert!(
            drain.status.success(),
            "kubectl drain failed: {}",
            String::from_utf8_lossy(&drain.stderr)
        );
    }

    let job = s.wait_phase("first", JobPhase::Succeeded, WAIT).await;
    assert_eq!(attempts(&job), 2);
    assert_eq!(job.status.unwrap().result, Some(json!({"done": true})));
    // The retry said why.
    // The retry said why (one Event per write of it).
    let notes = event_notes(&s, "first", "Retrying").await;
    let evicted = "attempt 1 failed (pod first-1 was evicted (EvictionByEvictionAPI): Eviction API: evicting); attempt 2 starts after backoff";
    assert!(
        !notes.is_empty() && notes.iter().all(|n| n == evicted),
        "{notes:?}"
    );
    s.wait_phase("second", JobPhase::Running, WAIT).await;
    s.jobs()
        .delete("second", &DeleteParams::default())
        .await
        .unwrap();
    no_pods_left(&s, &["first-2"]).await;
    // The slot stayed with the first job through its retry: the second job's
    // pod came only after the first job's second pod finished.
    timeline.with(|t| {
        let evicted = t.index_of("first-1", |c| matches!(c, PodChange::Finished { .. }));
        let retried = t.index_of("first-2", |c| *c == PodChange::Created);
        let done = t.index_of("first-2", |c| matches!(c, PodChange::Finished { .. }));
        let second = t.index_of("second-1", |c| *c == PodChange::Created);
        assert!(
            evicted.is_some() && evicted < retried && retried < done && done < second,
            "{:#?}",
            t.events
        );
    });
}

#[tokio::test]
async fn a_slow_sigterm_is_waited_for_on_timeout_and_on_cancel_with_the_slot_held() {
    let client = cluster::client().await;
    real_node(&client).await;
    let probe = image("probe");
    // Runs until stopped; takes 3 s to stop (its grace period is 30 s).
    let args = ["--sleep", "600", "--term-delay", "3"];
    let s = Scenario::new("rt-sigterm")
        .queue(mk_queue("pool", 1))
        .algorithm(probe_algorithm("slow", &probe, &args))
        .operator()
        .start()
        .await;
    let timeline = s.watch_pods();

    // 1. A timeout stops the pod with SIGTERM; the job waiting for the slot
    // gets it only once that pod has stopped.
    s.submit(s.job("timed", "slow").with_timeout_seconds(4))
        .await;
    s.wait_phase("timed", JobPhase::Running, WAIT).await;
    s.submit(s.job("cancelled", "slow")).await;
    let job = s.wait_phase("timed", JobPhase::Failed, WAIT).await;
    assert_eq!(reason(&job), "Timeout");
    s.wait_phase("cancelled", JobPhase::Running, WAIT).await;

    // 2. Cancelling a job (deleting it) stops its pod the same way.
    s.submit(s.job("next", "slow")).await;
    s.wait_phase("next", JobPhase::Queued, WAIT).await;
    s.jobs()
        .delete("cancelled", &DeleteParams::default())
        .await
        .unwrap();
    s.wait_phase("next", JobPhase::Running, WAIT).await;
    s.jobs()
        .delete("next", &DeleteParams::default())
        .await
        .unwrap();
    no_pods_left(&s, &[]).await;

    // Each stopped pod ran its SIGTERM handler to the end (exit code 143
    // after "probe: stopped"; killed at once it would be 137 without it),
    // and the next job's pod came after it finished.
    let stopped = |c: &PodChange| {
        matches!(c, PodChange::Finished { exit_code: Some(143), message: Some(m), .. }
            if m.ends_with("probe: stopped\n"))
    };
    timeline.with(|t| {
        let timed_out = t.index_of("timed-1", stopped);
        let after_timeout = t.index_of("cancelled-1", |c| *c == PodChange::Created);
        assert!(
            timed_out.is_some() && timed_out < after_timeout,
            "{:#?}",
            t.events
        );
        let deleting = t.index_of("cancelled-1", |c| *c == PodChange::Deleting);
        let cancelled = t.index_of("cancelled-1", stopped);
        let after_cancel = t.index_of("next-1", |c| *c == PodChange::Created);
        assert!(
            deleting.is_some() && deleting < cancelled && cancelled < after_cancel,
            "{:#?}",
            t.events
        );
    });
}
