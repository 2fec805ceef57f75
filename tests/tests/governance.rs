//! Identity, RBAC, rate limits and budgets end to end: the real gateway against the mock
//! provider over real sockets. Every refusal is checked for its status, OpenAI error shape and
//! headers, and for never reaching the provider.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::net::SocketAddr;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use bench_harness::mock::{Fault, Knobs, MockServer};
use e2e::{Client, Response, default_mock, gateway, gateway_with, metric, mock, on_both_drivers, wait_metric};
use engine::config::ConfigSource;

on_both_drivers!(
    credentials_are_required_and_checked,
    keys_from_env_and_by_hash_under_the_pepper,
    models_outside_the_allow_lists_are_403_naming_the_rule,
    requests_per_minute_refuse_with_429_and_headers,
    tokens_are_reserved_then_settled_with_real_usage,
    concurrency_is_held_for_the_whole_stream,
    audit_mode_never_refuses,
    budgets_cost_and_exhaustion,
    metadata_buckets_and_bad_metadata,
    failed_calls_release_their_reservation,
    revocation_by_reload_applies_at_once,
    gossip_keeps_shards_within_the_bound,
    streams_report_their_cost_in_a_closing_comment,
    streams_without_include_usage_are_priced_from_real_usage,
    streams_that_break_after_the_head_still_count,
);

const PEPPER: &str = "test-pepper-0123456789";
const ALICE: &str = "sk-sg-alice-000000000000";
const NARROW: &str = "sk-sg-narrow-00000000000";
const VIEWER: &str = "sk-sg-viewer-00000000000";
const GONE: &str = "sk-sg-gone-0000000000000";
const OLD: &str = "sk-sg-old-00000000000000";
const SERVICE: &str = "sk-sg-service-000000000";
const FROM_ENV: &str = "sk-sg-from-env-fallback0";

/// Teams, users, an application and keys of every kind; `rules` adds `rate_limits:` and
/// `budgets:` sections. Model `m` goes to `upstream`, `bad` to `failing` (if any).
fn config(upstream: SocketAddr, failing: Option<SocketAddr>, rules: &str) -> String {
    let service_hash = policy::keys::KeyHasher::new(PEPPER.as_bytes()).digest(SERVICE).to_text();
    let bad_provider = failing.map_or(String::new(), |a| {
        format!("  bad: {{kind: openai-compatible, base_url: 'http://{a}/v1', timeouts: {{connect: 2s, first_byte: 2s, idle: 2s}}}}\n")
    });
    let bad_model = if failing.is_some() { "  bad: {target: bad/x}\n" } else { "" };
    format!(
        "auth: {{pepper: {PEPPER}}}
pricing:
  models:
    upstream-m: {{input_per_mtok: 1000000, output_per_mtok: 1000000}}
    same: {{input_per_mtok: 1000000, output_per_mtok: 1000000}}
teams:
  search: {{models: ['m', 'same', 'mock', 'bad', 'up/*']}}
users:
  alice: {{teams: [search]}}
  vic: {{teams: [search], role: viewer}}
applications:
  ranker: {{team: search}}
keys:
  - {{name: alice-1, secret: {ALICE}, user: alice}}
  - {{name: narrow, secret: {NARROW}, user: alice, models: [m]}}
  - {{name: viewer, secret: {VIEWER}, user: vic}}
  - {{name: gone, secret: {GONE}, user: alice, revoked: true}}
  - {{name: old, secret: {OLD}, user: alice, expires_at: '2020-01-01T00:00:00Z'}}
  - {{name: svc, hash: '{service_hash}', application: ranker}}
  - {{name: env, secret: '${{SG_TEST_SURELY_UNSET_KEY:-{FROM_ENV}}}', user: alice}}
{rules}
providers:
  up: {{kind: openai-compatible, base_url: 'http://{upstream}/v1', timeouts: {{connect: 2s, first_byte: 2s, idle: 2s}}}}
  local-mock: {{kind: mock}}
{bad_provider}models:
  m: {{target: up/upstream-m}}
  same: {{target: up/same}}
  other: {{target: up/other}}
  mock: {{target: local-mock/mock-1}}
{bad_model}"
    )
}

fn bearer(key: &str) -> String {
    format!("authorization: Bearer {key}\r\n")
}

