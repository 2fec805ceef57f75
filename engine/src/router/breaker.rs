//! The circuit breaker of one target on one shard.
//!
//! Closed, it counts successes and failures in a sliding window of time buckets and opens when
//! the failure rate over the window is too high (with enough requests to judge), at once on an
//! authentication failure, or when slow successes (over the SLA) tip the rate. Open, it refuses
//! requests until its cooldown ends; then it is half-open and lets a few probe requests through.
//! A probe success closes it; a probe failure opens it again for twice as long (up to a cap), so
//! a target that stays broken is probed less and less often.

use std::time::{Duration, Instant};

/// The breaker settings of a route (`breaker:`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerPolicy {
    /// Failures / total over the window at which the breaker opens.
    pub failure_rate: f64,
    /// Fewer requests than this in the window never open it (too few to judge).
    pub min_requests: u32,
    pub window: Duration,
    pub cooldown: Duration,
    pub max_cooldown: Duration,
    /// Probes allowed at a time while half-open.
    pub probes: u32,
    pub on_auth_error: bool,
    pub sla: Sla,
    /// When every target is unavailable: `false` sends to an open one anyway, `true` refuses.
    pub cool_last: bool,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            failure_rate: 0.5,
            min_requests: 5,
            window: Duration::from_secs(30),
            cooldown: Duration::from_secs(30),
            max_cooldown: Duration::from_secs(300),
            probes: 1,
            on_auth_error: true,
            sla: Sla::default(),
            cool_last: false,
        }
    }
}

/// A success slower than this counts as a failure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sla {
    pub first_token: Option<Duration>,
    pub per_token: Option<Duration>,
}

/// What `admit` allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Normal,
    /// A half-open probe: its outcome closes or re-opens the breaker.
    Probe,
    Denied,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open { until: Instant },
    HalfOpen,
}

/// How an attempt at the target ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success { ttft: Option<Duration>, per_token: Option<Duration> },
    Failure,
    AuthFailure,
}

/// A change of state worth logging or telling other shards about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Opened { until: Instant, reason: OpenReason },
    HalfOpened,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenReason {
    FailureRate,
    Auth,
    Sla,
    Probe,
    Gossip,
}

/// The window is this many buckets; a bucket's samples leave the window all at once.
const BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which bucket-length period since `origin` these counts belong to.
    epoch: u64,
    ok: u32,
    failed: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen,
}

/// One target's breaker on one shard.
#[derive(Debug, Clone)]
pub struct Breaker {
    state: State,
    /// The time bucket epochs count from (the first recorded outcome).
    origin: Option<Instant>,
    buckets: [Bucket; BUCKETS],
    /// Consecutive re-openings from half-open: the cooldown is `cooldown × 2^reopens`.
    reopens: u32,
    probes_out: u32,
    /// When the last probe was given out. A probe whose outcome never comes back (a dropped
    /// request) would otherwise hold its slot forever; after a cooldown its slot is free again.
    probe_at: Option<Instant>,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker::new()
    }
}

impl Breaker {
    pub fn new() -> Breaker {
        Breaker {
            state: State::Closed,
            origin: None,
            buckets: [Bucket::default(); BUCKETS],
            reopens: 0,
            probes_out: 0,
            probe_at: None,
        }
    }

    /// Whether a request may go to this target now (without taking a probe slot).
    pub fn available(&self, p: &BreakerPolicy, now: Instant) -> bool {
        match self.state {
            State::Closed => true,
            State::Open { until } => now >= until,
            State::HalfOpen => self.free_probe(p, now),
        }
    }

    /// Lets a request through (as a probe when half-open), or not.
    pub fn admit(&mut self, p: &BreakerPolicy, now: Instant) -> Admission {
        self.wake(now);
        match self.state {
            State::Closed => Admission::Normal,
            State::Open { .. } => Admission::Denied,
            State::HalfOpen => {
                if !self.free_probe(p, now) {
                    return Admission::Denied;
                }
                if self.probes_out >= p.probes {
                    self.probes_out = 0; // the earlier probes are lost (see `probe_at`)
                }
                self.probes_out += 1;
                self.probe_at = Some(now);
                Admission::Probe
            }
        }
    }

