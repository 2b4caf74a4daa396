//! The SDK for warm workers of a vision-operator `VisionAlgorithm` in worker
//! mode (docs/WORKERS.md), and the protocol's generated code
//! (`proto/vision/worker/v1/worker.proto`), which the operator uses too.
#![forbid(unsafe_code)]

/// The generated messages, client and server of `vision.worker.v1`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("vision.worker.v1");
}

mod sdk;

pub use sdk::{
    Config, DEFAULT_TOKEN_FILE, ENV_ENDPOINT, ENV_TOKEN_FILE, ENV_WORKER_ID, Error,
    MAX_RESULT_BYTES, SDK, Task, TaskError, run, serve,
};
/// The cancellation token a handler gets in [`Task::cancel`].
pub use tokio_util::sync::CancellationToken;
