//! Metrics: each shard writes only its own counters (relaxed atomics on its own cache lines, so
//! no contention and no lock); `/metrics` sums the shards at scrape time.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::actor::TargetMetrics;
use crate::error::ErrorKind;

/// Which API surface a request hit (a bounded label set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    /// Anthropic's `/v1/messages` (and `count_tokens`).
    Messages,
    Models,
    Passthrough,
    Ops,
    Admin,
    /// MCP virtual servers (`/mcp/{name}`).
    Mcp,
    Other,
}

impl Endpoint {
    const ALL: [Endpoint; 10] = [
        Endpoint::ChatCompletions,
        Endpoint::Completions,
        Endpoint::Embeddings,
        Endpoint::Messages,
        Endpoint::Models,
        Endpoint::Passthrough,
        Endpoint::Ops,
        Endpoint::Admin,
        Endpoint::Mcp,
        Endpoint::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat_completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Messages => "messages",
            Endpoint::Models => "models",
            Endpoint::Passthrough => "passthrough",
            Endpoint::Ops => "ops",
            Endpoint::Admin => "admin",
            Endpoint::Mcp => "mcp",
            Endpoint::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Outcomes of MCP tool calls, as audit records and metrics name them.
pub const MCP_OUTCOMES: [&str; 9] = [
    "ok",
    "tool_error",
    "upstream_error",
    "forbidden",
    "unknown_tool",
    "guardrail_blocked",
    "rate_limited",
    "client_closed",
    "invalid",
];

/// Status codes tracked individually; everything else lands in `other`.
const CODES: [u16; 23] =
    [200, 201, 202, 204, 400, 401, 403, 404, 405, 408, 409, 413, 415, 417, 422, 429, 431, 500, 501, 502, 503, 504, 505];
const CODE_SLOTS: usize = CODES.len() + 1;

fn code_slot(code: u16) -> usize {
    CODES.iter().position(|c| *c == code).unwrap_or(CODES.len())
}

/// Histogram bucket upper bounds, in microseconds (rendered as seconds).
const BUCKETS_US: [u64; 18] = [
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    120_000_000,
];

/// Bucket bounds for the gateway's own overhead: it lives in microseconds.
const OVERHEAD_BUCKETS_US: [u64; 14] = [5, 10, 20, 35, 50, 75, 100, 150, 250, 500, 1_000, 2_500, 5_000, 10_000];

/// A fixed-bucket latency histogram with atomic counts.
pub struct Histogram {
    bounds: &'static [u64],
    /// One per bound, plus the overflow bucket.
    buckets: Box<[AtomicU64]>,
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::with_bounds(&BUCKETS_US)
    }
}

impl Histogram {
    /// A histogram over these upper bounds (microseconds, ascending).
    pub fn with_bounds(bounds: &'static [u64]) -> Self {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let slot = self.bounds.iter().position(|b| us <= *b).unwrap_or(self.bounds.len());
        if let Some(b) = self.buckets.get(slot) {
            b.fetch_add(1, Relaxed);
        }
        self.sum_us.fetch_add(us, Relaxed);
    }
}

/// One shard's counters.
pub struct ShardMetrics {
    requests: [[AtomicU64; CODE_SLOTS]; Endpoint::ALL.len()],
    errors: [AtomicU64; ErrorKind::ALL.len()],
    pub in_flight: AtomicI64,
    pub open_connections: AtomicI64,
    pub accepted_connections: AtomicU64,
    pub upstream_new: AtomicU64,
    pub upstream_reused: AtomicU64,
    pub upstream_retries: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
    pub cached_tokens: AtomicU64,
    pub panics: AtomicU64,
    /// MCP tool calls by outcome (indexes of [`MCP_OUTCOMES`]).
    pub mcp_calls: [AtomicU64; MCP_OUTCOMES.len()],
    /// MCP audit records dropped because the store stayed behind.
    pub audit_dropped: AtomicU64,
    /// Requests from MCP servers relayed to clients (sampling, elicitation, roots).
    pub mcp_server_requests: AtomicU64,
    /// Clients' answers to those, delivered to their servers by this shard.
    pub mcp_client_answers: AtomicU64,
    /// Cancellations that reached another shard, forwarded by this one (the call's).
    pub mcp_cancels_from_elsewhere: AtomicU64,
    /// Client sessions ended on another shard whose upstream sessions this one closed.
    pub mcp_ends_from_elsewhere: AtomicU64,
    /// Messages servers sent outside calls that this shard forwarded to a `GET` stream on
    /// another.
    pub mcp_forwarded: AtomicU64,
    /// Request-log records dropped because the writers stayed behind.
    pub request_log_dropped: AtomicU64,
    /// Request-log records waiting on this shard for their writers.
    pub request_log_pending: AtomicU64,
    /// Micro-dollars spent (settled costs).
    pub spend_micros: AtomicU64,
    /// Budget thresholds crossed (as seen by this shard).
    pub budget_alerts: AtomicU64,
    /// Audit-mode rules that would have refused.
    pub audit_violations: AtomicU64,
    pub request_duration: Histogram,
    pub upstream_first_byte: Histogram,
    /// Time spent in the gateway itself: request time minus time waiting on the upstream.
    pub overhead: Histogram,
    /// What the gateway adds to a stream's time to first token: from the provider's first
    /// piece to the first event written to the client.
    pub stream_first_event: Histogram,
    /// The shard's target actors (see [`crate::actor`]).
    pub targets: Arc<arc_swap::ArcSwap<Vec<Arc<TargetMetrics>>>>,
    /// The shard's view of route targets (see [`crate::route_health`]).
    pub routes: Arc<arc_swap::ArcSwap<Vec<Arc<crate::route_health::TargetStats>>>>,
    /// Guardrail verdicts of the current config's rules.
    pub guardrails: arc_swap::ArcSwap<Vec<Arc<crate::api::guard::GuardStats>>>,
    /// Attempts made again after a retryable failure (same group).
    pub route_retries: AtomicU64,
    /// Moves to the next fallback group.
    pub route_fallbacks: AtomicU64,
    /// Routed requests that ended with every attempt failed.
    pub route_exhausted: AtomicU64,
    /// Second attempts sent by hedging, and those that answered first.
    pub route_hedges: AtomicU64,
    pub route_hedge_wins: AtomicU64,
}

impl Default for ShardMetrics {
    fn default() -> Self {
        ShardMetrics {
            requests: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
            in_flight: AtomicI64::new(0),
            open_connections: AtomicI64::new(0),
            accepted_connections: AtomicU64::new(0),
            upstream_new: AtomicU64::new(0),
            upstream_reused: AtomicU64::new(0),
            upstream_retries: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            completion_tokens: AtomicU64::new(0),
            cached_tokens: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            mcp_calls: std::array::from_fn(|_| AtomicU64::new(0)),
            mcp_server_requests: AtomicU64::new(0),
            mcp_client_answers: AtomicU64::new(0),
            mcp_cancels_from_elsewhere: AtomicU64::new(0),
            mcp_ends_from_elsewhere: AtomicU64::new(0),
            mcp_forwarded: AtomicU64::new(0),
            request_log_dropped: AtomicU64::new(0),
            request_log_pending: AtomicU64::new(0),
            audit_dropped: AtomicU64::new(0),
            spend_micros: AtomicU64::new(0),
            budget_alerts: AtomicU64::new(0),
            audit_violations: AtomicU64::new(0),
            request_duration: Histogram::default(),
            upstream_first_byte: Histogram::default(),
            overhead: Histogram::with_bounds(&OVERHEAD_BUCKETS_US),
            stream_first_event: Histogram::with_bounds(&OVERHEAD_BUCKETS_US),
            targets: Arc::default(),
            routes: Arc::default(),
            guardrails: arc_swap::ArcSwap::default(),
            route_retries: AtomicU64::new(0),
            route_fallbacks: AtomicU64::new(0),
            route_exhausted: AtomicU64::new(0),
            route_hedges: AtomicU64::new(0),
            route_hedge_wins: AtomicU64::new(0),
        }
    }
}

impl ShardMetrics {
    pub fn request(&self, endpoint: Endpoint, code: u16, took: Duration) {
        self.requests[endpoint.index()][code_slot(code)].fetch_add(1, Relaxed);
        self.request_duration.observe(took);
    }

