//! Azure OpenAI and OpenAI-compatible host quirks, end to end. The mock provider speaks Azure's
//! URLs (deployment paths with `api-version`, or the `/openai/v1` surface) and refuses requests
//! without `api-key` or a bearer token, as Azure does; `x-mock-echo` shows what arrived.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::net::SocketAddr;

use e2e::{Client, Response, default_mock, gateway, on_both_drivers};
use serde_json::{Value, json};

on_both_drivers!(
    azure_deployments_are_reached_by_their_urls,
    the_v1_surface_takes_an_entra_token_and_the_deployment_in_the_body,
    azure_errors_are_relayed_in_openai_shape,
    host_quirks_drop_and_rename_fields,
    entra_applications_get_minted_tokens,
    workload_identity_mints_with_the_federated_token_file,
    managed_identities_get_their_tokens_from_the_platform,
    base64_embeddings_are_honoured_whatever_the_host,
    anthropic_clients_reach_azure_deployments,
);

fn config(upstream: SocketAddr) -> String {
    format!(
        "providers:
  az: {{kind: azure, base_url: 'http://{upstream}', api_key: azure-secret}}
  az1:
    kind: azure
    base_url: 'http://{upstream}'
    azure: {{surface: v1, bearer_token: entra-token}}
  entra:
    kind: azure
    base_url: 'http://{upstream}'
    azure: {{entra: {{tenant_id: contoso, client_id: app-1, client_secret: s3cret, authority: 'http://{upstream}'}}}}
  entra-wrong:
    kind: azure
    base_url: 'http://{upstream}'
    azure: {{entra: {{tenant_id: contoso, client_id: app-1, client_secret: wrong, authority: 'http://{upstream}'}}}}
  nokey-version: {{kind: azure, base_url: 'http://{upstream}', api_key: k, azure: {{api_version: ''}}}}
  quirky:
    kind: openai-compatible
    base_url: 'http://{upstream}/v1'
    drop_params: [logit_bias, 'messages[].name']
    rename_params: {{max_completion_tokens: max_tokens}}
models:
  gpt: {{target: az/my-gpt4o}}
  emb: {{target: az/my-embedder}}
  gpt1: {{target: az1/my-gpt4o}}
  broken: {{target: nokey-version/x}}
  q: {{target: quirky/upstream-q}}
  qe: {{target: quirky/embedder}}
  e: {{target: entra/my-gpt4o}}
  ew: {{target: entra-wrong/my-gpt4o}}
"
    )
}

fn post(addr: SocketAddr, path: &str, body: &Value, extra: &str) -> Response {
    Client::connect(addr).post_json(path, &body.to_string(), extra)
}

