//! The embedded store: one SQLite database (WAL) holding what the admin API made (teams, users,
//! applications, keys, rules, budgets), the append-only change log and the append-only spend
//! ledger.
//!
//! Shards never touch it. One thread owns the connection and takes [`Command`]s from a bounded
//! channel: ledger rows that shards tally and hand over every `store.flush_interval`, admin
//! changes (validated by compiling the whole policy before anything is written, written in one
//! transaction, then swapped into the running config), and spend reports. At start the
//! gateway loads what was made through the admin API and replays the ledger into the budgets
//! of the periods still running, so spend survives a restart (kill -9 included) with at most
//! one flush interval lost.

pub mod audit;
mod db;
pub mod entity;
pub mod ledger;
pub mod requests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use policy::spec::GovernanceSpec;

pub use db::{Db, DbError};
pub use entity::{Entity, EntityKind};
pub use ledger::{Caller, CallerId, SpendRow, SpendTally};

/// Commands waiting for the store thread, at most.
const QUEUE: usize = 1024;

/// One admin change.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Create, or replace what has that kind and name.
    Put(Box<Entity>),
    Delete {
        kind: EntityKind,
        name: String,
    },
}

/// A dimension of the spend ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    Day,
    Key,
    User,
    Team,
    Application,
    Environment,
    Model,
}

impl Dimension {
    pub fn parse(s: &str) -> Option<Dimension> {
        Some(match s {
            "day" => Dimension::Day,
            "key" => Dimension::Key,
            "user" => Dimension::User,
            "team" => Dimension::Team,
            "application" => Dimension::Application,
            "environment" => Dimension::Environment,
            "model" => Dimension::Model,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Day => "day",
            Dimension::Key => "key",
            Dimension::User => "user",
            Dimension::Team => "team",
            Dimension::Application => "application",
            Dimension::Environment => "environment",
            Dimension::Model => "model",
        }
    }

    /// The SQL expression of the dimension (never built from request text).
    fn column(self) -> &'static str {
        match self {
            Dimension::Day => "date(minute_ms / 1000, 'unixepoch')",
            Dimension::Key => "key",
            Dimension::User => "user",
            Dimension::Team => "team",
            Dimension::Application => "application",
            Dimension::Environment => "environment",
            Dimension::Model => "model",
        }
    }
}

/// What `/admin/v1/spend` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendQuery {
    pub group_by: Vec<Dimension>,
    /// Each dimension's value must be one of these.
    pub filters: Vec<(Dimension, Vec<String>)>,
    pub from_ms: u64,
    pub to_ms: u64,
}

/// One line of a spend report: the group's values in `group_by` order, then the sums.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendReportRow {
    pub group: Vec<Option<String>>,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub cost_micros: u64,
}

/// Why an admin change was not made. Nothing of it was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// The result would not compile: the message names the field.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// It clashes with what the config file declares.
    #[error("{0}")]
    Conflict(String),
    #[error("the store failed: {0}")]
    Store(String),
}

