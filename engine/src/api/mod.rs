//! The API surface: routing by method and path to the OpenAI-compatible endpoints, the ops
//! endpoints and pass-through; one [`RequestCtx`] per request records what happened for metrics
//! (and, in later work, for policy settlement and the request log).

pub mod admin;
mod attempt;
mod embeddings;
mod forward;
pub mod governance;
pub mod guard;
pub(crate) mod guard_external;
mod guard_texts;
pub mod health_checks;
mod messages;
mod mock_provider;
mod ops;
pub(crate) use ops::percent_decode;
mod route;
mod routing;
mod side_request;
mod supervised;
mod translate;

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use adapters::openai::usage::Usage;
use smol_str::SmolStr;

use crate::error::{ErrorKind, GatewayError};
use crate::http::{Limits, Request, Responder, Service, send_error};
use crate::metrics::Endpoint;
use crate::rt::{Conn, LocalEvent};
use crate::shard::Shard;

/// What happened to one request.
#[derive(Debug)]
pub struct RequestCtx {
    /// When its first byte arrived.
    pub received_at: Instant,
    /// Time spent waiting on the provider (connect, send, response head, buffered body).
    pub upstream_time: Duration,
    /// Time spent waiting between attempts (backoff, a provider's `retry-after`).
    pub retry_wait: Duration,
    /// The `retry-after` of the provider's last error answer (translated dialects).
    pub upstream_retry_after: Option<Duration>,
    /// When the current attempt must have its answer's head (or a stream's first piece), set
    /// by the router from the route's timeouts; past it the attempt is a miss.
    pub attempt_deadline: Option<Instant>,
    /// A route's connect and idle timeouts, when shorter than the provider's.
    pub connect_limit: Option<Duration>,
    pub idle_limit: Option<Duration>,
    /// From sending upstream to the first piece of a streamed answer's body.
    pub ttft: Option<Duration>,
    /// When the first piece of a streamed answer came from the provider, until the first
    /// event made of it was written to the client (then `None` again, and counted).
    first_piece_at: Option<Instant>,
    /// Time spent in the gateway up to the response head: `received_at` to the head, minus
    /// `upstream_time`. Set when the head is written.
    pub overhead: Option<Duration>,
    /// Model as the client named it.
    pub model: Option<String>,
    /// Provider that served it.
    pub provider: Option<Arc<str>>,
    pub stream: bool,
    /// Token usage reported by the provider (response body or final stream chunk).
    pub usage: Option<Usage>,
    /// Status the provider answered with.
    pub upstream_status: Option<u16>,
    /// The gateway's own error, if it produced one.
    pub error: Option<ErrorKind>,
    /// The reservation of an admitted request, until settled or released.
    pub held: Option<governance::Held>,
    /// Headers the gateway adds to the answer (`x-ratelimit-*`, `x-shardgate-cost-usd`).
    pub headers: Vec<(&'static str, SmolStr)>,
    /// What the request cost, micro-dollars (once settled).
    pub cost_micros: Option<u64>,
    /// The gateway asked the provider for the stream's usage chunk the client did not ask
    /// for: relay every event but that one.
    pub strip_usage_chunk: bool,
    /// The client asked for base64 embeddings: float vectors from a host that ignores
    /// `encoding_format` are encoded on the way back, as OpenAI would have sent them.
    pub base64_embeddings: bool,
    /// Guardrails that watch this request's answer (and what its input phase redacted).
    pub guard: Option<Box<guard::GuardState>>,
    /// Service checks asked alongside the provider call: the answer waits for them.
    pub pending_checks: Option<guard_external::PendingChecks>,
    /// Who asked, once authenticated (for the request log).
    pub caller: Option<crate::request_log::Caller>,
}

/// The gateway's request handler for one shard.
pub struct GatewayService {
    shard: Rc<Shard>,
}

impl GatewayService {
    pub fn new(shard: Rc<Shard>) -> Self {
        GatewayService { shard }
    }
}

/// Known paths and the methods they take (for 405 answers).
fn route_methods(path: &str) -> Option<&'static str> {
    match path {
        "/health" | "/ready" | "/metrics" | "/v1/models" => Some("GET, HEAD"),
        "/v1/chat/completions" | "/v1/completions" | "/v1/embeddings" => Some("POST"),
        "/v1/messages" | "/v1/messages/count_tokens" => Some("POST"),
        p if p.starts_with("/v1/models/") => Some("GET, HEAD"),
        _ => None,
    }
}

