//! The strategies: how a node of a route chooses among its children.
//!
//! Picking walks the route's tree from a fallback group down: each node chooses one child by its
//! strategy among the children that still have an eligible target (see [`Filter`]), then recurses
//! into it. A nested route competes through a [`Summary`] of its eligible targets (its best
//! latency score, least in-flight, most headroom, lowest cost), so a strategy treats a nested
//! route like a target that is as good as the best target inside it.
//!
//! Everything here is pure and allocation-free: health comes from [`HealthView`], random numbers
//! from an [`Rng`] seeded with the caller's `u64`, and strategies work in passes over the
//! children (a `u64` mask remembers eligibility for the first 64 of them).

use super::condition::RequestFacts;
use super::route::{Child, ChildKind, LatencyPolicy, Node, Strategy};
use super::table::TargetId;

/// What the router may know about a target right now (the engine implements it from the
/// shard's state).
pub trait HealthView {
    fn health(&self, t: TargetId) -> TargetHealth;
}

#[derive(Clone, Copy, Default, Debug, PartialEq)]
pub struct TargetHealth {
    /// The breaker allows a request now (closed, or half-open with a free probe).
    pub available: bool,
    pub in_flight: u32,
    /// EWMA of the time to first token, µs; 0 = no sample.
    pub ttft_us: f64,
    /// EWMA of the time per output token, µs; 0 = no sample.
    pub tpot_us: f64,
    pub samples: u32,
    /// Requests in the last minute (estimate).
    pub rpm_used: u64,
    /// Tokens in the last minute (estimate).
    pub tpm_used: u64,
}

/// splitmix64: a stream of well-mixed numbers from one caller-supplied `u64`, so that one
/// random number per pick serves every level of a nested route.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `0..n` (`0` when `n == 0`), by multiply-shift rather than a biased modulo.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// splitmix64's finaliser: a fixed bijective mix, the same on every machine and process.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a: a fixed, seedless hash (unlike std's `RandomState`), for affinity keys and target
/// identities, so that every shard and process ranks targets the same way for a key.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3))
}

/// A set of slot numbers: one word inline (no allocation for groups of up to 64 targets).
#[derive(Debug, Default, Clone)]
pub(crate) struct Bits {
    small: u64,
    big: Vec<u64>,
}

impl Bits {
    pub(crate) fn for_len(n: u32) -> Bits {
        let extra = (n.saturating_sub(64) as usize).div_ceil(64);
        Bits { small: 0, big: if extra == 0 { Vec::new() } else { vec![0; extra] } }
    }

    pub(crate) fn get(&self, i: u32) -> bool {
        if i < 64 {
            (self.small >> i) & 1 == 1
        } else {
            let j = (i - 64) as usize;
            self.big.get(j / 64).is_some_and(|w| (w >> (j % 64)) & 1 == 1)
        }
    }

    pub(crate) fn set(&mut self, i: u32) {
        if i < 64 {
            self.small |= 1 << i;
        } else {
            let j = (i - 64) as usize;
            if let Some(w) = self.big.get_mut(j / 64) {
                *w |= 1 << (j % 64);
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        self.small = 0;
        self.big.iter_mut().for_each(|w| *w = 0);
    }

    pub(crate) fn count(&self) -> u32 {
        self.small.count_ones() + self.big.iter().map(|w| w.count_ones()).sum::<u32>()
    }
}

/// Which targets may be picked: `fresh` = not yet tried in this group, `healthy` = available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Filter {
    pub(crate) fresh: bool,
    pub(crate) healthy: bool,
}

impl Filter {
    pub(crate) const FRESH_HEALTHY: Filter = Filter { fresh: true, healthy: true };
    pub(crate) const HEALTHY: Filter = Filter { fresh: false, healthy: true };
    pub(crate) const FRESH: Filter = Filter { fresh: true, healthy: false };
    pub(crate) const ANY: Filter = Filter { fresh: false, healthy: false };
}

/// Everything a pick reads, gathered once per `Plan::next`.
pub(crate) struct Ctx<'a> {
    pub(crate) req: &'a dyn RequestFacts,
    pub(crate) health: &'a dyn HealthView,
    pub(crate) tried: &'a Bits,
    pub(crate) filter: Filter,
    pub(crate) latency: LatencyPolicy,
    pub(crate) out_tokens: f64,
    /// Hash of the request's affinity key, when the route hashes one and the request has one.
    pub(crate) key_hash: Option<u64>,
}

