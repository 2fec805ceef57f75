//! The MCP gateway against MCP software we did not write: the reference "everything" server
//! (`@modelcontextprotocol/server-everything`) upstream, merged with the mock's `alpha`, and
//! the official TypeScript SDK's client driving the virtual server: initialize (the SDK's
//! optional GET stream gets 405), listing, calls answered over SSE by the reference server, a
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
    fn start() -> Reference {
        let dir = node_dir();
        let mut child = Command::new("node")
            .current_dir(&dir)
            .args(["--import", "./loopback.mjs", "node_modules/@modelcontextprotocol/server-everything/dist/index.js"])
            .arg("streamableHttp")
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
        "auth: {{pepper: test-pepper-0123456789}}
users:
  agent: {{}}
keys:
  - {{name: agent-key, secret: {KEY}, user: agent}}
mcp:
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
