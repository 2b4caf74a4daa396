//! Claims on pod creations, so that the dispatcher (an admitted job's first
//! pod) and the reconciler (every later one, and the first when the
//! dispatcher's create failed) never create the same pod twice. Pure: the
//! writer takes and settles claims; the pod watch reports what it shows.
//!
//! A claim is held from before the create until the pod watch has shown the
//! pod (so the pod cache answers from then on) or the create failed. Nothing
//! lapses on a timer. A pod that was created and deleted during a gap in the
//! watch is never shown; the re-list settles it: when a re-list ends, every
//! claim whose create had finished before the re-list began is released (the
//! list holds the pod if it still exists).

use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// The create request is in flight.
    Creating,
    /// Created (or found ours) while the watch was in re-list `relist`.
    Created { relist: u64 },
}

/// The pods (`namespace/name`) being created or created but not yet shown
/// by the pod watch.
#[derive(Debug, Default)]
pub struct Claims {
    claims: HashMap<String, Claim>,
    /// How many re-lists of the pod watch have begun.
    relist: u64,
    /// During a re-list: the pods it listed so far.
    listing: Option<HashSet<String>>,
}

impl Claims {
    /// Claims the creation of a pod: false while another creation of it is
    /// claimed.
    pub fn claim(&mut self, pod: &str) -> bool {
        if self.claims.contains_key(pod) {
            return false;
        }
        self.claims.insert(pod.to_string(), Claim::Creating);
        true
    }

    /// The create succeeded (or the pod was ours already): the claim stays
    /// until the watch shows the pod, unless it has shown it already.
    pub fn created(&mut self, pod: &str) {
        let relist = self.relist;
        if let Some(claim) = self.claims.get_mut(pod) {
            *claim = Claim::Created { relist };
        }
    }

    /// Whether a creation of the pod is claimed (its create may still land).
    pub fn is_claimed(&self, pod: &str) -> bool {
        self.claims.contains_key(pod)
    }

    /// The create failed: someone may try again.
    pub fn failed(&mut self, pod: &str) {
        self.claims.remove(pod);
    }

    /// The pod watch shows the pod (added, changed, deleted or listed).
    pub fn shown(&mut self, pod: &str) {
        match &mut self.listing {
            // The pod cache takes a re-list's objects only when it ends.
            Some(listed) => {
                if self.claims.contains_key(pod) {
                    listed.insert(pod.to_string());
                }
            }
            None => {
                self.claims.remove(pod);
            }
        }
    }

    /// The pod watch begins a (re-)list.
    pub fn relist_started(&mut self) {
        self.relist += 1;
        self.listing = Some(HashSet::new());
    }

    /// The pod watch's list is complete and in the cache.
    pub fn relist_done(&mut self) {
        let started = self.relist;
        let listed = self.listing.take().unwrap_or_default();
        self.claims.retain(|pod, claim| {
            !listed.contains(pod)
                && !matches!(claim, Claim::Created { relist } if *relist < started)
        });
    }

    /// The claimed pods, sorted.
    #[cfg(test)]
    fn claimed(&self) -> Vec<&str> {
        let mut pods: Vec<&str> = self.claims.keys().map(String::as_str).collect();
        pods.sort_unstable();
        pods
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_excludes_a_second_creator_until_the_watch_shows_the_pod() {
        let mut claims = Claims::default();
        assert!(claims.claim("ns/a-1"));
        assert!(!claims.claim("ns/a-1"));
        claims.created("ns/a-1");
        assert!(!claims.claim("ns/a-1"));
        claims.shown("ns/a-1");
        assert_eq!(claims.claimed(), Vec::<&str>::new());
        assert!(claims.claim("ns/a-1"));
    }

    #[test]
    fn a_failed_create_releases_its_claim() {
        let mut claims = Claims::default();
        assert!(claims.claim("ns/a-1"));
        claims.failed("ns/a-1");
        assert!(claims.claim("ns/a-1"));
    }

    #[test]
    fn a_pod_shown_before_its_create_returns_leaves_no_claim() {
        let mut claims = Claims::default();
        assert!(claims.claim("ns/a-1"));
        claims.shown("ns/a-1");
        claims.created("ns/a-1");
        assert_eq!(claims.claimed(), Vec::<&str>::new());
    }

    #[test]
    fn a_relist_releases_claims_created_before_it_began_and_pods_it_listed() {
        let mut claims = Claims::default();
        // Created before the re-list and gone meanwhile: never listed.
        assert!(claims.claim("ns/gone-1"));
        claims.created("ns/gone-1");
        // Created before the re-list and listed by it.
        assert!(claims.claim("ns/listed-1"));
        claims.created("ns/listed-1");
        // Still being created when the re-list begins.
        assert!(claims.claim("ns/inflight-1"));
        claims.relist_started();
        claims.shown("ns/listed-1");
        // Listed pods stay claimed until the cache holds the whole list.
        assert_eq!(
            claims.claimed(),
            vec!["ns/gone-1", "ns/inflight-1", "ns/listed-1"]
        );
        // Created during the re-list: its pod may be after the list's
        // snapshot, so only a later watch event releases it.
        claims.created("ns/inflight-1");
        claims.relist_done();
        assert_eq!(claims.claimed(), vec!["ns/inflight-1"]);
        claims.shown("ns/inflight-1");
        assert_eq!(claims.claimed(), Vec::<&str>::new());
    }
}
