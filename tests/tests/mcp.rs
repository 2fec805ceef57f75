//! The MCP gateway end to end: a client speaks streamable HTTP to a virtual server at
//! `/mcp/{name}`, which draws its tools from two upstream MCP servers (the mock's `alpha` and
//! `beta`, over real sockets). Sessions, merged and paginated listings, routing by prefixed
//! name, per-tool access rules, the gateway's own upstream credential, guardrails on tool
//! arguments and results, progress relayed as SSE, upstream sessions re-opened when lost, and
//! failing upstreams with fail-open and fail-closed listings.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::net::SocketAddr;

use e2e::{Client, Response, config_for, default_mock, gateway, on_both_drivers};
use serde_json::{Value, json};

on_both_drivers!(
    a_virtual_server_merges_two_upstreams_and_routes_calls,
    access_rules_filter_the_listing_and_refuse_calls,
    upstreams_see_the_gateways_credential_never_the_callers,
    guardrails_check_tool_arguments_and_redact_tool_results,
    sessions_are_checked_ended_and_reopened_upstream,
    progress_is_relayed_as_server_sent_events,
    a_failing_upstream_is_left_out_unless_fail_closed,
    tool_calls_are_rate_limited_by_the_shared_limiter,
    oauth_client_credentials_are_minted_refreshed_and_presented_upstream,
    prompts_and_resources_are_merged_and_routed,
    services_judge_tool_arguments_and_results,
);

const PEPPER: &str = "test-pepper-0123456789";
const SAM: &str = "sk-sg-sam-support-000000";
const OLGA: &str = "sk-sg-olga-ops-000000000";
const INTERN: &str = "sk-sg-ivy-intern-0000000";
/// A synthetic OpenAI-format key (matches the format; not a real key).
const FAKE_KEY: &str = "sk-proj-Zq8vN3kL5mR7tY2wX9pB4cD6fG1hJ0aS3eU5iO7kL9nM2bV4cX6zQ8wE1rT3yU5";

/// Two upstream MCP servers on the mock (and one that is down), three virtual servers.
fn config(mock: SocketAddr, down: SocketAddr) -> String {
    let extra = format!(
        "auth: {{pepper: {PEPPER}}}
teams:
  support: {{models: [m]}}
  ops: {{models: [m]}}
users:
  sam: {{teams: [support]}}
  olga: {{teams: [ops]}}
  ivy: {{teams: [support]}}
keys:
  - {{name: sam-key, secret: {SAM}, user: sam}}
  - {{name: olga-key, secret: {OLGA}, user: olga}}
  - {{name: ivy-key, secret: {INTERN}, user: ivy}}
mcp:
  token_key: '{TOKEN_KEY}'
  servers:
    alpha: {{url: 'http://{mock}/mcp/alpha', headers: {{authorization: 'Bearer gateway-upstream-token'}}, timeout: 5s}}
    personal:
      url: 'http://{mock}/mcp/secured'
      auth:
        oauth2:
          flow: authorization_code
          authorize_url: 'http://{mock}/mcp-oauth/authorize'
          token_url: 'http://{mock}/mcp-oauth/token'
          client_id: gw-short
          redirect_uri: 'http://gateway.test/mcp/oauth/callback'
    beta: {{url: 'http://{mock}/mcp/beta', timeout: 5s}}
    down: {{url: 'http://{down}/mcp/down', timeout: 2s, timeouts: {{connect: 1s}}}}
    secured:
      url: 'http://{mock}/mcp/secured'
      auth: {{oauth2: {{flow: client_credentials, token_url: 'http://{mock}/mcp-oauth/token', client_id: gw-short, client_secret: s3cret, scope: tools}}}}
    locked:
      url: 'http://{mock}/mcp/secured'
      auth: {{oauth2: {{flow: client_credentials, token_url: 'http://{mock}/mcp-oauth/token', client_id: gw, client_secret: wrong}}}}
  virtual:
    machine:
      tools: ['secured/whoami', 'locked/whoami']
    mine:
      tools: ['personal/whoami']
    library:
      prompts: ['alpha/*', 'beta/greet']
      resources: [alpha, beta]
      access:
        - {{users: [sam], deny: ['beta__greet']}}
    tools:
      tools: ['alpha/*', 'beta/echo']
      access:
        - {{teams: [support], deny: ['alpha__whoami']}}
        - {{users: [ivy], allow: ['alpha__echo', 'beta__*']}}
    ops-only:
      tools: ['alpha/echo']
      teams: [ops]
    flaky:
      tools: ['beta/*', 'down/*']
    strict:
      tools: ['beta/*', 'down/*']
      fail_closed: true
rate_limits:
  - {{id: adds-per-user, per: user, when: {{models: ['mcp:alpha__add']}}, limits: {{requests_per_minute: 2}}}}
guardrails:
  - {{id: no-secrets-in-args, check: secrets, phase: tool_args}}
  - {{id: pii-out-of-results, check: pii, mode: mutate, phase: tool_result}}
  - id: tool-hook
    check: webhook
    mode: mutate
    phase: [tool_args, tool_result]
    webhook: {{provider: checker, path: /guard}}
    when: {{models: ['alpha__echo', 'beta__echo']}}
"
    );
    config_for(mock, &extra).replacen(
        "providers:\n",
        &format!("providers:\n  checker: {{kind: openai-compatible, base_url: 'http://{mock}/v1', api_key: sk-mod}}\n"),
        1,
    )
}

/// A port nothing listens on.
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A client session with one virtual server, over one connection.
struct Session {
    client: Client,
    path: String,
    key: String,
    id: Option<String>,
    next: u64,
}

impl Session {
    fn new(addr: SocketAddr, virtual_server: &str, key: &str) -> Session {
        Session {
            client: Client::connect(addr),
            path: format!("/mcp/{virtual_server}"),
            key: key.into(),
            id: None,
            next: 1,
        }
    }

    fn headers(&self, accept: &str) -> String {
        let mut h = format!("accept: {accept}\r\n");
        if !self.key.is_empty() {
            h.push_str(&format!("authorization: Bearer {}\r\n", self.key));
        }
        if let Some(id) = &self.id {
            h.push_str(&format!("mcp-session-id: {id}\r\nmcp-protocol-version: 2025-06-18\r\n"));
        }
        h
    }

