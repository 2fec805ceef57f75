//! The governance hot path for one request: key lookup (HMAC + map), RBAC, every rule, counters.
//! Target: under 1 µs with 10k keys and 100 rules (issue 5).
//!
//! `cargo bench -p shardgate-policy --bench admission`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use policy::keys::KeyHasher;
use policy::pricing::{PriceTable, Tokens};
use policy::spec::{
    BudgetLimits, BudgetSpec, GovernanceSpec, KeySpec, LimitSpec, RateLimitSpec, SelectorSpec, TeamSpec, UserSpec,
};
use policy::{AdmitRequest, Estimate, Governor, Metadata, Policy, Settings};

const TEAMS: usize = 50;
const KEYS: usize = 10_000;

fn secret(i: usize) -> String {
    format!("sk-sg-bench-{i:08}-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")
}

/// 50 teams, 10k users and keys, 100 rules: a global one, one per-user token limit per team
/// (49), and one monthly budget per team (50).
fn spec() -> GovernanceSpec {
    let mut s = GovernanceSpec::default();
    for t in 0..TEAMS {
        s.teams.insert(
            format!("team-{t}"),
            TeamSpec { models: vec!["gpt-4o*".into(), "claude-*".into()], ..TeamSpec::default() },
        );
    }
    for i in 0..KEYS {
        let team = format!("team-{}", i % TEAMS);
        s.users.insert(format!("user-{i}"), UserSpec { teams: vec![team], ..UserSpec::default() });
        s.keys.push(KeySpec {
            name: format!("key-{i}"),
            secret: Some(secret(i)),
            user: Some(format!("user-{i}")),
            ..KeySpec::default()
        });
    }
    s.rate_limits.push(RateLimitSpec {
        id: "global".into(),
        limits: LimitSpec { requests_per_minute: Some(u64::MAX / 4), ..LimitSpec::default() },
        ..RateLimitSpec::default()
    });
    for t in 0..TEAMS - 1 {
        s.rate_limits.push(RateLimitSpec {
            id: format!("team-{t}-per-user"),
            when: SelectorSpec {
                teams: vec![format!("team-{t}")],
                models: vec!["gpt-4o*".into()],
                ..SelectorSpec::default()
            },
            per: "user".into(),
            limits: LimitSpec {
                tokens_per_minute: Some(u64::MAX / 4),
                requests_per_minute: Some(u64::MAX / 4),
                ..LimitSpec::default()
            },
            ..RateLimitSpec::default()
        });
    }
    for t in 0..TEAMS {
        s.budgets.push(BudgetSpec {
            id: format!("team-{t}-monthly"),
            when: SelectorSpec { teams: vec![format!("team-{t}")], ..SelectorSpec::default() },
            per: "team".into(),
            limits: BudgetLimits { usd_per_month: Some(1e9), ..BudgetLimits::default() },
            ..BudgetSpec::default()
        });
    }
    s
}

fn bench(c: &mut Criterion) {
    let spec = spec();
    let policy =
        match Policy::compile(&spec, KeyHasher::new(b"bench-pepper"), PriceTable::shipped(), Settings::default()) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("bench policy does not compile: {e}");
                return;
            }
        };
    assert_eq!(policy.rules.len(), 100);
    let price = policy.pricing.get("gpt-4o-mini").copied();
    let secrets: Vec<String> = (0..KEYS).step_by(97).map(secret).collect();
    let metadata = Metadata::new();
    let mut g = Governor::new(0, 2);
    let mut now = 1_800_000_000_000u64;
    let mut i = 0usize;

    c.bench_function("key lookup (hmac + map)", |b| {
        b.iter(|| {
            i = (i + 1) % secrets.len();
            black_box(policy.authenticate(Some(&secrets[i]), false, now).is_ok())
        })
    });

    c.bench_function("lookup + rbac + admit + settle (10k keys, 100 rules)", |b| {
        b.iter(|| {
            i = (i + 1) % secrets.len();
            now += 1;
            let Ok(id) = policy.authenticate(Some(&secrets[i]), false, now) else { return };
            if policy.check_model(id, "gpt-4o-mini").is_err() {
                return;
            }
            let req = AdmitRequest {
                identity: id,
                model: "gpt-4o-mini",
                metadata: &metadata,
                estimate: Estimate { input_tokens: 200, output_tokens: 300 },
                price,
            };
            if let Ok(adm) = g.admit(&policy, &req, now) {
                black_box(g.settle(adm, Tokens { input: 180, output: 120, cached_input: 0 }, now));
            }
        })
    });

    c.bench_function("gossip round (take + merge)", |b| {
        let mut other = Governor::new(1, 2);
        b.iter(|| {
            if let Some(d) = g.take_delta() {
                other.merge(&d);
            }
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
