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
use adapters::canonical::{ApiError, ChatChunk, ChatCompletion, ChatRequest, StreamOptions};
use bytes::Bytes;
use policy::Identity;

use adapters::openai::request::RequestFacts;

use super::attempt::{Attempted, Final, Miss, within};
use super::forward::{Prefetched, Target};
use super::governance::{self, Ask};
use super::route::Route;
use super::routing::{self, Attempter as _};
use super::translate::{self, Dialect, Translator, send_json, start_event_stream};
use super::{RequestCtx, supervised};
use crate::config::{ModelRoute, ProviderKind, Snapshot};
use crate::error::{ErrorKind, GatewayError};
use crate::http::{Request, Responder};
use crate::metrics::Endpoint;
use crate::rt::Conn;
use crate::shard::Shard;
use crate::upstream::UpstreamResponse;
use crate::upstream::exchange::fault_kind;

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
    let mut head = resp.start(status).header("content-type", "application/json");
    // The gateway's own headers (rate limits, routing) go with errors too.
    for (n, v) in &ctx.headers {
        head = head.header(n, v);
    }
    let _ = head.body(body.to_string().as_bytes()).await;
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
    let Some(served_by) = cfg.model_route(&chat.model) else {
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
        upstream_model: served_by.first_upstream_model(cfg),
        metadata: &metadata,
        body_len: req.body.len(),
        max_tokens: chat.max_output_tokens(),
    };
    if let Err(r) = governance::admit(shard, cfg, &ask, ctx) {
        let body = serde_json::json!({"type": "error", "error": {"type": "rate_limit_error", "message": r.message()}});
        return governance::send_refusal_with(resp, ctx, &r, body.to_string().as_bytes()).await;
    }
    // Input guardrails: blocked requests go nowhere; redacted ones are parsed again (by the
    // attempt: the request parsed above is the original, which must not be sent).
    let (req, unchanged) = match super::guard::check_input(
        shard,
        cfg,
        caller,
        &chat.model,
        &metadata,
        Endpoint::Messages,
        &req.body,
        None,
        ctx,
    )
    .await
    {
        Ok(None) => (req, true),
        Ok(Some(body)) => (Request { body, ..req }, false),
        Err(e) => return refuse(resp, ctx, e.status(), &e.message).await,
    };
    let parsed = std::cell::RefCell::new(unchanged.then(|| (req.body.as_ptr(), chat)));
    let attempter = Messages { shard, cfg, parsed };
    match served_by {
        ModelRoute::Direct(resolved) => {
            let target = Target { provider: resolved.provider, upstream_model: &resolved.upstream_model, headers: &[] };
            if let Some(miss) = attempter.attempt(&target, &req, &RequestFacts::default(), resp, ctx).await {
                send_anthropic(*miss, resp, ctx).await;
            }
        }
        ModelRoute::Routed(route) => {
            let facts = shard.scanner.borrow_mut().scan(&req.body).unwrap_or_default();
            let asked = routing::Asked { caller, metadata: &metadata, req: &req, facts: &facts };
            Box::pin(routing::serve(shard, cfg, route, &asked, &attempter, resp, ctx)).await;
        }
    }
    super::guard::record_unawaited(shard, ctx);
    governance::settle_at_end(ctx);
}

/// `/v1/messages` attempts, for the router's loop.
pub(super) struct Messages<'a> {
    pub shard: &'a Rc<Shard>,
    pub cfg: &'a Snapshot,
    /// The request as parsed to read its model, for the first attempt at its own body (a
    /// target's `params` make another body, and a retry needs its own copy: both parse again).
    pub parsed: std::cell::RefCell<Option<(*const u8, ChatRequest)>>,
}