    pub fn error(&self, kind: ErrorKind) {
        self.errors[kind.index()].fetch_add(1, Relaxed);
    }

    pub fn usage(&self, u: &adapters::openai::usage::Usage) {
        self.prompt_tokens.fetch_add(u.prompt_tokens, Relaxed);
        self.completion_tokens.fetch_add(u.completion_tokens, Relaxed);
        self.cached_tokens.fetch_add(u.cached_tokens, Relaxed);
    }

    fn total_requests(&self) -> u64 {
        self.requests.iter().flatten().map(|c| c.load(Relaxed)).sum()
    }
}

/// One unit of a gauge, given back on drop: a request dropped mid-way (a panic, or a drain that
/// drops its task) must not stay counted.
pub struct GaugeUnit<'a>(&'a AtomicI64);

impl<'a> GaugeUnit<'a> {
    pub fn enter(gauge: &'a AtomicI64) -> Self {
        gauge.fetch_add(1, Relaxed);
        GaugeUnit(gauge)
    }
}

impl Drop for GaugeUnit<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// Gauges that belong to the process rather than a shard.
pub struct ProcessGauges {
    pub config_generation: u64,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    pub ready: bool,
    pub driver: &'static str,
}

/// All shards' metrics, for rendering.
#[derive(Clone)]
pub struct Registry {
    shards: Arc<Vec<Arc<ShardMetrics>>>,
}

