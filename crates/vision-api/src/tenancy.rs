//! Tenants of a queue (weighted fair share, per-tenant limits) and
//! preemption: `spec.tenancy`, `spec.preemption` and `status.tenants` of a
//! `VisionQueue`. See docs/FAIRNESS.md for how priority, fair share and
//! preemption compose.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How a queue divides its slots and GPUs between tenants.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueTenancy {
    /// The job label whose value names a job's tenant (for a platform that
    /// submits every job from one namespace and labels each with its user or
    /// project). Unset: a job's tenant is its namespace. A job without the
    /// label belongs to the tenant named like its namespace. Read when the
    /// job is first seen; changing it applies to jobs seen from then on (and
    /// to all after an operator restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 317))]
    pub tenant_label: Option<String>,

    /// The weight of every tenant not listed in tenants. Among jobs of the
    /// same priority, free capacity goes to the tenant whose usage divided by
    /// its weight is lowest, so weights 3 and 1 give two busy tenants 75% and
    /// 25% of the queue's GPU-time. Default 1.
    #[serde(default = "default_weight")]
    #[schemars(range(min = 1, max = 1000))]
    pub default_weight: i32,

    /// Limits that apply to each tenant not listed in tenants. Unset: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_limits: Option<TenantLimits>,

    /// Tenants with their own weight or limits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub tenants: Vec<TenantSpec>,

    /// Seconds after which a tenant's past usage counts half: usage is
    /// GPU-seconds (slot-seconds for jobs without GPUs) decayed
    /// exponentially with this half-life, plus what the tenant holds now.
    /// Short: shares follow the current load; long: a tenant that used a lot
    /// recently waits longer. Default 600.
    #[serde(default = "default_half_life")]
    #[schemars(range(min = 1, max = 2_592_000))]
    pub usage_half_life_seconds: i64,
}

fn default_weight() -> i32 {
    1
}

fn default_half_life() -> i64 {
    600
}

/// The most one tenant may hold in this queue at once.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantLimits {
    /// The most jobs of the tenant admitted or running at once. Unset: only
    /// the queue's maxRunning limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100_000))]
    pub max_running: Option<i32>,

    /// The most GPUs the tenant's admitted and running jobs may use
    /// together. Unset: only the queue's maxGPUs limits.
    #[serde(rename = "maxGPUs", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1_000_000))]
    pub max_gpus: Option<i32>,
}

/// One tenant's weight and limits.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    /// The tenant: a namespace, or a value of tenantLabel.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// Its weight. Unset: defaultWeight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub weight: Option<i32>,

    /// Its limits. Unset: defaultLimits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<TenantLimits>,
}

impl QueueTenancy {
    /// The weight of `tenant`.
    pub fn weight_of(&self, tenant: &str) -> i32 {
        self.tenants
            .iter()
            .find(|t| t.name == tenant)
            .and_then(|t| t.weight)
            .unwrap_or(self.default_weight)
            .max(1)
    }

    /// The limits of `tenant`.
    pub fn limits_of(&self, tenant: &str) -> Option<TenantLimits> {
        self.tenants
            .iter()
            .find(|t| t.name == tenant)
            .and_then(|t| t.limits)
            .or(self.default_limits)
    }

    /// The tenant of a job with these namespace and labels.
    pub fn tenant_of<'a>(
        &self,
        namespace: &'a str,
        labels: Option<&'a std::collections::BTreeMap<String, String>>,
    ) -> &'a str {
        self.tenant_label
            .as_ref()
            .and_then(|l| labels.and_then(|ls| ls.get(l)))
            .map(String::as_str)
            .unwrap_or(namespace)
    }
}

/// Whether and whom a waiting job of this queue may evict.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueuePreemption {
    /// Never (default): a waiting job only ever takes free capacity.
    /// LowerPriority: a job that cannot be admitted otherwise evicts the
    /// fewest, lowest-priority, most recently started running jobs of this
    /// queue that free enough, all of strictly lower priority.
    /// LowerPriorityOrOverShare: also jobs of the same priority of a tenant
    /// that stays further above its weighted share than the waiting job's
    /// tenant. An evicted job gets SIGTERM and
    /// its algorithm's grace period, goes back to the queue in its original
    /// place (reason Preempted), spends no retry, and its next attempt is
    /// told it was preempted.
    #[serde(default)]
    pub within_queue: PreemptionPolicy,
}

/// Whom a waiting job may evict (`spec.preemption.withinQueue`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PreemptionPolicy {
    /// No preemption.
    #[default]
    Never,
    /// Only jobs of strictly lower priority.
    LowerPriority,
    /// Jobs of lower priority, and jobs of the same priority of tenants over
    /// their weighted share.
    LowerPriorityOrOverShare,
}

/// One tenant of a queue as the operator sees it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    pub name: String,
    /// Its weight.
    pub weight: i32,
    /// Jobs it holds (Admitted or Running).
    #[serde(default)]
    pub running: i32,
    /// GPUs its holders use.
    #[serde(rename = "gpusInUse", default)]
    pub gpus_in_use: i32,
    /// Its jobs waiting.
    #[serde(default)]
    pub pending: i32,
    /// Its weighted share of the queue among the tenants with jobs, in
    /// percent: its weight over the sum of their weights.
    #[serde(default)]
    pub share_percent: f64,
    /// Its part of the queue's usage (decayed GPU-time plus holdings), in
    /// percent. Above sharePercent: its jobs wait while tenants below their
    /// share have jobs of the same priority.
    #[serde(default)]
    pub usage_percent: f64,
    /// Its decayed usage in GPU-seconds (slot-seconds for jobs without
    /// GPUs) at status.usageTime. The operator restores it from here after a
    /// restart.
    #[serde(rename = "usageGPUSeconds", default)]
    pub usage_gpu_seconds: f64,
}

/// When `status.tenants[].usageGPUSeconds` was computed.
pub type UsageTime = Time;
