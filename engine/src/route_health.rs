//! What one shard knows of each route target (see [`crate::router`]): its circuit breaker,
//! moving averages of time to first token and time per output token, requests in flight, and
//! requests and tokens in the current and previous minute. The router reads it through
//! [`HealthView`]; the retry loop writes it after each attempt.
//!
//! Targets are numbered per config snapshot; on a reload the state of a target that is still
//! there (same provider, model and overrides) is carried over by its key.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::config::Snapshot;
use crate::router::{
    Admission, Breaker, BreakerPolicy, BreakerState, HealthView, Outcome, TargetHealth, TargetId, TargetSpec,
    Transition,
};

/// Weight of the newest sample in the moving averages.
const EWMA_WEIGHT: f64 = 0.2;

/// Counters of one target on one shard that `/metrics` and the admin API read (from other
/// threads, hence atomics).
#[derive(Debug)]
pub struct TargetStats {
    /// `provider/model` (with `+overrides` when the target has some).
    pub key: Arc<str>,
    pub shard: usize,
    /// 0 closed, 1 open, 2 half-open.
    pub breaker: AtomicU8,
    pub breaker_opens: AtomicU64,
    pub attempts: AtomicU64,
    pub failures: AtomicU64,
    pub ttft_ewma_us: AtomicU64,
    pub tpot_ewma_us: AtomicU64,
    pub in_flight: AtomicU64,
}

impl TargetStats {
    pub fn breaker_label(&self) -> &'static str {
        match self.breaker.load(Relaxed) {
            1 => "open",
            2 => "half_open",
            _ => "closed",
        }
    }
}

/// Requests and tokens per minute, in two fixed minutes (the current and the previous), so the
/// last minute is estimated without keeping every request.
#[derive(Debug, Default, Clone, Copy)]
struct Minute {
    start: Option<Instant>,
    requests: u64,
    tokens: u64,
    prev_requests: u64,
    prev_tokens: u64,
}

impl Minute {
    fn roll(&mut self, now: Instant) {
        let start = *self.start.get_or_insert(now);
        let age = now.saturating_duration_since(start);
        if age >= Duration::from_secs(120) {
            *self = Minute { start: Some(now), ..Minute::default() };
        } else if age >= Duration::from_secs(60) {
            self.prev_requests = self.requests;
            self.prev_tokens = self.tokens;
            self.requests = 0;
            self.tokens = 0;
            self.start = Some(start + Duration::from_secs(60));
        }
    }

    /// The last 60 s: this minute plus the part of the previous one still inside the window.
    fn last_minute(&self, now: Instant) -> (u64, u64) {
        let into = self.start.map_or(0.0, |s| now.saturating_duration_since(s).as_secs_f64().min(60.0) / 60.0);
        let keep = 1.0 - into;
        (
            self.requests + (self.prev_requests as f64 * keep) as u64,
            self.tokens + (self.prev_tokens as f64 * keep) as u64,
        )
    }
}

/// Times to an answer (a stream's first piece, or a whole buffered answer), in log-spaced
/// buckets: bucket `i` holds times up to `FIRST_BOUND_US × GROWTH^i`. Counts are halved when
/// they grow large, so the distribution follows the target's recent behaviour.
#[derive(Debug, Clone)]
pub struct AnswerTimes {
    counts: [u32; ANSWER_BUCKETS],
    total: u32,
}

const ANSWER_BUCKETS: usize = 48;
const FIRST_BOUND_US: f64 = 100.0;
const GROWTH: f64 = 1.3;
/// Past this many samples, every count is halved.
const DECAY_AT: u32 = 2000;
/// Fewer samples than this give no percentile.
pub const MIN_PERCENTILE_SAMPLES: u32 = 20;

impl Default for AnswerTimes {
    fn default() -> Self {
        AnswerTimes { counts: [0; ANSWER_BUCKETS], total: 0 }
    }
}

impl AnswerTimes {
    fn bound_us(i: usize) -> f64 {
        FIRST_BOUND_US * GROWTH.powi(i32::try_from(i).unwrap_or(i32::MAX))
    }

