//! Gemini `streamGenerateContent?alt=sse` → OpenAI `chat.completion.chunk`s, incrementally.
//!
//! With `alt=sse` every `data:` line is a whole `GenerateContentResponse` holding the next
//! piece of each candidate (<https://ai.google.dev/api/generate-content#method:-models.streamgeneratecontent>).
//! Per event and candidate this emits at most two chunks: one delta (the role on a choice's
//! first chunk; text as `content`; `thought: true` text as `reasoning_content`; each
//! `functionCall` as one complete tool-call delta with id, type, name and all arguments, at
//! `index` = its position among the candidate's calls), then, if the event carries a
//! `finishReason`, a chunk with an empty delta and the finish reason. `usageMetadata` is
//! cumulative, so the last one seen is the stream's usage: [`GeminiStream::usage`] always, and a
//! final `choices: []` chunk from [`GeminiStream::finish`] when the client asked for it.
//!
//! Events that are not JSON are skipped; an `{"error": …}` event, or an event over the
//! scanner's limit (dropped: the answer is incomplete), is kept in [`GeminiStream::error`] for
//! the engine to report; the first of them in the stream wins. The oversize event is placed in
//! the stream by the scanner ([`SseItem::Overflow`]), so which error comes first does not
//! depend on how the bytes were split into reads.

use super::error::error_from_gemini;
use super::map_finish_reason;
use super::tool_call_id;
use super::wire::{Candidate, GenerateContentResponse, UsageMetadata};
use crate::canonical::{
    ApiError, ChatChunk, ChunkChoice, Delta, FinishReason, FunctionCallDelta, Role, ToolCallDelta, Usage,
};
use crate::sse::{SseItem, SseScanner};

/// Events larger than this are dropped and reported as an error (generous: inline image output
/// can be large).
pub(crate) const MAX_EVENT_BYTES: usize = 16 << 20;

/// Per-stream translator; feed it upstream bytes as they arrive.
pub struct GeminiStream {
    scanner: SseScanner,
    state: State,
}

struct State {
    model: String,
    id: String,
    created: u64,
    include_usage: bool,
    /// Per candidate index seen: role sent, function calls so far, finished.
    choices: Vec<ChoiceState>,
    usage: Option<UsageMetadata>,
    error: Option<ApiError>,
    finished: bool,
}

#[derive(Clone, Copy)]
struct ChoiceState {
    index: u32,
    calls: usize,
    role_sent: bool,
    finished: bool,
}

impl GeminiStream {
    /// A translator for one stream; `id`, `created` and `model` are copied into every chunk.
    pub fn new(model: &str, id: &str, created: u64, include_usage: bool) -> Self {
        Self {
            scanner: SseScanner::new(MAX_EVENT_BYTES),
            state: State {
                model: model.to_owned(),
                id: id.to_owned(),
                created,
                include_usage,
                choices: Vec::new(),
                usage: None,
                error: None,
                finished: false,
            },
        }
    }

    /// Translate the next upstream bytes (any split) into chunks appended to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<ChatChunk>) {
        let state = &mut self.state;
        if state.finished {
            return;
        }
        self.scanner.feed_items(bytes, |item| match item {
            SseItem::Event(event) => state.on_data(event.data, out),
            SseItem::Overflow => state.on_overflow(),
        });
    }

    /// The upstream stream ended: flush a last event left without its blank line and, when the
    /// client asked for usage and upstream reported it, append the final `choices: []` chunk.
    /// Later calls (and later `feed`s) do nothing.
    pub fn finish(&mut self, out: &mut Vec<ChatChunk>) {
        let state = &mut self.state;
        if state.finished {
            return;
        }
        // `SseScanner::finish` never overflows: every oversize event was met in `feed`.
        self.scanner.finish(|event| state.on_data(event.data, out));
        state.finished = true;
        if state.include_usage
            && let Some(usage) = self.usage()
        {
            let mut chunk = self.state.chunk(Vec::new());
            chunk.usage = Some(usage);
            out.push(chunk);
        }
    }

    /// The usage of the last `usageMetadata` seen, for accounting (whether or not the client
    /// asked for it).
    pub fn usage(&self) -> Option<Usage> {
        self.state.usage.as_ref().map(UsageMetadata::to_usage)
    }

    /// An error the upstream sent inside the stream, or an event over the size limit, if any
    /// (the first of them).
    pub fn error(&self) -> Option<&ApiError> {
        self.state.error.as_ref()
    }
}

