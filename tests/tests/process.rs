//! The `shardgate` binary as a process: embedded defaults, `check`, SIGHUP reload, and the
//! SIGTERM drain that lets an in-flight stream finish and exits 0, on both drivers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bench_harness::mock::Knobs;
use e2e::{Client, GatewayProcess, config_for, eventually, mock, tempdir};

const BIN: &str = env!("CARGO_BIN_EXE_shardgate-e2e");

/// The gateway in a fresh working directory (where the embedded defaults put their store).
struct Proc {
    p: GatewayProcess,
    _dir: tempfile::TempDir,
}

impl Proc {
    fn start(args: &[&str]) -> Proc {
        let dir = tempdir();
        Proc { p: GatewayProcess::start(BIN, dir.path(), args), _dir: dir }
    }
}

impl std::ops::Deref for Proc {
    type Target = GatewayProcess;

    fn deref(&self) -> &GatewayProcess {
        &self.p
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut GatewayProcess {
        &mut self.p
    }
}

#[test]
fn embedded_defaults_answer_with_the_mock_model() {
    let p = Proc::start(&[]);
    assert!(p.log_contains("embedded defaults"));
    let r = Client::connect(p.addr).post_json(
        "/v1/chat/completions",
        r#"{"model":"mock","messages":[{"role":"user","content":"hi"}]}"#,
        "",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["object"], "chat.completion");
    let models = Client::connect(p.addr).get("/v1/models").json();
    assert_eq!(models["data"][0]["id"], "mock");
    let r = Client::connect(p.addr).post_json("/v1/chat/completions", r#"{"model":"gpt-4o"}"#, "");
    assert_eq!(r.status, 404, "no OpenAI key in the environment, so no OpenAI models");
}

#[test]
fn check_validates_a_file() {
    let dir = tempdir();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, "providers:\n  m: {kind: mock}\nmodels:\n  x: {target: m/y}\n").unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "models:\n  x: {target: nope/y}\n").unwrap();
    let run = |p: &std::path::Path| Command::new(BIN).args(["check", "--config"]).arg(p).output().unwrap();
    assert!(run(&good).status.success());
    let out = run(&bad);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown provider \"nope\""));
}

