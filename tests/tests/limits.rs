//! Downstream limits and framing strictness: slow-loris heads (408, the shard keeps serving
//! others), slow bodies, oversized heads and bodies (431, 413), 100-continue, idle keep-alive,
//! and every request-smuggling ambiguity refused with the connection closed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::time::{Duration, Instant};

use e2e::{Client, config_for, default_mock, gateway, on_both_drivers};

on_both_drivers!(
    slow_loris_head_gets_408_while_others_are_served,
    slow_body_gets_408,
    oversized_head_is_431_and_too_many_headers_too,
    oversized_body_is_413_without_100_continue,
    chunked_body_over_the_limit_is_413,
    expect_100_continue_is_honoured,
    idle_keep_alive_connection_is_closed,
    smuggling_ambiguities_are_refused_and_closed,
    http10_client_gets_a_close_delimited_stream,
);

const LIMITS: &str = "server:\n  limits: {header_timeout: 400ms, body_timeout: 400ms, idle_timeout: 400ms, max_body: 2KiB, max_header: 4KiB, max_headers: 20}\n";
const CHAT: &str = r#"{"model":"mock","messages":[]}"#;

fn slow_loris_head_gets_408_while_others_are_served(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config_for(upstream.addr(), LIMITS), driver);
    let mut slow = Client::connect(gw.local_addr());
    slow.send(b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\n");
    let started = Instant::now();
    // Trickle a header byte at a time; meanwhile other clients are served at once.
    let mut served = 0;
    while started.elapsed() < Duration::from_millis(250) {
        let _ = slow.stream.write_all(b"x");
        let r = Client::connect(gw.local_addr()).post_json("/v1/chat/completions", CHAT, "");
        assert_eq!(r.status, 200);
        served += 1;
    }
    assert!(served > 3);
    let r = slow.read_response();
    assert_eq!(r.status, 408);
    assert_eq!(r.error()["code"], "request_timeout");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(slow.is_closed());
}

fn slow_body_gets_408(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config_for(upstream.addr(), LIMITS), driver);
    let mut c = Client::connect(gw.local_addr());
    c.send(b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\n{\"model\":");
    let r = c.read_response();
    assert_eq!(r.status, 408);
    assert!(r.error()["message"].as_str().unwrap().contains("body_timeout"));
}

fn oversized_head_is_431_and_too_many_headers_too(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config_for(upstream.addr(), LIMITS), driver);
    let mut c = Client::connect(gw.local_addr());
    c.send(format!("GET /health HTTP/1.1\r\nhost: t\r\nx-big: {}\r\n\r\n", "a".repeat(5000)).as_bytes());
    let r = c.read_response();
    assert_eq!((r.status, r.error()["code"].as_str()), (431, Some("headers_too_large")));
    let mut c = Client::connect(gw.local_addr());
    let many: String = (0..30).map(|i| format!("x-h{i}: v\r\n")).collect();
    c.send(format!("GET /health HTTP/1.1\r\nhost: t\r\n{many}\r\n").as_bytes());
    assert_eq!(c.read_response().status, 431);
}

fn oversized_body_is_413_without_100_continue(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config_for(upstream.addr(), LIMITS), driver);
    let mut c = Client::connect(gw.local_addr());
    c.send(b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\nexpect: 100-continue\r\ncontent-length: 5000\r\n\r\n");
    let r = c.read_response();
    assert_eq!((r.status, r.error()["code"].as_str()), (413, Some("body_too_large")));
    assert!(r.error()["message"].as_str().unwrap().contains("2048"));
}

fn chunked_body_over_the_limit_is_413(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config_for(upstream.addr(), LIMITS), driver);
    let mut c = Client::connect(gw.local_addr());
    let chunk = "a".repeat(1500);
    c.send(format!("POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n5dc\r\n{chunk}\r\n5dc\r\n{chunk}\r\n0\r\n\r\n").as_bytes());
    assert_eq!(c.read_response().status, 413);
}