impl routing::Attempter for Messages<'_> {
    async fn attempt<C: Conn>(
        &self,
        target: &Target<'_>,
        req: &Request,
        _facts: &RequestFacts,
        resp: &mut Responder<'_, C>,
        ctx: &mut RequestCtx,
    ) -> Option<Box<Miss>> {
        let Messages { shard, cfg, .. } = *self;
        // The body may carry a target's `params`: read it again.
        let reusable = self.parsed.borrow_mut().take().filter(|(at, _)| *at == req.body.as_ptr());
        let chat = match reusable {
            Some((_, chat)) => chat,
            None => match request_from_anthropic(&req.body) {
                Ok(c) => c,
                Err(e) => return Some(Miss::refused(e)),
            },
        };
        let provider = target.provider;
        ctx.provider = Some(provider.name.clone());
        let actor = supervised::actor(shard, provider);
        let started = Instant::now();
        let served = match (&provider.upstream, provider.kind) {
            (None, _) => {
                let drills = provider.mock_faults;
                actor.serve(&shard.pool, Box::pin(from_mock(shard, cfg, drills, chat, req, resp, ctx))).await
            }
            (Some(up), _) => {
                let route = Route {
                    shard,
                    cfg,
                    provider,
                    up,
                    upstream_model: target.upstream_model,
                    req,
                    headers: target.headers,
                };
                let route = &route;
                let work = async {
                    let ready = fetch(route, chat, ctx).await?;
                    super::guard::gate(shard, cfg, ctx).await.map_err(Miss::guardrail)?;
                    deliver(shard, cfg, ready, resp, ctx).await;
                    Ok(())
                };
                actor.serve(&shard.pool, Box::pin(work)).await
            }
        };
        supervised::settle_attempt(&actor, served, started, resp, ctx)
    }

    async fn answer<C: Conn>(&self, miss: Box<Miss>, resp: &mut Responder<'_, C>, ctx: &mut RequestCtx) {
        send_anthropic(*miss, resp, ctx).await;
    }

    fn hedgeable(&self) -> Option<routing::HedgeApi> {
        Some(routing::HedgeApi::Messages)
    }
}

/// Answers the last miss in Anthropic's error shape: an Anthropic provider's own error as it
/// came, anything else as `{"type":"error","error":{...}}` with the gateway's headers.
async fn send_anthropic<C: Conn>(miss: Miss, resp: &mut Responder<'_, C>, ctx: &mut RequestCtx) {
    let (status, message) = match miss.answer {
        Final::Upstream { status, headers, body } => {
            let is_anthropic = serde_json::from_slice::<serde_json::Value>(&body)
                .is_ok_and(|v| v.get("type").and_then(|t| t.as_str()) == Some("error"));
            if is_anthropic {
                ctx.upstream_status = Some(status);
                let mut head = resp.start(status);
                for (n, v) in &headers {
                    if !ctx.headers.iter().any(|(o, _)| o.as_bytes().eq_ignore_ascii_case(n)) {
                        head = head.header(n, v);
                    }
                }
                for (n, v) in &ctx.headers {
                    head = head.header(n, v);
                }
                let _ = head.body_bytes(body).await;
                return;
            }
            // An OpenAI-dialect provider's error: its message, in Anthropic's shape.
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.pointer("/error/message").and_then(|m| m.as_str()).map(str::to_owned))
                .unwrap_or_else(|| format!("the provider answered {status}"));
            (status, message)
        }
        Final::Gateway(e) => {
            refuse(resp, ctx, e.status(), &e.message).await;
            ctx.error = Some(e.kind);
            return;
        }
        Final::Api(e) => (e.status, e.message),
        Final::Unserved(u) => {
            refuse(resp, ctx, u.error.status(), &u.error.message).await;
            ctx.error = Some(u.error.kind);
            return;
        }
    };
    refuse(resp, ctx, status, &message).await;
}

fn message_id(shard: &Shard) -> String {
    format!("msg_sg{}x{}", shard.id, shard.next_sequence())
}

/// Sends the Anthropic JSON of a completion (usage read, cost settled first).
async fn send_completion<C: Conn>(
    shard: &Shard,
    cfg: &Snapshot,
    resp: &mut Responder<'_, C>,
    ctx: &mut RequestCtx,
    completion: &ChatCompletion,
) {
    ctx.usage = completion.usage.as_ref().map(super::translate::accounted);
    governance::settle_before_head(ctx);
    let mut body = response_to_anthropic(completion).to_string().into_bytes();
    if super::guard::watches_output(ctx) {
        match super::guard::check_answer(shard, cfg, &body, ctx).await {
            Ok(Some(checked)) => body = checked.to_vec(),
            Ok(None) => {}
            Err(e) => return refuse(resp, ctx, e.status(), &e.message).await,
        }
    }
    send_json(resp, ctx, &body).await;
}