/// A child as the strategies see it (for a nested route: the best of its eligible targets).
#[derive(Debug, Clone, Copy)]
struct Summary {
    in_flight: u32,
    /// Latency score; infinite while not measured enough (`samples < min_samples`).
    score: f64,
    samples: u32,
    headroom: f64,
    cost: f64,
}

impl Summary {
    fn merge(self, o: Summary) -> Summary {
        Summary {
            in_flight: self.in_flight.min(o.in_flight),
            score: self.score.min(o.score),
            samples: self.samples.max(o.samples),
            headroom: self.headroom.max(o.headroom),
            cost: self.cost.min(o.cost),
        }
    }
}

/// Picks a target in `child` (a fallback group, or any child): `(target, slot)`.
pub(crate) fn pick_child(ctx: &Ctx<'_>, child: &Child, rng: &mut Rng) -> Option<(TargetId, u32)> {
    match &child.kind {
        ChildKind::Target { id, slot } => leaf(ctx, child, *id, *slot).map(|_| (*id, *slot)),
        ChildKind::Route(node) => pick_node(ctx, node, rng),
    }
}

fn pick_node(ctx: &Ctx<'_>, node: &Node, rng: &mut Rng) -> Option<(TargetId, u32)> {
    let chosen = match node.strategy {
        Strategy::Fallback => node.children.iter().position(|c| eligible(ctx, c)),
        Strategy::Conditional => {
            selected(ctx, node).filter(|&i| node.children.get(i).is_some_and(|c| eligible(ctx, c)))
        }
        Strategy::Weighted => weighted(ctx, node, rng),
        Strategy::Affinity => match ctx.key_hash {
            Some(key) => rendezvous(ctx, node, key),
            None => weighted(ctx, node, rng),
        },
        Strategy::Latency => latency(ctx, node, rng),
        Strategy::LeastBusy => best_by(ctx, node, rng, |s| -f64::from(s.in_flight)),
        Strategy::Usage => best_by(ctx, node, rng, |s| s.headroom),
        Strategy::Cost => best_by(ctx, node, rng, |s| -s.cost),
    }?;
    // The strategy chose among eligible children: a target needs no second look.
    match &node.children.get(chosen)?.kind {
        ChildKind::Target { id, slot } => Some((*id, *slot)),
        ChildKind::Route(inner) => pick_node(ctx, inner, rng),
    }
}

/// Whether the child has a target the filter allows (cheaper than a [`Summary`] for a target).
fn eligible(ctx: &Ctx<'_>, child: &Child) -> bool {
    match &child.kind {
        ChildKind::Target { id, slot } => allowed(ctx, *id, *slot).is_some(),
        ChildKind::Route(_) => summarize(ctx, child).is_some(),
    }
}

/// The target's health, if the filter allows the target.
fn allowed(ctx: &Ctx<'_>, id: TargetId, slot: u32) -> Option<TargetHealth> {
    if ctx.filter.fresh && ctx.tried.get(slot) {
        return None;
    }
    let h = ctx.health.health(id);
    (h.available || !ctx.filter.healthy).then_some(h)
}

/// The child's summary, or `None` when it has no target the filter allows.
fn summarize(ctx: &Ctx<'_>, child: &Child) -> Option<Summary> {
    match &child.kind {
        ChildKind::Target { id, slot } => leaf(ctx, child, *id, *slot),
        ChildKind::Route(node) => match node.strategy {
            // What these would pick is what they offer.
            Strategy::Fallback => node.children.iter().find_map(|c| summarize(ctx, c)),
            Strategy::Conditional => selected(ctx, node).and_then(|i| summarize(ctx, node.children.get(i)?)),
            _ => node.children.iter().filter_map(|c| summarize(ctx, c)).reduce(Summary::merge),
        },
    }
}

fn leaf(ctx: &Ctx<'_>, child: &Child, id: TargetId, slot: u32) -> Option<Summary> {
    let h = allowed(ctx, id, slot)?;
    let measured = h.samples >= ctx.latency.min_samples;
    Some(Summary {
        in_flight: h.in_flight,
        score: if measured { h.ttft_us + h.tpot_us * ctx.out_tokens } else { f64::INFINITY },
        samples: h.samples,
        headroom: headroom(child, &h),
        cost: child.cost,
    })
}

