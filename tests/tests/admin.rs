#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]
//! The admin API end to end (`/admin/v1/...`): the real gateway with a store in a temporary
//! directory, against the mock provider over real sockets. Every answer is checked for its
//! status, its body or its OpenAI error shape, and every change for being in force at once.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use bench_harness::mock::MockServer;
use e2e::{Client, Response, config_for, default_mock, eventually, gateway, gateway_with, metric, on_both_drivers};
use engine::Gateway;
use engine::config::ConfigSource;
use serde_json::{Value, json};

on_both_drivers!(
    whoami_shows_credential_role_and_scope,
    keys_are_created_listed_patched_revoked_and_deleted,
    key_bodies_with_secrets_unknown_fields_or_wrong_types_are_400_naming_the_field,
    org_admin_manages_every_kind,
    a_rate_limit_made_through_the_api_applies_at_once,
    changes_that_would_not_compile_are_refused_whole,
    team_admins_are_scoped_to_their_own_teams,
    team_admins_see_the_config_keys_of_their_team,
    config_entities_members_and_strangers_are_refused,
    spend_is_reported_by_key_and_model_within_the_callers_scope,
    spend_parameters_are_checked,
    without_a_store_reads_work_and_changes_are_503,
);

const PEPPER: &str = "admin-test-pepper-0123456789";
/// Org admin.
const ROOT: &str = "sk-sg-root-0000000000000";
/// Team admin of `search`.
const LEAD: &str = "sk-sg-lead-0000000000000";
/// Member of `search`.
const ALICE: &str = "sk-sg-alice-000000000000";
/// Member of `ads`.
const BOB: &str = "sk-sg-bob-00000000000000";

/// Two teams, an org admin, a team admin of `search`, a member of each team and their keys
/// (declared the plain way: no explicit `team`, so each acts within its user's only team).
/// `upstream-m` costs $1 a token.
fn yaml(upstream: SocketAddr, store: Option<&std::path::Path>) -> String {
    let store = store.map_or(String::new(), |p| format!("store: {{path: '{}', flush_interval: 50ms}}\n", p.display()));
    config_for(
        upstream,
        &format!(
            "{store}auth: {{pepper: {PEPPER}}}
pricing:
  models:
    upstream-m: {{input_per_mtok: 1000000, output_per_mtok: 1000000}}
teams:
  search: {{}}
  ads: {{}}
users:
  root: {{role: org_admin}}
  lead: {{teams: [search], role: team_admin}}
  alice: {{teams: [search]}}
  bob: {{teams: [ads]}}
keys:
  - {{name: root-1, secret: {ROOT}, user: root}}
  - {{name: lead-1, secret: {LEAD}, user: lead}}
  - {{name: alice-1, secret: {ALICE}, user: alice}}
  - {{name: bob-1, secret: {BOB}, user: bob}}
"
        ),
    )
}

/// A gateway with a store, its provider and the directory holding the database (dropped in
/// that order).
struct Env {
    gw: Gateway,
    upstream: MockServer,
    _dir: tempfile::TempDir,
}

fn start(runtime: e2e::Runtime, shards: usize) -> Env {
    let upstream = default_mock();
    let dir = e2e::tempdir();
    let db = dir.path().join("admin.db");
    let source = ConfigSource::Text { name: "admin.yaml".into(), yaml: yaml(upstream.addr(), Some(&db)) };
    let gw = gateway_with(source, runtime, shards);
    Env { gw, upstream, _dir: dir }
}

/// One request on a fresh connection (so, with several shards, on any of them).
fn call(addr: SocketAddr, method: &str, path: &str, key: Option<&str>, body: Option<&str>) -> Response {
    let auth = key.map_or(String::new(), |k| format!("authorization: Bearer {k}\r\n"));
    let body_headers =
        body.map_or(String::new(), |b| format!("content-type: application/json\r\ncontent-length: {}\r\n", b.len()));
    let req = format!("{method} {path} HTTP/1.1\r\nhost: test\r\n{auth}{body_headers}\r\n{}", body.unwrap_or(""));
    let mut c = Client::connect(addr);
    c.send(req.as_bytes());
    c.read_response()
}

impl Env {
    fn addr(&self) -> SocketAddr {
        self.gw.local_addr()
    }

    fn get(&self, key: &str, path: &str) -> Response {
        call(self.addr(), "GET", &format!("/admin/v1/{path}"), Some(key), None)
    }

    fn put(&self, key: &str, path: &str, body: &str) -> Response {
        call(self.addr(), "PUT", &format!("/admin/v1/{path}"), Some(key), Some(body))
    }

    fn post(&self, key: &str, path: &str, body: &str) -> Response {
        call(self.addr(), "POST", &format!("/admin/v1/{path}"), Some(key), Some(body))
    }

    fn patch(&self, key: &str, path: &str, body: &str) -> Response {
        call(self.addr(), "PATCH", &format!("/admin/v1/{path}"), Some(key), Some(body))
    }

    fn delete(&self, key: &str, path: &str) -> Response {
        call(self.addr(), "DELETE", &format!("/admin/v1/{path}"), Some(key), None)
    }

    fn chat(&self, key: &str, model: &str) -> Response {
        let body = format!(r#"{{"model":"{model}","max_tokens":16,"messages":[]}}"#);
        call(self.addr(), "POST", "/v1/chat/completions", Some(key), Some(&body))
    }

    fn upstream_requests(&self) -> u64 {
        self.upstream.stats().requests.load(SeqCst)
    }
}

/// Asserts an error answer: status, OpenAI shape, `code` and `param`; returns the error.
#[track_caller]
fn assert_error(r: &Response, status: u16, code: Option<&str>, param: Option<&str>) -> Value {
    assert_eq!(r.status, status, "{}", r.text());
    let e = r.error();
    assert_eq!(e["code"].as_str(), code, "{e}");
    assert_eq!(e["param"].as_str(), param, "{e}");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    e
}

/// The names in a list answer.
fn names(r: &Response) -> Vec<String> {
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "list");
    let mut out: Vec<String> =
        v["data"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().into()).collect();
    out.sort();
    out
}