/// The in-process mock, through its canned OpenAI answers.
#[allow(clippy::too_many_arguments)]
async fn from_mock<C: Conn>(
    shard: &Rc<Shard>,
    cfg: &Snapshot,
    drills: bool,
    chat: ChatRequest,
    req: &Request,
    resp: &mut Responder<'_, C>,
    ctx: &mut RequestCtx,
) -> Attempted {
    let body_len = req.body.len();
    super::guard::gate(shard, cfg, ctx).await.map_err(Miss::guardrail)?;
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
        script: &[],
        tool_args: &[],
    };
    ctx.upstream_status = Some(200);
    if !chat.stream {
        let completion: Option<ChatCompletion> = serde_json::from_slice(&crate::mock::chat_completion(&reply)).ok();
        match completion {
            Some(c) => send_completion(shard, cfg, resp, ctx, &c).await,
            None => refuse(resp, ctx, 500, "the mock's answer did not read back").await,
        }
        return Ok(());
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
    Ok(())
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
/// any), within the attempt's deadline; an error answer is a miss (its body read).
async fn call<'a>(
    route: &Route<'a>,
    (path, body): (&str, Bytes),
    ctx: &mut RequestCtx,
) -> Result<UpstreamResponse<'a>, Box<Miss>> {
    let deadline = ctx.attempt_deadline;
    let mut answer = within(deadline, &route.provider.name, async {
        route.post(path, body, Vec::new(), ctx).await.map_err(Miss::gateway)
    })
    .await?;
    if !(200..300).contains(&answer.head.status) {
        return Err(Miss::upstream(&mut answer).await);
    }
    Ok(answer)
}

/// A `/v1/messages` answer fetched up to the point of commitment: nothing is written yet, so
/// it may still be dropped (a hedge that lost) or replaced by a miss.
// One per attempt, handed over once: boxing the larger variant would cost an allocation for
// nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Ready<'a> {
    /// An Anthropic provider's answer, relayed as it came: its whole body, or a stream from its
    /// first piece.
    Native(UpstreamResponse<'a>, Prefetched),
    /// Claude on Bedrock through InvokeModel: Anthropic's events in AWS event-stream framing,
    /// from the first piece.
    BedrockStream(UpstreamResponse<'a>, Option<Bytes>),
    /// Another dialect's whole answer, to write as Anthropic's message.
    Completion(Box<ChatCompletion>),
    /// Another dialect's stream, translated to Anthropic's events on the way.
    Stream {
        answer: UpstreamResponse<'a>,
        first: Option<Bytes>,
        translator: Box<Translator>,
        encoder: AnthropicEncoder,
    },
}

/// Fetches from the route's target (not the in-process mock) up to the point of commitment.
pub(super) async fn fetch<'a>(
    route: &Route<'a>,
    chat: ChatRequest,
    ctx: &mut RequestCtx,
) -> Result<Ready<'a>, Box<Miss>> {
    let kind = route.provider.kind;
    match (kind, Dialect::of(kind)) {
        (ProviderKind::Anthropic, _) => fetch_native(route, ctx).await,
        // Claude on Bedrock speaks Anthropic's format through InvokeModel: nothing to translate.
        (ProviderKind::Bedrock, _) if adapters::bedrock::invoke::is_claude(route.upstream_model) => {
            fetch_bedrock_claude(route, ctx).await
        }
        (_, Some(d)) => fetch_dialect(route, d, chat, ctx).await,
        (_, None) => fetch_chat(route, chat, ctx).await,
    }
}

