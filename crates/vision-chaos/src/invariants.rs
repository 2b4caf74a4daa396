//! The invariants of issue 12 as a pure state machine: it is fed what the
//! API server's watch streams say about pods, jobs, queues and algorithms
//! (no I/O, no clock: each observation carries its time) and records every
//! violation with the time, the objects and the counts.
//!
//! A pod is *live* from the first observation of it until it is terminal
//! (phase Succeeded or Failed) or gone from the API server. A Terminating pod
//! (one with a deletionTimestamp) is still live: its containers may still
//! run until the kubelet confirms they stopped, so it still occupies its
//! slot and its GPUs. A terminal pod is not live, deleted or not: the
//! operator's tracking finalizer (`vision.zjlab.io/outcome`) keeps a finished
//! pod after its deletion until its outcome is recorded, and it runs nothing.
//! A live pod counts against the queue and the algorithm
//! named by its labels (`vision.zjlab.io/queue`, `vision.zjlab.io/algorithm`)
//! with the GPUs of its `nvidia.com/gpu` limits.
//!
//! Limits are checked whenever a pod becomes live, against the limits known
//! at that moment: lowering a queue's `maxRunning` below the pods already
//! running is not a violation (nothing is evicted), but every pod that
//! becomes live while the count is already at the limit is. A limit first
//! learnt after pods were seen (the queue's watch stream lagging behind the
//! pods') is checked once when it arrives.

use std::collections::{BTreeMap, BTreeSet};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// What the checker needs of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFacts {
    pub uid: String,
    /// `namespace/name`.
    pub key: String,
    /// The `vision.zjlab.io/job-uid` label.
    pub job_uid: String,
    pub queue: Option<String>,
    pub algorithm: Option<String>,
    /// Sum of the containers' `nvidia.com/gpu` limits.
    pub gpus: i64,
    pub phase: PodPhase,
    /// Has a deletionTimestamp (still live, see the module doc).
    pub terminating: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

impl PodPhase {
    pub fn parse(phase: Option<&str>) -> PodPhase {
        match phase {
            Some("Running") => PodPhase::Running,
            Some("Succeeded") => PodPhase::Succeeded,
            Some("Failed") => PodPhase::Failed,
            Some("Unknown") => PodPhase::Unknown,
            _ => PodPhase::Pending,
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, PodPhase::Succeeded | PodPhase::Failed)
    }
}

/// What the checker needs of a VisionJob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFacts {
    pub uid: String,
    /// `namespace/name`.
    pub key: String,
    /// `status.phase` as written (None before the operator wrote one).
    pub phase: Option<String>,
}

/// Succeeded, Failed and Rejected: the job never runs again.
pub fn is_final_phase(phase: Option<&str>) -> bool {
    matches!(phase, Some("Succeeded" | "Failed" | "Rejected"))
}

/// One thing a watch stream said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    Pod(PodFacts),
    PodGone {
        uid: String,
    },
    Job(JobFacts),
    JobGone {
        uid: String,
    },
    Queue {
        name: String,
        max_running: i64,
        max_gpus: Option<i64>,
    },
    Algorithm {
        name: String,
        max_running: Option<i64>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ViolationKind {
    /// More live pods in a queue than its `maxRunning`.
    QueueRunning,
    /// More GPUs of live pods in a queue than its `maxGPUs`.
    QueueGpus,
    /// More live pods of an algorithm than its `maxRunning`.
    AlgorithmRunning,
    /// Two pods of one job live at once (two runs of one job).
    JobConcurrentPods,
    /// A second pod of one job succeeded (the job ran twice).
    JobSucceededTwice,
    /// At the end, a job not in a final phase (or gone without one): lost.
    JobNotFinal,
    /// At the end, a live pod whose job is final or gone.
    PodOutlivesJob,
}

impl ViolationKind {
    pub const ALL: [ViolationKind; 7] = [
        ViolationKind::QueueRunning,
        ViolationKind::QueueGpus,
        ViolationKind::AlgorithmRunning,
        ViolationKind::JobConcurrentPods,
        ViolationKind::JobSucceededTwice,
        ViolationKind::JobNotFinal,
        ViolationKind::PodOutlivesJob,
    ];

    pub fn describe(self) -> &'static str {
        match self {
            ViolationKind::QueueRunning => "live pods above the queue's maxRunning",
            ViolationKind::QueueGpus => "GPUs of live pods above the queue's maxGPUs",
            ViolationKind::AlgorithmRunning => "live pods above the algorithm's maxRunning",
            ViolationKind::JobConcurrentPods => "two live pods of one job",
            ViolationKind::JobSucceededTwice => "a second successful pod of one job",
            ViolationKind::JobNotFinal => "job not in a final phase at the end (lost)",
            ViolationKind::PodOutlivesJob => "pod still live after its job ended",
        }
    }
}

