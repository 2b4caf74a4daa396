//! End-to-end: worker mode (docs/WORKERS.md). The operator serves workers
//! on a local port in its test-only trust mode; workers of the Rust SDK run
//! in the test process (KWOK pods run no process). Jobs of a worker-mode
//! algorithm get their results from the workers with no pod created; a
//! killed worker's attempt is retried on another worker; deleting a running
//! job cancels its task on the worker.
#![cfg(feature = "e2e")]

mod harness;

use std::time::Duration;

use harness::{Operator, OperatorOptions, Scenario, operator::free_port};
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use vision_api::contract::{LABEL_ALGORITHM, LABEL_ROLE, ROLE_WORKER};
use vision_api::testing::{AlgorithmFixture, QueueFixture, mk_algorithm, mk_queue};
use vision_api::{AlgorithmMode, JobPhase, VisionAlgorithm, VisionJob, WorkerPool};
use vision_worker::{CancellationToken, Config, Task, TaskError};

const T: Duration = Duration::from_secs(60);

/// Starts an SDK worker of `algorithm` in this process; cancel the token to
/// stop it gracefully, abort the handle to kill it.
fn worker<H, F>(
    url: &str,
    algorithm: &str,
    id: &str,
    capacity: u32,
    handler: H,
) -> (
    tokio::task::JoinHandle<Result<(), vision_worker::Error>>,
    CancellationToken,
)
where
    H: Fn(Value, Task) -> F + Send + Sync + 'static,
    F: std::future::Future<Output = Result<Value, TaskError>> + Send + 'static,
{
    let mut config = Config::new(url, algorithm, capacity, id);
    config.backoff_initial = Duration::from_millis(50);
    config.backoff_max = Duration::from_millis(500);
    let stop = CancellationToken::new();
    (
        tokio::spawn(vision_worker::run(config, handler, stop.clone())),
        stop,
    )
}

async fn echo(job: Value, _task: Task) -> Result<Value, TaskError> {
    Ok(json!({"echo": job["name"], "input": job["input"]}))
}

/// Runs until cancelled, then reports the task's id.
fn until_cancelled(
    cancelled: mpsc::UnboundedSender<String>,
) -> impl Fn(
    Value,
    Task,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, TaskError>> + Send>>
+ Send
+ Sync
+ 'static {
    move |_job, task| {
        let cancelled = cancelled.clone();
        Box::pin(async move {
            task.cancel.cancelled().await;
            let _ = cancelled.send(task.task_id.clone());
            Err(TaskError::new("Cancelled", "stopped"))
        })
    }
}

/// An algorithm `name` in worker mode: 1 to 4 workers of 2 tasks each.
fn worker_algorithm(name: &str) -> VisionAlgorithm {
    let mut algorithm = mk_algorithm(name);
    algorithm.spec.mode = AlgorithmMode::Worker;
    algorithm.spec.workers = Some(WorkerPool {
        min: 1,
        max: 4,
        tasks_per_worker: 2,
        idle_seconds: None,
        queue: None,
    });
    algorithm
}

/// Options for an operator of the scenario (`identity`) that serves
/// workers on `port` in the test-only trust mode.
fn serving_workers(w: &Scenario, identity: &str, port: u16) -> OperatorOptions {
    let mut options = w.operator_options(identity);
    options.args.extend(
        [
            "--worker-addr",
            &format!("127.0.0.1:{port}"),
            "--worker-trust-local-test-only",
        ]
        .map(String::from),
    );
    options
}

/// Options for an operator (`identity`) that serves workers and keeps the
/// worker pods of the scenario's namespace (`--worker-endpoint`); the
/// endpoint the pods are given.
fn keeping_worker_pods(w: &Scenario, identity: &str) -> (OperatorOptions, String) {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut options = serving_workers(w, identity, port);
    options.args.extend(
        [
            "--worker-namespace",
            &w.namespace,
            "--worker-endpoint",
            &url,
        ]
        .map(String::from),
    );
    (options, url)
}

