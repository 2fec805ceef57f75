//! Upstream MCP servers spoken to over stdio: a local process the gateway starts, supervises
//! and restarts, one JSON-RPC message per line each way.
//!
//! One plain thread per server owns the process: it starts it, opens the MCP session
//! (`initialize`, `notifications/initialized`), then writes the shards' requests to its stdin
//! under ids of its own (many client sessions share the one process) and hands each response
//! back. When the process exits, the requests in flight fail with the reason, and it is started
//! again after a backoff (100 ms, doubling to 10 s while it keeps failing). The process never
//! outlives the gateway: it is killed when the gateway stops, and a gateway killed outright
//! closes its stdin, on which MCP stdio servers exit.
//!
//! Shards cannot be woken from another thread (monoio without its `sync` feature, glommio), so
//! a waiting call looks for its answer every few hundred microseconds; stdio servers are local
//! processes whose calls take milliseconds.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use adapters::mcp::jsonrpc::{self, Message};
use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender, bounded, select};
use serde_json::{Value, json};

/// Requests waiting for a server's thread, at most.
const QUEUE: usize = 1024;
/// Longest line read from a server.
const MAX_LINE: usize = 8 << 20;
const RESTART_FIRST: Duration = Duration::from_millis(100);
const RESTART_MAX: Duration = Duration::from_secs(10);

/// A request's answer: the JSON-RPC outcome, or why there is none.
type Answer = Result<Result<Value, Value>, String>;

/// What a waiting request hears from its server: progress along the way, then the answer.
#[derive(Debug)]
pub enum Heard {
    /// `notifications/progress` params, under the caller's own progress token.
    Progress(Value),
    Answer(Answer),
}

/// Servers by name and command.
type ServerMap = HashMap<(String, Vec<String>), Arc<StdioServer>>;

/// What a shard asks of a stdio server: one request, its answer back.
struct Job {
    method: String,
    params: Option<Value>,
    reply: mpsc::Sender<Heard>,
    /// When the caller stops waiting: a job still queued then is not sent (its caller was told
    /// it failed), and one in flight is forgotten.
    deadline: Instant,
}

/// One server's thread, as shards reach it.
pub struct StdioServer {
    command: Vec<String>,
    jobs: Sender<Job>,
    stop: Arc<AtomicBool>,
    /// Times the process was started again after it exited.
    pub restarts: Arc<AtomicU64>,
    /// The running process's id (0 while none runs), for tests and logs.
    pub pid: Arc<AtomicU64>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for StdioServer {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
    }
}

/// Every stdio server of the process, by name and command (a reload that changes the command
/// starts a new one).
#[derive(Default)]
pub struct StdioHub {
    servers: ArcSwap<ServerMap>,
    /// Taken only to start a server (its first call).
    starting: Mutex<()>,
}

impl std::fmt::Debug for StdioHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdioHub").field("servers", &self.servers.load().len()).finish()
    }
}

impl StdioHub {
    /// The server `name` running `command`, started now if it is not running.
    pub fn server(&self, name: &str, command: &[String]) -> Result<Arc<StdioServer>, String> {
        let key = (name.to_owned(), command.to_vec());
        if let Some(s) = self.servers.load().get(&key) {
            return Ok(s.clone());
        }
        let _one = self.starting.lock().map_err(|_| "the stdio server registry is poisoned")?;
        if let Some(s) = self.servers.load().get(&key) {
            return Ok(s.clone());
        }
        let server = Arc::new(start(name, command)?);
        self.servers.rcu(|m| {
            let mut next = HashMap::clone(m);
            next.insert(key.clone(), server.clone());
            next
        });
        Ok(server)
    }

    /// Stops the servers `mcp` no longer runs (a reload).
    pub fn retain(&self, mcp: &super::McpConfig) {
        let wanted = |(name, command): &(String, Vec<String>)| {
            mcp.servers.iter().any(|s| {
                *s.name == **name && matches!(&s.transport, super::compiled::ServerTransport::Stdio(c) if c == command)
            })
        };
        if self.servers.load().keys().all(wanted) {
            return;
        }
        let Ok(_one) = self.starting.lock() else { return };
        self.servers
            .rcu(|m| m.iter().filter(|(k, _)| wanted(k)).map(|(k, v)| (k.clone(), v.clone())).collect::<ServerMap>());
    }

    /// Stops every server (the gateway is stopping).
    pub fn stop_all(&self) {
        self.servers.store(Arc::default());
    }
}

