//! Forwarding to a provider: the OpenAI-compatible inference endpoints (lazy body scan, model
//! mapping, untouched body unless the model name changes) and pass-through of other `/v1/*`
//! paths; then relaying the answer, buffered or streamed, reading token usage on the way.

use std::rc::Rc;
use std::time::{Duration, Instant};

use adapters::azure::{self, AzureOperation};
use adapters::openai::request::{RequestFacts, ScanError, ask_for_usage, rewrite_model};
use adapters::sse::SseScanner;
use bytes::{BufMut, Bytes, BytesMut};

use policy::Identity;

use super::attempt::{Attempted, Miss, first_piece, within};
use super::governance::{self, Ask};
use super::route::Route;
use super::{OVERHEAD_HEADER, RequestCtx, embeddings, mock_provider, routing, supervised, translate};
use crate::config::{ModelRoute, Provider, Snapshot, Upstream, UpstreamLimits};
use crate::error::{ErrorKind, GatewayError};
use crate::http::response::is_bodyless;
use crate::http::upstream::ResponseFraming;
use crate::http::{Request, RequestHead, Responder};
use crate::metrics::Endpoint;
use crate::rt::Conn;
use crate::shard::Shard;
use crate::upstream::exchange::{fault_kind, is_hop_by_hop};
use crate::upstream::{RequestBytes, Shared, UpstreamResponse, send};

/// Largest single SSE event scanned for usage; larger events are relayed but not inspected.
const MAX_SSE_EVENT: usize = 1 << 20;

/// Answers with a gateway error and records it.
async fn fail<C: Conn>(resp: &mut Responder<'_, C>, ctx: &mut RequestCtx, err: GatewayError) {
    ctx.error = Some(err.kind);
    let _ = super::send_error_with(resp, ctx, &err).await;
}

fn scan_error(e: &ScanError) -> GatewayError {
    match e {
        ScanError::NotJson { .. } | ScanError::NotAnObject => GatewayError::new(ErrorKind::InvalidJson, e.to_string()),
        ScanError::WrongType { field, .. } => {
            GatewayError::new(ErrorKind::InvalidField, e.to_string()).with_param(*field)
        }
    }
}

/// `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings`.
pub async fn inference<C: Conn>(
    shard: &Rc<Shard>,
    cfg: &Snapshot,
    caller: &Identity,
    endpoint: Endpoint,
    req: Request,
    resp: &mut Responder<'_, C>,
    ctx: &mut RequestCtx,
) {
    let scanned = shard.scanner.borrow_mut().scan_with(&req.body, super::guard::text_walk(cfg, endpoint));
    let facts = match scanned {
        Ok(f) => f,
        Err(e) => return fail(resp, ctx, scan_error(&e)).await,
    };
    let Some(model) = facts.model.as_ref() else {
        let err = GatewayError::new(ErrorKind::InvalidField, "you must provide a model parameter").with_param("model");
        return fail(resp, ctx, err).await;
    };
    ctx.model = Some(model.name.clone());
    ctx.stream = facts.stream;
    let Some(served_by) = cfg.model_route(&model.name) else {
        let err = GatewayError::new(
            ErrorKind::UnknownModel,
            format!("The model `{}` does not exist or you do not have access to it.", model.name),
        )
        .with_param("model");
        return fail(resp, ctx, err).await;
    };
    if let Err(denied) = cfg.policy.check_model(caller, &model.name) {
        return fail(resp, ctx, governance::forbidden(&denied)).await;
    }
    let metadata = match governance::metadata(&req.head, caller) {
        Ok(m) => m,
        Err(e) => return fail(resp, ctx, e).await,
    };
    let ask = Ask {
        identity: caller,
        model: &model.name,
        // The first choice's price is reserved; settlement prices what served it.
        upstream_model: served_by.first_upstream_model(cfg),
        metadata: &metadata,
        body_len: req.body.len(),
        max_tokens: facts.max_tokens,
    };
    if let Err(refusal) = governance::admit(shard, cfg, &ask, ctx) {
        return governance::send_refusal(resp, ctx, &refusal).await;
    }
    // Input guardrails: a blocked request goes nowhere; a redacted one goes as rewritten.
    let (req, facts) = match super::guard::check_input(
        shard,
        cfg,
        caller,
        &model.name,
        &metadata,
        endpoint,
        &req.body,
        facts.texts.as_ref(),
        ctx,
    )
    .await
    {
        Ok(None) => (req, facts),
        Ok(Some(body)) => {
            let rescanned = shard.scanner.borrow_mut().scan(&body);
            match rescanned {
                Ok(facts) => (Request { body, ..req }, facts),
                Err(e) => return fail(resp, ctx, scan_error(&e)).await,
            }
        }
        Err(e) => return super::guard::refuse(resp, ctx, e).await,
    };
    match served_by {
        ModelRoute::Direct(resolved) => {
            let target = Target { provider: resolved.provider, upstream_model: &resolved.upstream_model, headers: &[] };
            if let Some(miss) = attempt(shard, cfg, &target, endpoint, &req, &facts, resp, ctx).await {
                miss.send(resp, ctx).await;
            }
        }
        ModelRoute::Routed(route) => {
            let asked = routing::Asked { caller, metadata: &metadata, req: &req, facts: &facts };
            let chat = routing::Chat { shard, cfg, endpoint };
            routing::serve(shard, cfg, route, &asked, &chat, resp, ctx).await;
        }
    }
    super::guard::record_unawaited(shard, ctx);
    governance::settle_at_end(ctx);
}

