//! Corpus precision/recall: `corpus/<detector>.jsonl`, one `{"text", "expect"}` per line
//! (category names as `Debug` prints them; an empty list is a tricky negative).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::collections::BTreeMap;

use policy::guardrails::finding::Finding;
use policy::guardrails::injection::{InjectionConfig, InjectionDetector};
use policy::guardrails::secrets::{SecretsConfig, SecretsDetector};

#[derive(serde::Deserialize)]
struct Row {
    text: String,
    expect: Vec<String>,
}

#[derive(Default)]
struct Counts {
    tp: usize,
    fp: usize,
    fn_: usize,
}

fn run(file: &str, scan: impl Fn(&str) -> Vec<Finding>) {
    let path = format!("{}/tests/corpus/{file}", env!("CARGO_MANIFEST_DIR"));
    let data = std::fs::read_to_string(&path).unwrap();
    let mut per: BTreeMap<String, Counts> = BTreeMap::new();
    let (mut positives, mut negatives) = (0, 0);
    for line in data.lines().filter(|l| !l.trim().is_empty() && !l.starts_with("//")) {
        let row: Row = serde_json::from_str(line).unwrap();
        if row.expect.is_empty() {
            negatives += 1
        } else {
            positives += 1
        }
        let mut want: BTreeMap<String, usize> = BTreeMap::new();
        for e in &row.expect {
            *want.entry(e.clone()).or_default() += 1;
        }
        let mut got: BTreeMap<String, usize> = BTreeMap::new();
        for f in scan(&row.text) {
            *got.entry(format!("{:?}", f.category)).or_default() += 1;
        }
        let cats: std::collections::BTreeSet<&String> = want.keys().chain(got.keys()).collect();
        for c in cats {
            let (w, g) = (want.get(c).copied().unwrap_or(0), got.get(c).copied().unwrap_or(0));
            let e = per.entry(c.clone()).or_default();
            e.tp += w.min(g);
            e.fp += g.saturating_sub(w);
            e.fn_ += w.saturating_sub(g);
            if w != g {
                println!("MISMATCH {c}: want {w} got {g}: {:?}", row.text);
            }
        }
    }
    println!("{file}: {positives} positives, {negatives} tricky negatives");
    println!("| category | TP | FP | FN | precision | recall |\n|---|---|---|---|---|---|");
    let mut ok = true;
    for (c, n) in &per {
        let p = if n.tp + n.fp == 0 { 1.0 } else { n.tp as f64 / (n.tp + n.fp) as f64 };
        let r = if n.tp + n.fn_ == 0 { 1.0 } else { n.tp as f64 / (n.tp + n.fn_) as f64 };
        println!("| {c} | {} | {} | {} | {p:.3} | {r:.3} |", n.tp, n.fp, n.fn_);
        ok &= p >= 0.95 && r >= 0.90;
    }
    assert!(positives >= 40 && negatives >= 40, "corpus too small");
    assert!(ok, "precision/recall below target, see table");
}

#[test]
fn corpus_precision_recall() {
    let secrets = SecretsDetector::new(&SecretsConfig::default()).unwrap();
    run("secrets.jsonl", |t| {
        let mut out = Vec::new();
        secrets.scan(t, &mut out);
        out
    });
    let injection = InjectionDetector::new(&InjectionConfig::default()).unwrap();
    run("injection.jsonl", |t| {
        let mut out = Vec::new();
        injection.scan(t, &mut out);
        out
    });
}
