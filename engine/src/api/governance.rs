//! Governance on the request path: who is calling (the key in `Authorization`, `x-api-key` or
//! `api-key`), may they use this model, and may this request go ahead under every rate limit
//! and budget that applies — then, when the answer is done, what it really used and cost.
//!
//! Everything here runs on the shard, in memory: the policy comes with the config snapshot, the
//! counters are the shard's own [`policy::Governor`], kept in step with the other shards by
//! [`crate::gossip`].

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use adapters::openai::usage::Usage;
use policy::keys::KeyDigest;
use policy::pricing::Tokens;
use policy::{Admission, AdmitRequest, AuthError, Denied, Estimate, Identity, Metadata, Refusal, RefusalKind};
use smol_str::SmolStr;

use super::RequestCtx;
use crate::config::Snapshot;
use crate::error::{ErrorKind, GatewayError};
use crate::http::{RequestHead, Responder};
use crate::rt::Conn;
use crate::shard::Shard;

/// Request metadata header: a JSON object of string (or number, or boolean) fields.
pub const METADATA_HEADER: &str = "x-shardgate-metadata";
/// Cost of a buffered answer, in US dollars.
pub const COST_HEADER: &str = "x-shardgate-cost-usd";
/// On a refusal: the rule that refused, and the scope it counted in.
pub const RULE_HEADER: &str = "x-shardgate-limit-rule";
pub const SCOPE_HEADER: &str = "x-shardgate-limit-scope";

/// Most fields accepted in the metadata header.
const MAX_METADATA_FIELDS: usize = 32;
/// Presented keys whose digests a shard remembers.
const DIGEST_CACHE_MAX: usize = 4096;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Digests of recently presented keys, per shard: the HMAC is most of the cost of a key lookup
/// and a keep-alive client presents the same key on every request. Bounded; emptied when full
/// and whenever the config (and so perhaps the pepper) changes.
#[derive(Default)]
pub struct DigestCache {
    generation: u64,
    map: HashMap<Box<[u8]>, KeyDigest>,
}

impl DigestCache {
    fn digest(&mut self, cfg: &Snapshot, token: &str) -> KeyDigest {
        if self.generation != cfg.generation {
            self.map.clear();
            self.generation = cfg.generation;
        }
        if let Some(d) = self.map.get(token.as_bytes()) {
            return *d;
        }
        let d = cfg.policy.hasher().digest(token);
        if self.map.len() >= DIGEST_CACHE_MAX {
            self.map.clear();
        }
        self.map.insert(token.as_bytes().into(), d);
        d
    }
}

/// The credential a request presents: `Authorization: Bearer <key>` (OpenAI SDKs),
/// `x-api-key` (Anthropic SDKs) or `api-key` (Azure SDKs). `Err` for an `Authorization` header
/// with another scheme.
fn credential(head: &RequestHead) -> Result<Option<&str>, GatewayError> {
    if let Some(v) = head.header("authorization") {
        let v = std::str::from_utf8(v).map_err(|_| unauthorized(&AuthError::UnknownKey))?.trim();
        return match v.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
                Ok(Some(token.trim()))
            }
            _ => Err(GatewayError::new(ErrorKind::Unauthorized, "The Authorization header must be `Bearer <key>`.")
                .with_code("invalid_authorization_header")),
        };
    }
    for name in ["x-api-key", "api-key"] {
        if let Some(v) = head.header(name) {
            let v = std::str::from_utf8(v).map_err(|_| unauthorized(&AuthError::UnknownKey))?.trim();
            return Ok((!v.is_empty()).then_some(v));
        }
    }
    Ok(None)
}

fn unauthorized(e: &AuthError) -> GatewayError {
    GatewayError::new(ErrorKind::Unauthorized, e.message()).with_code(e.code())
}

/// A caller: a key's identity borrowed from the snapshot the request holds, or a token's,
/// shared with the shard's token cache.
pub enum Caller<'c> {
    Key(&'c Identity),
    Token(Rc<Identity>),
}

impl std::ops::Deref for Caller<'_> {
    type Target = Identity;

    fn deref(&self) -> &Identity {
        match self {
            Caller::Key(id) => id,
            Caller::Token(id) => id,
        }
    }
}

/// Header a token's bearer sends to act within one of their teams.
pub const TEAM_HEADER: &str = "x-shardgate-team";

