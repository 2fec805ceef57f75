//! One request's way through a route: which target to try next, and what a failure leads to.
//!
//! A plan starts in fallback group 0. [`Plan::next`] picks a target there, preferring targets
//! not yet tried in this group, and moves on to later groups by itself when the current one has
//! no available target; only when no group left has one does it fall back on targets whose
//! breaker is open (`cooled`), so that a request is not refused while any target exists.
//! [`Plan::failed`] turns a failed attempt into retry (after a backoff), fallback or give-up.

use std::time::{Duration, Instant};

use super::condition::RequestFacts;
use super::pick::{Bits, Ctx, Filter, HealthView, Rng, fnv1a, pick_child};
use super::retry::{Failure, FailureClass, backoff};
use super::route::Route;
use super::table::TargetId;

/// A target to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    pub target: TargetId,
    /// Every healthy target is gone; this one's breaker is open.
    pub cooled: bool,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Wait `after`, then call `next()` again (same group).
    Retry {
        after: Duration,
    },
    /// The plan has moved to another group; call `next()` again.
    Fallback,
    GiveUp,
}

/// Per-request overrides (headers `x-shardgate-retries`, `x-shardgate-retry-budget-ms`,
/// `x-shardgate-no-fallback`), already bounded by the engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    pub attempts: Option<u32>,
    pub budget: Option<Duration>,
    pub no_fallback: bool,
}

/// The retry loop's state for one request.
#[derive(Debug)]
pub struct Plan<'r> {
    route: &'r Route,
    overrides: Overrides,
    start: Instant,
    group: usize,
    attempts: u32,
    group_attempts: u32,
    fallbacks: u32,
    waited: Duration,
    /// Slots of the targets tried in the current group.
    tried: Bits,
    done: bool,
}

/// Where `find` found a target.
struct Found {
    group: usize,
    target: TargetId,
    slot: u32,
    cooled: bool,
}

/// What `decide` chose; `failed` applies it.
enum Decision {
    Retry(Duration),
    Jump(usize),
    GiveUp,
}

