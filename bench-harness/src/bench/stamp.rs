//! What the report is stamped with: machine, kernel, commit, versions.

use std::process::Command;

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn kernel() -> String {
    run("uname", &["-r"]).unwrap_or_else(|| "unknown".into())
}

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

pub fn memory_gib() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| (kb / 1024.0 / 1024.0 * 10.0).round() / 10.0)
}

/// `(commit, dirty)` of the checkout the harness runs from.
pub fn commit() -> (String, bool) {
    let commit = run("git", &["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = run("git", &["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    (commit, dirty)
}

pub fn versions(nginx: Option<&std::path::Path>) -> Vec<(String, String)> {
    let mut v = vec![("shardgate".to_string(), env!("CARGO_PKG_VERSION").to_string())];
    if let Some(r) = run("rustc", &["--version"]) {
        v.push(("rustc".into(), r));
    }
    if let Some(n) = nginx
        && let Ok(out) = Command::new(n).arg("-v").output()
    {
        // nginx prints its version on stderr.
        let text = String::from_utf8_lossy(&out.stderr).trim().to_string();
        v.push(("nginx".into(), text.trim_start_matches("nginx version: ").to_string()));
    }
    v
}

/// UTC date and RFC 3339 time, from `date` (no time-zone crate for two strings).
pub fn now_utc() -> (String, String) {
    let date = run("date", &["-u", "+%Y-%m-%d"]).unwrap_or_else(|| "unknown-date".into());
    let time = run("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]).unwrap_or_else(|| "unknown".into());
    (date, time)
}
