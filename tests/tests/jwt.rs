//! Bearer JWTs from an OIDC issuer, end to end: a test issuer serves its discovery document and
//! JWKS over real sockets, the gateway fetches them at start (and again when a token names a
//! key it has not seen), and tokens signed with ring are accepted or refused with the right
//! 401 code. The token's user, team and role drive RBAC and rate limits like a key's.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use e2e::{Client, default_mock, eventually, gateway, on_both_drivers};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

on_both_drivers!(
    valid_tokens_carry_user_team_and_role,
    bad_tokens_are_401_with_a_precise_code,
    token_callers_get_rbac_and_rate_limits,
    a_rotated_key_is_fetched_on_first_sight,
);

/// A signing key with its `kid`.
struct Signer {
    kid: String,
    pair: EcdsaKeyPair,
}

impl Signer {
    fn new(kid: &str) -> Signer {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        Signer { kid: kid.into(), pair }
    }

    fn jwk(&self) -> Value {
        // An uncompressed P-256 point: 0x04, then x and y (32 bytes each).
        let p = self.pair.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "use": "sig", "kid": self.kid, "x": B64.encode(&p[1..33]), "y": B64.encode(&p[33..65])})
    }

    fn sign(&self, claims: &Value) -> String {
        let head = B64.encode(json!({"alg": "ES256", "typ": "JWT", "kid": self.kid}).to_string());
        let body = B64.encode(claims.to_string());
        let input = format!("{head}.{body}");
        let sig = self.pair.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", B64.encode(sig.as_ref()))
    }
}

/// A test issuer: serves `/.well-known/openid-configuration` and `/jwks` (whatever keys it
/// holds now) on a free port.
struct Issuer {
    addr: SocketAddr,
    keys: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
}

impl Issuer {
    fn start(keys: Vec<Value>) -> Issuer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let keys = Arc::new(Mutex::new(keys));
        let stop = Arc::new(AtomicBool::new(false));
        let (k, s) = (keys.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(SeqCst) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut buf = [0u8; 4096];
                let n = conn.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let body = if req.starts_with("GET /.well-known/openid-configuration") {
                    json!({"issuer": format!("http://{addr}"), "jwks_uri": format!("http://{addr}/jwks")}).to_string()
                } else if req.starts_with("GET /jwks") {
                    json!({"keys": *k.lock().unwrap()}).to_string()
                } else {
                    let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                    continue;
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(body.as_bytes());
            }
        });
        Issuer { addr, keys, stop }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn claims(issuer: &str, user: &str, groups: &[&str], roles: &[&str]) -> Value {
    json!({"iss": issuer, "aud": "shardgate", "sub": format!("id-{user}"), "email": user,
           "groups": groups, "roles": roles, "iat": now(), "exp": now() + 600})
}

fn config(upstream: SocketAddr, issuer: &str, rules: &str) -> String {
    let base = e2e::config_for(upstream, "");
    format!(
        "auth:
  issuers:
    - issuer: {issuer}
      audience: shardgate
      leeway: 5s
      claims: {{user: email, team: groups, role: roles}}
      roles: {{gw-admins: org_admin, search-leads: team_admin}}
teams:
  search: {{models: ['m', 'mock']}}
  ads: {{}}
users:
  alice@example.com: {{teams: [search]}}
{rules}{base}"
    )
}

fn bearer(token: &str) -> String {
    format!("authorization: Bearer {token}\r\n")
}