impl Registry {
    pub fn new(shards: usize) -> Self {
        Registry { shards: Arc::new((0..shards).map(|_| Arc::new(ShardMetrics::default())).collect()) }
    }

    pub fn shard(&self, i: usize) -> Arc<ShardMetrics> {
        self.shards.get(i).cloned().unwrap_or_default()
    }

    fn sum(&self, f: impl Fn(&ShardMetrics) -> u64) -> u64 {
        self.shards.iter().map(|s| f(s)).sum()
    }

    /// Every target actor's metrics, shard by shard (the admin API reads these).
    pub fn targets(&self) -> Vec<Arc<TargetMetrics>> {
        self.shards.iter().flat_map(|s| s.targets.load().iter().cloned().collect::<Vec<_>>()).collect()
    }

    /// Every route target's stats, shard by shard (the admin API reads these).
    pub fn route_targets(&self) -> Vec<Arc<crate::route_health::TargetStats>> {
        self.shards.iter().flat_map(|s| s.routes.load().iter().cloned().collect::<Vec<_>>()).collect()
    }

    /// Total of a counter across shards (tests and the bench harness read these).
    pub fn upstream_connections(&self) -> (u64, u64) {
        (self.sum(|s| s.upstream_new.load(Relaxed)), self.sum(|s| s.upstream_reused.load(Relaxed)))
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self, g: &ProcessGauges) -> String {
        let mut out = String::with_capacity(8192);
        let o = &mut out;
        header(o, "shardgate_requests_total", "counter", "Requests answered, by endpoint and status code.");
        for e in Endpoint::ALL {
            for slot in 0..CODE_SLOTS {
                let n = self.sum(|s| s.requests[e.index()][slot].load(Relaxed));
                if n > 0 {
                    let code = CODES.get(slot).map_or("other".to_string(), |c| c.to_string());
                    let _ = writeln!(o, "shardgate_requests_total{{endpoint=\"{}\",code=\"{code}\"}} {n}", e.label());
                }
            }
        }
        header(o, "shardgate_errors_total", "counter", "Errors produced by the gateway, by kind.");
        for k in ErrorKind::ALL {
            let n = self.sum(|s| s.errors[k.index()].load(Relaxed));
            let _ = writeln!(o, "shardgate_errors_total{{kind=\"{}\"}} {n}", k.label());
        }
        let gauge = |o: &mut String, name: &str, help: &str, v: i64| {
            header(o, name, "gauge", help);
            let _ = writeln!(o, "{name} {v}");
        };
        let in_flight: i64 = self.shards.iter().map(|s| s.in_flight.load(Relaxed)).sum();
        gauge(o, "shardgate_in_flight_requests", "Requests being handled now.", in_flight);
        let open: i64 = self.shards.iter().map(|s| s.open_connections.load(Relaxed)).sum();
        gauge(o, "shardgate_open_connections", "Downstream connections open now.", open);
        let counter = |o: &mut String, name: &str, help: &str, v: u64| {
            header(o, name, "counter", help);
            let _ = writeln!(o, "{name} {v}");
        };
        counter(
            o,
            "shardgate_accepted_connections_total",
            "Downstream connections accepted.",
            self.sum(|s| s.accepted_connections.load(Relaxed)),
        );
        header(
            o,
            "shardgate_upstream_connections_total",
            "counter",
            "Upstream requests by connection: a new connection or one reused from the pool.",
        );
        let (new, reused) = self.upstream_connections();
        let _ = writeln!(o, "shardgate_upstream_connections_total{{outcome=\"new\"}} {new}");
        let _ = writeln!(o, "shardgate_upstream_connections_total{{outcome=\"reused\"}} {reused}");
        counter(
            o,
            "shardgate_upstream_retries_total",
            "Requests retried once on a fresh connection after a reused one failed before any response byte.",
            self.sum(|s| s.upstream_retries.load(Relaxed)),
        );
        header(o, "shardgate_tokens_total", "counter", "Tokens reported by upstream usage, by kind.");
        for (kind, v) in [
            ("prompt", self.sum(|s| s.prompt_tokens.load(Relaxed))),
            ("completion", self.sum(|s| s.completion_tokens.load(Relaxed))),
            ("cached", self.sum(|s| s.cached_tokens.load(Relaxed))),
        ] {
            let _ = writeln!(o, "shardgate_tokens_total{{kind=\"{kind}\"}} {v}");
        }
        let spend = self.sum(|s| s.spend_micros.load(Relaxed));
        header(o, "shardgate_spend_usd_total", "counter", "US dollars spent, from real usage and the price table.");
        let _ = writeln!(o, "shardgate_spend_usd_total {}.{:06}", spend / 1_000_000, spend % 1_000_000);
        counter(
            o,
            "shardgate_budget_alerts_total",
            "Budget alert thresholds crossed.",
            self.sum(|s| s.budget_alerts.load(Relaxed)),
        );
        counter(
            o,
            "shardgate_audit_violations_total",
            "Requests an audit-mode rate limit or budget would have refused.",
            self.sum(|s| s.audit_violations.load(Relaxed)),
        );
        o.push_str("# HELP shardgate_mcp_tool_calls_total MCP tool calls through virtual servers, by outcome.\n");
        o.push_str("# TYPE shardgate_mcp_tool_calls_total counter\n");
        for (i, outcome) in MCP_OUTCOMES.iter().enumerate() {
            let n = self.sum(|s| s.mcp_calls.get(i).map_or(0, |c| c.load(Relaxed)));
            o.push_str(&format!("shardgate_mcp_tool_calls_total{{outcome=\"{outcome}\"}} {n}\n"));
        }
        counter(
            o,
            "shardgate_mcp_audit_dropped_total",
            "MCP audit records dropped because the store stayed behind.",
            self.sum(|s| s.audit_dropped.load(Relaxed)),
        );
        counter(
            o,
            "shardgate_request_log_dropped_total",
            "Request-log records dropped because their writers stayed behind (logging.requests.buffer).",
            self.sum(|s| s.request_log_dropped.load(Relaxed)),
        );
        gauge(
            o,
            "shardgate_request_log_pending",
            "Request-log records waiting on the shards for their writers.",
            i64::try_from(self.sum(|s| s.request_log_pending.load(Relaxed))).unwrap_or(i64::MAX),
        );
        counter(
            o,
            "shardgate_panics_total",
            "Connection tasks that panicked (the shard survived).",
            self.sum(|s| s.panics.load(Relaxed)),
        );
        self.render_targets(o);
        self.render_routes(o);
        self.histogram(
            o,
            "shardgate_request_duration_seconds",
            "Time from a request's first byte to its last response byte.",
            |s| &s.request_duration,
        );
        self.histogram(
            o,
            "shardgate_upstream_first_byte_seconds",
            "Time from sending a request upstream to its response head.",
            |s| &s.upstream_first_byte,
        );
        self.histogram(
            o,
            "shardgate_overhead_seconds",
            "Time spent in the gateway itself: from a request's first byte to its response head, minus the time waiting on the provider.",
            |s| &s.overhead,
        );
        self.histogram(
            o,
            "shardgate_stream_first_event_seconds",
            "What the gateway adds to a stream's time to first token: from the first piece of the provider's answer to the first event written to the client (translation included).",
            |s| &s.stream_first_event,
        );
        // Counters by shard: the MCP ones show what crossed shards (a client's next connection
        // may land on another shard than the call it answers or cancels).
        type PerShard = (&'static str, &'static str, fn(&ShardMetrics) -> u64);
        let by_shard: [PerShard; 6] = [
            ("shardgate_shard_requests_total", "Requests answered, by shard.", |s| s.total_requests()),
            (
                "shardgate_mcp_server_requests_relayed_total",
                "Requests from MCP servers (sampling, elicitation, roots) relayed to clients, by shard.",
                |s| s.mcp_server_requests.load(Relaxed),
            ),
            (
                "shardgate_mcp_client_answers_total",
                "Clients' answers to relayed requests delivered to their MCP servers, by the shard that delivered them.",
                |s| s.mcp_client_answers.load(Relaxed),
            ),
            (
                "shardgate_mcp_cancels_from_other_shards_total",
                "Cancellations that reached another shard, forwarded upstream by the shard with the call.",
                |s| s.mcp_cancels_from_elsewhere.load(Relaxed),
            ),
            (
                "shardgate_mcp_sessions_ended_elsewhere_total",
                "MCP client sessions ended on another shard whose upstream sessions this shard closed.",
                |s| s.mcp_ends_from_elsewhere.load(Relaxed),
            ),
            (
                "shardgate_mcp_forwarded_to_other_shards_total",
                "Messages MCP servers sent outside calls, forwarded by this shard to a client's GET stream on another.",
                |s| s.mcp_forwarded.load(Relaxed),
            ),
        ];
        for (name, help, value) in by_shard {
            header(o, name, "counter", help);
            for (i, s) in self.shards.iter().enumerate() {
                let _ = writeln!(o, "{name}{{shard=\"{i}\"}} {}", value(s));
            }
        }
        gauge(o, "shardgate_shards", "Shards running.", i64::try_from(self.shards.len()).unwrap_or(i64::MAX));
        header(o, "shardgate_info", "gauge", "Build and runtime information.");
        let _ = writeln!(o, "shardgate_info{{version=\"{}\",driver=\"{}\"}} 1", env!("CARGO_PKG_VERSION"), g.driver);
        gauge(
            o,
            "shardgate_ready",
            "1 when config is loaded, shards are up and the gateway is not draining.",
            i64::from(g.ready),
        );
        gauge(
            o,
            "shardgate_config_generation",
            "Generation of the config in force.",
            i64::try_from(g.config_generation).unwrap_or(i64::MAX),
        );
        header(o, "shardgate_config_reloads_total", "counter", "Config reloads by result.");
        let _ = writeln!(o, "shardgate_config_reloads_total{{result=\"ok\"}} {}", g.reloads_ok);
        let _ = writeln!(o, "shardgate_config_reloads_total{{result=\"failed\"}} {}", g.reloads_failed);
        out
    }

