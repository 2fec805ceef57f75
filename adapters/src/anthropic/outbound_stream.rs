//! The inbound stream direction: OpenAI `chat.completion.chunk`s → Anthropic Messages stream
//! events, for Anthropic clients (SDKs, Claude Code) calling the gateway's `/v1/messages` with
//! `stream: true` when an OpenAI-dialect provider serves them
//! (<https://docs.anthropic.com/en/docs/build-with-claude/streaming>).
//!
//! [`AnthropicEncoder`] is pure and incremental: each [`AnthropicEncoder::push`] appends the
//! SSE events (`event: <name>\ndata: <json>\n\n`) the chunk completes. The stream it writes is
//! `message_start`, then per content block `content_block_start`, `content_block_delta`s and
//! exactly one `content_block_stop`, then `message_delta` and `message_stop` (or an `error`).
//!
//! | chunk | events |
//! |---|---|
//! | the first one (or [`AnthropicEncoder::finish`] if none came) | `message_start` (empty content, `stop_reason: null`, the estimated `input_tokens`, `output_tokens: 0`) |
//! | `delta.content`, `delta.refusal` | a `text` block, `text_delta`s |
//! | `delta.reasoning_content` | a `thinking` block, `thinking_delta`s (no `signature_delta`: the gateway has no signature to give) |
//! | a tool call's first piece (`id` / `function.name`) | a `tool_use` block (`input: {}`) |
//! | `function.arguments` pieces | `input_json_delta`s (`partial_json`) on that call's block |
//! | `finish_reason` | remembered (stop→`end_turn`, length→`max_tokens`, tool_calls / function_call→`tool_use`, content_filter→`refusal`); open blocks closed |
//! | a usage chunk | remembered for `message_delta` |
//!
//! Decisions:
//! - **Parallel tool calls.** OpenAI interleaves calls by `index`; Anthropic blocks are
//!   sequential. One call's block is open at a time and streams live; pieces of the other calls
//!   are buffered. The open call's block is closed, and the next buffered call (in order of first
//!   appearance) started with its buffered arguments as one `input_json_delta`, when a piece of
//!   another call arrives and the open call's arguments already form a complete JSON value
//!   (more could only make them invalid); otherwise at `finish_reason`, before a text or thinking
//!   block, or at [`AnthropicEncoder::finish`]. Sequential calls (OpenAI's usual order) therefore
//!   stream live; interleaved ones lose only latency. Argument pieces arriving for a call whose
//!   block is already closed (an upstream that resumes a call after text or reasoning, or sends
//!   text after a complete JSON value) cannot be expressed and are dropped. A call that never
//!   sent an `id` gets `toolu_<message id>_<index>`.
//! - **Usage.** `message_start` carries the caller's estimate unless a usage chunk came first.
//!   The real usage, when a usage chunk arrives, goes in `message_delta.usage` (cumulative, as
//!   Anthropic's current API sends it): `output_tokens = completion_tokens`,
//!   `cache_read_input_tokens = cached_tokens`, `cache_creation_input_tokens =
//!   cache_creation_tokens` (0 if absent) and `input_tokens = prompt_tokens − cache read −
//!   cache creation` (OpenAI's prompt includes both, Anthropic's input excludes both; the inverse
//!   of [`super::response`]'s mapping). Without a usage chunk `message_delta` has only
//!   `output_tokens: 0`.
//! - **Stop reason.** Without any `finish_reason`, `finish` says `tool_use` if a tool block was
//!   written, else `end_turn`. `stop_sequence` is always null (OpenAI does not say which stop
//!   sequence matched). Only choice 0 is read (Anthropic has no `n`).
//! - **Errors.** [`AnthropicEncoder::error`] writes Anthropic's `error` event and ends the
//!   stream: later `push`/`finish` calls write nothing, and no `message_stop` follows (as
//!   Anthropic ends a failed stream).

use serde_json::{Value, json};

use super::request::invalid;
use crate::canonical::{ApiError, ChatChunk, FinishReason, ToolCallDelta, Usage};

