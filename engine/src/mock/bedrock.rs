//! Canned AWS Bedrock answers (`/model/{id}/converse` and `/converse-stream`), for the network
//! mock provider, as AWS documents them (Bedrock API reference, `Converse` and
//! `ConverseStream`): JSON for Converse, `application/vnd.amazon.eventstream` frames for the
//! stream. When the request offers tools the answer calls the first one.

use adapters::bedrock::eventstream::{HeaderValue, Message, try_encode};
use serde_json::{Value, json};

use super::Reply;

/// Input tokens the mock reports as read from the prompt cache.
pub const CACHE_READ_TOKENS: u64 = 3;

/// What the request asks the mock to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ask {
    pub tool: Option<String>,
}

/// Reads what the mock needs (`Err`: an error message for a 400 `ValidationException`).
pub fn ask(body: &[u8]) -> Result<Ask, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if !v.get("messages").is_some_and(Value::is_array) {
        return Err("1 validation error detected: Value null at 'messages' failed to satisfy constraint".into());
    }
    let tool = v.pointer("/toolConfig/tools/0/toolSpec/name").and_then(Value::as_str).map(str::to_owned);
    Ok(Ask { tool })
}

/// `{"message": ...}` (the error type goes in the `x-amzn-errortype` header).
pub fn error_body(message: &str) -> Vec<u8> {
    json!({"message": message}).to_string().into_bytes()
}

fn usage(r: &Reply<'_>) -> Value {
    let output = r.completion_tokens as u64;
    json!({"inputTokens": r.prompt_tokens, "outputTokens": output, "totalTokens": r.prompt_tokens + output,
           "cacheReadInputTokens": CACHE_READ_TOKENS})
}

fn tool_input() -> Value {
    json!({"query": "mock", "limit": 3})
}

/// A Converse answer.
pub fn converse(r: &Reply<'_>, ask: &Ask) -> Vec<u8> {
    let (content, stop) = match &ask.tool {
        Some(name) => (
            json!([{"toolUse": {"toolUseId": format!("tooluse_{}", r.id), "name": name, "input": tool_input()}}]),
            "tool_use",
        ),
        None => (json!([{"text": r.text()}]), "end_turn"),
    };
    json!({"output": {"message": {"role": "assistant", "content": content}}, "stopReason": stop,
           "usage": usage(r), "metrics": {"latencyMs": 1}})
    .to_string()
    .into_bytes()
}

fn frame(event: &str, payload: &Value) -> Vec<u8> {
    let message = Message {
        headers: vec![
            (":event-type".into(), HeaderValue::String(event.into())),
            (":content-type".into(), HeaderValue::String("application/json".into())),
            (":message-type".into(), HeaderValue::String("event".into())),
        ],
        payload: payload.to_string().into_bytes(),
    };
    try_encode(&message).unwrap_or_default()
}

/// The frames of a ConverseStream answer.
pub fn stream(r: &Reply<'_>, ask: &Ask) -> Vec<Vec<u8>> {
    let mut frames = vec![frame("messageStart", &json!({"role": "assistant"}))];
    let stop = match &ask.tool {
        None => {
            for i in 0..r.completion_tokens {
                frames
                    .push(frame("contentBlockDelta", &json!({"contentBlockIndex": 0, "delta": {"text": r.token(i)}})));
            }
            frames.push(frame("contentBlockStop", &json!({"contentBlockIndex": 0})));
            "end_turn"
        }
        Some(name) => {
            frames.push(frame(
                "contentBlockStart",
                &json!({"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": format!("tooluse_{}", r.id), "name": name}}}),
            ));
            let input = tool_input().to_string();
            let (a, b) = input.split_at(input.len() / 2);
            for piece in [a, b] {
                frames.push(frame(
                    "contentBlockDelta",
                    &json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": piece}}}),
                ));
            }
            frames.push(frame("contentBlockStop", &json!({"contentBlockIndex": 0})));
            "tool_use"
        }
    };
    frames.push(frame("messageStop", &json!({"stopReason": stop})));
    frames.push(frame("metadata", &json!({"usage": usage(r), "metrics": {"latencyMs": 1}})));
    frames
}

