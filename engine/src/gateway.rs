//! The process: load the config, decide the runtime (and I/O driver), bind one `SO_REUSEPORT` listener per
//! shard, start the shard threads, and run the control thread (config reload on file change,
//! DNS refresh). The binary adds signals on top; tests drive the same API in-process.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use policy::spec::GovernanceSpec;

use crate::config::{self, ConfigError, ConfigFile, ConfigSource, Managed, ShardCount, Snapshot};
use crate::gossip::GossipHub;
use crate::listener::{ShardThreads, bind_listeners, spawn_shards};
use crate::metrics::Registry;
use crate::rt::{Backend, DriverRequest, RuntimeRequest, UringFlags};
use crate::shard::{self, ProcessState, Shard};
use crate::store::ChangeError;
use crate::upstream::DnsTable;

/// Start-time choices; each overrides the config file's `server` section when set.
#[derive(Debug, Clone)]
pub struct StartOptions {
    pub source: ConfigSource,
    pub listen: Option<SocketAddr>,
    pub shards: Option<NonZeroUsize>,
    pub runtime: Option<RuntimeRequest>,
    pub driver: Option<DriverRequest>,
    pub uring_flags: Option<UringFlags>,
    /// Watch the config file for changes (overrides `server.reload.watch`).
    pub watch: Option<bool>,
    /// Pin shard threads to cores (overrides `server.pin_cores`).
    pub pin_cores: Option<bool>,
    /// Serve without credentials on a non-loopback address while no key exists
    /// (`--allow-anonymous`, or `auth.allow_anonymous`).
    pub allow_anonymous: bool,
    /// The store's database file (`--store`), overriding `store.path`; `none` for no store.
    pub store: Option<String>,
}

impl StartOptions {
    pub fn new(source: ConfigSource) -> Self {
        StartOptions {
            source,
            listen: None,
            shards: None,
            runtime: None,
            driver: None,
            uring_flags: None,
            watch: None,
            pin_cores: None,
            allow_anonymous: false,
            store: None,
        }
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("runtime: {0}")]
    Driver(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("TLS listener: {0}")]
    Tls(#[from] crate::tls::TlsConfigError),
    #[error(
        "no keys are configured and {addr} is not a loopback address: refusing to serve anyone who asks. \
         Declare keys (see docs/governance.md), listen on 127.0.0.1, or pass --allow-anonymous \
         (auth.allow_anonymous: true) to serve anonymously on purpose"
    )]
    OpenToTheNetwork { addr: SocketAddr },
    #[error("shard {shard} failed to start: {reason}")]
    Shard { shard: usize, reason: String },
    #[error(transparent)]
    Store(#[from] crate::store::DbError),
    #[error("cannot start a background thread: {0}")]
    StoreThread(std::io::Error),
    #[error("MCP sessions: {0}")]
    McpSessions(String),
    #[error("request log: {0}")]
    RequestLog(String),
}

/// Serialises reloads and remembers what was loaded.
struct Reloader {
    state: Arc<ProcessState>,
    source: ConfigSource,
    generation: AtomicU64,
    lock: Mutex<()>,
    /// [`Reloader::mtime`] of the files last loaded (for the watcher).
    loaded_mtime: Mutex<Option<u64>>,
    /// The config file last loaded, to compile admin changes against.
    file: Mutex<ConfigFile>,
    /// What the admin API made (from the store).
    managed: Mutex<Managed>,
}

impl Reloader {
    /// A fingerprint of the config file and its team files (names, modification times and
    /// sizes): it changes when either is edited, or a team file is added or removed.
    fn mtime(&self) -> Option<u64> {
        config::team_files::fingerprint(&self.source)
    }

    /// Resolves the current config's hosts again. Serialised with reloads, so a refresh that
    /// started before a reload cannot overwrite the reload's table with the old hosts.
    fn refresh_dns(&self) {
        let _serial = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let snapshot = self.state.config.load();
        resolve_into(&self.state, &snapshot);
    }