/// min(1 − used/limit) over the declared limits; 1 (all free) when none is declared.
fn headroom(child: &Child, h: &TargetHealth) -> f64 {
    let free = |limit: Option<u64>, used: u64| limit.map_or(1.0, |l| 1.0 - used as f64 / l.max(1) as f64);
    free(child.rpm, h.rpm_used).min(free(child.tpm, h.tpm_used))
}

/// The first child whose `when` holds, else the default child.
fn selected(ctx: &Ctx<'_>, node: &Node) -> Option<usize> {
    node.children.iter().position(|c| c.when.as_ref().is_some_and(|w| w.holds(ctx.req))).or(node.default)
}

/// Eligibility of the first 64 children, remembered for a second pass.
struct Mask(u64);

impl Mask {
    fn set(&mut self, i: usize) {
        if i < 64 {
            self.0 |= 1 << i;
        }
    }

    /// Whether child `i` was eligible in the first pass (past 64: asked again).
    fn has(&self, ctx: &Ctx<'_>, i: usize, child: &Child) -> bool {
        if i < 64 { (self.0 >> i) & 1 == 1 } else { eligible(ctx, child) }
    }
}

/// Random by weight among eligible children; uniform when all eligible weights are 0.
fn weighted(ctx: &Ctx<'_>, node: &Node, rng: &mut Rng) -> Option<usize> {
    let mut mask = Mask(0);
    let (mut total, mut count) = (0u64, 0u64);
    for (i, c) in node.children.iter().enumerate() {
        if eligible(ctx, c) {
            mask.set(i);
            total += u64::from(c.weight);
            count += 1;
        }
    }
    if count == 0 {
        return None;
    }
    let uniform = total == 0;
    let mut r = rng.below(if uniform { count } else { total });
    for (i, c) in node.children.iter().enumerate() {
        if !mask.has(ctx, i, c) {
            continue;
        }
        let w = if uniform { 1 } else { u64::from(c.weight) };
        if r < w {
            return Some(i);
        }
        r -= w;
    }
    None
}

/// Highest random weight: the child ranking first for this key, among the eligible ones. Only
/// the key's own top child leaving moves it, and then only to its next-ranked child.
fn rendezvous(ctx: &Ctx<'_>, node: &Node, key: u64) -> Option<usize> {
    node.children
        .iter()
        .enumerate()
        .filter(|(_, c)| eligible(ctx, c))
        .max_by_key(|(_, c)| mix(key ^ c.seed))
        .map(|(i, _)| i)
}

/// A child as the latency strategy sees it.
#[derive(Debug, Clone, Copy)]
struct Scored {
    score: f64,
    in_flight: u32,
    measured: bool,
}

#[inline(always)] // keeps the result in registers: a round trip through memory stalls
fn scored(ctx: &Ctx<'_>, child: &Child) -> Option<Scored> {
    let s = match &child.kind {
        ChildKind::Target { id, slot } => {
            let h = allowed(ctx, *id, *slot)?;
            Summary {
                in_flight: h.in_flight,
                score: h.ttft_us + h.tpot_us * ctx.out_tokens,
                samples: h.samples,
                headroom: 1.0,
                cost: 0.0,
            }
        }
        ChildKind::Route(_) => summarize(ctx, child)?,
    };
    Some(Scored { score: s.score, in_flight: s.in_flight, measured: s.samples >= ctx.latency.min_samples })
}

