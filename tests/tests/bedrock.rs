//! OpenAI-shaped chat completions served by an AWS Bedrock provider, end to end: requests are
//! SigV4-signed (the mock refuses unsigned ones), translated to Converse / ConverseStream, and
//! the answers — JSON, or binary eventstream frames — translated back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::net::SocketAddr;

use e2e::{Client, Response, default_mock, gateway, on_both_drivers};
use engine::config::ConfigSource;
use serde_json::{Value, json};

on_both_drivers!(
    plain_and_tool_answers,
    streams_are_decoded_and_translated,
    errors_are_mapped,
    embeddings_from_titan_and_cohere
);

fn config(upstream: SocketAddr) -> String {
    format!(
        "providers:
  aws:
    kind: bedrock
    base_url: 'http://{upstream}'
    aws: {{region: us-east-1, access_key_id: AKIDEXAMPLE, secret_access_key: wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY}}
models:
  br: {{target: 'aws/anthropic.claude-3-haiku-20240307-v1:0'}}
  titan: {{target: 'aws/amazon.titan-embed-text-v2:0'}}
  cohere: {{target: 'aws/cohere.embed-english-v3'}}
"
    )
}

fn post(addr: SocketAddr, body: &Value, extra: &str) -> Response {
    Client::connect(addr).post_json("/v1/chat/completions", &body.to_string(), extra)
}

fn plain_and_tool_answers(rt: e2e::Runtime) {
    let up = default_mock();
    let gw = gateway(&config(up.addr()), rt);
    let body = json!({"model": "br", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]});
    let r = post(gw.local_addr(), &body, "x-mock-tokens: 4\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    let c = r.json();
    assert_eq!((c["object"].as_str(), c["model"].as_str()), (Some("chat.completion"), Some("br")));
    assert_eq!(c["choices"][0]["message"]["content"], "This is a mock");
    assert_eq!(c["choices"][0]["finish_reason"], "stop");
    assert_eq!(c["usage"]["completion_tokens"], 4);
    assert_eq!(c["usage"]["prompt_tokens_details"]["cached_tokens"], 3);
    let tools = json!([{"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}]);
    let r = post(
        gw.local_addr(),
        &json!({"model": "br", "tools": tools, "messages": [{"role": "user", "content": "find"}]}),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let c = r.json();
    assert_eq!(c["choices"][0]["finish_reason"], "tool_calls");
    let call = &c["choices"][0]["message"]["tool_calls"][0];
    assert!(call["id"].as_str().unwrap().starts_with("tooluse_"));
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"query": "mock", "limit": 3}));
}

fn streams_are_decoded_and_translated(rt: e2e::Runtime) {
    let up = default_mock();
    let gw = gateway(&config(up.addr()), rt);
    let body = json!({"model": "br", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "hi"}]});
    let r = post(gw.local_addr(), &body, "x-mock-tokens: 5\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("content-type").unwrap().starts_with("text/event-stream"));
    let text = r.text();
    let data: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{text}");
    let chunks: Vec<Value> =
        data.iter().filter(|d| **d != "[DONE]").map(|d| serde_json::from_str(d).unwrap()).collect();
    let content: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(content, "This is a mock response");
    assert_eq!(chunks.iter().filter_map(|c| c["choices"][0]["finish_reason"].as_str()).collect::<Vec<_>>(), ["stop"]);
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 5);
    // Tool input streamed in pieces arrives whole.
    let tools = json!([{"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}]);
    let body =
        json!({"model": "br", "stream": true, "tools": tools, "messages": [{"role": "user", "content": "find"}]});
    let text = post(gw.local_addr(), &body, "").text();
    let args: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&args).unwrap(), json!({"query": "mock", "limit": 3}), "{text}");
}

fn errors_are_mapped(rt: e2e::Runtime) {
    let up = default_mock();
    let gw = gateway(&config(up.addr()), rt);
    let body = json!({"model": "br", "messages": [{"role": "user", "content": "hi"}]});
    for (fault, status) in [("status:429", 429), ("status:503", 503), ("status:400", 400)] {
        let r = post(gw.local_addr(), &body, &format!("x-mock-fault: {fault}\r\n"));
        assert_eq!(r.status, status, "{fault}: {}", r.text());
        assert!(r.error()["message"].is_string());
    }
    // Images must be bytes for Bedrock: an http URL is refused before any call.
    let image = json!({"model": "br", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]});
    assert_eq!(post(gw.local_addr(), &image, "").status, 400);
    // Without credentials the provider does not load, and the error says what is missing.
    let bare = config(up.addr()).replace(
        "    aws: {region: us-east-1, access_key_id: AKIDEXAMPLE, secret_access_key: wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY}\n",
        "    aws: {region: us-east-1, access_key_id: AKIDEXAMPLE}\n",
    );
    let err =
        engine::config::load(&ConfigSource::Text { name: "t.yaml".into(), yaml: bare }, 1).err().unwrap().to_string();
    let ok = std::env::var("AWS_SECRET_ACCESS_KEY").is_ok() || err.contains("secret_access_key");
    assert!(ok, "{err}");
}

fn embeddings_from_titan_and_cohere(rt: e2e::Runtime) {
    let up = default_mock();
    let gw = gateway(&config(up.addr()), rt);
    let post = |body: Value| Client::connect(gw.local_addr()).post_json("/v1/embeddings", &body.to_string(), "");
    // Titan takes one input per call: two calls, answered as one list in input order.
    let r = post(json!({"model": "titan", "input": ["hello", "world!!!"]}));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["model"], "titan");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.iter().map(|d| d["index"].as_u64().unwrap()).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(v["usage"]["prompt_tokens"], 4, "Titan's inputTextTokenCount of each call, summed: {v}");
    assert_eq!(up.stats().requests.load(std::sync::atomic::Ordering::SeqCst), 2);
    // Cohere takes them together; its token count comes in a header.
    let r = post(json!({"model": "cohere", "input": ["a", "b", "c"]}));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["data"].as_array().unwrap().len(), 3);
    assert_eq!(v["usage"]["prompt_tokens"], 3, "{v}");
    // Dimensions Titan does not offer are refused before any call.
    let r = post(json!({"model": "titan", "input": "x", "dimensions": 7}));
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "dimensions");
}
