//! Chat completions served by a provider that speaks another dialect: the OpenAI request is
//! parsed into the canonical schema, translated by the provider's adapter, sent, and the answer
//! — buffered, streamed or an error — translated back, so the client sees OpenAI's shapes
//! whatever the provider. The translation itself is pure code in `adapters`; this module only
//! moves bytes and keeps the request's accounting (usage, cost, errors).

use std::time::{SystemTime, UNIX_EPOCH};

use adapters::anthropic::{AnthropicDefaults, AnthropicStream, error_from_anthropic, from_anthropic, to_anthropic};
use adapters::bedrock::sigv4::{SigningRequest, sign};
use adapters::bedrock::{ConverseStream, error_from_bedrock, from_converse, to_converse};
use adapters::canonical::{ApiError, ChatChunk, ChatCompletion, ChatRequest, Usage};
use adapters::gemini::{
    GeminiApi, GeminiStream, GeminiTarget, ThinkingBudgets, error_from_gemini, from_gemini, to_gemini,
};
use adapters::sse::SseScanner;
use bytes::Bytes;

use super::attempt::{Miss, within};
use super::governance;
use super::route::Route;
use super::{OVERHEAD_HEADER, RequestCtx};
use crate::config::Provider;
use crate::error::{ErrorKind, GatewayError};
use crate::http::{Request, Responder};
use crate::rt::Conn;
use crate::shard::Shard;
use crate::upstream::UpstreamResponse;
use crate::upstream::exchange::fault_kind;

/// Largest single SSE event read from an OpenAI-dialect stream.
const MAX_SSE_EVENT: usize = 1 << 20;

/// Largest upstream error body read to translate it.
pub(super) const MAX_ERROR_BODY: u64 = 64 * 1024;

pub(super) fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The canonical usage as the engine's accounting reads it.
pub(super) fn accounted(u: &Usage) -> adapters::openai::usage::Usage {
    adapters::openai::usage::Usage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        total_tokens: u.total_tokens,
        cached_tokens: u.prompt_tokens_details.as_ref().map_or(0, |d| d.cached_tokens),
        reasoning_tokens: u.completion_tokens_details.as_ref().map_or(0, |d| d.reasoning_tokens),
    }
}

/// A translated answer's 200 JSON, with the gateway's own headers.
pub(super) async fn send_json<C: Conn>(resp: &mut Responder<'_, C>, ctx: &mut RequestCtx, body: &[u8]) {
    let overhead = ctx.head_overhead();
    let mut us = itoa::Buffer::new();
    let mut head = resp
        .start(200)
        .header("content-type", "application/json")
        .header(OVERHEAD_HEADER, us.format(u64::try_from(overhead.as_micros()).unwrap_or(u64::MAX)));
    for (n, v) in &ctx.headers {
        head = head.header(n, v);
    }
    if head.body(body).await.is_err() {
        ctx.error = Some(ErrorKind::DownstreamClosed);
    }
}

/// Starts a translated event stream, with the gateway's own headers.
pub(super) async fn start_event_stream<'r, 'a, C: Conn>(
    resp: &'r mut Responder<'a, C>,
    ctx: &mut RequestCtx,
) -> Option<crate::http::response::BodyStream<'r, 'a, C>> {
    let overhead = ctx.head_overhead();
    let mut us = itoa::Buffer::new();
    let mut head = resp
        .start_event_stream(200)
        .header(OVERHEAD_HEADER, us.format(u64::try_from(overhead.as_micros()).unwrap_or(u64::MAX)));
    for (n, v) in &ctx.headers {
        head = head.header(n, v);
    }
    let started = head.stream().await.ok();
    if started.is_none() {
        ctx.error = Some(ErrorKind::DownstreamClosed);
    }
    started
}

/// The `Authorization` header of a provider whose tokens the gateway mints (Vertex AI, Azure
/// with Entra ID), or a 503 saying why there is no token.
pub(super) fn minted_authorization(
    shard: &Shard,
    provider: &Provider,
) -> Result<Option<(String, String)>, GatewayError> {
    if provider.vertex.is_none() && provider.entra.is_none() && provider.managed_identity.is_none() {
        return Ok(None);
    }
    match shard.process.minted.authorization(&provider.name) {
        Ok(bearer) => Ok(Some(("authorization".to_string(), bearer.to_string()))),
        Err(why) => {
            let message = format!("provider {}: no access token: {why}", provider.name);
            Err(GatewayError::new(ErrorKind::Unavailable, message))
        }
    }
}

