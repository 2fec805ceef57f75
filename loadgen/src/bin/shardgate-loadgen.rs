//! `shardgate-loadgen`: see the crate docs, or `--help`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use engine::rt::{DriverKind, DriverRequest, UringFlags};
use loadgen::{Mix, Mode, Plan, RequestSpec, Search, Target};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load any HTTP endpoint: open loop (fixed arrival rate, latency from the intended send time),
/// closed loop (N connections as fast as they go), or an SLO search. Event streams are timed per
/// token. Results as a table and as JSON.
#[derive(Parser, Debug)]
#[command(name = "shardgate-loadgen", version)]
struct Args {
    /// Target URL, e.g. http://127.0.0.1:8080/v1/chat/completions
    url: String,
    /// Method (default POST with a body, GET without).
    #[arg(short = 'X', long)]
    method: Option<String>,
    /// Request header `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Request body.
    #[arg(short, long, conflicts_with_all = ["body_file", "mix"])]
    body: Option<String>,
    /// Request body from a file.
    #[arg(long, conflicts_with = "mix")]
    body_file: Option<PathBuf>,
    /// A JSONL mix: one request per line, `{"body": {...}, "weight": 3, "path": "/v1/...",
    /// "headers": {...}, "label": "..."}`.
    #[arg(long)]
    mix: Option<PathBuf>,
    /// Open loop at this many requests per second (default: closed loop).
    #[arg(short, long)]
    rate: Option<f64>,
    /// Open loop: Poisson arrivals instead of constant spacing.
    #[arg(long)]
    poisson: bool,
    /// Closed loop: concurrent loops (default 64). Open loop: most connections (default 256).
    #[arg(short, long)]
    connections: Option<usize>,
    /// Search the highest open-loop rate whose percentile stays under --slo.
    #[arg(long)]
    search: bool,
    #[arg(long, default_value_t = 1000.0)]
    start: f64,
    #[arg(long, default_value_t = 1000.0)]
    step: f64,
    #[arg(long, default_value_t = 100_000.0)]
    max: f64,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1ms")]
    slo: Duration,
    #[arg(long, default_value_t = 99.0)]
    percentile: f64,
    /// Measured time (per search step too).
    #[arg(short, long, value_parser = humantime::parse_duration, default_value = "10s")]
    duration: Duration,
    /// Warm-up, excluded from the results.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    warmup: Duration,
    /// Stop after this many requests (warm-up included).
    #[arg(short = 'n', long)]
    requests: Option<u64>,
    /// Worker threads (one runtime each).
    #[arg(short, long, default_value_t = 1)]
    workers: usize,
    /// Pin workers to these CPUs, e.g. `1` or `2,3`.
    #[arg(long, value_delimiter = ',')]
    cores: Vec<usize>,
    /// Runtime driver: auto, uring, epoll.
    #[arg(long, default_value = "auto")]
    driver: String,
    /// Per-request timeout.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    timeout: Duration,
    /// Open loop: requests due but unanswered per worker beyond which new ones are skipped.
    #[arg(long, default_value_t = 50_000)]
    max_in_flight: usize,
    /// Extra CA certificates (PEM) for HTTPS targets.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Write the JSON report here (`-` for stdout).
    #[arg(long)]
    json: Option<PathBuf>,
    /// No table on stdout.
    #[arg(short, long)]
    quiet: bool,
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "shardgate-loadgen: {msg}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let a = Args::parse();
    // One descriptor per connection: use all the hard limit allows.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let target = match Target::parse(&a.url, a.ca.as_deref()) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let mut headers = Vec::new();
    for h in &a.headers {
        match h.split_once(':') {
            Some((n, v)) => headers.push((n.trim().to_string(), v.trim().to_string())),
            None => return fail(format!("header {h:?} is not `Name: value`")),
        }
    }
    let mix = if let Some(path) = &a.mix {
        match std::fs::read_to_string(path) {
            Ok(text) => Mix::from_jsonl(&target, &text, &headers),
            Err(e) => return fail(format!("{}: {e}", path.display())),
        }
    } else {
        let body = match (&a.body, &a.body_file) {
            (Some(b), _) => Some(Bytes::from(b.clone())),
            (None, Some(p)) => match std::fs::read(p) {
                Ok(b) => Some(Bytes::from(b)),
                Err(e) => return fail(format!("{}: {e}", p.display())),
            },
            (None, None) => None,
        };
        Mix::single(
            &target,
            RequestSpec { method: a.method.clone(), headers, body, weight: 1, ..RequestSpec::default() },
        )
    };
    let mix = match mix {
        Ok(m) => m,
        Err(e) => return fail(e),
    };
    let request = match a.driver.as_str() {
        "auto" => DriverRequest::Auto,
        "uring" => DriverRequest::Uring,
        "epoll" => DriverRequest::Epoll,
        other => return fail(format!("unknown driver {other:?}")),
    };
    let driver = match DriverKind::resolve(request, UringFlags::DeferTaskrun) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    let mode = match a.rate {
        Some(rate) if rate > 0.0 => {
            Mode::Open { rate, poisson: a.poisson, max_connections: a.connections.unwrap_or(256) }
        }
        Some(_) => return fail("--rate must be positive"),
        None => Mode::Closed { connections: a.connections.unwrap_or(64) },
    };
    let plan = Plan {
        target,
        mix,
        mode,
        duration: a.duration,
        warmup: a.warmup,
        max_requests: a.requests,
        workers: a.workers.max(1),
        cores: a.cores.clone(),
        driver,
        timeout: a.timeout,
        max_in_flight: a.max_in_flight.max(1),
    };
    let (json, table) = if a.search {
        let s = Search { start: a.start, step: a.step, max: a.max, percentile: a.percentile, slo: a.slo };
        match loadgen::search(&plan, s) {
            Ok(r) => {
                let mut t = String::new();
                for step in &r.steps {
                    t.push_str(&format!(
                        "{:>10.0} req/s  p{} {:>8} µs  {}\n",
                        step.rate,
                        r.percentile,
                        step.percentile_us,
                        if step.passed { "ok" } else { "over the SLO" }
                    ));
                }
                match r.max_rate_within_slo {
                    Some(best) => t.push_str(&format!(
                        "highest rate within p{} <= {} µs: {best:.0} req/s\n",
                        r.percentile, r.slo_us
                    )),
                    None => t.push_str("no rate met the SLO\n"),
                }
                (serde_json::to_string_pretty(&r), t)
            }
            Err(e) => return fail(e),
        }
    } else {
        match loadgen::run(&plan) {
            Ok(r) => (serde_json::to_string_pretty(&r), r.human()),
            Err(e) => return fail(e),
        }
    };
    let json = match json {
        Ok(j) => j,
        Err(e) => return fail(e),
    };
    let mut out = std::io::stdout().lock();
    if !a.quiet {
        let _ = write!(out, "{table}");
    }
    match a.json.as_deref() {
        Some(p) if p.as_os_str() == "-" => {
            let _ = writeln!(out, "{json}");
        }
        Some(p) => {
            if let Err(e) = std::fs::write(p, json) {
                return fail(format!("{}: {e}", p.display()));
            }
        }
        None => {}
    }
    ExitCode::SUCCESS
}