    fn post(&mut self, message: &Value) -> Response {
        let h = self.headers("application/json, text/event-stream");
        self.client.post_json(&self.path, &message.to_string(), &h)
    }

    /// Opens the session: `initialize`, then `notifications/initialized`.
    fn initialize(&mut self) -> Value {
        let r = self.post(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}}}));
        assert_eq!(r.status, 200, "{}", r.text());
        self.id = Some(r.header("mcp-session-id").expect("a session id").to_owned());
        let note = self.post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        assert_eq!(note.status, 202, "{}", note.text());
        r.json()["result"].clone()
    }

    /// A request; the JSON-RPC response (its `result` or `error` object).
    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        let r = self.post(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["id"], json!(id), "the response answers the request: {v}");
        v
    }

    fn call(&mut self, tool: &str, arguments: Value) -> Value {
        self.request("tools/call", json!({"name": tool, "arguments": arguments}))
    }

    fn tool_names(&mut self) -> Vec<String> {
        let v = self.request("tools/list", json!({}));
        let mut names: Vec<String> =
            v["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_owned()).collect();
        names.sort();
        names
    }
}

fn text_of(response: &Value) -> String {
    response["result"]["content"][0]["text"].as_str().unwrap_or_else(|| panic!("no text in {response}")).to_owned()
}

fn a_virtual_server_merges_two_upstreams_and_routes_calls(rt: e2e::Runtime) {
    let mock = default_mock();
    let gw = gateway(&config(mock.addr(), closed_port()), rt);
    let mut s = Session::new(gw.local_addr(), "tools", OLGA);
    let init = s.initialize();
    assert_eq!(init["protocolVersion"], "2025-06-18", "the client's revision is kept: {init}");
    assert_eq!(init["serverInfo"]["name"], "shardgate/tools");
    assert!(init["capabilities"]["tools"].is_object(), "{init}");
    // alpha lists nine tools over five pages; beta's `time` is not selected.
    assert_eq!(
        s.tool_names(),
        [
            "alpha__add",
            "alpha__cancelled",
            "alpha__echo",
            "alpha__fail",
            "alpha__fail_leaky",
            "alpha__forget_session",
            "alpha__leak",
            "alpha__slow",
            "alpha__whoami",
            "beta__echo"
        ]
    );
    assert_eq!(text_of(&s.call("alpha__echo", json!({"text": "hi"}))), "hi");
    assert_eq!(text_of(&s.call("beta__echo", json!({"text": "hi"}))), "beta: hi", "routed by prefix");
    let sum = s.call("alpha__add", json!({"a": 2, "b": 3}));
    assert_eq!(sum["result"]["structuredContent"]["sum"], 5.0, "{sum}");
    assert_eq!(s.request("ping", json!({}))["result"], json!({}));
    // Tools outside the selection, or of no server, are unknown (JSON-RPC invalid params).
    for unknown in ["beta__time", "gamma__x", "echo", "alpha__"] {
        let e = s.call(unknown, json!({}));
        assert_eq!(e["error"]["code"], -32602, "{unknown}: {e}");
        assert!(e["error"]["message"].as_str().unwrap().contains("Unknown tool"), "{e}");
    }
    // An upstream's JSON-RPC error comes back as it was.
    let failed = s.call("alpha__fail", json!({}));
    assert_eq!(failed["error"]["code"], -32000, "{failed}");
    let other = s.request("resources/list", json!({}));
    assert_eq!(other["error"]["code"], -32601, "{other}");
    // No server here offers a GET stream: 405, as the spec provides; a GET that does not take
    // an event stream is refused first.
    let h = s.headers("text/event-stream");
    let get = s.client.get_with("/mcp/tools", &h);
    assert_eq!(get.status, 405, "{}", get.text());
    assert_eq!(get.header("allow"), Some("POST, DELETE"));
    let get = s.client.get_with("/mcp/tools", &s.headers("application/json"));
    assert_eq!(get.status, 406, "{}", get.text());
    // An answer to a request the gateway never relayed (a forged or foreign id) is refused,
    // and reaches no server; answers to other ids are taken and dropped, as before.
    for forged in ["sg-relay-AAAA", "sg-relay-", "sg-relay-!!"] {
        let r = s.post(&json!({"jsonrpc": "2.0", "id": forged, "result": {"action": "accept"}}));
        assert_eq!(r.status, 400, "{forged}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], -32600, "{}", r.text());
    }
    assert_eq!(s.post(&json!({"jsonrpc": "2.0", "id": 5, "result": {}})).status, 202);
}

fn access_rules_filter_the_listing_and_refuse_calls(rt: e2e::Runtime) {
    let mock = default_mock();
    let gw = gateway(&config(mock.addr(), closed_port()), rt);
    let addr = gw.local_addr();
    // Team support may not use alpha__whoami: not listed, and refused by name.
    let mut sam = Session::new(addr, "tools", SAM);
    sam.initialize();
    let names = sam.tool_names();
    assert!(!names.contains(&"alpha__whoami".to_owned()) && names.contains(&"alpha__echo".to_owned()), "{names:?}");
    let refused = sam.call("alpha__whoami", json!({}));
    assert_eq!(refused["error"]["code"], -32003, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("mcp.virtual.tools.access[0]") && message.contains("alpha__whoami"), "{message}");
    // Ivy is in support too, and her allow list narrows further.
    let mut ivy = Session::new(addr, "tools", INTERN);
    ivy.initialize();
    assert_eq!(ivy.tool_names(), ["alpha__echo", "beta__echo"]);
    let refused = ivy.call("alpha__add", json!({"a": 1, "b": 1}));
    assert!(refused["error"]["message"].as_str().unwrap().contains("access[1]"), "{refused}");
    // A virtual server for team ops only: 403 for support, served for ops.
    let mut wrong_team = Session::new(addr, "ops-only", SAM);
    let r = wrong_team.post(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}));
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], -32003);
    assert!(r.text().contains("mcp.virtual.ops-only.teams"), "{}", r.text());
    let mut ops = Session::new(addr, "ops-only", OLGA);
    ops.initialize();
    assert_eq!(ops.tool_names(), ["alpha__echo"]);
    // No key: the gateway's 401; an unknown virtual server: 404.
    let mut c = Client::connect(addr);
    let r = c.post_json("/mcp/tools", r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#, "");
    assert_eq!(r.status, 401, "{}", r.text());
    let mut nowhere = Session::new(addr, "nowhere", OLGA);
    let r = nowhere.post(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}));
    assert_eq!(r.status, 404);
    assert!(r.text().contains("no MCP virtual server `nowhere`"), "{}", r.text());
}