/// A chat body whose length is a multiple of 4, so the gateway's prompt estimate (bytes / 4,
/// rounded up) equals the mock's reported prompt tokens (bytes / 4, rounded down).
fn chat(model: &str, max_tokens: u64, stream: bool) -> String {
    let mut user = String::new();
    loop {
        let b = format!(
            r#"{{"model":"{model}","max_tokens":{max_tokens},"stream":{stream},"messages":[],"user":"{user}"}}"#
        );
        if b.len() % 4 == 0 {
            return b;
        }
        user.push('x');
    }
}

fn post(c: &mut Client, key: &str, body: &str) -> Response {
    c.post_json("/v1/chat/completions", body, &bearer(key))
}

fn upstream_requests(m: &MockServer) -> u64 {
    m.stats().requests.load(SeqCst)
}

fn credentials_are_required_and_checked(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config(upstream.addr(), None, ""), driver);
    let mut c = Client::connect(gw.local_addr());
    let body = chat("m", 16, false);
    let r = c.post_json("/v1/chat/completions", &body, "");
    assert_eq!((r.status, r.error()["code"].as_str()), (401, Some("missing_api_key")));
    assert_eq!(r.error()["type"], "invalid_request_error");
    for (key, code) in
        [("sk-sg-nobody-0000000000", "invalid_api_key"), (GONE, "revoked_api_key"), (OLD, "expired_api_key")]
    {
        let r = post(&mut c, key, &body);
        assert_eq!((r.status, r.error()["code"].as_str()), (401, Some(code)), "{key}");
        assert!(!r.text().contains(key), "the error never echoes the key");
    }
    let r = c.post_json("/v1/chat/completions", &body, "authorization: Basic YTpi\r\n");
    assert_eq!(r.status, 401);
    let r = c.get("/v1/models");
    assert_eq!(r.status, 401, "listing models needs a key too");
    assert_eq!(upstream_requests(&upstream), 0, "nothing refused reached the provider");
    // The three header forms SDKs use.
    for header in [bearer(ALICE), format!("x-api-key: {ALICE}\r\n"), format!("api-key: {ALICE}\r\n")] {
        let r = c.post_json("/v1/chat/completions", &body, &header);
        assert_eq!(r.status, 200, "{header}: {}", r.text());
    }
    // Ops endpoints stay open.
    assert_eq!(c.get("/health").status, 200);
    wait_metric(&gw, "shardgate_errors_total{kind=\"unauthorized\"}", 6.0);
}

fn keys_from_env_and_by_hash_under_the_pepper(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config(upstream.addr(), None, ""), driver);
    let mut c = Client::connect(gw.local_addr());
    let body = chat("m", 16, false);
    assert_eq!(post(&mut c, SERVICE, &body).status, 200, "a key declared by its hash");
    assert_eq!(post(&mut c, FROM_ENV, &body).status, 200, "a key whose secret came from ${{ENV:-default}}");
}

fn models_outside_the_allow_lists_are_403_naming_the_rule(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config(upstream.addr(), None, ""), driver);
    let mut c = Client::connect(gw.local_addr());
    // The key allows only `m`.
    let r = post(&mut c, NARROW, &chat("mock", 16, false));
    assert_eq!(r.status, 403);
    let e = r.error();
    assert_eq!((e["code"].as_str(), e["param"].as_str()), (Some("model_not_allowed"), Some("model")));
    assert!(e["message"].as_str().unwrap().contains("key:narrow.models"), "{e}");
    // The team allows no `other`.
    let r = post(&mut c, ALICE, &chat("other", 16, false));
    assert_eq!(r.status, 403);
    assert!(r.error()["message"].as_str().unwrap().contains("team:search.models"));
    // Viewers may read but not call.
    let r = post(&mut c, VIEWER, &chat("m", 16, false));
    assert_eq!(r.status, 403);
    assert!(r.error()["message"].as_str().unwrap().contains("viewer"));
    assert_eq!(upstream_requests(&upstream), 0);
    // /v1/models shows each caller what they may use.
    let ids = |r: Response| -> Vec<String> {
        r.json()["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(ids(c.get_with("/v1/models", &bearer(NARROW))), ["m"]);
    assert_eq!(ids(c.get_with("/v1/models", &bearer(ALICE))), ["m", "mock", "same"]);
    assert_eq!(ids(c.get_with("/v1/models", &bearer(VIEWER))), ["m", "mock", "same"]);
    assert_eq!(c.get_with("/v1/models/mock", &bearer(NARROW)).status, 404);
    assert_eq!(c.get_with("/v1/models/m", &bearer(NARROW)).status, 200);
    assert_eq!(post(&mut c, NARROW, &chat("m", 16, false)).status, 200);
}

fn requests_per_minute_refuse_with_429_and_headers(driver: e2e::Runtime) {
    let upstream = default_mock();
    let rules =
        "rate_limits:\n  - {id: two-a-minute, per: key, when: {keys: [alice-1]}, limits: {requests_per_minute: 2}}\n";
    let gw = gateway(&config(upstream.addr(), None, rules), driver);
    let mut c = Client::connect(gw.local_addr());
    let body = chat("m", 16, false);
    for remaining in ["1", "0"] {
        let r = post(&mut c, ALICE, &body);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-ratelimit-limit-requests"), Some("2"));
        assert_eq!(r.header("x-ratelimit-remaining-requests"), Some(remaining));
        assert!(r.header("x-ratelimit-reset-requests").is_some_and(|v| v.ends_with('s')));
    }
    let r = post(&mut c, ALICE, &body);
    assert_eq!(r.status, 429);
    let e = r.error();
    assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("requests"), Some("rate_limit_exceeded")));
    assert!(e["message"].as_str().unwrap().contains("two-a-minute"), "{e}");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(r.header("x-shardgate-limit-rule"), Some("two-a-minute"));
    assert_eq!(r.header("x-shardgate-limit-scope"), Some("key:alice-1"));
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(upstream_requests(&upstream), 2, "the refused request never reached the provider");
    // Another key is not limited by this rule.
    assert_eq!(post(&mut c, NARROW, &body).status, 200);
    wait_metric(&gw, "shardgate_errors_total{kind=\"rate_limited\"}", 1.0);
}