/// Where one attempt goes: a provider, the model it serves, and headers this target adds.
pub(super) struct Target<'a> {
    pub provider: &'a Provider,
    pub upstream_model: &'a str,
    pub headers: &'a [(String, String)],
}

/// One attempt at `target`, inside its actor: `None` once the answer is committed to the
/// client, else the miss (nothing written) for the caller to retry, fall back or send.
#[allow(clippy::too_many_arguments)]
pub(super) async fn attempt<C: Conn>(
    shard: &Rc<Shard>,
    cfg: &Snapshot,
    target: &Target<'_>,
    endpoint: Endpoint,
    req: &Request,
    facts: &RequestFacts,
    resp: &mut Responder<'_, C>,
    ctx: &mut RequestCtx,
) -> Option<Box<Miss>> {
    let provider = target.provider;
    ctx.provider = Some(provider.name.clone());
    let dialect = translate::Dialect::of(provider.kind);
    let client_model = facts.model.as_ref().map_or("", |m| m.name.as_str());
    if dialect.is_some() && endpoint == Endpoint::Completions {
        let err = GatewayError::new(
            ErrorKind::InvalidField,
            format!(
                "The model `{client_model}` is served by a provider without the legacy completions API; use /v1/chat/completions."
            ),
        )
        .with_param("model");
        return Some(Miss::gateway(err));
    }
    let actor = supervised::actor(shard, provider);
    let started = Instant::now();
    let um = target.upstream_model;
    let served = match (&provider.upstream, dialect) {
        (None, _) => {
            let work = async {
                super::guard::gate(shard, cfg, ctx).await.map_err(Miss::guardrail)?;
                mock_provider::answer(shard, provider, endpoint, req, facts, um, resp, ctx).await;
                Ok(())
            };
            actor.serve(&shard.pool, Box::pin(work)).await
        }
        (Some(up), dialect) => {
            let route = Route { shard, cfg, provider, up, upstream_model: um, req, headers: target.headers };
            let route = &route;
            match dialect {
                // The common case stays unboxed; other dialects' larger states are boxed.
                None => {
                    let work = async {
                        let (answer, body) = fetch_openai(route, endpoint, facts, client_model, ctx).await?;
                        super::guard::gate(shard, cfg, ctx).await.map_err(Miss::guardrail)?;
                        deliver_openai(shard, cfg, answer, body, resp, ctx).await;
                        Ok(())
                    };
                    actor.serve(&shard.pool, work).await
                }
                Some(_) => {
                    let work = async {
                        let ready = fetch(route, endpoint, facts, ctx).await?;
                        super::guard::gate(shard, cfg, ctx).await.map_err(Miss::guardrail)?;
                        deliver(shard, cfg, ready, resp, ctx).await;
                        Ok(())
                    };
                    actor.serve(&shard.pool, Box::pin(work)).await
                }
            }
        }
    };
    supervised::settle_attempt(&actor, served, started, resp, ctx)
}