#[test]
fn sighup_reloads_the_config_file() {
    let upstream = mock(Knobs::default());
    let dir = tempdir();
    let path = dir.path().join("gw.yaml");
    let base = config_for(upstream.addr(), "server:\n  reload: {watch: false}\n");
    std::fs::write(&path, &base).unwrap();
    let p = Proc::start(&["--config", path.to_str().unwrap()]);
    let chat = |model: &str| {
        Client::connect(p.addr)
            .post_json("/v1/chat/completions", &format!(r#"{{"model":"{model}","messages":[]}}"#), "")
            .status
    };
    assert_eq!(chat("fresh"), 404);
    std::fs::write(&path, format!("{base}  fresh: {{target: up/f}}\n")).unwrap();
    p.signal("-HUP");
    assert!(eventually(Duration::from_secs(3), || chat("fresh") == 200));
}

fn drain_lets_a_stream_finish(runtime_args: &[&str], logged: &str) {
    let upstream = mock(Knobs { tokens: 30, tokens_per_sec: Some(30.0), ..Knobs::default() });
    let dir = tempdir();
    let path = dir.path().join("gw.yaml");
    std::fs::write(&path, config_for(upstream.addr(), "server:\n  drain_grace: 10s\n")).unwrap();
    let mut args = vec!["--config", path.to_str().unwrap()];
    args.extend_from_slice(runtime_args);
    let mut p = Proc::start(&args);
    assert!(p.log_contains(logged), "{runtime_args:?} logged as {logged}");

    let mut c = Client::connect(p.addr);
    let body = r#"{"model":"m","stream":true,"messages":[]}"#;
    c.send_post("/v1/chat/completions", body, "");
    assert_eq!(c.read_head().0, 200);
    assert!(c.read_chunk().is_some());
    let signalled = Instant::now();
    p.signal("-TERM");
    // New connections are refused once the listener is closed.
    assert!(eventually(Duration::from_secs(2), || std::net::TcpStream::connect(p.addr).is_err()));
    // The stream in flight runs to its end.
    let mut rest = Vec::new();
    while let Some(chunk) = c.read_chunk() {
        rest.extend_from_slice(&chunk);
    }
    assert!(String::from_utf8_lossy(&rest).ends_with("data: [DONE]\n\n"));
    assert_eq!(p.wait_exit(Duration::from_secs(5)), Some(0), "exit 0 after the drain");
    assert!(signalled.elapsed() < Duration::from_secs(5));
    assert!(p.log_contains("drained"));
}

#[test]
fn sigterm_drains_in_flight_streams_and_exits_zero_epoll() {
    drain_lets_a_stream_finish(&["--driver", "epoll"], "epoll");
}

#[test]
fn sigterm_drains_in_flight_streams_and_exits_zero_uring() {
    drain_lets_a_stream_finish(&["--driver", "uring"], "io_uring");
}

#[cfg(feature = "runtime-glommio")]
#[test]
fn sigterm_drains_in_flight_streams_and_exits_zero_glommio() {
    drain_lets_a_stream_finish(&["--runtime", "glommio"], "glommio");
}

#[cfg(feature = "runtime-glommio")]
#[test]
fn glommio_without_enough_memlock_fails_with_the_fix() {
    // As an unprivileged user whose memlock limit cannot be raised.
    let out = Command::new("prlimit")
        .args(["--memlock=65536:65536", "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_shardgate-e2e"))
        .args(["serve", "--runtime", "glommio", "--listen", "127.0.0.1:0", "--no-pin", "--store", "none"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("RLIMIT_MEMLOCK") && err.contains("ulimit -l") && err.contains("--runtime monoio"), "{err}");
}

#[cfg(not(feature = "runtime-glommio"))]
#[test]
fn glommio_in_a_build_without_it_says_how_to_get_it() {
    let out = Command::new(BIN)
        .args(["serve", "--runtime", "glommio", "--listen", "127.0.0.1:0", "--store", "none"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no glommio backend") && err.contains("runtime-glommio"), "{err}");
}

#[test]
fn drain_grace_bounds_the_wait() {
    let upstream = mock(Knobs { tokens: 1000, tokens_per_sec: Some(10.0), ..Knobs::default() });
    let dir = tempdir();
    let path = dir.path().join("gw.yaml");
    std::fs::write(&path, config_for(upstream.addr(), "server:\n  drain_grace: 300ms\n")).unwrap();
    let mut p = Proc::start(&["--config", path.to_str().unwrap()]);
    let mut c = Client::connect(p.addr);
    let body = r#"{"model":"m","stream":true,"messages":[]}"#;
    c.send_post("/v1/chat/completions", body, "");
    assert_eq!(c.read_head().0, 200);
    let signalled = Instant::now();
    p.signal("-TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(5)), Some(0));
    assert!(signalled.elapsed() < Duration::from_secs(2), "gave up after the grace period");
    assert!(p.log_contains("grace period over"));
}

#[test]
fn auto_driver_falls_back_to_epoll_and_uring_fails_clearly_where_io_uring_is_unavailable() {
    // monoio's detection honours this variable exactly as it honours a seccomp denial.
    let run = |driver: &str| {
        Command::new(BIN)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--shards",
                "1",
                "--no-pin",
                "--driver",
                driver,
                "--store",
                "none",
            ])
            .env("MONOIO_FORCE_LEGACY_DRIVER", "1")
            .env("SHARDGATE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut auto = run("auto");
    let stderr = auto.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let serving = lines.find(|l| l.as_ref().is_ok_and(|l| l.contains("shardgate serving"))).unwrap().unwrap();
    assert!(serving.contains("runtime=monoio, epoll"), "{serving}");
    let _ = auto.kill();
    let _ = auto.wait();

    let out = run("uring").wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("io_uring is not available") && err.contains("--driver epoll"), "{err}");
}

#[test]
fn every_uring_flag_set_serves() {
    for (flags, logged) in
        [("coop-taskrun", "COOP_TASKRUN"), ("none", "no setup flags"), ("defer-taskrun", "DEFER_TASKRUN")]
    {
        let p = Proc::start(&["--driver", "uring", "--uring-flags", flags]);
        assert!(p.log_contains(logged), "{flags} logged as {logged}");
        let r = Client::connect(p.addr).post_json("/v1/chat/completions", r#"{"model":"mock","stream":true}"#, "");
        assert!(r.text().ends_with("data: [DONE]\n\n"), "{flags}");
    }
}

#[test]
fn keys_new_and_hash_agree_with_the_gateway() {
    let bin = env!("CARGO_BIN_EXE_shardgate-e2e");
    let pepper = "a-pepper-of-16-chars";
    let out = Command::new(bin).args(["keys", "new", "--pepper", pepper]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("{text}"))
    };
    let (key, hash) = (field("key:"), field("hash:"));
    assert!(key.starts_with("sk-sg-") && hash.starts_with("hmac-sha256:"), "{text}");
    assert_eq!(policy::keys::KeyHasher::new(pepper.as_bytes()).digest(&key).to_text(), hash);
    // `keys hash` reads the key from standard input.
    let mut child = Command::new(bin)
        .args(["keys", "hash"])
        .env("SHARDGATE_PEPPER", pepper)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{key}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), hash);
    // A short pepper is refused as the config would refuse it.
    let out = Command::new(bin).args(["keys", "new", "--pepper", "short"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
