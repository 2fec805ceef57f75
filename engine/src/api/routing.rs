//! The retry loop of a `route:` model. The router ([`crate::router`]) decides, this loop
//! carries out: pick a target, make one attempt inside its actor, and on a miss (nothing
//! written to the client yet) retry, fall back to the next group, or give the last miss to the
//! client. Every attempt's outcome feeds the shard's view of the target's health (breaker,
//! averages), and a breaker that opens is announced to the other shards.
//!
//! The client sees which target served it and how, in `x-shardgate-target`,
//! `x-shardgate-attempts`, `x-shardgate-fallbacks` and `x-shardgate-retry-wait-ms`.

use std::rc::Rc;
use std::time::{Duration, Instant};

use adapters::openai::request::RequestFacts;
use bytes::Bytes;
use policy::Identity;
use policy::rules::Metadata;
use serde_json::Value;
use smol_str::SmolStr;

use super::RequestCtx;
use super::attempt::Miss;
use super::forward::{Ready, Target, attempt};
use super::route::Route;
use super::supervised;
use crate::actor::{Admitted, Served, TargetActor};
use crate::config::Snapshot;
use crate::error::{ErrorKind, GatewayError};
use crate::gossip::{HealthEvent, HealthNews};
use crate::http::{Request, Responder};
use crate::metrics::Endpoint;
use crate::router::{self, Admission, FailureClass, Field, FieldValue, Next, Outcome, Overrides, Plan, Transition};
use crate::rt::Conn;
use crate::shard::Shard;

/// Per-request overrides, bounded: retries at most this many.
const MAX_RETRIES_OVERRIDE: u32 = 10;
/// Longest timeout or retry budget a header may ask for when the route sets none.
const MAX_HEADER_DURATION: Duration = Duration::from_secs(600);
/// Output tokens assumed when a request does not say (for latency scores).
const DEFAULT_OUTPUT_TOKENS: u32 = 256;

/// The request as the loop needs it.
pub(super) struct Asked<'a> {
    pub caller: &'a Identity,
    pub metadata: &'a Metadata,
    pub req: &'a Request,
    pub facts: &'a RequestFacts,
}

/// An endpoint the loop routes: how one attempt is made at a target, and how the last miss is
/// answered (each API answers errors in its own shape).
pub(super) trait Attempter {
    /// One attempt at `target`: `None` once the answer is committed, else the miss (nothing
    /// was written).
    async fn attempt<C: Conn>(
        &self,
        target: &Target<'_>,
        req: &Request,
        facts: &RequestFacts,
        resp: &mut Responder<'_, C>,
        ctx: &mut RequestCtx,
    ) -> Option<Box<Miss>>;

    /// Answers the client with the last miss.
    async fn answer<C: Conn>(&self, miss: Box<Miss>, resp: &mut Responder<'_, C>, ctx: &mut RequestCtx);

    /// Which API's attempts these are, when they may be hedged (see [`hedged`]).
    fn hedgeable(&self) -> Option<HedgeApi> {
        None
    }
}

/// The APIs whose attempts can be hedged: both fetch to the point of commitment, then deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HedgeApi {
    /// `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`.
    Chat(Endpoint),
    /// `/v1/messages`.
    Messages,
}

/// An answer one side of a hedge fetched, of either API.
pub(super) enum AnyReady<'a> {
    Chat(Ready<'a>),
    Messages(super::messages::Ready<'a>),
}

/// `/v1/chat/completions`, `/v1/completions` and `/v1/embeddings` attempts.
pub(super) struct Chat<'a> {
    pub shard: &'a Rc<Shard>,
    pub cfg: &'a Snapshot,
    pub endpoint: Endpoint,
}

