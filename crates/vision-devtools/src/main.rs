//! vision-dev: the developer tools of vision-operator, run by hack/demo.sh and
//! hack/bench.sh against the local cluster: the demo's burst with a live view,
//! and the end-to-end benchmark scenarios. Not installed for users. Exit
//! codes: 0 ok, 1 error or unfinished demo, 3 a benchmark target missed.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use vision_devtools::Result;
use vision_devtools::bench::{self, BenchArgs};
use vision_devtools::demo::{self, DemoArgs};
use vision_devtools::error::chain;

/// Developer tools of vision-operator: the demo and the benchmark.
#[derive(Debug, Parser)]
#[command(name = "vision-dev", version)]
struct Cli {
    /// Kubeconfig file; default: $KUBECONFIG, in-cluster credentials, else ~/.kube/config.
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Submit a burst of mixed jobs and follow them with a live view and a summary.
    Demo(Demo),
    /// End-to-end benchmark scenarios (used by hack/bench.sh).
    Bench {
        #[command(subcommand)]
        scenario: Bench,
    },
}

#[derive(Debug, clap::Args)]
struct Demo {
    #[arg(short, long, default_value = "vision-demo")]
    namespace: String,
    #[arg(short, long, default_value = "default")]
    queue: String,
    /// Jobs to submit.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Seed of the job mix.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Requests in flight while submitting.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Give up when no job changed for this many seconds.
    #[arg(long, default_value_t = 60)]
    stall: u64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// The operator's metrics URL, printed in the summary.
    #[arg(long)]
    metrics_url: Option<String>,
}

#[derive(Debug, clap::Args)]
struct BenchCommon {
    #[arg(short, long, default_value = "vision-bench")]
    namespace: String,
    #[arg(long, default_value = "vision-bench")]
    queue: String,
    #[arg(long, default_value = "vision-bench-sim")]
    algorithm: String,
    /// Jobs (or pods, for the ceiling).
    #[arg(long, default_value_t = 1000)]
    jobs: usize,
    /// Slots of the benchmark queue.
    #[arg(long, default_value_t = 32)]
    max_running: i32,
    /// GPUs per job.
    #[arg(long, default_value_t = 1)]
    gpus: i32,
    /// Simulated run time of each pod, ms.
    #[arg(long, default_value_t = 2000)]
    runtime_ms: u64,
    /// Requests in flight while submitting.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// The operator's pid, for its memory and CPU (/proc).
    #[arg(long)]
    operator_pid: Option<u32>,
    /// Clock ticks per second of /proc/<pid>/stat (getconf CLK_TCK).
    #[arg(long, default_value_t = 100.0)]
    clk_tck: f64,
    /// Write the results as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// The operator's metrics URL, to read its error counters.
    #[arg(long)]
    metrics_url: Option<String>,
}

