//! Anthropic Messages stream → `chat.completion.chunk`s
//! (<https://docs.anthropic.com/en/docs/build-with-claude/streaming>).
//!
//! Anthropic streams `message_start`, then per content block `content_block_start`,
//! `content_block_delta`s and `content_block_stop`, then `message_delta` (stop reason, output
//! usage) and `message_stop`, with `ping`s anywhere and an `error` event on failure. The
//! translation:
//!
//! | Anthropic event | chunk |
//! |---|---|
//! | `message_start` | `delta: {role: assistant, content: ""}`; id and input usage remembered |
//! | `content_block_start` text / thinking | nothing (unless the block starts with text) |
//! | `content_block_start` tool_use | a tool-call delta: `index` (the call's ordinal among tool_use blocks), `id`, `type`, `function.name`, `arguments: ""` |
//! | `text_delta` | `delta.content` |
//! | `input_json_delta` | `delta.tool_calls[0].function.arguments` (the call's `index`) |
//! | `thinking_delta` | `delta.reasoning_content` |
//! | `message_delta` | `finish_reason` (mapped `stop_reason`); usage remembered |
//! | `message_stop` | with `include_usage`, a final chunk with `choices: []` and the usage |
//! | `content_block_stop` of a tool_use block that streamed no JSON | `arguments: "{}"` |
//! | `ping`, other `content_block_stop`s, `signature_delta`, unknown | nothing |
//! | `error` | nothing; the error is kept for [`AnthropicStream::take_error`] |
//!
//! Usage is always captured ([`AnthropicStream::usage`]) whether or not the client asked for it.
//! A stream that ends without `message_stop`, or that has an event over [`MAX_EVENT_BYTES`]
//! before it, also leaves an error, so the engine can tell the client the answer is incomplete.
//! The oversize event is placed in the stream by the scanner ([`SseItem::Overflow`]), not
//! noticed after a read: whether it came before `message_stop` must not depend on whether both
//! arrived in the same read.

use serde::Deserialize;
use serde_json::Value;

use super::error::error_from_type;
use super::response::{AnthropicUsage, finish_reason};
use crate::canonical::{ApiError, ChatChunk, Delta, FinishReason, FunctionCallDelta, Role, ToolCallDelta, Usage};
use crate::sse::{SseEvent, SseItem, SseScanner};

/// The largest event the translator buffers; a larger one is dropped and reported as an error.
pub const MAX_EVENT_BYTES: usize = 4 << 20;

/// Incremental translator for one Anthropic stream.
pub struct AnthropicStream {
    scanner: SseScanner,
    state: State,
}

struct State {
    model: String,
    created: u64,
    include_usage: bool,
    id: String,
    usage: Option<AnthropicUsage>,
    /// `(content block index, tool call ordinal, arguments seen)` of every tool_use block.
    tool_blocks: Vec<(u64, u32, bool)>,
    next_tool: u32,
    error: Option<ApiError>,
    /// An error was recorded (even if since taken): a later truncation is not a second error.
    errored: bool,
    stopped: bool,
    finished: bool,
}

impl AnthropicStream {
    /// A translator whose chunks carry `model` and `created`; `include_usage` adds the final
    /// usage chunk (the client's `stream_options.include_usage`).
    #[must_use]
    pub fn new(model: impl Into<String>, created: u64, include_usage: bool) -> Self {
        Self {
            scanner: SseScanner::new(MAX_EVENT_BYTES),
            state: State {
                model: model.into(),
                created,
                include_usage,
                id: String::new(),
                usage: None,
                tool_blocks: Vec::new(),
                next_tool: 0,
                error: None,
                errored: false,
                stopped: false,
                finished: false,
            },
        }
    }

    /// Feeds the next bytes read from upstream (any boundaries) and appends the chunks they
    /// complete to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<ChatChunk>) {
        let state = &mut self.state;
        self.scanner.feed_items(bytes, |item| match item {
            SseItem::Event(ev) => state.on_event(ev, out),
            SseItem::Overflow => state.on_overflow(),
        });
    }

    /// The upstream stream ended: translates an event left without its closing blank line and
    /// records an error if the stream stopped before `message_stop`.
    pub fn finish(&mut self, out: &mut Vec<ChatChunk>) {
        if self.state.finished {
            return;
        }
        let state = &mut self.state;
        // `SseScanner::finish` never overflows: every oversize event was met in `feed`.
        self.scanner.finish(|ev| state.on_event(ev, out));
        self.state.finished = true;
        if !self.state.stopped && !self.state.errored {
            self.state.errored = true;
            self.state.error = Some(ApiError {
                status: 502,
                message: "the Anthropic stream ended before message_stop".into(),
                kind: "upstream_error".into(),
                param: None,
                code: Some("upstream_protocol".into()),
            });
        }
    }

    /// The error the stream reported (an `error` event) or ran into, once.
    pub fn take_error(&mut self) -> Option<ApiError> {
        self.state.error.take()
    }

    /// Usage so far (input from `message_start`, output from `message_delta`), with cache
    /// tokens mapped as in [`super::response::from_anthropic`]; `None` before `message_start`.
    #[must_use]
    pub fn usage(&self) -> Option<Usage> {
        self.state.usage.map(AnthropicUsage::to_openai)
    }

    /// `message_stop` arrived: the answer is complete.
    #[must_use]
    pub fn is_complete(&self) -> bool {
        self.state.stopped
    }

    /// The message id (`msg_…`) from `message_start`, used as the chunks' id.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.state.id
    }
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

