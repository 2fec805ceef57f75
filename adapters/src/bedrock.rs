//! AWS Bedrock Runtime: the Converse and ConverseStream APIs, as pure code.
//!
//! - [`eventstream`]: an incremental decoder for `application/vnd.amazon.eventstream`, the binary
//!   framing ConverseStream answers in;
//! - [`sigv4`]: AWS Signature Version 4 request signing (ring for SHA-256 and HMAC-SHA256);
//! - [`converse`]: canonical chat request → Converse request (path and JSON body), and Converse
//!   response → canonical chat completion;
//! - [`stream`]: ConverseStream bytes → canonical `chat.completion.chunk`s;
//! - [`error_from_bedrock`]: a Bedrock error response → an OpenAI-shaped [`ApiError`].
//!
//! No I/O and no clock: callers pass bytes in and the time to sign with.
//!
//! Sources: the Bedrock API reference (`API_runtime_Converse`, `API_runtime_ConverseStream`,
//! `API_runtime_ConverseStreamOutput`, `CommonErrors`), the event stream encoding page of the
//! AWS docs (Amazon Lex V2 / Transcribe developer guides, "Event stream encoding"), and the AWS
//! SigV4 docs ("Create a signed AWS API request") with the AWS SigV4 test suite.

pub mod converse;
pub mod embeddings;
pub mod eventstream;
pub mod invoke;
pub mod sigv4;
pub mod stream;

#[cfg(test)]
mod tests;

use crate::canonical::ApiError;
use serde_json::Value;

pub use converse::{ConverseRequest, from_converse, to_converse};
pub use stream::ConverseStream;

/// An [`ApiError`] with the OpenAI `type` that goes with `status`.
pub(crate) fn api_error(status: u16, message: impl Into<String>, param: Option<&str>) -> ApiError {
    let kind = match status {
        400 | 404 | 409 | 413 | 415 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        _ => "api_error",
    };
    ApiError { status, message: message.into(), kind: kind.to_string(), param: param.map(str::to_string), code: None }
}

/// The status we answer with for a Bedrock error or stream exception type, matched without
/// regard to case so `ThrottlingException` (HTTP errors) and `throttlingException` (stream
/// exceptions) map the same. `None` for a type we do not know.
pub(crate) fn status_for_error_type(error_type: &str) -> Option<u16> {
    let t = error_type.to_ascii_lowercase();
    Some(match t.as_str() {
        "validationexception" => 400,
        "accessdeniedexception" | "unrecognizedclientexception" => 403,
        "resourcenotfoundexception" => 404,
        "throttlingexception" | "servicequotaexceededexception" => 429,
        "modeltimeoutexception" => 504,
        "serviceunavailableexception" => 503,
        "internalserverexception" | "modelerrorexception" | "modelstreamerrorexception" => 502,
        "modelnotreadyexception" => 503,
        _ => return None,
    })
}

/// The bare error type: `ValidationException:http://internal.amazon.com/...` and
/// `com.amazon.coral.validate#ValidationException` both give `ValidationException`.
fn bare_error_type(raw: &str) -> &str {
    let raw = raw.trim();
    let raw = raw.split(':').next().unwrap_or(raw);
    raw.rsplit('#').next().unwrap_or(raw)
}

/// A Bedrock error response (any non-2xx from Converse or ConverseStream) as an [`ApiError`].
///
/// The type is read from the `x-amzn-errortype` header when given, else from `__type` in the
/// body; the message from `message` (or `Message`) in the body. Known types map as
/// ValidationException→400, AccessDeniedException→403, ResourceNotFoundException→404,
/// ThrottlingException→429, ModelTimeoutException→504, ServiceUnavailableException→503,
/// InternalServerException/ModelErrorException→502; an unknown type keeps a 4xx status and turns
/// any other into 502 (the upstream failed, not the gateway). `code` carries the Bedrock type.
pub fn error_from_bedrock(status: u16, body: &[u8], error_type_header: Option<&str>) -> ApiError {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let body_type = json.as_ref().and_then(|v| v.get("__type")).and_then(Value::as_str);
    let error_type =
        error_type_header.filter(|h| !h.trim().is_empty()).or(body_type).map(bare_error_type).filter(|t| !t.is_empty());
    let message = json
        .as_ref()
        .and_then(|v| v.get("message").or_else(|| v.get("Message")))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() { format!("Bedrock returned HTTP {status}") } else { text.chars().take(512).collect() }
        });
    let mapped =
        error_type.and_then(status_for_error_type).unwrap_or(if (400..500).contains(&status) { status } else { 502 });
    let mut err = api_error(mapped, message, None);
    err.code = error_type.map(str::to_string);
    err
}
