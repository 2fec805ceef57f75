//! OpenAI embeddings ↔ Gemini `batchEmbedContents` (AI Studio,
//! <https://ai.google.dev/api/embeddings#method:-models.batchembedcontents>).
//!
//! Vertex AI serves Gemini embeddings through `:predict` with another body; that form is not
//! done, so a Vertex target is refused with a 400. Gemini reports no token counts for
//! embeddings, so `usage` is zeros.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Value, json};

use super::request::{GeminiApi, GeminiRequest, GeminiTarget};
use super::{bad_upstream, invalid_request};
use crate::canonical::{ApiError, EmbeddingsRequest};

/// `POST /v1beta/models/{model}:batchEmbedContents` with one request per input string.
/// `dimensions` → `outputDimensionality`. Token-array inputs are refused (Gemini takes text).
pub fn to_gemini_embeddings(req: &EmbeddingsRequest, target: &GeminiTarget) -> Result<GeminiRequest, ApiError> {
    if !matches!(target.api, GeminiApi::AiStudio) {
        return Err(invalid_request("embeddings through Vertex AI are not supported yet", "model"));
    }
    let texts: Vec<&str> = match &req.input {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str().ok_or_else(|| {
                    invalid_request("input must be a string or an array of strings", format!("input[{i}]"))
                })
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(invalid_request("input must be a string or an array of strings", "input")),
    };
    if texts.is_empty() {
        return Err(invalid_request("input must not be empty", "input"));
    }
    if let Some(f) = req.encoding_format.as_deref().filter(|f| *f != "float" && *f != "base64") {
        return Err(invalid_request(format!("encoding_format {f:?} is not float or base64"), "encoding_format"));
    }
    let model = format!("models/{}", target.model);
    let requests: Vec<Value> = texts
        .iter()
        .map(|text| {
            let mut r = json!({ "model": model, "content": { "parts": [{ "text": text }] } });
            if let (Some(dims), Some(obj)) = (req.dimensions, r.as_object_mut()) {
                obj.insert("outputDimensionality".into(), dims.into());
            }
            r
        })
        .collect();
    Ok(GeminiRequest {
        method: "POST",
        path: format!("{}:batchEmbedContents", target.model_path()),
        body: json!({ "requests": requests }),
    })
}

#[derive(Deserialize)]
struct BatchResponse {
    #[serde(default)]
    embeddings: Vec<Embedding>,
}

#[derive(Deserialize)]
struct Embedding {
    #[serde(default)]
    values: Vec<f32>,
}

/// The `batchEmbedContents` response as OpenAI's embeddings list. `base64` is true when the
/// client asked for `encoding_format: base64`: each vector is then its little-endian `f32`
/// bytes in standard base64, as OpenAI sends it.
pub fn from_gemini_embeddings(body: &[u8], model: &str, base64: bool) -> Result<Value, ApiError> {
    let resp: BatchResponse = serde_json::from_slice(body)
        .map_err(|e| bad_upstream(format!("gemini returned an unreadable embeddings body: {e}")))?;
    let data: Vec<Value> = resp
        .embeddings
        .iter()
        .enumerate()
        .map(|(index, e)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = e.values.iter().flat_map(|f| f.to_le_bytes()).collect();
                Value::String(STANDARD.encode(bytes))
            } else {
                json!(e.values)
            };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    Ok(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": { "prompt_tokens": 0, "total_tokens": 0 },
    }))
}