/// An attempt's answer fetched up to the point of commitment: nothing is written to the client
/// yet, so it may still be dropped (a hedge that lost) or found wanting (a miss).
pub(super) enum Ready<'a> {
    /// An OpenAI-dialect provider's 2xx answer, relayed as it comes.
    OpenAi(UpstreamResponse<'a>, Prefetched),
    /// Another dialect's chat answer, translated on the way.
    Translated(translate::Fetched<'a>),
    /// An answer made whole already (embeddings from another dialect).
    Json(Vec<u8>),
}

/// What of an answer's body was read before committing to it.
pub(super) enum Prefetched {
    /// No body (204, 304).
    Bodyless,
    /// A buffered answer's whole body.
    Whole(Bytes),
    /// A stream's first piece (`None`: the stream ended at once).
    First(Option<Bytes>),
}

/// Fetches an answer from the route's target up to the point of commitment.
pub(super) async fn fetch<'a>(
    route: &Route<'a>,
    endpoint: Endpoint,
    facts: &RequestFacts,
    ctx: &mut RequestCtx,
) -> Result<Ready<'a>, Box<Miss>> {
    let client_model = facts.model.as_ref().map_or("", |m| m.name.as_str());
    match translate::Dialect::of(route.provider.kind) {
        Some(d) if endpoint == Endpoint::Embeddings => embeddings::fetch(route, d, ctx).await.map(Ready::Json),
        Some(d) => translate::fetch_chat(route, d, ctx).await.map(Ready::Translated),
        None => {
            let (answer, body) = fetch_openai(route, endpoint, facts, client_model, ctx).await?;
            Ok(Ready::OpenAi(answer, body))
        }
    }
}

/// Commits a fetched answer: writes it to the client.
pub(super) async fn deliver<C: Conn>(
    shard: &Rc<Shard>,
    cfg: &Snapshot,
    ready: Ready<'_>,
    resp: &mut Responder<'_, C>,
    ctx: &mut RequestCtx,
) {
    match ready {
        Ready::OpenAi(answer, body) => deliver_openai(shard, cfg, answer, body, resp, ctx).await,
        Ready::Translated(f) => translate::deliver_chat(shard, cfg, f, resp, ctx).await,
        Ready::Json(body) => {
            governance::settle_before_head(ctx);
            translate::send_json(resp, ctx, &body).await;
        }
    }
}

/// An OpenAI-dialect target: the client's body as it came, but for the model name, the usage
/// the gateway needs and the fields the host rejects. Sends it and reads a 2xx answer up to the
/// point of commitment: its whole body, or a stream's first piece (the head is held until it
/// comes, so a stream that fails before it is a miss the router can retry elsewhere).
async fn fetch_openai<'a>(
    route: &Route<'a>,
    endpoint: Endpoint,
    facts: &RequestFacts,
    client_model: &str,
    ctx: &mut RequestCtx,
) -> Result<(UpstreamResponse<'a>, Prefetched), Box<Miss>> {
    let Route { shard, cfg, provider, up, upstream_model, req, headers } = *route;
    let mut body = if upstream_model != client_model {
        rewrite_model(&req.body, facts, upstream_model).map_err(|e| Miss::gateway(scan_error(&e)))?
    } else {
        req.body.clone()
    };
    // Usage is needed for cost and token limits whatever the client asked: ask for it, and
    // strip it from the stream the client sees.
    if facts.stream && facts.include_usage != Some(true) && endpoint != Endpoint::Embeddings {
        body = ask_for_usage(&body).map_err(|e| Miss::gateway(scan_error(&e)))?;
        ctx.strip_usage_chunk = true;
    }
    if endpoint == Endpoint::Embeddings && asks_base64(&req.body) {
        ctx.base64_embeddings = true;
    }
    if let Some(quirks) = &provider.quirks {
        match quirks.apply(&body) {
            Ok(Some(b)) => body = Bytes::from(b),
            Ok(None) => {}
            Err(e) => return Err(Miss::gateway(GatewayError::new(ErrorKind::InvalidJson, e.message))),
        }
    }
    let path = match &provider.azure {
        Some(surface) => {
            let op = match endpoint {
                Endpoint::Completions => AzureOperation::Completions,
                Endpoint::Embeddings => AzureOperation::Embeddings,
                _ => AzureOperation::ChatCompletions,
            };
            azure::request_path(&up.base_path, surface, upstream_model, op)
        }
        None => upstream_path(up, req.head.target()),
    };
    let minted = translate::minted_authorization(shard, provider).map_err(Miss::gateway)?;
    let head = match (&minted, headers.is_empty()) {
        (None, true) => request_head("POST", &path, up, &req.head, Some(body.len())),
        _ => {
            let extra: Vec<(String, String)> = minted.into_iter().chain(headers.iter().cloned()).collect();
            request_head_with("POST", &path, up, &req.head, Some(body.len()), &extra)
        }
    };
    let request = RequestBytes { head, body, is_head: false };
    let shared = Shared { pool: &shard.pool, dns: &shard.process.dns, metrics: &shard.metrics };
    let deadline = ctx.attempt_deadline;
    let name = &provider.name;
    let limits = UpstreamLimits { connect: ctx.connect_limit, ..cfg.upstream_limits };
    let mut answer = within(deadline, name, async {
        let waited = Instant::now();
        let sent = send(&shared, up, &request, limits).await;
        ctx.upstream_time += waited.elapsed();
        sent.map_err(|e| Miss::gateway(e.to_gateway_error(name)))
    })
    .await?;
    answer.limit_idle(ctx.idle_limit);
    ctx.upstream_status = Some(answer.head.status);
    if !(200..300).contains(&answer.head.status) {
        // An error answer is the router's to judge (retry, fall back, or relay it: as it came,
        // or in OpenAI's shape from Azure, whose error bodies vary).
        return Err(if provider.azure.is_some() {
            Miss::upstream_azure(&mut answer).await
        } else {
            Miss::upstream(&mut answer).await
        });
    }
    if is_bodyless(answer.head.status) {
        let _ = answer.next_chunk().await;
        return Ok((answer, Prefetched::Bodyless));
    }
    if answer.head.is_event_stream() {
        let first = first_piece(&mut answer, name, ctx).await?;
        return Ok((answer, Prefetched::First(first)));
    }
    let waited = Instant::now();
    let body = within(deadline, name, async {
        let read = answer.read_to_end(cfg.upstream_limits.max_body_bytes).await;
        read.map(Prefetched::Whole)
            .map_err(|fault| Miss::gateway(GatewayError::new(fault_kind(&fault), format!("provider {name}: {fault}"))))
    })
    .await;
    ctx.upstream_time += waited.elapsed();
    Ok((answer, body?))
}

