//! Property: a plan never sends a request to a target whose breaker is open while a target it
//! may use is available, and never refuses while the route has a target (unless `cool_last`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use proptest::prelude::*;

use super::plan::{Next, Overrides, Plan};
use super::retry::{Failure, FailureClass};
use super::spec::{ChildSpec, RouteSpec, StrategySpec};
use super::testkit::{Facts, Health};
use super::{HealthView, Route, TargetTable, compile};

const TARGETS: usize = 12;

#[derive(Debug, Clone)]
enum Tree {
    Leaf(usize),
    Group(StrategySpec, Vec<Tree>),
}

fn tree() -> impl Strategy<Value = Tree> {
    let leaf = (0..TARGETS).prop_map(Tree::Leaf);
    leaf.prop_recursive(3, 32, 4, |inner| {
        let strategy = prop_oneof![
            Just(StrategySpec::Weighted),
            Just(StrategySpec::Latency),
            Just(StrategySpec::LeastBusy),
            Just(StrategySpec::Fallback),
        ];
        (strategy, prop::collection::vec(inner, 1..5)).prop_map(|(s, children)| Tree::Group(s, children))
    })
}

fn child(t: &Tree) -> ChildSpec {
    match t {
        Tree::Leaf(i) => ChildSpec { target: Some(format!("p{}/m{i}", i % 3)), ..Default::default() },
        Tree::Group(strategy, children) => ChildSpec {
            route: Some(Box::new(RouteSpec {
                strategy: *strategy,
                targets: children.iter().map(child).collect(),
                ..Default::default()
            })),
            ..Default::default()
        },
    }
}

#[derive(Debug, Clone)]
struct TargetState {
    available: bool,
    in_flight: u32,
    samples: u32,
    ttft_us: f64,
}

fn target_state() -> impl Strategy<Value = TargetState> {
    (prop::bool::weighted(0.4), 0u32..4, 0u32..10, 1.0f64..5000.0)
        .prop_map(|(available, in_flight, samples, ttft_us)| TargetState { available, in_flight, samples, ttft_us })
}

fn failure() -> impl Strategy<Value = Failure> {
    prop_oneof![
        Just(Failure { status: Some(503), retry_after: None, class: FailureClass::Transient }),
        Just(Failure { status: None, retry_after: None, class: FailureClass::Transient }),
        Just(Failure { status: Some(401), retry_after: None, class: FailureClass::Auth }),
    ]
}

fn health_for(table: &TargetTable, states: &[TargetState]) -> Health {
    let mut health = Health::all_up(table);
    for (id, spec) in table.iter() {
        let i: usize = spec.model.trim_start_matches('m').parse().unwrap();
        let s = &states[i];
        let h = health.get_mut(id);
        (h.available, h.in_flight, h.samples, h.ttft_us) = (s.available, s.in_flight, s.samples, s.ttft_us);
    }
    health
}

/// Whether a target the plan may still use (groups from `from` to `to`) is available.
fn available_in(route: &Route, health: &Health, from: usize, to: usize) -> bool {
    (from..=to).flat_map(|g| route.group_targets(g)).any(|t| health.health(t).available)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn never_cooled_while_a_usable_target_is_available(
        groups in prop::collection::vec(tree(), 1..4),
        states in prop::collection::vec(target_state(), TARGETS),
        failures in prop::collection::vec(failure(), 0..10),
        randoms in prop::collection::vec(any::<u64>(), 12),
        no_fallback in prop::bool::weighted(0.2),
        attempts in prop::option::of(0u32..3),
    ) {
        let spec = RouteSpec { targets: groups.iter().map(child).collect(), ..Default::default() };
        let mut table = TargetTable::default();
        let route = compile("m", &spec, &mut table, &|_| true).unwrap();
        let health = health_for(&table, &states);
        let facts = Facts::default();
        let now = Instant::now();
        let overrides = Overrides { no_fallback, attempts, budget: None };

        // A fresh plan sees every target of the route.
        let any_available = route.targets().iter().any(|&t| health.health(t).available);
        let pick = Plan::new(&route, Overrides::default(), now).next(&facts, &health, randoms[0]);
        let pick = pick.expect("a route with targets always gives a pick unless cool_last");
        prop_assert_eq!(pick.cooled, !any_available);
        prop_assert_eq!(health.health(pick.target).available, any_available);

        // Through retries and fallbacks, with the groups the plan may still use.
        let mut plan = Plan::new(&route, overrides, now);
        for (step, f) in failures.iter().enumerate() {
            let from = plan.group();
            let to = if no_fallback { from } else { route.groups() - 1 };
            let usable = available_in(&route, &health, from, to);
            let pick = plan.next(&facts, &health, randoms[(step + 1) % randoms.len()]);
            let pick = pick.expect("next() after Retry/Fallback always gives a pick");
            prop_assert_eq!(pick.cooled, !usable, "step {} group {}", step, plan.group());
            prop_assert_eq!(health.health(pick.target).available, usable);
            prop_assert!(route.group_targets(plan.group()).contains(&pick.target));
            match plan.failed(f, now, randoms[step % randoms.len()]) {
                Next::GiveUp => break,
                Next::Retry { .. } | Next::Fallback => {}
            }
        }
    }

    #[test]
    fn cool_last_refuses_only_when_nothing_is_available(
        groups in prop::collection::vec(tree(), 1..4),
        states in prop::collection::vec(target_state(), TARGETS),
        random in any::<u64>(),
    ) {
        let spec = RouteSpec { targets: groups.iter().map(child).collect(), ..Default::default() };
        let mut table = TargetTable::default();
        let mut route = compile("m", &spec, &mut table, &|_| true).unwrap();
        route.breaker.cool_last = true;
        let health = health_for(&table, &states);
        let any_available = route.targets().iter().any(|&t| health.health(t).available);
        let pick = Plan::new(&route, Overrides::default(), Instant::now()).next(&Facts::default(), &health, random);
        prop_assert_eq!(pick.is_some(), any_available);
        if let Some(p) = pick {
            prop_assert!(!p.cooled && health.health(p.target).available);
        }
    }
}