    /// Records how an attempt ended; returns the state change it caused, if any.
    pub fn record(&mut self, p: &BreakerPolicy, now: Instant, o: Outcome) -> Option<Transition> {
        let woke = self.wake(now);
        let (failed, reason) = self.judge(p, o);
        match self.state {
            // Outcomes of requests let through before the breaker opened: no evidence about now.
            State::Open { .. } => None,
            State::HalfOpen if self.probes_out == 0 => woke.then_some(Transition::HalfOpened),
            State::HalfOpen => {
                self.probes_out -= 1;
                if failed {
                    self.reopens = self.reopens.saturating_add(1);
                    Some(self.open(p, now, OpenReason::Probe))
                } else {
                    self.close();
                    Some(Transition::Closed)
                }
            }
            State::Closed => {
                if o == Outcome::AuthFailure && p.on_auth_error {
                    return Some(self.open(p, now, OpenReason::Auth));
                }
                self.count(p, now, failed);
                let (ok, bad) = self.totals(p, now);
                let total = ok + bad;
                let tipped =
                    failed && total >= p.min_requests.max(1) && f64::from(bad) >= p.failure_rate * f64::from(total);
                tipped.then(|| self.open(p, now, reason))
            }
        }
    }

    /// Opens the breaker until `until` because another shard opened it (gossip). Reported as a
    /// transition only when it was not open already (so gossip is not echoed back).
    pub fn force_open(&mut self, _p: &BreakerPolicy, until: Instant) -> Option<Transition> {
        match self.state {
            State::Open { until: current } => {
                self.state = State::Open { until: current.max(until) };
                None
            }
            State::Closed | State::HalfOpen => {
                self.state = State::Open { until };
                self.probes_out = 0;
                Some(Transition::Opened { until, reason: OpenReason::Gossip })
            }
        }
    }

    pub fn state(&self, now: Instant) -> BreakerState {
        match self.state {
            State::Closed => BreakerState::Closed,
            State::Open { until } if now < until => BreakerState::Open { until },
            State::Open { .. } | State::HalfOpen => BreakerState::HalfOpen,
        }
    }