/// Writes a fetched answer: usage read, cost settled.
pub(super) async fn deliver<C: Conn>(
    shard: &Shard,
    cfg: &Snapshot,
    ready: Ready<'_>,
    resp: &mut Responder<'_, C>,
    ctx: &mut RequestCtx,
) {
    match ready {
        Ready::Native(answer, Prefetched::First(first)) => relay_native(shard, answer, first, None, resp, ctx).await,
        Ready::BedrockStream(answer, first) => {
            let framing = Some(adapters::bedrock::invoke::InvokeStream::new());
            relay_native(shard, answer, first, framing, resp, ctx).await
        }
        Ready::Native(answer, Prefetched::Whole(mut body)) => {
            ctx.usage =
                from_anthropic(&body, "", 0).ok().and_then(|c| c.usage).as_ref().map(super::translate::accounted);
            governance::settle_before_head(ctx);
            if super::guard::watches_output(ctx) {
                match super::guard::check_answer(shard, cfg, &body, ctx).await {
                    Ok(Some(checked)) => body = checked,
                    Ok(None) => {}
                    Err(e) => return refuse(resp, ctx, e.status(), &e.message).await,
                }
            }
            let mut head = resp.start(answer.head.status).header("content-type", "application/json");
            for (n, v) in &ctx.headers {
                head = head.header(n, v);
            }
            let _ = head.body(&body).await;
        }
        Ready::Native(answer, Prefetched::Bodyless) => {
            governance::settle_before_head(ctx);
            let _ = resp.start(answer.head.status).no_body().await;
        }
        Ready::Completion(completion) => send_completion(shard, cfg, resp, ctx, &completion).await,
        Ready::Stream { mut answer, first, translator, encoder } => {
            relay_as_anthropic(shard, cfg, &mut answer, Some(first), resp, ctx, *translator, encoder).await;
        }
    }
}

/// An Anthropic provider: the request as it came (model renamed); a 2xx answer read whole, or a
/// stream to its first piece.
async fn fetch_native<'a>(route: &Route<'a>, ctx: &mut RequestCtx) -> Result<Ready<'a>, Box<Miss>> {
    let Route { cfg, up, upstream_model, req, .. } = *route;
    let mut body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
    body["model"] = serde_json::Value::String(upstream_model.to_string());
    let path = format!("{}/messages", up.base_path.trim_end_matches('/'));
    let mut answer = call(route, (&path, Bytes::from(body.to_string())), ctx).await?;
    let provider = &route.provider.name;
    if answer.head.is_event_stream() {
        let first = super::attempt::first_piece(&mut answer, provider, ctx).await?;
        return Ok(Ready::Native(answer, Prefetched::First(first)));
    }
    let deadline = ctx.attempt_deadline;
    let read = async { super::forward::read_answer(cfg, &mut answer, ctx, provider).await.map_err(Miss::gateway) };
    let body = within(deadline, provider, read).await?;
    Ok(Ready::Native(answer, Prefetched::Whole(body)))
}

/// Claude on Bedrock: the client's Anthropic request as InvokeModel's (model in the path,
/// Bedrock's API version and the betas in the body), signed; a 2xx answer read whole (it is
/// Anthropic's message JSON), or a stream to its first piece.
async fn fetch_bedrock_claude<'a>(route: &Route<'a>, ctx: &mut RequestCtx) -> Result<Ready<'a>, Box<Miss>> {
    let Route { cfg, provider, upstream_model, req, .. } = *route;
    let beta = req.head.header("anthropic-beta").and_then(|v| std::str::from_utf8(v).ok());
    let invoke = adapters::bedrock::invoke::from_anthropic(&req.body, upstream_model, beta).map_err(Miss::refused)?;
    if !invoke.dropped_betas.is_empty() {
        tracing::debug!(provider = %provider.name, dropped = ?invoke.dropped_betas, "betas Bedrock does not take were dropped");
    }
    let deadline = ctx.attempt_deadline;
    let called = within(deadline, &provider.name, async {
        translate::send_to(route, Dialect::Bedrock, (&invoke.path, Bytes::from(invoke.body)), ctx)
            .await
            .map_err(|r| r.into_miss(ctx))
    });
    let mut answer = called.await?;
    if invoke.stream {
        let first = super::attempt::first_piece(&mut answer, &provider.name, ctx).await?;
        // A stream that opens with an exception (throttled, unavailable) is a miss the router
        // can retry or fall back from: nothing was sent yet.
        if let Some(piece) = &first {
            let mut events = Vec::new();
            if let Err(e) = adapters::bedrock::invoke::InvokeStream::new().feed(piece, &mut events)
                && events.is_empty()
            {
                return Err(Miss::api(e, None));
            }
        }
        return Ok(Ready::BedrockStream(answer, first));
    }
    let read =
        async { super::forward::read_answer(cfg, &mut answer, ctx, &provider.name).await.map_err(Miss::gateway) };
    let body = within(deadline, &provider.name, read).await?;
    Ok(Ready::Native(answer, Prefetched::Whole(body)))
}

