#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use super::*;

/// Deterministic synthetic key material (xorshift), so no real key is ever in the tests.
pub(crate) fn synth(seed: u64, len: usize, alphabet: &[u8]) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(alphabet[(x % alphabet.len() as u64) as usize])
        })
        .collect()
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

fn scan(text: &str) -> Vec<(SecretKind, &str)> {
    let d = SecretsDetector::new(&SecretsConfig::default()).unwrap();
    let mut out = Vec::new();
    d.scan(text, &mut out);
    out.iter()
        .map(|f| match f.category {
            Category::Secret(k) => (k, &text[f.start..f.end]),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

fn kinds(text: &str) -> Vec<SecretKind> {
    scan(text).into_iter().map(|(k, _)| k).collect()
}

#[test]
fn openai_forms() {
    let legacy = format!("sk-{}", synth(1, 48, ALNUM));
    let proj = format!("sk-proj-{}", synth(2, 120, ALNUM));
    let svc = format!("sk-svcacct-{}", synth(3, 80, ALNUM));
    let admin = format!("sk-admin-{}", synth(4, 60, ALNUM));
    for key in [&legacy, &proj, &svc, &admin] {
        let text = format!("export OPENAI_API_KEY={key}\n");
        assert_eq!(scan(&text), vec![(SecretKind::OpenAi, key.as_str())], "{text}");
    }
}

#[test]
fn anthropic_forms() {
    for p in ["sk-ant-api03-", "sk-ant-admin01-"] {
        let key = format!("{p}{}AA", synth(5, 93, ALNUM));
        assert_eq!(scan(&format!("key: \"{key}\"")), vec![(SecretKind::Anthropic, key.as_str())]);
    }
}

#[test]
fn placeholders_are_not_keys() {
    for text in [
        "OPENAI_API_KEY=sk-...",
        "api_key = \"sk-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"",
        "api_key = \"YOUR_API_KEY\"",
        "api_key = \"<OPENAI_API_KEY>\"",
        "api_key = \"${OPENAI_API_KEY}\"",
        "api_key = os.environ[\"OPENAI_API_KEY\"]",
        "api_key = os.getenv(\"OPENAI_API_KEY\")",
        "token = settings.GITHUB_TOKEN",
        "password = \"password\"",
        "token: 12345",
        "the task-runner and sk-learn",
        "-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----",
        "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ7nx4ZLsW3m3n0w0Tv1w2WkKPd8wCgYIKoZIzj0EAwIw\n-----END CERTIFICATE-----",
        "request_id: 123e4567-e89b-12d3-a456-426614174000",
        "commit 4b825dc642cb6eb9a060e54bf8d69288fbee4904",
        "Authorization: Bearer <token>",
        "max_tokens: 4096, tokenizer: cl100k_base_tokenizer_v2",
    ] {
        assert_eq!(scan(text), vec![], "{text}");
    }
}

#[test]
fn aws_example_key_is_skipped_real_shape_is_not() {
    assert_eq!(kinds("aws_access_key_id = AKIAIOSFODNN7EXAMPLE"), vec![]);
    let id = format!("AKIA{}", synth(6, 16, UPPER));
    assert_eq!(scan(&format!("id={id};")), vec![(SecretKind::AwsAccessKey, id.as_str())]);
    let secret = synth(7, 40, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/");
    let text = format!("[default]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n");
    assert_eq!(scan(&text), vec![(SecretKind::AwsAccessKey, id.as_str()), (SecretKind::AwsSecretKey, secret.as_str())]);
    assert_eq!(kinds("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"), vec![]);
}

#[test]
fn github_slack_stripe_google() {
    let gh = format!("ghp_{}", synth(8, 36, ALNUM));
    let pat = format!("github_pat_{}_{}", synth(9, 22, ALNUM), synth(10, 59, ALNUM));
    let slack =
        format!("xoxb-{}-{}-{}", synth(11, 12, b"0123456789"), synth(12, 13, b"0123456789"), synth(13, 24, ALNUM));
    let hook = format!(
        "https://hooks.slack.com/services/T{}/B{}/{}",
        synth(14, 10, UPPER),
        synth(15, 10, UPPER),
        synth(16, 24, ALNUM)
    );
    let live = format!("sk_live_{}", synth(17, 24, ALNUM));
    let test = format!("sk_test_{}", synth(18, 24, ALNUM));
    let google = format!("AIza{}", synth(19, 35, ALNUM));
    let text = format!("{gh} {pat} {slack} {hook} {live} {test} {google}");
    assert_eq!(
        kinds(&text),
        vec![
            SecretKind::GitHub,
            SecretKind::GitHub,
            SecretKind::Slack,
            SecretKind::Slack,
            SecretKind::Stripe,
            SecretKind::Stripe,
            SecretKind::Google
        ]
    );
    assert_eq!(scan(&hook), vec![(SecretKind::Slack, hook.as_str())]);
    assert_eq!(kinds("https://hooks.slack.com/services/XXX/YYY/ZZZ"), vec![]);
    let mut out = Vec::new();
    let cfg = SecretsConfig { stripe_test_keys: false, ..SecretsConfig::default() };
    SecretsDetector::new(&cfg).unwrap().scan(&test, &mut out);
    assert!(out.is_empty());
}

#[test]
fn pem_blocks() {
    let body = synth(20, 64, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/");
    let pem = format!("-----BEGIN RSA PRIVATE KEY-----\nMIIEow{body}\n{body}\n-----END RSA PRIVATE KEY-----");
    let text = format!("here:\n{pem}\nthanks");
    assert_eq!(scan(&text), vec![(SecretKind::PrivateKey, pem.as_str())]);
    // Unterminated: runs to the end of the text.
    let cut = format!("-----BEGIN OPENSSH PRIVATE KEY-----\n{body}\n{body}");
    assert_eq!(scan(&format!("x {cut}")), vec![(SecretKind::PrivateKey, cut.as_str())]);
}

#[test]
fn jwt_needs_alg_header() {
    // {"alg":"HS256","typ":"JWT"} . {"sub":"synthetic"} . signature
    let jwt = format!("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJzeW50aGV0aWMifQ.{}", synth(21, 43, ALNUM));
    assert_eq!(scan(&format!("Authorization: Bearer {jwt}")), vec![(SecretKind::Jwt, jwt.as_str())]);
    // {"foo":"bar"} has no alg.
    assert_eq!(kinds(&format!("eyJmb28iOiJiYXIifQ.eyJzdWIiOiJ4In0.{}", synth(22, 43, ALNUM))), vec![]);
}

#[test]
fn generic_assignments_keep_the_name() {
    let v = synth(23, 24, ALNUM);
    for text in [
        format!("password = \"{v}\""),
        format!("DB_PASSWORD={v}"),
        format!("{{\"client_secret\": \"{v}\"}}"),
        format!("'api_key' => '{v}',"),
        format!("apiKey: {v}"),
        format!("X-Api-Key: {v}"),
        format!("auth_token := \"{v}\""),
        format!("Authorization: Bearer {v}"),
    ] {
        assert_eq!(scan(&text), vec![(SecretKind::Generic, v.as_str())], "{text}");
    }
}

#[test]
fn low_entropy_or_short_values_are_not_generic() {
    assert_eq!(kinds("password = \"aaaaaaaabbbbbbbbcccc\""), vec![]);
    assert_eq!(kinds("secret: abc123"), vec![]);
    let cfg = SecretsConfig { min_generic_len: 4, entropy_threshold: 2.0, ..SecretsConfig::default() };
    let mut out = Vec::new();
    SecretsDetector::new(&cfg).unwrap().scan("secret: abc123", &mut out);
    assert_eq!(out.len(), 1);
}

#[test]
fn disabled_kind_is_silent_and_not_re_reported_as_generic() {
    let key = format!("sk-proj-{}", synth(24, 64, ALNUM));
    let mut cfg = SecretsConfig::default();
    cfg.kinds.open_ai = false;
    let mut out = Vec::new();
    SecretsDetector::new(&cfg).unwrap().scan(&format!("api_key = \"{key}\""), &mut out);
    assert!(out.is_empty());
}

#[test]
fn config_deserializes_with_defaults_and_rejects_unknown() {
    let cfg: SecretsConfig = serde_json::from_str(r#"{"kinds": {"jwt": false}, "min_generic_len": 20}"#).unwrap();
    assert!(!cfg.kinds.jwt && cfg.kinds.github);
    assert_eq!(cfg.min_generic_len, 20);
    assert!(serde_json::from_str::<SecretsConfig>(r#"{"entropy": 3}"#).is_err());
    let bad = SecretsConfig { entropy_threshold: f32::NAN, ..SecretsConfig::default() };
    assert!(SecretsDetector::new(&bad).is_err());
}
