//! Per-team config files (`team_files: <dir>`): each `<team>.yaml` defines users, keys and rules
//! of its own team only, merges into the main config, and is reloaded like it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use e2e::{Client, Response, config_for, default_mock, eventually, gateway_with, metric, on_both_drivers, tempdir};
use engine::config::{ConfigError, ConfigSource};
use engine::{Gateway, StartOptions};

on_both_drivers!(
    two_teams_each_confined_to_their_own_namespace,
    the_watcher_picks_up_edits_additions_and_removals,
    reload_on_demand_and_a_bad_team_file_keeps_the_running_config,
);

const ROOT: &str = "sk-sg-root-0000000000000";
const ALICE: &str = "sk-sg-search-alice-00000";
const ALICE_2: &str = "sk-sg-search-alice-22222";
const BOB: &str = "sk-sg-ads-bob-0000000000";
/// A rate limit no test reaches.
const ROOMY: u64 = 100_000;
const CAROL: &str = "sk-sg-ml-carol-000000000";

/// The main config: an org admin with a key, team files in `teams.d`, `server` settings first.
fn main_config(upstream: SocketAddr, server: &str) -> String {
    let extra = format!(
        "{server}team_files: teams.d\nusers:\n  root: {{role: org_admin}}\nkeys:\n  - {{name: root-1, secret: {ROOT}, user: root}}\n"
    );
    config_for(upstream, &extra)
}

/// A team file: the team, one user, their key (from the environment, with a fallback), a
/// `rpm`-a-minute rule `rpm` and a budget `daily`, both ids every team file uses.
fn team_file(rpm: u64, user: &str, key_name: &str, secret: &str, extra_keys: &str) -> String {
    format!(
        "team: {{models: ['m', 'same']}}
users:
  {user}: {{}}
keys:
  - {{name: {key_name}, secret: '${{SG_TEAM_FILES_SURELY_UNSET:-{secret}}}', user: {user}}}
{extra_keys}rate_limits:
  - {{id: rpm, limits: {{requests_per_minute: {rpm}}}}}
budgets:
  - {{id: daily, limits: {{usd_per_day: 1000}}}}
"
    )
}

struct Setup {
    _dir: tempfile::TempDir,
    path: PathBuf,
    teams: PathBuf,
}

fn setup(upstream: SocketAddr, server: &str, rpm: u64) -> Setup {
    let dir = tempdir();
    let path = dir.path().join("gw.yaml");
    let teams = dir.path().join("teams.d");
    std::fs::create_dir(&teams).unwrap();
    std::fs::write(&path, main_config(upstream, server)).unwrap();
    std::fs::write(teams.join("search.yaml"), team_file(rpm, "alice", "alice-1", ALICE, "")).unwrap();
    std::fs::write(teams.join("ads.yaml"), team_file(rpm, "bob", "bob-1", BOB, "")).unwrap();
    Setup { _dir: dir, path, teams }
}

fn chat(addr: SocketAddr, key: &str) -> Response {
    Client::connect(addr).post_json(
        "/v1/chat/completions",
        r#"{"model":"m","max_tokens":16,"messages":[]}"#,
        &format!("authorization: Bearer {key}\r\n"),
    )
}

fn status(addr: SocketAddr, key: &str) -> u16 {
    chat(addr, key).status
}

fn code(addr: SocketAddr, key: &str) -> Option<String> {
    let r = chat(addr, key);
    (r.status != 200).then(|| r.error()["code"].as_str().map(str::to_string)).flatten()
}

fn failed_reloads(gw: &Gateway) -> f64 {
    metric(&gw.metrics_text(), "shardgate_config_reloads_total{result=\"failed\"}").unwrap_or(0.0)
}