impl Attempter for Chat<'_> {
    // The attempt's own future, not one wrapping it: an attempt's state is large, and every
    // layer of `async` around it would copy it once more per request.
    #[allow(clippy::manual_async_fn)]
    fn attempt<C: Conn>(
        &self,
        target: &Target<'_>,
        req: &Request,
        facts: &RequestFacts,
        resp: &mut Responder<'_, C>,
        ctx: &mut RequestCtx,
    ) -> impl std::future::Future<Output = Option<Box<Miss>>> {
        attempt(self.shard, self.cfg, target, self.endpoint, req, facts, resp, ctx)
    }

    async fn answer<C: Conn>(&self, miss: Box<Miss>, resp: &mut Responder<'_, C>, ctx: &mut RequestCtx) {
        miss.send(resp, ctx).await;
    }

    fn hedgeable(&self) -> Option<HedgeApi> {
        Some(HedgeApi::Chat(self.endpoint))
    }
}

/// What conditions and affinity read of a request.
struct Facts<'a> {
    asked: &'a Asked<'a>,
    /// The body, parsed only when some condition reads `params.*`.
    params: Option<Value>,
    affinity: Option<&'a str>,
}

impl router::RequestFacts for Facts<'_> {
    fn field(&self, f: &Field) -> Option<FieldValue<'_>> {
        let id = self.asked.caller;
        fn text(v: Option<&std::sync::Arc<str>>) -> Option<FieldValue<'_>> {
            v.map(|s| FieldValue::Str(s))
        }
        match f {
            Field::Metadata(k) => self.asked.metadata.get(k).map(FieldValue::Str),
            Field::Header(name) => {
                self.asked.req.head.header(name).and_then(|v| std::str::from_utf8(v).ok()).map(FieldValue::Str)
            }
            Field::Param(path) => {
                let mut v = self.params.as_ref()?;
                for seg in path {
                    v = match v {
                        Value::Object(m) => m.get(seg)?,
                        Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
                        _ => return None,
                    };
                }
                Some(FieldValue::Json(v))
            }
            Field::User => text(id.user.as_ref()),
            Field::Team => text(id.team.as_ref()),
            Field::Application => text(id.application.as_ref()),
            Field::Environment => text(id.environment.as_ref()),
            Field::Model => self.asked.facts.model.as_ref().map(|m| FieldValue::Str(&m.name)),
        }
    }

    fn affinity_key(&self) -> Option<&str> {
        self.affinity
    }

    fn expected_output_tokens(&self) -> u32 {
        self.asked.facts.max_tokens.map_or(DEFAULT_OUTPUT_TOKENS, |n| u32::try_from(n).unwrap_or(u32::MAX))
    }
}

/// The `user` field of a request body (read only for affinity by user).
fn body_user(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct User {
        user: Option<String>,
    }
    serde_json::from_slice::<User>(body).ok()?.user
}

fn header_u64(req: &Request, name: &str) -> Option<u64> {
    req.head.header(name).and_then(|v| std::str::from_utf8(v).ok()).and_then(|v| v.trim().parse().ok())
}

/// A duration a header asks for, bounded by what the route configured (or a hard cap).
fn bounded_ms(req: &Request, name: &str, configured: Option<Duration>) -> Option<Duration> {
    let asked = Duration::from_millis(header_u64(req, name)?);
    Some(asked.min(configured.unwrap_or(MAX_HEADER_DURATION)))
}

/// `x-shardgate-retries`, `x-shardgate-retry-budget-ms`, `x-shardgate-no-fallback`.
fn overrides(req: &Request, route: &router::Route) -> Overrides {
    Overrides {
        attempts: header_u64(req, "x-shardgate-retries")
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX).min(MAX_RETRIES_OVERRIDE)),
        budget: bounded_ms(req, "x-shardgate-retry-budget-ms", Some(route.retry.budget)),
        no_fallback: req
            .head
            .header("x-shardgate-no-fallback")
            .is_some_and(|v| v.eq_ignore_ascii_case(b"true") || v == b"1"),
    }
}