/// Which Gemini API a provider is reached through.
pub(super) fn gemini_target(provider: &Provider, upstream_model: &str) -> GeminiTarget {
    let api = match &provider.vertex {
        Some(v) => GeminiApi::Vertex { project: v.project.clone(), location: v.location.clone() },
        None => GeminiApi::AiStudio,
    };
    let thinking = provider.thinking.map(|t| ThinkingBudgets {
        low: t.low,
        medium: t.medium,
        high: t.high,
        include_thoughts: t.include_thoughts,
    });
    GeminiTarget { api, model: upstream_model.to_string(), thinking }
}

/// The path under the provider's base URL: AI Studio's base URL carries the API version
/// (`/v1beta`), which the adapter's path repeats; Vertex AI's base URL is the bare host.
pub(super) fn gemini_path(target: &GeminiTarget, path: String) -> String {
    match target.api {
        GeminiApi::AiStudio => path.strip_prefix("/v1beta").map_or(path.clone(), str::to_owned),
        GeminiApi::Vertex { .. } => path,
    }
}

/// The request body as a typed request, or the error OpenAI gives for it.
pub(super) fn parse_body<T: serde::de::DeserializeOwned>(req: &Request) -> Result<T, GatewayError> {
    serde_json::from_slice(&req.body).map_err(|e| {
        let kind = if e.is_data() { ErrorKind::InvalidField } else { ErrorKind::InvalidJson };
        GatewayError::new(kind, format!("We could not parse the JSON body: {e}"))
    })
}

/// A provider dialect the gateway translates to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Anthropic,
    Gemini,
    Bedrock,
}

impl Dialect {
    pub fn of(kind: crate::config::ProviderKind) -> Option<Dialect> {
        match kind {
            crate::config::ProviderKind::Anthropic => Some(Dialect::Anthropic),
            crate::config::ProviderKind::Gemini => Some(Dialect::Gemini),
            crate::config::ProviderKind::Bedrock => Some(Dialect::Bedrock),
            _ => None,
        }
    }

    /// The request as the provider wants it: path (under the provider's base path) and body.
    fn outbound(
        self,
        chat: &ChatRequest,
        provider: &Provider,
        upstream_model: &str,
    ) -> Result<(String, Vec<u8>), ApiError> {
        match self {
            Dialect::Anthropic => {
                let defaults = AnthropicDefaults {
                    max_tokens: provider.default_max_tokens,
                    model: Some(upstream_model.to_string()),
                    thinking_budgets: provider.thinking.map(|t| t.anthropic_budgets()).unwrap_or_default(),
                    ..AnthropicDefaults::default()
                };
                to_anthropic(chat, &defaults).map(|t| ("/messages".to_string(), t.body_bytes()))
            }
            Dialect::Gemini => {
                let target = gemini_target(provider, upstream_model);
                to_gemini(chat, &target)
                    .map(|g| (gemini_path(&target, g.path), serde_json::to_vec(&g.body).unwrap_or_default()))
            }
            Dialect::Bedrock => {
                to_converse(chat, upstream_model).map(|c| (c.path, serde_json::to_vec(&c.body).unwrap_or_default()))
            }
        }
    }

    /// `error_type`: the `x-amzn-errortype` header (Bedrock puts the error's type there).
    pub(super) fn error(self, status: u16, body: &[u8], error_type: Option<&str>) -> ApiError {
        match self {
            Dialect::Anthropic => error_from_anthropic(status, body),
            Dialect::Gemini => error_from_gemini(status, body),
            Dialect::Bedrock => error_from_bedrock(status, body, error_type),
        }
    }

    pub(super) fn completion(
        self,
        body: &[u8],
        model: &str,
        id: &str,
        created: u64,
    ) -> Result<ChatCompletion, ApiError> {
        match self {
            Dialect::Anthropic => from_anthropic(body, model, created),
            Dialect::Gemini => from_gemini(body, model, id, created),
            Dialect::Bedrock => from_converse(body, model, id, created),
        }
    }

    pub(super) fn stream(self, model: &str, id: &str, created: u64, include_usage: bool) -> Translator {
        match self {
            Dialect::Anthropic => Translator::Anthropic(AnthropicStream::new(model, created, include_usage)),
            Dialect::Gemini => Translator::Gemini(GeminiStream::new(model, id, created, include_usage)),
            Dialect::Bedrock => Translator::Bedrock(ConverseStream::new(model, id, created, include_usage), None),
        }
    }
}

