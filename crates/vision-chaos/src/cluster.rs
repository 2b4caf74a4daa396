//! Restarts of the local cluster's kube-apiserver and etcd. kwokctl's
//! binary runtime runs each as a plain process and records its pid in
//! `<cluster>/kwok/clusters/<name>/pids/<component>.pid`; a restart reads
//! the running process's command line, environment, working directory and
//! log files from /proc, stops it (SIGTERM, SIGKILL after 5 s), starts the
//! same command again in a process group of its own (so it survives the
//! driver) and writes the new pid back, so `hack/cluster.sh down` still
//! stops it. etcd keeps its data directory, so nothing is lost.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::Error;

/// A process of the local cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    KubeApiserver,
    Etcd,
}

impl Component {
    pub fn name(self) -> &'static str {
        match self {
            Component::KubeApiserver => "kube-apiserver",
            Component::Etcd => "etcd",
        }
    }
}

/// The kwokctl cluster under `cluster_dir` (hack/cluster.sh's `.local/cluster`).
#[derive(Debug, Clone)]
pub struct LocalCluster {
    pub cluster_dir: PathBuf,
    pub name: String,
}

/// How one restart went.
#[derive(Debug, Clone)]
pub struct Restarted {
    pub old_pid: u32,
    pub new_pid: u32,
    /// From the stop signal to the new process started.
    pub down_for: Duration,
}

fn split_nul(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

fn alive(pid: u32) -> bool {
    // A zombie has exited already (its parent has not reaped it yet).
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|st| st != "Z"))
        })
        .unwrap_or(false)
}

fn signal(pid: u32, sig: &str) -> Result<(), Error> {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .map_err(Error::io("running kill"))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Setup(format!("kill -{sig} {pid} failed")))
    }
}

impl LocalCluster {
    pub fn new(cluster_dir: &Path) -> LocalCluster {
        LocalCluster {
            cluster_dir: cluster_dir.to_path_buf(),
            name: "vision".into(),
        }
    }

    fn pid_file(&self, component: Component) -> PathBuf {
        self.cluster_dir
            .join("kwok/clusters")
            .join(&self.name)
            .join("pids")
            .join(format!("{}.pid", component.name()))
    }

    /// The component's pid, checked to be a live process of this cluster.
    pub fn pid(&self, component: Component) -> Result<u32, Error> {
        let file = self.pid_file(component);
        let text = std::fs::read_to_string(&file)
            .map_err(Error::io(format!("reading {}", file.display())))?;
        let pid: u32 = text
            .trim()
            .parse()
            .map_err(|_| Error::Setup(format!("{}: not a pid: {text:?}", file.display())))?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let workdir = self.cluster_dir.join("kwok");
        if !alive(pid) || !String::from_utf8_lossy(&cmdline).contains(&*workdir.to_string_lossy()) {
            return Err(Error::Setup(format!(
                "{} (pid {pid}) is not a running process of {}",
                component.name(),
                workdir.display()
            )));
        }
        Ok(pid)
    }

    /// Stops the component (SIGTERM, SIGKILL after 5 s: the API server's
    /// graceful shutdown would otherwise keep it away for a minute), waits
    /// `pause`, starts it again as it was. Runs on a blocking thread of its
    /// own, so that an interrupted driver still finishes a restart it began
    /// (the runtime waits for blocking tasks when it shuts down).
    pub async fn restart(&self, component: Component, pause: Duration) -> Result<Restarted, Error> {
        let pid = self.pid(component)?;
        let pid_file = self.pid_file(component);
        tokio::task::spawn_blocking(move || restart_blocking(pid, &pid_file, pause))
            .await
            .map_err(|e| Error::Setup(format!("restart task: {e}")))?
    }
}

fn restart_blocking(pid: u32, pid_file: &Path, pause: Duration) -> Result<Restarted, Error> {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let argv =
        split_nul(&std::fs::read(proc_dir.join("cmdline")).map_err(Error::io("reading cmdline"))?);
    let env: Vec<(String, String)> =
        split_nul(&std::fs::read(proc_dir.join("environ")).map_err(Error::io("reading environ"))?)
            .into_iter()
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.into(), v.into())))
            .collect();
    let cwd = std::fs::read_link(proc_dir.join("cwd")).map_err(Error::io("reading cwd"))?;
    let log_of = |fd: u32| {
        std::fs::read_link(proc_dir.join(format!("fd/{fd}")))
            .ok()
            .filter(|p| p.is_absolute() && p.exists())
    };
    let (stdout, stderr) = (log_of(1), log_of(2));
    let Some((program, args)) = argv.split_first() else {
        return Err(Error::Setup(format!("pid {pid}: empty command line")));
    };

    let stopped_at = Instant::now();
    signal(pid, "TERM")?;
    let mut killed = false;
    while alive(pid) {
        if !killed && stopped_at.elapsed() > Duration::from_secs(5) {
            let _ = signal(pid, "KILL");
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(pause);

    let open = |p: &Option<PathBuf>| -> Stdio {
        p.as_ref()
            .and_then(|p| OpenOptions::new().append(true).open(p).ok())
            .map(Stdio::from)
            .unwrap_or_else(Stdio::null)
    };
    use std::os::unix::process::CommandExt as _;
    let child = Command::new(program)
        .args(args)
        .env_clear()
        .envs(env)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(open(&stdout))
        .stderr(open(&stderr))
        .process_group(0)
        .spawn()
        .map_err(Error::io(format!("starting {program}")))?;
    let new_pid = child.id();
    // Not waited for: it outlives this process, like the original did.
    drop(child);
    std::fs::write(pid_file, new_pid.to_string()).map_err(Error::io("writing the pid file"))?;
    Ok(Restarted {
        old_pid: pid,
        new_pid,
        down_for: stopped_at.elapsed(),
    })
}
