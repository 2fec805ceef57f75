//! The gateway's 1 GiB cap: cgroup v2 `memory.max` where the unified hierarchy has the memory
//! controller, else cgroup v1 `memory.limit_in_bytes`, else none (and the report says why).

use std::path::{Path, PathBuf};

/// A memory cgroup made for this run, removed on drop.
#[derive(Debug)]
pub enum MemoryCap {
    V2 {
        dir: PathBuf,
        bytes: u64,
    },
    V1 {
        dir: PathBuf,
        bytes: u64,
    },
    /// Could not be applied; the reason is reported.
    None {
        why: String,
    },
}

impl MemoryCap {
    /// Makes a child cgroup of our own with `bytes` of memory.
    pub fn create(name: &str, bytes: u64) -> MemoryCap {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mut reasons = Vec::new();
        // v2: the unified hierarchy, when it offers the memory controller.
        if let Some(path) = own.lines().find_map(|l| l.strip_prefix("0::")) {
            let root = Path::new("/sys/fs/cgroup");
            let controllers = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            if controllers.split_whitespace().any(|c| c == "memory") {
                let dir = root.join(path.trim_start_matches('/')).join(name);
                match make(&dir, "memory.max", bytes) {
                    Ok(()) => return MemoryCap::V2 { dir, bytes },
                    Err(e) => reasons.push(format!("cgroup v2: {e}")),
                }
            } else {
                reasons.push("cgroup v2: no memory controller in the unified hierarchy".into());
            }
        }
        // v1: the memory controller's own hierarchy.
        if let Some(path) = own.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, ctrl, path) = (parts.next()?, parts.next()?, parts.next()?);
            ctrl.split(',').any(|c| c == "memory").then(|| path.to_string())
        }) {
            let dir = Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/')).join(name);
            match make(&dir, "memory.limit_in_bytes", bytes) {
                Ok(()) => return MemoryCap::V1 { dir, bytes },
                Err(e) => reasons.push(format!("cgroup v1: {e}")),
            }
        } else {
            reasons.push("cgroup v1: no memory controller".into());
        }
        MemoryCap::None { why: reasons.join("; ") }
    }

    /// The file a process writes its pid to, to join.
    pub fn procs_file(&self) -> Option<PathBuf> {
        match self {
            MemoryCap::V2 { dir, .. } | MemoryCap::V1 { dir, .. } => Some(dir.join("cgroup.procs")),
            MemoryCap::None { .. } => None,
        }
    }

    /// Peak memory charged to the cgroup, MB (v2 `memory.peak`, v1 `memory.max_usage_in_bytes`).
    pub fn peak_mb(&self) -> Option<f64> {
        let file = match self {
            MemoryCap::V2 { dir, .. } => dir.join("memory.peak"),
            MemoryCap::V1 { dir, .. } => dir.join("memory.max_usage_in_bytes"),
            MemoryCap::None { .. } => return None,
        };
        let bytes: u64 = std::fs::read_to_string(file).ok()?.trim().parse().ok()?;
        Some(bytes as f64 / (1024.0 * 1024.0))
    }

    /// For the report.
    pub fn describe(&self) -> String {
        match self {
            MemoryCap::V2 { dir, bytes } => format!("cgroup v2 memory.max = {} MiB ({})", bytes >> 20, dir.display()),
            MemoryCap::V1 { dir, bytes } => {
                format!("cgroup v1 memory.limit_in_bytes = {} MiB ({})", bytes >> 20, dir.display())
            }
            MemoryCap::None { why } => format!("none could be applied: {why}"),
        }
    }
}

fn make(dir: &Path, limit_file: &str, bytes: u64) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    std::fs::write(dir.join(limit_file), bytes.to_string()).map_err(|e| {
        let _ = std::fs::remove_dir(dir);
        format!("write {limit_file}: {e}")
    })
}

impl Drop for MemoryCap {
    fn drop(&mut self) {
        if let MemoryCap::V2 { dir, .. } | MemoryCap::V1 { dir, .. } = self {
            // Fails while a process is still inside; processes are stopped first.
            for _ in 0..50 {
                if std::fs::remove_dir(&*dir).is_ok() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}
