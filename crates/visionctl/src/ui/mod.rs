//! `visionctl ui`: a live, read-only web view of the worker pool, served on
//! 127.0.0.1 with the user's own kubeconfig and RBAC (like `kubectl proxy`:
//! nothing new runs in the cluster, no port or credential is exposed).
//!
//! Watches of VisionQueues, VisionAlgorithms and VisionJobs (every
//! namespace's, or the user's namespace when listing all is forbidden, as
//! `visionctl queue` does) feed a compact [`index::Index`]; the page gets
//! its panels as Server-Sent Events (at most two a second, only when
//! something changed), pages of the job list on request, and one job's
//! status, Events and log tail when its page opens. See docs/WEBVIEW.md.

pub mod index;

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{ListParams, LogParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use vision_api::{VisionAlgorithm, VisionJob, VisionQueue};

use crate::cluster::Session;
use crate::{Error, Result};
use index::{Index, JobFilter};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// Lines of a pod's log the job page shows.
pub const LOG_TAIL_LINES: i64 = 100;

/// Whose jobs the view shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum JobScope {
    Cluster,
    /// Listing VisionJobs in all namespaces was forbidden.
    Namespace {
        namespace: String,
    },
}

/// What the page needs beside the index: how the watches fare.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Health {
    jobs_synced: bool,
    queues_synced: bool,
    algorithms_synced: bool,
    /// The last error of each watch, until it recovers.
    errors: std::collections::BTreeMap<String, String>,
}

struct Shared {
    client: Client,
    scope: JobScope,
    index: Mutex<Index>,
    health: Mutex<Health>,
    /// Bumped when [`Health`] changes, like `Index::version`.
    health_version: std::sync::atomic::AtomicU64,
    summary: watch::Sender<Arc<String>>,
}

type AppState = Arc<Shared>;

/// Serves the view until Ctrl-C.
pub async fn serve(s: &Session, port: u16, open: bool) -> Result<()> {
    let scope = job_scope(s).await?;
    let (tx, _) = watch::channel(Arc::new(String::from("{}")));
    let shared = Arc::new(Shared {
        client: s.client.clone(),
        scope,
        index: Mutex::new(Index::default()),
        health: Mutex::new(Health::default()),
        health_version: Default::default(),
        summary: tx,
    });
    let tasks = [
        tokio::spawn(watch_cluster_scoped::<VisionQueue>(shared.clone())),
        tokio::spawn(watch_cluster_scoped::<VisionAlgorithm>(shared.clone())),
        tokio::spawn(watch_jobs(shared.clone(), s.namespace.clone())),
        tokio::spawn(publish(shared.clone())),
    ];
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await
        .map_err(|e| Error::Other(format!("cannot listen on 127.0.0.1:{port}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Other(format!("no local address: {e}")))?;
    let url = format!("http://{addr}/");
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "visionctl ui: serving the web view on {url} (Ctrl-C stops it)"
        );
        let _ = out.flush();
    }
    if open {
        open_browser(&url);
    }
    let app = router(shared);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    for t in tasks {
        t.abort();
    }
    served.map_err(|e| Error::Other(format!("serving the web view: {e}")))
}

fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    if let Err(e) = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        eprintln!("visionctl ui: cannot start {opener} ({e}); open {url} yourself");
    }
}

/// Every namespace's jobs if the user may list them, else their namespace's.
async fn job_scope(s: &Session) -> Result<JobScope> {
    let all: Api<VisionJob> = Api::all(s.client.clone());
    match all.list_metadata(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(JobScope::Cluster),
        Err(kube::Error::Api(e)) if e.code == 403 => Ok(JobScope::Namespace {
            namespace: s.namespace.clone(),
        }),
        Err(e) => Err(e.into()),
    }
}

fn router(shared: AppState) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route("/api/summary", get(summary))
        .route("/api/stream", get(stream))
        .route("/api/jobs", get(jobs))
        .route("/api/choices", get(choices))
        .route("/api/jobs/{namespace}/{name}", get(job_detail))
        .layer(middleware::from_fn(local_host_only))
        .with_state(shared)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// Answers only requests addressed to this machine by name: a web page of
