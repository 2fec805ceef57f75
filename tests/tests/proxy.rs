//! Proxying to an OpenAI-compatible upstream: keep-alive reuse, pipelining, chunked uploads,
//! byte-exact streams, client disconnects, model mapping, header hygiene, pass-through, usage.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bench_harness::mock::Knobs;
use e2e::{Client, config_for, default_mock, eventually, gateway, metric, mock, on_both_drivers, wait_metric};

on_both_drivers!(
    keep_alive_reuses_one_upstream_connection,
    pipelined_requests_are_answered_in_order,
    chunked_upload_is_forwarded_with_a_length,
    hundred_chunk_stream_is_relayed_byte_exact_and_in_order,
    client_disconnect_mid_stream_closes_the_upstream_connection,
    alias_rewrites_only_the_model_and_same_name_forwards_untouched,
    caller_credentials_never_reach_the_provider,
    passthrough_only_for_declared_paths,
    upstream_errors_are_relayed_with_their_status,
    usage_is_read_from_bodies_and_final_stream_chunks,
    builtin_mock_model_answers_in_process,
    models_are_listed_from_config,
    bodyless_answers_keep_their_framing,
    a_client_that_stops_reading_is_cut_off_after_send_timeout,
    gateway_overhead_is_reported_per_request_and_in_metrics,
);

const CHAT: &str = r#"{"model":"m","messages":[{"role":"user","content":"hello"}]}"#;

fn keep_alive_reuses_one_upstream_connection(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config_for(upstream.addr(), ""), driver);
    let mut c = Client::connect(gw.local_addr());
    for _ in 0..50 {
        let r = c.post_json("/v1/chat/completions", CHAT, "");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // Several client connections still share the shard's pool.
    for _ in 0..5 {
        let r = Client::connect(gw.local_addr()).post_json("/v1/chat/completions", CHAT, "");
        assert_eq!(r.status, 200);
    }
    let stats = upstream.stats();
    assert_eq!(stats.connections_accepted.load(std::sync::atomic::Ordering::SeqCst), 1, "one upstream connection");
    assert_eq!(gw.upstream_connections(), (1, 54));
    wait_metric(&gw, "shardgate_upstream_connections_total{outcome=\"reused\"}", 54.0);
}

fn pipelined_requests_are_answered_in_order(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config_for(upstream.addr(), ""), driver);
    let mut c = Client::connect(gw.local_addr());
    let mut batch = String::new();
    for tokens in 1..=4 {
        batch.push_str(&format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\nx-mock-tokens: {tokens}\r\ncontent-length: {}\r\n\r\n{CHAT}",
            CHAT.len()
        ));
    }
    batch.push_str("GET /health HTTP/1.1\r\nhost: t\r\n\r\n");
    c.send(batch.as_bytes());
    for tokens in 1..=4 {
        let r = c.read_response();
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["usage"]["completion_tokens"], tokens, "responses come back in request order");
    }
    assert_eq!(c.read_response().json()["status"], "ok");
}

fn chunked_upload_is_forwarded_with_a_length(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config_for(upstream.addr(), ""), driver);
    let mut c = Client::connect(gw.local_addr());
    let body = r#"{"model":"m","input":"chunked upload"}"#;
    let (a, b) = body.split_at(10);
    let req = format!(
        "POST /v1/responses HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x};ext=1\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    c.send(req.as_bytes());
    let r = c.read_response();
    assert_eq!(r.status, 200, "{}", r.text());
    let echo = r.json();
    assert_eq!(echo["body"], body);
    let headers = echo["headers"].as_array().unwrap();
    let has = |n: &str| headers.iter().find(|h| h[0] == n).map(|h| h[1].as_str().unwrap().to_string());
    assert_eq!(has("content-length").as_deref(), Some(body.len().to_string().as_str()));
    assert_eq!(has("transfer-encoding"), None, "the upstream gets a length, not our framing");
}

