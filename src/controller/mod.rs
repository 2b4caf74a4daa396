//! The I/O shell around the worker pool. `run` wires it: watches on
//! VisionJobs, VisionQueues, VisionAlgorithms and the operator's pods feed
//! reflector stores, the dispatcher (the one admission loop, owner of the
//! pool) and the job reconciler (every step of an admitted job, planned by
//! the pure `plan`). Both write only through the `writer` and talk to each
//! other only through the `handle`. Only the leader writes.
//! docs/ARCHITECTURE.md draws the module graph (no cycles: a unit test
//! checks it).

mod claims;
mod context;
pub mod dispatch;
pub mod events;
mod handle;
pub mod job;
pub mod plan;
mod settings;
pub mod writer;

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector;
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::api::contract::{MANAGER, POD_FINALIZER};
use crate::api::{VisionAlgorithm, VisionJob, VisionQueue};
use crate::error::{Error, Result};
use crate::leader::Validity;
use crate::metrics::Metrics;
pub use context::Context;
use handle::{Kind, PoolEvent, PoolHandle};
pub use settings::{FINALIZER, JobEvents, Settings};
use writer::Writer;

/// Readiness: set once every watch has listed its objects.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Resolves once ready.
    pub async fn ready(self) {
        while !self.is_ready() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Checks that the CRDs are installed; the error says how to install them.
pub async fn check_crds(client: &Client) -> Result<()> {
    let api: Api<VisionJob> = Api::all(client.clone());
    match api.list(&kube::api::ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(e) if crate::error::is_status(&e, 404) => Err(Error::CrdsMissing),
        Err(e) => Err(Error::Kube(e)),
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
    validity: Validity,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<()> {
    let (jobs_store, jobs_writer) = reflector::store::<VisionJob>();
    let (pods_store, pods_writer) = reflector::store::<Pod>();
    let (queues_store, queues_writer) = reflector::store::<VisionQueue>();
    let (algorithms_store, algorithms_writer) = reflector::store::<VisionAlgorithm>();
    let (pool, pool_inbox) = PoolHandle::new();

    let (events, publishing) = events::Events::new(
        client.clone(),
        MANAGER.into(),
        std::env::var("POD_NAME").ok(),
    );
    tokio::spawn(publishing);
    let writer = Writer::new(
        client.clone(),
        metrics.clone(),
        events,
        settings.job_events,
        validity,
    );
    let ctx = Arc::new(Context {
        client: client.clone(),
        jobs: jobs_store.clone(),
        pods: pods_store.clone(),
        queues: queues_store.clone(),
        algorithms: algorithms_store.clone(),
        writer,
        pool: pool.clone(),
        writes: Arc::new(tokio::sync::Semaphore::new(settings.max_inflight_writes)),
        settings,
        metrics,
        leader: AtomicBool::new(false),
    });

    // Watches. Job and pod events also trigger the reconciler, through
    // channels, so each object is watched and cached once.
    let (job_trigger_tx, job_trigger_rx) = tokio::sync::mpsc::unbounded_channel();
    let (pod_trigger_tx, pod_trigger_rx) = tokio::sync::mpsc::unbounded_channel();
    if let Some(mut workers) = ctx.settings.workers.clone() {
        if let Some(pods) = workers.pods.as_mut() {
            let pool = ctx.pool.clone();
            pods.grants = Some(crate::workers::pods::GpuGrants::new(move |r| {
                pool.grant_worker_pods(r)
            }));
        }
        let trigger = pod_trigger_tx.clone();
        crate::workers::start(
            &ctx.client,
            workers,
            algorithms_store.clone(),
            ctx.metrics.clone(),
            move |pod| {
                let _ = trigger.send(Ok(pod));
            },
            |mode| ctx.writer.set_workers(mode),
            {
                let ctx = ctx.clone();
                move || ctx.is_leader()
            },
        )
        .await
        .map_err(Error::Listen)?;
    }
    let wc = watcher::Config::default();
    let pod_wc = watcher::Config::default().labels(crate::pod::LABEL_JOB_UID);
    let jobs = watcher(Api::<VisionJob>::all(client.clone()), wc.clone())
        .default_backoff()
        .modify(slim_job)
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
        let pool = pool.clone();
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
            pool.send(PoolEvent::Synced(kind));
        }
    };
    let pod_ctx = ctx.clone();
    // Wakes the sweep of pods whose job is gone (see `release_orphans`).
    let orphans_wake = Arc::new(tokio::sync::Notify::new());
    let (job_wake, pod_wake) = (orphans_wake.clone(), orphans_wake.clone());
    let feeders = futures::future::join4(
        forward(
            jobs,
            Kind::Jobs,
            pool.clone(),
            Some(job_trigger_tx),
            feed(Kind::Jobs),
            move |event| {
                if matches!(event, watcher::Event::Delete(_)) {
                    job_wake.notify_one();
                }
            },
        ),
        forward(
            pods,
            Kind::Pods,
            pool.clone(),
            Some(pod_trigger_tx),
            feed(Kind::Pods),
            move |event| {
                settle_claims(&pod_ctx.writer, event);
                if let watcher::Event::Apply(pod) = event
                    && pod.metadata.deletion_timestamp.is_some()
                    && holds_outcome(pod)
                {
                    pod_wake.notify_one();
                }
            },
        ),
        forward(
            queues,
            Kind::Queues,
            pool.clone(),
            None,
            feed(Kind::Queues),
            |_| {},
        ),
        forward(
            algorithms,
            Kind::Algorithms,
            pool.clone(),
            None,
            feed(Kind::Algorithms),
            |_| {},
        ),
    );

    // Leadership: on gaining it, rebuild the pool and reconcile every job;
    // on losing it, stop (the caller exits so that a fresh process starts as
    // a follower with no state of its former term).
    let (reconcile_all_tx, reconcile_all_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let leader_ctx = ctx.clone();
    let leader_readiness = readiness.clone();
    let leader_wake = orphans_wake.clone();
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
                // The jobs that hold a slot, with a consistent (quorum)
                // read: the watch cache may not yet hold a former leader's
                // last admissions, and a holder it missed would be admitted
                // over. The waiting jobs come from the cache (complete, see
                // above): a stale copy of one is harmless, every status
                // write is preconditioned on the version it was computed
                // from. One full list, not two (docs/PERFORMANCE.md, Scale).
                let holders = list_all::<VisionJob>(&leader_ctx.client, HOLDERS).await;
                leader_ctx.set_leader(true);
                leader_ctx.metrics.set_leader(true);
                leader_ctx.pool.send(PoolEvent::Leader);
                leader_ctx.pool.send(PoolEvent::Rebuild(holders));
                // The dispatcher asks for the reconcile of every job after
                // its first admission pass (see `Dispatcher::reconcile_all`).
                leader_wake.notify_one();
                had = true;
            } else if !is && had {
                leader_ctx.set_leader(false);
                leader_ctx.metrics.set_leader(false);
                return Err::<(), _>(Error::LostLeadership);
            }
            if leadership.changed().await.is_err() {
                leader_ctx.set_leader(false);
                return Err(Error::Ended("the leader election task"));
            }
        }
    };

    let dispatcher = dispatch::Dispatcher::new(ctx.clone(), pool_inbox, reconcile_all_tx).run();
    let orphans = release_orphans(ctx.clone(), orphans_wake);

    // Graceful stop: admit and write nothing new, let the reconciles in
    // flight finish (the controller's own graceful shutdown), and wait for
    // the dispatcher's status writes in flight.
    let stop_ctx = ctx.clone();
    let stopping = async move {
        shutdown.await;
        stop_ctx.set_leader(false);
    };

    let reconciler = Controller::for_stream(receiver_stream(job_trigger_rx), jobs_store)
        .owns_stream(receiver_stream(pod_trigger_rx))
        .reconcile_all_on(receiver_stream(reconcile_all_rx).map(|_| ()))
        // Bounded: a new leader reconciles every job at once otherwise, and
        // with 45,000 jobs that starved the lease renewal until the leader
        // stepped down (docs/PERFORMANCE.md, Scale).
        .with_config(
            kube::runtime::controller::Config::default().concurrency(RECONCILE_CONCURRENCY),
        )
        .graceful_shutdown_on(stopping)
        .run(job::reconcile, job::error_policy, ctx.clone())
        .for_each(|_| async {});

    tokio::select! {
        _ = feeders => Err(Error::Ended("a watch")),
        r = leader_watch => r,
        _ = dispatcher => Err(Error::Ended("the dispatcher")),
        _ = orphans => Err(Error::Ended("the orphan sweep")),
        _ = reconciler => {
            let permits = ctx.settings.max_inflight_writes as u32;
            let drained = tokio::time::timeout(Duration::from_secs(10), ctx.writes.acquire_many(permits)).await;
            info!(writes_drained = drained.is_ok(), "stopped admitting; in-flight work finished");
            Ok(())
        }
    }
}