    /// Target actors: counters summed over shards, gauges per shard (each shard's actor has
    /// its own view of the target).
    fn render_targets(&self, o: &mut String) {
        let lists: Vec<_> = self.shards.iter().map(|s| s.targets.load_full()).collect();
        let all = || lists.iter().flat_map(|l| l.iter());
        let mut names: Vec<&str> = all().map(|t| &*t.target).collect();
        names.sort_unstable();
        names.dedup();
        let sum = |name: &str, f: &dyn Fn(&TargetMetrics) -> u64| -> u64 {
            all().filter(|t| &*t.target == name).map(|t| f(t)).sum()
        };
        header(
            o,
            "shardgate_target_restarts_total",
            "counter",
            "Target actors restarted by their supervisor after a panic.",
        );
        for n in &names {
            let v = sum(n, &|t| t.restarts.load(Relaxed));
            let _ = writeln!(o, "shardgate_target_restarts_total{{target=\"{n}\"}} {v}");
        }
        header(
            o,
            "shardgate_target_refused_total",
            "counter",
            "Requests a target actor did not run: mailbox full, no turn within actor.max_wait, restarting, or failed by a restart while they waited.",
        );
        for n in &names {
            for (reason, v) in [
                ("mailbox_full", sum(n, &|t| t.refused_full.load(Relaxed))),
                ("waited_too_long", sum(n, &|t| t.refused_wait.load(Relaxed))),
                ("restarting", sum(n, &|t| t.refused_restarting.load(Relaxed))),
                ("restarted_while_waiting", sum(n, &|t| t.failed_waiting.load(Relaxed))),
            ] {
                let _ = writeln!(o, "shardgate_target_refused_total{{target=\"{n}\",reason=\"{reason}\"}} {v}");
            }
        }
        let per_shard = |o: &mut String, name: &str, help: &str, f: &dyn Fn(&TargetMetrics) -> String| {
            header(o, name, "gauge", help);
            for t in all() {
                let _ = writeln!(o, "{name}{{target=\"{}\",shard=\"{}\"}} {}", t.target, t.shard, f(t));
            }
        };
        per_shard(o, "shardgate_target_in_flight", "Requests a target actor serves now.", &|t| {
            t.in_flight.load(Relaxed).to_string()
        });
        per_shard(o, "shardgate_target_waiting", "Requests waiting in a target actor's mailbox.", &|t| {
            t.waiting.load(Relaxed).to_string()
        });
        per_shard(
            o,
            "shardgate_target_latency_ewma_seconds",
            "Moving average of a target's whole exchange, as one shard saw it.",
            &|t| (t.latency_ewma_us.load(Relaxed) as f64 / 1e6).to_string(),
        );
        per_shard(
            o,
            "shardgate_target_ttft_ewma_seconds",
            "Moving average of a target's time to the first byte of its answer's body, as one shard saw it.",
            &|t| (t.ttft_ewma_us.load(Relaxed) as f64 / 1e6).to_string(),
        );
        per_shard(o, "shardgate_target_consecutive_failures", "Failures in a row a shard saw from a target.", &|t| {
            t.consecutive_failures.load(Relaxed).to_string()
        });
    }