fn tokens_are_reserved_then_settled_with_real_usage(driver: e2e::Runtime) {
    let upstream = default_mock();
    let rules = "rate_limits:\n  - {id: tpm, per: user, limits: {tokens_per_minute: 400}}\n";
    let gw = gateway(&config(upstream.addr(), None, rules), driver);
    let mut c = Client::connect(gw.local_addr());
    let body = chat("m", 100, false);
    let estimate = body.len() as u64 / 4 + 100;
    let r = post(&mut c, ALICE, &body);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-limit-tokens"), Some("400"));
    assert_eq!(r.header("x-ratelimit-remaining-tokens"), Some((400 - estimate).to_string().as_str()));
    let used = r.json()["usage"]["total_tokens"].as_u64().unwrap();
    assert!(used < estimate, "the mock uses fewer tokens than max_tokens");
    // The first request now counts what it used, not what it reserved.
    let r = post(&mut c, ALICE, &body);
    assert_eq!(r.header("x-ratelimit-remaining-tokens"), Some((400 - used - estimate).to_string().as_str()));
    // Same user, another key: one bucket.
    let r = post(&mut c, NARROW, &body);
    assert_eq!(r.header("x-ratelimit-remaining-tokens"), Some((400 - 2 * used - estimate).to_string().as_str()));
    // A request larger than the whole limit can never pass: no retry-after.
    let r = post(&mut c, ALICE, &chat("m", 1000, false));
    assert_eq!((r.status, r.error()["type"].as_str()), (429, Some("tokens")));
    assert!(r.header("retry-after").is_none());
    assert!(r.error()["message"].as_str().unwrap().contains("too large"));
}

fn concurrency_is_held_for_the_whole_stream(driver: e2e::Runtime) {
    let upstream = mock(Knobs { tokens: 20, tokens_per_sec: Some(100.0), ..Knobs::default() });
    let rules = "rate_limits:\n  - {id: one-at-a-time, per: key, limits: {concurrent: 1}}\n";
    let gw = gateway(&config(upstream.addr(), None, rules), driver);
    let mut streaming = Client::connect(gw.local_addr());
    streaming.send_post("/v1/chat/completions", &chat("m", 16, true), &bearer(ALICE));
    let (status, _) = streaming.read_head();
    assert_eq!(status, 200);
    let mut other = Client::connect(gw.local_addr());
    let r = post(&mut other, ALICE, &chat("m", 16, false));
    assert_eq!((r.status, r.error()["type"].as_str()), (429, Some("requests")));
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(r.error()["message"].as_str().unwrap().contains("concurrent"));
    // Another key has its own slot.
    assert_eq!(post(&mut other, NARROW, &chat("m", 16, false)).status, 200);
    // Once the stream is over, the slot is free.
    while streaming.read_chunk().is_some_and(|c| !c.is_empty()) {}
    let freed =
        e2e::eventually(Duration::from_secs(2), || post(&mut other, ALICE, &chat("m", 16, false)).status == 200);
    assert!(freed);
}

