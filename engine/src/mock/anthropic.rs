//! Canned Anthropic Messages answers (`POST /v1/messages`), for the network mock provider:
//! translation tests and benchmarks need an upstream that speaks Anthropic's dialect exactly as
//! documented (<https://docs.anthropic.com/en/api/messages>, "Streaming Messages").
//!
//! When the request offers tools the answer calls the first one (a `tool_use` block, stop reason
//! `tool_use`, its input streamed as `input_json_delta` pieces); otherwise it is text. Usage
//! reports cache reads and writes so cache-token mapping can be checked.

use serde_json::{Value, json};

use super::Reply;

/// Prompt tokens the mock reports as read from the cache, and as written to it.
pub const CACHE_READ_TOKENS: u64 = 3;
pub const CACHE_CREATION_TOKENS: u64 = 2;

/// What the request asks the mock to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ask {
    pub stream: bool,
    /// The first tool's name, when the request offers tools.
    pub tool: Option<String>,
    /// `thinking.budget_tokens` of an enabled thinking: the answer opens with a thinking block.
    pub thinking_budget: Option<u64>,
}

/// Reads what the mock needs from an Anthropic request body (`Err`: an Anthropic error body).
pub fn ask(body: &[u8]) -> Result<Ask, Vec<u8>> {
    let v: Value = serde_json::from_slice(body).map_err(|e| error_body("invalid_request_error", &e.to_string()))?;
    if v.get("max_tokens").and_then(Value::as_u64).is_none() {
        return Err(error_body("invalid_request_error", "max_tokens: Field required"));
    }
    if !v.get("messages").is_some_and(Value::is_array) {
        return Err(error_body("invalid_request_error", "messages: Field required"));
    }
    let tool = v.pointer("/tools/0/name").and_then(Value::as_str).map(str::to_owned);
    let thinking_budget = v
        .get("thinking")
        .filter(|t| t.get("type").and_then(Value::as_str) == Some("enabled"))
        .and_then(|t| t.get("budget_tokens")?.as_u64());
    Ok(Ask { stream: v.get("stream").and_then(Value::as_bool).unwrap_or(false), tool, thinking_budget })
}

/// `{"type":"error","error":{"type","message"}}`.
pub fn error_body(kind: &str, message: &str) -> Vec<u8> {
    json!({"type": "error", "error": {"type": kind, "message": message}}).to_string().into_bytes()
}

fn usage(r: &Reply<'_>) -> Value {
    json!({
        "input_tokens": r.prompt_tokens,
        "cache_creation_input_tokens": CACHE_CREATION_TOKENS,
        "cache_read_input_tokens": CACHE_READ_TOKENS,
        "output_tokens": r.completion_tokens,
    })
}

fn tool_input() -> Value {
    json!({"query": "mock", "limit": 3})
}

/// A complete (non-streamed) message.
pub fn message(r: &Reply<'_>, ask: &Ask) -> Vec<u8> {
    let (content, stop) = match &ask.tool {
        Some(name) => (
            json!([
                {"type": "text", "text": "Calling a tool."},
                {"type": "tool_use", "id": format!("toolu_{}", r.id), "name": name, "input": tool_input()}
            ]),
            "tool_use",
        ),
        None => (json!([{"type": "text", "text": r.text()}]), "end_turn"),
    };
    let content = match (ask.thinking_budget, content) {
        (Some(budget), Value::Array(mut blocks)) => {
            let thought = format!("Thinking within a budget of {budget} tokens.");
            blocks.insert(0, json!({"type": "thinking", "thinking": thought, "signature": "mock-signature"}));
            Value::Array(blocks)
        }
        (_, content) => content,
    };
    json!({
        "id": r.id,
        "type": "message",
        "role": "assistant",
        "model": r.model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": null,
        "usage": usage(r),
    })
    .to_string()
    .into_bytes()
}

fn event(name: &str, data: &Value) -> Vec<u8> {
    format!("event: {name}\ndata: {data}\n\n").into_bytes()
}