fn endpoint_of(path: &str) -> Endpoint {
    match path {
        "/v1/chat/completions" => Endpoint::ChatCompletions,
        "/v1/completions" => Endpoint::Completions,
        "/v1/embeddings" => Endpoint::Embeddings,
        "/v1/messages" | "/v1/messages/count_tokens" => Endpoint::Messages,
        "/health" | "/ready" | "/metrics" => Endpoint::Ops,
        p if p == "/v1/models" || p.starts_with("/v1/models/") => Endpoint::Models,
        p if p.starts_with("/v1/") => Endpoint::Passthrough,
        p if p.starts_with(admin::PREFIX) => Endpoint::Admin,
        p if p.starts_with("/mcp/") => Endpoint::Mcp,
        _ => Endpoint::Other,
    }
}

impl RequestCtx {
    /// A piece of a streamed answer came from the provider; `since_sent` is the time since the
    /// request went up (read only for the first piece).
    pub fn upstream_piece(&mut self, since_sent: impl FnOnce() -> Duration) {
        if self.ttft.is_none() {
            self.ttft = Some(since_sent());
            self.first_piece_at = Some(Instant::now());
        }
    }

    /// Bytes of a streamed answer were written to the client: the first time after the first
    /// upstream piece, the gateway's share of the time to first token is recorded.
    pub fn event_sent(&mut self, metrics: &crate::metrics::ShardMetrics) {
        if let Some(t) = self.first_piece_at.take() {
            metrics.stream_first_event.observe(t.elapsed());
        }
    }

    pub fn new(received_at: Instant) -> Self {
        RequestCtx {
            received_at,
            upstream_time: Duration::ZERO,
            retry_wait: Duration::ZERO,
            upstream_retry_after: None,
            attempt_deadline: None,
            connect_limit: None,
            idle_limit: None,
            ttft: None,
            first_piece_at: None,
            overhead: None,
            model: None,
            provider: None,
            stream: false,
            usage: None,
            upstream_status: None,
            error: None,
            held: None,
            headers: Vec::new(),
            cost_micros: None,
            strip_usage_chunk: false,
            base64_embeddings: false,
            guard: None,
            pending_checks: None,
            caller: None,
        }
    }

    /// Takes over what one side of a hedged attempt learned (its upstream time and answer's
    /// status, the usage of an answer made whole, how its stream must be relayed).
    pub fn adopt(&mut self, side: RequestCtx) {
        self.upstream_time += side.upstream_time;
        self.upstream_status = side.upstream_status.or(self.upstream_status);
        self.upstream_retry_after = side.upstream_retry_after;
        self.provider = side.provider.or(self.provider.take());
        if side.usage.is_some() {
            self.usage = side.usage;
        }
        self.strip_usage_chunk = side.strip_usage_chunk;
        self.base64_embeddings = side.base64_embeddings;
    }

    /// Records the gateway's own time so far (call as the response head is written) and
    /// returns it, for the `x-shardgate-overhead-us` header.
    pub fn head_overhead(&mut self) -> Duration {
        let o = self.received_at.elapsed().saturating_sub(self.upstream_time + self.retry_wait);
        self.overhead = Some(o);
        o
    }
}

/// The header that carries [`RequestCtx::head_overhead`], in microseconds.
pub const OVERHEAD_HEADER: &str = "x-shardgate-overhead-us";

impl Service for GatewayService {
    fn limits(&self) -> Limits {
        self.shard.config().limits
    }

    fn drain_event(&self) -> &LocalEvent {
        &self.shard.drain
    }

    fn rejected(&self, kind: ErrorKind) {
        self.shard.metrics.error(kind);
        self.shard.metrics.request(Endpoint::Other, kind.status(), std::time::Duration::ZERO);
    }