/// Who is calling: a virtual key, or a bearer JWT from a configured issuer.
pub fn authenticate<'c>(shard: &Shard, cfg: &'c Snapshot, head: &RequestHead) -> Result<Caller<'c>, GatewayError> {
    let token = credential(head)?;
    let now = now_ms();
    if let Some(t) = token
        && !cfg.issuers.is_empty()
        && policy::jwt::looks_like_jwt(t)
    {
        let team = match head.header(TEAM_HEADER) {
            Some(v) => Some(std::str::from_utf8(v).map_err(|_| unauthorized(&AuthError::NotInTeam("?".into())))?),
            None => None,
        };
        return token_caller(shard, cfg, t, team, now).map(Caller::Token).map_err(|e| unauthorized(&e));
    }
    let digest = token.map(|t| shard.digests.borrow_mut().digest(cfg, t));
    let anonymous_ok = shard.process.anonymous_ok && cfg.issuers.is_empty();
    cfg.policy.authenticate_digest(digest.as_ref(), anonymous_ok, now).map(Caller::Key).map_err(|e| unauthorized(&e))
}

/// A verified token's caller, from the shard's cache when the same token (and team header) was
/// seen before: the signature check costs tens of microseconds for RSA.
fn token_caller(
    shard: &Shard,
    cfg: &Snapshot,
    token: &str,
    team: Option<&str>,
    now: u64,
) -> Result<Rc<Identity>, AuthError> {
    if let Some(id) = shard.tokens.borrow_mut().get(cfg.generation, token, team, now) {
        return Ok(id);
    }
    let verifiers = shard.process.tokens.load();
    let claims = verifiers.verify(token, now / 1000).map_err(|e| {
        if matches!(e, policy::jwt::JwtError::UnknownKey(_) | policy::jwt::JwtError::NoKeysYet) {
            shard.process.tokens.want_refetch();
        }
        AuthError::Token(e)
    })?;
    let id = Rc::new(cfg.policy.identity_for_claims(&claims, team)?);
    shard.tokens.borrow_mut().put(cfg.generation, token, team, id.clone());
    Ok(id)
}

/// Tokens verified recently, per shard, until they expire or the config changes.
///
/// Keyed by the token, then by the team header sent with it (almost always one), so a hit is
/// looked up by the borrowed token: nothing is copied on the request path.
#[derive(Default)]
pub struct TokenCache {
    generation: u64,
    map: HashMap<Box<str>, Vec<TeamEntry>>,
    len: usize,
}

/// The team header a token came with, and the identity verified for the pair.
type TeamEntry = (Option<Box<str>>, Rc<Identity>);

/// Tokens a shard remembers.
const TOKEN_CACHE_MAX: usize = 4096;

impl TokenCache {
    fn get(&mut self, generation: u64, token: &str, team: Option<&str>, now_ms: u64) -> Option<Rc<Identity>> {
        if self.generation != generation {
            self.clear(generation);
            return None;
        }
        let teams = self.map.get_mut(token)?;
        let i = teams.iter().position(|(t, _)| t.as_deref() == team)?;
        let fresh =
            teams.get(i).filter(|(_, id)| id.expires_at_ms.is_some_and(|t| now_ms < t)).map(|(_, id)| id.clone());
        if fresh.is_none() {
            teams.swap_remove(i);
            self.len -= 1;
            if teams.is_empty() {
                self.map.remove(token);
            }
        }
        fresh
    }

    fn put(&mut self, generation: u64, token: &str, team: Option<&str>, id: Rc<Identity>) {
        if self.generation != generation || self.len >= TOKEN_CACHE_MAX {
            self.clear(generation);
        }
        let teams = self.map.entry(token.into()).or_default();
        match teams.iter_mut().find(|(t, _)| t.as_deref() == team) {
            Some((_, known)) => *known = id,
            None => {
                teams.push((team.map(Box::from), id));
                self.len += 1;
            }
        }
    }

    fn clear(&mut self, generation: u64) {
        self.map.clear();
        self.len = 0;
        self.generation = generation;
    }
}

/// A refused model: 403 naming the rule.
pub fn forbidden(d: &Denied) -> GatewayError {
    GatewayError::new(ErrorKind::Forbidden, d.message.clone()).with_code("model_not_allowed").with_param("model")
}

