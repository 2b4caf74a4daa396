//! The fault proxy: a plain-HTTP reverse proxy on 127.0.0.1 between one
//! operator replica and the API server. It forwards through a kube
//! [`Client`] built from the cluster's kubeconfig (TLS and credentials come
//! from there; the client's own retries are off, so what the replica sees is
//! exactly what the proxy decided) and streams responses, so watches work.
//!
//! Faults are chosen at run time per kind of request ([`RequestKind`]):
//! blackhole (hold the request unanswered until the fault is lifted, then
//! drop the connection: a dead pooled connection), delay, answer 429 or 500
//! without forwarding, or forward and then answer 500 (the write committed,
//! the client sees an error: an ambiguous write).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kube::Client;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why the proxy dropped a connection instead of answering.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Dropped(String);

fn dropped(e: impl std::fmt::Display) -> Dropped {
    Dropped(e.to_string())
}
type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// The requests a fault can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RequestKind {
    /// Any request on a coordination.k8s.io Lease (the elector's GET and PUT).
    LeaseRenewal,
    /// POST of a pod.
    PodCreate,
    /// PATCH or PUT of a `/status` subresource.
    StatusWrite,
    /// GET of one VisionJob (the read-back after an ambiguous write). Not
    /// in [`RequestKind::ALL`]: the chaos run's episodes do not target it;
    /// single-scenario tests do.
    JobRead,
}

impl RequestKind {
    pub const ALL: [RequestKind; 3] = [
        RequestKind::LeaseRenewal,
        RequestKind::PodCreate,
        RequestKind::StatusWrite,
    ];

    /// The kind of a request, from its method and path; None for the rest.
    pub fn classify(method: &Method, path: &str) -> Option<RequestKind> {
        if path.starts_with("/apis/coordination.k8s.io/") && path.contains("/leases") {
            return Some(RequestKind::LeaseRenewal);
        }
        if *method == Method::POST && path.starts_with("/api/v1/") && path.ends_with("/pods") {
            return Some(RequestKind::PodCreate);
        }
        if (*method == Method::PATCH || *method == Method::PUT) && path.ends_with("/status") {
            return Some(RequestKind::StatusWrite);
        }
        if *method == Method::GET
            && path.starts_with("/apis/vision.zjlab.io/")
            && path
                .rsplit_once("/visionjobs/")
                .is_some_and(|(_, name)| !name.is_empty() && !name.contains('/'))
        {
            return Some(RequestKind::JobRead);
        }
        None
    }

    pub fn name(self) -> &'static str {
        match self {
            RequestKind::LeaseRenewal => "lease renewals",
            RequestKind::PodCreate => "pod creates",
            RequestKind::StatusWrite => "status writes",
            RequestKind::JobRead => "job reads",
        }
    }
}

/// What the proxy does to a request of a targeted kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultAction {
    /// Hold the request unanswered while the fault lasts, then drop the connection.
    Blackhole,
    /// Forward after this many milliseconds.
    Delay(u64),
    /// Answer 429 Too Many Requests (Retry-After: 1) without forwarding.
    TooManyRequests,
    /// Answer 500 without forwarding.
    ServerError,
    /// Forward, wait for the answer, then answer 500 instead.
    ServerErrorAfterCommit,
}

impl FaultAction {
    pub fn name(self) -> String {
        match self {
            FaultAction::Blackhole => "blackhole".into(),
            FaultAction::Delay(ms) => format!("delay {ms} ms"),
            FaultAction::TooManyRequests => "429".into(),
            FaultAction::ServerError => "500".into(),
            FaultAction::ServerErrorAfterCommit => "500 after commit".into(),
        }
    }

    /// The action's name without its parameter (for counting by kind).
    pub fn family(self) -> &'static str {
        match self {
            FaultAction::Blackhole => "blackhole",
            FaultAction::Delay(_) => "delay",
            FaultAction::TooManyRequests => "429",
            FaultAction::ServerError => "500",
            FaultAction::ServerErrorAfterCommit => "500 after commit",
        }
    }
}

