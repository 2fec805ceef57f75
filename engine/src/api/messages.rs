//! `POST /v1/messages` (and `/v1/messages/count_tokens`): Anthropic's Messages API for Anthropic
//! SDKs and Claude Code, served from any target. An Anthropic provider gets the request as it
//! came (only the model name may change) and its answer goes back as it came; any other target
//! is reached through the canonical schema — the request translated to a chat completion, the
//! answer (plain or streamed) translated back to Anthropic's shapes. Errors are Anthropic-shaped
//! here (`{"type":"error","error":{"type","message"}}`): that is what these clients parse.

use std::rc::Rc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use adapters::anthropic::{
    AnthropicEncoder, AnthropicStream, from_anthropic, request_from_anthropic, response_to_anthropic,
};
use adapters::azure::{self, AzureOperation};
use adapters::canonical::{ChatChunk, ChatCompletion, ChatRequest, StreamOptions};
use bytes::Bytes;
use policy::Identity;

use super::governance::{self, Ask};
use super::route::Route;
use super::translate::{self, Dialect, Translator, send_json, start_event_stream};
use super::{RequestCtx, supervised};
use crate::config::{ProviderKind, Snapshot};
use crate::error::ErrorKind;
use crate::http::{Request, Responder};
use crate::rt::Conn;
use crate::shard::Shard;
use crate::upstream::UpstreamResponse;
use crate::upstream::exchange::fault_kind;

/// Largest upstream error body read to translate it.
const MAX_ERROR_BODY: u64 = 64 * 1024;
/// Tokens the in-process mock writes when the request's `max_tokens` is larger.
const MOCK_MAX_TOKENS: u64 = 4096;

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Anthropic's error type for a status.
fn error_type(status: u16) -> &'static str {
    match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// Answers with an Anthropic-shaped error.
pub(super) async fn refuse<C: Conn>(resp: &mut Responder<'_, C>, ctx: &mut RequestCtx, status: u16, message: &str) {
    ctx.error = Some(match status {
        400 => ErrorKind::InvalidField,
        401 => ErrorKind::Unauthorized,
        403 => ErrorKind::Forbidden,
        404 => ErrorKind::UnknownModel,
        429 => ErrorKind::RateLimited,
        503 => ErrorKind::Unavailable,
        504 => ErrorKind::UpstreamTimeout,
        _ => ErrorKind::UpstreamProtocol,
    });
    let body = serde_json::json!({"type": "error", "error": {"type": error_type(status), "message": message}});
    let _ = resp.start(status).header("content-type", "application/json").body(body.to_string().as_bytes()).await;
}

/// `POST /v1/messages/count_tokens`: a local estimate (no provider call).
pub async fn count_tokens<C: Conn>(req: &Request, resp: &mut Responder<'_, C>, ctx: &mut RequestCtx) {
    match adapters::anthropic::count_tokens_estimate(&req.body) {
        Ok(n) => {
            let body = serde_json::json!({"input_tokens": n}).to_string();
            let _ = resp.start(200).header("content-type", "application/json").body(body.as_bytes()).await;
        }
        Err(e) => refuse(resp, ctx, e.status, &e.message).await,
    }
}

