//! Worker mode (docs/WORKERS.md): warm, long-lived worker processes of an
//! algorithm connect to the operator over one gRPC stream each
//! (`proto/vision/worker/v1/worker.proto`) and receive the jobs' attempts as
//! tasks, instead of one pod per attempt.
//!
//! - `registry`: who is connected, with what capacity, running which task
//!   (pure, unit-tested);
//! - `auth`: which workers may serve an algorithm (TokenReview of the pod's
//!   projected ServiceAccount token; a test-only trust mode);
//! - `hub`: the gRPC service and the API the controller drives.

pub mod attempts;
pub mod auth;
pub mod hub;
pub mod registry;

pub use auth::{Auth, TOKEN_AUDIENCE};
pub use hub::{Hub, HubSettings, TaskSpec, WorkerEvent, task_id};
pub use registry::Lost;
pub use vision_worker::proto::CancelReason;

#[cfg(test)]
mod tests;
