//! The command line: kubectl's global flags (`-n`, `--context`,
//! `--kubeconfig`, before or after the verb), the verbs, and the mapping of
//! every outcome to the exit codes of docs/VISIONCTL.md.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use serde_json::Value;

use crate::cluster::Connection;
use crate::jobs::{self, DryRun, Filters, JobTemplate};
use crate::output::Format;
use crate::{Error, Result, queue};

/// The command-line client of vision-operator: submit, list, follow,
/// explain and control VisionJobs.
#[derive(Debug, Parser)]
#[command(name = "visionctl", version, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 ok, 1 a job failed or was rejected, 2 usage error or refused manifest, 3 not found, 4 client wait timed out, 5 API or other error, 6 the name is taken (submit --request-id: submitted before with another spec).";

/// kubectl's global flags.
#[derive(Debug, Args)]
pub struct Global {
    /// Namespace (default: the context's, else "default").
    #[arg(short, long, global = true)]
    pub namespace: Option<String>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Kubeconfig file (default: $KUBECONFIG, in-cluster credentials, else ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create VisionJobs from flags or from manifests (-f).
    Submit(Box<Submit>),
    /// List VisionJobs (all, filtered, or by name).
    Get(Get),
    /// Show a VisionJob in detail: spec, status, conditions, pods, events.
    Describe { name: String },
    /// Print a line at each change of a VisionJob until it finishes.
    Watch {
        name: String,
        /// How long to wait (30s, 5m, 1h); default: forever.
        #[arg(long, value_parser = humantime::parse_duration)]
        wait_timeout: Option<Duration>,
    },
    /// Wait until VisionJobs finish; exit 0 only if all succeeded.
    Wait {
        #[arg(required = true)]
        names: Vec<String>,
        /// How long to wait (30s, 5m, 1h); default: forever.
        #[arg(long, visible_alias = "timeout", value_parser = humantime::parse_duration)]
        wait_timeout: Option<Duration>,
    },
    /// Print a VisionJob's result (status.result); exit 0 only if it succeeded.
    Result {
        name: String,
        #[arg(short, long, value_enum, default_value = "json")]
        output: Format,
    },
    /// Print the log of a VisionJob's pod (its current or last attempt).
    Logs {
        name: String,
        /// Stream the log until the pod ends.
        #[arg(short, long)]
        follow: bool,
        /// The pod of this attempt instead.
        #[arg(long)]
        attempt: Option<i32>,
    },
    /// Delete VisionJobs (their pods go with them).
    Cancel {
        #[arg(required = true)]
        names: Vec<String>,
        /// Wait until they are gone, at most this long (30s, 5m).
        #[arg(long, value_parser = humantime::parse_duration)]
        wait: Option<Duration>,
    },
    /// Stop VisionJobs: their pods are deleted, they keep their place.
    Suspend {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Let suspended VisionJobs wait for a slot again.
    Resume {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Resubmit a finished VisionJob as a new one (same spec, labels, annotations).
    Retry {
        name: String,
        /// The new job's name (default: generated, `<name>-retry-xxxxx`).
        #[arg(long = "name")]
        new_name: Option<String>,
        #[arg(short, long, value_enum, default_value = "name")]
        output: Format,
    },
    /// Show the queues; one queue and its waiting jobs in order; or a job's position.
    Queue {
        /// A queue to show in detail.
        name: Option<String>,
        /// Show this job's position in its queue instead.
        #[arg(long)]
        job: Option<String>,
        /// How many waiting jobs to list.
        #[arg(long, default_value_t = 10)]
        top: usize,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Serve a live, read-only web view of the pool on 127.0.0.1 (your kubeconfig, your RBAC).
    Ui {
        /// Port on 127.0.0.1 (0: any free one; the URL is printed).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Open the URL in the desktop's browser too.
        #[arg(long)]
        open: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion { shell: clap_complete::Shell },
}

#[derive(Debug, Args)]
pub struct Submit {
    /// VisionJob manifests, YAML or JSON (repeatable; `-` is stdin).
    #[arg(short = 'f', long = "filename", conflicts_with_all = ["algorithm", "count"])]
    pub files: Vec<PathBuf>,
    /// The VisionAlgorithm to run (required without -f).
    #[arg(short, long, required_unless_present = "files")]
    pub algorithm: Option<String>,
    /// The job's input, a JSON object.
    #[arg(short, long)]
    pub input: Option<String>,
    /// The job's parameters, a JSON object.
    #[arg(short, long)]
    pub params: Option<String>,
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub priority: i32,
    #[arg(short, long, default_value = "default")]
    pub queue: String,
    /// GPUs for the job (default: the algorithm's gpusPerJob).
    #[arg(long)]
    pub gpus: Option<i32>,
    /// The job's time limit per attempt (spec.timeoutSeconds): 90s, 10m, 1h.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub job_timeout: Option<Duration>,
    #[arg(long)]
    pub retries: Option<i32>,
    /// Delete the job this long after it finished (spec.ttlSecondsAfterFinished): 1h, 1d.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl: Option<Duration>,
    /// The job's name (a single job).
    #[arg(long)]
    pub name: Option<String>,
    /// Prefix of generated names (default: "<algorithm>-").
    #[arg(long)]
    pub generate_name: Option<String>,
    /// Submit exactly once for this request id (a single job): the job is
    /// named <prefix>-<hash of the id> (prefix: --generate-name, else the
    /// algorithm) and annotated with the id. If that job exists with the same
    /// spec, it is this submission (exit 0); with another spec, exit 6.
    #[arg(long, conflicts_with_all = ["name", "count"])]
    pub request_id: Option<String>,
    /// Annotations KEY=VALUE (repeatable); they reach the job's pods.
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,
    /// Labels KEY=VALUE (repeatable).
    #[arg(short, long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// How many identical jobs to create.
    #[arg(long)]
    pub count: Option<u32>,
    /// Requests in flight when creating many.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// client: print what would be sent; server: have the API server validate it, store nothing.
    #[arg(long, value_enum, default_value = "none")]
    pub dry_run: DryRun,
    /// Follow the job to its end (a single job); exit 0 only if it succeeded.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: how long to wait (30s, 5m, 1h); default: forever.
    #[arg(long, value_parser = humantime::parse_duration, requires = "wait")]
    pub wait_timeout: Option<Duration>,
    #[arg(short, long, value_enum, default_value = "name")]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct Get {
    /// Jobs to get (default: all that match the filters).
    pub names: Vec<String>,
    /// Jobs of every namespace.
    #[arg(short = 'A', long, conflicts_with = "names")]
    pub all_namespaces: bool,
    #[arg(short, long)]
    pub queue: Option<String>,
    /// Only jobs in this phase (Queued, Admitted, Running, Succeeded, Failed, Rejected, Suspended).
    #[arg(long)]
    pub phase: Option<String>,
    #[arg(short, long)]
    pub algorithm: Option<String>,
    /// Label selector.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Format,
}

fn json_arg(what: &str, s: Option<String>) -> Result<Option<Value>> {
    let Some(s) = s else { return Ok(None) };
    let v: Value = serde_json::from_str(&s)
        .map_err(|e| Error::Usage(format!("--{what} is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(Error::Usage(format!(
            "--{what} must be a JSON object, like {{\"uri\": \"s3://...\"}}"
        )));
    }
    Ok(Some(v))
}

fn pairs(what: &str, v: Vec<String>) -> Result<BTreeMap<String, String>> {
    v.into_iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(Error::Usage(format!(
                "--{what} takes KEY=VALUE, got {kv:?}"
            ))),
        })
        .collect()
}

/// Whole seconds of a duration given for a field counted in seconds; a
/// fraction is refused rather than rounded.
fn seconds(what: &str, d: Duration) -> Result<i64> {
    if d.subsec_nanos() != 0 || d.is_zero() {
        return Err(Error::Usage(format!(
            "--{what} takes whole seconds (like 90s, 5m), got {}",
            humantime::format_duration(d)
        )));
    }
    Ok(d.as_secs() as i64)
}

/// The jobs `submit` sends: from manifests, or built from the flags; with
/// `--request-id`, the one job named for the request.
pub fn submit_jobs(s: &Submit, namespace: &str) -> Result<Vec<vision_api::VisionJob>> {
    let jobs = jobs_as_given(s, namespace)?;
    let Some(request_id) = &s.request_id else {
        return Ok(jobs);
    };
    let [job] = <[_; 1]>::try_from(jobs).map_err(|jobs| {
        Error::Usage(format!(
            "--request-id submits a single job; the manifests hold {}",
            jobs.len()
        ))
    })?;
    if let Some(name) = &job.metadata.name {
        return Err(Error::Usage(format!(
            "--request-id names the job; the manifest names it {name:?} (use generateName for the prefix)"
        )));
    }
    let prefix = job
        .metadata
        .generate_name
        .clone()
        .unwrap_or_else(|| job.spec.algorithm.clone());
    Ok(vec![vision_api::submit::with_request_id(
        job, &prefix, request_id,
    )])
}

/// The jobs of the manifests, or built from the flags.
fn jobs_as_given(s: &Submit, namespace: &str) -> Result<Vec<vision_api::VisionJob>> {
    if !s.files.is_empty() {
        return jobs::read_manifests(&s.files);
    }
    let count = s.count.unwrap_or(1);
    if s.name.is_some() && count > 1 {
        return Err(Error::Usage(
            "--name takes a single job; use --generate-name with --count".into(),
        ));
    }
    let template = JobTemplate {
        algorithm: s.algorithm.clone().unwrap_or_default(),
        queue: s.queue.clone(),
        input: json_arg("input", s.input.clone())?,
        params: json_arg("params", s.params.clone())?,
        priority: s.priority,
        gpus: s.gpus,
        timeout_seconds: s
            .job_timeout
            .map(|d| seconds("job-timeout", d))
            .transpose()?,
        retries: s.retries,
        ttl_seconds_after_finished: s
            .ttl
            .map(|d| seconds("ttl", d).map(|t| t.min(i32::MAX as i64) as i32))
            .transpose()?,
        annotations: pairs("annotation", s.annotations.clone())?,
        labels: pairs("label", s.labels.clone())?,
        name: s.name.clone(),
        generate_name: s.generate_name.clone(),
    };
    Ok((0..count).map(|_| template.job(namespace)).collect())
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    if let Command::Completion { shell } = &cli.command {
        let mut cmd = Cli::command();
        let name = cmd.get_bin_name().unwrap_or("visionctl").to_string();
        clap_complete::generate(*shell, &mut cmd, name, &mut std::io::stdout());
        return Ok(());
    }
    let connection = Connection {
        kubeconfig: cli.global.kubeconfig,
        context: cli.global.context,
        namespace: cli.global.namespace,
    };
    let s = connection.connect().await?;
    match cli.command {
        Command::Submit(sub) => {
            let list = submit_jobs(&sub, &s.namespace)?;
            if sub.wait && list.len() != 1 {
                return Err(Error::Usage("--wait follows a single job".into()));
            }
            let created = jobs::submit(&s, list, sub.dry_run, sub.output, sub.concurrency).await?;
            if sub.wait && sub.dry_run == DryRun::None {
                let name = created[0].metadata.name.clone().unwrap_or_default();
                jobs::watch(&s, &name, sub.wait_timeout).await?;
            }
        }
        Command::Get(g) => {
            let filters = Filters {
                all_namespaces: g.all_namespaces,
                queue: g.queue,
                phase: g.phase,
                algorithm: g.algorithm,
                selector: g.selector,
            };
            jobs::get(&s, &g.names, &filters, g.output).await?;
        }
        Command::Describe { name } => jobs::describe(&s, &name).await?,
        Command::Watch { name, wait_timeout } => jobs::watch(&s, &name, wait_timeout).await?,
        Command::Wait {
            names,
            wait_timeout,
        } => jobs::wait(&s, &names, wait_timeout).await?,
        Command::Result { name, output } => jobs::result(&s, &name, output).await?,
        Command::Logs {
            name,
            follow,
            attempt,
        } => jobs::logs(&s, &name, attempt, follow).await?,
        Command::Cancel { names, wait } => jobs::cancel(&s, &names, wait).await?,
        Command::Suspend { names } => jobs::set_suspend(&s, &names, true).await?,
        Command::Resume { names } => jobs::set_suspend(&s, &names, false).await?,
        Command::Retry {
            name,
            new_name,
            output,
        } => {
            jobs::retry(&s, &name, new_name, output).await?;
        }
        Command::Queue {
            name,
            job,
            top,
            output,
        } => queue::queue(&s, name.as_deref(), job.as_deref(), top, output).await?,
        Command::Ui { port, open } => crate::ui::serve(&s, port, open).await?,
        Command::Completion { .. } => unreachable!("handled before connecting"),
    }
    Ok(())
}

/// The process: parses the command line as `bin_name` (`visionctl`, or
/// `kubectl vision` for the plugin), runs it, prints an error with its
/// causes, and exits with the error's code.
pub fn main(bin_name: &'static str) -> ExitCode {
    let matches = Cli::command().bin_name(bin_name).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{bin_name}: cannot start: {e}");
            return ExitCode::from(5);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{bin_name}: {}", crate::error::chain(&e));
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(args).unwrap()
    }

    #[test]
    fn global_flags_go_before_or_after_the_verb() {
        for args in [
            &["visionctl", "-n", "team-a", "--context", "c1", "get", "x"][..],
            &["visionctl", "get", "x", "-n", "team-a", "--context", "c1"][..],
        ] {
            let cli = parse(args);
            assert_eq!(cli.global.namespace.as_deref(), Some("team-a"));
            assert_eq!(cli.global.context.as_deref(), Some("c1"));
            assert!(matches!(cli.command, Command::Get(ref g) if g.names == ["x"]));
        }
    }

    #[test]
    fn job_timeout_and_wait_timeout_are_human_durations() {
        let cli = parse(&[
            "visionctl",
            "submit",
            "-a",
            "yolo",
            "--name",
            "j",
            "--job-timeout",
            "5m",
            "--ttl",
            "1d",
            "--wait",
            "--wait-timeout",
            "30s",
        ]);
        let Command::Submit(s) = cli.command else {
            panic!("not submit")
        };
        assert_eq!(s.wait_timeout, Some(Duration::from_secs(30)));
        let jobs = submit_jobs(&s, "ns").unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].spec.timeout_seconds, Some(300));
        assert_eq!(jobs[0].spec.ttl_seconds_after_finished, Some(86_400));
        assert_eq!(jobs[0].metadata.name.as_deref(), Some("j"));
        assert_eq!(jobs[0].metadata.namespace.as_deref(), Some("ns"));
        assert!(
            Cli::try_parse_from(["visionctl", "submit", "-a", "y", "--job-timeout", "soon"])
                .is_err()
        );
        let fractional = parse(&["visionctl", "submit", "-a", "y", "--job-timeout", "1500ms"]);
        let Command::Submit(s) = fractional.command else {
            panic!("not submit")
        };
        assert_eq!(
            submit_jobs(&s, "ns").unwrap_err().to_string(),
            "--job-timeout takes whole seconds (like 90s, 5m), got 1s 500ms"
        );
    }

    #[test]
    fn usage_errors() {
        // Neither -a nor -f; both; --wait-timeout without --wait.
        assert!(Cli::try_parse_from(["visionctl", "submit"]).is_err());
        assert!(Cli::try_parse_from(["visionctl", "submit", "-f", "x.yaml", "-a", "y"]).is_err());
        assert!(
            Cli::try_parse_from(["visionctl", "submit", "-a", "y", "--wait-timeout", "1m"])
                .is_err()
        );
        let s = parse(&["visionctl", "submit", "-a", "y", "--input", "[1]"]);
        let Command::Submit(s) = s.command else {
            panic!("not submit")
        };
        let e = submit_jobs(&s, "ns").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert_eq!(
            e.to_string(),
            "--input must be a JSON object, like {\"uri\": \"s3://...\"}"
        );
    }

    #[test]
    fn a_request_id_names_the_one_job_after_the_request() {
        let submit = |extra: &[&str]| {
            let mut args = vec!["visionctl", "submit", "-a", "yolo-detect"];
            args.extend_from_slice(extra);
            let Command::Submit(s) = parse(&args).command else {
                panic!("not submit")
            };
            submit_jobs(&s, "ns").unwrap()
        };
        let jobs = submit(&["--request-id", "req-42"]);
        assert_eq!(jobs.len(), 1);
        let job = &jobs[0];
        assert_eq!(
            job.metadata.name.as_deref(),
            Some("yolo-detect-fd1180d9f0c0819f0005")
        );
        assert_eq!(job.metadata.generate_name, None);
        assert_eq!(
            job.metadata.annotations.as_ref().unwrap()["vision.zjlab.io/request-id"],
            "req-42"
        );
        let jobs = submit(&["--request-id", "req-42", "--generate-name", "cam42-"]);
        assert_eq!(
            jobs[0].metadata.name.as_deref(),
            Some("cam42-fd1180d9f0c0819f0005")
        );
        // One request, one job: no --name, no --count.
        for extra in [&["--name", "x"][..], &["--count", "2"][..]] {
            let mut args = vec!["visionctl", "submit", "-a", "y", "--request-id", "r"];
            args.extend_from_slice(extra);
            assert!(Cli::try_parse_from(args).is_err(), "{extra:?}");
        }
    }

    #[test]
    fn the_users_help_has_the_verbs_and_no_developer_tools() {
        // demo and bench are vision-dev's (crates/vision-devtools).
        let verbs: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .collect();
        assert_eq!(
            verbs,
            [
                "submit",
                "get",
                "describe",
                "watch",
                "wait",
                "result",
                "logs",
                "cancel",
                "suspend",
                "resume",
                "retry",
                "queue",
                "ui",
                "completion",
            ]
        );
        let help = Cli::command().render_long_help().to_string();
        assert!(!help.contains("demo") && !help.contains("bench"), "{help}");
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
