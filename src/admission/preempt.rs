//! Victim choice for preemption within a queue: a pure function.
//!
//! # Rules
//!
//! A waiting job (the *preemptor*) that cannot be admitted only because its
//! queue's slots or GPUs are taken may evict running jobs of the same queue
//! (the *victims*), if the queue opts in:
//!
//! - [`Policy::LowerPriority`]: only jobs of strictly lower priority.
//! - [`Policy::LowerPriorityOrOverShare`]: also jobs of the *same* priority
//!   of another tenant `V`, as long as after the evictions `V`'s weighted
//!   load stays strictly above the preemptor's tenant's weighted load with
//!   the preemptor admitted: `(load_V - freed_V) / w_V > (load_P +
//!   cost_P) / w_P`.
//!
//! A job of higher priority is never a victim.
//!
//! Among the sets of eligible jobs that free enough (slots and GPUs), the
//! choice is a set with the fewest jobs; among those, the first in the
//! preference order compared element by element: lowest priority first,
//! then most recently started, then namespace/name.
//!
//! # No cycles
//!
//! Eviction by priority follows a strict order: a job evicts only jobs of
//! strictly lower priority, which can never evict it back. Eviction by share
//! at equal priority needs the victim's tenant to stay strictly above the
//! preemptor's tenant (weighted load, the preemptor counted) after the
//! swap; evicting back would need the opposite strict inequality between
//! the same two tenants, so no two tenants can evict each other in turn on
//! the same state. Evicted jobs wait (they are not running, so they evict
//! no one until admitted again through the ordinary fair order).

use super::JobKey;
use super::fair::cost;

/// Whom a waiting job may evict (the API's `PreemptionPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    #[default]
    Never,
    LowerPriority,
    LowerPriorityOrOverShare,
}

/// A running job that could be evicted.
#[derive(Debug, Clone, PartialEq)]
pub struct Running {
    pub key: JobKey,
    pub priority: i32,
    pub started_ms: i64,
    pub gpus: u32,
    /// Index of its tenant in [`Request::tenants`].
    pub tenant: usize,
}

/// A tenant's current load (GPUs: decayed average plus holdings) and weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TenantLoad {
    pub load: f64,
    pub weight: f64,
}

/// The waiting job and what must be freed for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub policy: Policy,
    pub priority: i32,
    pub gpus: u32,
    /// Index of its tenant in `tenants`.
    pub tenant: usize,
    /// Slots to free: holders + 1 - maxRunning (at least 0).
    pub slots: u32,
    /// GPUs to free: GPUs in use + its GPUs - maxGPUs (at least 0).
    pub gpus_to_free: u64,
    pub tenants: Vec<TenantLoad>,
}

/// The preference order of victims: lowest priority, most recently
/// started, then namespace/name.
fn preference(a: &Running, b: &Running) -> std::cmp::Ordering {
    a.priority
        .cmp(&b.priority)
        .then(b.started_ms.cmp(&a.started_ms))
        .then_with(|| a.key.cmp(&b.key))
}

/// Whether `r` may be evicted at all by this request (before budgets).
fn eligible(req: &Request, r: &Running) -> bool {
    match req.policy {
        Policy::Never => false,
        Policy::LowerPriority => r.priority < req.priority,
        Policy::LowerPriorityOrOverShare => {
            r.priority < req.priority || (r.priority == req.priority && r.tenant != req.tenant)
        }
    }
}

/// For same-priority victims: the cost each tenant may lose and still stay
/// strictly above the preemptor's tenant (weighted).
fn budgets(req: &Request) -> Vec<f64> {
    let p = &req.tenants[req.tenant];
    let bar = (p.load + cost(req.gpus) as f64) / p.weight;
    req.tenants
        .iter()
        .map(|t| t.load - bar * t.weight)
        .collect()
}

/// The victims to evict (indices into `running`, in preference order), or
/// `None` when no allowed set frees enough (or nothing needs freeing).
/// `max_nodes` bounds the search (it is exact within the bound, and gives
/// up beyond it).
pub fn choose_victims(req: &Request, running: &[Running], max_nodes: usize) -> Option<Vec<usize>> {
    if req.slots == 0 && req.gpus_to_free == 0 {
        return None;
    }
    let mut cands: Vec<usize> = (0..running.len())
        .filter(|&i| eligible(req, &running[i]))
        .collect();
    cands.sort_by(|&a, &b| preference(&running[a], &running[b]));
    let budget = budgets(req);
    // suffix_max[i]: the most GPUs of one candidate from i on (bounds the search).
    let mut suffix_max = vec![0u64; cands.len() + 1];
    for i in (0..cands.len()).rev() {
        suffix_max[i] = suffix_max[i + 1].max(u64::from(running[cands[i]].gpus));
    }
    let total_gpus: u64 = cands.iter().map(|&i| u64::from(running[i].gpus)).sum();
    if (cands.len() as u64) < u64::from(req.slots) || total_gpus < req.gpus_to_free {
        return None;
    }
    let mut nodes = 0usize;
    for k in (req.slots.max(1) as usize)..=cands.len() {
        let mut chosen = Vec::with_capacity(k);
        let mut spent = vec![0f64; req.tenants.len()];
        if search(
            req,
            running,
            &cands,
            &suffix_max,
            &budget,
            k,
            0,
            0,
            &mut chosen,
            &mut spent,
            &mut nodes,
            max_nodes,
        ) {
            return Some(chosen.into_iter().map(|c| cands[c]).collect());
        }
        if nodes >= max_nodes {
            return None;
        }
    }
    None
}

