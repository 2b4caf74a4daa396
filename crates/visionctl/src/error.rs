//! visionctl's one error type and its exit codes (docs/VISIONCTL.md):
//! 0 ok, 1 the job failed, 2 usage or a refused manifest, 3 not found,
//! 4 the client's wait timed out, 5 an API or other error, 6 the name is
//! taken by another job (for `submit --request-id`: the request was
//! submitted before with another spec). Each variant
//! keeps its cause as `source()`, and [`chain`] prints them all.

use std::path::PathBuf;
use std::time::Duration;

/// Everything visionctl can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The job reached Failed or Rejected (exit 1).
    #[error("VisionJob {name} {outcome}")]
    JobFailed { name: String, outcome: String },
    /// A wrong invocation that clap cannot see (exit 2).
    #[error("{0}")]
    Usage(String),
    /// A manifest that cannot be read or is not a VisionJob (exit 2).
    #[error("{}", .path.display())]
    Manifest {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The API server refused an object as invalid (exit 2).
    #[error("the API server refused {what}")]
    Refused {
        what: String,
        #[source]
        source: kube::Error,
    },
    /// The object does not exist (exit 3).
    #[error("{kind} {name} not found")]
    NotFound { kind: &'static str, name: String },
    /// The client stopped waiting (exit 4).
    #[error("{what} within {}", humantime::format_duration(*.after))]
    Timeout { what: String, after: Duration },
    /// A request to the Kubernetes API failed (exit 5).
    #[error("Kubernetes API request failed")]
    Api(#[from] kube::Error),
    /// No usable kubeconfig or context (exit 5).
    #[error("cannot load the kubeconfig")]
    Config(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Encoding output (exit 5).
    #[error("cannot encode the output")]
    Encode(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Anything else that went wrong on the way (exit 5).
    #[error("{0}")]
    Other(String),
    /// The name is taken by another job; with a request id, by a job with
    /// another spec (exit 6). Retrying cannot help.
    #[error("{what}")]
    Conflict { what: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The process exit code of this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::JobFailed { .. } => 1,
            Error::Usage(_) | Error::Manifest { .. } | Error::Refused { .. } => 2,
            Error::NotFound { .. } => 3,
            Error::Timeout { .. } => 4,
            Error::Api(_) | Error::Config(_) | Error::Encode(_) | Error::Other(_) => 5,
            Error::Conflict { .. } => 6,
        }
    }

    /// An API error on `kind`/`name`, classified: 404 is not found, 400/422
    /// (invalid) is refused, the rest stays an API error.
    pub fn from_api(e: kube::Error, kind: &'static str, name: &str) -> Error {
        match &e {
            kube::Error::Api(s) if s.code == 404 => Error::NotFound {
                kind,
                name: name.to_string(),
            },
            kube::Error::Api(s) if s.code == 400 || s.code == 422 => Error::Refused {
                what: format!("{kind} {name}"),
                source: e,
            },
            _ => Error::Api(e),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Encode(Box::new(e))
    }
}

/// The error and its causes on one line, `a: b: c`; a cause whose text the
/// line already ends with is not repeated.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let (text, next) = match s.downcast_ref::<kube::Error>() {
            // The API server's own message says it best; its Status (the
            // next source) would only repeat it.
            Some(kube::Error::Api(status)) if !status.message.is_empty() => {
                (status.message.clone(), None)
            }
            _ => (s.to_string(), s.source()),
        };
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, "Invalid")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn exit_codes_follow_the_documented_table() {
        let nf = Error::from_api(
            api(404, "visionjobs.vision.zjlab.io \"x\" not found"),
            "VisionJob",
            "ns/x",
        );
        assert_eq!(nf.exit_code(), 3);
        assert_eq!(nf.to_string(), "VisionJob ns/x not found");
        let refused = Error::from_api(
            api(422, "spec.priority: Invalid value"),
            "VisionJob",
            "ns/x",
        );
        assert_eq!(refused.exit_code(), 2);
        assert_eq!(
            chain(&refused),
            "the API server refused VisionJob ns/x: spec.priority: Invalid value"
        );
        assert_eq!(
            Error::from_api(api(403, "forbidden"), "VisionJob", "ns/x").exit_code(),
            5
        );
        let t = Error::Timeout {
            what: "VisionJob ns/x did not finish".into(),
            after: Duration::from_secs(90),
        };
        assert_eq!(
            (t.exit_code(), t.to_string().as_str()),
            (4, "VisionJob ns/x did not finish within 1m 30s")
        );
        let failed = Error::JobFailed {
            name: "ns/x".into(),
            outcome: "Failed (BackoffLimitExceeded)".into(),
        };
        assert_eq!(failed.exit_code(), 1);
        assert_eq!(Error::Usage("no".into()).exit_code(), 2);
        let conflict = Error::Conflict {
            what: "VisionJob ns/x already exists".into(),
        };
        assert_eq!(conflict.exit_code(), 6);
    }
}
