//! Admission on one shard: every matching rule must allow the request; if all do, its
//! requests, estimated tokens, estimated cost and a slot in flight are reserved; when the
//! response ends they are settled with the real usage, or released if the call failed.
//!
//! The [`Governor`] is shard-local state (no lock, no I/O). What it knows of the other shards
//! comes from gossip ([`Governor::take_delta`] / [`Governor::merge`]), so a limit can be
//! overshot by what the other shards admitted during the last gossip interval — the documented
//! bound of (shards − 1) × interval × admission rate.

use std::collections::HashSet;
use std::sync::Arc;

use foldhash::fast::RandomState;

use crate::clock::{Period, format_reset};
use crate::compiled::Policy;
use crate::counters::{CounterKey, CounterStore, Delta, Handle, Measure, ShardId};
use crate::identity::Identity;
use crate::pricing::{Price, Tokens, cost_micros};
use crate::rules::{Alerts, Limit, Metadata, Per, RuleKind, Span};
use crate::spec::Mode;

/// Tokens a request is expected to use, reserved at admission.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Estimate {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Estimate {
    /// The prompt estimated from the body size, the completion from `max_tokens` (or the
    /// configured default).
    pub fn from_request(policy: &Policy, body_len: usize, max_tokens: Option<u64>) -> Estimate {
        let s = policy.settings;
        Estimate {
            input_tokens: (body_len as u64).div_ceil(s.bytes_per_token.max(1)),
            output_tokens: max_tokens.unwrap_or(s.default_max_tokens),
        }
    }
}

/// What admission looks at.
#[derive(Debug, Clone, Copy)]
pub struct AdmitRequest<'a> {
    pub identity: &'a Identity,
    /// The model as the client named it.
    pub model: &'a str,
    /// The request's metadata overlaid with the key's.
    pub metadata: &'a Metadata,
    pub estimate: Estimate,
    /// The price of the model that will serve it (`None`: unpriced, costs nothing).
    pub price: Option<Price>,
}

/// The tightest limit of one class, for `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tightest {
    pub limit: u64,
    pub remaining: u64,
    /// Until the window's oldest count leaves it.
    pub reset_ms: u64,
}

/// OpenAI-style rate-limit headers: the tightest request limit and the tightest token limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateHeaders {
    pub requests: Option<Tightest>,
    pub tokens: Option<Tightest>,
}

impl RateHeaders {
    /// `(name, value)` pairs, e.g. `x-ratelimit-remaining-tokens: 9000`.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(t) = self.requests {
            out.push(("x-ratelimit-limit-requests", t.limit.to_string()));
            out.push(("x-ratelimit-remaining-requests", t.remaining.to_string()));
            out.push(("x-ratelimit-reset-requests", format_reset(t.reset_ms)));
        }
        if let Some(t) = self.tokens {
            out.push(("x-ratelimit-limit-tokens", t.limit.to_string()));
            out.push(("x-ratelimit-remaining-tokens", t.remaining.to_string()));
            out.push(("x-ratelimit-reset-tokens", format_reset(t.reset_ms)));
        }
        out
    }
}

/// An audit-mode rule that would have refused (logged; the request goes on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditNote {
    pub rule: Arc<str>,
    pub scope: String,
    pub limit: Limit,
    pub used: u64,
    pub requested: u64,
}

/// Which kind of limit refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    Requests,
    Tokens,
    Concurrency,
    Budget,
}

/// A refused request (429): which rule, which scope, and when to come back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: RefusalKind,
    pub rule: Arc<str>,
    /// `user:alice`, `team:search`, `global`, ...
    pub scope: String,
    pub limit: Limit,
    pub used: u64,
    pub requested: u64,
    /// `None` when waiting cannot help (a request larger than the limit, a lifetime budget).
    pub retry_after_ms: Option<u64>,
    pub headers: RateHeaders,
}

/// Dollars for people: cents from a dollar up, else as many decimals as the amount needs (a
/// $0.000047 request must not read as $0.00).
fn usd(micros: u64) -> String {
    if micros >= 1_000_000 || micros.is_multiple_of(10_000) {
        return format!("${:.2}", micros as f64 / 1e6);
    }
    let text = format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000);
    format!("${}", text.trim_end_matches('0'))
}

impl Refusal {
    /// OpenAI's error `type`: `requests` or `tokens` for rate limits, `insufficient_quota` for budgets.
    pub fn error_type(&self) -> &'static str {
        match self.kind {
            RefusalKind::Requests | RefusalKind::Concurrency => "requests",
            RefusalKind::Tokens => "tokens",
            RefusalKind::Budget => "insufficient_quota",
        }
    }

    /// OpenAI's error `code`.
    pub fn code(&self) -> &'static str {
        match self.kind {
            RefusalKind::Budget => "budget_exceeded",
            _ => "rate_limit_exceeded",
        }
    }

    /// `retry-after` in whole seconds (rounded up), if waiting helps.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after_ms.map(|ms| ms.div_ceil(1000).max(1))
    }

    pub fn message(&self) -> String {
        let what = self.limit.describe();
        let retry = match self.retry_after_ms {
            Some(ms) => format!(" Please try again in {}.", format_reset(ms)),
            None => String::new(),
        };
        match self.kind {
            RefusalKind::Budget => format!(
                "Budget `{}` ({}) is exhausted for {what}: limit {}, spent {}, this request may cost up to {}.{retry}",
                self.rule,
                self.scope,
                usd(self.limit.max),
                usd(self.used),
                usd(self.requested)
            ),
            RefusalKind::Concurrency => format!(
                "Rate limit reached by rule `{}` ({}) on {what}: limit {}, in flight {}.{retry}",
                self.rule, self.scope, self.limit.max, self.used
            ),
            _ if self.requested > self.limit.max => format!(
                "Request too large for rule `{}` ({}) on {what}: limit {}, requested {}. Lower max_tokens or the prompt.",
                self.rule, self.scope, self.limit.max, self.requested
            ),
            _ => format!(
                "Rate limit reached by rule `{}` ({}) on {what}: limit {}, used {}, requested {}.{retry}",
                self.rule, self.scope, self.limit.max, self.used, self.requested
            ),
        }
    }
}

