//! Operator replicas as child processes of the driver (as a Deployment
//! would run them): start, SIGKILL, SIGSTOP/SIGCONT, replace, stop. Each
//! slot keeps one replica; a killed one is replaced by a new process with a
//! new identity `chaos-r<slot>-g<generation>`, so the Lease's holder names
//! the slot.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Error;

/// How every replica is started.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// target/debug/vision-operator.
    pub binary: PathBuf,
    pub lease_name: String,
    pub lease_namespace: String,
    pub lease_seconds: u64,
    pub log_dir: PathBuf,
    /// Kubeconfig of each slot (one may point at the fault proxy).
    pub kubeconfigs: Vec<PathBuf>,
}

pub struct Replica {
    pub identity: String,
    pub port: u16,
    pub log: PathBuf,
    pub paused: bool,
    child: Child,
}

impl Replica {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

pub struct Replicas {
    config: ReplicaConfig,
    slots: Vec<Option<Replica>>,
    generation: u32,
}

fn free_port() -> Result<u16, Error> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(Error::io("binding a port"))?;
    Ok(l.local_addr().map_err(Error::io("binding a port"))?.port())
}

fn send_signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

/// GET of a replica's endpoint; the status code, if it answered.
async fn http_status(port: u16, path: &str) -> Option<u16> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        String::from_utf8_lossy(&out)
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    tokio::time::timeout(Duration::from_secs(3), fetch)
        .await
        .ok()
        .flatten()
}

impl Replicas {
    pub fn new(config: ReplicaConfig) -> Replicas {
        let n = config.kubeconfigs.len();
        Replicas {
            config,
            slots: (0..n).map(|_| None).collect(),
            generation: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The slot of an identity written by this driver.
    pub fn slot_of(&self, identity: &str) -> Option<usize> {
        self.slots
            .iter()
            .position(|r| r.as_ref().is_some_and(|r| r.identity == identity))
    }

    pub fn get(&self, slot: usize) -> Option<&Replica> {
        self.slots.get(slot)?.as_ref()
    }

    /// Starts a new replica in `slot` (which must be empty).
    pub fn start(&mut self, slot: usize) -> Result<&Replica, Error> {
        let identity = format!("chaos-r{slot}-g{}", self.generation);
        self.generation += 1;
        let port = free_port()?;
        std::fs::create_dir_all(&self.config.log_dir)
            .map_err(Error::io("creating the log directory"))?;
        let log = self.config.log_dir.join(format!("{identity}.log"));
        let file = std::fs::File::create(&log).map_err(Error::io("creating a replica log"))?;
        let err = file
            .try_clone()
            .map_err(Error::io("creating a replica log"))?;
        let child = Command::new(&self.config.binary)
            .arg("--kubeconfig")
            .arg(&self.config.kubeconfigs[slot])
            .args(["--http-addr", &format!("127.0.0.1:{port}")])
            .args(["--lease-name", &self.config.lease_name])
            .args(["--lease-namespace", &self.config.lease_namespace])
            .args(["--identity", &identity])
            .args(["--lease-seconds", &self.config.lease_seconds.to_string()])
            .args([
                "--retry-backoff-base-ms",
                "200",
                "--retry-backoff-max-ms",
                "2000",
            ])
            .args(["--log-level", "info,vision_operator=debug"])
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(Error::io(format!(
                "starting {}",
                self.config.binary.display()
            )))?;
        self.slots[slot] = Some(Replica {
            identity,
            port,
            log,
            paused: false,
            child,
        });
        Ok(self.slots[slot].as_ref().expect("just started"))
    }

    /// Replaces every replica that exited on its own (the operator exits
    /// when it loses the lease, and a Deployment would start it again).
    /// Returns (old identity, its exit status, new identity) of each.
    pub fn replace_exited(&mut self) -> Result<Vec<(String, String, String)>, Error> {
        let mut replaced = vec![];
        for slot in 0..self.slots.len() {
            let exited = match self.slots[slot].as_mut() {
                Some(r) => r.child.try_wait().ok().flatten(),
                None => None,
            };
            if let Some(status) = exited {
                let old = self.slots[slot].take().expect("checked").identity;
                let new = self.start(slot)?.identity.clone();
                replaced.push((old, status.to_string(), new));
            }
        }
        Ok(replaced)
    }

    /// SIGKILL: dies without releasing anything. Returns its identity.
    pub fn kill(&mut self, slot: usize) -> Option<String> {
        let mut r = self.slots[slot].take()?;
        let _ = r.child.kill();
        let _ = r.child.wait();
        Some(r.identity)
    }

    pub fn pause(&mut self, slot: usize) {
        if let Some(r) = self.slots[slot].as_mut() {
            send_signal(r.child.id(), "STOP");
            r.paused = true;
        }
    }

    pub fn resume(&mut self, slot: usize) {
        if let Some(r) = self.slots[slot].as_mut() {
            send_signal(r.child.id(), "CONT");
            r.paused = false;
        }
    }

    /// Waits until the replica in `slot` answers /readyz with 200.
    pub async fn wait_ready(&self, slot: usize, timeout: Duration) -> bool {
        let Some(port) = self.get(slot).map(|r| r.port) else {
            return false;
        };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if http_status(port, "/readyz").await == Some(200) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// SIGTERM to every replica (SIGCONT first for a paused one), SIGKILL
    /// after 20 s.
    pub fn stop_all(&mut self) {
        for slot in 0..self.slots.len() {
            if let Some(mut r) = self.slots[slot].take() {
                send_signal(r.child.id(), "CONT");
                send_signal(r.child.id(), "TERM");
                let deadline = Instant::now() + Duration::from_secs(20);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = r.child.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = r.child.kill();
                let _ = r.child.wait();
            }
        }
    }

    /// The last lines of a slot's log.
    pub fn log_tail(&self, slot: usize, lines: usize) -> String {
        self.get(slot)
            .map(|r| tail(&r.log, lines))
            .unwrap_or_default()
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for slot in 0..self.slots.len() {
            if let Some(r) = self.slots[slot].as_ref() {
                send_signal(r.child.id(), "CONT");
            }
            self.kill(slot);
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
