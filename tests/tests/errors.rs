//! Every error the gateway produces is OpenAI-shaped with the right status, and upstream
//! failures (refused, garbage, timeout, dropped mid-stream, unresolvable) map to 502/504.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;

use e2e::{Client, config_for, default_mock, gateway, on_both_drivers, wait_metric};

on_both_drivers!(
    malformed_json_is_400,
    missing_or_mistyped_fields_are_400_naming_the_param,
    unknown_model_is_404,
    unknown_path_is_404_and_wrong_method_405,
    upstream_connection_refused_is_502,
    upstream_unresolvable_host_is_502,
    upstream_garbage_is_502,
    upstream_reset_is_502,
    upstream_first_byte_timeout_is_504,
    upstream_drop_mid_stream_ends_the_stream_with_an_error_event,
    upstream_malformed_json_is_relayed_not_fatal,
    upstream_silence_mid_stream_hits_the_idle_timeout,
    pool_cap_queues_then_refuses_with_503,
    mock_embeddings_refuse_more_than_openai_allows,
    upstream_connect_timeout_is_504,
);

const CHAT: &str = r#"{"model":"m","messages":[]}"#;

fn malformed_json_is_400(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config_for(upstream.addr(), ""), driver);
    let mut c = Client::connect(gw.local_addr());
    for body in ["{", "[1,2]", r#"{"model":"m",}"#, "", "null", "{\"model\":\"m\"} trailing"] {
        let r = c.post_json("/v1/chat/completions", body, "");
        assert_eq!(r.status, 400, "{body:?}");
        assert_eq!(r.error()["type"], "invalid_request_error");
    }
    // Invalid UTF-8 inside a string.
    let mut raw = b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-length: 16\r\n\r\n".to_vec();
    raw.extend_from_slice(b"{\"model\":\"\xff\xfe\"}  ");
    c.send(&raw);
    assert_eq!(c.read_response().status, 400);
    assert_eq!(upstream.stats().requests.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing reached the provider");
}

fn missing_or_mistyped_fields_are_400_naming_the_param(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config_for(upstream.addr(), ""), driver);
    let mut c = Client::connect(gw.local_addr());
    let r = c.post_json("/v1/chat/completions", r#"{"messages":[]}"#, "");
    assert_eq!((r.status, r.error()["param"].as_str()), (400, Some("model")));
    let r = c.post_json("/v1/chat/completions", r#"{"model":7}"#, "");
    assert_eq!((r.status, r.error()["param"].as_str()), (400, Some("model")));
    let r = c.post_json("/v1/chat/completions", r#"{"model":"m","stream":"yes"}"#, "");
    assert_eq!((r.status, r.error()["param"].as_str()), (400, Some("stream")));
    let r = c.post_json("/v1/chat/completions", r#"{"model":"m","max_tokens":-1}"#, "");
    assert_eq!((r.status, r.error()["param"].as_str()), (400, Some("max_tokens")));
}

fn unknown_model_is_404(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config_for(upstream.addr(), ""), driver);
    let r = Client::connect(gw.local_addr()).post_json("/v1/chat/completions", r#"{"model":"gpt-9"}"#, "");
    assert_eq!(r.status, 404);
    let e = r.error();
    assert_eq!((e["code"].as_str(), e["param"].as_str()), (Some("model_not_found"), Some("model")));
    assert!(e["message"].as_str().unwrap().contains("gpt-9"));
    wait_metric(&gw, "shardgate_errors_total{kind=\"unknown_model\"}", 1.0);
}

fn unknown_path_is_404_and_wrong_method_405(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config_for(upstream.addr(), ""), driver);
    let mut c = Client::connect(gw.local_addr());
    let r = c.get("/nothing/here");
    assert_eq!((r.status, r.error()["code"].as_str()), (404, Some("not_found")));
    let r = c.get("/v1/chat/completions");
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
    assert_eq!(r.error()["code"], "method_not_allowed");
    let r = c.post_json("/v1/models", "{}", "");
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
}

/// A provider at `base_url` with short timeouts.
fn config_with_base(base_url: &str) -> String {
    format!(
        "providers:\n  up:\n    kind: openai-compatible\n    base_url: {base_url}\n    timeouts: {{connect: 500ms, first_byte: 300ms, idle: 300ms}}\nmodels:\n  m: {{target: up/x}}\n"
    )
}

fn upstream_connection_refused_is_502(driver: e2e::Runtime) {
    // A port that was free a moment ago: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let gw = gateway(&config_with_base(&format!("http://127.0.0.1:{port}/v1")), driver);
    let r = Client::connect(gw.local_addr()).post_json("/v1/chat/completions", CHAT, "");
    assert_eq!(r.status, 502);
    let e = r.error();
    assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("upstream_error"), Some("upstream_connect")));
    assert!(e["message"].as_str().unwrap().contains("provider up"));
}

