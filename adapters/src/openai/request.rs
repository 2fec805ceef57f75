//! Lazy facts from an OpenAI request body: just what routing, limits and accounting need
//! (`model`, `stream`, `stream_options.include_usage`, `max_tokens`), without building a
//! document tree or touching `messages`.
//!
//! The body is still fully validated (syntax and UTF-8) by simd-json, so a body we forward is a
//! body the provider can parse, and a broken one is rejected here with a client-facing message.
//!
//! Duplicate keys: the last occurrence wins, as in most JSON parsers a provider is likely to use.
//! [`rewrite_model`] consequently replaces the last `model`; earlier duplicates are left as sent.
//!
//! Integers beyond 64 bits anywhere in the body (a huge `seed`) are valid JSON and are accepted:
//! the workspace builds simd-json with `big-int-as-float`.

mod rewrite;
mod texts;

use std::fmt;
use std::ops::Range;

use simd_json::prelude::*;
use simd_json::tape::Value;

use crate::json::tape::{Origin, TapeScratch, last_values, non_negative_integer, present};

pub use rewrite::{ask_for_usage, rewrite_model};
pub(crate) use texts::collect_answer;
pub use texts::{PromptTexts, TextRef, TextWalk, resolve};

/// What the gateway needs to know about a request before forwarding it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestFacts {
    /// The requested model; `None` when the key is absent.
    pub model: Option<ModelField>,
    /// `stream: true`; absent, `false` and `null` all mean a single JSON response.
    pub stream: bool,
    /// `stream_options.include_usage`, when present: whether the client asked for the final
    /// usage chunk (the gateway may ask for it anyway and strip it).
    pub include_usage: Option<bool>,
    /// `max_tokens`, else `max_completion_tokens` (the newer name), as an output-token budget.
    pub max_tokens: Option<u64>,
    /// The texts a model reads, for guardrails: read only when asked ([`Scanner::scan_with`]),
    /// and `None` then too when the body nests deeper than that walk goes.
    pub texts: Option<PromptTexts>,
}

/// The `model` string and, when cheap to rewrite, where its raw bytes sit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelField {
    /// The unescaped model string.
    pub name: String,
    /// Byte range of the raw string contents (between the quotes) in the ORIGINAL body, when the
    /// raw bytes contain no escape sequence: then replacing exactly that range rewrites the model.
    pub raw_span: Option<Range<usize>>,
}

/// Why a request body was rejected. Messages are written for the API client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanError {
    /// Not a single valid JSON document (syntax, UTF-8, empty body).
    NotJson {
        /// What the parser reported.
        detail: String,
    },
    /// Valid JSON, but not an object at the top level.
    NotAnObject,
    /// A field we read has the wrong JSON type.
    WrongType {
        /// The field as the client wrote it, dotted for nested ones.
        field: &'static str,
        /// The expected type, with its article ("a string").
        expected: &'static str,
    },
}

impl ScanError {
    /// A stable, short label for metrics and logs.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            Self::NotJson { .. } => "not_json",
            Self::NotAnObject => "not_an_object",
            Self::WrongType { .. } => "wrong_type",
        }
    }

    fn not_json(error: &simd_json::Error) -> Self {
        Self::NotJson { detail: error.to_string() }
    }
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotJson { detail } => {
                write!(f, "We could not parse the JSON body of your request: {detail}")
            }
            Self::NotAnObject => f.write_str("The body of your request must be a JSON object."),
            Self::WrongType { field, expected } => write!(f, "'{field}' must be {expected}"),
        }
    }
}

impl std::error::Error for ScanError {}

/// Reusable scratch for scanning request bodies: one per shard, reused for every request, so a
/// warm scan does not allocate beyond the model name.
pub struct Scanner {
    scratch: TapeScratch,
}

impl Default for Scanner {
    fn default() -> Self {
        Self::new()
    }
}

