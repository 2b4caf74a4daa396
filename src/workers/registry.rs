//! The connected workers of each algorithm and the tasks they run: pure
//! bookkeeping, every time passed in, unit-tested. The hub (`super::hub`)
//! owns one behind a lock and does the I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// One connected worker.
#[derive(Debug, Clone)]
pub struct WorkerEntry {
    pub algorithm: String,
    pub capacity: u32,
    /// Which connection of this worker id is current: a reconnect replaces
    /// the older one, whose end then changes nothing.
    pub generation: u64,
    pub last_seen: Instant,
    /// Tasks counted against the capacity: running, or cancelled and not
    /// yet confirmed ended by the worker.
    pub tasks: BTreeSet<String>,
    /// Its tasks that failed in a row (reset by a success).
    pub failures: u32,
    /// Benched (given no task) until then: see [`Registry::outcome`].
    pub benched_until: Option<Instant>,
    /// When it was last given a task on this connection (its pod's idle
    /// time, with the task count, for scaling).
    pub last_assigned: Option<Instant>,
}

impl WorkerEntry {
    fn free(&self) -> u32 {
        self.capacity
            .saturating_sub(u32::try_from(self.tasks.len()).unwrap_or(u32::MAX))
    }
}

/// Tasks in a row a worker may fail before it is benched: a worker whose
/// GPU or model is broken fails every task it gets, and without a bench it
/// would take (and fail) a large share of the queue while healthy workers
/// of the same algorithm wait. The algorithm's breaker covers the case
/// where every worker fails.
pub const WORKER_FAILURE_LIMIT: u32 = 3;

/// How long a failing worker gets no task. Afterwards it gets tasks again;
/// one more failure benches it again, one success clears it.
pub const WORKER_BENCH: Duration = Duration::from_secs(30);

/// A connected worker's load, for scaling its algorithm's pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Load {
    pub worker: String,
    pub tasks: u32,
    pub last_assigned: Option<Instant>,
}

/// One task the operator knows of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEntry {
    pub algorithm: String,
    /// The worker running it; `None` for a task adopted after a failover
    /// whose worker has not reconnected yet.
    pub worker: Option<String>,
    pub deadline: Option<Instant>,
    /// Cancelled by the operator: its outcome is ignored.
    pub cancelled: bool,
    /// Not matched yet, since then: a task a worker reported running that
    /// the operator has not (yet) adopted (an orphan, `worker` set), or one
    /// the operator adopted whose worker has not reported it yet (`worker`
    /// unset). After a failover both sides come back in either order;
    /// unmatched past a grace period, an orphan is cancelled and an
    /// adopted task is lost.
    pub unmatched_since: Option<Instant>,
}

/// Why a task's attempt ended without an outcome from its worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    /// The worker's stream ended (it exited, crashed or lost the network).
    Disconnected,
    /// No heartbeat within the deadline: the worker hangs or is cut off.
    MissedHeartbeats,
    /// The attempt ran past its time limit (the worker got a Cancel).
    Timeout,
    /// Adopted after a failover, and no worker reported it in time.
    NotReported,
}

/// What a reported outcome means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The task is this worker's and was not cancelled: the outcome counts.
    Counts,
    /// A cancelled task's late end: its slot is free, the outcome ignored.
    Cancelled,
    /// Not this worker's task (unknown, or another worker's): nothing changes.
    NotYours,
    /// An orphan's end: the slot is free; the outcome is kept by the hub
    /// for the adoption that may yet come.
    Orphan,
}

/// What a registration decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub generation: u64,
    /// Running tasks the operator knows and now counts on this worker.
    pub adopted: Vec<String>,
    /// Running tasks of another algorithm or another worker: the worker
    /// must cancel them.
    pub unknown: Vec<String>,
    /// Running tasks the operator does not know yet: kept (and counted on
    /// the worker) for the adoption grace period, in case this replica just
    /// became leader and has not adopted them yet.
    pub orphaned: Vec<String>,
    /// Tasks the previous connection of the same worker id held but the
    /// worker no longer reports: their attempts are lost.
    pub lost: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Registry {
    workers: BTreeMap<String, WorkerEntry>,
    tasks: HashMap<String, TaskEntry>,
    next_generation: u64,
}

