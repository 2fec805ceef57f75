//! Errors the gateway itself produces, classified by source, each with one stable label, one
//! HTTP status and one OpenAI-shaped body: `{"error":{"message","type","param","code"}}`.
//!
//! Upstream error *responses* are not errors here: they are relayed as they came.

use serde::Serialize;

/// Where an error comes from, which decides who can fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// The client sent something we refuse.
    Downstream,
    /// The provider could not be reached, timed out, or answered garbage.
    Upstream,
    /// The gateway itself (a bug, or a state such as draining).
    Internal,
}

/// Every kind of error the gateway produces. Its label is stable: metrics and logs use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Malformed HTTP framing or request line.
    BadRequest,
    /// The body is not valid JSON, or not an object.
    InvalidJson,
    /// A required field is missing or has the wrong type.
    InvalidField,
    /// The requested model is not configured.
    UnknownModel,
    /// No credential, or one the gateway does not accept (unknown, revoked, expired key).
    Unauthorized,
    /// The caller may not use this model or endpoint.
    Forbidden,
    /// A rate limit refused the request (requests, tokens or concurrency).
    RateLimited,
    /// A budget refused the request.
    BudgetExceeded,
    /// A guardrail blocked the request or its answer.
    GuardrailViolation,
    /// No route for this path.
    NotFound,
    /// The path exists but not with this method.
    MethodNotAllowed,
    /// The change clashes with the current state (a name the config file declares).
    Conflict,
    /// The body exceeds `limits.max_body`.
    BodyTooLarge,
    /// The header section exceeds `limits.max_header` or has too many fields.
    HeadersTooLarge,
    /// Headers or body did not arrive in time.
    RequestTimeout,
    /// An `Expect` value other than `100-continue`.
    ExpectationFailed,
    /// A transfer coding we do not implement.
    NotImplemented,
    /// HTTP/2 or later on an HTTP/1 port.
    VersionNotSupported,
    /// DNS gave no address for the upstream host.
    UpstreamDns,
    /// TCP, proxy or TLS connection to the upstream failed.
    UpstreamConnect,
    /// Connect, first byte or idle timeout toward the upstream.
    UpstreamTimeout,
    /// The upstream answered something that is not HTTP/1.1, or closed mid-response.
    UpstreamProtocol,
    /// The upstream response body exceeds `limits.max_upstream_body`.
    UpstreamTooLarge,
    /// The target's connection limit was reached and no connection freed up in time.
    UpstreamPoolExhausted,
    /// The target's mailbox is full: too many requests already wait for it on this shard.
    TargetOverloaded,
    /// The target's actor is restarting after a fault (its backoff has not run out).
    TargetRestarting,
    /// The target's actor failed (a panic) while handling this request, or was restarted while
    /// the request waited in its mailbox; the request was not completed.
    TargetFailed,
    /// The gateway is draining or not yet ready.
    Unavailable,
    /// A bug.
    Internal,
    /// The client closed the connection before the response was complete (nothing is sent;
    /// counted, like nginx's 499).
    DownstreamClosed,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 30] = [
        ErrorKind::BadRequest,
        ErrorKind::InvalidJson,
        ErrorKind::InvalidField,
        ErrorKind::UnknownModel,
        ErrorKind::Unauthorized,
        ErrorKind::Forbidden,
        ErrorKind::RateLimited,
        ErrorKind::BudgetExceeded,
        ErrorKind::GuardrailViolation,
        ErrorKind::NotFound,
        ErrorKind::MethodNotAllowed,
        ErrorKind::Conflict,
        ErrorKind::BodyTooLarge,
        ErrorKind::HeadersTooLarge,
        ErrorKind::RequestTimeout,
        ErrorKind::ExpectationFailed,
        ErrorKind::NotImplemented,
        ErrorKind::VersionNotSupported,
        ErrorKind::UpstreamDns,
        ErrorKind::UpstreamConnect,
        ErrorKind::UpstreamTimeout,
        ErrorKind::UpstreamProtocol,
        ErrorKind::UpstreamTooLarge,
        ErrorKind::UpstreamPoolExhausted,
        ErrorKind::TargetOverloaded,
        ErrorKind::TargetRestarting,
        ErrorKind::TargetFailed,
        ErrorKind::Unavailable,
        ErrorKind::Internal,
        ErrorKind::DownstreamClosed,
    ];

    /// Position in [`ErrorKind::ALL`], for per-kind counters.
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }

    /// Stable short label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::InvalidJson => "invalid_json",
            ErrorKind::InvalidField => "invalid_field",
            ErrorKind::UnknownModel => "unknown_model",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::BudgetExceeded => "budget_exceeded",
            ErrorKind::GuardrailViolation => "guardrail_violation",
            ErrorKind::NotFound => "not_found",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::Conflict => "conflict",
            ErrorKind::BodyTooLarge => "body_too_large",
            ErrorKind::HeadersTooLarge => "headers_too_large",
            ErrorKind::RequestTimeout => "request_timeout",
            ErrorKind::ExpectationFailed => "expectation_failed",
            ErrorKind::NotImplemented => "not_implemented",
            ErrorKind::VersionNotSupported => "version_not_supported",
            ErrorKind::UpstreamDns => "upstream_dns",
            ErrorKind::UpstreamConnect => "upstream_connect",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::UpstreamProtocol => "upstream_protocol",
            ErrorKind::UpstreamTooLarge => "upstream_too_large",
            ErrorKind::UpstreamPoolExhausted => "upstream_pool_exhausted",
            ErrorKind::TargetOverloaded => "target_overloaded",
            ErrorKind::TargetRestarting => "target_restarting",
            ErrorKind::TargetFailed => "target_failed",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
            ErrorKind::DownstreamClosed => "downstream_closed",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            ErrorKind::BadRequest
            | ErrorKind::InvalidJson
            | ErrorKind::InvalidField
            | ErrorKind::GuardrailViolation => 400,
            ErrorKind::Unauthorized => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::UnknownModel | ErrorKind::NotFound => 404,
            ErrorKind::RateLimited | ErrorKind::BudgetExceeded => 429,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::Conflict => 409,
            ErrorKind::RequestTimeout => 408,
            ErrorKind::BodyTooLarge => 413,
            ErrorKind::ExpectationFailed => 417,
            ErrorKind::HeadersTooLarge => 431,
            ErrorKind::Internal => 500,
            ErrorKind::NotImplemented => 501,
            ErrorKind::UpstreamDns
            | ErrorKind::UpstreamConnect
            | ErrorKind::UpstreamProtocol
            | ErrorKind::UpstreamTooLarge
            | ErrorKind::TargetFailed => 502,
            ErrorKind::UpstreamPoolExhausted
            | ErrorKind::TargetOverloaded
            | ErrorKind::TargetRestarting
            | ErrorKind::Unavailable => 503,
            ErrorKind::UpstreamTimeout => 504,
            ErrorKind::VersionNotSupported => 505,
            ErrorKind::DownstreamClosed => 499,
        }
    }

    pub fn source(self) -> ErrorSource {
        match self {
            ErrorKind::UpstreamDns
            | ErrorKind::UpstreamConnect
            | ErrorKind::UpstreamTimeout
            | ErrorKind::UpstreamProtocol
            | ErrorKind::UpstreamTooLarge
            | ErrorKind::UpstreamPoolExhausted
            | ErrorKind::TargetOverloaded => ErrorSource::Upstream,
            ErrorKind::TargetRestarting | ErrorKind::TargetFailed | ErrorKind::Unavailable | ErrorKind::Internal => {
                ErrorSource::Internal
            }
            _ => ErrorSource::Downstream,
        }
    }

    /// OpenAI's `type` field.
    fn openai_type(self) -> &'static str {
        if self == ErrorKind::GuardrailViolation {
            return "guardrail_violation";
        }
        match self.source() {
            ErrorSource::Downstream => "invalid_request_error",
            ErrorSource::Upstream => "upstream_error",
            ErrorSource::Internal => "server_error",
        }
    }

    /// OpenAI's `code` field.
    fn code(self) -> Option<&'static str> {
        match self {
            ErrorKind::UnknownModel => Some("model_not_found"),
            ErrorKind::InvalidField | ErrorKind::InvalidJson | ErrorKind::BadRequest => None,
            other => Some(other.label()),
        }
    }

    /// Maps a codec status (from [`crate::http::head::Reject`]) to a kind.
    pub fn from_status(status: u16) -> ErrorKind {
        match status {
            408 => ErrorKind::RequestTimeout,
            413 => ErrorKind::BodyTooLarge,
            417 => ErrorKind::ExpectationFailed,
            431 => ErrorKind::HeadersTooLarge,
            501 => ErrorKind::NotImplemented,
            505 => ErrorKind::VersionNotSupported,
            _ => ErrorKind::BadRequest,
        }
    }
}

