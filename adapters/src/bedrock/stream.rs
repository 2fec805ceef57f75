//! ConverseStream → canonical `chat.completion.chunk`s (AWS docs: Bedrock API reference,
//! `API_runtime_ConverseStream`, `API_runtime_ConverseStreamOutput`,
//! `API_runtime_ContentBlockDeltaEvent`, `API_runtime_ContentBlockStartEvent`).
//!
//! Each eventstream message carries one event, named by `:event-type`, whose JSON payload is the
//! event member itself:
//! - `messageStart {role}` → a chunk with `delta.role = assistant`;
//! - `contentBlockStart {contentBlockIndex, start: {toolUse: {toolUseId, name}}}` → a tool call
//!   delta (index = ordinal of the tool call in the message, `id`, `type: function`, `name`,
//!   `arguments: ""`);
//! - `contentBlockDelta {contentBlockIndex, delta}` with `text` → `content`, `toolUse.input`
//!   (a string) → `arguments` to append, `reasoningContent.text` → `reasoning_content`;
//! - `contentBlockStop` → nothing;
//! - `messageStop {stopReason}` → a chunk with an empty delta and the finish reason;
//! - `metadata {usage}` → the usage, kept for [`ConverseStream::usage`] and sent as a final
//!   `choices: []` chunk when the client asked for `include_usage`.
//!
//! `:message-type: exception` messages (`throttlingException`, `validationException`,
//! `modelStreamErrorException`, `serviceUnavailableException`, `internalServerException`, ...)
//! and `:message-type: error` messages become an [`ApiError`]; so does a framing error (502).
//! After an error the stream is dead.

use super::converse::{finish_reason, usage};
use super::eventstream::{EventStreamDecoder, Message};
use super::{api_error, status_for_error_type};
use crate::canonical::{ApiError, ChatChunk, Delta, FinishReason, FunctionCallDelta, Role, ToolCallDelta, Usage};
use serde_json::Value;

/// The default cap on one eventstream message (Bedrock's are small: a delta or an event).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// The translator of one ConverseStream response.
#[derive(Debug)]
pub struct ConverseStream {
    decoder: EventStreamDecoder,
    model: String,
    id: String,
    created: u64,
    include_usage: bool,
    /// `contentBlockIndex` → tool call ordinal, for the blocks that are tool calls.
    tool_blocks: Vec<(u64, u32)>,
    next_tool: u32,
    usage: Option<Usage>,
    finish: Option<FinishReason>,
    failed: Option<ApiError>,
    messages: Vec<Message>,
}

impl ConverseStream {
    /// A translator producing chunks with this `model`, `id` and `created` (the caller's clock).
    pub fn new(model: &str, id: &str, created: u64, include_usage: bool) -> ConverseStream {
        ConverseStream {
            decoder: EventStreamDecoder::new(DEFAULT_MAX_MESSAGE_BYTES),
            model: model.to_string(),
            id: id.to_string(),
            created,
            include_usage,
            tool_blocks: Vec::new(),
            next_tool: 0,
            usage: None,
            finish: None,
            failed: None,
            messages: Vec::new(),
        }
    }

