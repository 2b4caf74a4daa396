//! The vision-operator process: configuration, telemetry, the health and
//! metrics endpoint, leader election, and the controllers.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::{Router, routing::get};
use clap::{Parser, ValueEnum};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

use vision_operator::controller::{self, JobEvents, Readiness, Settings};
use vision_operator::error::{Error, Result};
use vision_operator::leader::{Election, LeaderConfig};
use vision_operator::metrics::Metrics;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Dispatches VisionJobs onto GPU pods through cluster-wide worker pools.
#[derive(Debug, Parser)]
#[command(name = "vision-operator", version)]
struct Cli {
    /// Kubeconfig file; default: in-cluster credentials, else ~/.kube/config.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Address of the /healthz, /readyz and /metrics endpoint.
    #[arg(long, env = "VISION_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// Log format.
    #[arg(long, env = "VISION_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log filter, in tracing's EnvFilter syntax (e.g. info,vision_operator=debug).
    #[arg(long, env = "VISION_LOG", default_value = "info")]
    log_level: String,
    /// Elect a leader among replicas through a Lease; only the leader writes.
    #[arg(long, env = "VISION_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Name of the Lease.
    #[arg(long, env = "VISION_LEASE_NAME", default_value = "vision-operator")]
    lease_name: String,
    /// Namespace of the Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This replica's identity in the election; default: the host name and pid.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a lease lasts without renewal (a crashed leader is replaced after at most this).
    #[arg(long, env = "VISION_LEASE_SECONDS", default_value_t = 15)]
    lease_seconds: u64,
    /// Backoff before the first retry of a failed attempt, in ms; doubles per retry.
    #[arg(long, env = "VISION_RETRY_BACKOFF_BASE_MS", default_value_t = 1000)]
    retry_backoff_base_ms: u64,
    /// Longest backoff between attempts, in ms.
    #[arg(long, env = "VISION_RETRY_BACKOFF_MAX_MS", default_value_t = 60_000)]
    retry_backoff_max_ms: u64,
    /// Which job transitions become Kubernetes Events.
    #[arg(
        long,
        env = "VISION_JOB_EVENTS",
        value_enum,
        default_value = "outcomes"
    )]
    job_events: JobEvents,
    /// Serve warm workers of worker-mode algorithms (gRPC) on this address,
    /// e.g. 0.0.0.0:9090 (docs/WORKERS.md). Unset: worker mode is off.
    #[arg(long, env = "VISION_WORKER_ADDR")]
    worker_addr: Option<std::net::SocketAddr>,
    /// The namespace whose pods may be workers; default: the operator's own.
    #[arg(long, env = "VISION_WORKER_NAMESPACE")]
    worker_namespace: Option<String>,
    /// TEST ONLY: accept every worker without a token (for workers run as
    /// local processes by the tests). Never in a cluster: any process that
    /// can reach the endpoint could then receive jobs and forge results.
    #[arg(
        long,
        env = "VISION_WORKER_TRUST_LOCAL_TEST_ONLY",
        default_value_t = false
    )]
    worker_trust_local_test_only: bool,
    /// Keep the worker pods of worker-mode algorithms (spec.workers: min to
    /// max pods, scaled by backlog and idle time) in --worker-namespace;
    /// their workers connect to this URL, e.g. the chart's Service
    /// http://vision-operator-workers.vision-system:9090. Unset: the operator
    /// creates no worker pods (run them beside it). Needs --worker-addr.
    #[arg(long, env = "VISION_WORKER_POD_ENDPOINT", requires = "worker_addr")]
    worker_endpoint: Option<String>,
}

/// Heap profiling (the `dhat-heap` feature, benchmarks only): every
/// allocation is recorded with its call stack.
#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Written when `main` returns (a graceful stop): the heap at its peak
    // (t-gmax) and at the end, by allocation site.
    #[cfg(feature = "dhat-heap")]
    let _profiler = dhat::Profiler::builder()
        .file_name(std::env::var("VISION_DHAT_FILE").unwrap_or_else(|_| "dhat-heap.json".into()))
        .build();
    let cli = Cli::parse();
    init_tracing(&cli);
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            eprintln!("vision-operator: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing(cli: &Cli) {
    let filter = EnvFilter::try_new(&cli.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
        LogFormat::Text => builder.init(),
    }
}

async fn client(cli: &Cli) -> Result<Client> {
    match &cli.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)?;
            let config =
                kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                    .await?;
            Client::try_from(config).map_err(Error::Kube)
        }
        None => Client::try_default().await.map_err(Error::Kube),
    }
}

async fn run(cli: Cli) -> Result<()> {
    let client = client(&cli).await?;
    controller::check_crds(&client).await?;

    let metrics = Arc::new(Metrics::new());
    let readiness = Readiness::default();
    let listener = tokio::net::TcpListener::bind(cli.http_addr)
        .await
        .map_err(Error::Listen)?;
    info!(addr = %listener.local_addr().map_err(Error::Listen)?, "serving /healthz, /readyz and /metrics");
    tokio::spawn(serve_http(listener, metrics.clone(), readiness.clone()));

    let identity = cli.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let election = Election::start(
        client.clone(),
        &LeaderConfig {
            enabled: cli.leader_election,
            lease_name: cli.lease_name.clone(),
            namespace: cli.lease_namespace.clone(),
            identity,
            duration: Duration::from_secs(cli.lease_seconds.max(2)),
        },
        readiness.clone().ready(),
    )
    .await
    .map_err(Error::Kube)?;

    let settings = Settings {
        retry_backoff_base: Duration::from_millis(cli.retry_backoff_base_ms),
        retry_backoff_max: Duration::from_millis(cli.retry_backoff_max_ms),
        job_events: cli.job_events,
        workers: cli
            .worker_addr
            .map(|addr| vision_operator::workers::WorkerSettings {
                addr,
                namespace: cli
                    .worker_namespace
                    .clone()
                    .unwrap_or_else(|| cli.lease_namespace.clone()),
                trust_local_test_only: cli.worker_trust_local_test_only,
                // The chart sets POD_NAME (also the default identity).
                pod: std::env::var("POD_NAME")
                    .ok()
                    .map(|name| (cli.lease_namespace.clone(), name)),
                hub: Default::default(),
                pods: cli.worker_endpoint.clone().map(|endpoint| {
                    vision_operator::workers::pods::PodsSettings {
                        endpoint,
                        validity: election.validity.clone(),
                        grants: None,
                    }
                }),
            }),
        ..Settings::default()
    };
    let result = controller::run(
        client,
        settings,
        metrics,
        readiness,
        election.leadership.clone(),
        election.validity.clone(),
        shutdown_signal(),
    )
    .await;
    // Give the lease back so that a standby takes over now, not at expiry.
    election.release().await;
    info!("stopped");
    result
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    info!("shutdown requested: stopping admission and finishing in-flight writes");
}

async fn serve_http(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    readiness: Readiness,
) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = readiness.is_ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let body = metrics.encode();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                        .into_response()
                }
            }),
        );
    if let Err(e) = axum::serve(listener, app).await {
        error!(error = %e, "http server failed");
    }
}
