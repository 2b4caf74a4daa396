//! The hub with real workers of the Rust SDK over loopback gRPC (trust
//! mode): results, capacity, a killed worker, cancellation, a hung worker,
//! and frames that must change nothing.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use vision_worker::proto::{
    self, WorkerMessage, operator_message, worker_client::WorkerClient, worker_message,
};
use vision_worker::{CancellationToken, Config, Task, TaskError};

use super::*;

struct Endpoint {
    hub: Hub,
    events: mpsc::UnboundedReceiver<WorkerEvent>,
    url: String,
    stop: CancellationToken,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn endpoint() -> Endpoint {
    endpoint_with(HubSettings::default()).await
}

async fn endpoint_with(settings: HubSettings) -> Endpoint {
    let (hub, events) = Hub::new(Auth::TrustLocalTestOnly, settings);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let serving = hub.clone();
    let stopped = stop.clone();
    tokio::spawn(async move { serving.serve(listener, stopped.cancelled_owned()).await });
    Endpoint {
        hub,
        events,
        url,
        stop,
    }
}

impl Endpoint {
    async fn event(&mut self) -> WorkerEvent {
        tokio::time::timeout(Duration::from_secs(20), self.events.recv())
            .await
            .expect("an event within 20 s")
            .expect("the hub lives")
    }

