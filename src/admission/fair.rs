//! Tenants of a queue: weighted fair share and per-tenant limits.
//!
//! # Usage and score
//!
//! A tenant's *usage* is GPU-time (slot-time for jobs that take no GPU: a
//! holder costs `max(gpus, 1)` per millisecond) decayed exponentially with
//! the queue's half-life `H`: with `tau = H / ln 2`, between two changes of
//! what the tenant holds (its *rate* `r`, the sum of its holders' costs),
//!
//! ```text
//! U(t) = U(t0) * e^(-(t - t0)/tau) + r * tau * (1 - e^(-(t - t0)/tau))
//! ```
//!
//! Its *load*, in GPUs, is the decayed average `U/tau` plus what it holds
//! now `r`; its *score* is load divided by weight. Among jobs of the same
//! priority the queue admits from the tenant with the lowest score (ties:
//! the older job, then namespace/name), so two tenants that keep a queue
//! busy converge to loads in the ratio of their weights.
//!
//! The pool integrates usage lazily, at its clock (the latest `now` it was
//! given), whenever a tenant's rate changes; scores are evaluated at the
//! `now` of the decision. No clock is read here.
//!
//! # Restart
//!
//! The usage is not a function of the jobs (finished jobs are gone), so it
//! is persisted: the operator writes each tenant's `U` and the time it was
//! computed into the queue's status, and a rebuilt pool restores it
//! (`WorkerPool::restore_usage`). A pool restored from a snapshot taken at
//! `t` decides at `t` exactly as the pool the snapshot was taken from.

use std::collections::BTreeMap;

/// The tenancy settings of a queue (the API's `spec.tenancy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenancySpec {
    pub default_weight: u32,
    /// Weights of named tenants (the others have `default_weight`).
    pub weights: BTreeMap<String, u32>,
    pub default_limits: TenantLimits,
    /// Limits of named tenants (the others have `default_limits`).
    pub limits: BTreeMap<String, TenantLimits>,
    pub half_life_ms: i64,
}

impl Default for TenancySpec {
    fn default() -> Self {
        TenancySpec {
            default_weight: 1,
            weights: BTreeMap::new(),
            default_limits: TenantLimits::default(),
            limits: BTreeMap::new(),
            half_life_ms: 600_000,
        }
    }
}

/// What one tenant may hold in a queue at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TenantLimits {
    pub max_running: Option<u32>,
    pub max_gpus: Option<u32>,
}

impl TenancySpec {
    pub fn weight(&self, tenant: &str) -> u32 {
        self.weights
            .get(tenant)
            .copied()
            .unwrap_or(self.default_weight)
            .max(1)
    }

    pub fn limits(&self, tenant: &str) -> TenantLimits {
        self.limits
            .get(tenant)
            .copied()
            .unwrap_or(self.default_limits)
    }

    /// The mean life of usage in ms: `half_life / ln 2`.
    pub fn tau_ms(&self) -> f64 {
        self.half_life_ms.max(1) as f64 / std::f64::consts::LN_2
    }
}

/// The cost per millisecond of holding a job: its GPUs, or one slot.
pub fn cost(gpus: u32) -> u64 {
    u64::from(gpus.max(1))
}

/// Which tenant limit a job would exceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    Running { holding: u32, max: u32 },
    Gpus { in_use: u64, gpus: u32, max: u32 },
}

/// One tenant of a queue.
#[derive(Debug, Clone)]
pub(crate) struct Tenant {
    pub name: String,
    pub pending: u32,
    pub holding: u32,
    pub gpus: u64,
    /// Sum of `cost` of its holders.
    pub rate: u64,
    /// Decayed usage in GPU-ms at `usage_at`.
    pub usage: f64,
    pub usage_at: i64,
    /// From the spec (1 and none without tenancy).
    pub weight: u32,
    pub limits: TenantLimits,
}

impl Tenant {
    pub fn new(name: String, at_ms: i64) -> Self {
        Tenant {
            name,
            pending: 0,
            holding: 0,
            gpus: 0,
            rate: 0,
            usage: 0.0,
            usage_at: at_ms,
            weight: 1,
            limits: TenantLimits::default(),
        }
    }

    /// Decayed usage (GPU-ms) at `now` (never before `usage_at`).
    pub fn usage_at_time(&self, now_ms: i64, tau: f64) -> f64 {
        let dt = now_ms.saturating_sub(self.usage_at);
        if dt <= 0 {
            return self.usage;
        }
        let d = (-(dt as f64) / tau).exp();
        self.usage * d + self.rate as f64 * tau * (1.0 - d)
    }

    /// Folds the usage up to `now` (before the rate changes).
    pub fn advance(&mut self, now_ms: i64, tau: f64) {
        if now_ms > self.usage_at {
            self.usage = self.usage_at_time(now_ms, tau);
            self.usage_at = now_ms;
        }
    }

    /// Decayed average plus current holdings, in GPUs.
    pub fn load(&self, now_ms: i64, tau: f64) -> f64 {
        self.usage_at_time(now_ms, tau) / tau + self.rate as f64
    }

    /// Load per unit of weight: lower is admitted first.
    pub fn score(&self, now_ms: i64, tau: f64) -> f64 {
        self.load(now_ms, tau) / f64::from(self.weight.max(1))
    }

    pub fn is_active(&self) -> bool {
        self.pending > 0 || self.holding > 0
    }

    /// The limit that admitting one more job with `gpus` would exceed.
    pub fn limit_hit(&self, gpus: u32) -> Option<LimitHit> {
        if let Some(max) = self.limits.max_running
            && self.holding >= max
        {
            return Some(LimitHit::Running {
                holding: self.holding,
                max,
            });
        }
        if let Some(max) = self.limits.max_gpus
            && self.gpus + u64::from(gpus) > u64::from(max)
        {
            return Some(LimitHit::Gpus {
                in_use: self.gpus,
                gpus,
                max,
            });
        }
        None
    }
}

/// A tenant as reported in the queue's status.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantStats {
    pub name: String,
    pub weight: u32,
    pub pending: u32,
    pub holding: u32,
    pub gpus_in_use: u64,
    /// Weight over the sum of the weights of the active tenants (0 when the
    /// tenant has no job), in percent.
    pub share_percent: f64,
    /// Load over the sum of the loads of all tenants, in percent.
    pub usage_percent: f64,
    /// Decayed usage in GPU-seconds at the `now` asked for.
    pub usage_gpu_seconds: f64,
}

/// Shares and usage fractions of the tenants of a queue at `now`: the
/// numbers of [`TenantStats`] and of the `TenantShare` reason.
pub(crate) fn shares(tenants: &[Tenant], now_ms: i64, tau: f64) -> Vec<(f64, f64)> {
    let total_weight: f64 = tenants
        .iter()
        .filter(|t| t.is_active())
        .map(|t| f64::from(t.weight))
        .sum();
    let loads: Vec<f64> = tenants.iter().map(|t| t.load(now_ms, tau)).collect();
    let total_load: f64 = loads.iter().sum();
    tenants
        .iter()
        .zip(loads)
        .map(|(t, l)| {
            let share = if t.is_active() && total_weight > 0.0 {
                100.0 * f64::from(t.weight) / total_weight
            } else {
                0.0
            };
            let usage = if total_load > 0.0 {
                100.0 * l / total_load
            } else {
                0.0
            };
            (share, usage)
        })
        .collect()
}
