//! The MCP gateway against MCP software we did not write: the reference "everything" server
//! (`@modelcontextprotocol/server-everything`) upstream, merged with the mock's `alpha`, and
//! the official TypeScript SDK's client driving the virtual server: initialize (the SDK's
//! GET stream), listing, calls answered over SSE by the reference server, a
//! tool refused by an access rule, and the session ended with DELETE.
//!
//! Both come from the npm registry, pinned in `tests/mcp-node/package-lock.json`:
//! `npm ci --prefix tests/mcp-node` (part of the test command in README.md).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use e2e::{config_for, default_mock, gateway};
use serde_json::Value;

const KEY: &str = "sk-sg-agent-000000000000";
/// The one caller of these tests, and its key.
const AGENT: &str = "auth: {pepper: test-pepper-0123456789}
users:
  agent: {}
keys:
  - {name: agent-key, secret: sk-sg-agent-000000000000, user: agent}
";

fn node_dir() -> PathBuf {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/mcp-node"));
    assert!(
        dir.join("node_modules/@modelcontextprotocol/sdk").is_dir(),
        "the MCP reference server and SDK are not installed: run `npm ci --prefix tests/mcp-node` (Node.js 18+)"
    );
    dir
}

/// The reference server, killed when dropped.
struct Reference {
    child: Child,
    port: u16,
}

impl Reference {
    /// The reference server on streamable HTTP (`/mcp`).
    fn start() -> Reference {
        Reference::start_as("streamableHttp")
    }

    /// `streamableHttp`, or `sse` (the legacy HTTP+SSE transport: `/sse` and `/message`).
    fn start_as(transport: &str) -> Reference {
        let dir = node_dir();
        let mut child = Command::new("node")
            .current_dir(&dir)
            .args(["--import", "./loopback.mjs", "node_modules/@modelcontextprotocol/server-everything/dist/index.js"])
            .arg(transport)
            .env("PORT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node runs");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(port) = line.strip_prefix("shardgate-e2e listening ") {
                    let _ = tx.send(port.trim().parse::<u16>().unwrap_or(0));
                }
            }
        });
        let port = rx.recv_timeout(Duration::from_secs(30)).expect("the reference server listens");
        Reference { child, port }
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_official_sdk_drives_a_virtual_server_over_the_reference_server() {
    let reference = Reference::start();
    let mock = default_mock();
    let extra = format!(
        "{AGENT}mcp:
  servers:
    everything: {{url: 'http://127.0.0.1:{}/mcp', timeout: 10s}}
    alpha: {{url: 'http://{}/mcp/alpha', timeout: 5s}}
  virtual:
    agents:
      tools: ['everything/echo', 'everything/get-sum', 'everything/get-env', 'alpha/add']
      access:
        - {{deny: ['everything__get-env']}}
",
        reference.port,
        mock.addr()
    );
    let gw = gateway(&config_for(mock.addr(), &extra), e2e::Runtime::Epoll);
    let url = format!("http://{}/mcp/agents", gw.local_addr());
    let out = Command::new("node").current_dir(node_dir()).args(["client.mjs", &url, KEY]).output().expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the SDK client failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let seen: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    println!("{seen:#}");
    assert_eq!(seen["server"]["name"], "shardgate/agents");
    assert!(seen["sessionId"].as_str().is_some_and(|s| !s.is_empty()), "{seen}");
    assert!(adapters::mcp::PROTOCOL_VERSIONS.contains(&seen["protocolVersion"].as_str().unwrap()), "{seen}");
    assert_eq!(seen["tools"], serde_json::json!(["alpha__add", "everything__echo", "everything__get-sum"]));
    assert_eq!(seen["echo"]["content"][0]["text"], "Echo: hello from the official SDK", "{seen}");
    assert!(seen["sum"]["content"][0]["text"].as_str().unwrap().contains('5'), "{seen}");
    assert_eq!(seen["add"]["structuredContent"]["sum"], 42.0, "{seen}");
    assert_eq!(seen["refused"]["code"], -32003, "{seen}");
    assert!(seen["refused"]["message"].as_str().unwrap().contains("everything__get-env"), "{seen}");
}

