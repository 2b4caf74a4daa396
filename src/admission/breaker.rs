//! The per-algorithm circuit breaker.
//!
//! Closed: failures are kept in a sliding window of `window_ms`; when
//! `failure_threshold` of them fall inside the window it opens. Open: nothing
//! of the algorithm is admitted until `until_ms`. From then on it is
//! half-open: exactly one job may be admitted as a probe, and the first
//! outcome observed decides (Succeeded closes, Failed re-opens for another
//! cool-down). The first outcome rather than "the probe's outcome" because an
//! outcome does not name its job, and any attempt finishing after the
//! cool-down is fresh evidence about the backend.
//!
//! Outcomes observed while open (attempts admitted before it opened) are
//! ignored: they say nothing newer than what opened it.

use std::collections::VecDeque;

use super::index::JobId;
use super::{BreakerSpec, Outcome};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Breaker {
    /// Failure times inside the window, oldest first (at most
    /// `failure_threshold` of them: reaching it opens the breaker).
    Closed {
        failures: VecDeque<i64>,
    },
    Open {
        until_ms: i64,
    },
    /// The cool-down is over; `probe` is the admitted probe, if any.
    HalfOpen {
        probe: Option<JobId>,
    },
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker::Closed {
            failures: VecDeque::new(),
        }
    }
}

/// What the breaker says about admitting one more job now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    Pass,
    /// Passing it makes the job the half-open probe.
    Probe,
    Open {
        until_ms: i64,
    },
    Probing,
}

impl Breaker {
    pub fn gate(&self, now_ms: i64) -> Gate {
        match self {
            Breaker::Closed { .. } => Gate::Pass,
            Breaker::Open { until_ms } if now_ms < *until_ms => Gate::Open {
                until_ms: *until_ms,
            },
            Breaker::Open { .. } | Breaker::HalfOpen { probe: None } => Gate::Probe,
            Breaker::HalfOpen { probe: Some(_) } => Gate::Probing,
        }
    }

    /// `id` was admitted at `now_ms` (after `gate` allowed it).
    pub fn on_admit(&mut self, id: JobId, now_ms: i64) {
        if self.gate(now_ms) == Gate::Probe {
            *self = Breaker::HalfOpen { probe: Some(id) };
        }
    }

    /// `id` stopped holding without an outcome (removed, rolled back): if it
    /// was the probe, another job may probe.
    pub fn on_release(&mut self, id: JobId) {
        if *self == (Breaker::HalfOpen { probe: Some(id) }) {
            *self = Breaker::HalfOpen { probe: None };
        }
    }

    pub fn record(&mut self, spec: &BreakerSpec, outcome: Outcome, now_ms: i64) {
        match self {
            Breaker::Closed { failures } => {
                if outcome == Outcome::Failed {
                    failures.push_back(now_ms);
                    while failures
                        .front()
                        .is_some_and(|&t| t <= now_ms.saturating_sub(spec.window_ms))
                    {
                        failures.pop_front();
                    }
                    if failures.len() >= spec.failure_threshold as usize {
                        *self = Breaker::Open {
                            until_ms: now_ms.saturating_add(spec.cooldown_ms),
                        };
                    }
                }
            }
            Breaker::Open { until_ms } if now_ms < *until_ms => {}
            Breaker::Open { .. } | Breaker::HalfOpen { .. } => {
                *self = match outcome {
                    Outcome::Succeeded => Breaker::default(),
                    Outcome::Failed => Breaker::Open {
                        until_ms: now_ms.saturating_add(spec.cooldown_ms),
                    },
                };
            }
        }
    }

    pub fn recent_failures(&self) -> u32 {
        match self {
            Breaker::Closed { failures } => failures.len() as u32,
            _ => 0,
        }
    }
}