fn upstreams_see_the_gateways_credential_never_the_callers(rt: e2e::Runtime) {
    let mock = default_mock();
    let gw = gateway(&config(mock.addr(), closed_port()), rt);
    let mut s = Session::new(gw.local_addr(), "tools", OLGA);
    s.initialize();
    let who = text_of(&s.call("alpha__whoami", json!({})));
    assert_eq!(who, "Bearer gateway-upstream-token");
    assert!(!who.contains(OLGA));
}

fn guardrails_check_tool_arguments_and_redact_tool_results(rt: e2e::Runtime) {
    let mock = default_mock();
    let gw = gateway(&config(mock.addr(), closed_port()), rt);
    let mut s = Session::new(gw.local_addr(), "tools", OLGA);
    s.initialize();
    // A secret in the arguments: blocked before the call, named, not echoed.
    let blocked = s.call("alpha__echo", json!({"text": format!("use {FAKE_KEY}")}));
    assert_eq!(blocked["error"]["code"], -32004, "{blocked}");
    assert_eq!(blocked["error"]["data"]["rule"], "no-secrets-in-args");
    assert_eq!(blocked["error"]["data"]["phase"], "tool_args");
    assert!(!blocked.to_string().contains(FAKE_KEY), "the secret is not echoed: {blocked}");
    // PII in a tool's result is redacted before the agent sees it.
    let leaked = text_of(&s.call("alpha__leak", json!({})));
    assert!(!leaked.contains("jane.doe@example.com") && !leaked.contains("555-0134"), "{leaked}");
    assert!(leaked.contains("<EMAIL_1>") && leaked.contains("<PHONE_1>"), "{leaked}");
    // Results without findings pass as they were.
    assert_eq!(text_of(&s.call("alpha__echo", json!({"text": "plain"}))), "plain");
    // Keys and numbers are arguments too: a secret as a key is blocked.
    let blocked = s.call("alpha__echo", json!({FAKE_KEY: 1, "text": "x"}));
    assert_eq!(blocked["error"]["data"]["rule"], "no-secrets-in-args", "{blocked}");
    // A tool's error object is judged like its result.
    let failed = s.call("alpha__fail_leaky", json!({}));
    assert_eq!(failed["error"]["code"], -32000, "the tool's own error: {failed}");
    assert_eq!(failed["error"]["message"], "no mailbox for <EMAIL_1>");
}

fn sessions_are_checked_ended_and_reopened_upstream(rt: e2e::Runtime) {
    let mock = default_mock();
    let gw = gateway(&config(mock.addr(), closed_port()), rt);
    let addr = gw.local_addr();
    let mut s = Session::new(addr, "tools", OLGA);
    // Before initialize: 400.
    let r = s.post(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}));
    assert_eq!(r.status, 400, "{}", r.text());
    s.initialize();
    let id = s.id.clone().unwrap();
    // The upstream forgets its session: the gateway opens a new one and the call goes through.
    assert_eq!(text_of(&s.call("alpha__forget_session", json!({}))), "forgotten");
    assert_eq!(text_of(&s.call("alpha__echo", json!({"text": "again"}))), "again");
    // A forged id, or one made for another virtual server: 404.
    let flipped = if id.starts_with('0') { '1' } else { '0' };
    s.id = Some(format!("{flipped}{}", &id[1..]));
    let r = s.post(&json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}));
    assert_eq!(r.status, 404, "{}", r.text());
    let mut other = Session::new(addr, "ops-only", OLGA);
    other.id = Some(id.clone());
    let r = other.post(&json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}));
    assert_eq!(r.status, 404, "an id is bound to its virtual server: {}", r.text());
    // An unsupported protocol revision header: 400.
    s.id = Some(id.clone());
    let h = format!("authorization: Bearer {OLGA}\r\nmcp-session-id: {id}\r\nmcp-protocol-version: 1999-01-01\r\n");
    let r = s.client.post_json("/mcp/tools", r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#, &h);
    assert_eq!(r.status, 400, "{}", r.text());
    // A session is its caller's: another caller presenting it gets 404.
    let mut thief = Session::new(addr, "tools", SAM);
    thief.id = Some(id.clone());
    let r = thief.post(&json!({"jsonrpc": "2.0", "id": 5, "method": "ping"}));
    assert_eq!(r.status, 404, "{}", r.text());
    // A browser page from another site (DNS rebinding) is refused; a loopback origin is not.
    let h = format!("authorization: Bearer {OLGA}\r\nmcp-session-id: {id}\r\norigin: http://evil.example\r\n");
    let r = s.client.post_json("/mcp/tools", r#"{"jsonrpc":"2.0","id":6,"method":"ping"}"#, &h);
    assert_eq!(r.status, 403, "{}", r.text());
    let h = format!("authorization: Bearer {OLGA}\r\nmcp-session-id: {id}\r\norigin: http://localhost:5173\r\n");
    let r = s.client.post_json("/mcp/tools", r#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#, &h);
    assert_eq!(r.status, 200, "{}", r.text());
    // DELETE ends it, on a new connection too.
    let h = s.headers("application/json");
    s.client.send(format!("DELETE /mcp/tools HTTP/1.1\r\nhost: test\r\n{h}\r\n").as_bytes());
    assert_eq!(s.client.read_response().status, 204);
    let mut after = Session::new(addr, "tools", OLGA);
    after.id = Some(id);
    let r = after.post(&json!({"jsonrpc": "2.0", "id": 4, "method": "ping"}));
    assert_eq!(r.status, 404, "{}", r.text());
    // Not a message: 400 with a JSON-RPC error.
    let r = after.client.post_json("/mcp/tools", "[]", &format!("authorization: Bearer {OLGA}\r\n"));
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], -32600);
}