/// The jobs that hold a slot (a field selector: `status.phase` is a
/// selectable field of the CRD).
const HOLDERS: &str = "status.phase!=Queued,status.phase!=Succeeded,status.phase!=Failed,status.phase!=Rejected,status.phase!=Suspended";

/// Lists every object of a kind matching the field selector `fields` with a
/// consistent read, page by page, retrying until it succeeds.
async fn list_all<K>(client: &Client, fields: &str) -> Vec<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    loop {
        let mut out = Vec::new();
        let mut params = kube::api::ListParams::default().fields(fields).limit(500);
        let result: Result<(), kube::Error> = async {
            loop {
                let page = api.list(&params).await?;
                // Slim as the caches are: with 100,000 jobs the rebuild's
                // copy would otherwise carry every job's managedFields.
                out.extend(page.items.into_iter().map(|mut obj| {
                    slim(&mut obj);
                    obj
                }));
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

/// [`slim`], and for a job that waits (Queued) also what only its pod
/// needs: its annotations, `spec.input` and `spec.params` (in a heap
/// profile at 10,000 queued jobs, the three maps were 1.2 of the 3.3 KB a
/// cached job costs: docs/PERFORMANCE.md, Scale). Nothing reads them from a
/// waiting job: its admission builds the pod from the job the Admitted
/// write returns, whole, and from then on the cache has the job whole
/// (Admitted). Labels stay: they name a job's tenant.
fn slim_job(job: &mut VisionJob) {
    slim(job);
    if job.phase() == Some(crate::api::JobPhase::Queued) {
        job.metadata.annotations = None;
        job.spec.input = None;
        job.spec.params = None;
    }
}

fn receiver_stream<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Drives one reflected watch: tells the dispatcher what changed, hands the
/// objects to the reconciler's trigger, and shows `seen` every event (after
/// the store has taken it).
async fn forward<K>(
    stream: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    kind: Kind,
    pool: PoolHandle,
    trigger: Option<tokio::sync::mpsc::UnboundedSender<Result<K, watcher::Error>>>,
    mut synced: impl FnMut(bool),
    seen: impl Fn(&watcher::Event<K>),
) where
    K: kube::Resource + Clone,
    K::DynamicType: Default,
{
    let mut stream = pin!(stream);
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                warn!(?kind, error = %e, "watch error; retrying with backoff");
                continue;
            }
        };
        seen(&event);
        match event {
            watcher::Event::Apply(obj) | watcher::Event::InitApply(obj) => {
                // The dispatcher needs pods only to know they are listed.
                if kind != Kind::Pods {
                    pool.send(PoolEvent::Changed(kind, obj_ref(&obj)));
                }
                if let Some(t) = &trigger {
                    let _ = t.send(Ok(obj));
                }
            }
            watcher::Event::Delete(obj) => {
                if kind != Kind::Pods {
                    pool.send(PoolEvent::Deleted(kind, obj_ref(&obj)));
                }
                if let Some(t) = &trigger {
                    let _ = t.send(Ok(obj));
                }
            }
            watcher::Event::Init => {}
            watcher::Event::InitDone => synced(true),
        }
    }
}

