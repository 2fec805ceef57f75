//! Target actors, end to end: each target's bounded mailbox answers 503 when full, a panic in a
//! target's handler is caught by its supervisor (502 for the request, 502 for what waited, 503
//! with `retry-after` during the restart backoff), restarts are counted in `/metrics`, and
//! neither the shard nor another target notices.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use e2e::{Client, Response, default_mock, eventually, gateway, metric, on_both_drivers, wait_metric};
use engine::Gateway;

on_both_drivers!(
    a_panic_is_a_502_and_the_target_restarts_after_its_backoff,
    a_panic_mid_stream_closes_that_connection_only,
    a_full_mailbox_refuses_and_a_restart_fails_the_waiters,
    messages_get_anthropic_shaped_actor_errors,
    requests_wait_their_turn_for_a_busy_upstream,
    org_admins_see_each_target_per_shard,
);

fn config(upstream: SocketAddr) -> String {
    let base = e2e::config_for(upstream, "");
    format!("{base}  d: {{target: drill/x}}\n  o: {{target: other/x}}\n  slow: {{target: narrow/upstream-m}}\n")
        .replace(
            "providers:\n",
            &format!(
                "providers:
  drill:
    kind: mock
    mock_faults: true
    actor: {{max_in_flight: 1, mailbox: 1, restart_backoff: 400ms}}
  other: {{kind: mock}}
  narrow:
    kind: openai-compatible
    base_url: http://{upstream}/v1
    api_key: sk-x
    actor: {{max_in_flight: 1, mailbox: 4}}
"
            ),
        )
}

fn chat(addr: SocketAddr, model: &str, extra: &str) -> Response {
    let body = format!(r#"{{"model":"{model}","max_tokens":3,"messages":[{{"role":"user","content":"hi"}}]}}"#);
    Client::connect(addr).post_json("/v1/chat/completions", &body, extra)
}

fn restarts(gw: &Gateway, target: &str) -> Option<f64> {
    metric(&gw.metrics_text(), &format!("shardgate_target_restarts_total{{target=\"{target}\"}}"))
}

fn a_panic_is_a_502_and_the_target_restarts_after_its_backoff(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config(upstream.addr()), driver);
    let addr = gw.local_addr();

    // The request whose handler panics gets OpenAI's error shape, on a connection that stays
    // usable.
    let mut c = Client::connect(addr);
    let body = r#"{"model":"d","messages":[{"role":"user","content":"hi"}]}"#;
    let r = c.post_json("/v1/chat/completions", body, "x-mock-fault: panic\r\n");
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.error()["code"], "target_failed");
    assert!(r.error()["message"].as_str().unwrap().contains("provider drill"));
    let r = c.post_json("/v1/chat/completions", &body.replace("\"d\"", "\"o\""), "");
    assert_eq!(r.status, 200, "another target and the same connection are untouched: {}", r.text());

    // During the backoff the target refuses at once, saying when to come back.
    let r = chat(addr, "d", "");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.error()["code"], "target_restarting");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(restarts(&gw, "drill"), Some(1.0));

    // Then it serves again.
    assert!(eventually(Duration::from_secs(3), || chat(addr, "d", "").status == 200));
    let text = gw.metrics_text();
    let refused = metric(&text, "shardgate_target_refused_total{target=\"drill\",reason=\"restarting\"}").unwrap();
    assert!(refused >= 1.0, "{refused}");
    assert_eq!(metric(&text, "shardgate_errors_total{kind=\"target_failed\"}"), Some(1.0));
    assert_eq!(metric(&text, "shardgate_panics_total"), Some(0.0), "no connection task died");
    assert_eq!(restarts(&gw, "other"), Some(0.0));
}

fn a_panic_mid_stream_closes_that_connection_only(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config(upstream.addr()), driver);
    let addr = gw.local_addr();
    let mut c = Client::connect(addr);
    let body = r#"{"model":"d","stream":true,"max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#;
    c.send_post("/v1/chat/completions", body, "x-mock-fault: panic-mid-stream\r\n");
    let (status, _) = c.read_head();
    assert_eq!(status, 200, "the stream had begun");
    // The answer cannot be finished: the connection closes without the last chunk, so the
    // client sees a truncated stream rather than a complete-looking one.
    let rest = String::from_utf8_lossy(&c.read_to_close()).into_owned();
    assert!(!rest.ends_with("0\r\n\r\n"), "no clean end of stream: {rest:?}");
    assert!(!rest.contains("[DONE]"));
    assert_eq!(restarts(&gw, "drill"), Some(1.0));
    assert_eq!(chat(addr, "o", "").status, 200);
    assert!(eventually(Duration::from_secs(3), || chat(addr, "d", "").status == 200));
}

