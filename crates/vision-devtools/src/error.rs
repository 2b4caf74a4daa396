//! The one error type of `vision-dev`. An enum rather than a boxed error so
//! that each failure names what it was doing (the file, the URL, the run)
//! while keeping the underlying error as its `source()`, which `main` prints
//! as a cause chain.

use std::path::PathBuf;

/// Everything `vision-dev` can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to the Kubernetes API failed.
    #[error("Kubernetes API request failed")]
    Kube(#[from] kube::Error),
    /// A helper shared with visionctl (client, namespace, listing) failed.
    #[error(transparent)]
    Cli(#[from] visionctl::Error),
    /// Reading or writing a file.
    #[error("{}", .path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file is not the JSON it should be (a benchmark result).
    #[error("{} is not a valid result file", .path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// Building a Kubernetes object or request from JSON.
    #[error("invalid object")]
    Json(#[from] serde_json::Error),
    /// Building a raw API request.
    #[error("invalid request")]
    Request(#[from] http::Error),
    /// An HTTP GET of a plain URL (the operator's /metrics).
    #[error("GET {url}")]
    Http {
        url: String,
        source: Box<ureq::Error>,
    },
    /// A run did not go as it must (did not finish, watches ended, ...).
    #[error("{0}")]
    Run(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A run that did not go as it must.
pub fn fail(message: impl Into<String>) -> Error {
    Error::Run(message.into())
}

/// `error: cause: cause ...`, each level once.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_names_the_file_and_its_cause() {
        let e = Error::File {
            path: PathBuf::from("/nowhere/t.json"),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory"),
        };
        assert_eq!(chain(&e), "/nowhere/t.json: No such file or directory");
        assert_eq!(chain(&fail("the watches ended")), "the watches ended");
    }
}