fn whoami_shows_credential_role_and_scope(runtime: e2e::Runtime) {
    let env = start(runtime, 1);
    let r = env.get(ROOT, "whoami");
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(
        (&v["object"], &v["credential"], &v["key"], &v["user"], &v["team"], &v["role"], &v["administers"]),
        (
            &json!("identity"),
            &json!("key"),
            &json!("root-1"),
            &json!("root"),
            &Value::Null,
            &json!("org_admin"),
            &json!("everything")
        )
    );
    let v = env.get(LEAD, "whoami").json();
    assert_eq!(
        (&v["credential"], &v["key"], &v["user"], &v["team"], &v["role"], &v["administers"]),
        (&json!("key"), &json!("lead-1"), &json!("lead"), &json!("search"), &json!("team_admin"), &json!(["search"]))
    );
    let v = env.get(ALICE, "whoami").json();
    assert_eq!(
        (&v["credential"], &v["key"], &v["user"], &v["team"], &v["role"], &v["administers"]),
        (&json!("key"), &json!("alice-1"), &json!("alice"), &json!("search"), &json!("member"), &Value::Null)
    );
    assert!(!env.get(ALICE, "whoami").text().contains(ALICE), "whoami never echoes the secret");
}

fn keys_are_created_listed_patched_revoked_and_deleted(runtime: e2e::Runtime) {
    let env = start(runtime, 2);
    let r = env.post(ROOT, "keys", r#"{"name":"made","user":"alice","metadata":{"purpose":"test"}}"#);
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    assert_eq!((&v["object"], &v["name"], &v["source"]), (&json!("key"), &json!("made"), &json!("admin")));
    let secret = v["key"].as_str().unwrap().to_string();
    assert!(secret.len() >= 16, "{secret}");
    assert!(v["note"].as_str().unwrap().contains("once"), "{v}");
    let spec = &v["spec"];
    assert_eq!(
        (&spec["user"], &spec["metadata"], &spec["revoked"]),
        (&json!("alice"), &json!({"purpose": "test"}), &json!(false))
    );
    assert!(spec.get("hash").is_none() && spec.get("secret").is_none(), "{spec}");
    let display = spec["display"].as_str().unwrap();
    let shown = display.trim_end_matches(['…', '.']);
    assert!(shown.len() >= 6 && secret.starts_with(shown) && display.len() < secret.len(), "{display} vs the secret");

    // At once, on every shard: fresh connections land on either.
    let before = env.upstream_requests();
    for _ in 0..16 {
        let r = env.chat(&secret, "m");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(env.upstream_requests(), before + 16);
    let text = env.gw.metrics_text();
    for shard in ["0", "1"] {
        let n = metric(&text, &format!("shardgate_shard_requests_total{{shard=\"{shard}\"}}")).unwrap_or(0.0);
        assert!(n > 0.0, "shard {shard} served nothing: the test did not reach every shard");
    }

    // The secret is never shown again.
    let r = env.get(ROOT, "keys/made");
    assert_eq!(r.status, 200);
    assert!(!r.text().contains(&secret), "{}", r.text());
    let v = r.json();
    assert_eq!((&v["name"], &v["source"], &v["spec"]["display"]), (&json!("made"), &json!("admin"), &json!(display)));
    assert!(v.get("key").is_none() && v["spec"].get("hash").is_none(), "{v}");
    let r = env.get(ROOT, "keys");
    assert!(!r.text().contains(&secret));
    assert!(!r.text().contains("hmac-sha256"), "no digest in listings: {}", r.text());
    assert_eq!(names(&r), ["alice-1", "bob-1", "lead-1", "made", "root-1"]);
    let sources: Vec<(String, String)> = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().into(), e["source"].as_str().unwrap().into()))
        .collect();
    assert!(
        sources.contains(&("made".into(), "admin".into())) && sources.contains(&("alice-1".into(), "config".into()))
    );
    // A second key of the same name is refused.
    let r = env.post(ROOT, "keys", r#"{"name":"made","user":"alice"}"#);
    assert_error(&r, 409, Some("conflict"), Some("name"));

    // PATCH narrows the models: refused at once, naming the key's rule.
    let r = env.patch(ROOT, "keys/made", r#"{"models":["alias-m"]}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["spec"]["models"], json!(["alias-m"]));
    assert_eq!(r.json()["spec"]["metadata"], json!({"purpose": "test"}), "fields not given are kept");
    for _ in 0..4 {
        let r = env.chat(&secret, "m");
        let e = assert_error(&r, 403, Some("model_not_allowed"), Some("model"));
        assert!(e["message"].as_str().unwrap().contains("key:made.models"), "{e}");
        assert_eq!(env.chat(&secret, "alias-m").status, 200);
    }
    // Revoked: 401 at once, everywhere.
    let r = env.post(ROOT, "keys/made/revoke", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["spec"]["revoked"], json!(true));
    let served = env.upstream_requests();
    for _ in 0..8 {
        assert_error(&env.chat(&secret, "alias-m"), 401, Some("revoked_api_key"), None);
    }
    assert_eq!(env.upstream_requests(), served, "a revoked key reaches no provider");
    assert_eq!(env.get(ROOT, "keys/made").json()["spec"]["revoked"], json!(true));
    // Deleted: gone from reads, and the secret is unknown.
    let r = env.delete(ROOT, "keys/made");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"object": "key", "name": "made", "deleted": true}));
    assert_error(&env.get(ROOT, "keys/made"), 404, Some("not_found"), None);
    assert_eq!(names(&env.get(ROOT, "keys")), ["alice-1", "bob-1", "lead-1", "root-1"]);
    assert_error(&env.chat(&secret, "m"), 401, Some("invalid_api_key"), None);
    assert_error(&env.delete(ROOT, "keys/made"), 404, Some("not_found"), None);
    // A key without a name gets one.
    let r = env.post(ROOT, "keys", r#"{"user":"bob"}"#);
    assert_eq!(r.status, 201, "{}", r.text());
    let name = r.json()["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("key-"), "{name}");
    assert_eq!(env.chat(r.json()["key"].as_str().unwrap(), "m").status, 200);
}

fn key_bodies_with_secrets_unknown_fields_or_wrong_types_are_400_naming_the_field(runtime: e2e::Runtime) {
    let env = start(runtime, 1);
    let cases = [
        (r#"{"name":"x","user":"alice","secret":"sk-sg-chosen-by-me-000000"}"#, "secret"),
        (r#"{"name":"x","user":"alice","hash":"hmac-sha256:00"}"#, "hash"),
        (r#"{"name":"x","user":"alice","display":"sk-sg"}"#, "display"),
        (r#"{"name":"x","user":"alice","colour":"red"}"#, "colour"),
        (r#"{"name":"x","user":"alice","limits":{"concurrent":"many"}}"#, "limits.concurrent"),
        (r#"{"name":"x","user":"alice","limits":{"requests_per_minut":1}}"#, "limits.requests_per_minut"),
        (r#"{"name":"x","user":"alice","models":"m"}"#, "models"),
        (r#"{"name":"x y","user":"alice"}"#, "name"),
    ];
    for (body, param) in cases {
        let r = env.post(ROOT, "keys", body);
        let e = assert_error(&r, 400, None, Some(param));
        assert_eq!(e["type"], "invalid_request_error");
        let last = param.rsplit('.').next().unwrap();
        assert!(e["message"].as_str().unwrap().contains(last), "{body}: {e}");
    }
    let r = env.post(ROOT, "keys", r#"{"name":"x","#);
    assert_eq!(r.status, 400);
    assert_eq!(r.error()["type"], "invalid_request_error");
    // The same checks on PATCH (of a key the API made), and on the other kinds.
    assert_eq!(env.post(ROOT, "keys", r#"{"name":"p","user":"alice"}"#).status, 201);
    for (body, param) in [
        (r#"{"secret":"sk-sg-chosen-by-me-000000"}"#, "secret"),
        (r#"{"hash":"hmac-sha256:00"}"#, "hash"),
        (r#"{"name":"q"}"#, "name"),
        (r#"{"colour":"red"}"#, "colour"),
        (r#"{"limits":{"concurrent":-1}}"#, "limits.concurrent"),
    ] {
        assert_error(&env.patch(ROOT, "keys/p", body), 400, None, Some(param));
    }
    assert_error(&env.put(ROOT, "users/u", r#"{"teams":"search"}"#), 400, None, Some("teams"));
    assert_error(&env.put(ROOT, "users/u", r#"{"teams":["search"],"role":"boss"}"#), 400, None, Some("role"));
    assert_error(
        &env.put(ROOT, "teams/t", r#"{"limits":{"tokens_per_minute":"lots"}}"#),
        400,
        None,
        Some("limits.tokens_per_minute"),
    );
    assert_error(
        &env.put(ROOT, "rate_limits/r", r#"{"limits":{"requests_per_minute":1},"when":{"teams":"search"}}"#),
        400,
        None,
        Some("when.teams"),
    );
    assert_error(&env.put(ROOT, "budgets/b", r#"{"id":"other","limits":{"usd_per_day":1}}"#), 400, None, Some("id"));
    assert_error(
        &env.put(ROOT, "budgets/b", r#"{"limits":{"usd_per_day":"1"}}"#),
        400,
        None,
        Some("limits.usd_per_day"),
    );
    assert_error(&env.put(ROOT, "users/a%20b", r#"{"teams":["search"]}"#), 400, None, Some("name"));
    // Nothing of it was made.
    assert_eq!(names(&env.get(ROOT, "keys")), ["alice-1", "bob-1", "lead-1", "p", "root-1"]);
    assert_eq!(names(&env.get(ROOT, "users")), ["alice", "bob", "lead", "root"]);
    assert_eq!(names(&env.get(ROOT, "rate_limits")), Vec::<String>::new());
    assert_eq!(names(&env.get(ROOT, "budgets")), Vec::<String>::new());
}

fn org_admin_manages_every_kind(runtime: e2e::Runtime) {
    let env = start(runtime, 1);
    // Create (201), then replace (200).
    let r = env.put(ROOT, "teams/infra", r#"{"models":["m"]}"#);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"object": "team", "name": "infra", "source": "admin", "spec": {"environments": [], "models": ["m"]}})
    );
    let r = env.put(ROOT, "teams/infra", r#"{"models":["m","alias-m"]}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = env.get(ROOT, "teams/infra");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["spec"]["models"], json!(["m", "alias-m"]));
    assert_eq!(names(&env.get(ROOT, "teams")), ["ads", "infra", "search"]);
    let search = env.get(ROOT, "teams/search").json();
    assert_eq!((&search["source"], &search["object"]), (&json!("config"), &json!("team")));

    let r = env.put(ROOT, "users/carol", r#"{"teams":["infra"],"role":"team_admin"}"#);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!((&r.json()["spec"]["teams"], &r.json()["spec"]["role"]), (&json!(["infra"]), &json!("team_admin")));
    let r = env.put(ROOT, "applications/indexer", r#"{"team":"infra","models":["m"]}"#);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["spec"], json!({"team": "infra", "models": ["m"]}));
    let r = env.put(
        ROOT,
        "rate_limits/infra-rpm",
        r#"{"per":"user","when":{"teams":["infra"]},"limits":{"requests_per_minute":100}}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    assert_eq!((&v["object"], &v["name"]), (&json!("rate_limit"), &json!("infra-rpm")));
    assert_eq!(v["spec"]["limits"]["requests_per_minute"], 100);
    assert!(v["spec"].get("id").is_none(), "the id is the name: {v}");
    let r = env.put(
        ROOT,
        "budgets/infra-daily",
        r#"{"id":"infra-daily","per":"team","when":{"teams":["infra"]},"limits":{"usd_per_day":50}}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["spec"]["limits"]["usd_per_day"], 50.0);
    assert_eq!(r.json()["object"], "budget");

    // A key for the application, and the application works.
    let r = env.post(ROOT, "keys", r#"{"name":"indexer-1","application":"indexer"}"#);
    assert_eq!(r.status, 201, "{}", r.text());
    let secret = r.json()["key"].as_str().unwrap().to_string();
    assert_eq!(env.chat(&secret, "m").status, 200);
    let e = assert_error(&env.chat(&secret, "mock"), 403, Some("model_not_allowed"), Some("model"));
    assert!(e["message"].as_str().unwrap().contains(".models"), "{e}");
    for (kind, name) in [
        ("users", "carol"),
        ("applications", "indexer"),
        ("rate_limits", "infra-rpm"),
        ("budgets", "infra-daily"),
        ("keys", "indexer-1"),
    ] {
        let r = env.get(ROOT, &format!("{kind}/{name}"));
        assert_eq!((r.status, &r.json()["source"]), (200, &json!("admin")), "{kind}/{name}");
    }
    assert_eq!(names(&env.get(ROOT, "users")), ["alice", "bob", "carol", "lead", "root"]);
    assert_eq!(names(&env.get(ROOT, "applications")), ["indexer"]);
    assert_eq!(names(&env.get(ROOT, "rate_limits")), ["infra-rpm"]);
    assert_eq!(names(&env.get(ROOT, "budgets")), ["infra-daily"]);

    // Delete, in an order that always compiles.
    for (kind, object, name) in [
        ("keys", "key", "indexer-1"),
        ("applications", "application", "indexer"),
        ("budgets", "budget", "infra-daily"),
        ("rate_limits", "rate_limit", "infra-rpm"),
        ("users", "user", "carol"),
        ("teams", "team", "infra"),
    ] {
        let r = env.delete(ROOT, &format!("{kind}/{name}"));
        assert_eq!(r.status, 200, "{kind}/{name}: {}", r.text());
        assert_eq!(r.json(), json!({"object": object, "name": name, "deleted": true}));
        assert_error(&env.get(ROOT, &format!("{kind}/{name}")), 404, Some("not_found"), None);
    }
    assert_eq!(names(&env.get(ROOT, "teams")), ["ads", "search"]);
    assert_error(&env.chat(&secret, "m"), 401, Some("invalid_api_key"), None);
}

fn a_rate_limit_made_through_the_api_applies_at_once(runtime: e2e::Runtime) {
    let env = start(runtime, 1);
    assert_eq!(env.chat(ALICE, "m").status, 200);
    let r = env.put(
        ROOT,
        "rate_limits/two-a-minute",
        r#"{"per":"key","when":{"keys":["alice-1"]},"limits":{"requests_per_minute":2}}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    for remaining in ["1", "0"] {
        let r = env.chat(ALICE, "m");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-ratelimit-remaining-requests"), Some(remaining));
    }
    let served = env.upstream_requests();
    let r = env.chat(ALICE, "m");
    let e = assert_error(&r, 429, Some("rate_limit_exceeded"), None);
    assert!(e["message"].as_str().unwrap().contains("two-a-minute"), "{e}");
    assert_eq!(r.header("x-shardgate-limit-rule"), Some("two-a-minute"));
    assert_eq!(r.header("x-shardgate-limit-scope"), Some("key:alice-1"));
    assert_eq!(env.upstream_requests(), served);
    assert_eq!(env.chat(BOB, "m").status, 200, "another key is not limited by it");
    // Replaced with a higher limit, then deleted: in force at once each time.
    let r = env.put(
        ROOT,
        "rate_limits/two-a-minute",
        r#"{"per":"key","when":{"keys":["alice-1"]},"limits":{"requests_per_minute":100}}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.chat(ALICE, "m").status, 200);
    assert_eq!(env.delete(ROOT, "rate_limits/two-a-minute").status, 200);
    let r = env.chat(ALICE, "m");
    assert_eq!((r.status, r.header("x-ratelimit-limit-requests")), (200, None));
}

fn changes_that_would_not_compile_are_refused_whole(runtime: e2e::Runtime) {
    let env = start(runtime, 1);
    // A user in an undeclared team.
    let e = assert_error(&env.put(ROOT, "users/dave", r#"{"teams":["nope"]}"#), 400, None, None);
    assert!(e["message"].as_str().unwrap().contains("nope"), "{e}");
    assert_error(&env.get(ROOT, "users/dave"), 404, Some("not_found"), None);
    // A key for an unknown user, for a team its user is not in, above its user's role.
    for (body, word) in [
        (r#"{"name":"kx","user":"ghost"}"#, "ghost"),
        (r#"{"name":"kx","user":"alice","team":"ads"}"#, "ads"),
        (r#"{"name":"kx","user":"alice","role":"org_admin"}"#, "role"),
    ] {
        let e = assert_error(&env.post(ROOT, "keys", body), 400, None, None);
        assert!(e["message"].as_str().unwrap().contains(word), "{body}: {e}");
        assert_error(&env.get(ROOT, "keys/kx"), 404, Some("not_found"), None);
    }
    // A rule with no limits, or bucketed by nothing known.
    assert_error(&env.put(ROOT, "rate_limits/empty", r#"{"limits":{}}"#), 400, None, None);
    assert_error(&env.get(ROOT, "rate_limits/empty"), 404, Some("not_found"), None);
    let r = env.put(ROOT, "rate_limits/odd", r#"{"per":"galaxy","limits":{"requests_per_minute":1}}"#);
    assert_error(&r, 400, None, None);
    assert_error(&env.get(ROOT, "rate_limits/odd"), 404, Some("not_found"), None);
    // Replacing or deleting what others depend on leaves the old state.
    assert_eq!(env.put(ROOT, "teams/infra", "{}").status, 201);
    assert_eq!(env.put(ROOT, "users/carol", r#"{"teams":["infra"]}"#).status, 201);
    let r = env.post(ROOT, "keys", r#"{"name":"carol-1","user":"carol"}"#);
    assert_eq!(r.status, 201, "{}", r.text());
    let carol = r.json()["key"].as_str().unwrap().to_string();
    let e = assert_error(&env.delete(ROOT, "teams/infra"), 400, None, None);
    assert!(e["message"].as_str().unwrap().contains("infra"), "{e}");
    assert_eq!(env.get(ROOT, "teams/infra").status, 200, "the team is still there");
    assert_error(&env.put(ROOT, "users/carol", r#"{"teams":["nope"]}"#), 400, None, None);
    assert_eq!(env.get(ROOT, "users/carol").json()["spec"]["teams"], json!(["infra"]), "the old user stays");
    assert_error(&env.delete(ROOT, "users/carol"), 400, None, None);
    assert_eq!(env.get(ROOT, "users/carol").status, 200);
    assert_eq!(env.chat(&carol, "m").status, 200, "and still works");
}

fn team_admins_are_scoped_to_their_own_teams(runtime: e2e::Runtime) {
    let env = start(runtime, 1);
    // No teams, no org admins.
    assert_error(&env.put(LEAD, "teams/mine", "{}"), 403, Some("admin_forbidden"), None);
    assert_error(&env.put(LEAD, "teams/search", "{}"), 403, Some("admin_forbidden"), None);
    assert_error(&env.delete(LEAD, "teams/ads"), 403, Some("admin_forbidden"), None);
    assert_error(
        &env.put(LEAD, "users/eve", r#"{"teams":["search"],"role":"org_admin"}"#),
        403,
        Some("admin_forbidden"),
        None,
    );
    assert_error(
        &env.post(LEAD, "keys", r#"{"name":"up","user":"lead","role":"org_admin"}"#),
        403,
        Some("admin_forbidden"),
        None,
    );
    // Not another team's users, keys or rules.
    assert_error(&env.put(LEAD, "users/eve", r#"{"teams":["ads"]}"#), 403, Some("admin_forbidden"), None);
    assert_error(&env.put(LEAD, "users/eve", r#"{"teams":["search","ads"]}"#), 403, Some("admin_forbidden"), None);
    assert_error(&env.put(LEAD, "users/eve", "{}"), 403, Some("admin_forbidden"), None);
    assert_error(
        &env.post(LEAD, "keys", r#"{"name":"b2","user":"bob","team":"ads"}"#),
        403,
        Some("admin_forbidden"),
        None,
    );
    assert_error(
        &env.put(LEAD, "rate_limits/all", r#"{"limits":{"requests_per_minute":1}}"#),
        403,
        Some("admin_forbidden"),
        None,
    );
    assert_error(
        &env.put(LEAD, "rate_limits/theirs", r#"{"when":{"teams":["ads"]},"limits":{"requests_per_minute":1}}"#),
        403,
        Some("admin_forbidden"),
        None,
    );
    assert_error(
        &env.put(LEAD, "budgets/both", r#"{"when":{"teams":["search","ads"]},"limits":{"usd_per_day":1}}"#),
        403,
        Some("admin_forbidden"),
        None,
    );
    assert_error(&env.put(LEAD, "applications/spy", r#"{"team":"ads"}"#), 403, Some("admin_forbidden"), None);
    // What an org admin made for `ads` is invisible to them, and untouchable.
    assert_eq!(
        env.put(ROOT, "rate_limits/ads-rpm", r#"{"when":{"teams":["ads"]},"limits":{"requests_per_minute":50}}"#)
            .status,
        201
    );
    assert_eq!(env.put(ROOT, "applications/ads-bot", r#"{"team":"ads"}"#).status, 201);
    let r = env.post(ROOT, "keys", r#"{"name":"bob-2","user":"bob","team":"ads"}"#);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_error(&env.get(LEAD, "rate_limits/ads-rpm"), 404, Some("not_found"), None);
    assert_error(&env.get(LEAD, "users/bob"), 404, Some("not_found"), None);
    assert_error(&env.get(LEAD, "keys/bob-2"), 404, Some("not_found"), None);
    assert_error(&env.get(LEAD, "applications/ads-bot"), 404, Some("not_found"), None);
    assert_error(&env.delete(LEAD, "rate_limits/ads-rpm"), 403, Some("admin_forbidden"), None);
    assert_error(&env.delete(LEAD, "keys/bob-2"), 403, Some("admin_forbidden"), None);
    assert_error(&env.delete(LEAD, "applications/ads-bot"), 403, Some("admin_forbidden"), None);
    assert_error(&env.delete(LEAD, "users/bob"), 403, Some("admin_forbidden"), None);
    assert_error(&env.patch(LEAD, "keys/bob-2", r#"{"models":["m"]}"#), 404, Some("not_found"), None);
    assert_error(&env.post(LEAD, "keys/bob-2/revoke", ""), 404, Some("not_found"), None);
    assert_error(
        &env.put(LEAD, "rate_limits/ads-rpm", r#"{"when":{"teams":["search"]},"limits":{"requests_per_minute":1}}"#),
        403,
        Some("admin_forbidden"),
        None,
    );
    assert_eq!(env.get(ROOT, "rate_limits/ads-rpm").json()["spec"]["when"]["teams"], json!(["ads"]), "untouched");

    // Their own team's: users, keys (the team filled in), rules, budgets, applications.
    let r = env.put(LEAD, "users/eve", r#"{"teams":["search"]}"#);
    assert_eq!(r.status, 201, "{}", r.text());
    let r = env.post(LEAD, "keys", r#"{"name":"eve-1","user":"eve"}"#);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["spec"]["team"], "search");
    let eve = r.json()["key"].as_str().unwrap().to_string();
    assert_eq!(env.chat(&eve, "m").status, 200);
    let r = env.put(
        LEAD,
        "rate_limits/search-rpm",
        r#"{"per":"user","when":{"teams":["search"]},"limits":{"requests_per_minute":1000}}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = env.put(
        LEAD,
        "budgets/search-daily",
        r#"{"per":"team","when":{"teams":["search"]},"limits":{"usd_per_day":1000}}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = env.put(LEAD, "applications/search-bot", r#"{"team":"search"}"#);
    assert_eq!(r.status, 201, "{}", r.text());
    let r = env.patch(LEAD, "keys/eve-1", r#"{"models":["alias-m"]}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_error(&env.chat(&eve, "m"), 403, Some("model_not_allowed"), Some("model"));
    assert_error(&env.patch(LEAD, "keys/eve-1", r#"{"team":"ads"}"#), 403, Some("admin_forbidden"), None);
    assert_error(&env.patch(LEAD, "keys/eve-1", r#"{"role":"org_admin"}"#), 403, Some("admin_forbidden"), None);
    assert_eq!(env.post(LEAD, "keys/eve-1/revoke", "").status, 200);
    assert_error(&env.chat(&eve, "alias-m"), 401, Some("revoked_api_key"), None);

    // Lists show their own team's only.
    let users = names(&env.get(LEAD, "users"));
    assert!(users.contains(&"eve".to_string()) && users.contains(&"alice".to_string()), "{users:?}");
    assert!(!users.contains(&"bob".to_string()) && !users.contains(&"root".to_string()), "{users:?}");
    let keys = names(&env.get(LEAD, "keys"));
    assert!(keys.contains(&"eve-1".to_string()), "{keys:?}");
    assert!(!keys.iter().any(|k| k.starts_with("bob") || k.starts_with("root")), "{keys:?}");
    assert_eq!(names(&env.get(LEAD, "teams")), ["search"]);
    assert_eq!(names(&env.get(LEAD, "rate_limits")), ["search-rpm"]);
    assert_eq!(names(&env.get(LEAD, "budgets")), ["search-daily"]);
    assert_eq!(names(&env.get(LEAD, "applications")), ["search-bot"]);
    assert_eq!(names(&env.get(ROOT, "rate_limits")), ["ads-rpm", "search-rpm"]);

    // And may delete them.
    for path in ["keys/eve-1", "applications/search-bot", "budgets/search-daily", "rate_limits/search-rpm", "users/eve"]
    {
        let r = env.delete(LEAD, path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    assert_eq!(names(&env.get(LEAD, "rate_limits")), Vec::<String>::new());
}

/// A key declared as `{user: alice}` acts within alice's only team, `search` (whoami says so),
/// so it is one of `search`'s keys.
fn team_admins_see_the_config_keys_of_their_team(runtime: e2e::Runtime) {
    let env = start(runtime, 1);
    // An org admin's key for alice, team left to default as in the config file.
    assert_eq!(env.post(ROOT, "keys", r#"{"name":"alice-2","user":"alice"}"#).status, 201);
    assert_eq!(env.get(ALICE, "whoami").json()["team"], "search");
    // A regression test: the scope once looked only at a key's explicit `team` field, so these
    // keys were invisible to their team's admin (an empty list) and GET/PATCH/revoke said 404.
    assert_eq!(names(&env.get(LEAD, "keys")), ["alice-1", "alice-2", "lead-1"]);
    assert_eq!(env.get(LEAD, "keys/alice-1").status, 200);
    assert_eq!(env.post(LEAD, "keys/alice-2/revoke", "").status, 200);
}

fn config_entities_members_and_strangers_are_refused(runtime: e2e::Runtime) {
    let env = start(runtime, 1);
    // Declared in the config file: 409, as the org admin too.
    for r in [
        env.put(ROOT, "teams/search", "{}"),
        env.delete(ROOT, "teams/ads"),
        env.put(ROOT, "users/alice", r#"{"teams":["search"]}"#),
        env.delete(ROOT, "users/bob"),
        env.delete(ROOT, "keys/alice-1"),
        env.patch(ROOT, "keys/alice-1", r#"{"models":["m"]}"#),
        env.post(ROOT, "keys/alice-1/revoke", ""),
        env.put(LEAD, "users/alice", r#"{"teams":["search"]}"#),
    ] {
        let e = assert_error(&r, 409, Some("conflict"), None);
        assert!(e["message"].as_str().unwrap().contains("config"), "{e}");
    }
    assert_eq!(env.chat(ALICE, "m").status, 200, "alice-1 still works");
    assert_eq!(env.get(ROOT, "users/alice").json()["source"], "config");
    // Keys are not PUT.
    assert_error(&env.put(ROOT, "keys/k", r#"{"user":"alice"}"#), 405, Some("method_not_allowed"), None);

    // Members: whoami, their own keys (revoke), nothing else.
    for r in [
        env.put(ALICE, "teams/t", "{}"),
        env.put(ALICE, "users/alice2", r#"{"teams":["search"]}"#),
        env.put(ALICE, "rate_limits/r", r#"{"limits":{"requests_per_minute":1}}"#),
        env.delete(ALICE, "keys/alice-1"),
        env.post(ALICE, "keys", r#"{"name":"for-bob","user":"bob"}"#),
    ] {
        assert_error(&r, 403, Some("admin_forbidden"), None);
    }
    assert_eq!(names(&env.get(ALICE, "keys")), ["alice-1"]);
    assert_eq!(names(&env.get(ALICE, "users")), ["alice"]);
    assert_eq!(names(&env.get(ALICE, "teams")), Vec::<String>::new());
    assert_error(&env.get(ALICE, "keys/bob-1"), 404, Some("not_found"), None);
    assert_eq!(env.get(ALICE, "keys/alice-1").status, 200);
    let r = env.post(ROOT, "keys", r#"{"name":"alice-made","user":"alice"}"#);
    assert_eq!(r.status, 201);
    let made = r.json()["key"].as_str().unwrap().to_string();
    assert_error(&env.delete(ALICE, "keys/alice-made"), 403, Some("admin_forbidden"), None);
    assert_error(&env.patch(ALICE, "keys/alice-made", r#"{"models":["m"]}"#), 403, Some("admin_forbidden"), None);
    assert_error(&env.post(BOB, "keys/alice-made/revoke", ""), 404, Some("not_found"), None);
    let r = env.post(ALICE, "keys/alice-made/revoke", "");
    assert_eq!((r.status, &r.json()["spec"]["revoked"]), (200, &json!(true)), "{}", r.text());
    assert_error(&env.chat(&made, "m"), 401, Some("revoked_api_key"), None);
    assert_error(&env.patch(ALICE, "keys/alice-made", r#"{"revoked":false}"#), 403, Some("admin_forbidden"), None);
    assert_error(&env.chat(&made, "m"), 401, Some("revoked_api_key"), None);

    // No credential, or a wrong one.
    let r = call(env.addr(), "GET", "/admin/v1/whoami", None, None);
    assert_error(&r, 401, Some("missing_api_key"), None);
    let r = call(env.addr(), "PUT", "/admin/v1/teams/x", None, Some("{}"));
    assert_error(&r, 401, Some("missing_api_key"), None);
    assert_error(&env.get("sk-sg-nobody-000000000000", "teams"), 401, Some("invalid_api_key"), None);
    // Unknown admin paths.
    for path in ["nothing", "teams/search/more", "keys/alice-1/unrevoke", "spend/extra"] {
        assert_error(&env.get(ROOT, path), 404, Some("not_found"), None);
    }
    assert_error(&env.post(ROOT, "teams", "{}"), 404, Some("not_found"), None);
    assert_error(&env.put(ROOT, "widgets/w", "{}"), 404, Some("not_found"), None);
    assert_error(&env.delete(ROOT, "teams/none"), 404, Some("not_found"), None);
    assert_eq!(names(&env.get(ROOT, "teams")), ["ads", "search"], "nothing changed");
}

/// A spend report's rows, in the order of their group's values.
fn rows(r: &Response) -> Vec<Value> {
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "spend_report");
    let dims: Vec<String> = v["group_by"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().into()).collect();
    let mut rows = v["data"].as_array().unwrap().clone();
    rows.sort_by_key(|r| dims.iter().map(|d| r[d].to_string()).collect::<Vec<_>>());
    rows
}

fn micros_of(usd: &str) -> u64 {
    let (whole, frac) = usd.split_once('.').unwrap();
    whole.parse::<u64>().unwrap() * 1_000_000 + frac.parse::<u64>().unwrap()
}

fn spend_is_reported_by_key_and_model_within_the_callers_scope(runtime: e2e::Runtime) {
    let env = start(runtime, 1);
    // (requests, input, output, cost) per key.
    let mut spent = std::collections::BTreeMap::<&str, (u64, u64, u64, u64)>::new();
    for key in [ALICE, ALICE, BOB] {
        let r = env.chat(key, "m");
        assert_eq!(r.status, 200);
        let usage = &r.json()["usage"];
        let (i, o) = (usage["prompt_tokens"].as_u64().unwrap(), usage["completion_tokens"].as_u64().unwrap());
        let cost = micros_of(r.header("x-shardgate-cost-usd").unwrap());
        assert_eq!(cost, (i + o) * 1_000_000, "$1 a token");
        let name = if key == ALICE { "alice-1" } else { "bob-1" };
        let s = spent.entry(name).or_default();
        *s = (s.0 + 1, s.1 + i, s.2 + o, s.3 + cost);
    }
    let total: u64 = spent.values().map(|s| s.3).sum();
    // Written every flush interval (50ms).
    let flushed = eventually(Duration::from_secs(2), || {
        env.get(ROOT, "spend").json()["total_usd"].as_str().is_some_and(|t| micros_of(t) == total)
    });
    assert!(flushed, "the ledger never showed the spend: {}", env.get(ROOT, "spend").text());
    let row = |key: &str| {
        let (n, i, o, c) = spent[key];
        json!({"key": key, "model": "m", "requests": n, "input_tokens": i, "output_tokens": o, "cached_tokens": 0,
               "cost_usd": format!("{}.{:06}", c / 1_000_000, c % 1_000_000)})
    };
    let r = env.get(ROOT, "spend?group_by=key,model");
    let v = r.json();
    assert_eq!(v["group_by"], json!(["key", "model"]));
    assert_eq!(micros_of(v["total_usd"].as_str().unwrap()), total);
    assert_eq!(rows(&r), [row("alice-1"), row("bob-1")]);
    // By day: one row, today.
    let r = env.get(ROOT, "spend?group_by=day");
    let v = r.json();
    assert_eq!(v["data"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["data"][0]["day"], v["to"], "{v}");
    assert_eq!(v["data"][0]["requests"], 3);
    // Filters.
    assert_eq!(rows(&env.get(ROOT, "spend?group_by=key,model&team=ads")), [row("bob-1")]);
    assert_eq!(rows(&env.get(ROOT, "spend?group_by=key,model&key=alice-1")), [row("alice-1")]);
    let r = env.get(ROOT, "spend?group_by=team,user");
    let teams: Vec<(Value, Value)> = rows(&r).iter().map(|r| (r["team"].clone(), r["user"].clone())).collect();
    assert_eq!(teams, [(json!("ads"), json!("bob")), (json!("search"), json!("alice"))]);
    // A team admin sees their team's; a member their own.
    assert_eq!(rows(&env.get(LEAD, "spend?group_by=key,model")), [row("alice-1")]);
    assert_error(&env.get(LEAD, "spend?group_by=key&team=ads"), 403, Some("admin_forbidden"), None);
    assert_eq!(rows(&env.get(BOB, "spend?group_by=key,model")), [row("bob-1")]);
    assert_eq!(rows(&env.get(ALICE, "spend?group_by=key,model")), [row("alice-1")]);
    assert_error(&env.get(ALICE, "spend?user=bob"), 403, Some("admin_forbidden"), None);
    let v = env.get(BOB, "spend").json();
    assert_eq!(micros_of(v["total_usd"].as_str().unwrap()), spent["bob-1"].3);
    // A window before today has nothing.
    let r = env.get(ROOT, "spend?group_by=key&from=2020-01-01&to=2020-01-31");
    assert_eq!(rows(&r), Vec::<Value>::new());
    assert_eq!(
        (&r.json()["from"], &r.json()["to"], &r.json()["total_usd"]),
        (&json!("2020-01-01"), &json!("2020-01-31"), &json!("0.000000"))
    );
}

fn spend_parameters_are_checked(runtime: e2e::Runtime) {
    let env = start(runtime, 1);
    for (query, param) in [
        ("group_by=colour", "group_by"),
        ("group_by=key,,sku", "group_by"),
        ("from=yesterday", "from"),
        ("from=2026-13-01", "from"),
        ("to=2026-02-30x", "to"),
        ("from=2026-03-02&to=2026-03-01", "to"),
        ("colour=red", "colour"),
        ("day=2026-01-01", "day"),
    ] {
        let r = env.get(ROOT, &format!("spend?{query}"));
        let e = assert_error(&r, 400, None, Some(param));
        assert_eq!(e["type"], "invalid_request_error", "{query}");
    }
    let r = env.get(ROOT, "spend?group_by=model,day&from=2026-01-01&to=2026-01-01");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["group_by"], json!(["model", "day"]));
    assert_eq!(r.json()["data"], json!([]));
}

fn without_a_store_reads_work_and_changes_are_503(runtime: e2e::Runtime) {
    let upstream = default_mock();
    let gw = gateway(&yaml(upstream.addr(), None), runtime);
    let addr = gw.local_addr();
    let get = |key: &str, path: &str| call(addr, "GET", &format!("/admin/v1/{path}"), Some(key), None);
    assert_eq!(get(ROOT, "whoami").json()["role"], "org_admin");
    assert_eq!(names(&get(ROOT, "teams")), ["ads", "search"]);
    assert_eq!(names(&get(ROOT, "keys")), ["alice-1", "bob-1", "lead-1", "root-1"]);
    assert_eq!(get(ROOT, "users/alice").json()["source"], "config");
    for (method, path, body) in [
        ("PUT", "teams/infra", Some("{}")),
        ("PUT", "users/eve", Some(r#"{"teams":["search"]}"#)),
        ("POST", "keys", Some(r#"{"name":"k","user":"alice"}"#)),
    ] {
        let r = call(addr, method, &format!("/admin/v1/{path}"), Some(ROOT), body);
        let e = assert_error(&r, 503, Some("unavailable"), None);
        assert_eq!(e["type"], "server_error");
        assert!(e["message"].as_str().unwrap().contains("store"), "{e}");
    }
    assert_error(&get(ROOT, "spend"), 503, Some("unavailable"), None);
    // Refusals that need no store still come first.
    assert_error(&call(addr, "DELETE", "/admin/v1/teams/search", Some(ROOT), None), 409, Some("conflict"), None);
    assert_eq!(names(&get(ROOT, "teams")), ["ads", "search"], "nothing changed");
}

/// An admin change recompiles the config with the file's own sections, guardrails included
/// (it once dropped `guardrails:` and `mcp:`, so one API call turned the guardrails off until
/// the next reload).
#[test]
fn guardrails_stay_in_force_after_an_admin_change() {
    let upstream = default_mock();
    let dir = e2e::tempdir();
    let db = dir.path().join("admin.db");
    let yaml = yaml(upstream.addr(), Some(&db)).replacen(
        "providers:\n",
        "guardrails:\n  - {id: no-secrets, check: secrets}\nproviders:\n",
        1,
    );
    let source = ConfigSource::Text { name: "admin.yaml".into(), yaml };
    let env = Env { gw: gateway_with(source, e2e::Runtime::Epoll, 1), upstream, _dir: dir };
    // A synthetic OpenAI-format key (matches the format; not a real key).
    let leaky = r#"{"model":"m","messages":[{"role":"user","content":"use sk-proj-Zq8vN3kL5mR7tY2wX9pB4cD6fG1hJ0aS3eU5iO7kL9nM2bV4cX6zQ8wE1rT3yU5"}]}"#;
    let blocked = |env: &Env| call(env.addr(), "POST", "/v1/chat/completions", Some(ALICE), Some(leaky)).status;
    assert_eq!(blocked(&env), 400);
    let r = env.put(ROOT, "rate_limits/plenty", r#"{"per":"key","limits":{"requests_per_minute":1000}}"#);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(blocked(&env), 400, "still blocked after the admin change");
}