/// The request with a target's `params` merged over its body (and its facts read again).
fn with_params(
    shard: &Shard,
    req: &Request,
    params: &serde_json::Map<String, Value>,
) -> Result<(Request, RequestFacts), Box<Miss>> {
    let bad = |why: String| Miss::gateway(GatewayError::new(ErrorKind::InvalidJson, why));
    let mut body: Value = serde_json::from_slice(&req.body).map_err(|e| bad(format!("invalid JSON body: {e}")))?;
    let Value::Object(fields) = &mut body else { return Err(bad("the body is not a JSON object".to_string())) };
    for (k, v) in params {
        fields.insert(k.clone(), v.clone());
    }
    let bytes = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    let facts = shard.scanner.borrow_mut().scan(&bytes).map_err(|e| bad(e.to_string()))?;
    let rebuilt = Request { head: req.head.clone(), body: bytes, peer: req.peer, received_at: req.received_at };
    Ok((rebuilt, facts))
}

/// The headers that say how the request was routed (replacing the previous attempt's).
/// Short values: nothing is allocated for them (they sit inline in the `SmolStr`), and the
/// target's name is shared with the config.
fn routing_headers(ctx: &mut RequestCtx, keep: usize, target: SmolStr, plan: &Plan<'_>) {
    ctx.headers.truncate(keep);
    ctx.headers.push(("x-shardgate-target", target));
    ctx.headers.push(("x-shardgate-attempts", number(u64::from(plan.attempts()))));
    ctx.headers.push(("x-shardgate-fallbacks", number(u64::from(plan.fallbacks()))));
    ctx.headers.push(("x-shardgate-retry-wait-ms", millis(plan.retry_wait())));
}

fn number(n: u64) -> SmolStr {
    SmolStr::new(itoa::Buffer::new().format(n))
}

