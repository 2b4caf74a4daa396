//! A scenario: one test's world on the local cluster, started in one
//! statement and cleaned up by one guard.
//!
//! ```ignore
//! let s = Scenario::new("burst")
//!     .queue(mk_queue("pool", 8))
//!     .algorithm(mk_algorithm("detect").with_template_annotations(&[(sim::DURATION, "1s")]))
//!     .operator()
//!     .start()
//!     .await;
//! s.submit(s.job("burst-0001", "detect")).await;
//! ```
//!
//! Queues and algorithms are cluster-scoped, so the names a test gives them
//! are local to the scenario: `pool` becomes `pool-<namespace>`
//! ([`Scenario::algorithm`] and [`Scenario::queue`] give the full names).
//!
//! Dropping the scenario (also when the test panics) cleans up in the one
//! order that leaves nothing behind: its jobs are deleted and their
//! finalizers removed while its operators still run (a job keeps the
//! operator's finalizer, so with no operator left it would never go, and
//! neither would its namespace); then the operators stop; then its queues
//! and algorithms and its namespace are deleted; last, the turn goes to the
//! next scenario (of this test binary or of another test run on the cluster:
//! see [`super::turn`]).

use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use vision_api::testing::{JobFixture, mk_job};
use vision_api::{DEFAULT_QUEUE, JobPhase, VisionAlgorithm, VisionJob, VisionQueue};

use super::cluster::{self, ClusterObjects};
use super::operator::{Operator, OperatorOptions};
use super::timeline::PodTimeline;
use super::turn::Turn;

/// The field manager of the objects a scenario applies.
const FIELD_MANAGER: &str = "vision-e2e";

/// What a scenario starts with; [`ScenarioBuilder::start`] creates it.
pub struct ScenarioBuilder {
    prefix: String,
    namespace: Option<String>,
    queues: Vec<VisionQueue>,
    algorithms: Vec<VisionAlgorithm>,
    operator: bool,
}

impl ScenarioBuilder {
    /// A queue of the scenario (its name is local to the scenario); the
    /// first one is where [`Scenario::job`] sends jobs.
    pub fn queue(mut self, queue: VisionQueue) -> Self {
        self.queues.push(queue);
        self
    }

    /// An algorithm of the scenario (its name is local to the scenario).
    pub fn algorithm(mut self, algorithm: VisionAlgorithm) -> Self {
        self.algorithms.push(algorithm);
        self
    }

    /// Starts an operator (lease `e2e-<prefix>`, identity `<prefix>`) once
    /// the queues and algorithms exist, and waits until it is ready.
    pub fn operator(mut self) -> Self {
        self.operator = true;
        self
    }

    /// Runs in the existing namespace `name` (created if missing) instead of
    /// a fresh one. The scenario never deletes it nor the jobs in it: other
    /// users of the cluster may share it; the test cleans up what it made.
    pub fn in_namespace(mut self, name: &str) -> Self {
        self.namespace = Some(name.to_string());
        self
    }

    /// Waits for its turn on the cluster, then creates the namespace, the
    /// CRDs (if they changed), the queues, the algorithms and the operator.
    pub async fn start(self) -> Scenario {
        let client = cluster::client().await;
        let turn = Turn::take(&client).await;
        let (namespace, owns_namespace) = match &self.namespace {
            Some(name) => {
                ensure_namespace(&client, name).await;
                (name.clone(), false)
            }
            None => (cluster::create_namespace(&client, &self.prefix).await, true),
        };
        let mut scenario = Scenario {
            client,
            namespace,
            owns_namespace,
            prefix: self.prefix,
            queue: None,
            cluster_objects: Vec::new(),
            operators: Vec::new(),
            _turn: turn,
        };
        ensure_crds(&scenario.client).await;
        for queue in self.queues {
            scenario.apply_queue(queue).await;
        }
        for algorithm in self.algorithms {
            scenario.apply_algorithm(algorithm).await;
        }
        if self.operator {
            scenario.start_operator().await;
        }
        scenario
    }
}

