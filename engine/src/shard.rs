//! A shard: one pinned thread, its own runtime, its own listener (`SO_REUSEPORT`), connections,
//! upstream pools and counters. Nothing in here is shared with another shard except the config
//! snapshot (read through `arc-swap`) and the metrics it writes.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::time::{Duration, Instant};

use adapters::openai::request::Scanner;
use adapters::openai::usage::UsageReader;
use arc_swap::ArcSwap;

use crate::config::Snapshot;
use crate::gossip::GossipHub;
use crate::listener::{ConnectionObserver, accept_loop};
use crate::metrics::{ProcessGauges, Registry, ShardMetrics};
use crate::rt::{self, Backend, LocalEvent};
use crate::upstream::{DnsTable, Pool};

/// State shared by all shards and the control thread.
pub struct ProcessState {
    pub config: ArcSwap<Snapshot>,
    pub dns: ArcSwap<DnsTable>,
    pub registry: Registry,
    pub backend: Backend,
    pub shards_total: usize,
    pub shards_up: AtomicUsize,
    pub draining: AtomicBool,
    /// Grace period of the drain in progress, in milliseconds.
    pub drain_grace_ms: AtomicU64,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// Downstream TLS, fixed at start.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Counter gossip between shards.
    pub gossip: GossipHub,
    /// Route targets' breaker news between shards.
    pub health: crate::gossip::HealthHub,
    /// Whether callers without credentials are served while no key exists: the listener is on
    /// a loopback address, or anonymous access was asked for explicitly. Fixed at start.
    pub anonymous_ok: bool,
    /// Budget alerts go to one thread, which delivers each once.
    pub alerts: crate::alerts::AlertSink,
    /// Token issuers' verifiers and signing keys (kept fresh by the `credentials` thread).
    pub tokens: crate::jwks::TokenVerifiers,
    /// Providers' access tokens: Vertex AI, Azure with Entra ID (minted by the `credentials`
    /// thread).
    pub minted: crate::minted::ProviderTokens,
    /// The embedded store, when there is one (set once at start).
    pub store: std::sync::OnceLock<Arc<crate::store::Store>>,
    /// The ledger as read at start, per day: shard 0 counts it into the budgets before it
    /// accepts, and gossip carries it to the others.
    pub restore: std::sync::Mutex<Vec<crate::store::SpendRow>>,
    /// MCP client sessions: made and checked on any shard.
    pub mcp_sessions: crate::mcp::session::Sessions,
    /// Upstream MCP servers that run as local processes (stdio), each owned by a thread.
    pub mcp_stdio: crate::mcp::stdio::StdioHub,
    /// Users' own tokens for servers that act as each user (per-user OAuth).
    pub mcp_user_tokens: crate::mcp::user_oauth::UserTokens,
    /// The request log's JSON-lines sink (`logging.requests.jsonl`), when there is one.
    pub request_jsonl: Option<crate::request_log::JsonLines>,
    /// When the process started (Unix ms): request ids begin with it.
    pub started_ms: u64,
    /// MCP session news between shards.
    pub mcp_hub: crate::mcp::hub::Hub,
}

impl ProcessState {
    pub fn ready(&self) -> bool {
        self.shards_up.load(SeqCst) == self.shards_total && !self.draining.load(SeqCst)
    }

    pub fn gauges(&self) -> ProcessGauges {
        ProcessGauges {
            config_generation: self.config.load().generation,
            reloads_ok: self.reloads_ok.load(Relaxed),
            reloads_failed: self.reloads_failed.load(Relaxed),
            ready: self.ready(),
            driver: self.backend.label(),
        }
    }
}

/// A snapshot held by one shard. The extra `Rc` is deliberate: requests clone it with a
/// non-atomic count, where cloning the shared `Arc` per request would bounce its counter
/// between cores.
#[allow(clippy::redundant_allocation)]
pub type LocalSnapshot = Rc<Arc<Snapshot>>;

/// Audit records a shard keeps while the store is behind; beyond this they are dropped and
/// counted (`shardgate_mcp_audit_dropped_total`).
const AUDIT_PENDING_MAX: usize = 65_536;
/// Request-log records on a shard: those not handed over yet, and batches the store refused
/// (it was behind), kept in order for the next hand-over.
#[derive(Default)]
struct RequestLogBuffer {
    current: Vec<crate::request_log::RequestRecord>,
    refused: std::collections::VecDeque<Arc<[crate::request_log::RequestRecord]>>,
}

impl RequestLogBuffer {
    fn waiting(&self) -> usize {
        self.current.len() + self.refused.iter().map(|b| b.len()).sum::<usize>()
    }
}

