//! OpenAI-shaped chat completions served by an Anthropic provider, end to end: the mock provider
//! speaks Anthropic's Messages dialect (and refuses requests without `x-api-key`,
//! `anthropic-version` or `max_tokens`), the gateway translates both ways, plain and streamed,
//! text and tool calls, usage with cache tokens, and errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::net::SocketAddr;

use e2e::{Client, Response, default_mock, gateway, on_both_drivers};
use serde_json::{Value, json};

on_both_drivers!(
    plain_answers_come_back_as_chat_completions,
    tool_calls_round_trip,
    streams_are_translated_chunk_by_chunk,
    streamed_tool_arguments_arrive_whole,
    provider_errors_are_mapped,
    untranslatable_requests_are_400,
    reasoning_effort_asks_for_the_configured_thinking,
);

fn config(upstream: SocketAddr) -> String {
    format!(
        "providers:
  claude: {{kind: anthropic, base_url: 'http://{upstream}/v1', api_key: sk-ant-test, default_max_tokens: 512}}
  thinker:
    kind: anthropic
    base_url: 'http://{upstream}/v1'
    api_key: sk-ant-test
    thinking: {{low: 1024, medium: 4096, high: 16000}}
models:
  claude-x: {{target: claude/claude-mock}}
  claude-t: {{target: thinker/claude-mock}}
pricing:
  models:
    claude-mock: {{input_per_mtok: 1000000, output_per_mtok: 1000000, cached_input_per_mtok: 500000}}
"
    )
}

fn post(addr: SocketAddr, body: &Value, extra: &str) -> Response {
    Client::connect(addr).post_json("/v1/chat/completions", &body.to_string(), extra)
}

fn tools() -> Value {
    json!([{"type": "function", "function": {"name": "search", "description": "Search the web",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}])
}

/// The `data:` payloads of an SSE body, without `[DONE]`; and whether `[DONE]` ended it.
fn sse_chunks(text: &str) -> (Vec<Value>, bool) {
    let data: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    let done = data.last() == Some(&"[DONE]");
    (data.iter().filter(|d| **d != "[DONE]").map(|d| serde_json::from_str(d).unwrap()).collect(), done)
}

fn plain_answers_come_back_as_chat_completions(rt: e2e::Runtime) {
    let up = default_mock();
    let gw = gateway(&config(up.addr()), rt);
    let r = post(
        gw.local_addr(),
        &json!({"model": "claude-x", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]}),
        "x-mock-tokens: 4\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let c = r.json();
    assert_eq!(c["object"], "chat.completion");
    assert_eq!(c["model"], "claude-x");
    assert_eq!(c["choices"][0]["message"]["role"], "assistant");
    assert_eq!(c["choices"][0]["message"]["content"], "This is a mock");
    assert_eq!(c["choices"][0]["finish_reason"], "stop");
    let u = &c["usage"];
    // The mock reports 3 cache reads and 2 cache writes on top of its input tokens.
    let input = u["prompt_tokens"].as_u64().unwrap() - 5;
    assert!(input >= 1, "{u}");
    assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 3);
    assert_eq!(u["completion_tokens"], 4);
    assert_eq!(u["total_tokens"].as_u64(), Some(u["prompt_tokens"].as_u64().unwrap() + 4));
    // Priced from the translated usage: cached tokens at the cached price.
    assert!(r.header("x-shardgate-cost-usd").is_some(), "{:?}", r.headers);
}

fn tool_calls_round_trip(rt: e2e::Runtime) {
    let up = default_mock();
    let gw = gateway(&config(up.addr()), rt);
    let r = post(
        gw.local_addr(),
        &json!({"model": "claude-x", "max_tokens": 100, "tools": tools(), "tool_choice": "auto",
                "messages": [{"role": "user", "content": "find cats"}]}),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let c = r.json();
    let msg = &c["choices"][0]["message"];
    assert_eq!(c["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(msg["content"], "Calling a tool.");
    let call = &msg["tool_calls"][0];
    assert_eq!((call["type"].as_str(), call["function"]["name"].as_str()), (Some("function"), Some("search")));
    assert!(call["id"].as_str().unwrap().starts_with("toolu_"), "{call}");
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"query": "mock", "limit": 3}));
    // The result goes back with the same id, as Anthropic's tool_result.
    let follow = json!({"model": "claude-x", "tools": tools(), "messages": [
        {"role": "user", "content": "find cats"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "three cats"}]});
    let r = post(gw.local_addr(), &follow, "");
    assert_eq!(r.status, 200, "{}", r.text());
}