/// another site cannot reach the view through DNS rebinding.
async fn local_host_only(req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    if matches!(name, "127.0.0.1" | "localhost") {
        let mut resp = next.run(req).await;
        resp.headers_mut().insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        resp
    } else {
        (
            StatusCode::FORBIDDEN,
            "visionctl ui answers 127.0.0.1 and localhost only\n",
        )
            .into_response()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The summary as the page gets it: the index's plus the scope and health.
fn summary_json(shared: &Shared) -> String {
    let summary = shared.index.lock().expect("index lock").summary(now_ms());
    let health = shared.health.lock().expect("health lock").clone();
    let note = match &shared.scope {
        JobScope::Cluster => None,
        JobScope::Namespace { namespace } => Some(format!(
            "showing only namespace {namespace}'s jobs: you may not list VisionJobs in all \
             namespaces (the queues' own status counts are the whole queue's)"
        )),
    };
    json!({
        "summary": summary,
        "scope": shared.scope,
        "namespaceNote": note,
        "health": health,
    })
    .to_string()
}

async fn summary(State(shared): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        summary_json(&shared),
    )
        .into_response()
}

/// Pushes the summary when the index or the watches' health changed, at
/// most twice a second, and every 5 s anyway (the charts' clock moves).
async fn publish(shared: AppState) {
    let mut last = (u64::MAX, u64::MAX);
    let mut last_sent = tokio::time::Instant::now();
    loop {
        let version = shared.index.lock().expect("index lock").version;
        let health = shared
            .health_version
            .load(std::sync::atomic::Ordering::Relaxed);
        if (version, health) != last || last_sent.elapsed() >= Duration::from_secs(5) {
            last = (version, health);
            last_sent = tokio::time::Instant::now();
            let body = summary_json(&shared);
            shared.summary.send_replace(Arc::new(body));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn stream(
    State(shared): State<AppState>,
) -> Sse<impl Stream<Item = std::result::Result<SseEvent, Infallible>>> {
    let rx = shared.summary.subscribe();
    let events = futures::stream::unfold((rx, true), |(mut rx, first)| async move {
        if !first && rx.changed().await.is_err() {
            return None;
        }
        let data = rx.borrow_and_update().clone();
        Some((
            Ok(SseEvent::default().event("summary").data(data.as_str())),
            (rx, false),
        ))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

async fn jobs(State(shared): State<AppState>, Query(f): Query<JobFilter>) -> Json<index::JobPage> {
    Json(shared.index.lock().expect("index lock").page(&f))
}

async fn choices(State(shared): State<AppState>) -> Json<index::Choices> {
    Json(shared.index.lock().expect("index lock").choices())
}

fn set_health(shared: &Shared, f: impl FnOnce(&mut Health)) {
    f(&mut shared.health.lock().expect("health lock"));
    shared
        .health_version
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Records a watch's error for the page. A list the user may not make
/// (403) will not succeed by retrying: that kind counts as synced (and
/// empty), and the page says why.
fn watch_error(shared: &Shared, what: &str, e: &watcher::Error) {
    let forbidden = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code == 403,
        watcher::Error::WatchError(s) => s.code == 403,
        _ => false,
    };
    let text = if forbidden {
        format!("forbidden: your kubeconfig's user may not list and watch {what}")
    } else {
        e.to_string()
    };
    set_health(shared, |h| {
        h.errors.insert(what.to_string(), text);
        if forbidden {
            match what {
                "VisionQueues" => h.queues_synced = true,
                "VisionAlgorithms" => h.algorithms_synced = true,
                _ => h.jobs_synced = true,
            }
        }
    });
}

fn watch_ok(shared: &Shared, what: &str) {
    if shared
        .health
        .lock()
        .expect("health lock")
        .errors
        .contains_key(what)
    {
        set_health(shared, |h| {
            h.errors.remove(what);
        });
    }
}

/// How a cluster-scoped kind (queues, algorithms) enters the index: one
/// watch loop serves both.
trait ClusterScoped:
    Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static
{
    /// The kind's plural, as the page names it in a watch's health.
    const WHAT: &'static str;
    fn set_all(ix: &mut Index, all: Vec<Self>);
    fn apply(ix: &mut Index, obj: &Self);
    fn delete(ix: &mut Index, name: &str);
    fn synced(health: &mut Health);
}

impl ClusterScoped for VisionQueue {
    const WHAT: &'static str = "VisionQueues";
    fn set_all(ix: &mut Index, all: Vec<Self>) {
        ix.set_queues(all)
    }
    fn apply(ix: &mut Index, obj: &Self) {
        ix.apply_queue(obj)
    }
    fn delete(ix: &mut Index, name: &str) {
        ix.delete_queue(name)
    }
    fn synced(health: &mut Health) {
        health.queues_synced = true
    }
}

impl ClusterScoped for VisionAlgorithm {
    const WHAT: &'static str = "VisionAlgorithms";
    fn set_all(ix: &mut Index, all: Vec<Self>) {
        ix.set_algorithms(all)
    }
    fn apply(ix: &mut Index, obj: &Self) {
        ix.apply_algorithm(obj)
    }
    fn delete(ix: &mut Index, name: &str) {
        ix.delete_algorithm(name)
    }
    fn synced(health: &mut Health) {
        health.algorithms_synced = true
    }
}

async fn watch_cluster_scoped<K: ClusterScoped>(shared: AppState) {
    let api: Api<K> = Api::all(shared.client.clone());
    let mut buffer = Vec::new();
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(ev) = events.next().await {
        match ev {
            Err(e) => watch_error(&shared, K::WHAT, &e),
            Ok(ev) => {
                watch_ok(&shared, K::WHAT);
                let mut ix = shared.index.lock().expect("index lock");
                match ev {
                    watcher::Event::Init => buffer.clear(),
                    watcher::Event::InitApply(obj) => buffer.push(obj),
                    watcher::Event::InitDone => {
                        K::set_all(&mut ix, std::mem::take(&mut buffer));
                        drop(ix);
                        set_health(&shared, K::synced);
                    }
                    watcher::Event::Apply(obj) => K::apply(&mut ix, &obj),
                    watcher::Event::Delete(obj) => {
                        K::delete(&mut ix, obj.meta().name.as_deref().unwrap_or_default())
                    }
                }
            }
        }
    }
}

async fn watch_jobs(shared: AppState, namespace: String) {
    let api: Api<VisionJob> = match &shared.scope {
        JobScope::Cluster => Api::all(shared.client.clone()),
        JobScope::Namespace { .. } => Api::namespaced(shared.client.clone(), &namespace),
    };
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(ev) = events.next().await {
        match ev {
            Err(e) => watch_error(&shared, "VisionJobs", &e),
            Ok(ev) => {
                watch_ok(&shared, "VisionJobs");
                let mut ix = shared.index.lock().expect("index lock");
                match ev {
                    watcher::Event::Init => ix.relist_start(),
                    watcher::Event::InitApply(j) | watcher::Event::Apply(j) => ix.apply_job(&j),
                    watcher::Event::InitDone => {
                        ix.relist_done();
                        drop(ix);
                        set_health(&shared, |h| h.jobs_synced = true);
                    }
                    watcher::Event::Delete(j) => ix.delete_job(
                        j.metadata.namespace.as_deref().unwrap_or_default(),
                        j.metadata.name.as_deref().unwrap_or_default(),
                    ),
                }
            }
        }
    }
}

/// An error the page shows as text.
fn api_error(what: &str, e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 403 => {
            format!(
                "forbidden: your kubeconfig's user may not read {what} ({})",
                s.message
            )
        }
        kube::Error::Api(s) => format!("{what}: {} ({})", s.message, s.code),
        e => format!("{what}: {e}"),
    }
}

/// One job's page: the job (without managedFields), its Events, and the
/// log tail of its current pod.
async fn job_detail(
    State(shared): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    let jobs: Api<VisionJob> = Api::namespaced(shared.client.clone(), &namespace);
    let job = match jobs.get_opt(&name).await {
        Ok(Some(j)) => j,
        Ok(None) => {
            return (
                StatusCode::NOT_FOUND,
                Json(
                    json!({"error": format!("VisionJob {namespace}/{name} not found (deleted?)")}),
                ),
            )
                .into_response();
        }
        Err(e) => {
            return (
                StatusCode::BAD_GATEWAY,
                Json(json!({"error": api_error(&format!("VisionJob {namespace}/{name}"), &e)})),
            )
                .into_response();
        }
    };
    let (events, events_error) = job_events(&shared.client, &job).await;
    let log = pod_log(&shared.client, &job).await;
    let mut value = serde_json::to_value(&job).unwrap_or(Value::Null);
    if let Some(m) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    Json(json!({
        "job": value,
        "events": events,
        "eventsError": events_error,
        "log": log,
    }))
    .into_response()
}

/// One Event as the page lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRow {
    #[serde(rename = "type")]
    pub type_: String,
    pub reason: String,
    pub message: String,
    pub count: i32,
    pub last_ms: Option<i64>,
    pub source: String,
}

/// The Events of an object in time order.
pub fn event_rows(mut events: Vec<Event>) -> Vec<EventRow> {
    let at = |e: &Event| {
        e.last_timestamp
            .as_ref()
            .map(|t| t.0.as_millisecond())
            .or(e.event_time.as_ref().map(|t| t.0.as_millisecond()))
            .or(e.first_timestamp.as_ref().map(|t| t.0.as_millisecond()))
    };
    events.sort_by_key(|e| at(e).unwrap_or(0));
    events
        .iter()
        .map(|e| EventRow {
            type_: e.type_.clone().unwrap_or_default(),
            reason: e.reason.clone().unwrap_or_default(),
            message: e.message.clone().unwrap_or_default(),
            count: e.count.unwrap_or(1),
            last_ms: at(e),
            source: e
                .reporting_component
                .clone()
                .filter(|c| !c.is_empty())
                .or_else(|| e.source.as_ref().and_then(|s| s.component.clone()))
                .unwrap_or_default(),
        })
        .collect()
}

async fn job_events(client: &Client, job: &VisionJob) -> (Vec<EventRow>, Option<String>) {
    let ns = job.metadata.namespace.as_deref().unwrap_or_default();
    let Some(uid) = job.meta().uid.as_deref() else {
        return (Vec::new(), None);
    };
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    match api
        .list(&ListParams::default().fields(&format!("involvedObject.uid={uid}")))
        .await
    {
        Ok(list) => (event_rows(list.items), None),
        Err(e) => (
            Vec::new(),
            Some(api_error(&format!("Events in namespace {ns}"), &e)),
        ),
    }
}

/// The tail of the current pod's log, or why there is none.
async fn pod_log(client: &Client, job: &VisionJob) -> Value {
    let ns = job.metadata.namespace.as_deref().unwrap_or_default();
    let Some(pod_name) = job.status.as_ref().and_then(|s| s.pod_name.clone()) else {
        return json!({"message": "the job has no pod yet"});
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod = match pods.get_opt(&pod_name).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            return json!({"pod": pod_name, "message": format!(
                "pod {pod_name} is gone (deleted after the job finished, or by its retry); its log went with it"
            )});
        }
        Err(e) => {
            return json!({"pod": pod_name, "message": api_error(&format!("pod {ns}/{pod_name}"), &e)});
        }
    };
    let containers: Vec<String> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    let container = containers
        .iter()
        .find(|c| *c == vision_api::ALGORITHM_CONTAINER)
        .or(containers.first())
        .cloned();
    let lp = LogParams {
        container: container.clone(),
        tail_lines: Some(LOG_TAIL_LINES),
        ..Default::default()
    };
    match pods.logs(&pod_name, &lp).await {
        Ok(text) => json!({"pod": pod_name, "container": container, "text": text}),
        Err(e) => json!({"pod": pod_name, "container": container,
            "message": api_error(&format!("the log of pod {ns}/{pod_name}"), &e)}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    #[test]
    fn events_are_listed_in_time_order_with_their_source() {
        use k8s_openapi::api::core::v1::EventSource;
        let ev = |reason: &str, at: i64| Event {
            type_: Some("Normal".into()),
            reason: Some(reason.into()),
            message: Some(format!("{reason} happened")),
            last_timestamp: Some(vision_api::testing::at_ms(at)),
            source: Some(EventSource {
                component: Some("vision-operator".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let rows = event_rows(vec![ev("Running", 2_000), ev("Admitted", 1_000)]);
        assert_eq!(
            rows,
            vec![
                EventRow {
                    type_: "Normal".into(),
                    reason: "Admitted".into(),
                    message: "Admitted happened".into(),
                    count: 1,
                    last_ms: Some(1_000),
                    source: "vision-operator".into(),
                },
                EventRow {
                    type_: "Normal".into(),
                    reason: "Running".into(),
                    message: "Running happened".into(),
                    count: 1,
                    last_ms: Some(2_000),
                    source: "vision-operator".into(),
                },
            ]
        );
    }

    #[tokio::test]
    async fn only_requests_for_localhost_are_answered() {
        let app = Router::new()
            .route("/", get(|| async { "ok" }))
            .layer(middleware::from_fn(local_host_only));
        let status = |host: &'static str| {
            let app = app.clone();
            async move {
                app.oneshot(
                    Request::builder()
                        .uri("/")
                        .header(header::HOST, host)
                        .body(Body::empty())
                        .expect("request"),
                )
                .await
                .expect("response")
                .status()
            }
        };
        assert_eq!(status("127.0.0.1:8080").await, StatusCode::OK);
        assert_eq!(status("localhost:1").await, StatusCode::OK);
        assert_eq!(status("evil.example:8080").await, StatusCode::FORBIDDEN);
    }
}