fn millis(d: Duration) -> SmolStr {
    number(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The request is priced by the model of the target that serves it.
fn reprice(cfg: &Snapshot, ctx: &mut RequestCtx, model: &str) {
    if let Some(held) = ctx.held.as_mut() {
        held.reprice(cfg.policy.pricing.get(model).copied());
    }
}

/// How an attempt that committed went, for the breaker and the latency averages: the outcome
/// with the time its answer was ready (a stream's first piece, else the whole answer), and the
/// tokens it used.
fn success(ctx: &RequestCtx, took: Duration) -> ((Outcome, Option<Duration>), u64) {
    let tokens = ctx.usage.as_ref().map_or(0, |u| u.prompt_tokens + u.completion_tokens);
    let output = ctx.usage.as_ref().map_or(0, |u| u.completion_tokens).max(1);
    let after_first = took.saturating_sub(ctx.ttft.unwrap_or_default());
    let per_token = after_first / u32::try_from(output).unwrap_or(u32::MAX);
    let answered = ctx.ttft.unwrap_or(took);
    ((Outcome::Success { ttft: ctx.ttft, per_token: Some(per_token) }, Some(answered)), tokens)
}

/// Records a miss of `id` in its health: the target's fault, or (the request's own fault)
/// nothing but its end.
fn record_miss(shard: &Shard, route: &router::Route, id: router::TargetId, now: Instant, miss: &Miss) {
    let outcome = match miss.class {
        FailureClass::Auth => Some(Outcome::AuthFailure),
        // The request's own fault says nothing of the target.
        FailureClass::Client | FailureClass::ContextWindow | FailureClass::ContentPolicy => None,
        FailureClass::Transient => Some(Outcome::Failure),
    };
    match outcome {
        Some(o) => announce(shard, route, id, now, (o, None), 0),
        None => shard.route_health.abandon(id),
    }
}

/// Applies the breaker news other shards sent.
fn read_news(shard: &Shard, cfg: &Snapshot, route: &router::Route, now: Instant) {
    while let Some(news) = shard.process.health.next(shard.id) {
        match news.event {
            HealthEvent::Opened { until } => {
                shard.route_health.force_open(cfg, &news.key, &route.breaker, until, now);
            }
            HealthEvent::Latency { ttft_us, tpot_us, samples } => {
                shard.route_health.blend(cfg, &news.key, (ttft_us, tpot_us, samples));
            }
        }
    }
}

/// Serves a request of a `route:` model.
pub(super) async fn serve<C: Conn, A: Attempter>(
    shard: &Rc<Shard>,
    cfg: &Snapshot,
    route: &router::Route,
    asked: &Asked<'_>,
    attempter: &A,
    resp: &mut Responder<'_, C>,
    ctx: &mut RequestCtx,
) {
    // One clock reading serves the news, the plan and the first attempt.
    let started = Instant::now();
    read_news(shard, cfg, route, started);
    let req = asked.req;
    let user_key;
    let affinity = match route.affinity() {
        Some(router::AffinitySource::Header(h)) => req.head.header(h).and_then(|v| std::str::from_utf8(v).ok()),
        Some(router::AffinitySource::User) => {
            user_key = body_user(&req.body);
            user_key.as_deref()
        }
        None => None,
    };
    let params = if route.needs_params() { serde_json::from_slice(&req.body).ok() } else { None };
    let facts = Facts { asked, params, affinity };
    // Per-request overrides are looked up only when some `x-shardgate-*` header is there.
    let asks = req.head.headers().any(|(n, _)| n.len() > 12 && n[..12].eq_ignore_ascii_case(b"x-shardgate-"));
    let header = |name: &str, configured: Option<Duration>| {
        if asks { bounded_ms(req, name, configured).or(configured) } else { configured }
    };
    let total = header("x-shardgate-timeout-ms", route.timeouts.total);
    let total_deadline = total.map(|t| req.received_at + t);
    let first_token = header("x-shardgate-first-token-timeout-ms", route.timeouts.first_token);
    let per_attempt = header("x-shardgate-attempt-timeout-ms", route.timeouts.attempt);
    ctx.connect_limit = header("x-shardgate-connect-timeout-ms", route.timeouts.connect);
    ctx.idle_limit = header("x-shardgate-idle-timeout-ms", route.timeouts.idle);
    let mut plan = Plan::new(route, if asks { overrides(req, route) } else { Overrides::default() }, started);
    let keep = ctx.headers.len();
    let mut last: Option<Box<Miss>> = None;
    let mut now = started;
    loop {
        if total_deadline.is_some_and(|d| now >= d) {
            let message = format!(
                "the route's total timeout ({} ms) ran out after {} attempts",
                total.unwrap_or_default().as_millis(),
                plan.attempts()
            );
            last = Some(Miss::gateway(GatewayError::new(ErrorKind::UpstreamTimeout, message)));
            break;
        }
        let random = fastrand::u64(..);
        let pick = shard.route_health.with_view(cfg, &route.breaker, now, |view| plan.next(&facts, view, random));
        let Some(pick) = pick else { break };
        let Some((provider, spec)) = cfg.route_target(pick.target) else { break };
        let admission = shard.route_health.begin(cfg, pick.target, &route.breaker, now);
        if matches!(admission, Admission::Denied) && !pick.cooled {
            // Its half-open probes were all taken since the pick: another target, or later.
            let refused = router::Failure { status: Some(503), retry_after: None, class: FailureClass::Transient };
            match plan.failed(&refused, now, fastrand::u64(..)) {
                Next::GiveUp => break,
                Next::Retry { .. } | Next::Fallback => continue,
            }
        }
        routing_headers(ctx, keep, cfg.route_target_name(pick.target), &plan);
        // The reservation was priced with the first target's model.
        if route.targets().first() != Some(&pick.target) {
            reprice(cfg, ctx, &spec.model);
        }
        ctx.error = None;
        // The pre-commit phase (until the head, or a stream's first piece) is bounded by the
        // attempt and first-token timeouts and what is left of the total.
        let limit = [
            per_attempt,
            if asked.facts.stream { first_token } else { None },
            total_deadline.map(|d| d.saturating_duration_since(now)),
        ]
        .into_iter()
        .flatten()
        .min();
        ctx.attempt_deadline = limit.map(|l| now + l);
        let rebuilt;
        let (req_used, facts_used) = match &spec.params {
            Some(p) => match with_params(shard, req, p) {
                Ok(r) => {
                    rebuilt = r;
                    (&rebuilt.0, &rebuilt.1)
                }
                Err(miss) => {
                    shard.route_health.abandon(pick.target);
                    last = Some(miss);
                    break;
                }
            },
            None => (req, asked.facts),
        };
        let target = Target { provider, upstream_model: &spec.model, headers: &spec.headers };
        let hedge = match (route.hedge, attempter.hedgeable()) {
            // The in-process mock answers in place: it is not raced.
            (Some(h), Some(api)) if provider.upstream.is_some() => {
                hedge_delay(shard, route, &plan, h).map(|after| (after, api))
            }
            _ => None,
        };
        let miss = if let Some((after, api)) = hedge {
            let primary = Primary { id: pick.target, target, req: req_used, facts: facts_used };
            let hedging = Hedging { shard, cfg, route, api, facts: &facts, keep };
            // Boxed: hedging is opt-in, and its state would otherwise weigh on every routed request.
            match Box::pin(hedged(&hedging, &mut plan, primary, after, resp, ctx)).await {
                None => {
                    log_route(route, &plan, ctx, "served");
                    return;
                }
                Some(miss) => miss,
            }
        } else {
            let started = now;
            let missed = attempter.attempt(&target, req_used, facts_used, resp, ctx).await;
            let now = Instant::now();
            let Some(miss) = missed else {
                let (outcome, tokens) = success(ctx, now.saturating_duration_since(started));
                announce(shard, route, pick.target, now, outcome, tokens);
                log_route(route, &plan, ctx, "served");
                return;
            };
            record_miss(shard, route, pick.target, now, &miss);
            miss
        };
        ctx.attempt_deadline = None;
        now = Instant::now();
        let failure = router::Failure { status: miss.status, retry_after: miss.retry_after, class: miss.class };
        match plan.failed(&failure, now, fastrand::u64(..)) {
            Next::Retry { after } => {
                if total_deadline.is_some_and(|d| now + after >= d) {
                    last = Some(miss);
                    break;
                }
                shard.metrics.route_retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if !after.is_zero() {
                    crate::rt::sleep(after).await;
                    ctx.retry_wait += after;
                    now = Instant::now();
                }
            }
            Next::Fallback => {
                shard.metrics.route_fallbacks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Next::GiveUp => {
                last = Some(miss);
                break;
            }
        }
        last = Some(miss);
    }
    shard.metrics.route_exhausted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    log_route(route, &plan, ctx, "exhausted");
    if let Some((_, v)) = ctx.headers.iter_mut().find(|(n, _)| *n == "x-shardgate-retry-wait-ms") {
        *v = millis(plan.retry_wait());
    }
    let miss = last.unwrap_or_else(|| {
        let model = asked.facts.model.as_ref().map_or("", |m| m.name.as_str());
        let err = GatewayError::new(
            ErrorKind::Unavailable,
            format!("no target of model `{model}` can take this request now (every one is cooling down)"),
        );
        Miss::gateway(err)
    });
    attempter.answer(miss, resp, ctx).await;
}

/// The route a request took, in the log: at info when it took more than one attempt (what an
/// operator looks for after a provider incident), else at debug. The same facts as the
/// `x-shardgate-*` headers and the routing metrics.
fn log_route(route: &router::Route, plan: &Plan<'_>, ctx: &RequestCtx, how: &'static str) {
    let notable = plan.attempts() > 1 || how != "served";
    // The common case (one attempt, served) logs at debug: nothing is looked up unless that is on.
    if !notable && !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let target = ctx.headers.iter().find(|(n, _)| *n == "x-shardgate-target").map_or("", |(_, v)| v.as_str());
    let (attempts, fallbacks, waited_ms) = (plan.attempts(), plan.fallbacks(), plan.retry_wait().as_millis() as u64);
    if notable {
        tracing::info!(model = route.model(), target, attempts, fallbacks, waited_ms, how, "routed");
    } else {
        tracing::debug!(model = route.model(), target, attempts, fallbacks, waited_ms, how, "routed");
    }
}

/// Records an attempt's outcome; a breaker that opened here is announced to the other shards.
pub(super) fn announce(
    shard: &Shard,
    route: &router::Route,
    id: router::TargetId,
    now: Instant,
    outcome: (Outcome, Option<Duration>),
    tokens: u64,
) {
    let succeeded = matches!(outcome.0, Outcome::Success { .. });
    let news = shard.route_health.end(id, &route.breaker, now, outcome, tokens);
    if succeeded
        && shard.process.health.shards() > 1
        && let Some((ttft_us, tpot_us, samples)) = shard.route_health.latency_to_share(id)
        && let Some((_, spec)) = shard.config().route_target(id)
    {
        let key: std::sync::Arc<str> = std::sync::Arc::from(crate::route_health::target_key(spec));
        let event = HealthEvent::Latency { ttft_us, tpot_us, samples };
        shard.process.health.broadcast(shard.id, &HealthNews { key, event });
    }
    let Some(news) = news else { return };
    match news.transition {
        Transition::Opened { until, reason } => {
            tracing::warn!(target_key = %news.key, shard = shard.id, ?reason, "circuit breaker opened");
            if !matches!(reason, router::OpenReason::Gossip) {
                let event = HealthEvent::Opened { until };
                shard.process.health.broadcast(shard.id, &HealthNews { key: news.key, event });
            }
        }
        Transition::HalfOpened => tracing::info!(target_key = %news.key, shard = shard.id, "circuit breaker half-open"),
        Transition::Closed => tracing::info!(target_key = %news.key, shard = shard.id, "circuit breaker closed"),
    }
}

/// How long to wait before hedging an attempt in the plan's group: the configured delay, or a
/// percentile of the group's times to an answer (no hedge until enough are known).
fn hedge_delay(shard: &Shard, route: &router::Route, plan: &Plan<'_>, h: router::HedgePolicy) -> Option<Duration> {
    match h.after {
        router::HedgeAfter::Fixed(d) => Some(d),
        router::HedgeAfter::Percentile(p) => {
            shard.route_health.answer_times(&route.group_targets(plan.group())).percentile(p)
        }
    }
}

/// What a hedged attempt shares with the loop.
struct Hedging<'a> {
    shard: &'a Rc<Shard>,
    cfg: &'a Snapshot,
    route: &'a router::Route,
    api: HedgeApi,
    facts: &'a Facts<'a>,
    /// Where the routing headers start in `ctx.headers`.
    keep: usize,
}

/// The first attempt of a hedged pair.
struct Primary<'a> {
    id: router::TargetId,
    target: Target<'a>,
    req: &'a Request,
    facts: &'a RequestFacts,
}

/// What one side of a hedged pair fetched: its context back, and its answer ready to deliver
/// in the turn it holds, or its miss.
type Side<'a> = (RequestCtx, Result<(Admitted<'a>, AnyReady<'a>), Box<Miss>>);

/// A fetch inside its target's actor, with a context of its own (see [`scratch`]): the admitted
/// turn stays held with the answer, so the winner delivers in the same turn.
async fn fetch_in_actor<'a>(
    h: &'a Hedging<'a>,
    actor: &'a TargetActor,
    target: &Target<'a>,
    (req, facts): (&'a Request, &'a RequestFacts),
    mut ctx: RequestCtx,
) -> Side<'a> {
    let fetched = fetch_admitted(h, actor, target, (req, facts), &mut ctx).await;
    (ctx, fetched)
}