    /// Routing: retries and fallbacks summed over shards; each route target's breaker and
    /// averages per shard.
    fn render_routes(&self, o: &mut String) {
        for (name, help, f) in [
            (
                "shardgate_route_retries_total",
                "Attempts made again after a retryable failure, within a fallback group.",
                &(|s: &ShardMetrics| s.route_retries.load(Relaxed)) as &dyn Fn(&ShardMetrics) -> u64,
            ),
            ("shardgate_route_fallbacks_total", "Moves to the next fallback group.", &|s| {
                s.route_fallbacks.load(Relaxed)
            }),
            ("shardgate_route_exhausted_total", "Routed requests that ended with every attempt failed.", &|s| {
                s.route_exhausted.load(Relaxed)
            }),
            ("shardgate_route_hedges_total", "Second attempts sent by hedging.", &|s| s.route_hedges.load(Relaxed)),
            ("shardgate_route_hedge_wins_total", "Hedged second attempts that answered first.", &|s| {
                s.route_hedge_wins.load(Relaxed)
            }),
        ] {
            header(o, name, "counter", help);
            let _ = writeln!(o, "{name} {}", self.sum(f));
        }
        let lists: Vec<_> = self.shards.iter().map(|s| s.routes.load_full()).collect();
        let all = || lists.iter().flat_map(|l| l.iter());
        let mut keys: Vec<&str> = all().map(|t| &*t.key).collect();
        keys.sort_unstable();
        keys.dedup();
        let sum = |key: &str, f: &dyn Fn(&crate::route_health::TargetStats) -> u64| -> u64 {
            all().filter(|t| &*t.key == key).map(|t| f(t)).sum()
        };
        header(o, "shardgate_guardrail_verdicts_total", "counter", "Guardrail verdicts, by rule, phase and outcome.");
        let guards: Vec<_> = self.shards.iter().map(|s| s.guardrails.load_full()).collect();
        let mut verdicts: std::collections::BTreeMap<(String, &str, &str), u64> = std::collections::BTreeMap::new();
        for stats in guards.iter().flat_map(|l| l.iter()) {
            for (phase, outcome, n) in stats.counts() {
                *verdicts.entry((stats.rule.to_string(), phase, outcome)).or_default() += n;
            }
        }
        for ((rule, phase, outcome), n) in &verdicts {
            let _ = writeln!(
                o,
                "shardgate_guardrail_verdicts_total{{rule=\"{rule}\",phase=\"{phase}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        header(o, "shardgate_route_target_attempts_total", "counter", "Attempts at a route target.");
        for k in &keys {
            let v = sum(k, &|t| t.attempts.load(Relaxed));
            let _ = writeln!(o, "shardgate_route_target_attempts_total{{target=\"{k}\"}} {v}");
        }
        header(o, "shardgate_route_target_failures_total", "counter", "Failed attempts at a route target.");
        for k in &keys {
            let v = sum(k, &|t| t.failures.load(Relaxed));
            let _ = writeln!(o, "shardgate_route_target_failures_total{{target=\"{k}\"}} {v}");
        }
        header(o, "shardgate_breaker_opens_total", "counter", "Times a route target's circuit breaker opened.");
        for k in &keys {
            let v = sum(k, &|t| t.breaker_opens.load(Relaxed));
            let _ = writeln!(o, "shardgate_breaker_opens_total{{target=\"{k}\"}} {v}");
        }
        header(
            o,
            "shardgate_breaker_state",
            "gauge",
            "A route target's circuit breaker on one shard: 0 closed, 1 open, 2 half-open.",
        );
        for t in all() {
            let v = t.breaker.load(Relaxed);
            let _ = writeln!(o, "shardgate_breaker_state{{target=\"{}\",shard=\"{}\"}} {v}", t.key, t.shard);
        }
    }

    fn histogram(&self, o: &mut String, name: &str, help: &str, pick: impl Fn(&ShardMetrics) -> &Histogram) {
        header(o, name, "histogram", help);
        let Some(first) = self.shards.first() else { return };
        let bounds = pick(first).bounds;
        let count_at = |s: &ShardMetrics, i: usize| pick(s).buckets.get(i).map_or(0, |b| b.load(Relaxed));
        let mut cumulative = 0;
        for (i, bound) in bounds.iter().enumerate() {
            cumulative += self.sum(|s| count_at(s, i));
            let _ = writeln!(o, "{name}_bucket{{le=\"{}\"}} {cumulative}", *bound as f64 / 1e6);
        }
        cumulative += self.sum(|s| count_at(s, bounds.len()));
        let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum(|s| pick(s).sum_us.load(Relaxed));
        let _ = writeln!(o, "{name}_sum {}", sum as f64 / 1e6);
        let _ = writeln!(o, "{name}_count {cumulative}");
    }
}

fn header(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_sums_across_shards() {
        let r = Registry::new(2);
        r.shard(0).request(Endpoint::ChatCompletions, 200, Duration::from_millis(3));
        r.shard(1).request(Endpoint::ChatCompletions, 200, Duration::from_millis(300));
        r.shard(1).request(Endpoint::Models, 599, Duration::from_micros(10));
        r.shard(0).error(ErrorKind::UpstreamTimeout);
        let text = r.render(&ProcessGauges {
            config_generation: 3,
            reloads_ok: 2,
            reloads_failed: 1,
            ready: true,
            driver: "epoll",
        });
        assert!(text.contains("shardgate_requests_total{endpoint=\"chat_completions\",code=\"200\"} 2"));
        assert!(text.contains("shardgate_requests_total{endpoint=\"models\",code=\"other\"} 1"));
        assert!(text.contains("shardgate_errors_total{kind=\"upstream_timeout\"} 1"));
        assert!(text.contains("shardgate_request_duration_seconds_bucket{le=\"0.005\"} 2"));
        assert!(text.contains("shardgate_request_duration_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("shardgate_request_duration_seconds_count 3"));
        assert!(text.contains("shardgate_config_generation 3"));
    }
}