/// One test's world: a namespace, queues, algorithms and operator
/// processes; cleaned up when dropped (see the module doc for the order).
pub struct Scenario {
    /// The admin client of the local cluster.
    pub client: Client,
    /// The scenario's namespace: its jobs and pods live there.
    pub namespace: String,
    owns_namespace: bool,
    prefix: String,
    queue: Option<String>,
    /// Queues and algorithms as `kind/name`, deleted after the operators stop.
    cluster_objects: Vec<String>,
    /// The scenario's operator processes. A test may kill, replace or add
    /// some (e.g. failover); whatever is here when the scenario drops is
    /// stopped after the jobs are released.
    pub operators: Vec<Operator>,
    // Declared last: dropped last, after the cleanup in `Drop::drop`.
    _turn: Turn,
}

impl Scenario {
    /// A scenario in a fresh namespace `<prefix>-<unique suffix>`; `prefix`
    /// also names its operator's lease. Returns the builder: a scenario
    /// exists only once [`ScenarioBuilder::start`] has created it.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(prefix: &str) -> ScenarioBuilder {
        ScenarioBuilder {
            prefix: prefix.to_string(),
            namespace: None,
            queues: Vec::new(),
            algorithms: Vec::new(),
            operator: false,
        }
    }

    /// The cluster-wide name of the scenario's object called `local`.
    pub fn name(&self, local: &str) -> String {
        format!("{local}-{}", self.namespace)
    }

    /// The cluster-wide name of the scenario's algorithm called `local`.
    pub fn algorithm(&self, local: &str) -> String {
        self.name(local)
    }

    /// The cluster-wide name of the scenario's (first) queue.
    pub fn queue(&self) -> &str {
        self.queue
            .as_deref()
            .expect("the scenario has no queue: add one with .queue(mk_queue(..))")
    }

    /// Options for an operator in this scenario's election (lease
    /// `e2e-<prefix>`) with the given identity.
    pub fn operator_options(&self, identity: &str) -> OperatorOptions {
        OperatorOptions::new(&format!("e2e-{}", self.prefix), identity)
    }

    /// Starts an operator (identity `<prefix>`), waits until it is ready,
    /// and keeps it with the scenario.
    pub async fn start_operator(&mut self) -> &Operator {
        let operator = Operator::start(&self.operator_options(&self.prefix)).await;
        self.operators.push(operator);
        self.operators.last().unwrap()
    }

    /// Starts an operator (identity `<prefix>-proxied`) that reaches the API
    /// server only through a fault proxy, and keeps it with the scenario;
    /// returns the proxy, on which the test sets the faults.
    #[allow(dead_code)] // used by some of the test binaries only
    pub async fn start_operator_behind_proxy(&mut self) -> vision_chaos::proxy::FaultProxy {
        let upstream = vision_chaos::proxy::upstream_client(&cluster::kubeconfig_path())
            .await
            .expect("a client for the local cluster");
        let proxy = vision_chaos::proxy::FaultProxy::start(upstream)
            .await
            .expect("starting the fault proxy");
        let kubeconfig = std::env::temp_dir().join(format!("{}-proxy.kubeconfig", self.namespace));
        std::fs::write(&kubeconfig, proxy.kubeconfig_yaml())
            .expect("writing the proxy's kubeconfig");
        let options = OperatorOptions {
            kubeconfig,
            ..self.operator_options(&format!("{}-proxied", self.namespace))
        };
        self.operators.push(Operator::start(&options).await);
        proxy
    }

    /// The scenario's first operator.
    pub fn operator(&self) -> &Operator {
        self.operators
            .first()
            .expect("the scenario has no operator: add one with .operator()")
    }

    /// Creates (or replaces) a queue of the scenario; its name is local.
    pub async fn apply_queue(&mut self, mut queue: VisionQueue) {
        let name = self.name(&queue.name_any());
        queue.metadata = for_apply(&queue.metadata, &name);
        self.apply(&queue).await;
        self.queue.get_or_insert(name);
    }

    /// Creates (or replaces) an algorithm of the scenario; its name is local.
    pub async fn apply_algorithm(&mut self, mut algorithm: VisionAlgorithm) {
        let name = self.name(&algorithm.name_any());
        algorithm.metadata = for_apply(&algorithm.metadata, &name);
        self.apply(&algorithm).await;
    }

    /// Server-side applies a cluster-scoped object and remembers it for the
    /// cleanup.
    async fn apply<K>(&mut self, object: &K)
    where
        K: Resource<Scope = kube::core::ClusterResourceScope, DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::Serialize
            + serde::de::DeserializeOwned,
    {
        let name = object.name_any();
        Api::<K>::all(self.client.clone())
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(object),
            )
            .await
            .unwrap_or_else(|e| panic!("applying {} {name}: {e}", K::kind(&())));
        let key = format!("{}/{name}", K::kind(&()).to_ascii_lowercase());
        if !self.cluster_objects.contains(&key) {
            self.cluster_objects.push(key);
        }
    }

    /// A job of the scenario (not yet created): `name` in its namespace and
    /// (first) queue, running its algorithm `algorithm` (a local name; a name
    /// the scenario did not register is used as it is), with the input
    /// `{"uri": "s3://frames/<name>.jpg"}`. Change it with `JobFixture`, then
    /// [`Scenario::submit`] it.
    pub fn job(&self, name: &str, algorithm: &str) -> VisionJob {
        let qualified = self.algorithm(algorithm);
        let registered = self
            .cluster_objects
            .contains(&format!("visionalgorithm/{qualified}"));
        let algorithm = if registered { &qualified } else { algorithm };
        mk_job(&self.namespace, name, algorithm)
            .with_queue(self.queue.as_deref().unwrap_or(DEFAULT_QUEUE))
            .with_input(json!({"uri": format!("s3://frames/{name}.jpg")}))
    }

    /// Creates a job in the scenario's namespace; returns it as created.
    pub async fn submit(&self, job: VisionJob) -> VisionJob {
        let name = job.name_any();
        let mut job = job;
        job.metadata = for_apply(&job.metadata, &name);
        job.metadata.namespace = Some(self.namespace.clone());
        self.jobs()
            .create(&PostParams::default(), &job)
            .await
            .unwrap_or_else(|e| panic!("creating job {name}: {e}"))
    }

    pub fn jobs(&self) -> Api<VisionJob> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn queues(&self) -> Api<VisionQueue> {
        Api::all(self.client.clone())
    }

    pub fn algorithms(&self) -> Api<VisionAlgorithm> {
        Api::all(self.client.clone())
    }

    /// Starts recording the namespace's pods (see [`PodTimeline`]).
    pub fn watch_pods(&self) -> PodTimeline {
        PodTimeline::watch(&self.client, &self.namespace)
    }

    /// Deletes a pod as someone else would.
    pub async fn delete_pod(&self, name: &str) {
        self.pods()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("deleting pod {name}: {e}"));
    }

    pub async fn get(&self, name: &str) -> VisionJob {
        self.jobs()
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("getting job {name}: {e}"))
    }

    /// Waits until the job's phase is `phase`; panics with its status if not.
    pub async fn wait_phase(&self, name: &str, phase: JobPhase, timeout: Duration) -> VisionJob {
        let jobs = self.jobs();
        let ok = cluster::wait_for(timeout, || {
            let jobs = jobs.clone();
            async move { jobs.get(name).await.ok().and_then(|j| j.phase()) == Some(phase) }
        })
        .await;
        let job = self.get(name).await;
        assert!(
            ok,
            "job {name} not {phase} within {timeout:?}: status {:#?}",
            job.status
        );
        job
    }

    /// Waits until every job of the namespace is in a final phase; returns
    /// them.
    pub async fn wait_all_final(&self, timeout: Duration) -> Vec<VisionJob> {
        let jobs = self.jobs();
        let all_final =
            |list: &[VisionJob]| list.iter().all(|j| j.phase().is_some_and(|p| p.is_final()));
        let ok = cluster::wait_for(timeout, || {
            let jobs = jobs.clone();
            async move {
                jobs.list(&ListParams::default())
                    .await
                    .is_ok_and(|l| all_final(&l.items))
            }
        })
        .await;
        let list = jobs.list(&ListParams::default()).await.unwrap().items;
        if !ok {
            let stuck: Vec<_> = list
                .iter()
                .filter(|j| !j.phase().is_some_and(|p| p.is_final()))
                .map(|j| (j.name_any(), j.status.clone()))
                .take(5)
                .collect();
            panic!("not all jobs final within {timeout:?}; e.g. {stuck:#?}");
        }
        list
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        // 1. The jobs go while the operators still run. Drop cannot await,
        // and the test's runtime may be unwinding: a thread of its own runs
        // the calls on a runtime of its own.
        if self.owns_namespace {
            let namespace = self.namespace.clone();
            let released = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the cleanup")
                    .block_on(release_jobs(&namespace))
            })
            .join();
            if let Ok(Err(e)) | Err(e) = released.map_err(|_| "panicked".to_string()) {
                eprintln!("scenario {}: releasing its jobs: {e}", self.namespace);
            }
        }
        // 2. The operators stop.
        self.operators.clear();
        // 3. Queues, algorithms, then the namespace (if it is the scenario's).
        let mut objects = ClusterObjects(std::mem::take(&mut self.cluster_objects));
        if self.owns_namespace {
            objects.0.push(format!("namespace/{}", self.namespace));
        }
        drop(objects);
    }
}

