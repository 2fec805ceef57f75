//! The request log end to end: requests through the real gateway against the mock provider,
//! their records read back through the admin API and from the JSON-lines file, each record's id
//! the one the client got in `x-shardgate-request-id`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::time::Duration;

use e2e::{Client, Response, config_for, default_mock, eventually, gateway};
use serde_json::Value;

const ROOT: &str = "sk-sg-root-admin-0000000";
const ADA: &str = "sk-sg-ada-000000000000000";
const BEN: &str = "sk-sg-ben-000000000000000";

fn config(mock: std::net::SocketAddr, db: &std::path::Path, jsonl: &std::path::Path) -> String {
    let extra = format!(
        "store: {{path: '{}'}}
logging:
  requests: {{jsonl: '{}'}}
auth: {{pepper: test-pepper-0123456789}}
teams:
  search: {{}}
  ads: {{}}
users:
  root: {{role: org_admin}}
  ada: {{teams: [search]}}
  ben: {{teams: [ads], role: team_admin}}
keys:
  - {{name: root-key, secret: {ROOT}, user: root}}
  - {{name: ada-key, secret: {ADA}, user: ada}}
  - {{name: ben-key, secret: {BEN}, user: ben}}
",
        db.display(),
        jsonl.display()
    );
    config_for(mock, &extra)
}

fn get(addr: std::net::SocketAddr, path: &str, key: &str) -> Response {
    Client::connect(addr).get_with(path, &format!("authorization: Bearer {key}\r\n"))
}