fn start(name: &str, command: &[String]) -> Result<StdioServer, String> {
    if command.is_empty() {
        return Err("no command".into());
    }
    let (jobs, inbox) = bounded(QUEUE);
    let stop = Arc::new(AtomicBool::new(false));
    let restarts = Arc::new(AtomicU64::new(0));
    let pid = Arc::new(AtomicU64::new(0));
    let supervisor = Supervisor {
        name: name.to_owned(),
        command: command.to_vec(),
        inbox,
        stop: stop.clone(),
        restarts: restarts.clone(),
        pid: pid.clone(),
    };
    let thread = std::thread::Builder::new()
        .name(format!("mcp-{name}"))
        .spawn(move || supervisor.run())
        .map_err(|e| format!("cannot start a thread for MCP server {name}: {e}"))?;
    Ok(StdioServer { command: command.to_vec(), jobs, stop, restarts, pid, thread: Mutex::new(Some(thread)) })
}

impl StdioServer {
    /// Sends one request; what the server says of it is read from the [`StdioCall`], up to
    /// `timeout`.
    pub fn request(&self, method: &str, params: Option<Value>, timeout: Duration) -> Result<StdioCall, String> {
        let (reply, heard) = mpsc::channel();
        let deadline = Instant::now() + timeout;
        let job = Job { method: method.to_owned(), params, reply, deadline };
        self.jobs
            .try_send(job)
            .map_err(|_| format!("{} is busy: {QUEUE} requests already wait for it", self.command.join(" ")))?;
        Ok(StdioCall { heard, deadline, timeout })
    }
}

/// A request sent to a stdio server, as its caller waits for it.
pub struct StdioCall {
    heard: mpsc::Receiver<Heard>,
    deadline: Instant,
    timeout: Duration,
}

impl StdioCall {
    /// The next thing heard (waiting on the shard, polling); after the answer, nothing more.
    pub async fn next(&mut self) -> Result<Heard, String> {
        let mut pause = Duration::from_micros(50);
        loop {
            match self.heard.try_recv() {
                Ok(h) => return Ok(h),
                Err(mpsc::TryRecvError::Disconnected) => return Err("the server's thread stopped".into()),
                Err(mpsc::TryRecvError::Empty) if Instant::now() >= self.deadline => {
                    return Err(format!("no answer within {} ms", self.timeout.as_millis()));
                }
                Err(mpsc::TryRecvError::Empty) => {
                    crate::rt::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_micros(500));
                }
            }
        }
    }
}

/// Progress tokens the gateway puts on requests to a stdio server: the server is shared by
/// every client, so clients' own tokens could collide; each request gets one of its own, and its
/// progress goes back under the client's.
fn own_progress_token(params: &mut Option<Value>, id: u64) -> Option<Value> {
    let meta = params.as_mut()?.get_mut("_meta")?.as_object_mut()?;
    let theirs = meta.get("progressToken")?.clone();
    meta.insert("progressToken".into(), Value::String(format!("sg-{id}")));
    Some(theirs)
}

/// The thread that owns one server's process.
struct Supervisor {
    name: String,
    command: Vec<String>,
    inbox: Receiver<Job>,
    stop: Arc<AtomicBool>,
    restarts: Arc<AtomicU64>,
    pid: Arc<AtomicU64>,
}

/// A request in flight to the process.
struct Pending {
    reply: mpsc::Sender<Heard>,
    deadline: Instant,
    progress_token: Option<Value>,
}

/// A running process and what is in flight to it.
struct Running {
    child: Child,
    /// Lines for the process's stdin, written by a thread of their own: a process that stops
    /// reading blocks that thread, never the supervisor.
    stdin: Sender<Vec<u8>>,
    lines: Receiver<Vec<u8>>,
    next_id: u64,
    /// Requests written and not answered yet: where to tell, the caller's deadline, and the
    /// caller's progress token.
    pending: HashMap<u64, Pending>,
}