/// Unmeasured children first (random among them); else power of two choices by in-flight
/// among the children scoring within `equal_within` of the best.
fn latency(ctx: &Ctx<'_>, node: &Node, rng: &mut Rng) -> Option<usize> {
    // The first children's scores from the first pass, so that later passes need not ask for
    // their health again (`None`: not eligible); children past these are scored again.
    const CACHED: usize = 16;
    let mut cache = [None::<Scored>; CACHED];
    let (mut best, mut unmeasured, mut eligible) = (f64::INFINITY, 0u64, 0u64);
    for (i, c) in node.children.iter().enumerate() {
        let Some(s) = scored(ctx, c) else { continue };
        if let Some(entry) = cache.get_mut(i) {
            *entry = Some(s);
        }
        eligible += 1;
        if !s.measured {
            unmeasured += 1;
        } else if s.score < best {
            best = s.score;
        }
    }
    if eligible == 0 {
        return None;
    }
    let view = |i: usize, c: &Child| cache.get(i).map_or_else(|| scored(ctx, c), |cached| *cached);
    if unmeasured > 0 {
        let k = rng.below(unmeasured);
        return nth(node, k, |i, c| view(i, c).filter(|s| !s.measured)).map(|(i, _)| i);
    }
    let limit = best * ctx.latency.equal_within;
    let member = |i: usize, c: &Child| view(i, c).filter(|s| s.score <= limit);
    let n = node.children.iter().enumerate().filter(|(i, c)| member(*i, c).is_some()).count() as u64;
    if n < 2 {
        return nth(node, 0, member).map(|(i, _)| i);
    }
    // Two distinct random members; the less busy wins (a tie: either, at random).
    let a_at = rng.below(n);
    let b_at = rng.below(n - 1);
    let b_at = if b_at >= a_at { b_at + 1 } else { b_at };
    let a = nth(node, a_at, member)?;
    let b = nth(node, b_at, member)?;
    Some(match a.1.in_flight.cmp(&b.1.in_flight) {
        std::cmp::Ordering::Less => a.0,
        std::cmp::Ordering::Greater => b.0,
        std::cmp::Ordering::Equal if rng.below(2) == 0 => a.0,
        std::cmp::Ordering::Equal => b.0,
    })
}

/// The `k`-th (from 0) child that `keep` gives a value for.
fn nth<T>(node: &Node, k: u64, keep: impl Fn(usize, &Child) -> Option<T>) -> Option<(usize, T)> {
    node.children.iter().enumerate().filter_map(|(i, c)| keep(i, c).map(|v| (i, v))).nth(k as usize)
}