/// Request-log records handed over at once as soon as a shard holds this many.
const REQUEST_LOG_BATCH: usize = 512;
/// Otherwise they are handed over this often.
const REQUEST_LOG_EVERY: Duration = Duration::from_millis(100);

/// One shard's state, owned by its thread.
pub struct Shard {
    pub id: usize,
    pub process: Arc<ProcessState>,
    /// The snapshot this shard last saw.
    local_config: RefCell<LocalSnapshot>,
    pub pool: Pool,
    pub metrics: Arc<ShardMetrics>,
    pub scanner: RefCell<Scanner>,
    pub usage_reader: RefCell<UsageReader>,
    pub drain: LocalEvent,
    pub open_connections: Cell<usize>,
    pub sequence: Cell<u64>,
    /// Rate-limit and budget counters, this shard's view.
    pub governor: RefCell<policy::Governor>,
    /// Digests of keys presented recently, so a keep-alive client's key is hashed once.
    pub digests: RefCell<crate::api::governance::DigestCache>,
    /// Bearer tokens verified recently.
    pub tokens: RefCell<crate::api::governance::TokenCache>,
    /// Spend since the last hand-over to the store.
    pub tally: RefCell<crate::store::SpendTally>,
    /// One actor per upstream target.
    pub targets: crate::actor::Targets,
    /// What this shard knows of each route target's health (breakers, averages).
    pub route_health: crate::route_health::RouteHealth,
    /// Guardrail verdict counters for the current config's rules.
    pub guard_counters: RefCell<crate::api::guard::GuardCounters>,
    /// The upstream MCP sessions this shard opened, per client session and server.
    pub mcp_sessions: crate::mcp::session::UpstreamSessions,
    /// MCP audit records not yet handed to the store (it was behind).
    audit_pending: RefCell<Vec<crate::store::audit::AuditRecord>>,
    /// Request-log records not yet handed to their writers.
    request_log: RefCell<RequestLogBuffer>,
}

impl Shard {
    pub fn new(id: usize, process: Arc<ProcessState>) -> Self {
        let metrics = process.registry.shard(id);
        let targets = crate::actor::Targets::new(metrics.targets.clone());
        let route_health = crate::route_health::RouteHealth::new(id, process.shards_total, metrics.routes.clone());
        let local_config = RefCell::new(Rc::new(process.config.load_full()));
        let buckets = process.config.load().gossip.window_buckets;
        let governor =
            policy::Governor::with_buckets(u16::try_from(id).unwrap_or(u16::MAX), process.gossip.shards(), buckets);
        Shard {
            id,
            process,
            local_config,
            pool: Pool::default(),
            metrics,
            scanner: RefCell::new(Scanner::new()),
            usage_reader: RefCell::new(UsageReader::new()),
            drain: LocalEvent::new(),
            open_connections: Cell::new(0),
            sequence: Cell::new(0),
            governor: RefCell::new(governor),
            digests: RefCell::new(crate::api::governance::DigestCache::default()),
            tally: RefCell::new(crate::store::SpendTally::default()),
            tokens: RefCell::new(crate::api::governance::TokenCache::default()),
            targets,
            route_health,
            guard_counters: RefCell::default(),
            mcp_sessions: Default::default(),
            audit_pending: RefCell::default(),
            request_log: RefCell::default(),
        }
    }

    /// Whether requests are logged at all (a store to keep them, or a JSON-lines sink).
    pub fn logs_requests(&self, cfg: &crate::config::Snapshot) -> bool {
        (cfg.request_log.store && self.process.store.get().is_some()) || self.process.request_jsonl.is_some()
    }

    /// Keeps one request-log record until the next hand-over; beyond `logging.requests.buffer`
    /// waiting records (the writers are behind) it is dropped and counted. A full batch is
    /// handed over at once, unless the store refused the last one (then only the timed
    /// hand-over tries again, so a slow store costs the request path nothing).
    pub fn log_request(&self, cfg: &crate::config::Snapshot, record: crate::request_log::RequestRecord) {
        let mut log = self.request_log.borrow_mut();
        if log.waiting() >= cfg.request_log.buffer {
            self.metrics.request_log_dropped.fetch_add(1, Relaxed);
            return;
        }
        log.current.push(record);
        let hand_over = log.current.len() >= REQUEST_LOG_BATCH && log.refused.is_empty();
        self.metrics.request_log_pending.store(log.waiting() as u64, Relaxed);
        drop(log);
        if hand_over {
            self.flush_request_log(cfg);
        }
    }

