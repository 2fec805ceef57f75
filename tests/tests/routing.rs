//! Routing and reliability, end to end: `route:` models over real mock providers that fail on
//! purpose. Retries (429 then success, exactly one retry seen by the mock), `retry-after`
//! honoured and capped by the budget, fallbacks plain and streaming, a stream that fails before
//! its first token (falls back, unseen) or after it (ends with an error event), context-window
//! and content-policy fallbacks, breakers that open, half-open and close, SLA cut-offs,
//! weighted distribution, affinity across shards, conditions, and the `x-shardgate-*` headers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::net::SocketAddr;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use bench_harness::mock::{Fault, Knobs, MockServer};
use e2e::{Client, Response, metric, mock, on_both_drivers};

on_both_drivers!(
    a_429_is_retried_once_then_served,
    retry_after_is_honoured_and_capped_by_the_budget,
    a_503_falls_back_plain_and_streaming,
    a_stream_failing_before_its_first_token_falls_back_and_after_it_ends_with_an_error,
    context_window_and_content_policy_failures_jump_to_their_groups,
    client_errors_are_not_retried,
    the_breaker_opens_then_half_opens_and_closes,
    an_sla_cut_off_cools_a_slow_target,
    weights_share_the_traffic,
    conditions_pick_by_metadata_and_params,
    a_first_token_timeout_moves_on,
    affinity_sticks_across_requests_and_shards,
    org_admins_see_breakers_and_models_list_routed_names,
    messages_are_routed_with_anthropic_shaped_errors,
    a_hedge_wins_over_a_slow_target_which_is_cancelled,
    a_breaker_opened_on_one_shard_protects_the_others,
    a_fallback_is_priced_by_the_model_that_served_it,
    health_checks_cool_a_dead_target_before_any_request_and_bring_it_back,
    with_cool_last_a_route_whose_targets_all_cool_says_so,
);

/// Providers `a`, `b` (and `c` when given) at the mocks, then `models:` with `models`.
fn config(a: SocketAddr, b: SocketAddr, c: Option<SocketAddr>, models: &str) -> String {
    let provider = |name: &str, addr: SocketAddr| {
        format!(
            "  {name}:\n    kind: openai-compatible\n    base_url: http://{addr}/v1\n    api_key: sk-{name}\n    timeouts: {{connect: 2s, first_byte: 3s, idle: 3s}}\n"
        )
    };
    let mut y = String::from("providers:\n");
    y.push_str(&provider("a", a));
    y.push_str(&provider("b", b));
    if let Some(c) = c {
        y.push_str(&provider("c", c));
    }
    y.push_str("models:\n");
    y.push_str(models);
    y
}

