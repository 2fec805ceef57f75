//! `shardgate-mock`: the OpenAI-dialect mock provider as a standalone server.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use bench_harness::mock::{Fault, Knobs, MockOptions, MockServer};
use clap::Parser;
use engine::rt::{Backend, DriverKind, DriverRequest, UringFlags};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An OpenAI-dialect mock provider with latency, token-rate, size and fault knobs. Every knob
/// can also be set per request with an `x-mock-*` header (see the crate docs).
#[derive(Parser, Debug)]
#[command(name = "shardgate-mock", version)]
struct Args {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Shards (threads).
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Runtime driver: auto, uring or epoll.
    #[arg(long, default_value = "auto")]
    driver: String,
    /// Pin shard threads to cores.
    #[arg(long)]
    pin: bool,
    /// Wait before the response head (e.g. 50ms).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    latency: Duration,
    /// Streams: wait before the first token.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    ttft: Duration,
    /// Streams: tokens per second (default: as fast as possible).
    #[arg(long)]
    tokens_per_sec: Option<f64>,
    /// Completion tokens per answer (chunks per stream).
    #[arg(long, default_value_t = 16)]
    tokens: usize,
    /// Bytes per token (shapes the answer size).
    #[arg(long)]
    token_bytes: Option<usize>,
    /// Fault: status:N, timeout, drop:N, malformed, garbage, reset.
    #[arg(long)]
    fault: Option<String>,
    /// Share of requests that get the fault (0..1).
    #[arg(long, default_value_t = 1.0)]
    fault_rate: f64,
    /// Only the first N requests (of each shard) may get the fault; then the mock heals.
    #[arg(long)]
    fault_first: Option<u64>,
}

fn main() -> ExitCode {
    engine::cli::init_stderr_logging(false);
    let args = Args::parse();
    let request = match args.driver.as_str() {
        "auto" => DriverRequest::Auto,
        "uring" => DriverRequest::Uring,
        "epoll" => DriverRequest::Epoll,
        other => {
            tracing::error!("unknown driver {other:?}: use auto, uring or epoll");
            return ExitCode::from(2);
        }
    };
    let driver = match DriverKind::resolve(request, UringFlags::DeferTaskrun) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    let fault = match args.fault.as_deref().map(Fault::parse).transpose() {
        Ok(f) => f,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    let opts = MockOptions {
        listen: args.listen,
        shards: args.shards,
        backend: Backend::Monoio(driver),
        pin: args.pin,
        tls: None,
        knobs: Knobs {
            latency: args.latency,
            ttft: args.ttft,
            tokens_per_sec: args.tokens_per_sec,
            tokens: args.tokens,
            token_bytes: args.token_bytes,
            fault,
            fault_rate: args.fault_rate,
            fault_first: args.fault_first,
        },
    };
    let mut signals =
        match signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT]) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
    let server = match MockServer::start(opts) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(listen = %server.addr(), %driver, "shardgate-mock serving");
    let _ = signals.forever().next();
    server.stop();
    ExitCode::SUCCESS
}