fn chat(addr: std::net::SocketAddr, key: &str, model: &str, stream: bool) -> Response {
    let body = format!(r#"{{"model":"{model}","stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#);
    Client::connect(addr).post_json("/v1/chat/completions", &body, &format!("authorization: Bearer {key}\r\n"))
}

#[test]
fn every_llm_request_is_logged_off_the_request_path_and_can_be_queried() {
    let mock = default_mock();
    let dir = e2e::tempdir();
    let (db, jsonl) = (dir.path().join("log.db"), dir.path().join("requests.jsonl"));
    let gw = gateway(&config(mock.addr(), &db, &jsonl), e2e::Runtime::Epoll);
    let addr = gw.local_addr();
    let ok = chat(addr, ADA, "m", false);
    assert_eq!(ok.status, 200, "{}", ok.text());
    let ok_id = ok.header("x-shardgate-request-id").expect("a request id").to_owned();
    let streamed = chat(addr, ADA, "m", true);
    assert_eq!(streamed.status, 200);
    let streamed_id = streamed.header("x-shardgate-request-id").expect("a request id").to_owned();
    let bens = chat(addr, BEN, "m", false);
    assert_eq!(bens.status, 200);
    let unknown = chat(addr, ADA, "no-such-model", false);
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    assert!(unknown.header("x-shardgate-request-id").is_some(), "errors carry the id too");
    assert_ne!(ok_id, streamed_id);
    // Records reach the store within a hand-over (100 ms) and a write.
    let listed = || get(addr, "/admin/v1/requests", ROOT).json();
    assert!(
        eventually(Duration::from_secs(5), || listed()["data"].as_array().is_some_and(|d| d.len() == 4)),
        "four records: {}",
        listed()
    );
    let data = listed()["data"].as_array().unwrap().clone();
    println!("{data:#?}");
    assert_eq!(data[0]["model"], "no-such-model", "newest first");
    assert_eq!(data[0]["status"], 404);
    assert_eq!(data[0]["error"], "unknown_model");
    let one = get(addr, &format!("/admin/v1/requests/{ok_id}"), ROOT);
    assert_eq!(one.status, 200, "{}", one.text());
    let one = one.json();
    assert_eq!(one["id"], ok_id.as_str());
    assert_eq!(one["endpoint"], "chat.completions");
    assert_eq!(
        (one["key"].as_str(), one["user"].as_str(), one["team"].as_str()),
        (Some("ada-key"), Some("ada"), Some("search"))
    );
    assert_eq!(one["model"], "m");
    assert_eq!(one["provider"], "up");
    assert_eq!(one["stream"], false);
    assert_eq!(one["status"], 200);
    let usage = &ok.json()["usage"];
    assert_eq!(one["input_tokens"], usage["prompt_tokens"]);
    assert_eq!(one["output_tokens"], usage["completion_tokens"]);
    assert!(one["latency_us"].as_u64().unwrap() > 0 && one["overhead_us"].as_u64().is_some(), "{one}");
    let streamed = get(addr, &format!("/admin/v1/requests/{streamed_id}"), ROOT).json();
    assert_eq!(streamed["stream"], true);
    assert!(streamed["ttft_us"].as_u64().is_some(), "{streamed}");
    // Filters, and who may look.
    let n = |path: &str, key: &str| get(addr, path, key).json()["data"].as_array().map_or(0, Vec::len);
    assert_eq!(n("/admin/v1/requests?status=200", ROOT), 3);
    assert_eq!(n("/admin/v1/requests?model=m&key=ada-key", ROOT), 2);
    assert_eq!(n("/admin/v1/requests?team=ads", ROOT), 1);
    assert_eq!(n("/admin/v1/requests?limit=1", ROOT), 1);
    let seen_by_ben = get(addr, "/admin/v1/requests", BEN);
    assert_eq!(seen_by_ben.status, 200, "{}", seen_by_ben.text());
    let seen_by_ben = seen_by_ben.json()["data"].as_array().unwrap().clone();
    assert_eq!(seen_by_ben.len(), 1, "a team admin sees their teams' requests only: {seen_by_ben:?}");
    assert_eq!(seen_by_ben[0]["key"], "ben-key");
    assert_eq!(get(addr, "/admin/v1/requests", ADA).status, 403);
    assert_eq!(get(addr, "/admin/v1/requests?status=abc", ROOT).status, 400);
    assert_eq!(get(addr, "/admin/v1/requests?colour=red", ROOT).status, 400);
    assert_eq!(get(addr, "/admin/v1/requests/req_nope", ROOT).status, 404);
    // Cost attribution from the same records: grouped, per period, the top of each, as CSV.
    let by_team = get(addr, "/admin/v1/costs?group_by=team", ROOT).json();
    let rows = by_team["data"].as_array().unwrap();
    let requests_of = |team: &str| rows.iter().find(|r| r["team"] == team).map(|r| r["requests"].clone());
    assert_eq!((requests_of("search"), requests_of("ads")), (Some(3.into()), Some(1.into())), "{by_team}");
    let cost: f64 = data.iter().filter_map(|r| r["cost_micros"].as_f64()).sum::<f64>() / 1e6;
    let summed: f64 = rows.iter().filter_map(|r| r["cost_usd"].as_f64()).sum();
    assert!((cost - summed).abs() < 1e-9, "{cost} vs {summed}");
    let hourly = get(addr, "/admin/v1/costs?group_by=team,model&granularity=hour&top=1", ROOT).json();
    // One hour's top group (two, should the requests straddle an hour).
    assert!((1..=2).contains(&hourly["data"].as_array().unwrap().len()), "{hourly}");
    assert!(hourly["data"][0]["period"].as_str().unwrap().ends_with(":00:00Z"), "{hourly}");
    let csv = get(addr, "/admin/v1/costs?group_by=team&format=csv", ROOT);
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    let text = csv.text();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("team,requests,input_tokens,output_tokens,cached_tokens,cost_usd"));
    assert_eq!(lines.count(), 2, "{text}");
    let bens = get(addr, "/admin/v1/costs?group_by=team", BEN).json();
    assert_eq!(bens["data"].as_array().unwrap().len(), 1, "{bens}");
    assert_eq!(bens["data"][0]["team"], "ads");
    assert_eq!(get(addr, "/admin/v1/costs?group_by=colour", ROOT).status, 400);
    assert_eq!(get(addr, "/admin/v1/costs?granularity=week", ROOT).status, 400);
    // The same records as JSON lines, one object per line.
    let lines = || std::fs::read_to_string(&jsonl).unwrap_or_default();
    assert!(eventually(Duration::from_secs(5), || lines().lines().count() == 4), "{}", lines());
    let first: Value = serde_json::from_str(lines().lines().next().unwrap()).unwrap();
    assert_eq!(first["id"], ok_id.as_str());
    assert_eq!(first["team"], "search");
    // Nothing was dropped, nothing waits.
    let metrics = gw.metrics_text();
    assert_eq!(e2e::metric(&metrics, "shardgate_request_log_dropped_total"), Some(0.0));
    assert_eq!(e2e::metric(&metrics, "shardgate_request_log_pending"), Some(0.0));
    // Other endpoints (models, admin, metrics) are not logged.
    assert_eq!(get(addr, "/v1/models", ADA).status, 200);
    assert!(get(addr, "/v1/models", ADA).header("x-shardgate-request-id").is_none());
}

/// Off: no store section and no sink means no record and no id.
#[test]
fn without_a_store_or_a_sink_nothing_is_logged() {
    let mock = default_mock();
    let gw = gateway(&config_for(mock.addr(), ""), e2e::Runtime::Epoll);
    let r = Client::connect(gw.local_addr()).post_json(
        "/v1/chat/completions",
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        "",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("x-shardgate-request-id").is_none());
}