/// Relays an Anthropic provider's stream as it comes, read alongside for the usage the cost
/// needs. `framing`: the upstream's events come in AWS event-stream framing (Claude on
/// Bedrock) and are turned into SSE first.
async fn relay_native<C: Conn>(
    shard: &Shard,
    mut answer: UpstreamResponse<'_>,
    first: Option<Bytes>,
    mut framing: Option<adapters::bedrock::invoke::InvokeStream>,
    resp: &mut Responder<'_, C>,
    ctx: &mut RequestCtx,
) {
    let mut first = Some(first);
    let Some(mut out) = start_event_stream(resp, ctx).await else { return };
    let mut reader = AnthropicStream::new("", 0, false);
    let mut ignored = Vec::new();
    // Output guardrails read every event and rewrite text deltas.
    let cfg = shard.config();
    let mut guarded = super::guard::watches_output(ctx).then(|| adapters::sse::SseScanner::new(1 << 20));
    let mut kept = Vec::new();
    let mut blocked: Option<GatewayError> = None;
    // An error in the framed stream, sent once the events before it are.
    let mut failed: Option<ApiError> = None;
    loop {
        if let Some(e) = failed.take() {
            return end_with_error(out, &reader, e, ErrorKind::UpstreamProtocol, ctx).await;
        }
        let next = match first.take() {
            Some(held) => Ok(held),
            None => answer.next_chunk().await,
        };
        match next {
            Ok(Some(piece)) => {
                ctx.upstream_piece(|| answer.since_sent());
                let piece = match framing.as_mut() {
                    None => piece,
                    Some(f) => {
                        let (sse, error) = unframe(f, &piece);
                        failed = error;
                        sse
                    }
                };
                if piece.is_empty() {
                    continue;
                }
                reader.feed(&piece, &mut ignored);
                // Kept up to date: a client that leaves mid-stream pays for what was made.
                ctx.usage = reader.usage().as_ref().map(super::translate::accounted);
                ignored.clear();
                if let Some(scanner) = guarded.as_mut() {
                    scanner.feed(&piece, |ev| {
                        if blocked.is_some() {
                            return;
                        }
                        match super::guard::check_anthropic_event(shard, &cfg, ev.event, ev.data, ctx) {
                            Ok(super::guard::StreamData::AsIs) => super::forward::reemit(&mut kept, ev.event, ev.data),
                            Ok(super::guard::StreamData::Replace(d)) => super::forward::reemit(&mut kept, ev.event, &d),
                            Ok(super::guard::StreamData::Before(d)) => {
                                super::forward::reemit(&mut kept, Some("content_block_delta"), &d);
                                super::forward::reemit(&mut kept, ev.event, ev.data);
                            }
                            Err(e) => blocked = Some(e),
                        }
                    });
                    if let Some(e) = blocked.take() {
                        ctx.error = Some(e.kind);
                        ctx.usage = reader.usage().as_ref().map(super::translate::accounted);
                        let _ = governance::settle_stream(ctx);
                        let body = serde_json::json!({"type": "error", "error": {"type": "invalid_request_error", "message": e.message}});
                        super::forward::reemit(&mut kept, Some("error"), body.to_string().as_bytes());
                        if out.send(&kept).await.is_ok() {
                            let _ = out.finish().await;
                        }
                        return;
                    }
                    if kept.is_empty() {
                        continue;
                    }
                    if out.send(&std::mem::take(&mut kept)).await.is_err() {
                        ctx.error = Some(ErrorKind::DownstreamClosed);
                        return;
                    }
                    ctx.event_sent(&shard.metrics);
                    continue;
                }
                if out.send(&piece).await.is_err() {
                    ctx.error = Some(ErrorKind::DownstreamClosed);
                    return;
                }
                ctx.event_sent(&shard.metrics);
            }
            Ok(None) => break,
            Err(fault) => {
                // The client learns the stream broke: an `error` event, not a silent stop.
                let e = ApiError {
                    status: 502,
                    message: format!("the provider's stream broke: {fault}"),
                    kind: "api_error".into(),
                    param: None,
                    code: None,
                };
                return end_with_error(out, &reader, e, fault_kind(&fault), ctx).await;
            }
        }
    }
    if let Some(e) = failed.take() {
        return end_with_error(out, &reader, e, ErrorKind::UpstreamProtocol, ctx).await;
    }
    if let Some(Err(e)) = framing.as_ref().map(adapters::bedrock::invoke::InvokeStream::finish) {
        return end_with_error(out, &reader, e, ErrorKind::UpstreamProtocol, ctx).await;
    }
    ctx.usage = reader.usage().as_ref().map(super::translate::accounted);
    let tail = governance::settle_stream(ctx).unwrap_or_default();
    if out.send(&tail).await.is_err() || out.finish().await.is_err() {
        ctx.error = Some(ErrorKind::DownstreamClosed);
    }
}