/// Deletes every job of `namespace` and removes their finalizers, so that
/// they go whether or not an operator is left to remove them.
async fn release_jobs(namespace: &str) -> Result<(), String> {
    let client = cluster::plain_client().await?;
    let jobs: Api<VisionJob> = Api::namespaced(client, namespace);
    jobs.delete_collection(&DeleteParams::background(), &ListParams::default())
        .await
        .map_err(|e| format!("deleting the jobs: {e}"))?;
    let left = jobs
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing the jobs: {e}"))?
        .items;
    let no_finalizers = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    for chunk in left.chunks(25) {
        join_all(
            chunk
                .iter()
                .filter(|j| !j.finalizers().is_empty())
                .map(|j| {
                    let name = j.name_any();
                    let (jobs, patch) = (&jobs, &no_finalizers);
                    async move {
                        // A job already gone (its operator finished first) is fine.
                        let _ = jobs.patch(&name, &PatchParams::default(), patch).await;
                    }
                }),
        )
        .await;
    }
    // The pods' tracking finalizer too: an operator that stops before it
    // let go of them would leave them (and the namespace) Terminating.
    let pods: Api<Pod> = Api::namespaced(jobs.into_client(), namespace);
    let held = pods
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing the pods: {e}"))?
        .items;
    let finalizer = vision_api::contract::POD_FINALIZER;
    for chunk in held.chunks(25) {
        join_all(
            chunk
                .iter()
                .filter(|p| p.finalizers().iter().any(|f| f == finalizer))
                .map(|p| {
                    let others: Vec<&String> =
                        p.finalizers().iter().filter(|f| *f != finalizer).collect();
                    let patch = Patch::Merge(json!({"metadata": {"finalizers": others}}));
                    let (pods, name) = (&pods, p.name_any());
                    async move {
                        let _ = pods.patch(&name, &PatchParams::default(), &patch).await;
                    }
                }),
        )
        .await;
    }
    Ok(())
}

/// `metadata` as a create or apply sends it: named `name`, without the
/// fields the API server sets (a fixture's uid, generation, creation time).
fn for_apply(metadata: &ObjectMeta, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: metadata.namespace.clone(),
        labels: metadata.labels.clone(),
        annotations: metadata.annotations.clone(),
        finalizers: metadata.finalizers.clone(),
        ..Default::default()
    }
}

/// Creates namespace `name` unless it exists; waits until pods can be
/// created in it.
async fn ensure_namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if namespaces.get_opt(name).await.unwrap().is_none() {
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
    }
    cluster::wait_for_default_service_account(client, name).await;
}

/// Applies the generated CRDs (server-side, idempotent) and waits until
/// they are established.
pub async fn ensure_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in vision_api::crds() {
        let name = crd.name_any();
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
        let established = cluster::wait_for(Duration::from_secs(30), || {
            let api = api.clone();
            let name = name.clone();
            async move {
                api.get(&name)
                    .await
                    .ok()
                    .and_then(|c| c.status)
                    .and_then(|s| s.conditions)
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                    })
            }
        })
        .await;
        assert!(established, "CRD {name} not established in 30s");
    }
}