/// A budget threshold crossed (deliver once per threshold per period: the shards may each see
/// the crossing, so the deliverer de-duplicates across them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub rule: Arc<str>,
    pub entity: Arc<str>,
    pub period: Period,
    /// The period's first day (`YYYY-MM-DD`, or `lifetime`).
    pub period_start: String,
    pub threshold: u8,
    pub limit_micros: u64,
    pub spent_micros: u64,
    pub webhook: Option<Arc<str>>,
}

#[derive(Debug)]
struct Hold {
    /// Where the counter is (the key finds it again if it was evicted meanwhile).
    handle: Handle,
    key: CounterKey,
    bucket: u64,
    amount: i64,
    limit: Limit,
    alerts: Option<Arc<Alerts>>,
}

/// What an admitted request holds until it is settled or released. Dropping it without either
/// leaks its reservation until its windows pass (and its slot in flight for good), so the engine
/// guards it.
#[must_use = "an admission must be settled or released"]
#[derive(Debug)]
pub struct Admission {
    holds: Vec<Hold>,
    price: Option<Price>,
    estimate: Estimate,
    /// The cost reserved (estimated), micro-dollars.
    pub reserved_cost_micros: u64,
    pub headers: RateHeaders,
    pub audits: Vec<AuditNote>,
}

impl Admission {
    /// Prices the request by the model that serves it in the end (a router's fallback may pick
    /// another model than the one the reservation was priced with). The amounts reserved stand:
    /// settling replaces them with the real cost at this price.
    pub fn reprice(&mut self, price: Option<Price>) {
        self.price = price;
    }

    /// The tokens reserved, as usage (what to settle with when the provider reports none).
    pub fn estimate_tokens(&self) -> Tokens {
        Tokens { input: self.estimate.input_tokens, output: self.estimate.output_tokens, cached_input: 0 }
    }
}

/// What settling found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settled {
    /// The request's cost from its real usage, micro-dollars.
    pub cost_micros: u64,
    pub alerts: Vec<Alert>,
}

/// An alert raised: (rule, entity, period, period index, threshold).
type AlertId = (Arc<str>, Arc<str>, Period, u64, u8);

/// One shard's governance state.
pub struct Governor {
    store: CounterStore,
    /// Shard-local copies of rule ids and entity names, so counter keys never share a reference
    /// count with another shard.
    names: HashSet<Arc<str>, RandomState>,
    global: Arc<str>,
    /// Alerts this shard already raised: (rule, entity, period, period index, threshold).
    fired: HashSet<AlertId, RandomState>,
}

fn entity_of<'a>(per: &Per, id: &'a Identity, model: &'a str, metadata: &'a Metadata) -> Option<&'a str> {
    match per {
        Per::Global => Some("*"),
        Per::Key => id.key.as_deref(),
        Per::User => id.user.as_deref(),
        Per::Team => id.team.as_deref(),
        Per::Application => id.application.as_deref(),
        Per::Environment => id.environment.as_deref(),
        Per::Model => Some(model),
        Per::Metadata(f) => metadata.get(f),
    }
}