impl State {
    /// An event over [`MAX_EVENT_BYTES`] was dropped: the answer is incomplete, unless it came
    /// after `message_stop` or after an error already recorded.
    fn on_overflow(&mut self) {
        if self.errored || self.stopped {
            return;
        }
        self.errored = true;
        self.error = Some(ApiError {
            status: 502,
            message: format!("an Anthropic stream event exceeded {MAX_EVENT_BYTES} bytes"),
            kind: "upstream_error".into(),
            param: None,
            code: Some("upstream_too_large".into()),
        });
    }

    fn on_event(&mut self, ev: SseEvent<'_>, out: &mut Vec<ChatChunk>) {
        let Ok(data) = serde_json::from_slice::<Value>(ev.data) else {
            return;
        };
        let kind = str_at(&data, "type").or(ev.event).unwrap_or_default();
        match kind {
            "message_start" => {
                let message = data.get("message");
                if let Some(id) = message.and_then(|m| str_at(m, "id")) {
                    id.clone_into(&mut self.id);
                }
                self.update_usage(message.and_then(|m| m.get("usage")));
                self.usage.get_or_insert_with(AnthropicUsage::default);
                let delta = Delta { role: Some(Role::Assistant), content: Some(String::new()), ..Delta::default() };
                out.push(self.chunk(delta, None));
            }
            "content_block_start" => {
                let Some(block) = data.get("content_block") else { return };
                let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
                match str_at(block, "type") {
                    Some("text") => self.content(str_at(block, "text"), out),
                    Some("thinking") => self.reasoning(str_at(block, "thinking"), out),
                    Some("tool_use") => {
                        let ordinal = self.tool_ordinal(index);
                        let call = ToolCallDelta {
                            index: ordinal,
                            id: Some(str_at(block, "id").unwrap_or_default().to_owned()),
                            kind: Some("function".into()),
                            function: FunctionCallDelta {
                                name: Some(str_at(block, "name").unwrap_or_default().to_owned()),
                                arguments: Some(String::new()),
                            },
                        };
                        out.push(self.chunk(Delta { tool_calls: vec![call], ..Delta::default() }, None));
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let Some(delta) = data.get("delta") else { return };
                let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
                match str_at(delta, "type") {
                    Some("text_delta") => self.content(str_at(delta, "text"), out),
                    Some("thinking_delta") => self.reasoning(str_at(delta, "thinking"), out),
                    Some("input_json_delta") => {
                        let Some(partial) = str_at(delta, "partial_json").filter(|p| !p.is_empty()) else { return };
                        let ordinal = self.tool_ordinal(index);
                        if let Some(block) = self.tool_blocks.iter_mut().find(|(b, _, _)| *b == index) {
                            block.2 = true;
                        }
                        self.arguments(ordinal, partial, out);
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                // A tool called without arguments streams no JSON; OpenAI clients expect "{}".
                let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
                if let Some(block) = self.tool_blocks.iter_mut().find(|(b, _, seen)| *b == index && !*seen) {
                    block.2 = true;
                    let ordinal = block.1;
                    self.arguments(ordinal, "{}", out);
                }
            }
            "message_delta" => {
                self.update_usage(data.get("usage"));
                if let Some(reason) = data.get("delta").and_then(|d| str_at(d, "stop_reason")) {
                    out.push(self.chunk(Delta::default(), Some(finish_reason(reason))));
                }
            }
            "message_stop" => {
                self.stopped = true;
                if self.include_usage {
                    let usage = self.usage.unwrap_or_default().to_openai();
                    out.push(ChatChunk::usage_only(&self.id, &self.model, self.created, usage));
                }
            }
            "error" => {
                let err = data.get("error");
                let kind = err.and_then(|e| str_at(e, "type")).unwrap_or("api_error");
                let message = err.and_then(|e| str_at(e, "message")).unwrap_or_default();
                self.error = Some(error_from_type(200, kind, message));
                self.errored = true;
            }
            // ping and anything newer.
            _ => {}
        }
    }

    fn update_usage(&mut self, usage: Option<&Value>) {
        if let Some(later) = usage.and_then(|u| AnthropicUsage::deserialize(u).ok()) {
            self.usage.get_or_insert_with(AnthropicUsage::default).update(&later);
        }
    }

    /// The ordinal of the tool call in content block `index`, assigned on first sight.
    fn tool_ordinal(&mut self, index: u64) -> u32 {
        if let Some((_, ordinal, _)) = self.tool_blocks.iter().find(|(block, _, _)| *block == index) {
            return *ordinal;
        }
        let ordinal = self.next_tool;
        self.next_tool = self.next_tool.saturating_add(1);
        self.tool_blocks.push((index, ordinal, false));
        ordinal
    }

    fn arguments(&self, ordinal: u32, text: &str, out: &mut Vec<ChatChunk>) {
        let call = ToolCallDelta {
            index: ordinal,
            id: None,
            kind: None,
            function: FunctionCallDelta { name: None, arguments: Some(text.to_owned()) },
        };
        out.push(self.chunk(Delta { tool_calls: vec![call], ..Delta::default() }, None));
    }

    fn content(&self, text: Option<&str>, out: &mut Vec<ChatChunk>) {
        if let Some(text) = text.filter(|t| !t.is_empty()) {
            out.push(self.chunk(Delta { content: Some(text.to_owned()), ..Delta::default() }, None));
        }
    }

    fn reasoning(&self, text: Option<&str>, out: &mut Vec<ChatChunk>) {
        if let Some(text) = text.filter(|t| !t.is_empty()) {
            out.push(self.chunk(Delta { reasoning_content: Some(text.to_owned()), ..Delta::default() }, None));
        }
    }

    fn chunk(&self, delta: Delta, finish_reason: Option<FinishReason>) -> ChatChunk {
        ChatChunk::single(&self.id, &self.model, self.created, delta, finish_reason)
    }
}
