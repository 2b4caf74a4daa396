//! Fixtures for the operator's end-to-end tests: the CRDs installed once,
//! the operator run as a child process against the local cluster, small
//! builders of queues, algorithms and jobs, and a watcher that records how
//! many of a namespace's pods were live at once.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use vision_operator::api::{JobPhase, VisionAlgorithm, VisionJob, VisionQueue};

use crate::common;

/// Only one operator may run against the cluster at a time (each would act
/// on every job), so the operator tests of one binary take turns.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Applies the generated CRDs (server-side, idempotent) and waits until
/// they are established.
pub async fn ensure_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in vision_operator::api::crds() {
        let name = crd.name_any();
        api.patch(
            &name,
            &PatchParams::apply("vision-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
        let established = common::wait_for(Duration::from_secs(30), || {
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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A vision-operator process against the local cluster; killed when dropped.
pub struct Operator {
    child: Option<Child>,
    pub port: u16,
    pub log: PathBuf,
    pub identity: String,
}

/// How an operator process is started.
#[derive(Clone)]
pub struct OperatorOptions {
    pub lease_name: String,
    pub identity: String,
    pub kubeconfig: PathBuf,
    pub extra: Vec<String>,
}

impl OperatorOptions {
    pub fn new(lease_name: &str, identity: &str) -> Self {
        OperatorOptions {
            lease_name: lease_name.into(),
            identity: identity.into(),
            kubeconfig: common::kubeconfig_path(),
            extra: vec![],
        }
    }
}

impl Operator {
    /// Starts an operator with its own lease and waits until it is ready.
    pub async fn start(test: &str) -> Operator {
        let op = Operator::spawn(&OperatorOptions::new(&format!("e2e-{test}"), test));
        op.wait_ready(Duration::from_secs(60)).await;
        op
    }

    pub fn spawn(options: &OperatorOptions) -> Operator {
        let port = free_port();
        let logs = common::repo_root().join(".local/logs");
        std::fs::create_dir_all(&logs).unwrap();
        let log = logs.join(format!("operator-{}-{port}.log", options.identity));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_vision-operator"))
            .arg("--kubeconfig")
            .arg(&options.kubeconfig)
            .args(["--http-addr", &format!("127.0.0.1:{port}")])
            .args([
                "--lease-name",
                &options.lease_name,
                "--lease-namespace",
                "default",
            ])
            .args(["--identity", &options.identity])
            .args(["--lease-seconds", "4"])
            .args([
                "--retry-backoff-base-ms",
                "200",
                "--retry-backoff-max-ms",
                "2000",
            ])
            .args(["--log-level", "info,vision_operator=debug"])
            .args(&options.extra)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("starting target/debug/vision-operator");
        Operator {
            child: Some(child),
            port,
            log,
            identity: options.identity.clone(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or_default()
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let port = self.port;
        let path = path.to_string();
        tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            )
            .ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            let code = out.split_whitespace().nth(1)?.parse().ok()?;
            let body = out
                .split_once("\r\n\r\n")
                .map(|(_, b)| b.to_string())
                .unwrap_or_default();
            Some((code, body))
        })
        .await
        .ok()
        .flatten()
    }

    /// Waits until /readyz answers 200; panics with the log's tail if not.
    pub async fn wait_ready(&self, timeout: Duration) {
        let ready = common::wait_for(timeout, || async {
            matches!(self.get("/readyz").await, Some((200, _)))
        })
        .await;
        assert!(
            ready,
            "operator not ready in {timeout:?}:\n{}",
            self.log_tail()
        );
    }

    /// Waits until this operator reports itself leader in /metrics.
    pub async fn wait_leader(&self, timeout: Duration) -> bool {
        common::wait_for(timeout, || async {
            self.metric("vision_operator_is_leader", "").await == Some(1.0)
        })
        .await
    }

    /// The /metrics text.
    pub async fn metrics(&self) -> String {
        self.get("/metrics")
            .await
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    /// The value of the first sample of `name` whose labels contain `labels`.
    pub async fn metric(&self, name: &str, labels: &str) -> Option<f64> {
        let text = self.metrics().await;
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find(|l| {
                let (series, _) = l.rsplit_once(' ').unwrap_or((l, ""));
                (series == name || series.starts_with(&format!("{name}{{")))
                    && series.contains(labels)
            })
            .and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGKILL: the process dies without releasing anything.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for the process to exit (SIGKILL after 20 s).
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A test's own world: a namespace, a queue and the operator. The
/// cluster-scoped objects it creates are deleted when it is dropped.
pub struct World {
    pub ns: common::TestNamespace,
    pub client: Client,
    pub queue: String,
    cluster_objects: Vec<(&'static str, String)>,
}

impl World {
    pub async fn new(prefix: &str) -> World {
        let ns = common::TestNamespace::new(prefix).await;
        let client = ns.client.clone();
        ensure_crds(&client).await;
        let queue = format!("q-{}", ns.name);
        World {
            ns,
            client,
            queue,
            cluster_objects: vec![],
        }
    }

    pub fn jobs(&self) -> Api<VisionJob> {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    /// Creates (or replaces) the test's queue from a spec.
    pub async fn queue(&mut self, spec: Value) {
        let name = self.queue.clone();
        self.apply_queue(&name, spec).await;
    }

    pub async fn apply_queue(&mut self, name: &str, spec: Value) {
        let api: Api<VisionQueue> = Api::all(self.client.clone());
        let q = json!({"apiVersion": "vision.zjlab.io/v1alpha1", "kind": "VisionQueue", "metadata": {"name": name}, "spec": spec});
        api.patch(
            name,
            &PatchParams::apply("vision-e2e").force(),
            &Patch::Apply(&q),
        )
        .await
        .unwrap();
        if !self
            .cluster_objects
            .iter()
            .any(|(k, n)| *k == "visionqueue" && n == name)
        {
            self.cluster_objects.push(("visionqueue", name.into()));
        }
    }

    /// Registers an algorithm named `<suffix>-<namespace>`; returns its name.
    /// `annotations` script the simulated pods (sim.vision.zjlab.io/*).
    pub async fn algorithm(&mut self, suffix: &str, spec: Value, annotations: Value) -> String {
        let name = format!("{suffix}-{}", self.ns.name);
        let mut spec = spec;
        spec["template"] = json!({
            "metadata": {"annotations": annotations},
            "spec": {"containers": [{"name": "algorithm", "image": "registry.example.com/vision/test:1", "command": ["run", "--json"]}]}
        });
        let api: Api<VisionAlgorithm> = Api::all(self.client.clone());
        let a = json!({"apiVersion": "vision.zjlab.io/v1alpha1", "kind": "VisionAlgorithm", "metadata": {"name": name}, "spec": spec});
        api.patch(
            &name,
            &PatchParams::apply("vision-e2e").force(),
            &Patch::Apply(&a),
        )
        .await
        .unwrap();
        self.cluster_objects.push(("visionalgorithm", name.clone()));
        name
    }

    /// Creates a job in the test's namespace and queue; `extra` is merged
    /// into the spec, `annotations` into the metadata.
    pub async fn job(
        &self,
        name: &str,
        algorithm: &str,
        extra: Value,
        annotations: Value,
    ) -> VisionJob {
        let mut spec = json!({"algorithm": algorithm, "queue": self.queue, "input": {"uri": format!("s3://frames/{name}.jpg")}});
        if let Value::Object(m) = extra {
            for (k, v) in m {
                spec[k] = v;
            }
        }
        let job: VisionJob = serde_json::from_value(json!({
            "apiVersion": "vision.zjlab.io/v1alpha1", "kind": "VisionJob",
            "metadata": {"name": name, "annotations": annotations}, "spec": spec
        }))
        .unwrap();
        self.jobs()
            .create(&PostParams::default(), &job)
            .await
            .unwrap_or_else(|e| panic!("creating job {name}: {e}"))
    }

    pub async fn get(&self, name: &str) -> VisionJob {
        self.jobs().get(name).await.unwrap()
    }

    /// Waits until the job's phase is `phase`; panics with its status if not.
    pub async fn wait_phase(&self, name: &str, phase: JobPhase, timeout: Duration) -> VisionJob {
        let jobs = self.jobs();
        let ok = common::wait_for(timeout, || {
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

    /// Waits until every job of the namespace is in a final phase.
    pub async fn wait_all_final(&self, timeout: Duration) -> Vec<VisionJob> {
        let jobs = self.jobs();
        let ok = common::wait_for(timeout, || {
            let jobs = jobs.clone();
            async move {
                jobs.list(&ListParams::default()).await.is_ok_and(|l| {
                    l.items
                        .iter()
                        .all(|j| j.phase().is_some_and(|p| p.is_final()))
                })
            }
        })
        .await;
        let list = self
            .jobs()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items;
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

impl Drop for World {
    fn drop(&mut self) {
        for (kind, name) in &self.cluster_objects {
            let _ = Command::new(common::kubectl_path())
                .arg("--kubeconfig")
                .arg(common::kubeconfig_path())
                .args(["delete", kind, name, "--wait=false", "--ignore-not-found"])
                .output();
        }
    }
}

/// Records, from one watch of a namespace's pods, how many were live (not
/// Succeeded/Failed, not gone) at once, and when each was created and ended.
#[derive(Clone, Default)]
pub struct PodTimeline {
    inner: Arc<Mutex<Timeline>>,
}

#[derive(Default)]
pub struct Timeline {
    live: HashMap<String, Instant>,
    pub max_live: usize,
    /// (pod, first seen, ended) in the order pods were first seen.
    pub pods: Vec<(String, Instant, Option<Instant>)>,
    /// Times at which a pod stopped being live.
    pub ends: Vec<Instant>,
    pub live_now: usize,
}

fn pod_is_live(p: &Pod) -> bool {
    !matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

impl PodTimeline {
    /// Starts watching the namespace's pods; runs until the test ends.
    pub fn watch(client: &Client, namespace: &str) -> PodTimeline {
        let timeline = PodTimeline::default();
        let inner = timeline.inner.clone();
        let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()));
            while let Some(Ok(event)) = stream.next().await {
                let now = Instant::now();
                let mut t = inner.lock().unwrap();
                let see = |t: &mut Timeline, p: &Pod, gone: bool| {
                    let name = p.name_any();
                    let live = !gone && pod_is_live(p);
                    if !t.pods.iter().any(|(n, _, _)| *n == name) {
                        t.pods.push((name.clone(), now, None));
                    }
                    match (live, t.live.contains_key(&name)) {
                        (true, false) => {
                            t.live.insert(name, now);
                        }
                        (false, true) => {
                            t.live.remove(&name);
                            t.ends.push(now);
                            if let Some(e) = t.pods.iter_mut().find(|(n, _, _)| *n == name) {
                                e.2 = Some(now);
                            }
                        }
                        _ => {}
                    }
                    t.live_now = t.live.len();
                    t.max_live = t.max_live.max(t.live.len());
                };
                match event {
                    watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                        see(&mut t, &p, false)
                    }
                    watcher::Event::Delete(p) => see(&mut t, &p, true),
                    _ => {}
                }
            }
        });
        timeline
    }

    pub fn max_live(&self) -> usize {
        self.inner.lock().unwrap().max_live
    }

    pub fn live_now(&self) -> usize {
        self.inner.lock().unwrap().live_now
    }

    pub fn created(&self) -> usize {
        self.inner.lock().unwrap().pods.len()
    }

    pub fn with<R>(&self, f: impl FnOnce(&Timeline) -> R) -> R {
        f(&self.inner.lock().unwrap())
    }
}

/// Deletes a pod as someone else would.
pub async fn delete_pod(client: &Client, namespace: &str, name: &str) {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    api.delete(name, &DeleteParams::default()).await.unwrap();
}