    pub fn record(&mut self, d: Duration) {
        let us = d.as_secs_f64() * 1e6;
        let i = if us <= FIRST_BOUND_US { 0 } else { ((us / FIRST_BOUND_US).ln() / GROWTH.ln()).ceil() as usize };
        let i = i.min(ANSWER_BUCKETS - 1);
        self.counts[i] = self.counts[i].saturating_add(1);
        self.total = self.total.saturating_add(1);
        if self.total >= DECAY_AT {
            for c in &mut self.counts {
                *c /= 2;
            }
            self.total = self.counts.iter().sum();
        }
    }

    /// Adds another target's counts (a group's distribution).
    pub fn merge(&mut self, other: &AnswerTimes) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.saturating_add(*b);
        }
        self.total = self.total.saturating_add(other.total);
    }

    /// The `p`-th percentile (upper bound of its bucket), once there are enough samples.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        if self.total < MIN_PERCENTILE_SAMPLES {
            return None;
        }
        let rank = (f64::from(self.total) * p / 100.0).ceil().max(1.0);
        let mut seen = 0.0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += f64::from(*c);
            if seen >= rank {
                return Some(Duration::from_secs_f64(Self::bound_us(i) / 1e6));
            }
        }
        None
    }
}

/// Successes between two shares of a target's latency averages with the other shards.
const SHARE_EVERY: u32 = 32;

struct TargetState {
    breaker: Breaker,
    answer_times: AnswerTimes,
    /// Successes since the averages were last shared.
    unshared: u32,
    ttft_us: f64,
    tpot_us: f64,
    samples: u32,
    in_flight: u32,
    minute: Minute,
    stats: Arc<TargetStats>,
}

impl TargetState {
    fn new(key: Arc<str>, shard: usize) -> Self {
        TargetState {
            breaker: Breaker::new(),
            answer_times: AnswerTimes::default(),
            unshared: 0,
            ttft_us: 0.0,
            tpot_us: 0.0,
            samples: 0,
            in_flight: 0,
            minute: Minute::default(),
            stats: Arc::new(TargetStats {
                key,
                shard,
                breaker: AtomicU8::new(0),
                breaker_opens: AtomicU64::new(0),
                attempts: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                ttft_ewma_us: AtomicU64::new(0),
                tpot_ewma_us: AtomicU64::new(0),
                in_flight: AtomicU64::new(0),
            }),
        }
    }

    fn publish_breaker(&self, now: Instant) {
        let code = match self.breaker.state(now) {
            BreakerState::Closed => 0,
            BreakerState::Open { .. } => 1,
            BreakerState::HalfOpen => 2,
        };
        self.stats.breaker.store(code, Relaxed);
    }
}

/// The key a target's state is kept under across reloads.
pub fn target_key(t: &TargetSpec) -> String {
    let mut key = format!("{}/{}", t.provider, t.model);
    if t.params.is_some() || !t.headers.is_empty() {
        // Same provider and model with other overrides: another target.
        let params = t.params.as_ref().map(|p| serde_json::Value::Object(p.clone()).to_string()).unwrap_or_default();
        key.push_str(&format!("+{params}{:?}", t.headers));
    }
    key
}

/// The route targets' state on one shard.
pub struct RouteHealth {
    shard: usize,
    /// Shards in the process (see [`View`]).
    shards: u64,
    inner: RefCell<Inner>,
    /// Every target's stats, read by `/metrics` and the admin API from other threads.
    published: Arc<arc_swap::ArcSwap<Vec<Arc<TargetStats>>>>,
}

#[derive(Default)]
struct Inner {
    generation: Option<u64>,
    targets: Vec<TargetState>,
}

/// A change of breaker state worth telling (metrics, logs, other shards).
#[derive(Debug, Clone)]
pub struct BreakerNews {
    pub key: Arc<str>,
    pub transition: Transition,
}

impl RouteHealth {
    pub fn new(shard: usize, shards: usize, published: Arc<arc_swap::ArcSwap<Vec<Arc<TargetStats>>>>) -> Self {
        RouteHealth { shard, shards: u64::try_from(shards.max(1)).unwrap_or(1), inner: RefCell::default(), published }
    }

