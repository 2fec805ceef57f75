//! The mock provider. It runs on the engine's own shards and HTTP codec, so it is as fast as the
//! gateway and costs the benchmark little.
//!
//! Every knob has a process default ([`Knobs`]) and a per-request override by header, so one
//! mock serves a whole test suite:
//!
//! | header | effect |
//! |---|---|
//! | `x-mock-latency-ms` | wait before the response head |
//! | `x-mock-ttft-ms` | streams: wait after the head before the first token |
//! | `x-mock-tokens-per-sec` | streams: pace of token events |
//! | `x-mock-tokens` | completion tokens (= content chunks of a stream) |
//! | `x-mock-token-bytes` | bytes per token (shapes the answer size) |
//! | `x-mock-fault` | `status:503`, `timeout`, `drop:N` (close after N stream events), `malformed` (truncated JSON), `garbage` (not HTTP), `reset` (close without answering), `context_length` / `content_policy` (OpenAI's 400s for those) |
//! | `x-mock-retry-after` | `retry-after` header on a status fault |
//! | `x-mock-echo` | answer any path by describing the request received (method, target, headers, body) |
//! | `x-mock-id`, `x-mock-created` | fix the answer's `id` and `created` (byte-exact comparisons) |
//! | (paths) | `/v1/moderations`, `/contentsafety/text:analyze` and `/v1/guard` answer as the checking services guardrails ask (see `checking_service`) |
//! | `x-mock-text` | the answer's text, exactly: its tokens (stream chunks) separated by `\|` |
//! | `x-mock-echo-prompt` | chat: the answer is the text of the messages received, joined by ` \| ` |
//! | `x-mock-tool-args` | OpenAI chat: the answer calls the tool `lookup` with these arguments, streamed in pieces separated by `\|` |
//!
//! Besides OpenAI's paths it speaks Anthropic's `/v1/messages`, Gemini's `generateContent`,
//! Bedrock's Converse and Azure OpenAI's deployment URLs (`/openai/deployments/{d}/…?api-version=`
//! and `/openai/v1/…`, which need `api-key` or a bearer token), Vertex AI's Gemini paths
//! (`/v1/projects/…/models/{m}:generateContent`, with a bearer token), Claude on Bedrock through
//! InvokeModel (`/model/{anthropic.claude…}/invoke` and `/invoke-with-response-stream`),
//! Google's OAuth token
//! endpoint (`POST /token`, the JWT bearer grant), Entra ID's
//! (`POST /{tenant}/oauth2/v2.0/token`, the client credentials grant) and Azure's managed
//! identity endpoints (`GET /metadata/identity/oauth2/token`, the Instance Metadata Service, and
//! `GET /msi/token`, App Service's, which wants `x-identity-header: mock-identity-header`).

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use adapters::openai::request::Scanner;
use engine::http::{Limits, Request, Responder, Service};
use engine::listener::{ConnectionObserver, ShardThreads, accept_loop, bind_listeners, spawn_shards};
use engine::mock::{self as canned, Reply};
use engine::rt::{self, Backend, Conn, DriverKind, LocalEvent};

/// A misbehaviour on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and an OpenAI-style error body.
    Status(u16),
    /// Never answer (until the mock stops).
    Timeout,
    /// Streams: close the connection after this many events, mid-body.
    DropMidStream(usize),
    /// A 200 JSON answer cut in the middle (valid HTTP framing, invalid JSON).
    Malformed,
    /// Bytes that are not an HTTP response.
    Garbage,
    /// Close the connection without answering.
    Reset,
    /// 400 as OpenAI answers a prompt longer than the model's context (`context_length_exceeded`).
    ContextLength,
    /// 400 as OpenAI answers a prompt its safety system refused (`content_policy_violation`).
    ContentPolicy,
}

impl Fault {
    pub fn parse(s: &str) -> Result<Fault, String> {
        let s = s.trim();
        if let Some(code) = s.strip_prefix("status:") {
            return code.parse().map(Fault::Status).map_err(|_| format!("bad status in fault {s:?}"));
        }
        if let Some(n) = s.strip_prefix("drop:") {
            return n.parse().map(Fault::DropMidStream).map_err(|_| format!("bad count in fault {s:?}"));
        }
        match s {
            "timeout" => Ok(Fault::Timeout),
            "malformed" => Ok(Fault::Malformed),
            "garbage" => Ok(Fault::Garbage),
            "reset" => Ok(Fault::Reset),
            "context_length" => Ok(Fault::ContextLength),
            "content_policy" => Ok(Fault::ContentPolicy),
            _ => Err(format!(
                "unknown fault {s:?}: use status:N, timeout, drop:N, malformed, garbage, reset, context_length or content_policy"
            )),
        }
    }
}

/// Default behaviour; each can be overridden per request by a header.
#[derive(Debug, Clone)]
pub struct Knobs {
    pub latency: Duration,
    pub ttft: Duration,
    /// `None`: events go out as fast as the socket takes them.
    pub tokens_per_sec: Option<f64>,
    pub tokens: usize,
    pub token_bytes: Option<usize>,
    pub fault: Option<Fault>,
    /// Share of requests that get `fault` (spread evenly, deterministic).
    pub fault_rate: f64,
    /// Only the first this many requests (of each mock shard) may get `fault`; then the mock
    /// heals (a provider that recovers, for retries and half-open breakers).
    pub fault_first: Option<u64>,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            latency: Duration::ZERO,
            ttft: Duration::ZERO,
            tokens_per_sec: None,
            tokens: 16,
            token_bytes: None,
            fault: None,
            fault_rate: 1.0,
            fault_first: None,
        }
    }
}

/// Where and how the mock runs.
#[derive(Debug, Clone)]
pub struct MockOptions {
    pub listen: SocketAddr,
    pub shards: usize,
    pub backend: Backend,
    pub pin: bool,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub knobs: Knobs,
}