/// Writes an OpenAI-dialect answer fetched by [`fetch_openai`]: usage read (and the usage chunk
/// the client did not ask for stripped), cost settled, embeddings encoded as the client asked.
async fn deliver_openai<C: Conn>(
    shard: &Rc<Shard>,
    cfg: &Snapshot,
    mut answer: UpstreamResponse<'_>,
    body: Prefetched,
    resp: &mut Responder<'_, C>,
    ctx: &mut RequestCtx,
) {
    match body {
        Prefetched::Bodyless => {
            governance::settle_before_head(ctx);
            let overhead = ctx.head_overhead();
            if relay_head(resp, &answer, true, overhead, &ctx.headers).no_body().await.is_err() {
                ctx.error = Some(ErrorKind::DownstreamClosed);
            }
        }
        Prefetched::Whole(mut body) => {
            if ctx.base64_embeddings {
                match adapters::openai::embeddings::rewrite_to_base64(&body) {
                    Ok(Some(b)) => body = Bytes::from(b),
                    Ok(None) => {}
                    Err(e) => {
                        let provider = ctx.provider.clone().unwrap_or_else(|| "?".into());
                        let err = GatewayError::new(
                            ErrorKind::UpstreamProtocol,
                            format!("provider {provider}: {}", e.message),
                        );
                        return fail(resp, ctx, err).await;
                    }
                }
            }
            // With guardrails on the answer, its texts come from the same parse as its usage.
            let watched = super::guard::watches_output(ctx);
            let found = if watched {
                let (usage, texts) = shard.usage_reader.borrow_mut().response_body_and_texts(&body);
                ctx.usage = usage;
                texts
            } else {
                ctx.usage = shard.usage_reader.borrow_mut().response_body(&body);
                None
            };
            governance::settle_before_head(ctx);
            if watched {
                match super::guard::check_found_answer(shard, cfg, &body, found.as_deref(), ctx).await {
                    Ok(Some(checked)) => body = checked,
                    Ok(None) => {}
                    Err(e) => return super::guard::refuse(resp, ctx, e).await,
                }
            }
            let overhead = ctx.head_overhead();
            if relay_head(resp, &answer, false, overhead, &ctx.headers).body_bytes(body).await.is_err() {
                ctx.error = Some(ErrorKind::DownstreamClosed);
            }
        }
        Prefetched::First(first) => {
            let max_body = cfg.upstream_limits.max_body_bytes;
            // Boxed: a stream's relay state is the largest part of an attempt, and an unboxed
            // one would be copied with every attempt, streamed or not.
            Box::pin(relay_streamed(shard, cfg, &mut answer, Some(first), resp, ctx, true, max_body)).await;
        }
    }
}