/// A gateway of `shards` shards whose virtual server `agents` offers every tool of a fresh
/// reference server, with `more` config appended; all three live as long as the test holds them.
fn everything_gateway(shards: usize, more: &str) -> (Reference, bench_harness::mock::MockServer, engine::Gateway) {
    let reference = Reference::start();
    let mock = default_mock();
    let extra = format!(
        "{AGENT}mcp:
  servers:
    everything: {{url: 'http://127.0.0.1:{}/mcp', timeout: 20s}}
  virtual:
    agents:
      tools: ['everything/*']
{more}",
        reference.port
    );
    let source = engine::config::ConfigSource::Text { name: "test.yaml".into(), yaml: config_for(mock.addr(), &extra) };
    let gw = e2e::gateway_with(source, e2e::Runtime::Epoll, shards);
    (reference, mock, gw)
}

/// The reference server asks the client mid-call (sampling, elicitation) through the gateway:
/// each request reaches the SDK client on the call's event stream under a sealed id, and the
/// client's answer, posted on another connection (on two shards, possibly another shard's),
/// goes back to the server, its PII redacted by a `tool_args` rule first. With one shard, the
/// logs the server sends outside any call reach the client on its GET stream.
#[test]
fn servers_requests_reach_the_client_and_its_answers_go_back() {
    for shards in [1, 2] {
        let guardrails = "guardrails:\n  - {id: pii-to-tools, check: pii, mode: mutate, phase: tool_args}\n";
        let (_reference, _mock, gw) = everything_gateway(shards, guardrails);
        let url = format!("http://{}/mcp/agents", gw.local_addr());
        let logs = if shards == 1 { "logs" } else { "" };
        let out = Command::new("node")
            .current_dir(node_dir())
            .args(["relay.mjs", &url, KEY, logs])
            .output()
            .expect("node runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "the SDK client failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        let seen: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
        println!("{shards} shard(s): {seen:#}");
        let tools: Vec<&str> = seen["tools"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        // The reference server offers these only to clients that declared the capabilities:
        // the gateway declared the client's upstream.
        for t in ["everything__trigger-sampling-request", "everything__trigger-elicitation-request"] {
            assert!(tools.contains(&t), "{t} in {tools:?}");
        }
        let asked = seen["sampled"][0]["messages"][0]["content"]["text"].as_str().unwrap();
        assert!(asked.contains("what is 6 times 7?"), "{seen}");
        let sampled = seen["sampling"]["content"][0]["text"].as_str().unwrap();
        assert!(sampled.contains("sampled reply to: ") && sampled.contains("stub-model"), "{sampled}");
        assert_eq!(seen["elicited"][0], "Please provide inputs for the following fields:");
        let elicited = seen["elicitation"].to_string();
        assert!(elicited.contains("- Name: Ada"), "{elicited}");
        assert!(!elicited.contains("ada.lovelace@example.com"), "the answer's PII was redacted: {elicited}");
        assert!(elicited.contains("<EMAIL_1>"), "{elicited}");
        if shards == 1 {
            let first = &seen["logs"][0];
            assert!(first["data"].as_str().is_some_and(|d| d.contains("message")), "a log on the GET stream: {seen}");
            // A client that takes a call's answer as JSON only cannot be asked mid-call: the
            // server gets an error at once (it does not wait), and says so in its result.
            let mut c = e2e::Client::connect(gw.local_addr());
            let json_only = format!("authorization: Bearer {KEY}\r\naccept: application/json\r\n");
            let init = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-06-18", "capabilities": {"sampling": {}}}});
            let r = c.post_json("/mcp/agents", &init.to_string(), &json_only);
            let session = r.header("mcp-session-id").expect("a session").to_owned();
            let h = format!("{json_only}mcp-session-id: {session}\r\n");
            let call = serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                "params": {"name": "everything__trigger-sampling-request", "arguments": {"prompt": "hi"}}});
            let started = std::time::Instant::now();
            let r = c.post_json("/mcp/agents", &call.to_string(), &h);
            assert_eq!(r.status, 200, "{}", r.text());
            assert!(started.elapsed() < Duration::from_secs(5), "the server did not wait");
            let answer = r.json();
            assert_eq!(answer["result"]["isError"], true, "{answer}");
            assert!(answer.to_string().contains("takes this call's answer as JSON"), "{answer}");
        }
    }
}

