//! The gateway binary as a process: started on a free port with JSON logs, its log kept,
//! signalled, killed.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::eventually;

/// Provider keys removed from the child's environment, so the embedded defaults serve only the
/// mock model whatever the machine's environment holds.
pub const PROVIDER_KEYS: &[&str] = &[
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "GEMINI_API_KEY",
    "GROQ_API_KEY",
    "MISTRAL_API_KEY",
    "DEEPSEEK_API_KEY",
    "TOGETHER_API_KEY",
    "FIREWORKS_API_KEY",
    "OPENROUTER_API_KEY",
    "XAI_API_KEY",
];

/// A running `shardgate serve`, one unpinned shard, on a free loopback port.
pub struct GatewayProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl GatewayProcess {
    /// Starts `program serve` (the gateway binary: `env!("CARGO_BIN_EXE_shardgate-e2e")` in a
    /// test) with `args` in `cwd` and waits for its listen address in the log.
    pub fn start(program: &str, cwd: &Path, args: &[&str]) -> GatewayProcess {
        let mut cmd = Command::new(program);
        cmd.current_dir(cwd)
            .args(["serve", "--listen", "127.0.0.1:0", "--shards", "1", "--no-pin", "--log-format", "json"])
            .args(args)
            .env("SHARDGATE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for k in PROVIDER_KEYS {
            cmd.env_remove(k);
        }
        let mut child = cmd.spawn().expect("spawn the gateway");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let listen = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v["fields"]["listen"].as_str().map(str::to_string));
                sink.lock().unwrap().push(line);
                if let Some(listen) = listen {
                    let _ = tx.send(listen.parse::<SocketAddr>().unwrap());
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("no 'serving' line; log: {:?}", log.lock().unwrap());
        });
        GatewayProcess { child, addr, log }
    }

    /// Sends a signal (`-HUP`, `-TERM`) with kill(1).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap().success();
        assert!(ok, "kill {sig}");
    }

    /// SIGKILL: no drain, no last flush, no store shutdown.
    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        let status = self.child.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "{status:?}");
    }

    /// Whether the log has (or gets, within two seconds) a line containing `needle`.
    pub fn log_contains(&self, needle: &str) -> bool {
        eventually(Duration::from_secs(2), || self.log.lock().unwrap().iter().any(|l| l.contains(needle)))
    }

    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