/// Ends an OpenAI stream: `released` (what may still go), then the error as a `data:` event
/// (OpenAI's SDKs raise on it), and no `[DONE]`.
async fn end_with_error<C: Conn>(
    mut out: crate::http::response::BodyStream<'_, '_, C>,
    mut released: Vec<u8>,
    err: &GatewayError,
) {
    released.extend_from_slice(b"data: ");
    released.extend_from_slice(&err.to_json());
    released.extend_from_slice(b"\n\n");
    if out.send(&released).await.is_ok() {
        let _ = out.finish().await;
    }
}

/// One event of a guarded stream through the output guardrails, into `kept`; `Err`: blocked.
fn guarded_event(
    shard: &Shard,
    cfg: &Snapshot,
    event: Option<&str>,
    data: &[u8],
    kept: &mut Vec<u8>,
    ctx: &mut RequestCtx,
) -> Result<(), GatewayError> {
    match super::guard::check_stream_data(shard, cfg, data, ctx)? {
        super::guard::StreamData::Replace(new) => reemit(kept, event, &new),
        super::guard::StreamData::Before(first) => {
            reemit(kept, None, &first);
            reemit(kept, event, data);
        }
        super::guard::StreamData::AsIs => reemit(kept, event, data),
    }
    Ok(())
}

/// Whether an embeddings request asks for `encoding_format: "base64"` (OpenAI's SDKs do by
/// default). The body is only parsed when it mentions base64 at all.
fn asks_base64(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Format<'a> {
        #[serde(borrow)]
        encoding_format: Option<&'a str>,
    }
    memchr::memmem::find(body, b"base64").is_some()
        && serde_json::from_slice::<Format<'_>>(body).is_ok_and(|f| f.encoding_format == Some("base64"))
}

/// Any other `/v1/*` path that a provider declared in its `passthrough` list.
pub async fn passthrough<C: Conn>(
    shard: &Rc<Shard>,
    cfg: &Snapshot,
    caller: &Identity,
    req: Request,
    resp: &mut Responder<'_, C>,
    ctx: &mut RequestCtx,
) {
    let path = req.head.path();
    let Some(provider) = cfg.passthrough(path) else {
        let err = GatewayError::new(
            ErrorKind::NotFound,
            format!("no route for {} {path}: no provider declares it in `passthrough`", req.head.method()),
        );
        return fail(resp, ctx, err).await;
    };
    let method = req.head.method();
    if caller.role == policy::spec::Role::Viewer && !matches!(method, "GET" | "HEAD") {
        let err = GatewayError::new(
            ErrorKind::Forbidden,
            format!("{} has the viewer role, which may only read.", caller.describe()),
        )
        .with_code("read_only_role");
        return fail(resp, ctx, err).await;
    }
    let metadata = match governance::metadata(&req.head, caller) {
        Ok(m) => m,
        Err(e) => return fail(resp, ctx, e).await,
    };
    // No model and no token estimate: request counts, concurrency and rules without a model
    // filter apply.
    let ask =
        Ask { identity: caller, model: "", upstream_model: "", metadata: &metadata, body_len: 0, max_tokens: Some(0) };
    if let Err(refusal) = governance::admit(shard, cfg, &ask, ctx) {
        return governance::send_refusal(resp, ctx, &refusal).await;
    }
    ctx.provider = Some(provider.name.clone());
    let Some(up) = &provider.upstream else {
        return fail(resp, ctx, GatewayError::new(ErrorKind::Internal, "pass-through to a provider without upstream"))
            .await;
    };
    let send_length = !req.body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH");
    let upstream_path = upstream_path(up, req.head.target());
    let head = request_head(method, &upstream_path, up, &req.head, send_length.then_some(req.body.len()));
    let request = RequestBytes { head, body: req.body.clone(), is_head: method == "HEAD" };
    let actor = supervised::actor(shard, provider);
    let started = Instant::now();
    let work = exchange(shard, cfg, up, &request, resp, ctx);
    let served = actor.serve(&shard.pool, Box::pin(work)).await;
    if let Some(miss) = supervised::settle_attempt(&actor, served, started, resp, ctx) {
        miss.send(resp, ctx).await;
    }
    governance::settle_at_end(ctx);
}

/// The upstream path: the provider's base path, then the client's path after `/v1`, with the
/// query string kept.
fn upstream_path(up: &Upstream, target: &str) -> String {
    let rest = target.strip_prefix("/v1").unwrap_or(target);
    let mut p = String::with_capacity(up.base_path.len() + rest.len());
    p.push_str(&up.base_path);
    p.push_str(rest);
    p
}