    /// Loads, validates and compiles the config, resolves its hosts, then swaps it in. On any
    /// error the running config stays.
    fn reload(&self) -> Result<u64, ConfigError> {
        let _serial = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mtime = self.mtime();
        let generation = self.generation.load(SeqCst) + 1;
        let managed = self.managed.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let result = config::load_with(&self.source, generation, &managed);
        if let Ok(mut m) = self.loaded_mtime.lock() {
            *m = mtime;
        }
        match result {
            Ok((file, snapshot)) => {
                let running = self.state.config.load().gossip.window_buckets;
                if snapshot.gossip.window_buckets != running {
                    tracing::warn!(
                        running,
                        configured = snapshot.gossip.window_buckets,
                        "governance.window_buckets changed: it applies at the next start; the running value stays"
                    );
                }
                // `server.limits` and `drain_grace` apply at once; the listener, shards, driver,
                // TLS and reload settings apply at the next start.
                let grace = u64::try_from(file.server.drain_grace.0.as_millis()).unwrap_or(u64::MAX);
                self.state.drain_grace_ms.store(grace, SeqCst);
                resolve_into(&self.state, &snapshot);
                // Stdio MCP servers the new config no longer runs (removed, or their command
                // changed) stop now.
                self.state.mcp_stdio.retain(&snapshot.mcp);
                self.state.config.store(Arc::new(snapshot));
                self.generation.store(generation, SeqCst);
                self.state.reloads_ok.fetch_add(1, SeqCst);
                tracing::info!(generation, source = %self.source.describe(), "config reloaded");
                *self.file.lock().unwrap_or_else(|e| e.into_inner()) = file.without_governance();
                Ok(generation)
            }
            Err(e) => {
                self.state.reloads_failed.fetch_add(1, SeqCst);
                tracing::error!(error = %e, "config reload refused; the running config stays");
                Err(e)
            }
        }
    }
}

impl crate::store::Control for Reloader {
    fn request_retention(&self) -> (Duration, Option<u64>) {
        let cfg = self.state.config.load();
        (cfg.request_log.retention.0, cfg.request_log.max_rows)
    }

    fn managed(&self) -> Arc<GovernanceSpec> {
        self.managed.lock().unwrap_or_else(|e| e.into_inner()).spec.clone()
    }

    fn apply(
        &self,
        managed: GovernanceSpec,
        persist: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<(), ChangeError> {
        self.apply_managed(|next| next.spec = Arc::new(managed), |_, _| Ok(()), persist)
    }

    fn managed_mcp(&self) -> Arc<crate::mcp::spec::McpSection> {
        self.managed.lock().unwrap_or_else(|e| e.into_inner()).mcp.clone()
    }

    fn apply_mcp(
        &self,
        mcp: crate::mcp::spec::McpSection,
        persist: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<(), ChangeError> {
        let clashes = crate::mcp::spec::clashes(&self.file.lock().unwrap_or_else(|e| e.into_inner()).mcp, &mcp);
        if !clashes.is_empty() {
            return Err(ChangeError::Conflict(format!(
                "{}: declared in the config file; the admin API cannot replace it",
                clashes.join(", ")
            )));
        }
        // Stored objects that stopped compiling are left out at start so they cannot keep the
        // gateway down; a change that makes another stop compiling is refused instead.
        let check = |before: &Snapshot, after: &Snapshot| {
            let was_out = |name: &str| before.mcp_left_out.iter().any(|(n, _)| n == name);
            let broken: Vec<String> = after
                .mcp_left_out
                .iter()
                .filter(|(name, _)| !was_out(name))
                .map(|(name, why)| format!("{name}: {why}"))
                .collect();
            if broken.is_empty() { Ok(()) } else { Err(ChangeError::Invalid(broken.join("\n"))) }
        };
        self.apply_managed(|next| next.mcp = Arc::new(mcp), check, persist)
    }
}

impl Reloader {
    /// Compiles the config with what the admin API made, changed by `change`; if that succeeds,
    /// runs `persist`, and if that succeeds too, puts the result in force on every shard.
    fn apply_managed(
        &self,
        change: impl FnOnce(&mut Managed),
        check: impl FnOnce(&Snapshot, &Snapshot) -> Result<(), ChangeError>,
        persist: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<(), ChangeError> {
        let _serial = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let generation = self.generation.load(SeqCst) + 1;
        let mut next = self.managed.lock().unwrap_or_else(|e| e.into_inner()).clone();
        change(&mut next);
        let snapshot = {
            // The file's own governance sections live in the running snapshot, not twice.
            let declared = self.state.config.load().declared.clone();
            let file = self.file.lock().unwrap_or_else(|e| e.into_inner()).clone().with_governance(&declared);
            config::compile_with(&file, &self.source.describe(), generation, &next)
                .map_err(|errors| ChangeError::Invalid(errors.to_string()))?
        };
        // Against the config in force, read under the lock that serialises changes.
        check(&self.state.config.load(), &snapshot)?;
        persist().map_err(ChangeError::Store)?;
        resolve_into(&self.state, &snapshot);
        self.state.mcp_stdio.retain(&snapshot.mcp);
        self.state.config.store(Arc::new(snapshot));
        self.generation.store(generation, SeqCst);
        *self.managed.lock().unwrap_or_else(|e| e.into_inner()) = next;
        tracing::info!(generation, "admin change in force");
        Ok(())
    }
}

/// A thread named `name` that runs `tick` every 100 ms until `stop`.
fn every_100ms(name: &str, stop: Arc<AtomicBool>, mut tick: impl FnMut() + Send + 'static) -> Option<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            while !stop.load(SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
                tick();
            }
        })
        .ok()
}

