//! The end-of-run table: faults injected by kind, invariant violations,
//! jobs lost, duplicated runs and the longest leaderless gap, as Markdown
//! (so that a run's table can be pasted into docs/RELIABILITY.md as is).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::invariants::{Millis, Violation, ViolationKind};
use crate::lease::Handover;

/// A timestamp as RFC 3339 UTC with milliseconds.
pub fn format_time(ms: Millis) -> String {
    k8s_openapi::jiff::Timestamp::from_millisecond(ms)
        .map(|t| format!("{t:.3}"))
        .unwrap_or_else(|_| format!("{ms} ms"))
}

/// Everything a run found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// What ran, in one line (commit, options).
    pub title: String,
    pub duration_s: f64,
    /// Faults injected, by kind, in the order they should be printed.
    pub faults: Vec<(String, u64)>,
    /// Requests the proxy faulted, by (kind of request, action).
    pub proxy_hits: Vec<(String, u64)>,
    pub jobs_submitted: usize,
    /// Jobs by final (or last) phase, as the final LIST shows them.
    pub phases: BTreeMap<String, usize>,
    pub violations: Vec<Violation>,
    /// Duplicated runs as a fresh LIST of the pods shows them at the end
    /// (jobs with more than one Succeeded pod), to cross-check the watcher.
    pub duplicated_runs_listed: usize,
    pub max_running: i64,
    pub peak_running: i64,
    pub handovers: usize,
    pub longest_gap: Option<Handover>,
    pub watch_errors: u64,
    /// Replicas that exited on their own (and were replaced), by exit status.
    pub replica_exits: Vec<(String, u64)>,
    /// Other elections (operators outside this run, acting on every
    /// namespace) renewed during the run: their writes cannot be told from
    /// ours, so a violation may be theirs.
    pub foreign_operators: Vec<String>,
}

impl Report {
    pub fn count(&self, kind: ViolationKind) -> usize {
        self.violations.iter().filter(|v| v.kind == kind).count()
    }

    /// Violations of the continuous invariants (limits, duplicates).
    pub fn invariant_violations(&self) -> usize {
        self.violations
            .iter()
            .filter(|v| {
                !matches!(
                    v.kind,
                    ViolationKind::JobNotFinal | ViolationKind::PodOutlivesJob
                )
            })
            .count()
    }

    pub fn jobs_lost(&self) -> usize {
        self.count(ViolationKind::JobNotFinal)
    }