    /// Brings the table in line with `cfg`'s targets (after a reload), keeping the state of
    /// targets that are still there.
    fn sync(&self, cfg: &Snapshot) {
        let mut inner = self.inner.borrow_mut();
        if inner.generation == Some(cfg.generation) {
            return;
        }
        let mut old: HashMap<Arc<str>, TargetState> =
            inner.targets.drain(..).map(|t| (t.stats.key.clone(), t)).collect();
        let targets: Vec<TargetState> = cfg
            .route_targets
            .iter()
            .map(|(_, spec)| {
                let key: Arc<str> = Arc::from(target_key(spec));
                old.remove(&key).unwrap_or_else(|| TargetState::new(key, self.shard))
            })
            .collect();
        let mine: Vec<Arc<TargetStats>> = targets.iter().map(|t| t.stats.clone()).collect();
        let shard = self.shard;
        self.published.rcu(|list| {
            let mut next: Vec<Arc<TargetStats>> = list.iter().filter(|s| s.shard != shard).cloned().collect();
            next.extend(mine.iter().cloned());
            next
        });
        inner.targets = targets;
        inner.generation = Some(cfg.generation);
    }

    /// Runs `f` with a view of the targets' health as of `now`.
    pub fn with_view<R>(&self, cfg: &Snapshot, policy: &BreakerPolicy, now: Instant, f: impl FnOnce(&View) -> R) -> R {
        self.sync(cfg);
        let inner = self.inner.borrow();
        f(&View { targets: &inner.targets, policy, now, shards: self.shards })
    }

    /// An attempt at `id` begins: the breaker's admission (a half-open breaker gives out its
    /// probes one at a time) and the in-flight count.
    pub fn begin(&self, cfg: &Snapshot, id: TargetId, policy: &BreakerPolicy, now: Instant) -> Admission {
        self.sync(cfg);
        let mut inner = self.inner.borrow_mut();
        let Some(t) = inner.targets.get_mut(id.0 as usize) else { return Admission::Normal };
        let admission = t.breaker.admit(policy, now);
        if !matches!(admission, Admission::Denied) {
            t.in_flight += 1;
            t.stats.in_flight.store(u64::from(t.in_flight), Relaxed);
            t.stats.attempts.fetch_add(1, Relaxed);
            t.minute.roll(now);
            t.minute.requests += 1;
        }
        t.publish_breaker(now);
        admission
    }

    /// The times to an answer of these targets, together (a group's distribution).
    pub fn answer_times(&self, ids: &[TargetId]) -> AnswerTimes {
        let inner = self.inner.borrow();
        let mut all = AnswerTimes::default();
        for id in ids {
            if let Some(t) = inner.targets.get(id.0 as usize) {
                all.merge(&t.answer_times);
            }
        }
        all
    }

    /// An attempt at `id` ended with `outcome`, having used `tokens`, its answer ready after
    /// `answered` (when it succeeded); returns a breaker change.
    pub fn end(
        &self,
        id: TargetId,
        policy: &BreakerPolicy,
        now: Instant,
        (outcome, answered): (Outcome, Option<Duration>),
        tokens: u64,
    ) -> Option<BreakerNews> {
        let mut inner = self.inner.borrow_mut();
        let t = inner.targets.get_mut(id.0 as usize)?;
        if let Some(d) = answered {
            t.answer_times.record(d);
        }
        t.in_flight = t.in_flight.saturating_sub(1);
        t.stats.in_flight.store(u64::from(t.in_flight), Relaxed);
        t.minute.roll(now);
        t.minute.tokens += tokens;
        match &outcome {
            Outcome::Success { ttft, per_token } => {
                let ewma = |avg: f64, d: Duration| {
                    let s = d.as_secs_f64() * 1e6;
                    if avg == 0.0 { s } else { avg + EWMA_WEIGHT * (s - avg) }
                };
                if let Some(d) = ttft {
                    t.ttft_us = ewma(t.ttft_us, *d);
                }
                if let Some(d) = per_token {
                    t.tpot_us = ewma(t.tpot_us, *d);
                }
                t.samples = t.samples.saturating_add(1);
                t.unshared += 1;
                t.stats.ttft_ewma_us.store(t.ttft_us as u64, Relaxed);
                t.stats.tpot_ewma_us.store(t.tpot_us as u64, Relaxed);
            }
            Outcome::Failure | Outcome::AuthFailure => {
                t.stats.failures.fetch_add(1, Relaxed);
            }
        }
        let transition = t.breaker.record(policy, now, outcome);
        t.publish_breaker(now);
        let transition = transition?;
        if matches!(transition, Transition::Opened { .. }) {
            t.stats.breaker_opens.fetch_add(1, Relaxed);
        }
        Some(BreakerNews { key: t.stats.key.clone(), transition })
    }