fn upstream_unresolvable_host_is_502(driver: e2e::Runtime) {
    let gw = gateway(&config_with_base("http://no-such-host.invalid/v1"), driver);
    let r = Client::connect(gw.local_addr()).post_json("/v1/chat/completions", CHAT, "");
    assert_eq!((r.status, r.error()["code"].as_str()), (502, Some("upstream_dns")));
}

fn upstream_garbage_is_502(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config_for(upstream.addr(), ""), driver);
    let r = Client::connect(gw.local_addr()).post_json("/v1/chat/completions", CHAT, "x-mock-fault: garbage\r\n");
    assert_eq!((r.status, r.error()["code"].as_str()), (502, Some("upstream_protocol")));
}

fn upstream_reset_is_502(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config_for(upstream.addr(), ""), driver);
    let mut c = Client::connect(gw.local_addr());
    // Warm the pool so the reset hits a reused connection first: retried once, then 502.
    assert_eq!(c.post_json("/v1/chat/completions", CHAT, "").status, 200);
    let r = c.post_json("/v1/chat/completions", CHAT, "x-mock-fault: reset\r\n");
    assert_eq!((r.status, r.error()["code"].as_str()), (502, Some("upstream_connect")));
    wait_metric(&gw, "shardgate_upstream_retries_total", 1.0);
    assert_eq!(c.post_json("/v1/chat/completions", CHAT, "").status, 200, "the next request is fine");
}

fn upstream_first_byte_timeout_is_504(driver: e2e::Runtime) {
    let upstream = default_mock();
    let base = format!("http://{}/v1", upstream.addr());
    let gw = gateway(&config_with_base(&base), driver);
    let started = std::time::Instant::now();
    let r = Client::connect(gw.local_addr()).post_json("/v1/chat/completions", CHAT, "x-mock-fault: timeout\r\n");
    assert_eq!((r.status, r.error()["code"].as_str()), (504, Some("upstream_timeout")));
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
}

fn upstream_drop_mid_stream_ends_the_stream_with_an_error_event(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config_for(upstream.addr(), ""), driver);
    let mut c = Client::connect(gw.local_addr());
    let body = r#"{"model":"m","stream":true,"messages":[]}"#;
    let r = c.post_json("/v1/chat/completions", body, "x-mock-fault: drop:5\r\n");
    assert_eq!(r.status, 200, "the head was already sent");
    let text = r.text();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 6, "five relayed events, then the error: {text}");
    let last: serde_json::Value = serde_json::from_str(events[5].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(last["error"]["type"], "upstream_error");
    assert!(!text.contains("[DONE]"));
    // The client connection stays usable: the chunked body was terminated properly.
    assert_eq!(c.post_json("/v1/chat/completions", CHAT, "").status, 200);
}

fn upstream_malformed_json_is_relayed_not_fatal(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config_for(upstream.addr(), ""), driver);
    let mut c = Client::connect(gw.local_addr());
    let r = c.post_json("/v1/chat/completions", CHAT, "x-mock-fault: malformed\r\n");
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with(r#"{"id":"chatcmpl-broken""#));
    assert_eq!(c.post_json("/v1/chat/completions", CHAT, "").status, 200);
}