/// The events of a streamed message, each a complete SSE event, as Anthropic sends them:
/// `message_start`, per block `content_block_start`/`_delta`.../`_stop`, `ping`,
/// `message_delta` (stop reason, output usage) and `message_stop`.
pub fn stream(r: &Reply<'_>, ask: &Ask) -> Vec<Vec<u8>> {
    let mut start_usage = usage(r);
    start_usage["output_tokens"] = json!(1);
    let mut events = vec![
        event(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": r.id, "type": "message", "role": "assistant", "model": r.model, "content": [],
                "stop_reason": null, "stop_sequence": null, "usage": start_usage}}),
        ),
        event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        event("ping", &json!({"type": "ping"})),
    ];
    let stop = match &ask.tool {
        None => {
            for i in 0..r.completion_tokens {
                events.push(event(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": r.token(i)}}),
                ));
            }
            events.push(event("content_block_stop", &json!({"type": "content_block_stop", "index": 0})));
            "end_turn"
        }
        Some(name) => {
            events.push(event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Calling a tool."}}),
            ));
            events.push(event("content_block_stop", &json!({"type": "content_block_stop", "index": 0})));
            events.push(event(
                "content_block_start",
                &json!({"type": "content_block_start", "index": 1, "content_block": {
                    "type": "tool_use", "id": format!("toolu_{}", r.id), "name": name, "input": {}}}),
            ));
            // The input arrives as JSON text in pieces that split keys and values.
            let input = tool_input().to_string();
            let (a, b) = input.split_at(input.len() / 2);
            for piece in ["", a, b] {
                events.push(event(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": piece}}),
                ));
            }
            events.push(event("content_block_stop", &json!({"type": "content_block_stop", "index": 1})));
            "tool_use"
        }
    };
    events.push(event(
        "message_delta",
        &json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
                "usage": {"output_tokens": r.completion_tokens}}),
    ));
    events.push(event("message_stop", &json!({"type": "message_stop"})));
    events
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn reply() -> Reply<'static> {
        Reply {
            id: "msg_1",
            created: 0,
            model: "claude-mock",
            prompt_tokens: 10,
            completion_tokens: 3,
            filler: None,
            script: &[],
            tool_args: &[],
        }
    }

    #[test]
    fn text_and_tool_answers() {
        let plain: Value = serde_json::from_slice(&message(&reply(), &Ask::default())).unwrap();
        assert_eq!(plain["content"][0]["text"], "This is a");
        assert_eq!(plain["usage"]["cache_read_input_tokens"], CACHE_READ_TOKENS);
        let ask = Ask { stream: false, tool: Some("search".into()), thinking_budget: None };
        let tool: Value = serde_json::from_slice(&message(&reply(), &ask)).unwrap();
        assert_eq!(
            (tool["stop_reason"].as_str(), tool["content"][1]["name"].as_str()),
            (Some("tool_use"), Some("search"))
        );
    }

    #[test]
    fn streamed_tool_input_reassembles() {
        let ask = Ask { stream: true, tool: Some("search".into()), thinking_budget: None };
        let mut json_text = String::new();
        for e in stream(&reply(), &ask) {
            let text = String::from_utf8(e).unwrap();
            let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            let v: Value = serde_json::from_str(data).unwrap();
            if v["delta"]["type"] == "input_json_delta" {
                json_text.push_str(v["delta"]["partial_json"].as_str().unwrap());
            }
        }
        assert_eq!(serde_json::from_str::<Value>(&json_text).unwrap(), tool_input());
    }

    #[test]
    fn requests_need_max_tokens() {
        assert!(ask(br#"{"model":"m","messages":[]}"#).is_err());
        let a = ask(br#"{"model":"m","max_tokens":5,"messages":[],"stream":true,"tools":[{"name":"t"}]}"#).unwrap();
        assert_eq!(a, Ask { stream: true, tool: Some("t".into()), thinking_budget: None });
    }
}