/// Reconciles running at once (the rest wait in the controller's queue).
const RECONCILE_CONCURRENCY: u16 = 64;

/// How often pods whose job is gone are looked for without a hint.
const ORPHAN_SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Whether the pod still carries the operator's tracking finalizer.
fn holds_outcome(pod: &Pod) -> bool {
    pod.finalizers().iter().any(|f| f == POD_FINALIZER)
}

/// Lets go of the tracking finalizer of pods whose job is gone (deleted
/// without the operator's cleanup, or replaced by a new job of the same
/// name): no reconcile plans for them, and their outcome can never be
/// recorded. Runs on the leader when woken (a job deleted, a pod of ours
/// being deleted, leadership gained) and every [`ORPHAN_SWEEP_EVERY`]. A job
/// missing from the cache is confirmed missing by a GET first, so a cache
/// that lags never releases a pod whose job exists.
async fn release_orphans(ctx: Arc<Context>, wake: Arc<tokio::sync::Notify>) {
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(ORPHAN_SWEEP_EVERY) => {}
        }
        if !ctx.is_leader() {
            continue;
        }
        for pod in ctx.pods.state() {
            if !holds_outcome(&pod) {
                continue;
            }
            let namespace = pod.namespace().unwrap_or_default();
            let owner = pod
                .owner_references()
                .iter()
                .find(|o| o.kind == "VisionJob" && o.controller == Some(true))
                .map(|o| (o.name.clone(), o.uid.clone()));
            if let Some((name, uid)) = &owner {
                let cached = ctx
                    .jobs
                    .get(&reflector::ObjectRef::new(name).within(&namespace));
                if cached.is_some_and(|j| j.uid().as_deref() == Some(uid.as_str())) {
                    continue;
                }
                let api: Api<VisionJob> = Api::namespaced(ctx.client.clone(), &namespace);
                match api.get_opt(name).await {
                    Ok(Some(job)) if job.uid().as_deref() == Some(uid.as_str()) => continue,
                    Ok(_) => {}
                    Err(e) => {
                        warn!(error = %e, pod = %writer::key_of(pod.as_ref()), "reading the job of a pod failed");
                        continue;
                    }
                }
            }
            match ctx.writer.release_pod(&pod).await {
                Ok(()) => {
                    info!(pod = %writer::key_of(pod.as_ref()), "released the tracking finalizer of a pod whose job is gone")
                }
                Err(e) => {
                    warn!(error = %e, pod = %writer::key_of(pod.as_ref()), "releasing a pod whose job is gone failed")
                }
            }
        }
    }
}

