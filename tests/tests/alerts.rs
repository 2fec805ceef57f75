//! Budget alerts reach their webhook once per threshold and period, however many shards see
//! the crossing, and a failing webhook is retried.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e::{Client, config_for, default_mock, eventually, gateway_with, on_both_drivers};
use engine::config::ConfigSource;
use serde_json::Value;

on_both_drivers!(each_threshold_is_delivered_once_across_shards, a_failing_webhook_is_retried);

/// A webhook receiver: keeps every JSON body POSTed to it; answers 500 to the first `fail`.
struct Hook {
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
}

impl Hook {
    fn start(fail: usize) -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicUsize::new(0));
        let (b, s) = (bodies.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(SeqCst) {
                let Ok((conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut reader = BufReader::new(conn);
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; len];
                reader.read_exact(&mut body).unwrap();
                b.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
                let status = if failed.fetch_add(1, SeqCst) < fail { "500 Internal Server Error" } else { "200 OK" };
                let mut conn = reader.into_inner();
                let _ = conn.write_all(
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes(),
                );
            }
        });
        Hook { addr, bodies, stop }
    }

    fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
    }
}

const KEY: &str = "sk-sg-alerts-0000000000";

/// Each token costs $1; the team's monthly budget is `limit` dollars with alerts at `at`.
fn config(upstream: SocketAddr, hook: SocketAddr, limit: u64, at: &str) -> String {
    let base = config_for(upstream, "");
    format!(
        "pricing:
  models:
    upstream-m: {{input_per_mtok: 1000000, output_per_mtok: 1000000}}
teams: {{search: {{}}}}
users: {{alice: {{teams: [search]}}}}
keys: [{{name: a, secret: {KEY}, user: alice}}]
budgets:
  - id: monthly
    per: team
    limits: {{usd_per_month: {limit}}}
    alerts: {{at: {at}, webhook: 'http://{hook}/budget'}}
{base}"
    )
}

fn spend(addr: SocketAddr) -> u16 {
    Client::connect(addr)
        .post_json(
            "/v1/chat/completions",
            r#"{"model":"m","max_tokens":2,"messages":[{"role":"user","content":"hi"}]}"#,
            &format!("authorization: Bearer {KEY}\r\n"),
        )
        .status
}

fn each_threshold_is_delivered_once_across_shards(rt: e2e::Runtime) {
    let hook = Hook::start(0);
    let up = default_mock();
    let yaml = config(up.addr(), hook.addr, 1000, "[10, 25, 50]");
    let gw = gateway_with(ConfigSource::Text { name: "t.yaml".into(), yaml }, rt, 2);
    // New connections land on both shards; stop once the budget refuses.
    let mut ok = 0;
    for _ in 0..400 {
        match spend(gw.local_addr()) {
            200 => ok += 1,
            429 => break,
            s => panic!("status {s}"),
        }
    }
    assert!(ok > 10, "{ok} requests admitted");
    assert!(eventually(Duration::from_secs(3), || hook.bodies().len() >= 3), "{:?}", hook.bodies());
    // Give a duplicate time to arrive, were there one.
    std::thread::sleep(Duration::from_millis(300));
    let mut thresholds: Vec<u64> = hook.bodies().iter().map(|b| b["threshold_percent"].as_u64().unwrap()).collect();
    thresholds.sort_unstable();
    assert_eq!(thresholds, [10, 25, 50], "once each: {:?}", hook.bodies());
    let first = &hook.bodies()[0];
    assert_eq!(first["type"], "budget.threshold_crossed");
    assert_eq!((first["budget"].as_str(), first["entity"].as_str()), (Some("monthly"), Some("search")));
    assert_eq!((first["period"].as_str(), first["limit_usd"].as_str()), (Some("month"), Some("1000.000000")));
    assert!(first["period_start"].as_str().unwrap().ends_with("-01"), "{first}");
}

fn a_failing_webhook_is_retried(rt: e2e::Runtime) {
    let hook = Hook::start(2);
    let up = default_mock();
    let yaml = config(up.addr(), hook.addr, 1000, "[1]");
    let gw = gateway_with(ConfigSource::Text { name: "t.yaml".into(), yaml }, rt, 1);
    assert_eq!(spend(gw.local_addr()), 200);
    // Two 500s, then delivered: three POSTs of the same alert, and no more.
    assert!(eventually(Duration::from_secs(5), || hook.bodies().len() >= 3), "{:?}", hook.bodies());
    std::thread::sleep(Duration::from_millis(1200));
    let bodies = hook.bodies();
    assert_eq!(bodies.len(), 3, "{bodies:?}");
    assert!(bodies.iter().all(|b| b == &bodies[0] && b["threshold_percent"] == 1));
}