fn two_teams_each_confined_to_their_own_namespace(driver: e2e::Runtime) {
    let upstream = default_mock();
    let s = setup(upstream.addr(), "", 2);
    let gw = gateway_with(ConfigSource::File(s.path.clone()), driver, 1);
    let addr = gw.local_addr();

    // Each team's `rpm` counts that team only.
    for _ in 0..2 {
        assert_eq!(status(addr, ALICE), 200);
    }
    let r = chat(addr, ALICE);
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("x-shardgate-limit-rule"), Some("search/rpm"));
    assert!(r.error()["message"].as_str().unwrap().contains("search/rpm"), "{}", r.text());
    for _ in 0..2 {
        assert_eq!(status(addr, BOB), 200, "the other team's rule is its own");
    }
    let r = chat(addr, BOB);
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-shardgate-limit-rule"), Some("ads/rpm"));
    // The org admin is in neither team: neither rule applies.
    for _ in 0..3 {
        assert_eq!(status(addr, ROOT), 200);
    }

    // What the team files declare is the config's, as the admin API shows.
    let mut c = Client::connect(addr);
    let admin = format!("authorization: Bearer {ROOT}\r\n");
    let listed = |kind: &str, c: &mut Client| -> Vec<(String, String)> {
        let r = c.get_with(&format!("/admin/v1/{kind}"), &admin);
        assert_eq!(r.status, 200, "{}", r.text());
        let mut v: Vec<_> = r.json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap().to_string(), e["source"].as_str().unwrap().to_string()))
            .collect();
        v.sort();
        v
    };
    let config = |names: &[&str]| names.iter().map(|n| (n.to_string(), "config".to_string())).collect::<Vec<_>>();
    assert_eq!(listed("keys", &mut c), config(&["alice-1", "bob-1", "root-1"]));
    assert_eq!(listed("rate_limits", &mut c), config(&["ads/rpm", "search/rpm"]));
    assert_eq!(listed("budgets", &mut c), config(&["ads/daily", "search/daily"]));
    assert_eq!(listed("teams", &mut c), config(&["ads", "search"]));
    let r = c.get_with("/admin/v1/users/alice", &admin);
    assert_eq!(r.json()["spec"]["teams"], serde_json::json!(["search"]));
    // A namespaced id is addressed with its `/` escaped.
    let r = c.get_with("/admin/v1/rate_limits/search%2Frpm", &admin);
    assert_eq!((r.status, r.json()["name"].as_str()), (200, Some("search/rpm")), "{}", r.text());
    gw.shutdown(Duration::from_secs(1));
}

fn the_watcher_picks_up_edits_additions_and_removals(driver: e2e::Runtime) {
    let upstream = default_mock();
    let s = setup(upstream.addr(), "server:\n  reload: {watch: true, poll_interval: 50ms}\n", ROOMY);
    let gw = gateway_with(ConfigSource::File(s.path.clone()), driver, 1);
    let addr = gw.local_addr();
    assert_eq!(status(addr, ALICE), 200);
    assert_eq!(status(addr, BOB), 200);
    let within = Duration::from_secs(5);

    // An edit: alice's key revoked, a second one added.
    let edited = team_file(
        ROOMY,
        "alice",
        "alice-1",
        ALICE,
        &format!("  - {{name: alice-2, secret: {ALICE_2}, user: alice}}\n"),
    )
    .replace("user: alice}\n  - {name: alice-2", "user: alice, revoked: true}\n  - {name: alice-2");
    assert!(edited.contains("revoked: true"), "{edited}");
    std::fs::write(s.teams.join("search.yaml"), &edited).unwrap();
    assert!(eventually(within, || code(addr, ALICE).as_deref() == Some("revoked_api_key")), "the revocation applies");
    assert!(eventually(within, || status(addr, ALICE_2) == 200), "the new key works");

    // A new team file.
    std::fs::write(s.teams.join("ml.yaml"), team_file(ROOMY, "carol", "carol-1", CAROL, "")).unwrap();
    assert!(eventually(within, || status(addr, CAROL) == 200), "a team file added");

    // A removed one: its team, user and key are gone.
    std::fs::remove_file(s.teams.join("ads.yaml")).unwrap();
    assert!(eventually(within, || code(addr, BOB).as_deref() == Some("invalid_api_key")), "a team file removed");

    // A bad edit: refused, the running config stays.
    let failed = failed_reloads(&gw);
    std::fs::write(
        s.teams.join("ml.yaml"),
        team_file(ROOMY, "carol", "carol-1", CAROL, "").replace("user: carol}", "user: carol, team: search}"),
    )
    .unwrap();
    assert!(eventually(within, || failed_reloads(&gw) == failed + 1.0), "the bad edit is refused");
    assert_eq!(status(addr, CAROL), 200);
    assert_eq!(status(addr, ALICE_2), 200);
    let generation = gw.config().generation;
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(gw.config().generation, generation, "no reload until something changes again");

    // Fixed again: picked up.
    std::fs::write(
        s.teams.join("ml.yaml"),
        team_file(ROOMY, "carol", "carol-1", CAROL, "").replace("rpm", "per-minute"),
    )
    .unwrap();
    assert!(eventually(within, || gw.config().generation > generation), "the fix is picked up");
    assert!(gw.config().policy.rules.iter().any(|r| &*r.id == "ml/per-minute"));
    gw.shutdown(Duration::from_secs(1));
}

