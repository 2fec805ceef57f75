//! Regression: a load-generator run must close every socket it opened, even with requests still
//! in flight when it ends (monoio never drops tasks parked at runtime shutdown). Its own test
//! binary, because it counts the process's file descriptors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bench_harness::mock::Knobs;
use e2e::mock;
use loadgen::Mode;

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
    let mut p = e2e::loadgen_plan(
        &format!("http://{}/v1/chat/completions", m.addr()),
        CHAT,
        &[],
        mode,
        Duration::from_millis(300),
    );
    p.warmup = Duration::ZERO;
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