fn chat(addr: SocketAddr, model: &str, extra: &str) -> Response {
    let body = format!(r#"{{"model":"{model}","max_tokens":3,"messages":[{{"role":"user","content":"hi"}}]}}"#);
    Client::connect(addr).post_json("/v1/chat/completions", &body, extra)
}

fn stream(addr: SocketAddr, model: &str, extra: &str) -> Response {
    let body =
        format!(r#"{{"model":"{model}","stream":true,"max_tokens":3,"messages":[{{"role":"user","content":"hi"}}]}}"#);
    Client::connect(addr).post_json("/v1/chat/completions", &body, extra)
}

fn served(m: &MockServer) -> u64 {
    m.stats().requests.load(SeqCst)
}

fn failing(fault: Fault) -> MockServer {
    mock(Knobs { fault: Some(fault), ..Knobs::default() })
}

fn a_429_is_retried_once_then_served(driver: e2e::Runtime) {
    let a = mock(Knobs { fault: Some(Fault::Status(429)), fault_first: Some(1), ..Knobs::default() });
    let b = e2e::default_mock();
    let models = "  r:\n    route:\n      targets: [{target: a/x}]\n      retry: {attempts: 2, backoff: 5ms}\n";
    let gw = e2e::gateway(&config(a.addr(), b.addr(), None, models), driver);
    let r = chat(gw.local_addr(), "r", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(served(&a), 2, "exactly one retry reached the provider");
    assert_eq!(r.header("x-shardgate-target"), Some("a/x"));
    assert_eq!(r.header("x-shardgate-attempts"), Some("2"));
    assert_eq!(r.header("x-shardgate-fallbacks"), Some("0"));
    assert_eq!(served(&b), 0);
    let text = gw.metrics_text();
    assert_eq!(metric(&text, "shardgate_route_retries_total"), Some(1.0));
    assert_eq!(metric(&text, "shardgate_route_target_attempts_total{target=\"a/x\"}"), Some(2.0));
}

fn retry_after_is_honoured_and_capped_by_the_budget(driver: e2e::Runtime) {
    // The provider asks for 1 s; the budget allows it: the retry comes after it.
    let a = mock(Knobs { fault: Some(Fault::Status(429)), fault_first: Some(1), ..Knobs::default() });
    let b = e2e::default_mock();
    let models = "  r:\n    route:\n      targets: [{target: a/x}]\n      retry: {attempts: 2, backoff: 5ms, budget: 3s}\n  tight:\n    route:\n      targets: [{target: b/y}]\n      retry: {attempts: 2, backoff: 5ms, budget: 200ms}\n";
    let gw = e2e::gateway(&config(a.addr(), b.addr(), None, models), driver);
    let t = Instant::now();
    let r = chat(gw.local_addr(), "r", "x-mock-retry-after: 1\r\n");
    let took = t.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(took >= Duration::from_millis(950), "waited the provider's retry-after: {took:?}");
    let waited: u64 = r.header("x-shardgate-retry-wait-ms").unwrap().parse().unwrap();
    assert!((950..=1500).contains(&waited), "{waited}");

    // A retry-after beyond the budget is not waited for: the provider's 429 is the answer,
    // at once, with its retry-after.
    let t = Instant::now();
    let r = chat(gw.local_addr(), "tight", "x-mock-fault: status:429\r\nx-mock-retry-after: 5\r\n");
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(t.elapsed() < Duration::from_millis(900), "{:?}", t.elapsed());
    assert_eq!(r.header("retry-after"), Some("5"));
    assert_eq!(r.header("x-shardgate-attempts"), Some("1"));
    assert_eq!(r.error()["code"], "mock_fault", "the provider's own error is relayed");
}

fn a_503_falls_back_plain_and_streaming(driver: e2e::Runtime) {
    let a = failing(Fault::Status(503));
    let b = e2e::default_mock();
    let models = "  r:\n    route:\n      strategy: fallback\n      targets: [{target: a/x}, {target: b/y}]\n      retry: {attempts: 1, backoff: 1ms}\n      breaker: {min_requests: 1000}\n";
    let gw = e2e::gateway(&config(a.addr(), b.addr(), None, models), driver);
    let r = chat(gw.local_addr(), "r", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-shardgate-target"), Some("b/y"));
    assert_eq!(r.header("x-shardgate-attempts"), Some("3"), "a twice (one retry), then b");
    assert_eq!(r.header("x-shardgate-fallbacks"), Some("1"));
    assert_eq!(r.json()["model"], "y", "b's answer, for b's model");
    assert_eq!(served(&a), 2);

    let r = stream(gw.local_addr(), "r", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-shardgate-target"), Some("b/y"));
    let text = r.text();
    assert!(text.contains("data: [DONE]"), "{text}");
    assert!(!text.contains("mock fault"), "the failed attempts are not seen: {text}");
    assert_eq!(served(&a), 4);
    assert_eq!(metric(&gw.metrics_text(), "shardgate_route_fallbacks_total"), Some(2.0));

    // With fallbacks switched off by the caller, a's 503 is the answer.
    let r = chat(gw.local_addr(), "r", "x-shardgate-no-fallback: true\r\n");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("x-shardgate-target"), Some("a/x"));
}

fn a_stream_failing_before_its_first_token_falls_back_and_after_it_ends_with_an_error(driver: e2e::Runtime) {
    // a sends the head of every stream, then closes before the first event.
    let a = failing(Fault::DropMidStream(0));
    let b = e2e::default_mock();
    let c = e2e::default_mock();
    let models = "  r:\n    route:\n      strategy: fallback\n      targets: [{target: a/x}, {target: b/y}]\n      retry: {attempts: 0}\n      breaker: {min_requests: 1000}\n  only-c:\n    route:\n      targets: [{target: c/z}]\n      retry: {attempts: 2, backoff: 1ms}\n";
    let gw = e2e::gateway(&config(a.addr(), b.addr(), Some(c.addr()), models), driver);
    // The head is held until the first piece: the broken stream is a miss nobody sees.
    let r = stream(gw.local_addr(), "r", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-shardgate-target"), Some("b/y"));
    assert_eq!(r.header("x-shardgate-attempts"), Some("2"));
    let text = r.text();
    assert!(text.contains("data: [DONE]"), "{text}");
    assert!(!text.contains("\"error\""), "{text}");
    assert_eq!(served(&a), 1);

    // Cut after three events: the client already has the head and tokens; the stream ends
    // with an error event, never a clean finish, and nothing is retried.
    let r = stream(gw.local_addr(), "only-c", "x-mock-fault: drop:3\r\n");
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(text.contains("\"error\""), "{text}");
    assert!(!text.contains("[DONE]"), "{text}");
    assert!(!text.contains("\"finish_reason\":\"stop\""), "{text}");
    assert_eq!(served(&c), 1, "a stream that began is never retried");
}

fn affinity_sticks_across_requests_and_shards(driver: e2e::Runtime) {
    let a = e2e::default_mock();
    let b = e2e::default_mock();
    let c = e2e::default_mock();
    let models = "  r:\n    route:\n      strategy: affinity\n      affinity: {header: x-session-id}\n      targets: [{target: a/x}, {target: b/y}, {target: c/z}]\n";
    let yaml = config(a.addr(), b.addr(), Some(c.addr()), models);
    let source = engine::config::ConfigSource::Text { name: "test.yaml".into(), yaml };
    let gw = e2e::gateway_with(source, driver, 2);
    let mut seen = std::collections::HashSet::new();
    for session in 0..10 {
        let header = format!("x-session-id: s-{session}\r\n");
        // A fresh connection each time: either shard may take it.
        let first = chat(gw.local_addr(), "r", &header).header("x-shardgate-target").unwrap().to_string();
        for _ in 0..5 {
            let r = chat(gw.local_addr(), "r", &header);
            assert_eq!(r.header("x-shardgate-target"), Some(first.as_str()), "session {session}");
        }
        seen.insert(first);
    }
    assert!(seen.len() >= 2, "sessions spread over targets: {seen:?}");
}

fn context_window_and_content_policy_failures_jump_to_their_groups(driver: e2e::Runtime) {
    let a = failing(Fault::ContextLength);
    let b = e2e::default_mock();
    let c = failing(Fault::ContentPolicy);
    let models = "  r:\n    route:\n      strategy: fallback\n      targets: [{target: a/small}, {target: c/other}, {target: b/large}]\n      fallback: {context_window: 2, content_policy: 2}\n      retry: {attempts: 2, backoff: 1ms}\n";
    let gw = e2e::gateway(&config(a.addr(), b.addr(), Some(c.addr()), models), driver);
    let r = chat(gw.local_addr(), "r", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-shardgate-target"), Some("b/large"), "straight to the large-context group");
    assert_eq!(r.header("x-shardgate-attempts"), Some("2"), "no retry of a prompt that is too long");
    assert_eq!(served(&c), 0);

    let models = "  p:\n    route:\n      strategy: fallback\n      targets: [{target: c/strict}, {target: a/x}, {target: b/lenient}]\n      fallback: {content_policy: 2}\n";
    let gw = e2e::gateway(&config(a.addr(), b.addr(), Some(c.addr()), models), driver);
    let r = chat(gw.local_addr(), "p", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-shardgate-target"), Some("b/lenient"));
}

fn client_errors_are_not_retried(driver: e2e::Runtime) {
    let a = failing(Fault::Status(400));
    let b = e2e::default_mock();
    let models = "  r:\n    route:\n      strategy: fallback\n      targets: [{target: a/x}, {target: b/y}]\n      retry: {attempts: 3, backoff: 1ms}\n";
    let gw = e2e::gateway(&config(a.addr(), b.addr(), None, models), driver);
    let r = chat(gw.local_addr(), "r", "");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(served(&a), 1);
    assert_eq!(served(&b), 0, "a bad request is bad everywhere");
    assert_eq!(r.header("x-shardgate-attempts"), Some("1"));
}

/// Waits for a target's breaker on shard 0 to be in `state` (0 closed, 1 open, 2 half-open):
/// an attempt's outcome is recorded once its answer is written, so the client may read the
/// answer a moment before.
fn wait_breaker(gw: &engine::Gateway, target: &str, state: f64) {
    e2e::wait_metric(gw, &format!("shardgate_breaker_state{{target=\"{target}\",shard=\"0\"}}"), state);
}

fn the_breaker_opens_then_half_opens_and_closes(driver: e2e::Runtime) {
    // a fails its first three requests, then recovers.
    let a = mock(Knobs { fault: Some(Fault::Status(500)), fault_first: Some(3), ..Knobs::default() });
    let b = e2e::default_mock();
    let models = "  r:\n    route:\n      strategy: fallback\n      targets: [{target: a/x}, {target: b/y}]\n      retry: {attempts: 0}\n      breaker: {failure_rate: 0.5, min_requests: 3, cooldown: 400ms}\n";
    let gw = e2e::gateway(&config(a.addr(), b.addr(), None, models), driver);
    let addr = gw.local_addr();
    for _ in 0..3 {
        let r = chat(addr, "r", "");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-shardgate-target"), Some("b/y"));
    }
    wait_breaker(&gw, "a/x", 1.0);
    assert_eq!(metric(&gw.metrics_text(), "shardgate_breaker_opens_total{target=\"a/x\"}"), Some(1.0));
    // While open, a is not tried at all.
    let r = chat(addr, "r", "");
    assert_eq!(r.header("x-shardgate-target"), Some("b/y"));
    assert_eq!(r.header("x-shardgate-attempts"), Some("1"));
    assert_eq!(served(&a), 3);
    // After the cooldown one probe goes to a, which has recovered: closed again.
    std::thread::sleep(Duration::from_millis(450));
    let r = chat(addr, "r", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-shardgate-target"), Some("a/x"), "the half-open probe");
    wait_breaker(&gw, "a/x", 0.0);
    let r = chat(addr, "r", "");
    assert_eq!(r.header("x-shardgate-target"), Some("a/x"));
}

fn an_sla_cut_off_cools_a_slow_target(driver: e2e::Runtime) {
    // a answers, but its first byte takes 150 ms against an SLA of 50 ms.
    let a = mock(Knobs { latency: Duration::from_millis(150), ..Knobs::default() });
    let b = e2e::default_mock();
    let models = "  r:\n    route:\n      strategy: fallback\n      targets: [{target: a/x}, {target: b/y}]\n      breaker: {min_requests: 2, failure_rate: 0.5, cooldown: 30s, sla: {first_token: 50ms}}\n";
    let gw = e2e::gateway(&config(a.addr(), b.addr(), None, models), driver);
    for _ in 0..2 {
        let r = stream(gw.local_addr(), "r", "");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-shardgate-target"), Some("a/x"), "slow answers still answer");
    }
    wait_breaker(&gw, "a/x", 1.0);
    let r = stream(gw.local_addr(), "r", "");
    assert_eq!(r.header("x-shardgate-target"), Some("b/y"), "then the slow target cools");
}

fn weights_share_the_traffic(driver: e2e::Runtime) {
    let a = e2e::default_mock();
    let b = e2e::default_mock();
    let models = "  r:\n    route:\n      strategy: weighted\n      targets: [{target: a/x, weight: 3}, {target: b/y, weight: 1}]\n";
    let gw = e2e::gateway(&config(a.addr(), b.addr(), None, models), driver);
    let mut c = Client::connect(gw.local_addr());
    let body = r#"{"model":"r","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}"#;
    let n = 400;
    let mut to_a = 0;
    for _ in 0..n {
        let r = c.post_json("/v1/chat/completions", body, "");
        assert_eq!(r.status, 200);
        if r.header("x-shardgate-target") == Some("a/x") {
            to_a += 1;
        }
    }
    // Binomial(400, 0.75): mean 300, sd 8.7; ±5 sd.
    assert!((256..=344).contains(&to_a), "{to_a} of {n} to the weight-3 target");
    assert_eq!(served(&a) + served(&b), n);
}

fn conditions_pick_by_metadata_and_params(driver: e2e::Runtime) {
    let a = e2e::default_mock();
    let b = e2e::default_mock();
    let models = "  r:\n    route:\n      strategy: conditional\n      targets:\n        - {target: a/gold, when: {metadata.tier: gold}}\n        - {target: a/long, when: {params.max_tokens: {$gte: 1000}}}\n        - {target: b/default}\n";
    let gw = e2e::gateway(&config(a.addr(), b.addr(), None, models), driver);
    let r = chat(gw.local_addr(), "r", "x-shardgate-metadata: {\"tier\":\"gold\"}\r\n");
    assert_eq!(r.header("x-shardgate-target"), Some("a/gold"), "{}", r.text());
    let r = chat(gw.local_addr(), "r", "");
    assert_eq!(r.header("x-shardgate-target"), Some("b/default"));
    let body = r#"{"model":"r","max_tokens":4000,"messages":[{"role":"user","content":"hi"}]}"#;
    let r = Client::connect(gw.local_addr()).post_json("/v1/chat/completions", body, "");
    assert_eq!(r.header("x-shardgate-target"), Some("a/long"));
}

fn a_first_token_timeout_moves_on(driver: e2e::Runtime) {
    // a takes 800 ms to answer at all.
    let a = mock(Knobs { latency: Duration::from_millis(800), ..Knobs::default() });
    let b = e2e::default_mock();
    let models = "  r:\n    route:\n      strategy: fallback\n      targets: [{target: a/x}, {target: b/y}]\n      retry: {attempts: 0}\n      timeouts: {first_token: 200ms}\n  idle:\n    route:\n      targets: [{target: b/y}]\n      timeouts: {idle: 150ms}\n";
    let gw = e2e::gateway(&config(a.addr(), b.addr(), None, models), driver);
    let t = Instant::now();
    let r = stream(gw.local_addr(), "r", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-shardgate-target"), Some("b/y"));
    assert!(t.elapsed() < Duration::from_millis(700), "{:?}", t.elapsed());
    // A request may ask for less, never for more than the route allows.
    let r = stream(gw.local_addr(), "r", "x-shardgate-first-token-timeout-ms: 5000\r\n");
    assert_eq!(r.header("x-shardgate-target"), Some("b/y"));
    // A plain request has no first token to wait for; its own attempt timeout moves it on.
    let t = Instant::now();
    let r = chat(gw.local_addr(), "r", "x-shardgate-attempt-timeout-ms: 200\r\n");
    assert_eq!(r.header("x-shardgate-target"), Some("b/y"), "{}", r.text());
    assert!(t.elapsed() < Duration::from_millis(700), "{:?}", t.elapsed());
    // The route's idle timeout (shorter than the provider's 3 s) cuts a stream that pauses
    // 500 ms between tokens: it ends with an error event, not a clean finish.
    let t = Instant::now();
    let r = stream(gw.local_addr(), "idle", "x-mock-tokens-per-sec: 2\r\n");
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(text.contains("\"error\""), "{text}");
    assert!(!text.contains("[DONE]"), "{text}");
    assert!(t.elapsed() < Duration::from_millis(1500), "{:?}", t.elapsed());
}

fn org_admins_see_breakers_and_models_list_routed_names(driver: e2e::Runtime) {
    let a = failing(Fault::Status(503));
    let b = e2e::default_mock();
    let keys =
        "users:\n  root: {role: org_admin}\nkeys:\n  - {name: root-1, secret: sk-sg-routing-root-00000, user: root}\n";
    let models = "  r:\n    aliases: [r-alias]\n    route:\n      strategy: fallback\n      targets: [{target: a/x}, {target: b/y}]\n      retry: {attempts: 0}\n      breaker: {min_requests: 2, cooldown: 60s}\n";
    let gw = e2e::gateway(&format!("{keys}{}", config(a.addr(), b.addr(), None, models)), driver);
    let root = "authorization: Bearer sk-sg-routing-root-00000\r\n";
    for _ in 0..2 {
        assert_eq!(chat(gw.local_addr(), "r", root).status, 200);
    }
    wait_breaker(&gw, "a/x", 1.0);
    let r = Client::connect(gw.local_addr()).get_with("/admin/v1/targets", root);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let a_entry = v["data"].as_array().unwrap().iter().find(|t| t["provider"] == "a").unwrap().clone();
    let route = &a_entry["routes"][0];
    assert_eq!(route["target"], "a/x", "{a_entry}");
    let shard = &route["shards"][0];
    assert_eq!(shard["breaker"], "open", "{shard}");
    assert_eq!((shard["attempts"].as_u64(), shard["failures"].as_u64()), (Some(2), Some(2)));
    let b_entry = v["data"].as_array().unwrap().iter().find(|t| t["provider"] == "b").unwrap().clone();
    assert_eq!(b_entry["routes"][0]["shards"][0]["breaker"], "closed");

    let r = Client::connect(gw.local_addr()).get_with("/v1/models", root);
    let ids: Vec<String> =
        r.json()["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().into()).collect();
    assert!(ids.contains(&"r".to_string()) && ids.contains(&"r-alias".to_string()), "{ids:?}");
    // The alias is routed like the name.
    let r = chat(gw.local_addr(), "r-alias", root);
    assert_eq!(r.header("x-shardgate-target"), Some("b/y"));
}

fn messages_are_routed_with_anthropic_shaped_errors(driver: e2e::Runtime) {
    let a = failing(Fault::Status(503));
    let b = e2e::default_mock();
    let models = "  r:\n    route:\n      strategy: fallback\n      targets: [{target: a/x}, {target: claude/claude-sonnet-4-5}]\n      retry: {attempts: 0}\n  down:\n    route:\n      targets: [{target: a/x}]\n      retry: {attempts: 1, backoff: 1ms}\n";
    let yaml = config(a.addr(), b.addr(), None, models).replace(
        "models:\n",
        &format!(
            "  claude:\n    kind: anthropic\n    base_url: http://{}/v1\n    api_key: sk-ant\nmodels:\n",
            b.addr()
        ),
    );
    let gw = e2e::gateway(&yaml, driver);
    let body = |model: &str, stream: bool| {
        format!(
            r#"{{"model":"{model}","max_tokens":8,"stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
        )
    };
    let headers = "anthropic-version: 2023-06-01\r\n";
    let r = Client::connect(gw.local_addr()).post_json("/v1/messages", &body("r", false), headers);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-shardgate-target"), Some("claude/claude-sonnet-4-5"));
    assert_eq!(r.json()["type"], "message", "{}", r.text());
    let r = Client::connect(gw.local_addr()).post_json("/v1/messages", &body("r", true), headers);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("event: message_stop"), "{}", r.text());
    assert_eq!(served(&a), 2);

    // Nothing left: the last failure, in Anthropic's error shape.
    let r = Client::connect(gw.local_addr()).post_json("/v1/messages", &body("down", false), headers);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["type"], "error", "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "overloaded_error");
    assert_eq!(r.header("x-shardgate-attempts"), Some("2"));
}

fn a_hedge_wins_over_a_slow_target_which_is_cancelled(driver: e2e::Runtime) {
    // a takes 700 ms to answer; b answers at once. a is always the first choice (b is a
    // standby: weight 0), and the hedge goes to b after 100 ms.
    let a = mock(Knobs { latency: Duration::from_millis(700), ..Knobs::default() });
    let b = e2e::default_mock();
    let models = "  r:\n    route:\n      strategy: weighted\n      targets: [{target: a/x, weight: 1}, {target: b/y, weight: 0}]\n      hedge: {after: 100ms}\n  fast:\n    route:\n      strategy: weighted\n      targets: [{target: b/y, weight: 1}, {target: a/x, weight: 0}]\n      hedge: {after: 300ms}\n";
    let models = format!(
        "{models}  local:\n    route:\n      targets: [{{target: m/mock-1}}, {{target: b/y}}]\n      hedge: {{after: 1ms}}\n"
    );
    let yaml = config(a.addr(), b.addr(), None, &models).replace("models:\n", "  m: {kind: mock}\nmodels:\n");
    let gw = e2e::gateway(&yaml, driver);
    for stream_it in [false, true] {
        let t = Instant::now();
        let r = if stream_it { stream(gw.local_addr(), "r", "") } else { chat(gw.local_addr(), "r", "") };
        let took = t.elapsed();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-shardgate-target"), Some("b/y"), "the hedge answered first");
        assert_eq!(r.header("x-shardgate-hedged"), Some("true"));
        assert_eq!(r.header("x-shardgate-attempts"), Some("2"));
        assert!(took < Duration::from_millis(600), "not kept waiting for the slow target: {took:?}");
        if stream_it {
            assert!(r.text().contains("data: [DONE]"), "{}", r.text());
        }
        // The loser was cancelled: its actor turn is given back at once, long before it would
        // have answered.
        let text = gw.metrics_text();
        assert_eq!(metric(&text, "shardgate_target_in_flight{target=\"a\",shard=\"0\"}"), Some(0.0), "{text}");
    }
    // Anthropic's API is hedged the same way, plain and streamed.
    for stream_it in [false, true] {
        let body = format!(
            r#"{{"model":"r","max_tokens":8,"stream":{stream_it},"messages":[{{"role":"user","content":"hi"}}]}}"#
        );
        let t = Instant::now();
        let r = Client::connect(gw.local_addr()).post_json("/v1/messages", &body, "anthropic-version: 2023-06-01\r\n");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!((r.header("x-shardgate-target"), r.header("x-shardgate-hedged")), (Some("b/y"), Some("true")));
        assert!(t.elapsed() < Duration::from_millis(600), "{:?}", t.elapsed());
        if stream_it {
            assert!(r.text().contains("event: message_stop"), "{}", r.text());
        } else {
            assert_eq!(r.json()["type"], "message", "{}", r.text());
        }
    }
    let text = gw.metrics_text();
    assert_eq!(metric(&text, "shardgate_route_hedges_total"), Some(4.0));
    assert_eq!(metric(&text, "shardgate_route_hedge_wins_total"), Some(4.0));
    // The in-process mock is never raced, and a hedged route to it still answers.
    let r = chat(gw.local_addr(), "local", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-shardgate-target"), Some("m/mock-1"));
    // A fast first choice is never hedged.
    let r = chat(gw.local_addr(), "fast", "");
    assert_eq!(r.header("x-shardgate-target"), Some("b/y"));
    assert_eq!(r.header("x-shardgate-hedged"), None);
    assert_eq!(r.header("x-shardgate-attempts"), Some("1"));
    assert_eq!(metric(&gw.metrics_text(), "shardgate_route_hedges_total"), Some(4.0));
}

fn a_breaker_opened_on_one_shard_protects_the_others(driver: e2e::Runtime) {
    let a = failing(Fault::Status(503));
    let b = e2e::default_mock();
    let models = "  r:\n    route:\n      strategy: fallback\n      targets: [{target: a/x}, {target: b/y}]\n      retry: {attempts: 0}\n      breaker: {min_requests: 2, cooldown: 60s}\n";
    let yaml = config(a.addr(), b.addr(), None, models);
    let gw = e2e::gateway_with(engine::config::ConfigSource::Text { name: "t.yaml".into(), yaml }, driver, 2);
    // Two failures on one connection (one shard): its breaker opens.
    let mut c = Client::connect(gw.local_addr());
    let body = r#"{"model":"r","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}"#;
    for _ in 0..2 {
        assert_eq!(c.post_json("/v1/chat/completions", body, "").header("x-shardgate-target"), Some("b/y"));
    }
    assert_eq!(served(&a), 2);
    // Fresh connections land on either shard; the other shard heard of the breaker and never
    // tries a itself.
    for _ in 0..20 {
        let r = chat(gw.local_addr(), "r", "");
        assert_eq!(r.header("x-shardgate-target"), Some("b/y"));
    }
    assert_eq!(served(&a), 2, "no shard tried the target another shard had cooled");
    let text = gw.metrics_text();
    for shard in 0..2 {
        let series = format!("shardgate_breaker_state{{target=\"a/x\",shard=\"{shard}\"}}");
        assert_eq!(metric(&text, &series), Some(1.0), "{series}");
    }
}

fn a_fallback_is_priced_by_the_model_that_served_it(driver: e2e::Runtime) {
    let a = failing(Fault::Status(503));
    let b = e2e::default_mock();
    let models = "  r:\n    route:\n      strategy: fallback\n      targets: [{target: a/cheap}, {target: b/dear}]\n      retry: {attempts: 0}\n";
    let prices = "pricing:\n  models:\n    cheap: {input_per_mtok: 1.0, output_per_mtok: 1.0}\n    dear: {input_per_mtok: 1000.0, output_per_mtok: 1000.0}\n";
    let gw = e2e::gateway(&format!("{prices}{}", config(a.addr(), b.addr(), None, models)), driver);
    let r = chat(gw.local_addr(), "r", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-shardgate-target"), Some("b/dear"));
    let usage = &r.json()["usage"];
    let tokens = usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap();
    // $1000 per million tokens: a thousandth of a dollar per token, not the first choice's millionth.
    let expected = format!("{}.{:06}", tokens / 1000, (tokens % 1000) * 1000);
    assert_eq!(r.header("x-shardgate-cost-usd"), Some(expected.as_str()));
}

fn health_checks_cool_a_dead_target_before_any_request_and_bring_it_back(driver: e2e::Runtime) {
    // a fails its first two probes (GET /v1/chat/completions gets the mock's fault), then heals.
    let a = mock(Knobs { fault: Some(Fault::Status(503)), fault_first: Some(2), ..Knobs::default() });
    let b = e2e::default_mock();
    let models = "  r:\n    route:\n      strategy: fallback\n      targets: [{target: a/x}, {target: b/y}]\n      breaker: {min_requests: 2, cooldown: 300ms}\n      health_check: {interval: 100ms, timeout: 100ms, path: /chat/completions}\n";
    let gw = e2e::gateway(&config(a.addr(), b.addr(), None, models), driver);
    // No request has been made: the probes alone open a's breaker.
    wait_breaker(&gw, "a/x", 1.0);
    let r = chat(gw.local_addr(), "r", "");
    assert_eq!(r.header("x-shardgate-target"), Some("b/y"));
    assert_eq!(r.header("x-shardgate-attempts"), Some("1"), "the dead target was never tried");
    // After the cooldown a probe finds it healthy again: closed, and traffic goes back to it.
    wait_breaker(&gw, "a/x", 0.0);
    let r = chat(gw.local_addr(), "r", "");
    assert_eq!(r.header("x-shardgate-target"), Some("a/x"));
    assert!(b.stats().requests.load(SeqCst) >= 1 && served(&a) >= 3);
}

fn with_cool_last_a_route_whose_targets_all_cool_says_so(driver: e2e::Runtime) {
    let a = failing(Fault::Status(503));
    let b = e2e::default_mock();
    let models = "  strict:\n    route:\n      targets: [{target: a/x}]\n      retry: {attempts: 0}\n      breaker: {min_requests: 1, cooldown: 60s, cool_last: true}\n  lenient:\n    route:\n      targets: [{target: a/x}]\n      retry: {attempts: 0}\n      breaker: {min_requests: 1, cooldown: 60s}\n";
    let gw = e2e::gateway(&config(a.addr(), b.addr(), None, models), driver);
    // The provider's own 503 first; that opens the breaker.
    let r = chat(gw.local_addr(), "strict", "");
    assert_eq!((r.status, r.error()["code"].as_str()), (503, Some("mock_fault")), "{}", r.text());
    wait_breaker(&gw, "a/x", 1.0);
    // Then the gateway says why it sent nothing, in OpenAI's shape.
    let r = chat(gw.local_addr(), "strict", "");
    assert_eq!(r.status, 503, "{}", r.text());
    let message = r.error()["message"].as_str().unwrap().to_string();
    assert!(message.contains("no target of model `strict`") && message.contains("cooling down"), "{message}");
    assert_eq!(served(&a), 1);
    // Without cool_last, the last target is still tried: the provider's answer, not a refusal.
    let r = chat(gw.local_addr(), "lenient", "");
    assert_eq!(r.error()["code"], "mock_fault");
    assert_eq!(served(&a), 2);
}
