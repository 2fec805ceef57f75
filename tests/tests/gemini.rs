//! OpenAI-shaped chat completions served by a Gemini provider (AI Studio), end to end: the mock
//! provider speaks Gemini's generateContent dialect (and refuses requests without
//! `x-goog-api-key`); the gateway translates both ways, plain and streamed, text and function
//! calls, usage with cached tokens, and errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::net::SocketAddr;

use e2e::{Client, Response, default_mock, gateway, on_both_drivers};
use serde_json::{Value, json};

on_both_drivers!(
    plain_and_tool_answers,
    streams_are_translated,
    provider_errors_are_mapped,
    embeddings_are_translated,
    reasoning_effort_sets_the_thinking_budget,
);

fn config(upstream: SocketAddr) -> String {
    format!(
        "providers:
  google: {{kind: gemini, base_url: 'http://{upstream}/v1beta', api_key: test-google-key}}
  deep:
    kind: gemini
    base_url: 'http://{upstream}/v1beta'
    api_key: test-google-key
    thinking: {{low: 512, medium: 2048, high: 8192}}
models:
  gem: {{target: google/gemini-mock}}
  gem-t: {{target: deep/gemini-mock}}
"
    )
}

fn post(addr: SocketAddr, body: &Value, extra: &str) -> Response {
    Client::connect(addr).post_json("/v1/chat/completions", &body.to_string(), extra)
}

fn plain_and_tool_answers(rt: e2e::Runtime) {
    let up = default_mock();
    let gw = gateway(&config(up.addr()), rt);
    let body = json!({"model": "gem", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]});
    let r = post(gw.local_addr(), &body, "x-mock-tokens: 4\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    let c = r.json();
    assert_eq!((c["object"].as_str(), c["model"].as_str()), (Some("chat.completion"), Some("gem")));
    assert_eq!(c["choices"][0]["message"]["content"], "This is a mock");
    assert_eq!(c["choices"][0]["finish_reason"], "stop");
    assert_eq!(c["usage"]["completion_tokens"], 4);
    assert_eq!(c["usage"]["prompt_tokens_details"]["cached_tokens"], 3);
    // Functions: the call comes back as an OpenAI tool call with its arguments as JSON text.
    let tools = json!([{"type": "function", "function": {"name": "search", "parameters": {"type": "object", "additionalProperties": false}}}]);
    let r = post(
        gw.local_addr(),
        &json!({"model": "gem", "tools": tools, "messages": [{"role": "user", "content": "find"}]}),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let c = r.json();
    assert_eq!(c["choices"][0]["finish_reason"], "tool_calls");
    let call = &c["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "search");
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"query": "mock", "limit": 3}));
    // The result goes back (as a functionResponse naming the function).
    let follow = json!({"model": "gem", "tools": tools, "messages": [
        {"role": "user", "content": "find"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "{\"hits\": 2}"}]});
    assert_eq!(post(gw.local_addr(), &follow, "").status, 200);
}

fn streams_are_translated(rt: e2e::Runtime) {
    let up = default_mock();
    let gw = gateway(&config(up.addr()), rt);
    let body = json!({"model": "gem", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "hi"}]});
    let r = post(gw.local_addr(), &body, "x-mock-tokens: 5\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    let data: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{text}");
    let chunks: Vec<Value> =
        data.iter().filter(|d| **d != "[DONE]").map(|d| serde_json::from_str(d).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(content, "This is a mock response");
    assert_eq!(chunks.iter().filter_map(|c| c["choices"][0]["finish_reason"].as_str()).collect::<Vec<_>>(), ["stop"]);
    let last = chunks.last().unwrap();
    assert_eq!((last["choices"].clone(), last["usage"]["completion_tokens"].as_u64()), (json!([]), Some(5)));
}

fn provider_errors_are_mapped(rt: e2e::Runtime) {
    let up = default_mock();
    let gw = gateway(&config(up.addr()), rt);
    let body = json!({"model": "gem", "messages": [{"role": "user", "content": "hi"}]});
    for (fault, status) in [("status:429", 429), ("status:503", 503), ("status:400", 400), ("status:500", 502)] {
        let r = post(gw.local_addr(), &body, &format!("x-mock-fault: {fault}\r\n"));
        assert_eq!(r.status, status, "{fault}: {}", r.text());
        assert!(r.error()["message"].as_str().unwrap().contains("mock fault"), "{}", r.text());
    }
    // A tool result whose call the conversation never made cannot be named for Gemini: 400.
    let orphan = json!({"model": "gem", "messages": [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "nope", "content": "1"}]});
    let r = post(gw.local_addr(), &orphan, "");
    assert_eq!(r.status, 400, "{}", r.text());
}

fn embeddings_are_translated(rt: e2e::Runtime) {
    use base64::Engine as _;
    let up = default_mock();
    let gw = gateway(&config(up.addr()), rt);
    let post = |body: Value| Client::connect(gw.local_addr()).post_json("/v1/embeddings", &body.to_string(), "");
    let r = post(json!({"model": "gem", "input": ["a", "b"], "dimensions": 4}));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!((v["object"].as_str(), v["model"].as_str()), (Some("list"), Some("gem")));
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!((data[1]["index"].as_u64(), data[1]["embedding"].as_array().unwrap().len()), (Some(1), 4));
    // base64: little-endian f32s, as OpenAI sends them.
    let r = post(json!({"model": "gem", "input": "a", "dimensions": 4, "encoding_format": "base64"}));
    assert_eq!(r.status, 200, "{}", r.text());
    let b64 = r.json()["data"][0]["embedding"].as_str().unwrap().to_string();
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    let floats: Vec<f32> = bytes.chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let norm: f32 = floats.iter().map(|x| x * x).sum();
    assert_eq!(floats.len(), 4);
    assert!((norm - 1.0).abs() < 1e-4, "the mock's unit vector survived the encoding: {floats:?}");
    // Token arrays are text-only at Gemini: refused before any call.
    let r = post(json!({"model": "gem", "input": [[1, 2, 3]]}));
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "input[0]");
}

fn reasoning_effort_sets_the_thinking_budget(rt: e2e::Runtime) {
    let up = default_mock();
    let gw = gateway(&config(up.addr()), rt);
    let body = |model: &str| json!({"model": model, "reasoning_effort": "medium", "messages": [{"role": "user", "content": "hi"}]});
    // The mock reports the budget it was given as thought tokens: OpenAI's reasoning tokens.
    let r = post(gw.local_addr(), &body("gem-t"), "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["usage"]["completion_tokens_details"]["reasoning_tokens"], 2048, "{}", r.text());
    let r = post(gw.local_addr(), &body("gem"), "");
    assert_eq!(r.status, 200, "{}", r.text());
    let reasoning = &r.json()["usage"]["completion_tokens_details"]["reasoning_tokens"];
    assert!(reasoning.is_null() || reasoning == 0, "no budget configured, no thinking: {}", r.text());
}
