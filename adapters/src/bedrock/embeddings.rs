//! OpenAI embeddings ⇄ Bedrock `InvokeModel` for the text embedding models (AWS docs, Bedrock
//! user guide: "Amazon Titan Embeddings G1 - Text" (`model-parameters-titan-embed-text`, V2 and
//! G1 bodies), "Cohere Embed v3" (`model-parameters-embed-v3`), "Cohere Embed v4"
//! (`model-parameters-embed-v4`); Bedrock API reference `API_runtime_InvokeModel`).
//!
//! Request mapping (`input`: a string or an array of strings; token arrays are refused):
//! - Titan Text Embeddings V2 (`amazon.titan-embed-text-v2:0`) takes one text per call:
//!   one body `{"inputText", "normalize": true, "dimensions"?}` per input, to send one by one
//!   (OpenAI's vectors are unit length, hence `normalize`). `dimensions` must be 256, 512 or
//!   1024.
//! - Titan Embeddings G1 (`amazon.titan-embed-text-v1`, `amazon.titan-embed-g1-text-02`):
//!   `{"inputText"}` per input; it has a fixed size, so `dimensions` is refused.
//! - Cohere Embed v3 (`cohere.embed-english-v3`, `cohere.embed-multilingual-v3`):
//!   `{"texts", "input_type", "embedding_types": ["float"]}`, up to 96 texts a call (longer
//!   inputs are split into several bodies); fixed size, so `dimensions` is refused.
//! - Cohere Embed v4 (`cohere.embed-v4`): as v3, and `dimensions` → `output_dimension`
//!   (256, 512, 1024 or 1536).
//! - Cohere's `input_type` is `search_document` unless the request carries an `input_type`
//!   string (not an OpenAI field; kept so a client can ask for `search_query`).
//!
//! The family comes from the model id, after any cross-region inference profile prefix
//! (`us.`, `eu.`, `apac.`, ...) and any ARN prefix; an application inference profile ARN does
//! not say which model it serves, so it needs [`to_bedrock_embeddings_for`].
//!
//! Response mapping: Titan `{"embedding", "inputTextTokenCount"}` (or
//! `embeddingsByType.float`) and Cohere `{"embeddings": [[...]] | {"float": [[...]]}, "id",
//! "texts"}`, one answer per body in order, become one OpenAI list with indices running across
//! bodies. Cohere bodies carry no token count; Bedrock sends it in the
//! `X-Amzn-Bedrock-Input-Token-Count` header, passed in as [`InvokeResponse::input_token_count`]
//! (Titan's body count is preferred when present). Usage is the sum, zero when unknown.

use serde::Deserialize;
use serde_json::{Value, json};

use super::api_error;
use super::sigv4::uri_encode;
use crate::canonical::{ApiError, EmbeddingsRequest};
use crate::openai::embeddings::{EncodingFormat, embeddings_list};

/// The response header in which Bedrock reports input tokens for `InvokeModel`.
pub const INPUT_TOKEN_COUNT_HEADER: &str = "x-amzn-bedrock-input-token-count";

/// Cohere Embed accepts at most this many texts per call.
pub const COHERE_MAX_TEXTS: usize = 96;

/// The request/response dialect of a Bedrock embedding model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingFamily {
    /// Amazon Titan Text Embeddings V2: one text per call, `dimensions`, `normalize`.
    TitanV2,
    /// Amazon Titan Embeddings G1 - Text: one text per call, `inputText` only.
    TitanG1,
    /// Cohere Embed v3 (English, multilingual): up to 96 texts per call, fixed size.
    CohereV3,
    /// Cohere Embed v4: as v3, with `output_dimension`.
    CohereV4,
}