    /// An attempt that never reached its target (refused before sending): only the in-flight
    /// count is given back.
    pub fn abandon(&self, id: TargetId) {
        let mut inner = self.inner.borrow_mut();
        if let Some(t) = inner.targets.get_mut(id.0 as usize) {
            t.in_flight = t.in_flight.saturating_sub(1);
            t.stats.in_flight.store(u64::from(t.in_flight), Relaxed);
        }
    }

    /// The averages of `id` to share with the other shards, every [`SHARE_EVERY`] successes.
    pub fn latency_to_share(&self, id: TargetId) -> Option<(f64, f64, u32)> {
        let mut inner = self.inner.borrow_mut();
        let t = inner.targets.get_mut(id.0 as usize)?;
        if t.unshared < SHARE_EVERY {
            return None;
        }
        t.unshared = 0;
        Some((t.ttft_us, t.tpot_us, t.samples))
    }

    /// Another shard's averages for the target under `key`: a shard that has none takes them
    /// (and counts their samples, so the latency strategy need not explore again); one that
    /// has its own moves a third of the way toward them.
    pub fn blend(&self, cfg: &Snapshot, key: &str, (ttft_us, tpot_us, samples): (f64, f64, u32)) {
        self.sync(cfg);
        let mut inner = self.inner.borrow_mut();
        let Some(t) = inner.targets.iter_mut().find(|t| &*t.stats.key == key) else { return };
        let toward = |mine: f64, theirs: f64| {
            if mine == 0.0 {
                theirs
            } else if theirs == 0.0 {
                mine
            } else {
                mine + (theirs - mine) / 3.0
            }
        };
        t.ttft_us = toward(t.ttft_us, ttft_us);
        t.tpot_us = toward(t.tpot_us, tpot_us);
        t.samples = t.samples.max(samples);
        t.stats.ttft_ewma_us.store(t.ttft_us as u64, Relaxed);
        t.stats.tpot_ewma_us.store(t.tpot_us as u64, Relaxed);
    }

    /// Another shard opened the breaker of the target under `key` until `until`.
    pub fn force_open(&self, cfg: &Snapshot, key: &str, policy: &BreakerPolicy, until: Instant, now: Instant) {
        self.sync(cfg);
        let mut inner = self.inner.borrow_mut();
        if let Some(t) = inner.targets.iter_mut().find(|t| &*t.stats.key == key) {
            if t.breaker.force_open(policy, until).is_some() {
                t.stats.breaker_opens.fetch_add(1, Relaxed);
            }
            t.publish_breaker(now);
        }
    }
}

/// The router's view of the targets on this shard at one instant.
pub struct View<'a> {
    targets: &'a [TargetState],
    policy: &'a BreakerPolicy,
    now: Instant,
    /// Shards in the process: each sees about its share of the traffic (SO_REUSEPORT spreads
    /// connections evenly), so its minute counts times this estimate the target's usage.
    shards: u64,
}