/// The SSE events of a chunked stream, read until one matches `want` (the read timeout bounds
/// the wait); that message.
fn event_where(c: &mut e2e::Client, pending: &mut String, want: impl Fn(&Value) -> bool) -> Value {
    loop {
        while let Some(end) = pending.find("\n\n") {
            let event: String = pending.drain(..end + 2).collect();
            let data: String = event.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
            if let Ok(message) = serde_json::from_str::<Value>(&data)
                && want(&message)
            {
                return message;
            }
        }
        let chunk = c.read_chunk().expect("the stream ended before the awaited event");
        pending.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// This gateway's shard that a per-shard counter grew on between two readings.
fn grown_on(before: &str, after: &str, series: &str) -> Option<usize> {
    (0..2).find(|i| {
        let s = format!("{series}{{shard=\"{i}\"}}");
        e2e::metric(after, &s).unwrap_or(0.0) > e2e::metric(before, &s).unwrap_or(0.0)
    })
}

/// Raw HTTP against the reference server behind two shards: a server's request goes out on the
/// call's stream under a sealed id, and the answer, posted on fresh connections until one lands
/// on the other shard (the metrics say which shard did what), reaches the server, which finishes
/// the call with it. Answers with an id of another session are refused.
#[test]
fn an_answer_on_another_shard_reaches_the_server_that_asked() {
    let (_reference, _mock, gw) = everything_gateway(2, "");
    let addr = gw.local_addr();
    let both = format!("authorization: Bearer {KEY}\r\naccept: application/json, text/event-stream\r\n");
    let open = |caps: Value| {
        let init = serde_json::json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": caps}});
        let r = e2e::Client::connect(addr).post_json("/mcp/agents", &init.to_string(), &both);
        format!("{both}mcp-session-id: {}\r\n", r.header("mcp-session-id").expect("a session"))
    };
    let h = open(serde_json::json!({"sampling": {}}));
    let other = open(serde_json::json!({"sampling": {}}));
    let mut crossed = false;
    for attempt in 1..=24 {
        let before = gw.metrics_text();
        let mut call = e2e::Client::connect(addr);
        let ask = serde_json::json!({"jsonrpc": "2.0", "id": attempt, "method": "tools/call",
            "params": {"name": "everything__trigger-sampling-request", "arguments": {"prompt": format!("attempt {attempt}")}}});
        call.send_post("/mcp/agents", &ask.to_string(), &h);
        let (status, _) = call.read_head();
        assert_eq!(status, 200);
        let mut pending = String::new();
        let request = event_where(&mut call, &mut pending, |m| m["method"] == "sampling/createMessage");
        let id = request["id"].as_str().expect("a string id").to_owned();
        assert!(id.starts_with("sg-relay-"), "{id}");
        let answer = serde_json::json!({"jsonrpc": "2.0", "id": id, "result":
            {"model": "raw", "role": "assistant", "content": {"type": "text", "text": format!("raw answer {attempt}")}}});
        // Another session cannot use the id.
        let refused = e2e::Client::connect(addr).post_json("/mcp/agents", &answer.to_string(), &other);
        assert_eq!(refused.status, 400, "{}", refused.text());
        let taken = e2e::Client::connect(addr).post_json("/mcp/agents", &answer.to_string(), &h);
        assert_eq!(taken.status, 202, "{}", taken.text());
        let result = event_where(&mut call, &mut pending, |m| m["id"] == attempt);
        assert!(result.to_string().contains(&format!("raw answer {attempt}")), "{result}");
        let after = gw.metrics_text();
        let asked_on = grown_on(&before, &after, "shardgate_mcp_server_requests_relayed_total");
        let answered_on = grown_on(&before, &after, "shardgate_mcp_client_answers_total");
        assert!(asked_on.is_some() && answered_on.is_some(), "counted: {asked_on:?} {answered_on:?}");
        if asked_on != answered_on {
            crossed = true;
            break;
        }
    }
    assert!(crossed, "in 24 tries no answer landed on the other shard");
}

/// The GET stream, read raw on one shard: a log the server sends outside any call arrives on
/// it (the call that starts the logging takes JSON only, so nothing else could carry it), and a
/// second GET of the same session ends the first.
#[test]
fn the_get_stream_carries_what_servers_send_outside_calls() {
    let (_reference, _mock, gw) = everything_gateway(1, "");
    let addr = gw.local_addr();
    let json_only = format!("authorization: Bearer {KEY}\r\naccept: application/json\r\n");
    let init = serde_json::json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}}});
    let r = e2e::Client::connect(addr).post_json("/mcp/agents", &init.to_string(), &json_only);
    assert_eq!(r.json()["result"]["capabilities"]["tools"]["listChanged"], true, "{}", r.text());
    let session = r.header("mcp-session-id").expect("a session").to_owned();
    let get_request = format!(
        "GET /mcp/agents HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {KEY}\r\naccept: text/event-stream\r\nmcp-session-id: {session}\r\n\r\n"
    );
    let mut get = e2e::Client::connect(addr);
    get.send(get_request.as_bytes());
    let (status, headers) = get.read_head();
    assert_eq!(status, 200);
    assert!(headers.iter().any(|(n, v)| n == "content-type" && v.starts_with("text/event-stream")), "{headers:?}");
    let h = format!("{json_only}mcp-session-id: {session}\r\n");
    let toggle = |id: u32| {
        let call = serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "everything__toggle-simulated-logging", "arguments": {}}});
        let r = e2e::Client::connect(addr).post_json("/mcp/agents", &call.to_string(), &h);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    };
    let started = toggle(1);
    assert!(started.to_string().contains("Started simulated"), "{started}");
    let mut pending = String::new();
    let log = event_where(&mut get, &mut pending, |m| m["method"] == "notifications/message");
    assert!(log["params"]["data"].as_str().is_some_and(|d| d.contains("message")), "{log}");
    // A second GET of the session takes the first one's place: the first ends.
    let mut second = e2e::Client::connect(addr);
    second.send(get_request.as_bytes());
    assert_eq!(second.read_head().0, 200);
    while get.read_chunk().is_some() {}
    toggle(2);
}

