//! The operator's one error type (the library's and the binary's), with a
//! short label per variant for metrics and logs, and the reconciler's
//! requeue policy chosen by kind.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A write lost an optimistic-concurrency race (HTTP 409): the object
    /// changed since it was read. Retried at once from the newer state.
    #[error("conflict writing {0}: the object changed since it was read")]
    Conflict(String),

    /// Any other API error (network, 5xx, throttling, forbidden).
    #[error("Kubernetes API error: {0}")]
    Kube(#[source] kube::Error),

    /// Adding or removing the job's finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),

    /// A job's pods are still terminating; its slot is freed once they are gone.
    #[error("pods of {0} are still terminating")]
    PodsTerminating(String),

    /// A transition the status machine forbids (a bug, never written).
    #[error("refused status transition of {job}: {from} -> {to}")]
    Transition {
        job: String,
        from: String,
        to: String,
    },

    /// A pod of the attempt's name exists but belongs to another object (a
    /// former job of the same name); retried until it is gone.
    #[error("pod {0} exists and is not owned by this job")]
    PodNameTaken(String),

    /// This replica's leadership may have lapsed (its last renewal is older
    /// than the renew deadline): it writes nothing.
    #[error("not the leader (or leadership may have lapsed): nothing is written")]
    NotLeader,

    /// The job's status was written in a newer leadership term than this
    /// replica's: its write would look older than what is recorded. Nothing
    /// is written until its next lease renewal raises its term above it, or
    /// shows that another replica leads.
    #[error(
        "status of {job} was written in leadership term {recorded}, newer than this replica's {own}: not overwritten"
    )]
    StaleTerm {
        job: String,
        recorded: i64,
        own: i64,
    },

    /// The API server refused to create the attempt's pod as invalid (422)
    /// or malformed (400): permanent, so the job fails at once with the
    /// server's message instead of holding its slot until its timeout.
    #[error("the API server refused pod {pod}: {message}")]
    PodRefused { pod: String, message: String },

    /// The reconciler's plan asked again for a pod it had just read (a bug).
    #[error("pod {0} is missing from the cache and reading it did not settle the plan")]
    PodUnconfirmed(String),

    /// The CRDs are not installed in the cluster.
    #[error(
        "the VisionJob CRD is not installed: run `kubectl apply --server-side -f crds/` \
         (or `cargo run --bin crdgen | kubectl apply --server-side -f -`), or install the Helm chart"
    )]
    CrdsMissing,

    /// The kubeconfig could not be read or used.
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),

    /// The health and metrics endpoint could not listen.
    #[error("cannot serve /healthz, /readyz and /metrics: {0}")]
    Listen(#[source] std::io::Error),

    /// Another replica took the lease: this process stops.
    #[error("lost leadership")]
    LostLeadership,

    /// A task that runs for the life of the process ended.
    #[error("{0} ended")]
    Ended(&'static str),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A short, stable label for metrics (`reconcile_errors_total{kind}`).
    pub fn label(&self) -> &'static str {
        match self {
            Error::Conflict(_) => "conflict",
            Error::Kube(_) => "kube",
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.label(),
                _ => "finalizer",
            },
            Error::PodsTerminating(_) => "pods_terminating",
            Error::Transition { .. } => "transition",
            Error::PodNameTaken(_) => "pod_name_taken",
            Error::PodRefused { .. } => "pod_refused",
            Error::NotLeader => "not_leader",
            Error::StaleTerm { .. } => "stale_term",
            Error::PodUnconfirmed(_) => "pod_unconfirmed",
            Error::CrdsMissing => "crds_missing",
            Error::Kubeconfig(_) => "kubeconfig",
            Error::Listen(_) => "listen",
            Error::LostLeadership => "lost_leadership",
            Error::Ended(_) => "ended",
        }
    }

    /// How soon to reconcile again after this error.
    pub fn requeue_after(&self) -> Duration {
        match self.label() {
            "conflict" => Duration::from_millis(50),
            "pods_terminating" => Duration::from_millis(500),
            "transition" => Duration::from_secs(60),
            _ => Duration::from_secs(2),
        }
    }

    /// Maps an API error, singling out 409 Conflict.
    pub fn from_kube(what: impl Into<String>, e: kube::Error) -> Self {
        if is_status(&e, 409) {
            Error::Conflict(what.into())
        } else {
            Error::Kube(e)
        }
    }
}

/// Whether an API error carries the given HTTP status code.
pub fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}
