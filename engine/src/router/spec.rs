//! The YAML shape of `models.<name>.route`, exactly as written by the user.
//!
//! Everything here is plain data: serde checks the shape (and rejects unknown keys, so a typo
//! such as `retires:` is an error rather than silently ignored); [`crate::router::compile()`]
//! checks the meaning and turns it into a [`crate::router::Route`]. Every optional value is an
//! `Option` so that the compiler can tell "not written" from "written as the default".

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::units::Dur;

/// A route: a strategy over children, plus (top level only) the policies of the whole route.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    #[serde(default)]
    pub strategy: StrategySpec,
    #[serde(default)]
    pub targets: Vec<ChildSpec>,
    pub retry: Option<RetrySpec>,
    pub fallback: Option<FallbackSpec>,
    pub timeouts: Option<TimeoutsSpec>,
    pub breaker: Option<BreakerSpec>,
    pub hedge: Option<HedgeSpec>,
    pub affinity: Option<AffinitySpec>,
    pub latency: Option<LatencySpec>,
    pub health_check: Option<HealthCheckSpec>,
}

/// `health_check:` active probes of every target of the route.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSpec {
    /// Between two probes of a target (default 10s, at least 100ms).
    pub interval: Option<Dur>,
    /// A probe's longest wait for its answer (default 2s).
    pub timeout: Option<Dur>,
    /// GET this path under each provider's base URL (default `/models`).
    pub path: Option<String>,
}

/// How a route chooses among its children.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StrategySpec {
    /// In order (by `priority`): the root's children are the fallback groups.
    #[default]
    #[serde(alias = "priority")]
    Fallback,
    Weighted,
    Latency,
    LeastBusy,
    Usage,
    Cost,
    Conditional,
    Affinity,
}

/// One child of a route: exactly one of `target` or `route`, plus per-child settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChildSpec {
    /// `provider/model`; the model part may itself contain `/`.
    pub target: Option<String>,
    pub route: Option<Box<RouteSpec>>,
    pub weight: Option<u32>,
    pub priority: Option<i32>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub price: Option<PriceSpec>,
    pub params: Option<Map<String, Value>>,
    pub headers: Option<BTreeMap<String, String>>,
    pub when: Option<Map<String, Value>>,
}

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceSpec {
    pub input: f64,
    pub output: f64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    pub attempts: Option<u32>,
    pub backoff: Option<Dur>,
    pub max_backoff: Option<Dur>,
    pub budget: Option<Dur>,
    pub on_status: Option<Vec<u16>>,
    pub on_connection_error: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackSpec {
    pub on_status: Option<Vec<u16>>,
    /// Index of the fallback group to jump to when the prompt does not fit the context window.
    pub context_window: Option<usize>,
    /// Index of the fallback group to jump to when the provider refuses the content.
    pub content_policy: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsSpec {
    pub connect: Option<Dur>,
    pub attempt: Option<Dur>,
    pub first_token: Option<Dur>,
    pub idle: Option<Dur>,
    pub total: Option<Dur>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSpec {
    pub failure_rate: Option<f64>,
    pub min_requests: Option<u32>,
    pub window: Option<Dur>,
    pub cooldown: Option<Dur>,
    pub max_cooldown: Option<Dur>,
    pub probes: Option<u32>,
    pub on_auth_error: Option<bool>,
    pub sla: Option<SlaSpec>,
    pub cool_last: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaSpec {
    pub first_token: Option<Dur>,
    pub per_token: Option<Dur>,
}

/// `after` is a percentile of the observed latency (`p95`) or a fixed duration (`300ms`);
/// kept as text here because the two forms share one key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HedgeSpec {
    pub after: String,
}

/// Where the affinity key comes from: a request header, or the body's `user` field.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AffinitySpec {
    pub header: Option<String>,
    pub user: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencySpec {
    pub equal_within: Option<f64>,
    pub min_samples: Option<u32>,
}