fn chat(model: &str) -> Value {
    json!({"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})
}

/// What the mock received, from an `x-mock-echo` answer.
struct Seen {
    target: String,
    headers: Vec<(String, String)>,
    body: Value,
}

fn seen(r: &Response) -> Seen {
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let headers = v["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h[0].as_str().unwrap().to_string(), h[1].as_str().unwrap().to_string()))
        .collect();
    Seen {
        target: v["target"].as_str().unwrap().to_string(),
        headers,
        body: serde_json::from_str(v["body"].as_str().unwrap()).unwrap(),
    }
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

fn azure_deployments_are_reached_by_their_urls(rt: e2e::Runtime) {
    let up = default_mock();
    let gw = gateway(&config(up.addr()), rt);
    let addr = gw.local_addr();
    let s =
        seen(&post(addr, "/v1/chat/completions", &chat("gpt"), "x-mock-echo: 1\r\nauthorization: Bearer client\r\n"));
    assert_eq!(s.target, "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21");
    assert_eq!(s.header("api-key"), Some("azure-secret"));
    assert_eq!(s.header("authorization"), None, "the client's credential never goes upstream");

    // Answers come back as OpenAI's, plain and streamed (usage included for cost).
    let r = post(addr, "/v1/chat/completions", &chat("gpt"), "x-mock-tokens: 3\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["usage"]["completion_tokens"], 3);
    let mut streamed = chat("gpt");
    streamed["stream"] = json!(true);
    let r = post(addr, "/v1/chat/completions", &streamed, "x-mock-tokens: 3\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("data: [DONE]"));
    assert!(!r.text().contains("\"usage\":{"), "the usage chunk the client did not ask for is stripped");

    let r = post(addr, "/v1/embeddings", &json!({"model": "emb", "input": ["a", "b"]}), "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 2);
    let s = seen(&post(addr, "/v1/embeddings", &json!({"model": "emb", "input": "a"}), "x-mock-echo: 1\r\n"));
    assert_eq!(s.target, "/openai/deployments/my-embedder/embeddings?api-version=2024-10-21");
}

fn the_v1_surface_takes_an_entra_token_and_the_deployment_in_the_body(rt: e2e::Runtime) {
    let up = default_mock();
    let gw = gateway(&config(up.addr()), rt);
    let s = seen(&post(gw.local_addr(), "/v1/chat/completions", &chat("gpt1"), "x-mock-echo: 1\r\n"));
    assert_eq!(s.target, "/openai/v1/chat/completions");
    assert_eq!(s.header("authorization"), Some("Bearer entra-token"));
    assert_eq!(s.header("api-key"), None);
    assert_eq!(s.body["model"], "my-gpt4o");
    let r = post(gw.local_addr(), "/v1/chat/completions", &chat("gpt1"), "");
    assert_eq!(r.status, 200, "{}", r.text());
}

fn azure_errors_are_relayed_in_openai_shape(rt: e2e::Runtime) {
    let up = default_mock();
    let gw = gateway(&config(up.addr()), rt);
    // An empty api-version reaches Azure without one: its 404 comes back as it came.
    let r = post(gw.local_addr(), "/v1/chat/completions", &chat("broken"), "");
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["error"]["message"], "Resource not found");
    assert_eq!(r.json()["error"]["type"], "invalid_request_error", "OpenAI's shape: a type for the status");
    assert_eq!(r.json()["error"]["code"], Value::Null, "a code that only repeats the status is dropped");
    let r = post(gw.local_addr(), "/v1/chat/completions", &chat("gpt"), "x-mock-fault: status:429\r\n");
    assert_eq!(r.status, 429);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.json()["error"]["message"].is_string(), "{}", r.text());
    // A content-filter refusal: OpenAI's 400 with code `content_filter`, Azure's verdict kept.
    let r = post(gw.local_addr(), "/v1/chat/completions", &chat("gpt"), "x-mock-fault: content_policy\r\n");
    assert_eq!(r.status, 400, "{}", r.text());
    let e = r.error();
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str(), e["param"].as_str()),
        (Some("invalid_request_error"), Some("content_filter"), Some("prompt"))
    );
    assert!(e["message"].as_str().unwrap().contains("content management policy"), "{e}");
    assert_eq!(e["content_filter_result"]["violence"]["filtered"], true, "{e}");
}

fn host_quirks_drop_and_rename_fields(rt: e2e::Runtime) {
    let up = default_mock();
    let gw = gateway(&config(up.addr()), rt);
    let body = json!({"model": "q", "max_completion_tokens": 7, "logit_bias": {"50256": -100},
                      "messages": [{"role": "user", "name": "ann", "content": "hi"}], "temperature": 0.5});
    let s = seen(&post(gw.local_addr(), "/v1/chat/completions", &body, "x-mock-echo: 1\r\n"));
    assert_eq!(
        s.body,
        json!({"model": "upstream-q", "max_tokens": 7, "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5})
    );
    // A body without those fields goes up byte for byte (but for the model name).
    let raw = r#"{"model":"q",  "messages":[{"role":"user","content":"hi"}]}"#;
    let r = Client::connect(gw.local_addr()).post_json("/v1/chat/completions", raw, "x-mock-echo: 1\r\n");
    assert_eq!(r.json()["body"], r#"{"model":"upstream-q",  "messages":[{"role":"user","content":"hi"}]}"#);
    // The renamed field still answers.
    let r = post(gw.local_addr(), "/v1/chat/completions", &body, "");
    assert_eq!(r.status, 200, "{}", r.text());
}

fn entra_applications_get_minted_tokens(rt: e2e::Runtime) {
    let up = default_mock();
    let gw = gateway(&config(up.addr()), rt);
    // Minted (client credentials grant) before the gateway serves, sent as a bearer token.
    let s = seen(&post(gw.local_addr(), "/v1/chat/completions", &chat("e"), "x-mock-echo: 1\r\n"));
    assert_eq!(s.target, "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21");
    assert!(s.header("authorization").is_some_and(|a| a.starts_with("Bearer eyJ0.mock-entra-")), "{:?}", s.headers);
    assert_eq!(s.header("api-key"), None);
    assert_eq!(post(gw.local_addr(), "/v1/chat/completions", &chat("e"), "").status, 200);
    // A secret Entra refuses: a 503 with Entra's reason, and the secret nowhere.
    let r = post(gw.local_addr(), "/v1/chat/completions", &chat("ew"), "");
    assert_eq!(r.status, 503, "{}", r.text());
    let message = r.error()["message"].as_str().unwrap().to_string();
    assert!(message.contains("provider entra-wrong: no access token"), "{message}");
    assert!(message.contains("invalid_client") && message.contains("app-1"), "{message}");
    assert!(!message.contains("wrong,") && !message.contains("client_secret=wrong"), "{message}");
}

fn base64_embeddings_are_honoured_whatever_the_host(rt: e2e::Runtime) {
    use base64::Engine as _;
    let up = default_mock();
    let gw = gateway(&config(up.addr()), rt);
    // The mock, like many hosts, ignores `encoding_format` and answers floats.
    let floats =
        post(gw.local_addr(), "/v1/embeddings", &json!({"model": "qe", "input": ["a", "b"], "dimensions": 4}), "");
    assert_eq!(floats.status, 200, "{}", floats.text());
    let want: Vec<Vec<f32>> = floats.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect())
        .collect();
    // Asked for base64 (OpenAI's SDKs do by default), the client gets base64 of the same f32s.
    let body = json!({"model": "qe", "input": ["a", "b"], "dimensions": 4, "encoding_format": "base64"});
    let r = post(gw.local_addr(), "/v1/embeddings", &body, "");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    for (i, d) in v["data"].as_array().unwrap().iter().enumerate() {
        let bytes = base64::engine::general_purpose::STANDARD.decode(d["embedding"].as_str().unwrap()).unwrap();
        let got: Vec<f32> = bytes.chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(got, want[i]);
    }
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0, "the rest is as the host sent it: {v}");
    assert_eq!((v["object"].as_str(), v["model"].as_str()), (Some("list"), Some("embedder")));
}

fn anthropic_clients_reach_azure_deployments(rt: e2e::Runtime) {
    let up = default_mock();
    let gw = gateway(&config(up.addr()), rt);
    // The mock answers Azure's deployment URLs only with api-version and a credential: a
    // message coming back proves both, for a key and for a minted Entra token.
    for model in ["gpt", "e", "gpt1"] {
        let body = json!({"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
        let r = post(gw.local_addr(), "/v1/messages", &body, "anthropic-version: 2023-06-01\r\nx-mock-tokens: 3\r\n");
        assert_eq!(r.status, 200, "{model}: {}", r.text());
        let m = r.json();
        assert_eq!((m["type"].as_str(), m["content"][0]["text"].as_str()), (Some("message"), Some("This is a")), "{m}");
    }
}

fn workload_identity_mints_with_the_federated_token_file(rt: e2e::Runtime) {
    let up = default_mock();
    let dir = e2e::tempdir();
    let token_file = dir.path().join("azure-identity-token");
    std::fs::write(&token_file, "eyJfed.assertion.sig\n").unwrap();
    let expired = dir.path().join("expired-token");
    std::fs::write(&expired, "expired").unwrap();
    let u = up.addr();
    let entra = |file: &std::path::Path| {
        format!(
            "    kind: azure\n    base_url: 'http://{u}'\n    azure: {{entra: {{tenant_id: contoso, client_id: app-1, federated_token_file: '{}', authority: 'http://{u}'}}}}\n",
            file.display()
        )
    };
    let yaml = format!(
        "providers:\n  fed:\n{}  fed-expired:\n{}models:\n  f: {{target: fed/my-gpt4o}}\n  fx: {{target: fed-expired/my-gpt4o}}\n",
        entra(&token_file),
        entra(&expired)
    );
    let gw = gateway(&yaml, rt);
    let s = seen(&post(gw.local_addr(), "/v1/chat/completions", &chat("f"), "x-mock-echo: 1\r\n"));
    assert!(s.header("authorization").is_some_and(|a| a.starts_with("Bearer eyJ0.mock-entra-")), "{:?}", s.headers);
    // Entra refuses the assertion: a 503 with its reason, the assertion nowhere.
    let r = post(gw.local_addr(), "/v1/chat/completions", &chat("fx"), "");
    assert_eq!(r.status, 503, "{}", r.text());
    let message = r.error()["message"].as_str().unwrap().to_string();
    assert!(message.contains("AADSTS700024") && message.contains("federated token file"), "{message}");
}

/// The host's managed identity: the Instance Metadata Service (system-assigned, and a
/// user-assigned identity it does not know) and App Service's endpoint with its secret header.
fn managed_identities_get_their_tokens_from_the_platform(rt: e2e::Runtime) {
    let up = default_mock();
    let u = up.addr();
    let provider =
        |mi: &str| format!("    kind: azure\n    base_url: 'http://{u}'\n    azure: {{managed_identity: {mi}}}\n");
    let yaml = format!(
        "providers:\n  vm:\n{}  vm-unknown:\n{}  app:\n{}models:\n  v: {{target: vm/my-gpt4o}}\n  vu: {{target: vm-unknown/my-gpt4o}}\n  a: {{target: app/my-gpt4o}}\n",
        provider(&format!("{{endpoint: 'http://{u}/metadata/identity/oauth2/token'}}")),
        provider(&format!("{{endpoint: 'http://{u}/metadata/identity/oauth2/token', client_id: unknown}}")),
        provider(&format!(
            "{{endpoint: 'http://{u}/msi/token', identity_header: mock-identity-header, client_id: uami-1}}"
        )),
    );
    let gw = gateway(&yaml, rt);
    for model in ["v", "a"] {
        let s = seen(&post(gw.local_addr(), "/v1/chat/completions", &chat(model), "x-mock-echo: 1\r\n"));
        assert_eq!(s.target, "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21");
        let auth = s.header("authorization");
        assert!(auth.is_some_and(|a| a.starts_with("Bearer eyJ0.mock-msi-")), "{model}: {:?}", s.headers);
        assert_eq!(s.header("api-key"), None);
    }
    // The platform does not know the identity: a 503 with its reason.
    let r = post(gw.local_addr(), "/v1/chat/completions", &chat("vu"), "");
    assert_eq!(r.status, 503, "{}", r.text());
    let message = r.error()["message"].as_str().unwrap().to_string();
    assert!(message.contains("Identity not found") && message.contains("managed identity unknown"), "{message}");
}
