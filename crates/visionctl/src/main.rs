//! visionctl: submit, list, follow and explain VisionJobs. See
//! docs/VISIONCTL.md. The demo driver and the benchmark are developer tools
//! (`vision-dev`, crates/vision-devtools), not part of what users install.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::Value;

use visionctl::commands::{self, GetArgs, Output, SubmitArgs};
use visionctl::{Result, fail};

/// The command-line client of vision-operator.
#[derive(Debug, Parser)]
#[command(name = "visionctl", version)]
struct Cli {
    /// Kubeconfig file; default: $KUBECONFIG, in-cluster credentials, else ~/.kube/config.
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create VisionJobs.
    Submit(Submit),
    /// List VisionJobs as a table.
    Get(Get),
    /// Follow one VisionJob until it finishes; exit 0 if it succeeded.
    Watch {
        name: String,
        #[arg(short, long)]
        namespace: Option<String>,
        /// Give up after this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Print a VisionJob's status.result (JSON); exit non-zero unless it succeeded.
    Result {
        name: String,
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Show the queues; one queue with its waiting jobs in order; or a job's position.
    Queue {
        /// A queue to show in detail.
        name: Option<String>,
        /// Show this job's position in its queue instead.
        #[arg(long)]
        job: Option<String>,
        #[arg(short, long)]
        namespace: Option<String>,
        /// How many waiting jobs to list.
        #[arg(long, default_value_t = 10)]
        top: usize,
    },
}

#[derive(Debug, clap::Args)]
struct Submit {
    /// The VisionAlgorithm to run.
    #[arg(short, long)]
    algorithm: String,
    /// The job's input, a JSON object.
    #[arg(short, long)]
    input: Option<String>,
    /// The job's parameters, a JSON object.
    #[arg(short, long)]
    params: Option<String>,
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    priority: i32,
    #[arg(short, long, default_value = "default")]
    queue: String,
    #[arg(short, long)]
    namespace: Option<String>,
    /// GPUs for the job (default: the algorithm's gpusPerJob).
    #[arg(long)]
    gpus: Option<i32>,
    /// Time limit of one attempt, seconds.
    #[arg(long)]
    timeout: Option<i64>,
    #[arg(long)]
    retries: Option<i32>,
    /// Delete the job this many seconds after it finished.
    #[arg(long)]
    ttl: Option<i32>,
    /// The job's name (a single job).
    #[arg(long)]
    name: Option<String>,
    /// Prefix of generated names (default: "<algorithm>-").
    #[arg(long)]
    generate_name: Option<String>,
    /// Annotations key=value (repeatable); sim.vision.zjlab.io/* script the local cluster's pods.
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    annotations: Vec<String>,
    /// Labels key=value (repeatable).
    #[arg(short, long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// How many identical jobs to create.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Requests in flight when creating many.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Follow the job to its end (a single job).
    #[arg(long)]
    wait: bool,
}

#[derive(Debug, clap::Args)]
struct Get {
    #[arg(short, long)]
    namespace: Option<String>,
    /// Jobs of every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    #[arg(short, long)]
    queue: Option<String>,
    /// Only jobs in this phase (Queued, Admitted, Running, Succeeded, Failed, Rejected, Suspended).
    #[arg(long)]
    phase: Option<String>,
    #[arg(short, long)]
    algorithm: Option<String>,
    /// Label selector.
    #[arg(short = 'l', long)]
    selector: Option<String>,
    #[arg(short, long, value_enum, default_value = "table")]
    output: Output,
}

fn json_arg(what: &str, s: Option<String>) -> Result<Option<Value>> {
    match s {
        None => Ok(None),
        Some(s) => {
            let v: Value = serde_json::from_str(&s)
                .map_err(|e| fail(format!("--{what} is not valid JSON: {e}")))?;
            if !v.is_object() {
                return Err(fail(format!(
                    "--{what} must be a JSON object, like {{\"uri\": \"s3://...\"}}"
                )));
            }
            Ok(Some(v))
        }
    }
}

fn pairs(what: &str, v: Vec<String>) -> Result<BTreeMap<String, String>> {
    v.into_iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(fail(format!("--{what} takes KEY=VALUE, got {kv:?}"))),
        })
        .collect()
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let client = commands::client(cli.kubeconfig.as_deref()).await?;
    let default_ns = client.default_namespace().to_string();
    let ns = |n: Option<String>| n.unwrap_or_else(|| default_ns.clone());
    match cli.command {
        Command::Submit(s) => {
            let namespace = ns(s.namespace);
            let wait = s.wait;
            let a = SubmitArgs {
                namespace: namespace.clone(),
                algorithm: s.algorithm,
                queue: s.queue,
                input: json_arg("input", s.input)?,
                params: json_arg("params", s.params)?,
                priority: s.priority,
                gpus: s.gpus,
                timeout_seconds: s.timeout,
                retries: s.retries,
                ttl_seconds_after_finished: s.ttl,
                annotations: pairs("annotation", s.annotations)?,
                labels: pairs("label", s.labels)?,
                name: s.name.clone(),
                generate_name: s.generate_name,
                count: s.count,
                concurrency: s.concurrency,
            };
            if wait && (a.count != 1 || a.name.is_none()) {
                return Err(fail("--wait follows a single job named with --name"));
            }
            commands::submit(&client, &a).await?;
            if wait {
                let name = a.name.clone().unwrap_or_default();
                let ok = commands::watch_job(&client, &namespace, &name, None).await?;
                return Ok(if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                });
            }
        }
        Command::Get(g) => {
            let namespace = if g.all_namespaces {
                None
            } else {
                Some(ns(g.namespace))
            };
            commands::get(
                &client,
                &GetArgs {
                    namespace,
                    queue: g.queue,
                    phase: g.phase,
                    algorithm: g.algorithm,
                    selector: g.selector,
                    output: g.output,
                },
            )
            .await?;
        }
        Command::Watch {
            name,
            namespace,
            timeout,
        } => {
            let ok = commands::watch_job(
                &client,
                &ns(namespace),
                &name,
                timeout.map(Duration::from_secs),
            )
            .await?;
            return Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        Command::Result { name, namespace } => {
            commands::result(&client, &ns(namespace), &name).await?;
        }
        Command::Queue {
            name,
            job,
            namespace,
            top,
        } => {
            let namespace = ns(namespace);
            commands::queue(
                &client,
                name.as_deref(),
                job.as_deref().map(|j| (namespace.as_str(), j)),
                top,
            )
            .await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            match e.downcast_ref::<kube::Error>() {
                Some(k) => eprintln!("visionctl: {}", commands::short(k)),
                None => eprintln!("visionctl: {e}"),
            }
            ExitCode::FAILURE
        }
    }
}