/// `POST /v1/messages`.
pub async fn messages<C: Conn>(
    shard: &Rc<Shard>,
    cfg: &Snapshot,
    caller: &Identity,
    req: Request,
    resp: &mut Responder<'_, C>,
    ctx: &mut RequestCtx,
) {
    let chat = match request_from_anthropic(&req.body) {
        Ok(c) => c,
        Err(e) => return refuse(resp, ctx, e.status, &e.message).await,
    };
    ctx.model = Some(chat.model.clone());
    ctx.stream = chat.stream;
    let Some(resolved) = cfg.resolve_model(&chat.model) else {
        let msg = format!("model: {} (the gateway has no such model, or you may not use it)", chat.model);
        return refuse(resp, ctx, 404, &msg).await;
    };
    if let Err(denied) = cfg.policy.check_model(caller, &chat.model) {
        return refuse(resp, ctx, 403, &denied.message).await;
    }
    let metadata = match governance::metadata(&req.head, caller) {
        Ok(m) => m,
        Err(e) => return refuse(resp, ctx, 400, &e.message).await,
    };
    let ask = Ask {
        identity: caller,
        model: &chat.model,
        upstream_model: &resolved.upstream_model,
        metadata: &metadata,
        body_len: req.body.len(),
        max_tokens: chat.max_output_tokens(),
    };
    if let Err(r) = governance::admit(shard, cfg, &ask, ctx) {
        let body = serde_json::json!({"type": "error", "error": {"type": "rate_limit_error", "message": r.message()}});
        return governance::send_refusal_with(resp, ctx, &r, body.to_string().as_bytes()).await;
    }
    ctx.provider = Some(resolved.provider.name.clone());
    let provider = resolved.provider;
    let upstream_model = resolved.upstream_model.to_string();
    let actor = supervised::actor(shard, provider);
    let started = Instant::now();
    let served = match (&provider.upstream, provider.kind) {
        (None, _) => {
            let drills = provider.mock_faults;
            actor.serve(&shard.pool, Box::pin(from_mock(shard, drills, chat, &req, resp, ctx))).await
        }
        (Some(up), kind) => {
            let route = Route { shard, cfg, provider, up, upstream_model: &upstream_model, req: &req, headers: &[] };
            match (kind, Dialect::of(kind)) {
                (ProviderKind::Anthropic, _) => actor.serve(&shard.pool, Box::pin(native(&route, resp, ctx))).await,
                (_, Some(d)) => actor.serve(&shard.pool, Box::pin(through_dialect(&route, d, chat, resp, ctx))).await,
                (_, None) => actor.serve(&shard.pool, Box::pin(through_chat(&route, chat, resp, ctx))).await,
            }
        }
    };
    if let Some(unserved) = supervised::conclude(&actor, served, started, resp, ctx) {
        let status = unserved.error.status();
        refuse(resp, ctx, status, &unserved.error.message).await;
        ctx.error = Some(unserved.error.kind);
    }
    governance::settle_at_end(ctx);
}

fn message_id(shard: &Shard) -> String {
    format!("msg_sg{}x{}", shard.id, shard.next_sequence())
}

/// Sends the Anthropic JSON of a completion (usage read, cost settled first).
async fn send_completion<C: Conn>(resp: &mut Responder<'_, C>, ctx: &mut RequestCtx, completion: &ChatCompletion) {
    ctx.usage = completion.usage.as_ref().map(super::translate::accounted);
    governance::settle_before_head(ctx);
    send_json(resp, ctx, response_to_anthropic(completion).to_string().as_bytes()).await;
}

/// The in-process mock, through its canned OpenAI answers.
async fn from_mock<C: Conn>(
    shard: &Rc<Shard>,
    drills: bool,
    chat: ChatRequest,
    req: &Request,
    resp: &mut Responder<'_, C>,
    ctx: &mut RequestCtx,
) {
    let body_len = req.body.len();
    if drills {
        super::mock_provider::Drill::of(&req.head).await.before_head();
    }
    let id = message_id(shard);
    let tokens = chat.max_output_tokens().unwrap_or(16).min(MOCK_MAX_TOKENS);
    let reply = crate::mock::Reply {
        id: &id,
        created: now_secs(),
        model: &chat.model,
        prompt_tokens: crate::mock::estimate_prompt_tokens(body_len),
        completion_tokens: usize::try_from(tokens).unwrap_or(16),
        filler: None,
    };
    ctx.upstream_status = Some(200);
    if !chat.stream {
        let completion: Option<ChatCompletion> = serde_json::from_slice(&crate::mock::chat_completion(&reply)).ok();
        return match completion {
            Some(c) => send_completion(resp, ctx, &c).await,
            None => refuse(resp, ctx, 500, "the mock's answer did not read back").await,
        };
    }
    let mut encoder = AnthropicEncoder::new(id.clone(), chat.model.clone(), reply.prompt_tokens);
    let mut body = Vec::new();
    for event in crate::mock::chat_stream(&reply, true) {
        let Some(data) = event.strip_prefix(b"data: ").and_then(|d| d.strip_suffix(b"\n\n")) else { continue };
        if let Ok(chunk) = serde_json::from_slice::<ChatChunk>(data) {
            if let Some(u) = &chunk.usage {
                ctx.usage = Some(super::translate::accounted(u));
            }
            encoder.push(&chunk, &mut body);
        }
    }
    encoder.finish(&mut body);
    stream_all(resp, ctx, body).await;
}

/// Sends a whole event stream (already translated) and settles.
async fn stream_all<C: Conn>(resp: &mut Responder<'_, C>, ctx: &mut RequestCtx, mut body: Vec<u8>) {
    let Some(mut out) = start_event_stream(resp, ctx).await else { return };
    if let Some(c) = governance::settle_stream(ctx) {
        body.extend_from_slice(&c);
    }
    if out.send(&body).await.is_err() || out.finish().await.is_err() {
        ctx.error = Some(ErrorKind::DownstreamClosed);
    }
}