/// A provider's stream, read into chat completion chunks.
pub(super) enum Translator {
    /// An OpenAI-dialect stream (read for `/v1/messages`): its chunks as they are, and the
    /// usage of the last one that carried it.
    OpenAi(SseScanner, Option<Usage>),
    Anthropic(AnthropicStream),
    Gemini(GeminiStream),
    /// With the error that ended the stream (an exception message or a corrupt frame).
    Bedrock(ConverseStream, Option<ApiError>),
}

impl Translator {
    /// Reads an OpenAI-dialect stream.
    pub(super) fn openai() -> Translator {
        Translator::OpenAi(SseScanner::new(MAX_SSE_EVENT), None)
    }

    pub(super) fn feed(&mut self, bytes: &[u8], out: &mut Vec<ChatChunk>) {
        match self {
            Translator::OpenAi(scanner, usage) => scanner.feed(bytes, |ev| {
                if let Ok(chunk) = serde_json::from_slice::<ChatChunk>(ev.data) {
                    if chunk.usage.is_some() {
                        usage.clone_from(&chunk.usage);
                    }
                    out.push(chunk);
                }
            }),
            Translator::Anthropic(t) => t.feed(bytes, out),
            Translator::Gemini(t) => t.feed(bytes, out),
            Translator::Bedrock(t, err) => {
                if err.is_none()
                    && let Err(e) = t.feed(bytes, out)
                {
                    *err = Some(e);
                }
            }
        }
    }

    pub(super) fn finish(&mut self, out: &mut Vec<ChatChunk>) {
        match self {
            Translator::OpenAi(..) => {}
            Translator::Anthropic(t) => t.finish(out),
            Translator::Gemini(t) => t.finish(out),
            Translator::Bedrock(t, err) => {
                if err.is_none()
                    && let Err(e) = t.finish()
                {
                    *err = Some(e);
                }
            }
        }
    }

    pub(super) fn usage(&self) -> Option<Usage> {
        match self {
            Translator::OpenAi(_, usage) => usage.clone(),
            Translator::Anthropic(t) => t.usage(),
            Translator::Gemini(t) => t.usage(),
            Translator::Bedrock(t, _) => t.usage().cloned(),
        }
    }

    pub(super) fn take_error(&mut self) -> Option<ApiError> {
        match self {
            Translator::OpenAi(..) => None,
            Translator::Anthropic(t) => t.take_error(),
            Translator::Gemini(t) => t.error().cloned(),
            Translator::Bedrock(_, err) => err.take(),
        }
    }
}

/// A translated chat answer fetched up to the point of commitment.
// One per attempt, handed over once: boxing the larger variant would cost an allocation for
// nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Fetched<'a> {
    /// A whole completion, translated.
    Completion(ChatCompletion),
    /// A stream: its first piece read, the rest to come through the translator.
    Stream { answer: UpstreamResponse<'a>, first: Option<Bytes>, translator: Box<Translator> },
}

/// `POST /v1/chat/completions` to a provider of another dialect, up to the point of
/// commitment: the request translated and sent, a buffered answer read and translated, or a
/// stream's first piece read (its head is held until then, so a stream that breaks before it
/// is a miss the router can still retry elsewhere).
pub(super) async fn fetch_chat<'a>(
    route: &Route<'a>,
    dialect: Dialect,
    ctx: &mut RequestCtx,
) -> Result<Fetched<'a>, Box<Miss>> {
    let Route { shard, cfg, provider, req, .. } = *route;
    let chat: ChatRequest = parse_body(req).map_err(Miss::gateway)?;
    let deadline = ctx.attempt_deadline;
    let called = within(deadline, &provider.name, async {
        call(route, dialect, &chat, ctx).await.map_err(|r| r.into_miss(ctx))
    });
    let mut answer = called.await?;
    let id = format!("chatcmpl-sg{}x{}", shard.id, shard.next_sequence());
    if chat.stream {
        let translator = Box::new(dialect.stream(&chat.model, &id, now_secs(), chat.include_usage()));
        let first = super::attempt::first_piece(&mut answer, &provider.name, ctx).await?;
        return Ok(Fetched::Stream { answer, first, translator });
    }
    let waited = std::time::Instant::now();
    let read = async {
        let read = answer.read_to_end(cfg.upstream_limits.max_body_bytes).await;
        read.map_err(|fault| {
            Miss::gateway(GatewayError::new(fault_kind(&fault), format!("provider {}: {fault}", provider.name)))
        })
    };
    let body = within(deadline, &provider.name, read).await;
    ctx.upstream_time += waited.elapsed();
    // A 2xx answer the adapter cannot read is the provider's fault: another target may do.
    let completion = dialect.completion(&body?, &chat.model, &id, now_secs()).map_err(|e| Miss::api(e, None))?;
    Ok(Fetched::Completion(completion))
}