/// The request's metadata header overlaid with the key's metadata (the key's fields win, so a
/// caller cannot talk its way out of a rule aimed at its key).
pub fn metadata(head: &RequestHead, id: &Identity) -> Result<Metadata, GatewayError> {
    let mut m = Metadata::new();
    if let Some(raw) = head.header(METADATA_HEADER) {
        let bad = |why: &str| {
            GatewayError::new(
                ErrorKind::InvalidField,
                format!("{METADATA_HEADER} must be a JSON object of strings: {why}"),
            )
        };
        let fields: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(raw).map_err(|e| bad(&e.to_string()))?;
        if fields.len() > MAX_METADATA_FIELDS {
            return Err(bad(&format!("at most {MAX_METADATA_FIELDS} fields")));
        }
        for (k, v) in &fields {
            match v {
                serde_json::Value::String(s) => m.set(k, s),
                serde_json::Value::Number(n) => m.set(k, &n.to_string()),
                serde_json::Value::Bool(b) => m.set(k, if *b { "true" } else { "false" }),
                _ => return Err(bad(&format!("field `{k}` is not a string, number or boolean"))),
            }
        }
    }
    for (k, v) in id.metadata.iter() {
        m.set(k, v);
    }
    Ok(m)
}

/// An admitted request's reservation. Settled with the real usage when the answer is done;
/// released if the call failed — or if the request ends any other way (dropped).
pub struct Held {
    shard: Rc<Shard>,
    admission: Option<Admission>,
    /// Where the spend goes in the ledger (when there is a store).
    ledger: Option<LedgerEntry>,
}

/// Who, on what model, with what metadata: the ledger's view of a request.
struct LedgerEntry {
    caller: crate::store::CallerId,
    model: Box<str>,
    metadata: Metadata,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.admission.is_some() { "Held(reserved)" } else { "Held(done)" })
    }
}

impl Held {
    /// Prices the request by the model that serves it (a router's fallback may differ from the
    /// model the reservation was priced with).
    pub fn reprice(&mut self, price: Option<policy::pricing::Price>) {
        if let Some(a) = self.admission.as_mut() {
            a.reprice(price);
        }
    }

    /// Settles with the provider's usage (the reservation stands when it reported none) and
    /// returns the cost in micro-dollars.
    pub fn settle(mut self, usage: Option<&Usage>) -> u64 {
        let Some(admission) = self.admission.take() else { return 0 };
        let tokens = match usage {
            Some(u) => Tokens { input: u.prompt_tokens, output: u.completion_tokens, cached_input: u.cached_tokens },
            None => admission.estimate_tokens(),
        };
        let now = now_ms();
        let settled = self.shard.governor.borrow_mut().settle(admission, tokens, now);
        self.shard.metrics.spend_micros.fetch_add(settled.cost_micros, std::sync::atomic::Ordering::Relaxed);
        if let Some(l) = self.ledger.take() {
            self.shard.tally.borrow_mut().record(l.caller, l.model, l.metadata, tokens, settled.cost_micros, now);
        }
        let cost = settled.cost_micros;
        for a in settled.alerts {
            self.shard.metrics.budget_alerts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if !self.shard.process.alerts.raise(a) {
                tracing::error!("budget alert queue full; alert dropped");
            }
        }
        cost
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(a) = self.admission.take() {
            match self.shard.governor.try_borrow_mut() {
                Ok(mut g) => g.release(a, now_ms()),
                // Only if a panic unwound out of the governor itself; its counters are suspect
                // anyway, and the window will forget this reservation.
                Err(_) => tracing::error!("reservation not released: the governor is busy"),
            }
        }
    }
}

/// What admission needs to know about a request.
pub struct Ask<'a> {
    pub identity: &'a Identity,
    /// The model as the client named it.
    pub model: &'a str,
    /// The model that will serve it (for its price).
    pub upstream_model: &'a str,
    pub metadata: &'a Metadata,
    pub body_len: usize,
    pub max_tokens: Option<u64>,
}

