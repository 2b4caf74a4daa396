//! The operator's one error type at the Kubernetes boundary, with a short
//! label per variant for metrics, and the requeue policy chosen by kind.

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