/// Writes a fetched translated answer: usage read, cost settled.
pub(super) async fn deliver_chat<C: Conn>(
    shard: &crate::shard::Shard,
    cfg: &crate::config::Snapshot,
    fetched: Fetched<'_>,
    resp: &mut Responder<'_, C>,
    ctx: &mut RequestCtx,
) {
    match fetched {
        Fetched::Completion(completion) => {
            ctx.usage = completion.usage.as_ref().map(accounted);
            governance::settle_before_head(ctx);
            let mut body = serde_json::to_vec(&completion).unwrap_or_default();
            if super::guard::watches_output(ctx) {
                match super::guard::check_answer(shard, cfg, &body, ctx).await {
                    Ok(Some(checked)) => body = checked.to_vec(),
                    Ok(None) => {}
                    Err(e) => return super::guard::refuse(resp, ctx, e).await,
                }
            }
            send_json(resp, ctx, &body).await;
        }
        Fetched::Stream { mut answer, first, translator } => {
            stream_back(shard, cfg, &mut answer, Some(first), resp, ctx, *translator).await;
        }
    }
}

/// Why a translated call produced no answer to relay.
pub(super) enum Refused {
    /// The gateway's own failure (the provider could not be reached, ...).
    Gateway(GatewayError),
    /// The adapter refused the request, or the provider answered an error (translated).
    Provider(ApiError),
}

impl Refused {
    /// As an attempt's miss; a provider's `retry-after` was kept in `ctx` by [`send_to`].
    pub(super) fn into_miss(self, ctx: &mut RequestCtx) -> Box<Miss> {
        match self {
            Refused::Gateway(e) => Miss::gateway(e),
            Refused::Provider(e) => match ctx.upstream_retry_after.take() {
                // Only answers the provider sent carry its status: an adapter's refusal of the
                // request was never sent.
                retry_after if ctx.upstream_status == Some(e.status) => Miss::api(e, retry_after),
                _ => Miss::refused(e),
            },
        }
    }
}

/// Translates `chat` to the provider's dialect, sends it (signed for Bedrock) and waits for a
/// successful answer's head; an error answer is read and translated.
pub(super) async fn call<'a>(
    route: &Route<'a>,
    dialect: Dialect,
    chat: &ChatRequest,
    ctx: &mut RequestCtx,
) -> Result<UpstreamResponse<'a>, Refused> {
    let (suffix, body) = dialect.outbound(chat, route.provider, route.upstream_model).map_err(Refused::Provider)?;
    send_to(route, dialect, (&suffix, Bytes::from(body)), ctx).await
}

/// POSTs `body` to `{base path}{suffix}` of the provider (signed for Bedrock) and waits for a
/// successful answer's head; an error answer is read and translated.
pub(super) async fn send_to<'a>(
    route: &Route<'a>,
    dialect: Dialect,
    (suffix, body): (&str, Bytes),
    ctx: &mut RequestCtx,
) -> Result<UpstreamResponse<'a>, Refused> {
    let Route { provider, up, .. } = *route;
    let path = format!("{}{suffix}", up.base_path.trim_end_matches('/'));
    let signed = match &provider.aws {
        // SigV4 over exactly what goes on the wire: host, content type, path and body.
        Some(aws) => {
            let content_type = "application/json";
            let headers = [("host", up.host_header.as_str()), ("content-type", content_type)];
            let (path_only, query) = path.split_once('?').unwrap_or((path.as_str(), ""));
            let at = SigningRequest {
                method: "POST",
                path: path_only,
                query,
                headers: &headers,
                payload: &body,
                content_sha256_header: false,
            };
            let mut h = vec![("content-type".to_string(), content_type.to_string())];
            h.extend(sign(&at, &aws.credentials, &aws.region, "bedrock", SystemTime::now()));
            h
        }
        None => Vec::new(),
    };
    ctx.upstream_retry_after = None;
    let mut answer = route.post(&path, body, signed, ctx).await.map_err(Refused::Gateway)?;
    if !(200..300).contains(&answer.head.status) {
        ctx.upstream_retry_after = super::attempt::retry_after_of(&answer);
        let error_type =
            answer.head.header("x-amzn-errortype").and_then(|v| std::str::from_utf8(v).ok()).map(str::to_owned);
        let body = answer.read_to_end(MAX_ERROR_BODY).await.unwrap_or_default();
        return Err(Refused::Provider(dialect.error(answer.head.status, &body, error_type.as_deref())));
    }
    Ok(answer)
}

