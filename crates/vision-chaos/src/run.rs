//! The driver of `vision-chaos run`: sets up a queue and simulated
//! algorithms in a fresh namespace, starts the operator replicas (one of
//! them behind the fault proxy) and the invariant watcher, submits the jobs
//! in waves, and between waves injects the planned faults, each on the
//! leader of the moment: SIGKILL (the replica is replaced at once), a
//! SIGSTOP longer than the lease then SIGCONT, a proxy fault episode while
//! the proxied replica leads, a kube-apiserver or etcd restart. At the end
//! it waits for every job to be final and reports.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use vision_api::contract::LABEL_JOB_UID;
use vision_api::{VisionAlgorithm, VisionJob, VisionQueue};
use vision_devtools::stats::Rng;

use crate::Error;
use crate::cluster::{Component, LocalCluster};
use crate::invariants::Millis;
use crate::proxy::{FaultAction, FaultProxy, RequestKind, upstream_client};
use crate::replicas::{ReplicaConfig, Replicas};
use crate::report::{Report, format_time};
use crate::watch::{InvariantWatcher, Scope, now_ms};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub kubeconfig: PathBuf,
    /// The operator binary (target/debug/vision-operator).
    pub operator: PathBuf,
    /// The local cluster's state directory (hack/cluster.sh's .local/cluster).
    pub cluster_dir: PathBuf,
    /// Where replica logs, the proxy's kubeconfig and the timeline go.
    pub log_dir: PathBuf,
    pub jobs: usize,
    pub replicas: usize,
    pub kills: usize,
    pub pauses: usize,
    /// Restarts of each of kube-apiserver and etcd.
    pub restarts: usize,
    /// Proxy fault episodes of each action (blackhole, delay, 429, 500, 500 after commit).
    pub proxy_faults: usize,
    pub seed: u64,
    pub timeout: Duration,
    pub lease_seconds: u64,
    pub max_running: i64,
    pub max_gpus: i64,
    /// maxRunning of the algorithm with a limit of its own.
    pub algorithm_max_running: i64,
    /// How long a simulated pod runs.
    pub job_duration_ms: u64,
    /// Leave the namespace, queue and algorithms in place at the end.
    pub keep: bool,
    /// Before starting, wait up to this long until no other operator's
    /// election is active (their writes would look like ours).
    pub quiet_wait: Duration,
    /// Take the end-to-end tests' cluster turn for the run (false when the
    /// caller holds it already, as the e2e test does).
    pub take_turn: bool,
}

impl Options {
    /// The defaults of the command line, for a given burst.
    pub fn new(kubeconfig: PathBuf, operator: PathBuf, cluster_dir: PathBuf) -> Options {
        Options {
            log_dir: cluster_dir
                .parent()
                .map(|p| p.join("logs/chaos"))
                .unwrap_or_else(|| PathBuf::from("chaos-logs")),
            kubeconfig,
            operator,
            cluster_dir,
            jobs: 150,
            replicas: 2,
            kills: 3,
            pauses: 1,
            restarts: 0,
            proxy_faults: 1,
            seed: 1,
            timeout: Duration::from_secs(600),
            lease_seconds: 4,
            max_running: 8,
            max_gpus: 10,
            algorithm_max_running: 3,
            job_duration_ms: 1500,
            keep: false,
            quiet_wait: Duration::from_secs(300),
            take_turn: true,
        }
    }
}

/// One planned fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    LeaderKill,
    LeaderPause,
    Proxy {
        kind: RequestKind,
        action: FaultAction,
    },
    Restart(Component),
}

impl Fault {
    pub fn label(self) -> String {
        match self {
            Fault::LeaderKill => "leader SIGKILL".into(),
            Fault::LeaderPause => "leader SIGSTOP longer than the lease".into(),
            Fault::Proxy { kind, action } => {
                format!("proxy: {} on {}", action.family(), kind.name())
            }
            Fault::Restart(c) => format!("{} restart", c.name()),
        }
    }
}

/// The proxy actions, each with the request kinds its episodes target in
/// turn (the first is the scenario of issue 12 it stands for).
fn proxy_rotation(lease_ms: u64) -> [(FaultAction, [RequestKind; 3]); 5] {
    use RequestKind::*;
    [
        (
            FaultAction::Blackhole,
            [LeaseRenewal, PodCreate, StatusWrite],
        ),
        (
            FaultAction::Delay(lease_ms * 3 / 2),
            [PodCreate, LeaseRenewal, StatusWrite],
        ),
        (
            FaultAction::TooManyRequests,
            [LeaseRenewal, StatusWrite, PodCreate],
        ),
        (
            FaultAction::ServerError,
            [PodCreate, StatusWrite, LeaseRenewal],
        ),
        (
            FaultAction::ServerErrorAfterCommit,
            [StatusWrite, PodCreate, LeaseRenewal],
        ),
    ]
}

