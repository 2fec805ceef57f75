//! The load generator against the mock provider over real sockets: counts, rates, stream
//! timings, and the property that matters most: open-loop latency counts the time a request
//! waited for a connection (no coordinated omission).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bench_harness::mock::Knobs;
use e2e::mock;
use loadgen::{Mix, Mode, RequestSpec, Target};

use e2e::loadgen_plan as plan;

const CHAT: &str = r#"{"model":"m","messages":[]}"#;

fn url(m: &bench_harness::mock::MockServer) -> String {
    format!("http://{}/v1/chat/completions", m.addr())
}

#[test]
fn closed_loop_counts_everything() {
    let m = mock(Knobs { tokens: 7, ..Knobs::default() });
    let r =
        loadgen::run(&plan(&url(&m), CHAT, &[], Mode::Closed { connections: 4 }, Duration::from_millis(600))).unwrap();
    assert!(r.completed > 50, "{}", r.completed);
    assert_eq!((r.ok, r.error_rate), (r.completed, 0.0));
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.completion_tokens, r.completed * 7, "usage read from every answer");
    assert!(r.service_us.as_ref().unwrap().p50 > 0);
    assert!(r.warmup_requests > 0, "warm-up ran and was excluded");
}

#[test]
fn open_loop_holds_its_rate() {
    let m = mock(Knobs::default());
    let mode = Mode::Open { rate: 400.0, poisson: false, max_connections: 16 };
    let r = loadgen::run(&plan(&url(&m), CHAT, &[], mode, Duration::from_secs(1))).unwrap();
    assert!((380..=420).contains(&r.completed), "{} in 1 s at 400/s", r.completed);
    assert!((r.achieved_rate - 400.0).abs() < 20.0, "{}", r.achieved_rate);
    // The ticker releases requests close to their time.
    assert!(r.schedule_lag_us.as_ref().unwrap().p50 < 2_000);
    let poisson = Mode::Open { rate: 400.0, poisson: true, max_connections: 16 };
    let r = loadgen::run(&plan(&url(&m), CHAT, &[], poisson, Duration::from_secs(1))).unwrap();
    assert!((300..=500).contains(&r.completed), "Poisson: {}", r.completed);
}

#[test]
fn waiting_for_a_connection_counts_in_latency() {
    // One connection, a 20 ms answer, 100 requests/s: the server can do 50/s, so requests queue.
    // A closed-loop tool would report ~20 ms; the truth grows with the queue.
    let m = mock(Knobs { latency: Duration::from_millis(20), ..Knobs::default() });
    let mode = Mode::Open { rate: 100.0, poisson: false, max_connections: 1 };
    let mut p = plan(&url(&m), CHAT, &[], mode, Duration::from_secs(1));
    p.warmup = Duration::ZERO;
    let r = loadgen::run(&p).unwrap();
    let service = r.service_us.as_ref().unwrap().p99;
    let latency = r.latency_us.as_ref().unwrap().p99;
    assert!(service < 40_000, "service stays ~20 ms: {service}");
    assert!(latency > 200_000, "latency from the intended time shows the queue: {latency}");
}

#[test]
fn streams_are_timed_per_token() {
    let m = mock(Knobs::default());
    let body = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#;
    let headers = [("x-mock-tokens", "10"), ("x-mock-tokens-per-sec", "200"), ("x-mock-ttft-ms", "30")];
    let mode = Mode::Open { rate: 20.0, poisson: false, max_connections: 32 };
    let r = loadgen::run(&plan(&url(&m), body, &headers, mode, Duration::from_secs(1))).unwrap();
    assert!(r.completed >= 18, "{}", r.completed);
    let ttft = r.ttft_us.as_ref().unwrap();
    assert!((29_000..60_000).contains(&ttft.p50), "first token after the 30 ms TTFT: {}", ttft.p50);
    let itl = r.itl_us.as_ref().unwrap();
    assert!((4_000..10_000).contains(&itl.p50), "tokens 5 ms apart: {}", itl.p50);
    assert_eq!(itl.count, r.completed * 9, "nine gaps between ten tokens");
    assert_eq!(r.completion_tokens, r.completed * 10);
    assert!(r.stream_tokens_per_sec.is_some());
}