async fn fetch_admitted<'a>(
    h: &'a Hedging<'a>,
    actor: &'a TargetActor,
    target: &Target<'a>,
    (req, facts): (&'a Request, &'a RequestFacts),
    ctx: &mut RequestCtx,
) -> Result<(Admitted<'a>, AnyReady<'a>), Box<Miss>> {
    let admitted = actor.admit().await.map_err(|r| Miss::unserved(supervised::refusal(actor.name(), r)))?;
    let Some(up) = &target.provider.upstream else {
        // The in-process mock is not hedged (`hedged` is not called for it).
        return Err(Miss::gateway(GatewayError::new(ErrorKind::Internal, "a mock provider cannot be hedged")));
    };
    let route = Route {
        shard: h.shard,
        cfg: h.cfg,
        provider: target.provider,
        up,
        upstream_model: target.upstream_model,
        req,
        headers: target.headers,
    };
    let work = async {
        match h.api {
            HedgeApi::Chat(endpoint) => super::forward::fetch(&route, endpoint, facts, ctx).await.map(AnyReady::Chat),
            HedgeApi::Messages => {
                let chat = adapters::anthropic::request_from_anthropic(&req.body).map_err(Miss::refused)?;
                super::messages::fetch(&route, chat, ctx).await.map(AnyReady::Messages)
            }
        }
    };
    match actor.supervise(&h.shard.pool, &admitted, Box::pin(work)).await {
        Served::Done(Ok(ready)) => Ok((admitted, ready)),
        Served::Done(Err(miss)) => Err(miss),
        Served::Refused(r) => Err(Miss::unserved(supervised::refusal(actor.name(), r))),
        Served::Panicked(_) => Err(Miss::gateway(GatewayError::new(
            ErrorKind::TargetFailed,
            format!("the gateway's handler for provider {} failed on this request", actor.name()),
        ))),
    }
}

