//! The I/O shell: watches on VisionJobs, VisionQueues, VisionAlgorithms and
//! the pods the operator owns feed reflector stores, the dispatcher (the one
//! admission loop, owner of the worker pool) and the job reconciler (pod
//! lifecycle, status, results, retries, timeouts, cancellation). Only the
//! leader writes: both check the leadership flag before every action.

pub mod dispatch;
pub mod job;
mod write;

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::api::{VisionAlgorithm, VisionJob, VisionQueue};
use crate::error::Error;
use crate::metrics::Metrics;
use dispatch::{DispatchEvent, Kind};

pub use crate::api::contract::MANAGER;
/// The finalizer that lets the operator delete a job's pods and free its
/// slot before the job disappears.
pub const FINALIZER: &str = "vision.zjlab.io/cleanup";

/// Tunables of the controllers.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Backoff before the first retry of a failed attempt; doubles per retry.
    pub retry_backoff_base: Duration,
    /// Longest backoff between attempts.
    pub retry_backoff_max: Duration,
    /// How many status writes the dispatcher keeps in flight at once.
    pub max_inflight_writes: usize,
    /// Which job transitions become Kubernetes Events.
    pub job_events: JobEvents,
}

/// Which job transitions are published as Kubernetes Events. Each Event is
/// one more API request per transition, so a platform running millions of
/// short jobs may keep only the problems.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JobEvents {
    /// Every transition: Queued, Admitted, Started, Retrying, Succeeded, Failed, Rejected, Suspended.
    All,
    /// Retrying, Failed and Rejected only.
    Problems,
    /// None.
    None,
}

impl JobEvents {
    pub fn covers(self, phase: crate::api::JobPhase) -> bool {
        use crate::api::JobPhase::*;
        match self {
            JobEvents::All => true,
            // A retry is the phase Admitted again; `publish_transition` tells it apart.
            JobEvents::Problems => matches!(phase, Admitted | Failed | Rejected),
            JobEvents::None => false,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            retry_backoff_base: Duration::from_secs(1),
            retry_backoff_max: Duration::from_secs(60),
            max_inflight_writes: 64,
            job_events: JobEvents::All,
        }
    }
}

/// What the reconciler and the dispatcher share.
pub struct Context {
    pub client: Client,
    pub jobs: Store<VisionJob>,
    pub pods: Store<Pod>,
    pub queues: Store<VisionQueue>,
    pub algorithms: Store<VisionAlgorithm>,
    pub dispatch: mpsc::UnboundedSender<DispatchEvent>,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// Bounds the dispatcher's status writes in flight; a graceful stop
    /// waits until every permit is back.
    pub writes: Arc<tokio::sync::Semaphore>,
    /// Pods (namespace/name) being created, or created but not yet seen by
    /// the pod watch, with when that began.
    creating: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    leader: AtomicBool,
}

impl Context {
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    /// Looks up an owned pod by namespace and name.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Arc<Pod>> {
        self.pods.get(&ObjectRef::new(name).within(namespace))
    }

    pub fn algorithm(&self, name: &str) -> Option<Arc<VisionAlgorithm>> {
        self.algorithms.get(&ObjectRef::new(name))
    }

    /// Claims the creation of a pod (by the dispatcher or the reconciler):
    /// false while another creation of it is under way or its result is not
    /// yet in the pod cache, so that the two never create it twice. A claim
    /// lapses after 10 s.
    pub fn start_creating(&self, namespace: &str, name: &str) -> bool {
        let mut creating = self.creating.lock().unwrap();
        let key = format!("{namespace}/{name}");
        if creating
            .get(&key)
            .is_some_and(|t| t.elapsed() < Duration::from_secs(10))
        {
            return false;
        }
        creating.insert(key, std::time::Instant::now());
        true
    }

    /// The creation failed: someone may try again.
    pub fn creation_failed(&self, namespace: &str, name: &str) {
        self.creating
            .lock()
            .unwrap()
            .remove(&format!("{namespace}/{name}"));
    }

    /// The pod is in the cache: its creation is settled.
    pub fn pod_seen(&self, namespace: &str, name: &str) {
        let mut creating = self.creating.lock().unwrap();
        if !creating.is_empty() {
            creating.remove(&format!("{namespace}/{name}"));
        }
    }
}

/// Readiness: set once every watch has listed its objects.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Checks that the CRDs are installed; the error says how to install them.
pub async fn check_crds(client: &Client) -> anyhow_like::Result<()> {
    let api: Api<VisionJob> = Api::all(client.clone());
    match api.list(&kube::api::ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(e) if crate::error::is_status(&e, 404) => Err(anyhow_like::msg(
            "the VisionJob CRD is not installed: run `kubectl apply --server-side -f crds/` \
             (or `cargo run --bin crdgen | kubectl apply --server-side -f -`), or install the Helm chart",
        )),
        Err(e) => Err(anyhow_like::msg(format!("cannot list VisionJobs: {e}"))),
    }
}