fn hundred_chunk_stream_is_relayed_byte_exact_and_in_order(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config_for(upstream.addr(), ""), driver);
    let headers = "x-mock-tokens: 100\r\nx-mock-id: chatcmpl-fixed\r\nx-mock-created: 1700000000\r\n";
    let stream_body = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#;
    let direct_body = stream_body.replace("\"m\"", "\"upstream-m\"");
    let direct = Client::connect(upstream.addr()).post_json("/v1/chat/completions", &direct_body, headers);
    let via = Client::connect(gw.local_addr()).post_json("/v1/chat/completions", stream_body, headers);
    assert_eq!(via.status, 200);
    assert_eq!(via.header("content-type"), Some("text/event-stream; charset=utf-8"));
    assert_eq!(via.body, direct.body, "the stream is relayed byte for byte");
    let text = via.text();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 1 + 100 + 1 + 1 + 1, "role, 100 tokens, finish, usage, [DONE]");
    for (i, e) in events[1..=100].iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(v["choices"][0]["delta"]["content"], engine::mock::token(i, None), "token {i} in order");
    }
    assert_eq!(*events.last().unwrap(), "data: [DONE]");
}

fn client_disconnect_mid_stream_closes_the_upstream_connection(driver: e2e::Runtime) {
    let upstream = mock(Knobs { tokens: 200, tokens_per_sec: Some(100.0), ..Knobs::default() });
    let gw = gateway(&config_for(upstream.addr(), ""), driver);
    let mut c = Client::connect(gw.local_addr());
    let body = r#"{"model":"m","stream":true,"messages":[]}"#;
    c.send_post("/v1/chat/completions", body, "");
    let (status, _) = c.read_head();
    assert_eq!(status, 200);
    assert!(c.read_chunk().is_some());
    assert!(c.read_chunk().is_some());
    drop(c);
    let stats = upstream.stats();
    let closed = eventually(Duration::from_secs(3), || {
        stats.connections_open.load(std::sync::atomic::Ordering::SeqCst) == 0
            && stats.streams_cut_by_client.load(std::sync::atomic::Ordering::SeqCst) == 1
    });
    assert!(closed, "the gateway closed its upstream connection when the client left");
    let idle = eventually(Duration::from_secs(2), || {
        metric(&gw.metrics_text(), "shardgate_open_connections") == Some(0.0)
            && metric(&gw.metrics_text(), "shardgate_in_flight_requests") == Some(0.0)
    });
    assert!(idle, "nothing leaks on the gateway side");
    wait_metric(&gw, "shardgate_errors_total{kind=\"downstream_closed\"}", 1.0);
}

fn echo_of(gw: &engine::Gateway, body: &str, extra: &str) -> serde_json::Value {
    let r =
        Client::connect(gw.local_addr()).post_json("/v1/chat/completions", body, &format!("x-mock-echo: 1\r\n{extra}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn alias_rewrites_only_the_model_and_same_name_forwards_untouched(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config_for(upstream.addr(), ""), driver);
    let body = r#"{ "messages" : [ {"role":"user","content":"x"} ], "model" : "alias-m", "temperature":0.5 }"#;
    let echo = echo_of(&gw, body, "");
    assert_eq!(echo["body"], body.replace("alias-m", "upstream-m"), "only the model name changed, byte for byte");
    assert_eq!(echo["target"], "/v1/chat/completions");
    let same = r#"{"model":"same",  "messages":[]}"#;
    assert_eq!(echo_of(&gw, same, "")["body"], same, "no rewrite when the names agree");
    let wildcard = r#"{"model":"up/llama-3","messages":[]}"#;
    assert_eq!(echo_of(&gw, wildcard, "")["body"], r#"{"model":"llama-3","messages":[]}"#);
}

fn caller_credentials_never_reach_the_provider(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config_for(upstream.addr(), ""), driver);
    let echo = echo_of(
        &gw,
        CHAT,
        "authorization: Bearer sk-caller\r\nx-api-key: caller\r\ncookie: a=b\r\nx-shardgate-metadata: {}\r\nx-custom: kept\r\nconnection: x-hop\r\nx-hop: gone\r\naccept-encoding: gzip\r\n",
    );
    let headers: Vec<(String, String)> = echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h[0].as_str().unwrap().into(), h[1].as_str().unwrap().into()))
        .collect();
    let get = |n: &str| headers.iter().filter(|(k, _)| k == n).map(|(_, v)| v.as_str()).collect::<Vec<_>>();
    assert_eq!(get("authorization"), ["Bearer sk-upstream-secret"]);
    assert_eq!(get("host"), [upstream.addr().to_string().as_str()]);
    for gone in ["x-api-key", "cookie", "x-shardgate-metadata", "x-hop", "connection", "accept-encoding"] {
        assert!(get(gone).is_empty(), "{gone} must not be forwarded");
    }
    assert_eq!(get("x-custom"), ["kept"]);
}