impl Drop for Running {
    /// However it ends (a failed `initialize`, an exit, a stop), the process is killed and
    /// reaped: never left running, never a zombie.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Supervisor {
    fn run(self) {
        let mut backoff = RESTART_FIRST;
        let mut first = true;
        while !self.stop.load(Relaxed) {
            if !first {
                self.restarts.fetch_add(1, Relaxed);
            }
            first = false;
            let started = Instant::now();
            match self.spawn().and_then(|r| self.initialize(r)) {
                Ok(running) => {
                    tracing::info!(server = %self.name, pid = running.child.id(), "MCP stdio server started");
                    let why = self.serve(running);
                    if self.stop.load(Relaxed) {
                        break;
                    }
                    tracing::warn!(server = %self.name, %why, "MCP stdio server exited; starting it again");
                }
                Err(why) => {
                    tracing::warn!(server = %self.name, %why, retry_in = ?backoff, "MCP stdio server did not start");
                    self.fail_waiting(&why);
                }
            }
            self.pid.store(0, Relaxed);
            // A process that ran a while had a fault, not a broken command: start over quickly.
            if started.elapsed() > Duration::from_secs(30) {
                backoff = RESTART_FIRST;
            }
            let until = Instant::now() + backoff;
            while Instant::now() < until && !self.stop.load(Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
            }
            backoff = (backoff * 2).min(RESTART_MAX);
        }
    }

    /// Answers every request already queued with `why` (nothing can serve them now).
    fn fail_waiting(&self, why: &str) {
        while let Ok(job) = self.inbox.try_recv() {
            let _ = job.reply.send(Heard::Answer(Err(why.to_owned())));
        }
    }

    fn spawn(&self) -> Result<Running, String> {
        let (program, args) = self.command.split_first().ok_or("no command")?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.command.join(" ")))?;
        self.pid.store(u64::from(child.id()), Relaxed);
        let pipe = child.stdin.take().ok_or("no stdin")?;
        let (stdin, to_write) = bounded::<Vec<u8>>(QUEUE);
        std::thread::Builder::new()
            .name(format!("mcp-{}-in", self.name))
            .spawn(move || write_lines(pipe, &to_write))
            .map_err(|e| format!("cannot start the writer thread: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = bounded(QUEUE);
        let name = self.name.clone();
        std::thread::Builder::new()
            .name(format!("mcp-{name}-out"))
            .spawn(move || read_lines(stdout, &tx, &name))
            .map_err(|e| format!("cannot start the reader thread: {e}"))?;
        Ok(Running { child, stdin, lines, next_id: 1, pending: HashMap::new() })
    }

    fn initialize(&self, mut r: Running) -> Result<Running, String> {
        let params = json!({
            "protocolVersion": adapters::mcp::UPSTREAM_MAX_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "shardgate", "version": env!("CARGO_PKG_VERSION")},
        });
        write_line(&mut r.stdin, &jsonrpc::request(&json!(0), "initialize", Some(&params)))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = r.lines.recv_timeout(left).map_err(|_| "no answer to initialize within 30 s".to_string())?;
            match jsonrpc::parse(&line) {
                Ok(Message::Response { id, outcome: Ok(result) }) if id == json!(0) => {
                    let agreed = result.get("protocolVersion").and_then(Value::as_str).unwrap_or_default();
                    if !adapters::mcp::is_supported(agreed) {
                        return Err(format!("it speaks protocol revision {agreed:?}, which this gateway does not"));
                    }
                    break;
                }
                Ok(Message::Response { id, outcome: Err(e) }) if id == json!(0) => {
                    return Err(format!("initialize refused: {e}"));
                }
                _ => {}
            }
        }
        write_line(&mut r.stdin, &jsonrpc::notification("notifications/initialized", None))?;
        Ok(r)
    }

    /// Serves until the process exits (or the gateway stops); returns why it ended.
    fn serve(&self, mut r: Running) -> String {
        let why = loop {
            if self.stop.load(Relaxed) {
                break "the gateway is stopping".to_owned();
            }
            select! {
                recv(self.inbox) -> job => {
                    let Ok(job) = job else { break "no more requests".to_owned() };
                    if Instant::now() >= job.deadline {
                        continue;
                    }
                    let id = r.next_id;
                    r.next_id += 1;
                    let mut params = job.params;
                    let progress_token = own_progress_token(&mut params, id);
                    let line = jsonrpc::request(&json!(id), &job.method, params.as_ref());
                    if let Err(e) = write_line(&mut r.stdin, &line) {
                        let _ = job.reply.send(Heard::Answer(Err(e.clone())));
                        break e;
                    }
                    r.pending.insert(id, Pending { reply: job.reply, deadline: job.deadline, progress_token });
                }
                recv(r.lines) -> line => {
                    let Ok(line) = line else { break exit_status(&mut r.child) };
                    self.take(&mut r, &line);
                }
                default(Duration::from_millis(100)) => {
                    // Callers that gave up are forgotten (a hung tool must not grow this).
                    let now = Instant::now();
                    r.pending.retain(|_, p| p.deadline > now);
                }
            }
        };
        for (_, p) in r.pending.drain() {
            let _ = p.reply.send(Heard::Answer(Err(format!("the server process ended before answering ({why})"))));
        }
        why
    }

    /// One line from the process: a response goes to its waiting request, and so does progress
    /// under the token the gateway gave it; a ping from the server is answered. Other requests
    /// are refused: over one process shared by every client, nothing says which call a request
    /// belongs to, so no client could be asked. Other notifications are dropped.
    fn take(&self, r: &mut Running, line: &[u8]) {
        match jsonrpc::parse(line) {
            Ok(Message::Response { id, outcome }) => {
                if let Some(p) = id.as_u64().and_then(|n| r.pending.remove(&n)) {
                    let _ = p.reply.send(Heard::Answer(Ok(outcome)));
                }
            }
            Ok(Message::Notification { method, params: Some(mut params) }) if method == "notifications/progress" => {
                let ours = params.get("progressToken").and_then(Value::as_str).and_then(|t| t.strip_prefix("sg-"));
                let pending = ours.and_then(|n| n.parse::<u64>().ok()).and_then(|n| r.pending.get(&n));
                if let Some(p) = pending
                    && let (Some(theirs), Some(fields)) = (&p.progress_token, params.as_object_mut())
                {
                    fields.insert("progressToken".into(), theirs.clone());
                    let _ = p.reply.send(Heard::Progress(params));
                }
            }
            Ok(Message::Request { id, method, .. }) => {
                let answer = if method == "ping" {
                    jsonrpc::result(&id, json!({}))
                } else {
                    let e = jsonrpc::RpcError::new(
                        jsonrpc::METHOD_NOT_FOUND,
                        format!("the gateway does not relay {method}"),
                    );
                    jsonrpc::error(Some(&id), &e)
                };
                let _ = write_line(&mut r.stdin, &answer);
            }
            Ok(Message::Notification { .. }) => {}
            Err(e) => tracing::debug!(server = %self.name, error = %e.message, "a line that is not JSON-RPC"),
        }
    }
}