fn expect_100_continue_is_honoured(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config_for(upstream.addr(), LIMITS), driver);
    let mut c = Client::connect(gw.local_addr());
    c.send(
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\nexpect: 100-continue\r\ncontent-length: {}\r\n\r\n",
            CHAT.len()
        )
        .as_bytes(),
    );
    let (status, _) = c.read_head();
    assert_eq!(status, 100, "the gateway asks for the body");
    c.send(CHAT.as_bytes());
    assert_eq!(c.read_response().status, 200);
}

fn idle_keep_alive_connection_is_closed(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config_for(upstream.addr(), LIMITS), driver);
    let mut c = Client::connect(gw.local_addr());
    assert_eq!(c.get("/health").status, 200);
    let started = Instant::now();
    assert!(c.is_closed(), "closed after idle_timeout");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(3), "{waited:?}");
}

fn smuggling_ambiguities_are_refused_and_closed(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config_for(upstream.addr(), LIMITS), driver);
    let cases: [(&str, u16); 9] = [
        ("content-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("transfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n0\r\n\r\n", 400),
        ("content-length: 4\r\ncontent-length: 4\r\n\r\nabcd", 400),
        ("content-length: 4, 4\r\n\r\nabcd", 400),
        ("content-length: -4\r\n\r\nabcd", 400),
        ("transfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
        ("transfer-encoding: chunked, identity\r\n\r\n0\r\n\r\n", 400),
        ("transfer-encoding: chunked\r\n\r\n4\nabcd\r\n0\r\n\r\n", 400),
        ("transfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ];
    for (rest, status) in cases {
        let mut c = Client::connect(gw.local_addr());
        // A second, smuggled request follows; it must never be answered.
        c.send(
            format!("POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\n{rest}GET /health HTTP/1.1\r\nhost: t\r\n\r\n")
                .as_bytes(),
        );
        let r = c.read_response();
        assert_eq!(r.status, status, "{rest:?}");
        assert_eq!(r.header("connection"), Some("close"));
        let rest_of_stream = c.read_to_close();
        assert!(rest_of_stream.is_empty(), "nothing after the refusal: {:?}", String::from_utf8_lossy(&rest_of_stream));
    }
    // HTTP/1.0 with Transfer-Encoding, and a space before the colon.
    for raw in [
        "POST /v1/chat/completions HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        "GET /health HTTP/1.1\r\nhost : t\r\n\r\n",
        "GET /health HTTP/1.1\r\nhost: t\r\n folded: header\r\n\r\n",
        "GET /health HTTP/1.1\r\nhost: t\nx-smuggle: a\r\n\r\n",
        "GET /v1/files/../organization HTTP/1.1\r\nhost: t\r\n\r\n",
        "GET /v1/files/%2e%2E/organization HTTP/1.1\r\nhost: t\r\n\r\n",
    ] {
        let mut c = Client::connect(gw.local_addr());
        c.send(raw.as_bytes());
        assert_eq!(c.read_response().status, 400, "{raw:?}");
    }
}

fn http10_client_gets_a_close_delimited_stream(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config_for(upstream.addr(), LIMITS), driver);
    let mut c = Client::connect(gw.local_addr());
    let body = r#"{"model":"mock","stream":true,"max_tokens":3,"messages":[]}"#;
    c.send(format!("POST /v1/chat/completions HTTP/1.0\r\ncontent-length: {}\r\n\r\n{body}", body.len()).as_bytes());
    let raw = String::from_utf8(c.read_to_close()).unwrap();
    assert!(raw.starts_with("HTTP/1.0 200 OK\r\n"), "{raw}");
    assert!(!raw.to_ascii_lowercase().contains("transfer-encoding"), "no chunking for HTTP/1.0");
    assert!(raw.ends_with("data: [DONE]\n\n"));
}
