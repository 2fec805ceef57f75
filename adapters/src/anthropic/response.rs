//! Anthropic Messages response → chat completion.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::error::error_from_anthropic;
use crate::canonical::{
    ApiError, ChatCompletion, FinishReason, FunctionCall, PromptTokensDetails, ResponseMessage, ToolCall, Usage,
};

/// `usage` as Anthropic reports it (on responses, `message_start` and `message_delta`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct AnthropicUsage {
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
}

impl AnthropicUsage {
    /// Later counts (a `message_delta`'s, which are cumulative) replace earlier ones.
    pub(crate) fn update(&mut self, later: &AnthropicUsage) {
        self.input_tokens = later.input_tokens.or(self.input_tokens);
        self.output_tokens = later.output_tokens.or(self.output_tokens);
        self.cache_creation_input_tokens = later.cache_creation_input_tokens.or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens = later.cache_read_input_tokens.or(self.cache_read_input_tokens);
    }

    /// OpenAI usage: Anthropic's `input_tokens` excludes cache reads and writes, OpenAI's
    /// `prompt_tokens` includes them, so the prompt is the sum of the three.
    pub(crate) fn to_openai(self) -> Usage {
        let read = self.cache_read_input_tokens.unwrap_or(0);
        let creation = self.cache_creation_input_tokens.unwrap_or(0);
        let prompt = self.input_tokens.unwrap_or(0).saturating_add(read).saturating_add(creation);
        let completion = self.output_tokens.unwrap_or(0);
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt.saturating_add(completion),
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: read,
                cache_creation_tokens: (creation > 0).then_some(creation),
            }),
            completion_tokens_details: None,
        }
    }
}

/// `stop_reason` → `finish_reason` (`null` stays `None`; an unknown reason is a plain stop).
pub(crate) fn finish_reason(stop_reason: &str) -> FinishReason {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        // end_turn, stop_sequence, pause_turn and anything newer.
        _ => FinishReason::Stop,
    }
}

#[derive(Deserialize)]
struct MessageBody {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    id: String,
    #[serde(default)]
    content: Vec<Block>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

/// One content block; fields only some block types have are optional.
#[derive(Deserialize)]
struct Block {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    /// Kept raw so the arguments text keeps the model's key order.
    #[serde(default)]
    input: Option<Box<RawValue>>,
}

/// JSON text without the whitespace outside strings (the input is valid JSON).
pub(crate) fn compact_json(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in raw.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

fn upstream(message: String) -> ApiError {
    ApiError {
        status: 502,
        message,
        kind: "upstream_error".into(),
        param: None,
        code: Some("upstream_protocol".into()),
    }
}

/// Translates a Messages response body into a chat completion for `model` (the name the client
/// asked for), stamped with `created` (Unix seconds, from the caller's clock).
///
/// # Errors
/// A 502 when the body is not a Messages response; the mapped error when it is an Anthropic
/// error body.
pub fn from_anthropic(body: &[u8], model: &str, created: u64) -> Result<ChatCompletion, ApiError> {
    let msg: MessageBody = serde_json::from_slice(body)
        .map_err(|e| upstream(format!("Anthropic returned an unreadable response: {e}")))?;
    match msg.kind.as_deref() {
        Some("message") | None => {}
        Some("error") => return Err(error_from_anthropic(502, body)),
        Some(other) => return Err(upstream(format!("Anthropic returned an unexpected {other:?} object"))),
    }
    let mut text: Option<String> = None;
    let mut reasoning: Option<String> = None;
    let mut tool_calls = Vec::new();
    for block in msg.content {
        match block.kind.as_str() {
            "text" => text.get_or_insert_with(String::new).push_str(block.text.as_deref().unwrap_or_default()),
            "thinking" => {
                reasoning.get_or_insert_with(String::new).push_str(block.thinking.as_deref().unwrap_or_default());
            }
            "tool_use" => {
                let arguments = block.input.map_or_else(|| "{}".to_owned(), |raw| compact_json(raw.get()));
                tool_calls.push(ToolCall {
                    id: block.id.unwrap_or_default(),
                    kind: "function".into(),
                    function: FunctionCall { name: block.name.unwrap_or_default(), arguments },
                });
            }
            // redacted_thinking, server tool blocks and anything newer carry nothing OpenAI has.
            _ => {}
        }
    }
    let message = ResponseMessage::assistant(text, tool_calls, reasoning);
    let finish = msg.stop_reason.as_deref().map(finish_reason);
    Ok(ChatCompletion::single(&msg.id, model, created, message, finish, msg.usage.map(AnthropicUsage::to_openai)))
}