/// POSTs `body` to `path` of the provider (with the access token the gateway minted for it, if
/// any); `Err` is the status and message to answer with.
async fn call<'a>(
    route: &Route<'a>,
    (path, body): (&str, Bytes),
    ctx: &mut RequestCtx,
) -> Result<UpstreamResponse<'a>, (u16, String)> {
    route.post(path, body, Vec::new(), ctx).await.map_err(|e| (e.status(), e.message))
}

/// An Anthropic provider: the request as it came (model renamed), the answer as it came.
async fn native<C: Conn>(route: &Route<'_>, resp: &mut Responder<'_, C>, ctx: &mut RequestCtx) {
    let Route { shard, cfg, up, upstream_model, req, .. } = *route;
    let mut body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
    body["model"] = serde_json::Value::String(upstream_model.to_string());
    let path = format!("{}/messages", up.base_path.trim_end_matches('/'));
    let sent = call(route, (&path, Bytes::from(body.to_string())), ctx).await;
    let mut answer = match sent {
        Ok(a) => a,
        Err((status, message)) => return refuse(resp, ctx, status, &message).await,
    };
    let status = answer.head.status;
    if !answer.head.is_event_stream() {
        let body = match answer.read_to_end(cfg.upstream_limits.max_body_bytes).await {
            Ok(b) => b,
            Err(fault) => {
                ctx.error = Some(fault_kind(&fault));
                return refuse(resp, ctx, 502, &format!("the provider's answer broke off: {fault}")).await;
            }
        };
        if (200..300).contains(&status) {
            ctx.usage =
                from_anthropic(&body, "", 0).ok().and_then(|c| c.usage).as_ref().map(super::translate::accounted);
            governance::settle_before_head(ctx);
        }
        let mut head = resp.start(status).header("content-type", "application/json");
        for (n, v) in &ctx.headers {
            head = head.header(n, v);
        }
        let _ = head.body(&body).await;
        return;
    }
    let Some(mut out) = start_event_stream(resp, ctx).await else { return };
    // Relayed as it comes; read alongside for the usage the cost needs.
    let mut reader = AnthropicStream::new("", 0, false);
    let mut ignored = Vec::new();
    loop {
        match answer.next_chunk().await {
            Ok(Some(piece)) => {
                ctx.upstream_piece(|| answer.since_sent());
                reader.feed(&piece, &mut ignored);
                ignored.clear();
                if out.send(&piece).await.is_err() {
                    ctx.error = Some(ErrorKind::DownstreamClosed);
                    return;
                }
                ctx.event_sent(&shard.metrics);
            }
            Ok(None) => break,
            Err(fault) => {
                ctx.error = Some(fault_kind(&fault));
                return;
            }
        }
    }
    ctx.usage = reader.usage().as_ref().map(super::translate::accounted);
    let tail = governance::settle_stream(ctx).unwrap_or_default();
    if out.send(&tail).await.is_err() || out.finish().await.is_err() {
        ctx.error = Some(ErrorKind::DownstreamClosed);
    }
}

/// A provider of another dialect (Gemini, Bedrock): the request through the canonical chat
/// request to the provider's dialect, the answer through canonical completions or chunks to
/// Anthropic's.
async fn through_dialect<C: Conn>(
    route: &Route<'_>,
    dialect: Dialect,
    chat: ChatRequest,
    resp: &mut Responder<'_, C>,
    ctx: &mut RequestCtx,
) {
    let Route { shard, cfg, provider, .. } = *route;
    let mut answer = match translate::call(route, dialect, &chat, ctx).await {
        Ok(a) => a,
        Err(translate::Refused::Gateway(e)) => {
            let status = e.status();
            refuse(resp, ctx, status, &e.message).await;
            ctx.error = Some(e.kind);
            return;
        }
        Err(translate::Refused::Provider(e)) => return refuse(resp, ctx, e.status, &e.message).await,
    };
    let id = message_id(shard);
    let created = translate::now_secs();
    if !chat.stream {
        let body = match super::forward::read_answer(cfg, &mut answer, ctx, &provider.name).await {
            Ok(b) => b,
            Err(e) => return refuse(resp, ctx, e.status(), &e.message).await,
        };
        return match dialect.completion(&body, &chat.model, &id, created) {
            Ok(c) => send_completion(resp, ctx, &c).await,
            Err(e) => refuse(resp, ctx, e.status, &e.message).await,
        };
    }
    let translator = dialect.stream(&chat.model, &id, created, true);
    let encoder = AnthropicEncoder::new(id, chat.model.clone(), 0);
    relay_as_anthropic(&shard.metrics, &mut answer, resp, ctx, translator, encoder).await;
}