fn tokens_of(measure: Measure, input: u64, output: u64) -> u64 {
    match measure {
        Measure::InputTokens => input,
        Measure::OutputTokens => output,
        Measure::TotalTokens => input.saturating_add(output),
        _ => 0,
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Governor {
    pub fn new(shard: ShardId, shards: usize) -> Governor {
        Governor::with_buckets(shard, shards, crate::counters::DEFAULT_BUCKETS)
    }

    /// A governor whose rate-limit windows have `buckets` sub-buckets (see
    /// [`CounterStore::with_buckets`]).
    pub fn with_buckets(shard: ShardId, shards: usize, buckets: usize) -> Governor {
        Governor {
            store: CounterStore::with_buckets(shard, shards, buckets),
            names: HashSet::default(),
            global: Arc::from("*"),
            fired: HashSet::default(),
        }
    }

    fn intern(&mut self, s: &str) -> Arc<str> {
        if s == "*" {
            return self.global.clone();
        }
        if let Some(a) = self.names.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.names.insert(a.clone());
        a
    }

    /// Checks every rule that applies to `req`; reserves on all of them if all allow.
    pub fn admit(&mut self, policy: &Policy, req: &AdmitRequest<'_>, now_ms: u64) -> Result<Admission, Box<Refusal>> {
        let est = req.estimate;
        let reserved_cost = req.price.map_or(0, |p| {
            cost_micros(&p, Tokens { input: est.input_tokens, output: est.output_tokens, cached_input: 0 })
        });
        let mut holds: Vec<Hold> = Vec::new();
        let mut audits = Vec::new();
        let mut refusal: Option<Refusal> = None;
        // The tightest enforced window per class: (remaining, limit, hold index).
        let mut tight_requests: Option<(u64, u64, usize)> = None;
        let mut tight_tokens: Option<(u64, u64, usize)> = None;
        for &i in req.identity.candidates.iter() {
            let Some(rule) = policy.rules.get(i as usize) else { continue };
            if !rule.when.matches_request(req.model, req.metadata) {
                continue;
            }
            if let Some(ex) = &rule.exempt
                && ex.matches(req.identity, req.model, req.metadata)
            {
                continue;
            }
            let Some(entity_name) = entity_of(&rule.per, req.identity, req.model, req.metadata) else { continue };
            let limits = rule.limits_for(entity_name);
            let owner = self.intern(&rule.id);
            let entity = self.intern(entity_name);
            for limit in limits.iter().copied() {
                let (window_ms, period) = match limit.span {
                    Span::Window(ms) => (ms, 0),
                    Span::Period(p) => (0, p.index(now_ms)),
                    Span::InFlight => (0, 0),
                };
                let key = CounterKey {
                    owner: owner.clone(),
                    entity: entity.clone(),
                    measure: limit.measure,
                    window_ms,
                    period,
                };
                let amount = match limit.measure {
                    Measure::Requests | Measure::Concurrent => 1,
                    Measure::SpendMicros => reserved_cost,
                    m => tokens_of(m, est.input_tokens, est.output_tokens),
                };
                let handle = self.store.handle(&key);
                let used = u64::try_from(self.store.total_at(handle, now_ms)).unwrap_or(0);
                let over = used.saturating_add(amount) > limit.max;
                if over {
                    let scope = match rule.per {
                        Per::Global => "global".to_string(),
                        _ => format!("{}:{entity_name}", rule.per.label()),
                    };
                    match rule.mode {
                        Mode::Audit => {
                            audits.push(AuditNote { rule: rule.id.clone(), scope, limit, used, requested: amount })
                        }
                        Mode::Enforce => {
                            let kind = match (rule.kind, limit.measure) {
                                (RuleKind::Budget, _) => RefusalKind::Budget,
                                (_, Measure::Concurrent) => RefusalKind::Concurrency,
                                (_, Measure::Requests) => RefusalKind::Requests,
                                _ => RefusalKind::Tokens,
                            };
                            let retry = match limit.span {
                                // Larger than the limit itself: waiting cannot help.
                                _ if amount > limit.max => None,
                                Span::Period(p) => p.end_ms(now_ms).map(|e| e.saturating_sub(now_ms)),
                                Span::InFlight => Some(1000),
                                Span::Window(_) => Some(self.store.next_release_ms(handle, now_ms).max(1)),
                            };
                            // Report the refusal that takes longest to clear: retrying sooner cannot succeed.
                            let worse = match &refusal {
                                None => true,
                                Some(r) => retry.unwrap_or(u64::MAX) > r.retry_after_ms.unwrap_or(u64::MAX),
                            };
                            if worse {
                                refusal = Some(Refusal {
                                    kind,
                                    rule: rule.id.clone(),
                                    scope,
                                    limit,
                                    used,
                                    requested: amount,
                                    retry_after_ms: retry,
                                    headers: RateHeaders::default(),
                                });
                            }
                        }
                    }
                }
                if rule.mode == Mode::Enforce && matches!(limit.span, Span::Window(_)) {
                    let remaining = limit.max.saturating_sub(used.saturating_add(amount));
                    let slot = if limit.measure == Measure::Requests { &mut tight_requests } else { &mut tight_tokens };
                    if slot.is_none_or(|(r, _, _)| remaining < r) {
                        *slot = Some((remaining, limit.max, holds.len()));
                    }
                }
                let alerts = if limit.measure == Measure::SpendMicros { rule.alerts.clone() } else { None };
                holds.push(Hold { handle, key, bucket: 0, amount: to_i64(amount), limit, alerts });
            }
        }
        let tightest = |store: &CounterStore, holds: &[Hold], t: Option<(u64, u64, usize)>| {
            t.and_then(|(remaining, limit, h)| {
                holds.get(h).map(|h| Tightest { limit, remaining, reset_ms: store.next_release_ms(h.handle, now_ms) })
            })
        };
        if let Some(mut r) = refusal {
            r.headers = RateHeaders {
                requests: tightest(&self.store, &holds, tight_requests),
                tokens: tightest(&self.store, &holds, tight_tokens),
            };
            return Err(Box::new(r));
        }
        for h in holds.iter_mut() {
            h.bucket = self.store.add_at(h.handle, now_ms, h.amount);
        }
        let headers = RateHeaders {
            requests: tightest(&self.store, &holds, tight_requests),
            tokens: tightest(&self.store, &holds, tight_tokens),
        };
        Ok(Admission { holds, price: req.price, estimate: est, reserved_cost_micros: reserved_cost, headers, audits })
    }

    /// The handle of a hold's counter, found again by key if it was evicted meanwhile.
    fn live_handle(&mut self, h: &Hold) -> Handle {
        if self.store.is_live(h.handle) { h.handle } else { self.store.handle(&h.key) }
    }

    /// Replaces the reservation with the real usage; returns the cost and any budget alerts.
    pub fn settle(&mut self, admission: Admission, usage: Tokens, now_ms: u64) -> Settled {
        let cost = admission.price.map_or(0, |p| cost_micros(&p, usage));
        let mut alerts = Vec::new();
        for h in admission.holds {
            match h.key.measure {
                Measure::Requests => {}
                Measure::Concurrent => self.end_in_flight(&h, now_ms),
                m => {
                    let actual = match m {
                        Measure::SpendMicros => to_i64(cost),
                        m => to_i64(tokens_of(m, usage.input, usage.output)),
                    };
                    if !self.store.adjust_at(h.handle, h.bucket, now_ms, actual - h.amount) {
                        // The reservation's bucket left the window (a long stream) or its counter
                        // was evicted: count the usage now instead.
                        let handle = self.live_handle(&h);
                        self.store.add_at(handle, now_ms, actual);
                    }
                    if let Some(a) = &h.alerts {
                        let handle = self.live_handle(&h);
                        let after = self.store.total_at(handle, now_ms);
                        self.crossed(&h, a, after, now_ms, &mut alerts);
                    }
                }
            }
        }
        Settled { cost_micros: cost, alerts }
    }

    /// The request no longer counts as in flight.
    fn end_in_flight(&mut self, h: &Hold, now_ms: u64) {
        let handle = self.live_handle(h);
        self.store.add_at(handle, now_ms, -1);
    }

    /// Gives back what a failed request reserved (its request count stays: it was made).
    pub fn release(&mut self, admission: Admission, now_ms: u64) {
        for h in admission.holds {
            match h.key.measure {
                Measure::Requests => {}
                Measure::Concurrent => self.end_in_flight(&h, now_ms),
                _ => {
                    self.store.adjust_at(h.handle, h.bucket, now_ms, -h.amount);
                }
            }
        }
    }

    /// Raises every threshold the counter has reached and this shard has not raised yet in
    /// this period. Reached, not crossed by this request: spend merged from other shards moves
    /// the total between settles, and a threshold it jumps over must still be raised. (Shards
    /// may each raise the same one; the engine delivers it once.)
    fn crossed(&mut self, h: &Hold, alerts: &Alerts, after: i64, now_ms: u64, out: &mut Vec<Alert>) {
        let Span::Period(period) = h.limit.span else { return };
        let max = u128::from(h.limit.max);
        if max == 0 {
            return;
        }
        let pct = |v: i64| u128::try_from(v.max(0)).unwrap_or(0) * 100;
        for &t in alerts.at.iter() {
            let line = u128::from(t) * max;
            if pct(after) >= line {
                let id = (h.key.owner.clone(), h.key.entity.clone(), period, h.key.period, t);
                if self.fired.insert(id) {
                    out.push(Alert {
                        rule: h.key.owner.clone(),
                        entity: h.key.entity.clone(),
                        period,
                        period_start: period.start_date(now_ms),
                        threshold: t,
                        limit_micros: h.limit.max,
                        spent_micros: u64::try_from(after).unwrap_or(0),
                        webhook: alerts.webhook.clone(),
                    });
                }
            }
        }
    }

    /// Counts spend recorded before a restart (the ledger) into the budgets it falls under,
    /// as if settled now: only periods still running at `now_ms` matter. `who` is the caller
    /// as the ledger recorded it (see [`Policy::recorded_caller`]). Alerts are not raised
    /// again for thresholds this spend had crossed before.
    #[allow(clippy::too_many_arguments)]
    pub fn restore_spend(
        &mut self,
        policy: &Policy,
        who: &Identity,
        model: &str,
        metadata: &Metadata,
        cost_micros: u64,
        at_ms: u64,
        now_ms: u64,
    ) {
        for &i in who.candidates.iter() {
            let Some(rule) = policy.rules.get(i as usize) else { continue };
            if rule.kind != RuleKind::Budget || !rule.when.matches_request(model, metadata) {
                continue;
            }
            if rule.exempt.as_ref().is_some_and(|ex| ex.matches(who, model, metadata)) {
                continue;
            }
            let Some(entity_name) = entity_of(&rule.per, who, model, metadata) else { continue };
            let limits = rule.limits_for(entity_name);
            let owner = self.intern(&rule.id);
            let entity = self.intern(entity_name);
            for limit in limits.iter() {
                let Span::Period(p) = limit.span else { continue };
                if limit.measure != Measure::SpendMicros || p.index(at_ms) != p.index(now_ms) {
                    continue;
                }
                let key = CounterKey {
                    owner: owner.clone(),
                    entity: entity.clone(),
                    measure: limit.measure,
                    window_ms: 0,
                    period: p.index(now_ms),
                };
                self.store.add(&key, now_ms, to_i64(cost_micros));
            }
        }
    }

    /// This shard's changes since the last round (send to every other shard).
    pub fn take_delta(&mut self) -> Option<Delta> {
        self.store.take_delta()
    }

    /// A round that could not reach every shard: its counters go out again next round.
    pub fn requeue(&mut self, delta: &Delta) {
        self.store.requeue(delta);
    }

    pub fn merge(&mut self, delta: &Delta) {
        self.store.merge(delta);
    }

    /// Forgets idle counters and names no counter uses any more.
    pub fn evict(&mut self, now_ms: u64, idle_ms: u64) {
        self.store.evict(now_ms, idle_ms);
        self.names.retain(|n| Arc::strong_count(n) > 1);
        // What was raised in a period that is over can never be raised again.
        self.fired.retain(|(_, _, period, index, _)| *index >= period.index(now_ms));
    }

    /// The current total of a counter as this shard sees it (tests, admin reads).
    pub fn total(&self, key: &CounterKey, now_ms: u64) -> i64 {
        self.store.total(key, now_ms)
    }

    pub fn counters(&self) -> usize {
        self.store.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Settings;
    use crate::keys::KeyHasher;
    use crate::pricing::PriceTable;
    use crate::spec::GovernanceSpec;

    const T0: u64 = 1_800_000_000_000; // 2027-01-15T08:00:00Z

    fn policy(yaml: &str) -> Policy {
        let spec: GovernanceSpec = serde_saphyr::from_str(yaml).unwrap();
        Policy::compile(&spec, KeyHasher::new(b"pepper"), PriceTable::shipped(), Settings::default()).unwrap()
    }

    const PEOPLE: &str = "
teams: {search: {}, ads: {}}
users:
  alice: {teams: [search]}
  bob: {teams: [search]}
  carol: {teams: [ads]}
keys:
  - {name: a, secret: sk-sg-aaaaaaaaaaaaaaaa, user: alice, metadata: {tier: free}}
  - {name: b, secret: sk-sg-bbbbbbbbbbbbbbbb, user: bob}
  - {name: c, secret: sk-sg-cccccccccccccccc, user: carol}
";

    fn who<'p>(p: &'p Policy, secret: &str) -> &'p Identity {
        p.authenticate(Some(secret), false, T0).unwrap()
    }

    fn req<'a>(id: &'a Identity, model: &'a str, metadata: &'a Metadata, input: u64, output: u64) -> AdmitRequest<'a> {
        AdmitRequest {
            identity: id,
            model,
            metadata,
            estimate: Estimate { input_tokens: input, output_tokens: output },
            price: None,
        }
    }

    fn meta(id: &Identity) -> Metadata {
        id.metadata.clone()
    }

    #[test]
    fn requests_per_minute_refuse_then_slide() {
        let p = policy(&format!("{PEOPLE}rate_limits: [{{id: rpm, per: user, limits: {{requests_per_minute: 3}}}}]"));
        let a = who(&p, "sk-sg-aaaaaaaaaaaaaaaa");
        let m = meta(a);
        let mut g = Governor::new(0, 1);
        for i in 0..3 {
            let adm = g.admit(&p, &req(a, "gpt-4o", &m, 10, 10), T0 + i).unwrap();
            let h = adm.headers.requests.unwrap();
            assert_eq!((h.limit, h.remaining), (3, 2 - i));
            g.settle(adm, Tokens::default(), T0 + i);
        }
        let r = g.admit(&p, &req(a, "gpt-4o", &m, 10, 10), T0 + 5).unwrap_err();
        assert_eq!(r.kind, RefusalKind::Requests);
        assert_eq!((&*r.rule, r.scope.as_str()), ("rpm", "user:alice"));
        assert_eq!((r.error_type(), r.code()), ("requests", "rate_limit_exceeded"));
        let retry = r.retry_after_ms.unwrap();
        assert!(retry > 0 && retry <= 60_000, "{retry}");
        assert!(r.message().contains("requests per minute"), "{}", r.message());
        assert_eq!(r.headers.requests.unwrap().remaining, 0);
        // Bob has his own bucket.
        let b = who(&p, "sk-sg-bbbbbbbbbbbbbbbb");
        assert!(g.admit(&p, &req(b, "gpt-4o", &Metadata::new(), 1, 1), T0 + 5).is_ok());
        // Once the window has passed, alice may go again.
        assert!(g.admit(&p, &req(a, "gpt-4o", &m, 10, 10), T0 + 5 + retry).is_ok());
    }

    #[test]
    fn tokens_are_reserved_then_settled_or_released() {
        let p = policy(&format!("{PEOPLE}rate_limits: [{{id: tpm, per: team, limits: {{tokens_per_minute: 1000}}}}]"));
        let a = who(&p, "sk-sg-aaaaaaaaaaaaaaaa");
        let b = who(&p, "sk-sg-bbbbbbbbbbbbbbbb");
        let (ma, mb) = (meta(a), meta(b));
        let mut g = Governor::new(0, 1);
        let first = g.admit(&p, &req(a, "m", &ma, 100, 500), T0).unwrap();
        assert_eq!(first.headers.tokens.unwrap().remaining, 400);
        // Same team: 600 more do not fit while 600 are reserved.
        let r = g.admit(&p, &req(b, "m", &mb, 100, 500), T0 + 1).unwrap_err();
        assert_eq!((r.kind, r.used, r.requested), (RefusalKind::Tokens, 600, 600));
        assert_eq!(r.error_type(), "tokens");
        // The first used far less than it reserved.
        g.settle(first, Tokens { input: 50, output: 50, cached_input: 0 }, T0 + 2);
        let second = g.admit(&p, &req(b, "m", &mb, 100, 500), T0 + 3).unwrap();
        assert_eq!(second.headers.tokens.unwrap().remaining, 300);
        // A failed call gives its reservation back.
        g.release(second, T0 + 4);
        let third = g.admit(&p, &req(b, "m", &mb, 400, 500), T0 + 5).unwrap();
        assert_eq!(third.headers.tokens.unwrap().remaining, 0);
        // Larger than the limit itself: no point retrying.
        let huge = g.admit(&p, &req(b, "m", &mb, 10, 5000), T0 + 6).unwrap_err();
        assert_eq!(huge.retry_after_ms, None);
        assert!(huge.message().contains("too large"), "{}", huge.message());
    }

    #[test]
    fn token_counts_input_output_or_total() {
        for (count, input, output, expect_remaining) in
            [("input", 30, 50, 70), ("output", 30, 50, 50), ("total", 30, 50, 20)]
        {
            let p = policy(&format!(
                "{PEOPLE}rate_limits: [{{id: t, count: {count}, limits: {{tokens_per_minute: 100}}}}]"
            ));
            let a = who(&p, "sk-sg-aaaaaaaaaaaaaaaa");
            let mut g = Governor::new(0, 1);
            let adm = g.admit(&p, &req(a, "m", &meta(a), input, output), T0).unwrap();
            assert_eq!(adm.headers.tokens.unwrap().remaining, expect_remaining, "{count}");
            g.release(adm, T0);
        }
    }

    #[test]
    fn concurrency_is_held_until_the_end() {
        let p = policy(&format!("{PEOPLE}rate_limits: [{{id: inflight, per: key, limits: {{concurrent: 2}}}}]"));
        let a = who(&p, "sk-sg-aaaaaaaaaaaaaaaa");
        let m = meta(a);
        let mut g = Governor::new(0, 1);
        let one = g.admit(&p, &req(a, "m", &m, 1, 1), T0).unwrap();
        let two = g.admit(&p, &req(a, "m", &m, 1, 1), T0).unwrap();
        let r = g.admit(&p, &req(a, "m", &m, 1, 1), T0).unwrap_err();
        assert_eq!((r.kind, r.retry_after_secs()), (RefusalKind::Concurrency, Some(1)));
        assert!(r.message().contains("in flight 2"), "{}", r.message());
        g.settle(one, Tokens::default(), T0);
        let three = g.admit(&p, &req(a, "m", &m, 1, 1), T0).unwrap();
        g.release(two, T0);
        g.release(three, T0);
        let key = CounterKey {
            owner: "inflight".into(),
            entity: "a".into(),
            measure: Measure::Concurrent,
            window_ms: 0,
            period: 0,
        };
        assert_eq!(g.total(&key, T0), 0);
    }

    #[test]
    fn every_matching_rule_must_allow_and_headers_show_the_tightest() {
        let p = policy(&format!(
            "{PEOPLE}rate_limits:
  - {{id: wide, limits: {{requests_per_minute: 100, tokens_per_minute: 10000}}}}
  - {{id: narrow, per: user, when: {{models: ['gpt-4o*']}}, limits: {{requests_per_minute: 2, tokens_per_hour: 300}}}}
  - {{id: other-team, when: {{teams: [ads]}}, limits: {{requests_per_minute: 0}}}}"
        ));
        let a = who(&p, "sk-sg-aaaaaaaaaaaaaaaa");
        let m = meta(a);
        let mut g = Governor::new(0, 1);
        let adm = g.admit(&p, &req(a, "gpt-4o-mini", &m, 50, 50), T0).unwrap();
        assert_eq!(adm.headers.requests.unwrap(), Tightest { limit: 2, remaining: 1, reset_ms: 60_000 });
        assert_eq!(adm.headers.tokens.unwrap().limit, 300);
        assert_eq!(adm.headers.tokens.unwrap().remaining, 200);
        assert_eq!(adm.headers.tokens.unwrap().reset_ms, 3_600_000);
        g.settle(adm, Tokens { input: 50, output: 50, cached_input: 0 }, T0);
        g.admit(&p, &req(a, "gpt-4o-mini", &m, 1, 1), T0).unwrap().headers.requests.unwrap();
        assert_eq!(&*g.admit(&p, &req(a, "gpt-4o", &m, 1, 1), T0).unwrap_err().rule, "narrow");
        // Other models only meet the wide rule.
        assert_eq!(g.admit(&p, &req(a, "claude-3", &m, 1, 1), T0).unwrap().headers.requests.unwrap().limit, 100);
        // A zero limit refuses everything it matches, and only that.
        let c = who(&p, "sk-sg-cccccccccccccccc");
        assert_eq!(&*g.admit(&p, &req(c, "claude-3", &Metadata::new(), 1, 1), T0).unwrap_err().rule, "other-team");
    }

    #[test]
    fn exemptions_overrides_and_metadata() {
        let p = policy(&format!(
            "{PEOPLE}rate_limits:
  - {{id: r, per: user, limits: {{requests_per_minute: 1}}, exempt: {{users: [bob]}}, overrides: {{carol: {{requests_per_minute: 3}}}}}}
  - {{id: tenants, per: metadata.tenant, when: {{metadata: {{tier: free}}}}, limits: {{requests_per_minute: 1}}}}"
        ));
        let mut g = Governor::new(0, 1);
        let b = who(&p, "sk-sg-bbbbbbbbbbbbbbbb");
        for _ in 0..5 {
            let _ = g.admit(&p, &req(b, "m", &Metadata::new(), 1, 1), T0).unwrap();
        }
        let c = who(&p, "sk-sg-cccccccccccccccc");
        for _ in 0..3 {
            let _ = g.admit(&p, &req(c, "m", &Metadata::new(), 1, 1), T0).unwrap();
        }
        assert!(g.admit(&p, &req(c, "m", &Metadata::new(), 1, 1), T0).is_err());
    }

    #[test]
    fn per_metadata_field_buckets() {
        let p = policy(&format!(
            "{PEOPLE}rate_limits: [{{id: tenants, per: metadata.tenant, when: {{metadata: {{tier: free}}}}, limits: {{requests_per_minute: 1}}}}]"
        ));
        let mut g = Governor::new(0, 1);
        // Alice's key carries tier=free; the tenant comes from the request.
        let a = who(&p, "sk-sg-aaaaaaaaaaaaaaaa");
        let with_tenant = |t: &str| {
            let mut m = Metadata::new();
            m.set("tenant", t);
            for (k, v) in a.metadata.iter() {
                m.set(k, v);
            }
            m
        };
        let (acme, globex) = (with_tenant("acme"), with_tenant("globex"));
        let _ = g.admit(&p, &req(a, "m", &acme, 1, 1), T0).unwrap();
        let r = g.admit(&p, &req(a, "m", &acme, 1, 1), T0).unwrap_err();
        assert_eq!(r.scope, "tenant:acme");
        let _ = g.admit(&p, &req(a, "m", &globex, 1, 1), T0).unwrap();
        // Without a tenant there is no bucket to count in; without tier=free the rule does not match.
        let _ = g.admit(&p, &req(a, "m", &a.metadata, 1, 1), T0).unwrap();
        let b = who(&p, "sk-sg-bbbbbbbbbbbbbbbb");
        let mut bm = Metadata::new();
        bm.set("tenant", "acme");
        let _ = g.admit(&p, &req(b, "m", &bm, 1, 1), T0).unwrap();
    }

    #[test]
    fn audit_mode_counts_and_notes_but_never_refuses() {
        let p =
            policy(&format!("{PEOPLE}rate_limits: [{{id: watch, mode: audit, limits: {{requests_per_minute: 1}}}}]"));
        let a = who(&p, "sk-sg-aaaaaaaaaaaaaaaa");
        let mut g = Governor::new(0, 1);
        let first = g.admit(&p, &req(a, "m", &meta(a), 1, 1), T0).unwrap();
        assert!(first.audits.is_empty());
        assert_eq!(first.headers, RateHeaders::default(), "audit rules do not set headers");
        let second = g.admit(&p, &req(a, "m", &meta(a), 1, 1), T0).unwrap();
        assert_eq!(second.audits.len(), 1);
        assert_eq!((&*second.audits[0].rule, second.audits[0].used), ("watch", 1));
    }

    #[test]
    fn a_repriced_admission_settles_at_the_serving_models_price() {
        let p = policy(&format!("{PEOPLE}budgets: [{{id: monthly, per: team, limits: {{usd_per_month: 10.0}}}}]"));
        let a = who(&p, "sk-sg-aaaaaaaaaaaaaaaa");
        let m = meta(a);
        let first = Price { input_per_mtok: 1.0, output_per_mtok: 4.0, cached_input_per_mtok: None, per_request: 0.0 };
        let served =
            Price { input_per_mtok: 3.0, output_per_mtok: 15.0, cached_input_per_mtok: None, per_request: 0.0 };
        let mut g = Governor::new(0, 1);
        let mut adm = g.admit(&p, &AdmitRequest { price: Some(first), ..req(a, "gpt-x", &m, 100_000, 0) }, T0).unwrap();
        adm.reprice(Some(served));
        let s = g.settle(adm, Tokens { input: 100_000, output: 10_000, cached_input: 0 }, T0);
        // 0.1M in at $3 + 0.01M out at $15.
        assert_eq!(s.cost_micros, 450_000);
        // The budget counts what was settled, not what was reserved.
        let again = g.admit(&p, &AdmitRequest { price: Some(served), ..req(a, "gpt-x", &m, 0, 0) }, T0).unwrap();
        assert_eq!(g.settle(again, Tokens::default(), T0).cost_micros, 0);
    }

    #[test]
    fn budgets_reserve_cost_refuse_and_alert_once() {
        let p = policy(&format!(
            "{PEOPLE}budgets: [{{id: monthly, per: team, limits: {{usd_per_month: 1.0}}, alerts: {{at: [50, 100], webhook: 'https://hooks.example/b'}}}}]"
        ));
        let a = who(&p, "sk-sg-aaaaaaaaaaaaaaaa");
        let m = meta(a);
        let price = Price { input_per_mtok: 1.0, output_per_mtok: 4.0, cached_input_per_mtok: None, per_request: 0.0 };
        let mut g = Governor::new(0, 1);
        let priced = |input, output| AdmitRequest { price: Some(price), ..req(a, "gpt-x", &m, input, output) };
        // Reserves 100k in + 100k out = 0.1 + 0.4 = $0.50.
        let adm = g.admit(&p, &priced(100_000, 100_000), T0).unwrap();
        assert_eq!(adm.reserved_cost_micros, 500_000);
        // Settles at $0.30: no threshold crossed yet.
        let s = g.settle(adm, Tokens { input: 100_000, output: 50_000, cached_input: 0 }, T0);
        assert_eq!(s.cost_micros, 300_000);
        assert!(s.alerts.is_empty());
        // $0.30 more crosses 50 %.
        let adm = g.admit(&p, &priced(100_000, 100_000), T0).unwrap();
        let s = g.settle(adm, Tokens { input: 100_000, output: 50_000, cached_input: 0 }, T0);
        assert_eq!(s.alerts.len(), 1);
        let alert = &s.alerts[0];
        assert_eq!((alert.threshold, &*alert.entity, alert.spent_micros), (50, "search", 600_000));
        assert_eq!(alert.period_start, "2027-01-01");
        // $0.60 spent: a $0.50 reservation no longer fits.
        let r = g.admit(&p, &priced(100_000, 100_000), T0).unwrap_err();
        assert_eq!((r.kind, r.error_type(), r.code()), (RefusalKind::Budget, "insufficient_quota", "budget_exceeded"));
        assert_eq!(r.scope, "team:search");
        let until_february = crate::clock::parse_instant("2027-02-01T00:00:00Z").unwrap() - T0;
        assert_eq!(r.retry_after_ms, Some(until_february));
        assert!(r.message().contains("$1.00") && r.message().contains("$0.60"), "{}", r.message());
        // A cheap request still fits; reaching 100 % alerts once, never twice.
        let adm = g.admit(&p, &priced(100_000, 50_000), T0).unwrap();
        let s = g.settle(adm, Tokens { input: 200_000, output: 50_000, cached_input: 0 }, T0);
        assert_eq!(s.alerts.iter().map(|a| a.threshold).collect::<Vec<_>>(), [100]);
        // Next month the budget is fresh.
        assert!(g.admit(&p, &priced(100_000, 100_000), T0 + until_february).is_ok());
    }

    #[test]
    fn restored_spend_counts_in_running_periods_only() {
        let p = policy(&format!(
            "{PEOPLE}budgets: [{{id: daily, per: user, limits: {{usd_per_day: 1.0, usd_lifetime: 5.0}}}}, {{id: ads, when: {{teams: [ads]}}, limits: {{usd_per_day: 1.0}}}}]"
        ));
        let alice = p.recorded_caller(crate::RecordedCaller {
            key: Some("a"),
            user: Some("alice"),
            team: Some("search"),
            ..Default::default()
        });
        let mut g = Governor::new(0, 1);
        let none = Metadata::new();
        // $0.70 today and $2 yesterday: today's budget sees 0.70, the lifetime one 2.70.
        g.restore_spend(&p, &alice, "gpt-x", &none, 700_000, T0 - 1_000, T0);
        g.restore_spend(&p, &alice, "gpt-x", &none, 2_000_000, T0 - 86_400_000, T0);
        let key = |window: Period| CounterKey {
            owner: Arc::from("daily"),
            entity: Arc::from("alice"),
            measure: Measure::SpendMicros,
            window_ms: 0,
            period: window.index(T0),
        };
        assert_eq!(g.total(&key(Period::Day), T0), 700_000);
        assert_eq!(g.total(&key(Period::Lifetime), T0), 2_700_000);
        // The `ads` budget does not apply to a search user.
        let ads = CounterKey { owner: Arc::from("ads"), entity: Arc::from("*"), ..key(Period::Day) };
        assert_eq!(g.total(&ads, T0), 0);
        // A $0.50 reservation no longer fits today.
        let a = who(&p, "sk-sg-aaaaaaaaaaaaaaaa");
        let price = Price { input_per_mtok: 1.0, output_per_mtok: 4.0, cached_input_per_mtok: None, per_request: 0.0 };
        let m = meta(a);
        let r = g.admit(&p, &AdmitRequest { price: Some(price), ..req(a, "gpt-x", &m, 100_000, 100_000) }, T0);
        assert_eq!(r.unwrap_err().kind, RefusalKind::Budget);
    }

    /// Spend merged from another shard can carry a budget over a threshold between two local
    /// settles; the next local settle still raises it (once).
    #[test]
    fn thresholds_reached_through_gossip_are_raised() {
        let p = policy(&format!(
            "{PEOPLE}budgets: [{{id: monthly, per: team, limits: {{usd_per_month: 1.0}}, alerts: {{at: [50]}}}}]"
        ));
        let a = who(&p, "sk-sg-aaaaaaaaaaaaaaaa");
        let m = meta(a);
        let price = Price { input_per_mtok: 1.0, output_per_mtok: 0.0, cached_input_per_mtok: None, per_request: 0.0 };
        let priced = |input| AdmitRequest { price: Some(price), ..req(a, "gpt-x", &m, input, 0) };
        let (mut g0, mut g1) = (Governor::new(0, 2), Governor::new(1, 2));
        // Shard 1 spends $0.60 and tells shard 0.
        let adm = g1.admit(&p, &priced(600_000), T0).unwrap();
        assert_eq!(g1.settle(adm, Tokens { input: 600_000, output: 0, cached_input: 0 }, T0).alerts.len(), 1);
        let d = g1.take_delta().unwrap();
        g0.merge(&d);
        // Shard 0's own $0.01 does not cross 50 % itself, yet 50 % was reached: raised here too.
        let adm = g0.admit(&p, &priced(10_000), T0).unwrap();
        let s = g0.settle(adm, Tokens { input: 10_000, output: 0, cached_input: 0 }, T0);
        assert_eq!(s.alerts.iter().map(|a| a.threshold).collect::<Vec<_>>(), [50]);
        let adm = g0.admit(&p, &priced(10_000), T0).unwrap();
        assert!(g0.settle(adm, Tokens { input: 10_000, output: 0, cached_input: 0 }, T0).alerts.is_empty(), "once");
    }

    #[test]
    fn small_amounts_keep_their_digits() {
        assert_eq!(usd(0), "$0.00");
        assert_eq!(usd(1_500_000), "$1.50");
        assert_eq!(usd(600_000), "$0.60");
        assert_eq!(usd(47), "$0.000047");
        assert_eq!(usd(1_230), "$0.00123");
    }

    #[test]
    fn unpriced_models_cost_nothing() {
        let p = policy(&format!("{PEOPLE}budgets: [{{id: b, limits: {{usd_lifetime: 0.000001}}}}]"));
        let a = who(&p, "sk-sg-aaaaaaaaaaaaaaaa");
        let mut g = Governor::new(0, 1);
        let adm = g.admit(&p, &req(a, "in-house", &meta(a), 1_000, 1_000), T0).unwrap();
        assert_eq!(g.settle(adm, Tokens { input: 5, output: 5, cached_input: 0 }, T0).cost_micros, 0);
    }

    #[test]
    fn inline_limits_on_keys_teams_and_users() {
        let p = policy(
            "
teams: {search: {limits: {requests_per_minute: 3}}}
users: {alice: {teams: [search], budget: {usd_per_day: 0}}}
keys:
  - {name: a, secret: sk-sg-aaaaaaaaaaaaaaaa, user: alice, limits: {concurrent: 1}}
",
        );
        let a = who(&p, "sk-sg-aaaaaaaaaaaaaaaa");
        let mut g = Governor::new(0, 1);
        let priced = Price { input_per_mtok: 1.0, output_per_mtok: 1.0, cached_input_per_mtok: None, per_request: 0.0 };
        let r = g.admit(&p, &AdmitRequest { price: Some(priced), ..req(a, "m", &meta(a), 10, 10) }, T0).unwrap_err();
        assert_eq!((&*r.rule, r.scope.as_str()), ("user:alice:budget", "user:alice"));
        let one = g.admit(&p, &req(a, "m", &meta(a), 10, 10), T0).unwrap();
        assert_eq!(&*g.admit(&p, &req(a, "m", &meta(a), 10, 10), T0).unwrap_err().rule, "key:a");
        g.release(one, T0);
        let _ = g.admit(&p, &req(a, "m", &meta(a), 10, 10), T0).unwrap();
    }

    /// Shards admitting from their own view plus gossip: the overshoot past a limit stays within
    /// (shards - 1) x what one shard admits between two gossip rounds.
    #[test]
    fn gossip_bounds_the_overshoot() {
        let p = policy(&format!("{PEOPLE}rate_limits: [{{id: tpm, limits: {{tokens_per_minute: 10000}}}}]"));
        let a = who(&p, "sk-sg-aaaaaaaaaaaaaaaa");
        let m = meta(a);
        for (shards, per_round) in [(2usize, 1u64), (4, 3), (8, 5)] {
            let mut gs: Vec<Governor> = (0..shards).map(|s| Governor::new(s as u16, shards)).collect();
            let mut admitted = 0u64;
            for t in (T0..).take(200) {
                for g in gs.iter_mut() {
                    for _ in 0..per_round {
                        if let Ok(adm) = g.admit(&p, &req(a, "m", &m, 50, 50), t) {
                            admitted += 100;
                            g.settle(adm, Tokens { input: 50, output: 50, cached_input: 0 }, t);
                        }
                    }
                }
                let deltas: Vec<Delta> = gs.iter_mut().filter_map(Governor::take_delta).collect();
                for g in gs.iter_mut() {
                    for d in &deltas {
                        g.merge(d);
                    }
                }
            }
            let bound = (shards as u64 - 1) * per_round * 100;
            assert!(admitted >= 10_000 - 100, "{shards} shards admitted only {admitted}");
            assert!(admitted <= 10_000 + bound, "{shards} shards admitted {admitted}, bound {}", 10_000 + bound);
        }
    }
}
