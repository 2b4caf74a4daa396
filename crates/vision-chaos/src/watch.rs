//! The invariant watcher's I/O: kube-rs watchers on the API server's own
//! streams (pods labelled `vision.zjlab.io/job-uid`, VisionJobs,
//! VisionQueues, VisionAlgorithms and the election's Lease) feeding the pure
//! [`Checker`] and [`LeaseTracker`]. It never asks an operator anything.
//!
//! A relist (after a watch expired or the API server restarted) replaces
//! what was known: objects the new list no longer holds are treated as gone.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;
use vision_api::contract::{GPU_RESOURCE, LABEL_ALGORITHM, LABEL_JOB_UID, LABEL_QUEUE};
use vision_api::{VisionAlgorithm, VisionJob, VisionQueue};

use crate::invariants::{Checker, JobFacts, Millis, Observation, PodFacts, PodPhase, Violation};
use crate::lease::{LeaseState, LeaseTracker};

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or_default()
}

/// What to watch.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Pods and jobs of this namespace only (None: every namespace).
    pub namespace: Option<String>,
    /// The election's Lease: (namespace, name).
    pub lease: Option<(String, String)>,
}

/// A running watcher. Dropping it stops the watches.
pub struct InvariantWatcher {
    checker: Arc<Mutex<Checker>>,
    lease: Arc<Mutex<LeaseTracker>>,
    watch_errors: Arc<AtomicU64>,
    synced: Arc<AtomicUsize>,
    streams: usize,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for InvariantWatcher {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The facts of one of our pods; None for a pod without the job-uid label.
pub fn pod_facts(pod: &Pod) -> Option<PodFacts> {
    let labels = pod.labels();
    let job_uid = labels.get(LABEL_JOB_UID)?.clone();
    let gpus = pod
        .spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .filter_map(|c| c.resources.as_ref()?.limits.as_ref()?.get(GPU_RESOURCE))
                .filter_map(|q| q.0.parse::<i64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Some(PodFacts {
        uid: pod.uid()?,
        key: format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()),
        job_uid,
        queue: labels.get(LABEL_QUEUE).cloned(),
        algorithm: labels.get(LABEL_ALGORITHM).cloned(),
        gpus,
        phase: PodPhase::parse(pod.status.as_ref().and_then(|s| s.phase.as_deref())),
        terminating: pod.meta().deletion_timestamp.is_some(),
    })
}

pub fn job_facts(job: &VisionJob) -> Option<JobFacts> {
    Some(JobFacts {
        uid: job.uid()?,
        key: format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any()),
        phase: job.phase().map(|p| format!("{p:?}")),
    })
}

pub fn lease_state(lease: &Lease) -> LeaseState {
    let spec = lease.spec.clone().unwrap_or_default();
    LeaseState {
        holder: spec.holder_identity,
        acquire_time: spec.acquire_time.map(|t| t.0.as_millisecond()),
        renew_time: spec.renew_time.map(|t| t.0.as_millisecond()),
        transitions: spec.lease_transitions,
    }
}

impl InvariantWatcher {
    /// Starts the watches. Violations are also sent to `found` as they are seen.
    pub fn start(
        client: &Client,
        scope: &Scope,
        found: Option<UnboundedSender<Violation>>,
    ) -> InvariantWatcher {
        let checker = Arc::new(Mutex::new(Checker::new()));
        let lease = Arc::new(Mutex::new(LeaseTracker::new()));
        let watch_errors = Arc::new(AtomicU64::new(0));
        let synced = Arc::new(AtomicUsize::new(0));
        let mut tasks = vec![];
        let ns_api = |client: &Client| -> (Api<Pod>, Api<VisionJob>) {
            match &scope.namespace {
                Some(ns) => (
                    Api::namespaced(client.clone(), ns),
                    Api::namespaced(client.clone(), ns),
                ),
                None => (Api::all(client.clone()), Api::all(client.clone())),
            }
        };
        let (pods, jobs) = ns_api(client);
        let ctx = Feed {
            checker: checker.clone(),
            errors: watch_errors.clone(),
            synced: synced.clone(),
            found,
        };
        // Queues and algorithms first: their limits should be known before pods arrive.
        tasks.push(tokio::spawn(ctx.clone().run(
            Api::<VisionQueue>::all(client.clone()),
            watcher::Config::default(),
            |q: &VisionQueue| {
                Some((
                    q.name_any(),
                    Observation::Queue {
                        name: q.name_any(),
                        max_running: i64::from(q.spec.max_running),
                        max_gpus: q.spec.max_gpus.map(i64::from),
                    },
                ))
            },
            |_| None,
        )));
        tasks.push(tokio::spawn(ctx.clone().run(
            Api::<VisionAlgorithm>::all(client.clone()),
            watcher::Config::default(),
            |a: &VisionAlgorithm| {
                Some((
                    a.name_any(),
                    Observation::Algorithm {
                        name: a.name_any(),
                        max_running: a.spec.max_running.map(i64::from),
                    },
                ))
            },
            |_| None,
        )));
        tasks.push(tokio::spawn(ctx.clone().run(
            jobs,
            watcher::Config::default(),
            |j: &VisionJob| job_facts(j).map(|f| (f.uid.clone(), Observation::Job(f))),
            |uid| Some(Observation::JobGone { uid }),
        )));
        tasks.push(tokio::spawn(ctx.clone().run(
            pods,
            watcher::Config::default().labels(LABEL_JOB_UID),
            |p: &Pod| pod_facts(p).map(|f| (f.uid.clone(), Observation::Pod(f))),
            |uid| Some(Observation::PodGone { uid }),
        )));
        let mut streams = 4;
        if let Some((ns, name)) = &scope.lease {
            streams += 1;
            let api: Api<Lease> = Api::namespaced(client.clone(), ns);
            let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
            let tracker = lease.clone();
            let errors = watch_errors.clone();
            let synced = synced.clone();
            tasks.push(tokio::spawn(async move {
                let mut stream = std::pin::pin!(watcher(api, config).default_backoff());
                let mut first = true;
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(watcher::Event::Apply(l) | watcher::Event::InitApply(l)) => {
                            lock(&tracker).observe(now_ms(), &lease_state(&l));
                        }
                        Ok(watcher::Event::InitDone) if first => {
                            first = false;
                            synced.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(_) => {}
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        InvariantWatcher {
            checker,
            lease,
            watch_errors,
            synced,
            streams,
            tasks,
        }
    }

    /// Waits until every stream has listed once.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.synced.load(Ordering::SeqCst) < self.streams {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    pub fn checker(&self) -> MutexGuard<'_, Checker> {
        lock(&self.checker)
    }

    pub fn lease(&self) -> MutexGuard<'_, LeaseTracker> {
        lock(&self.lease)
    }

    /// Watch requests that failed (and were retried) so far.
    pub fn watch_errors(&self) -> u64 {
        self.watch_errors.load(Ordering::Relaxed)
    }
}

/// A poisoned lock only means a panic elsewhere; the state is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone)]
struct Feed {
    checker: Arc<Mutex<Checker>>,
    errors: Arc<AtomicU64>,
    synced: Arc<AtomicUsize>,
    found: Option<UnboundedSender<Violation>>,
}

impl Feed {
    fn observe(&self, obs: Observation) {
        let new = lock(&self.checker).observe(now_ms(), obs);
        if let Some(tx) = &self.found {
            for v in new {
                let _ = tx.send(v);
            }
        }
    }

    /// Feeds one watch stream into the checker. `facts` turns an object
    /// into (its key, the observation); `gone` makes the observation of a
    /// key that disappeared.
    async fn run<K>(
        self,
        api: Api<K>,
        config: watcher::Config,
        facts: impl Fn(&K) -> Option<(String, Observation)>,
        gone: impl Fn(String) -> Option<Observation>,
    ) where
        K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    {
        let mut stream = std::pin::pin!(watcher(api, config).default_backoff());
        let mut present: BTreeSet<String> = BTreeSet::new();
        let mut relisted: BTreeSet<String> = BTreeSet::new();
        let mut first = true;
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(o)) => {
                    if let Some((key, obs)) = facts(&o) {
                        present.insert(key);
                        self.observe(obs);
                    }
                }
                Ok(watcher::Event::Delete(o)) => {
                    if let Some((key, _)) = facts(&o) {
                        present.remove(&key);
                        if let Some(obs) = gone(key) {
                            self.observe(obs);
                        }
                    }
                }
                Ok(watcher::Event::Init) => relisted.clear(),
                Ok(watcher::Event::InitApply(o)) => {
                    if let Some((key, obs)) = facts(&o) {
                        relisted.insert(key);
                        self.observe(obs);
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    for key in present.difference(&relisted) {
                        if let Some(obs) = gone(key.clone()) {
                            self.observe(obs);
                        }
                    }
                    present = std::mem::take(&mut relisted);
                    if first {
                        first = false;
                        self.synced.fetch_add(1, Ordering::SeqCst);
                    }
                }
                Err(_) => {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}