/// Incremental encoder of one Anthropic Messages stream from OpenAI chunks.
pub struct AnthropicEncoder {
    id: String,
    model: String,
    input_tokens: u64,
    /// Real usage from a usage chunk.
    usage: Option<Usage>,
    started: bool,
    /// `message_stop` or `error` written: nothing more is.
    done: bool,
    next_block: u64,
    /// The open content block and its index.
    open: Option<(BlockKind, u64)>,
    /// Tool calls in order of first appearance.
    tools: Vec<ToolState>,
    /// The tool call whose block is open (an index into `tools`).
    active_tool: Option<usize>,
    stop_reason: Option<&'static str>,
    wrote_tool: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    Text,
    Thinking,
    Tool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Seen, block not started; arguments buffered.
    Queued,
    Open,
    Closed,
}

struct ToolState {
    index: u32,
    id: Option<String>,
    name: Option<String>,
    pending: String,
    phase: Phase,
    json: JsonEnd,
}

impl ToolState {
    fn has_header(&self) -> bool {
        self.id.is_some() || self.name.is_some()
    }
}

/// Tracks whether JSON text fed piecewise has become one complete array or object.
#[derive(Default)]
struct JsonEnd {
    depth: u32,
    opened: bool,
    in_string: bool,
    escaped: bool,
    /// Something other than an object or array at the top level: never "complete".
    scalar: bool,
}

impl JsonEnd {
    fn feed(&mut self, text: &str) {
        for b in text.bytes() {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => {
                    self.in_string = true;
                    if self.depth == 0 {
                        self.scalar = true;
                    }
                }
                b'{' | b'[' => {
                    self.depth = self.depth.saturating_add(1);
                    self.opened = true;
                }
                b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                b' ' | b'\t' | b'\r' | b'\n' => {}
                _ if self.depth == 0 => self.scalar = true,
                _ => {}
            }
        }
    }

    fn complete(&self) -> bool {
        self.opened && self.depth == 0 && !self.in_string && !self.scalar
    }
}

/// Appends `event: <name>\ndata: <json>\n\n`.
fn write_event(out: &mut Vec<u8>, name: &str, data: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    // Writing a `Value` into a `Vec` cannot fail (map keys are strings).
    let _ = serde_json::to_writer(&mut *out, data);
    out.extend_from_slice(b"\n\n");
}

fn stop_reason(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "end_turn",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls | FinishReason::FunctionCall => "tool_use",
        FinishReason::ContentFilter => "refusal",
    }
}

/// `(input, cache creation, cache read, output)` in Anthropic's terms.
fn anthropic_usage(u: &Usage) -> (u64, u64, u64, u64) {
    let details = u.prompt_tokens_details.as_ref();
    let read = details.map_or(0, |d| d.cached_tokens);
    let creation = details.and_then(|d| d.cache_creation_tokens).unwrap_or(0);
    let input = u.prompt_tokens.saturating_sub(read).saturating_sub(creation);
    (input, creation, read, u.completion_tokens)
}

impl AnthropicEncoder {
    /// An encoder for message `id` (`msg_…`), naming `model` as the client did; `input_tokens`
    /// is the gateway's estimate for `message_start` (real usage, if a usage chunk arrives, is
    /// reported in `message_delta`).
    #[must_use]
    pub fn new(id: impl Into<String>, model: impl Into<String>, input_tokens: u64) -> Self {
        Self {
            id: id.into(),
            model: model.into(),
            input_tokens,
            usage: None,
            started: false,
            done: false,
            next_block: 0,
            open: None,
            tools: Vec::new(),
            active_tool: None,
            stop_reason: None,
            wrote_tool: false,
        }
    }

    /// Appends the events `chunk` produces (`message_start` first, on the first call).
    pub fn push(&mut self, chunk: &ChatChunk, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        if let Some(usage) = &chunk.usage {
            self.usage = Some(usage.clone());
        }
        self.start(out);
        let Some(choice) = chunk.choices.iter().find(|c| c.index == 0) else { return };
        let delta = &choice.delta;
        if let Some(text) = delta.reasoning_content.as_deref() {
            self.block_delta(BlockKind::Thinking, text, out);
        }
        if let Some(text) = delta.content.as_deref() {
            self.block_delta(BlockKind::Text, text, out);
        }
        if let Some(text) = delta.refusal.as_deref() {
            self.block_delta(BlockKind::Text, text, out);
        }
        for call in &delta.tool_calls {
            self.tool_delta(call, out);
        }
        if let Some(reason) = choice.finish_reason {
            self.stop_reason = Some(stop_reason(reason));
            self.close_all(out);
        }
    }