/// `InvokeModel` of an embeddings model: Amazon Titan Text Embeddings (`inputText`, one vector,
/// `dimensions` default 1024 → 8 here to stay small) or Cohere Embed (`texts`, one vector each).
/// Answers the body and the input token count Bedrock sends in
/// `X-Amzn-Bedrock-Input-Token-Count`; `Err`: a `ValidationException` message.
pub fn invoke_embeddings(model_id: &str, body: &[u8]) -> Result<(Vec<u8>, u64), String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("Malformed input request: {e}"))?;
    let tokens = |text: &str| (text.len() as u64).div_ceil(4).max(1);
    if model_id.contains("titan-embed") {
        let text = v
            .get("inputText")
            .and_then(serde_json::Value::as_str)
            .ok_or("Malformed input request: #: required key [inputText] not found")?;
        let dims = v.get("dimensions").and_then(serde_json::Value::as_u64).unwrap_or(8);
        if !matches!(dims, 8 | 256 | 512 | 1024) {
            return Err(format!("Malformed input request: #/dimensions: {dims} is not a valid enum value"));
        }
        let n = tokens(text);
        let answer = serde_json::json!({"embedding": super::unit_vector(0, usize::try_from(dims).unwrap_or(8)), "inputTextTokenCount": n});
        return Ok((answer.to_string().into_bytes(), n));
    }
    if model_id.contains("cohere.embed") {
        let texts: Vec<&str> = v
            .get("texts")
            .and_then(serde_json::Value::as_array)
            .map(|a| a.iter().filter_map(serde_json::Value::as_str).collect())
            .unwrap_or_default();
        if texts.is_empty() || texts.len() > 96 {
            return Err("Malformed input request: #/texts: expected 1 to 96 texts".to_string());
        }
        let vectors: Vec<Vec<f32>> = (0..texts.len()).map(|i| super::unit_vector(i, 8)).collect();
        let n = texts.iter().map(|t| tokens(t)).sum();
        let answer = serde_json::json!({"id": "bmock-embed", "embeddings": {"float": vectors}, "texts": texts, "response_type": "embeddings_by_type"});
        return Ok((answer.to_string().into_bytes(), n));
    }
    Err(format!("The provided model identifier is invalid: {model_id}"))
}

/// Claude on Bedrock through InvokeModel: the Anthropic request as Bedrock takes it (model in
/// the path; `anthropic_version: bedrock-2023-05-31` in the body; no `model` or `stream`
/// keys, which Bedrock refuses), read as the Anthropic mock reads one. `Err`: the
/// `ValidationException` message.
pub fn claude_ask(body: &[u8], stream: bool) -> Result<super::anthropic::Ask, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("Malformed input request: {e}"))?;
    for key in ["model", "stream"] {
        if v.get(key).is_some() {
            return Err(format!(
                "Malformed input request: #: extraneous key [{key}] is not permitted, please reformat your input and try again."
            ));
        }
    }
    let betas = v.get("anthropic_beta").and_then(Value::as_array).into_iter().flatten();
    if betas.into_iter().any(|b| !b.as_str().is_some_and(|b| adapters::bedrock::invoke::BEDROCK_BETAS.contains(&b))) {
        return Err("invalid beta flag".into());
    }
    if v.get("anthropic_version").and_then(Value::as_str) != Some("bedrock-2023-05-31") {
        return Err("Malformed input request: #: required key [anthropic_version] not found or invalid".into());
    }
    let mut ask = super::anthropic::ask(body).map_err(|b| String::from_utf8_lossy(&b).into_owned())?;
    ask.stream = stream;
    Ok(ask)
}

/// InvokeModelWithResponseStream's framing of Anthropic's stream events: each SSE event's
/// data as a `chunk` event whose payload is `{"bytes": base64}`.
pub fn claude_stream(sse_events: &[Vec<u8>]) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    sse_events
        .iter()
        .filter_map(|e| {
            let text = std::str::from_utf8(e).ok()?;
            let data = text.lines().find_map(|l| l.strip_prefix("data: "))?;
            let bytes = base64::engine::general_purpose::STANDARD.encode(data);
            Some(frame("chunk", &json!({"bytes": bytes})))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use adapters::bedrock::eventstream::EventStreamDecoder;

    #[test]
    fn frames_decode_and_answers_parse() {
        let r = Reply {
            id: "b1",
            created: 0,
            model: "m",
            prompt_tokens: 10,
            completion_tokens: 2,
            filler: None,
            script: &[],
            tool_args: &[],
        };
        let mut decoder = EventStreamDecoder::new(1 << 20);
        let mut messages = Vec::new();
        for f in stream(&r, &Ask::default()) {
            decoder.feed(&f, &mut messages).unwrap();
        }
        let events: Vec<_> = messages.iter().map(|m| m.header_str(":event-type").unwrap().to_string()).collect();
        assert_eq!(
            events,
            ["messageStart", "contentBlockDelta", "contentBlockDelta", "contentBlockStop", "messageStop", "metadata"]
        );
        let v: Value = serde_json::from_slice(&converse(&r, &Ask { tool: Some("t".into()) })).unwrap();
        assert_eq!(v["stopReason"], "tool_use");
        assert!(ask(b"{}").is_err());
    }
}
