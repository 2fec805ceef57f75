//! OpenAI embeddings ↔ Gemini `batchEmbedContents` (AI Studio,
//! <https://ai.google.dev/api/embeddings#method:-models.batchembedcontents>).
//!
//! Vertex AI serves them through `:predict` with one instance per input, and counts tokens per
//! input; AI Studio reports no token counts for embeddings, so its `usage` is zeros.

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
    if matches!(target.api, GeminiApi::Vertex { .. }) {
        return Ok(vertex_predict(&texts, req.dimensions, target));
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

/// Vertex AI's text embeddings: `POST …/publishers/google/models/{model}:predict` with one
/// instance per input (<https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/text-embeddings-api>).
fn vertex_predict(texts: &[&str], dimensions: Option<u32>, target: &GeminiTarget) -> GeminiRequest {
    let instances: Vec<Value> = texts.iter().map(|t| json!({ "content": t })).collect();
    let mut body = json!({ "instances": instances });
    if let (Some(d), Some(obj)) = (dimensions, body.as_object_mut()) {
        obj.insert("parameters".into(), json!({ "outputDimensionality": d }));
    }
    GeminiRequest { method: "POST", path: format!("{}:predict", target.model_path()), body }
}

/// AI Studio's `batchEmbedContents` answer, or Vertex AI's `predict` answer.
#[derive(Deserialize)]
struct BatchResponse {
    #[serde(default)]
    embeddings: Vec<Embedding>,
    #[serde(default)]
    predictions: Option<Vec<Prediction>>,
}

#[derive(Deserialize)]
struct Prediction {
    embeddings: PredictedEmbedding,
}

#[derive(Deserialize)]
struct PredictedEmbedding {
    #[serde(default)]
    values: Vec<f32>,
    #[serde(default)]
    statistics: Option<Statistics>,
}

#[derive(Deserialize)]
struct Statistics {
    #[serde(default)]
    token_count: f64,
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
    // AI Studio reports no tokens for embeddings; Vertex AI counts them per input.
    let (vectors, tokens): (Vec<&[f32]>, u64) = match &resp.predictions {
        Some(p) => (
            p.iter().map(|p| p.embeddings.values.as_slice()).collect(),
            p.iter().filter_map(|p| p.embeddings.statistics.as_ref()).map(|s| s.token_count.max(0.0) as u64).sum(),
        ),
        None => (resp.embeddings.iter().map(|e| e.values.as_slice()).collect(), 0),
    };
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(index, values)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = values.iter().flat_map(|f| f.to_le_bytes()).collect();
                Value::String(STANDARD.encode(bytes))
            } else {
                json!(values)
            };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    Ok(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
    }))
}
