//! Claude on Bedrock through InvokeModel, Anthropic's own Messages format: what an Anthropic
//! client (`/v1/messages`) sends goes to Bedrock nearly as it came, so nothing is lost to a
//! translation (thinking blocks, cache control, citations, betas).
//!
//! Bedrock's differences from Anthropic's API
//! (<https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-anthropic-claude-messages-request-response.html>):
//! - the model is in the path (`/model/{id}/invoke`, or `/invoke-with-response-stream` for a
//!   stream), not in the body, and there is no `stream` field;
//! - the body carries `anthropic_version: "bedrock-2023-05-31"`, and betas go in the body as
//!   `anthropic_beta` instead of the `anthropic-beta` header;
//! - a stream is AWS event-stream framing, not SSE: each `chunk` event's payload is
//!   `{"bytes": "<base64 of one Anthropic stream event>"}`
//!   (<https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_InvokeModelWithResponseStream.html>).
//!
//! A whole answer is Anthropic's message JSON already.

use base64::Engine as _;
use serde_json::{Map, Value};

use super::eventstream::{EventStreamDecoder, Message};
use super::sigv4::uri_encode;
use crate::canonical::ApiError;

/// The API version Bedrock's Claude models take in the body.
pub const BEDROCK_ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";

/// The betas Bedrock's Claude models take (`anthropic_beta`), per AWS's documentation of the
/// Claude Messages API on Bedrock. Any other (Claude Code sends first-party ones such as
/// `claude-code-20250219` or `oauth-2025-04-20`) makes Bedrock refuse the request with
/// "invalid beta flag", so it is dropped.
pub const BEDROCK_BETAS: &[&str] = &[
    "computer-use-2024-10-22",
    "computer-use-2025-01-24",
    "token-efficient-tools-2025-02-19",
    "interleaved-thinking-2025-05-14",
    "output-128k-2025-02-19",
    "dev-full-thinking-2025-05-14",
    "context-1m-2025-08-07",
    "context-management-2025-06-27",
];

/// Largest event-stream message accepted (one event; Bedrock's are small).
const MAX_MESSAGE: usize = 1 << 20;

/// Whether `model_id` (a model id, an inference profile such as `us.anthropic.claude-...`, or
/// an ARN naming one) is a Claude model, which InvokeModel serves in Anthropic's format.
pub fn is_claude(model_id: &str) -> bool {
    model_id.contains("anthropic.claude")
}

/// An InvokeModel request: the path under the provider's base, the body, and whether the
/// answer streams.
#[derive(Debug, Clone, PartialEq)]
pub struct InvokeRequest {
    pub path: String,
    pub body: Vec<u8>,
    pub stream: bool,
    /// Betas the client asked for that Bedrock does not take, dropped.
    pub dropped_betas: Vec<String>,
}

/// An Anthropic Messages request body (as the client sent it) as InvokeModel's for
/// `model_id`; `beta` is the client's `anthropic-beta` header.
pub fn from_anthropic(body: &[u8], model_id: &str, beta: Option<&str>) -> Result<InvokeRequest, ApiError> {
    let mut fields: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(o)) => o,
        _ => return Err(ApiError::invalid("", "the request body must be a JSON object")),
    };
    let stream = fields.remove("stream").and_then(|s| s.as_bool()).unwrap_or(false);
    fields.remove("model");
    fields.entry("anthropic_version").or_insert_with(|| Value::from(BEDROCK_ANTHROPIC_VERSION));
    // The header's betas and the body's own (a list, or a comma-separated string), once each,
    // those Bedrock takes kept.
    let in_body: Vec<String> = match fields.remove("anthropic_beta") {
        Some(Value::Array(listed)) => listed.iter().filter_map(|b| b.as_str().map(str::to_owned)).collect(),
        Some(Value::String(s)) => vec![s],
        _ => Vec::new(),
    };
    let mut kept: Vec<Value> = Vec::new();
    let mut dropped_betas = Vec::new();
    for b in in_body.iter().map(String::as_str).chain(beta).flat_map(|b| b.split(',')).map(str::trim) {
        if b.is_empty() || kept.iter().any(|k| k == b) || dropped_betas.iter().any(|d| d == b) {
            continue;
        }
        if BEDROCK_BETAS.contains(&b) {
            kept.push(Value::from(b));
        } else {
            dropped_betas.push(b.to_owned());
        }
    }
    if !kept.is_empty() {
        fields.insert("anthropic_beta".into(), Value::Array(kept));
    }
    let op = if stream { "invoke-with-response-stream" } else { "invoke" };
    Ok(InvokeRequest {
        path: format!("/model/{}/{op}", uri_encode(model_id)),
        body: serde_json::to_vec(&Value::Object(fields)).unwrap_or_default(),
        stream,
        dropped_betas,
    })
}