/// What the store thread needs from the gateway: the admin-made part of the policy, and a way
/// to swap a new one in after validating it.
pub trait Control: Send + Sync {
    /// What the admin API has made so far.
    fn managed(&self) -> Arc<GovernanceSpec>;
    /// Compiles the config with `managed`; if that succeeds, runs `persist`, and if that
    /// succeeds too, puts the result in force on every shard.
    fn apply(
        &self,
        managed: GovernanceSpec,
        persist: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<(), ChangeError>;
    /// The MCP servers and virtual servers the admin API has made so far.
    fn managed_mcp(&self) -> Arc<crate::mcp::spec::McpSection>;
    /// [`Control::apply`] for MCP objects.
    fn apply_mcp(
        &self,
        mcp: crate::mcp::spec::McpSection,
        persist: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<(), ChangeError>;
    /// How long request-log records are kept, and at most how many.
    fn request_retention(&self) -> (Duration, Option<u64>);
}

/// An MCP object the admin API puts (`spec`: its JSON) or deletes (`None`).
#[derive(Debug, Clone)]
pub struct McpChange {
    /// `server` or `virtual`.
    pub kind: &'static str,
    pub name: String,
    pub spec: Option<String>,
}

enum Command {
    Spend(Vec<SpendRow>),
    Change {
        changes: Vec<Mutation>,
        actor: String,
        reply: std::sync::mpsc::Sender<Result<(), ChangeError>>,
    },
    Report {
        query: SpendQuery,
        reply: std::sync::mpsc::Sender<Result<Vec<SpendReportRow>, String>>,
    },
    Alert(crate::alerts::AlertKey, u64),
    Audit(Vec<audit::AuditRecord>),
    Mcp {
        change: McpChange,
        actor: String,
        reply: std::sync::mpsc::Sender<Result<(), ChangeError>>,
    },
    /// A user's sealed tokens for an MCP server: (server, user, sealed).
    UserToken(String, String, String),
    /// Forget a user's tokens for a server: (server, user).
    ForgetUserToken(String, String),
    RequestQuery {
        query: requests::RequestQuery,
        reply: std::sync::mpsc::Sender<Result<Vec<serde_json::Value>, String>>,
    },
    CostQuery {
        query: requests::CostQuery,
        reply: std::sync::mpsc::Sender<Result<Vec<serde_json::Value>, String>>,
    },
    AuditQuery {
        query: audit::AuditQuery,
        reply: std::sync::mpsc::Sender<Result<Vec<serde_json::Value>, String>>,
    },
    /// Answers once everything sent before it is written.
    Sync(std::sync::mpsc::Sender<()>),
    Stop,
}

/// What the database held at start.
#[derive(Debug)]
pub struct Opened {
    pub db: Db,
    pub path: PathBuf,
    /// Keys made through the admin API are hashed under it (unless the config sets a pepper).
    pub pepper: String,
    pub managed: GovernanceSpec,
    /// The ledger per caller, model, metadata and day.
    pub spend: Vec<SpendRow>,
    /// Budget alerts delivered before.
    pub alerts: Vec<crate::alerts::AlertKey>,
    /// Users' sealed tokens for MCP servers: (server, user, sealed).
    pub user_tokens: Vec<(String, String, String)>,
    /// MCP servers and virtual servers made through the admin API.
    pub mcp: crate::mcp::spec::McpSection,
}

/// Opens the database and reads what the gateway needs before it starts.
pub fn open(path: &Path) -> Result<Opened, DbError> {
    let mut db = Db::open(path)?;
    let pepper = db.pepper()?;
    let managed = db.load_managed()?;
    let spend = db.spend_by_day()?;
    let alerts = db.alerts()?;
    let user_tokens = db.user_tokens()?;
    let mut mcp = crate::mcp::spec::McpSection::default();
    for (kind, name, spec) in db.mcp_objects()? {
        if let Err(e) = put_mcp(&mut mcp, kind.as_str(), &name, Some(&spec)) {
            tracing::error!(%kind, %name, error = %e, "an MCP object in the store does not read back; skipped");
        }
    }
    Ok(Opened { db, path: path.to_path_buf(), pepper, managed, spend, alerts, user_tokens, mcp })
}

/// The handle shards and the admin API use to reach the store thread.
pub struct Store {
    tx: Sender<Command>,
    /// Request-log batches: a queue of their own, so a busy request log never crowds out
    /// spend, admin changes or queries.
    requests_tx: Sender<RequestBatch>,
    thread: Mutex<Option<JoinHandle<()>>>,
    pub flush_interval: Duration,
    pub path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Store {
    /// Starts the store thread on an opened database.
    pub fn start(db: Db, path: PathBuf, flush_interval: Duration, control: Arc<dyn Control>) -> std::io::Result<Store> {
        let (tx, rx) = bounded(QUEUE);
        let (requests_tx, requests_rx) = bounded(REQUEST_BATCHES);
        let thread =
            std::thread::Builder::new().name("store".into()).spawn(move || run(db, &rx, &requests_rx, control))?;
        Ok(Store { tx, requests_tx, thread: Mutex::new(Some(thread)), flush_interval, path })
    }

    /// Hands over ledger rows. When the thread is behind (a full queue) the rows come back, to
    /// be kept and offered again at the next flush: nothing is dropped.
    pub fn send_spend(&self, rows: Vec<SpendRow>) -> Result<(), Vec<SpendRow>> {
        match self.tx.try_send(Command::Spend(rows)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(Command::Spend(rows)) | TrySendError::Disconnected(Command::Spend(rows))) => {
                Err(rows)
            }
            Err(_) => Ok(()),
        }
    }

    /// Hands over MCP audit records; when the thread is behind they come back, to be offered
    /// again.
    pub fn send_audit(&self, records: Vec<audit::AuditRecord>) -> Result<(), Vec<audit::AuditRecord>> {
        match self.tx.try_send(Command::Audit(records)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(Command::Audit(r)) | TrySendError::Disconnected(Command::Audit(r))) => Err(r),
            Err(_) => Ok(()),
        }
    }

    /// Puts or deletes an MCP server or virtual server: validated with the whole config, written,
    /// then in force everywhere.
    pub async fn change_mcp(&self, change: McpChange, actor: String) -> Result<(), ChangeError> {
        let (reply, answer) = std::sync::mpsc::channel();
        self.tx
            .try_send(Command::Mcp { change, actor, reply })
            .map_err(|_| ChangeError::Store("the store is busy or stopped; try again".into()))?;
        reply_of(&answer).await.unwrap_or_else(|| Err(ChangeError::Store("the store thread stopped".into())))
    }

    /// Keeps a user's sealed tokens for an MCP server.
    pub fn send_user_token(&self, server: String, user: String, sealed: String) {
        if self.tx.try_send(Command::UserToken(server, user, sealed)).is_err() {
            tracing::warn!("store busy: a user's MCP token is not saved (it works until the gateway restarts)");
        }
    }

    /// Hands over a batch of request-log records; when the thread is behind, the batch comes
    /// back, to be offered again.
    pub fn send_requests(&self, batch: RequestBatch) -> Result<(), RequestBatch> {
        self.requests_tx.try_send(batch).map_err(|e| e.into_inner())
    }

    /// Requests, tokens and cost grouped as `query` asks.
    pub async fn costs(&self, query: requests::CostQuery) -> Result<Vec<serde_json::Value>, String> {
        let (reply, answer) = std::sync::mpsc::channel();
        self.tx
            .try_send(Command::CostQuery { query, reply })
            .map_err(|_| "the store is busy or stopped; try again".to_string())?;
        reply_of(&answer).await.unwrap_or_else(|| Err("the store thread stopped".into()))
    }

    /// Request-log records matching `query`, newest first.
    pub async fn requests(&self, query: requests::RequestQuery) -> Result<Vec<serde_json::Value>, String> {
        let (reply, answer) = std::sync::mpsc::channel();
        self.tx
            .try_send(Command::RequestQuery { query, reply })
            .map_err(|_| "the store is busy or stopped; try again".to_string())?;
        reply_of(&answer).await.unwrap_or_else(|| Err("the store thread stopped".into()))
    }

    /// Forgets a user's tokens for an MCP server.
    pub fn forget_user_token(&self, server: String, user: String) {
        if self.tx.try_send(Command::ForgetUserToken(server, user)).is_err() {
            tracing::warn!("store busy: a user's MCP token is not deleted (it is again at the next start)");
        }
    }

    /// Audit records matching `query`, newest first (up to the last hand-over).
    pub async fn audit(&self, query: audit::AuditQuery) -> Result<Vec<serde_json::Value>, String> {
        let (reply, answer) = std::sync::mpsc::channel();
        self.tx
            .try_send(Command::AuditQuery { query, reply })
            .map_err(|_| "the store is busy or stopped; try again".to_string())?;
        reply_of(&answer).await.unwrap_or_else(|| Err("the store thread stopped".into()))
    }

    /// Applies admin changes: validated, written in one transaction, then in force everywhere.
    pub async fn change(&self, changes: Vec<Mutation>, actor: String) -> Result<(), ChangeError> {
        let (reply, answer) = std::sync::mpsc::channel();
        self.tx
            .try_send(Command::Change { changes, actor, reply })
            .map_err(|_| ChangeError::Store("the store is busy or stopped; try again".into()))?;
        reply_of(&answer).await.unwrap_or_else(|| Err(ChangeError::Store("the store thread stopped".into())))
    }

    /// Spend grouped and filtered (up to the last flush).
    pub async fn report(&self, query: SpendQuery) -> Result<Vec<SpendReportRow>, String> {
        let (reply, answer) = std::sync::mpsc::channel();
        self.tx
            .try_send(Command::Report { query, reply })
            .map_err(|_| "the store is busy or stopped; try again".to_string())?;
        reply_of(&answer).await.unwrap_or_else(|| Err("the store thread stopped".into()))
    }

    /// Writes what is queued, then stops the thread (shutdown). Later sends fail, and their
    /// rows are logged as lost.
    pub fn stop(&self) {
        let _ = self.tx.send_timeout(Command::Stop, Duration::from_secs(5));
        if let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
    }

    /// Records a delivered alert.
    pub fn record_alert(&self, key: crate::alerts::AlertKey, at_ms: u64) {
        if self.tx.try_send(Command::Alert(key, at_ms)).is_err() {
            tracing::warn!("store busy: a delivered alert is not recorded");
        }
    }

    /// Blocks until everything sent so far is written (shutdown, tests).
    pub fn sync(&self, timeout: Duration) -> bool {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.tx.send_timeout(Command::Sync(tx), timeout).is_err() {
            return false;
        }
        rx.recv_timeout(timeout).is_ok()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits on the shard for the store thread's answer. The shard's runtime cannot be woken from
/// another thread (monoio without its `sync` feature, glommio), so the task looks every
/// millisecond; admin calls are rare and take a few milliseconds.
async fn reply_of<T>(answer: &std::sync::mpsc::Receiver<T>) -> Option<T> {
    loop {
        match answer.try_recv() {
            Ok(v) => return Some(v),
            Err(std::sync::mpsc::TryRecvError::Empty) => crate::rt::sleep(Duration::from_millis(1)).await,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => return None,
        }
    }
}

/// How often request-log retention is enforced.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// A batch of request-log records.
pub type RequestBatch = Arc<[crate::request_log::RequestRecord]>;

/// Request-log batches waiting for the store thread, at most.
const REQUEST_BATCHES: usize = 256;

fn write_requests(db: &mut Db, first: &RequestBatch, rx: &Receiver<RequestBatch>) {
    // What else waits goes into the same transaction.
    let mut batches = vec![first.clone()];
    let mut records = first.len();
    while records < 65_536 {
        match rx.try_recv() {
            Ok(more) => {
                records += more.len();
                batches.push(more);
            }
            Err(_) => break,
        }
    }
    if let Err(e) = db.append_requests(&batches) {
        tracing::error!(error = %e, records, "request-log records not written");
    }
}

fn run(mut db: Db, rx: &Receiver<Command>, requests_rx: &Receiver<RequestBatch>, control: Arc<dyn Control>) {
    let control = &*control;
    let mut next_prune = std::time::Instant::now();
    let mut pruning = false;
    loop {
        // Retention a step at a time between commands: no long lock on the database.
        if pruning || std::time::Instant::now() >= next_prune {
            let (keep_for, max_rows) = control.request_retention();
            let now = crate::api::governance::now_ms();
            let before = now.saturating_sub(u64::try_from(keep_for.as_millis()).unwrap_or(u64::MAX));
            match db.prune_requests(before, max_rows) {
                Ok(0) => pruning = false,
                Ok(_) => pruning = true,
                Err(e) => {
                    pruning = false;
                    tracing::error!(error = %e, "request-log retention not enforced");
                }
            }
            if !pruning {
                next_prune = std::time::Instant::now() + PRUNE_EVERY;
            }
        }
        let wait =
            if pruning { Duration::ZERO } else { next_prune.saturating_duration_since(std::time::Instant::now()) };
        let cmd = crossbeam_channel::select! {
            recv(rx) -> cmd => match cmd {
                Ok(cmd) => cmd,
                Err(_) => break,
            },
            recv(requests_rx) -> batch => match batch {
                Ok(batch) => {
                    write_requests(&mut db, &batch, requests_rx);
                    continue;
                }
                Err(_) => break,
            },
            default(wait) => continue,
        };
        match cmd {
            Command::Stop => break,
            Command::Spend(mut rows) => {
                // Take whatever else is already waiting into the same transaction.
                let mut later = Vec::new();
                while rows.len() < 65_536 {
                    match rx.try_recv() {
                        Ok(Command::Spend(more)) => rows.extend(more),
                        Ok(other) => {
                            later.push(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                if let Err(e) = db.append_spend(&rows) {
                    // Nothing else can keep them: say so loudly, with what was lost.
                    let cost: u64 = rows.iter().map(|r| r.cost_micros).sum();
                    tracing::error!(error = %e, rows = rows.len(), cost_usd = cost as f64 / 1e6, "spend rows not written");
                }
                for c in later {
                    if matches!(c, Command::Stop) {
                        tracing::debug!("store thread stopped");
                        return;
                    }
                    handle(&mut db, c, control);
                }
            }
            other => handle(&mut db, other, control),
        }
    }
    tracing::debug!("store thread stopped");
}

fn handle(db: &mut Db, cmd: Command, control: &dyn Control) {
    match cmd {
        Command::Spend(rows) => {
            if let Err(e) = db.append_spend(&rows) {
                tracing::error!(error = %e, rows = rows.len(), "spend rows not written");
            }
        }
        Command::Change { changes, actor, reply } => {
            let result = apply_changes(db, &changes, &actor, control);
            match &result {
                Ok(()) => tracing::info!(%actor, changes = changes.len(), "admin change applied"),
                Err(e) => tracing::info!(%actor, error = %e, "admin change refused"),
            }
            let _ = reply.send(result);
        }
        Command::Report { query, reply } => {
            let _ = reply.send(db.spend_report(&query).map_err(|e| e.to_string()));
        }
        Command::Alert(key, at_ms) => {
            if let Err(e) = db.record_alert(&key, at_ms) {
                tracing::error!(error = %e, "delivered alert not recorded; a restart may send it again");
            }
        }
        Command::Audit(records) => {
            if let Err(e) = db.append_audit(&records) {
                tracing::error!(error = %e, records = records.len(), "MCP audit records not written");
            }
        }
        Command::Mcp { change, actor, reply } => {
            let mut next = (*control.managed_mcp()).clone();
            let result = put_mcp(&mut next, change.kind, &change.name, change.spec.as_deref())
                .map_err(ChangeError::Invalid)
                .and_then(|()| {
                    let now = crate::api::governance::now_ms();
                    control.apply_mcp(next, &mut || db.put_mcp(&change, &actor, now).map_err(|e| e.to_string()))
                });
            let _ = reply.send(result);
        }
        Command::UserToken(server, user, sealed) => {
            if let Err(e) = db.put_user_token(&server, &user, &sealed, crate::api::governance::now_ms()) {
                tracing::error!(error = %e, %server, %user, "a user's MCP token is not saved");
            }
        }
        Command::CostQuery { query, reply } => {
            let _ = reply.send(db.costs(&query).map_err(|e| e.to_string()));
        }
        Command::RequestQuery { query, reply } => {
            let _ = reply.send(db.request_query(&query).map_err(|e| e.to_string()));
        }
        Command::ForgetUserToken(server, user) => {
            if let Err(e) = db.delete_user_token(&server, &user) {
                tracing::error!(error = %e, %server, %user, "a user's MCP token is not deleted");
            }
        }
        Command::AuditQuery { query, reply } => {
            let _ = reply.send(db.audit_query(&query).map_err(|e| e.to_string()));
        }
        Command::Sync(done) => {
            let _ = done.send(());
        }
        Command::Stop => {}
    }
}

fn apply_changes(db: &mut Db, changes: &[Mutation], actor: &str, control: &dyn Control) -> Result<(), ChangeError> {
    let mut managed = (*control.managed()).clone();
    for m in changes {
        match m {
            Mutation::Put(e) => e.put_into(&mut managed),
            Mutation::Delete { kind, name } => {
                if !entity::remove_from(*kind, name, &mut managed) {
                    return Err(ChangeError::NotFound(format!(
                        "no {} named {name:?} was made through the admin API",
                        kind.as_str()
                    )));
                }
            }
        }
    }
    let now = crate::api::governance::now_ms();
    control.apply(managed, &mut || db.apply(changes, actor, now).map_err(|e| e.to_string()))
}

/// Checks the audit chain of the database at `path` (read only; the gateway may be running).
pub fn verify_audit(path: &Path) -> Result<audit::Verified, DbError> {
    let name = path.display().to_string();
    let err = |e: rusqlite::Error| DbError { path: name.clone(), message: e.to_string() };
    let conn = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(err)?;
    let has_trail: bool = conn
        .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'audit'", [], |r| r.get(0))
        .map_err(err)?;
    if !has_trail {
        return Ok(audit::Verified { records: 0, head: audit::GENESIS.to_owned(), broken: None });
    }
    audit::verify(&conn).map_err(err)
}

/// Puts (`spec`: JSON) or removes an MCP object in `mcp`. Environment references (`${...}`)
/// are refused: they are for the config file, not for whoever holds an admin key.
fn put_mcp(mcp: &mut crate::mcp::spec::McpSection, kind: &str, name: &str, spec: Option<&str>) -> Result<(), String> {
    // Checked on the parsed strings, so that no JSON escape (`\u0024{`) gets a reference past.
    let parsed = |s: &str| -> Result<serde_json::Value, String> {
        let v: serde_json::Value = serde_json::from_str(s).map_err(|e| format!("mcp {kind} {name}: {e}"))?;
        if refers_to_environment(&v) {
            return Err("environment references (${...}) are for the config file; give values".into());
        }
        Ok(v)
    };
    match (kind, spec) {
        ("server", Some(s)) => {
            let spec = serde_json::from_value(parsed(s)?).map_err(|e| format!("mcp server {name}: {e}"))?;
            mcp.servers.insert(name.to_owned(), spec);
        }
        ("virtual", Some(s)) => {
            let spec = serde_json::from_value(parsed(s)?).map_err(|e| format!("mcp virtual server {name}: {e}"))?;
            mcp.virtual_servers.insert(name.to_owned(), spec);
        }
        ("server", None) => {
            mcp.servers.remove(name).ok_or_else(|| format!("no MCP server {name:?} was made through the admin API"))?;
        }
        ("virtual", None) => {
            mcp.virtual_servers
                .remove(name)
                .ok_or_else(|| format!("no MCP virtual server {name:?} was made through the admin API"))?;
        }
        _ => return Err(format!("unknown MCP object kind {kind:?}")),
    }
    Ok(())
}

/// Whether any string (or key) in `v` holds `${`, which the config's `EnvString` would expand.
fn refers_to_environment(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains("${"),
        serde_json::Value::Array(a) => a.iter().any(refers_to_environment),
        serde_json::Value::Object(o) => o.iter().any(|(k, x)| k.contains("${") || refers_to_environment(x)),
        _ => false,
    }
}