fn task_of(job: &VisionJob, attempt: i32) -> String {
    format!("{}-{attempt}", job.uid().expect("a created job has a uid"))
}

#[tokio::test]
async fn worker_mode_jobs_run_on_sdk_workers_retry_after_a_kill_and_cancel_on_delete() {
    let w = Scenario::new("workers")
        .queue(mk_queue("pool", 4))
        .algorithm(worker_algorithm("detect"))
        .start()
        .await;
    let algorithm = w.algorithm("detect");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let _operator = Operator::start(&serving_workers(&w, "workers", port)).await;

    // Results come back from a worker; no pod is created.
    let (_a, stop_a) = worker(&url, &algorithm, "w-a", 2, echo);
    for name in ["img-1", "img-2", "img-3"] {
        w.submit(w.job(name, "detect")).await;
    }
    for name in ["img-1", "img-2", "img-3"] {
        let job = w.wait_phase(name, JobPhase::Succeeded, T).await;
        let status = job.status.unwrap();
        assert_eq!(
            status.result,
            Some(json!({"echo": name, "input": {"uri": format!("s3://frames/{name}.jpg")}}))
        );
        assert_eq!(status.attempts, Some(1));
    }
    assert_eq!(
        w.pods()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        0
    );
    stop_a.cancel();

    // A worker killed mid-task: the attempt fails, the job retries on another worker.
    let (cancelled, mut seen) = mpsc::unbounded_channel();
    let (doomed, _stop_doomed) = worker(
        &url,
        &algorithm,
        "w-doomed",
        1,
        until_cancelled(cancelled.clone()),
    );
    w.submit(w.job("killed", "detect")).await;
    w.wait_phase("killed", JobPhase::Running, T).await;
    doomed.abort();
    let (_c, stop_c) = worker(&url, &algorithm, "w-c", 1, echo);
    let job = w.wait_phase("killed", JobPhase::Succeeded, T).await;
    let status = job.status.unwrap();
    assert_eq!(status.attempts, Some(2));
    assert_eq!(
        status.result,
        Some(json!({"echo": "killed", "input": {"uri": "s3://frames/killed.jpg"}}))
    );
    stop_c.cancel();

    // Deleting a running job cancels its task on the worker.
    let (_d, _stop_d) = worker(&url, &algorithm, "w-d", 1, until_cancelled(cancelled));
    let job = w.submit(w.job("deleted", "detect")).await;
    w.wait_phase("deleted", JobPhase::Running, T).await;
    w.jobs()
        .delete("deleted", &DeleteParams::default())
        .await
        .unwrap();
    let task = tokio::time::timeout(T, seen.recv())
        .await
        .expect("the cancel reached the worker");
    assert_eq!(task, Some(task_of(&job, 1)));
}

#[tokio::test]
async fn after_a_leader_kill_the_new_leader_adopts_the_running_task_and_it_runs_once() {
    let w = Scenario::new("workers-failover")
        .queue(mk_queue("pool", 4))
        .algorithm(worker_algorithm("detect"))
        .start()
        .await;
    let algorithm = w.algorithm("detect");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let options = |identity: &str| serving_workers(&w, identity, port);
    let mut first = Operator::start(&options("first")).await;

    // The handler runs until the test lets it finish, and counts its runs.
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (finish, finished) = tokio::sync::watch::channel(false);
    let handler = {
        let runs = runs.clone();
        move |job: Value, _task: Task| {
            let runs = runs.clone();
            let mut finished = finished.clone();
            async move {
                runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = finished.wait_for(|f| *f).await;
                Ok(json!({"done": job["name"]}))
            }
        }
    };
    let (_worker, stop) = worker(&url, &algorithm, "w-1", 1, handler);
    w.submit(w.job("long", "detect")).await;
    w.wait_phase("long", JobPhase::Running, T).await;

    // The leader dies mid-task; a new one takes the lease and the port.
    first.kill();
    let second = Operator::start(&options("second")).await;
    let became_leader = harness::wait_for(T, || second.is_leader()).await;
    assert!(became_leader, "the second operator never led");
    finish.send(true).unwrap();
    let job = w.wait_phase("long", JobPhase::Succeeded, T).await;
    let status = job.status.unwrap();
    assert_eq!(status.result, Some(json!({"done": "long"})));
    assert_eq!(status.attempts, Some(1));
    assert_eq!(
        runs.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the task ran twice"
    );
    stop.cancel();
}

