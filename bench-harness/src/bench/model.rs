//! The benchmark report's data: what `shardgate-bench run` measures and writes as JSON, and what
//! the Markdown and SVG renderers read.

use serde::{Deserialize, Serialize};

/// Where and how the run happened, stamped on every output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunMeta {
    /// `YYYY-MM-DD` (UTC).
    pub date: String,
    /// RFC 3339 start time (UTC).
    pub started_at: String,
    /// The exact command line.
    pub command: String,
    /// `git rev-parse HEAD`, or "unknown".
    pub commit: String,
    /// The working tree had uncommitted changes.
    pub dirty: bool,
    /// `uname -r`.
    pub kernel: String,
    pub cpu_model: String,
    pub cpus: usize,
    pub memory_gib: f64,
    /// How the gateway's 1 GiB cap was applied, or why it could not be.
    pub memory_cap: String,
    pub gateway_core: usize,
    pub mock_core: usize,
    pub loadgen_core: usize,
    pub quick: bool,
    pub repetitions: usize,
    /// Measured seconds per measurement (after warm-up).
    pub duration_s: f64,
    pub warmup_s: f64,
    pub versions: Vec<(String, String)>,
}

/// A figure measured several times: its median, spread and samples (one per repetition).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub samples: Vec<f64>,
}

impl Stat {
    pub fn of(samples: Vec<f64>) -> Option<Stat> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
        Some(Stat { median, min: sorted[0], max: sorted[n - 1], samples })
    }
}

/// Latency percentiles, microseconds, each over the repetitions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub p50: Stat,
    pub p90: Stat,
    pub p99: Stat,
    pub p99_9: Stat,
}

/// One offered rate (open loop).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RatePoint {
    pub offered_rps: f64,
    pub achieved_rps: Stat,
    /// From the intended send time (coordinated-omission free).
    pub latency_us: Percentiles,
    /// From the first byte written (the load generator's schedule lag removed).
    pub service_us: Percentiles,
    /// `service_us` minus the baseline's at the same rate, percentile by percentile, per
    /// repetition (the baseline's run of the same repetition), then summarised.
    pub added_us: Option<Percentiles>,
    /// Failed requests plus non-2xx answers, summed over the repetitions.
    pub errors: u64,
}

/// The kind of target a scenario loads.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ScenarioKind {
    /// Straight to the mock provider: what everything is compared with.
    Baseline,
    /// Through shardgate.
    Gateway,
    /// Through shardgate with governance on: a virtual key, rate limits and budgets.
    Governed,
    /// Through shardgate to a provider of another dialect: OpenAI in, Anthropic out and back.
    Translated,
    /// Through shardgate to a `route:` model: nested strategies, retries and breakers
    /// configured but not firing.
    Routed,
    /// Through shardgate with a 1 KiB prompt and no guardrails: what `Guarded` is compared with.
    Prompt1k,
    /// Through shardgate with a 1 KiB prompt and guardrails on both phases: secrets and
    /// injection validating, PII redacting.
    Guarded,
    /// Through a reference proxy (nginx).
    Reference,
    /// MCP `tools/call` through a virtual server, compared with the same call straight to the
    /// MCP server.
    Mcp,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScenarioResult {
    pub name: String,
    pub description: String,
    pub kind: ScenarioKind,
    /// Runtime driver of the gateway, when it is one.
    pub driver: Option<String>,
    /// Closed loop, requests/s.
    pub max_throughput_rps: Option<Stat>,
    /// The highest offered rate whose median p99 added latency stayed ≤ 1 ms (and no errors).
    pub throughput_at_slo_rps: Option<f64>,
    pub rates: Vec<RatePoint>,
    /// Streams: time to first token minus the baseline's, microseconds.
    pub ttft_overhead_us: Option<Percentiles>,
    /// Streams: time to first token, microseconds.
    pub ttft_us: Option<Percentiles>,
    pub idle_rss_mb: Option<f64>,
    pub peak_rss_mb: Option<f64>,
    /// CPU time of the process under test per answered request, during the max-throughput runs.
    pub cpu_us_per_request: Option<Stat>,
    /// Max throughput over the baseline's.
    pub ratio_to_baseline: Option<f64>,
    /// Max throughput over nginx's, measured in the same run.
    pub ratio_to_nginx: Option<f64>,
    pub errors: u64,
    pub notes: Vec<String>,
}

/// A published target and whether this run met it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TargetCheck {
    pub name: String,
    /// e.g. ">= 0.9x nginx req/s"
    pub goal: String,
    /// The measured value, in `unit`.
    pub value: Option<f64>,
    pub unit: String,
    /// None when it could not be measured in this run.
    pub met: Option<bool>,
    /// How far off, or why unmeasured.
    pub note: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BenchReport {
    pub meta: RunMeta,
    pub scenarios: Vec<ScenarioResult>,
    pub targets: Vec<TargetCheck>,
}

#[cfg(test)]
mod tests {
    use super::Stat;

    #[test]
    fn stat_median_and_spread() {
        let s = Stat::of(vec![3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Stat::of(vec![4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert!(Stat::of(vec![]).is_none());
    }
}
