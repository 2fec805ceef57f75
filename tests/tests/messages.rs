//! Anthropic's `/v1/messages` served from every kind of target, end to end: an Anthropic
//! provider (native: request and answer as they came), an OpenAI-compatible provider and the
//! built-in mock (translated both ways, plain and streamed), with Anthropic-shaped errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::net::SocketAddr;

use e2e::{Client, Response, default_mock, gateway, on_both_drivers};
use serde_json::{Value, json};

on_both_drivers!(
    native_anthropic_targets_get_the_request_as_it_came,
    openai_targets_are_translated_both_ways,
    streams_from_openai_targets_become_anthropic_events,
    the_builtin_mock_answers_messages,
    errors_are_anthropic_shaped,
    count_tokens_is_estimated_locally,
    rate_limits_answer_in_anthropic_shape_with_the_headers,
    gemini_and_bedrock_targets_serve_messages,
    claude_on_bedrock_is_served_natively_through_invoke_model,
);

fn config(upstream: SocketAddr) -> String {
    let base = e2e::config_for(upstream, "");
    format!(
        "{base}  claude-x: {{target: claude/claude-mock}}
pricing:
  models:
    claude-mock: {{input_per_mtok: 1000000, output_per_mtok: 1000000}}
    upstream-m: {{input_per_mtok: 1000000, output_per_mtok: 1000000}}
    'us.anthropic.claude-3-5-haiku-20241022-v1:0': {{input_per_mtok: 800000, output_per_mtok: 4000000}}
"
    )
    .replace(
        "providers:\n",
        &format!(
            "providers:
  claude: {{kind: anthropic, base_url: 'http://{upstream}/v1', api_key: sk-ant-test}}
  google: {{kind: gemini, base_url: 'http://{upstream}/v1beta', api_key: test-google-key}}
  aws:
    kind: bedrock
    base_url: 'http://{upstream}'
    aws: {{region: us-east-1, access_key_id: AKIDEXAMPLE, secret_access_key: wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY}}
"
        ),
    )
    .replacen(
        "\nmodels:\n",
        "\nmodels:\n  gem: {target: google/gemini-mock}\n  br: {target: 'aws/meta.llama3-70b-instruct-v1:0'}\n  brc: {target: 'aws/us.anthropic.claude-3-5-haiku-20241022-v1:0'}\n",
        1,
    )
}

fn post(addr: SocketAddr, body: &Value, extra: &str) -> Response {
    let headers = format!("x-api-key: client-key\r\nanthropic-version: 2023-06-01\r\n{extra}");
    Client::connect(addr).post_json("/v1/messages", &body.to_string(), &headers)
}

fn ask(model: &str, stream: bool) -> Value {
    json!({"model": model, "max_tokens": 6, "stream": stream, "system": "Be brief.",
           "messages": [{"role": "user", "content": "hi"}]})
}

/// `(event name, data)` of every event of an SSE body.
fn events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter_map(|block| {
            let name = block.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((name.to_string(), serde_json::from_str(data).unwrap()))
        })
        .collect()
}

fn text_of(events: &[(String, Value)]) -> String {
    events
        .iter()
        .filter(|(n, d)| n == "content_block_delta" && d["delta"]["type"] == "text_delta")
        .map(|(_, d)| d["delta"]["text"].as_str().unwrap().to_string())
        .collect()
}