fn chat(addr: SocketAddr, token: &str, model: &str) -> e2e::Response {
    Client::connect(addr).post_json(
        "/v1/chat/completions",
        &format!(r#"{{"model":"{model}","max_tokens":5,"messages":[{{"role":"user","content":"hi"}}]}}"#),
        &bearer(token),
    )
}

fn valid_tokens_carry_user_team_and_role(rt: e2e::Runtime) {
    let signer = Signer::new("k1");
    let idp = Issuer::start(vec![signer.jwk()]);
    let up = default_mock();
    let gw = gateway(&config(up.addr(), &idp.url(), ""), rt);
    let addr = gw.local_addr();

    let t = signer.sign(&claims(&idp.url(), "bob@example.com", &["eng", "search"], &["search-leads", "x"]));
    let who = Client::connect(addr).get_with("/admin/v1/whoami", &bearer(&t));
    assert_eq!(who.status, 200, "{}", who.text());
    let who = who.json();
    assert_eq!(who["credential"], "jwt");
    assert_eq!(who["user"], "bob@example.com");
    assert_eq!(who["team"], "search", "the first declared team the token names");
    assert_eq!(who["role"], "team_admin", "the highest mapped role");

    // The team header picks among the caller's teams.
    let t = signer.sign(&claims(&idp.url(), "bob@example.com", &["search", "ads"], &[]));
    let r = Client::connect(addr).get_with("/admin/v1/whoami", &format!("{}x-shardgate-team: ads\r\n", bearer(&t)));
    assert_eq!((r.json()["team"].as_str(), r.json()["role"].as_str()), (Some("ads"), Some("member")));
    let r = Client::connect(addr).get_with("/admin/v1/whoami", &format!("{}x-shardgate-team: ops\r\n", bearer(&t)));
    assert_eq!((r.status, r.error()["code"].as_str()), (401, Some("team_not_allowed")));

    // A declared user without team claims gets their declared team; a chat works.
    let t = signer.sign(&claims(&idp.url(), "alice@example.com", &[], &[]));
    let r = chat(addr, &t, "m");
    assert_eq!(r.status, 200, "{}", r.text());
    // Keys still work beside tokens? None are declared: a request without a credential is refused.
    let r = Client::connect(addr).post_json("/v1/chat/completions", r#"{"model":"m"}"#, "");
    assert_eq!((r.status, r.error()["code"].as_str()), (401, Some("missing_api_key")));
}

fn bad_tokens_are_401_with_a_precise_code(rt: e2e::Runtime) {
    let signer = Signer::new("k1");
    let stranger = Signer::new("k1");
    let idp = Issuer::start(vec![signer.jwk()]);
    let up = default_mock();
    let gw = gateway(&config(up.addr(), &idp.url(), ""), rt);
    let addr = gw.local_addr();
    let good = claims(&idp.url(), "bob@example.com", &["search"], &[]);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = good.clone();
        f(&mut c);
        signer.sign(&c)
    };
    let cases: Vec<(&str, String)> = vec![
        ("token_expired", with(&|c| c["exp"] = json!(now() - 60))),
        ("token_not_yet_valid", with(&|c| c["nbf"] = json!(now() + 120))),
        ("unknown_issuer", with(&|c| c["iss"] = json!("https://evil.example.com"))),
        ("invalid_audience", with(&|c| c["aud"] = json!("someone-else"))),
        ("invalid_token_signature", stranger.sign(&good)),
        ("missing_claim", with(&|c| c.as_object_mut().unwrap().remove("email").map(|_| ()).unwrap_or(()))),
    ];
    for (code, token) in cases {
        let r = chat(addr, &token, "m");
        assert_eq!(r.status, 401, "{code}: {}", r.text());
        assert_eq!(r.error()["code"], code, "{}", r.text());
        assert_eq!(r.error()["type"], "invalid_request_error");
    }
    // A tampered payload breaks the signature.
    let t = signer.sign(&good);
    let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
    parts[1] = B64.encode(claims(&idp.url(), "mallory@example.com", &["search"], &["gw-admins"]).to_string());
    let r = chat(addr, &parts.join("."), "m");
    assert_eq!((r.status, r.error()["code"].as_str()), (401, Some("invalid_token_signature")));
    // Within the leeway an expired token still passes.
    let r = chat(addr, &with(&|c| c["exp"] = json!(now() - 2)), "m");
    assert_eq!(r.status, 200, "{}", r.text());
}

fn token_callers_get_rbac_and_rate_limits(rt: e2e::Runtime) {
    let signer = Signer::new("k1");
    let idp = Issuer::start(vec![signer.jwk()]);
    let up = default_mock();
    let rules = "rate_limits:\n  - {id: per-user, per: user, limits: {requests_per_minute: 2}}\n";
    let gw = gateway(&config(up.addr(), &idp.url(), rules), rt);
    let addr = gw.local_addr();
    let t = signer.sign(&claims(&idp.url(), "carol@example.com", &["search"], &[]));
    // The team's model list applies.
    let r = chat(addr, &t, "same");
    assert_eq!((r.status, r.error()["code"].as_str()), (403, Some("model_not_allowed")));
    // The per-user rule counts the token's user (the 403 above never reached admission).
    assert_eq!(chat(addr, &t, "m").status, 200);
    assert_eq!(chat(addr, &t, "m").status, 200);
    let r = chat(addr, &t, "m");
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("x-shardgate-limit-scope"), Some("user:carol@example.com"));
    // Another user has their own bucket.
    let other = signer.sign(&claims(&idp.url(), "dan@example.com", &["search"], &[]));
    assert_eq!(chat(addr, &other, "m").status, 200);
}

fn a_rotated_key_is_fetched_on_first_sight(rt: e2e::Runtime) {
    let old = Signer::new("k1");
    let idp = Issuer::start(vec![old.jwk()]);
    let up = default_mock();
    let gw = gateway(&config(up.addr(), &idp.url(), ""), rt);
    let addr = gw.local_addr();
    assert_eq!(chat(addr, &old.sign(&claims(&idp.url(), "bob@example.com", &["search"], &[])), "m").status, 200);
    // The issuer rotates to k2.
    let new = Signer::new("k2");
    *idp.keys.lock().unwrap() = vec![new.jwk()];
    let t = new.sign(&claims(&idp.url(), "bob@example.com", &["search"], &[]));
    let first = chat(addr, &t, "m");
    assert_eq!((first.status, first.error()["code"].as_str()), (401, Some("unknown_signing_key")));
    assert!(eventually(Duration::from_secs(3), || chat(addr, &t, "m").status == 200), "k2 fetched after first sight");
}