    /// Usage from the `metadata` event, once it has arrived (whether or not the client asked
    /// for it in the stream).
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// The finish reason from `messageStop`, once it has arrived.
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.finish
    }

    /// Takes the next bytes of the response body and pushes the chunks they complete to `out`.
    /// Chunks produced before an error are still pushed.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<ChatChunk>) -> Result<(), ApiError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let mut messages = std::mem::take(&mut self.messages);
        messages.clear();
        let decoded = self.decoder.feed(bytes, &mut messages);
        let mut result = Ok(());
        for msg in &messages {
            if let Err(e) = self.on_message(msg, out) {
                result = Err(e);
                break;
            }
        }
        if result.is_ok()
            && let Err(e) = decoded
        {
            result = Err(api_error(502, format!("Bedrock stream is corrupt: {e}"), None));
        }
        messages.clear();
        self.messages = messages;
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    /// Call when the body ends: an error when it stopped inside a message.
    pub fn finish(&self) -> Result<(), ApiError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        self.decoder.finish().map_err(|e| api_error(502, format!("Bedrock stream is corrupt: {e}"), None))
    }

    fn chunk(&self, delta: Delta, finish_reason: Option<FinishReason>) -> ChatChunk {
        ChatChunk::single(&self.id, &self.model, self.created, delta, finish_reason)
    }

    fn tool_ordinal(&mut self, block: u64) -> (u32, bool) {
        if let Some((_, ord)) = self.tool_blocks.iter().find(|(b, _)| *b == block) {
            return (*ord, false);
        }
        let ord = self.next_tool;
        self.next_tool += 1;
        self.tool_blocks.push((block, ord));
        (ord, true)
    }

    fn on_message(&mut self, msg: &Message, out: &mut Vec<ChatChunk>) -> Result<(), ApiError> {
        match msg.message_type().unwrap_or("event") {
            "event" => {}
            "exception" => return Err(stream_exception(msg)),
            "error" => {
                let code = msg.header_str(":error-code").unwrap_or("error");
                let text = msg.header_str(":error-message").unwrap_or("Bedrock stream error");
                let status = status_for_error_type(code).unwrap_or(502);
                let mut err = api_error(status, text, None);
                err.code = Some(code.to_string());
                return Err(err);
            }
            _ => return Ok(()),
        }
        let Some(event) = msg.event_type() else {
            return Ok(());
        };
        let payload: Value = if msg.payload.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&msg.payload)
                .map_err(|e| api_error(502, format!("Bedrock `{event}` event is not JSON: {e}"), None))?
        };
        let block = payload.get("contentBlockIndex").and_then(Value::as_u64).unwrap_or(0);
        match event {
            "messageStart" => {
                out.push(self.chunk(Delta { role: Some(Role::Assistant), ..Delta::default() }, None));
            }
            "contentBlockStart" => {
                if let Some(tu) = payload.pointer("/start/toolUse") {
                    let (index, _) = self.tool_ordinal(block);
                    let str_of = |k: &str| tu.get(k).and_then(Value::as_str).map(str::to_string);
                    let delta = ToolCallDelta {
                        index,
                        id: str_of("toolUseId"),
                        kind: Some("function".into()),
                        function: FunctionCallDelta { name: str_of("name"), arguments: Some(String::new()) },
                    };
                    out.push(self.chunk(Delta { tool_calls: vec![delta], ..Delta::default() }, None));
                }
            }
            "contentBlockDelta" => {
                let Some(delta) = payload.get("delta") else {
                    return Ok(());
                };
                if let Some(text) = delta.get("text").and_then(Value::as_str) {
                    out.push(self.chunk(Delta { content: Some(text.into()), ..Delta::default() }, None));
                } else if let Some(tu) = delta.get("toolUse") {
                    let input = match tu.get("input") {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Null) | None => String::new(),
                        Some(other) => other.to_string(),
                    };
                    let (index, _) = self.tool_ordinal(block);
                    let delta = ToolCallDelta {
                        index,
                        id: None,
                        kind: None,
                        function: FunctionCallDelta { name: None, arguments: Some(input) },
                    };
                    out.push(self.chunk(Delta { tool_calls: vec![delta], ..Delta::default() }, None));
                } else if let Some(text) = delta.pointer("/reasoningContent/text").and_then(Value::as_str) {
                    out.push(self.chunk(Delta { reasoning_content: Some(text.into()), ..Delta::default() }, None));
                }
            }
            "messageStop" => {
                let reason = payload
                    .get("stopReason")
                    .and_then(Value::as_str)
                    .map(|r| finish_reason(r).unwrap_or(FinishReason::Stop))
                    .unwrap_or(FinishReason::Stop);
                self.finish = Some(reason);
                out.push(self.chunk(Delta::default(), Some(reason)));
            }
            "metadata" => {
                if let Some(u) = payload.get("usage") {
                    let u = usage(u);
                    if self.include_usage {
                        out.push(ChatChunk::usage_only(&self.id, &self.model, self.created, u.clone()));
                    }
                    self.usage = Some(u);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// An exception message → [`ApiError`]: throttlingException→429, validationException→400,
/// modelStreamErrorException/internalServerException→502, serviceUnavailableException→503,
/// modelTimeoutException→504, anything else→502.
pub(crate) fn stream_exception(msg: &Message) -> ApiError {
    let kind = msg.exception_type().unwrap_or("exception");
    let payload: Option<Value> = serde_json::from_slice(&msg.payload).ok();
    let message = payload
        .as_ref()
        .and_then(|v| v.get("message").or_else(|| v.get("Message")))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("Bedrock stream exception: {kind}"));
    let status = status_for_error_type(kind).unwrap_or(502);
    let mut err = api_error(status, message, None);
    err.code = Some(kind.to_string());
    err
}