    /// Jobs that ran twice: a second successful pod seen by the watcher.
    pub fn duplicated_runs(&self) -> usize {
        self.count(ViolationKind::JobSucceededTwice)
    }

    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.duplicated_runs_listed == 0
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{}\n", self.title);
        let _ = writeln!(s, "| what | count |");
        let _ = writeln!(s, "|---|---|");
        for (kind, n) in &self.faults {
            let _ = writeln!(s, "| fault injected: {kind} | {n} |");
        }
        for (kind, n) in &self.proxy_hits {
            let _ = writeln!(s, "| requests faulted by the proxy: {kind} | {n} |");
        }
        let _ = writeln!(s, "| jobs submitted | {} |", self.jobs_submitted);
        for (phase, n) in &self.phases {
            let _ = writeln!(s, "| jobs {phase} | {n} |");
        }
        let _ = writeln!(
            s,
            "| **invariant violations** (limits, two live pods of a job, second success) | **{}** |",
            self.invariant_violations()
        );
        for kind in ViolationKind::ALL {
            let n = self.count(kind);
            if n > 0 {
                let _ = writeln!(s, "| - {} | {n} |", kind.describe());
            }
        }
        let _ = writeln!(
            s,
            "| **jobs lost** (not final at the end) | **{}** |",
            self.jobs_lost()
        );
        let _ = writeln!(
            s,
            "| **duplicated runs** (watched / listed at the end) | **{} / {}** |",
            self.duplicated_runs(),
            self.duplicated_runs_listed
        );
        let _ = writeln!(
            s,
            "| pods outliving their job at the end | {} |",
            self.count(ViolationKind::PodOutlivesJob)
        );
        let _ = writeln!(
            s,
            "| most live pods in the queue at once (maxRunning) | {} ({}) |",
            self.peak_running, self.max_running
        );
        let _ = writeln!(
            s,
            "| leader changes seen on the Lease | {} |",
            self.handovers
        );
        let gap = match &self.longest_gap {
            Some(h) => format!(
                "{:.1} s ({} -> {}, from {})",
                h.gap_ms() as f64 / 1000.0,
                h.from.as_deref().unwrap_or("released"),
                h.to,
                format_time(h.leaderless_from)
            ),
            None => "none".into(),
        };
        let _ = writeln!(s, "| longest leaderless gap | {gap} |");
        for (status, n) in &self.replica_exits {
            let _ = writeln!(
                s,
                "| replicas that exited on their own ({status}), replaced | {n} |"
            );
        }
        let _ = writeln!(s, "| watch errors (retried) | {} |", self.watch_errors);
        if !self.foreign_operators.is_empty() {
            let _ = writeln!(
                s,
                "| **other operators active during the run** (violations may be theirs) | {} |",
                self.foreign_operators.join(", ")
            );
        }
        let _ = writeln!(s, "| duration | {:.0} s |", self.duration_s);
        if !self.violations.is_empty() {
            let _ = writeln!(s, "\nViolations:");
            for v in &self.violations {
                let _ = writeln!(s, "- {v}");
            }
        }
        let _ = writeln!(
            s,
            "\nResult: {}",
            if self.passed() { "PASS" } else { "FAIL" }
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_every_count_and_each_violation() {
        let report = Report {
            title: "run X".into(),
            duration_s: 61.4,
            faults: vec![("leader SIGKILL".into(), 3), ("pause".into(), 1)],
            proxy_hits: vec![("lease renewals / blackhole".into(), 2)],
            jobs_submitted: 2,
            phases: BTreeMap::from([("Succeeded".into(), 1), ("Queued".into(), 1)]),
            violations: vec![
                Violation {
                    at: 1_000,
                    kind: ViolationKind::QueueRunning,
                    subject: "q".into(),
                    count: 3,
                    limit: 2,
                    objects: vec!["ns/a-1".into(), "ns/b-1".into(), "ns/c-1".into()],
                },
                Violation {
                    at: 2_000,
                    kind: ViolationKind::JobNotFinal,
                    subject: "ns/c".into(),
                    count: 0,
                    limit: 0,
                    objects: vec!["phase Queued".into()],
                },
            ],
            duplicated_runs_listed: 0,
            max_running: 2,
            peak_running: 3,
            handovers: 4,
            longest_gap: Some(Handover {
                from: Some("r0".into()),
                to: "r1".into(),
                leaderless_from: 0,
                leaderless_to: 4_300,
            }),
            watch_errors: 0,
            replica_exits: vec![("exit status: 1".into(), 2)],
            foreign_operators: vec!["e2e-priority (priority)".into()],
        };
        assert_eq!(report.invariant_violations(), 1);
        assert_eq!(report.jobs_lost(), 1);
        assert!(!report.passed());
        let want = "run X

| what | count |
|---|---|
| fault injected: leader SIGKILL | 3 |
| fault injected: pause | 1 |
| requests faulted by the proxy: lease renewals / blackhole | 2 |
| jobs submitted | 2 |
| jobs Queued | 1 |
| jobs Succeeded | 1 |
| **invariant violations** (limits, two live pods of a job, second success) | **1** |
| - live pods above the queue's maxRunning | 1 |
| - job not in a final phase at the end (lost) | 1 |
| **jobs lost** (not final at the end) | **1** |
| **duplicated runs** (watched / listed at the end) | **0 / 0** |
| pods outliving their job at the end | 0 |
| most live pods in the queue at once (maxRunning) | 3 (2) |
| leader changes seen on the Lease | 4 |
| longest leaderless gap | 4.3 s (r0 -> r1, from 1970-01-01T00:00:00.000Z) |
| replicas that exited on their own (exit status: 1), replaced | 2 |
| watch errors (retried) | 0 |
| **other operators active during the run** (violations may be theirs) | e2e-priority (priority) |
| duration | 61 s |

Violations:
- 1970-01-01T00:00:01.000Z QueueRunning q: 3 > 2 [ns/a-1, ns/b-1, ns/c-1]
- 1970-01-01T00:00:02.000Z JobNotFinal ns/c: 0 > 0 [phase Queued]

Result: FAIL
";
        assert_eq!(report.render(), want);
    }
}