/// Client headers that never go upstream: credentials (the provider's key is ours to send),
/// framing, hop-by-hop, compression (we read bodies), and our own control headers.
fn forwardable(name: &[u8]) -> bool {
    const DROP: [&[u8]; 9] = [
        b"host",
        // Ours is set per provider; a client's (Anthropic SDKs send one) would duplicate it.
        b"anthropic-version",
        b"authorization",
        b"api-key",
        b"x-api-key",
        b"cookie",
        b"expect",
        b"accept-encoding",
        b"x-goog-api-key",
    ];
    !is_hop_by_hop(name)
        && !DROP.iter().any(|d| d.eq_ignore_ascii_case(name))
        && !starts_with_ignore_case(name, b"x-shardgate-")
        && !starts_with_ignore_case(name, b"proxy-")
}

fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// Builds the upstream request head: provider headers first (they win over the client's),
/// then the client's forwardable headers.
pub(super) fn request_head(
    method: &str,
    path: &str,
    up: &Upstream,
    client: &RequestHead,
    content_length: Option<usize>,
) -> Bytes {
    request_head_with(method, path, up, client, content_length, &[])
}

/// [`request_head`] with headers made for this request (a signature), which win over the
/// client's of the same name.
pub(super) fn request_head_with(
    method: &str,
    path: &str,
    up: &Upstream,
    client: &RequestHead,
    content_length: Option<usize>,
    extra: &[(String, String)],
) -> Bytes {
    let mut h = BytesMut::with_capacity(256 + client.raw().len());
    h.put_slice(method.as_bytes());
    h.put_u8(b' ');
    h.put_slice(path.as_bytes());
    h.put_slice(b" HTTP/1.1\r\nhost: ");
    h.put_slice(up.host_header.as_bytes());
    h.put_slice(b"\r\n");
    for (n, v) in up.headers.iter().chain(extra) {
        put_header(&mut h, n.as_bytes(), v.as_bytes());
    }
    // Headers named in `Connection` are hop-by-hop too.
    let connection = client.header("connection").unwrap_or(&[]);
    let named_in_connection =
        |n: &[u8]| connection.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(n));
    for (n, v) in client.headers() {
        if forwardable(n)
            && !up.headers.iter().chain(extra).any(|(p, _)| p.as_bytes().eq_ignore_ascii_case(n))
            && !named_in_connection(n)
        {
            put_header(&mut h, n, v);
        }
    }
    if let Some(n) = content_length {
        let mut b = itoa::Buffer::new();
        put_header(&mut h, b"content-length", b.format(n).as_bytes());
    }
    h.put_slice(b"\r\n");
    h.freeze()
}

fn put_header(h: &mut BytesMut, name: &[u8], value: &[u8]) {
    h.put_slice(name);
    h.put_slice(b": ");
    h.put_slice(value);
    h.put_slice(b"\r\n");
}

/// Pass-through: sends the request and relays the answer as it comes (small bodies of known
/// length buffered), whatever its status.
async fn exchange<C: Conn>(
    shard: &Rc<Shard>,
    cfg: &Snapshot,
    up: &Upstream,
    request: &RequestBytes,
    resp: &mut Responder<'_, C>,
    ctx: &mut RequestCtx,
) -> Attempted {
    let shared = Shared { pool: &shard.pool, dns: &shard.process.dns, metrics: &shard.metrics };
    let provider = ctx.provider.clone().unwrap_or_else(|| "?".into());
    let waited = Instant::now();
    let sent = send(&shared, up, request, cfg.upstream_limits).await;
    ctx.upstream_time += waited.elapsed();
    let mut answer = sent.map_err(|e| Miss::gateway(e.to_gateway_error(&provider)))?;
    ctx.upstream_status = Some(answer.head.status);
    if resp.is_head_only() || is_bodyless(answer.head.status) {
        // No body either way: relay the head as it is (its Content-Length describes the body a
        // GET would get) and let the connection go back to the pool.
        let _ = answer.next_chunk().await;
        governance::settle_before_head(ctx);
        let overhead = ctx.head_overhead();
        if relay_head(resp, &answer, true, overhead, &ctx.headers).no_body().await.is_err() {
            ctx.error = Some(ErrorKind::DownstreamClosed);
        }
        return Ok(());
    }
    let buffer = match answer.head.framing {
        ResponseFraming::Empty => true,
        ResponseFraming::Length(n) => n <= 64 * 1024,
        _ => false,
    };
    if buffer {
        let body = read_answer(cfg, &mut answer, ctx, &provider).await.map_err(Miss::gateway)?;
        governance::settle_before_head(ctx);
        let overhead = ctx.head_overhead();
        if relay_head(resp, &answer, false, overhead, &ctx.headers).body_bytes(body).await.is_err() {
            ctx.error = Some(ErrorKind::DownstreamClosed);
        }
    } else {
        let max_body = cfg.upstream_limits.max_body_bytes;
        Box::pin(relay_streamed(shard, cfg, &mut answer, None, resp, ctx, false, max_body)).await;
    }
    Ok(())
}