/// A Python worker process (clients/python-worker) from its cached venv;
/// killed when dropped.
struct PythonWorker(std::process::Child);

impl Drop for PythonWorker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const PYTHON_WORKER: &str = r#"
import sys
import vision_worker

def detect(job, task):
    return {"sdk": "python", "name": job["name"], "attempt": task.attempt}

vision_worker.run(detect, algorithm=sys.argv[1], capacity=2)
"#;

#[tokio::test]
async fn a_python_sdk_worker_serves_worker_mode_jobs() {
    // The venv is made once and cached (hack/python.sh); first time: minutes.
    let root = harness::repo_root();
    let venv = std::process::Command::new(root.join("hack/python.sh"))
        .arg("worker-venv")
        .output()
        .expect("running hack/python.sh worker-venv");
    assert!(
        venv.status.success(),
        "hack/python.sh worker-venv: {}",
        String::from_utf8_lossy(&venv.stderr)
    );
    let python =
        std::path::PathBuf::from(String::from_utf8(venv.stdout).unwrap().trim()).join("bin/python");

    let w = Scenario::new("workers-python")
        .queue(mk_queue("pool", 4))
        .algorithm(worker_algorithm("detect"))
        .start()
        .await;
    let port = free_port();
    let _operator = Operator::start(&serving_workers(&w, "workers-python", port)).await;
    let log = std::fs::File::create(root.join(".local/logs/python-worker.log")).unwrap();
    let _worker = PythonWorker(
        std::process::Command::new(python)
            .args(["-c", PYTHON_WORKER, &w.algorithm("detect")])
            .env("VISION_WORKER_ENDPOINT", format!("http://127.0.0.1:{port}"))
            .env("VISION_WORKER_ID", "py-1")
            .env("VISION_WORKER_TOKEN_FILE", "")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting the Python worker"),
    );
    for name in ["py-1", "py-2", "py-3"] {
        w.submit(w.job(name, "detect")).await;
    }
    for name in ["py-1", "py-2", "py-3"] {
        let job = w.wait_phase(name, JobPhase::Succeeded, T).await;
        assert_eq!(
            job.status.unwrap().result,
            Some(json!({"sdk": "python", "name": name, "attempt": 1}))
        );
    }
    assert_eq!(
        w.pods()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        0
    );
}

/// The names of the operator's live (not terminating) worker pods of
/// `algorithm` in the scenario's namespace, sorted.
async fn worker_pods(w: &Scenario, algorithm: &str) -> Vec<String> {
    let selector = format!("{LABEL_ROLE}={ROLE_WORKER},{LABEL_ALGORITHM}={algorithm}");
    let mut names: Vec<String> = w
        .pods()
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.name_any())
        .collect();
    names.sort();
    names
}

/// Waits until the worker pods of `algorithm` are exactly `expected`.
async fn wait_worker_pods(w: &Scenario, algorithm: &str, expected: &[String], timeout: Duration) {
    let reached = harness::wait_for(timeout, || async {
        worker_pods(w, algorithm).await == expected
    })
    .await;
    assert!(
        reached,
        "worker pods of {algorithm}: {:?}, expected {expected:?}",
        worker_pods(w, algorithm).await
    );
}

