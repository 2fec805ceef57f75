//! The processes a benchmark runs: started pinned (and capped), watched through /proc, killed on
//! drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::cgroup::MemoryCap;

/// How to start a process under test.
pub struct Launch<'a> {
    pub name: &'a str,
    pub program: &'a Path,
    pub args: Vec<String>,
    /// The CPU it is pinned to.
    pub core: usize,
    /// The memory cgroup it runs in, if any.
    pub cap: Option<&'a MemoryCap>,
    /// Open-files limit to raise to.
    pub nofile: u64,
    /// Where its stderr goes.
    pub log: PathBuf,
    pub env: Vec<(&'static str, &'static str)>,
}

/// A child process under test.
pub struct Proc {
    pub name: String,
    child: Child,
    /// The pid whose /proc entry we read (the nginx worker, for nginx).
    pub watch_pid: u32,
}

impl Proc {
    /// Starts the program pinned to its core, inside its cgroup when given, with a raised
    /// open-files limit, stdout discarded and stderr to its log.
    pub fn start(l: Launch<'_>) -> Result<Proc, String> {
        let Launch { name, program, args, core, cap, nofile, log, env } = l;
        // `sh` moves itself into the cgroup and raises its limits, then execs the program under
        // taskset: the whole lifetime of the program is capped and pinned.
        let mut script = String::new();
        if let Some(procs) = cap.and_then(MemoryCap::procs_file) {
            script.push_str(&format!("echo $$ > '{}' || exit 97; ", procs.display()));
        }
        script.push_str(&format!("ulimit -n {nofile} 2>/dev/null || ulimit -n $(ulimit -Hn); "));
        script.push_str(&format!("exec taskset -c {core} \"$0\" \"$@\""));
        let stderr = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script).arg(program).args(&args).stdout(Stdio::null()).stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().map_err(|e| format!("cannot start {name} ({}): {e}", program.display()))?;
        let watch_pid = child.id();
        Ok(Proc { name: name.to_string(), child, watch_pid })
    }

    /// For programs that fork a worker (nginx): watch the first child instead.
    pub fn watch_first_child(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            let children =
                std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.child.id())).unwrap_or_default();
            if let Some(pid) = children.split_whitespace().next().and_then(|p| p.parse().ok()) {
                self.watch_pid = pid;
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn status_kb(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.watch_pid)).ok()?;
        status.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
    }

    /// Resident set size now, MB.
    pub fn rss_mb(&self) -> Option<f64> {
        self.status_kb("VmRSS:").map(|kb| kb as f64 / 1024.0)
    }

    /// Peak resident set size over the process's life, MB.
    pub fn peak_rss_mb(&self) -> Option<f64> {
        self.status_kb("VmHWM:").map(|kb| kb as f64 / 1024.0)
    }

    /// CPU time used so far (user + system, all threads), in clock ticks.
    pub fn cpu_ticks(&self) -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.watch_pid)).ok()?;
        // Fields after the command name (which may contain spaces) start after the last ')'.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some(utime + stime)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_listening(addr: std::net::SocketAddr, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A program next to this one (the workspace's other binaries), or on PATH.
pub fn sibling(name: &str) -> Option<PathBuf> {
    let here = std::env::current_exe().ok()?;
    let candidate = here.parent()?.join(name);
    candidate.is_file().then_some(candidate)
}

/// An executable on PATH (or in the usual sbin directories, for nginx).
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Clock ticks per second (`getconf CLK_TCK`), 100 when unknown.
pub fn clock_ticks_per_sec() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}