/// The eligible child with the highest `key`, ties broken at random (reservoir sampling).
fn best_by(ctx: &Ctx<'_>, node: &Node, rng: &mut Rng, key: impl Fn(&Summary) -> f64) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    let mut ties = 0u64;
    for (i, c) in node.children.iter().enumerate() {
        let Some(s) = summarize(ctx, c) else { continue };
        let k = key(&s);
        match best {
            Some((_, b)) if k < b => {}
            Some((_, b)) if k == b => {
                ties += 1;
                if rng.below(ties) == 0 {
                    best = Some((i, k));
                }
            }
            _ => {
                best = Some((i, k));
                ties = 1;
            }
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Instant;

    use super::*;
    use crate::router::plan::{Overrides, Plan};
    use crate::router::testkit::{Facts, Health, compile_yaml, id_of};
    use crate::router::{Field, FieldValue, Route, TargetTable};

    /// How often each upstream model is picked first by a fresh plan over `n` deterministic
    /// random numbers.
    fn tally(route: &Route, table: &TargetTable, health: &Health, facts: &Facts, n: u64) -> BTreeMap<String, u64> {
        let now = Instant::now();
        let mut out = BTreeMap::new();
        for i in 0..n {
            let pick =
                Plan::new(route, Overrides::default(), now).next(facts, health, i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let model = table.get(pick.unwrap().target).unwrap().model.clone();
            *out.entry(model).or_insert(0) += 1;
        }
        out
    }

    fn share(t: &BTreeMap<String, u64>, model: &str) -> f64 {
        *t.get(model).unwrap_or(&0) as f64 / t.values().sum::<u64>() as f64
    }

    fn measured(health: &mut Health, id: TargetId, ttft_us: f64, tpot_us: f64, in_flight: u32) {
        let h = health.get_mut(id);
        (h.ttft_us, h.tpot_us, h.in_flight, h.samples) = (ttft_us, tpot_us, in_flight, 100);
    }

    #[test]
    fn weighted_follows_weights_within_statistical_bounds() {
        let (route, table) =
            compile_yaml("strategy: weighted\ntargets: [{target: a/x, weight: 3}, {target: a/y, weight: 1}]");
        let t = tally(&route, &table, &Health::all_up(&table), &Facts::default(), 20_000);
        // σ = √(0.75·0.25/20000) ≈ 0.003; allow 5σ.
        assert!((share(&t, "x") - 0.75).abs() < 0.015, "{t:?}");

        // Capacity-derived weights: rpm 600 vs tpm 200k (= 200).
        let (route, table) =
            compile_yaml("strategy: weighted\ntargets: [{target: a/x, rpm: 600}, {target: a/y, tpm: 200000}]");
        let t = tally(&route, &table, &Health::all_up(&table), &Facts::default(), 20_000);
        assert!((share(&t, "x") - 0.75).abs() < 0.015, "{t:?}");

        // A nested route competes with the weight of its child entry.
        let (route, table) = compile_yaml(
            "strategy: weighted\ntargets: [{target: a/x, weight: 1}, {weight: 4, route: {strategy: weighted, targets: [{target: a/y}, {target: a/z}]}}]",
        );
        let t = tally(&route, &table, &Health::all_up(&table), &Facts::default(), 20_000);
        assert!((share(&t, "x") - 0.2).abs() < 0.015, "{t:?}");
        assert!((share(&t, "y") - 0.4).abs() < 0.02, "{t:?}");
    }

    #[test]
    fn weighted_skips_unavailable_and_zero_weights_are_standby() {
        let (route, table) = compile_yaml(
            "strategy: weighted\ntargets: [{target: a/x, weight: 3}, {target: a/y, weight: 1}, {target: a/z, weight: 0}]",
        );
        let mut health = Health::all_up(&table);
        health.set(id_of(&table, "x"), false);
        let t = tally(&route, &table, &health, &Facts::default(), 1000);
        assert_eq!(t.get("y"), Some(&1000), "{t:?}");
        // Only weight-0 children left: uniform among them.
        health.set(id_of(&table, "y"), false);
        let t = tally(&route, &table, &health, &Facts::default(), 100);
        assert_eq!(t.get("z"), Some(&100), "{t:?}");
    }

    #[test]
    fn latency_explores_unmeasured_targets_first() {
        let (route, table) = compile_yaml("strategy: latency\ntargets: [{target: a/x}, {target: a/y}, {target: a/z}]");
        let mut health = Health::all_up(&table);
        measured(&mut health, id_of(&table, "x"), 100.0, 0.0, 0);
        health.get_mut(id_of(&table, "y")).samples = 4; // below min_samples 5
        let t = tally(&route, &table, &health, &Facts::default(), 2000);
        assert_eq!(t.get("x"), None, "{t:?}");
        assert!((share(&t, "y") - 0.5).abs() < 0.05, "{t:?}");
    }

    #[test]
    fn latency_prefers_the_equal_set_and_compares_two_by_in_flight() {
        let yaml =
            "strategy: latency\ntargets: [{target: a/x}, {target: a/y}, {target: a/z}]\nlatency: {equal_within: 1.2}";
        let (route, table) = compile_yaml(yaml);
        let (x, y, z) = (id_of(&table, "x"), id_of(&table, "y"), id_of(&table, "z"));
        let mut health = Health::all_up(&table);
        // score = ttft + tpot × 256: x 1000+0, y 1100, z 2000 (outside 1.2 × best).
        measured(&mut health, x, 1000.0, 0.0, 0);
        measured(&mut health, y, 1100.0, 0.0, 0);
        measured(&mut health, z, 2000.0, 0.0, 0);
        let t = tally(&route, &table, &health, &Facts::default(), 2000);
        assert_eq!(t.get("z"), None, "{t:?}");
        assert!((share(&t, "x") - 0.5).abs() < 0.05, "{t:?}");
        // Within the equal set, the less busy of two wins.
        health.get_mut(x).in_flight = 5;
        let t = tally(&route, &table, &health, &Facts::default(), 500);
        assert_eq!(t.get("y"), Some(&500), "{t:?}");
        // Three equal: the busiest never wins a comparison, the least busy wins both of its.
        measured(&mut health, z, 1050.0, 0.0, 9);
        health.get_mut(x).in_flight = 0;
        health.get_mut(y).in_flight = 5;
        let t = tally(&route, &table, &health, &Facts::default(), 3000);
        assert_eq!(t.get("z"), None, "{t:?}");
        assert!((share(&t, "x") - 2.0 / 3.0).abs() < 0.05, "{t:?}");
    }

    #[test]
    fn latency_score_counts_expected_output_tokens() {
        let (route, table) = compile_yaml("strategy: latency\ntargets: [{target: a/x}, {target: a/y}]");
        let mut health = Health::all_up(&table);
        // x: fast first token, slow tokens; y: the opposite.
        measured(&mut health, id_of(&table, "x"), 100.0, 10.0, 0);
        measured(&mut health, id_of(&table, "y"), 1000.0, 1.0, 0);
        let long = Facts { out_tokens: 2000, ..Facts::default() };
        assert_eq!(tally(&route, &table, &health, &long, 100).get("y"), Some(&100));
        let short = Facts { out_tokens: 10, ..Facts::default() };
        assert_eq!(tally(&route, &table, &health, &short, 100).get("x"), Some(&100));
    }

    #[test]
    fn least_busy_with_random_ties() {
        let (route, table) =
            compile_yaml("strategy: least-busy\ntargets: [{target: a/x}, {target: a/y}, {target: a/z}]");
        let mut health = Health::all_up(&table);
        health.get_mut(id_of(&table, "x")).in_flight = 3;
        health.get_mut(id_of(&table, "y")).in_flight = 1;
        health.get_mut(id_of(&table, "z")).in_flight = 2;
        assert_eq!(tally(&route, &table, &health, &Facts::default(), 100).get("y"), Some(&100));
        health.get_mut(id_of(&table, "z")).in_flight = 1;
        let t = tally(&route, &table, &health, &Facts::default(), 2000);
        assert_eq!(t.get("x"), None);
        assert!((share(&t, "y") - 0.5).abs() < 0.05, "{t:?}");
    }

    #[test]
    fn usage_picks_the_most_headroom() {
        let (route, table) = compile_yaml(
            "strategy: usage\ntargets: [{target: a/x, rpm: 100, tpm: 10000}, {target: a/y, rpm: 1000}, {target: a/z, tpm: 1000}]",
        );
        let mut health = Health::all_up(&table);
        let (x, y, z) = (id_of(&table, "x"), id_of(&table, "y"), id_of(&table, "z"));
        // x: min(1 − 10/100, 1 − 9000/10000) = 0.1; y: 1 − 500/1000 = 0.5; z: 1 − 100/1000 = 0.9.
        (health.get_mut(x).rpm_used, health.get_mut(x).tpm_used) = (10, 9000);
        health.get_mut(y).rpm_used = 500;
        health.get_mut(z).tpm_used = 100;
        assert_eq!(tally(&route, &table, &health, &Facts::default(), 100).get("z"), Some(&100));
        health.get_mut(z).tpm_used = 800;
        assert_eq!(tally(&route, &table, &health, &Facts::default(), 100).get("y"), Some(&100));
        // Undeclared limits are unlimited.
        let (route, table) = compile_yaml("strategy: usage\ntargets: [{target: a/x, rpm: 100}, {target: a/y}]");
        let mut health = Health::all_up(&table);
        health.get_mut(id_of(&table, "x")).rpm_used = 1;
        health.get_mut(id_of(&table, "y")).rpm_used = 1_000_000;
        assert_eq!(tally(&route, &table, &health, &Facts::default(), 100).get("y"), Some(&100));
    }

    #[test]
    fn cost_picks_the_cheapest_and_unpriced_last() {
        let (route, table) = compile_yaml(
            "strategy: cost\ntargets: [{target: a/x}, {target: a/y, price: {input: 3, output: 15}}, {target: a/z, price: {input: 5, output: 13}}, {target: a/w, price: {input: 2, output: 17}}]",
        );
        let mut health = Health::all_up(&table);
        let t = tally(&route, &table, &health, &Facts::default(), 2000);
        assert_eq!(t.get("x"), None);
        assert_eq!(t.get("w"), None);
        assert!((share(&t, "y") - 0.5).abs() < 0.05, "ties are random: {t:?}");
        for m in ["y", "z", "w"] {
            health.set(id_of(&table, m), false);
        }
        assert_eq!(tally(&route, &table, &health, &Facts::default(), 10).get("x"), Some(&10));
    }

    #[test]
    fn conditional_first_match_then_default_then_nothing() {
        let yaml = r#"
strategy: conditional
targets:
  - {target: a/gold, when: {metadata.tier: gold}}
  - {target: a/big, when: {params.max_tokens: {$gt: 1000}}}
  - {target: a/dflt}
"#;
        let (route, table) = compile_yaml(yaml);
        let health = Health::all_up(&table);
        let gold = Facts::default().with(Field::Metadata("tier".into()), FieldValue::Str("gold"));
        let gold_big = Facts::default()
            .with(Field::Metadata("tier".into()), FieldValue::Str("gold"))
            .body(serde_json::json!({"max_tokens": 4000}));
        let big = Facts::default().body(serde_json::json!({"max_tokens": 4000}));
        assert_eq!(tally(&route, &table, &health, &gold, 10).get("gold"), Some(&10));
        assert_eq!(tally(&route, &table, &health, &gold_big, 10).get("gold"), Some(&10));
        assert_eq!(tally(&route, &table, &health, &big, 10).get("big"), Some(&10));
        assert_eq!(tally(&route, &table, &health, &Facts::default(), 10).get("dflt"), Some(&10));

        let (route, table) = compile_yaml("strategy: conditional\ntargets: [{target: a/gold, when: {team: x}}]");
        let health = Health::all_up(&table);
        assert_eq!(Plan::new(&route, Overrides::default(), Instant::now()).next(&Facts::default(), &health, 1), None);
    }

    #[test]
    fn nested_fallback_takes_the_first_child_with_an_available_target() {
        let (route, table) = compile_yaml(
            "strategy: weighted\ntargets: [{route: {strategy: priority, targets: [{target: a/x, priority: 1}, {target: a/y}]}}]",
        );
        let mut health = Health::all_up(&table);
        assert_eq!(tally(&route, &table, &health, &Facts::default(), 20).get("y"), Some(&20));
        health.set(id_of(&table, "y"), false);
        assert_eq!(tally(&route, &table, &health, &Facts::default(), 20).get("x"), Some(&20));
    }

    #[test]
    fn affinity_sticks_to_a_key_and_moves_only_when_its_target_is_unavailable() {
        let yaml = "strategy: affinity\naffinity: {header: x-session-id}\ntargets: [{target: a/w}, {target: a/x}, {target: a/y}, {target: a/z}]";
        let (route, table) = compile_yaml(yaml);
        let mut health = Health::all_up(&table);
        let first = |health: &Health, key: &str, random: u64| {
            let facts = Facts::default().key(key);
            Plan::new(&route, Overrides::default(), Instant::now()).next(&facts, health, random).unwrap().target
        };
        let keys: Vec<String> = (0..200).map(|i| format!("session-{i}")).collect();
        let home: Vec<TargetId> = keys.iter().map(|k| first(&health, k, 0)).collect();
        // Stable whatever the random number; spread over all targets.
        for (k, h) in keys.iter().zip(&home) {
            for r in [1, 99, u64::MAX] {
                assert_eq!(first(&health, k, r), *h);
            }
        }
        for (id, _) in table.iter() {
            assert!(home.iter().filter(|h| **h == id).count() > 20);
        }
        // The same ranking on another "process": recompiling gives the same homes.
        let (again, _) = compile_yaml(yaml);
        let facts = Facts::default().key(&keys[7]);
        assert_eq!(
            Plan::new(&again, Overrides::default(), Instant::now()).next(&facts, &health, 5).unwrap().target,
            home[7]
        );
        // Take x away: only x's keys move.
        let x = id_of(&table, "x");
        health.set(x, false);
        for (k, h) in keys.iter().zip(&home) {
            let now = first(&health, k, 3);
            if *h == x {
                assert_ne!(now, x);
            } else {
                assert_eq!(now, *h);
            }
        }
        // Without a key: weighted.
        let t = tally(&route, &table, &Health::all_up(&table), &Facts::default(), 4000);
        assert!(t.values().all(|&n| n > 800), "{t:?}");
    }

    #[test]
    fn bits_beyond_one_word() {
        let mut b = Bits::for_len(200);
        for i in [0, 63, 64, 127, 128, 199] {
            assert!(!b.get(i));
            b.set(i);
            assert!(b.get(i));
        }
        assert_eq!(b.count(), 6);
        b.clear();
        assert_eq!(b.count(), 0);
        assert!(Bits::for_len(64).big.is_empty());
    }

    #[test]
    fn wide_groups_pick_every_target_once_before_repeating() {
        let targets: Vec<String> = (0..100).map(|i| format!("{{target: a/m{i}}}")).collect();
        let (route, table) = compile_yaml(&format!("strategy: weighted\ntargets: [{}]", targets.join(", ")));
        let health = Health::all_up(&table);
        let mut plan = Plan::new(&route, Overrides::default(), Instant::now());
        let mut seen = std::collections::HashSet::new();
        for r in 0..100u64 {
            assert!(seen.insert(plan.next(&Facts::default(), &health, r).unwrap().target));
        }
        assert!(plan.next(&Facts::default(), &health, 100).is_some());
    }
}