fn progress_is_relayed_as_server_sent_events(rt: e2e::Runtime) {
    let mock = default_mock();
    let gw = gateway(&config(mock.addr(), closed_port()), rt);
    let mut s = Session::new(gw.local_addr(), "tools", OLGA);
    s.initialize();
    let call = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": {"name": "alpha__slow", "arguments": {"steps": 3}, "_meta": {"progressToken": "p1"}}});
    let r = s.post(&call);
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/event-stream"), "{:?}", r.headers);
    let messages: Vec<Value> = r
        .text()
        .split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(messages.len(), 4, "three progress notifications, then the result: {messages:?}");
    for (i, m) in messages.iter().take(3).enumerate() {
        assert_eq!(m["method"], "notifications/progress");
        assert_eq!(m["params"]["progressToken"], "p1");
        assert_eq!(m["params"]["progress"], json!(i + 1));
        // Judged by the result's rules before the agent sees it.
        assert_eq!(m["params"]["message"], format!("step {} for <EMAIL_1>", i + 1));
    }
    assert_eq!(messages[3]["id"], 9);
    assert_eq!(messages[3]["result"]["content"][0]["text"], "done after 3 steps");
    // A cancellation reaches the server the call is in flight to, under the client's id.
    let long = json!({"jsonrpc": "2.0", "id": 77, "method": "tools/call",
        "params": {"name": "alpha__slow", "arguments": {"steps": 100}, "_meta": {"progressToken": "p2"}}});
    let mut caller = Client::connect(gw.local_addr());
    let h = s.headers("application/json, text/event-stream");
    caller.send_post("/mcp/tools", &long.to_string(), &h);
    let (status, _) = caller.read_head();
    assert_eq!(status, 200, "the call is under way (its progress relayed)");
    let cancel =
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 77, "reason": "user"}});
    assert_eq!(s.post(&cancel).status, 202);
    assert_eq!(text_of(&s.call("alpha__cancelled", json!({}))), "77");
    drop(caller);
    // A client that takes JSON only gets the result alone.
    let h = s.headers("application/json");
    let r = s.client.post_json("/mcp/tools", &call.to_string(), &h);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["result"]["content"][0]["text"], "done after 3 steps");
}

/// With two shards, a cancellation posted on a fresh connection lands on either; one that
/// lands on the other shard than its call's is passed on there and reaches the server (the
/// metrics say when it crossed).
#[test]
fn a_cancellation_on_another_shard_reaches_the_server() {
    let mock = default_mock();
    let source =
        engine::config::ConfigSource::Text { name: "test.yaml".into(), yaml: config(mock.addr(), closed_port()) };
    let gw = e2e::gateway_with(source, e2e::Runtime::Epoll, 2);
    let addr = gw.local_addr();
    let mut s = Session::new(addr, "tools", OLGA);
    s.initialize();
    let h = s.headers("application/json, text/event-stream");
    let mut crossed = false;
    for id in 8800..8824 {
        let before = gw.metrics_text();
        let long = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "alpha__slow", "arguments": {"steps": 100}, "_meta": {"progressToken": "p"}}});
        let mut caller = Client::connect(addr);
        caller.send_post("/mcp/tools", &long.to_string(), &h);
        assert_eq!(caller.read_head().0, 200, "the call is under way");
        let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": id}});
        assert_eq!(Client::connect(addr).post_json("/mcp/tools", &cancel.to_string(), &h).status, 202);
        let id = id.to_string();
        assert!(
            e2e::eventually(std::time::Duration::from_secs(2), || bench_harness::mock_mcp::was_cancelled(&id)),
            "cancellation {id} did not reach the server"
        );
        drop(caller);
        let after = gw.metrics_text();
        let series = |i: usize| format!("shardgate_mcp_cancels_from_other_shards_total{{shard=\"{i}\"}}");
        if (0..2).any(|i| e2e::metric(&after, &series(i)) > e2e::metric(&before, &series(i))) {
            crossed = true;
            break;
        }
    }
    assert!(crossed, "in 24 tries no cancellation landed on the other shard");
}

fn a_failing_upstream_is_left_out_unless_fail_closed(rt: e2e::Runtime) {
    let mock = default_mock();
    let gw = gateway(&config(mock.addr(), closed_port()), rt);
    let mut flaky = Session::new(gw.local_addr(), "flaky", OLGA);
    flaky.initialize();
    assert_eq!(flaky.tool_names(), ["beta__echo", "beta__time"], "down's tools are left out");
    let e = flaky.call("down__anything", json!({}));
    assert_eq!(e["error"]["code"], -32005, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("MCP server down"), "{e}");
    let mut strict = Session::new(gw.local_addr(), "strict", OLGA);
    strict.initialize();
    let e = strict.request("tools/list", json!({}));
    assert_eq!(e["error"]["code"], -32005, "{e}");
    assert_eq!(e["error"]["data"]["server"], "down");
}

const ROOT: &str = "sk-sg-root-admin-0000000";
/// `mcp.token_key` of the tests: 32 bytes, base64 (not a secret anywhere else).
const TOKEN_KEY: &str = "c2hhcmRnYXRlLXRlc3QtdG9rZW4ta2V5LTMyLWJ5dGU=";