/// A tiny boxed error for start-up failures shown to a person.
pub mod anyhow_like {
    pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;
    pub fn msg(m: impl Into<String>) -> Box<dyn std::error::Error + Send + Sync> {
        m.into().into()
    }
}

/// Runs the watches, the dispatcher and the job reconciler until `shutdown`
/// resolves. `leadership` says whether this replica may write; losing it
/// after having had it ends `run` with an error (the process exits).
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    mut leadership: watch::Receiver<bool>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> anyhow_like::Result<()> {
    let (jobs_store, jobs_writer) = reflector::store::<VisionJob>();
    let (pods_store, pods_writer) = reflector::store::<Pod>();
    let (queues_store, queues_writer) = reflector::store::<VisionQueue>();
    let (algorithms_store, algorithms_writer) = reflector::store::<VisionAlgorithm>();
    let (dispatch_tx, dispatch_rx) = mpsc::unbounded_channel();

    let reporter = Reporter {
        controller: MANAGER.into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        jobs: jobs_store.clone(),
        pods: pods_store.clone(),
        queues: queues_store.clone(),
        algorithms: algorithms_store.clone(),
        dispatch: dispatch_tx.clone(),
        settings: settings.clone(),
        metrics,
        recorder: Recorder::new(client.clone(), reporter),
        writes: Arc::new(tokio::sync::Semaphore::new(settings.max_inflight_writes)),
        creating: Default::default(),
        leader: AtomicBool::new(false),
    });

    // Watches. Job and pod events also trigger the reconciler, through
    // channels, so each object is watched and cached once.
    let (job_trigger_tx, job_trigger_rx) = mpsc::unbounded_channel();
    let (pod_trigger_tx, pod_trigger_rx) = mpsc::unbounded_channel();
    let wc = watcher::Config::default();
    let pod_wc = watcher::Config::default().labels(crate::pod::LABEL_JOB_UID);
    let jobs = watcher(Api::<VisionJob>::all(client.clone()), wc.clone())
        .default_backoff()
        .modify(slim)
        .reflect(jobs_writer);
    let pods = watcher(Api::<Pod>::all(client.clone()), pod_wc)
        .default_backoff()
        .modify(slim)
        .reflect(pods_writer);
    let queues = watcher(Api::<VisionQueue>::all(client.clone()), wc.clone())
        .default_backoff()
        .modify(slim)
        .reflect(queues_writer);
    let algorithms = watcher(Api::<VisionAlgorithm>::all(client.clone()), wc)
        .default_backoff()
        .modify(slim)
        .reflect(algorithms_writer);

    let synced = Arc::new(std::sync::Mutex::new([false; 4]));
    let feed = |kind: Kind| {
        let tx = dispatch_tx.clone();
        let synced = synced.clone();
        let readiness = readiness.clone();
        move |ready: bool| {
            if ready {
                let mut s = synced.lock().unwrap();
                s[kind as usize] = true;
                if s.iter().all(|x| *x) {
                    readiness.0.store(true, Ordering::SeqCst);
                }
            }
            let _ = tx.send(DispatchEvent::Synced(kind));
        }
    };
    let feeders = futures::future::join4(
        forward(
            jobs,
            Kind::Jobs,
            dispatch_tx.clone(),
            Some(job_trigger_tx),
            feed(Kind::Jobs),
        ),
        forward(
            pods,
            Kind::Pods,
            dispatch_tx.clone(),
            Some(pod_trigger_tx),
            feed(Kind::Pods),
        ),
        forward(
            queues,
            Kind::Queues,
            dispatch_tx.clone(),
            None,
            feed(Kind::Queues),
        ),
        forward(
            algorithms,
            Kind::Algorithms,
            dispatch_tx.clone(),
            None,
            feed(Kind::Algorithms),
        ),
    );

    // Leadership: on gaining it, rebuild the pool and reconcile every job;
    // on losing it, stop (the caller exits so that a fresh process starts as
    // a follower with no state of its former term).
    let (reconcile_all_tx, reconcile_all_rx) = mpsc::unbounded_channel::<()>();
    let leader_ctx = ctx.clone();
    let leader_readiness = readiness.clone();
    let leader_watch = async move {
        let mut had = false;
        loop {
            let is = *leadership.borrow_and_update();
            if is && !had {
                // Act only on complete caches: a reconcile that ran before
                // the pods were listed would take every running job's pod
                // for deleted.
                while !leader_readiness.is_ready() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                info!("became leader: rebuilding the worker pool from the cluster's state");
                // A consistent (quorum) list: the watch cache may not yet
                // hold a former leader's last writes.
                let jobs = list_all::<VisionJob>(&leader_ctx.client).await;
                leader_ctx.leader.store(true, Ordering::SeqCst);
                leader_ctx.metrics.set_leader(true);
                let _ = leader_ctx.dispatch.send(DispatchEvent::Leader);
                let _ = leader_ctx.dispatch.send(DispatchEvent::Rebuild(jobs));
                let _ = reconcile_all_tx.send(());
                had = true;
            } else if !is && had {
                leader_ctx.leader.store(false, Ordering::SeqCst);
                leader_ctx.metrics.set_leader(false);
                return Err::<(), _>(anyhow_like::msg("lost leadership"));
            }
            if leadership.changed().await.is_err() {
                leader_ctx.leader.store(false, Ordering::SeqCst);
                return Err(anyhow_like::msg("the leader election task ended"));
            }
        }
    };

    let dispatcher = dispatch::Dispatcher::new(ctx.clone(), dispatch_rx).run();

    // Graceful stop: admit and write nothing new, let the reconciles in
    // flight finish (the controller's own graceful shutdown), and wait for
    // the dispatcher's status writes in flight.
    let stop_ctx = ctx.clone();
    let stopping = async move {
        shutdown.await;
        stop_ctx.leader.store(false, Ordering::SeqCst);
    };

    let reconciler = Controller::for_stream(receiver_stream(job_trigger_rx), jobs_store)
        .owns_stream(receiver_stream(pod_trigger_rx))
        .reconcile_all_on(receiver_stream(reconcile_all_rx).map(|_| ()))
        .graceful_shutdown_on(stopping)
        .run(job::reconcile, job::error_policy, ctx.clone())
        .for_each(|_| async {});

    tokio::select! {
        _ = feeders => Err(anyhow_like::msg("a watch ended")),
        r = leader_watch => r,
        _ = dispatcher => Err(anyhow_like::msg("the dispatcher ended")),
        _ = reconciler => {
            let permits = ctx.settings.max_inflight_writes as u32;
            let drained = tokio::time::timeout(Duration::from_secs(10), ctx.writes.acquire_many(permits)).await;
            info!(writes_drained = drained.is_ok(), "stopped admitting; in-flight work finished");
            Ok(())
        }
    }
}

