//! Detector-level tests: the labelled corpus, config handling, and a no-panic property test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout, clippy::indexing_slicing)]

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn detector() -> PiiDetector {
    PiiDetector::new(&PiiConfig::default()).unwrap()
}

fn scan(d: &PiiDetector, text: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    d.scan(text, &mut out);
    out
}

fn check_spans(text: &str, found: &[Finding]) {
    let mut last_end = 0;
    for f in found {
        assert!(f.start < f.end && f.end <= text.len(), "{f:?}");
        assert!(text.is_char_boundary(f.start) && text.is_char_boundary(f.end), "{f:?}");
        assert!(f.start >= last_end, "overlap or unsorted: {found:?}");
        last_end = f.end;
    }
}

#[derive(serde::Deserialize)]
struct Example {
    text: String,
    expect: Vec<String>,
}

/// Reads `corpus/pii.jsonl`, runs the detector, and reports per-category precision and recall
/// counted per example: a category found in an example that does not expect it is a false
/// positive, one expected and not found is a false negative.
#[test]
fn corpus_precision_recall() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/pii.jsonl");
    let corpus = std::fs::read_to_string(path).unwrap();
    let d = detector();
    // category -> (true positives, false positives, false negatives)
    let mut stats: BTreeMap<String, (u32, u32, u32)> = BTreeMap::new();
    let (mut positives, mut negatives) = (0, 0);
    for (n, line) in corpus.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with("//") {
            continue;
        }
        let ex: Example = serde_json::from_str(line).unwrap_or_else(|e| panic!("line {}: {e}", n + 1));
        if ex.expect.is_empty() {
            negatives += 1;
        } else {
            positives += 1;
        }
        let found = scan(&d, &ex.text);
        check_spans(&ex.text, &found);
        let mut got: Vec<String> = found.iter().map(|f| format!("{:?}", f.category)).collect();
        got.sort();
        got.dedup();
        for c in &got {
            let s = stats.entry(c.clone()).or_default();
            if ex.expect.contains(c) {
                s.0 += 1;
            } else {
                s.1 += 1;
                println!("FP {c}: {:?} -> {:?}", ex.text, spans(&ex.text, &found));
            }
        }
        for c in &ex.expect {
            if !got.contains(c) {
                stats.entry(c.clone()).or_default().2 += 1;
                println!("FN {c}: {:?} -> {:?}", ex.text, spans(&ex.text, &found));
            }
        }
    }
    println!("{positives} positive and {negatives} negative examples");
    println!("| category | TP | FP | FN | precision | recall |");
    println!("|---|---|---|---|---|---|");
    let mut ok = true;
    for (c, (tp, fp, fneg)) in &stats {
        let precision = f64::from(*tp) / f64::from((tp + fp).max(1));
        let recall = f64::from(*tp) / f64::from((tp + fneg).max(1));
        println!("| {c} | {tp} | {fp} | {fneg} | {precision:.3} | {recall:.3} |");
        ok &= precision >= 0.95 && recall >= 0.90;
    }
    assert!(positives >= 40 && negatives >= 40, "{positives} positives, {negatives} negatives");
    for c in ["Email", "Phone", "CreditCard", "Iban", "UsSsn", "IpAddress", "DateOfBirth", "PostalAddress"] {
        assert!(stats.get(c).is_some_and(|s| s.0 > 0), "no positive example found for {c}");
    }
    assert!(ok, "precision or recall below target");
}

fn spans<'a>(text: &'a str, found: &[Finding]) -> Vec<(&'a str, Category)> {
    found.iter().map(|f| (&text[f.start..f.end], f.category)).collect()
}

#[test]
fn mixed_text_exact_spans() {
    let d = detector();
    let text = "Reach Jane at jane@example.com or +44 20 7946 0958; card 4242 4242 4242 4242, \
                IBAN DE89 3704 0044 0532 0130 00, SSN 536-22-1234, from 10.0.0.7 / fe80::1. \
                DOB: 12/03/1985. Ship to 350 Fifth Ave, New York, NY 10118 or SW1A 1AA.";
    let got = spans(text, &scan(&d, text));
    assert_eq!(
        got,
        [
            ("jane@example.com", Category::Email),
            ("+44 20 7946 0958", Category::Phone),
            ("4242 4242 4242 4242", Category::CreditCard),
            ("DE89 3704 0044 0532 0130 00", Category::Iban),
            ("536-22-1234", Category::UsSsn),
            ("10.0.0.7", Category::IpAddress),
            ("fe80::1", Category::IpAddress),
            ("12/03/1985", Category::DateOfBirth),
            ("350 Fifth Ave, New York, NY 10118", Category::PostalAddress),
            ("SW1A 1AA", Category::PostalAddress),
        ]
    );
}

#[test]
fn categories_switch_off_and_custom_indices() {
    let cfg: PiiConfig = serde_json::from_str(
        r#"{"email": false, "patterns": [{"name": "emp", "regex": "EMP-\\d{4}"}],
            "words": [{"name": "code names", "words": ["Bluebird"]}]}"#,
    )
    .unwrap();
    let d = PiiDetector::new(&cfg).unwrap();
    let text = "bluebird EMP-1234 a@b.com 555-123-4567";
    let got = spans(text, &scan(&d, text));
    assert_eq!(
        got,
        [("bluebird", Category::Custom(1)), ("EMP-1234", Category::Custom(0)), ("555-123-4567", Category::Phone)]
    );
    assert!(serde_json::from_str::<PiiConfig>(r#"{"emails": true}"#).is_err());
    let bad =
        PiiConfig { patterns: vec![CustomPattern { name: "oops".into(), regex: "[".into() }], ..Default::default() };
    assert!(PiiDetector::new(&bad).unwrap_err().contains("oops"));
}

#[test]
fn appends_after_existing_findings() {
    let d = detector();
    let mut out = vec![Finding { start: 100, end: 200, category: Category::Email, score: 1.0 }];
    d.scan("x a@b.io", &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!((out[1].start, out[1].end), (2, 8));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let d = detector();
        check_spans(&text, &scan(&d, &text));
    }

    #[test]
    fn pii_shaped_text_never_panics(text in "[0-9A-Za-z @.:+()/#,-]{0,120}") {
        let d = detector();
        check_spans(&text, &scan(&d, &text));
    }

    #[test]
    fn any_utf8_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let text = String::from_utf8_lossy(&bytes);
        let d = detector();
        check_spans(&text, &scan(&d, &text));
    }
}
