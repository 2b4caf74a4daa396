//! The controllers' tunables and the finalizer's name: plain values that
//! every other controller module reads and none writes.

use std::time::Duration;

use crate::api::JobPhase;

/// The finalizer that lets the operator delete a job's pods and free its
/// slot before the job disappears.
pub const FINALIZER: &str = "vision.zjlab.io/cleanup";

/// Tunables of the controllers.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Backoff before the first retry of a failed attempt; doubles per retry.
    pub retry_backoff_base: Duration,
    /// Longest backoff between attempts.
    pub retry_backoff_max: Duration,
    /// How many status writes the dispatcher keeps in flight at once.
    pub max_inflight_writes: usize,
    /// Which job transitions become Kubernetes Events.
    pub job_events: JobEvents,
    /// The worker endpoint (worker mode, docs/WORKERS.md); `None`: off.
    pub workers: Option<crate::workers::WorkerSettings>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            retry_backoff_base: Duration::from_secs(1),
            retry_backoff_max: Duration::from_secs(60),
            max_inflight_writes: 64,
            job_events: JobEvents::Outcomes,
            workers: None,
        }
    }
}

/// Which job transitions are published as Kubernetes Events. Each Event is
/// one more API request per transition (a repeat of the same reason for the
/// same job within minutes only updates the first Event's count), so the
/// default publishes how each job ended and every problem, not the steps a
/// job's status already shows (admittedAt, startedAt).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JobEvents {
    /// Every transition: Queued, Admitted, Started, Retrying, Succeeded, Failed, Rejected, Suspended.
    All,
    /// The default: how a job ended (Succeeded, Failed, Rejected) and its
    /// problems (Retrying, a pod that cannot start); one Event per job that
    /// succeeds at once.
    Outcomes,
    /// Retrying, Failed and Rejected only.
    Problems,
    /// None.
    None,
}

impl JobEvents {
    /// Whether a job entering `phase` may get an Event (`retrying`: the
    /// phase Admitted again after a failed attempt, or a holder's problem,
    /// or Queued again after a preemption).
    pub fn covers(self, phase: JobPhase, retrying: bool) -> bool {
        use JobPhase::*;
        match self {
            JobEvents::All => true,
            JobEvents::Outcomes => match phase {
                Queued | Admitted | Running => retrying,
                Succeeded | Failed | Rejected => true,
                _ => false,
            },
            JobEvents::Problems => match phase {
                Queued | Admitted => retrying,
                Failed | Rejected => true,
                _ => false,
            },
            JobEvents::None => false,
        }
    }
}