#[tokio::test]
async fn the_operator_keeps_min_to_max_worker_pods_by_backlog_and_removes_only_idle_ones() {
    let mut algorithm =
        mk_algorithm("detect").with_template_annotations(&[("sim.vision.zjlab.io/duration", "1h")]);
    algorithm.spec.mode = AlgorithmMode::Worker;
    algorithm.spec.workers = Some(WorkerPool {
        min: 1,
        max: 3,
        tasks_per_worker: 1,
        idle_seconds: Some(2),
        queue: None,
    });
    let w = Scenario::new("worker-pods")
        .queue(mk_queue("pool", 8))
        .algorithm(algorithm)
        .start()
        .await;
    let algorithm = w.algorithm("detect");
    let pod = |n: u32| format!("{algorithm}-worker-{n}");
    let (options, url) = keeping_worker_pods(&w, "worker-pods");
    let _operator = Operator::start(&options).await;

    // min: one pod, with the endpoint and its name for the SDK.
    wait_worker_pods(&w, &algorithm, &[pod(0)], T).await;
    let created = w.pods().get(&pod(0)).await.unwrap();
    let env = created.spec.unwrap().containers[0].env.clone().unwrap();
    assert!(env.iter().any(|e| e.name == "VISION_WORKER_ENDPOINT" && e.value.as_deref() == Some(url.as_str())));

    // KWOK pods run no process: each pod's worker runs here, named as its
    // pod. A task runs until the test releases its job.
    let (released, release) = tokio::sync::watch::channel(Vec::<String>::new());
    let (started, mut starts) = mpsc::unbounded_channel::<(String, String)>();
    let serve = |id: String| {
        let (release, started) = (release.clone(), started.clone());
        let handler = {
            let id = id.clone();
            move |job: Value, _task: Task| {
                let (mut release, started, id) = (release.clone(), started.clone(), id.clone());
                async move {
                    let name = job["name"].as_str().unwrap_or_default().to_string();
                    let _ = started.send((id, name.clone()));
                    let _ = release.wait_for(|r| r.contains(&name)).await;
                    Ok(json!({"done": name}))
                }
            }
        };
        worker(&url, &algorithm, &id, 1, handler)
    };
    let _w0 = serve(pod(0));

    // A backlog of 3 tasks of 1 per worker: 3 pods (max).
    for name in ["j-1", "j-2", "j-3"] {
        w.submit(w.job(name, "detect")).await;
    }
    wait_worker_pods(&w, &algorithm, &[pod(0), pod(1), pod(2)], T).await;
    let (_w1, _w2) = (serve(pod(1)), serve(pod(2)));
    let mut running = std::collections::BTreeMap::new();
    for _ in 0..3 {
        let (worker, job) = tokio::time::timeout(T, starts.recv())
            .await
            .expect("every job starts on a worker")
            .unwrap();
        running.insert(job, worker);
    }
    let workers: std::collections::BTreeSet<&String> = running.values().collect();
    assert_eq!(workers.len(), 3, "one task per worker: {running:?}");

    // Two jobs end, one keeps its worker busy: after the idle period only
    // the busy worker's pod is left (min is 1), never the busy one removed.
    let busy_pod = running["j-3"].clone();
    released.send_modify(|r| r.extend(["j-1".to_string(), "j-2".to_string()]));
    for name in ["j-1", "j-2"] {
        w.wait_phase(name, JobPhase::Succeeded, T).await;
    }
    // The operator waits 30 s after becoming leader before removing a pod.
    wait_worker_pods(&w, &algorithm, std::slice::from_ref(&busy_pod), 2 * T).await;
    let job = w.get("j-3").await;
    assert_eq!(job.status.as_ref().unwrap().phase, Some(JobPhase::Running));

    // Its task was never lost: it ends on its first attempt.
    released.send_modify(|r| r.push("j-3".to_string()));
    let job = w.wait_phase("j-3", JobPhase::Succeeded, T).await;
    let status = job.status.unwrap();
    assert_eq!(status.attempts, Some(1));
    assert_eq!(status.result, Some(json!({"done": "j-3"})));
    assert_eq!(worker_pods(&w, &algorithm).await, vec![busy_pod]);
}