/// The faults of a run, in a seeded random order.
pub fn plan(options: &Options, rng: &mut Rng) -> Vec<Fault> {
    let mut faults = vec![Fault::LeaderKill; options.kills];
    faults.extend(std::iter::repeat_n(Fault::LeaderPause, options.pauses));
    for round in 0..options.proxy_faults {
        for (action, kinds) in proxy_rotation(options.lease_seconds * 1000) {
            faults.push(Fault::Proxy {
                kind: kinds[round % kinds.len()],
                action,
            });
        }
    }
    for _ in 0..options.restarts {
        faults.push(Fault::Restart(Component::KubeApiserver));
        faults.push(Fault::Restart(Component::Etcd));
    }
    for i in (1..faults.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        faults.swap(i, j);
    }
    faults
}

/// Size of wave `i` of `waves` when `jobs` are spread evenly.
pub fn wave_size(jobs: usize, waves: usize, i: usize) -> usize {
    jobs * (i + 1) / waves - jobs * i / waves
}

/// The run's log of what happened when: printed as it happens and kept.
#[derive(Clone)]
pub struct Timeline {
    start: Instant,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Timeline {
    fn new() -> Timeline {
        Timeline {
            start: Instant::now(),
            lines: Arc::default(),
        }
    }

    pub fn log(&self, msg: impl AsRef<str>) {
        let line = format!(
            "[+{:7.1}s {}] {}",
            self.start.elapsed().as_secs_f64(),
            format_time(now_ms()),
            msg.as_ref()
        );
        eprintln!("{line}");
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
    }

    pub fn text(&self) -> String {
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }
}

/// The commit the operator was built from, as `git describe` says it.
fn commit() -> String {
    std::process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=7"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

struct Run {
    o: Options,
    client: Client,
    ns: String,
    queue: String,
    algorithms: [String; 2],
    watcher: InvariantWatcher,
    replicas: Replicas,
    proxy: FaultProxy,
    cluster: LocalCluster,
    t: Timeline,
    rng: Rng,
    faults: BTreeMap<String, u64>,
    submitted: usize,
    deadline: Instant,
    /// Replicas that exited on their own, by exit status.
    exits: BTreeMap<String, u64>,
    log_dir: PathBuf,
}

/// Runs the whole scenario and returns its report (violations are results,
/// not errors; errors are setup failures).
pub async fn run(o: Options) -> Result<Report, Error> {
    let started = Instant::now();
    let t = Timeline::new();
    let client = Client::try_from(crate::load_config(&o.kubeconfig).await?)?;
    ensure_crds(&client).await?;
    let turn = if o.take_turn {
        let holder = format!("vision-chaos-{}-{}", o.seed, std::process::id());
        t.log("waiting for the cluster turn");
        Some(
            crate::turn::Turn::take(&client, &holder, Duration::from_secs(1800))
                .await
                .map_err(Error::Setup)?,
        )
    } else {
        None
    };
    let lease_ns = "default".to_string();
    let busy = wait_quiet(&client, &lease_ns, o.quiet_wait).await;
    if busy.is_empty() {
        t.log("no other operator active");
    } else {
        t.log(format!(
            "other operators still active after {:?}: {}",
            o.quiet_wait,
            busy.join(", ")
        ));
    }
    let ns = format!("chaos-{}-{:x}", o.seed, now_ms() % 0xff_ffff);
    create_namespace(&client, &ns).await?;
    t.log(format!("namespace {ns}; commit {}", commit()));
    let queue = ns.clone();
    let algorithms = [format!("{ns}-limited"), format!("{ns}-gpu")];
    setup_pool(&client, &o, &queue, &algorithms).await?;

    let (found_tx, mut found_rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = InvariantWatcher::start(
        &client,
        &Scope {
            namespace: Some(ns.clone()),
            lease: Some((lease_ns.clone(), ns.clone())),
        },
        Some(found_tx),
    );
    if !watcher.wait_synced(Duration::from_secs(60)).await {
        return Err(Error::Setup("the watches did not list in 60 s".into()));
    }
    let foreign = watch_foreign_leases(&client, &lease_ns, &ns, &t);
    let printer = {
        let t = t.clone();
        tokio::spawn(async move {
            while let Some(v) = found_rx.recv().await {
                t.log(format!("VIOLATION {v}"));
            }
        })
    };

    let proxy = FaultProxy::start(upstream_client(&o.kubeconfig).await?)
        .await
        .map_err(Error::io("starting the proxy"))?;
    let log_dir = o.log_dir.join(&ns);
    std::fs::create_dir_all(&log_dir).map_err(Error::io("creating the log directory"))?;
    let proxy_kubeconfig = log_dir.join("proxy-kubeconfig");
    std::fs::write(&proxy_kubeconfig, proxy.kubeconfig_yaml())
        .map_err(Error::io("writing the proxy's kubeconfig"))?;
    t.log(format!(
        "fault proxy on {} in front of replica slot 0",
        proxy.addr()
    ));
    let mut kubeconfigs = vec![proxy_kubeconfig];
    kubeconfigs.extend(std::iter::repeat_n(
        o.kubeconfig.clone(),
        o.replicas.saturating_sub(1),
    ));
    let replicas = Replicas::new(ReplicaConfig {
        binary: o.operator.clone(),
        lease_name: ns.clone(),
        lease_namespace: lease_ns.clone(),
        lease_seconds: o.lease_seconds,
        log_dir: log_dir.clone(),
        kubeconfigs,
    });
    let mut run = Run {
        cluster: LocalCluster::new(&o.cluster_dir),
        rng: Rng::new(o.seed),
        deadline: started + o.timeout,
        o,
        client,
        ns,
        queue,
        algorithms,
        watcher,
        replicas,
        proxy,
        t: t.clone(),
        faults: BTreeMap::new(),
        submitted: 0,
        exits: BTreeMap::new(),
        log_dir: log_dir.clone(),
    };
    let result = run.scenario().await;
    let report = match result {
        Ok(()) => run.report(started).await.map(|mut r| {
            r.foreign_operators = foreign
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned()
                .collect();
            r
        }),
        Err(e) => {
            t.log(format!("run failed: {e}"));
            Err(e)
        }
    };
    if !run.o.keep {
        // While the replicas still run: they remove the jobs' finalizers,
        // so the namespace really goes away.
        run.cleanup(&lease_ns).await;
    }
    run.replicas.stop_all();
    printer.abort();
    foreign.1.abort();
    if let Some(turn) = turn {
        turn.release().await;
    }
    let _ = std::fs::write(log_dir.join("timeline.txt"), t.text());
    if let Ok(r) = &report {
        let _ = std::fs::write(log_dir.join("report.md"), r.render());
    }
    report
}

impl Run {
    async fn scenario(&mut self) -> Result<(), Error> {
        for slot in 0..self.replicas.len() {
            self.replicas.start(slot)?;
        }
        for slot in 0..self.replicas.len() {
            if !self
                .replicas
                .wait_ready(slot, Duration::from_secs(60))
                .await
            {
                return Err(Error::Setup(format!(
                    "replica {slot} not ready in 60 s:\n{}",
                    self.replicas.log_tail(slot, 30)
                )));
            }
        }
        let Some(first) = self.wait_leader(None, Duration::from_secs(30)).await else {
            return Err(Error::Setup("no replica took the lease in 30 s".into()));
        };
        self.t.log(format!("replicas ready; leader: {first}"));

        let plan = plan(&self.o, &mut self.rng);
        self.t.log(format!(
            "plan: {}",
            plan.iter()
                .map(|f| f.label())
                .collect::<Vec<_>>()
                .join("; ")
        ));
        let waves = plan.len() + 1;
        for (i, fault) in plan.iter().enumerate() {
            self.submit_wave(wave_size(self.o.jobs, waves, i)).await;
            let lease_ms = self.o.lease_seconds * 1000;
            let spacing = lease_ms / 2 + self.rng.below(lease_ms);
            tokio::time::sleep(Duration::from_millis(spacing)).await;
            if Instant::now() > self.deadline {
                self.t.log("timeout reached: no more faults injected");
                break;
            }
            self.inject(*fault).await?;
        }
        let last = waves - 1;
        self.submit_wave(wave_size(self.o.jobs, waves, last)).await;
        self.wait_all_final().await
    }

    /// Restarts replicas that exited on their own, as a Deployment would.
    fn supervise(&mut self) -> Result<(), Error> {
        for (old, status, new) in self.replicas.replace_exited()? {
            *self.exits.entry(status.clone()).or_default() += 1;
            self.t.log(format!(
                "replica {old} exited ({status}); replaced by {new}"
            ));
        }
        Ok(())
    }

    fn count(&mut self, fault: &str) {
        *self.faults.entry(fault.to_string()).or_default() += 1;
    }

    /// The identity holding the lease now, if it is one of our live,
    /// running replicas.
    fn leader(&self) -> Option<(usize, String)> {
        let holder = self.watcher.lease().holder()?.to_string();
        let slot = self.replicas.slot_of(&holder)?;
        if self.replicas.get(slot)?.paused {
            return None;
        }
        Some((slot, holder))
    }

    /// Waits for a leader other than `not`; returns its identity.
    async fn wait_leader(&self, not: Option<&str>, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((_, id)) = self.leader()
                && Some(id.as_str()) != not
            {
                return Some(id);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn recovered(&self, from: &str, since: Instant) {
        match self.wait_leader(Some(from), Duration::from_secs(60)).await {
            Some(id) => self.t.log(format!(
                "new leader {id}, {:.1} s after the fault",
                since.elapsed().as_secs_f64()
            )),
            None => self
                .t
                .log(format!("no new leader 60 s after the fault on {from}")),
        }
    }

    /// SIGKILLs the leader and starts a replacement in its slot: at once,
    /// or (`handover`) only after another replica took the lease, so that
    /// leadership moves to a replica that was already running.
    async fn kill_leader(&mut self, handover: bool) -> Result<bool, Error> {
        let Some(leader) = self.wait_leader(None, Duration::from_secs(30)).await else {
            self.t.log("no leader to kill in 30 s: skipped");
            return Ok(false);
        };
        let slot = self.replicas.slot_of(&leader).expect("a leader of ours");
        let pid = self.replicas.get(slot).map(|r| r.pid()).unwrap_or_default();
        let at = Instant::now();
        self.replicas.kill(slot);
        self.count(&Fault::LeaderKill.label());
        self.t.log(format!(
            "SIGKILL leader {leader} (pid {pid}){}",
            if handover {
                " to hand leadership to the proxied replica"
            } else {
                ""
            }
        ));
        if !handover {
            let new = self.replicas.start(slot)?.identity.clone();
            self.t
                .log(format!("replacement {new} started in slot {slot}"));
        }
        self.recovered(&leader, at).await;
        if handover {
            let new = self.replicas.start(slot)?.identity.clone();
            self.t
                .log(format!("replacement {new} started in slot {slot}"));
        }
        Ok(true)
    }

    async fn inject(&mut self, fault: Fault) -> Result<(), Error> {
        self.supervise()?;
        match fault {
            Fault::LeaderKill => {
                self.kill_leader(false).await?;
            }
            Fault::LeaderPause => {
                let Some(leader) = self.wait_leader(None, Duration::from_secs(30)).await else {
                    self.t.log("no leader to pause in 30 s: skipped");
                    return Ok(());
                };
                let slot = self.replicas.slot_of(&leader).expect("a leader of ours");
                let pause = Duration::from_millis(self.o.lease_seconds * 2000 + 1000);
                let at = Instant::now();
                self.replicas.pause(slot);
                self.count(&fault.label());
                self.t.log(format!("SIGSTOP leader {leader} for {pause:?}"));
                tokio::time::sleep(pause).await;
                self.replicas.resume(slot);
                self.t.log(format!("SIGCONT {leader}"));
                self.recovered(&leader, at).await;
            }
            Fault::Proxy { kind, action } => {
                // The fault only matters while the proxied replica leads.
                for _ in 0..self.replicas.len() + 1 {
                    self.supervise()?;
                    match self.leader() {
                        Some((0, _)) => break,
                        Some(_) => {
                            self.kill_leader(true).await?;
                        }
                        None => {
                            self.wait_leader(None, Duration::from_secs(30)).await;
                        }
                    }
                }
                let Some((0, leader)) = self.leader() else {
                    self.t.log(format!(
                        "the proxied replica does not lead: {} skipped",
                        fault.label()
                    ));
                    return Ok(());
                };
                let episode = Duration::from_millis(self.o.lease_seconds * 2500);
                let before = self.proxy.hits();
                let at = Instant::now();
                self.proxy.set(kind, action);
                self.count(&fault.label());
                self.t.log(format!(
                    "proxy: {} on {} of leader {leader} for {episode:?}",
                    action.name(),
                    kind.name()
                ));
                tokio::time::sleep(episode).await;
                self.proxy.clear();
                let hits = self
                    .proxy
                    .hits()
                    .get(&(kind, action.family()))
                    .copied()
                    .unwrap_or(0)
                    - before.get(&(kind, action.family())).copied().unwrap_or(0);
                self.t.log(format!(
                    "proxy fault lifted after {:.1} s; {hits} requests faulted; leader now {}",
                    at.elapsed().as_secs_f64(),
                    self.watcher.lease().holder().unwrap_or("none")
                ));
                if self
                    .wait_leader(None, Duration::from_secs(60))
                    .await
                    .is_none()
                {
                    self.t.log("no leader 60 s after the proxy fault");
                }
            }
            Fault::Restart(component) => {
                let at = Instant::now();
                let leader = self.leader().map(|(_, id)| id);
                match self
                    .cluster
                    .restart(component, Duration::from_millis(1000))
                    .await
                {
                    Ok(r) => {
                        self.count(&fault.label());
                        self.t.log(format!(
                            "restarted {} (pid {} -> {}), down for {:.1} s",
                            component.name(),
                            r.old_pid,
                            r.new_pid,
                            r.down_for.as_secs_f64()
                        ));
                    }
                    Err(e) => {
                        self.t
                            .log(format!("restart of {} failed: {e}", component.name()));
                        return Err(e);
                    }
                }
                let up = wait_api(&self.client, Duration::from_secs(90)).await;
                self.t.log(format!(
                    "API server {} {:.1} s after the restart began; leader before: {}",
                    if up { "answers" } else { "still down" },
                    at.elapsed().as_secs_f64(),
                    leader.as_deref().unwrap_or("none")
                ));
                if self
                    .wait_leader(None, Duration::from_secs(60))
                    .await
                    .is_none()
                {
                    self.t.log("no leader 60 s after the restart");
                }
            }
        }
        Ok(())
    }

    async fn submit_wave(&mut self, n: usize) {
        let first = self.submitted;
        let indexes: Vec<usize> = (first..first + n).collect();
        for chunk in indexes.chunks(25) {
            let created = join_all(chunk.iter().map(|i| self.submit(*i))).await;
            for (i, ok) in chunk.iter().zip(created) {
                if !ok {
                    self.t.log(format!("job-{i:05} could not be submitted"));
                }
            }
        }
        self.submitted += n;
        self.t
            .log(format!("submitted jobs {first}..{} ({n})", first + n));
    }

    /// Creates job `i`, retrying through faults; true once it exists.
    async fn submit(&self, i: usize) -> bool {
        let name = format!("job-{i:05}");
        let limited = i.is_multiple_of(3);
        let mut spec = json!({
            "algorithm": self.algorithms[if limited { 0 } else { 1 }],
            "queue": self.queue,
            "input": {"uri": format!("s3://frames/{name}.jpg")},
        });
        if !limited {
            spec["gpus"] = json!(1 + i % 2);
        }
        // Every tenth job fails its first attempt: retries happen under faults too.
        let annotations = if i % 10 == 7 {
            json!({"sim.vision.zjlab.io/fail-attempts": "1"})
        } else {
            json!({})
        };
        let job: VisionJob = match serde_json::from_value(json!({
            "apiVersion": "vision.zjlab.io/v1alpha1", "kind": "VisionJob",
            "metadata": {"name": name, "annotations": annotations}, "spec": spec,
        })) {
            Ok(j) => j,
            Err(_) => return false,
        };
        let api: Api<VisionJob> = Api::namespaced(self.client.clone(), &self.ns);
        for _ in 0..30 {
            match api.create(&PostParams::default(), &job).await {
                Ok(_) => return true,
                // An earlier attempt committed although its answer was lost.
                Err(kube::Error::Api(s)) if s.code == 409 => return true,
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
        false
    }

    async fn wait_all_final(&mut self) -> Result<(), Error> {
        let mut last_log = Instant::now();
        loop {
            self.supervise()?;
            let (seen, fin) = self.watcher.checker().job_counts();
            if seen >= self.submitted && fin == seen {
                self.t.log(format!("all {seen} jobs final"));
                break;
            }
            if Instant::now() > self.deadline {
                self.t
                    .log(format!("timeout: {fin} of {} jobs final", self.submitted));
                return Ok(());
            }
            if last_log.elapsed() > Duration::from_secs(15) {
                last_log = Instant::now();
                self.t.log(format!(
                    "{fin} of {} jobs final; leader {}",
                    self.submitted,
                    self.watcher.lease().holder().unwrap_or("none")
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Pods of jobs that just ended may still be terminating.
        let settle = Instant::now() + Duration::from_secs(30);
        while self.watcher.checker().live_pods_of_ended_jobs() > 0 && Instant::now() < settle {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    async fn report(&mut self, started: Instant) -> Result<Report, Error> {
        let end = now_ms();
        let found = self.watcher.checker().finish(end);
        for v in &found {
            self.t.log(format!("VIOLATION {v}"));
        }
        let violations = self.watcher.checker().violations().to_vec();
        for v in violations
            .iter()
            .filter(|v| !matches!(v.kind, crate::invariants::ViolationKind::JobNotFinal))
        {
            let who: Vec<String> = v
                .objects
                .iter()
                .map(|key| {
                    let pod = key.rsplit('/').next().unwrap_or(key);
                    let by = creators(&self.log_dir, pod);
                    if by.is_empty() {
                        format!("{pod}: no replica of this run logged creating it")
                    } else {
                        format!("{pod}: created by {}", by.join(", "))
                    }
                })
                .collect();
            self.t.log(format!(
                "attribution of {:?} {} at {}: {}",
                v.kind,
                v.subject,
                format_time(v.at),
                who.join("; ")
            ));
        }
        // Re-check from a fresh LIST, independent of the watch streams.
        let jobs: Api<VisionJob> = Api::namespaced(self.client.clone(), &self.ns);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        let job_list = jobs.list(&ListParams::default()).await?;
        let pod_list = pods
            .list(&ListParams::default().labels(LABEL_JOB_UID))
            .await?;
        // The API server's own record of the run, kept as evidence for
        // whatever the table reports (the namespace is deleted afterwards).
        for (file, value) in [
            ("jobs.json", serde_json::to_string_pretty(&job_list)),
            ("pods.json", serde_json::to_string_pretty(&pod_list)),
        ] {
            if let Ok(text) = value {
                let _ = std::fs::write(self.log_dir.join(file), text);
            }
        }
        let mut phases: BTreeMap<String, usize> = BTreeMap::new();
        for j in &job_list.items {
            let phase = j
                .phase()
                .map(|p| format!("{p:?}"))
                .unwrap_or_else(|| "without phase".into());
            *phases.entry(phase).or_default() += 1;
        }
        let mut succeeded: BTreeMap<String, usize> = BTreeMap::new();
        for p in pod_list.items {
            if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded") {
                *succeeded
                    .entry(p.labels().get(LABEL_JOB_UID).cloned().unwrap_or_default())
                    .or_default() += 1;
            }
        }
        let mut faults: Vec<(String, u64)> = vec![];
        for label in [
            Fault::LeaderKill.label(),
            Fault::LeaderPause.label(),
            Fault::Restart(Component::KubeApiserver).label(),
            Fault::Restart(Component::Etcd).label(),
        ] {
            faults.push((label.clone(), self.faults.get(&label).copied().unwrap_or(0)));
        }
        for (label, n) in &self.faults {
            if label.starts_with("proxy:") {
                faults.push((label.clone(), *n));
            }
        }
        let proxy_hits = self
            .proxy
            .hits()
            .into_iter()
            .map(|((kind, family), n)| (format!("{family} on {}", kind.name()), n))
            .collect();
        let checker = self.watcher.checker();
        let lease = self.watcher.lease();
        let o = &self.o;
        Ok(Report {
            title: format!(
                "vision-chaos run on commit {} ({}): seed {}, {} jobs, {} replicas, lease {} s, queue maxRunning {} maxGPUs {}, algorithm maxRunning {}, pods run {} ms",
                commit(),
                format_time(end - started.elapsed().as_millis() as Millis),
                o.seed,
                o.jobs,
                o.replicas,
                o.lease_seconds,
                o.max_running,
                o.max_gpus,
                o.algorithm_max_running,
                o.job_duration_ms
            ),
            duration_s: started.elapsed().as_secs_f64(),
            faults,
            proxy_hits,
            jobs_submitted: self.submitted,
            phases,
            violations: checker.violations().to_vec(),
            duplicated_runs_listed: succeeded.values().filter(|n| **n > 1).count(),
            max_running: o.max_running,
            peak_running: checker.peak_running(&self.queue),
            handovers: lease.handovers().len(),
            longest_gap: lease.longest_gap().cloned(),
            watch_errors: self.watcher.watch_errors(),
            replica_exits: self.exits.iter().map(|(k, n)| (k.clone(), *n)).collect(),
            foreign_operators: vec![],
        })
    }

    async fn cleanup(&self, lease_ns: &str) {
        let dp = DeleteParams::background();
        let namespaces = Api::<Namespace>::all(self.client.clone());
        let _ = namespaces.delete(&self.ns, &dp).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && matches!(namespaces.get_opt(&self.ns).await, Ok(Some(_)))
        {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let _ = Api::<VisionQueue>::all(self.client.clone())
            .delete(&self.queue, &dp)
            .await;
        for a in &self.algorithms {
            let _ = Api::<VisionAlgorithm>::all(self.client.clone())
                .delete(a, &dp)
                .await;
        }
        let _ = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
            self.client.clone(),
            lease_ns,
        )
        .delete(&self.ns, &dp)
        .await;
    }
}

/// The elections of `namespace` renewed in the last 10 s: other operators
/// at work. Waits up to `wait` for there to be none; returns those left.
async fn wait_quiet(client: &Client, namespace: &str, wait: Duration) -> Vec<String> {
    let api: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), namespace);
    let deadline = Instant::now() + wait;
    loop {
        let now = now_ms();
        let busy: Vec<String> = api
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|l| {
                let spec = l.spec.clone().unwrap_or_default();
                l.name_any() != crate::turn::LEASE_NAME
                    && spec.holder_identity.is_some_and(|h| !h.is_empty())
                    && spec
                        .renew_time
                        .is_some_and(|r| now - r.0.as_millisecond() < 10_000)
            })
            .map(|l| l.name_any())
            .collect();
        if busy.is_empty() || Instant::now() >= deadline {
            return busy;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Records the other elections (Leases of `namespace` other than ours)
/// renewed while the run goes on: other operators acting on every
/// namespace, whose writes the watcher cannot tell from ours.
fn watch_foreign_leases(
    client: &Client,
    namespace: &str,
    ours: &str,
    t: &Timeline,
) -> (
    Arc<Mutex<std::collections::BTreeSet<String>>>,
    tokio::task::JoinHandle<()>,
) {
    let seen: Arc<Mutex<std::collections::BTreeSet<String>>> = Arc::default();
    let api: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), namespace);
    let (ours, t, found) = (ours.to_string(), t.clone(), seen.clone());
    let since = now_ms();
    let task = tokio::spawn(async move {
        loop {
            if let Ok(list) = api.list(&ListParams::default()).await {
                for l in list.items {
                    let spec = l.spec.clone().unwrap_or_default();
                    let renewed = spec.renew_time.map(|r| r.0.as_millisecond());
                    let holder = spec.holder_identity.unwrap_or_default();
                    if l.name_any() != ours
                        && l.name_any() != crate::turn::LEASE_NAME
                        && !holder.is_empty()
                        && renewed.is_some_and(|r| r >= since)
                    {
                        let name = format!("{} ({holder})", l.name_any());
                        let new = found
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(name.clone());
                        if new {
                            t.log(format!("another operator is active: lease {name}"));
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
    (seen, task)
}

/// Which of our replicas logged creating `pod` (from their logs in
/// `dir`): attribution only; detection never relies on the operator.
pub fn creators(dir: &std::path::Path, pod: &str) -> Vec<String> {
    let mut found = vec![];
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    // "created pod pod=<name>" or, in later versions, "pod=<namespace>/<name>".
    let created = |line: &str| {
        line.split_once("created pod pod=")
            .is_some_and(|(_, rest)| {
                let name = rest.split_whitespace().next().unwrap_or_default();
                name == pod || name.rsplit('/').next() == Some(pod)
            })
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "log") {
            continue;
        }
        let text = strip_ansi(&std::fs::read_to_string(&path).unwrap_or_default());
        if text.lines().any(created)
            && let Some(stem) = path.file_stem()
        {
            found.push(stem.to_string_lossy().into_owned());
        }
    }
    found.sort();
    found
}

/// Removes the terminal colour codes tracing writes.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

async fn wait_api(client: &Client, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if tokio::time::timeout(Duration::from_secs(3), client.apiserver_version())
            .await
            .is_ok_and(|r| r.is_ok())
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Applies the operator's CRDs (server-side, idempotent) and waits until
/// they are established.
async fn ensure_crds(client: &Client) -> Result<(), Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in vision_api::crds() {
        let name = crd.name_any();
        api.patch(
            &name,
            &PatchParams::apply("vision-chaos").force(),
            &Patch::Apply(&crd),
        )
        .await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let established = api
                .get(&name)
                .await?
                .status
                .and_then(|s| s.conditions)
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            if established {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::Setup(format!("CRD {name} not established in 30 s")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

async fn create_namespace(client: &Client, name: &str) -> Result<(), Error> {
    let ns: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {"vision.zjlab.io/chaos": "true"}},
    }))
    .map_err(|e| Error::Setup(e.to_string()))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    let deadline = Instant::now() + Duration::from_secs(30);
    while sas.get_opt("default").await?.is_none() {
        if Instant::now() > deadline {
            return Err(Error::Setup(format!(
                "namespace {name}: no default ServiceAccount in 30 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The queue and the two simulated algorithms: one with a maxRunning of its
/// own, one whose jobs ask for one or two GPUs (so maxGPUs binds too).
async fn setup_pool(
    client: &Client,
    o: &Options,
    queue: &str,
    algorithms: &[String; 2],
) -> Result<(), Error> {
    let pp = PatchParams::apply("vision-chaos").force();
    let q = json!({"apiVersion": "vision.zjlab.io/v1alpha1", "kind": "VisionQueue",
        "metadata": {"name": queue},
        "spec": {"maxRunning": o.max_running, "maxGPUs": o.max_gpus}});
    Api::<VisionQueue>::all(client.clone())
        .patch(queue, &pp, &Patch::Apply(&q))
        .await?;
    let template = json!({
        "metadata": {"annotations": {
            "sim.vision.zjlab.io/duration": format!("{}ms", o.job_duration_ms),
            "sim.vision.zjlab.io/message": "{\"ok\":true}",
        }},
        "spec": {"containers": [{"name": "algorithm", "image": "registry.example.com/vision/chaos:1", "command": ["run", "--json"]}]},
    });
    let specs = [
        json!({"template": template, "retries": 2, "maxRunning": o.algorithm_max_running}),
        json!({"template": template, "retries": 2, "gpusPerJob": 1, "maxGPUsPerJob": 2}),
    ];
    for (name, spec) in algorithms.iter().zip(specs) {
        let a = json!({"apiVersion": "vision.zjlab.io/v1alpha1", "kind": "VisionAlgorithm",
            "metadata": {"name": name}, "spec": spec});
        Api::<VisionAlgorithm>::all(client.clone())
            .patch(name, &pp, &Patch::Apply(&a))
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Options {
        let mut o = Options::new("k".into(), "op".into(), "/tmp/c/.local/cluster".into());
        o.kills = 3;
        o.pauses = 1;
        o.proxy_faults = 1;
        o.restarts = 1;
        o
    }

    #[test]
    fn the_plan_has_every_fault_asked_for_in_a_seeded_order() {
        let o = options();
        let a = plan(&o, &mut Rng::new(7));
        let b = plan(&o, &mut Rng::new(7));
        assert_eq!(a, b);
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for f in &a {
            *counts.entry(f.label()).or_default() += 1;
        }
        assert_eq!(
            counts,
            BTreeMap::from([
                ("etcd restart".to_string(), 1),
                ("kube-apiserver restart".to_string(), 1),
                ("leader SIGKILL".to_string(), 3),
                ("leader SIGSTOP longer than the lease".to_string(), 1),
                ("proxy: 429 on lease renewals".to_string(), 1),
                ("proxy: 500 after commit on status writes".to_string(), 1),
                ("proxy: 500 on pod creates".to_string(), 1),
                ("proxy: blackhole on lease renewals".to_string(), 1),
                ("proxy: delay on pod creates".to_string(), 1),
            ])
        );
        assert_ne!(a, plan(&o, &mut Rng::new(8)));
    }

    #[test]
    fn later_proxy_rounds_target_the_other_request_kinds() {
        let mut o = options();
        o.kills = 0;
        o.pauses = 0;
        o.restarts = 0;
        o.proxy_faults = 3;
        let mut targets: Vec<(String, RequestKind)> = plan(&o, &mut Rng::new(1))
            .into_iter()
            .filter_map(|f| match f {
                Fault::Proxy { kind, action } => Some((action.family().to_string(), kind)),
                _ => None,
            })
            .collect();
        targets.sort();
        use RequestKind::*;
        let want: Vec<(String, RequestKind)> = [
            ("429", LeaseRenewal),
            ("429", PodCreate),
            ("429", StatusWrite),
            ("500", LeaseRenewal),
            ("500", PodCreate),
            ("500", StatusWrite),
            ("500 after commit", LeaseRenewal),
            ("500 after commit", PodCreate),
            ("500 after commit", StatusWrite),
            ("blackhole", LeaseRenewal),
            ("blackhole", PodCreate),
            ("blackhole", StatusWrite),
            ("delay", LeaseRenewal),
            ("delay", PodCreate),
            ("delay", StatusWrite),
        ]
        .into_iter()
        .map(|(a, k)| (a.to_string(), k))
        .collect();
        assert_eq!(targets, want);
    }

    #[test]
    fn waves_spread_the_jobs_evenly_and_add_up() {
        let sizes: Vec<usize> = (0..4).map(|i| wave_size(150, 4, i)).collect();
        assert_eq!(sizes, vec![37, 38, 37, 38]);
        assert_eq!((0..7).map(|i| wave_size(2000, 7, i)).sum::<usize>(), 2000);
    }

    #[test]
    fn the_creator_of_a_pod_is_found_in_the_replica_logs() {
        let dir = std::env::temp_dir().join(format!("chaos-creators-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("chaos-r0-g1.log"),
            "2026 DEBUG vision_operator::controller::job: created pod \u{1b}[3mpod\u{1b}[0m\u{1b}[2m=\u{1b}[0mjob-00072-1\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("chaos-r1-g2.log"),
            "2026 DEBUG created pod pod=job-00072-10\n2026 DEBUG created pod pod=ns/job-00072-2\n",
        )
        .unwrap();
        assert_eq!(
            creators(&dir, "job-00072-1"),
            vec!["chaos-r0-g1".to_string()]
        );
        assert_eq!(
            creators(&dir, "job-00072-2"),
            vec!["chaos-r1-g2".to_string()]
        );
        assert_eq!(creators(&dir, "job-00073-1"), Vec::<String>::new());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_generator_is_splitmix64() {
        // First outputs of SplitMix64 seeded with 0 (the reference values).
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }
}