/// Turns InvokeModelWithResponseStream's event-stream bytes into Anthropic's SSE, across
/// arbitrary read boundaries. An exception in the stream (throttling, a model error) is an
/// `Err`, which ends the stream.
#[derive(Debug)]
pub struct InvokeStream {
    decoder: EventStreamDecoder,
    messages: Vec<Message>,
    failed: Option<ApiError>,
}

impl Default for InvokeStream {
    fn default() -> Self {
        Self::new()
    }
}

impl InvokeStream {
    pub fn new() -> InvokeStream {
        InvokeStream { decoder: EventStreamDecoder::new(MAX_MESSAGE), messages: Vec::new(), failed: None }
    }

    /// Appends to `out` the SSE events (`event: {type}\ndata: {json}\n\n`) completed by `bytes`.
    /// On an error, `out` still holds every event that came before it (send them first).
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), ApiError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.feed_inner(bytes, out);
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    fn feed_inner(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), ApiError> {
        // Messages decoded before a corrupt one are still delivered, then the error.
        let decoded = self.decoder.feed(bytes, &mut self.messages);
        for msg in std::mem::take(&mut self.messages) {
            match msg.message_type().unwrap_or("event") {
                "event" if msg.event_type() == Some("chunk") => {
                    let wrapper: Value =
                        serde_json::from_slice(&msg.payload).map_err(|_| corrupt("a chunk is not JSON"))?;
                    let encoded =
                        wrapper.get("bytes").and_then(Value::as_str).ok_or_else(|| corrupt("a chunk has no bytes"))?;
                    let event = base64::engine::general_purpose::STANDARD
                        .decode(encoded)
                        .map_err(|_| corrupt("a chunk's bytes are not base64"))?;
                    let event: Value =
                        serde_json::from_slice(&event).map_err(|_| corrupt("a chunk is not an Anthropic event"))?;
                    let kind =
                        event.get("type").and_then(Value::as_str).ok_or_else(|| corrupt("a chunk has no type"))?;
                    out.extend_from_slice(b"event: ");
                    out.extend_from_slice(kind.as_bytes());
                    out.extend_from_slice(b"\ndata: ");
                    // Written compact: a line break in the event would end the SSE event early.
                    out.extend_from_slice(&serde_json::to_vec(&event).unwrap_or_default());
                    out.extend_from_slice(b"\n\n");
                }
                // Other events (none are documented) carry nothing for the client.
                "event" => {}
                _ => return Err(super::stream::stream_exception(&msg)),
            }
        }
        decoded.map_err(|e| corrupt(&e.to_string()))
    }

    /// At the end of the upstream body: an error if it stopped inside a message.
    pub fn finish(&self) -> Result<(), ApiError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.decoder.finish().map_err(|e| corrupt(&e.to_string()))
    }
}