fn passthrough_only_for_declared_paths(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config_for(upstream.addr(), ""), driver);
    let mut c = Client::connect(gw.local_addr());
    let r = c.get("/v1/files/file-1/content?x=1");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["target"], "/v1/files/file-1/content?x=1");
    assert_eq!(r.json()["method"], "GET");
    let body = r#"{"model":"gpt","input":"hi"}"#;
    let r = c.post_json("/v1/responses", body, "");
    assert_eq!((r.status, r.json()["body_len"].as_u64()), (200, Some(body.len() as u64)));
    let r = c.get("/v1/assistants");
    assert_eq!(r.status, 404);
    assert_eq!(r.error()["code"], "not_found");
}

fn upstream_errors_are_relayed_with_their_status(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config_for(upstream.addr(), ""), driver);
    let mut c = Client::connect(gw.local_addr());
    for (fault, status) in [("status:429", 429), ("status:400", 400), ("status:503", 503), ("status:529", 529)] {
        let r =
            c.post_json("/v1/chat/completions", CHAT, &format!("x-mock-fault: {fault}\r\nx-mock-retry-after: 7\r\n"));
        assert_eq!(r.status, status);
        assert_eq!(r.header("retry-after"), Some("7"));
        assert_eq!(r.error()["code"], "mock_fault", "the provider's own body is relayed");
    }
    // The connection survives relayed errors.
    assert_eq!(c.post_json("/v1/chat/completions", CHAT, "").status, 200);
}

fn usage_is_read_from_bodies_and_final_stream_chunks(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config_for(upstream.addr(), ""), driver);
    let mut c = Client::connect(gw.local_addr());
    assert_eq!(c.post_json("/v1/chat/completions", CHAT, "x-mock-tokens: 5\r\n").status, 200);
    let stream = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#;
    let r = c.post_json("/v1/chat/completions", stream, "x-mock-tokens: 7\r\n");
    assert_eq!(r.status, 200);
    let r = c.post_json("/v1/embeddings", r#"{"model":"m","input":["a","b"]}"#, "");
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 2);
    // A request is accounted just after its last byte is written: poll briefly.
    wait_metric(&gw, "shardgate_requests_total{endpoint=\"embeddings\",code=\"200\"}", 1.0);
    let text = gw.metrics_text();
    assert_eq!(metric(&text, "shardgate_tokens_total{kind=\"completion\"}"), Some(12.0));
    assert!(metric(&text, "shardgate_tokens_total{kind=\"prompt\"}").unwrap() > 0.0);
    assert_eq!(metric(&text, "shardgate_requests_total{endpoint=\"chat_completions\",code=\"200\"}"), Some(2.0));
}