impl EmbeddingFamily {
    /// The family of a model id, inference profile id or ARN, `None` when it is not an
    /// embedding model we know (or an ARN that does not name the model).
    pub fn from_model_id(model_id: &str) -> Option<EmbeddingFamily> {
        // `arn:aws:bedrock:...:foundation-model/amazon.titan-...` → the part after the last `/`.
        let id = model_id.rsplit('/').next().unwrap_or(model_id).to_ascii_lowercase();
        let of = |id: &str| {
            Some(if id.starts_with("amazon.titan-embed-text-v2") {
                EmbeddingFamily::TitanV2
            } else if id.starts_with("amazon.titan-embed-text-v1") || id.starts_with("amazon.titan-embed-g1-text") {
                EmbeddingFamily::TitanG1
            } else if id.starts_with("cohere.embed-v4") {
                EmbeddingFamily::CohereV4
            } else if id.starts_with("cohere.embed-english-v3") || id.starts_with("cohere.embed-multilingual-v3") {
                EmbeddingFamily::CohereV3
            } else {
                return None;
            })
        };
        // A cross-region inference profile prefixes the model id with a geography: `us.`,
        // `eu.`, `apac.`, `us-gov.`, `global.`, ...
        of(&id).or_else(|| id.split_once('.').and_then(|(_, rest)| of(rest)))
    }

    fn is_titan(self) -> bool {
        matches!(self, EmbeddingFamily::TitanV2 | EmbeddingFamily::TitanG1)
    }
}

/// The `InvokeModel` calls that answer one embeddings request.
#[derive(Debug, Clone, PartialEq)]
pub struct BedrockEmbeddingsRequest {
    pub family: EmbeddingFamily,
    /// `/model/{model id, URI-encoded}/invoke`, the same for every body.
    pub path: String,
    /// One JSON body per call, to send in order (one by one for Titan: one per input).
    pub bodies: Vec<Value>,
    /// What the client asked for; pass it back to [`from_bedrock_embeddings`].
    pub format: EncodingFormat,
}

impl BedrockEmbeddingsRequest {
    /// The bodies as bytes, in order.
    pub fn body_bytes(&self) -> Vec<Vec<u8>> {
        self.bodies.iter().map(|b| serde_json::to_vec(b).unwrap_or_default()).collect()
    }
}

/// The `InvokeModel` wire path for `model_id` (`:` and `/` percent-encoded).
pub fn invoke_path(model_id: &str) -> String {
    format!("/model/{}/invoke", uri_encode(model_id))
}

/// Translates an embeddings request for `model_id`, the family read from the id.
pub fn to_bedrock_embeddings(req: &EmbeddingsRequest, model_id: &str) -> Result<BedrockEmbeddingsRequest, ApiError> {
    let family = EmbeddingFamily::from_model_id(model_id).ok_or_else(|| {
        api_error(
            400,
            format!(
                "{model_id:?} is not a Bedrock embedding model we can call: supported are Amazon Titan \
                 Text Embeddings (amazon.titan-embed-text-v2:0, v1) and Cohere Embed \
                 (cohere.embed-english-v3, cohere.embed-multilingual-v3, cohere.embed-v4)"
            ),
            Some("model"),
        )
    })?;
    to_bedrock_embeddings_for(req, model_id, family)
}