#[tokio::test]
async fn worker_pods_hold_gpus_of_their_queue_and_a_gpu_job_waits_until_they_go() {
    let mut w = Scenario::new("worker-gpus")
        .queue(mk_queue("pool", 8).with_max_gpus(2))
        .algorithm(mk_algorithm("gpu"))
        .start()
        .await;
    // Worker pods of 1 GPU each count against the scenario's queue (2 GPUs).
    let mut detect =
        mk_algorithm("detect").with_template_annotations(&[("sim.vision.zjlab.io/duration", "1h")]);
    detect.spec.mode = AlgorithmMode::Worker;
    detect.spec.workers = Some(WorkerPool {
        min: 1,
        max: 3,
        tasks_per_worker: 1,
        idle_seconds: Some(2),
        queue: Some(w.queue().to_string()),
    });
    w.apply_algorithm(detect).await;
    let algorithm = w.algorithm("detect");
    let pod = |n: u32| format!("{algorithm}-worker-{n}");
    let (options, url) = keeping_worker_pods(&w, "worker-gpus");
    let _operator = Operator::start(&options).await;
    wait_worker_pods(&w, &algorithm, &[pod(0)], T).await;

    let (released, release) = tokio::sync::watch::channel(false);
    let serve = |id: String| {
        let release = release.clone();
        worker(&url, &algorithm, &id, 1, move |job: Value, _task: Task| {
            let mut release = release.clone();
            async move {
                let _ = release.wait_for(|r| *r).await;
                Ok(json!({"done": job["name"]}))
            }
        })
    };
    let _w0 = serve(pod(0));
    // A backlog of 3 wants 3 pods; the queue has GPUs for 2.
    for name in ["j-1", "j-2", "j-3"] {
        w.submit(w.job(name, "detect")).await;
    }
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(w.client.clone(), "default");
    let gated = harness::wait_for(T, || async {
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("WorkerPodsWaitForGpus")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref())
                        == Some(algorithm.as_str())
            })
    })
    .await;
    assert!(gated, "no WorkerPodsWaitForGpus Event for {algorithm}");
    assert_eq!(worker_pods(&w, &algorithm).await, vec![pod(0), pod(1)]);
    // The queue's status counts them (the tasks hold no GPUs).
    let counted = harness::wait_for(T, || async {
        let queue = w.queues().get(w.queue()).await.unwrap();
        queue.status.map(|s| s.gpus_in_use) == Some(2)
    })
    .await;
    assert!(
        counted,
        "the queue's gpusInUse does not count the worker pods"
    );

    // A pod-mode job of 1 GPU in the same queue waits for the GPUs the
    // worker pods hold; the worker-mode jobs hold a slot, no GPUs.
    w.submit(w.job("gpu-job", "gpu")).await;
    let quota = harness::wait_for(T, || async {
        let job = w.get("gpu-job").await;
        job.status.and_then(|s| s.reason).as_deref() == Some("GpuQuota")
    })
    .await;
    assert!(quota, "gpu-job does not wait for the queue's GPUs");

    // The tasks end; after the idle period one pod is left (min 1), its GPU
    // is free again and the job runs.
    let _w1 = serve(pod(1));
    released.send(true).unwrap();
    for name in ["j-1", "j-2", "j-3"] {
        w.wait_phase(name, JobPhase::Succeeded, T).await;
    }
    let one_left = harness::wait_for(2 * T, || async {
        worker_pods(&w, &algorithm).await.len() == 1
    })
    .await;
    assert!(
        one_left,
        "worker pods: {:?}",
        worker_pods(&w, &algorithm).await
    );
    let job = w.wait_phase("gpu-job", JobPhase::Succeeded, T).await;
    assert_eq!(job.status.unwrap().gpus, Some(1));
    let task = w.get("j-1").await;
    assert_eq!(task.status.unwrap().gpus, Some(0));
}