/// Checks every rate limit and budget that applies; on success the reservation is in
/// `ctx.held` and the tightest limits are in `ctx.headers`.
pub fn admit(shard: &Rc<Shard>, cfg: &Snapshot, ask: &Ask<'_>, ctx: &mut RequestCtx) -> Result<(), Box<Refusal>> {
    let policy = &cfg.policy;
    let estimate = Estimate::from_request(policy, ask.body_len, ask.max_tokens);
    let req = AdmitRequest {
        identity: ask.identity,
        model: ask.model,
        metadata: ask.metadata,
        estimate,
        price: policy.pricing.get(ask.upstream_model).copied(),
    };
    let now = now_ms();
    let admission = {
        let mut g = shard.governor.borrow_mut();
        // What the other shards counted since the last round, so the decision is fresh.
        shard.process.gossip.receive(shard.id, &mut g);
        g.admit(policy, &req, now)?
    };
    for note in &admission.audits {
        shard.metrics.audit_violations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(
            rule = %note.rule,
            scope = %note.scope,
            limit = %note.limit.describe(),
            max = note.limit.max,
            used = note.used,
            requested = note.requested,
            caller = %ask.identity.describe(),
            "audit-mode limit exceeded (request allowed)"
        );
    }
    for (name, value) in admission.headers.pairs() {
        ctx.headers.push((name, SmolStr::from(value)));
    }
    let ledger = shard.process.store.get().map(|_| LedgerEntry {
        caller: shard.tally.borrow_mut().caller(ask.identity),
        model: ask.model.into(),
        metadata: ask.metadata.clone(),
    });
    ctx.held = Some(Held { shard: shard.clone(), admission: Some(admission), ledger });
    Ok(())
}

/// Settles the request's reservation before its head is written (buffered answers, whose
/// usage is known by then) and adds the cost header. Upstream errors release instead.
pub fn settle_before_head(ctx: &mut RequestCtx) {
    let Some(held) = ctx.held.take() else { return };
    if ctx.upstream_status.is_some_and(|s| (200..300).contains(&s)) {
        let cost = held.settle(ctx.usage.as_ref());
        ctx.cost_micros = Some(cost);
        ctx.headers.push((COST_HEADER, SmolStr::from(format_usd(cost))));
    }
    // Otherwise `held` drops here: released.
}

/// Settles a stream that ended well, before its body is closed, and returns (when it cost
/// anything) the SSE comment that tells the client what it cost (`: x-shardgate-cost-usd: 0.000150`): a header can no
/// longer carry it, and SSE clients skip comment lines.
pub fn settle_stream(ctx: &mut RequestCtx) -> Option<Vec<u8>> {
    if !ctx.upstream_status.is_some_and(|s| (200..300).contains(&s)) || ctx.error.is_some() {
        return None;
    }
    let held = ctx.held.take()?;
    let cost = held.settle(ctx.usage.as_ref());
    ctx.cost_micros = Some(cost);
    // A free (or unpriced) model's stream ends with `[DONE]`, untouched.
    (cost > 0).then(|| format!(": {COST_HEADER}: {}\n\n", format_usd(cost)).into_bytes())
}

/// Settles (or releases) whatever is still held when a request ends (streams).
pub fn settle_at_end(ctx: &mut RequestCtx) {
    let Some(held) = ctx.held.take() else { return };
    let ok = ctx.upstream_status.is_some_and(|s| (200..300).contains(&s));
    // Once the answer's head went out the provider has worked: a stream the client abandoned,
    // or that broke upstream, still used what was generated until then (its reported usage,
    // else the reservation). Only a call that failed before the head is released.
    let answered = ctx.overhead.is_some();
    if ok && (ctx.error.is_none() || ctx.error == Some(ErrorKind::DownstreamClosed) || answered) {
        ctx.cost_micros = Some(held.settle(ctx.usage.as_ref()));
    }
}

