//! The Google Gemini dialect: `generateContent` / `streamGenerateContent?alt=sse` on the Gemini
//! Developer API (AI Studio) and on Vertex AI, and `batchEmbedContents` (AI Studio).
//!
//! Sources (Google's docs, which the golden files under `testdata/gemini/` name case by case):
//! - request and response bodies: <https://ai.google.dev/api/generate-content>;
//! - function calling (`functionDeclarations`, `functionCall`, `functionResponse`,
//!   `toolConfig`): <https://ai.google.dev/gemini-api/docs/function-calling>;
//! - streaming (`alt=sse`, each `data:` a whole `GenerateContentResponse`):
//!   <https://ai.google.dev/api/generate-content#method:-models.streamgeneratecontent>;
//! - thinking (`thinkingConfig.thinkingBudget`, `thought: true` parts, `thoughtsTokenCount`):
//!   <https://ai.google.dev/gemini-api/docs/thinking>;
//! - errors: <https://ai.google.dev/gemini-api/docs/troubleshooting> and
//!   <https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/api-errors>;
//! - Vertex AI endpoint: <https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/inference>;
//! - embeddings: <https://ai.google.dev/api/embeddings#method:-models.batchembedcontents>.
//!
//! Everything is pure: the engine adds the credential (`x-goog-api-key` for AI Studio, a bearer
//! token for Vertex AI), does the I/O, and passes the response id and creation time in.
//!
//! Gemini has no tool-call ids: a `functionCall` is answered by a `functionResponse` with the
//! same function name. Outbound, a `tool` message's name is looked up from the assistant call
//! with its `tool_call_id`; inbound, ids are made up deterministically as
//! `call_<response id>_<candidate index>_<position of the call in the candidate>`, the same in
//! the streamed and the non-streamed form, so a client that sends them back finds its calls.

pub mod embeddings;
pub mod error;
pub mod request;
pub mod response;
pub mod stream;
pub mod vertex_auth;
mod wire;

pub use embeddings::{from_gemini_embeddings, to_gemini_embeddings};
pub use error::error_from_gemini;
pub use request::{GeminiApi, GeminiRequest, GeminiTarget, ThinkingBudgets, to_gemini};
pub use response::from_gemini;
pub use stream::GeminiStream;

use crate::canonical::{ApiError, FinishReason};

/// The tool-call id for the `position`-th function call of candidate `candidate` in response `id`.
pub fn tool_call_id(id: &str, candidate: u32, position: usize) -> String {
    format!("call_{id}_{candidate}_{position}")
}

/// Gemini's `finishReason` in OpenAI's terms; `STOP` becomes `tool_calls` when the candidate
/// called functions. Safety-like reasons (`SAFETY`, `RECITATION`, `BLOCKLIST`,
/// `PROHIBITED_CONTENT`, `SPII`, `IMAGE_SAFETY`) are `content_filter`; `MAX_TOKENS` is `length`;
/// everything else (`OTHER`, `LANGUAGE`, `MALFORMED_FUNCTION_CALL`, unknown) is `stop`.
pub fn map_finish_reason(reason: &str, has_calls: bool) -> FinishReason {
    match reason {
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            FinishReason::ContentFilter
        }
        _ if has_calls => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

pub(crate) fn invalid_request(message: impl Into<String>, param: impl Into<String>) -> ApiError {
    ApiError::invalid(param, message)
}

pub(crate) fn bad_upstream(message: impl Into<String>) -> ApiError {
    ApiError { status: 502, message: message.into(), kind: "api_error".into(), param: None, code: None }
}

#[cfg(test)]
mod tests;