/// With two shards, a client's upstream sessions live on both, but its GET stream on one: what
/// the other shard's upstream session hears outside calls is forwarded to it. Logging is
/// started in the upstream session of each shard (each log names its upstream session), and
/// logs from both arrive on the one stream.
#[test]
fn the_get_stream_hears_the_upstream_sessions_of_every_shard() {
    let (_reference, _mock, gw) = everything_gateway(2, "");
    let addr = gw.local_addr();
    let json_only = format!("authorization: Bearer {KEY}\r\naccept: application/json\r\n");
    let init = serde_json::json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}}});
    let r = e2e::Client::connect(addr).post_json("/mcp/agents", &init.to_string(), &json_only);
    let session = r.header("mcp-session-id").expect("a session").to_owned();
    let h = format!("{json_only}mcp-session-id: {session}\r\n");
    let toggle = || {
        let call = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "everything__toggle-simulated-logging", "arguments": {}}});
        let r = e2e::Client::connect(addr).post_json("/mcp/agents", &call.to_string(), &h);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["result"]["content"][0]["text"].as_str().unwrap_or_default().to_owned()
    };
    let open_get = format!(
        "GET /mcp/agents HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {KEY}\r\naccept: text/event-stream\r\nmcp-session-id: {session}\r\n\r\n"
    );
    let mut get = e2e::Client::connect(addr);
    get.send(open_get.as_bytes());
    assert_eq!(get.read_head().0, 200);
    // The other shard learns of the stream within a gossip interval.
    std::thread::sleep(Duration::from_millis(100));
    // Start logging in both shards' upstream sessions (calls land on either shard).
    let mut started = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let said = toggle();
        let id = said.split("session ").nth(1).map(|s| s.split_whitespace().next().unwrap_or_default().to_owned());
        match id {
            Some(id) if said.starts_with("Started") => {
                started.insert(id);
            }
            Some(id) => {
                started.remove(&id);
            }
            None => panic!("{said}"),
        }
        if started.len() == 2 {
            break;
        }
    }
    assert_eq!(started.len(), 2, "logging started in the upstream sessions of both shards");
    // Each session logs at once, then every 5 s: 12 s is plenty.
    let hear_both = |get: &mut e2e::Client| {
        let mut heard = std::collections::BTreeSet::new();
        let mut pending = String::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(12);
        while heard.len() < 2 {
            assert!(std::time::Instant::now() < deadline, "logs heard only from {heard:?} of {started:?}");
            let log = event_where(get, &mut pending, |m| m["method"] == "notifications/message");
            let data = log["params"]["data"].as_str().unwrap_or_default();
            if let Some(id) = started.iter().find(|id| data.contains(id.as_str())) {
                heard.insert(id.clone());
            }
        }
    };
    hear_both(&mut get);
    // The client reconnects its stream (on either shard) before the old one is noticed gone:
    // both shards' logs reach the new one.
    let mut again = e2e::Client::connect(addr);
    again.send(open_get.as_bytes());
    assert_eq!(again.read_head().0, 200);
    drop(get);
    hear_both(&mut again);
    let forwarded: f64 = (0..2)
        .filter_map(|i| {
            e2e::metric(&gw.metrics_text(), &format!("shardgate_mcp_forwarded_to_other_shards_total{{shard=\"{i}\"}}"))
        })
        .sum();
    assert!(forwarded >= 1.0, "one shard's logs came through the other: {forwarded}");
}