/// A request context for one side of a hedged pair: what an attempt reads, nothing it settles.
fn scratch(ctx: &RequestCtx) -> RequestCtx {
    let mut s = RequestCtx::new(ctx.received_at);
    s.model.clone_from(&ctx.model);
    s.stream = ctx.stream;
    s.attempt_deadline = ctx.attempt_deadline;
    s.connect_limit = ctx.connect_limit;
    s.idle_limit = ctx.idle_limit;
    s
}

/// A hedged attempt: the primary is fetched; if it has no answer ready within `after`, a second
/// attempt goes to another target of the route, and the first answer ready wins. The loser is
/// cancelled (its future dropped: its upstream connection closes, its actor turn is given back)
/// and its health untouched; the winner's answer is delivered. `None` once delivered, else the
/// last miss (both failed, or no second target).
async fn hedged<C: Conn>(
    h: &Hedging<'_>,
    plan: &mut Plan<'_>,
    primary: Primary<'_>,
    after: Duration,
    resp: &mut Responder<'_, C>,
    ctx: &mut RequestCtx,
) -> Option<Box<Miss>> {
    use futures_util::future::{Either, select};
    let Hedging { shard, cfg, route, .. } = *h;
    let started = Instant::now();
    let actor_a = supervised::actor(shard, primary.target.provider);
    let asked = (primary.req, primary.facts);
    // Boxed, so the loser can be dropped (cancelled) the moment the other side wins.
    let mut fut_a = Box::pin(fetch_in_actor(h, &actor_a, &primary.target, asked, scratch(ctx)));
    let timer = std::pin::pin!(crate::rt::sleep(after));
    let first = match select(fut_a.as_mut(), timer).await {
        Either::Left((done, _)) => Some(done),
        Either::Right(((), _)) => None,
    };
    if let Some(done) = first {
        // Answered (or failed) before a hedge was due.
        drop(fut_a);
        return finish(h, plan, (primary.id, &actor_a), done, started, false, resp, ctx).await;
    }
    // The second attempt: another target (the plan knows the primary was tried).
    let random = fastrand::u64(..);
    let now = Instant::now();
    let second = shard.route_health.with_view(cfg, &route.breaker, now, |view| plan.next(h.facts, view, random));
    let second = second
        .filter(|p| p.target != primary.id && !p.cooled)
        .and_then(|p| cfg.route_target(p.target).map(|(provider, spec)| (p.target, provider, spec)))
        // A mock, or a target that rewrites the body, is not raced.
        .filter(|(_, provider, spec)| provider.upstream.is_some() && spec.params.is_none());
    let Some((id_b, provider_b, spec_b)) = second else {
        let done = fut_a.await;
        return finish(h, plan, (primary.id, &actor_a), done, started, false, resp, ctx).await;
    };
    shard.route_health.begin(cfg, id_b, &route.breaker, now);
    shard.metrics.route_hedges.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let target_b = Target { provider: provider_b, upstream_model: &spec_b.model, headers: &spec_b.headers };
    let actor_b = supervised::actor(shard, provider_b);
    let mut fut_b = Box::pin(fetch_in_actor(h, &actor_b, &target_b, asked, scratch(ctx)));
    let first_done = match select(fut_a.as_mut(), fut_b.as_mut()).await {
        Either::Left((side, _)) => Either::Left(side),
        Either::Right((side, _)) => Either::Right(side),
    };
    let wins =
        |won: bool| shard.metrics.route_hedge_wins.fetch_add(u64::from(won), std::sync::atomic::Ordering::Relaxed);
    match first_done {
        // The first answer ready wins; the other is cancelled where it stands.
        Either::Left((side, Ok(ready))) => {
            drop(fut_b);
            shard.route_health.abandon(id_b);
            finish(h, plan, (primary.id, &actor_a), (side, Ok(ready)), started, true, resp, ctx).await
        }
        Either::Right((side, Ok(ready))) => {
            drop(fut_a);
            shard.route_health.abandon(primary.id);
            wins(true);
            finish(h, plan, (id_b, &actor_b), (side, Ok(ready)), started, true, resp, ctx).await
        }
        // The first to finish failed: the other may still answer.
        Either::Left((_, Err(miss_a))) => {
            drop(fut_a);
            record_miss(shard, route, primary.id, Instant::now(), &miss_a);
            let done = fut_b.await;
            wins(done.1.is_ok());
            finish(h, plan, (id_b, &actor_b), done, started, true, resp, ctx).await
        }
        Either::Right((_, Err(miss_b))) => {
            drop(fut_b);
            record_miss(shard, route, id_b, Instant::now(), &miss_b);
            let done = fut_a.await;
            finish(h, plan, (primary.id, &actor_a), done, started, true, resp, ctx).await
        }
    }
}