fn audit_mode_never_refuses(driver: e2e::Runtime) {
    let upstream = default_mock();
    let rules = "rate_limits:\n  - {id: watch, mode: audit, limits: {requests_per_minute: 1}}\n";
    let gw = gateway(&config(upstream.addr(), None, rules), driver);
    let mut c = Client::connect(gw.local_addr());
    for _ in 0..3 {
        let r = post(&mut c, ALICE, &chat("m", 16, false));
        assert_eq!(r.status, 200);
        assert!(r.header("x-ratelimit-limit-requests").is_none(), "audit rules set no headers");
    }
    wait_metric(&gw, "shardgate_audit_violations_total", 2.0);
}

fn budgets_cost_and_exhaustion(driver: e2e::Runtime) {
    let upstream = default_mock();
    // upstream-m costs $1 per token (see `config`).
    let rules = "budgets:\n  - {id: team-cap, per: team, limits: {usd_lifetime: 100}}\n";
    let gw = gateway(&config(upstream.addr(), None, rules), driver);
    let mut c = Client::connect(gw.local_addr());
    let body = chat("m", 16, false);
    let r = post(&mut c, ALICE, &body);
    assert_eq!(r.status, 200);
    let tokens = r.json()["usage"]["total_tokens"].as_u64().unwrap();
    assert_eq!(r.header("x-shardgate-cost-usd"), Some(format!("{tokens}.000000").as_str()));
    let mut admitted = 1;
    loop {
        let r = post(&mut c, ALICE, &body);
        if r.status != 200 {
            assert_eq!(r.status, 429);
            let e = r.error();
            assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("insufficient_quota"), Some("budget_exceeded")));
            assert!(e["message"].as_str().unwrap().contains("$100.00"), "{e}");
            assert_eq!(r.header("x-shardgate-limit-rule"), Some("team-cap"));
            assert_eq!(r.header("x-shardgate-limit-scope"), Some("team:search"));
            assert!(r.header("retry-after").is_none(), "a lifetime budget does not come back");
            break;
        }
        admitted += 1;
        assert!(admitted < 100, "the budget never ran out");
    }
    // Each request reserved exactly what it then cost: the budget admits all that fit.
    assert_eq!(admitted, 100 / tokens);
    // The whole team shares it.
    assert_eq!(post(&mut c, SERVICE, &body).status, 429);
    assert_eq!(upstream_requests(&upstream), admitted);
    let spent = metric(&gw.metrics_text(), "shardgate_spend_usd_total").unwrap();
    assert_eq!(spent, (admitted * tokens) as f64);
}

fn metadata_buckets_and_bad_metadata(driver: e2e::Runtime) {
    let upstream = default_mock();
    let rules = "rate_limits:\n  - {id: per-tenant, per: metadata.tenant, limits: {requests_per_minute: 1}}\n";
    let gw = gateway(&config(upstream.addr(), None, rules), driver);
    let mut c = Client::connect(gw.local_addr());
    let body = chat("m", 16, false);
    let with = |tenant: &str| format!("{}x-shardgate-metadata: {{\"tenant\":\"{tenant}\"}}\r\n", bearer(ALICE));
    assert_eq!(c.post_json("/v1/chat/completions", &body, &with("acme")).status, 200);
    let r = c.post_json("/v1/chat/completions", &body, &with("acme"));
    assert_eq!((r.status, r.header("x-shardgate-limit-scope")), (429, Some("tenant:acme")));
    assert_eq!(c.post_json("/v1/chat/completions", &body, &with("globex")).status, 200);
    // Without the field the rule has no bucket to count in.
    assert_eq!(post(&mut c, ALICE, &body).status, 200);
    let bad = format!("{}x-shardgate-metadata: [1,2]\r\n", bearer(ALICE));
    let r = c.post_json("/v1/chat/completions", &body, &bad);
    assert_eq!(r.status, 400);
    assert!(r.error()["message"].as_str().unwrap().contains("x-shardgate-metadata"));
}

