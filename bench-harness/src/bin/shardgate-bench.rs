//! `shardgate-bench run [scenario...]`: the 1 vCPU / 1 GiB benchmark with one command.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bench_harness::bench::runner::{self, Options};
use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "shardgate-bench", version, about = "shardgate's benchmark harness")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the benchmark: the gateway pinned to one core inside a 1 GiB cgroup, the mock and
    /// the load generator on the other core. Scenario groups: passthrough, governed,
    /// translated, routed, guarded, nginx, streaming, mcp, open-streams (default: all). Build first:
    /// `cargo build --release --bins`.
    Run {
        scenarios: Vec<String>,
        /// Under a minute, sanity only (CI's smoke test): never a speed threshold.
        #[arg(long)]
        quick: bool,
        /// Repetitions, interleaved across scenarios.
        #[arg(long)]
        repetitions: Option<usize>,
        /// Measured time per measurement.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// Offered rates for the latency tables (req/s, comma-separated).
        #[arg(long, value_delimiter = ',')]
        rates: Vec<f64>,
        /// Concurrent streams for the memory scenario.
        #[arg(long)]
        open_streams: Option<usize>,
        /// Where to write the results.
        #[arg(long, default_value = "results")]
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        gateway_core: usize,
        #[arg(long, default_value_t = 1)]
        mock_core: usize,
        #[arg(long, default_value_t = 1)]
        loadgen_core: usize,
    },
}

fn main() -> ExitCode {
    engine::cli::init_stderr_logging(false);
    let Command::Run {
        scenarios,
        quick,
        repetitions,
        duration,
        rates,
        open_streams,
        out,
        gateway_core,
        mock_core,
        loadgen_core,
    } = Cli::parse().command;
    let mut o = if quick { Options::quick() } else { Options::full() };
    o.only = scenarios;
    o.command = std::env::args().collect::<Vec<_>>().join(" ");
    if let Some(r) = repetitions {
        o.repetitions = r.max(1);
    }
    if let Some(d) = duration {
        o.duration = d;
    }
    if !rates.is_empty() {
        o.rates = rates;
    }
    if let Some(n) = open_streams {
        o.open_streams = n;
    }
    (o.gateway_core, o.mock_core, o.loadgen_core) = (gateway_core, mock_core, loadgen_core);
    let report = match runner::run(&o) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "shardgate-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let written = match runner::write(&report, &out) {
        Ok(w) => w,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "shardgate-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    for t in &report.targets {
        let _ = writeln!(
            stdout,
            "{:<28} {:<32} {:>10} {}",
            t.name,
            t.goal,
            t.value.map_or("—".to_string(), |v| format!("{v:.2} {}", t.unit)),
            match t.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "not measured",
            }
        );
    }
    for p in written {
        let _ = writeln!(stdout, "wrote {}", p.display());
    }
    // Quick mode is CI's smoke test: it fails on broken plumbing, never on speed.
    if quick {
        let broken: Vec<String> = report
            .scenarios
            .iter()
            .filter(|s| s.errors > 0 || s.max_throughput_rps.as_ref().is_some_and(|m| m.median <= 0.0))
            .map(|s| format!("{} ({} errors)", s.name, s.errors))
            .collect();
        if report.scenarios.is_empty() || !broken.is_empty() {
            let _ = writeln!(std::io::stderr(), "shardgate-bench --quick: implausible results: {}", broken.join(", "));
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