/// One `data:` event per chunk.
fn events(chunks: &mut Vec<ChatChunk>) -> Vec<u8> {
    let mut out = Vec::new();
    for c in chunks.drain(..) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&serde_json::to_vec(&c).unwrap_or_default());
        out.extend_from_slice(b"\n\n");
    }
    out
}

/// [`events`] through the output guardrails: the events to send, and the error that stops the
/// stream when one blocked.
fn guarded_events(
    shard: &crate::shard::Shard,
    cfg: &crate::config::Snapshot,
    chunks: &mut Vec<ChatChunk>,
    done: bool,
    ctx: &mut RequestCtx,
) -> (Vec<u8>, Option<GatewayError>) {
    match super::guard::check_chunks(shard, cfg, chunks, done, ctx) {
        Ok(()) => (events(chunks), None),
        Err(e) => {
            chunks.clear();
            (Vec::new(), Some(e))
        }
    }
}

async fn stream_back<C: Conn>(
    shard: &crate::shard::Shard,
    cfg: &crate::config::Snapshot,
    answer: &mut UpstreamResponse<'_>,
    mut first: Option<Option<Bytes>>,
    resp: &mut Responder<'_, C>,
    ctx: &mut RequestCtx,
    mut translator: Translator,
) {
    let metrics = &shard.metrics;
    let guarded = super::guard::watches_output(ctx);
    let Some(mut out) = start_event_stream(resp, ctx).await else { return };
    let mut chunks = Vec::new();
    loop {
        let next = match first.take() {
            Some(held) => Ok(held),
            None => answer.next_chunk().await,
        };
        match next {
            Ok(Some(piece)) => {
                ctx.upstream_piece(|| answer.since_sent());
                translator.feed(&piece, &mut chunks);
                ctx.usage = translator.usage().as_ref().map(accounted);
                if chunks.is_empty() {
                    continue;
                }
                let (mut bytes, blocked) = if guarded {
                    guarded_events(shard, cfg, &mut chunks, false, ctx)
                } else {
                    (events(&mut chunks), None)
                };
                if let Some(err) = blocked {
                    // A violation mid-stream: the error, and no `[DONE]`.
                    ctx.error = Some(err.kind);
                    let _ = governance::settle_stream(ctx);
                    bytes.extend_from_slice(b"data: ");
                    bytes.extend_from_slice(&err.to_json());
                    bytes.extend_from_slice(b"\n\n");
                    if out.send(&bytes).await.is_ok() {
                        let _ = out.finish().await;
                    }
                    return;
                }
                if out.send(&bytes).await.is_err() {
                    ctx.error = Some(ErrorKind::DownstreamClosed);
                    return;
                }
                ctx.event_sent(metrics);
            }
            Ok(None) => break,
            Err(fault) => {
                let kind = fault_kind(&fault);
                ctx.error = Some(kind);
                let err = GatewayError::new(kind, format!("the provider's stream broke off: {fault}"));
                let mut event = events(&mut chunks);
                event.extend_from_slice(b"data: ");
                event.extend_from_slice(&err.to_json());
                event.extend_from_slice(b"\n\n");
                if out.send(&event).await.is_ok() {
                    let _ = out.finish().await;
                }
                return;
            }
        }
    }
    translator.finish(&mut chunks);
    ctx.usage = translator.usage().as_ref().map(accounted);
    let (mut tail, blocked) =
        if guarded { guarded_events(shard, cfg, &mut chunks, true, ctx) } else { (events(&mut chunks), None) };
    if let Some(err) = blocked {
        ctx.error = Some(err.kind);
        tail.extend_from_slice(b"data: ");
        tail.extend_from_slice(&err.to_json());
        tail.extend_from_slice(b"\n\n");
        let _ = governance::settle_stream(ctx);
    } else if let Some(e) = translator.take_error() {
        // OpenAI SDKs raise on an `error` object in a stream's data.
        ctx.error = Some(ErrorKind::UpstreamProtocol);
        tail.extend_from_slice(b"data: ");
        tail.extend_from_slice(&serde_json::to_vec(&e.to_json()).unwrap_or_default());
        tail.extend_from_slice(b"\n\n");
    } else {
        tail.extend_from_slice(crate::mock::DONE_EVENT);
        if let Some(comment) = governance::settle_stream(ctx) {
            tail.extend_from_slice(&comment);
        }
    }
    if out.send(&tail).await.is_err() || out.finish().await.is_err() {
        ctx.error = Some(ErrorKind::DownstreamClosed);
    }
}