/// Translates an embeddings request for `model_id` in the given family (for ids that do not
/// name their model, such as application inference profile ARNs).
pub fn to_bedrock_embeddings_for(
    req: &EmbeddingsRequest,
    model_id: &str,
    family: EmbeddingFamily,
) -> Result<BedrockEmbeddingsRequest, ApiError> {
    let format = EncodingFormat::of(req)?;
    let texts = input_texts(&req.input)?;
    let bodies = match family {
        EmbeddingFamily::TitanV2 => {
            let dims = req.dimensions.map(|d| check_dimensions(d, &[256, 512, 1024], "Titan Text Embeddings V2"));
            let dims = dims.transpose()?;
            texts
                .iter()
                .map(|text| {
                    let mut body = json!({ "inputText": text });
                    if let (Some(d), Some(obj)) = (dims, body.as_object_mut()) {
                        obj.insert("dimensions".into(), d.into());
                    }
                    if let Some(obj) = body.as_object_mut() {
                        obj.insert("normalize".into(), true.into());
                    }
                    body
                })
                .collect()
        }
        EmbeddingFamily::TitanG1 => {
            if req.dimensions.is_some() {
                return Err(fixed_size("Titan Embeddings G1 - Text"));
            }
            texts.iter().map(|text| json!({ "inputText": text })).collect()
        }
        EmbeddingFamily::CohereV3 | EmbeddingFamily::CohereV4 => {
            let dims = match (family, req.dimensions) {
                (_, None) => None,
                (EmbeddingFamily::CohereV4, Some(d)) => {
                    Some(check_dimensions(d, &[256, 512, 1024, 1536], "Cohere Embed v4")?)
                }
                (_, Some(_)) => return Err(fixed_size("Cohere Embed v3")),
            };
            let input_type = match req.extra.get("input_type") {
                None => "search_document",
                Some(Value::String(t)) => t.as_str(),
                Some(_) => return Err(api_error(400, "input_type must be a string", Some("input_type"))),
            };
            texts
                .chunks(COHERE_MAX_TEXTS)
                .map(|batch| {
                    let mut body = json!({
                        "texts": batch,
                        "input_type": input_type,
                        "embedding_types": ["float"],
                    });
                    if let (Some(d), Some(obj)) = (dims, body.as_object_mut()) {
                        obj.insert("output_dimension".into(), d.into());
                    }
                    body
                })
                .collect()
        }
    };
    Ok(BedrockEmbeddingsRequest { family, path: invoke_path(model_id), bodies, format })
}

fn input_texts(input: &Value) -> Result<Vec<&str>, ApiError> {
    const WHAT: &str = "input must be a string or an array of strings (token arrays are not supported on Bedrock)";
    let texts: Vec<&str> = match input {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| v.as_str().ok_or_else(|| api_error(400, WHAT, Some(&format!("input[{i}]")))))
            .collect::<Result<_, _>>()?,
        _ => return Err(api_error(400, WHAT, Some("input"))),
    };
    if texts.is_empty() {
        return Err(api_error(400, "input must not be empty", Some("input")));
    }
    Ok(texts)
}

fn check_dimensions(dims: u32, allowed: &[u32], model: &str) -> Result<u32, ApiError> {
    if allowed.contains(&dims) {
        Ok(dims)
    } else {
        Err(api_error(400, format!("{model} supports dimensions {allowed:?}, not {dims}"), Some("dimensions")))
    }
}

fn fixed_size(model: &str) -> ApiError {
    api_error(400, format!("{model} has a fixed embedding size: dimensions cannot be set"), Some("dimensions"))
}

/// One `InvokeModel` answer: its body and the `X-Amzn-Bedrock-Input-Token-Count` header.
#[derive(Debug, Clone, Copy)]
pub struct InvokeResponse<'a> {
    pub body: &'a [u8],
    pub input_token_count: Option<u64>,
}