    /// Closes whatever is open and writes `message_delta` (stop reason, usage) and
    /// `message_stop`. Idempotent; a no-op after [`AnthropicEncoder::error`].
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.start(out);
        self.close_all(out);
        let reason = self.stop_reason.unwrap_or(if self.wrote_tool { "tool_use" } else { "end_turn" });
        let usage = match &self.usage {
            Some(u) => {
                let (input, creation, read, output) = anthropic_usage(u);
                json!({
                    "input_tokens": input,
                    "cache_creation_input_tokens": creation,
                    "cache_read_input_tokens": read,
                    "output_tokens": output,
                })
            }
            None => json!({"output_tokens": 0}),
        };
        write_event(
            out,
            "message_delta",
            &json!({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": null}, "usage": usage}),
        );
        write_event(out, "message_stop", &json!({"type": "message_stop"}));
        self.done = true;
    }

    /// Writes an Anthropic `error` event (`kind` e.g. `api_error`, `overloaded_error`) for a
    /// failure mid-stream and ends the stream.
    pub fn error(&mut self, kind: &str, message: &str, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        write_event(out, "error", &json!({"type": "error", "error": {"type": kind, "message": message}}));
        self.done = true;
    }

    /// `message_stop` or `error` has been written.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let (input, creation, read) = match &self.usage {
            Some(u) => {
                let (input, creation, read, _) = anthropic_usage(u);
                (input, creation, read)
            }
            None => (self.input_tokens, 0, 0),
        };
        let message = json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {
                "input_tokens": input,
                "cache_creation_input_tokens": creation,
                "cache_read_input_tokens": read,
                "output_tokens": 0,
            },
        });
        write_event(out, "message_start", &json!({"type": "message_start", "message": message}));
    }

    fn open_block(&mut self, kind: BlockKind, block: Value, out: &mut Vec<u8>) -> u64 {
        let index = self.next_block;
        self.next_block = self.next_block.saturating_add(1);
        write_event(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        );
        self.open = Some((kind, index));
        index
    }

    /// Closes the open block, if any.
    fn close_open(&mut self, out: &mut Vec<u8>) {
        let Some((kind, index)) = self.open.take() else { return };
        write_event(out, "content_block_stop", &json!({"type": "content_block_stop", "index": index}));
        if kind == BlockKind::Tool
            && let Some(tool) = self.active_tool.take().and_then(|i| self.tools.get_mut(i))
        {
            tool.phase = Phase::Closed;
        }
    }

    /// Closes the open block and writes every buffered tool call as a whole block.
    fn close_all(&mut self, out: &mut Vec<u8>) {
        self.close_open(out);
        while let Some(i) = self.tools.iter().position(|t| t.phase == Phase::Queued) {
            self.start_tool(i, out);
            self.close_open(out);
        }
    }

    fn block_delta(&mut self, kind: BlockKind, text: &str, out: &mut Vec<u8>) {
        if text.is_empty() {
            return;
        }
        let index = match self.open {
            Some((k, index)) if k == kind => index,
            _ => {
                // A new block: earlier tool calls go first, whole.
                self.close_all(out);
                let block = match kind {
                    BlockKind::Thinking => json!({"type": "thinking", "thinking": ""}),
                    _ => json!({"type": "text", "text": ""}),
                };
                self.open_block(kind, block, out)
            }
        };
        let delta = match kind {
            BlockKind::Thinking => json!({"type": "thinking_delta", "thinking": text}),
            _ => json!({"type": "text_delta", "text": text}),
        };
        write_event(
            out,
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index, "delta": delta}),
        );
    }

    /// Starts the block of buffered tool call `i` (closing the open block) and writes its
    /// buffered arguments.
    fn start_tool(&mut self, i: usize, out: &mut Vec<u8>) {
        self.close_open(out);
        let Some(tool) = self.tools.get_mut(i) else { return };
        tool.phase = Phase::Open;
        let id = tool.id.clone().unwrap_or_else(|| format!("toolu_{}_{}", self.id, tool.index));
        let name = tool.name.clone().unwrap_or_default();
        let pending = std::mem::take(&mut tool.pending);
        let block = json!({"type": "tool_use", "id": id, "name": name, "input": {}});
        let index = self.open_block(BlockKind::Tool, block, out);
        self.active_tool = Some(i);
        self.wrote_tool = true;
        if !pending.is_empty() {
            write_json_delta(index, &pending, out);
        }
    }

    fn tool_delta(&mut self, call: &ToolCallDelta, out: &mut Vec<u8>) {
        let pos = match self.tools.iter().position(|t| t.index == call.index) {
            Some(pos) => pos,
            None => {
                self.tools.push(ToolState {
                    index: call.index,
                    id: None,
                    name: None,
                    pending: String::new(),
                    phase: Phase::Queued,
                    json: JsonEnd::default(),
                });
                self.tools.len().saturating_sub(1)
            }
        };
        if let Some(tool) = self.tools.get_mut(pos).filter(|t| t.phase == Phase::Queued) {
            if let Some(id) = call.id.as_deref().filter(|s| !s.is_empty()) {
                tool.id = Some(id.to_owned());
            }
            if let Some(name) = call.function.name.as_deref().filter(|s| !s.is_empty()) {
                tool.name = Some(name.to_owned());
            }
        }
        self.advance(pos, out);
        let Some(args) = call.function.arguments.as_deref().filter(|a| !a.is_empty()) else { return };
        let block = self.open.map(|(_, index)| index);
        let Some(tool) = self.tools.get_mut(pos) else { return };
        match tool.phase {
            Phase::Open => {
                tool.json.feed(args);
                if let Some(index) = block {
                    write_json_delta(index, args, out);
                }
            }
            Phase::Queued => {
                tool.json.feed(args);
                tool.pending.push_str(args);
            }
            // Cannot be written any more (see the module notes).
            Phase::Closed => {}
        }
    }

    /// A piece of tool call `pos` arrived: close the open call if it is complete and another
    /// call is speaking, and start the next buffered call with a header if none is open.
    fn advance(&mut self, pos: usize, out: &mut Vec<u8>) {
        loop {
            if let Some(active) = self.active_tool {
                let complete = self.tools.get(active).is_some_and(|t| t.json.complete());
                if active == pos || !complete {
                    return;
                }
                self.close_open(out);
            }
            let Some(next) = self.tools.iter().position(|t| t.phase == Phase::Queued && t.has_header()) else {
                return;
            };
            self.start_tool(next, out);
        }
    }
}

