//! The result of a run: JSON for machines (full percentile spectrum, errors by status and kind,
//! intended vs achieved rate) and a table for people.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::recorder::{Distribution, Recorder};
use crate::run::{Mode, Plan};

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub target: String,
    /// `open` or `closed`.
    pub mode: &'static str,
    /// Open loop: the intended arrival rate (req/s).
    pub intended_rate: Option<f64>,
    pub poisson: bool,
    /// Closed loop: the loops; open loop: the most connections.
    pub connections: usize,
    pub workers: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    /// Sent, warm-up included.
    pub sent: u64,
    pub warmup_requests: u64,
    /// Answered within the measured window (any status).
    pub completed: u64,
    /// Answered 2xx.
    pub ok: u64,
    /// Answered per second of measured time.
    pub achieved_rate: f64,
    pub ok_rate: f64,
    pub statuses: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    /// (non-2xx answers + failures) / (answers + failures), measured window.
    pub error_rate: f64,
    /// From the intended send time to the last byte (coordinated-omission free).
    pub latency_us: Option<Distribution>,
    /// From the first byte written to the last byte read.
    pub service_us: Option<Distribution>,
    pub ttfb_us: Option<Distribution>,
    pub ttft_us: Option<Distribution>,
    pub itl_us: Option<Distribution>,
    /// How late requests left against their schedule: the load generator's own health.
    pub schedule_lag_us: Option<Distribution>,
    pub stream_tokens_per_sec: Option<Distribution>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub bytes_received: u64,
}

impl Report {
    pub fn new(plan: &Plan, r: &Recorder) -> Report {
        let secs = plan.duration.as_secs_f64().max(f64::MIN_POSITIVE);
        let (mode, intended_rate, poisson, connections) = match plan.mode {
            Mode::Open { rate, poisson, max_connections } => ("open", Some(rate), poisson, max_connections),
            Mode::Closed { connections } => ("closed", None, false, connections),
        };
        let completed = r.completed();
        let ok = r.ok();
        let failures: u64 = r.errors.values().sum();
        let attempts = completed + failures;
        Report {
            tool: "shardgate-loadgen",
            version: env!("CARGO_PKG_VERSION"),
            target: format!("{}://{}{}", plan.target.scheme.as_str(), plan.target.host_header, plan.target.path),
            mode,
            intended_rate,
            poisson,
            connections,
            workers: plan.workers,
            duration_s: plan.duration.as_secs_f64(),
            warmup_s: plan.warmup.as_secs_f64(),
            sent: r.sent,
            warmup_requests: r.warmup_requests,
            completed,
            ok,
            achieved_rate: completed as f64 / secs,
            ok_rate: ok as f64 / secs,
            statuses: r.statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            errors: r.errors.iter().map(|(k, v)| (k.label().to_string(), *v)).collect(),
            error_rate: if attempts == 0 { 0.0 } else { (attempts - ok) as f64 / attempts as f64 },
            latency_us: Distribution::of(&r.latency),
            service_us: Distribution::of(&r.service),
            ttfb_us: Distribution::of(&r.ttfb),
            ttft_us: Distribution::of(&r.ttft),
            itl_us: Distribution::of(&r.itl),
            schedule_lag_us: Distribution::of(&r.schedule_lag),
            stream_tokens_per_sec: Distribution::of(&r.stream_tokens_per_sec),
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            bytes_received: r.bytes_received,
        }
    }

    /// A table for a terminal.
    pub fn human(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "target      {}", self.target);
        match self.intended_rate {
            Some(rate) => {
                let _ = writeln!(
                    o,
                    "load        open loop, {rate:.0} req/s intended ({}), up to {} connections, {} worker(s)",
                    if self.poisson { "Poisson" } else { "constant" },
                    self.connections,
                    self.workers
                );
            }
            None => {
                let _ = writeln!(
                    o,
                    "load        closed loop, {} connections, {} worker(s)",
                    self.connections, self.workers
                );
            }
        }
        let _ = writeln!(o, "time        {:.1}s measured after {:.1}s warm-up", self.duration_s, self.warmup_s);
        let _ = writeln!(
            o,
            "requests    {} answered ({} 2xx), {:.1} req/s achieved, error rate {:.3}%",
            self.completed,
            self.ok,
            self.achieved_rate,
            self.error_rate * 100.0
        );
        if !self.errors.is_empty() || self.statuses.keys().any(|k| !k.starts_with('2')) {
            let statuses: Vec<String> = self.statuses.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            let errors: Vec<String> = self.errors.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            let _ = writeln!(o, "            statuses [{}] errors [{}]", statuses.join(" "), errors.join(" "));
        }
        let _ = writeln!(
            o,
            "\n{:<22}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
            "(µs)", "min", "p50", "p90", "p99", "p99.9", "max", "mean"
        );
        for (name, d) in [
            ("latency (intended)", &self.latency_us),
            ("service", &self.service_us),
            ("time to first byte", &self.ttfb_us),
            ("time to first token", &self.ttft_us),
            ("inter-token", &self.itl_us),
            ("schedule lag", &self.schedule_lag_us),
        ] {
            if let Some(d) = d {
                let _ = writeln!(
                    o,
                    "{name:<22}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10.0}",
                    d.min, d.p50, d.p90, d.p99, d.p99_9, d.max, d.mean
                );
            }
        }
        if let Some(t) = &self.stream_tokens_per_sec {
            let _ = writeln!(
                o,
                "\nstreams     {} tokens/s per stream (p50), {} completion tokens in all",
                t.p50, self.completion_tokens
            );
        } else if self.completion_tokens > 0 {
            let _ = writeln!(o, "\ntokens      {} prompt, {} completion", self.prompt_tokens, self.completion_tokens);
        }
        o
    }
}