    async fn call<C: Conn>(&self, req: Request, resp: &mut Responder<'_, C>) {
        let shard = &self.shard;
        let _in_flight = crate::metrics::GaugeUnit::enter(&shard.metrics.in_flight);
        let endpoint = endpoint_of(req.head.path());
        let received_at = req.received_at;
        let mut ctx = RequestCtx::new(received_at);
        // LLM requests are logged ([`crate::request_log`]); their id goes back to the client.
        // (The config is not held across the request: a long stream must not keep an old one.)
        let logged = logged_as(endpoint).filter(|_| shard.logs_requests(&shard.config()));
        let id = logged.map(|_| {
            let id = crate::request_log::request_id(shard.process.started_ms, shard.id, shard.next_sequence());
            ctx.headers.push((REQUEST_ID_HEADER, id.clone()));
            ctx.caller = Some(crate::request_log::Caller::default());
            (id, governance::now_ms())
        });
        dispatch(shard, endpoint, req, resp, &mut ctx).await;
        if let (Some(name), Some((id, at_ms))) = (logged, id) {
            // The config in force now: a reload during the request may have changed the buffer.
            shard.log_request(&shard.config(), record(&mut ctx, id, at_ms, name, resp.status()));
        }
        if let Some(o) = ctx.overhead {
            shard.metrics.overhead.observe(o);
        }
        if let Some(kind) = ctx.error {
            shard.metrics.error(kind);
        }
        if let Some(u) = &ctx.usage {
            shard.metrics.usage(u);
        }
        shard.metrics.request(endpoint, resp.status(), received_at.elapsed());
    }
}

/// Where a logged request's id goes back to the client.
pub const REQUEST_ID_HEADER: &str = "x-shardgate-request-id";

/// A gateway error with the headers gathered for the answer so far (the request id, rate-limit
/// headers).
pub async fn send_error_with<C: Conn>(
    resp: &mut Responder<'_, C>,
    ctx: &RequestCtx,
    err: &GatewayError,
) -> std::io::Result<()> {
    let mut head = resp.start(err.status()).header("content-type", "application/json");
    for (name, value) in &ctx.headers {
        head = head.header(name, value.as_bytes());
    }
    head.body(&err.to_json()).await
}

/// The name an endpoint is logged under, if its requests are logged.
fn logged_as(endpoint: Endpoint) -> Option<&'static str> {
    match endpoint {
        Endpoint::ChatCompletions => Some("chat.completions"),
        Endpoint::Completions => Some("completions"),
        Endpoint::Embeddings => Some("embeddings"),
        Endpoint::Messages => Some("messages"),
        Endpoint::Passthrough => Some("passthrough"),
        Endpoint::Models | Endpoint::Ops | Endpoint::Admin | Endpoint::Mcp | Endpoint::Other => None,
    }
}

/// A request's log record, once it was answered.
fn record(
    ctx: &mut RequestCtx,
    id: SmolStr,
    at_ms: u64,
    endpoint: &'static str,
    status: u16,
) -> crate::request_log::RequestRecord {
    use crate::request_log::RequestRecord;
    let usage = ctx.usage.as_ref();
    RequestRecord {
        id,
        at_ms,
        endpoint,
        caller: ctx.caller.take().unwrap_or_default(),
        model: ctx.model.take(),
        provider: ctx.provider.take(),
        stream: ctx.stream,
        status,
        error: ctx.error.map(ErrorKind::label),
        input_tokens: usage.map(|u| u.prompt_tokens),
        output_tokens: usage.map(|u| u.completion_tokens),
        cached_tokens: usage.map(|u| u.cached_tokens).filter(|n| *n > 0),
        cost_micros: ctx.cost_micros,
        ttft_us: RequestRecord::duration_us(ctx.ttft),
        latency_us: RequestRecord::latency(ctx.received_at.elapsed()),
        overhead_us: RequestRecord::duration_us(ctx.overhead),
    }
}