/// Lists every object of a kind with a consistent read, page by page,
/// retrying until it succeeds.
async fn list_all<K>(client: &Client) -> Vec<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    loop {
        let mut out = Vec::new();
        let mut params = kube::api::ListParams::default().limit(500);
        let result: Result<(), kube::Error> = async {
            loop {
                let page = api.list(&params).await?;
                out.extend(page.items);
                match page.metadata.continue_.filter(|c| !c.is_empty()) {
                    Some(token) => params = params.continue_token(&token),
                    None => return Ok(()),
                }
            }
        }
        .await;
        match result {
            Ok(()) => return out,
            Err(e) => {
                warn!(error = %e, "listing jobs for the rebuild failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Drops what the operator never reads from a cached object: server-side
/// apply's field ownership and kubectl's copy of the last applied manifest,
/// which together are often larger than the object itself.
fn slim<K: kube::Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

fn receiver_stream<T: Send + 'static>(
    mut rx: mpsc::UnboundedReceiver<T>,
) -> impl Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Drives one reflected watch: tells the dispatcher what changed and hands
/// the objects to the reconciler's trigger.
async fn forward<K>(
    stream: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    kind: Kind,
    dispatch: mpsc::UnboundedSender<DispatchEvent>,
    trigger: Option<mpsc::UnboundedSender<Result<K, watcher::Error>>>,
    mut synced: impl FnMut(bool),
) where
    K: kube::Resource + Clone,
    K::DynamicType: Default,
{
    let mut stream = pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(obj)) | Ok(watcher::Event::InitApply(obj)) => {
                // The dispatcher needs pods only to know they are listed.
                if kind != Kind::Pods {
                    let _ = dispatch.send(DispatchEvent::Changed(kind, obj_ref(&obj)));
                }
                if let Some(t) = &trigger {
                    let _ = t.send(Ok(obj));
                }
            }
            Ok(watcher::Event::Delete(obj)) => {
                if kind != Kind::Pods {
                    let _ = dispatch.send(DispatchEvent::Deleted(kind, obj_ref(&obj)));
                }
                if let Some(t) = &trigger {
                    let _ = t.send(Ok(obj));
                }
            }
            Ok(watcher::Event::Init) => {}
            Ok(watcher::Event::InitDone) => synced(true),
            Err(e) => warn!(?kind, error = %e, "watch error; retrying with backoff"),
        }
    }
}

fn obj_ref<K: kube::Resource>(obj: &K) -> (Option<String>, String) {
    (obj.namespace(), obj.name_any())
}

/// Used by the reconciler when an error is not worth a status: log and requeue.
pub fn log_error(e: &Error) {
    warn!(error = %e, kind = e.label(), "reconcile failed");
}
