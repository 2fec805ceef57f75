//! Helpers for end-to-end tests: start the real gateway (in-process, or as a process) and the
//! mock provider on free loopback ports, talk raw HTTP/1.1 to them over real sockets, and make
//! a throwaway CA for TLS.
//!
//! Helpers panic on failure: they are test code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

pub mod client;
pub mod process;
pub mod tls;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bench_harness::mock::{Knobs, MockOptions, MockServer};
use engine::config::ConfigSource;
use engine::rt::DriverRequest;
#[cfg(feature = "runtime-glommio")]
use engine::rt::RuntimeRequest;
use engine::{Gateway, StartOptions};

pub use client::{Client, Response};
pub use process::GatewayProcess;

/// The runtimes every end-to-end case runs on: monoio with each driver, and glommio when the
/// `runtime-glommio` feature is on. A difference in behaviour between them is a bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Epoll,
    Uring,
    #[cfg(feature = "runtime-glommio")]
    Glommio,
}

/// Generates one `#[test]` per runtime from a `fn(Runtime)` case.
#[macro_export]
macro_rules! on_both_drivers {
    ($($case:ident),* $(,)?) => {
        mod epoll {
            $(#[test] fn $case() { super::$case($crate::Runtime::Epoll) })*
        }
        mod uring {
            $(#[test] fn $case() { super::$case($crate::Runtime::Uring) })*
        }
        #[cfg(feature = "runtime-glommio")]
        mod glommio {
            $(#[test] fn $case() { super::$case($crate::Runtime::Glommio) })*
        }
    };
}

/// A mock provider on a free port with these knobs (epoll, one shard).
pub fn mock(knobs: Knobs) -> MockServer {
    MockServer::start(MockOptions { knobs, ..MockOptions::for_tests() }).expect("mock provider starts")
}

/// A mock provider on a free port with default knobs.
pub fn default_mock() -> MockServer {
    mock(Knobs::default())
}

/// Config YAML routing model `m` (and alias `alias-m`, and `up/*`) to an OpenAI-compatible
/// provider at `upstream`, with `extra` (e.g. a `server:` section) put first. The `models:`
/// section comes last, so appending `  name: {target: ...}` lines adds models.
pub fn config_for(upstream: SocketAddr, extra: &str) -> String {
    format!(
        "{extra}providers:\n  up:\n    kind: openai-compatible\n    base_url: http://{upstream}/v1\n    api_key: sk-upstream-secret\n    passthrough: ['/v1/responses*', '/v1/files*']\n    timeouts: {{connect: 2s, first_byte: 2s, idle: 2s}}\n  local-mock: {{kind: mock}}\nmodels:\n  m: {{target: up/upstream-m}}\n  same: {{target: up/same}}\n  alias-m: {{target: up/upstream-m}}\n  'up/*': {{target: 'up/*'}}\n  mock: {{target: local-mock/mock-1}}\n"
    )
}

/// Starts the gateway in-process on a free port with `yaml`, one unpinned shard.
pub fn gateway(yaml: &str, runtime: Runtime) -> Gateway {
    gateway_with(ConfigSource::Text { name: "test.yaml".into(), yaml: yaml.into() }, runtime, 1)
}

/// Starts the gateway in-process from any config source.
pub fn gateway_with(source: ConfigSource, runtime: Runtime, shards: usize) -> Gateway {
    let mut opts = StartOptions::new(source);
    opts.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    opts.shards = std::num::NonZeroUsize::new(shards);
    opts.pin_cores = Some(false);
    let expected = match runtime {
        Runtime::Epoll => {
            opts.driver = Some(DriverRequest::Epoll);
            "epoll"
        }
        Runtime::Uring => {
            opts.driver = Some(DriverRequest::Uring);
            "io_uring"
        }
        #[cfg(feature = "runtime-glommio")]
        Runtime::Glommio => {
            opts.runtime = Some(RuntimeRequest::Glommio);
            "glommio"
        }
    };
    let g = Gateway::start(opts).expect("gateway starts");
    assert_eq!(g.backend().label(), expected, "the requested runtime is the one running");
    g
}

/// Polls `cond` every few milliseconds until it holds or `within` passes.
pub fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A fresh temporary directory (removed on drop).
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// Reads one metric's value (the first sample whose line starts with `series`).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Waits (up to two seconds) for a metric to reach `value`, then asserts it.
pub fn wait_metric(gw: &Gateway, series: &str, value: f64) {
    let mut last = None;
    let reached = eventually(Duration::from_secs(2), || {
        last = metric(&gw.metrics_text(), series);
        last == Some(value)
    });
    assert!(reached, "{series} is {last:?}, expected {value}");
}

/// A load-generator plan for tests: one worker, unpinned, epoll, 200 ms warm-up.
pub fn loadgen_plan(
    url: &str,
    body: &str,
    headers: &[(&str, &str)],
    mode: loadgen::Mode,
    duration: Duration,
) -> loadgen::Plan {
    let target = loadgen::Target::parse(url, None).expect("target URL");
    let spec = loadgen::RequestSpec {
        body: Some(bytes::Bytes::from(body.to_string())),
        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        weight: 1,
        ..loadgen::RequestSpec::default()
    };
    loadgen::Plan {
        mix: loadgen::Mix::single(&target, spec).expect("request mix"),
        target,
        mode,
        duration,
        warmup: Duration::from_millis(200),
        max_requests: None,
        workers: 1,
        cores: Vec::new(),
        driver: engine::rt::DriverKind::Epoll,
        timeout: Duration::from_secs(10),
        max_in_flight: 10_000,
    }
}
