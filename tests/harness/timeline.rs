//! Pods as the API server shows them over time: one watch of a namespace's
//! pods records how many were live (not Succeeded/Failed, not gone) at once,
//! and when each was first seen and ended.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};

/// Records, from one watch of a namespace's pods, how many were live (not
/// Succeeded/Failed, not gone) at once, and when each was created and ended.
#[derive(Clone, Default)]
pub struct PodTimeline {
    inner: Arc<Mutex<Timeline>>,
}

#[derive(Default)]
pub struct Timeline {
    live: HashMap<String, Instant>,
    pub max_live: usize,
    /// (pod, first seen, ended) in the order pods were first seen.
    pub pods: Vec<(String, Instant, Option<Instant>)>,
    /// Times at which a pod stopped being live.
    pub ends: Vec<Instant>,
    pub live_now: usize,
}

fn pod_is_live(p: &Pod) -> bool {
    !matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

impl PodTimeline {
    /// Starts watching the namespace's pods; runs until the test ends.
    pub fn watch(client: &Client, namespace: &str) -> PodTimeline {
        let timeline = PodTimeline::default();
        let inner = timeline.inner.clone();
        let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()));
            while let Some(Ok(event)) = stream.next().await {
                let now = Instant::now();
                let mut t = inner.lock().unwrap();
                let see = |t: &mut Timeline, p: &Pod, gone: bool| {
                    let name = p.name_any();
                    let live = !gone && pod_is_live(p);
                    if !t.pods.iter().any(|(n, _, _)| *n == name) {
                        t.pods.push((name.clone(), now, None));
                    }
                    match (live, t.live.contains_key(&name)) {
                        (true, false) => {
                            t.live.insert(name, now);
                        }
                        (false, true) => {
                            t.live.remove(&name);
                            t.ends.push(now);
                            if let Some(e) = t.pods.iter_mut().find(|(n, _, _)| *n == name) {
                                e.2 = Some(now);
                            }
                        }
                        _ => {}
                    }
                    t.live_now = t.live.len();
                    t.max_live = t.max_live.max(t.live.len());
                };
                match event {
                    watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                        see(&mut t, &p, false)
                    }
                    watcher::Event::Delete(p) => see(&mut t, &p, true),
                    _ => {}
                }
            }
        });
        timeline
    }

    pub fn max_live(&self) -> usize {
        self.inner.lock().unwrap().max_live
    }

    pub fn live_now(&self) -> usize {
        self.inner.lock().unwrap().live_now
    }

    pub fn created(&self) -> usize {
        self.inner.lock().unwrap().pods.len()
    }

    pub fn with<R>(&self, f: impl FnOnce(&Timeline) -> R) -> R {
        f(&self.inner.lock().unwrap())
    }
}