impl MockOptions {
    /// One unpinned epoll shard on a free loopback port, default knobs: what tests want.
    pub fn for_tests() -> Self {
        MockOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            shards: 1,
            backend: Backend::Monoio(DriverKind::Epoll),
            pin: false,
            tls: None,
            knobs: Knobs::default(),
        }
    }
}

/// Counters a test or benchmark can read while the mock runs.
#[derive(Debug, Default)]
pub struct MockStats {
    pub requests: AtomicU64,
    pub connections_accepted: AtomicU64,
    pub connections_open: AtomicI64,
    /// Streams whose client went away before the last event.
    pub streams_cut_by_client: AtomicU64,
}

/// A running mock provider.
pub struct MockServer {
    addr: SocketAddr,
    stats: Arc<MockStats>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl MockServer {
    pub fn start(opts: MockOptions) -> std::io::Result<MockServer> {
        let listeners = bind_listeners(opts.listen, opts.shards.max(1), opts.backend)?;
        let addr = listeners.first().map_or(Ok(opts.listen), std::net::TcpListener::local_addr)?;
        let stats = Arc::new(MockStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let up = Arc::new(AtomicU64::new(0));
        let n = listeners.len() as u64;
        let threads = ShardThreads { backend: opts.backend, entries: 1024, pin: opts.pin };
        let (st, sp, u, knobs, tls) = (stats.clone(), stop.clone(), up.clone(), opts.knobs.clone(), opts.tls.clone());
        let threads = spawn_shards("mock", listeners, threads, move |_, listener| {
            run_shard(listener, knobs.clone(), st.clone(), sp.clone(), u.clone(), tls.clone())
        })?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while up.load(SeqCst) < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(MockServer { addr, stats, stop, threads })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> &MockStats {
        &self.stats
    }

    /// Stops accepting, ends sleeping handlers, and waits for the shards.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct MockShard {
    knobs: Knobs,
    stats: Arc<MockStats>,
    drain: LocalEvent,
    scanner: std::cell::RefCell<Scanner>,
    served: Cell<u64>,
    open: Cell<usize>,
}

impl ConnectionObserver for MockShard {
    fn opened(&self) {
        self.open.set(self.open.get() + 1);
        self.stats.connections_accepted.fetch_add(1, Relaxed);
        self.stats.connections_open.fetch_add(1, Relaxed);
    }

    fn closed(&self) {
        self.open.set(self.open.get().saturating_sub(1));
        self.stats.connections_open.fetch_sub(1, Relaxed);
    }
}

async fn run_shard(
    listener: std::net::TcpListener,
    knobs: Knobs,
    stats: Arc<MockStats>,
    stop: Arc<AtomicBool>,
    up: Arc<AtomicU64>,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let shard = Rc::new(MockShard {
        knobs,
        stats,
        drain: LocalEvent::new(),
        scanner: std::cell::RefCell::new(Scanner::new()),
        served: Cell::new(0),
        open: Cell::new(0),
    });
    let watcher = shard.clone();
    rt::spawn(async move {
        while !stop.load(SeqCst) {
            rt::sleep(Duration::from_millis(10)).await;
        }
        watcher.drain.set();
    });
    up.fetch_add(1, SeqCst);
    let service = Rc::new(MockService { shard: shard.clone() });
    let _ = accept_loop(listener, service, shard.clone(), shard.drain.clone(), tls, Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(2);
    while shard.open.get() > 0 && Instant::now() < deadline {
        rt::sleep(Duration::from_millis(5)).await;
    }
}

struct MockService {
    shard: Rc<MockShard>,
}

/// Knobs for one request: defaults with header overrides.
struct RequestKnobs {
    latency: Duration,
    ttft: Duration,
    tokens_per_sec: Option<f64>,
    tokens: usize,
    token_bytes: Option<usize>,
    fault: Option<Fault>,
    retry_after: Option<String>,
    id: Option<String>,
    created: Option<u64>,
    /// `x-mock-text`: the answer's text, its tokens separated by `|`.
    script: Vec<String>,
    /// `x-mock-tool-args`: OpenAI chat answers call the tool `lookup` with these arguments,
    /// streamed in these pieces (separated by `|`).
    tool_args: Vec<String>,
}

fn header_str<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.head.header(name).and_then(|v| std::str::from_utf8(v).ok()).map(str::trim)
}

fn header_num<T: std::str::FromStr>(req: &Request, name: &str) -> Option<T> {
    header_str(req, name).and_then(|v| v.parse().ok())
}

impl MockService {
    fn knobs_for(&self, req: &Request) -> RequestKnobs {
        let k = &self.shard.knobs;
        let n = self.shard.served.get() + 1;
        self.shard.served.set(n);
        // Spread faults evenly: request n gets one when floor(n * rate) steps up.
        let rate = k.fault_rate.clamp(0.0, 1.0);
        let due = ((n as f64) * rate).floor() > (((n - 1) as f64) * rate).floor()
            && k.fault_first.is_none_or(|first| n <= first);
        let fault = match header_str(req, "x-mock-fault") {
            Some(f) => Fault::parse(f).ok(),
            None => k.fault.filter(|_| due),
        };
        let script: Vec<String> = header_str(req, "x-mock-text")
            .map(|t| t.split('|').take(MAX_TOKENS).map(str::to_string).collect())
            .unwrap_or_default();
        let tool_args: Vec<String> = header_str(req, "x-mock-tool-args")
            .map(|t| t.split('|').take(MAX_TOKENS).map(str::to_string).collect())
            .unwrap_or_default();
        RequestKnobs {
            tool_args,
            latency: header_num(req, "x-mock-latency-ms").map_or(k.latency, Duration::from_millis),
            ttft: header_num(req, "x-mock-ttft-ms").map_or(k.ttft, Duration::from_millis),
            // Bounded: a header must not make the mock allocate without limit or panic.
            tokens_per_sec: header_num(req, "x-mock-tokens-per-sec")
                .or(k.tokens_per_sec)
                .filter(|r: &f64| r.is_finite() && *r >= 0.01),
            tokens: if script.is_empty() {
                header_num(req, "x-mock-tokens").unwrap_or(k.tokens).min(MAX_TOKENS)
            } else {
                script.len()
            },
            token_bytes: header_num(req, "x-mock-token-bytes")
                .or(k.token_bytes)
                .map(|b: usize| b.clamp(1, MAX_TOKEN_BYTES)),
            fault,
            retry_after: header_str(req, "x-mock-retry-after").map(str::to_string),
            id: header_str(req, "x-mock-id").map(str::to_string),
            created: header_num(req, "x-mock-created"),
            script,
        }
    }

    /// Sleeps unless the mock is stopping.
    async fn wait(&self, d: Duration) -> bool {
        d.is_zero() || rt::unless(&self.shard.drain, rt::sleep(d)).await.is_some()
    }
}

const JSON: &str = "application/json";
/// Upper bounds on what one request can ask of the mock.
const MAX_TOKENS: usize = 100_000;
const MAX_TOKEN_BYTES: usize = 64 * 1024;

impl Service for MockService {
    fn limits(&self) -> Limits {
        Limits { max_body_bytes: 64 * 1024 * 1024, ..Limits::default() }
    }

    fn drain_event(&self) -> &LocalEvent {
        &self.shard.drain
    }

    async fn call<C: Conn>(&self, req: Request, resp: &mut Responder<'_, C>) {
        self.shard.stats.requests.fetch_add(1, Relaxed);
        let path = req.head.path().to_string();
        let method = req.head.method();
        if method == "GET" && path == "/mock/stats" {
            let s = &self.shard.stats;
            let body = serde_json::json!({
                "requests": s.requests.load(Relaxed),
                "connections_accepted": s.connections_accepted.load(Relaxed),
                "connections_open": s.connections_open.load(Relaxed),
                "streams_cut_by_client": s.streams_cut_by_client.load(Relaxed),
            });
            let _ = resp.start(200).header("content-type", JSON).body(body.to_string().as_bytes()).await;
            return;
        }
        if method == "GET" && path == "/v1/models" {
            let body = br#"{"object":"list","data":[{"id":"mock-1","object":"model","created":0,"owned_by":"shardgate-mock"}]}"#;
            let _ = resp.start(200).header("content-type", JSON).body(body).await;
            return;
        }
        if method == "GET" && path == "/mcp-oauth/authorize" {
            let (status, location, body) = crate::mock_mcp::authorize(&req);
            let mut head = resp.start(status).header("content-type", "text/plain");
            if let Some(l) = &location {
                head = head.header("location", l);
            }
            let _ = head.body(body.as_bytes()).await;
            return;
        }
        if method == "POST" && path == "/mcp-oauth/token" {
            let (status, body) = crate::mock_mcp::token(&req);
            let _ = resp.start(status).header("content-type", JSON).body(body.as_bytes()).await;
            return;
        }
        if let Some(server) = path.strip_prefix("/mcp/") {
            return crate::mock_mcp::serve(server, &req, resp).await;
        }
        let knobs = self.knobs_for(&req);
        if req.head.header("x-mock-echo").is_some() {
            return echo(&req, resp).await;
        }
        if !self.wait(knobs.latency).await {
            return;
        }
        match knobs.fault {
            Some(Fault::Timeout) => {
                // Hold the request until the mock stops; the caller's timeout must fire first.
                self.shard.drain.wait().await;
                return;
            }
            Some(Fault::Reset) => {
                let _ = resp.send_raw(b"").await;
                return;
            }
            Some(Fault::Garbage) => {
                let _ = resp.send_raw(b"SPLAT this is not HTTP\r\n\r\n").await;
                return;
            }
            Some(Fault::Status(code)) => {
                let body = if path == "/v1/messages" {
                    // Anthropic's error shape, with the type Anthropic gives each status.
                    let kind = match code {
                        400 => "invalid_request_error",
                        401 => "authentication_error",
                        403 => "permission_error",
                        404 => "not_found_error",
                        429 => "rate_limit_error",
                        529 => "overloaded_error",
                        _ => "api_error",
                    };
                    String::from_utf8_lossy(&engine::mock::anthropic::error_body(
                        kind,
                        &format!("mock fault: status {code}"),
                    ))
                    .into_owned()
                } else if path.starts_with("/model/") {
                    // Bedrock's: `{"message"}`, the type in `x-amzn-errortype` (below).
                    String::from_utf8_lossy(&engine::mock::bedrock::error_body(&format!("mock fault: status {code}")))
                        .into_owned()
                } else if path.starts_with("/v1beta/") {
                    // Gemini's error shape, with Google's canonical status names.
                    let status = match code {
                        400 => "INVALID_ARGUMENT",
                        401 => "UNAUTHENTICATED",
                        403 => "PERMISSION_DENIED",
                        404 => "NOT_FOUND",
                        429 => "RESOURCE_EXHAUSTED",
                        503 => "UNAVAILABLE",
                        504 => "DEADLINE_EXCEEDED",
                        _ => "INTERNAL",
                    };
                    let body = engine::mock::gemini::error_body(code, status, &format!("mock fault: status {code}"));
                    String::from_utf8_lossy(&body).into_owned()
                } else {
                    format!(
                        r#"{{"error":{{"message":"mock fault: status {code}","type":"server_error","param":null,"code":"mock_fault"}}}}"#
                    )
                };
                let mut head = resp.start(code).header("content-type", JSON);
                if path.starts_with("/model/") {
                    let kind = match code {
                        400 => "ValidationException",
                        403 => "AccessDeniedException",
                        404 => "ResourceNotFoundException",
                        429 => "ThrottlingException",
                        503 => "ServiceUnavailableException",
                        _ => "InternalServerException",
                    };
                    head = head.header("x-amzn-errortype", kind);
                }
                if let Some(ra) = &knobs.retry_after {
                    head = head.header("retry-after", ra);
                }
                let _ = head.body(body.as_bytes()).await;
                return;
            }
            Some(Fault::ContextLength) => {
                let body = br#"{"error":{"message":"This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens. Please reduce the length of the messages.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
                let _ = resp.start(400).header("content-type", JSON).body(body).await;
                return;
            }
            Some(Fault::ContentPolicy) if path.starts_with("/openai/") => {
                // Azure's content filter: its verdict per category in `innererror`.
                let body = br#"{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy.","type":null,"param":"prompt","code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation","content_filter_result":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":true,"severity":"medium"}}}}}"#;
                let _ = resp.start(400).header("content-type", JSON).body(body).await;
                return;
            }
            Some(Fault::ContentPolicy) => {
                let body = br#"{"error":{"message":"Your request was rejected as a result of our safety system.","type":"invalid_request_error","param":null,"code":"content_policy_violation"}}"#;
                let _ = resp.start(400).header("content-type", JSON).body(body).await;
                return;
            }
            Some(Fault::Malformed) => {
                let body = br#"{"id":"chatcmpl-broken","object":"chat.completion","choices":[{"index":0,"mess"#;
                let _ = resp.start(200).header("content-type", JSON).body(body).await;
                return;
            }
            Some(Fault::DropMidStream(_)) | None => {}
        }
        match (method, path.as_str()) {
            ("POST", "/v1/chat/completions" | "/v1/completions" | "/v1/embeddings") => {
                self.inference(&path, &req, &knobs, resp).await
            }
            ("POST", p) if p.starts_with("/openai/") => match azure_route(&req) {
                Ok(openai_path) => self.inference(openai_path, &req, &knobs, resp).await,
                Err((status, body)) => {
                    let _ = resp.start(status).header("content-type", JSON).body(body.as_bytes()).await;
                }
            },
            ("POST", "/v1/messages") => self.anthropic(&req, &knobs, resp).await,
            ("POST", p) if (p.starts_with("/v1beta/models/") || p.starts_with("/v1/projects/")) && p.contains(":") => {
                self.gemini(p, &req, &knobs, resp).await
            }
            ("POST", "/v1/moderations" | "/v1/guard" | "/contentsafety/text:analyze") => {
                let (status, body) = checking_service(&path, &req.body);
                let _ = resp.start(status).header("content-type", JSON).body(body.as_bytes()).await;
            }
            ("POST", "/token") => {
                let (status, body) = self.oauth_token(&req);
                let _ = resp.start(status).header("content-type", JSON).body(body.as_bytes()).await;
            }
            ("GET", "/metadata/identity/oauth2/token" | "/msi/token") => {
                let (status, body) = self.managed_identity_token(&path, &req);
                let _ = resp.start(status).header("content-type", JSON).body(body.as_bytes()).await;
            }
            ("POST", p) if p.ends_with("/oauth2/v2.0/token") => {
                let (status, body) = self.entra_token(&req);
                let _ = resp.start(status).header("content-type", JSON).body(body.as_bytes()).await;
            }
            ("POST", p)
                if p.starts_with("/model/") && (p.ends_with("/converse") || p.ends_with("/converse-stream")) =>
            {
                self.bedrock(p.ends_with("/converse-stream"), &req, &knobs, resp).await
            }
            ("POST", p)
                if p.starts_with("/model/")
                    && p.contains("anthropic.claude")
                    && (p.ends_with("/invoke") || p.ends_with("/invoke-with-response-stream")) =>
            {
                self.bedrock_claude(p.ends_with("/invoke-with-response-stream"), &req, &knobs, resp).await
            }
            ("POST", p) if p.starts_with("/model/") && p.ends_with("/invoke") => bedrock_invoke(p, &req, resp).await,
            _ => echo(&req, resp).await,
        }
    }
}

impl MockService {
    /// Google's OAuth token endpoint for the JWT bearer grant: a well-formed assertion for the
    /// cloud-platform scope gets `ya29.mock-{n}`; an issuer containing `revoked` gets
    /// `invalid_grant`, as a deleted service-account key does; one containing `short` gets a
    /// token that lives 3 s.
    fn oauth_token(&self, req: &Request) -> (u16, String) {
        use base64::Engine as _;
        let form = String::from_utf8_lossy(&req.body);
        let field = |name: &str| form.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='));
        let grant_ok = field("grant_type") == Some("urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer");
        let claims = field("assertion")
            .filter(|a| a.split('.').count() == 3)
            .and_then(|a| a.split('.').nth(1))
            .and_then(|c| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(c).ok())
            .and_then(|c| serde_json::from_slice::<serde_json::Value>(&c).ok());
        let Some(claims) = claims.filter(|_| grant_ok) else {
            return (400, r#"{"error":"invalid_request","error_description":"Invalid assertion format."}"#.into());
        };
        let iss = claims["iss"].as_str().unwrap_or("");
        if iss.contains("revoked") {
            return (400, r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#.into());
        }
        if !claims["scope"].as_str().unwrap_or("").contains("cloud-platform") {
            return (400, r#"{"error":"invalid_scope","error_description":"Invalid OAuth scope."}"#.into());
        }
        let n = self.shard.served.get();
        // A key whose email says `short` gets tokens that live 3 s.
        let expires_in = if iss.contains("short") { 3 } else { 3599 };
        (200, format!(r#"{{"access_token":"ya29.mock-{n}","expires_in":{expires_in},"token_type":"Bearer"}}"#))
    }

    /// Microsoft Entra ID's token endpoint for the client credentials grant: a request for a
    /// `.default` scope gets `eyJ0.mock-entra-{n}`; the client secret `wrong` gets Entra's
    /// `invalid_client`.
    fn entra_token(&self, req: &Request) -> (u16, String) {
        let form = String::from_utf8_lossy(&req.body);
        let field = |name: &str| form.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='));
        if field("grant_type") != Some("client_credentials") || field("client_id").is_none_or(str::is_empty) {
            return (
                400,
                r#"{"error":"invalid_request","error_description":"AADSTS900144: The request body must contain the following parameter: 'client_id'."}"#.into(),
            );
        }
        let assertion = field("client_assertion");
        let federated = field("client_assertion_type")
            == Some("urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer")
            && assertion.is_some_and(|a| !a.is_empty());
        if federated && assertion == Some("expired") {
            return (
                401,
                r#"{"error":"invalid_client","error_description":"AADSTS700024: Client assertion is not within its valid time range.","error_codes":[700024]}"#.into(),
            );
        }
        if !federated && field("client_secret").is_none_or(str::is_empty) {
            return (
                401,
                r#"{"error":"invalid_client","error_description":"AADSTS7000218: The request body must contain the following parameter: 'client_assertion' or 'client_secret'.","error_codes":[7000218]}"#.into(),
            );
        }
        if field("client_secret") == Some("wrong") {
            return (
                401,
                r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.","error_codes":[7000215]}"#.into(),
            );
        }
        if !field("scope").is_some_and(|s| s.ends_with("%2F.default")) {
            return (400, r#"{"error":"invalid_scope","error_description":"AADSTS1002012: The provided value for scope is not valid."}"#.into());
        }
        let n = self.shard.served.get();
        (
            200,
            format!(
                r#"{{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ0.mock-entra-{n}"}}"#
            ),
        )
    }

    /// Azure's managed identity endpoints: the Instance Metadata Service (needs `Metadata:
    /// true`, api-version 2018-02-01) and App Service's (needs the identity header, api-version
    /// 2019-08-01). A token is `eyJ0.mock-msi-{n}`; the client id `unknown` is not found.
    fn managed_identity_token(&self, path: &str, req: &Request) -> (u16, String) {
        let query = req.head.target().split_once('?').map_or("", |(_, q)| q);
        let field = |name: &str| query.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='));
        let bad = |why: &str| (400, format!(r#"{{"error":"invalid_request","error_description":"{why}"}}"#));
        let imds = path == "/metadata/identity/oauth2/token";
        if imds && header_str(req, "metadata") != Some("true") {
            return bad("Required metadata header not specified");
        }
        if !imds && header_str(req, "x-identity-header") != Some("mock-identity-header") {
            return (
                401,
                r#"{"statusCode":401,"message":"Unauthorized: the X-IDENTITY-HEADER is missing or wrong"}"#.into(),
            );
        }
        if field("api-version") != Some(if imds { "2018-02-01" } else { "2019-08-01" }) {
            return bad("Invalid API version");
        }
        let Some(resource) = field("resource").filter(|r| !r.is_empty()) else {
            return bad("Required audience parameter not specified");
        };
        if field("client_id") == Some("unknown") {
            return bad("Identity not found");
        }
        let n = self.shard.served.get();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let resource = resource.replace("%3A", ":").replace("%2F", "/");
        let body = if imds {
            format!(
                r#"{{"access_token":"eyJ0.mock-msi-{n}","refresh_token":"","expires_in":"3599","expires_on":"{}","not_before":"{now}","resource":"{resource}","token_type":"Bearer"}}"#,
                now + 3599
            )
        } else {
            format!(
                r#"{{"access_token":"eyJ0.mock-msi-{n}","expires_on":"{}","resource":"{resource}","token_type":"Bearer","client_id":"{}"}}"#,
                now + 3599,
                field("client_id").unwrap_or("system-assigned")
            )
        };
        (200, body)
    }

    async fn inference<C: Conn>(&self, path: &str, req: &Request, knobs: &RequestKnobs, resp: &mut Responder<'_, C>) {
        let facts = self.shard.scanner.borrow_mut().scan(&req.body);
        let facts = match facts {
            Ok(f) => f,
            Err(e) => {
                let body = format!(
                    r#"{{"error":{{"message":{},"type":"invalid_request_error","param":null,"code":null}}}}"#,
                    serde_json::Value::String(e.to_string())
                );
                let _ = resp.start(400).header("content-type", JSON).body(body.as_bytes()).await;
                return;
            }
        };
        let model = facts.model.as_ref().map_or("mock-1", |m| m.name.as_str()).to_string();
        let created =
            knobs.created.unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()));
        let prompt_tokens = canned::estimate_prompt_tokens(req.body.len());
        let filler = knobs.token_bytes.map(|n| "x".repeat(n));
        let id = knobs.id.clone().unwrap_or_else(|| format!("chatcmpl-mock-{}", self.shard.served.get()));
        // `x-mock-echo-prompt`: the answer repeats the messages' text as the mock received it.
        let echoed: Vec<String> =
            header_str(req, "x-mock-echo-prompt").map(|_| vec![prompt_text(&req.body)]).unwrap_or_default();
        let (script, tokens) = if echoed.is_empty() { (&knobs.script, knobs.tokens) } else { (&echoed, 1) };
        let reply = Reply {
            id: &id,
            created,
            model: &model,
            prompt_tokens,
            completion_tokens: tokens,
            filler: filler.as_deref(),
            script,
            tool_args: &knobs.tool_args,
        };
        if path == "/v1/embeddings" {
            let body = match canned::embedding_request_shape(&req.body) {
                Ok(s) => canned::embeddings(&model, s.inputs, s.dimensions, prompt_tokens),
                Err((param, message)) => {
                    let body = serde_json::json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": null}});
                    let _ = resp.start(400).header("content-type", JSON).body(body.to_string().as_bytes()).await;
                    return;
                }
            };
            let _ = resp.start(200).header("content-type", JSON).body(&body).await;
            return;
        }
        let chat = path == "/v1/chat/completions";
        if !facts.stream {
            let body = if chat { canned::chat_completion(&reply) } else { canned::completion(&reply) };
            let _ = resp.start(200).header("content-type", JSON).header("x-request-id", &id).body(&body).await;
            return;
        }
        let include_usage = facts.include_usage == Some(true);
        let events = if chat {
            canned::chat_stream(&reply, include_usage)
        } else {
            canned::completion_stream(&reply, include_usage)
        };
        let head = resp.start_event_stream(200).header("x-request-id", &id);
        let Ok(mut out) = head.stream().await else { return };
        let drop_after = match knobs.fault {
            Some(Fault::DropMidStream(n)) => Some(n),
            _ => None,
        };
        if self.send_paced(&mut out, &events, knobs, 1, drop_after).await {
            let _ = out.finish().await;
        }
    }

    /// Sends `events` as the knobs pace them: the time to first token before event 1, then one
    /// token interval before each event from `first_token_event` + 1 on. Leaves without
    /// finishing (the connection closes mid-body) at event `drop_after`. False when the stream
    /// ended early (dropped, the client went away, or the mock is stopping).
    async fn send_paced<C: Conn>(
        &self,
        out: &mut engine::http::response::BodyStream<'_, '_, C>,
        events: &[Vec<u8>],
        knobs: &RequestKnobs,
        first_token_event: usize,
        drop_after: Option<usize>,
    ) -> bool {
        let gap = knobs.tokens_per_sec.filter(|r| *r > 0.0).map(|r| Duration::from_secs_f64(1.0 / r));
        for (i, event) in events.iter().enumerate() {
            if drop_after == Some(i) {
                return false;
            }
            let pause = if i == 1 {
                Some(knobs.ttft)
            } else if i > first_token_event {
                gap
            } else {
                None
            };
            if let Some(p) = pause
                && !self.wait(p).await
            {
                return false;
            }
            if out.send(event).await.is_err() {
                self.shard.stats.streams_cut_by_client.fetch_add(1, Relaxed);
                return false;
            }
        }
        true
    }
}

impl MockService {
    /// `POST /v1/messages` in Anthropic's dialect: checks the headers Anthropic requires,
    /// answers text (or a tool call when tools are offered), plain or streamed.
    async fn anthropic<C: Conn>(&self, req: &Request, knobs: &RequestKnobs, resp: &mut Responder<'_, C>) {
        use engine::mock::anthropic;
        let refuse = |status: u16, kind: &str, message: &str| (status, anthropic::error_body(kind, message));
        let checked = if header_str(req, "x-api-key").is_none() {
            Err(refuse(401, "authentication_error", "x-api-key header is required"))
        } else if header_str(req, "anthropic-version").is_none() {
            Err(refuse(400, "invalid_request_error", "anthropic-version header is required"))
        } else {
            anthropic::ask(&req.body).map_err(|body| (400, body))
        };
        let ask = match checked {
            Ok(a) => a,
            Err((status, body)) => {
                let _ = resp.start(status).header("content-type", JSON).body(&body).await;
                return;
            }
        };
        let model = serde_json::from_slice::<serde_json::Value>(&req.body)
            .ok()
            .and_then(|v| v.get("model").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or_else(|| "claude-mock".into());
        let id = knobs.id.clone().unwrap_or_else(|| format!("msg_mock{}", self.shard.served.get()));
        let filler = knobs.token_bytes.map(|n| "x".repeat(n));
        let reply = Reply {
            id: &id,
            created: 0,
            model: &model,
            prompt_tokens: canned::estimate_prompt_tokens(req.body.len()),
            completion_tokens: knobs.tokens,
            filler: filler.as_deref(),
            script: &knobs.script,
            tool_args: &[],
        };
        if !ask.stream {
            let body = anthropic::message(&reply, &ask);
            let _ = resp.start(200).header("content-type", JSON).header("request-id", &id).body(&body).await;
            return;
        }
        let Ok(mut out) = resp.start_event_stream(200).header("request-id", &id).stream().await else { return };
        // Events 0–2 are message_start, content_block_start and ping; tokens follow.
        if self.send_paced(&mut out, &anthropic::stream(&reply, &ask), knobs, 3, None).await {
            let _ = out.finish().await;
        }
    }
}

impl MockService {
    /// `POST /v1beta/models/{model}:generateContent` (or `:streamGenerateContent?alt=sse`) in
    /// Gemini's dialect; needs `x-goog-api-key`.
    /// Gemini, on AI Studio (`/v1beta/models/{model}:{method}`, `x-goog-api-key`) or Vertex AI
    /// (`/v1/projects/{p}/locations/{l}/publishers/google/models/{model}:{method}`, a bearer
    /// token minted by this mock's `/token`).
    async fn gemini<C: Conn>(&self, path: &str, req: &Request, knobs: &RequestKnobs, resp: &mut Responder<'_, C>) {
        use engine::mock::gemini;
        let vertex = path.starts_with("/v1/projects/");
        let rest = match path.split_once("/models/") {
            Some((_, rest)) => rest,
            None => path,
        };
        let (model, method) = rest.split_once(':').unwrap_or(("gemini", ""));
        let bearer_ok = header_str(req, "authorization").is_some_and(|a| a.starts_with("Bearer ya29.mock-"));
        let checked = if vertex && !bearer_ok {
            Err((
                401,
                gemini::error_body(
                    401,
                    "UNAUTHENTICATED",
                    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
                ),
            ))
        } else if !vertex && header_str(req, "x-goog-api-key").is_none() {
            Err((403, gemini::error_body(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers")))
        } else if method == "batchEmbedContents" || (vertex && method == "predict") {
            let answer = if vertex { gemini::predict(&req.body) } else { gemini::batch_embed(&req.body) };
            let (status, body) = match answer {
                Ok(b) => (200, b),
                Err(b) => (400, b),
            };
            let _ = resp.start(status).header("content-type", JSON).body(&body).await;
            return;
        } else if method != "generateContent" && method != "streamGenerateContent" {
            Err((404, gemini::error_body(404, "NOT_FOUND", "unknown method")))
        } else {
            gemini::ask(&req.body).map_err(|b| (400, b))
        };
        let ask = match checked {
            Ok(a) => a,
            Err((status, body)) => {
                let _ = resp.start(status).header("content-type", JSON).body(&body).await;
                return;
            }
        };
        let id = knobs.id.clone().unwrap_or_else(|| format!("gmock{}", self.shard.served.get()));
        let filler = knobs.token_bytes.map(|n| "x".repeat(n));
        let reply = Reply {
            id: &id,
            created: 0,
            model,
            prompt_tokens: canned::estimate_prompt_tokens(req.body.len()),
            completion_tokens: knobs.tokens,
            filler: filler.as_deref(),
            script: &knobs.script,
            tool_args: &[],
        };
        if method == "generateContent" {
            let _ = resp.start(200).header("content-type", JSON).body(&gemini::generate(&reply, &ask)).await;
            return;
        }
        let Ok(mut out) = resp.start_event_stream(200).stream().await else { return };
        if self.send_paced(&mut out, &gemini::stream(&reply, &ask), knobs, 0, None).await {
            let _ = out.finish().await;
        }
    }
}

impl MockService {
    /// `POST /model/{id}/converse` (or `/converse-stream`) as AWS Bedrock answers; needs a SigV4
    /// `authorization` header and `x-amz-date` (their shape, not the signature, is checked).
    async fn bedrock<C: Conn>(&self, stream: bool, req: &Request, knobs: &RequestKnobs, resp: &mut Responder<'_, C>) {
        use engine::mock::bedrock;
        let Some(ask) = bedrock_checked(req, resp, bedrock::ask).await else { return };
        let (id, filler) = self.bedrock_reply_parts(knobs, "bmock");
        let reply = bedrock_reply(&id, filler.as_deref(), "bedrock-mock", req, knobs);
        if !stream {
            let _ = resp.start(200).header("content-type", JSON).body(&bedrock::converse(&reply, &ask)).await;
            return;
        }
        let head = resp.start(200).header("content-type", "application/vnd.amazon.eventstream");
        let Ok(mut out) = head.stream().await else { return };
        if self.send_paced(&mut out, &bedrock::stream(&reply, &ask), knobs, 0, None).await {
            let _ = out.finish().await;
        }
    }
}

impl MockService {
    /// A Bedrock answer's id (the `x-mock-id` knob, or `{prefix}{n}`) and filler token.
    fn bedrock_reply_parts(&self, knobs: &RequestKnobs, prefix: &str) -> (String, Option<String>) {
        let id = knobs.id.clone().unwrap_or_else(|| format!("{prefix}{}", self.shard.served.get()));
        (id, knobs.token_bytes.map(|n| "x".repeat(n)))
    }
}

/// The canned reply of the Bedrock mocks.
fn bedrock_reply<'a>(
    id: &'a str,
    filler: Option<&'a str>,
    model: &'a str,
    req: &Request,
    knobs: &'a RequestKnobs,
) -> Reply<'a> {
    Reply {
        id,
        created: 0,
        model,
        prompt_tokens: canned::estimate_prompt_tokens(req.body.len()),
        completion_tokens: knobs.tokens,
        filler,
        script: &knobs.script,
        tool_args: &[],
    }
}

impl MockService {
    /// `POST /model/{claude id}/invoke` (or `/invoke-with-response-stream`): Claude on Bedrock
    /// through InvokeModel, in Anthropic's format (signed like Converse).
    async fn bedrock_claude<C: Conn>(
        &self,
        stream: bool,
        req: &Request,
        knobs: &RequestKnobs,
        resp: &mut Responder<'_, C>,
    ) {
        use engine::mock::{anthropic, bedrock};
        let Some(ask) = bedrock_checked(req, resp, |body| bedrock::claude_ask(body, stream)).await else { return };
        let (id, filler) = self.bedrock_reply_parts(knobs, "msg_bdrk_mock");
        let reply = bedrock_reply(&id, filler.as_deref(), "claude-bedrock-mock", req, knobs);
        if !stream {
            let _ = resp.start(200).header("content-type", JSON).body(&anthropic::message(&reply, &ask)).await;
            return;
        }
        let head = resp.start(200).header("content-type", "application/vnd.amazon.eventstream");
        let Ok(mut out) = head.stream().await else { return };
        let events = bedrock::claude_stream(&anthropic::stream(&reply, &ask));
        if self.send_paced(&mut out, &events, knobs, 3, None).await {
            let _ = out.finish().await;
        }
    }
}

/// A Bedrock request's SigV4 `authorization` and `x-amz-date` (their shape, not the
/// signature) and its body as `read` reads it; `None` once Bedrock's error has been answered.
async fn bedrock_checked<T, C: Conn>(
    req: &Request,
    resp: &mut Responder<'_, C>,
    read: impl FnOnce(&[u8]) -> Result<T, String>,
) -> Option<T> {
    let signed = header_str(req, "authorization").is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256 Credential="))
        && header_str(req, "x-amz-date").is_some();
    let checked = if signed {
        read(&req.body).map_err(|m| (400, "ValidationException", m))
    } else {
        Err((403, "UnrecognizedClientException", "Missing Authentication Token".to_string()))
    };
    match checked {
        Ok(t) => Some(t),
        Err((status, kind, message)) => {
            let body = engine::mock::bedrock::error_body(&message);
            let _ = resp.start(status).header("content-type", JSON).header("x-amzn-errortype", kind).body(&body).await;
            None
        }
    }
}

/// The text of a chat request's messages (string contents and text parts), joined by ` | `.
fn prompt_text(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let mut texts = Vec::new();
    for m in v.get("messages").and_then(|m| m.as_array()).into_iter().flatten() {
        match m.get("content") {
            Some(serde_json::Value::String(s)) => texts.push(s.clone()),
            Some(serde_json::Value::Array(parts)) => {
                texts.extend(parts.iter().filter_map(|p| p.get("text")?.as_str().map(str::to_owned)))
            }
            _ => {}
        }
    }
    texts.join(" | ")
}

/// Any other path: describe the request back (pass-through tests check what arrived).
/// Bedrock `InvokeModel` of an embeddings model (signed, like Converse).
async fn bedrock_invoke<C: Conn>(path: &str, req: &Request, resp: &mut Responder<'_, C>) {
    use engine::mock::bedrock;
    let signed = header_str(req, "authorization").is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256 Credential="));
    let encoded = path.trim_start_matches("/model/").trim_end_matches("/invoke");
    let model_id = encoded.replace("%3A", ":").replace("%3a", ":").replace("%2F", "/").replace("%2f", "/");
    let answer = if signed {
        bedrock::invoke_embeddings(&model_id, &req.body).map_err(|m| (400, "ValidationException", m))
    } else {
        Err((403, "UnrecognizedClientException", "Missing Authentication Token".to_string()))
    };
    match answer {
        Ok((body, tokens)) => {
            let _ = resp
                .start(200)
                .header("content-type", JSON)
                .header("x-amzn-bedrock-input-token-count", tokens.to_string())
                .body(&body)
                .await;
        }
        Err((status, kind, message)) => {
            let body = bedrock::error_body(&message);
            let _ = resp.start(status).header("content-type", JSON).header("x-amzn-errortype", kind).body(&body).await;
        }
    }
}

/// Azure OpenAI's URLs: `/openai/deployments/{deployment}/{operation}?api-version=…` or
/// `/openai/v1/{operation}`, with an `api-key` header or an Entra ID bearer token. Answers the
/// OpenAI path to serve, or Azure's error (status and body) as Azure words it.
fn azure_route(req: &Request) -> Result<&'static str, (u16, String)> {
    let path = req.head.path();
    let authed = req.head.header("api-key").is_some_and(|v| !v.is_empty())
        || req.head.header("authorization").is_some_and(|v| v.starts_with(b"Bearer "));
    if !authed {
        return Err((
            401,
            r#"{"error":{"code":"401","message":"Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."}}"#.into(),
        ));
    }
    let operation = if let Some(rest) = path.strip_prefix("/openai/deployments/") {
        let has_version = req.head.target().split_once('?').is_some_and(|(_, q)| {
            q.split('&').any(|kv| kv.strip_prefix("api-version=").is_some_and(|v| !v.is_empty()))
        });
        if !has_version {
            return Err((404, r#"{"error":{"code":"404","message":"Resource not found"}}"#.into()));
        }
        rest.split_once('/').map(|(_, op)| op)
    } else {
        path.strip_prefix("/openai/v1/")
    };
    match operation {
        Some("chat/completions") => Ok("/v1/chat/completions"),
        Some("completions") => Ok("/v1/completions"),
        Some("embeddings") => Ok("/v1/embeddings"),
        _ => Err((404, r#"{"error":{"code":"404","message":"Resource not found"}}"#.into())),
    }
}

async fn echo<C: Conn>(req: &Request, resp: &mut Responder<'_, C>) {
    let headers: Vec<(String, String)> = req
        .head
        .headers()
        .map(|(n, v)| (String::from_utf8_lossy(n).to_ascii_lowercase(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    let body = serde_json::json!({
        "method": req.head.method(),
        "target": req.head.target(),
        "headers": headers,
        "body_len": req.body.len(),
        "body": String::from_utf8_lossy(&req.body[..req.body.len().min(64 * 1024)]),
    });
    let _ = resp.start(200).header("content-type", JSON).body(body.to_string().as_bytes()).await;
}

/// The checking services guardrails ask, by path: OpenAI's `/v1/moderations` (a text
/// containing `violent` is flagged for violence), Azure AI Content Safety's `text:analyze`
/// (`violent`: Violence at severity 4), and the webhook contract at `/v1/guard` (`forbidden`:
/// block; `flagme`: flag; `secret-word` is rewritten to `[removed]`).
fn checking_service(path: &str, body: &[u8]) -> (u16, String) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (400, r#"{"error":{"message":"the body is not JSON","type":"invalid_request_error"}}"#.into());
    };
    let strings = |key: &str| -> Vec<String> {
        match v.get(key) {
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            Some(serde_json::Value::Array(a)) => a.iter().filter_map(|t| t.as_str().map(str::to_string)).collect(),
            _ => Vec::new(),
        }
    };
    match path {
        "/v1/moderations" => {
            let results: Vec<serde_json::Value> = strings("input")
                .iter()
                .map(|t| {
                    let violent = t.contains("violent");
                    serde_json::json!({"flagged": violent, "categories": {"violence": violent, "harassment": false},
                                       "category_scores": {"violence": if violent { 0.93 } else { 0.01 }, "harassment": 0.01}})
                })
                .collect();
            let model = v.get("model").and_then(serde_json::Value::as_str).unwrap_or("omni-moderation-latest");
            (200, serde_json::json!({"id": "modr-mock", "model": model, "results": results}).to_string())
        }
        "/contentsafety/text:analyze" => {
            let violent = strings("text").iter().any(|t| t.contains("violent"));
            let analysis = serde_json::json!([{"category": "Hate", "severity": 0}, {"category": "SelfHarm", "severity": 0},
                {"category": "Sexual", "severity": 0}, {"category": "Violence", "severity": if violent { 4 } else { 0 }}]);
            (200, serde_json::json!({"blocklistsMatch": [], "categoriesAnalysis": analysis}).to_string())
        }
        _ => {
            let texts = strings("texts");
            let all = texts.concat();
            let answer = if all.contains("forbidden") {
                serde_json::json!({"action": "block", "categories": ["forbidden-topic"], "reason": "mock policy"})
            } else if all.contains("@example.com") {
                // Lets tests see that a service was shown a personal address.
                serde_json::json!({"action": "block", "categories": ["personal-data"], "reason": "mock policy"})
            } else if all.contains("flagme") {
                serde_json::json!({"action": "flag", "categories": ["review"]})
            } else if all.contains("secret-word") {
                let rewritten: Vec<String> = texts.iter().map(|t| t.replace("secret-word", "[removed]")).collect();
                serde_json::json!({"action": "allow", "texts": rewritten})
            } else {
                serde_json::json!({"action": "allow"})
            };
            (200, answer.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_parsing() {
        assert_eq!(Fault::parse("status:503"), Ok(Fault::Status(503)));
        assert_eq!(Fault::parse("drop:5"), Ok(Fault::DropMidStream(5)));
        assert_eq!(Fault::parse(" timeout "), Ok(Fault::Timeout));
        assert!(Fault::parse("explode").is_err());
        assert!(Fault::parse("status:x").is_err());
    }
}