fn streams_are_translated_chunk_by_chunk(rt: e2e::Runtime) {
    let up = default_mock();
    let gw = gateway(&config(up.addr()), rt);
    let body = json!({"model": "claude-x", "stream": true, "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": "hi"}]});
    let r = post(gw.local_addr(), &body, "x-mock-tokens: 5\r\n");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/event-stream"));
    let (chunks, done) = sse_chunks(&r.text());
    assert!(done, "ends with [DONE]: {}", r.text());
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["model"] == "claude-x"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect::<Vec<_>>().join("");
    assert_eq!(text, "This is a mock response");
    let finish: Vec<&Value> = chunks.iter().filter(|c| !c["choices"][0]["finish_reason"].is_null()).collect();
    assert_eq!(finish.len(), 1);
    assert_eq!(finish[0]["choices"][0]["finish_reason"], "stop");
    // Usage last, with `choices: []`, as OpenAI sends it.
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], 5);
    assert_eq!(last["usage"]["prompt_tokens_details"]["cached_tokens"], 3);
    // Without include_usage no chunk carries usage, but the gateway still counts the cost.
    let body = json!({"model": "claude-x", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let r = post(gw.local_addr(), &body, "x-mock-tokens: 5\r\n");
    let (chunks, _) = sse_chunks(&r.text());
    assert!(chunks.iter().all(|c| c.get("usage").is_none_or(Value::is_null)), "{}", r.text());
    assert!(r.text().contains(": x-shardgate-cost-usd: "), "{}", r.text());
    // What the gateway added to each stream's time to first token was measured, once per stream.
    let first_events = e2e::metric(&gw.metrics_text(), "shardgate_stream_first_event_seconds_count");
    assert_eq!(first_events, Some(2.0));
}

fn streamed_tool_arguments_arrive_whole(rt: e2e::Runtime) {
    let up = default_mock();
    let gw = gateway(&config(up.addr()), rt);
    let body = json!({"model": "claude-x", "stream": true, "tools": tools(),
                      "messages": [{"role": "user", "content": "find cats"}]});
    let r = post(gw.local_addr(), &body, "");
    assert_eq!(r.status, 200);
    let (chunks, done) = sse_chunks(&r.text());
    assert!(done);
    let calls: Vec<&Value> =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array()).flatten().collect();
    let first = calls.first().expect("a tool call delta");
    assert_eq!((first["index"].as_u64(), first["function"]["name"].as_str()), (Some(0), Some("search")));
    assert!(first["id"].as_str().unwrap().starts_with("toolu_"));
    let args: String = calls.iter().filter_map(|c| c["function"]["arguments"].as_str()).collect();
    assert_eq!(serde_json::from_str::<Value>(&args).unwrap(), json!({"query": "mock", "limit": 3}));
    let finish = chunks.iter().find_map(|c| c["choices"][0]["finish_reason"].as_str());
    assert_eq!(finish, Some("tool_calls"));
}

fn provider_errors_are_mapped(rt: e2e::Runtime) {
    let up = default_mock();
    let gw = gateway(&config(up.addr()), rt);
    let body = json!({"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]});
    for (fault, status, needle) in
        [("status:529", 503, "overloaded_error"), ("status:429", 429, "mock fault"), ("status:400", 400, "mock fault")]
    {
        let r = post(gw.local_addr(), &body, &format!("x-mock-fault: {fault}\r\n"));
        assert_eq!(r.status, status, "{fault}: {}", r.text());
        let e = r.error();
        assert!(e["message"].as_str().unwrap().contains(needle), "{fault}: {e}");
        assert!(e["type"].is_string(), "{e}");
    }
    // Streams too: the error arrives before any event, as a plain error answer.
    let body = json!({"model": "claude-x", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let r = post(gw.local_addr(), &body, "x-mock-fault: status:529\r\n");
    assert_eq!(r.status, 503, "{}", r.text());
}

fn untranslatable_requests_are_400(rt: e2e::Runtime) {
    let up = default_mock();
    let gw = gateway(&config(up.addr()), rt);
    let r = post(
        gw.local_addr(),
        &json!({"model": "claude-x", "n": 2, "messages": [{"role": "user", "content": "hi"}]}),
        "",
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.error()["param"], "n");
    let r =
        Client::connect(gw.local_addr()).post_json("/v1/chat/completions", r#"{"model":"claude-x","messages":"#, "");
    assert_eq!(r.status, 400, "{}", r.text());
    let r = Client::connect(gw.local_addr()).post_json("/v1/embeddings", r#"{"model":"claude-x","input":"x"}"#, "");
    assert_eq!((r.status, r.error()["param"].as_str()), (400, Some("model")), "{}", r.text());
}

fn reasoning_effort_asks_for_the_configured_thinking(rt: e2e::Runtime) {
    let up = default_mock();
    let gw = gateway(&config(up.addr()), rt);
    let ask = |model: &str, effort: &str| {
        let body = json!({"model": model, "reasoning_effort": effort, "max_completion_tokens": 20000,
                          "messages": [{"role": "user", "content": "hi"}]});
        post(gw.local_addr(), &body, "x-mock-tokens: 3\r\n")
    };
    // The mock thinks aloud with the budget it was given; the thought comes back as
    // `reasoning_content`.
    let r = ask("claude-t", "high");
    assert_eq!(r.status, 200, "{}", r.text());
    let message = &r.json()["choices"][0]["message"];
    assert_eq!(message["reasoning_content"], "Thinking within a budget of 16000 tokens.", "{message}");
    assert_eq!(message["content"], "This is a");
    let r = ask("claude-t", "minimal");
    assert_eq!(r.json()["choices"][0]["message"]["reasoning_content"], "Thinking within a budget of 1024 tokens.");
    // A provider without budgets drops the hint: no thinking.
    let r = ask("claude-x", "high");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["choices"][0]["message"].get("reasoning_content").is_none_or(Value::is_null), "{}", r.text());
}