#[derive(Deserialize)]
struct TitanResponse {
    #[serde(default)]
    embedding: Option<Vec<f64>>,
    #[serde(default, rename = "embeddingsByType")]
    by_type: Option<FloatByType>,
    #[serde(default, rename = "inputTextTokenCount")]
    input_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct FloatByType<T = Vec<f64>> {
    #[serde(default)]
    float: Option<T>,
}

#[derive(Deserialize)]
struct CohereResponse {
    embeddings: CohereEmbeddings,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum CohereEmbeddings {
    /// `response_type: embeddings_floats`.
    Floats(Vec<Vec<f64>>),
    /// `response_type: embeddings_by_type`.
    ByType(FloatByType<Vec<Vec<f64>>>),
}

fn unreadable(e: &serde_json::Error) -> ApiError {
    api_error(502, format!("Bedrock returned an unreadable embeddings body: {e}"), None)
}

/// The answers to the calls of a [`BedrockEmbeddingsRequest`], in the order sent, as OpenAI's
/// embeddings list for `model` (the name the client asked for).
pub fn from_bedrock_embeddings(
    family: EmbeddingFamily,
    responses: &[InvokeResponse<'_>],
    model: &str,
    format: EncodingFormat,
) -> Result<Value, ApiError> {
    let mut vectors: Vec<Vec<f64>> = Vec::new();
    let mut tokens: u64 = 0;
    for response in responses {
        if family.is_titan() {
            let r: TitanResponse = serde_json::from_slice(response.body).map_err(|e| unreadable(&e))?;
            let vector = r
                .embedding
                .or_else(|| r.by_type.and_then(|b| b.float))
                .ok_or_else(|| api_error(502, "Bedrock returned a Titan embeddings body without an embedding", None))?;
            vectors.push(vector);
            tokens += r.input_tokens.or(response.input_token_count).unwrap_or(0);
        } else {
            let r: CohereResponse = serde_json::from_slice(response.body).map_err(|e| unreadable(&e))?;
            let batch = match r.embeddings {
                CohereEmbeddings::Floats(v) => v,
                CohereEmbeddings::ByType(by_type) => by_type
                    .float
                    .ok_or_else(|| api_error(502, "Bedrock returned Cohere embeddings without float vectors", None))?,
            };
            vectors.extend(batch);
            tokens += response.input_token_count.unwrap_or(0);
        }
    }
    Ok(embeddings_list(model, &vectors, tokens, format))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::openai::embeddings::decode_base64;
    use std::path::PathBuf;

    fn golden(name: &str) -> Value {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/bedrock").join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn request(v: Value) -> EmbeddingsRequest {
        serde_json::from_value(v).unwrap()
    }

    /// Runs a golden case both ways: request bodies, then the answers in float and base64.
    fn run_golden(name: &str) {
        let g = golden(name);
        let model_id = g["model_id"].as_str().unwrap();
        let out = to_bedrock_embeddings(&request(g["openai_request"].clone()), model_id).unwrap();
        assert_eq!(out.path, g["bedrock_requests"]["path"], "{name}");
        assert_eq!(Value::Array(out.bodies.clone()), g["bedrock_requests"]["bodies"], "{name}");
        for (bytes, want) in out.body_bytes().iter().zip(out.bodies.iter()) {
            assert_eq!(&serde_json::from_slice::<Value>(bytes).unwrap(), want);
        }
        let bodies: Vec<Vec<u8>> = g["bedrock_responses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| serde_json::to_vec(&r["body"]).unwrap())
            .collect();
        let responses: Vec<InvokeResponse<'_>> = g["bedrock_responses"]
            .as_array()
            .unwrap()
            .iter()
            .zip(bodies.iter())
            .map(|(r, body)| InvokeResponse { body, input_token_count: r["input_token_count"].as_u64() })
            .collect();
        let model = g["openai_request"]["model"].as_str().unwrap();
        let float = from_bedrock_embeddings(out.family, &responses, model, EncodingFormat::Float).unwrap();
        assert_eq!(float, g["openai_response"], "{name}");
        let b64 = from_bedrock_embeddings(out.family, &responses, model, EncodingFormat::Base64).unwrap();
        assert_eq!(b64, g["openai_response_base64"], "{name}");
        // The base64 strings decode back to the float vectors.
        for (b, f) in b64["data"].as_array().unwrap().iter().zip(float["data"].as_array().unwrap()) {
            let decoded = decode_base64(b["embedding"].as_str().unwrap()).unwrap();
            let floats: Vec<f32> =
                f["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
            assert_eq!(decoded, floats);
        }
    }

    #[test]
    fn golden_titan_v2() {
        run_golden("embeddings-titan.json");
    }

    #[test]
    fn golden_cohere_v3() {
        run_golden("embeddings-cohere.json");
    }

    #[test]
    fn families_from_ids_profiles_and_arns() {
        use EmbeddingFamily::*;
        for (id, want) in [
            ("amazon.titan-embed-text-v2:0", Some(TitanV2)),
            ("amazon.titan-embed-text-v1", Some(TitanG1)),
            ("amazon.titan-embed-g1-text-02", Some(TitanG1)),
            ("cohere.embed-english-v3", Some(CohereV3)),
            ("cohere.embed-multilingual-v3", Some(CohereV3)),
            ("us.cohere.embed-v4:0", Some(CohereV4)),
            ("eu.amazon.titan-embed-text-v2:0", Some(TitanV2)),
            ("apac.cohere.embed-english-v3", Some(CohereV3)),
            ("arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-embed-text-v2:0", Some(TitanV2)),
            ("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.cohere.embed-v4:0", Some(CohereV4)),
            ("arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3", None),
            ("amazon.titan-embed-image-v1", None),
            ("anthropic.claude-3-haiku-20240307-v1:0", None),
            ("", None),
        ] {
            assert_eq!(EmbeddingFamily::from_model_id(id), want, "{id}");
        }
    }

    #[test]
    fn unknown_models_are_refused_and_can_be_named_explicitly() {
        let req = request(json!({"model": "e", "input": "hi"}));
        let arn = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3";
        let err = to_bedrock_embeddings(&req, arn).unwrap_err();
        assert_eq!((err.status, err.param.as_deref()), (400, Some("model")));
        let out = to_bedrock_embeddings_for(&req, arn, EmbeddingFamily::TitanV2).unwrap();
        assert_eq!(
            out.path,
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aapplication-inference-profile%2Fa1b2c3/invoke"
        );
        assert_eq!(out.bodies, [json!({"inputText": "hi", "normalize": true})]);
    }

    #[test]
    fn token_arrays_and_bad_inputs_are_refused() {
        for (input, param) in [
            (json!([1, 2, 3]), "input[0]"),
            (json!([[1, 2], [3]]), "input[0]"),
            (json!(["ok", 5]), "input[1]"),
            (json!(42), "input"),
            (json!([]), "input"),
        ] {
            let err = to_bedrock_embeddings(&request(json!({"model": "e", "input": input})), "cohere.embed-english-v3")
                .unwrap_err();
            assert_eq!((err.status, err.param.as_deref()), (400, Some(param)), "{input}");
            assert_eq!(err.kind, "invalid_request_error");
        }
        let err = to_bedrock_embeddings(
            &request(json!({"model": "e", "input": "x", "encoding_format": "int8"})),
            "amazon.titan-embed-text-v2:0",
        )
        .unwrap_err();
        assert_eq!(err.param.as_deref(), Some("encoding_format"));
    }

    #[test]
    fn dimensions_per_family() {
        let with = |dims: u32| request(json!({"model": "e", "input": "x", "dimensions": dims}));
        let titan = to_bedrock_embeddings(&with(512), "amazon.titan-embed-text-v2:0").unwrap();
        assert_eq!(titan.bodies, [json!({"inputText": "x", "dimensions": 512, "normalize": true})]);
        assert_eq!(to_bedrock_embeddings(&with(300), "amazon.titan-embed-text-v2:0").unwrap_err().status, 400);
        assert_eq!(to_bedrock_embeddings(&with(1024), "amazon.titan-embed-text-v1").unwrap_err().status, 400);
        assert_eq!(to_bedrock_embeddings(&with(1024), "cohere.embed-english-v3").unwrap_err().status, 400);
        let v4 = to_bedrock_embeddings(&with(1536), "us.cohere.embed-v4:0").unwrap();
        assert_eq!(v4.bodies[0]["output_dimension"], 1536);
        let err = to_bedrock_embeddings(&with(768), "cohere.embed-v4:0").unwrap_err();
        assert_eq!(err.param.as_deref(), Some("dimensions"));
        assert!(err.message.contains("1536"), "{}", err.message);
    }

    #[test]
    fn cohere_batches_of_96_and_input_type() {
        let texts: Vec<String> = (0..200).map(|i| format!("t{i}")).collect();
        let req = request(json!({"model": "e", "input": texts, "input_type": "search_query"}));
        let out = to_bedrock_embeddings(&req, "cohere.embed-multilingual-v3").unwrap();
        let sizes: Vec<usize> = out.bodies.iter().map(|b| b["texts"].as_array().unwrap().len()).collect();
        assert_eq!(sizes, [96, 96, 8]);
        assert_eq!(out.bodies[2]["texts"][7], "t199");
        assert!(out.bodies.iter().all(|b| b["input_type"] == "search_query"));
        let bad = request(json!({"model": "e", "input": "x", "input_type": 3}));
        assert_eq!(
            to_bedrock_embeddings(&bad, "cohere.embed-english-v3").unwrap_err().param.as_deref(),
            Some("input_type")
        );
    }

    #[test]
    fn titan_one_body_per_input() {
        let req = request(json!({"model": "e", "input": ["a", "b", "c"]}));
        let out = to_bedrock_embeddings(&req, "amazon.titan-embed-text-v2:0").unwrap();
        assert_eq!(out.bodies.len(), 3);
        assert_eq!(out.bodies[2], json!({"inputText": "c", "normalize": true}));
        assert_eq!(out.path, "/model/amazon.titan-embed-text-v2%3A0/invoke");
    }

    #[test]
    fn responses_across_batches_and_token_counts() {
        let a =
            br#"{"embeddings": [[0.5], [1.0]], "id": "a", "texts": ["x", "y"], "response_type": "embeddings_floats"}"#;
        let b =
            br#"{"embeddings": {"float": [[2.0]]}, "id": "b", "texts": ["z"], "response_type": "embeddings_by_type"}"#;
        let out = from_bedrock_embeddings(
            EmbeddingFamily::CohereV3,
            &[
                InvokeResponse { body: a, input_token_count: Some(3) },
                InvokeResponse { body: b, input_token_count: None },
            ],
            "m",
            EncodingFormat::Float,
        )
        .unwrap();
        let indices: Vec<u64> = out["data"].as_array().unwrap().iter().map(|d| d["index"].as_u64().unwrap()).collect();
        assert_eq!(indices, [0, 1, 2]);
        assert_eq!(out["data"][2]["embedding"], json!([2.0]));
        assert_eq!(out["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));

        // Titan: the body's count wins over the header; embeddingsByType is a fallback.
        let t1 = br#"{"embedding": [0.25], "inputTextTokenCount": 4}"#;
        let t2 = br#"{"embeddingsByType": {"float": [0.75]}}"#;
        let out = from_bedrock_embeddings(
            EmbeddingFamily::TitanV2,
            &[
                InvokeResponse { body: t1, input_token_count: Some(99) },
                InvokeResponse { body: t2, input_token_count: Some(2) },
            ],
            "m",
            EncodingFormat::Float,
        )
        .unwrap();
        assert_eq!(out["data"][1]["embedding"], json!([0.75]));
        assert_eq!(out["usage"]["prompt_tokens"], 6);
    }

    #[test]
    fn unreadable_responses_are_upstream_errors() {
        for (family, body) in [
            (EmbeddingFamily::TitanV2, &b"not json"[..]),
            (EmbeddingFamily::TitanV2, br#"{"inputTextTokenCount": 3}"#),
            (EmbeddingFamily::CohereV3, br#"{"id": "x"}"#),
            (EmbeddingFamily::CohereV4, br#"{"embeddings": {"int8": [[1]]}}"#),
        ] {
            let err = from_bedrock_embeddings(
                family,
                &[InvokeResponse { body, input_token_count: None }],
                "m",
                EncodingFormat::Float,
            )
            .unwrap_err();
            assert_eq!((err.status, err.kind.as_str()), (502, "api_error"));
        }
    }
}