/// Depth-first, in preference order: the first complete set found is the
/// first of size `k` in that order.
#[allow(clippy::too_many_arguments)]
fn search(
    req: &Request,
    running: &[Running],
    cands: &[usize],
    suffix_max: &[u64],
    budget: &[f64],
    k: usize,
    from: usize,
    freed: u64,
    chosen: &mut Vec<usize>,
    spent: &mut [f64],
    nodes: &mut usize,
    max_nodes: usize,
) -> bool {
    if chosen.len() == k {
        return freed >= req.gpus_to_free;
    }
    let left = (k - chosen.len()) as u64;
    for c in from..cands.len() {
        if cands.len() - c < left as usize {
            return false;
        }
        // Even the largest remaining jobs could not free enough.
        if freed + left * suffix_max[c] < req.gpus_to_free {
            return false;
        }
        *nodes += 1;
        if *nodes >= max_nodes {
            return false;
        }
        let r = &running[cands[c]];
        let by_share = r.priority == req.priority;
        if by_share {
            let b = budget[r.tenant];
            // Strictly above after the eviction: spend < budget.
            if spent[r.tenant] + cost(r.gpus) as f64 >= b {
                continue;
            }
            spent[r.tenant] += cost(r.gpus) as f64;
        }
        chosen.push(c);
        if search(
            req,
            running,
            cands,
            suffix_max,
            budget,
            k,
            c + 1,
            freed + u64::from(r.gpus),
            chosen,
            spent,
            nodes,
            max_nodes,
        ) {
            return true;
        }
        chosen.pop();
        if by_share {
            spent[r.tenant] -= cost(r.gpus) as f64;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(i: usize, priority: i32, started_ms: i64, gpus: u32, tenant: usize) -> Running {
        Running {
            key: JobKey::new("ns", format!("j{i}")),
            priority,
            started_ms,
            gpus,
            tenant,
        }
    }

    fn req(policy: Policy, priority: i32, slots: u32, gpus_to_free: u64) -> Request {
        Request {
            policy,
            priority,
            gpus: 1,
            tenant: 0,
            slots,
            gpus_to_free,
            tenants: vec![
                TenantLoad {
                    load: 1.0,
                    weight: 1.0,
                },
                TenantLoad {
                    load: 10.0,
                    weight: 1.0,
                },
            ],
        }
    }

    #[test]
    fn the_most_recently_started_of_the_lowest_priority_goes() {
        let running = vec![
            run(0, 0, 100, 1, 1),
            run(1, 0, 300, 1, 1),
            run(2, 5, 400, 1, 1),
            run(3, 0, 200, 1, 1),
        ];
        let r = req(Policy::LowerPriority, 10, 1, 0);
        assert_eq!(choose_victims(&r, &running, 10_000), Some(vec![1]));
    }

    #[test]
    fn one_big_job_beats_two_small_ones() {
        let running = vec![
            run(0, 0, 100, 1, 1),
            run(1, 0, 300, 1, 1),
            run(2, 1, 50, 4, 1),
        ];
        let r = req(Policy::LowerPriority, 10, 1, 2);
        assert_eq!(choose_victims(&r, &running, 10_000), Some(vec![2]));
    }

    #[test]
    fn never_equal_or_higher_priority_by_priority() {
        let running = vec![run(0, 10, 100, 1, 1), run(1, 11, 300, 1, 1)];
        let r = req(Policy::LowerPriority, 10, 1, 0);
        assert_eq!(choose_victims(&r, &running, 10_000), None);
        let r = req(Policy::Never, 10, 1, 0);
        assert_eq!(choose_victims(&r, &[run(0, 0, 1, 1, 1)], 10_000), None);
    }

    #[test]
    fn same_priority_only_from_a_tenant_that_stays_above() {
        // Tenant 1 has load 10, the preemptor's tenant 0 has 1 (+1 with it).
        let running = vec![run(0, 10, 100, 1, 1), run(1, 10, 300, 1, 0)];
        let r = req(Policy::LowerPriorityOrOverShare, 10, 1, 0);
        assert_eq!(choose_victims(&r, &running, 10_000), Some(vec![0]));
        // Tenant 1 at load 2.5 would fall to 1.5 < 2: not allowed.
        let mut r = r;
        r.tenants[1].load = 2.5;
        assert_eq!(choose_victims(&r, &running, 10_000), None);
    }

    #[derive(Debug, Clone)]
    struct Case {
        req: Request,
        running: Vec<Running>,
    }

    fn case() -> impl Strategy<Value = Case> {
        let running = prop::collection::vec((0i32..4, 0i64..50, 0u32..4, 0usize..3), 0..8);
        let policy = prop_oneof![
            Just(Policy::Never),
            Just(Policy::LowerPriority),
            Just(Policy::LowerPriorityOrOverShare)
        ];
        let loads = prop::collection::vec((0u32..12, 1u32..4), 3);
        (
            running,
            policy,
            0i32..5,
            0u32..3,
            0usize..3,
            0u32..3,
            0u64..6,
            loads,
        )
            .prop_map(
                |(rs, policy, priority, gpus, tenant, slots, gf, loads)| Case {
                    running: rs
                        .into_iter()
                        .enumerate()
                        .map(|(i, (p, s, g, t))| run(i, p, s, g, t))
                        .collect(),
                    req: Request {
                        policy,
                        priority,
                        gpus,
                        tenant,
                        slots,
                        gpus_to_free: gf,
                        tenants: loads
                            .into_iter()
                            .map(|(l, w)| TenantLoad {
                                load: f64::from(l),
                                weight: f64::from(w),
                            })
                            .collect(),
                    },
                },
            )
    }

    /// The rules, checked on a whole set (the brute force's feasibility).
    fn allowed(req: &Request, running: &[Running], set: &[usize]) -> bool {
        let p = &req.tenants[req.tenant];
        let bar = (p.load + cost(req.gpus) as f64) / p.weight;
        let mut freed = vec![0f64; req.tenants.len()];
        for &i in set {
            let r = &running[i];
            match req.policy {
                Policy::Never => return false,
                Policy::LowerPriority if r.priority >= req.priority => return false,
                _ if r.priority > req.priority => return false,
                _ if r.priority == req.priority && r.tenant == req.tenant => return false,
                _ => {}
            }
            if r.priority == req.priority {
                freed[r.tenant] += cost(r.gpus) as f64;
            }
        }
        let shares_ok = (0..req.tenants.len()).all(|t| {
            freed[t] == 0.0 || (req.tenants[t].load - freed[t]) / req.tenants[t].weight > bar
        });
        let gpus: u64 = set.iter().map(|&i| u64::from(running[i].gpus)).sum();
        shares_ok && set.len() as u64 >= u64::from(req.slots) && gpus >= req.gpus_to_free
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Against every subset: the choice is allowed, frees enough, has
        /// the fewest jobs, and is the first such set in preference order;
        /// none exists exactly when the function says so.
        #[test]
        fn victims_are_minimal_and_first(c in case()) {
            let n = c.running.len();
            let mut best: Option<Vec<usize>> = None;
            let key = |set: &[usize]| {
                let mut v: Vec<Running> = set.iter().map(|&i| c.running[i].clone()).collect();
                v.sort_by(preference);
                v
            };
            let needed = c.req.slots > 0 || c.req.gpus_to_free > 0;
            for mask in 0u32..(1 << n) {
                let set: Vec<usize> = (0..n).filter(|i| mask & (1 << i) != 0).collect();
                if !needed || !allowed(&c.req, &c.running, &set) {
                    continue;
                }
                let better = match &best {
                    None => true,
                    Some(b) => set.len() < b.len()
                        || (set.len() == b.len()
                            && key(&set).iter().zip(key(b).iter())
                                .map(|(x, y)| preference(x, y))
                                .find(|o| o.is_ne())
                                == Some(std::cmp::Ordering::Less)),
                };
                if better {
                    best = Some(set);
                }
            }
            let got = choose_victims(&c.req, &c.running, 1_000_000);
            match (&got, &best) {
                (None, None) => {}
                (Some(g), Some(b)) => {
                    prop_assert!(allowed(&c.req, &c.running, g));
                    prop_assert_eq!(key(g), key(b));
                }
                _ => prop_assert!(false, "got {:?}, brute force {:?}", got, best),
            }
            // No cycles: no victim has a higher priority than the preemptor,
            // an equal one only from another tenant, never its own.
            for &v in got.iter().flatten() {
                let r = &c.running[v];
                prop_assert!(r.priority < c.req.priority
                    || (r.priority == c.req.priority
                        && c.req.policy == Policy::LowerPriorityOrOverShare
                        && r.tenant != c.req.tenant));
            }
        }
    }
}