/// One read of a Bedrock event stream as Anthropic SSE bytes, and the error that came after
/// them, if one did.
fn unframe(framing: &mut adapters::bedrock::invoke::InvokeStream, piece: &[u8]) -> (Bytes, Option<ApiError>) {
    let mut sse = Vec::new();
    let error = framing.feed(piece, &mut sse).err();
    (Bytes::from(sse), error)
}

/// Ends a relayed stream with Anthropic's `error` event (the provider's exception, or a
/// corrupt stream), the cost of what was used settled.
async fn end_with_error(
    mut out: crate::http::response::BodyStream<'_, '_, impl Conn>,
    reader: &AnthropicStream,
    e: ApiError,
    kind: ErrorKind,
    ctx: &mut RequestCtx,
) {
    ctx.error = Some(kind);
    ctx.usage = reader.usage().as_ref().map(super::translate::accounted);
    let _ = governance::settle_stream(ctx);
    let body = serde_json::json!({"type": "error", "error": {"type": error_type(e.status), "message": e.message}});
    let mut event = Vec::new();
    super::forward::reemit(&mut event, Some("error"), body.to_string().as_bytes());
    if out.send(&event).await.is_ok() {
        let _ = out.finish().await;
    }
}

/// A provider of another dialect (Gemini, Bedrock): the request through the canonical chat
/// request to the provider's dialect; the answer read and translated to a completion, or a
/// stream to its first piece.
async fn fetch_dialect<'a>(
    route: &Route<'a>,
    dialect: Dialect,
    chat: ChatRequest,
    ctx: &mut RequestCtx,
) -> Result<Ready<'a>, Box<Miss>> {
    let Route { shard, cfg, provider, .. } = *route;
    let deadline = ctx.attempt_deadline;
    let called = within(deadline, &provider.name, async {
        translate::call(route, dialect, &chat, ctx).await.map_err(|r| r.into_miss(ctx))
    });
    let mut answer = called.await?;
    let id = message_id(shard);
    let created = translate::now_secs();
    if !chat.stream {
        let read =
            async { super::forward::read_answer(cfg, &mut answer, ctx, &provider.name).await.map_err(Miss::gateway) };
        let body = within(deadline, &provider.name, read).await?;
        let completion = dialect.completion(&body, &chat.model, &id, created).map_err(|e| Miss::api(e, None))?;
        return Ok(Ready::Completion(Box::new(completion)));
    }
    let first = super::attempt::first_piece(&mut answer, &provider.name, ctx).await?;
    let translator = Box::new(dialect.stream(&chat.model, &id, created, true));
    let encoder = AnthropicEncoder::new(id, chat.model.clone(), 0);
    Ok(Ready::Stream { answer, first, translator, encoder })
}

