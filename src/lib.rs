//! vision-operator: a Kubernetes operator that turns `VisionJob`s into GPU pods
//! under a cluster-wide worker pool (`VisionQueue`) of registered algorithms
//! (`VisionAlgorithm`).
#![forbid(unsafe_code)]

pub mod admission;
pub mod clock;
pub use vision_api as api;
pub mod controller;
pub mod crd;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod pod;
pub mod status;
pub mod validate;
pub mod workers;

#[cfg(test)]
mod module_graph;