fn native_anthropic_targets_get_the_request_as_it_came(rt: e2e::Runtime) {
    let up = default_mock();
    let gw = gateway(&config(up.addr()), rt);
    let r = post(gw.local_addr(), &ask("claude-x", false), "x-mock-tokens: 3\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    let m = r.json();
    assert_eq!((m["type"].as_str(), m["model"].as_str()), (Some("message"), Some("claude-mock")), "{m}");
    assert_eq!(m["content"][0]["text"], "This is a");
    assert_eq!(m["usage"]["cache_read_input_tokens"], 3, "the provider's own usage, untouched");
    assert!(r.header("x-shardgate-cost-usd").is_some());
    let r = post(gw.local_addr(), &ask("claude-x", true), "x-mock-tokens: 3\r\n");
    assert_eq!(r.status, 200);
    let ev = events(&r.text());
    assert_eq!(ev.first().unwrap().0, "message_start");
    assert_eq!(ev.last().unwrap().0, "message_stop");
    assert_eq!(text_of(&ev), "This is a");
    assert!(r.text().contains(": x-shardgate-cost-usd: "), "cost of the native stream: {}", r.text());
}

fn openai_targets_are_translated_both_ways(rt: e2e::Runtime) {
    let up = default_mock();
    let gw = gateway(&config(up.addr()), rt);
    let r = post(gw.local_addr(), &ask("m", false), "x-mock-tokens: 4\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    let m = r.json();
    assert_eq!(
        (m["type"].as_str(), m["role"].as_str(), m["model"].as_str()),
        (Some("message"), Some("assistant"), Some("m"))
    );
    assert_eq!(m["content"][0]["type"], "text");
    assert_eq!(m["content"][0]["text"], "This is a mock");
    assert_eq!(m["stop_reason"], "end_turn");
    assert_eq!(m["usage"]["output_tokens"], 4);
    assert!(m["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert!(r.header("x-shardgate-cost-usd").is_some());
}

fn streams_from_openai_targets_become_anthropic_events(rt: e2e::Runtime) {
    let up = default_mock();
    let gw = gateway(&config(up.addr()), rt);
    let r = post(gw.local_addr(), &ask("m", true), "x-mock-tokens: 5\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("content-type").unwrap().starts_with("text/event-stream"));
    let ev = events(&r.text());
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"], "{names:?}");
    assert_eq!(names.iter().filter(|n| **n == "content_block_start").count(), 1);
    assert_eq!(names.iter().filter(|n| **n == "content_block_stop").count(), 1);
    assert_eq!(text_of(&ev), "This is a mock response");
    let delta = &ev[ev.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 5, "usage came although the client never asked OpenAI for it");
    assert!(!r.text().contains("[DONE]"), "nothing of OpenAI's framing leaks");
}

fn the_builtin_mock_answers_messages(rt: e2e::Runtime) {
    let up = default_mock();
    let gw = gateway(&config(up.addr()), rt);
    let r = post(gw.local_addr(), &ask("mock", false), "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["content"][0]["text"], "This is a mock response from");
    let r = post(gw.local_addr(), &ask("mock", true), "");
    let ev = events(&r.text());
    assert_eq!(text_of(&ev), "This is a mock response from");
    assert_eq!(ev.last().unwrap().0, "message_stop");
}

fn errors_are_anthropic_shaped(rt: e2e::Runtime) {
    let up = default_mock();
    let gw = gateway(&config(up.addr()), rt);
    let shape = |r: &Response, status: u16, kind: &str| {
        assert_eq!(r.status, status, "{}", r.text());
        let e = r.json();
        assert_eq!((e["type"].as_str(), e["error"]["type"].as_str()), (Some("error"), Some(kind)), "{e}");
        assert!(e["error"]["message"].is_string());
    };
    let no_max = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    shape(&post(gw.local_addr(), &no_max, ""), 400, "invalid_request_error");
    shape(&post(gw.local_addr(), &ask("nope", false), ""), 404, "not_found_error");
    shape(&post(gw.local_addr(), &ask("m", false), "x-mock-fault: status:429\r\n"), 429, "rate_limit_error");
    shape(&post(gw.local_addr(), &ask("m", true), "x-mock-fault: status:503\r\n"), 503, "overloaded_error");
    // Without a valid key (once keys exist) the 401 is Anthropic-shaped too.
    let keyed = gateway(
        &format!(
            "keys: [{{name: k, secret: sk-sg-messages-0000000, user: u}}]\nusers: {{u: {{}}}}\n{}",
            config(up.addr())
        ),
        rt,
    );
    shape(&post(keyed.local_addr(), &ask("m", false), ""), 401, "authentication_error");
    // A native target's own error comes back as it came.
    shape(&post(gw.local_addr(), &ask("claude-x", false), "x-mock-fault: status:529\r\n"), 529, "overloaded_error");
}

fn count_tokens_is_estimated_locally(rt: e2e::Runtime) {
    let up = default_mock();
    let gw = gateway(&config(up.addr()), rt);
    let body = json!({"model": "claude-x", "system": "Be brief.", "messages": [{"role": "user", "content": "How many tokens is this?"}]});
    let r = Client::connect(gw.local_addr()).post_json("/v1/messages/count_tokens", &body.to_string(), "");
    assert_eq!(r.status, 200, "{}", r.text());
    let n = r.json()["input_tokens"].as_u64().unwrap();
    assert!((5..=20).contains(&n), "{n}");
    let stats = up.stats();
    assert_eq!(stats.requests.load(std::sync::atomic::Ordering::SeqCst), 0, "no provider call");
}

fn rate_limits_answer_in_anthropic_shape_with_the_headers(rt: e2e::Runtime) {
    let up = default_mock();
    let yaml =
        format!("rate_limits: [{{id: one-a-minute, limits: {{requests_per_minute: 1}}}}]\n{}", config(up.addr()));
    let gw = gateway(&yaml, rt);
    assert_eq!(post(gw.local_addr(), &ask("m", false), "").status, 200);
    let r = post(gw.local_addr(), &ask("m", false), "");
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    assert_eq!(r.header("x-shardgate-limit-rule"), Some("one-a-minute"));
    assert!(r.header("retry-after").is_some() && r.header("x-ratelimit-limit-requests").is_some(), "{:?}", r.headers);
}

fn gemini_and_bedrock_targets_serve_messages(rt: e2e::Runtime) {
    let up = default_mock();
    let gw = gateway(&config(up.addr()), rt);
    for model in ["gem", "br"] {
        let r = post(gw.local_addr(), &ask(model, false), "x-mock-tokens: 4\r\n");
        assert_eq!(r.status, 200, "{model}: {}", r.text());
        let m = r.json();
        assert_eq!((m["type"].as_str(), m["model"].as_str()), (Some("message"), Some(model)), "{m}");
        assert_eq!(m["content"][0]["text"], "This is a mock", "{model}");
        assert_eq!(m["stop_reason"], "end_turn", "{model}");
        assert_eq!(m["usage"]["output_tokens"], 4, "{model}");

        let r = post(gw.local_addr(), &ask(model, true), "x-mock-tokens: 5\r\n");
        assert_eq!(r.status, 200, "{model}: {}", r.text());
        let ev = events(&r.text());
        let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.first(), Some(&"message_start"), "{model}: {names:?}");
        assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"], "{model}: {names:?}");
        assert_eq!(text_of(&ev), "This is a mock response", "{model}");
        let delta = &ev[ev.len() - 2].1;
        assert_eq!(delta["delta"]["stop_reason"], "end_turn", "{model}");
        assert_eq!(delta["usage"]["output_tokens"], 5, "{model}");

        // A tool round trip: Anthropic tools in, the provider's function call back as a
        // `tool_use` block with its input as JSON.
        let tools = json!([{"name": "search", "description": "Search", "input_schema": {"type": "object"}}]);
        let body = json!({"model": model, "max_tokens": 50, "tools": tools,
                          "messages": [{"role": "user", "content": "find"}]});
        let r = post(gw.local_addr(), &body, "");
        assert_eq!(r.status, 200, "{model}: {}", r.text());
        let m = r.json();
        assert_eq!(m["stop_reason"], "tool_use", "{model}: {m}");
        let call = m["content"].as_array().unwrap().iter().find(|b| b["type"] == "tool_use").unwrap().clone();
        assert_eq!(call["name"], "search", "{model}");
        assert!(call["input"].is_object(), "{model}: {call}");
        let follow = json!({"model": model, "max_tokens": 50, "tools": tools, "messages": [
            {"role": "user", "content": "find"},
            {"role": "assistant", "content": [call]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "2 hits"}]}]});
        assert_eq!(post(gw.local_addr(), &follow, "").status, 200, "{model}: the tool result goes back");

        // The provider's errors come back in Anthropic's shape.
        let r = post(gw.local_addr(), &ask(model, false), "x-mock-fault: status:429\r\n");
        assert_eq!(r.status, 429, "{model}: {}", r.text());
        assert_eq!(r.json()["error"]["type"], "rate_limit_error", "{model}");
    }
}

/// Claude on Bedrock takes Anthropic's own format through InvokeModel: the request goes as it
/// came (model in the path, Bedrock's API version in the body; the mock refuses a body with
/// `model` or `stream`, as Bedrock does), and the answer, whole or streamed (AWS event-stream
/// framing turned back into SSE), comes back as Bedrock gave it.
fn claude_on_bedrock_is_served_natively_through_invoke_model(rt: e2e::Runtime) {
    let up = default_mock();
    let gw = gateway(&config(up.addr()), rt);
    let addr = gw.local_addr();
    let r = post(
        addr,
        &ask("brc", false),
        // Claude Code's first-party beta is dropped (Bedrock refuses it); Bedrock's is kept.
        "x-mock-tokens: 4\r\nanthropic-beta: claude-code-20250219,interleaved-thinking-2025-05-14\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let m = r.json();
    assert_eq!((m["type"].as_str(), m["model"].as_str()), (Some("message"), Some("claude-bedrock-mock")), "{m}");
    assert_eq!(m["content"][0]["text"], "This is a mock");
    assert_eq!(m["usage"]["output_tokens"], 4);
    assert!(r.header("x-shardgate-cost-usd").is_some());
    // Nothing is translated: a thinking block comes back as Claude wrote it.
    let thinking = json!({"model": "brc", "max_tokens": 2048, "thinking": {"type": "enabled", "budget_tokens": 1024},
                          "messages": [{"role": "user", "content": "think"}]});
    let r = post(addr, &thinking, "x-mock-tokens: 3\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["content"][0]["type"], "thinking", "{}", r.text());
    // Streamed: Anthropic's events, from Bedrock's framing.
    let r = post(addr, &ask("brc", true), "x-mock-tokens: 5\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("text/event-stream")));
    let ev = events(&r.text());
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(names.last(), Some(&"message_stop"), "{names:?}");
    assert_eq!(text_of(&ev), "This is a mock response");
    assert!(r.text().contains(": x-shardgate-cost-usd: "), "cost of the stream: {}", r.text());
    // Bedrock's errors, in Anthropic's shape.
    let r = post(addr, &ask("brc", false), "x-mock-fault: status:429\r\n");
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
}