fn failed_calls_release_their_reservation(driver: e2e::Runtime) {
    let upstream = default_mock();
    let failing = mock(Knobs { fault: Some(Fault::Status(500)), ..Knobs::default() });
    let rules = "rate_limits:\n  - {id: tight, per: key, limits: {tokens_per_minute: 150}}\n";
    let gw = gateway(&config(upstream.addr(), Some(failing.addr()), rules), driver);
    let mut c = Client::connect(gw.local_addr());
    // Each reserves ~115 tokens of 150: a second could not fit beside an unreleased first.
    let r = post(&mut c, ALICE, &chat("bad", 100, false));
    assert_eq!(r.status, 500, "the provider's error is relayed");
    let r = post(&mut c, ALICE, &chat("bad", 100, false));
    assert_eq!(r.status, 500, "the failed call released its tokens: {}", r.text());
    assert_eq!(post(&mut c, ALICE, &chat("m", 100, false)).status, 200);
}

fn revocation_by_reload_applies_at_once(driver: e2e::Runtime) {
    let upstream = default_mock();
    let dir = e2e::tempdir();
    let path = dir.path().join("gw.yaml");
    std::fs::write(&path, config(upstream.addr(), None, "")).unwrap();
    let gw = gateway_with(ConfigSource::File(path.clone()), driver, 2);
    let mut c = Client::connect(gw.local_addr());
    assert_eq!(post(&mut c, ALICE, &chat("m", 16, false)).status, 200);
    let revoked = config(upstream.addr(), None, "").replace(
        &format!("{{name: alice-1, secret: {ALICE}, user: alice}}"),
        &format!("{{name: alice-1, secret: {ALICE}, user: alice, revoked: true}}"),
    );
    std::fs::write(&path, revoked).unwrap();
    gw.reload().unwrap();
    // Every shard: fresh connections land on either.
    for _ in 0..8 {
        let mut fresh = Client::connect(gw.local_addr());
        let r = post(&mut fresh, ALICE, &chat("m", 16, false));
        assert_eq!((r.status, r.error()["code"].as_str()), (401, Some("revoked_api_key")));
    }
    let r = post(&mut c, ALICE, &chat("m", 16, false));
    assert_eq!(r.status, 401, "an open connection does not keep a revoked key alive");
}