fn corrupt(why: &str) -> ApiError {
    super::api_error(502, format!("Bedrock's stream is corrupt: {why}"), None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::eventstream::{HeaderValue, try_encode};
    use super::*;

    fn chunk(event: &Value) -> Vec<u8> {
        let bytes = base64::engine::general_purpose::STANDARD.encode(event.to_string());
        try_encode(&Message {
            headers: vec![
                (":event-type".into(), HeaderValue::String("chunk".into())),
                (":content-type".into(), HeaderValue::String("application/json".into())),
                (":message-type".into(), HeaderValue::String("event".into())),
            ],
            payload: serde_json::json!({"bytes": bytes}).to_string().into_bytes(),
        })
        .unwrap()
    }

    #[test]
    fn requests_lose_model_and_stream_and_gain_the_version_and_betas() {
        let body = br#"{"model":"claude-sonnet-4-5","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"hi"}],"anthropic_beta":["a","interleaved-thinking-2025-05-14"]}"#;
        let r = from_anthropic(
            body,
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            Some("claude-code-20250219, interleaved-thinking-2025-05-14,context-1m-2025-08-07"),
        )
        .unwrap();
        assert_eq!(r.path, "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke-with-response-stream");
        assert!(r.stream);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["anthropic_version"], BEDROCK_ANTHROPIC_VERSION);
        // Bedrock's betas kept (the body's list and the header's), first-party ones dropped.
        assert_eq!(
            v["anthropic_beta"],
            serde_json::json!(["interleaved-thinking-2025-05-14", "context-1m-2025-08-07"])
        );
        assert_eq!(r.dropped_betas, ["a", "claude-code-20250219"]);
        assert!(v.get("model").is_none() && v.get("stream").is_none());
        assert_eq!(v["max_tokens"], 100);
        let r =
            from_anthropic(br#"{"model":"m","messages":[]}"#, "anthropic.claude-3-haiku-20240307-v1:0", None).unwrap();
        assert!(r.path.ends_with("/invoke") && !r.stream);
        assert!(from_anthropic(b"[]", "m", None).is_err());
        assert!(is_claude("arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-5-sonnet-20240620-v1:0"));
        assert!(!is_claude("amazon.nova-pro-v1:0"));
    }

    #[test]
    fn a_stream_becomes_anthropic_sse_across_any_split() {
        let events = [
            serde_json::json!({"type": "message_start", "message": {"id": "msg_1", "role": "assistant", "content": []}}),
            serde_json::json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
            serde_json::json!({"type": "message_stop", "amazon-bedrock-invocationMetrics": {"inputTokenCount": 3}}),
        ];
        let wire: Vec<u8> = events.iter().flat_map(chunk).collect();
        let mut whole = Vec::new();
        InvokeStream::new().feed(&wire, &mut whole).unwrap();
        let text = String::from_utf8(whole.clone()).unwrap();
        assert!(text.starts_with("event: message_start\ndata: {"), "{text}");
        assert!(text.contains("event: content_block_delta\ndata: ") && text.ends_with("\n\n"), "{text}");
        for split in [1, 7, 50, wire.len() - 1] {
            let mut s = InvokeStream::new();
            let mut out = Vec::new();
            s.feed(&wire[..split], &mut out).unwrap();
            s.feed(&wire[split..], &mut out).unwrap();
            s.finish().unwrap();
            assert_eq!(out, whole);
        }
        // Stopped inside a message: an error at the end.
        let mut s = InvokeStream::new();
        s.feed(&wire[..wire.len() - 3], &mut Vec::new()).unwrap();
        assert!(s.finish().is_err());
    }

    #[test]
    fn exceptions_end_the_stream_with_their_error() {
        let exception = try_encode(&Message {
            headers: vec![
                (":exception-type".into(), HeaderValue::String("throttlingException".into())),
                (":message-type".into(), HeaderValue::String("exception".into())),
            ],
            payload: br#"{"message":"Too many requests, please wait before trying again."}"#.to_vec(),
        })
        .unwrap();
        let mut s = InvokeStream::new();
        let e = s.feed(&exception, &mut Vec::new()).unwrap_err();
        assert_eq!(e.status, 429);
        assert!(e.message.contains("Too many requests"));
        assert!(s.feed(b"", &mut Vec::new()).is_err(), "a failed stream stays failed");
        // Events in the same read as the exception are not lost: they come first.
        let delta = serde_json::json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}});
        let mut both = chunk(&delta);
        both.extend_from_slice(&exception);
        let mut out = Vec::new();
        assert_eq!(InvokeStream::new().feed(&both, &mut out).unwrap_err().status, 429);
        assert!(String::from_utf8(out).unwrap().starts_with("event: content_block_delta\ndata: "));
        let mut bad = InvokeStream::new();
        let garbage = try_encode(&Message {
            headers: vec![(":event-type".into(), HeaderValue::String("chunk".into()))],
            payload: br#"{"bytes":"!!"}"#.to_vec(),
        })
        .unwrap();
        assert_eq!(bad.feed(&garbage, &mut Vec::new()).unwrap_err().status, 502);
    }
}
