//! The MCP scenario: `tools/call` straight to an MCP server (the mock's `alpha`) and the same
//! call through a virtual server of the gateway, at the same fixed rates, interleaved; the
//! difference of their latency percentiles is what the gateway adds (issue 9's goal: under
//! 200 µs at p99).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use loadgen::Mode;

use super::model::{RatePoint, ScenarioKind, ScenarioResult, Stat};
use super::runner::{Options, addr, differences, errors_of, percentiles, plan};

/// The gateway's config: one upstream MCP server on the mock, one virtual server exposing its
/// `echo`; anonymous callers (a loopback listener without keys), no guardrails.
pub fn config_yaml(mock_port: u16) -> String {
    format!(
        "server:\n  reload: {{watch: false}}\nstore: {{path: none}}\nmcp:\n  servers:\n    alpha: {{url: 'http://127.0.0.1:{mock_port}/mcp/alpha', timeout: 10s}}\n  virtual:\n    bench:\n      tools: ['alpha/echo']\n"
    )
}

/// One blocking exchange: the answer's head and body.
fn post(to: SocketAddr, path: &str, headers: &str, body: &str) -> Result<(String, String), String> {
    let mut s = TcpStream::connect(to).map_err(|e| format!("{to}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nhost: bench\r\nconnection: close\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\ncontent-length: {}\r\n{headers}\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    let (head, body) = out.split_once("\r\n\r\n").ok_or_else(|| format!("no HTTP answer from {to}{path}: {out}"))?;
    Ok((head.to_owned(), body.to_owned()))
}

/// Opens an MCP session at `path`: its `Mcp-Session-Id`.
fn session(to: SocketAddr, path: &str) -> Result<String, String> {
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"shardgate-bench","version":"1"}}}"#;
    let (head, body) = post(to, path, "", init)?;
    let id = head
        .lines()
        .find_map(|l| {
            l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case("mcp-session-id")).map(|(_, v)| v.trim())
        })
        .ok_or_else(|| format!("{to}{path} opened no session: {head}\n{body}"))?
        .to_owned();
    let note = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    post(to, path, &format!("mcp-session-id: {id}\r\nmcp-protocol-version: 2025-06-18\r\n"), note)?;
    Ok(id)
}

fn call_body(tool: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}","arguments":{{"text":"hello from the benchmark"}}}}}}"#
    )
}

/// Runs the scenario against the mock (`mock_port`) and the gateway (`gateway_port`).
pub fn tool_calls(o: &Options, mock_port: u16, gateway_port: u16, driver: &str) -> Result<ScenarioResult, String> {
    let direct = (addr(mock_port), "/mcp/alpha", call_body("echo"));
    let via = (addr(gateway_port), "/mcp/bench", call_body("alpha__echo"));
    let mut sides = Vec::new();
    for (to, path, body) in [&direct, &via] {
        let id = session(*to, path)?;
        let headers = [
            ("accept".to_string(), "application/json, text/event-stream".to_string()),
            ("mcp-session-id".to_string(), id.clone()),
            ("mcp-protocol-version".to_string(), "2025-06-18".to_string()),
        ];
        // One call by hand first: the scenario must measure answers, not refusals (a JSON-RPC
        // error comes with HTTP 200).
        let h: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
        let (_, answer) = post(*to, path, &h, body)?;
        if !answer.contains("hello from the benchmark") {
            return Err(format!("tools/call at {to}{path} did not answer as expected: {answer}"));
        }
        sides.push((format!("http://{to}{path}"), body.clone(), headers));
    }
    let mut points = Vec::new();
    let mut errors = 0;
    for &rate in &o.rates {
        let mode = Mode::Open { rate, poisson: false, max_connections: 2048 };
        let (mut base, mut through) = (Vec::new(), Vec::new());
        for _ in 0..o.repetitions {
            for (i, (url, body, headers)) in sides.iter().enumerate() {
                let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let report = loadgen::run(&plan(url, body, &h, mode, o, o.duration)?)?;
                tracing::info!(scenario = if i == 0 { "mcp-direct" } else { "mcp" }, rate, "fixed rate");
                if i == 0 { base.push(report) } else { through.push(report) }
            }
        }
        errors += through.iter().chain(&base).map(errors_of).sum::<u64>();
        if let (Some(achieved), Some(latency), Some(service)) = (
            Stat::of(through.iter().map(|r| r.achieved_rate).collect()),
            percentiles(&through, |r| r.latency_us.as_ref()),
            percentiles(&through, |r| r.service_us.as_ref()),
        ) {
            points.push(RatePoint {
                offered_rps: rate,
                achieved_rps: achieved,
                latency_us: latency,
                service_us: service,
                added_us: differences(&through, &base, |r| r.service_us.as_ref()),
                errors: through.iter().map(errors_of).sum(),
            });
        }
    }
    Ok(ScenarioResult {
        name: format!("mcp-{driver}"),
        description: format!(
            "MCP tools/call (echo) through a virtual server of shardgate (monoio, {driver}), one shard, against the same call straight to the MCP server, at the same fixed rates"
        ),
        kind: ScenarioKind::Mcp,
        driver: Some(driver.to_owned()),
        max_throughput_rps: None,
        throughput_at_slo_rps: None,
        rates: points,
        ttft_overhead_us: None,
        ttft_us: None,
        idle_rss_mb: None,
        peak_rss_mb: None,
        cpu_us_per_request: None,
        ratio_to_baseline: None,
        ratio_to_nginx: None,
        errors,
        notes: vec![
            "added latency: the gateway's service-time percentiles minus the direct calls', repetition by repetition"
                .into(),
        ],
    })
}