/// Hammer one key from many connections spread over two shards: admitted tokens and spend stay
/// within the limit plus the gossip bound, (shards - 1) x interval x admission rate (allowed
/// twice over for scheduling jitter on a shared machine). Without gossip each shard would admit
/// the whole limit.
fn gossip_keeps_shards_within_the_bound(driver: e2e::Runtime) {
    let upstream = default_mock();
    let rules = "rate_limits:
  - {id: shared-tokens, when: {keys: [alice-1]}, limits: {tokens_per_minute: 20000}}
budgets:
  - {id: shared-spend, when: {keys: [svc]}, limits: {usd_lifetime: 20000}}
governance: {gossip_interval: 5ms}
";
    let gw = gateway_with(
        ConfigSource::Text { name: "gossip.yaml".into(), yaml: config(upstream.addr(), None, rules) },
        driver,
        2,
    );
    // `same` goes upstream under its own name, so the body is not rewritten and the mock's
    // prompt count equals the gateway's estimate: reserved == used == cost in dollars.
    let body = chat("same", 16, false);
    let per_request = body.len() as u64 / 4 + 16;
    for (key, what) in [(ALICE, "tokens"), (SERVICE, "spend")] {
        let started = Instant::now();
        let admitted: u64 = std::thread::scope(|s| {
            let workers: Vec<_> = (0..16)
                .map(|_| {
                    s.spawn(|| {
                        let mut c = Client::connect(gw.local_addr());
                        let mut ok = 0u64;
                        let mut refused_in_a_row = 0;
                        while refused_in_a_row < 3 {
                            match post(&mut c, key, &body).status {
                                200 => {
                                    ok += 1;
                                    refused_in_a_row = 0;
                                }
                                429 => refused_in_a_row += 1,
                                other => panic!("unexpected status {other}"),
                            }
                        }
                        ok
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        let elapsed = started.elapsed().as_secs_f64();
        let rate = admitted as f64 / elapsed;
        let bound = (2.0 * 1.0 * 0.005 * rate).ceil() as u64 + 2;
        let limit = 20000 / per_request;
        println!("{what}: admitted {admitted} requests (limit {limit}, bound {bound}) at {rate:.0}/s");
        assert!(admitted >= limit, "{what}: admitted {admitted}, fewer than the {limit} the limit allows");
        assert!(
            admitted <= limit + bound,
            "{what}: admitted {admitted} requests, over the limit {limit} + bound {bound}"
        );
    }
    let text = gw.metrics_text();
    for shard in ["0", "1"] {
        let n = metric(&text, &format!("shardgate_shard_requests_total{{shard=\"{shard}\"}}")).unwrap_or(0.0);
        assert!(n > 0.0, "shard {shard} served nothing: the test did not exercise gossip");
    }
}

/// Alice streams `body`; the whole answer body as text (after asserting a 200).
fn stream_text(addr: SocketAddr, body: &str) -> String {
    let mut c = Client::connect(addr);
    c.send_post("/v1/chat/completions", body, &bearer(ALICE));
    let (status, _) = c.read_head();
    assert_eq!(status, 200);
    let mut text = String::new();
    while let Some(chunk) = c.read_chunk().filter(|c| !c.is_empty()) {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text
}

/// A stream's cost cannot go in a header (the head left before the usage was known): it comes
/// as an SSE comment after the last event, which SSE clients skip.
fn streams_report_their_cost_in_a_closing_comment(driver: e2e::Runtime) {
    let upstream = mock(Knobs { tokens: 7, ..Knobs::default() });
    let gw = gateway(&config(upstream.addr(), None, ""), driver);
    let body = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"max_tokens":16,"messages":[]}"#;
    let text = stream_text(gw.local_addr(), body);
    let usage: serde_json::Value = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .find(|v| v["usage"].is_object())
        .map(|v| v["usage"].clone())
        .unwrap_or_else(|| panic!("no usage chunk in {text}"));
    let tokens = usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap();
    let comment = text.lines().find_map(|l| l.strip_prefix(": x-shardgate-cost-usd: ")).expect("cost comment");
    // $1 per token for `upstream-m`.
    assert_eq!(comment, format!("{tokens}.000000"), "{text}");
    let done = text.find("data: [DONE]").unwrap();
    assert!(text.find(": x-shardgate-cost-usd").unwrap() > done, "after the last event");
}

/// A client that does not ask for stream usage still pays for what it used: the gateway asks
/// the provider for the usage chunk and strips it from what the client sees.
fn streams_without_include_usage_are_priced_from_real_usage(driver: e2e::Runtime) {
    let upstream = mock(Knobs { tokens: 7, ..Knobs::default() });
    let gw = gateway(&config(upstream.addr(), None, ""), driver);
    let text = stream_text(gw.local_addr(), r#"{"model":"m","stream":true,"max_tokens":500,"messages":[]}"#);
    let events: Vec<serde_json::Value> =
        text.lines().filter_map(|l| l.strip_prefix("data: ")).filter_map(|d| serde_json::from_str(d).ok()).collect();
    assert!(!events.is_empty(), "{text}");
    assert!(events.iter().all(|e| e["choices"].as_array().is_some_and(|c| !c.is_empty())), "no usage chunk: {text}");
    assert!(text.contains("data: [DONE]"));
    // $1 per token: the cost is the provider's real usage (7 output tokens plus the prompt),
    // not the 500-token reservation.
    let cost: f64 =
        text.lines().find_map(|l| l.strip_prefix(": x-shardgate-cost-usd: ")).expect("cost").parse().unwrap();
    assert!((8.0..100.0).contains(&cost), "{cost}");
}

/// A stream that breaks upstream after its head went out used the provider: it settles (at the
/// reservation, its usage unknown) instead of being released, so a flaky provider cannot be
/// used to slip past token limits.
fn streams_that_break_after_the_head_still_count(driver: e2e::Runtime) {
    let upstream = mock(Knobs { tokens: 20, ..Knobs::default() });
    let rules = "rate_limits:\n  - {id: tpm, per: key, limits: {tokens_per_minute: 1000}}\n";
    let gw = gateway(&config(upstream.addr(), None, rules), driver);
    let mut c = Client::connect(gw.local_addr());
    // Reserves the prompt estimate plus 500 output tokens; the stream dies after 3 events.
    c.send_post("/v1/chat/completions", &chat("m", 500, true), &format!("{}x-mock-fault: drop:3\r\n", bearer(ALICE)));
    let (status, _) = c.read_head();
    assert_eq!(status, 200);
    while c.read_chunk().is_some_and(|ch| !ch.is_empty()) {}
    // The broken stream's ~510 tokens still count: another 510 do not fit in 1000. (Settling
    // happens as the gateway ends the request, a moment after the client saw the end.)
    std::thread::sleep(Duration::from_millis(100));
    let r = post(&mut Client::connect(gw.local_addr()), ALICE, &chat("m", 500, false));
    assert_eq!(r.status, 429, "the broken stream's reservation was released instead of settled: {}", r.text());
}