fn absolute(p: &str) -> String {
    std::path::absolute(p).map_or_else(|_| p.to_string(), |a| a.display().to_string())
}

fn resolve_into(state: &ProcessState, snapshot: &Snapshot) {
    let previous = state.dns.load();
    let (table, failures) = DnsTable::resolve(&snapshot.dns_hosts, &previous);
    for f in failures {
        tracing::warn!(failure = %f, "upstream host did not resolve");
    }
    state.dns.store(Arc::new(table));
}

/// A running gateway.
pub struct Gateway {
    state: Arc<ProcessState>,
    reloader: Arc<Reloader>,
    local_addr: SocketAddr,
    shard_threads: Vec<JoinHandle<()>>,
    control: Option<JoinHandle<()>>,
    /// Fetches token issuers' signing keys.
    tokens: Option<JoinHandle<()>>,
    /// Refreshes users' MCP tokens: a thread of its own, so a slow authorization server delays
    /// neither token issuers' keys nor providers' tokens.
    user_tokens: Option<JoinHandle<()>>,
    /// Delivers budget alerts.
    alerts: Option<JoinHandle<()>>,
    stop_control: Arc<AtomicBool>,
}

impl Gateway {
    /// Starts the gateway and returns once every shard accepts connections.
    pub fn start(opts: StartOptions) -> Result<Gateway, StartError> {
        let mut file = config::read(&opts.source)?;
        if let Some(p) = &opts.store {
            // Relative to the working directory, as command-line paths are.
            file.store.path = Some(if p == "none" { p.clone() } else { absolute(p) });
        }
        let opened = match config::store_path(&opts.source, &file) {
            Some(path) => Some(crate::store::open(&path)?),
            None => None,
        };
        let managed = opened
            .as_ref()
            .map(|o| Managed {
                spec: Arc::new(o.managed.clone()),
                pepper: Some(o.pepper.clone()),
                mcp: Arc::new(o.mcp.clone()),
            })
            .unwrap_or_default();
        let snapshot = config::compile_with(&file, &opts.source.describe(), 1, &managed)
            .map_err(|errors| ConfigError::Invalid { source_name: opts.source.describe(), errors })?;
        let server = &file.server;
        let backend = Backend::resolve(
            opts.runtime.unwrap_or(server.runtime),
            opts.driver.unwrap_or(server.driver),
            opts.uring_flags.unwrap_or(server.uring_flags),
        )
        .map_err(StartError::Driver)?;
        let shards = match opts.shards {
            Some(n) => n.get(),
            None => match server.shards {
                ShardCount::Fixed(n) => n.get(),
                ShardCount::Auto => std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
            },
        };
        let listen = opts.listen.unwrap_or(server.listen);
        // Secure by default: without keys, only a loopback listener serves anonymously.
        let anonymous_ok = listen.ip().is_loopback() || opts.allow_anonymous || snapshot.allow_anonymous;
        let anonymous = !snapshot.requires_auth();
        if anonymous && !anonymous_ok {
            return Err(StartError::OpenToTheNetwork { addr: listen });
        }
        let gossip_queue = snapshot.gossip.queue;
        let listeners =
            bind_listeners(listen, shards, backend).map_err(|source| StartError::Listen { addr: listen, source })?;
        let local_addr = listeners
            .first()
            .and_then(|l| l.local_addr().ok())
            .ok_or_else(|| StartError::Listen { addr: listen, source: std::io::Error::other("no listener") })?;
        if anonymous {
            tracing::warn!(
                address = %local_addr,
                "no keys configured: serving anyone who connects (a loopback address, or --allow-anonymous)"
            );
        }
        let tls = match &server.tls {
            Some(t) => Some(crate::tls::server_config(&t.cert, &t.key)?),
            None => None,
        };
        let pin = opts.pin_cores.unwrap_or(server.pin_cores);
        let watch = opts.watch.unwrap_or(server.reload.watch);
        let poll_interval = server.reload.poll_interval.0;

        let stop_control = Arc::new(AtomicBool::new(false));
        let (alerts, alerts_inbox) = crate::alerts::channel();
        let request_jsonl = match file.logging.requests.jsonl.as_deref() {
            Some(path) => Some(
                crate::request_log::JsonLines::start(path)
                    .map_err(|e| StartError::RequestLog(format!("logging.requests.jsonl {path}: {e}")))?,
            ),
            None => None,
        };
        let state = Arc::new(ProcessState {
            config: ArcSwap::from_pointee(snapshot),
            dns: ArcSwap::from_pointee(DnsTable::default()),
            registry: Registry::new(shards),
            backend,
            shards_total: shards,
            shards_up: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            drain_grace_ms: AtomicU64::new(u64::try_from(server.drain_grace.0.as_millis()).unwrap_or(u64::MAX)),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            tls,
            gossip: GossipHub::new(shards, gossip_queue),
            health: crate::gossip::HealthHub::new(shards, 1024),
            anonymous_ok,
            store: std::sync::OnceLock::new(),
            tokens: crate::jwks::TokenVerifiers::default(),
            minted: crate::minted::ProviderTokens::default(),
            alerts,
            restore: Mutex::new(opened.as_ref().map(|o| o.spend.clone()).unwrap_or_default()),
            mcp_sessions: crate::mcp::session::Sessions::new().map_err(StartError::McpSessions)?,
            mcp_stdio: Default::default(),
            mcp_user_tokens: Default::default(),
            mcp_hub: crate::mcp::hub::Hub::new(shards, 1024),
            request_jsonl,
            started_ms: crate::api::governance::now_ms(),
        });
        resolve_into(&state, &state.config.load());
        // Token issuers' keys before the first request, so tokens work from the start (an
        // unreachable issuer delays the start by its timeout, and is retried in the background).
        let mut fetcher = crate::jwks::Fetcher::new();
        {
            let cfg = state.config.load();
            fetcher.tick(&cfg.issuers, cfg.egress_proxy.as_deref(), &state.tokens);
        }
        // Likewise providers' access tokens (Vertex AI, Entra ID).
        let mut minter = crate::minted::Minter::default();
        minter.tick(&state.config.load(), &state.minted);
        let mut refresher = crate::mcp::user_oauth::Refresher::default();

        let reloader = Arc::new(Reloader {
            state: state.clone(),
            source: opts.source.clone(),
            generation: AtomicU64::new(1),
            lock: Mutex::new(()),
            loaded_mtime: Mutex::new(None),
            file: Mutex::new(file.without_governance()),
            managed: Mutex::new(managed),
        });
        let mut delivered_alerts = Vec::new();
        if let Some(o) = opened {
            delivered_alerts = o.alerts;
            crate::mcp::user_oauth::restore(&state.config.load().mcp, &state.mcp_user_tokens, &o.user_tokens);
            let flush = file.store.flush_interval.0;
            let control: Arc<dyn crate::store::Control> = reloader.clone();
            let store =
                crate::store::Store::start(o.db, o.path.clone(), flush, control).map_err(StartError::StoreThread)?;
            tracing::info!(path = %o.path.display(), restored_rows = o.spend.len(), "store open");
            let _ = state.store.set(Arc::new(store));
        }
        let alerts_thread =
            crate::alerts::spawn(alerts_inbox, delivered_alerts, state.store.get().cloned(), stop_control.clone())
                .map_err(StartError::StoreThread)?;

        let threads = ShardThreads { backend, entries: server.uring_entries.get(), pin };
        let shard_state = state.clone();
        let shard_threads = spawn_shards("shard", listeners, threads, move |id, listener| {
            shard::run(Rc::new(Shard::new(id, shard_state.clone())), listener)
        })
        .map_err(|e| StartError::Shard { shard: 0, reason: e.to_string() })?;

        // Wait for every shard to accept (or die trying).
        let deadline = Instant::now() + Duration::from_secs(10);
        while state.shards_up.load(SeqCst) < shards {
            if let Some(dead) = shard_threads.iter().position(JoinHandle::is_finished) {
                state.draining.store(true, SeqCst);
                return Err(StartError::Shard {
                    shard: dead,
                    reason: "its runtime exited during start (see the log)".into(),
                });
            }
            if Instant::now() > deadline {
                state.draining.store(true, SeqCst);
                return Err(StartError::Shard {
                    shard: state.shards_up.load(SeqCst),
                    reason: "not up after 10s".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }

        if let Ok(mut m) = reloader.loaded_mtime.lock() {
            *m = reloader.mtime();
        }
        let control = {
            let reloader = reloader.clone();
            let stop = stop_control.clone();
            std::thread::Builder::new()
                .name("control".into())
                .spawn(move || control_loop(&reloader, &stop, watch, poll_interval))
                .ok()
        };
        let tokens = {
            let state = state.clone();
            every_100ms("credentials", stop_control.clone(), move || {
                let cfg = state.config.load();
                fetcher.tick(&cfg.issuers, cfg.egress_proxy.as_deref(), &state.tokens);
                minter.tick(&cfg, &state.minted);
            })
        };
        let user_tokens = {
            let state = state.clone();
            every_100ms("mcp-user-tokens", stop_control.clone(), move || refresher.tick(&state.config.load(), &state))
        };

        tracing::info!(
            listen = %local_addr,
            shards,
            runtime = %backend,
            tls = state.tls.is_some(),
            config = %opts.source.describe(),
            "shardgate serving"
        );
        Ok(Gateway {
            state,
            reloader,
            local_addr,
            shard_threads,
            control,
            tokens,
            user_tokens,
            alerts: Some(alerts_thread),
            stop_control,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The runtime (and, for monoio, the I/O driver) in use.
    pub fn backend(&self) -> Backend {
        self.state.backend
    }

    /// Reloads the config now (what SIGHUP does). On error the running config stays.
    pub fn reload(&self) -> Result<u64, ConfigError> {
        self.reloader.reload()
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Snapshot> {
        self.state.config.load_full()
    }

    /// The Prometheus text `/metrics` serves.
    pub fn metrics_text(&self) -> String {
        self.state.registry.render(&self.state.gauges())
    }

    /// Upstream connections opened and reused, across shards.
    pub fn upstream_connections(&self) -> (u64, u64) {
        self.state.registry.upstream_connections()
    }

    /// Stops accepting, lets in-flight requests and streams finish for up to `grace`, then
    /// stops every shard. Returns when all shard threads have exited.
    pub fn shutdown(mut self, grace: Duration) {
        self.state.drain_grace_ms.store(u64::try_from(grace.as_millis()).unwrap_or(u64::MAX), SeqCst);
        self.state.draining.store(true, SeqCst);
        tracing::info!(?grace, "draining");
        for t in self.shard_threads.drain(..) {
            let _ = t.join();
        }
        self.stop_control.store(true, SeqCst);
        for t in
            [self.control.take(), self.tokens.take(), self.user_tokens.take(), self.alerts.take()].into_iter().flatten()
        {
            let _ = t.join();
        }
        // The shards made their last hand-over: what the JSON-lines sink holds is written.
        if let Some(sink) = &self.state.request_jsonl {
            sink.close();
        }
        if let Some(store) = self.state.store.get() {
            store.stop();
        }
        // Stdio MCP servers go with the gateway.
        self.state.mcp_stdio.stop_all();
        tracing::info!("drained; bye");
    }

    /// The drain grace configured in `server.drain_grace`.
    pub fn configured_grace(&self) -> Duration {
        Duration::from_millis(self.state.drain_grace_ms.load(SeqCst))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // A gateway dropped without `shutdown` (a failing test) must not leave threads serving.
        if !self.shard_threads.is_empty() {
            self.state.drain_grace_ms.store(0, SeqCst);
            self.state.draining.store(true, SeqCst);
            for t in self.shard_threads.drain(..) {
                let _ = t.join();
            }
        }
        self.stop_control.store(true, SeqCst);
        for t in
            [self.control.take(), self.tokens.take(), self.user_tokens.take(), self.alerts.take()].into_iter().flatten()
        {
            let _ = t.join();
        }
        // The shards made their last hand-over: what the JSON-lines sink holds is written.
        if let Some(sink) = &self.state.request_jsonl {
            sink.close();
        }
        if let Some(store) = self.state.store.get() {
            store.stop();
        }
        self.state.mcp_stdio.stop_all();
    }
}

fn control_loop(reloader: &Reloader, stop: &AtomicBool, watch: bool, poll_interval: Duration) {
    let tick = Duration::from_millis(20);
    let mut last_poll = Instant::now();
    let mut last_dns = Instant::now();
    while !stop.load(SeqCst) {
        std::thread::sleep(tick);
        if watch && reloader.source.path().is_some() && last_poll.elapsed() >= poll_interval {
            last_poll = Instant::now();
            let current = reloader.mtime();
            let loaded = reloader.loaded_mtime.lock().ok().and_then(|m| *m);
            if current.is_some() && current != loaded {
                let _ = reloader.reload();
            }
        }
        let refresh = reloader.state.config.load().dns_refresh;
        if last_dns.elapsed() >= refresh {
            last_dns = Instant::now();
            reloader.refresh_dns();
        }
    }
}
