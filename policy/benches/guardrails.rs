//! Guardrail checks per KiB of prompt text: each built-in detector alone, and all of them
//! together as a request's input phase runs them (`Guardrails::check`: secrets and injection
//! validating (flag, so every rule runs), then PII redacting: each detector once, plus the
//! rewriting). Mixed English prose, code and JSON with about one planted
//! match per KiB ("all"), and the same text with nothing planted ("all-clean"). Issue 8's
//! budget: all built-in checks together under 2 µs per KiB.
//!
//! `cargo bench -p shardgate-policy --bench guardrails` (µs/KiB = time / size × 1024).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use policy::guardrails::injection::{InjectionConfig, InjectionDetector};
use policy::guardrails::pii::{PiiConfig, PiiDetector};
use policy::guardrails::secrets::{SecretsConfig, SecretsDetector};
use policy::guardrails::{Facts, GuardrailSpec, Guardrails, Phase, Vault};
use policy::{Identity, Metadata};

include!("support/guardrails_text.rs");

/// The gateway's allocator (`shardgate` uses mimalloc by default), so that the rewriting's
/// allocations cost what they cost in the gateway.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Scan<'a> = &'a dyn Fn(&str, &mut Vec<policy::guardrails::Finding>);

fn bench(c: &mut Criterion) {
    let pii = PiiDetector::new(&PiiConfig::default()).unwrap();
    let secrets = SecretsDetector::new(&SecretsConfig::default()).unwrap();
    let injection = InjectionDetector::new(&InjectionConfig::default()).unwrap();
    let specs: Vec<GuardrailSpec> = serde_saphyr::from_str(
        "- {id: s, check: secrets, action: flag}\n- {id: i, check: injection, action: flag}\n\
         - {id: r, check: pii, mode: mutate}\n",
    )
    .unwrap();
    let all = Guardrails::compile(&specs).unwrap();
    let selected = all.select(&Identity::anonymous(), "m", &Metadata::new());
    let metadata = Metadata::new();
    let mut g = c.benchmark_group("guardrails");
    for size in [1024, 16 * 1024] {
        let t = text(size);
        let kib = size / 1024;
        g.throughput(Throughput::Bytes(t.len() as u64));
        let mut out = Vec::with_capacity(64);
        let detectors: [(&str, Scan<'_>); 3] = [
            ("pii", &|t, o| pii.scan(t, o)),
            ("secrets", &|t, o| secrets.scan(t, o)),
            ("injection", &|t, o| injection.scan(t, o)),
        ];
        for (name, scan) in detectors {
            g.bench_function(format!("{name}/{kib}KiB"), |b| {
                b.iter(|| {
                    out.clear();
                    scan(black_box(&t), &mut out);
                    black_box(out.len())
                })
            });
        }
        let clean = clean_text(size);
        for (name, t) in [("all", &t), ("all-clean", &clean)] {
            g.bench_function(format!("{name}/{kib}KiB"), |b| {
                b.iter(|| {
                    let mut texts = [std::borrow::Cow::Borrowed(t.as_str())];
                    let mut vault = Vault::default();
                    let facts = Facts { metadata: &metadata, asked_json: false, schema: None };
                    black_box(all.check(&selected, Phase::Input, &mut texts, facts, &mut vault).verdicts.len())
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
