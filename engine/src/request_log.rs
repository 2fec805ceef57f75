//! The request log: one record per LLM request (who, which model, which target, status,
//! tokens, cost, time to first token, latency, the gateway's own time), kept off the request
//! path. A shard appends each record to a buffer of its own and hands the buffer over in
//! batches (every gossip interval, or at once when it fills); the store thread writes batches
//! in one transaction, and a JSON-lines sink writes them to a file or stdout for log shippers.
//! When the writers fall behind, a shard's buffer stops growing at `logging.requests.buffer`
//! records and the overflow is counted (`shardgate_request_log_dropped_total`), never waited
//! for: a request is never slowed down by its own log record.
//!
//! Prompts and completions are not recorded.

use std::io::Write;
use std::sync::Arc;

use serde::Serialize;

/// An `Arc<str>` as a string (serde's `rc` feature is not on).
fn arc_str<S: serde::Serializer>(v: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(t) => s.serialize_str(t),
        None => s.serialize_none(),
    }
}

fn smol<S: serde::Serializer>(v: &smol_str::SmolStr, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v)
}

/// Who made a request, as the log records it.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Caller {
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "arc_str")]
    pub key: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "arc_str")]
    pub user: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "arc_str")]
    pub team: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "arc_str")]
    pub application: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "arc_str")]
    pub environment: Option<Arc<str>>,
}

impl Caller {
    pub fn of(id: &policy::Identity) -> Caller {
        Caller {
            key: id.key.clone(),
            user: id.user.clone(),
            team: id.team.clone(),
            application: id.application.clone(),
            environment: id.environment.clone(),
        }
    }
}

/// One request, as logged.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RequestRecord {
    /// Also sent to the client as `x-shardgate-request-id`.
    #[serde(serialize_with = "smol")]
    pub id: smol_str::SmolStr,
    /// When it arrived, Unix milliseconds.
    pub at_ms: u64,
    /// `chat.completions`, `completions`, `embeddings`, `messages`, `passthrough`.
    pub endpoint: &'static str,
    #[serde(flatten)]
    pub caller: Caller,
    /// The model as the client named it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The provider that served it (the last one tried).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "arc_str")]
    pub provider: Option<Arc<str>>,
    pub stream: bool,
    /// The status the client got.
    pub status: u16,
    /// The gateway's own error, when it made one (`rate_limited`, `upstream_timeout`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_micros: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttft_us: Option<u64>,
    pub latency_us: u64,
    /// The gateway's own time up to the response head (the rest was the provider's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overhead_us: Option<u64>,
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl RequestRecord {
    pub fn duration_us(d: Option<std::time::Duration>) -> Option<u64> {
        d.map(micros)
    }

    pub fn latency(d: std::time::Duration) -> u64 {
        micros(d)
    }
}

/// A request id: the process's start (seconds, so ids do not repeat across restarts), the
/// shard, and the shard's sequence number; 22 characters, so it is kept without allocating.
pub fn request_id(started_ms: u64, shard: usize, sequence: u64) -> smol_str::SmolStr {
    let started = (started_ms / 1000) & 0xffff_ffff;
    let (shard, sequence) = (shard & 0xff, sequence & 0xffff_ffff);
    smol_str::format_smolstr!("req_{started:08x}{shard:02x}{sequence:08x}")
}

/// Where records go besides the store: a file or stdout, one JSON object per line, written by a
/// thread of its own.
pub struct JsonLines {
    tx: crossbeam_channel::Sender<Arc<[RequestRecord]>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for JsonLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JsonLines(..)")
    }
}

/// Batches waiting for the JSON-lines thread, at most.
const JSONL_QUEUE: usize = 1024;

impl JsonLines {
    /// Starts the writer: `-` is stdout, anything else a file appended to (created if missing).
    pub fn start(path: &str) -> std::io::Result<JsonLines> {
        let out: Box<dyn Write + Send> = if path == "-" {
            Box::new(std::io::stdout())
        } else {
            Box::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?)
        };
        let (tx, rx) = crossbeam_channel::bounded::<Arc<[RequestRecord]>>(JSONL_QUEUE);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new().name("request-log-jsonl".into()).spawn(move || {
            let mut out = std::io::BufWriter::new(out);
            let mut write = |batch: &[RequestRecord]| {
                let mut failed = false;
                for r in batch {
                    let written = serde_json::to_writer(&mut out, r).is_ok() && out.write_all(b"\n").is_ok();
                    failed |= !written;
                }
                if out.flush().is_err() || failed {
                    tracing::error!("request log lines could not be written");
                }
            };
            loop {
                match rx.recv_timeout(std::time::Duration::from_millis(100)) {
                    Ok(batch) => write(&batch),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout)
                        if !stopping.load(std::sync::atomic::Ordering::Acquire) => {}
                    // Stopping (or no sender left): what is queued is written, then the thread ends.
                    Err(_) => {
                        while let Ok(batch) = rx.try_recv() {
                            write(&batch);
                        }
                        return;
                    }
                }
            }
        })?;
        Ok(JsonLines { tx, stop, thread: std::sync::Mutex::new(Some(thread)) })
    }

    /// Writes what is queued and stops the thread (at shutdown, after the shards' last
    /// hand-over).
    pub fn close(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        let thread = self.thread.lock().map(|mut t| t.take()).unwrap_or_default();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }

    /// Hands over a batch; `false` when the thread is behind (the batch is not written there).
    pub fn send(&self, batch: Arc<[RequestRecord]>) -> bool {
        self.tx.try_send(batch).is_ok()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ids_differ_by_process_shard_and_sequence() {
        let a = request_id(1_764_351_234_567, 0, 1);
        assert_eq!(a, "req_6929dd020000000001");
        assert!(!a.is_heap_allocated() && a.len() <= 23);
        assert_ne!(a, request_id(1_764_351_234_567, 1, 1));
        assert_ne!(a, request_id(1_764_351_235_567, 0, 1));
        assert_ne!(a, request_id(1_764_351_234_567, 0, 2));
    }

    #[test]
    fn a_record_is_one_flat_json_object_without_empty_fields() {
        let r = RequestRecord {
            id: "req_1".into(),
            at_ms: 5,
            endpoint: "chat.completions",
            caller: Caller { key: Some(Arc::from("ci")), team: Some(Arc::from("search")), ..Caller::default() },
            model: Some("gpt-4o".into()),
            provider: None,
            stream: false,
            status: 200,
            error: None,
            input_tokens: Some(10),
            output_tokens: Some(2),
            cached_tokens: None,
            cost_micros: Some(31),
            ttft_us: None,
            latency_us: 900,
            overhead_us: Some(40),
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["key"], "ci");
        assert_eq!(v["team"], "search");
        assert!(v.get("user").is_none() && v.get("provider").is_none() && v.get("error").is_none());
        assert_eq!(v["input_tokens"], 10);
    }
}
