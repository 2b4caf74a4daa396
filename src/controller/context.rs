//! What the dispatcher and the reconciler share: the caches (reflector
//! stores) they read, the writer they write through, the handle to the
//! dispatcher, the settings and the leadership flag.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::runtime::reflector::{ObjectRef, Store};

use super::handle::PoolHandle;
use super::settings::Settings;
use super::writer::Writer;
use crate::api::{VisionAlgorithm, VisionJob, VisionQueue};
use crate::metrics::Metrics;

pub struct Context {
    /// For reads that the caches cannot answer (a consistent list, a GET
    /// that confirms a cache miss). Writes go through `writer`.
    pub client: Client,
    pub jobs: Store<VisionJob>,
    pub pods: Store<Pod>,
    pub queues: Store<VisionQueue>,
    pub algorithms: Store<VisionAlgorithm>,
    pub writer: Writer,
    pub pool: PoolHandle,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    /// Bounds the dispatcher's status writes in flight; a graceful stop
    /// waits until every permit is back.
    pub writes: Arc<tokio::sync::Semaphore>,
    /// Set while this replica leads and is not stopping.
    pub(super) leader: AtomicBool,
}

impl Context {
    /// Whether this replica may write. Both controllers check it before
    /// every action.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::SeqCst);
    }

    /// Looks up an owned pod by namespace and name.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Arc<Pod>> {
        self.pods.get(&ObjectRef::new(name).within(namespace))
    }

    pub fn algorithm(&self, name: &str) -> Option<Arc<VisionAlgorithm>> {
        self.algorithms.get(&ObjectRef::new(name))
    }

    pub fn queue(&self, name: &str) -> Option<Arc<VisionQueue>> {
        self.queues.get(&ObjectRef::new(name))
    }
}