fn write_json_delta(index: u64, partial: &str, out: &mut Vec<u8>) {
    write_event(
        out,
        "content_block_delta",
        &json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": partial}}),
    );
}

/// An estimate of a `/v1/messages/count_tokens` request's input tokens: the UTF-8 bytes of
/// `system`, the messages' text, thinking, tool-use input and tool-result text, and each tool
/// definition's JSON, divided by 4, rounded up, at least 1. Images and documents are not
/// counted. It is an estimate (no tokenizer), not what Anthropic would answer.
///
/// # Errors
/// A 400 when the body is not JSON or has no `messages` array.
pub fn count_tokens_estimate(body: &[u8]) -> Result<u64, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| invalid("body", format!("invalid JSON: {e}")))?;
    let messages =
        v.get("messages").and_then(Value::as_array).ok_or_else(|| invalid("messages", "messages is required"))?;
    let mut bytes = v.get("system").map_or(0, content_bytes);
    for m in messages {
        bytes = bytes.saturating_add(m.get("content").map_or(0, content_bytes));
    }
    if let Some(tools) = v.get("tools").and_then(Value::as_array) {
        for t in tools {
            bytes = bytes.saturating_add(t.to_string().len());
        }
    }
    Ok(u64::try_from(bytes.div_ceil(4)).unwrap_or(u64::MAX).max(1))
}

/// Bytes of a string or an array of content blocks.
fn content_bytes(content: &Value) -> usize {
    match content {
        Value::String(s) => s.len(),
        Value::Array(blocks) => blocks.iter().map(block_bytes).fold(0, usize::saturating_add),
        _ => 0,
    }
}

