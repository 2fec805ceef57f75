//! Config reload: a good file is picked up (on change, or on demand as SIGHUP does), a bad one
//! is refused with file, line and field while the running config stays.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use e2e::{Client, config_for, default_mock, eventually, gateway_with, metric, on_both_drivers, tempdir};
use engine::config::{ConfigError, ConfigSource};

on_both_drivers!(reload_on_file_change_and_refuse_a_bad_file, reload_on_demand_reports_errors_precisely);

fn chat(addr: std::net::SocketAddr, model: &str) -> u16 {
    Client::connect(addr)
        .post_json("/v1/chat/completions", &format!(r#"{{"model":"{model}","messages":[]}}"#), "")
        .status
}

fn reload_on_file_change_and_refuse_a_bad_file(driver: e2e::Runtime) {
    let upstream = default_mock();
    let dir = tempdir();
    let path = dir.path().join("shardgate.yaml");
    let watch = "server:\n  reload: {watch: true, poll_interval: 50ms}\n";
    std::fs::write(&path, config_for(upstream.addr(), watch)).unwrap();
    let gw = gateway_with(ConfigSource::File(path.clone()), driver, 1);
    let addr = gw.local_addr();
    assert_eq!(chat(addr, "later"), 404);

    let extended = format!("{}  later: {{target: up/later-model}}\n", config_for(upstream.addr(), watch));
    std::fs::write(&path, &extended).unwrap();
    assert!(eventually(Duration::from_secs(3), || chat(addr, "later") == 200), "the new model appears");
    assert_eq!(gw.config().generation, 2);

    // A broken file: refused, the running config stays.
    std::fs::write(&path, format!("{extended}  broken: {{target: nowhere/x}}\n")).unwrap();
    assert!(eventually(Duration::from_secs(3), || metric(
        &gw.metrics_text(),
        "shardgate_config_reloads_total{result=\"failed\"}"
    ) == Some(1.0)));
    assert_eq!(chat(addr, "later"), 200);
    assert_eq!(gw.config().generation, 2);

    std::fs::write(&path, "server: [this is not a mapping\n").unwrap();
    assert!(eventually(Duration::from_secs(3), || metric(
        &gw.metrics_text(),
        "shardgate_config_reloads_total{result=\"failed\"}"
    ) == Some(2.0)));
    assert_eq!(chat(addr, "m"), 200);
}

fn reload_on_demand_reports_errors_precisely(driver: e2e::Runtime) {
    let upstream = default_mock();
    let dir = tempdir();
    let path = dir.path().join("gw.yaml");
    let no_watch = "server:\n  reload: {watch: false}\n";
    std::fs::write(&path, config_for(upstream.addr(), no_watch)).unwrap();
    let gw = gateway_with(ConfigSource::File(path.clone()), driver, 1);

    std::fs::write(&path, format!("{}  extra: {{target: up/e}}\n", config_for(upstream.addr(), no_watch))).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(chat(gw.local_addr(), "extra"), 404, "not watched: nothing changes until asked");
    assert_eq!(gw.reload().unwrap(), 2);
    assert_eq!(chat(gw.local_addr(), "extra"), 200);

    std::fs::write(&path, "server:\n  limits:\n    max_bodyy: 1KiB\n").unwrap();
    let err = gw.reload().unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }));
    let msg = err.to_string();
    assert!(msg.contains("gw.yaml") && msg.contains("line 3") && msg.contains("max_bodyy"), "{msg}");

    std::fs::write(&path, "providers:\n  p: {kind: openai-compatible}\n").unwrap();
    let msg = gw.reload().unwrap_err().to_string();
    assert!(msg.contains("providers.p.base_url is required"), "{msg}");
    assert_eq!(chat(gw.local_addr(), "extra"), 200, "the last good config still serves");
}
