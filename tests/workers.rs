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
use vision_api::testing::{mk_algorithm, mk_queue};
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