#[derive(Debug, clap::Args)]
struct Fairness {
    #[arg(short, long, default_value = "vision-bench-fair")]
    namespace: String,
    #[arg(long, default_value = "vision-bench-fair")]
    queue: String,
    #[arg(long, default_value = "vision-bench-fair-sim")]
    algorithm: String,
    /// Length of the saturated run, minutes (issue 17: 10).
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    #[arg(long, default_value_t = 32)]
    max_running: i32,
    /// Simulated run time of each job, ms.
    #[arg(long, default_value_t = 5000)]
    job_ms: u64,
    /// Jobs each tenant keeps waiting.
    #[arg(long, default_value_t = 40)]
    backlog: usize,
    /// When the third tenant starts submitting, minutes.
    #[arg(long, default_value_t = 5.0)]
    late_minute: f64,
    /// One urgent job every this many seconds (0: none).
    #[arg(long, default_value_t = 20)]
    urgent_every: u64,
    /// terminationGracePeriodSeconds of the jobs' pods.
    #[arg(long, default_value_t = 1)]
    grace_seconds: i64,
    /// Share window, seconds.
    #[arg(long, default_value_t = 120)]
    window: u64,
    /// The queue's spec.preemption.withinQueue: LowerPriority (the late
    /// tenant gets only free slots) or LowerPriorityOrOverShare (it may evict
    /// jobs of tenants over their share), or Never.
    #[arg(long, default_value = "LowerPriority", value_parser = vision_devtools::fairness::parse_preemption)]
    preemption: vision_api::PreemptionPolicy,
    /// Start this operator binary once the turn is held (args after --).
    #[arg(long)]
    operator_bin: Option<PathBuf>,
    #[arg(long, default_value = ".local/logs/bench-operator.log")]
    operator_log: PathBuf,
    #[arg(long, default_value = "http://127.0.0.1:18090/readyz")]
    ready_url: String,
    #[arg(long)]
    out: Option<PathBuf>,
    /// The operator's arguments.
    #[arg(last = true)]
    operator_args: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct Workers {
    /// Jobs of each measured burst (pod mode, then worker mode).
    #[arg(long, default_value_t = 2000)]
    jobs: usize,
    /// Slots of the queue; also the workers' total capacity.
    #[arg(long, default_value_t = 32)]
    max_running: i32,
    /// SDK workers (each with max-running / workers task slots).
    #[arg(long, default_value_t = 4)]
    workers: u32,
    /// Work of each job, ms.
    #[arg(long, default_value_t = 100)]
    task_ms: u64,
    /// Jobs of each fault burst (worker kill, leader kill); 0: none.
    #[arg(long, default_value_t = 500)]
    fault_jobs: usize,
    /// Creates in flight while submitting.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Jobs in flight in the API server's write-ceiling run.
    #[arg(long, default_value_t = 32)]
    ceiling_concurrency: usize,
    /// The operator's worker endpoint (it must serve --worker-addr there).
    #[arg(long, default_value = "http://127.0.0.1:19090")]
    worker_url: String,
    #[arg(long, default_value = "http://127.0.0.1:18090/metrics")]
    metrics_url: String,
    #[arg(long, default_value_t = 100.0)]
    clk_tck: f64,
    /// Give up on a burst after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// The operator binary, started once the turn is held (args after --).
    #[arg(long)]
    operator_bin: PathBuf,
    #[arg(long, default_value = ".local/logs/bench-operator.log")]
    operator_log: PathBuf,
    #[arg(long, default_value = "http://127.0.0.1:18090/readyz")]
    ready_url: String,
    #[arg(long)]
    out: Option<PathBuf>,
    /// The operator's arguments.
    #[arg(last = true)]
    operator_args: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Jobs through the operator into a queue with maxRunning slots.
    Throughput(BenchCommon),
    /// The same number of bare pods, no operator: what the cluster allows.
    Ceiling(BenchCommon),
    /// Jobs into a paused queue; the operator's RSS once all are Queued.
    Memory(BenchCommon),
    /// Tenants 3:1 on a saturated queue, a late third tenant, urgent jobs with
    /// preemption (issue 17, docs/FAIRNESS.md). Takes the tests' cluster turn.
    Fairness(Fairness),
    /// Pod mode vs worker mode on one burst of short jobs, with a worker and
    /// a leader killed mid-burst (issue 18). Takes the tests' cluster turn.
    Workers(Workers),
    /// Delete every VisionJob and pod of a namespace and wait until gone.
    Cleanup {
        #[arg(short, long)]
        namespace: String,
    },
    /// The scenarios' JSON results side by side with the targets; exit 3 if one is missed.
    Report {
        #[arg(long)]
        throughput: PathBuf,
        #[arg(long)]
        ceiling: Option<PathBuf>,
        #[arg(long)]
        memory: Option<PathBuf>,
        /// The failover's result (hack/bench.sh writes failover.json).
        #[arg(long)]
        failover: Option<PathBuf>,
    },
}

fn bench_args(c: BenchCommon) -> BenchArgs {
    BenchArgs {
        namespace: c.namespace,
        queue: c.queue,
        algorithm: c.algorithm,
        jobs: c.jobs,
        max_running: c.max_running,
        gpus: c.gpus,
        runtime_ms: c.runtime_ms,
        concurrency: c.concurrency,
        operator_pid: c.operator_pid,
        clk_tck: c.clk_tck,
        out: c.out,
        timeout: Duration::from_secs(c.timeout),
        metrics_url: c.metrics_url,
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    // Commands that need no cluster.
    if let Command::Bench {
        scenario:
            Bench::Report {
                throughput,
                ceiling,
                memory,
                failover,
            },
    } = &cli.command
    {
        let t: bench::Throughput = bench::read_result(throughput)?;
        let c: Option<bench::Ceiling> = ceiling.as_deref().map(bench::read_result).transpose()?;
        let m: Option<bench::Memory> = memory.as_deref().map(bench::read_result).transpose()?;
        let f: Option<bench::Failover> = failover.as_deref().map(bench::read_result).transpose()?;
        let ok = bench::print_targets(&bench::targets(&t, c.as_ref(), m.as_ref(), f.as_ref()));
        return Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(3)
        });
    }
    let session = visionctl::cluster::Connection {
        kubeconfig: cli.kubeconfig,
        ..Default::default()
    }
    .connect()
    .await?;
    let client = session.client;
    match cli.command {
        Command::Demo(d) => {
            let ok = demo::demo(
                &client,
                &DemoArgs {
                    namespace: d.namespace,
                    queue: d.queue,
                    count: d.count,
                    seed: d.seed,
                    concurrency: d.concurrency,
                    stall: Duration::from_secs(d.stall),
                    timeout: Duration::from_secs(d.timeout),
                    metrics_url: d.metrics_url,
                },
            )
            .await?;
            return Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        Command::Bench { scenario } => match scenario {
            Bench::Throughput(c) => {
                bench::throughput(&client, &bench_args(c)).await?;
            }
            Bench::Ceiling(c) => {
                bench::ceiling(&client, &bench_args(c)).await?;
            }
            Bench::Memory(c) => {
                bench::memory(&client, &bench_args(c)).await?;
            }
            Bench::Fairness(f) => {
                let args = vision_devtools::fairness::FairnessArgs {
                    namespace: f.namespace,
                    queue: f.queue,
                    algorithm: f.algorithm,
                    minutes: f.minutes,
                    max_running: f.max_running,
                    job_ms: f.job_ms,
                    backlog: f.backlog,
                    late_minute: f.late_minute,
                    urgent_every: Duration::from_secs(f.urgent_every),
                    grace_seconds: f.grace_seconds,
                    window_seconds: f.window,
                    preemption: f.preemption,
                    operator: f
                        .operator_bin
                        .map(|bin| vision_devtools::fairness::OperatorCmd {
                            bin,
                            args: f.operator_args,
                            log: f.operator_log,
                            ready_url: f.ready_url,
                        }),
                    out: f.out,
                };
                vision_devtools::fairness::fairness(&client, &args).await?;
            }
            Bench::Workers(w) => {
                let args = vision_devtools::workers::WorkersArgs {
                    jobs: w.jobs,
                    max_running: w.max_running,
                    workers: w.workers,
                    task_ms: w.task_ms,
                    fault_jobs: w.fault_jobs,
                    concurrency: w.concurrency,
                    ceiling_concurrency: w.ceiling_concurrency,
                    worker_url: w.worker_url,
                    metrics_url: w.metrics_url,
                    clk_tck: w.clk_tck,
                    operator: vision_devtools::fairness::OperatorCmd {
                        bin: w.operator_bin,
                        args: w.operator_args,
                        log: w.operator_log,
                        ready_url: w.ready_url,
                    },
                    out: w.out,
                    timeout: Duration::from_secs(w.timeout),
                };
                let r = vision_devtools::workers::workers(&client, &args).await?;
                let met = vision_devtools::workers::targets(&r)
                    .iter()
                    .all(|t| t.met == Some(true));
                if !met {
                    return Ok(ExitCode::from(3));
                }
            }
            Bench::Cleanup { namespace } => {
                vision_devtools::run::delete_all(&client, &namespace, Duration::from_secs(900))
                    .await?;
            }
            Bench::Report { .. } => unreachable!("handled above"),
        },
    }
    Ok(ExitCode::SUCCESS)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vision-dev: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}
