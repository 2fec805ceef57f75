//! The Anthropic Messages dialect (`POST /v1/messages`, `anthropic-version: 2023-06-01`), as
//! Anthropic documents it (<https://docs.anthropic.com/en/api/messages>,
//! <https://docs.anthropic.com/en/docs/build-with-claude/streaming>,
//! <https://docs.anthropic.com/en/api/errors>).
//!
//! Pure translation between the canonical schema ([`crate::canonical`]) and Anthropic's:
//! - [`request::to_anthropic`]: a chat request to a Messages request (path, headers, body);
//! - [`response::from_anthropic`]: a Messages response to a chat completion;
//! - [`stream::AnthropicStream`]: Messages stream events to `chat.completion.chunk`s,
//!   incrementally, across arbitrary read boundaries;
//! - [`error::error_from_anthropic`]: an Anthropic error body to an OpenAI-shaped error;
//! - [`inbound`]: the other direction, for Anthropic clients calling the gateway's
//!   `/v1/messages` (request in, non-streamed response out).
//!
//! What does not map is handled explicitly, never silently guessed:
//! - refused with a 400 naming the parameter: `n > 1`, audio parts, `file` parts other than a
//!   base64 PDF, image URLs that are neither `data:` nor http(s), `function` role messages,
//!   tool-call arguments that are not a JSON object, unknown `tool_choice` modes;
//! - dropped: `response_format` (Anthropic has no JSON mode; prompt for JSON or use a tool),
//!   `stream_options` (Anthropic always reports usage), message `name`s, `strict` on tools,
//!   `reasoning_effort` values without a configured thinking budget or that Anthropic would
//!   refuse with the rest of the request (forced tool, `temperature` ≠ 1, `top_p` < 0.95,
//!   `max_tokens` ≤ budget, a final assistant or pending tool-use turn), `tool_choice` when no
//!   tools are sent, empty text parts, and every unknown top-level field unless named in
//!   [`AnthropicDefaults::passthrough_fields`] (e.g. `top_k`), which are copied as-is;
//! - hoisted: system and developer messages anywhere in the conversation, in order, into
//!   `system`; consecutive same-role turns are merged into one message.
//!
//! Tool-call arguments coming back keep the model's key order (read raw, whitespace removed);
//! JSON going out (schemas, `tool_use.input`) is written from `serde_json::Value`, whose maps
//! are sorted unless the workspace enables serde_json's `preserve_order`.

use std::collections::BTreeMap;

pub mod error;
pub mod inbound;
pub mod outbound_stream;
pub mod request;
pub mod response;
pub mod stream;

#[cfg(test)]
mod tests;

pub use error::error_from_anthropic;
pub use inbound::{request_from_anthropic, response_to_anthropic};
pub use outbound_stream::{AnthropicEncoder, count_tokens_estimate};
pub use request::to_anthropic;
pub use response::from_anthropic;
pub use stream::AnthropicStream;

/// The Messages endpoint path.
pub const MESSAGES_PATH: &str = "/v1/messages";
/// The API version every request is sent with.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Per-provider settings the translation needs (from the gateway's configuration).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnthropicDefaults {
    /// `max_tokens` when the client set neither `max_completion_tokens` nor `max_tokens`
    /// (Anthropic requires it), e.g. 4096.
    pub max_tokens: u64,
    /// `reasoning_effort` (`low` | `medium` | `high`) to a thinking `budget_tokens`; an effort
    /// without an entry is dropped and thinking stays off.
    pub thinking_budgets: BTreeMap<String, u64>,
    /// Unknown top-level request fields copied to the Anthropic body as-is (e.g. `top_k`); a
    /// field the translation already set is never overwritten. Everything else is dropped.
    pub passthrough_fields: Vec<String>,
    /// The upstream model name to send, when it differs from the request's `model`.
    pub model: Option<String>,
}

/// A translated request: what the engine sends (it adds `x-api-key` and the host).
#[derive(Debug, Clone, PartialEq)]
pub struct AnthropicRequest {
    /// Always [`MESSAGES_PATH`].
    pub path: &'static str,
    /// `anthropic-version` and `content-type`.
    pub headers: Vec<(&'static str, &'static str)>,
    /// The JSON body.
    pub body: serde_json::Value,
    /// Whether the body asks for a stream.
    pub stream: bool,
}

impl AnthropicRequest {
    /// The body as JSON bytes.
    #[must_use]
    pub fn body_bytes(&self) -> Vec<u8> {
        // Serializing a `Value` cannot fail (its map keys are strings).
        serde_json::to_vec(&self.body).unwrap_or_default()
    }
}
