//! Gemini through Vertex AI, end to end: the gateway mints an access token from a
//! service-account key (the JWT bearer grant, against the mock's OAuth endpoint) off the request
//! path, sends it as a bearer token to Vertex AI's paths, and says why when it has none.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use e2e::{Client, default_mock, eventually, gateway, on_both_drivers};
use serde_json::{Value, json};

on_both_drivers!(
    vertex_targets_are_reached_with_minted_tokens,
    a_key_google_refuses_is_a_clear_503,
    embeddings_through_vertex_predict,
    tokens_are_refreshed_before_they_expire,
);

/// The test-only service-account key, its token endpoint pointed at the mock and its email
/// replaced, written to `dir`.
fn key_file(dir: &Path, mock: SocketAddr, email: &str) -> PathBuf {
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/../adapters/testdata/gemini/vertex-service-account.json");
    let mut key: Value = serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
    key["token_uri"] = json!(format!("http://{mock}/token"));
    key["client_email"] = json!(email);
    let path = dir.join(format!("{email}.json"));
    std::fs::write(&path, key.to_string()).unwrap();
    path
}

fn config(mock: SocketAddr, key: &Path) -> String {
    format!(
        "providers:
  vx:
    kind: gemini
    base_url: 'http://{mock}'
    vertex: {{credentials_file: '{}', location: us-central1}}
models:
  vgem: {{target: vx/gemini-mock}}
  vemb: {{target: vx/text-embedding-005}}
",
        key.display()
    )
}

fn chat(addr: SocketAddr, stream: bool) -> e2e::Response {
    let body = json!({"model": "vgem", "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
    Client::connect(addr).post_json("/v1/chat/completions", &body.to_string(), "x-mock-tokens: 4\r\n")
}

fn vertex_targets_are_reached_with_minted_tokens(rt: e2e::Runtime) {
    let up = default_mock();
    let dir = e2e::tempdir();
    let key = key_file(dir.path(), up.addr(), "gw@shardgate-test.iam.gserviceaccount.com");
    let gw = gateway(&config(up.addr(), &key), rt);
    // The token is minted before the gateway serves (and refreshed in the background).
    let r = chat(gw.local_addr(), false);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["choices"][0]["message"]["content"], "This is a mock");
    let r = chat(gw.local_addr(), true);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("data: [DONE]"), "{}", r.text());
    // The mock answers Vertex AI's paths only with a token from its `/token` (401 otherwise),
    // so these answers prove the path and the credential.
}

fn a_key_google_refuses_is_a_clear_503(rt: e2e::Runtime) {
    let up = default_mock();
    let dir = e2e::tempdir();
    let key = key_file(dir.path(), up.addr(), "revoked@shardgate-test.iam.gserviceaccount.com");
    let gw = gateway(&config(up.addr(), &key), rt);
    let mut last = None;
    assert!(eventually(Duration::from_secs(2), || {
        let r = chat(gw.local_addr(), false);
        let done = r.status == 503;
        last = Some(r);
        done
    }));
    let r = last.unwrap();
    let message = r.error()["message"].as_str().unwrap().to_string();
    assert!(message.contains("provider vx: no access token"), "{message}");
    assert!(message.contains("invalid_grant"), "Google's reason is in the message: {message}");
    assert!(!message.contains("PRIVATE KEY"), "{message}");
}

fn embeddings_through_vertex_predict(rt: e2e::Runtime) {
    let up = default_mock();
    let dir = e2e::tempdir();
    let key = key_file(dir.path(), up.addr(), "emb@shardgate-test.iam.gserviceaccount.com");
    let gw = gateway(&config(up.addr(), &key), rt);
    let body = json!({"model": "vemb", "input": ["hello", "world!!!"], "dimensions": 4});
    let r = Client::connect(gw.local_addr()).post_json("/v1/embeddings", &body.to_string(), "");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 4);
    assert_eq!(v["usage"]["prompt_tokens"], 4, "Vertex AI's token counts, summed: {v}");
}

fn tokens_are_refreshed_before_they_expire(rt: e2e::Runtime) {
    let up = default_mock();
    let dir = e2e::tempdir();
    // Tokens living 3 s are refreshed a fifth of their life before expiry (about every 2 s),
    // off the request path, and no more often.
    let key = key_file(dir.path(), up.addr(), "short@shardgate-test.iam.gserviceaccount.com");
    let gw = gateway(&config(up.addr(), &key), rt);
    let requests = || up.stats().requests.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(requests(), 1, "one token minted at start");
    assert!(eventually(Duration::from_secs(5), || requests() >= 2), "the token was minted again");
    std::thread::sleep(Duration::from_millis(300));
    assert!(requests() <= 3, "not re-minted on every pass of the thread: {}", requests());
    // Requests keep working throughout.
    assert_eq!(chat(gw.local_addr(), false).status, 200);
}