impl Registry {
    pub fn worker(&self, id: &str) -> Option<&WorkerEntry> {
        self.workers.get(id)
    }

    pub fn task(&self, id: &str) -> Option<&TaskEntry> {
        self.tasks.get(id)
    }

    /// Connected workers of an algorithm and their free task slots.
    pub fn free_slots(&self, algorithm: &str) -> u32 {
        self.workers
            .values()
            .filter(|w| w.algorithm == algorithm)
            .map(WorkerEntry::free)
            .sum()
    }

    /// Workers of an algorithm (ids), in id order.
    pub fn workers_of(&self, algorithm: &str) -> Vec<String> {
        self.workers
            .iter()
            .filter(|(_, w)| w.algorithm == algorithm)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Connected workers of an algorithm with the tasks each holds and
    /// when it was last given one, in id order.
    pub fn loads(&self, algorithm: &str) -> Vec<Load> {
        self.workers
            .iter()
            .filter(|(_, w)| w.algorithm == algorithm)
            .map(|(id, w)| Load {
                worker: id.clone(),
                tasks: u32::try_from(w.tasks.len()).unwrap_or(u32::MAX),
                last_assigned: w.last_assigned,
            })
            .collect()
    }

    /// Takes an idle worker out of dispatch before its pod is removed: true
    /// (and it gets no task from now on) if it is connected and holds no
    /// task; false if it holds one (it must not be removed).
    pub fn retire(&mut self, id: &str) -> bool {
        match self.workers.get_mut(id) {
            Some(w) if w.tasks.is_empty() => {
                w.capacity = 0;
                true
            }
            _ => false,
        }
    }

    /// Registers (or re-registers) a worker with the tasks it still runs.
    pub fn register(
        &mut self,
        id: &str,
        algorithm: &str,
        capacity: u32,
        running: &[String],
        now: Instant,
    ) -> Registration {
        self.next_generation += 1;
        let generation = self.next_generation;
        let previous = self.workers.remove(id);
        let previous_health = previous
            .as_ref()
            .filter(|p| p.algorithm == algorithm)
            .map_or((0, None), |p| (p.failures, p.benched_until));
        let mut adopted = Vec::new();
        let mut unknown = Vec::new();
        let mut orphaned = Vec::new();
        for task_id in running {
            match self.tasks.get_mut(task_id) {
                Some(task)
                    if task.algorithm == algorithm
                        && task.worker.as_deref().is_none_or(|w| w == id) =>
                {
                    if task.worker.is_none() {
                        task.unmatched_since = None;
                    }
                    task.worker = Some(id.to_string());
                    adopted.push(task_id.clone());
                }
                Some(_) => unknown.push(task_id.clone()),
                None => {
                    self.tasks.insert(
                        task_id.clone(),
                        TaskEntry {
                            algorithm: algorithm.to_string(),
                            worker: Some(id.to_string()),
                            deadline: None,
                            cancelled: false,
                            unmatched_since: Some(now),
                        },
                    );
                    orphaned.push(task_id.clone());
                }
            }
        }
        let lost = previous
            .map(|p| {
                p.tasks
                    .into_iter()
                    .filter(|t| !adopted.contains(t) && !orphaned.contains(t))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        for task_id in &lost {
            self.tasks.remove(task_id);
        }
        // A reconnect keeps the worker's record of failures: it does not
        // clear a bench.
        let (failures, benched_until) = previous_health;
        self.workers.insert(
            id.to_string(),
            WorkerEntry {
                algorithm: algorithm.to_string(),
                capacity,
                generation,
                last_seen: now,
                tasks: adopted.iter().chain(&orphaned).cloned().collect(),
                failures,
                benched_until,
                last_assigned: None,
            },
        );
        Registration {
            generation,
            adopted,
            unknown,
            orphaned,
            lost,
        }
    }

    /// A sign of life from the current connection of a worker.
    pub fn heartbeat(&mut self, id: &str, generation: u64, now: Instant) {
        if let Some(w) = self
            .workers
            .get_mut(id)
            .filter(|w| w.generation == generation)
        {
            w.last_seen = now;
        }
    }

    /// Chooses the worker for a new task of `algorithm`: the one with the
    /// most free slots (ties: the smallest id) that is not benched, and
    /// records the task on it. `None` when every such worker of the
    /// algorithm is full (or none is connected). A task id already known is
    /// refused (never run twice).
    pub fn assign(
        &mut self,
        task_id: &str,
        algorithm: &str,
        deadline: Option<Instant>,
        now: Instant,
    ) -> Option<String> {
        if self.tasks.contains_key(task_id) {
            return None;
        }
        let (id, worker) = self
            .workers
            .iter_mut()
            .filter(|(_, w)| {
                w.algorithm == algorithm
                    && w.free() > 0
                    && w.benched_until.is_none_or(|until| until <= now)
            })
            .max_by(|(a_id, a), (b_id, b)| a.free().cmp(&b.free()).then(b_id.cmp(a_id)))?;
        worker.tasks.insert(task_id.to_string());
        worker.last_assigned = Some(now);
        self.tasks.insert(
            task_id.to_string(),
            TaskEntry {
                algorithm: algorithm.to_string(),
                worker: Some(id.clone()),
                deadline,
                cancelled: false,
                unmatched_since: None,
            },
        );
        Some(id.clone())
    }

    /// Adopts a task that ran before this replica led: the orphan a worker
    /// reported (returns that worker), or else a task awaiting its worker's
    /// report (`None`), lost if none reports it within the grace period.
    pub fn adopt(
        &mut self,
        task_id: &str,
        algorithm: &str,
        deadline: Option<Instant>,
        now: Instant,
    ) -> Option<String> {
        match self.tasks.get_mut(task_id) {
            Some(t) if t.algorithm == algorithm && t.worker.is_some() => {
                t.unmatched_since = None;
                t.deadline = deadline;
                t.worker.clone()
            }
            Some(_) => None,
            None => {
                self.tasks.insert(
                    task_id.to_string(),
                    TaskEntry {
                        algorithm: algorithm.to_string(),
                        worker: None,
                        deadline,
                        cancelled: false,
                        unmatched_since: Some(now),
                    },
                );
                None
            }
        }
    }

    /// An orphan's worker, if `task_id` is one (see [`TaskEntry::unmatched_since`]).
    pub fn orphan(&self, task_id: &str) -> Option<&str> {
        self.tasks
            .get(task_id)
            .filter(|t| t.unmatched_since.is_some())
            .and_then(|t| t.worker.as_deref())
    }

    /// Records how a task of worker `id` ended (a counted outcome, or a
    /// timeout): a success clears its failures; its
    /// [`WORKER_FAILURE_LIMIT`]th failure in a row, and each failure after
    /// it until a success, benches it for [`WORKER_BENCH`]. True when this
    /// outcome benched it.
    pub fn outcome(&mut self, id: &str, succeeded: bool, now: Instant) -> bool {
        let Some(w) = self.workers.get_mut(id) else {
            return false;
        };
        if succeeded {
            w.failures = 0;
            w.benched_until = None;
            return false;
        }
        w.failures = w.failures.saturating_add(1);
        if w.failures >= WORKER_FAILURE_LIMIT {
            w.benched_until = Some(now + WORKER_BENCH);
            return true;
        }
        false
    }

    /// A worker reported a task's outcome; see [`Finish`].
    pub fn finish(&mut self, worker: &str, generation: u64, task_id: &str) -> Finish {
        let current = self
            .workers
            .get(worker)
            .is_some_and(|w| w.generation == generation);
        match self.tasks.get(task_id) {
            Some(t) if current && t.worker.as_deref() == Some(worker) => {
                let cancelled = t.cancelled;
                let orphan = t.unmatched_since.is_some();
                self.tasks.remove(task_id);
                if let Some(w) = self.workers.get_mut(worker) {
                    w.tasks.remove(task_id);
                }
                if orphan {
                    Finish::Orphan
                } else if cancelled {
                    Finish::Cancelled
                } else {
                    Finish::Counts
                }
            }
            _ => Finish::NotYours,
        }
    }

    /// Whether a task is this worker's current, uncancelled task.
    pub fn owns(&self, worker: &str, generation: u64, task_id: &str) -> bool {
        self.workers
            .get(worker)
            .is_some_and(|w| w.generation == generation)
            && self.tasks.get(task_id).is_some_and(|t| {
                t.worker.as_deref() == Some(worker) && !t.cancelled && t.unmatched_since.is_none()
            })
    }

    /// The operator cancels a task: its outcome will be ignored; it keeps
    /// its worker's slot until the worker reports its end. Returns the
    /// worker to tell, if the task was running and not yet cancelled.
    pub fn cancel(&mut self, task_id: &str) -> Option<String> {
        let task = self.tasks.get_mut(task_id)?;
        if task.cancelled {
            return None;
        }
        task.cancelled = true;
        match task.worker.clone() {
            Some(worker) => Some(worker),
            None => {
                self.tasks.remove(task_id);
                None
            }
        }
    }

    /// A worker's connection ended. Returns its tasks that were not
    /// cancelled (their attempts are lost); nothing when a newer connection
    /// of the same worker id has replaced this one.
    pub fn disconnect(&mut self, id: &str, generation: u64) -> Vec<String> {
        if self
            .workers
            .get(id)
            .is_none_or(|w| w.generation != generation)
        {
            return Vec::new();
        }
        let worker = self.workers.remove(id).expect("checked above");
        self.drop_tasks(worker.tasks)
    }

    fn drop_tasks(&mut self, tasks: BTreeSet<String>) -> Vec<String> {
        tasks
            .into_iter()
            // Orphans are dropped quietly: their worker reports them again.
            .filter(|t| {
                self.tasks
                    .remove(t)
                    .is_some_and(|t| !t.cancelled && t.unmatched_since.is_none())
            })
            .collect()
    }

    /// Workers silent for longer than `heartbeat_timeout` are dead: they
    /// are removed, and their uncancelled tasks returned as lost (with the
    /// worker, whose stream the hub closes). Tasks past their deadline are
    /// cancelled and returned as timed out (with their worker to tell).
    pub fn expire(
        &mut self,
        now: Instant,
        heartbeat_timeout: Duration,
        grace: Duration,
    ) -> Expired {
        let dead: Vec<String> = self
            .workers
            .iter()
            .filter(|(_, w)| now.saturating_duration_since(w.last_seen) > heartbeat_timeout)
            .map(|(id, _)| id.clone())
            .collect();
        let mut expired = Expired::default();
        for id in dead {
            let worker = self.workers.remove(&id).expect("listed above");
            let lost = self.drop_tasks(worker.tasks);
            expired.dead.push((id, lost));
        }
        let mut timed_out: Vec<(String, Option<String>)> = self
            .tasks
            .iter()
            .filter(|(_, t)| !t.cancelled && t.deadline.is_some_and(|d| d <= now))
            .map(|(id, t)| (id.clone(), t.worker.clone()))
            .collect();
        timed_out.sort();
        for (task_id, _) in &timed_out {
            self.cancel(task_id);
        }
        expired.timed_out = timed_out;
        let mut unmatched: Vec<(String, Option<String>)> = self
            .tasks
            .iter()
            .filter(|(_, t)| {
                t.unmatched_since
                    .is_some_and(|since| now.saturating_duration_since(since) > grace)
            })
            .map(|(id, t)| (id.clone(), t.worker.clone()))
            .collect();
        unmatched.sort();
        for (task_id, worker) in unmatched {
            self.tasks.remove(&task_id);
            match worker {
                Some(worker) => {
                    if let Some(w) = self.workers.get_mut(&worker) {
                        w.tasks.remove(&task_id);
                    }
                    expired.orphans.push((task_id, worker));
                }
                None => expired.unclaimed.push(task_id),
            }
        }
        expired
    }
}

/// What [`Registry::expire`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Expired {
    /// Dead workers and their lost tasks.
    pub dead: Vec<(String, Vec<String>)>,
    /// Tasks past their deadline, with the worker to send a Cancel to.
    pub timed_out: Vec<(String, Option<String>)>,
    /// Orphans nobody adopted in time, with their worker (to cancel them).
    pub orphans: Vec<(String, String)>,
    /// Adopted tasks no worker reported in time: lost.
    pub unclaimed: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(3600);

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Finishes `task` on `worker` as a counted outcome.
    fn end(r: &mut Registry, worker: &str, task: &str, succeeded: bool, now: Instant) -> bool {
        let generation = r.worker(worker).unwrap().generation;
        assert_eq!(r.finish(worker, generation, task), Finish::Counts);
        r.outcome(worker, succeeded, now)
    }

    #[test]
    fn a_worker_failing_tasks_in_a_row_is_benched_until_it_succeeds() {
        let t0 = Instant::now();
        let mut r = Registry::default();
        r.register("bad", "detect", 1, &[], t0);
        r.register("good", "detect", 1, &[], t0);
        // "bad" sorts first among equals, so it gets each task while free.
        for n in 1..WORKER_FAILURE_LIMIT {
            let task = format!("t{n}");
            assert_eq!(r.assign(&task, "detect", None, t0).as_deref(), Some("bad"));
            assert!(
                !end(&mut r, "bad", &task, false, t0),
                "not benched after {n}"
            );
        }
        assert_eq!(r.assign("t3", "detect", None, t0).as_deref(), Some("bad"));
        assert!(end(&mut r, "bad", "t3", false, t0), "benched at the limit");
        // Benched: the healthy worker takes the next task, then none is free.
        assert_eq!(r.assign("t4", "detect", None, t0).as_deref(), Some("good"));
        assert_eq!(r.assign("t5", "detect", None, t0), None);
        // A reconnect does not clear the bench.
        r.register("bad", "detect", 1, &[], t0);
        assert_eq!(r.assign("t5", "detect", None, t0), None);
        // After the bench it gets tasks again; one more failure benches it again.
        let later = t0 + WORKER_BENCH;
        assert_eq!(
            r.assign("t5", "detect", None, later).as_deref(),
            Some("bad")
        );
        assert!(end(&mut r, "bad", "t5", false, later));
        assert_eq!(r.assign("t6", "detect", None, later), None);
        // One success clears it.
        let after = later + WORKER_BENCH;
        assert_eq!(
            r.assign("t6", "detect", None, after).as_deref(),
            Some("bad")
        );
        assert!(!end(&mut r, "bad", "t6", true, after));
        assert_eq!(r.worker("bad").unwrap().failures, 0);
        assert_eq!(r.worker("bad").unwrap().benched_until, None);
        assert!(
            !end(&mut r, "good", "t4", false, after),
            "one failure is not a bench"
        );
    }

    #[test]
    fn assign_fills_the_least_loaded_worker_of_the_algorithm_only() {
        let now = Instant::now();
        let mut r = Registry::default();
        r.register("a-1", "detect", 2, &[], now);
        r.register("a-2", "detect", 1, &[], now);
        r.register("b-1", "ocr", 4, &[], now);
        assert_eq!(r.free_slots("detect"), 3);
        assert_eq!(r.assign("t1", "detect", None, now).as_deref(), Some("a-1"));
        // a-1 and a-2 both have one free slot: the smaller id wins.
        assert_eq!(r.assign("t2", "detect", None, now).as_deref(), Some("a-1"));
        assert_eq!(r.assign("t3", "detect", None, now).as_deref(), Some("a-2"));
        // Full: never another algorithm's worker.
        assert_eq!(r.assign("t4", "detect", None, now), None);
        assert_eq!(r.free_slots("detect"), 0);
        assert_eq!(r.free_slots("ocr"), 4);
        // A known task id is never assigned twice.
        assert_eq!(r.assign("t1", "ocr", None, now), None);
    }

    #[test]
    fn loads_count_each_workers_tasks_and_only_an_idle_worker_retires() {
        let now = Instant::now();
        let mut r = Registry::default();
        r.register("w1", "detect", 2, &[], now);
        r.register("w2", "detect", 2, &[], now);
        r.register("o1", "ocr", 1, &[], now);
        assert_eq!(r.assign("t1", "detect", None, now).as_deref(), Some("w1"));
        let loads = |r: &Registry| -> Vec<(String, u32, Option<Instant>)> {
            r.loads("detect")
                .into_iter()
                .map(|l| (l.worker, l.tasks, l.last_assigned))
                .collect()
        };
        assert_eq!(
            loads(&r),
            vec![("w1".into(), 1, Some(now)), ("w2".into(), 0, None)]
        );
        // A busy worker does not retire; an idle one does and gets no task.
        assert!(!r.retire("w1"));
        assert!(r.retire("w2"));
        assert!(!r.retire("gone"));
        assert_eq!(r.assign("t2", "detect", None, now).as_deref(), Some("w1"));
        assert_eq!(r.assign("t3", "detect", None, now), None);
        assert_eq!(
            loads(&r),
            vec![("w1".into(), 2, Some(now)), ("w2".into(), 0, None)]
        );
    }

    #[test]
    fn finish_counts_only_the_owners_current_uncancelled_task() {
        let now = Instant::now();
        let mut r = Registry::default();
        let g1 = r.register("w1", "detect", 2, &[], now).generation;
        let g2 = r.register("w2", "detect", 2, &[], now).generation;
        assert_eq!(r.assign("t1", "detect", None, now).as_deref(), Some("w1"));
        assert_eq!(r.assign("t2", "detect", None, now).as_deref(), Some("w2"));
        // Another worker cannot forge t1's outcome; an unknown task changes nothing.
        assert_eq!(r.finish("w2", g2, "t1"), Finish::NotYours);
        assert_eq!(r.finish("w2", g2, "nope"), Finish::NotYours);
        assert_eq!(r.finish("w1", g1, "t1"), Finish::Counts);
        assert_eq!(r.finish("w1", g1, "t1"), Finish::NotYours);
        assert_eq!(r.free_slots("detect"), 3);
        // A cancelled task keeps its slot until the worker ends it; its end does not count.
        assert_eq!(r.cancel("t2").as_deref(), Some("w2"));
        assert_eq!(r.cancel("t2"), None);
        assert_eq!(r.free_slots("detect"), 3);
        assert_eq!(r.finish("w2", g2, "t2"), Finish::Cancelled);
        assert_eq!(r.free_slots("detect"), 4);
    }

    #[test]
    fn a_disconnect_loses_the_tasks_unless_a_newer_connection_replaced_it() {
        let now = Instant::now();
        let mut r = Registry::default();
        let g1 = r.register("w1", "detect", 3, &[], now).generation;
        r.assign("t1", "detect", None, now);
        r.assign("t2", "detect", None, now);
        r.assign("t3", "detect", None, now);
        r.cancel("t3");
        // The worker reconnects still running t1; t2 ended while it was cut off.
        let again = r.register("w1", "detect", 3, &ids(&["t1", "zz"]), now);
        assert_eq!(again.adopted, ids(&["t1"]));
        assert_eq!(again.unknown, Vec::<String>::new());
        assert_eq!(again.orphaned, ids(&["zz"]));
        assert_eq!(again.lost, ids(&["t2", "t3"]));
        // The old stream's end changes nothing now.
        assert_eq!(r.disconnect("w1", g1), Vec::<String>::new());
        assert!(r.owns("w1", again.generation, "t1"));
        // The current stream's end loses t1.
        assert_eq!(r.disconnect("w1", again.generation), ids(&["t1"]));
        assert_eq!(r.task("t1"), None);
        assert_eq!(r.free_slots("detect"), 0);
    }

    #[test]
    fn missed_heartbeats_kill_a_worker_and_lose_its_tasks() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(3);
        let mut r = Registry::default();
        let g1 = r.register("w1", "detect", 2, &[], t0).generation;
        r.register("w2", "detect", 2, &[], t0);
        r.assign("t1", "detect", None, t0);
        r.assign("t2", "detect", None, t0);
        r.heartbeat("w1", g1, t0 + Duration::from_secs(2));
        assert_eq!(
            r.expire(t0 + Duration::from_secs(3), timeout, GRACE),
            Expired::default()
        );
        let expired = r.expire(t0 + Duration::from_secs(4), timeout, GRACE);
        assert_eq!(expired.dead, vec![("w2".to_string(), ids(&["t2"]))]);
        assert_eq!(r.workers_of("detect"), ids(&["w1"]));
        // A heartbeat of a replaced connection does not keep the worker alive.
        let g2 = r
            .register(
                "w1",
                "detect",
                2,
                &ids(&["t1"]),
                t0 + Duration::from_secs(4),
            )
            .generation;
        r.heartbeat("w1", g1, t0 + Duration::from_secs(9));
        let expired = r.expire(t0 + Duration::from_secs(8), timeout, GRACE);
        assert_eq!(expired.dead, vec![("w1".to_string(), ids(&["t1"]))]);
        assert!(!r.owns("w1", g2, "t1"));
    }

    #[test]
    fn a_task_past_its_deadline_is_cancelled_once() {
        let t0 = Instant::now();
        let mut r = Registry::default();
        r.register("w1", "detect", 2, &[], t0);
        r.assign("t1", "detect", Some(t0 + Duration::from_secs(10)), t0);
        r.assign("t2", "detect", None, t0);
        let hb = Duration::from_secs(60);
        assert_eq!(
            r.expire(t0 + Duration::from_secs(9), hb, GRACE).timed_out,
            vec![]
        );
        assert_eq!(
            r.expire(t0 + Duration::from_secs(10), hb, GRACE).timed_out,
            vec![("t1".to_string(), Some("w1".to_string()))]
        );
        assert_eq!(
            r.expire(t0 + Duration::from_secs(11), hb, GRACE).timed_out,
            vec![]
        );
        assert!(r.task("t1").is_some_and(|t| t.cancelled));
    }

    #[test]
    fn after_a_failover_adoption_and_the_workers_report_meet_in_either_order() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(30);
        let hb = Duration::from_secs(3600);
        let mut r = Registry::default();
        // The new leader adopts t1 before its worker reconnects, t5 after.
        assert_eq!(r.adopt("t1", "detect", None, t0), None);
        assert_eq!(r.adopt("t9", "ocr", None, t0), None);
        let reg = r.register("w1", "detect", 3, &ids(&["t1", "t9", "t5"]), t0);
        assert_eq!(reg.adopted, ids(&["t1"]));
        // Another algorithm's task: cancelled at once; an unknown one: an orphan, for now.
        assert_eq!(reg.unknown, ids(&["t9"]));
        assert_eq!(reg.orphaned, ids(&["t5"]));
        assert_eq!(r.free_slots("detect"), 1);
        assert_eq!(r.orphan("t5"), Some("w1"));
        assert!(!r.owns("w1", reg.generation, "t5"));
        assert_eq!(r.adopt("t5", "detect", None, t0), Some("w1".to_string()));
        assert!(r.owns("w1", reg.generation, "t5"));
        assert_eq!(r.finish("w1", reg.generation, "t1"), Finish::Counts);
        assert_eq!(r.finish("w1", reg.generation, "t5"), Finish::Counts);
        // An orphan that ends before its adoption: its slot frees, the hub keeps the outcome.
        let reg = r.register("w1", "detect", 3, &ids(&["t6", "t7"]), t0);
        assert_eq!(r.finish("w1", reg.generation, "t6"), Finish::Orphan);
        // Past the grace: the orphan nobody adopted is cancelled, t9 (adopted, never reported) is lost.
        let expired = r.expire(t0 + grace + Duration::from_secs(1), hb, grace);
        assert_eq!(expired.orphans, vec![("t7".to_string(), "w1".to_string())]);
        assert_eq!(expired.unclaimed, ids(&["t9"]));
        assert_eq!(r.free_slots("detect"), 3);
    }
}