/// One JSON-RPC request over a fresh connection; the response.
fn rpc(addr: std::net::SocketAddr, session: Option<&str>, method: &str, params: Value) -> (Value, Option<String>) {
    let mut h = format!("authorization: Bearer {KEY}\r\naccept: application/json, text/event-stream\r\n");
    if let Some(s) = session {
        h.push_str(&format!("mcp-session-id: {s}\r\n"));
    }
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let r = e2e::Client::connect(addr).post_json("/mcp/local", &body.to_string(), &h);
    assert_eq!(r.status, 200, "{}", r.text());
    (r.json(), r.header("mcp-session-id").map(str::to_owned))
}

/// Stdio servers: the reference server run as a local process, and our own that crashes on
/// request; it is started again, and no process outlives the gateway. The reference server on
/// the legacy HTTP+SSE transport sits in the same virtual server.
#[test]
fn stdio_servers_are_supervised_restarted_and_do_not_outlive_the_gateway() {
    let dir = node_dir();
    let mock = default_mock();
    let legacy = Reference::start_as("sse");
    let extra = format!(
        "{AGENT}mcp:
  stdio_commands: [node]
  servers:
    crashy: {{transport: stdio, command: [node, '{crashy}'], timeout: 10s}}
    reference: {{transport: stdio, command: [node, '{everything}', stdio], timeout: 10s}}
    legacy: {{transport: sse, url: 'http://127.0.0.1:{legacy_port}/sse', timeout: 10s}}
  virtual:
    local:
      tools: ['crashy/*', 'reference/echo', 'reference/trigger-long-running-operation', 'legacy/get-sum', 'legacy/trigger-long-running-operation']
",
        legacy_port = legacy.port,
        crashy = dir.join("crashy.mjs").display(),
        everything = dir.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js").display(),
    );
    let gw = gateway(&config_for(mock.addr(), &extra), e2e::Runtime::Epoll);
    let addr = gw.local_addr();
    let (_, session) = rpc(addr, None, "initialize", serde_json::json!({"protocolVersion": "2025-06-18"}));
    let session = session.expect("a session");
    let s = Some(session.as_str());
    let call =
        |tool: &str, args: Value| rpc(addr, s, "tools/call", serde_json::json!({"name": tool, "arguments": args})).0;
    let (listed, _) = rpc(addr, s, "tools/list", serde_json::json!({}));
    let mut names: Vec<&str> =
        listed["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "crashy__crash",
            "crashy__echo",
            "crashy__pid",
            "legacy__get-sum",
            "legacy__trigger-long-running-operation",
            "reference__echo",
            "reference__trigger-long-running-operation"
        ]
    );
    // Progress reaches the caller under the caller's own token, then the result: from a stdio
    // server (shared by every client: the gateway gave it a token of its own) and from a legacy
    // one (its stream is this client's alone).
    let h = format!(
        "authorization: Bearer {KEY}\r\naccept: application/json, text/event-stream\r\nmcp-session-id: {session}\r\n"
    );
    for tool in ["reference__trigger-long-running-operation", "legacy__trigger-long-running-operation"] {
        let long = serde_json::json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {
            "name": tool, "arguments": {"duration": 0.3, "steps": 3}, "_meta": {"progressToken": "mine"}}});
        let r = e2e::Client::connect(addr).post_json("/mcp/local", &long.to_string(), &h);
        assert_eq!(r.status, 200, "{}", r.text());
        let events: Vec<Value> = r
            .text()
            .split("\n\n")
            .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert_eq!(events.len(), 4, "{tool}: three progress notifications, then the result: {events:?}");
        for (i, e) in events.iter().take(3).enumerate() {
            assert_eq!(e["method"], "notifications/progress", "{tool}: {e}");
            assert_eq!(e["params"]["progressToken"], "mine", "{tool}: {e}");
            assert_eq!(e["params"]["progress"], serde_json::json!(i + 1), "{tool}: {e}");
        }
        let done = events[3]["result"]["content"][0]["text"].as_str().unwrap();
        assert!(done.contains("completed"), "{tool}: {}", events[3]);
    }
    // Over the legacy transport: the answer comes back on the event stream.
    let sum = call("legacy__get-sum", serde_json::json!({"a": 20, "b": 22}));
    assert!(sum["result"]["content"][0]["text"].as_str().unwrap().contains("42"), "{sum}");
    assert_eq!(call("crashy__echo", serde_json::json!({"text": "hi"}))["result"]["content"][0]["text"], "stdio: hi");
    assert_eq!(
        call("reference__echo", serde_json::json!({"message": "over stdio"}))["result"]["content"][0]["text"],
        "Echo: over stdio"
    );
    let pid = |v: Value| v["result"]["content"][0]["text"].as_str().map(|p| p.parse::<u32>().unwrap());
    let first = pid(call("crashy__pid", serde_json::json!({}))).expect("a pid");
    // A crash mid-call: that call fails with the reason; the process is started again.
    let crashed = call("crashy__crash", serde_json::json!({}));
    assert_eq!(crashed["error"]["code"], -32005, "{crashed}");
    assert!(crashed["error"]["message"].as_str().unwrap().contains("ended before answering"), "{crashed}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let second = loop {
        if let Some(p) = pid(call("crashy__pid", serde_json::json!({}))) {
            break p;
        }
        assert!(std::time::Instant::now() < deadline, "the server was not started again");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_ne!(first, second, "a new process");
    assert!(!alive(first), "the crashed one is gone");
    // The gateway stops: its stdio servers go with it.
    drop(gw);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while alive(second) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(second), "process {second} outlived the gateway");
}

/// Whether a process runs (a zombie does not count).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}