/// Every call leaves one hash-chained record: who, which tool of which server, a hash of the
/// arguments (and the arguments themselves when the virtual server keeps them), the outcome
/// and every decision. The admin API finds them; `shardgate audit verify` checks the chain
/// and names the first record tampered with behind the gateway's back.
#[test]
fn every_call_leaves_an_audit_record_in_a_verified_chain() {
    let mock = default_mock();
    let dir = e2e::tempdir();
    let db = dir.path().join("audit.db");
    let yaml = config(mock.addr(), closed_port())
        .replacen("teams:\n", &format!("store: {{path: '{}'}}\nteams:\n", db.display()), 1)
        .replacen("users:\n", "users:\n  root: {role: org_admin}\n", 1)
        .replacen("keys:\n", &format!("keys:\n  - {{name: root-key, secret: {ROOT}, user: root}}\n"), 1)
        .replacen("    ops-only:\n", "      audit_arguments: true\n    ops-only:\n", 1);
    let gw = gateway(&yaml, e2e::Runtime::Epoll);
    let mut sam = Session::new(gw.local_addr(), "tools", SAM);
    sam.initialize();
    assert_eq!(text_of(&sam.call("alpha__echo", json!({"text": "hello"}))), "hello");
    assert_eq!(sam.call("alpha__whoami", json!({}))["error"]["code"], -32003);
    assert_eq!(sam.call("alpha__echo", json!({"text": FAKE_KEY}))["error"]["code"], -32004);
    let leaked = sam.call("alpha__leak", json!({}));
    assert!(text_of(&leaked).contains("<EMAIL_1>"));
    assert_eq!(sam.call("beta__time", json!({}))["error"]["code"], -32602);

    let mut admin = Client::connect(gw.local_addr());
    let auth = format!("authorization: Bearer {ROOT}\r\n");
    let r = admin.get_with("/admin/v1/audit?user=sam", &auth);
    assert_eq!(r.status, 200, "{}", r.text());
    let records = r.json()["data"].as_array().unwrap().clone();
    let outcomes: Vec<&str> = records.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["unknown_tool", "ok", "guardrail_blocked", "forbidden", "ok"], "newest first");
    let first = records.last().unwrap();
    assert_eq!(first["tool"], "alpha__echo");
    assert_eq!(first["server"], "alpha");
    assert_eq!((first["key"].as_str(), first["team"].as_str()), (Some("sam-key"), Some("support")));
    assert_eq!(first["arguments"], r#"{"text":"hello"}"#, "kept: audit_arguments");
    let digest = ring::digest::digest(&ring::digest::SHA256, br#"{"text":"hello"}"#);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(first["arguments_sha256"], hex);
    assert!(first["latency_us"].as_u64().is_some() && first["hash"].as_str().unwrap().len() == 64);
    assert_eq!(first["decisions"][0]["kind"], "access");
    let denied = &records[3]["decisions"][0];
    assert_eq!(
        (denied["verdict"].as_str(), denied["rule"].as_str()),
        (Some("denied"), Some("mcp.virtual.tools.access[0]"))
    );
    let blocked = &records[2];
    assert!(!blocked.to_string().contains(FAKE_KEY), "a blocked secret is neither kept nor echoed: {blocked}");
    assert_eq!(blocked["decisions"][1]["rule"], "no-secrets-in-args");
    assert_eq!(records[1]["decisions"][1]["verdict"], "redacted", "{}", records[1]);
    let r = admin.get_with("/admin/v1/audit?tool=alpha__echo&limit=1", &auth);
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 1);
    // Only admins read it.
    let r = Client::connect(gw.local_addr()).get_with("/admin/v1/audit", &format!("authorization: Bearer {SAM}\r\n"));
    assert_eq!(r.status, 403, "{}", r.text());
    let metrics = Client::connect(gw.local_addr()).get("/metrics").text();
    assert!(metrics.contains("shardgate_mcp_tool_calls_total{outcome=\"ok\"} 2"), "{metrics}");
    drop(admin);
    drop(gw);

    let verify = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_shardgate-e2e"))
            .args(["audit", "verify", "--store"])
            .arg(&db)
            .output()
            .unwrap()
    };
    let ok = verify();
    let said = String::from_utf8_lossy(&ok.stdout).into_owned();
    assert!(
        ok.status.success() && said.contains("5 records, chain intact"),
        "{said} {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // Edits are refused by the database; behind its back, verify finds the record.
    let conn = rusqlite::Connection::open(&db).unwrap();
    assert!(conn.execute("UPDATE audit SET outcome = 'ok' WHERE seq = 2", []).is_err(), "append-only");
    conn.execute_batch("DROP TRIGGER audit_append_only_u").unwrap();
    conn.execute(
        "UPDATE audit SET record = replace(record, '\"forbidden\"', '\"ok\"'), outcome = 'ok' WHERE seq = 2",
        [],
    )
    .unwrap();
    drop(conn);
    let broken = verify();
    let said = String::from_utf8_lossy(&broken.stdout).into_owned();
    assert_eq!(broken.status.code(), Some(1), "{said}");
    assert!(said.contains("BROKEN at record 2"), "{said}");
}

fn tool_calls_are_rate_limited_by_the_shared_limiter(rt: e2e::Runtime) {
    let mock = default_mock();
    let gw = gateway(&config(mock.addr(), closed_port()), rt);
    let mut olga = Session::new(gw.local_addr(), "tools", OLGA);
    olga.initialize();
    for _ in 0..2 {
        assert!(olga.call("alpha__add", json!({"a": 1, "b": 1}))["result"].is_object());
    }
    let refused = olga.call("alpha__add", json!({"a": 1, "b": 1}));
    assert_eq!(refused["error"]["code"], -32029, "{refused}");
    assert_eq!(refused["error"]["data"]["rule"], "adds-per-user");
    assert_eq!(refused["error"]["data"]["scope"], "user:olga");
    assert!(refused["error"]["data"]["retry_after_seconds"].as_u64().is_some(), "{refused}");
    // Other tools, and other callers, are not limited by it.
    assert_eq!(text_of(&olga.call("alpha__echo", json!({"text": "still here"}))), "still here");
    let mut sam = Session::new(gw.local_addr(), "tools", SAM);
    sam.initialize();
    assert!(sam.call("alpha__add", json!({"a": 1, "b": 1}))["result"].is_object());
}