/// Why the process's stdout closed: it exited, or (it closed stdout and kept running) it is
/// killed now.
fn exit_status(child: &mut Child) -> String {
    if let Ok(None) = child.try_wait() {
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
    }
    match child.wait() {
        Ok(s) => format!("the process exited ({s})"),
        Err(e) => format!("the process is gone ({e})"),
    }
}

/// Queues one line for the process (never blocks: a process that stopped reading its input
/// fails the line instead).
fn write_line(stdin: &mut Sender<Vec<u8>>, message: &[u8]) -> Result<(), String> {
    stdin.try_send(message.to_vec()).map_err(|e| match e {
        crossbeam_channel::TrySendError::Full(_) => "the process does not read its input".to_owned(),
        crossbeam_channel::TrySendError::Disconnected(_) => "the process's input is closed".to_owned(),
    })
}

/// Writes queued lines to the process's stdin until the queue closes or a write fails (the
/// process is gone).
fn write_lines(mut pipe: ChildStdin, lines: &Receiver<Vec<u8>>) {
    while let Ok(line) = lines.recv() {
        let written = pipe.write_all(&line).and_then(|()| pipe.write_all(b"\n")).and_then(|()| pipe.flush());
        if written.is_err() {
            return;
        }
    }
}

/// Reads the process's stdout line by line until it closes.
fn read_lines(stdout: std::process::ChildStdout, tx: &Sender<Vec<u8>>, name: &str) {
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.by_ref().take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line.len() > MAX_LINE && !line.ends_with(b"\n") => {
                tracing::warn!(server = %name, "a line over {MAX_LINE} bytes: dropped");
                // Skip to the end of that line, a buffer at a time.
                loop {
                    let (skip, done) = match reader.fill_buf() {
                        Ok([]) | Err(_) => return,
                        Ok(buf) => match memchr::memchr(b'\n', buf) {
                            Some(at) => (at + 1, true),
                            None => (buf.len(), false),
                        },
                    };
                    reader.consume(skip);
                    if done {
                        break;
                    }
                }
            }
            Ok(_) => {
                if tx.send(line.clone()).is_err() {
                    return;
                }
            }
        }
    }
}

use std::io::Read as _;