impl<'r> Plan<'r> {
    pub fn new(route: &'r Route, overrides: Overrides, now: Instant) -> Plan<'r> {
        let widest = route.group_slots.iter().copied().max().unwrap_or(0);
        Plan {
            route,
            overrides,
            start: now,
            group: 0,
            attempts: 0,
            group_attempts: 0,
            fallbacks: 0,
            waited: Duration::ZERO,
            tried: Bits::for_len(widest),
            done: false,
        }
    }

    /// The next target to try (in the current group; when the group has no target left to
    /// try, it moves to the next group itself, counting a fallback). `None`: nothing left.
    pub fn next(&mut self, req: &dyn RequestFacts, health: &dyn HealthView, random: u64) -> Option<Pick> {
        if self.done {
            return None;
        }
        let found = self.find(req, health, random)?;
        if found.group != self.group {
            self.enter(found.group);
        }
        self.attempts += 1;
        self.group_attempts += 1;
        self.tried.set(found.slot);
        Some(Pick { target: found.target, cooled: found.cooled })
    }

    /// After the attempt at the last picked target failed: what to do next.
    pub fn failed(&mut self, f: &Failure, now: Instant, random: u64) -> Next {
        if self.done {
            return Next::GiveUp;
        }
        match self.decide(f, now, random) {
            Decision::Retry(after) => {
                self.waited = self.waited.saturating_add(after);
                Next::Retry { after }
            }
            Decision::Jump(group) => {
                self.enter(group);
                Next::Fallback
            }
            Decision::GiveUp => {
                self.done = true;
                Next::GiveUp
            }
        }
    }

    /// Attempts made so far (all groups).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Group changes made.
    pub fn fallbacks(&self) -> u32 {
        self.fallbacks
    }

    /// Total backoff / retry-after waited.
    pub fn retry_wait(&self) -> Duration {
        self.waited
    }

    pub fn group(&self) -> usize {
        self.group
    }

    fn enter(&mut self, group: usize) {
        self.group = group;
        self.fallbacks += 1;
        self.group_attempts = 0;
        self.tried.clear();
    }

    /// Two passes over the groups from the current one on (only the current one under
    /// `no_fallback`): first for an available target, untried before tried; then, unless
    /// `cool_last`, for any target, which is then `cooled`.
    fn find(&self, req: &dyn RequestFacts, health: &dyn HealthView, random: u64) -> Option<Found> {
        let route = self.route;
        let last = if self.overrides.no_fallback { self.group } else { route.groups.len().saturating_sub(1) };
        let untried = Bits::default();
        let mut ctx = Ctx {
            req,
            health,
            tried: &self.tried,
            filter: Filter::FRESH_HEALTHY,
            latency: route.latency,
            out_tokens: if route.uses_latency { f64::from(req.expected_output_tokens()) } else { 0.0 },
            key_hash: if route.uses_affinity { req.affinity_key().map(|k| fnv1a(k.as_bytes())) } else { None },
        };
        let mut rng = Rng::new(random);
        for cooled in [false, true] {
            if cooled && route.breaker.cool_last {
                return None;
            }
            for (g, group) in route.groups.iter().enumerate().take(last + 1).skip(self.group) {
                let current = g == self.group;
                ctx.tried = if current { &self.tried } else { &untried };
                let filters: &[Filter] = match (cooled, current) {
                    (false, true) => &[Filter::FRESH_HEALTHY, Filter::HEALTHY],
                    (false, false) => &[Filter::HEALTHY],
                    (true, true) => &[Filter::FRESH, Filter::ANY],
                    (true, false) => &[Filter::ANY],
                };
                for &filter in filters {
                    ctx.filter = filter;
                    if let Some((target, slot)) = pick_child(&ctx, group, &mut rng) {
                        return Some(Found { group: g, target, slot, cooled });
                    }
                }
            }
        }
        None
    }

    fn decide(&self, f: &Failure, now: Instant, random: u64) -> Decision {
        let route = self.route;
        match f.class {
            FailureClass::Client => Decision::GiveUp,
            FailureClass::ContextWindow => self.jump(route.fallback.context_window),
            FailureClass::ContentPolicy => self.jump(route.fallback.content_policy),
            // Each target of the group once at most: when an untried one is unavailable, `next`
            // may hand out a tried one again, and that must not loop without end.
            FailureClass::Auth
                if self.tried.count() < self.group_slots() && self.group_attempts < self.group_slots() =>
            {
                Decision::Retry(Duration::ZERO)
            }
            FailureClass::Auth => self.exhausted(f, true),
            FailureClass::Transient => {
                let retry = &route.retry;
                let retryable = match f.status {
                    Some(s) => retry.on_status.contains(&s),
                    None => retry.on_connection_error,
                };
                let limit = 1 + self.overrides.attempts.unwrap_or(retry.attempts);
                if !retryable || self.group_attempts >= limit {
                    return self.exhausted(f, false);
                }
                let budget = self.overrides.budget.unwrap_or(retry.budget);
                let left = budget.saturating_sub(now.saturating_duration_since(self.start));
                let after = match f.retry_after {
                    Some(asked) => asked,
                    None => backoff(retry, self.group_attempts.saturating_sub(1), random),
                };
                if left.is_zero() || after > left {
                    return self.exhausted(f, false);
                }
                Decision::Retry(after)
            }
        }
    }

    fn group_slots(&self) -> u32 {
        self.route.group_slots.get(self.group).copied().unwrap_or(0)
    }

    /// No more retries here: the next group if the failure is one to fall back on.
    fn exhausted(&self, f: &Failure, auth: bool) -> Decision {
        let next = self.group + 1;
        let falls_back = auth || f.status.is_none_or(|s| self.route.fallback.on_status.contains(&s));
        if falls_back && next < self.route.groups.len() && !self.overrides.no_fallback {
            Decision::Jump(next)
        } else {
            Decision::GiveUp
        }
    }

    /// Context-window and content-policy failures go to the configured group (forward only:
    /// a group already left would fail the same way).
    fn jump(&self, to: Option<usize>) -> Decision {
        match to {
            Some(g) if g > self.group && g < self.route.groups.len() && !self.overrides.no_fallback => {
                Decision::Jump(g)
            }
            _ => Decision::GiveUp,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::router::testkit::{Facts, Health, compile_yaml, id_of};

    fn fail(status: Option<u16>, class: FailureClass) -> Failure {
        Failure { status, retry_after: None, class }
    }

    const T503: Failure = Failure { status: Some(503), retry_after: None, class: FailureClass::Transient };

    /// Group 0: a weighted pair; group 1: one target; group 2: one target.
    const THREE_GROUPS: &str = r#"
targets:
  - route: {strategy: weighted, targets: [{target: a/m0}, {target: a/m1}]}
  - {target: b/m2}
  - {target: c/m3}
retry: {attempts: 2, backoff: 100ms, max_backoff: 1s, budget: 10s}
fallback: {context_window: 2, content_policy: 1}
"#;

    #[test]
    fn retries_within_attempts_then_falls_back_then_gives_up() {
        let (route, table) = compile_yaml(THREE_GROUPS);
        let health = Health::all_up(&table);
        let t0 = Instant::now();
        let mut plan = Plan::new(&route, Overrides::default(), t0);
        let facts = Facts::default();
        let first = plan.next(&facts, &health, 1).unwrap();
        assert!(!first.cooled);
        // A retry goes to the other target of the group first, then (all tried) to either.
        assert!(matches!(plan.failed(&T503, t0, 7), Next::Retry { .. }));
        let second = plan.next(&facts, &health, 2).unwrap();
        assert_ne!(first.target, second.target);
        assert!(matches!(plan.failed(&T503, t0, 7), Next::Retry { .. }));
        let third = plan.next(&facts, &health, 3).unwrap();
        assert!(route.group_targets(0).contains(&third.target));
        // 1 + 2 attempts made in group 0: fall back.
        assert_eq!(plan.failed(&T503, t0, 7), Next::Fallback);
        assert_eq!((plan.group(), plan.fallbacks()), (1, 1));
        assert_eq!(plan.next(&facts, &health, 4).unwrap().target, id_of(&table, "m2"));
        assert_eq!(plan.attempts(), 4);
        // A non-retryable status that is not in fallback.on_status: give up.
        assert_eq!(plan.failed(&fail(Some(501), FailureClass::Transient), t0, 0), Next::GiveUp);
        assert_eq!(plan.next(&facts, &health, 5), None);
    }

    #[test]
    fn backoff_grows_and_is_counted() {
        let (route, table) = compile_yaml(THREE_GROUPS);
        let health = Health::all_up(&table);
        let t0 = Instant::now();
        let mut plan = Plan::new(&route, Overrides::default(), t0);
        let facts = Facts::default();
        plan.next(&facts, &health, 1);
        let Next::Retry { after: a1 } = plan.failed(&T503, t0, u64::MAX) else { panic!() };
        plan.next(&facts, &health, 1);
        let Next::Retry { after: a2 } = plan.failed(&T503, t0, u64::MAX) else { panic!() };
        assert!(a1 < Duration::from_millis(100) && a1 > Duration::from_millis(99));
        assert!(a2 < Duration::from_millis(200) && a2 > Duration::from_millis(199));
        assert_eq!(plan.retry_wait(), a1 + a2);
    }

    #[test]
    fn retry_after_is_honoured_and_beyond_the_budget_falls_back() {
        let (route, table) = compile_yaml(THREE_GROUPS);
        let health = Health::all_up(&table);
        let t0 = Instant::now();
        let facts = Facts::default();
        let mut plan = Plan::new(&route, Overrides::default(), t0);
        plan.next(&facts, &health, 1);
        let asked = Failure { retry_after: Some(Duration::from_secs(3)), ..T503 };
        assert_eq!(plan.failed(&asked, t0, 0), Next::Retry { after: Duration::from_secs(3) });
        plan.next(&facts, &health, 1);
        // 9 s into a 10 s budget, a 3 s retry-after does not fit: fall back instead.
        assert_eq!(plan.failed(&asked, t0 + Duration::from_secs(9), 0), Next::Fallback);
        assert_eq!(plan.group(), 1);

        // The budget override applies the same way; a spent budget means no retry at all.
        let mut plan = Plan::new(&route, Overrides { budget: Some(Duration::from_secs(2)), ..Default::default() }, t0);
        plan.next(&facts, &health, 1);
        assert_eq!(plan.failed(&asked, t0, 0), Next::Fallback);
        let mut plan = Plan::new(&route, Overrides::default(), t0);
        plan.next(&facts, &health, 1);
        assert_eq!(plan.failed(&T503, t0 + Duration::from_secs(10), 0), Next::Fallback);
    }

    #[test]
    fn attempts_override() {
        let (route, table) = compile_yaml(THREE_GROUPS);
        let health = Health::all_up(&table);
        let t0 = Instant::now();
        let facts = Facts::default();
        let mut plan = Plan::new(&route, Overrides { attempts: Some(0), ..Default::default() }, t0);
        plan.next(&facts, &health, 1);
        assert_eq!(plan.failed(&T503, t0, 0), Next::Fallback);
        let mut plan = Plan::new(&route, Overrides { attempts: Some(4), ..Default::default() }, t0);
        for _ in 0..4 {
            plan.next(&facts, &health, 1);
            assert!(matches!(plan.failed(&T503, t0, 0), Next::Retry { .. }));
        }
        plan.next(&facts, &health, 1);
        assert_eq!(plan.failed(&T503, t0, 0), Next::Fallback);
    }

    #[test]
    fn fallback_on_status_and_connection_errors() {
        let (route, table) = compile_yaml(
            "targets: [{target: a/m0}, {target: b/m1}]\nretry: {attempts: 0, on_connection_error: false}\nfallback: {on_status: [503]}",
        );
        let health = Health::all_up(&table);
        let t0 = Instant::now();
        let facts = Facts::default();
        for (status, expected) in [(Some(503), Next::Fallback), (Some(500), Next::GiveUp), (None, Next::Fallback)] {
            let mut plan = Plan::new(&route, Overrides::default(), t0);
            plan.next(&facts, &health, 1);
            assert_eq!(plan.failed(&fail(status, FailureClass::Transient), t0, 0), expected, "{status:?}");
        }
        // In the last group there is nowhere to fall back to.
        let mut plan = Plan::new(&route, Overrides::default(), t0);
        plan.next(&facts, &health, 1);
        assert_eq!(plan.failed(&T503, t0, 0), Next::Fallback);
        plan.next(&facts, &health, 1);
        assert_eq!(plan.failed(&T503, t0, 0), Next::GiveUp);
    }

    #[test]
    fn context_window_and_content_policy_jump_to_their_groups() {
        let (route, table) = compile_yaml(THREE_GROUPS);
        let health = Health::all_up(&table);
        let t0 = Instant::now();
        let facts = Facts::default();
        let mut plan = Plan::new(&route, Overrides::default(), t0);
        plan.next(&facts, &health, 1);
        assert_eq!(plan.failed(&fail(Some(400), FailureClass::ContextWindow), t0, 0), Next::Fallback);
        assert_eq!(plan.group(), 2);
        assert_eq!(plan.next(&facts, &health, 1).unwrap().target, id_of(&table, "m3"));
        // Already there: no going back.
        assert_eq!(plan.failed(&fail(Some(400), FailureClass::ContentPolicy), t0, 0), Next::GiveUp);

        let mut plan = Plan::new(&route, Overrides::default(), t0);
        plan.next(&facts, &health, 1);
        assert_eq!(plan.failed(&fail(Some(400), FailureClass::ContentPolicy), t0, 0), Next::Fallback);
        assert_eq!(plan.group(), 1);

        // Not configured: give up.
        let (route, table) = compile_yaml("targets: [{target: a/m0}, {target: b/m1}]");
        let health = Health::all_up(&table);
        let mut plan = Plan::new(&route, Overrides::default(), t0);
        plan.next(&facts, &health, 1);
        assert_eq!(plan.failed(&fail(Some(400), FailureClass::ContextWindow), t0, 0), Next::GiveUp);
    }

    #[test]
    fn auth_tries_another_target_at_once_then_falls_back() {
        let (route, table) = compile_yaml(THREE_GROUPS);
        let health = Health::all_up(&table);
        let t0 = Instant::now();
        let facts = Facts::default();
        let mut plan = Plan::new(&route, Overrides { attempts: Some(0), ..Default::default() }, t0);
        let auth = fail(Some(401), FailureClass::Auth);
        let first = plan.next(&facts, &health, 1).unwrap();
        assert_eq!(plan.failed(&auth, t0, 0), Next::Retry { after: Duration::ZERO });
        let second = plan.next(&facts, &health, 1).unwrap();
        assert_ne!(first.target, second.target);
        // Both tried: like exhausted retries (auth falls back although 401 is not in on_status).
        assert_eq!(plan.failed(&auth, t0, 0), Next::Fallback);
        plan.next(&facts, &health, 1);
        assert_eq!(plan.failed(&auth, t0, 0), Next::Fallback);
        plan.next(&facts, &health, 1);
        assert_eq!(plan.failed(&auth, t0, 0), Next::GiveUp);
    }

    #[test]
    fn auth_retries_are_bounded_when_the_untried_target_is_unavailable() {
        let (route, table) = compile_yaml(THREE_GROUPS);
        let mut health = Health::all_up(&table);
        health.set(id_of(&table, "m1"), false);
        let t0 = Instant::now();
        let facts = Facts::default();
        let mut plan = Plan::new(&route, Overrides::default(), t0);
        let auth = fail(Some(401), FailureClass::Auth);
        let m0 = id_of(&table, "m0");
        assert_eq!(plan.next(&facts, &health, 1).unwrap().target, m0);
        assert_eq!(plan.failed(&auth, t0, 0), Next::Retry { after: Duration::ZERO });
        assert_eq!(plan.next(&facts, &health, 1).unwrap().target, m0);
        assert_eq!(plan.failed(&auth, t0, 0), Next::Fallback);
    }

    #[test]
    fn client_errors_give_up() {
        let (route, table) = compile_yaml(THREE_GROUPS);
        let health = Health::all_up(&table);
        let t0 = Instant::now();
        let mut plan = Plan::new(&route, Overrides::default(), t0);
        plan.next(&Facts::default(), &health, 1);
        assert_eq!(plan.failed(&fail(Some(404), FailureClass::Client), t0, 0), Next::GiveUp);
        assert_eq!(plan.next(&Facts::default(), &health, 1), None);
        assert_eq!(plan.failed(&T503, t0, 0), Next::GiveUp);
    }

    #[test]
    fn no_fallback_override() {
        let (route, table) = compile_yaml(THREE_GROUPS);
        let mut health = Health::all_up(&table);
        let t0 = Instant::now();
        let facts = Facts::default();
        let no_fallback = Overrides { no_fallback: true, attempts: Some(0), ..Default::default() };
        let mut plan = Plan::new(&route, no_fallback, t0);
        plan.next(&facts, &health, 1);
        assert_eq!(plan.failed(&T503, t0, 0), Next::GiveUp);
        let mut plan = Plan::new(&route, no_fallback, t0);
        plan.next(&facts, &health, 1);
        assert_eq!(plan.failed(&fail(Some(400), FailureClass::ContextWindow), t0, 0), Next::GiveUp);
        // Group 0 down: without the override the plan moves on; with it, it stays (cooled).
        health.set(id_of(&table, "m0"), false);
        health.set(id_of(&table, "m1"), false);
        let pick = Plan::new(&route, Overrides::default(), t0).next(&facts, &health, 1).unwrap();
        assert_eq!((pick.target, pick.cooled), (id_of(&table, "m2"), false));
        let pick = Plan::new(&route, no_fallback, t0).next(&facts, &health, 1).unwrap();
        assert!(pick.cooled && route.group_targets(0).contains(&pick.target));
    }

    #[test]
    fn next_skips_unavailable_groups_and_uses_cooled_targets_last() {
        let (route, table) = compile_yaml(THREE_GROUPS);
        let mut health = Health::all_up(&table);
        let facts = Facts::default();
        let t0 = Instant::now();
        for m in ["m0", "m1", "m2"] {
            health.set(id_of(&table, m), false);
        }
        let mut plan = Plan::new(&route, Overrides::default(), t0);
        let pick = plan.next(&facts, &health, 1).unwrap();
        assert_eq!((pick.target, pick.cooled), (id_of(&table, "m3"), false));
        assert_eq!((plan.group(), plan.fallbacks()), (2, 1));

        health.set(id_of(&table, "m3"), false);
        let mut plan = Plan::new(&route, Overrides::default(), t0);
        let pick = plan.next(&facts, &health, 1).unwrap();
        assert!(pick.cooled && route.group_targets(0).contains(&pick.target));
        assert_eq!(plan.group(), 0);

        let (route, table) = compile_yaml("targets: [{target: a/m0}]\nbreaker: {cool_last: true}");
        let mut health = Health::all_up(&table);
        health.set(id_of(&table, "m0"), false);
        assert_eq!(Plan::new(&route, Overrides::default(), t0).next(&facts, &health, 1), None);
    }

    #[test]
    fn retry_repicks_a_tried_target_when_nothing_else_is_available() {
        let (route, table) = compile_yaml(THREE_GROUPS);
        let mut health = Health::all_up(&table);
        health.set(id_of(&table, "m1"), false);
        let facts = Facts::default();
        let t0 = Instant::now();
        let mut plan = Plan::new(&route, Overrides::default(), t0);
        let m0 = id_of(&table, "m0");
        assert_eq!(plan.next(&facts, &health, 1).unwrap(), Pick { target: m0, cooled: false });
        plan.failed(&T503, t0, 0);
        assert_eq!(plan.next(&facts, &health, 2).unwrap(), Pick { target: m0, cooled: false });
        assert_eq!(plan.group(), 0);
    }

    #[test]
    fn single_target_route_never_retries() {
        let mut table = crate::router::TargetTable::default();
        let route = crate::router::single("m", "a", "x", &mut table);
        let health = Health::all_up(&table);
        let t0 = Instant::now();
        let mut plan = Plan::new(&route, Overrides::default(), t0);
        assert!(plan.next(&Facts::default(), &health, 0).is_some());
        assert_eq!(plan.failed(&T503, t0, 0), Next::GiveUp);
    }
}