#[derive(Default)]
struct State {
    rules: BTreeMap<RequestKind, FaultAction>,
    /// Requests affected, by (kind, action family).
    hits: BTreeMap<(RequestKind, &'static str), u64>,
    forwarded: u64,
}

/// A running proxy. Dropping it stops accepting connections.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    /// Bumped when faults change: releases blackholed requests.
    generation: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FaultProxy {
    /// Starts the proxy on 127.0.0.1 (a free port), forwarding through `upstream`.
    /// Build `upstream` with [`upstream_client`].
    pub async fn start(upstream: Client) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let (generation, _) = watch::channel(0u64);
        let shared = Shared {
            upstream,
            state: state.clone(),
            generation: generation.subscribe(),
        };
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let shared = shared.clone();
                        async move { shared.handle(req).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(FaultProxy {
            addr,
            state,
            generation,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Applies `action` to every request of `kind` from now on.
    pub fn set(&self, kind: RequestKind, action: FaultAction) {
        lock(&self.state).rules.insert(kind, action);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Lifts every fault; blackholed requests lose their connection.
    pub fn clear(&self) {
        lock(&self.state).rules.clear();
        self.generation.send_modify(|g| *g += 1);
    }

    /// Requests affected so far, by (kind, action family).
    pub fn hits(&self) -> BTreeMap<(RequestKind, &'static str), u64> {
        lock(&self.state).hits.clone()
    }

    /// Requests forwarded so far (with or without a fault).
    pub fn forwarded(&self) -> u64 {
        lock(&self.state).forwarded
    }

    /// A kubeconfig pointing at the proxy (plain HTTP, no credentials: the
    /// proxy adds them).
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: chaos-proxy\n  cluster:\n    server: http://{}\nusers:\n- name: chaos-proxy\n  user: {{}}\ncontexts:\n- name: chaos-proxy\n  context:\n    cluster: chaos-proxy\n    user: chaos-proxy\ncurrent-context: chaos-proxy\n",
            self.addr
        )
    }
}

/// A client for the proxy's upstream: the kubeconfig's server and
/// credentials, no retries of its own, no read timeout (watches are long).
pub async fn upstream_client(kubeconfig: &std::path::Path) -> Result<Client, crate::Error> {
    let mut config = crate::load_config(kubeconfig).await?;
    config.default_retry = false;
    config.read_timeout = None;
    Ok(Client::try_from(config)?)
}

#[derive(Clone)]
struct Shared {
    upstream: Client,
    state: Arc<Mutex<State>>,
    generation: watch::Receiver<u64>,
}

/// A Kubernetes Status body, so the client's error says what happened.
fn status_response(code: StatusCode, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message,
        "reason": if code == StatusCode::TOO_MANY_REQUESTS { "TooManyRequests" } else { "InternalError" },
        "code": code.as_u16(),
    });
    let mut res = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|never: Infallible| match never {})
            .boxed_unsync(),
    );
    *res.status_mut() = code;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if code == StatusCode::TOO_MANY_REQUESTS {
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    res
}