    /// Hands the waiting request-log records over: each batch to the JSON-lines sink once (a
    /// sink that is behind misses it, counted), and to the store in order (a batch the store
    /// refuses waits, without being copied, for the next hand-over).
    pub fn flush_request_log(&self, cfg: &crate::config::Snapshot) {
        let mut log = self.request_log.borrow_mut();
        if !log.current.is_empty() {
            let batch: Arc<[crate::request_log::RequestRecord]> = Arc::from(std::mem::take(&mut log.current));
            if let Some(sink) = &self.process.request_jsonl
                && !sink.send(batch.clone())
            {
                self.metrics.request_log_dropped.fetch_add(batch.len() as u64, Relaxed);
            }
            if cfg.request_log.store && self.process.store.get().is_some() {
                log.refused.push_back(batch);
            }
        }
        if let Some(store) = self.process.store.get() {
            while let Some(batch) = log.refused.pop_front() {
                if let Err(back) = store.send_requests(batch) {
                    log.refused.push_front(back);
                    break;
                }
            }
        }
        self.metrics.request_log_pending.store(log.waiting() as u64, Relaxed);
    }

    /// Request-log records still waiting (for the last hand-over at drain).
    pub fn request_log_waiting(&self) -> usize {
        self.request_log.borrow().waiting()
    }

    /// The config in force now.
    pub fn config(&self) -> LocalSnapshot {
        let current = self.process.config.load();
        let mut local = self.local_config.borrow_mut();
        if !Arc::ptr_eq(&current, &local) {
            *local = Rc::new(arc_swap::Guard::into_inner(current));
        }
        local.clone()
    }

    /// Counts the ledger read at start into this shard's budgets (shard 0 only; gossip carries
    /// the counts to the other shards).
    fn restore_spend(&self) {
        let rows = std::mem::take(&mut *self.process.restore.lock().unwrap_or_else(|e| e.into_inner()));
        if rows.is_empty() {
            return;
        }
        let cfg = self.config();
        let now = crate::api::governance::now_ms();
        let mut g = self.governor.borrow_mut();
        let mut restored = 0u64;
        for r in &rows {
            let who = cfg.policy.recorded_caller(r.caller.as_recorded());
            let metadata = crate::store::ledger::metadata_from_json(&r.metadata);
            g.restore_spend(&cfg.policy, &who, &r.model, &metadata, r.cost_micros, r.minute_ms, now);
            restored = restored.saturating_add(r.cost_micros);
        }
        tracing::info!(rows = rows.len(), spend_usd = restored as f64 / 1e6, "ledger counted into budgets");
    }

    /// Hands the spend tallied since the last flush to the store thread; keeps it if the
    /// store is behind.
    pub fn flush_spend(&self) {
        let Some(store) = self.process.store.get() else { return };
        let mut tally = self.tally.borrow_mut();
        if tally.is_empty() {
            return;
        }
        let rows = tally.take_rows();
        if let Err(rows) = store.send_spend(rows) {
            tracing::warn!(shard = self.id, rows = rows.len(), "store behind; spend kept for the next flush");
            tally.put_back(rows);
        }
    }

    /// Records one MCP tool call in the audit trail (through the store thread; off the request
    /// path). Without a store, the log line written for the call is all there is.
    pub fn audit(&self, record: crate::store::audit::AuditRecord) {
        if self.process.store.get().is_none() {
            return;
        }
        let mut pending = self.audit_pending.borrow_mut();
        if pending.len() >= AUDIT_PENDING_MAX {
            self.metrics.audit_dropped.fetch_add(1, Relaxed);
            tracing::error!(shard = self.id, "store far behind: an MCP audit record is dropped");
            return;
        }
        pending.push(record);
        drop(pending);
        self.flush_audit();
    }

    /// Hands pending audit records to the store; kept for the next try if it is behind.
    pub fn flush_audit(&self) {
        let Some(store) = self.process.store.get() else { return };
        let mut pending = self.audit_pending.borrow_mut();
        if pending.is_empty() {
            return;
        }
        if let Err(back) = store.send_audit(std::mem::take(&mut *pending)) {
            *pending = back;
        }
    }

    /// A number unique within this shard (ids of mock answers).
    pub fn next_sequence(&self) -> u64 {
        let n = self.sequence.get() + 1;
        self.sequence.set(n);
        n
    }
}

impl ConnectionObserver for Shard {
    fn opened(&self) {
        self.open_connections.set(self.open_connections.get() + 1);
        self.metrics.open_connections.fetch_add(1, Relaxed);
        self.metrics.accepted_connections.fetch_add(1, Relaxed);
    }

