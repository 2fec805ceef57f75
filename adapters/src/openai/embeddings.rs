//! OpenAI's embeddings list and its `encoding_format: "base64"` form
//! (<https://platform.openai.com/docs/api-reference/embeddings>).
//!
//! With `base64`, OpenAI sends each vector as its little-endian IEEE-754 `f32` bytes in
//! standard base64 (with padding) instead of a JSON array of numbers. Translating adapters
//! build their answers with [`embeddings_list`]; [`rewrite_to_base64`] turns a float answer from
//! an OpenAI-compatible host that does not implement `base64` into the form the client asked
//! for.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::canonical::{ApiError, EmbeddingsRequest};
use crate::json::raw::{Entries, Node, parse_array, parse_object, parse_object_bytes, write_entries};

/// How the client wants its vectors: OpenAI's `encoding_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EncodingFormat {
    /// JSON arrays of numbers (the default).
    #[default]
    Float,
    /// Little-endian `f32` bytes in standard base64.
    Base64,
}

impl EncodingFormat {
    /// The format a request asks for: absent or `float` → [`Float`](Self::Float), `base64` →
    /// [`Base64`](Self::Base64), anything else is a 400 naming `encoding_format`.
    pub fn of(req: &EmbeddingsRequest) -> Result<EncodingFormat, ApiError> {
        match req.encoding_format.as_deref() {
            None | Some("float") => Ok(EncodingFormat::Float),
            Some("base64") => Ok(EncodingFormat::Base64),
            Some(other) => Err(ApiError::invalid(
                "encoding_format",
                format!("encoding_format {other:?} is not supported: use \"float\" or \"base64\""),
            )),
        }
    }
}

/// Encodes a vector as OpenAI does for `encoding_format: "base64"`: each value as `f32`,
/// little-endian, the bytes in standard base64 with padding.
pub fn encode_base64<I: IntoIterator<Item = f32>>(values: I) -> String {
    let values = values.into_iter();
    let mut bytes = Vec::with_capacity(values.size_hint().0 * 4);
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    STANDARD.encode(bytes)
}

/// Why a base64 embedding could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Not standard base64.
    NotBase64,
    /// The bytes are not a whole number of `f32`s.
    PartialFloat {
        /// How many bytes the text decoded to.
        len: usize,
    },
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::NotBase64 => f.write_str("the embedding is not standard base64"),
            DecodeError::PartialFloat { len } => write!(f, "{len} bytes are not a whole number of f32 values"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// The inverse of [`encode_base64`] (for tests and for clients of the gateway's own tooling).
pub fn decode_base64(encoded: &str) -> Result<Vec<f32>, DecodeError> {
    let bytes = STANDARD.decode(encoded).map_err(|_| DecodeError::NotBase64)?;
    if bytes.len() % 4 != 0 {
        return Err(DecodeError::PartialFloat { len: bytes.len() });
    }
    Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// OpenAI's embeddings list: `{"object": "list", "data": [{"object": "embedding", "index",
/// "embedding"}], "model", "usage": {"prompt_tokens", "total_tokens"}}`, indices in order.
///
/// Vectors are taken as `f64` so that a float answer repeats the provider's numbers as sent;
/// in [`EncodingFormat::Base64`] each value is narrowed to `f32` (what providers compute in).
pub fn embeddings_list(model: &str, vectors: &[Vec<f64>], prompt_tokens: u64, format: EncodingFormat) -> Value {
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = match format {
                EncodingFormat::Float => json!(v),
                EncodingFormat::Base64 => Value::String(encode_base64(v.iter().map(|x| *x as f32))),
            };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": { "prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens },
    })
}

fn bad_upstream(message: String) -> ApiError {
    ApiError { status: 502, message, kind: "api_error".into(), param: None, code: None }
}