/// Relays a provider's stream as Anthropic's events: read into canonical chunks by
/// `translator`, written by `encoder`, usage captured for the cost.
#[allow(clippy::too_many_arguments)]
async fn relay_as_anthropic<C: Conn>(
    shard: &Shard,
    cfg: &Snapshot,
    answer: &mut UpstreamResponse<'_>,
    mut first: Option<Option<Bytes>>,
    resp: &mut Responder<'_, C>,
    ctx: &mut RequestCtx,
    mut translator: Translator,
    mut encoder: AnthropicEncoder,
) {
    let metrics = &shard.metrics;
    let guarded = super::guard::watches_output(ctx);
    let Some(mut out) = start_event_stream(resp, ctx).await else { return };
    let (mut chunks, mut events) = (Vec::new(), Vec::new());
    loop {
        let next = match first.take() {
            Some(held) => Ok(held),
            None => answer.next_chunk().await,
        };
        match next {
            Ok(Some(piece)) => {
                ctx.upstream_piece(|| answer.since_sent());
                translator.feed(&piece, &mut chunks);
                // Kept current: a client that leaves mid-stream still pays for what was made.
                ctx.usage = translator.usage().as_ref().map(translate::accounted);
                if guarded && let Err(e) = super::guard::check_chunks(shard, cfg, &mut chunks, false, ctx) {
                    // A violation mid-stream: Anthropic's error event, and no `message_stop`.
                    ctx.error = Some(e.kind);
                    let _ = governance::settle_stream(ctx);
                    encoder.error("invalid_request_error", &e.message, &mut events);
                    if out.send(&events).await.is_ok() {
                        let _ = out.finish().await;
                    }
                    return;
                }
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
    let blocked = if guarded { super::guard::check_chunks(shard, cfg, &mut chunks, true, ctx).err() } else { None };
    for c in chunks.drain(..) {
        encoder.push(&c, &mut events);
    }
    ctx.usage = translator.usage().as_ref().map(translate::accounted);
    if let Some(e) = blocked {
        ctx.error = Some(e.kind);
        let _ = governance::settle_stream(ctx);
        encoder.error("invalid_request_error", &e.message, &mut events);
    } else if let Some(e) = translator.take_error() {
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
async fn fetch_chat<'a>(
    route: &Route<'a>,
    mut chat: ChatRequest,
    ctx: &mut RequestCtx,
) -> Result<Ready<'a>, Box<Miss>> {
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
            Err(e) => return Err(Miss::gateway(GatewayError::new(ErrorKind::InvalidJson, e.message))),
        }
    }
    let path = match &provider.azure {
        Some(surface) => azure::request_path(&up.base_path, surface, upstream_model, AzureOperation::ChatCompletions),
        None => format!("{}/chat/completions", up.base_path.trim_end_matches('/')),
    };
    let mut answer = call(route, (&path, Bytes::from(body)), ctx).await?;
    if !chat.stream {
        let deadline = ctx.attempt_deadline;
        let read =
            async { super::forward::read_answer(cfg, &mut answer, ctx, &provider.name).await.map_err(Miss::gateway) };
        let body = within(deadline, &provider.name, read).await?;
        let Ok(mut completion) = serde_json::from_slice::<ChatCompletion>(&body) else {
            let message = format!("provider {}: the answer is not a chat completion", provider.name);
            return Err(Miss::gateway(GatewayError::new(ErrorKind::UpstreamProtocol, message)));
        };
        completion.model = client_model;
        return Ok(Ready::Completion(Box::new(completion)));
    }
    let first = super::attempt::first_piece(&mut answer, &provider.name, ctx).await?;
    let encoder = AnthropicEncoder::new(message_id(shard), client_model, 0);
    Ok(Ready::Stream { answer, first, translator: Box::new(Translator::openai()), encoder })
}
