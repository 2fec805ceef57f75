//! Gemini error body → OpenAI-shaped [`ApiError`].
//!
//! Gemini (and Vertex AI) answer errors as `{"error": {"code", "message", "status"}}` (sometimes
//! wrapped in a one-element array by the streaming endpoint). The gRPC `status` decides the
//! answer, per <https://ai.google.dev/gemini-api/docs/troubleshooting> and
//! <https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/api-errors>; upstream
//! server failures become gateway statuses (502/503/504) because the client talks to us.

use serde::Deserialize;

use super::bad_upstream;
use crate::canonical::ApiError;

#[derive(Deserialize)]
#[serde(untagged)]
enum Envelope {
    One { error: Body },
    Many(Vec<Envelope>),
}

#[derive(Deserialize)]
struct Body {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

/// Map an upstream error response (`status` is its HTTP status) to the error we answer with.
/// The provider's status string is kept at the start of the message, e.g.
/// `gemini RESOURCE_EXHAUSTED: Quota exceeded …`. An unreadable body is a 502.
pub fn error_from_gemini(status: u16, body: &[u8]) -> ApiError {
    let parsed = serde_json::from_slice::<Envelope>(body).ok().and_then(first_body);
    let Some(err) = parsed else {
        return bad_upstream(format!("gemini returned HTTP {status} with an unreadable error body"));
    };
    let http = err.code.and_then(|c| u16::try_from(c).ok()).unwrap_or(status);
    let grpc = err.status.unwrap_or_default();
    let (status, kind, code) = match grpc.as_str() {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => (400, "invalid_request_error", None),
        "UNAUTHENTICATED" => (401, "authentication_error", Some("invalid_api_key")),
        "PERMISSION_DENIED" => (403, "permission_error", None),
        "NOT_FOUND" => (404, "not_found_error", None),
        "RESOURCE_EXHAUSTED" => (429, "rate_limit_error", Some("rate_limit_exceeded")),
        "INTERNAL" | "UNKNOWN" => (502, "api_error", None),
        "UNAVAILABLE" => (503, "api_error", None),
        "DEADLINE_EXCEEDED" => (504, "api_error", None),
        _ => match http {
            400 => (400, "invalid_request_error", None),
            401 => (401, "authentication_error", None),
            403 => (403, "permission_error", None),
            404 => (404, "not_found_error", None),
            429 => (429, "rate_limit_error", Some("rate_limit_exceeded")),
            503 => (503, "api_error", None),
            504 => (504, "api_error", None),
            s @ 400..=499 => (s, "invalid_request_error", None),
            _ => (502, "api_error", None),
        },
    };
    let message = err.message.unwrap_or_default();
    let message = if grpc.is_empty() { format!("gemini: {message}") } else { format!("gemini {grpc}: {message}") };
    ApiError { status, message, kind: kind.into(), param: None, code: code.map(str::to_owned) }
}

fn first_body(env: Envelope) -> Option<Body> {
    match env {
        Envelope::One { error } => Some(error),
        Envelope::Many(items) => items.into_iter().next().and_then(first_body),
    }
}