    fn closed(&self) {
        self.open_connections.set(self.open_connections.get().saturating_sub(1));
        self.metrics.open_connections.fetch_sub(1, Relaxed);
    }

    fn panicked(&self, peer: std::net::SocketAddr) {
        self.metrics.panics.fetch_add(1, Relaxed);
        tracing::error!(shard = self.id, %peer, "connection task panicked; connection dropped");
    }
}

/// The shard's main task: accept until draining, then wait for connections to finish.
pub async fn run(shard: Rc<Shard>, listener: std::net::TcpListener) {
    if shard.id == 0 {
        shard.restore_spend();
        // Active health checks of route targets run on one shard; what they find is gossiped.
        rt::spawn(crate::api::health_checks::run(shard.clone()));
    }
    rt::spawn(housekeeping(shard.clone()));
    rt::spawn(gossip(shard.clone()));
    shard.process.shards_up.fetch_add(1, SeqCst);
    tracing::debug!(shard = shard.id, "shard accepting");

    let service = Rc::new(crate::api::GatewayService::new(shard.clone()));
    let tls = shard.process.tls.clone();
    let handshake_timeout = shard.config().limits.header_timeout;
    if let Err(e) = accept_loop(listener, service, shard.clone(), shard.drain.clone(), tls, handshake_timeout).await {
        tracing::error!(shard = shard.id, error = %e, "cannot accept on the listener");
        return;
    }
    let grace = Duration::from_millis(shard.process.drain_grace_ms.load(SeqCst));
    let deadline = Instant::now() + grace;
    while shard.open_connections.get() > 0 && Instant::now() < deadline {
        rt::sleep(Duration::from_millis(10)).await;
    }
    let left = shard.open_connections.get();
    if left > 0 {
        tracing::warn!(shard = shard.id, connections = left, "drain grace period over; closing what remains");
    } else {
        tracing::debug!(shard = shard.id, "shard drained");
    }
    shard.flush_spend();
    shard.flush_audit();
    // The last records: the store may be behind for a moment; what it still refuses after a
    // second is counted as dropped.
    let last_call = Instant::now() + Duration::from_secs(1);
    loop {
        shard.flush_request_log(&shard.config());
        let left = shard.request_log_waiting();
        if left == 0 {
            break;
        }
        if Instant::now() >= last_call {
            shard.metrics.request_log_dropped.fetch_add(left as u64, Relaxed);
            tracing::warn!(
                shard = shard.id,
                records = left,
                "request-log records lost at exit: the store stayed behind"
            );
            break;
        }
        rt::sleep(Duration::from_millis(10)).await;
    }
}

/// Gossip rounds every `governance.gossip_interval`, eviction of idle counters, and the spend
/// hand-over to the store every `store.flush_interval`.
async fn gossip(shard: Rc<Shard>) {
    let mut last_evict = Instant::now();
    let mut last_flush = Instant::now();
    let mut last_request_flush = Instant::now();
    let flush_every = shard.process.store.get().map(|s| s.flush_interval);
    loop {
        if shard.process.draining.load(SeqCst) {
            return;
        }
        let interval = shard.config().gossip.interval;
        {
            let mut g = shard.governor.borrow_mut();
            shard.process.gossip.round(shard.id, &mut g);
            crate::mcp::hub::receive(&shard);
            if last_evict.elapsed() >= Duration::from_secs(10) {
                g.evict(crate::api::governance::now_ms(), 120_000);
                last_evict = Instant::now();
            }
        }
        if last_request_flush.elapsed() >= REQUEST_LOG_EVERY {
            shard.flush_request_log(&shard.config());
            last_request_flush = Instant::now();
        }
        if flush_every.is_some_and(|f| last_flush.elapsed() >= f) {
            shard.flush_spend();
            shard.flush_audit();
            last_flush = Instant::now();
        }
        rt::sleep(interval).await;
    }
}

/// Watches for the drain signal and sweeps idle upstream connections.
async fn housekeeping(shard: Rc<Shard>) {
    let mut last_sweep = Instant::now();
    loop {
        if shard.process.draining.load(SeqCst) {
            shard.drain.set();
            return;
        }
        if last_sweep.elapsed() >= Duration::from_secs(5) {
            shard.pool.sweep();
            let expired = shard.mcp_sessions.expire_legacy(Instant::now(), crate::mcp::session::LEGACY_IDLE);
            if expired > 0 {
                tracing::debug!(expired, "idle legacy MCP streams let go");
            }
            last_sweep = Instant::now();
        }
        rt::sleep(Duration::from_millis(25)).await;
    }
}
