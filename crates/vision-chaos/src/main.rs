//! `vision-chaos`: runs the chaos suite against the local cluster (see
//! docs/RELIABILITY.md). Exits 1 when an invariant was violated, a job was
//! lost or ran twice; 2 when the run itself could not be set up.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use vision_chaos::run::{Options, run};

#[derive(Debug, Parser)]
#[command(
    name = "vision-chaos",
    version,
    about = "The chaos suite of vision-operator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a burst through operator replicas while injecting faults, and
    /// checks the invariants from the API server's watch streams.
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Kubeconfig of the local cluster.
    #[arg(
        long,
        env = "VISION_KUBECONFIG",
        default_value = ".local/cluster/kubeconfig"
    )]
    kubeconfig: PathBuf,
    /// The operator binary.
    #[arg(long, default_value = "target/debug/vision-operator")]
    operator: PathBuf,
    /// The local cluster's state directory (for kube-apiserver and etcd restarts).
    #[arg(long, default_value = ".local/cluster")]
    cluster_dir: PathBuf,
    /// Where replica logs, the timeline and the report go (default: .local/logs/chaos).
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Jobs submitted (in waves, one before each fault).
    #[arg(long, default_value_t = 150)]
    jobs: usize,
    /// Operator replicas (the first one runs behind the fault proxy).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(2..=3))]
    replicas: u64,
    /// SIGKILLs of the leader (more happen to hand leadership to the proxied replica).
    #[arg(long, default_value_t = 3)]
    kills: usize,
    /// SIGSTOPs of the leader longer than the lease, each followed by SIGCONT.
    #[arg(long, default_value_t = 1)]
    pauses: usize,
    /// Restarts of each of kube-apiserver and etcd (they disturb everyone using the cluster).
    #[arg(long, default_value_t = 0)]
    restarts: usize,
    /// Proxy fault episodes of each action (blackhole, delay, 429, 500, 500 after commit).
    #[arg(long, default_value_t = 1)]
    proxy_faults: usize,
    /// Seed of the fault order and timings.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Give up waiting for the jobs after this many seconds (they count as lost).
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Lease duration of the replicas, in seconds.
    #[arg(long, default_value_t = 4)]
    lease_seconds: u64,
    /// The queue's maxRunning.
    #[arg(long, default_value_t = 8)]
    max_running: i64,
    /// The queue's maxGPUs.
    #[arg(long, default_value_t = 10)]
    max_gpus: i64,
    /// maxRunning of the algorithm with a limit of its own.
    #[arg(long, default_value_t = 3)]
    algorithm_max_running: i64,
    /// How long each simulated pod runs, in ms.
    #[arg(long, default_value_t = 1500)]
    job_duration_ms: u64,
    /// Keep the namespace, queue and algorithms afterwards.
    #[arg(long)]
    keep: bool,
    /// Before starting, wait up to this many seconds until no other
    /// operator's Lease (in the default namespace) is being renewed.
    #[arg(long, default_value_t = 300)]
    quiet_wait: u64,
    /// Do not take the end-to-end tests' cluster turn (default/vision-e2e-turn).
    #[arg(long)]
    no_turn: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let Command::Run(a) = Cli::parse().command;
    let mut o = Options::new(a.kubeconfig, a.operator, a.cluster_dir);
    if let Some(dir) = a.log_dir {
        o.log_dir = dir;
    }
    o.jobs = a.jobs;
    o.replicas = a.replicas as usize;
    o.kills = a.kills;
    o.pauses = a.pauses;
    o.restarts = a.restarts;
    o.proxy_faults = a.proxy_faults;
    o.seed = a.seed;
    o.timeout = Duration::from_secs(a.timeout);
    o.lease_seconds = a.lease_seconds.max(2);
    o.max_running = a.max_running;
    o.max_gpus = a.max_gpus;
    o.algorithm_max_running = a.algorithm_max_running;
    o.job_duration_ms = a.job_duration_ms;
    o.keep = a.keep;
    o.quiet_wait = Duration::from_secs(a.quiet_wait);
    o.take_turn = !a.no_turn;
    // Ctrl-C drops the run, which kills the replicas it started.
    let outcome = tokio::select! {
        outcome = run(o) => outcome,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("vision-chaos: interrupted");
            return ExitCode::from(130);
        }
    };
    match outcome {
        Ok(report) => {
            println!("{}", report.render());
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("vision-chaos: {e}");
            ExitCode::from(2)
        }
    }
}