/// Settles pod-creation claims from what the pod watch shows.
fn settle_claims(writer: &Writer, event: &watcher::Event<Pod>) {
    match event {
        watcher::Event::Apply(pod)
        | watcher::Event::InitApply(pod)
        | watcher::Event::Delete(pod) => {
            writer.pod_shown(&pod.namespace().unwrap_or_default(), &pod.name_any())
        }
        watcher::Event::Init => writer.pods_relisting(),
        watcher::Event::InitDone => writer.pods_relisted(),
    }
}

fn obj_ref<K: kube::Resource>(obj: &K) -> (Option<String>, String) {
    (obj.namespace(), obj.name_any())
}

#[cfg(test)]
mod tests {
    use crate::api::JobPhase;
    use crate::api::testing::{JobFixture, mk_job};
    use serde_json::json;

    use super::slim_job;

    fn full() -> crate::api::VisionJob {
        mk_job("team-a", "cam-1", "detect")
            .with_input(json!({"frame": 7}))
            .with_params(json!({"threshold": 0.5}))
            .with_annotations(&[("team", "a")])
    }

    #[test]
    fn a_waiting_job_is_cached_without_what_only_its_pod_needs() {
        let mut job = full().with_phase(JobPhase::Queued, 0);
        let labels = job.metadata.labels.clone();
        slim_job(&mut job);
        assert_eq!(job.metadata.annotations, None);
        assert_eq!(job.spec.input, None);
        assert_eq!(job.spec.params, None);
        assert_eq!(job.metadata.labels, labels);
        assert_eq!(job.phase(), Some(JobPhase::Queued));
    }

    #[test]
    fn new_and_admitted_jobs_are_cached_whole() {
        for job in [full(), full().with_phase(JobPhase::Admitted, 1)] {
            let mut slimmed = job.clone();
            slim_job(&mut slimmed);
            assert_eq!(
                serde_json::to_value(&slimmed).unwrap(),
                serde_json::to_value(&job).unwrap()
            );
        }
    }
}