fn reload_on_demand_and_a_bad_team_file_keeps_the_running_config(driver: e2e::Runtime) {
    let upstream = default_mock();
    let s = setup(upstream.addr(), "server:\n  reload: {watch: false}\n", ROOMY);
    let gw = gateway_with(ConfigSource::File(s.path.clone()), driver, 1);
    let addr = gw.local_addr();

    std::fs::write(
        s.teams.join("search.yaml"),
        team_file(
            ROOMY,
            "alice",
            "alice-1",
            ALICE,
            &format!("  - {{name: alice-2, secret: {ALICE_2}, user: alice}}\n"),
        ),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(code(addr, ALICE_2).as_deref(), Some("invalid_api_key"), "not watched: nothing changes until asked");
    assert_eq!(gw.reload().unwrap(), 2);
    assert_eq!(status(addr, ALICE_2), 200);

    // A section a team file may not have: refused naming file, line and field.
    std::fs::write(
        s.teams.join("ads.yaml"),
        format!("{}providers:\n  x: {{kind: mock}}\n", team_file(ROOMY, "bob", "bob-1", BOB, "")),
    )
    .unwrap();
    let err = gw.reload().unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("teams.d/ads.yaml") && msg.contains("line 10") && msg.contains("providers"), "{msg}");

    // A namespace violation: refused naming file and field.
    std::fs::write(
        s.teams.join("ads.yaml"),
        team_file(ROOMY, "bob", "bob-1", BOB, "").replace("{id: rpm,", "{id: rpm, when: {teams: [search]},"),
    )
    .unwrap();
    let msg = gw.reload().unwrap_err().to_string();
    assert!(msg.contains("teams.d/ads.yaml: rate_limits[0].when.teams"), "{msg}");
    assert_eq!(status(addr, ALICE_2), 200, "the last good config still serves");
    assert_eq!(status(addr, BOB), 200);
    assert_eq!(gw.config().generation, 2);
    gw.shutdown(Duration::from_secs(1));
}

/// Writes `gw.yaml` (with `team_files: teams.d`) and the given team files, then starts.
fn start_with(main: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, Result<Gateway, engine::StartError>) {
    let dir = tempdir();
    let teams = dir.path().join("teams.d");
    std::fs::create_dir(&teams).unwrap();
    std::fs::write(dir.path().join("gw.yaml"), format!("team_files: teams.d\nstore: {{path: none}}\n{main}")).unwrap();
    for (name, text) in files {
        std::fs::write(teams.join(name), text).unwrap();
    }
    let mut opts = StartOptions::new(ConfigSource::File(dir.path().join("gw.yaml")));
    opts.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    opts.shards = std::num::NonZeroUsize::new(1);
    opts.pin_cores = Some(false);
    let started = Gateway::start(opts);
    (dir, started)
}

