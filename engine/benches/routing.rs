//! `Plan::new` + `Plan::next` on a 10-target group (target: < 200 ns each).
//!
//! Measured medians (2-core shared VM, rustc 1.95, `cargo bench --bench routing --
//! --warm-up-time 1 --measurement-time 2`; from criterion's estimates.json):
//!   plan_new_next/weighted_10   65.5 ns
//!   plan_new_next/latency_10   102.5 ns
//! (Both: a fresh plan and one pick; one of the ten targets unavailable; no allocation.)

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use engine::router::{
    Field, FieldValue, HealthView, Overrides, Plan, RequestFacts, Route, RouteSpec, TargetHealth, TargetId,
    TargetTable, compile,
};

/// Request facts that know nothing (the common case: no conditions, no affinity).
struct NoFacts;

impl RequestFacts for NoFacts {
    fn field(&self, _: &Field) -> Option<FieldValue<'_>> {
        None
    }
    fn affinity_key(&self) -> Option<&str> {
        None
    }
    fn expected_output_tokens(&self) -> u32 {
        256
    }
}

/// Health from a plain vector, as a shard's table would give it.
struct VecHealth(Vec<TargetHealth>);

impl HealthView for VecHealth {
    fn health(&self, t: TargetId) -> TargetHealth {
        self.0.get(t.0 as usize).copied().unwrap_or_default()
    }
}

fn route(strategy: &str) -> Option<(Route, VecHealth)> {
    let targets: Vec<String> =
        (0..10).map(|i| format!("{{target: p{}/model-{i}, weight: {}}}", i % 3, i + 1)).collect();
    let yaml = format!("strategy: {strategy}\ntargets: [{}]", targets.join(", "));
    let spec: RouteSpec = serde_saphyr::from_str(&yaml).ok()?;
    let mut table = TargetTable::default();
    let route = compile("bench", &spec, &mut table, &|_| true).ok()?;
    let health = (0..table.len())
        .map(|i| TargetHealth {
            available: i != 3,
            in_flight: (i % 4) as u32,
            ttft_us: 200_000.0 + 5_000.0 * i as f64,
            tpot_us: 20_000.0,
            samples: 50,
            rpm_used: 0,
            tpm_used: 0,
        })
        .collect();
    Some((route, VecHealth(health)))
}

fn plan_new_next(c: &mut Criterion) {
    let mut group = c.benchmark_group("plan_new_next");
    for (name, strategy) in [("weighted_10", "weighted"), ("latency_10", "latency")] {
        let Some((route, health)) = route(strategy) else { return };
        let now = Instant::now();
        let mut random = 0x2545_F491_4F6C_DD1Du64;
        group.bench_function(name, |b| {
            b.iter(|| {
                random = random.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut plan = Plan::new(black_box(&route), Overrides::default(), now);
                black_box(plan.next(&NoFacts, &health, random))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, plan_new_next);
criterion_main!(benches);
