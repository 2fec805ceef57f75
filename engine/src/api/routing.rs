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

use super::RequestCtx;
use super::attempt::Miss;
use super::forward::{Target, attempt};
use crate::config::Snapshot;
use crate::error::{ErrorKind, GatewayError};
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
    pub endpoint: Endpoint,
    pub req: &'a Request,
    pub facts: &'a RequestFacts,
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
fn routing_headers(ctx: &mut RequestCtx, keep: usize, target: String, plan: &Plan<'_>) {
    ctx.headers.truncate(keep);
    ctx.headers.push(("x-shardgate-target", target));
    ctx.headers.push(("x-shardgate-attempts", plan.attempts().to_string()));
    ctx.headers.push(("x-shardgate-fallbacks", plan.fallbacks().to_string()));
    ctx.headers.push(("x-shardgate-retry-wait-ms", plan.retry_wait().as_millis().to_string()));
}

/// How an attempt that committed went, for the breaker and the latency averages.
fn success(ctx: &RequestCtx, took: Duration) -> (Outcome, u64) {
    let tokens = ctx.usage.as_ref().map_or(0, |u| u.prompt_tokens + u.completion_tokens);
    let output = ctx.usage.as_ref().map_or(0, |u| u.completion_tokens).max(1);
    let after_first = took.saturating_sub(ctx.ttft.unwrap_or_default());
    let per_token = after_first / u32::try_from(output).unwrap_or(u32::MAX);
    (Outcome::Success { ttft: ctx.ttft, per_token: Some(per_token) }, tokens)
}

/// Applies the breaker news other shards sent.
fn read_news(shard: &Shard, cfg: &Snapshot, route: &router::Route) {
    let now = Instant::now();
    while let Some(news) = shard.process.health.next(shard.id) {
        shard.route_health.force_open(cfg, &news.key, &route.breaker, news.until, now);
    }
}

/// Serves a request of a `route:` model.
pub(super) async fn serve<C: Conn>(
    shard: &Rc<Shard>,
    cfg: &Snapshot,
    route: &router::Route,
    asked: &Asked<'_>,
    resp: &mut Responder<'_, C>,
    ctx: &mut RequestCtx,
) {
    read_news(shard, cfg, route);
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
    let total = bounded_ms(req, "x-shardgate-timeout-ms", route.timeouts.total).or(route.timeouts.total);
    let total_deadline = total.map(|t| req.received_at + t);
    let first_token = bounded_ms(req, "x-shardgate-first-token-timeout-ms", route.timeouts.first_token)
        .or(route.timeouts.first_token);
    let per_attempt = route.timeouts.attempt;
    let mut plan = Plan::new(route, overrides(req, route), Instant::now());
    let keep = ctx.headers.len();
    let mut last: Option<Box<Miss>> = None;
    loop {
        let now = Instant::now();
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
        routing_headers(ctx, keep, format!("{}/{}", spec.provider, spec.model), &plan);
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
        let started = Instant::now();
        let missed = attempt(shard, cfg, &target, asked.endpoint, req_used, facts_used, resp, ctx).await;
        ctx.attempt_deadline = None;
        let now = Instant::now();
        let Some(miss) = missed else {
            let (outcome, tokens) = success(ctx, started.elapsed());
            announce(shard, route, pick.target, now, outcome, tokens);
            return;
        };
        let outcome = match miss.class {
            FailureClass::Auth => Some(Outcome::AuthFailure),
            // The request's own fault says nothing of the target.
            FailureClass::Client | FailureClass::ContextWindow | FailureClass::ContentPolicy => None,
            FailureClass::Transient => Some(Outcome::Failure),
        };
        match outcome {
            Some(o) => announce(shard, route, pick.target, now, o, 0),
            None => shard.route_health.abandon(pick.target),
        }
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
    if let Some((_, v)) = ctx.headers.iter_mut().find(|(n, _)| *n == "x-shardgate-retry-wait-ms") {
        *v = plan.retry_wait().as_millis().to_string();
    }
    match last {
        Some(miss) => miss.send(resp, ctx).await,
        None => {
            let model = asked.facts.model.as_ref().map_or("", |m| m.name.as_str());
            let err = GatewayError::new(
                ErrorKind::Unavailable,
                format!("no target of model `{model}` can take this request now (every one is cooling down)"),
            );
            Miss::gateway(err).send(resp, ctx).await;
        }
    }
}

/// Records an attempt's outcome; a breaker that opened here is announced to the other shards.
fn announce(shard: &Shard, route: &router::Route, id: router::TargetId, now: Instant, outcome: Outcome, tokens: u64) {
    let Some(news) = shard.route_health.end(id, &route.breaker, now, outcome, tokens) else { return };
    match news.transition {
        Transition::Opened { until, reason } => {
            tracing::warn!(target_key = %news.key, shard = shard.id, ?reason, "circuit breaker opened");
            if !matches!(reason, router::OpenReason::Gossip) {
                shard.process.health.broadcast(shard.id, &crate::gossip::HealthNews { key: news.key, until });
            }
        }
        Transition::HalfOpened => tracing::info!(target_key = %news.key, shard = shard.id, "circuit breaker half-open"),
        Transition::Closed => tracing::info!(target_key = %news.key, shard = shard.id, "circuit breaker closed"),
    }
}