fn upstream_silence_mid_stream_hits_the_idle_timeout(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config_with_base(&format!("http://{}/v1", upstream.addr())), driver);
    let body = r#"{"model":"m","stream":true,"messages":[]}"#;
    // One token per second against a 300ms idle timeout.
    let r = Client::connect(gw.local_addr()).post_json("/v1/chat/completions", body, "x-mock-tokens-per-sec: 1\r\n");
    assert_eq!(r.status, 200);
    let text = r.text();
    let last = text.split("\n\n").filter(|e| !e.is_empty()).last().unwrap();
    let v: serde_json::Value = serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(v["error"]["code"], "upstream_timeout", "{text}");
}

fn pool_cap_queues_then_refuses_with_503(driver: e2e::Runtime) {
    let upstream = default_mock();
    let yaml = format!(
        "providers:\n  up:\n    kind: openai-compatible\n    base_url: http://{}/v1\n    pool: {{max_connections: 1}}\n    actor: {{max_wait: 300ms}}\nmodels:\n  m: {{target: up/x}}\n",
        upstream.addr()
    );
    let gw = gateway(&yaml, driver);
    let addr = gw.local_addr();
    // The only connection is busy for 1.5s; a second request waits for it, then gives up.
    let busy = std::thread::spawn(move || {
        Client::connect(addr).post_json("/v1/chat/completions", CHAT, "x-mock-latency-ms: 1500\r\n").status
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    let r = Client::connect(addr).post_json("/v1/chat/completions", CHAT, "");
    // The target serves as many requests at once as it has connections; the others wait in
    // its mailbox, up to `actor.max_wait`.
    assert_eq!((r.status, r.error()["code"].as_str()), (503, Some("target_overloaded")), "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(busy.join().unwrap(), 200);
    // Once it is free, the queue moves: a request waiting less than the limit gets it.
    let busy = std::thread::spawn(move || {
        Client::connect(addr).post_json("/v1/chat/completions", CHAT, "x-mock-latency-ms: 100\r\n").status
    });
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(Client::connect(addr).post_json("/v1/chat/completions", CHAT, "").status, 200);
    assert_eq!(busy.join().unwrap(), 200);
    assert_eq!(upstream.stats().connections_accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
}

fn mock_embeddings_refuse_more_than_openai_allows(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config_for(upstream.addr(), ""), driver);
    let inputs = vec!["\"x\""; 3000].join(",");
    let r = Client::connect(gw.local_addr()).post_json(
        "/v1/embeddings",
        &format!(r#"{{"model":"mock","input":[{inputs}]}}"#),
        "",
    );
    assert_eq!((r.status, r.error()["param"].as_str()), (400, Some("input")));
    let r = Client::connect(gw.local_addr()).post_json(
        "/v1/embeddings",
        r#"{"model":"mock","input":"x","dimensions":1000000}"#,
        "",
    );
    assert_eq!((r.status, r.error()["param"].as_str()), (400, Some("dimensions")));
}

fn upstream_connect_timeout_is_504(driver: e2e::Runtime) {
    // A listener whose accept queue is full: the kernel drops further SYNs, so a connect hangs.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let _filler = std::net::TcpStream::connect(addr).unwrap();
    let gw = gateway(&config_with_base(&format!("http://{addr}/v1")), driver);
    let started = std::time::Instant::now();
    let r = Client::connect(gw.local_addr()).post_json("/v1/chat/completions", CHAT, "");
    assert_eq!((r.status, r.error()["code"].as_str()), (504, Some("upstream_timeout")));
    assert!(r.error()["message"].as_str().unwrap().contains("connecting took longer"));
    let took = started.elapsed();
    assert!(took >= std::time::Duration::from_millis(400) && took < std::time::Duration::from_secs(3), "{took:?}");
}
