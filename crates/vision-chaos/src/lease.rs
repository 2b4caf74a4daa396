//! The leaderless gaps of an election, measured from the Lease object alone
//! (what the API server stores), never from the replicas' own view.
//!
//! A gap is the time from the last renewal of the previous holder (its last
//! `renewTime` seen, or the moment the lease was seen released) to the
//! `acquireTime` of the next holder. For a crashed leader this includes the
//! lease duration the standby must wait out; for a graceful release it is
//! the handover. All times are the wall clock of the machine that runs the
//! cluster, the replicas and this watcher.

use crate::invariants::Millis;

/// What the lease said at one point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    /// None (or empty) when released.
    pub holder: Option<String>,
    pub acquire_time: Option<Millis>,
    pub renew_time: Option<Millis>,
    pub transitions: Option<i32>,
}

/// One change of leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    pub from: Option<String>,
    pub to: String,
    /// Last renewal (or release) of the previous holder.
    pub leaderless_from: Millis,
    /// Acquisition by the new holder.
    pub leaderless_to: Millis,
}

impl Handover {
    pub fn gap_ms(&self) -> i64 {
        (self.leaderless_to - self.leaderless_from).max(0)
    }
}

/// Follows a lease through its updates.
#[derive(Debug, Default)]
pub struct LeaseTracker {
    holder: Option<String>,
    /// Last renewal of the current holder, or when the release was seen.
    last_alive: Option<Millis>,
    handovers: Vec<Handover>,
}

impl LeaseTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one state of the lease seen at `seen_at`; returns the
    /// handover it completes, if any.
    pub fn observe(&mut self, seen_at: Millis, state: &LeaseState) -> Option<Handover> {
        let holder = state.holder.clone().filter(|h| !h.is_empty());
        let Some(new) = holder else {
            if self.holder.take().is_some() {
                self.last_alive = Some(seen_at);
            }
            return None;
        };
        if self.holder.as_ref() == Some(&new) {
            self.last_alive = state.renew_time.or(self.last_alive);
            return None;
        }
        let previous = self.holder.replace(new.clone());
        let acquired = state.acquire_time.or(state.renew_time).unwrap_or(seen_at);
        let handover = self.last_alive.map(|from| Handover {
            from: previous,
            to: new,
            leaderless_from: from,
            leaderless_to: acquired,
        });
        self.last_alive = state.renew_time.or(Some(acquired));
        if let Some(h) = &handover {
            self.handovers.push(h.clone());
        }
        handover
    }

    pub fn holder(&self) -> Option<&str> {
        self.holder.as_deref()
    }

    pub fn handovers(&self) -> &[Handover] {
        &self.handovers
    }

    /// The longest gap seen, if any leader changed.
    pub fn longest_gap(&self) -> Option<&Handover> {
        self.handovers.iter().max_by_key(|h| h.gap_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(holder: &str, acquired: Millis, renewed: Millis) -> LeaseState {
        LeaseState {
            holder: Some(holder.into()),
            acquire_time: Some(acquired),
            renew_time: Some(renewed),
            transitions: None,
        }
    }

    #[test]
    fn a_crash_gap_runs_from_the_last_renewal_to_the_next_acquisition() {
        let mut t = LeaseTracker::new();
        assert_eq!(t.observe(1_000, &held("a", 1_000, 1_000)), None);
        assert_eq!(t.observe(2_400, &held("a", 1_000, 2_300)), None);
        let h = t.observe(7_000, &held("b", 6_900, 6_900));
        assert_eq!(
            h,
            Some(Handover {
                from: Some("a".into()),
                to: "b".into(),
                leaderless_from: 2_300,
                leaderless_to: 6_900,
            })
        );
        assert_eq!(h.unwrap().gap_ms(), 4_600);
        assert_eq!(t.holder(), Some("b"));
    }

    #[test]
    fn a_release_gap_runs_from_the_release_seen_to_the_acquisition() {
        let mut t = LeaseTracker::new();
        t.observe(1_000, &held("a", 1_000, 1_000));
        let released = LeaseState {
            holder: Some(String::new()),
            acquire_time: None,
            renew_time: None,
            transitions: None,
        };
        assert_eq!(t.observe(3_000, &released), None);
        t.observe(3_500, &held("b", 3_450, 3_450));
        t.observe(9_000, &held("b", 3_450, 8_900));
        t.observe(20_000, &held("a", 19_000, 19_000));
        let gaps: Vec<(Option<&str>, &str, i64)> = t
            .handovers()
            .iter()
            .map(|h| (h.from.as_deref(), h.to.as_str(), h.gap_ms()))
            .collect();
        assert_eq!(gaps, vec![(None, "b", 450), (Some("b"), "a", 10_100)]);
        assert_eq!(t.longest_gap().map(|h| h.gap_ms()), Some(10_100));
    }
}