fn block_bytes(b: &Value) -> usize {
    let str_len = |key: &str| b.get(key).and_then(Value::as_str).map_or(0, str::len);
    match b.get("type").and_then(Value::as_str) {
        Some("text") => str_len("text"),
        Some("thinking") => str_len("thinking"),
        Some("tool_use") => str_len("name").saturating_add(b.get("input").map_or(0, |i| i.to_string().len())),
        Some("tool_result") => b.get("content").map_or(0, content_bytes),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    //! Golden files `adapters/testdata/anthropic/X.outbound.openai-chunks.json` (input: `id`,
    //! `model`, `input_tokens`, `chunks`) → `X.outbound.anthropic-events.json` (`events`: event
    //! name and data). `ANTHROPIC_BLESS=1` rewrites the expected files; review the diff by hand.

    use std::path::{Path, PathBuf};

    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;
    use crate::anthropic::AnthropicStream;
    use crate::canonical::{ChunkChoice, Delta, FunctionCallDelta, PromptTokensDetails, Role, ToolCallDelta, Usage};
    use crate::sse::SseScanner;

    fn dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/anthropic")
    }

    /// The events in `bytes` as `(event name, data)`; each data's `type` must equal the name.
    fn parse_events(bytes: &[u8]) -> Vec<(String, Value)> {
        let mut events = Vec::new();
        let mut scanner = SseScanner::new(1 << 20);
        let mut on = |ev: crate::sse::SseEvent<'_>| {
            let data: Value = serde_json::from_slice(ev.data).unwrap();
            let name = ev.event.unwrap().to_owned();
            assert_eq!(data["type"], name.as_str());
            events.push((name, data));
        };
        scanner.feed(bytes, &mut on);
        scanner.finish(&mut on);
        assert!(bytes.is_empty() || bytes.ends_with(b"\n\n"));
        events
    }

    struct Input {
        id: String,
        model: String,
        input_tokens: u64,
        chunks: Vec<ChatChunk>,
    }

    fn read_input(path: &Path) -> Input {
        let v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        Input {
            id: v["id"].as_str().unwrap().to_owned(),
            model: v["model"].as_str().unwrap().to_owned(),
            input_tokens: v["input_tokens"].as_u64().unwrap(),
            chunks: serde_json::from_value(v["chunks"].clone()).unwrap(),
        }
    }

    fn encode(input: &Input) -> Vec<u8> {
        let mut enc = AnthropicEncoder::new(&input.id, &input.model, input.input_tokens);
        let mut out = Vec::new();
        for chunk in &input.chunks {
            enc.push(chunk, &mut out);
        }
        enc.finish(&mut out);
        let len = out.len();
        enc.finish(&mut out);
        assert_eq!(out.len(), len, "finish is idempotent");
        out
    }

    #[test]
    fn golden_outbound_streams() {
        let suffix = ".outbound.openai-chunks.json";
        let mut stems: Vec<String> = std::fs::read_dir(dir())
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(suffix).map(str::to_owned))
            .collect();
        stems.sort();
        assert!(stems.len() >= 3, "missing *{suffix} golden files");
        for stem in stems {
            let input = read_input(&dir().join(format!("{stem}{suffix}")));
            let events: Vec<Value> = parse_events(&encode(&input))
                .into_iter()
                .map(|(event, data)| json!({"event": event, "data": data}))
                .collect();
            let expected_path = dir().join(format!("{stem}.outbound.anthropic-events.json"));
            if std::env::var_os("ANTHROPIC_BLESS").is_some() {
                let source = format!(
                    "{stem}{suffix} through AnthropicEncoder: Anthropic stream events as documented in https://docs.anthropic.com/en/docs/build-with-claude/streaming"
                );
                let text = serde_json::to_string_pretty(&json!({"_source": source, "events": events})).unwrap();
                std::fs::write(&expected_path, text + "\n").unwrap();
                continue;
            }
            let expected: Value = serde_json::from_slice(&std::fs::read(&expected_path).unwrap()).unwrap();
            assert_eq!(Value::Array(events), expected["events"], "{} differs", expected_path.display());
        }
    }

    /// Text, tool calls (index → id, name, arguments), finish reason of a chunk sequence.
    type Reassembled = (String, Vec<(u32, String, String, String)>, Option<FinishReason>);

    fn reassemble(chunks: &[ChatChunk]) -> Reassembled {
        let mut text = String::new();
        let mut calls: Vec<(u32, String, String, String)> = Vec::new();
        let mut finish = None;
        for choice in chunks.iter().flat_map(|c| &c.choices) {
            text.push_str(choice.delta.content.as_deref().unwrap_or_default());
            for call in &choice.delta.tool_calls {
                if !calls.iter().any(|c| c.0 == call.index) {
                    calls.push((call.index, String::new(), String::new(), String::new()));
                }
                let entry = calls.iter_mut().find(|c| c.0 == call.index).unwrap();
                entry.1.push_str(call.id.as_deref().unwrap_or_default());
                entry.2.push_str(call.function.name.as_deref().unwrap_or_default());
                entry.3.push_str(call.function.arguments.as_deref().unwrap_or_default());
            }
            finish = choice.finish_reason.or(finish);
        }
        calls.sort();
        (text, calls, finish)
    }

    #[test]
    fn tool_stream_round_trips_through_the_anthropic_decoder() {
        let input = read_input(&dir().join("tools.outbound.openai-chunks.json"));
        let bytes = encode(&input);
        let mut decoder = AnthropicStream::new(&input.model, 1_700_000_000, true);
        let mut chunks = Vec::new();
        for piece in bytes.chunks(7) {
            decoder.feed(piece, &mut chunks);
        }
        decoder.finish(&mut chunks);
        assert_eq!(decoder.take_error(), None);
        assert!(decoder.is_complete());
        assert_eq!(decoder.id(), input.id);

        let original = reassemble(&input.chunks);
        assert_eq!(original.1.len(), 3, "two interleaved calls and a sequential one");
        assert_eq!(reassemble(&chunks), original);
        let usage = input.chunks.iter().find_map(|c| c.usage.clone()).unwrap();
        assert_eq!(decoder.usage(), Some(usage.clone()));
        assert_eq!(chunks.last().unwrap().usage, Some(usage));
    }

    #[test]
    fn message_start_is_lazy_and_error_ends_the_stream() {
        let mut enc = AnthropicEncoder::new("msg_1", "claude-x", 42);
        let mut out = Vec::new();
        enc.finish(&mut out);
        let events = parse_events(&out);
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["message_start", "message_delta", "message_stop"]);
        assert_eq!(events[0].1["message"]["usage"]["input_tokens"], 42);
        assert_eq!(events[1].1["delta"]["stop_reason"], "end_turn");

        let mut enc = AnthropicEncoder::new("msg_2", "claude-x", 1);
        let mut out = Vec::new();
        enc.push(&text_chunk("hi"), &mut out);
        enc.error("overloaded_error", "upstream overloaded", &mut out);
        let len = out.len();
        enc.push(&text_chunk("more"), &mut out);
        enc.finish(&mut out);
        assert_eq!(out.len(), len);
        assert!(enc.is_done());
        let events = parse_events(&out);
        assert_eq!(
            events.last().unwrap().1,
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "upstream overloaded"}})
        );
    }

    #[test]
    fn count_tokens_is_a_byte_estimate() {
        let body = json!({
            "model": "claude-x",
            "system": [{"type": "text", "text": "abcd"}],
            "messages": [
                {"role": "user", "content": "12345678"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "xyz"}]}, {"type": "image", "source": {"type": "base64", "data": "AAAA"}}]},
            ],
            "tools": [{"name": "f", "input_schema": {}}],
        });
        // 4 + 8 + (1 + 2) + 3 + 30 = 48 bytes.
        let tool_bytes = json!({"name": "f", "input_schema": {}}).to_string().len();
        assert_eq!(tool_bytes, 30);
        assert_eq!(count_tokens_estimate(body.to_string().as_bytes()).unwrap(), 12);
        assert_eq!(count_tokens_estimate(br#"{"model":"m","messages":[]}"#).unwrap(), 1);
        assert_eq!(
            count_tokens_estimate(br#"{"model":"m","messages":[{"role":"user","content":"abcde"}]}"#).unwrap(),
            2
        );
        assert_eq!(count_tokens_estimate(b"{").unwrap_err().param.as_deref(), Some("body"));
        assert_eq!(count_tokens_estimate(br#"{"model":"m"}"#).unwrap_err().param.as_deref(), Some("messages"));
    }

    fn chunk(delta: Delta, finish_reason: Option<FinishReason>) -> ChatChunk {
        ChatChunk::single("chatcmpl-1", "gpt-x", 1, delta, finish_reason)
    }

    fn text_chunk(text: &str) -> ChatChunk {
        chunk(Delta { content: Some(text.into()), ..Delta::default() }, None)
    }

    #[derive(Debug, Clone)]
    enum Op {
        Role,
        Text(String),
        Refusal(String),
        Reasoning(String),
        Header(u32, bool, bool),
        Args(u32, String),
        Finish(u8),
        Usage(u64, u64, u64),
        OtherChoice(String),
    }

    fn op() -> impl Strategy<Value = Op> {
        let piece = "[a-z{}\\[\\]\":, \\\\]{0,6}";
        prop_oneof![
            Just(Op::Role),
            piece.prop_map(Op::Text),
            piece.prop_map(Op::Refusal),
            piece.prop_map(Op::Reasoning),
            (0u32..4, any::<bool>(), any::<bool>()).prop_map(|(i, id, name)| Op::Header(i, id, name)),
            (0u32..4, piece).prop_map(|(i, s)| Op::Args(i, s)),
            (0u8..5).prop_map(Op::Finish),
            (0u64..1000, 0u64..1000, 0u64..1000).prop_map(|(a, b, c)| Op::Usage(a, b, c)),
            piece.prop_map(Op::OtherChoice),
        ]
    }

    fn to_chunk(op: &Op) -> ChatChunk {
        match op {
            Op::Role => {
                chunk(Delta { role: Some(Role::Assistant), content: Some(String::new()), ..Delta::default() }, None)
            }
            Op::Text(s) => text_chunk(s),
            Op::Refusal(s) => chunk(Delta { refusal: Some(s.clone()), ..Delta::default() }, None),
            Op::Reasoning(s) => chunk(Delta { reasoning_content: Some(s.clone()), ..Delta::default() }, None),
            Op::Header(i, id, name) => {
                let call = ToolCallDelta {
                    index: *i,
                    id: id.then(|| format!("call_{i}")),
                    kind: Some("function".into()),
                    function: FunctionCallDelta { name: name.then(|| format!("f{i}")), arguments: Some(String::new()) },
                };
                chunk(Delta { tool_calls: vec![call], ..Delta::default() }, None)
            }
            Op::Args(i, s) => {
                let call = ToolCallDelta {
                    index: *i,
                    id: None,
                    kind: None,
                    function: FunctionCallDelta { name: None, arguments: Some(s.clone()) },
                };
                chunk(Delta { tool_calls: vec![call], ..Delta::default() }, None)
            }
            Op::Finish(r) => {
                let reasons = [
                    FinishReason::Stop,
                    FinishReason::Length,
                    FinishReason::ToolCalls,
                    FinishReason::ContentFilter,
                    FinishReason::FunctionCall,
                ];
                chunk(Delta::default(), Some(reasons[usize::from(*r) % reasons.len()]))
            }
            Op::Usage(p, c, cached) => ChatChunk::usage_only(
                "chatcmpl-1",
                "gpt-x",
                1,
                Usage {
                    prompt_tokens: *p,
                    completion_tokens: *c,
                    total_tokens: p + c,
                    prompt_tokens_details: Some(PromptTokensDetails {
                        cached_tokens: *cached,
                        cache_creation_tokens: None,
                    }),
                    completion_tokens_details: None,
                },
            ),
            Op::OtherChoice(s) => {
                let mut c = text_chunk("ignored");
                c.choices = vec![ChunkChoice {
                    index: 1,
                    delta: Delta { content: Some(s.clone()), ..Delta::default() },
                    finish_reason: None,
                    logprobs: None,
                }];
                c
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_chunks_yield_well_formed_streams(ops in proptest::collection::vec(op(), 0..40)) {
            let mut enc = AnthropicEncoder::new("msg_p", "claude-x", 7);
            let mut out = Vec::new();
            let mut text = String::new();
            for op in &ops {
                if let Op::Text(s) | Op::Refusal(s) = op {
                    text.push_str(s);
                }
                enc.push(&to_chunk(op), &mut out);
            }
            enc.finish(&mut out);
            let events = parse_events(&out);
            let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
            prop_assert_eq!(names.first().copied(), Some("message_start"));
            prop_assert_eq!(&names[names.len() - 2..], &["message_delta", "message_stop"]);
            let mut open: Option<u64> = None;
            let mut next = 0u64;
            let mut written = String::new();
            for (name, data) in &events[1..events.len() - 2] {
                match name.as_str() {
                    "content_block_start" => {
                        prop_assert_eq!(open, None, "a block started while another is open");
                        prop_assert_eq!(data["index"].as_u64(), Some(next));
                        open = Some(next);
                        next += 1;
                    }
                    "content_block_delta" => {
                        prop_assert_eq!(data["index"].as_u64(), open);
                        if data["delta"]["type"] == "text_delta" {
                            written.push_str(data["delta"]["text"].as_str().unwrap());
                        }
                    }
                    "content_block_stop" => {
                        prop_assert_eq!(data["index"].as_u64(), open);
                        open = None;
                    }
                    other => prop_assert!(false, "unexpected event {}", other),
                }
            }
            prop_assert_eq!(open, None, "a block left open before message_delta");
            prop_assert_eq!(written, text);
        }
    }
}