const HOP_BY_HOP: [&str; 9] = [
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

impl Shared {
    async fn handle(&self, req: Request<Incoming>) -> Result<Response<ProxyBody>, Dropped> {
        let kind = RequestKind::classify(req.method(), req.uri().path());
        let action = kind.and_then(|k| lock(&self.state).rules.get(&k).copied());
        if let (Some(kind), Some(action)) = (kind, action) {
            *lock(&self.state)
                .hits
                .entry((kind, action.family()))
                .or_default() += 1;
        }
        match action {
            Some(FaultAction::Blackhole) => {
                // Hold it until the faults change, then drop the connection.
                let mut generation = self.generation.clone();
                // Only a change after this request arrived releases it.
                generation.borrow_and_update();
                let _ = generation.changed().await;
                Err(Dropped("blackholed".into()))
            }
            Some(FaultAction::TooManyRequests) => Ok(status_response(
                StatusCode::TOO_MANY_REQUESTS,
                "chaos proxy: too many requests",
            )),
            Some(FaultAction::ServerError) => Ok(status_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "chaos proxy: internal error (not forwarded)",
            )),
            Some(FaultAction::Delay(ms)) => {
                // A request on a slow wire: once sent it arrives, even if
                // the client gives up on it meanwhile (hyper drops this
                // handler when the client's connection closes, so the
                // forwarding runs in a task of its own).
                let (parts, body) = req.into_parts();
                let bytes = body.collect().await.map_err(dropped)?.to_bytes();
                let shared = self.clone();
                let late = tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    shared.forward_bytes(parts, bytes).await
                });
                late.await
                    .map_err(|e| Dropped(format!("delayed request: {e}")))?
            }
            Some(FaultAction::ServerErrorAfterCommit) => {
                let res = self.forward(req).await?;
                // Let the write finish before lying about it.
                let _ = res.into_body().collect().await;
                Ok(status_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "chaos proxy: internal error (after the request was forwarded)",
                ))
            }
            None => self.forward(req).await,
        }
    }

    async fn forward(&self, req: Request<Incoming>) -> Result<Response<ProxyBody>, Dropped> {
        let (parts, body) = req.into_parts();
        let bytes = body.collect().await.map_err(dropped)?.to_bytes();
        self.forward_bytes(parts, bytes).await
    }

    /// Forwards a request whose body has been read.
    async fn forward_bytes(
        &self,
        parts: http::request::Parts,
        bytes: Bytes,
    ) -> Result<Response<ProxyBody>, Dropped> {
        let mut builder = Request::builder().method(parts.method).uri(
            parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/"),
        );
        for (name, value) in &parts.headers {
            if !HOP_BY_HOP.contains(&name.as_str()) && name != header::AUTHORIZATION {
                builder = builder.header(name, value);
            }
        }
        let upstream_req = builder
            .body(kube::client::Body::from(bytes))
            .map_err(dropped)?;
        lock(&self.state).forwarded += 1;
        let res = self.upstream.send(upstream_req).await.map_err(dropped)?;
        let (mut parts, body) = res.into_parts();
        for name in HOP_BY_HOP {
            parts.headers.remove(name);
        }
        Ok(Response::from_parts(
            parts,
            body.map_err(|e: kube::Error| -> BoxError { Box::new(e) })
                .boxed_unsync(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_classified_by_method_and_path() {
        let cases = [
            (
                Method::GET,
                "/apis/coordination.k8s.io/v1/namespaces/default/leases/vision-operator",
                Some(RequestKind::LeaseRenewal),
            ),
            (
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/default/leases/vision-operator",
                Some(RequestKind::LeaseRenewal),
            ),
            (
                Method::POST,
                "/api/v1/namespaces/team-a/pods",
                Some(RequestKind::PodCreate),
            ),
            (Method::GET, "/api/v1/namespaces/team-a/pods", None),
            (Method::DELETE, "/api/v1/namespaces/team-a/pods/j-1", None),
            (
                Method::PATCH,
                "/apis/vision.zjlab.io/v1alpha1/namespaces/team-a/visionjobs/j/status",
                Some(RequestKind::StatusWrite),
            ),
            (
                Method::PUT,
                "/apis/vision.zjlab.io/v1alpha1/visionqueues/default/status",
                Some(RequestKind::StatusWrite),
            ),
            (
                Method::GET,
                "/apis/vision.zjlab.io/v1alpha1/namespaces/team-a/visionjobs/j/status",
                None,
            ),
            (
                Method::PATCH,
                "/apis/vision.zjlab.io/v1alpha1/namespaces/team-a/visionjobs/j",
                None,
            ),
            (
                Method::GET,
                "/apis/vision.zjlab.io/v1alpha1/namespaces/team-a/visionjobs/j",
                Some(RequestKind::JobRead),
            ),
            // Lists and watches of jobs are not reads of one job.
            (
                Method::GET,
                "/apis/vision.zjlab.io/v1alpha1/namespaces/team-a/visionjobs",
                None,
            ),
            (
                Method::GET,
                "/apis/vision.zjlab.io/v1alpha1/visionjobs?watch=true",
                None,
            ),
        ];
        for (method, path, want) in cases {
            assert_eq!(
                RequestKind::classify(&method, path),
                want,
                "{method} {path}"
            );
        }
    }
}
