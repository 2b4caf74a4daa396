//! The custom resources of `vision.zjlab.io/v1alpha1`: the only place their
//! Rust types are defined. A light crate (no controller runtime, no HTTP
//! client) that a platform backend can depend on. `crdgen` turns them into `crds/*.yaml`; the doc
//! comments become what `kubectl explain` prints.
#![forbid(unsafe_code)]

mod algorithm;
pub mod contract;
mod job;
mod queue;
pub mod submit;
mod tenancy;
#[cfg(feature = "testing")]
pub mod testing;

pub use algorithm::{
    ALGORITHM_CONTAINER, AlgorithmMode, CircuitBreaker, DEFAULT_WORKER_IDLE_SECONDS,
    VisionAlgorithm, VisionAlgorithmSpec, VisionAlgorithmStatus, WorkerPool,
};
pub use job::{
    JobOutput, JobPhase, OutputClaim, OutputLocation, VisionJob, VisionJobSpec, VisionJobStatus,
};
pub use queue::{PodRetention, QueueOrdering, VisionQueue, VisionQueueSpec, VisionQueueStatus};
pub use tenancy::{
    PreemptionPolicy, QueuePreemption, QueueTenancy, TenantLimits, TenantSpec, TenantStatus,
};

/// The API group of all three resources.
pub const GROUP: &str = "vision.zjlab.io";
/// The name of the queue a job goes to when it names none.
pub const DEFAULT_QUEUE: &str = "default";

/// Every CRD of the operator, in the order they are installed.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt;
    let mut algorithm = VisionAlgorithm::crd();
    // The embedded PodTemplateSpec carries Kubernetes' own documentation of
    // every pod field, which makes the CRD larger than the 256 KiB that
    // client-side `kubectl apply` can annotate. Pod fields are documented by
    // `kubectl explain pod.spec`; keep only the descriptions of our own fields.
    for version in &mut algorithm.spec.versions {
        if let Some(template) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|root| root.properties.as_mut())
            .and_then(|p| p.get_mut("spec"))
            .and_then(|spec| spec.properties.as_mut())
            .and_then(|p| p.get_mut("template"))
        {
            for child in template.properties.iter_mut().flat_map(|p| p.values_mut()) {
                strip_descriptions(child);
            }
        }
    }
    vec![algorithm, VisionQueue::crd(), VisionJob::crd()]
}

type JsonSchemaProps =
    k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;

/// Removes `description` from a schema and everything below it.
fn strip_descriptions(schema: &mut JsonSchemaProps) {
    schema.description = None;
    for child in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        strip_descriptions(child);
    }
    if let Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(items)) =
        schema.items.as_mut()
    {
        strip_descriptions(items);
    }
    if let Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrBool::Schema(extra)) =
        schema.additional_properties.as_mut()
    {
        strip_descriptions(extra);
    }
}