fn oauth_client_credentials_are_minted_refreshed_and_presented_upstream(rt: e2e::Runtime) {
    let mock = default_mock();
    let gw = gateway(&config(mock.addr(), closed_port()), rt);
    let mut s = Session::new(gw.local_addr(), "machine", OLGA);
    s.initialize();
    let first = text_of(&s.call("secured__whoami", json!({})));
    assert!(first.starts_with("Bearer mcp-token-"), "the minted token, not the caller's key: {first}");
    // The token lives 2 s: it is refreshed before it expires, and calls never see a 401.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(6);
    let mut latest = first.clone();
    while latest == first && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let r = s.call("secured__whoami", json!({}));
        latest = text_of(&r);
    }
    assert_ne!(latest, first, "a fresh token was minted before the first expired");
    // A client the authorization server refuses: the call fails with the reason, and the
    // upstream is never called without a token.
    let refused = s.call("locked__whoami", json!({}));
    assert_eq!(refused["error"]["code"], -32005, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("invalid_client") && message.contains("OAuth client gw"), "{message}");
}

/// A gateway whose only upstreams are MCP servers resolves their hosts too (it once resolved
/// only providers' hosts, so such a gateway could reach none of its MCP servers).
#[test]
fn a_gateway_with_no_provider_reaches_its_mcp_servers() {
    let mock = default_mock();
    let yaml = format!(
        "mcp:\n  servers:\n    alpha: {{url: 'http://{}/mcp/alpha'}}\n  virtual:\n    only:\n      tools: ['alpha/echo']\n",
        mock.addr()
    );
    let gw = gateway(&yaml, e2e::Runtime::Epoll);
    let mut s = Session::new(gw.local_addr(), "only", "unused-anonymous");
    s.key = String::new();
    s.initialize();
    assert_eq!(text_of(&s.call("alpha__echo", json!({"text": "reached"}))), "reached");
}

fn prompts_and_resources_are_merged_and_routed(rt: e2e::Runtime) {
    let mock = default_mock();
    let gw = gateway(&config(mock.addr(), closed_port()), rt);
    let mut s = Session::new(gw.local_addr(), "library", OLGA);
    let init = s.initialize();
    let caps = &init["capabilities"];
    assert!(caps["prompts"].is_object() && caps["resources"].is_object() && caps.get("tools").is_none(), "{init}");
    let prompts = s.request("prompts/list", json!({}));
    let mut names: Vec<&str> =
        prompts["result"]["prompts"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(names, ["alpha__greet", "beta__greet"]);
    let got = s.request("prompts/get", json!({"name": "beta__greet", "arguments": {"who": "Ada"}}));
    assert_eq!(got["result"]["messages"][0]["content"]["text"], "Hello, Ada, from beta", "{got}");
    assert_eq!(s.request("prompts/get", json!({"name": "gamma__greet"}))["error"]["code"], -32602);
    // Resources keep their URIs; a read goes to the server that has it.
    let listed = s.request("resources/list", json!({}));
    let mut uris: Vec<&str> =
        listed["result"]["resources"].as_array().unwrap().iter().map(|r| r["uri"].as_str().unwrap()).collect();
    uris.sort_unstable();
    assert_eq!(uris, ["mock://alpha/readme", "mock://beta/readme"]);
    let read = s.request("resources/read", json!({"uri": "mock://beta/readme"}));
    assert_eq!(read["result"]["contents"][0]["text"], "the readme of beta", "{read}");
    // Without a listing first (another client session): each server is asked in turn.
    let mut other = Session::new(gw.local_addr(), "library", OLGA);
    other.initialize();
    let read = other.request("resources/read", json!({"uri": "mock://beta/readme"}));
    assert_eq!(read["result"]["contents"][0]["text"], "the readme of beta", "{read}");
    let missing = other.request("resources/read", json!({"uri": "mock://nowhere"}));
    assert_eq!(missing["error"]["code"], -32002, "{missing}");
    let templates = s.request("resources/templates/list", json!({}));
    assert_eq!(templates["result"]["resourceTemplates"].as_array().unwrap().len(), 2, "{templates}");
    // Access rules apply to prompts as to tools.
    let mut sam = Session::new(gw.local_addr(), "library", SAM);
    sam.initialize();
    let prompts = sam.request("prompts/list", json!({}));
    assert_eq!(prompts["result"]["prompts"].as_array().unwrap().len(), 1, "{prompts}");
    assert_eq!(sam.request("prompts/get", json!({"name": "beta__greet"}))["error"]["code"], -32003);
    // tools/call on a virtual server without tools: unknown tool.
    assert_eq!(s.call("alpha__echo", json!({}))["error"]["code"], -32602);
}

fn services_judge_tool_arguments_and_results(rt: e2e::Runtime) {
    let mock = default_mock();
    let gw = gateway(&config(mock.addr(), closed_port()), rt);
    let mut s = Session::new(gw.local_addr(), "tools", OLGA);
    s.initialize();
    // The webhook (a service asked through its provider's actor) blocks the arguments...
    let blocked = s.call("alpha__echo", json!({"text": "tell me forbidden things"}));
    assert_eq!(blocked["error"]["code"], -32004, "{blocked}");
    assert_eq!(blocked["error"]["data"]["rule"], "tool-hook");
    assert!(blocked["error"]["message"].as_str().unwrap().contains("forbidden-topic"), "{blocked}");
    // ...rewrites them (mutate mode) before the tool sees them...
    assert_eq!(text_of(&s.call("alpha__echo", json!({"text": "the secret-word is here"}))), "the [removed] is here");
    // ...and judges results: a flag lets the result through.
    assert_eq!(text_of(&s.call("beta__echo", json!({"text": "flagme"}))), "beta: flagme");
}

/// The consent flow, as a browser goes through it: the gateway sends it to the authorization
/// server, which sends it back to the gateway's callback with a code, which the gateway
/// exchanges (no gateway credential needed there: the sealed state says who, and the cookie set
/// at the start shows it is the same browser). The callback and that cookie.
fn connect_account(gateway: SocketAddr, mock: SocketAddr, key: &str) -> (String, String) {
    let r =
        Client::connect(gateway).get_with("/mcp/oauth/personal/authorize", &format!("authorization: Bearer {key}\r\n"));
    assert_eq!(r.status, 302, "{}", r.text());
    let set_cookie = r.header("set-cookie").unwrap().to_owned();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let to_server = r.header("location").unwrap().to_owned();
    assert!(to_server.contains("code_challenge_method=S256") && to_server.contains("resource="), "{to_server}");
    assert_eq!(r.json()["authorize_url"], to_server.as_str());
    let on_server = to_server.strip_prefix(&format!("http://{mock}")).unwrap();
    let r = Client::connect(mock).get(on_server);
    assert_eq!(r.status, 302, "{}", r.text());
    let back = r.header("location").unwrap().to_owned();
    let callback = back.strip_prefix("http://gateway.test").unwrap().to_owned();
    // Another browser (without the cookie) cannot finish it.
    let r = Client::connect(gateway).get(&callback);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("another browser"), "{}", r.text());
    let r = Client::connect(gateway).get_with(&callback, &format!("cookie: other=1; {cookie}\r\n"));
    assert_eq!(r.status, 200, "{}", r.text());
    (callback, cookie)
}