/// Micro-dollars as dollars with six decimals (`0.000150`).
pub fn format_usd(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// Answers a refusal: 429, `retry-after`, the tightest `x-ratelimit-*`, the rule and scope.
pub async fn send_refusal<C: Conn>(resp: &mut Responder<'_, C>, ctx: &mut RequestCtx, r: &Refusal) {
    let kind = if r.kind == RefusalKind::Budget { ErrorKind::BudgetExceeded } else { ErrorKind::RateLimited };
    let err = GatewayError::new(kind, r.message()).with_type(r.error_type()).with_code(r.code());
    send_refusal_with(resp, ctx, r, &err.to_json()).await;
}

/// [`send_refusal`] with another error body (Anthropic's shape on `/v1/messages`).
pub async fn send_refusal_with<C: Conn>(resp: &mut Responder<'_, C>, ctx: &mut RequestCtx, r: &Refusal, body: &[u8]) {
    ctx.error = Some(if r.kind == RefusalKind::Budget { ErrorKind::BudgetExceeded } else { ErrorKind::RateLimited });
    let mut head = resp.start(429).header("content-type", "application/json");
    let mut secs = itoa::Buffer::new();
    if let Some(s) = r.retry_after_secs() {
        head = head.header("retry-after", secs.format(s));
    }
    for (n, v) in r.headers.pairs() {
        head = head.header(n, v);
    }
    let _ = head.header(RULE_HEADER, &*r.rule).header(SCOPE_HEADER, &r.scope).body(body).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> RequestHead {
        let raw = raw.replacen("HTTP/1.1\r\n", "HTTP/1.1\r\nhost: x\r\n", 1);
        RequestHead::parse(bytes::Bytes::from(raw), 32).unwrap()
    }

    #[test]
    fn credentials_from_three_headers() {
        assert_eq!(credential(&head("GET / HTTP/1.1\r\nAuthorization: Bearer  sk-1 \r\n\r\n")).unwrap(), Some("sk-1"));
        assert_eq!(credential(&head("GET / HTTP/1.1\r\nauthorization: bearer sk-2\r\n\r\n")).unwrap(), Some("sk-2"));
        assert_eq!(credential(&head("GET / HTTP/1.1\r\nx-api-key: sk-3\r\n\r\n")).unwrap(), Some("sk-3"));
        assert_eq!(credential(&head("GET / HTTP/1.1\r\napi-key: sk-4\r\n\r\n")).unwrap(), Some("sk-4"));
        assert_eq!(credential(&head("GET / HTTP/1.1\r\n\r\n")).unwrap(), None);
        let e = credential(&head("GET / HTTP/1.1\r\nAuthorization: Basic eDp5\r\n\r\n")).unwrap_err();
        assert_eq!(e.status(), 401);
    }

    #[test]
    fn metadata_header_and_key_overlay() {
        let id = Identity::anonymous();
        let m = metadata(
            &head("GET / HTTP/1.1\r\nx-shardgate-metadata: {\"tenant\":\"acme\",\"n\":3,\"b\":true}\r\n\r\n"),
            &id,
        )
        .unwrap();
        assert_eq!((m.get("tenant"), m.get("n"), m.get("b")), (Some("acme"), Some("3"), Some("true")));
        for bad in ["[1]", "{\"x\":{\"y\":1}}", "not json"] {
            let e =
                metadata(&head(&format!("GET / HTTP/1.1\r\nx-shardgate-metadata: {bad}\r\n\r\n")), &id).unwrap_err();
            assert_eq!(e.status(), 400, "{bad}");
        }
    }

    #[test]
    fn token_cache_keys_by_token_and_team_and_forgets_expired_ones() {
        let ident = |expires| Rc::new(Identity { expires_at_ms: Some(expires), ..Identity::anonymous() });
        let mut c = TokenCache::default();
        c.put(1, "jwt-a", None, ident(100));
        c.put(1, "jwt-a", Some("red"), ident(200));
        assert_eq!(c.get(1, "jwt-a", None, 50).and_then(|i| i.expires_at_ms), Some(100));
        assert_eq!(c.get(1, "jwt-a", Some("red"), 50).and_then(|i| i.expires_at_ms), Some(200));
        assert!(c.get(1, "jwt-a", Some("blue"), 50).is_none(), "another team header is another entry");
        assert!(c.get(1, "jwt-b", None, 50).is_none());
        // Expired: forgotten; the other team's entry stays.
        assert!(c.get(1, "jwt-a", None, 150).is_none());
        assert_eq!(c.len, 1);
        assert!(c.get(1, "jwt-a", Some("red"), 150).is_some());
        // Replaced, not duplicated.
        c.put(1, "jwt-a", Some("red"), ident(300));
        assert_eq!(c.len, 1);
        // A new config generation forgets everything.
        assert!(c.get(2, "jwt-a", Some("red"), 150).is_none());
        assert_eq!((c.len, c.map.len()), (0, 0));
        // Bounded.
        for i in 0..TOKEN_CACHE_MAX + 1 {
            c.put(2, &format!("t{i}"), None, ident(1000));
        }
        assert!(c.len <= TOKEN_CACHE_MAX);
    }

    #[test]
    fn usd_has_six_decimals() {
        assert_eq!(format_usd(0), "0.000000");
        assert_eq!(format_usd(150), "0.000150");
        assert_eq!(format_usd(12_345_678), "12.345678");
    }
}
