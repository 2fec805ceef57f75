//! `POST /v1/embeddings` served by a provider of another dialect: Gemini's
//! `batchEmbedContents` (all inputs in one call) and Bedrock's `InvokeModel` of Titan (one call
//! per input) or Cohere (up to 96 inputs per call). The answer is OpenAI's embeddings list, as
//! floats or, for `encoding_format: base64`, as OpenAI encodes them.

use std::rc::Rc;

use adapters::bedrock::embeddings::{
    INPUT_TOKEN_COUNT_HEADER, InvokeResponse, from_bedrock_embeddings, to_bedrock_embeddings,
};
use adapters::canonical::{ApiError, EmbeddingsRequest};
use adapters::gemini::{from_gemini_embeddings, to_gemini_embeddings};
use bytes::Bytes;
use serde_json::Value;

use super::translate::{self, Dialect, Refused};
use super::{RequestCtx, governance};
use crate::config::{Provider, Snapshot, Upstream};
use crate::http::{Request, Responder};
use crate::rt::Conn;
use crate::shard::Shard;

/// Serves an embeddings request from a Gemini or Bedrock provider.
#[allow(clippy::too_many_arguments)]
pub async fn embeddings<C: Conn>(
    shard: &Rc<Shard>,
    cfg: &Snapshot,
    dialect: Dialect,
    provider: &Provider,
    up: &Upstream,
    upstream_model: &str,
    req: &Request,
    resp: &mut Responder<'_, C>,
    ctx: &mut RequestCtx,
) {
    let request: EmbeddingsRequest = match translate::parse_body(req) {
        Ok(r) => r,
        Err(e) => return translate::fail(resp, ctx, e).await,
    };
    let client_model = ctx.model.clone().unwrap_or_default();
    let call = Call { shard, cfg, provider, up, req, upstream_model, client_model: &client_model };
    let answer = match dialect {
        Dialect::Gemini => call.gemini(&request, ctx).await,
        Dialect::Bedrock => call.bedrock(&request, ctx).await,
        Dialect::Anthropic => Err(Refused::Provider(ApiError::invalid(
            "model",
            format!("The model `{client_model}` is served by Anthropic, which has no embeddings API."),
        ))),
    };
    let list = match answer {
        Ok(v) => v,
        Err(Refused::Gateway(e)) => return translate::fail(resp, ctx, e).await,
        Err(Refused::Provider(e)) => return translate::send_api_error(resp, ctx, &e).await,
    };
    let prompt_tokens = list.pointer("/usage/prompt_tokens").and_then(Value::as_u64).unwrap_or(0);
    ctx.usage =
        Some(adapters::openai::usage::Usage { prompt_tokens, total_tokens: prompt_tokens, ..Default::default() });
    governance::settle_before_head(ctx);
    translate::send_json(resp, ctx, list.to_string().as_bytes()).await;
}

/// What every upstream call of one embeddings request shares.
struct Call<'a> {
    shard: &'a Rc<Shard>,
    cfg: &'a Snapshot,
    provider: &'a Provider,
    up: &'a Upstream,
    req: &'a Request,
    upstream_model: &'a str,
    client_model: &'a str,
}

impl<'a> Call<'a> {
    async fn send(&self, path: &str, body: Bytes, dialect: Dialect, ctx: &mut RequestCtx) -> Result<Bytes, Refused> {
        let (shard, cfg, provider) = (self.shard, self.cfg, self.provider);
        let mut answer =
            translate::send_to(shard, cfg, dialect, provider, self.up, (path, body), self.req, ctx).await?;
        super::forward::read_answer(cfg, &mut answer, ctx, &provider.name).await.map_err(Refused::Gateway)
    }

    async fn gemini(&self, request: &EmbeddingsRequest, ctx: &mut RequestCtx) -> Result<Value, Refused> {
        let target = translate::gemini_target(self.provider, self.upstream_model);
        let g = to_gemini_embeddings(request, &target).map_err(Refused::Provider)?;
        let path = translate::gemini_path(&target, g.path);
        let body = self.send(&path, Bytes::from(g.body.to_string()), Dialect::Gemini, ctx).await?;
        let base64 = request.encoding_format.as_deref() == Some("base64");
        from_gemini_embeddings(&body, self.client_model, base64).map_err(Refused::Provider)
    }

    async fn bedrock(&self, request: &EmbeddingsRequest, ctx: &mut RequestCtx) -> Result<Value, Refused> {
        let b = to_bedrock_embeddings(request, self.upstream_model).map_err(Refused::Provider)?;
        // One call per body, in order (Titan takes one input per call).
        let mut answers: Vec<(Bytes, Option<u64>)> = Vec::with_capacity(b.bodies.len());
        for body in b.body_bytes() {
            let (shard, cfg, provider) = (self.shard, self.cfg, self.provider);
            let path = (b.path.as_str(), Bytes::from(body));
            let mut answer =
                translate::send_to(shard, cfg, Dialect::Bedrock, provider, self.up, path, self.req, ctx).await?;
            let tokens = answer
                .head
                .header(INPUT_TOKEN_COUNT_HEADER)
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.trim().parse().ok());
            let body =
                super::forward::read_answer(cfg, &mut answer, ctx, &provider.name).await.map_err(Refused::Gateway)?;
            answers.push((body, tokens));
        }
        let responses: Vec<InvokeResponse<'_>> =
            answers.iter().map(|(body, tokens)| InvokeResponse { body, input_token_count: *tokens }).collect();
        from_bedrock_embeddings(b.family, &responses, self.client_model, b.format).map_err(Refused::Provider)
    }
}