impl HealthView for View<'_> {
    fn health(&self, id: TargetId) -> TargetHealth {
        let Some(t) = self.targets.get(id.0 as usize) else {
            return TargetHealth { available: true, ..Default::default() };
        };
        let (rpm, tpm) = t.minute.last_minute(self.now);
        let (rpm_used, tpm_used) = (rpm.saturating_mul(self.shards), tpm.saturating_mul(self.shards));
        TargetHealth {
            available: t.breaker.available(self.policy, self.now),
            in_flight: t.in_flight,
            ttft_us: t.ttft_us,
            tpot_us: t.tpot_us,
            samples: t.samples,
            rpm_used,
            tpm_used,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn latency_is_shared_every_few_successes_and_blended() {
        let cfg = crate::config::load(
            &crate::config::ConfigSource::Text {
                name: "t.yaml".into(),
                yaml: "providers:\n  m: {kind: mock}\nmodels:\n  r: {route: {targets: [{target: m/x}]}}\n".into(),
            },
            1,
        )
        .map(|(_, s)| s)
        .unwrap();
        let (a, b) = (RouteHealth::new(0, 2, Arc::default()), RouteHealth::new(1, 2, Arc::default()));
        let id = TargetId(0);
        let policy = BreakerPolicy::default();
        let now = Instant::now();
        let ok = (
            Outcome::Success { ttft: Some(Duration::from_millis(100)), per_token: Some(Duration::from_millis(10)) },
            None,
        );
        for i in 0..SHARE_EVERY {
            a.begin(&cfg, id, &policy, now);
            a.end(id, &policy, now, ok, 0);
            assert_eq!(a.latency_to_share(id).is_some(), i + 1 == SHARE_EVERY, "after {}", i + 1);
        }
        // A shard without samples takes them; its latency strategy need not explore.
        b.blend(&cfg, "m/x", (100_000.0, 10_000.0, SHARE_EVERY));
        let seen = b.with_view(&cfg, &policy, now, |v| v.health(id));
        assert_eq!((seen.ttft_us, seen.tpot_us, seen.samples), (100_000.0, 10_000.0, SHARE_EVERY));
        // One with its own moves a third of the way.
        b.blend(&cfg, "m/x", (400_000.0, 10_000.0, 5));
        let seen = b.with_view(&cfg, &policy, now, |v| v.health(id));
        assert!((seen.ttft_us - 200_000.0).abs() < 1e-6, "{}", seen.ttft_us);
    }

    #[test]
    fn answer_times_give_percentiles_once_there_are_enough() {
        let mut a = AnswerTimes::default();
        for _ in 0..(MIN_PERCENTILE_SAMPLES - 1) {
            a.record(Duration::from_millis(10));
        }
        assert_eq!(a.percentile(95.0), None, "too few samples");
        a.record(Duration::from_millis(10));
        let p = a.percentile(95.0).unwrap();
        // 10 ms falls in the bucket whose bound is the first ≥ 10 ms (at most 30% above).
        assert!(p >= Duration::from_millis(10) && p <= Duration::from_millis(13), "{p:?}");
        // Five slow answers in a hundred: p95 stays fast, p99 is slow.
        let mut b = AnswerTimes::default();
        for i in 0..100 {
            b.record(Duration::from_millis(if i % 20 == 0 { 500 } else { 10 }));
        }
        assert!(b.percentile(95.0).unwrap() < Duration::from_millis(20));
        assert!(b.percentile(99.0).unwrap() >= Duration::from_millis(500));
        // Halving keeps the shape.
        for _ in 0..DECAY_AT {
            b.record(Duration::from_millis(10));
        }
        assert!(b.total < DECAY_AT);
        assert!(b.percentile(50.0).unwrap() < Duration::from_millis(13));
        let mut group = AnswerTimes::default();
        group.merge(&a);
        group.merge(&b);
        assert_eq!(group.total, a.total + b.total);
    }

    #[test]
    fn a_minute_rolls_into_the_previous_one_and_fades() {
        let t0 = Instant::now();
        let mut m = Minute::default();
        m.roll(t0);
        m.requests = 60;
        m.tokens = 6000;
        assert_eq!(m.last_minute(t0), (60, 6000));
        let t1 = t0 + Duration::from_secs(90);
        m.roll(t1);
        assert_eq!((m.requests, m.prev_requests), (0, 60));
        // Half-way into the new minute, half of the previous one still counts.
        assert_eq!(m.last_minute(t1), (30, 3000));
        m.roll(t0 + Duration::from_secs(400));
        assert_eq!(m.last_minute(t0 + Duration::from_secs(400)), (0, 0));
    }
}