/// Rewrites an OpenAI-shaped embeddings response whose vectors are float arrays so that each
/// `data[].embedding` is the base64 string OpenAI would have sent, for hosts that do not
/// implement `encoding_format: "base64"` (the engine asks them for floats).
///
/// Returns `None` when there is nothing to rewrite (no `data`, or every embedding is already a
/// string): the engine forwards the original bytes. Every other field keeps its bytes and
/// order; only the rewritten `data` items are re-emitted (compactly). A body that is not a JSON
/// object, or an embedding array holding something other than numbers, is a 502: the upstream
/// answered something we cannot vouch for.
pub fn rewrite_to_base64(body: &[u8]) -> Result<Option<Vec<u8>>, ApiError> {
    let unreadable = |e: &dyn std::fmt::Display| bad_upstream(format!("unreadable embeddings response: {e}"));
    let mut entries = parse_object_bytes(body).map_err(|e| unreadable(&e))?;
    let mut changed = false;
    for (key, node) in entries.iter_mut() {
        if key.as_ref() != "data" {
            continue;
        }
        let Node::Raw(raw) = *node else { continue };
        if !raw.get().starts_with('[') {
            continue;
        }
        let mut items = parse_array(raw.get()).map_err(|e| unreadable(&e))?;
        let mut data_changed = false;
        for item in items.iter_mut() {
            let Node::Raw(item_raw) = *item else { continue };
            if !item_raw.get().starts_with('{') {
                continue;
            }
            let mut fields = parse_object(item_raw.get()).map_err(|e| unreadable(&e))?;
            if encode_embedding_field(&mut fields)? {
                *item = Node::Object(fields);
                data_changed = true;
            }
        }
        if data_changed {
            *node = Node::Array(items);
            changed = true;
        }
    }
    if !changed {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(body.len() / 2);
    write_entries(&entries, &mut out);
    Ok(Some(out))
}

/// Replaces a float-array `embedding` in one `data` item by its base64 form; false when the
/// item has no array embedding.
fn encode_embedding_field(fields: &mut Entries<'_>) -> Result<bool, ApiError> {
    let mut changed = false;
    for (key, value) in fields.iter_mut() {
        if key.as_ref() != "embedding" {
            continue;
        }
        let Node::Raw(raw) = *value else { continue };
        if !raw.get().starts_with('[') {
            continue;
        }
        let floats: Vec<f64> = serde_json::from_str(raw.get())
            .map_err(|e| bad_upstream(format!("an embedding is not an array of numbers: {e}")))?;
        // Base64 needs no JSON escaping: quoting it is enough.
        *value = Node::Json(format!("\"{}\"", encode_base64(floats.iter().map(|x| *x as f32))));
        changed = true;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn known_vector_encodes_as_openai_does() {
        let v = [1.0f32, -2.0, 0.5];
        // 1.0 = 0x3F800000, -2.0 = 0xC0000000, 0.5 = 0x3F000000, each little-endian.
        let bytes: [u8; 12] = [0, 0, 0x80, 0x3F, 0, 0, 0, 0xC0, 0, 0, 0, 0x3F];
        let expected = STANDARD.encode(bytes);
        assert_eq!(encode_base64(v), expected);
        // Derived once with Python: base64.b64encode(struct.pack('<3f', 1.0, -2.0, 0.5)).
        assert_eq!(encode_base64(v), "AACAPwAAAMAAAAA/");
        assert_eq!(decode_base64("AACAPwAAAMAAAAA/").unwrap(), v);
    }

    #[test]
    fn round_trips_awkward_values() {
        let v = [0.1f32, -0.0, f32::MIN_POSITIVE, f32::MAX, 1e-40, -123.456];
        let back = decode_base64(&encode_base64(v.iter().copied())).unwrap();
        assert_eq!(
            back.iter().map(|f| f.to_bits()).collect::<Vec<_>>(),
            v.iter().map(|f| f.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(encode_base64([]), "");
        assert_eq!(decode_base64("").unwrap(), Vec::<f32>::new());
    }

    #[test]
    fn decode_errors() {
        assert_eq!(decode_base64("not base64!"), Err(DecodeError::NotBase64));
        assert_eq!(decode_base64("AAAA"), Err(DecodeError::PartialFloat { len: 3 }));
    }

    #[test]
    fn encoding_format_of_a_request() {
        let mut req: EmbeddingsRequest = serde_json::from_value(json!({"model": "m", "input": "x"})).unwrap();
        assert_eq!(EncodingFormat::of(&req).unwrap(), EncodingFormat::Float);
        req.encoding_format = Some("base64".into());
        assert_eq!(EncodingFormat::of(&req).unwrap(), EncodingFormat::Base64);
        req.encoding_format = Some("binary".into());
        let err = EncodingFormat::of(&req).unwrap_err();
        assert_eq!((err.status, err.param.as_deref()), (400, Some("encoding_format")));
    }

    #[test]
    fn list_in_both_formats() {
        let vectors = vec![vec![1.0, -2.0, 0.5], vec![0.25]];
        let float = embeddings_list("m", &vectors, 7, EncodingFormat::Float);
        assert_eq!(
            float,
            json!({"object": "list", "data": [
                {"object": "embedding", "index": 0, "embedding": [1.0, -2.0, 0.5]},
                {"object": "embedding", "index": 1, "embedding": [0.25]}
            ], "model": "m", "usage": {"prompt_tokens": 7, "total_tokens": 7}})
        );
        let b64 = embeddings_list("m", &vectors, 7, EncodingFormat::Base64);
        assert_eq!(b64["data"][0]["embedding"], "AACAPwAAAMAAAAA/");
        assert_eq!(decode_base64(b64["data"][1]["embedding"].as_str().unwrap()).unwrap(), [0.25]);
    }

    #[test]
    fn float_numbers_are_repeated_as_sent() {
        let v: Vec<f64> = serde_json::from_str("[0.1, -0.0123456789, 3e-5]").unwrap();
        let out = serde_json::to_string(&embeddings_list("m", &[v], 0, EncodingFormat::Float)).unwrap();
        // Same values, shortest form (3e-5 is written 0.00003), no f32 noise such as 0.10000000149.
        assert!(out.contains("[0.1,-0.0123456789,0.00003]"), "{out}");
    }

    #[test]
    fn rewrites_an_openai_float_body() {
        let body = br#"{"object": "list", "data": [
            {"object": "embedding", "index": 0, "embedding": [1.0, -2.0, 0.5]},
            {"object": "embedding", "embedding": [0.25], "index": 1}
        ], "model": "text-embedding-3-small", "usage": {"prompt_tokens": 8, "total_tokens": 8}}"#;
        let out = rewrite_to_base64(body).unwrap().unwrap();
        let text = std::str::from_utf8(&out).unwrap();
        // Field order is kept, untouched values keep their bytes.
        assert!(
            text.starts_with(
                r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":"AACAPwAAAMAAAAA/"}"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"{"object":"embedding","embedding":"AACAPg==","index":1}"#), "{text}");
        assert!(text.ends_with(r#""usage":{"prompt_tokens": 8, "total_tokens": 8}}"#), "{text}");
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "text-embedding-3-small");
        assert_eq!(decode_base64(v["data"][1]["embedding"].as_str().unwrap()).unwrap(), [0.25]);
    }

    #[test]
    fn nothing_to_rewrite_keeps_the_bytes() {
        let already =
            br#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":"AACAPw=="}],"model":"m"}"#;
        assert_eq!(rewrite_to_base64(already).unwrap(), None);
        assert_eq!(rewrite_to_base64(br#"{"object":"list","data":[]}"#).unwrap(), None);
        assert_eq!(rewrite_to_base64(br#"{"error":{"message":"x"}}"#).unwrap(), None);
    }

    #[test]
    fn unreadable_bodies_are_upstream_errors() {
        assert_eq!(rewrite_to_base64(b"[1,2]").unwrap_err().status, 502);
        assert_eq!(rewrite_to_base64(b"{").unwrap_err().status, 502);
        let err = rewrite_to_base64(br#"{"data":[{"embedding":[1,"x"]}]}"#).unwrap_err();
        assert_eq!(err.status, 502);
        assert!(err.message.contains("numbers"), "{}", err.message);
    }
}
