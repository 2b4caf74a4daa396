//! The operator as a child process of a test: how it is started (one set of
//! flags for every test), its /readyz, /metrics and leadership read over
//! plain HTTP, and how it is stopped (SIGKILL on drop, or SIGTERM).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::cluster;

/// A free TCP port on 127.0.0.1 (for an operator's --http-addr).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// HTTP GET on 127.0.0.1:`port`: the status code and body, or None when
/// nothing answers. Blocking; [`Operator::get`] runs it off the runtime.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

/// How an operator process is started.
#[derive(Clone, Debug)]
pub struct OperatorOptions {
    pub kubeconfig: PathBuf,
    pub lease_name: String,
    pub lease_namespace: String,
    pub identity: String,
    /// Flags after the ones above. [`OperatorOptions::new`] sets the tests'
    /// tuning: an 8 s lease (a crashed leader is replaced within seconds, and
    /// the renew deadline, 2/3 of it, survives a burst on 2 busy cores: with
    /// 4 s a lone replica stepped down mid-burst in CI), short
    /// retry backoffs and debug logs.
    pub args: Vec<String>,
}

impl OperatorOptions {
    /// An operator of the tests: admin kubeconfig, `lease_name` in namespace
    /// default, `identity`, the tests' tuning.
    pub fn new(lease_name: &str, identity: &str) -> Self {
        OperatorOptions {
            kubeconfig: cluster::kubeconfig_path(),
            lease_name: lease_name.into(),
            lease_namespace: "default".into(),
            identity: identity.into(),
            args: [
                "--lease-seconds",
                "8",
                "--retry-backoff-base-ms",
                "200",
                "--retry-backoff-max-ms",
                "2000",
                "--log-level",
                "info,vision_operator=debug",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// A vision-operator process against the local cluster; killed when dropped.
pub struct Operator {
    child: Option<Child>,
    pub port: u16,
    pub log: PathBuf,
    pub identity: String,
}

impl Operator {
    /// Starts the process (does not wait for it to be ready). Its output goes
    /// to `.local/logs/operator-<identity>-<port>.log`.
    pub fn spawn(options: &OperatorOptions) -> Operator {
        let port = free_port();
        let logs = cluster::repo_root().join(".local/logs");
        std::fs::create_dir_all(&logs).unwrap();
        let log = logs.join(format!("operator-{}-{port}.log", options.identity));
        let file = std::fs::File::create(&log).unwrap();
        // VISION_OPERATOR_BIN runs the tests against another build of the
        // operator (e.g. an older commit's, to see a test fail without a fix).
        let binary = std::env::var_os("VISION_OPERATOR_BIN")
            .filter(|b| !b.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_vision-operator")));
        let child = Command::new(binary)
            .arg("--kubeconfig")
            .arg(&options.kubeconfig)
            .args(["--http-addr", &format!("127.0.0.1:{port}")])
            .args(["--lease-name", &options.lease_name])
            .args(["--lease-namespace", &options.lease_namespace])
            .args(["--identity", &options.identity])
            .args(&options.args)
            // Only the flags above configure it, not the caller's environment.
            .env_remove("KUBECONFIG")
            .env_remove("VISION_LOG")
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

    /// Starts the process and waits (60 s) until it is ready.
    pub async fn start(options: &OperatorOptions) -> Operator {
        let operator = Operator::spawn(options);
        operator.wait_ready(Duration::from_secs(60)).await;
        operator
    }

    /// GET on the operator's HTTP endpoint: status code and body.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let (port, path) = (self.port, path.to_string());
        tokio::task::spawn_blocking(move || http_get(port, &path))
            .await
            .ok()
            .flatten()
    }

    /// Waits until /readyz answers 200; panics with the log's tail if not.
    pub async fn wait_ready(&self, timeout: Duration) {
        let ready = cluster::wait_for(timeout, || async {
            matches!(self.get("/readyz").await, Some((200, _)))
        })
        .await;
        assert!(
            ready,
            "operator not ready in {timeout:?}:\n{}",
            self.log_tail()
        );
    }

    /// Whether this operator reports itself leader in /metrics.
    pub async fn is_leader(&self) -> bool {
        self.metric("vision_operator_is_leader", "").await == Some(1.0)
    }

    /// The /metrics text (empty when it does not answer).
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

    /// The last 40 lines of its log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Its exit status if it has exited (None while it runs or once stopped).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// SIGKILL: the process dies without releasing anything.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for the process to exit (SIGKILL after 20 s).
    pub fn terminate(&mut self) -> Option<ExitStatus> {
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