/// An error answer: kind, a message a user can act on, and the offending parameter if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayError {
    pub kind: ErrorKind,
    pub message: String,
    pub param: Option<std::borrow::Cow<'static, str>>,
    /// Overrides the kind's OpenAI `type` (`tokens`, `insufficient_quota`, ...).
    pub type_override: Option<&'static str>,
    /// Overrides the kind's OpenAI `code` (`invalid_api_key`, `rate_limit_exceeded`, ...).
    pub code_override: Option<&'static str>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl GatewayError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        GatewayError { kind, message: message.into(), param: None, type_override: None, code_override: None }
    }

    /// Sets OpenAI's `type` field (when the kind's default is not precise enough).
    pub fn with_type(mut self, t: &'static str) -> Self {
        self.type_override = Some(t);
        self
    }

    /// Sets OpenAI's `code` field.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code_override = Some(code);
        self
    }

    pub fn with_param(mut self, param: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn status(&self) -> u16 {
        self.kind.status()
    }

    /// The OpenAI-shaped JSON body.
    pub fn to_json(&self) -> Vec<u8> {
        let env = Envelope {
            error: Body {
                message: &self.message,
                kind: self.type_override.unwrap_or(self.kind.openai_type()),
                param: self.param.as_deref(),
                code: self.code_override.or(self.kind.code()),
            },
        };
        serde_json::to_vec(&env).unwrap_or_else(|_| {
            br#"{"error":{"message":"internal error","type":"server_error","param":null,"code":"internal"}}"#.to_vec()
        })
    }
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.kind.label(), self.status(), self.message)
    }
}

impl std::error::Error for GatewayError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_shape() {
        let e = GatewayError::new(ErrorKind::UnknownModel, "The model `x` does not exist").with_param("model");
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["param"], "model");
        assert_eq!(e.status(), 404);
    }

    #[test]
    fn labels_are_unique_and_indexed() {
        let mut labels: Vec<_> = ErrorKind::ALL.iter().map(|k| k.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), ErrorKind::ALL.len());
        for (i, k) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
        }
    }
}