#[test]
fn request_count_bounds_the_run() {
    let m = mock(Knobs::default());
    let mut p = plan(&url(&m), CHAT, &[], Mode::Closed { connections: 2 }, Duration::from_secs(30));
    p.max_requests = Some(25);
    p.warmup = Duration::ZERO;
    let started = std::time::Instant::now();
    let r = loadgen::run(&p).unwrap();
    assert_eq!((r.sent, r.completed), (25, 25));
    assert!(started.elapsed() < Duration::from_secs(5), "stopped at the count, not the duration");
}

#[test]
fn failures_are_counted_by_kind() {
    let m = mock(Knobs::default());
    let r = loadgen::run(&plan(
        &url(&m),
        CHAT,
        &[("x-mock-fault", "status:503")],
        Mode::Closed { connections: 2 },
        Duration::from_millis(300),
    ))
    .unwrap();
    assert_eq!(r.ok, 0);
    assert!(r.statuses.get("503").copied().unwrap_or(0) > 0);
    assert_eq!(r.error_rate, 1.0);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let r = loadgen::run(&plan(
        &format!("http://127.0.0.1:{port}/x"),
        CHAT,
        &[],
        Mode::Closed { connections: 1 },
        Duration::from_millis(300),
    ))
    .unwrap();
    assert!(r.errors.get("connect").copied().unwrap_or(0) > 0, "{:?}", r.errors);
}

#[test]
fn https_targets_work_with_a_custom_ca() {
    let pki = e2e::tls::test_pki();
    let tls = engine::tls::server_config(&pki.server_cert, &pki.server_key).unwrap();
    let m = bench_harness::mock::MockServer::start(bench_harness::mock::MockOptions {
        tls: Some(tls),
        ..bench_harness::mock::MockOptions::for_tests()
    })
    .unwrap();
    let target =
        Target::parse(&format!("https://localhost:{}/v1/chat/completions", m.addr().port()), Some(&pki.ca_cert))
            .unwrap();
    let spec = RequestSpec { body: Some(bytes::Bytes::from(CHAT)), weight: 1, ..RequestSpec::default() };
    let mut p = plan(&url(&m), CHAT, &[], Mode::Closed { connections: 2 }, Duration::from_millis(400));
    p.mix = Mix::single(&target, spec).unwrap();
    p.target = target;
    let r = loadgen::run(&p).unwrap();
    assert!(r.ok > 10 && r.errors.is_empty(), "{} ok, {:?}", r.ok, r.errors);
    assert_eq!(m.stats().connections_accepted.load(std::sync::atomic::Ordering::SeqCst), 2, "kept alive over TLS");
}

#[test]
fn search_finds_the_highest_rate_within_the_slo() {
    // One connection and a 10 ms answer: 100 req/s is the most it can carry.
    let m = mock(Knobs { latency: Duration::from_millis(10), ..Knobs::default() });
    let mut p = plan(
        &url(&m),
        CHAT,
        &[],
        Mode::Open { rate: 1.0, poisson: false, max_connections: 1 },
        Duration::from_millis(800),
    );
    p.warmup = Duration::from_millis(100);
    let s = loadgen::Search { start: 40.0, step: 40.0, max: 400.0, percentile: 99.0, slo: Duration::from_millis(50) };
    let r = loadgen::search(&p, s).unwrap();
    let best = r.max_rate_within_slo.expect("40 req/s fits");
    assert!((40.0..=80.0).contains(&best), "{best}");
    assert!(!r.steps.last().unwrap().passed, "it stopped at the first failing step");
}

#[test]
fn jsonl_mixes_send_every_line_by_weight() {
    let m = mock(Knobs::default());
    let target = Target::parse(&url(&m), None).unwrap();
    let text = r#"{"body":{"model":"a","messages":[]},"weight":3,"label":"a"}
{"body":{"model":"b","stream":true},"weight":1,"headers":{"x-mock-tokens":"2"}}"#;
    let mut p = plan(&url(&m), CHAT, &[], Mode::Closed { connections: 2 }, Duration::from_millis(500));
    p.mix = Mix::from_jsonl(&target, text, &[]).unwrap();
    let r = loadgen::run(&p).unwrap();
    assert!(r.errors.is_empty());
    // Streams (a quarter of the requests) are timed per token; the rest are not.
    let streams = r.ttft_us.as_ref().unwrap().count;
    assert!(streams * 6 > r.completed && streams * 3 < r.completed, "{streams} of {}", r.completed);
}