    /// Open → half-open once the cooldown is over; `true` when that happened now.
    fn wake(&mut self, now: Instant) -> bool {
        match self.state {
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen;
                self.probes_out = 0;
                true
            }
            _ => false,
        }
    }

    fn free_probe(&self, p: &BreakerPolicy, now: Instant) -> bool {
        self.probes_out < p.probes || self.probe_at.is_none_or(|at| now >= at + p.cooldown)
    }

    /// Whether an outcome counts as a failure, and the reason if it opens the breaker.
    fn judge(&self, p: &BreakerPolicy, o: Outcome) -> (bool, OpenReason) {
        match o {
            Outcome::Success { ttft, per_token } => {
                let slow = |got: Option<Duration>, limit: Option<Duration>| matches!((got, limit), (Some(g), Some(l)) if g > l);
                let over_sla = slow(ttft, p.sla.first_token) || slow(per_token, p.sla.per_token);
                (over_sla, OpenReason::Sla)
            }
            Outcome::Failure => (true, OpenReason::FailureRate),
            Outcome::AuthFailure => (true, if p.on_auth_error { OpenReason::Auth } else { OpenReason::FailureRate }),
        }
    }

    fn open(&mut self, p: &BreakerPolicy, now: Instant, reason: OpenReason) -> Transition {
        let factor = 1u32.checked_shl(self.reopens).unwrap_or(u32::MAX);
        let cooldown = p.cooldown.saturating_mul(factor).min(p.max_cooldown.max(p.cooldown));
        let until = now + cooldown;
        self.state = State::Open { until };
        self.probes_out = 0;
        Transition::Opened { until, reason }
    }

    fn close(&mut self) {
        self.state = State::Closed;
        self.reopens = 0;
        self.probes_out = 0;
        self.origin = None;
        self.buckets = [Bucket::default(); BUCKETS];
    }

    fn bucket_len(p: &BreakerPolicy) -> u128 {
        (p.window.as_nanos() / BUCKETS as u128).max(1)
    }

    fn epoch(&self, p: &BreakerPolicy, now: Instant) -> u64 {
        let since = self.origin.map_or(0, |o| now.saturating_duration_since(o).as_nanos());
        u64::try_from(since / Self::bucket_len(p)).unwrap_or(u64::MAX)
    }

    fn count(&mut self, p: &BreakerPolicy, now: Instant, failed: bool) {
        self.origin.get_or_insert(now);
        let epoch = self.epoch(p, now);
        let bucket = &mut self.buckets[(epoch % BUCKETS as u64) as usize];
        if bucket.epoch != epoch {
            *bucket = Bucket { epoch, ok: 0, failed: 0 };
        }
        if failed {
            bucket.failed = bucket.failed.saturating_add(1);
        } else {
            bucket.ok = bucket.ok.saturating_add(1);
        }
    }

    /// (successes, failures) over the buckets still inside the window.
    fn totals(&self, p: &BreakerPolicy, now: Instant) -> (u32, u32) {
        let epoch = self.epoch(p, now);
        self.buckets
            .iter()
            .filter(|b| b.epoch <= epoch && epoch - b.epoch < BUCKETS as u64)
            .fold((0, 0), |(ok, bad), b| (ok + b.ok, bad + b.failed))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    const OK: Outcome = Outcome::Success { ttft: None, per_token: None };

    fn opened(t: Option<Transition>) -> (Instant, OpenReason) {
        match t {
            Some(Transition::Opened { until, reason }) => (until, reason),
            other => panic!("expected Opened, got {other:?}"),
        }
    }

    #[test]
    fn opens_on_failure_rate_with_min_sample_but_not_below() {
        let p = BreakerPolicy::default(); // 0.5 over at least 5
        let t0 = Instant::now();
        let mut b = Breaker::new();
        // 4 failures: rate 100% but only 4 requests.
        for i in 0..4 {
            assert_eq!(b.record(&p, t0 + Duration::from_millis(i), Outcome::Failure), None);
        }
        assert!(b.available(&p, t0));
        let (until, reason) = opened(b.record(&p, t0 + secs(1), Outcome::Failure));
        assert_eq!((until, reason), (t0 + secs(1) + secs(30), OpenReason::FailureRate));
        assert!(!b.available(&p, t0 + secs(2)));
        assert_eq!(b.admit(&p, t0 + secs(2)), Admission::Denied);
        assert_eq!(b.state(t0 + secs(2)), BreakerState::Open { until });

        // Below the rate: 3 failures in 7 stays closed.
        let mut b = Breaker::new();
        for o in [OK, OK, Outcome::Failure, OK, Outcome::Failure, OK, Outcome::Failure] {
            assert_eq!(b.record(&p, t0, o), None);
        }
        assert_eq!(b.state(t0), BreakerState::Closed);
        // The 4th failure makes 4 of 8 = 0.5: opens.
        opened(b.record(&p, t0, Outcome::Failure));
    }

    #[test]
    fn auth_failure_opens_at_once_unless_disabled() {
        let p = BreakerPolicy::default();
        let t0 = Instant::now();
        let mut b = Breaker::new();
        assert_eq!(opened(b.record(&p, t0, Outcome::AuthFailure)).1, OpenReason::Auth);

        let p = BreakerPolicy { on_auth_error: false, ..p };
        let mut b = Breaker::new();
        assert_eq!(b.record(&p, t0, Outcome::AuthFailure), None);
        assert_eq!(b.state(t0), BreakerState::Closed);
    }

    #[test]
    fn slow_successes_count_as_failures_and_tip_with_reason_sla() {
        let p = BreakerPolicy {
            sla: Sla { first_token: Some(secs(2)), per_token: Some(Duration::from_millis(200)) },
            ..Default::default()
        };
        let t0 = Instant::now();
        let mut b = Breaker::new();
        let slow_ttft = Outcome::Success { ttft: Some(secs(3)), per_token: None };
        let slow_tpot = Outcome::Success { ttft: Some(secs(1)), per_token: Some(Duration::from_millis(300)) };
        let fast = Outcome::Success { ttft: Some(secs(1)), per_token: Some(Duration::from_millis(100)) };
        for o in [fast, fast, slow_ttft, slow_tpot] {
            assert_eq!(b.record(&p, t0, o), None);
        }
        assert_eq!(opened(b.record(&p, t0, slow_ttft)).1, OpenReason::Sla);
    }

    #[test]
    fn half_open_probe_count_and_probe_success_closes() {
        let p = BreakerPolicy { probes: 2, ..Default::default() };
        let t0 = Instant::now();
        let mut b = Breaker::new();
        b.record(&p, t0, Outcome::AuthFailure);
        let t1 = t0 + secs(30);
        assert!(!b.available(&p, t1 - Duration::from_millis(1)));
        assert!(b.available(&p, t1));
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
        assert_eq!(b.admit(&p, t1), Admission::Probe);
        assert_eq!(b.admit(&p, t1), Admission::Probe);
        assert_eq!(b.admit(&p, t1), Admission::Denied);
        assert!(!b.available(&p, t1));
        assert_eq!(b.record(&p, t1 + secs(1), OK), Some(Transition::Closed));
        assert_eq!(b.state(t1 + secs(1)), BreakerState::Closed);
        assert_eq!(b.admit(&p, t1 + secs(1)), Admission::Normal);
        // The window was reset: four failures do not open it.
        for _ in 0..4 {
            assert_eq!(b.record(&p, t1 + secs(2), Outcome::Failure), None);
        }
    }

    #[test]
    fn lost_probe_frees_its_slot_after_a_cooldown() {
        let p = BreakerPolicy::default();
        let t0 = Instant::now();
        let mut b = Breaker::new();
        b.record(&p, t0, Outcome::AuthFailure);
        let t1 = t0 + secs(30);
        assert_eq!(b.admit(&p, t1), Admission::Probe);
        assert_eq!(b.admit(&p, t1 + secs(29)), Admission::Denied);
        assert_eq!(b.admit(&p, t1 + secs(30)), Admission::Probe);
    }

    #[test]
    fn probe_failure_reopens_with_doubled_capped_cooldown() {
        let p = BreakerPolicy { max_cooldown: secs(100), ..Default::default() };
        let mut t = Instant::now();
        let mut b = Breaker::new();
        let (mut until, _) = opened(b.record(&p, t, Outcome::AuthFailure));
        assert_eq!(until - t, secs(30));
        for expected in [60, 100, 100] {
            t = until;
            assert_eq!(b.admit(&p, t), Admission::Probe);
            let (u, reason) = opened(b.record(&p, t, Outcome::Failure));
            assert_eq!((u - t, reason), (secs(expected), OpenReason::Probe));
            until = u;
        }
        // A probe success resets the cooldown to the base.
        assert_eq!(b.admit(&p, until), Admission::Probe);
        assert_eq!(b.record(&p, until, OK), Some(Transition::Closed));
        let (u, _) = opened(b.record(&p, until, Outcome::AuthFailure));
        assert_eq!(u - until, secs(30));
    }

    #[test]
    fn straggler_outcomes_do_not_decide() {
        let p = BreakerPolicy::default();
        let t0 = Instant::now();
        let mut b = Breaker::new();
        b.record(&p, t0, Outcome::AuthFailure);
        // While open: ignored.
        assert_eq!(b.record(&p, t0 + secs(1), OK), None);
        assert!(matches!(b.state(t0 + secs(1)), BreakerState::Open { .. }));
        // After the cooldown, before any probe: reports half-open, does not close.
        assert_eq!(b.record(&p, t0 + secs(31), OK), Some(Transition::HalfOpened));
        assert_eq!(b.state(t0 + secs(31)), BreakerState::HalfOpen);
        assert_eq!(b.admit(&p, t0 + secs(31)), Admission::Probe);
    }

    #[test]
    fn force_open_from_gossip() {
        let p = BreakerPolicy::default();
        let t0 = Instant::now();
        let mut b = Breaker::new();
        let until = t0 + secs(10);
        assert_eq!(b.force_open(&p, until), Some(Transition::Opened { until, reason: OpenReason::Gossip }));
        assert!(!b.available(&p, t0 + secs(9)));
        // Already open: extended silently, never shortened.
        assert_eq!(b.force_open(&p, t0 + secs(20)), None);
        assert_eq!(b.force_open(&p, t0 + secs(5)), None);
        assert_eq!(b.state(t0 + secs(15)), BreakerState::Open { until: t0 + secs(20) });
        assert_eq!(b.admit(&p, t0 + secs(20)), Admission::Probe);
    }

    #[test]
    fn window_buckets_expire_old_samples() {
        let p = BreakerPolicy::default(); // 30 s window in 3 s buckets
        let t0 = Instant::now();
        let mut b = Breaker::new();
        for i in 0..4 {
            assert_eq!(b.record(&p, t0 + secs(i), Outcome::Failure), None);
        }
        // 31 s after the first four, they have left the window: one more failure is 1 of 1.
        assert_eq!(b.record(&p, t0 + secs(34), Outcome::Failure), None);
        assert_eq!(b.totals(&p, t0 + secs(34)), (0, 1));
        // Within the window they all count.
        for i in 0..3 {
            assert_eq!(b.record(&p, t0 + secs(35 + i), Outcome::Failure), None);
        }
        opened(b.record(&p, t0 + secs(40), Outcome::Failure));
        // Part of the window expires bucket by bucket.
        let mut b = Breaker::new();
        b.record(&p, t0, OK);
        b.record(&p, t0 + secs(15), OK);
        assert_eq!(b.totals(&p, t0 + secs(29)), (2, 0));
        assert_eq!(b.totals(&p, t0 + secs(31)), (1, 0));
        assert_eq!(b.totals(&p, t0 + secs(46)), (0, 0));
    }
}