fn builtin_mock_model_answers_in_process(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config_for(upstream.addr(), ""), driver);
    let mut c = Client::connect(gw.local_addr());
    let r = c.post_json("/v1/chat/completions", r#"{"model":"mock","max_tokens":4,"messages":[]}"#, "");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["choices"][0]["message"]["content"], "This is a mock");
    let r = c.post_json("/v1/completions", r#"{"model":"mock","max_tokens":2,"prompt":"x","stream":true}"#, "");
    assert_eq!(r.status, 200);
    assert!(r.text().ends_with("data: [DONE]\n\n"));
    assert!(r.chunks.len() >= 3, "one chunk per event");
    assert_eq!(upstream.stats().requests.load(std::sync::atomic::Ordering::SeqCst), 0, "no network involved");
}

fn models_are_listed_from_config(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config_for(upstream.addr(), ""), driver);
    let mut c = Client::connect(gw.local_addr());
    let r = c.get("/v1/models");
    let ids: Vec<String> =
        r.json()["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, ["alias-m", "m", "mock", "same"]);
    let r = c.get("/v1/models/alias-m");
    assert_eq!((r.status, r.json()["owned_by"].as_str()), (200, Some("up")));
    let r = c.get("/v1/models/nope");
    assert_eq!((r.status, r.error()["code"].as_str()), (404, Some("model_not_found")));
}

fn bodyless_answers_keep_their_framing(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config_for(upstream.addr(), ""), driver);
    let mut c = Client::connect(gw.local_addr());
    // HEAD through pass-through: the upstream's Content-Length (the size of the body a GET
    // would get; the echo describes a HEAD, one byte longer than for GET) is relayed, no body.
    let get_len = c.get("/v1/files/f1").body.len();
    c.send(b"HEAD /v1/files/f1 HTTP/1.1\r\nhost: t\r\n\r\n");
    let (status, headers) = c.read_head();
    assert_eq!(status, 200);
    let len = headers.iter().find(|(n, _)| n == "content-length").map(|(_, v)| v.clone());
    assert_eq!(len, Some((get_len + 1).to_string()));
    // A 204 carries no framing headers and no body, and the connection goes on.
    let r = c.post_json("/v1/chat/completions", CHAT, "x-mock-fault: status:204\r\n");
    assert_eq!(r.status, 204);
    assert!(r.header("content-length").is_none() && r.header("transfer-encoding").is_none());
    assert!(r.body.is_empty());
    assert_eq!(c.post_json("/v1/chat/completions", CHAT, "").status, 200, "framing intact after both");
}

fn a_client_that_stops_reading_is_cut_off_after_send_timeout(driver: e2e::Runtime) {
    let upstream = default_mock();
    let limits = "server:\n  limits: {send_timeout: 300ms}\n";
    // Making 64 MiB of events takes the debug-built mock a while on a busy machine: this test
    // is about the client side, so the provider's first byte may take its time.
    let yaml = config_for(upstream.addr(), limits).replace("first_byte: 2s", "first_byte: 60s");
    let gw = gateway(&yaml, driver);
    let mut c = Client::connect(gw.local_addr());
    // 64 MiB of stream: more than every socket buffer on the way can hold.
    let body = r#"{"model":"m","stream":true,"messages":[]}"#;
    c.send_post("/v1/chat/completions", body, "x-mock-tokens: 2048\r\nx-mock-token-bytes: 32768\r\n");
    assert_eq!(c.read_head().0, 200);
    // ...and never read again.
    let stats = upstream.stats();
    let cut = eventually(Duration::from_secs(10), || {
        stats.streams_cut_by_client.load(std::sync::atomic::Ordering::SeqCst) == 1
            && stats.connections_open.load(std::sync::atomic::Ordering::SeqCst) == 0
    });
    assert!(cut, "the gateway gave up on the stalled client and closed the upstream");
    wait_metric(&gw, "shardgate_in_flight_requests", 0.0);
    drop(c);
}

fn gateway_overhead_is_reported_per_request_and_in_metrics(driver: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&config_for(upstream.addr(), ""), driver);
    let mut c = Client::connect(gw.local_addr());
    // The provider takes 50 ms; the gateway's own share must be far less and exclude it.
    let started = std::time::Instant::now();
    let r = c.post_json("/v1/chat/completions", CHAT, "x-mock-latency-ms: 50\r\n");
    let total = started.elapsed();
    let overhead: u64 = r.header("x-shardgate-overhead-us").expect("overhead header").parse().unwrap();
    assert!(total >= Duration::from_millis(50));
    assert!(overhead < 40_000, "overhead {overhead} µs excludes the provider's 50 ms");
    let stream = c.post_json("/v1/chat/completions", r#"{"model":"m","stream":true}"#, "x-mock-latency-ms: 50\r\n");
    assert!(stream.header("x-shardgate-overhead-us").is_some(), "streams report it in the head");
    let mock = c.post_json("/v1/chat/completions", r#"{"model":"mock"}"#, "");
    assert!(mock.header("x-shardgate-overhead-us").is_some());
    wait_metric(&gw, "shardgate_overhead_seconds_count", 3.0);
}