/// One recorded violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub at: Millis,
    pub kind: ViolationKind,
    /// The queue, algorithm, job or pod it is about.
    pub subject: String,
    /// The count observed (pods, GPUs) and the limit it broke.
    pub count: i64,
    pub limit: i64,
    /// The pods (or jobs) involved, sorted.
    pub objects: Vec<String>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:?} {}: {} > {} [{}]",
            crate::report::format_time(self.at),
            self.kind,
            self.subject,
            self.count,
            self.limit,
            self.objects.join(", ")
        )
    }
}

#[derive(Debug, Clone)]
struct LivePod {
    key: String,
    job_uid: String,
    queue: Option<String>,
    algorithm: Option<String>,
    gpus: i64,
}

#[derive(Debug, Clone, Default)]
struct QueueLimits {
    max_running: i64,
    max_gpus: Option<i64>,
}

/// The checker. Feed it with [`Checker::observe`]; call [`Checker::finish`]
/// once at the end.
#[derive(Debug, Default)]
pub struct Checker {
    /// Live pods by uid.
    live: BTreeMap<String, LivePod>,
    /// Uids of every pod currently known (live or terminal).
    known_pods: BTreeSet<String>,
    /// Successful pods (keys) by job uid.
    succeeded: BTreeMap<String, BTreeSet<String>>,
    jobs: BTreeMap<String, JobFacts>,
    /// Jobs that disappeared, with their last facts.
    gone_jobs: BTreeMap<String, JobFacts>,
    queues: BTreeMap<String, QueueLimits>,
    algorithms: BTreeMap<String, Option<i64>>,
    violations: Vec<Violation>,
    /// Highest live-pod count seen per queue.
    peak_running: BTreeMap<String, i64>,
}