fn a_full_mailbox_refuses_and_a_restart_fails_the_waiters(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config(upstream.addr()), driver);
    let addr = gw.local_addr();
    // The only turn: held for a while, then the handler panics.
    let holder = std::thread::spawn(move || chat(addr, "d", "x-mock-latency-ms: 600\r\nx-mock-fault: panic\r\n"));
    wait_metric(&gw, "shardgate_target_in_flight{target=\"drill\",shard=\"0\"}", 1.0);
    // The only place in the mailbox.
    let waiter = std::thread::spawn(move || chat(addr, "d", ""));
    wait_metric(&gw, "shardgate_target_waiting{target=\"drill\",shard=\"0\"}", 1.0);
    // No room left: refused at once, without waiting for the holder.
    let asked = Instant::now();
    let full = chat(addr, "d", "");
    assert!(asked.elapsed() < Duration::from_millis(500), "a full mailbox answers at once");
    assert_eq!(full.status, 503, "{}", full.text());
    assert_eq!(full.error()["code"], "target_overloaded");
    assert_eq!(full.header("retry-after"), Some("1"));

    let held = holder.join().unwrap();
    assert_eq!(held.status, 502);
    let waited = waiter.join().unwrap();
    assert_eq!(waited.status, 502, "{}", waited.text());
    assert_eq!(waited.error()["code"], "target_failed");
    assert!(waited.error()["message"].as_str().unwrap().contains("not sent"));
    let text = gw.metrics_text();
    for (reason, n) in [("mailbox_full", 1.0), ("restarted_while_waiting", 1.0)] {
        let series = format!("shardgate_target_refused_total{{target=\"drill\",reason=\"{reason}\"}}");
        assert_eq!(metric(&text, &series), Some(n), "{series}");
    }
    assert_eq!(metric(&text, "shardgate_target_waiting{target=\"drill\",shard=\"0\"}"), Some(0.0));
    assert_eq!(metric(&text, "shardgate_target_in_flight{target=\"drill\",shard=\"0\"}"), Some(0.0));
}

fn messages_get_anthropic_shaped_actor_errors(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config(upstream.addr()), driver);
    let body = r#"{"model":"d","max_tokens":4,"messages":[{"role":"user","content":"hi"}]}"#;
    let headers = "anthropic-version: 2023-06-01\r\nx-mock-fault: panic\r\n";
    let r = Client::connect(gw.local_addr()).post_json("/v1/messages", body, headers);
    assert_eq!(r.status, 502, "{}", r.text());
    let v = r.json();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "api_error");
    assert!(v["error"]["message"].as_str().unwrap().contains("provider drill"));
    let r = Client::connect(gw.local_addr()).post_json("/v1/messages", body, "anthropic-version: 2023-06-01\r\n");
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["type"], "overloaded_error");
}

fn requests_wait_their_turn_for_a_busy_upstream(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config(upstream.addr()), driver);
    let addr = gw.local_addr();
    // One request at a time to `narrow`: three at once all succeed, served one after another.
    let started = Instant::now();
    let clients: Vec<_> =
        (0..3).map(|_| std::thread::spawn(move || chat(addr, "slow", "x-mock-latency-ms: 150\r\n"))).collect();
    for c in clients {
        let r = c.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert!(started.elapsed() >= Duration::from_millis(440), "served one at a time: {:?}", started.elapsed());
    let text = gw.metrics_text();
    assert_eq!(metric(&text, "shardgate_target_refused_total{target=\"narrow\",reason=\"mailbox_full\"}"), Some(0.0));
    let latency = metric(&text, "shardgate_target_latency_ewma_seconds{target=\"narrow\",shard=\"0\"}").unwrap();
    assert!(latency >= 0.15, "the actor's latency average saw the upstream's 150 ms: {latency}");
    assert_eq!(metric(&text, "shardgate_target_consecutive_failures{target=\"narrow\",shard=\"0\"}"), Some(0.0));
}

fn org_admins_see_each_target_per_shard(driver: e2e::Runtime) {
    let upstream = default_mock();
    let keys = "users:\n  root: {role: org_admin}\n  ann: {}\nkeys:\n  - {name: root-1, secret: sk-sg-actors-root-000000, user: root}\n  - {name: ann-1, secret: sk-sg-actors-ann-0000000, user: ann}\n";
    let gw = gateway(&format!("{keys}{}", config(upstream.addr())), driver);
    let addr = gw.local_addr();
    let root = "authorization: Bearer sk-sg-actors-root-000000\r\n";
    assert_eq!(chat(addr, "slow", root).status, 200);
    let r = Client::connect(addr).get_with("/admin/v1/targets", root);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let narrow = v["data"].as_array().unwrap().iter().find(|t| t["provider"] == "narrow").unwrap().clone();
    assert_eq!(
        (narrow["kind"].as_str(), narrow["limits"]["max_in_flight"].as_u64()),
        (Some("openai-compatible"), Some(1))
    );
    let shard = &narrow["shards"][0];
    assert_eq!((shard["shard"].as_u64(), shard["in_flight"].as_i64()), (Some(0), Some(0)));
    assert!(shard["latency_ewma_ms"].as_f64().unwrap() > 0.0, "{shard}");
    let unused = v["data"].as_array().unwrap().iter().find(|t| t["provider"] == "other").unwrap();
    assert_eq!(unused["shards"], serde_json::json!([]), "no request, no actor yet");
    // Members do not see the providers' state.
    let r = Client::connect(addr).get_with("/admin/v1/targets", "authorization: Bearer sk-sg-actors-ann-0000000\r\n");
    assert_eq!(r.status, 403, "{}", r.text());
}