    /// Waits (bounded) until `algorithm` has exactly these workers.
    async fn await_workers(&self, algorithm: &str, ids: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.hub.workers(algorithm) != ids {
            assert!(
                Instant::now() < deadline,
                "workers of {algorithm}: {:?}, want {ids:?}",
                self.hub.workers(algorithm)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Starts an SDK worker; cancelling the token stops it gracefully,
    /// aborting the handle kills it.
    fn worker<H, F>(
        &self,
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
        let mut config = Config::new(self.url.clone(), "detect", capacity, id);
        config.backoff_initial = Duration::from_millis(20);
        config.backoff_max = Duration::from_millis(200);
        let shutdown = CancellationToken::new();
        (
            tokio::spawn(vision_worker::run(config, handler, shutdown.clone())),
            shutdown,
        )
    }
}

fn spec(uid: &str, attempt: i32) -> TaskSpec {
    TaskSpec {
        task_id: task_id(uid, attempt),
        job_uid: uid.into(),
        attempt,
        algorithm: "detect".into(),
        job_json: json!({"uid": uid, "attempt": attempt, "input": {"image": format!("{uid}.jpg")}})
            .to_string(),
        timeout: None,
    }
}

async fn echo(job: Value, _task: Task) -> Result<Value, TaskError> {
    Ok(json!({"boxes": [], "image": job["input"]["image"]}))
}

/// Runs until cancelled; reports the cancellation on `cancelled`.
fn blocking(
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

#[tokio::test]
async fn tasks_reach_a_worker_up_to_its_capacity_and_their_results_come_back() {
    let mut ep = endpoint().await;
    let (_worker, _stop) = ep.worker("w-1", 2, echo);
    ep.await_workers("detect", &["w-1"]).await;
    assert_eq!(ep.hub.free_slots("detect"), 2);
    assert_eq!(ep.hub.dispatch(spec("a", 1)).as_deref(), Ok("w-1"));
    assert_eq!(ep.hub.dispatch(spec("b", 1)).as_deref(), Ok("w-1"));
    // Another algorithm has no worker: the task comes back.
    let mut other = spec("c", 1);
    other.algorithm = "ocr".into();
    assert_eq!(ep.hub.dispatch(other.clone()), Err(other));
    let mut results = vec![ep.event().await, ep.event().await];
    results.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(
        results,
        vec![
            WorkerEvent::Succeeded {
                task_id: "a-1".into(),
                worker: "w-1".into(),
                result: json!({"boxes": [], "image": "a.jpg"})
            },
            WorkerEvent::Succeeded {
                task_id: "b-1".into(),
                worker: "w-1".into(),
                result: json!({"boxes": [], "image": "b.jpg"})
            },
        ]
    );
    assert_eq!(ep.hub.free_slots("detect"), 2);
}

#[tokio::test]
async fn a_full_worker_takes_no_more_tasks_and_a_result_over_4_kib_fails_the_attempt() {
    let mut ep = endpoint().await;
    let (_worker, _stop) = ep.worker("w-1", 1, |_job: Value, _task: Task| async {
        Ok(json!({"blob": "x".repeat(5000)}))
    });
    ep.await_workers("detect", &["w-1"]).await;
    assert_eq!(ep.hub.dispatch(spec("a", 1)).as_deref(), Ok("w-1"));
    assert!(ep.hub.dispatch(spec("b", 1)).is_err());
    match ep.event().await {
        WorkerEvent::Failed {
            task_id,
            worker,
            reason,
            message,
        } => {
            assert_eq!(
                (task_id.as_str(), worker.as_str(), reason.as_str()),
                ("a-1", "w-1", "ResultTooLarge")
            );
            assert!(
                message.starts_with("the result (5011 bytes) is over the 4096-byte limit"),
                "{message}"
            );
        }
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[tokio::test]
async fn a_killed_workers_task_is_lost_and_its_retry_runs_on_another_worker() {
    let mut ep = endpoint().await;
    let (cancelled, _) = mpsc::unbounded_channel();
    let (doomed, _stop_doomed) = ep.worker("w-doomed", 1, blocking(cancelled));
    ep.await_workers("detect", &["w-doomed"]).await;
    assert_eq!(ep.hub.dispatch(spec("a", 1)).as_deref(), Ok("w-doomed"));
    doomed.abort();
    assert_eq!(
        ep.event().await,
        WorkerEvent::Lost {
            task_id: "a-1".into(),
            worker: "w-doomed".into(),
            why: Lost::Disconnected
        }
    );
    let (_healthy, _stop) = ep.worker("w-healthy", 1, echo);
    ep.await_workers("detect", &["w-healthy"]).await;
    assert_eq!(ep.hub.dispatch(spec("a", 2)).as_deref(), Ok("w-healthy"));
    assert_eq!(
        ep.event().await,
        WorkerEvent::Succeeded {
            task_id: "a-2".into(),
            worker: "w-healthy".into(),
            result: json!({"boxes": [], "image": "a.jpg"})
        }
    );
}

#[tokio::test]
async fn a_cancel_reaches_the_handler_and_frees_the_slot_without_an_outcome() {
    let mut ep = endpoint().await;
    let (cancelled, mut seen) = mpsc::unbounded_channel();
    let (_worker, _stop) = ep.worker("w-1", 1, blocking(cancelled));
    ep.await_workers("detect", &["w-1"]).await;
    assert_eq!(ep.hub.dispatch(spec("a", 1)).as_deref(), Ok("w-1"));
    assert!(ep.hub.cancel("a-1", CancelReason::Deleted));
    assert!(!ep.hub.cancel("a-1", CancelReason::Deleted));
    assert_eq!(seen.recv().await.as_deref(), Some("a-1"));
    // The worker's Failure(Cancelled) frees the slot; the next task proves it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while ep.hub.free_slots("detect") != 1 {
        assert!(
            Instant::now() < deadline,
            "the cancelled task's slot was never freed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        ep.events.try_recv().is_err(),
        "a cancelled task has no outcome"
    );
}

#[tokio::test]
async fn a_hung_worker_is_declared_dead_and_its_task_cancelled_when_it_comes_back() {
    let mut ep = endpoint_with(HubSettings {
        adopt_grace: Duration::ZERO,
        ..HubSettings::default()
    })
    .await;
    let (cancelled, mut seen) = mpsc::unbounded_channel();
    let (_worker, _stop) = ep.worker("w-1", 1, blocking(cancelled));
    ep.await_workers("detect", &["w-1"]).await;
    assert_eq!(ep.hub.dispatch(spec("a", 1)).as_deref(), Ok("w-1"));
    // As if no heartbeat came for an hour.
    ep.hub.tick(Instant::now() + Duration::from_secs(3600));
    assert_eq!(
        ep.event().await,
        WorkerEvent::Lost {
            task_id: "a-1".into(),
            worker: "w-1".into(),
            why: Lost::MissedHeartbeats
        }
    );
    // The worker reconnects reporting a-1; the operator no longer knows it
    // (its job retries elsewhere): once the adoption grace is over, the
    // worker is told to cancel it.
    ep.await_workers("detect", &["w-1"]).await;
    ep.hub.tick(Instant::now() + Duration::from_millis(1));
    assert_eq!(seen.recv().await.as_deref(), Some("a-1"));
}

#[tokio::test]
async fn forged_unknown_and_malformed_frames_get_an_error_and_change_nothing() {
    let mut ep = endpoint().await;
    let (cancelled, _) = mpsc::unbounded_channel();
    let (_worker, _stop) = ep.worker("w-1", 1, blocking(cancelled));
    ep.await_workers("detect", &["w-1"]).await;
    assert_eq!(ep.hub.dispatch(spec("a", 1)).as_deref(), Ok("w-1"));

    // A second worker forges a result for w-1's task.
    let mut client = WorkerClient::connect(ep.url.clone()).await.unwrap();
    let (tx, rx) = mpsc::channel(8);
    let send = |kind| WorkerMessage { kind: Some(kind) };
    tx.send(send(worker_message::Kind::Register(proto::Register {
        algorithm: "detect".into(),
        capacity: 1,
        worker_id: "w-evil".into(),
        ..proto::Register::default()
    })))
    .await
    .unwrap();
    let mut inbound = client
        .session(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        inbound.message().await.unwrap().unwrap().kind,
        Some(operator_message::Kind::Registered(_))
    ));
    tx.send(send(worker_message::Kind::Result(proto::Result {
        task_id: "a-1".into(),
        attempt: 1,
        result_json: b"{\"forged\": true}".to_vec(),
    })))
    .await
    .unwrap();
    match inbound.message().await.unwrap().unwrap().kind {
        Some(operator_message::Kind::Error(e)) => {
            assert_eq!(
                (e.code.as_str(), e.task_id.as_str()),
                ("UnknownTask", "a-1")
            );
        }
        other => panic!("expected an Error frame, got {other:?}"),
    }
    // A second Register breaks the protocol: an Error, then the stream ends.
    tx.send(send(worker_message::Kind::Register(
        proto::Register::default(),
    )))
    .await
    .unwrap();
    match inbound.message().await.unwrap().unwrap().kind {
        Some(operator_message::Kind::Error(e)) => {
            assert_eq!((e.code.as_str(), e.task_id.as_str()), ("BadFrame", ""))
        }
        other => panic!("expected an Error frame, got {other:?}"),
    }
    assert!(inbound.message().await.unwrap().is_none());
    ep.await_workers("detect", &["w-1"]).await;

    // A stream whose first frame is not Register is refused.
    let (tx2, rx2) = mpsc::channel(1);
    tx2.send(send(worker_message::Kind::Heartbeat(
        proto::Heartbeat::default(),
    )))
    .await
    .unwrap();
    let refused = client.session(ReceiverStream::new(rx2)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    // Nothing reached the controller; w-1 still owns its task.
    assert!(ep.events.try_recv().is_err());
    assert!(ep.hub.cancel("a-1", CancelReason::Deleted));
}

/// A raw stream registered as `worker` reporting `running` tasks.
async fn raw_worker(
    url: &str,
    worker: &str,
    running: &[&str],
) -> (
    mpsc::Sender<WorkerMessage>,
    tonic::Streaming<proto::OperatorMessage>,
) {
    let mut client = WorkerClient::connect(url.to_string()).await.unwrap();
    let (tx, rx) = mpsc::channel(8);
    tx.send(WorkerMessage {
        kind: Some(worker_message::Kind::Register(proto::Register {
            algorithm: "detect".into(),
            capacity: 2,
            worker_id: worker.into(),
            running_task_ids: running.iter().map(|s| s.to_string()).collect(),
            ..proto::Register::default()
        })),
    })
    .await
    .unwrap();
    let mut inbound = client
        .session(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    match inbound.message().await.unwrap().unwrap().kind {
        Some(operator_message::Kind::Registered(r)) => {
            assert_eq!(r.unknown_task_ids, Vec::<String>::new())
        }
        other => panic!("expected Registered, got {other:?}"),
    }
    (tx, inbound)
}

fn result(task_id: &str, json: &str) -> WorkerMessage {
    WorkerMessage {
        kind: Some(worker_message::Kind::Result(proto::Result {
            task_id: task_id.into(),
            attempt: 1,
            result_json: json.as_bytes().to_vec(),
        })),
    }
}

#[tokio::test]
async fn after_a_failover_the_new_leader_adopts_running_tasks_and_accepts_their_results_once() {
    let mut ep = endpoint().await;
    // A worker reconnects to the new leader still running x-1 and x-2.
    let (tx, _inbound) = raw_worker(&ep.url, "w-raw", &["x-1", "x-2"]).await;
    ep.await_workers("detect", &["w-raw"]).await;
    assert!(ep.hub.is_orphan("x-1"));
    // x-1 ends before the leader adopts it: its result is kept, not lost.
    tx.send(result("x-1", r#"{"n": 1}"#)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while ep.hub.free_slots("detect") != 1 {
        assert!(Instant::now() < deadline, "x-1's end never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ep.events.try_recv().is_err());
    assert_eq!(
        ep.hub.adopt("x-1", "detect", None),
        Adopted::Ended("w-raw".into())
    );
    assert_eq!(
        ep.event().await,
        WorkerEvent::Succeeded {
            task_id: "x-1".into(),
            worker: "w-raw".into(),
            result: json!({"n": 1})
        }
    );
    // x-2 is adopted while it runs; its result then counts, once.
    assert_eq!(
        ep.hub.adopt("x-2", "detect", None),
        Adopted::Running("w-raw".into())
    );
    tx.send(result("x-2", r#"{"n": 2}"#)).await.unwrap();
    assert_eq!(
        ep.event().await,
        WorkerEvent::Succeeded {
            task_id: "x-2".into(),
            worker: "w-raw".into(),
            result: json!({"n": 2})
        }
    );
    // Adopted and never reported by any worker: lost after the grace period.
    assert_eq!(ep.hub.adopt("x-3", "detect", None), Adopted::Awaiting);
    ep.hub.tick(Instant::now() + Duration::from_secs(31));
    assert_eq!(
        ep.event().await,
        WorkerEvent::Lost {
            task_id: "x-3".into(),
            worker: String::new(),
            why: Lost::NotReported
        }
    );
}

#[tokio::test]
async fn registrations_beyond_the_algorithms_limits_are_refused() {
    let ep = endpoint().await;
    ep.hub.set_admission(|algorithm| match algorithm {
        "detect" => Ok(2),
        other => Err(format!(
            "algorithm {other} is not in worker mode (spec.mode)"
        )),
    });
    let register = |algorithm: &str, capacity: u32| WorkerMessage {
        kind: Some(worker_message::Kind::Register(proto::Register {
            algorithm: algorithm.into(),
            capacity,
            worker_id: "w".into(),
            ..proto::Register::default()
        })),
    };
    let mut client = WorkerClient::connect(ep.url.clone()).await.unwrap();
    for (frame, code, message) in [
        (
            register("detect", 3),
            tonic::Code::InvalidArgument,
            "Register.capacity 3 is over algorithm detect's workers.tasksPerWorker (2)",
        ),
        (
            register("ocr", 1),
            tonic::Code::FailedPrecondition,
            "algorithm ocr is not in worker mode (spec.mode)",
        ),
    ] {
        let (tx, rx) = mpsc::channel(1);
        tx.send(frame).await.unwrap();
        let refused = client.session(ReceiverStream::new(rx)).await.unwrap_err();
        assert_eq!((refused.code(), refused.message()), (code, message));
    }
    assert_eq!(ep.hub.workers("detect"), Vec::<String>::new());
}

/// A follower takes no worker (it would cancel the worker's running tasks
/// as unknown): a worker is refused as UNAVAILABLE, which the SDK retries,
/// and registers once this replica leads.
#[tokio::test]
async fn only_the_leader_takes_workers_and_a_refused_worker_registers_once_it_leads() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let ep = endpoint().await;
    let leading = Arc::new(AtomicBool::new(false));
    let flag = leading.clone();
    ep.hub.set_leading(move || flag.load(Ordering::SeqCst));

    let refused = WorkerClient::connect(ep.url.clone())
        .await
        .unwrap()
        .session(tokio_stream::iter([WorkerMessage {
            kind: Some(worker_message::Kind::Register(proto::Register {
                algorithm: "detect".into(),
                worker_id: "w-1".into(),
                capacity: 1,
                ..Default::default()
            })),
        }]))
        .await
        .expect_err("a follower refuses");
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert!(refused.message().contains("not the leader"), "{refused:?}");

    let (_worker, _stop) = ep.worker("w-1", 1, echo);
    leading.store(true, Ordering::SeqCst);
    ep.await_workers("detect", &["w-1"]).await;
}

#[tokio::test]
async fn a_reconnected_worker_reports_its_recent_outcomes_so_a_new_leader_adopts_them_not_runs_them_again()
 {
    let mut ep = endpoint().await;
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = runs.clone();
    let handler = move |job: Value, task: Task| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        echo(job, task)
    };
    let (_worker, _stop) = ep.worker("w-1", 1, handler);
    ep.await_workers("detect", &["w-1"]).await;
    assert_eq!(ep.hub.dispatch(spec("a", 1)).as_deref(), Ok("w-1"));
    let done = WorkerEvent::Succeeded {
        task_id: "a-1".into(),
        worker: "w-1".into(),
        result: json!({"boxes": [], "image": "a.jpg"}),
    };
    assert_eq!(ep.event().await, done);
    // The worker's stream ends (as when the leader that got the result dies
    // before recording it) and the worker connects again: it reports a-1,
    // and sends its result again.
    ep.hub.tick(Instant::now() + Duration::from_secs(3600));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ep.hub.is_orphan("a-1") {
        assert!(Instant::now() < deadline, "a-1 was never reported again");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A new leader that finds the job still without its outcome adopts the
    // task instead of sending it again, and gets the result.
    match ep.hub.adopt("a-1", "detect", None) {
        Adopted::Ended(w) | Adopted::Running(w) => assert_eq!(w, "w-1"),
        Adopted::Awaiting => panic!("a-1's report was not kept"),
    }
    assert_eq!(ep.event().await, done);
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// Worker mode's attempts over `ep`'s hub, for algorithm "detect" in
/// worker mode; its event loop runs until the test ends.
fn worker_mode(
    ep: &mut Endpoint,
) -> (
    std::sync::Arc<WorkerMode>,
    crate::api::VisionJob,
    k8s_openapi::api::core::v1::Pod,
) {
    use kube::runtime::watcher;
    let mut algorithm = vision_api::testing::mk_algorithm("detect");
    algorithm.spec.mode = crate::api::AlgorithmMode::Worker;
    let (algorithms, mut writer) = kube::runtime::reflector::store();
    writer.apply_watcher_event(&watcher::Event::Apply(algorithm.clone()));
    let mode = std::sync::Arc::new(WorkerMode::new(
        ep.hub.clone(),
        algorithms,
        std::sync::Arc::new(crate::metrics::Metrics::new()),
        |_pod| {},
    ));
    let (_, none) = mpsc::unbounded_channel();
    let events = std::mem::replace(&mut ep.events, none);
    tokio::spawn(mode.clone().run(events));
    let job = vision_api::testing::mk_job("team-a", "a", "detect");
    let pod = crate::pod::build_pod(&job, &algorithm, 1).unwrap();
    (mode, job, pod)
}

/// Waits (bounded) until the job's attempt runs on `worker`.
async fn await_running_on(mode: &WorkerMode, job: &crate::api::VisionJob, worker: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let on = mode
            .pods_of(job)
            .first()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .and_then(|p| worker_of(p).map(str::to_string));
        if on.as_deref() == Some(worker) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the attempt runs on {on:?}, not {worker}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The gap a failover left: the former leader sent an attempt and died
/// before writing that it runs. The new leader holds such an attempt (its
/// job written in a former term) instead of sending it to an idle worker,
/// and adopts it when its worker reconnects: it runs once.
#[tokio::test]
async fn an_attempt_a_former_leader_may_have_sent_waits_for_its_worker_and_is_adopted_not_sent_again()
 {
    let mut ep = endpoint_with(HubSettings {
        reconnect_hold: Duration::from_secs(3600),
        ..HubSettings::default()
    })
    .await;
    let (mode, job, pod) = worker_mode(&mut ep);
    let task = attempts::task_for(&pod).unwrap().task_id;
    let (_idle, _stop) = ep.worker("w-idle", 1, echo);
    ep.await_workers("detect", &["w-idle"]).await;

    mode.create(&pod, true);
    assert_eq!(
        ep.hub.free_slots("detect"),
        1,
        "held, not sent to the idle worker"
    );
    // The worker the former leader sent it to reconnects, still running it.
    let (_tx, _inbound) = raw_worker(&ep.url, "w-old", &[&task]).await;
    await_running_on(&mode, &job, "w-old").await;
    assert_eq!(
        ep.hub.free_slots("detect"),
        1 + 1,
        "w-idle free, w-old 1 of 2"
    );
}

/// An attempt of a former term whose worker never reports it is sent once
/// the hold is over; one of this leader's own is sent at once.
#[tokio::test]
async fn a_held_attempt_is_sent_after_the_hold_and_a_current_one_at_once() {
    let mut ep = endpoint_with(HubSettings {
        reconnect_hold: Duration::ZERO,
        ..HubSettings::default()
    })
    .await;
    let (mode, job, pod) = worker_mode(&mut ep);
    let (_w, _stop) = ep.worker("w-1", 1, blocking(mpsc::unbounded_channel().0));
    ep.await_workers("detect", &["w-1"]).await;
    mode.create(&pod, true);
    await_running_on(&mode, &job, "w-1").await;

    let mut ep = endpoint().await;
    let (mode, job, pod) = worker_mode(&mut ep);
    let (_w, _stop) = ep.worker("w-2", 1, blocking(mpsc::unbounded_channel().0));
    ep.await_workers("detect", &["w-2"]).await;
    mode.create(&pod, false);
    await_running_on(&mode, &job, "w-2").await;
}
