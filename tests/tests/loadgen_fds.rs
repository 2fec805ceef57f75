//! Regression: a load-generator run must close every socket it opened, even with requests still
//! in flight when it ends (monoio never drops tasks parked at runtime shutdown). Its own test
//! binary, because it counts the process's file descriptors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bench_harness::mock::Knobs;
use e2e::mock;
use engine::rt::DriverKind;
use loadgen::{Mix, Mode, Plan, RequestSpec, Target};

const CHAT: &str = r#"{"model":"m","messages":[]}"#;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn a_run_leaves_no_sockets_behind() {
    // Answers take 2 s; the run stops after 0.3 s with requests in flight.
    let before = open_fds();
    let m = mock(Knobs { latency: Duration::from_secs(2), ..Knobs::default() });
    let mode = Mode::Open { rate: 500.0, poisson: false, max_connections: 50 };
    let target = Target::parse(&format!("http://{}/v1/chat/completions", m.addr()), None).unwrap();
    let spec = RequestSpec { body: Some(bytes::Bytes::from(CHAT)), weight: 1, ..RequestSpec::default() };
    let mut p = Plan {
        mix: Mix::single(&target, spec).unwrap(),
        target,
        mode,
        duration: Duration::from_millis(300),
        warmup: Duration::ZERO,
        max_requests: None,
        workers: 1,
        cores: Vec::new(),
        driver: DriverKind::Epoll,
        timeout: Duration::from_secs(10),
        max_in_flight: 10_000,
    };
    p.timeout = Duration::from_millis(200);
    let r = loadgen::run(&p).unwrap();
    assert!(r.errors.get("timeout").copied().unwrap_or(0) > 0, "{:?}", r.errors);
    // The mock (in this process) still holds its side of each connection while it sleeps.
    m.stop();
    let after = open_fds();
    let list: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.display().to_string())
        .collect();
    assert!(after <= before + 2, "fds before {before}, after {after}: {list:?}");
}