impl State {
    fn chunk(&self, choices: Vec<ChunkChoice>) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage: None,
        }
    }

    /// An event over [`MAX_EVENT_BYTES`] was dropped: the answer is incomplete.
    fn on_overflow(&mut self) {
        self.error.get_or_insert_with(|| ApiError {
            status: 502,
            message: format!("a Gemini stream event exceeded {MAX_EVENT_BYTES} bytes"),
            kind: "upstream_error".into(),
            param: None,
            code: Some("upstream_too_large".into()),
        });
    }

    fn on_data(&mut self, data: &[u8], out: &mut Vec<ChatChunk>) {
        let trimmed = data.trim_ascii();
        if trimmed.is_empty() || trimmed == b"[DONE]" {
            return;
        }
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(trimmed) {
            if value.get("error").is_some()
                || value.as_array().is_some_and(|a| a.iter().any(|e| e.get("error").is_some()))
            {
                if self.error.is_none() {
                    self.error = Some(error_from_gemini(502, trimmed));
                }
                return;
            }
            let Ok(resp) = serde_json::from_value::<GenerateContentResponse>(value) else { return };
            self.on_response(resp, out);
        }
    }

    fn on_response(&mut self, resp: GenerateContentResponse, out: &mut Vec<ChatChunk>) {
        if let Some(usage) = resp.usage_metadata {
            self.usage = Some(usage);
        }
        if resp.candidates.is_empty() {
            if resp.prompt_feedback.as_ref().is_some_and(|f| f.block_reason.is_some()) {
                let pos = self.choice_pos(0);
                self.emit(pos, Delta::default(), Some(FinishReason::ContentFilter), out);
            }
            return;
        }
        for (n, candidate) in resp.candidates.iter().enumerate() {
            let index = candidate.index.unwrap_or(u32::try_from(n).unwrap_or(u32::MAX));
            let pos = self.choice_pos(index);
            self.on_candidate(pos, candidate, out);
        }
    }

    /// The position of candidate `index` in `choices`, adding it when new.
    fn choice_pos(&mut self, index: u32) -> usize {
        if let Some(pos) = self.choices.iter().position(|c| c.index == index) {
            return pos;
        }
        self.choices.push(ChoiceState { index, calls: 0, role_sent: false, finished: false });
        self.choices.len() - 1
    }

    fn on_candidate(&mut self, pos: usize, candidate: &Candidate, out: &mut Vec<ChatChunk>) {
        let Some(mut st) = self.choices.get(pos).copied() else { return };
        let mut delta = Delta::default();
        for part in candidate.content.iter().flat_map(|c| c.parts.iter()) {
            if let Some(call) = &part.function_call {
                delta.tool_calls.push(ToolCallDelta {
                    index: u32::try_from(st.calls).unwrap_or(u32::MAX),
                    id: Some(tool_call_id(&self.id, st.index, st.calls)),
                    kind: Some("function".into()),
                    function: FunctionCallDelta { name: Some(call.name.clone()), arguments: Some(call.arguments()) },
                });
                st.calls += 1;
            } else if let Some(text) = part.text.as_deref().filter(|t| !t.is_empty()) {
                let slot = if part.thought == Some(true) { &mut delta.reasoning_content } else { &mut delta.content };
                slot.get_or_insert_with(String::new).push_str(text);
            }
        }
        if let Some(c) = self.choices.get_mut(pos) {
            c.calls = st.calls;
        }
        let finish = candidate.finish_reason.as_deref().map(|r| map_finish_reason(r, st.calls > 0));
        self.emit(pos, delta, finish, out);
    }

    /// Push the delta chunk (with the role on the choice's first chunk) and then the finish
    /// chunk; nothing once the choice has finished.
    fn emit(&mut self, pos: usize, mut delta: Delta, finish: Option<FinishReason>, out: &mut Vec<ChatChunk>) {
        let Some(st) = self.choices.get(pos).copied() else { return };
        if st.finished {
            return;
        }
        if !st.role_sent {
            delta.role = Some(Role::Assistant);
        }
        let has_delta = delta.role.is_some()
            || delta.content.is_some()
            || delta.reasoning_content.is_some()
            || !delta.tool_calls.is_empty();
        if has_delta {
            out.push(self.chunk(vec![ChunkChoice { index: st.index, delta, finish_reason: None, logprobs: None }]));
            if let Some(c) = self.choices.get_mut(pos) {
                c.role_sent = true;
            }
        }
        if let Some(reason) = finish {
            out.push(self.chunk(vec![ChunkChoice {
                index: st.index,
                delta: Delta::default(),
                finish_reason: Some(reason),
                logprobs: None,
            }]));
            if let Some(c) = self.choices.get_mut(pos) {
                c.finished = true;
            }
        }
    }
}
