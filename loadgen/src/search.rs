//! SLO search: step the open-loop rate up and report the highest rate whose chosen percentile
//! stays under the SLO (with under 1% errors and nothing skipped).

use std::time::Duration;

use serde::Serialize;

use crate::report::Report;
use crate::run::{Mode, Plan, run};

/// How to step.
#[derive(Debug, Clone, Copy)]
pub struct Search {
    pub start: f64,
    pub step: f64,
    pub max: f64,
    /// 0-100.
    pub percentile: f64,
    pub slo: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub rate: f64,
    pub percentile_us: u64,
    pub passed: bool,
    pub report: Report,
}

#[derive(Debug, Clone, Serialize)]
pub struct SearchReport {
    pub percentile: f64,
    pub slo_us: u64,
    /// The highest rate that passed, if any did.
    pub max_rate_within_slo: Option<f64>,
    pub steps: Vec<Step>,
}

/// Runs `plan` (its mode's connection budget is kept) at increasing rates until a step fails.
pub fn search(plan: &Plan, s: Search) -> Result<SearchReport, String> {
    let max_connections = match plan.mode {
        Mode::Open { max_connections, .. } => max_connections,
        Mode::Closed { connections } => connections,
    };
    let poisson = matches!(plan.mode, Mode::Open { poisson: true, .. });
    let slo_us = u64::try_from(s.slo.as_micros()).unwrap_or(u64::MAX);
    let mut steps = Vec::new();
    let mut best = None;
    let mut rate = s.start;
    while rate <= s.max + f64::EPSILON {
        let mut p = plan.clone();
        p.mode = Mode::Open { rate, poisson, max_connections };
        let report = run(&p)?;
        let value = report.latency_us.as_ref().map_or(u64::MAX, |d| d.at(s.percentile));
        let skipped = report.errors.get("skipped").copied().unwrap_or(0);
        let passed = value <= slo_us && report.error_rate < 0.01 && skipped == 0 && report.completed > 0;
        steps.push(Step { rate, percentile_us: value, passed, report });
        if !passed {
            break;
        }
        best = Some(rate);
        rate += s.step.max(1.0);
    }
    Ok(SearchReport { percentile: s.percentile, slo_us, max_rate_within_slo: best, steps })
}
