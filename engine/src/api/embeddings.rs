//! `POST /v1/embeddings` served by a provider of another dialect: Gemini's
//! `batchEmbedContents` (all inputs in one call) and Bedrock's `InvokeModel` of Titan (one call
//! per input) or Cohere (up to 96 inputs per call). The answer is OpenAI's embeddings list, as
//! floats or, for `encoding_format: base64`, as OpenAI encodes them.

use adapters::bedrock::embeddings::{
    INPUT_TOKEN_COUNT_HEADER, InvokeResponse, from_bedrock_embeddings, to_bedrock_embeddings,
};
use adapters::canonical::{ApiError, EmbeddingsRequest};
use adapters::gemini::{from_gemini_embeddings, to_gemini_embeddings};
use bytes::Bytes;
use serde_json::Value;

use super::RequestCtx;
use super::attempt::Miss;
use super::route::Route;
use super::translate::{self, Dialect, Refused};

/// An embeddings request to a Gemini or Bedrock provider, answered whole: OpenAI's embeddings
/// list, its usage in `ctx`.
pub(super) async fn fetch(route: &Route<'_>, dialect: Dialect, ctx: &mut RequestCtx) -> Result<Vec<u8>, Box<Miss>> {
    let request: EmbeddingsRequest = translate::parse_body(route.req).map_err(Miss::gateway)?;
    let client_model = ctx.model.clone().unwrap_or_default();
    let answer = match dialect {
        Dialect::Gemini => gemini(route, &request, &client_model, ctx).await,
        Dialect::Bedrock => bedrock(route, &request, &client_model, ctx).await,
        Dialect::Anthropic => Err(Refused::Provider(ApiError::invalid(
            "model",
            format!("The model `{client_model}` is served by Anthropic, which has no embeddings API."),
        ))),
    };
    let list = answer.map_err(|r| r.into_miss(ctx))?;
    let prompt_tokens = list.pointer("/usage/prompt_tokens").and_then(Value::as_u64).unwrap_or(0);
    ctx.usage =
        Some(adapters::openai::usage::Usage { prompt_tokens, total_tokens: prompt_tokens, ..Default::default() });
    Ok(list.to_string().into_bytes())
}

/// POSTs one body and reads the whole answer; also what Bedrock counted in its token header.
async fn send(
    route: &Route<'_>,
    dialect: Dialect,
    (path, body): (&str, Bytes),
    ctx: &mut RequestCtx,
) -> Result<(Bytes, Option<u64>), Refused> {
    let mut answer = translate::send_to(route, dialect, (path, body), ctx).await?;
    let tokens = answer
        .head
        .header(INPUT_TOKEN_COUNT_HEADER)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse().ok());
    let provider = &route.provider.name;
    let body = super::forward::read_answer(route.cfg, &mut answer, ctx, provider).await.map_err(Refused::Gateway)?;
    Ok((body, tokens))
}

/// Gemini: all inputs in one call (`batchEmbedContents` on AI Studio, `:predict` on Vertex AI).
async fn gemini(
    route: &Route<'_>,
    request: &EmbeddingsRequest,
    client_model: &str,
    ctx: &mut RequestCtx,
) -> Result<Value, Refused> {
    let target = translate::gemini_target(route.provider, route.upstream_model);
    let g = to_gemini_embeddings(request, &target).map_err(Refused::Provider)?;
    let path = translate::gemini_path(&target, g.path);
    let (body, _) = send(route, Dialect::Gemini, (&path, Bytes::from(g.body.to_string())), ctx).await?;
    let base64 = request.encoding_format.as_deref() == Some("base64");
    from_gemini_embeddings(&body, client_model, base64).map_err(Refused::Provider)
}

/// Bedrock: one call per body, in order (Titan takes one input per call).
async fn bedrock(
    route: &Route<'_>,
    request: &EmbeddingsRequest,
    client_model: &str,
    ctx: &mut RequestCtx,
) -> Result<Value, Refused> {
    let b = to_bedrock_embeddings(request, route.upstream_model).map_err(Refused::Provider)?;
    let mut answers: Vec<(Bytes, Option<u64>)> = Vec::with_capacity(b.bodies.len());
    for body in b.body_bytes() {
        answers.push(send(route, Dialect::Bedrock, (&b.path, Bytes::from(body)), ctx).await?);
    }
    let responses: Vec<InvokeResponse<'_>> =
        answers.iter().map(|(body, tokens)| InvokeResponse { body, input_token_count: *tokens }).collect();
    from_bedrock_embeddings(b.family, &responses, client_model, b.format).map_err(Refused::Provider)
}