impl Scanner {
    /// A scanner with empty scratch; buffers grow to the largest body seen (within a cap).
    #[must_use]
    pub fn new() -> Self {
        Self { scratch: TapeScratch::new() }
    }

    /// Validates `body` as JSON and reads the request facts from its top-level keys.
    ///
    /// # Errors
    /// [`ScanError::NotJson`] for an empty or invalid body, [`ScanError::NotAnObject`] for a
    /// top-level array or scalar, [`ScanError::WrongType`] when a field we read is mistyped.
    pub fn scan(&mut self, body: &[u8]) -> Result<RequestFacts, ScanError> {
        self.scan_with(body, None)
    }

    /// [`Scanner::scan`], and with a walk, the texts a model reads ([`RequestFacts::texts`]),
    /// from the same parse.
    ///
    /// # Errors
    /// As [`Scanner::scan`].
    pub fn scan_with(&mut self, body: &[u8], walk: Option<TextWalk>) -> Result<RequestFacts, ScanError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(ScanError::NotJson { detail: "the body is empty".to_owned() });
        }
        self.scratch
            .parse(body, |root, origin| {
                let mut facts = read_facts(root, body, origin)?;
                facts.texts = walk.and_then(|w| texts::collect(root, body, origin, w));
                Ok(facts)
            })
            .map_err(|e| ScanError::not_json(&e))?
    }
}

fn read_facts(root: Value<'_, '_>, body: &[u8], origin: Origin) -> Result<RequestFacts, ScanError> {
    let [model, stream, stream_options, max_tokens, max_completion_tokens] =
        last_values(root, ["model", "stream", "stream_options", "max_tokens", "max_completion_tokens"])
            .ok_or(ScanError::NotAnObject)?;

    let model = match model {
        None => None,
        Some(value) => {
            let name = value.as_str().ok_or(ScanError::WrongType { field: "model", expected: "a string" })?;
            Some(ModelField { name: name.to_owned(), raw_span: raw_span(name, body, origin) })
        }
    };

    let stream = optional_bool(stream, "stream")?.unwrap_or(false);

    let include_usage = match present(stream_options) {
        None => None,
        Some(options) => {
            let [include_usage] = last_values(options, ["include_usage"])
                .ok_or(ScanError::WrongType { field: "stream_options", expected: "an object" })?;
            optional_bool(include_usage, "stream_options.include_usage")?
        }
    };

    let max_tokens = match optional_count(max_tokens, "max_tokens")? {
        Some(n) => Some(n),
        None => optional_count(max_completion_tokens, "max_completion_tokens")?,
    };

    Ok(RequestFacts { model, stream, include_usage, max_tokens, texts: None })
}

/// The raw span of `name` in `body`, trusted only when the bytes prove it: the copy's offset
/// must land on exactly these bytes, between quotes, with no escape sequence (an escaped string
/// is unescaped in place, so its parsed form is shorter than its raw form).
fn raw_span(name: &str, body: &[u8], origin: Origin) -> Option<Range<usize>> {
    let start = origin.offset_of(name)?;
    let end = start + name.len();
    let raw = body.get(start..end)?;
    let quoted = body.get(start.checked_sub(1)?) == Some(&b'"') && body.get(end) == Some(&b'"');
    (quoted && raw == name.as_bytes() && memchr::memchr(b'\\', raw).is_none()).then_some(start..end)
}

fn optional_bool(value: Option<Value<'_, '_>>, field: &'static str) -> Result<Option<bool>, ScanError> {
    present(value).map(|v| v.as_bool().ok_or(ScanError::WrongType { field, expected: "a boolean" })).transpose()
}

fn optional_count(value: Option<Value<'_, '_>>, field: &'static str) -> Result<Option<u64>, ScanError> {
    present(value)
        .map(|v| non_negative_integer(v).ok_or(ScanError::WrongType { field, expected: "a non-negative integer" }))
        .transpose()
}

#[cfg(test)]
mod tests;
