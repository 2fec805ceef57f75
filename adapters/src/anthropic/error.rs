//! Anthropic error bodies → OpenAI-shaped errors (<https://docs.anthropic.com/en/api/errors>).
//!
//! Anthropic answers `{"type": "error", "error": {"type", "message"}, "request_id"}`. Client
//! faults keep their status and message; upstream faults become gateway statuses (500
//! `api_error` → 502, 529 `overloaded_error` → 503, 504 `timeout_error` → 504) with type
//! `upstream_error` and the Anthropic type kept in the message and `code`.
//!
//! | Anthropic | status | type | code |
//! |---|---|---|---|
//! | 400 `invalid_request_error` | 400 (or the upstream 4xx) | `invalid_request_error` | — |
//! | 401 `authentication_error` | 401 | `authentication_error` | `invalid_api_key` |
//! | 402 `billing_error` | 402 | `billing_error` | `insufficient_quota` |
//! | 403 `permission_error` | 403 | `permission_error` | `permission_denied` |
//! | 404 `not_found_error` | 404 | `invalid_request_error` | `not_found` |
//! | 413 `request_too_large` | 413 | `invalid_request_error` | `request_too_large` |
//! | 429 `rate_limit_error` | 429 | `rate_limit_error` | `rate_limit_exceeded` |
//! | 500 `api_error` | 502 | `upstream_error` | `api_error` |
//! | 504 `timeout_error` | 504 | `upstream_error` | `timeout_error` |
//! | 529 `overloaded_error` | 503 | `upstream_error` | `overloaded_error` |
//! | other type | the status if 4xx, else 502 | `invalid_request_error` / `upstream_error` | the type |
//! | unreadable body | 502 | `upstream_error` | `upstream_protocol` |

use serde::Deserialize;

use crate::canonical::ApiError;

#[derive(Deserialize)]
struct Envelope {
    error: Detail,
}

#[derive(Deserialize)]
struct Detail {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    message: String,
}

/// Maps an Anthropic error response (`status` and body) to an OpenAI-shaped error.
#[must_use]
pub fn error_from_anthropic(status: u16, body: &[u8]) -> ApiError {
    match serde_json::from_slice::<Envelope>(body) {
        Ok(env) => error_from_type(status, &env.error.kind, &env.error.message),
        Err(_) => ApiError {
            status: 502,
            message: format!("Anthropic returned HTTP {status} with an unreadable error body"),
            kind: "upstream_error".into(),
            param: None,
            code: Some("upstream_protocol".into()),
        },
    }
}

/// Maps an Anthropic error `type` and `message` (from a body or a stream `error` event) to an
/// OpenAI-shaped error; `status` is the upstream HTTP status (200 for a stream event).
pub(crate) fn error_from_type(status: u16, kind: &str, message: &str) -> ApiError {
    let client = |status: u16, kind: &str, code: Option<&str>| ApiError {
        status,
        message: message.to_owned(),
        kind: kind.to_owned(),
        param: None,
        code: code.map(str::to_owned),
    };
    let upstream = |status: u16| ApiError {
        status,
        message: format!("Anthropic {kind}: {message}"),
        kind: "upstream_error".into(),
        param: None,
        code: Some(kind.to_owned()),
    };
    let client_status = if (400..500).contains(&status) { status } else { 400 };
    match kind {
        "invalid_request_error" => client(client_status, "invalid_request_error", None),
        "authentication_error" => client(401, "authentication_error", Some("invalid_api_key")),
        "billing_error" => client(402, "billing_error", Some("insufficient_quota")),
        "permission_error" => client(403, "permission_error", Some("permission_denied")),
        "not_found_error" => client(404, "invalid_request_error", Some("not_found")),
        "request_too_large" => client(413, "invalid_request_error", Some("request_too_large")),
        "rate_limit_error" => client(429, "rate_limit_error", Some("rate_limit_exceeded")),
        "overloaded_error" => upstream(503),
        "timeout_error" => upstream(504),
        "api_error" => upstream(502),
        _ if (400..500).contains(&status) => client(status, "invalid_request_error", Some(kind)),
        _ => upstream(502),
    }
}