/// Whether a stream event is the usage-only chunk (`"choices": []`) the gateway asked for.
fn is_usage_only(data: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(data)
        .ok()
        .and_then(|v| v.get("choices").and_then(serde_json::Value::as_array).map(Vec::is_empty))
        .unwrap_or(false)
}

/// Writes an SSE event again (when the stream is relayed event by event).
pub(super) fn reemit(out: &mut Vec<u8>, event: Option<&str>, data: &[u8]) {
    if let Some(name) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    for line in data.split(|&b| b == b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// A stream cut short by a guardrail still used tokens: its reservation is settled with what
/// the provider reported so far (the cost comment is not sent).
fn settle_stream_silently(ctx: &mut RequestCtx) -> Option<Vec<u8>> {
    governance::settle_stream(ctx)
}

/// Writes the upstream status and end-to-end headers; `keep_length` relays the upstream's
/// `Content-Length` (for answers without a body, where it describes the resource).
fn relay_head<'r, 'a, C: Conn>(
    resp: &'r mut Responder<'a, C>,
    answer: &UpstreamResponse<'_>,
    keep_length: bool,
    overhead: Duration,
    ours: &[(&'static str, smol_str::SmolStr)],
) -> crate::http::response::Head<'r, 'a, C> {
    let mut us = itoa::Buffer::new();
    let mut head = resp
        .start(answer.head.status)
        .header(OVERHEAD_HEADER, us.format(u64::try_from(overhead.as_micros()).unwrap_or(u64::MAX)));
    for (n, v) in answer.head.headers() {
        // The gateway's own rate-limit headers replace the provider's (they describe the
        // caller's limits here, not the gateway's account there).
        let replaced = ours.iter().any(|(o, _)| o.as_bytes().eq_ignore_ascii_case(n));
        if !replaced && (!is_hop_by_hop(n) || (keep_length && n.eq_ignore_ascii_case(b"content-length"))) {
            head = head.header(n, v);
        }
    }
    for (n, v) in ours {
        head = head.header(n, v);
    }
    head
}

/// Reads a whole answer body (within `max_upstream_body`), counting the wait as upstream time.
pub(super) async fn read_answer(
    cfg: &Snapshot,
    answer: &mut UpstreamResponse<'_>,
    ctx: &mut RequestCtx,
    provider: &str,
) -> Result<Bytes, GatewayError> {
    let waited = Instant::now();
    let read = answer.read_to_end(cfg.upstream_limits.max_body_bytes).await;
    ctx.upstream_time += waited.elapsed();
    read.map_err(|fault| GatewayError::new(fault_kind(&fault), format!("provider {provider}: {fault}")))
}

#[allow(clippy::too_many_arguments)]
async fn relay_streamed<C: Conn>(
    shard: &Rc<Shard>,
    cfg: &Snapshot,
    answer: &mut UpstreamResponse<'_>,
    mut first: Option<Option<Bytes>>,
    resp: &mut Responder<'_, C>,
    ctx: &mut RequestCtx,
    read_usage: bool,
    max_body: u64,
) {
    let overhead = ctx.head_overhead();
    let started = match answer.head.framing {
        // An inference stream may change length on the way (the usage chunk stripped, the cost
        // comment added): its upstream length cannot stand, so it goes out chunked.
        ResponseFraming::Length(n) if !read_usage => {
            relay_head(resp, answer, false, overhead, &ctx.headers).stream_sized(n).await
        }
        _ => relay_head(resp, answer, false, overhead, &ctx.headers).stream().await,
    };
    let Ok(mut out) = started else {
        ctx.error = Some(ErrorKind::DownstreamClosed);
        return;
    };
    // Output guardrails read and rewrite every event, as stripping does.
    let guarded = read_usage && super::guard::watches_output(ctx);
    let strip = read_usage && (ctx.strip_usage_chunk || guarded);
    let mut blocked: Option<GatewayError> = None;
    // When stripping, every event is re-emitted from the scanner, so none may be too large to
    // hold (only the body limit bounds it); otherwise large events are relayed unread.
    let max_event = if strip { usize::try_from(max_body).unwrap_or(usize::MAX) } else { MAX_SSE_EVENT };
    let mut events = read_usage.then(|| SseScanner::new(max_event));
    let mut kept = Vec::new();
    loop {
        let next = match first.take() {
            Some(held) => Ok(held),
            None => answer.next_chunk().await,
        };
        match next {
            Ok(Some(piece)) => {
                ctx.upstream_piece(|| answer.since_sent());
                if let Some(scanner) = events.as_mut() {
                    let mut reader = shard.usage_reader.borrow_mut();
                    scanner.feed(&piece, |ev| {
                        if blocked.is_some() {
                            return;
                        }
                        let usage = reader.stream_data(ev.data);
                        if let Some(u) = usage {
                            ctx.usage = Some(u);
                        }
                        if !strip || (usage.is_some() && is_usage_only(ev.data) && ctx.strip_usage_chunk) {
                            return;
                        }
                        if guarded {
                            if let Err(e) = guarded_event(shard, cfg, ev.event, ev.data, &mut kept, ctx) {
                                blocked = Some(e);
                            }
                        } else {
                            reemit(&mut kept, ev.event, ev.data);
                        }
                    });
                }
                if let Some(err) = blocked.take() {
                    // A violation mid-stream: what was released goes, then the error, and no
                    // `[DONE]` (the answer did not end well).
                    let _ = settle_stream_silently(ctx);
                    ctx.error = Some(err.kind);
                    return end_with_error(out, std::mem::take(&mut kept), &err).await;
                }
                let sent = if strip {
                    if kept.is_empty() { Ok(false) } else { out.send(&std::mem::take(&mut kept)).await.map(|()| true) }
                } else {
                    out.send(&piece).await.map(|()| true)
                };
                match sent {
                    Ok(true) => ctx.event_sent(&shard.metrics),
                    Ok(false) => {}
                    Err(_) => {
                        // The client went away: returning drops the upstream response, which
                        // closes its connection instead of letting the provider keep generating.
                        ctx.error = Some(ErrorKind::DownstreamClosed);
                        return;
                    }
                }
            }
            Ok(None) => {
                if strip && let Some(scanner) = events.as_mut() {
                    // An event the provider did not end with a blank line: checked like the others.
                    scanner.finish(|ev| {
                        if (is_usage_only(ev.data) && ctx.strip_usage_chunk) || blocked.is_some() {
                            return;
                        }
                        if !guarded {
                            reemit(&mut kept, ev.event, ev.data);
                        } else if let Err(e) = guarded_event(shard, cfg, ev.event, ev.data, &mut kept, ctx) {
                            blocked = Some(e);
                        }
                    });
                    // A stream that ended without `[DONE]`: what the windows still hold goes out.
                    if guarded && blocked.is_none() {
                        match super::guard::check_stream_data(shard, cfg, b"[DONE]", ctx) {
                            Ok(super::guard::StreamData::Before(data)) => reemit(&mut kept, None, &data),
                            Ok(_) => {}
                            Err(e) => blocked = Some(e),
                        }
                    }
                    if let Some(err) = blocked.take() {
                        let _ = settle_stream_silently(ctx);
                        ctx.error = Some(err.kind);
                        return end_with_error(out, std::mem::take(&mut kept), &err).await;
                    }
                    if !kept.is_empty() && out.send(&std::mem::take(&mut kept)).await.is_err() {
                        ctx.error = Some(ErrorKind::DownstreamClosed);
                        return;
                    }
                }
                let cost = if read_usage { governance::settle_stream(ctx) } else { None };
                let sent = match cost {
                    Some(comment) => out.send(&comment).await,
                    None => Ok(()),
                };
                if sent.is_err() || out.finish().await.is_err() {
                    ctx.error = Some(ErrorKind::DownstreamClosed);
                }
                return;
            }
            Err(fault) => {
                let kind = fault_kind(&fault);
                ctx.error = Some(kind);
                tracing::debug!(error = %fault, "upstream failed mid-stream");
                if read_usage {
                    // OpenAI SDKs raise on an `error` object in a stream's data.
                    let err = GatewayError::new(kind, format!("the provider's stream broke off: {fault}"));
                    end_with_error(out, Vec::new(), &err).await;
                }
                // Otherwise the body ends short: the connection closes, which tells the client.
                return;
            }
        }
    }
}
