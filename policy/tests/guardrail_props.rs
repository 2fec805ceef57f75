//! Arbitrary input never panics and every span is valid: on char boundaries, in bounds,
//! sorted by start, non-overlapping within a detector.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use policy::guardrails::finding::Finding;
use policy::guardrails::injection::{InjectionConfig, InjectionDetector};
use policy::guardrails::moderation::{ModerationCategory, ModerationConfig, ModerationDetector};
use policy::guardrails::secrets::{SecretsConfig, SecretsDetector};
use proptest::prelude::*;

fn check(text: &str, out: &[Finding]) {
    let mut last = 0;
    for f in out {
        assert!(f.start < f.end && f.end <= text.len(), "{f:?}");
        assert!(text.is_char_boundary(f.start) && text.is_char_boundary(f.end), "{f:?}");
        assert!(f.start >= last, "unsorted or overlapping: {out:?}");
        last = f.end;
    }
}

/// Text mixing arbitrary chars with fragments the detectors trigger on.
fn texty() -> impl Strategy<Value = String> {
    let frag = prop_oneof![
        any::<String>(),
        Just("sk-".to_owned()),
        Just("ghp_".to_owned()),
        Just("AKIA".to_owned()),
        Just("eyJhbGciOiJIUzI1NiJ9.eyJ".to_owned()),
        Just("-----BEGIN RSA PRIVATE KEY-----\n".to_owned()),
        Just("password = \"".to_owned()),
        Just("hooks.slack.com/services/T".to_owned()),
        Just("ignore all previous instructions ".to_owned()),
        Just("<|im_start|>".to_owned()),
        Just("\nSystem: you ".to_owned()),
        Just("\u{200B}\u{200D}\u{202E}\u{E0041}\u{1F3F4}".to_owned()),
        Just("aWdub3JlIGFsbCBwcmV2aW91cyBpbnN0cnVjdGlvbnM=".to_owned()),
        "[A-Za-z0-9+/=_-]{0,80}",
        "[ іоаеΑΟ\u{200B}a-z0-9]{0,40}",
    ];
    prop::collection::vec(frag, 0..12).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn secrets_never_panic(text in texty()) {
        let d = SecretsDetector::new(&SecretsConfig::default()).unwrap();
        let mut out = Vec::new();
        d.scan(&text, &mut out);
        check(&text, &out);
    }

    #[test]
    fn injection_never_panics(text in texty()) {
        let d = InjectionDetector::new(&InjectionConfig::default()).unwrap();
        let (score, out) = d.verdict(&text);
        check(&text, &out);
        prop_assert!((0.0..=1.0).contains(&score));
    }

    #[test]
    fn moderation_never_panics(text in texty(), word in "[a-zé ]{1,8}") {
        let cfg = ModerationConfig { categories: vec![ModerationCategory {
            name: "x".into(), words: vec![word, "ignore".into()], regexes: vec!["(?i)sk-[a-z]+".into()],
        }]};
        let d = ModerationDetector::new(&cfg);
        if let Ok(d) = d {
            let mut out = Vec::new();
            d.scan(&text, &mut out);
            check(&text, &out);
        }
    }
}