fn start_error(main: &str, files: &[(&str, &str)]) -> String {
    let (_dir, started) = start_with(main, files);
    match started {
        Ok(_) => panic!("the gateway started"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_namespace_violation_is_a_start_error_naming_file_and_field() {
    let main = "teams:
  ads: {}
  shared: {}
users:
  root: {teams: [search], role: org_admin}
  bob: {teams: [ads]}
applications:
  billing: {team: ads}
keys:
  - {name: taken, secret: sk-sg-taken-000000000000, user: bob}
";
    let search = "team: {}
users:
  alice: {teams: [search, ads]}
  boss: {role: org_admin}
  bob: {}
applications:
  ranker: {team: ads}
keys:
  - {name: k0, secret: sk-sg-k0-000000000000000, user: alice, team: ads}
  - {name: k1, secret: sk-sg-k1-000000000000000, user: alice, role: org_admin}
  - {name: k2, secret: sk-sg-k2-000000000000000, application: billing}
  - {name: taken, secret: sk-sg-k3-000000000000000, user: alice}
  - {name: k4, secret: sk-sg-k4-000000000000000, user: root}
rate_limits:
  - {id: rpm, when: {teams: [ads]}, limits: {requests_per_minute: 1}}
  - {id: all, when: {teams: ['*']}, limits: {requests_per_minute: 1}}
budgets:
  - {id: daily, when: {teams: [search, ads]}, limits: {usd_per_day: 1}}
";
    let msg = start_error(main, &[("search.yaml", search), ("shared.yaml", "team: {}\n"), ("orphan.yml", "")]);
    let want = [
        "teams.d/search.yaml: users.alice.teams: a team file may only define users of team \"search\"",
        "teams.d/search.yaml: users.boss.role: a team file may not define org_admin users",
        "teams.d/search.yaml: users.bob: user \"bob\" is also defined in",
        "teams.d/search.yaml: applications.ranker.team: a team file may only define applications of team \"search\"",
        "teams.d/search.yaml: keys[0].team: a team file may only define keys of team \"search\"",
        "teams.d/search.yaml: keys[1].role: a team file may not define org_admin keys",
        "teams.d/search.yaml: keys[2].application: application \"billing\" is not of team \"search\"",
        "teams.d/search.yaml: keys[3].name: key \"taken\" is also defined in",
        "teams.d/search.yaml: keys[4].role: user \"root\" is an org_admin",
        "teams.d/search.yaml: rate_limits[0].when.teams: a team file's rules may only apply to team \"search\"",
        "teams.d/search.yaml: rate_limits[1].when.teams",
        "teams.d/search.yaml: budgets[0].when.teams",
        "teams.d/shared.yaml: team: team \"shared\" is also declared in",
        "teams.d/orphan.yml: team: team \"orphan\" is declared neither here",
    ];
    for w in want {
        assert!(msg.contains(w), "missing {w:?} in:\n{msg}");
    }
    assert!(msg.contains("gw.yaml (users.bob)") && msg.contains("gw.yaml (keys[0])"), "both places: {msg}");
    assert_eq!(msg.matches("\n  - ").count(), want.len(), "all at once, nothing else:\n{msg}");

    // `engine::config::load` says the same.
    let dir = tempdir();
    std::fs::create_dir(dir.path().join("t")).unwrap();
    std::fs::write(dir.path().join("t/x.yaml"), "keys:\n  - {name: a, hash: x, user: u, team: y}\n").unwrap();
    std::fs::write(dir.path().join("gw.yaml"), "team_files: t\nteams: {x: {}}\n").unwrap();
    let err = engine::config::load(&ConfigSource::File(dir.path().join("gw.yaml")), 1).unwrap_err();
    assert!(matches!(err, ConfigError::Invalid { .. }), "{err}");
    assert!(
        err.to_string().contains("t/x.yaml: keys[0].team: a team file may only define keys of team \"x\""),
        "{err}"
    );
}

#[test]
fn unknown_sections_and_a_missing_directory_are_start_errors() {
    let msg = start_error("teams: {search: {}}\n", &[("search.yaml", "users: {}\nauth:\n  allow_anonymous: true\n")]);
    assert!(msg.contains("teams.d/search.yaml") && msg.contains("line 2") && msg.contains("auth"), "{msg}");
    // Two broken files: both named.
    let msg = start_error("", &[("a.yaml", "models: {}\n"), ("b.yaml", "team: {}\nserver: {}\n")]);
    assert!(msg.contains("teams.d/a.yaml: ") && msg.contains("teams.d/b.yaml: "), "{msg}");
    assert!(msg.contains("models") && msg.contains("server"), "{msg}");

    let dir = tempdir();
    std::fs::write(dir.path().join("gw.yaml"), "team_files: nowhere.d\n").unwrap();
    let err = engine::config::load(&ConfigSource::File(dir.path().join("gw.yaml")), 1).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    assert!(err.to_string().contains("nowhere.d"), "{err}");
}

#[test]
fn hidden_and_other_files_are_ignored() {
    let (_dir, started) = start_with(
        "",
        &[
            ("search.yml", "team: {}\n"),
            (".search.yaml.swp", "garbage: ["),
            ("README.md", "garbage: ["),
            ("search.yaml.bak", "garbage: ["),
        ],
    );
    let gw = started.unwrap();
    assert!(gw.config().declared.teams.contains_key("search"));
    gw.shutdown(Duration::from_secs(1));
}
