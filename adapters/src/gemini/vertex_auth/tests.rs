#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use proptest::prelude::*;
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use serde_json::json;

const EMAIL: &str = "test@shardgate-test.iam.gserviceaccount.com";
const KID: &str = "50989778e3b331e44a7d4766b1b19e46b7f5a811";
const NOW: u64 = 1_750_000_000;

/// The TEST-ONLY key file (a throwaway key generated with `openssl genpkey`).
fn key_file() -> Value {
    let path = format!("{}/testdata/gemini/vertex-service-account.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn load(v: &Value) -> Result<ServiceAccount, VertexAuthError> {
    ServiceAccount::from_json(&serde_json::to_vec(v).unwrap())
}

fn account() -> ServiceAccount {
    load(&key_file()).unwrap()
}

/// Base64 lines of the PEM body, to look for in output that must not contain the key.
fn key_fragments() -> Vec<String> {
    let pem = key_file()["private_key"].as_str().unwrap().to_owned();
    pem.lines().filter(|l| !l.starts_with("-----") && l.len() >= 16).map(|l| l[..16].to_owned()).collect()
}

fn assert_no_key(text: &str) {
    for fragment in key_fragments() {
        assert!(!text.contains(&fragment), "key material in {text}");
    }
}

fn b64_json(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[test]
fn parses_the_key_file() {
    let sa = account();
    assert_eq!(sa.client_email(), EMAIL);
    assert_eq!(sa.private_key_id(), KID);
    assert_eq!(sa.project_id(), "shardgate-test");
    assert_eq!(sa.token_uri(), "https://oauth2.googleapis.com/token");
    assert_eq!(sa.key_pair.public().modulus_len(), 256);
}

#[test]
fn token_uri_defaults_and_is_checked() {
    let mut v = key_file();
    v.as_object_mut().unwrap().remove("token_uri");
    assert_eq!(load(&v).unwrap().token_uri(), DEFAULT_TOKEN_URI);
    v["token_uri"] = Value::Null;
    assert_eq!(load(&v).unwrap().token_uri(), DEFAULT_TOKEN_URI);
    for ok in ["http://127.0.0.1:8080/token", "http://localhost/token", "http://[::1]:9/t", "HTTPS://x.test/t"] {
        v["token_uri"] = json!(ok);
        assert_eq!(load(&v).unwrap().token_uri(), ok);
    }
    for bad in [
        "http://oauth2.googleapis.com/token",
        "ftp://x/",
        "https://",
        "oauth2.googleapis.com",
        "http://127.0.0.1.evil.test/",
    ] {
        v["token_uri"] = json!(bad);
        let err = load(&v).unwrap_err();
        assert!(matches!(err, VertexAuthError::InvalidField { field: "token_uri", .. }), "{bad}: {err}");
    }
}

#[test]
fn missing_fields_are_named() {
    for field in ["type", "client_email", "private_key", "private_key_id", "project_id"] {
        let mut v = key_file();
        v.as_object_mut().unwrap().remove(field);
        let err = load(&v).unwrap_err();
        assert_eq!(err, VertexAuthError::MissingField(field));
        assert_eq!(err.to_string(), format!("service-account key file has no `{field}` field"));
        assert_eq!(err.label(), "missing_field");
        v[field] = Value::Null;
        assert_eq!(load(&v).unwrap_err(), VertexAuthError::MissingField(field));
    }
}

#[test]
fn wrong_fields_are_named() {
    let mut v = key_file();
    v["client_email"] = json!(42);
    assert_eq!(load(&v).unwrap_err().to_string(), "service-account key file: `client_email` is not a string");
    let mut v = key_file();
    v["private_key_id"] = json!("  ");
    assert_eq!(load(&v).unwrap_err(), VertexAuthError::InvalidField { field: "private_key_id", reason: "is empty" });
    let mut v = key_file();
    v["type"] = json!("authorized_user");
    let err = load(&v).unwrap_err();
    assert_eq!(err, VertexAuthError::NotServiceAccount { found: "authorized_user".into() });
    assert_eq!(err.to_string(), "service-account key file has type \"authorized_user\", expected \"service_account\"");
    let err = ServiceAccount::from_json(b"{\"type\": ").unwrap_err();
    assert!(matches!(err, VertexAuthError::KeyFileSyntax { line: 1, .. }), "{err}");
    assert_eq!(ServiceAccount::from_json(b"[]").unwrap_err(), VertexAuthError::KeyFileNotObject);
}

#[test]
fn bad_private_keys_are_explained_without_quoting_them() {
    let pem = key_file()["private_key"].as_str().unwrap().to_owned();
    let body = pem.replace("-----BEGIN PRIVATE KEY-----", "").replace("-----END PRIVATE KEY-----", "");
    let cases = [
        (pem.replace("PRIVATE KEY", "RSA PRIVATE KEY"), "private_key_pem", "PKCS#1"),
        (pem.replace("PRIVATE KEY", "ENCRYPTED PRIVATE KEY"), "private_key_pem", "encrypted"),
        (body.clone(), "private_key_pem", "no -----BEGIN"),
        (pem.replace("-----END PRIVATE KEY-----", ""), "private_key_pem", "no -----END"),
        (format!("{PEM_BEGIN}\n\n{PEM_END}\n"), "private_key_pem", "empty"),
        (pem.replacen('M', "*", 1), "private_key_pem", "not base64"),
        (
            format!("{PEM_BEGIN}\n{}\n{PEM_END}\n", STANDARD.encode(&body.as_bytes()[..120])),
            "private_key_rejected",
            "RSA",
        ),
    ];
    for (key, label, says) in cases {
        let mut v = key_file();
        v["private_key"] = json!(key);
        let err = load(&v).unwrap_err();
        assert_eq!(err.label(), label, "{err}");
        let shown = format!("{err} {err:?}");
        assert!(shown.contains(says), "{shown}");
        assert_no_key(&shown);
    }
}

#[test]
fn escaped_newlines_in_the_key_are_tolerated() {
    let mut v = key_file();
    let pem = v["private_key"].as_str().unwrap().replace('\n', "\\n");
    v["private_key"] = json!(pem);
    assert_eq!(load(&v).unwrap().client_email(), EMAIL);
}

#[test]
fn debug_redacts_the_key() {
    let shown = format!("{:?} {:#?}", account(), account());
    assert!(shown.contains(EMAIL) && shown.contains("<redacted>"), "{shown}");
    assert!(!shown.contains("-----BEGIN"), "{shown}");
    assert_no_key(&shown);
}

#[test]
fn assertion_has_the_documented_header_and_claims_and_verifies() {
    let sa = account();
    let jwt = sa.assertion(CLOUD_PLATFORM_SCOPE, NOW).unwrap();
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    assert_eq!(b64_json(parts[0]), json!({"alg": "RS256", "typ": "JWT", "kid": KID}));
    assert_eq!(
        b64_json(parts[1]),
        json!({
            "iss": EMAIL,
            "scope": "https://www.googleapis.com/auth/cloud-platform",
            "aud": "https://oauth2.googleapis.com/token",
            "iat": NOW,
            "exp": NOW + 3600,
        })
    );
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    assert_eq!(signature.len(), 256);
    let public = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, sa.key_pair.public().as_ref());
    let signed = format!("{}.{}", parts[0], parts[1]);
    public.verify(signed.as_bytes(), &signature).unwrap();
    // Any other claim set fails.
    let forged = format!("{}.{}", parts[0], URL_SAFE_NO_PAD.encode(br#"{"iss":"x"}"#));
    assert!(public.verify(forged.as_bytes(), &signature).is_err());
    // PKCS#1 v1.5 is deterministic: same inputs, same assertion.
    assert_eq!(sa.assertion(CLOUD_PLATFORM_SCOPE, NOW).unwrap(), jwt);
    assert_ne!(sa.assertion(CLOUD_PLATFORM_SCOPE, NOW + 1).unwrap(), jwt);
    assert_eq!(
        sa.assertion(" ", NOW).unwrap_err(),
        VertexAuthError::InvalidField { field: "scope", reason: "is empty" }
    );
}

#[test]
fn token_request_body_is_form_encoded() {
    let sa = account();
    let body = sa.token_request_body(CLOUD_PLATFORM_SCOPE, NOW).unwrap();
    let jwt = sa.assertion(CLOUD_PLATFORM_SCOPE, NOW).unwrap();
    assert_eq!(body, format!("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={jwt}"));
    let mut out = String::new();
    form_encode_into("a b+c/d=e&f~g.h_i-j:é", &mut out);
    assert_eq!(out, "a%20b%2Bc%2Fd%3De%26f~g.h_i-j%3A%C3%A9");
}

#[test]
fn parses_a_token() {
    let body = br#"{"access_token":"ya29.c.secret","expires_in":3599,"token_type":"Bearer"}"#;
    let token = parse_token_response(200, body, NOW).unwrap();
    assert_eq!(token, AccessToken { token: "ya29.c.secret".into(), expires_at_unix: NOW + 3599 });
    let shown = format!("{token:?}");
    assert!(!shown.contains("secret") && shown.contains("<redacted>"), "{shown}");
    // Lenient where servers differ: numeric strings, lowercase type, no type.
    let body = br#"{"access_token":"t","expires_in":"60","token_type":"bearer"}"#;
    assert_eq!(parse_token_response(200, body, NOW).unwrap().expires_at_unix, NOW + 60);
    assert_eq!(parse_token_response(200, br#"{"access_token":"t","expires_in":1}"#, 0).unwrap().expires_at_unix, 1);
}

#[test]
fn refresh_is_due_within_the_margin() {
    let token = AccessToken { token: "t".into(), expires_at_unix: NOW + 3599 };
    assert!(!token.refresh_due(NOW, 300));
    assert!(!token.refresh_due(NOW + 3298, 300));
    assert!(token.refresh_due(NOW + 3299, 300));
    assert!(token.refresh_due(NOW + 4000, 0));
    assert!(token.refresh_due(u64::MAX, u64::MAX));
}

#[test]
fn token_endpoint_errors_carry_error_description_and_status() {
    let body = br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#;
    let err = parse_token_response(400, body, NOW).unwrap_err();
    assert_eq!(
        err,
        VertexAuthError::TokenEndpoint {
            status: 400,
            error: "invalid_grant".into(),
            description: Some("Invalid JWT Signature.".into()),
        }
    );
    assert_eq!(err.to_string(), "token endpoint answered HTTP 400: invalid_grant: Invalid JWT Signature.");
    assert_eq!((err.label(), err.retryable()), ("token_endpoint", false));
    let err = parse_token_response(503, br#"{"error":"temporarily_unavailable"}"#, NOW).unwrap_err();
    assert_eq!(err.to_string(), "token endpoint answered HTTP 503: temporarily_unavailable");
    assert!(err.retryable());
    // Google's API error shape, and an error in a 200.
    let body = br#"{"error":{"code":403,"message":"Permission denied","status":"PERMISSION_DENIED"}}"#;
    assert_eq!(
        parse_token_response(403, body, NOW).unwrap_err(),
        VertexAuthError::TokenEndpoint {
            status: 403,
            error: "PERMISSION_DENIED".into(),
            description: Some("Permission denied".into()),
        }
    );
    let err = parse_token_response(200, br#"{"error":"invalid_scope"}"#, NOW).unwrap_err();
    assert!(matches!(err, VertexAuthError::TokenEndpoint { status: 200, .. }), "{err}");
}

#[test]
fn malformed_token_responses_are_explained_without_the_body() {
    let cases: [(u16, &[u8], &str); 8] = [
        (200, b"<html>ya29.secret</html>", "not a JSON object"),
        (200, br#"["ya29.secret"]"#, "not a JSON object"),
        (200, br#"{"expires_in":3599}"#, "`access_token` is missing"),
        (200, br#"{"access_token":"","expires_in":3599}"#, "`access_token` is not"),
        (200, br#"{"access_token":"ya29.secret"}"#, "`expires_in` is missing"),
        (200, br#"{"access_token":"ya29.secret","expires_in":-5}"#, "`expires_in` is not"),
        (200, br#"{"access_token":"ya29.secret","expires_in":5,"token_type":"MAC"}"#, "\"MAC\", not \"Bearer\""),
        (502, b"<html>Bad Gateway ya29.secret</html>", "error body is not a JSON object"),
    ];
    for (status, body, says) in cases {
        let err = parse_token_response(status, body, NOW).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert_eq!(err.label(), "token_response");
        assert!(shown.contains(says) && shown.contains(&format!("HTTP {status}")), "{shown}");
        assert!(!shown.contains("secret"), "{shown}");
        assert_eq!(err.retryable(), status == 502);
    }
    let err = parse_token_response(401, br#"{"message":"no"}"#, NOW).unwrap_err();
    assert!(err.to_string().contains("without an OAuth2 `error` field"), "{err}");
}

#[test]
fn long_endpoint_text_is_bounded() {
    let long = "é".repeat(1000);
    let body = serde_json::to_vec(&json!({"error": "invalid_grant", "error_description": long})).unwrap();
    let VertexAuthError::TokenEndpoint { description: Some(d), .. } =
        parse_token_response(400, &body, NOW).unwrap_err()
    else {
        panic!("expected a token endpoint error");
    };
    assert!(d.len() <= MAX_ERROR_TEXT + 3 && d.ends_with("..."), "{}", d.len());
}

proptest! {
    #[test]
    fn token_response_parsing_never_panics(status in any::<u16>(), body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_token_response(status, &body, NOW);
    }

    #[test]
    fn key_file_parsing_never_panics(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = ServiceAccount::from_json(&body);
    }
}