/// Users' tokens are kept sealed in the store and come back after a restart.
#[test]
fn users_tokens_are_sealed_at_rest_and_survive_a_restart() {
    let mock = default_mock();
    let dir = e2e::tempdir();
    let db = dir.path().join("tokens.db");
    let yaml = config(mock.addr(), closed_port()).replacen(
        "teams:\n",
        &format!("store: {{path: '{}'}}\nteams:\n", db.display()),
        1,
    );
    let gw = gateway(&yaml, e2e::Runtime::Epoll);
    let mut olga = Session::new(gw.local_addr(), "mine", OLGA);
    olga.initialize();
    connect_account(gw.local_addr(), mock.addr(), OLGA);
    assert!(text_of(&olga.call("personal__whoami", json!({}))).starts_with("Bearer mcp-token-"));
    drop(olga);
    drop(gw);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let sealed: String =
        conn.query_row("SELECT sealed FROM mcp_user_tokens WHERE server = 'personal'", [], |r| r.get(0)).unwrap();
    assert!(!sealed.contains("mcp-token") && !sealed.contains("refresh-"), "not in the clear: {sealed}");
    drop(conn);
    let gw = gateway(&yaml, e2e::Runtime::Epoll);
    let mut olga = Session::new(gw.local_addr(), "mine", OLGA);
    olga.initialize();
    // Restored (and refreshed if it expired meanwhile): no second consent.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(6);
    loop {
        let r = olga.call("personal__whoami", json!({}));
        if r["result"].is_object() {
            assert!(text_of(&r).starts_with("Bearer mcp-token-"));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the token did not come back: {r}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    drop(olga);
    drop(gw);
    // Her key revoked: her tokens are deleted, at rest too (they were kept for good before).
    let revoked = yaml.replacen(
        &format!("secret: {OLGA}, user: olga}}"),
        &format!("secret: {OLGA}, user: olga, revoked: true}}"),
        1,
    );
    assert_ne!(revoked, yaml);
    let rows = || {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.query_row("SELECT count(*) FROM mcp_user_tokens WHERE user = 'key:olga-key'", [], |r| r.get::<_, i64>(0))
            .unwrap()
    };
    assert_eq!(rows(), 1, "her tokens, stored under her key");
    let gw = gateway(&revoked, e2e::Runtime::Epoll);
    assert!(e2e::eventually(std::time::Duration::from_secs(5), || rows() == 0), "her tokens are still stored");
    drop(gw);
    // Her key back: she connects again.
    let gw = gateway(&yaml, e2e::Runtime::Epoll);
    let mut olga = Session::new(gw.local_addr(), "mine", OLGA);
    olga.initialize();
    assert_eq!(olga.call("personal__whoami", json!({}))["error"]["code"], -32005);
}

/// Per-user OAuth: a server that acts as each user gets each caller's own token, after that
/// caller's consent (authorization code with PKCE, through the gateway's redirect flow), and the
/// token is refreshed before it expires.
#[test]
fn each_user_connects_their_own_account_and_their_token_is_presented() {
    let mock = default_mock();
    let gw = gateway(&config(mock.addr(), closed_port()), e2e::Runtime::Epoll);
    let addr = gw.local_addr();
    let mut olga = Session::new(addr, "mine", OLGA);
    olga.initialize();
    // Not connected yet: the call says where to connect.
    let e = olga.call("personal__whoami", json!({}));
    assert_eq!(e["error"]["code"], -32005, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("/mcp/oauth/personal/authorize"), "{e}");
    let (callback, cookie) = connect_account(addr, mock.addr(), OLGA);
    let first = text_of(&olga.call("personal__whoami", json!({})));
    assert!(first.starts_with("Bearer mcp-token-"), "olga's own token: {first}");
    // Another caller has not connected: still asked to.
    let mut sam = Session::new(addr, "mine", SAM);
    sam.initialize();
    assert_eq!(sam.call("personal__whoami", json!({}))["error"]["code"], -32005);
    // A state is good once (a replayed callback URL is refused before its code is tried); a
    // state the gateway did not make is refused.
    let replayed = Client::connect(addr).get_with(&callback, &format!("cookie: {cookie}\r\n"));
    assert_eq!(replayed.status, 400, "{}", replayed.text());
    assert!(replayed.text().contains("already completed"), "{}", replayed.text());
    assert_eq!(Client::connect(addr).get("/mcp/oauth/callback?code=x&state=forged").status, 400);
    // The token lives 2 s: refreshed (with the refresh token) before it expires.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(6);
    let mut latest = first.clone();
    while latest == first && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
        latest = text_of(&olga.call("personal__whoami", json!({})));
    }
    assert_ne!(latest, first, "refreshed before it expired");
}

fn admin(addr: SocketAddr, method: &str, path: &str, key: &str, body: &str) -> Response {
    let mut c = Client::connect(addr);
    c.send(
        format!(
            "{method} {path} HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    c.read_response()
}

/// Servers and virtual servers registered through the admin API: validated with the whole
/// config, in force at once, kept in the store across restarts; the config file's own cannot
/// be replaced, environment references are refused, and only org admins may do it.
#[test]
fn the_admin_api_registers_servers_and_virtual_servers() {
    let mock = default_mock();
    let dir = e2e::tempdir();
    let db = dir.path().join("admin.db");
    let yaml = config(mock.addr(), closed_port())
        .replacen("teams:\n", &format!("store: {{path: '{}'}}\nteams:\n", db.display()), 1)
        .replacen("users:\n", "users:\n  root: {role: org_admin}\n", 1)
        .replacen("keys:\n", &format!("keys:\n  - {{name: root-key, secret: {ROOT}, user: root}}\n"), 1);
    assert!(yaml.contains("\nmcp:\n"));
    let with_node = yaml.replacen("\nmcp:\n", "\nmcp:\n  stdio_commands: [node]\n", 1);
    let gw = gateway(&with_node, e2e::Runtime::Epoll);
    let addr = gw.local_addr();
    // A stdio server and a virtual server over it, which the restart below will break.
    let local = r#"{"transport": "stdio", "command": ["node", "server.js"]}"#;
    assert_eq!(admin(addr, "PUT", "/admin/v1/mcp/servers/local", ROOT, local).status, 200);
    assert_eq!(admin(addr, "PUT", "/admin/v1/mcp/virtual/uses-local", ROOT, r#"{"tools": ["local/*"]}"#).status, 200);
    let server = format!(r#"{{"url": "http://{}/mcp/beta", "timeout": "5s"}}"#, mock.addr());
    let r = admin(addr, "PUT", "/admin/v1/mcp/servers/added", ROOT, &server);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = admin(addr, "PUT", "/admin/v1/mcp/virtual/fresh", ROOT, r#"{"tools": ["added/*"]}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["virtual"].as_array().unwrap().iter().any(|v| v["name"] == "fresh"), "{}", r.text());
    let mut s = Session::new(addr, "fresh", OLGA);
    s.initialize();
    assert_eq!(s.tool_names(), ["added__echo", "added__time"]);
    assert_eq!(text_of(&s.call("added__echo", json!({"text": "new"}))), "beta: new");
    // The config file's own servers, virtual servers and guardrails are all still in force
    // (an admin change once recompiled the config without them).
    let listed = admin(addr, "GET", "/admin/v1/mcp", ROOT, "").json();
    assert_eq!(listed["servers"].as_array().unwrap().len(), 8, "six from the file and two made: {listed}");
    let mut tools = Session::new(addr, "tools", OLGA);
    tools.initialize();
    let blocked = tools.call("alpha__echo", json!({"text": FAKE_KEY}));
    assert_eq!(blocked["error"]["data"]["rule"], "no-secrets-in-args", "guardrails still on: {blocked}");
    // Refused: a name the config file declares, environment references, a bad spec, non-admins.
    let r = admin(addr, "PUT", "/admin/v1/mcp/servers/alpha", ROOT, &server);
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("declared in the config file"), "{}", r.text());
    for leaky in [
        r#"{"url": "http://127.0.0.1:1/mcp", "headers": {"authorization": "${HOME}"}}"#,
        r#"{"url": "http://127.0.0.1:1/mcp", "headers": {"authorization": "\u0024{HOME}"}}"#,
    ] {
        let r = admin(addr, "PUT", "/admin/v1/mcp/servers/leaky", ROOT, leaky);
        assert_eq!(r.status, 400, "{leaky}: {}", r.text());
        assert!(r.text().contains("environment references"), "{}", r.text());
    }
    let r = admin(addr, "PUT", "/admin/v1/mcp/virtual/broken", ROOT, r#"{"tools": ["nowhere/*"]}"#);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("no server `nowhere`"), "{}", r.text());
    assert_eq!(admin(addr, "PUT", "/admin/v1/mcp/servers/x", SAM, &server).status, 403);
    drop(s);
    drop(gw);
    // Kept across a restart; then deleted. The restart's file no longer lets the gateway run
    // node: the stdio server and the virtual server over it are left out (they once kept the
    // gateway from starting), and said to be.
    let gw = gateway(&yaml, e2e::Runtime::Epoll);
    let addr = gw.local_addr();
    let listed = admin(addr, "GET", "/admin/v1/mcp", ROOT, "").json();
    assert!(listed["servers"].as_array().unwrap().iter().any(|s| s["name"] == "added"), "{listed}");
    assert!(!listed["servers"].as_array().unwrap().iter().any(|s| s["name"] == "local"), "{listed}");
    let left_out = listed["left_out"].to_string();
    assert!(left_out.contains("mcp.servers.local") && left_out.contains("mcp.stdio_commands"), "{listed}");
    assert!(left_out.contains("mcp.virtual.uses-local"), "{listed}");
    // A change that would leave an object out is refused rather than taken and dropped.
    let r = admin(addr, "PUT", "/admin/v1/mcp/servers/local2", ROOT, local);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("mcp.servers.local2"), "{}", r.text());
    assert_eq!(admin(addr, "DELETE", "/admin/v1/mcp/virtual/fresh", ROOT, "").status, 200);
    let mut gone = Session::new(addr, "fresh", OLGA);
    let r = gone.post(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}));
    assert_eq!(r.status, 404, "{}", r.text());
}

/// Anonymous callers are all one caller: they cannot connect an account that would then serve
/// every one of them.
#[test]
fn anonymous_callers_cannot_connect_an_account() {
    let mock = default_mock();
    let m = mock.addr();
    let yaml = format!(
        "mcp:
  token_key: '{TOKEN_KEY}'
  servers:
    personal:
      url: 'http://{m}/mcp/secured'
      auth: {{oauth2: {{flow: authorization_code, authorize_url: 'http://{m}/mcp-oauth/authorize', token_url: 'http://{m}/mcp-oauth/token', client_id: gw, redirect_uri: 'http://gateway.test/mcp/oauth/callback'}}}}
  virtual:
    mine: {{tools: ['personal/whoami']}}
"
    );
    let gw = gateway(&yaml, e2e::Runtime::Epoll);
    let r = Client::connect(gw.local_addr()).get("/mcp/oauth/personal/authorize");
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("your own gateway credential"), "{}", r.text());
    assert!(r.header("set-cookie").is_none() && r.header("location").is_none());
}