/// Relays a provider's stream as Anthropic's events: read into canonical chunks by
/// `translator`, written by `encoder`, usage captured for the cost.
async fn relay_as_anthropic<C: Conn>(
    metrics: &crate::metrics::ShardMetrics,
    answer: &mut UpstreamResponse<'_>,
    resp: &mut Responder<'_, C>,
    ctx: &mut RequestCtx,
    mut translator: Translator,
    mut encoder: AnthropicEncoder,
) {
    let Some(mut out) = start_event_stream(resp, ctx).await else { return };
    let (mut chunks, mut events) = (Vec::new(), Vec::new());
    loop {
        match answer.next_chunk().await {
            Ok(Some(piece)) => {
                ctx.upstream_piece(|| answer.since_sent());
                translator.feed(&piece, &mut chunks);
                // Kept current: a client that leaves mid-stream still pays for what was made.
                ctx.usage = translator.usage().as_ref().map(translate::accounted);
                for c in chunks.drain(..) {
                    encoder.push(&c, &mut events);
                }
                if !events.is_empty() {
                    if out.send(&std::mem::take(&mut events)).await.is_err() {
                        ctx.error = Some(ErrorKind::DownstreamClosed);
                        return;
                    }
                    ctx.event_sent(metrics);
                }
            }
            Ok(None) => break,
            Err(fault) => {
                ctx.error = Some(fault_kind(&fault));
                encoder.error("api_error", &format!("the provider's stream broke off: {fault}"), &mut events);
                if out.send(&events).await.is_ok() {
                    let _ = out.finish().await;
                }
                return;
            }
        }
    }
    translator.finish(&mut chunks);
    for c in chunks.drain(..) {
        encoder.push(&c, &mut events);
    }
    ctx.usage = translator.usage().as_ref().map(translate::accounted);
    if let Some(e) = translator.take_error() {
        ctx.error = Some(ErrorKind::UpstreamProtocol);
        encoder.error(error_type(e.status), &e.message, &mut events);
    } else {
        encoder.finish(&mut events);
        if let Some(c) = governance::settle_stream(ctx) {
            events.extend_from_slice(&c);
        }
    }
    if out.send(&events).await.is_err() || out.finish().await.is_err() {
        ctx.error = Some(ErrorKind::DownstreamClosed);
    }
}

/// Any OpenAI-dialect provider: the request as a chat completion, the answer back to Anthropic's.
async fn through_chat<C: Conn>(
    route: &Route<'_>,
    mut chat: ChatRequest,
    resp: &mut Responder<'_, C>,
    ctx: &mut RequestCtx,
) {
    let Route { shard, cfg, provider, up, upstream_model, .. } = *route;
    let client_model = chat.model.clone();
    chat.model = upstream_model.to_string();
    if chat.stream {
        // Usage is always needed for cost; the client never sees OpenAI's usage chunk.
        chat.stream_options = Some(StreamOptions { include_usage: true });
    }
    let mut body = serde_json::to_vec(&chat).unwrap_or_default();
    // The host's quirks, and Azure's deployment URLs, as for /v1/chat/completions.
    if let Some(quirks) = &provider.quirks {
        match quirks.apply(&body) {
            Ok(Some(b)) => body = b,
            Ok(None) => {}
            Err(e) => return refuse(resp, ctx, 400, &e.message).await,
        }
    }
    let path = match &provider.azure {
        Some(surface) => azure::request_path(&up.base_path, surface, upstream_model, AzureOperation::ChatCompletions),
        None => format!("{}/chat/completions", up.base_path.trim_end_matches('/')),
    };
    let mut answer = match call(route, (&path, Bytes::from(body)), ctx).await {
        Ok(a) => a,
        Err((status, message)) => return refuse(resp, ctx, status, &message).await,
    };
    let status = answer.head.status;
    if !(200..300).contains(&status) {
        let body = answer.read_to_end(MAX_ERROR_BODY).await.unwrap_or_default();
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.pointer("/error/message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or_else(|| format!("the provider answered {status}"));
        return refuse(resp, ctx, status, &message).await;
    }
    if !chat.stream {
        let read = answer.read_to_end(cfg.upstream_limits.max_body_bytes).await;
        let parsed = read.ok().and_then(|b| serde_json::from_slice::<ChatCompletion>(&b).ok());
        return match parsed {
            Some(mut c) => {
                c.model = client_model;
                send_completion(resp, ctx, &c).await
            }
            None => refuse(resp, ctx, 502, "the provider's answer is not a chat completion").await,
        };
    }
    let encoder = AnthropicEncoder::new(message_id(shard), client_model, 0);
    relay_as_anthropic(&shard.metrics, &mut answer, resp, ctx, Translator::openai(), encoder).await;
}