/// Delivers the answer one side of a hedge fetched (inside its actor's turn), or records its
/// miss and hands it back.
#[allow(clippy::too_many_arguments)]
async fn finish<C: Conn>(
    h: &Hedging<'_>,
    plan: &Plan<'_>,
    (id, actor): (router::TargetId, &TargetActor),
    (side, done): Side<'_>,
    started: Instant,
    hedge_sent: bool,
    resp: &mut Responder<'_, C>,
    ctx: &mut RequestCtx,
) -> Option<Box<Miss>> {
    let Hedging { shard, cfg, route, .. } = *h;
    ctx.adopt(side);
    let (admitted, ready) = match done {
        Ok(won) => won,
        Err(miss) => {
            record_miss(shard, route, id, Instant::now(), &miss);
            return Some(miss);
        }
    };
    if let Some((_, spec)) = cfg.route_target(id) {
        routing_headers(ctx, h.keep, cfg.route_target_name(id), plan);
        reprice(cfg, ctx, &spec.model);
    }
    if hedge_sent {
        ctx.headers.push(("x-shardgate-hedged", SmolStr::new_static("true")));
    }
    // After the routing headers are set: they are rebuilt from `keep`, which would drop the
    // guardrails header the gate adds.
    if let Err(e) = super::guard::gate(shard, cfg, ctx).await {
        let miss = Miss::guardrail(e);
        record_miss(shard, route, id, Instant::now(), &miss);
        return Some(miss);
    }
    let deliver = async {
        match ready {
            AnyReady::Chat(r) => super::forward::deliver(shard, cfg, r, resp, ctx).await,
            AnyReady::Messages(r) => super::messages::deliver(shard, cfg, r, resp, ctx).await,
        }
    };
    let served = actor.supervise(&shard.pool, &admitted, Box::pin(deliver)).await;
    drop(admitted);
    let served = match served {
        Served::Done(()) => Served::Done(Ok(())),
        Served::Refused(r) => Served::Refused(r),
        Served::Panicked(m) => Served::Panicked(m),
    };
    let miss = supervised::settle_attempt(actor, served, started, resp, ctx);
    let now = Instant::now();
    match &miss {
        None => {
            let (outcome, tokens) = success(ctx, started.elapsed());
            announce(shard, route, id, now, outcome, tokens);
        }
        Some(m) => record_miss(shard, route, id, now, m),
    }
    miss
}