impl Checker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one observation; returns the violations it revealed (also kept).
    pub fn observe(&mut self, at: Millis, observation: Observation) -> Vec<Violation> {
        let before = self.violations.len();
        match observation {
            Observation::Pod(pod) => self.pod(at, pod),
            Observation::PodGone { uid } => {
                self.known_pods.remove(&uid);
                self.live.remove(&uid);
            }
            Observation::Job(job) => {
                self.gone_jobs.remove(&job.uid);
                self.jobs.insert(job.uid.clone(), job);
            }
            Observation::JobGone { uid } => {
                if let Some(job) = self.jobs.remove(&uid) {
                    self.gone_jobs.insert(uid, job);
                }
            }
            Observation::Queue {
                name,
                max_running,
                max_gpus,
            } => {
                let first = !self.queues.contains_key(&name);
                self.queues.insert(
                    name.clone(),
                    QueueLimits {
                        max_running,
                        max_gpus,
                    },
                );
                if first {
                    self.check_queue(at, &name);
                }
            }
            Observation::Algorithm { name, max_running } => {
                let first = !self.algorithms.contains_key(&name);
                self.algorithms.insert(name.clone(), max_running);
                if first {
                    self.check_algorithm(at, &name);
                }
            }
        }
        self.violations[before..].to_vec()
    }

    fn pod(&mut self, at: Millis, pod: PodFacts) {
        self.known_pods.insert(pod.uid.clone());
        if pod.phase == PodPhase::Succeeded {
            let set = self.succeeded.entry(pod.job_uid.clone()).or_default();
            if set.insert(pod.key.clone()) && set.len() > 1 {
                let objects: Vec<String> = set.iter().cloned().collect();
                let count = objects.len() as i64;
                self.record(Violation {
                    at,
                    kind: ViolationKind::JobSucceededTwice,
                    subject: self.job_name(&pod.job_uid),
                    count,
                    limit: 1,
                    objects,
                });
            }
        }
        if pod.phase.is_terminal() {
            self.live.remove(&pod.uid);
            return;
        }
        if self.live.contains_key(&pod.uid) {
            return;
        }
        let live = LivePod {
            key: pod.key,
            job_uid: pod.job_uid,
            queue: pod.queue,
            algorithm: pod.algorithm,
            gpus: pod.gpus,
        };
        self.live.insert(pod.uid, live.clone());
        if let Some(q) = &live.queue {
            let count = self.live_in(|p| p.queue.as_ref() == Some(q)).len() as i64;
            let peak = self.peak_running.entry(q.clone()).or_default();
            *peak = (*peak).max(count);
            self.check_queue(at, q);
        }
        if let Some(a) = &live.algorithm {
            self.check_algorithm(at, a);
        }
        let same_job = self.live_in(|p| p.job_uid == live.job_uid);
        if same_job.len() > 1 {
            self.record(Violation {
                at,
                kind: ViolationKind::JobConcurrentPods,
                subject: self.job_name(&live.job_uid),
                count: same_job.len() as i64,
                limit: 1,
                objects: same_job,
            });
        }
    }

    /// Keys (sorted) of the live pods matching `pred`.
    fn live_in(&self, pred: impl Fn(&LivePod) -> bool) -> Vec<String> {
        let mut keys: Vec<String> = self
            .live
            .values()
            .filter(|p| pred(p))
            .map(|p| p.key.clone())
            .collect();
        keys.sort();
        keys
    }

    fn check_queue(&mut self, at: Millis, queue: &str) {
        let Some(limits) = self.queues.get(queue).cloned() else {
            return;
        };
        let pods: Vec<&LivePod> = self
            .live
            .values()
            .filter(|p| p.queue.as_deref() == Some(queue))
            .collect();
        let count = pods.len() as i64;
        let gpus: i64 = pods.iter().map(|p| p.gpus).sum();
        let objects = self.live_in(|p| p.queue.as_deref() == Some(queue));
        if count > limits.max_running {
            self.record(Violation {
                at,
                kind: ViolationKind::QueueRunning,
                subject: queue.to_string(),
                count,
                limit: limits.max_running,
                objects: objects.clone(),
            });
        }
        if let Some(max_gpus) = limits.max_gpus
            && gpus > max_gpus
        {
            self.record(Violation {
                at,
                kind: ViolationKind::QueueGpus,
                subject: queue.to_string(),
                count: gpus,
                limit: max_gpus,
                objects,
            });
        }
    }

    fn check_algorithm(&mut self, at: Millis, algorithm: &str) {
        let Some(Some(limit)) = self.algorithms.get(algorithm).copied() else {
            return;
        };
        let objects = self.live_in(|p| p.algorithm.as_deref() == Some(algorithm));
        if objects.len() as i64 > limit {
            self.record(Violation {
                at,
                kind: ViolationKind::AlgorithmRunning,
                subject: algorithm.to_string(),
                count: objects.len() as i64,
                limit,
                objects,
            });
        }
    }

    fn job_name(&self, uid: &str) -> String {
        self.jobs
            .get(uid)
            .or_else(|| self.gone_jobs.get(uid))
            .map(|j| j.key.clone())
            .unwrap_or_else(|| format!("job uid {uid}"))
    }

    fn record(&mut self, v: Violation) {
        self.violations.push(v);
    }

    /// The end-of-run checks: every job final, no live pod of a final or
    /// gone job. Returns the violations they found (also kept).
    pub fn finish(&mut self, at: Millis) -> Vec<Violation> {
        let before = self.violations.len();
        let mut lost: Vec<(String, Option<String>)> = self
            .jobs
            .values()
            .chain(self.gone_jobs.values())
            .filter(|j| !is_final_phase(j.phase.as_deref()))
            .map(|j| (j.key.clone(), j.phase.clone()))
            .collect();
        lost.sort();
        for (key, phase) in lost {
            self.record(Violation {
                at,
                kind: ViolationKind::JobNotFinal,
                subject: key,
                count: 0,
                limit: 0,
                objects: vec![format!("phase {}", phase.as_deref().unwrap_or("none"))],
            });
        }
        let mut outliving: Vec<(String, String)> = self
            .live
            .values()
            .filter(|p| {
                self.jobs
                    .get(&p.job_uid)
                    .is_none_or(|j| is_final_phase(j.phase.as_deref()))
            })
            .map(|p| (p.key.clone(), self.job_name(&p.job_uid)))
            .collect();
        outliving.sort();
        for (pod, job) in outliving {
            self.record(Violation {
                at,
                kind: ViolationKind::PodOutlivesJob,
                subject: pod,
                count: 1,
                limit: 0,
                objects: vec![job],
            });
        }
        self.violations[before..].to_vec()
    }

    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Uids of the pods currently known (for a relist: the ones it no longer
    /// lists are gone).
    pub fn known_pod_uids(&self) -> Vec<String> {
        self.known_pods.iter().cloned().collect()
    }

    pub fn known_job_uids(&self) -> Vec<String> {
        self.jobs.keys().cloned().collect()
    }

    pub fn live_pods(&self) -> usize {
        self.live.len()
    }

    /// Live pods whose job is final or gone (what [`Checker::finish`] would
    /// report as outliving their job).
    pub fn live_pods_of_ended_jobs(&self) -> usize {
        self.live
            .values()
            .filter(|p| {
                self.jobs
                    .get(&p.job_uid)
                    .is_none_or(|j| is_final_phase(j.phase.as_deref()))
            })
            .count()
    }

    /// Jobs seen (present or gone) and how many of them are final.
    pub fn job_counts(&self) -> (usize, usize) {
        let all = self.jobs.len() + self.gone_jobs.len();
        let fin = self
            .jobs
            .values()
            .chain(self.gone_jobs.values())
            .filter(|j| is_final_phase(j.phase.as_deref()))
            .count();
        (all, fin)
    }

    /// Jobs with more than one successful pod.
    pub fn duplicated_runs(&self) -> usize {
        self.succeeded.values().filter(|s| s.len() > 1).count()
    }

    /// Highest number of live pods seen at once in a queue.
    pub fn peak_running(&self, queue: &str) -> i64 {
        self.peak_running.get(queue).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, job: &str, phase: PodPhase) -> PodFacts {
        PodFacts {
            uid: uid.into(),
            key: format!("ns/{uid}"),
            job_uid: job.into(),
            queue: Some("q".into()),
            algorithm: Some("alg".into()),
            gpus: 1,
            phase,
            terminating: false,
        }
    }

    fn job(uid: &str, phase: Option<&str>) -> Observation {
        Observation::Job(JobFacts {
            uid: uid.into(),
            key: format!("ns/{uid}"),
            phase: phase.map(str::to_string),
        })
    }

    fn queue(max_running: i64, max_gpus: Option<i64>) -> Observation {
        Observation::Queue {
            name: "q".into(),
            max_running,
            max_gpus,
        }
    }

    #[test]
    fn a_pod_over_the_queue_limit_is_recorded_with_time_counts_and_pods() {
        let mut c = Checker::new();
        c.observe(0, queue(2, None));
        assert_eq!(
            c.observe(1, Observation::Pod(pod("a", "ja", PodPhase::Pending))),
            vec![]
        );
        assert_eq!(
            c.observe(2, Observation::Pod(pod("b", "jb", PodPhase::Running))),
            vec![]
        );
        // An update of a pod already live changes no count.
        assert_eq!(
            c.observe(3, Observation::Pod(pod("b", "jb", PodPhase::Running))),
            vec![]
        );
        let v = c.observe(4, Observation::Pod(pod("c", "jc", PodPhase::Pending)));
        assert_eq!(
            v,
            vec![Violation {
                at: 4,
                kind: ViolationKind::QueueRunning,
                subject: "q".into(),
                count: 3,
                limit: 2,
                objects: vec!["ns/a".into(), "ns/b".into(), "ns/c".into()],
            }]
        );
        assert_eq!(c.peak_running("q"), 3);
    }

    /// A finished pod that the operator's tracking finalizer keeps after its
    /// deletion runs nothing: it holds no slot.
    #[test]
    fn a_finished_pod_held_by_a_finalizer_is_not_live() {
        let mut c = Checker::new();
        c.observe(0, queue(1, None));
        c.observe(1, Observation::Pod(pod("a", "ja", PodPhase::Running)));
        let mut held = pod("a", "ja", PodPhase::Succeeded);
        held.terminating = true;
        c.observe(2, Observation::Pod(held));
        assert_eq!(c.live_pods(), 0);
        assert_eq!(
            c.observe(3, Observation::Pod(pod("b", "jb", PodPhase::Pending))),
            vec![]
        );
    }

    #[test]
    fn a_terminating_pod_still_holds_its_slot_until_terminal_or_gone() {
        let mut c = Checker::new();
        c.observe(0, queue(1, None));
        c.observe(1, Observation::Pod(pod("a", "ja", PodPhase::Running)));
        let mut terminating = pod("a", "ja", PodPhase::Running);
        terminating.terminating = true;
        c.observe(2, Observation::Pod(terminating));
        let v = c.observe(3, Observation::Pod(pod("b", "jb", PodPhase::Pending)));
        assert_eq!(
            v.iter().map(|v| (v.kind, v.count)).collect::<Vec<_>>(),
            vec![(ViolationKind::QueueRunning, 2)]
        );
        // Once a is gone and b finished, a new pod fits again.
        c.observe(4, Observation::PodGone { uid: "a".into() });
        c.observe(5, Observation::Pod(pod("b", "jb", PodPhase::Succeeded)));
        assert_eq!(
            c.observe(6, Observation::Pod(pod("c", "jc", PodPhase::Pending))),
            vec![]
        );
        assert_eq!(c.live_pods(), 1);
    }

    #[test]
    fn gpus_are_summed_per_queue_against_max_gpus() {
        let mut c = Checker::new();
        c.observe(0, queue(10, Some(4)));
        let mut a = pod("a", "ja", PodPhase::Running);
        a.gpus = 3;
        assert_eq!(c.observe(1, Observation::Pod(a)), vec![]);
        let mut b = pod("b", "jb", PodPhase::Pending);
        b.gpus = 2;
        let v = c.observe(2, Observation::Pod(b));
        assert_eq!(
            v.iter()
                .map(|v| (v.kind, v.count, v.limit))
                .collect::<Vec<_>>(),
            vec![(ViolationKind::QueueGpus, 5, 4)]
        );
    }

    #[test]
    fn the_algorithm_limit_counts_pods_of_every_queue() {
        let mut c = Checker::new();
        c.observe(
            0,
            Observation::Algorithm {
                name: "alg".into(),
                max_running: Some(1),
            },
        );
        c.observe(1, Observation::Pod(pod("a", "ja", PodPhase::Running)));
        let mut b = pod("b", "jb", PodPhase::Pending);
        b.queue = Some("other".into());
        let v = c.observe(2, Observation::Pod(b));
        assert_eq!(
            v,
            vec![Violation {
                at: 2,
                kind: ViolationKind::AlgorithmRunning,
                subject: "alg".into(),
                count: 2,
                limit: 1,
                objects: vec!["ns/a".into(), "ns/b".into()],
            }]
        );
    }

    #[test]
    fn lowering_a_limit_is_not_a_violation_but_the_next_pod_is() {
        let mut c = Checker::new();
        c.observe(0, queue(3, None));
        c.observe(1, Observation::Pod(pod("a", "ja", PodPhase::Running)));
        c.observe(2, Observation::Pod(pod("b", "jb", PodPhase::Running)));
        assert_eq!(c.observe(3, queue(1, None)), vec![]);
        let v = c.observe(4, Observation::Pod(pod("c", "jc", PodPhase::Running)));
        assert_eq!(
            v.iter()
                .map(|v| (v.kind, v.count, v.limit))
                .collect::<Vec<_>>(),
            vec![(ViolationKind::QueueRunning, 3, 1)]
        );
    }

    #[test]
    fn a_queue_seen_after_its_pods_is_checked_once_on_arrival() {
        let mut c = Checker::new();
        c.observe(1, Observation::Pod(pod("a", "ja", PodPhase::Running)));
        c.observe(2, Observation::Pod(pod("b", "jb", PodPhase::Running)));
        let v = c.observe(3, queue(1, None));
        assert_eq!(
            v.iter()
                .map(|v| (v.at, v.kind, v.count))
                .collect::<Vec<_>>(),
            vec![(3, ViolationKind::QueueRunning, 2)]
        );
    }

    #[test]
    fn two_live_pods_of_one_job_and_two_successes_are_duplicated_runs() {
        let mut c = Checker::new();
        c.observe(0, job("j", Some("Running")));
        c.observe(1, Observation::Pod(pod("j-1", "j", PodPhase::Running)));
        let v = c.observe(2, Observation::Pod(pod("j-2", "j", PodPhase::Pending)));
        assert_eq!(
            v,
            vec![Violation {
                at: 2,
                kind: ViolationKind::JobConcurrentPods,
                subject: "ns/j".into(),
                count: 2,
                limit: 1,
                objects: vec!["ns/j-1".into(), "ns/j-2".into()],
            }]
        );
        assert_eq!(
            c.observe(3, Observation::Pod(pod("j-1", "j", PodPhase::Succeeded))),
            vec![]
        );
        let v = c.observe(4, Observation::Pod(pod("j-2", "j", PodPhase::Succeeded)));
        assert_eq!(
            v,
            vec![Violation {
                at: 4,
                kind: ViolationKind::JobSucceededTwice,
                subject: "ns/j".into(),
                count: 2,
                limit: 1,
                objects: vec!["ns/j-1".into(), "ns/j-2".into()],
            }]
        );
        // The same successful pod seen again is not a second success.
        assert_eq!(
            c.observe(5, Observation::Pod(pod("j-2", "j", PodPhase::Succeeded))),
            vec![]
        );
        assert_eq!(c.duplicated_runs(), 1);
    }

    #[test]
    fn a_retry_after_a_failed_attempt_is_not_a_duplicate() {
        let mut c = Checker::new();
        c.observe(0, job("j", Some("Running")));
        c.observe(1, Observation::Pod(pod("j-1", "j", PodPhase::Running)));
        c.observe(2, Observation::Pod(pod("j-1", "j", PodPhase::Failed)));
        c.observe(3, Observation::Pod(pod("j-2", "j", PodPhase::Running)));
        c.observe(4, Observation::Pod(pod("j-2", "j", PodPhase::Succeeded)));
        c.observe(5, job("j", Some("Succeeded")));
        assert_eq!(c.finish(6), vec![]);
        assert_eq!(c.violations(), &[]);
    }

    #[test]
    fn finish_reports_lost_jobs_and_pods_outliving_their_job() {
        let mut c = Checker::new();
        c.observe(0, job("done", Some("Succeeded")));
        c.observe(0, job("waiting", Some("Queued")));
        c.observe(0, job("new", None));
        c.observe(0, job("vanished", Some("Admitted")));
        c.observe(
            1,
            Observation::JobGone {
                uid: "vanished".into(),
            },
        );
        c.observe(
            2,
            Observation::Pod(pod("done-1", "done", PodPhase::Running)),
        );
        c.observe(
            2,
            Observation::Pod(pod("waiting-1", "waiting", PodPhase::Running)),
        );
        assert_eq!(c.job_counts(), (4, 1));
        assert_eq!(c.live_pods_of_ended_jobs(), 1);
        let v = c.finish(9);
        let short: Vec<(ViolationKind, String, Vec<String>)> = v
            .into_iter()
            .map(|v| (v.kind, v.subject, v.objects))
            .collect();
        assert_eq!(
            short,
            vec![
                (
                    ViolationKind::JobNotFinal,
                    "ns/new".into(),
                    vec!["phase none".into()]
                ),
                (
                    ViolationKind::JobNotFinal,
                    "ns/vanished".into(),
                    vec!["phase Admitted".into()]
                ),
                (
                    ViolationKind::JobNotFinal,
                    "ns/waiting".into(),
                    vec!["phase Queued".into()]
                ),
                (
                    ViolationKind::PodOutlivesJob,
                    "ns/done-1".into(),
                    vec!["ns/done".into()]
                ),
            ]
        );
    }
}