async fn dispatch<C: Conn>(
    shard: &Rc<Shard>,
    endpoint: Endpoint,
    req: Request,
    resp: &mut Responder<'_, C>,
    ctx: &mut RequestCtx,
) {
    let path = req.head.path();
    let method = req.head.method();
    let is_get = method == "GET" || method == "HEAD";
    // Ops endpoints answer anyone; everything under /v1 needs a caller.
    if endpoint == Endpoint::Ops || endpoint == Endpoint::Other {
        return match (endpoint, path) {
            (Endpoint::Ops, "/health") if is_get => Box::pin(ops::health(resp)).await,
            (Endpoint::Ops, "/ready") if is_get => Box::pin(ops::ready(shard, resp)).await,
            (Endpoint::Ops, "/metrics") if is_get => Box::pin(ops::metrics(shard, resp)).await,
            _ => Box::pin(no_route(path, method, resp, ctx)).await,
        };
    }
    let cfg = shard.config();
    // The browser back from an authorization server carries no gateway credential: the
    // sealed state says whose consent it is.
    if endpoint == Endpoint::Mcp && path == crate::mcp::user_oauth::CALLBACK_PATH && is_get {
        let query = req.head.target().split_once('?').map_or("", |(_, q)| q);
        let cookies = req.head.header("cookie").and_then(|c| std::str::from_utf8(c).ok());
        return Box::pin(crate::mcp::user_oauth::callback(shard, &cfg, query, cookies, resp)).await;
    }
    let caller_held = match governance::authenticate(shard, &cfg, &req.head) {
        Ok(id) => id,
        // Anthropic clients parse Anthropic's error shape.
        Err(err) if endpoint == Endpoint::Messages => {
            return Box::pin(messages::refuse(resp, ctx, err.status(), &err.message)).await;
        }
        Err(err) => {
            ctx.error = Some(err.kind);
            let _ = send_error_with(resp, ctx, &err).await;
            return;
        }
    };
    let caller: &policy::Identity = &caller_held;
    // Only a logged request carries its caller (a placeholder was put there for it).
    if ctx.caller.is_some() {
        ctx.caller = Some(crate::request_log::Caller::of(caller));
    }
    match (endpoint, path) {
        // Rare paths are boxed: an async fn's state holds every arm's future, and the inference
        // path is what thousands of open streams each carry.
        (Endpoint::Models, "/v1/models") if is_get => Box::pin(ops::list_models(&cfg, caller, resp)).await,
        (Endpoint::Models, p) if is_get => {
            Box::pin(ops::get_model(&cfg, caller, &p["/v1/models/".len()..], resp, ctx)).await
        }
        (Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Embeddings, _) if method == "POST" => {
            forward::inference(shard, &cfg, caller, endpoint, req, resp, ctx).await
        }
        (Endpoint::Messages, "/v1/messages") if method == "POST" => {
            Box::pin(messages::messages(shard, &cfg, caller, req, resp, ctx)).await
        }
        (Endpoint::Messages, _) if method == "POST" => Box::pin(messages::count_tokens(&req, resp, ctx)).await,
        (Endpoint::Admin, _) => Box::pin(admin::handle(shard, &cfg, caller, req, resp, ctx)).await,
        (Endpoint::Mcp, _) => Box::pin(crate::mcp::endpoint::handle(shard, &cfg, caller, req, resp, ctx)).await,
        (Endpoint::Passthrough, _) if route_methods(path).is_none() => {
            Box::pin(forward::passthrough(shard, &cfg, caller, req, resp, ctx)).await
        }
        _ => Box::pin(no_route(path, method, resp, ctx)).await,
    }
}

/// 405 for a known path with the wrong method, else 404.
async fn no_route<C: Conn>(path: &str, method: &str, resp: &mut Responder<'_, C>, ctx: &mut RequestCtx) {
    if let Some(allow) = route_methods(path) {
        let err =
            GatewayError::new(ErrorKind::MethodNotAllowed, format!("{method} is not allowed on {path}; use {allow}"));
        ctx.error = Some(err.kind);
        let _ = resp
            .start(405)
            .header("allow", allow)
            .header("content-type", "application/json")
            .body(&err.to_json())
            .await;
    } else {
        let err = GatewayError::new(ErrorKind::NotFound, format!("no route for {method} {path}"));
        ctx.error = Some(err.kind);
        let _ = send_error(resp, &err).await;
    }
}
