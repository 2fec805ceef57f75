//! The runtime form of the config: validated, with routes resolved, TLS material loaded and
//! response bodies that never change (the model list) pre-rendered. Shards read it through
//! `arc-swap`; a reload builds a new one and swaps the pointer.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use rustls::pki_types::ServerName;
use serde::Serialize;

use adapters::azure::{self, AzureSurface, EntraApp, ManagedIdentity};
use adapters::gemini::vertex_auth::ServiceAccount;
use adapters::openai::compat::Quirks;

use super::file::{AzureSurfaceName, ConfigFile, ProviderKind, ProviderSection, VertexSection};
use super::url::{BaseUrl, Scheme};
use crate::actor::{ActorLimits, RestartPolicy};
use crate::http::Limits;

/// Limits toward upstreams.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamLimits {
    pub max_body_bytes: u64,
    pub max_head_bytes: usize,
    /// A connect timeout shorter than the provider's (a route's `timeouts.connect`).
    pub connect: Option<Duration>,
}

impl UpstreamLimits {
    /// The connect timeout toward `up`: the provider's, or a route's when shorter.
    pub fn connect_timeout(&self, up: &Upstream) -> Duration {
        self.connect.map_or(up.timeouts.connect, |c| c.min(up.timeouts.connect))
    }
}

/// Upstream TLS: the verified name and the client configuration.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: ServerName<'static>,
}

/// An HTTP CONNECT proxy in front of an upstream.
#[derive(Debug, Clone)]
pub struct Proxy {
    pub host: String,
    pub port: u16,
    /// `Proxy-Authorization` value, when the proxy URL carries credentials.
    pub authorization: Option<String>,
}

/// Per-target pool settings.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    pub max_connections: NonZeroU32,
    pub idle_timeout: Duration,
}

/// Per-target timeouts.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamTimeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub idle: Duration,
}

/// Everything needed to reach one provider over HTTP.
#[derive(Debug)]
pub struct Upstream {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// Prefix of every upstream path (`/v1`).
    pub base_path: String,
    pub host_header: String,
    pub tls: Option<UpstreamTls>,
    pub proxy: Option<Proxy>,
    /// Identity of a pooled connection: scheme, host, port, SNI, TLS trust, proxy. Connections
    /// are only reused between requests whose key is equal.
    pub pool_key: Arc<str>,
    pub pool: PoolSettings,
    pub timeouts: UpstreamTimeouts,
    /// Headers added to every request: credentials first, then configured extras.
    pub headers: Vec<(String, String)>,
}

impl Upstream {
    /// Where a TCP connection goes first: the proxy when there is one.
    pub fn dial_host(&self) -> (&str, u16) {
        match &self.proxy {
            Some(p) => (&p.host, p.port),
            None => (&self.host, self.port),
        }
    }
}

/// One provider account.
#[derive(Debug)]
pub struct Provider {
    pub name: Arc<str>,
    pub kind: ProviderKind,
    /// `None` for the in-process mock.
    pub upstream: Option<Upstream>,
    /// `default_max_tokens` (for dialects that require a cap).
    pub default_max_tokens: u64,
    /// Kind `bedrock`: what requests are signed with.
    pub aws: Option<Arc<AwsSigning>>,
    /// The target's actor on each shard.
    pub actor: ActorLimits,
    pub restart: RestartPolicy,
    /// Kind `mock`: fault drills by request header.
    pub mock_faults: bool,
    /// Kind `azure`: how deployment URLs are made.
    pub azure: Option<AzureSurface>,
    /// OpenAI-dialect kinds: fields the host rejects (dropped or renamed on the way up).
    pub quirks: Option<Arc<Quirks>>,
    /// Kind `gemini` through Vertex AI.
    pub vertex: Option<Arc<VertexTarget>>,
    /// Kind `azure` with an Entra ID application: tokens are minted for it.
    pub entra: Option<Arc<EntraApp>>,
    /// Kind `azure` with the host's managed identity: tokens are asked of the platform.
    pub managed_identity: Option<Arc<ManagedIdentity>>,
    /// Kinds `anthropic` and `gemini`: thinking budgets per `reasoning_effort`.
    pub thinking: Option<Thinking>,
}

/// Thinking budgets (tokens) per `reasoning_effort`, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thinking {
    pub low: i64,
    pub medium: i64,
    pub high: i64,
    pub include_thoughts: bool,
}

impl Thinking {
    /// Anthropic's `budget_tokens` per effort (`minimal` counts as `low`).
    pub fn anthropic_budgets(&self) -> std::collections::BTreeMap<String, u64> {
        let tokens = |b: i64| u64::try_from(b).unwrap_or(0);
        [("minimal", self.low), ("low", self.low), ("medium", self.medium), ("high", self.high)]
            .into_iter()
            .map(|(e, b)| (e.to_string(), tokens(b)))
            .collect()
    }
}

/// A Gemini provider reached through Vertex AI.
#[derive(Debug)]
pub struct VertexTarget {
    pub project: String,
    pub location: String,
    /// The key the `credentials` thread mints access tokens with.
    pub account: ServiceAccount,
    /// Where the key came from (logs).
    pub credentials_file: String,
}

/// SigV4 signing material of a Bedrock provider.
#[derive(Debug)]
pub struct AwsSigning {
    pub region: String,
    pub credentials: adapters::bedrock::sigv4::Credentials,
}

/// A Bedrock provider's signing material: the config's `aws` section, else the environment.
fn aws_signing(
    name: &str,
    p: &ProviderSection,
    env: impl Fn(&str) -> Option<String>,
) -> Result<AwsSigning, Vec<String>> {
    let pick = |v: &Option<super::units::EnvString>, var: &str| {
        v.as_ref().map(|s| s.0.clone()).or_else(|| env(var)).filter(|s| !s.trim().is_empty())
    };
    let region = p.aws.region.clone().or_else(|| env("AWS_REGION")).or_else(|| env("AWS_DEFAULT_REGION"));
    let access = pick(&p.aws.access_key_id, "AWS_ACCESS_KEY_ID");
    let secret = pick(&p.aws.secret_access_key, "AWS_SECRET_ACCESS_KEY");
    match (region, access, secret) {
        (Some(region), Some(access_key_id), Some(secret_access_key)) => Ok(AwsSigning {
            region,
            credentials: adapters::bedrock::sigv4::Credentials {
                access_key_id,
                secret_access_key,
                session_token: pick(&p.aws.session_token, "AWS_SESSION_TOKEN"),
            },
        }),
        (region, access, secret) => {
            let missing: Vec<&str> = [
                region.is_none().then_some("region (AWS_REGION)"),
                access.is_none().then_some("access_key_id (AWS_ACCESS_KEY_ID)"),
                secret.is_none().then_some("secret_access_key (AWS_SECRET_ACCESS_KEY)"),
            ]
            .into_iter()
            .flatten()
            .collect();
            Err(vec![format!("providers.{name}.aws: kind bedrock needs {}", missing.join(", "))])
        }
    }
}

/// Where a model name goes.
#[derive(Debug, Clone)]
struct Route {
    provider: usize,
    /// Upstream model name; for wildcards, a template whose `*` is the matched part.
    upstream_model: Arc<str>,
    /// For a `route:` model, its index in [`Snapshot::routes`] (`provider` and
    /// `upstream_model` are then its first target, for whoever needs one target only).
    routed: Option<usize>,
}

/// How a model is served: one target, or a routing tree.
#[derive(Debug, Clone)]
pub enum ModelRoute<'s> {
    Direct(Resolved<'s>),
    Routed(&'s crate::router::Route),
}

impl ModelRoute<'_> {
    /// The model of the first target (what admission prices a reservation with).
    pub fn first_upstream_model<'a>(&'a self, cfg: &'a Snapshot) -> &'a str {
        match self {
            ModelRoute::Direct(r) => &r.upstream_model,
            ModelRoute::Routed(route) => {
                route.targets().first().and_then(|t| cfg.route_targets.get(*t)).map_or("", |t| t.model.as_str())
            }
        }
    }
}

/// Registers a model's name and aliases (one namespace), listing each for `/v1/models`.
fn register(
    name: &str,
    aliases: &[String],
    route: Route,
    exact: &mut HashMap<String, Route>,
    listed: &mut Vec<(String, usize)>,
    errors: &mut Vec<String>,
) {
    for n in std::iter::once(name).chain(aliases.iter().map(String::as_str)) {
        if n.is_empty() || n.contains('*') {
            errors.push(format!("models.{name}: invalid model name or alias {n:?}"));
        } else if exact.insert(n.to_string(), route.clone()).is_some() {
            errors.push(format!(
                "models.{name}: the name {n:?} is defined twice (names and aliases share one namespace)"
            ));
        } else {
            listed.push((n.to_string(), route.provider));
        }
    }
}

#[derive(Debug, Clone)]
struct WildcardRoute {
    prefix: String,
    route: Route,
}

/// A model resolved for one request.
#[derive(Debug, Clone)]
pub struct Resolved<'s> {
    pub provider: &'s Provider,
    /// The model name to send upstream.
    pub upstream_model: std::borrow::Cow<'s, str>,
}

/// A path pattern for pass-through: exact, or a prefix ending in `*`.
#[derive(Debug, Clone)]
struct PathPattern {
    prefix: String,
    wildcard: bool,
}

impl PathPattern {
    fn matches(&self, path: &str) -> bool {
        if self.wildcard { path.starts_with(&self.prefix) } else { path == self.prefix }
    }
}

/// The compiled configuration.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one on every successful (re)load.
    pub generation: u64,
    /// Where it came from: a file path, or "embedded defaults".
    pub source: String,
    pub limits: Limits,
    pub upstream_limits: UpstreamLimits,
    pub providers: Vec<Provider>,
    exact: HashMap<String, Route>,
    wildcards: Vec<WildcardRoute>,
    /// The routing trees of `route:` models.
    routes: Vec<crate::router::Route>,
    /// Every target of every route, with the index of its provider.
    pub route_targets: crate::router::TargetTable,
    route_target_providers: Vec<usize>,
    passthrough: Vec<(PathPattern, usize)>,
    /// `GET /v1/models`, rendered once.
    pub models_json: Bytes,
    /// `GET /v1/models/{id}`, rendered once per listed model.
    model_json: HashMap<String, Bytes>,
    /// Listed models in order: (id, rendered model object), for lists filtered per caller.
    pub listed_models: Vec<(String, Bytes)>,
    /// Host names the DNS resolver must keep fresh.
    pub dns_hosts: Vec<(String, u16)>,
    pub dns_refresh: Duration,
    /// `server.egress.proxy` as written (validated): the side threads' HTTP client (token
    /// minting, JWKS) goes through it too.
    pub egress_proxy: Option<String>,
    /// Identities, RBAC, rate limits, budgets and prices, compiled.
    pub policy: policy::Policy,
    /// Guardrail rules, compiled (detectors built once here).
    pub guardrails: policy::guardrails::Guardrails,
    /// The MCP gateway's servers and virtual servers.
    pub mcp: crate::mcp::McpConfig,
    /// Admin-made MCP objects left out because they no longer compile (`mcp.servers.x`), each
    /// with why.
    pub mcp_left_out: Vec<(String, String)>,
    /// `logging.requests`.
    pub request_log: crate::config::file::RequestLogSection,
    pub gossip: GossipSettings,
    /// `auth.allow_anonymous`.
    pub allow_anonymous: bool,
    /// `auth.issuers` (validated; their keys live in [`crate::jwks::TokenVerifiers`]).
    pub issuers: Vec<policy::jwt::IssuerSpec>,
    /// Teams, users, applications, keys, rules and budgets the config file declares.
    pub declared: Arc<policy::spec::GovernanceSpec>,
    /// Those the admin API made (kept in the store).
    pub managed: Arc<policy::spec::GovernanceSpec>,
}

/// `governance.gossip_*`.
#[derive(Debug, Clone, Copy)]
pub struct GossipSettings {
    pub interval: Duration,
    pub queue: usize,
    /// `governance.window_buckets` (read at start).
    pub window_buckets: usize,
}

impl Snapshot {
    /// Whether every request must present a credential: some key or token issuer exists.
    pub fn requires_auth(&self) -> bool {
        self.policy.requires_auth() || !self.issuers.is_empty()
    }

    /// How a model is served: a routing tree, or one target (exact name or alias first, then
    /// the longest wildcard).
    pub fn model_route(&self, name: &str) -> Option<ModelRoute<'_>> {
        match self.exact.get(name) {
            Some(Route { routed: Some(i), .. }) => self.routes.get(*i).map(ModelRoute::Routed),
            Some(r) => {
                let provider = self.providers.get(r.provider)?;
                let upstream_model = std::borrow::Cow::Borrowed(&*r.upstream_model);
                Some(ModelRoute::Direct(Resolved { provider, upstream_model }))
            }
            None => self.resolve_model(name).map(ModelRoute::Direct),
        }
    }

    /// The routing trees of `route:` models.
    pub fn routes(&self) -> &[crate::router::Route] {
        &self.routes
    }

    /// A route target's provider and spec.
    /// `provider/model` of a route target.
    pub fn route_target_name(&self, id: crate::router::TargetId) -> smol_str::SmolStr {
        self.route_targets.name(id).cloned().unwrap_or_default()
    }

    pub fn route_target(&self, id: crate::router::TargetId) -> Option<(&Provider, &crate::router::TargetSpec)> {
        let spec = self.route_targets.get(id)?;
        let provider = self.route_target_providers.get(id.0 as usize).and_then(|&pi| self.providers.get(pi))?;
        Some((provider, spec))
    }

    /// One target for a model name: an exact name or alias first, then the longest wildcard.
    /// A routed model gives its first target (for endpoints without routing).
    pub fn resolve_model(&self, name: &str) -> Option<Resolved<'_>> {
        if let Some(r) = self.exact.get(name) {
            let provider = self.providers.get(r.provider)?;
            return Some(Resolved { provider, upstream_model: std::borrow::Cow::Borrowed(&r.upstream_model) });
        }
        let w = self.wildcards.iter().find(|w| name.starts_with(&w.prefix))?;
        let provider = self.providers.get(w.route.provider)?;
        let matched = &name[w.prefix.len()..];
        Some(Resolved {
            provider,
            upstream_model: std::borrow::Cow::Owned(w.route.upstream_model.replacen('*', matched, 1)),
        })
    }

    /// The provider that declared a pass-through for this path.
    pub fn passthrough(&self, path: &str) -> Option<&Provider> {
        self.passthrough.iter().find(|(p, _)| p.matches(path)).and_then(|(_, i)| self.providers.get(*i))
    }

    /// `GET /v1/models` for a caller who may only see the models `visible` allows.
    pub fn models_json_filtered(&self, visible: impl Fn(&str) -> bool) -> Vec<u8> {
        let mut out = br#"{"object":"list","data":["#.to_vec();
        let mut first = true;
        for (_, object) in self.listed_models.iter().filter(|(id, _)| visible(id)) {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(object);
        }
        out.extend_from_slice(b"]}");
        out
    }

    /// The rendered model object for `GET /v1/models/{id}`.
    pub fn model_json(&self, id: &str) -> Option<&Bytes> {
        self.model_json.get(id)
    }
}

/// Everything wrong with a config, found in one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<String>);

impl std::fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "  - {e}")?;
        }
        Ok(())
    }
}

#[derive(Serialize)]
struct ModelObject<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'a str,
}

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<ModelObject<'a>>,
}

/// What the admin API made (kept in the store), compiled together with the config file.
#[derive(Debug, Clone, Default)]
pub struct Managed {
    pub spec: Arc<policy::spec::GovernanceSpec>,
    /// The store's pepper: keys made through the admin API are hashed under it when the config
    /// sets no `auth.pepper`.
    pub pepper: Option<String>,
    /// MCP servers and virtual servers made through the admin API.
    pub mcp: Arc<crate::mcp::spec::McpSection>,
}

/// Compiles a parsed file into a snapshot, reporting every problem at once.
pub fn compile(file: &ConfigFile, source: &str, generation: u64) -> Result<Snapshot, ValidationErrors> {
    compile_with(file, source, generation, &Managed::default())
}

/// [`compile`], with what the admin API made.
pub fn compile_with(
    file: &ConfigFile,
    source: &str,
    generation: u64,
    managed: &Managed,
) -> Result<Snapshot, ValidationErrors> {
    let mut errors = Vec::new();
    let s = &file.server;
    let limits = Limits {
        max_header_bytes: usize::try_from(s.limits.max_header.0).unwrap_or(usize::MAX),
        max_headers: usize::from(s.limits.max_headers),
        max_body_bytes: s.limits.max_body.0,
        header_timeout: s.limits.header_timeout.0,
        body_timeout: s.limits.body_timeout.0,
        idle_timeout: s.limits.idle_timeout.0,
        send_timeout: s.limits.send_timeout.0,
    };
    if limits.max_headers == 0 || limits.max_headers > 128 {
        errors.push("server.limits.max_headers must be between 1 and 128".to_string());
    }
    if !(1024..=1024 * 1024).contains(&limits.max_header_bytes) {
        errors.push("server.limits.max_header must be between 1KiB and 1MiB".to_string());
    }
    if s.egress.dns_refresh.0 < Duration::from_secs(1) {
        errors.push("server.egress.dns_refresh must be at least 1s".to_string());
    }
    if s.reload.poll_interval.0 < Duration::from_millis(10) {
        errors.push("server.reload.poll_interval must be at least 10ms".to_string());
    }
    if s.limits.send_timeout.0.is_zero() {
        errors.push("server.limits.send_timeout must be greater than zero".to_string());
    }
    for (name, d) in [
        ("header_timeout", limits.header_timeout),
        ("body_timeout", limits.body_timeout),
        ("idle_timeout", limits.idle_timeout),
    ] {
        if d.is_zero() {
            errors.push(format!("server.limits.{name} must be greater than zero"));
        }
    }

    let proxy = match &s.egress.proxy {
        None => None,
        Some(raw) => match BaseUrl::parse(&raw.0) {
            Ok(u) if u.scheme == Scheme::Http => Some(Proxy {
                host: u.host.clone(),
                port: u.port,
                authorization: u
                    .userinfo
                    .as_ref()
                    .map(|ui| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(ui.as_bytes()))),
            }),
            Ok(_) => {
                errors.push("server.egress.proxy: only http:// CONNECT proxies are supported".into());
                None
            }
            Err(e) => {
                errors.push(format!("server.egress.proxy: {e}"));
                None
            }
        },
    };

    let mut providers = Vec::new();
    let mut index = HashMap::new();
    for (name, p) in &file.providers {
        if name.is_empty() || name.contains(['/', '*']) {
            errors.push(format!("providers.{name}: a provider name must be non-empty without '/' or '*'"));
            continue;
        }
        match compile_provider(name, p, proxy.as_ref(), s.egress.ca_bundle.as_deref()) {
            Ok(provider) => {
                index.insert(name.clone(), providers.len());
                providers.push(provider);
            }
            Err(mut e) => errors.append(&mut e),
        }
    }

    let mut exact: HashMap<String, Route> = HashMap::new();
    let mut wildcards = Vec::new();
    let mut listed: Vec<(String, usize)> = Vec::new();
    let mut routes = Vec::new();
    let mut route_targets = crate::router::TargetTable::default();
    for (name, m) in &file.models {
        let target = match (&m.target, &m.route) {
            (Some(t), None) => t.as_str(),
            (None, Some(spec)) => {
                if name.contains('*') {
                    errors.push(format!("models.{name}: a wildcard name takes a `target`, not a `route`"));
                    continue;
                }
                let exists = |p: &str| file.providers.contains_key(p);
                match crate::router::compile(name, spec, &mut route_targets, &exists) {
                    Ok(r) => {
                        let first = r.targets().first().and_then(|t| route_targets.get(*t));
                        let Some((pi, model)) = first.and_then(|t| Some((*index.get(&t.provider)?, t.model.clone())))
                        else {
                            // An unknown provider was reported by the compiler, or the
                            // provider itself failed to load (reported above).
                            continue;
                        };
                        let route =
                            Route { provider: pi, upstream_model: Arc::from(model), routed: Some(routes.len()) };
                        routes.push(r);
                        register(name, &m.aliases, route, &mut exact, &mut listed, &mut errors);
                    }
                    Err(mut e) => errors.append(&mut e),
                }
                continue;
            }
            _ => {
                errors.push(format!("models.{name}: give exactly one of `target` and `route`"));
                continue;
            }
        };
        let Some((pname, upstream_model)) = target.split_once('/') else {
            errors.push(format!("models.{name}.target: {target:?} must be `provider/model`"));
            continue;
        };
        let Some(&pi) = index.get(pname) else {
            if !file.providers.contains_key(pname) {
                errors.push(format!("models.{name}.target: unknown provider {pname:?}"));
            }
            continue;
        };
        if upstream_model.is_empty() {
            errors.push(format!("models.{name}.target: the model part of {:?} is empty", target));
            continue;
        }
        let route = Route { provider: pi, upstream_model: Arc::from(upstream_model), routed: None };
        if let Some(prefix) = name.strip_suffix('*') {
            if prefix.contains('*') || !m.aliases.is_empty() {
                errors.push(format!("models.{name}: a wildcard name has one trailing '*' and no aliases"));
                continue;
            }
            if upstream_model.matches('*').count() > 1 {
                errors.push(format!("models.{name}.target: at most one '*' in the upstream model"));
                continue;
            }
            wildcards.push(WildcardRoute { prefix: prefix.to_string(), route });
            continue;
        }
        if upstream_model.contains('*') {
            errors.push(format!("models.{name}.target: '*' is only allowed when the model name is a wildcard"));
            continue;
        }
        register(name, &m.aliases, route, &mut exact, &mut listed, &mut errors);
    }
    // Longest prefix first, so `gpt-4o*` wins over `gpt-*`.
    wildcards.sort_by_key(|w| std::cmp::Reverse(w.prefix.len()));

    let mut passthrough = Vec::new();
    for (name, p) in &file.providers {
        let Some(&pi) = index.get(name) else { continue };
        for pat in &p.passthrough {
            let (prefix, wildcard) = match pat.strip_suffix('*') {
                Some(pre) => (pre, true),
                None => (pat.as_str(), false),
            };
            if !prefix.starts_with("/v1/") || prefix.contains('*') {
                errors.push(format!(
                    "providers.{name}.passthrough: {pat:?} must start with /v1/ and may only end with '*'"
                ));
                continue;
            }
            if let Some((_, other)) = passthrough.iter().find(|(q, _): &&(PathPattern, usize)| q.prefix == prefix) {
                let other_name = providers.get(*other).map_or("?", |p: &Provider| &p.name);
                errors.push(format!("providers.{name}.passthrough: {pat:?} is also declared by {other_name}"));
                continue;
            }
            if providers.get(pi).is_some_and(|p| p.upstream.is_none()) {
                errors.push(format!("providers.{name}.passthrough: a mock provider cannot take pass-through paths"));
                continue;
            }
            passthrough.push((PathPattern { prefix: prefix.to_string(), wildcard }, pi));
        }
    }
    // Most specific first.
    passthrough.sort_by(|a, b| b.0.prefix.len().cmp(&a.0.prefix.len()).then(a.0.wildcard.cmp(&b.0.wildcard)));

    let policy = match compile_policy(file, managed) {
        Ok(p) => Some(p),
        Err(e) => {
            errors.extend(e);
            None
        }
    };
    if file.store.flush_interval.0 < Duration::from_millis(10)
        || file.store.flush_interval.0 > Duration::from_secs(3600)
    {
        errors.push("store.flush_interval must be between 10ms and 1h".to_string());
    }
    if let Err(e) = policy::jwt::Issuers::new(&file.auth.issuers) {
        errors.push(e.to_string());
    }
    for (i, g) in file.guardrails.iter().enumerate() {
        let asked = [
            g.openai_moderation.as_ref().map(|s| &s.provider),
            g.azure_content_safety.as_ref().map(|s| &s.provider),
            g.webhook.as_ref().map(|s| &s.provider),
        ];
        for name in asked.into_iter().flatten() {
            match file.providers.get(name) {
                None => errors.push(format!("guardrails[{i}]: no provider `{name}` to ask")),
                Some(p) if p.kind == crate::config::file::ProviderKind::Mock => {
                    errors.push(format!("guardrails[{i}]: provider `{name}` is the in-process mock, not a service"))
                }
                Some(_) => {}
            }
        }
    }
    let guardrails = match policy::guardrails::Guardrails::compile(&file.guardrails) {
        Ok(g) => g,
        Err(e) => {
            errors.push(e.to_string());
            policy::guardrails::Guardrails::default()
        }
    };
    let ca = s.egress.ca_bundle.as_deref();
    let (merged_mcp, mcp_left_out) = crate::mcp::spec::merged_leaving_out(&file.mcp, &managed.mcp, |m| {
        crate::mcp::McpConfig::compile(m, proxy.as_ref(), ca).map(|_| ())
    });
    let mcp = match crate::mcp::McpConfig::compile(&merged_mcp, proxy.as_ref(), ca) {
        Ok(m) => m,
        Err(e) => {
            errors.extend(e);
            crate::mcp::McpConfig::default()
        }
    };
    if file.logging.requests.buffer == 0 {
        errors.push("logging.requests.buffer must be at least 1".to_string());
    }
    let gov = &file.governance;
    if !policy::counters::BUCKETS_RANGE.contains(&gov.window_buckets) {
        errors.push("governance.window_buckets must be between 2 and 60".to_string());
    }
    if gov.gossip_interval.0 < Duration::from_millis(1) || gov.gossip_interval.0 > Duration::from_secs(10) {
        errors.push("governance.gossip_interval must be between 1ms and 10s".to_string());
    }

    let (false, Some(policy)) = (!errors.is_empty(), policy) else {
        return Err(ValidationErrors(errors));
    };

    let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let objects: Vec<ModelObject<'_>> = listed
        .iter()
        .map(|(id, pi)| ModelObject {
            id,
            object: "model",
            created,
            owned_by: providers.get(*pi).map_or("", |p| &p.name),
        })
        .collect();
    let listed_models: Vec<(String, Bytes)> =
        objects.iter().map(|o| (o.id.to_string(), Bytes::from(serde_json::to_vec(o).unwrap_or_default()))).collect();
    let model_json = listed_models.iter().cloned().collect();
    let models_json = Bytes::from(serde_json::to_vec(&ModelList { object: "list", data: objects }).unwrap_or_default());

    // Every host the gateway dials: providers' and upstream MCP servers'.
    let mcp_upstreams = mcp.servers.iter().filter_map(crate::mcp::compiled::McpServer::upstream);
    let token_endpoints = mcp.servers.iter().filter_map(|s| s.per_user.as_ref().map(|p| &p.token_upstream));
    let mcp_upstreams = mcp_upstreams.chain(token_endpoints);
    let mut dns_hosts: Vec<(String, u16)> = providers
        .iter()
        .filter_map(|p| p.upstream.as_ref())
        .chain(mcp_upstreams)
        .map(|u| {
            let (h, port) = u.dial_host();
            (h.to_string(), port)
        })
        .collect();
    dns_hosts.sort();
    dns_hosts.dedup();

    Ok(Snapshot {
        generation,
        source: source.to_string(),
        limits,
        upstream_limits: UpstreamLimits {
            max_body_bytes: s.limits.max_upstream_body.0,
            max_head_bytes: 64 * 1024,
            connect: None,
        },
        providers,
        exact,
        wildcards,
        routes,
        route_target_providers: route_targets
            .iter()
            .map(|(_, t)| index.get(&t.provider).copied().unwrap_or(usize::MAX))
            .collect(),
        route_targets,
        passthrough,
        models_json,
        model_json,
        listed_models,
        dns_hosts,
        dns_refresh: s.egress.dns_refresh.0,
        egress_proxy: proxy.as_ref().and(s.egress.proxy.as_ref()).map(|p| p.0.clone()),
        policy,
        guardrails,
        mcp,
        mcp_left_out,
        request_log: file.logging.requests.clone(),
        gossip: GossipSettings {
            interval: gov.gossip_interval.0,
            queue: gov.gossip_queue.get(),
            window_buckets: gov.window_buckets,
        },
        allow_anonymous: file.auth.allow_anonymous,
        issuers: file.auth.issuers.clone(),
        declared: Arc::new(file.governance_spec()),
        managed: managed.spec.clone(),
    })
}

/// The pepper of a process whose config names none: random, made once, so key digests agree
/// across reloads.
fn process_pepper() -> &'static [u8; 32] {
    static PEPPER: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    PEPPER.get_or_init(|| {
        policy::keys::random_pepper().unwrap_or_else(|e| {
            // Zeros still make a valid (if guessable) pepper for keys that live only in this
            // process's memory; keys declared by hash require a configured pepper.
            tracing::warn!(error = %e, "no random pepper; key digests use a fixed one");
            [0u8; 32]
        })
    })
}

/// Compiles the governance sections: key secrets expanded from the environment, the pepper,
/// the price table with overrides.
fn compile_policy(file: &ConfigFile, managed: &Managed) -> Result<policy::Policy, Vec<String>> {
    let mut spec = crate::store::entity::merge(&file.governance_spec(), &managed.spec)?;
    for (i, k) in spec.keys.iter_mut().enumerate() {
        if let Some(raw) = &k.secret {
            let secret = super::units::EnvString::expand(raw, |v| std::env::var(v).ok())
                .map_err(|e| vec![format!("keys[{i}].secret: {e}")])?;
            k.secret = Some(secret);
        }
    }
    let hasher = match (&file.auth.pepper, &managed.pepper) {
        (Some(p), _) if p.0.len() < 16 => return Err(vec!["auth.pepper must be at least 16 characters".into()]),
        (Some(p), _) => policy::keys::KeyHasher::new(p.0.as_bytes()),
        (None, Some(stored)) => policy::keys::KeyHasher::new(stored.as_bytes()),
        (None, None) if spec.keys.iter().any(|k| k.hash.is_some()) => {
            return Err(vec![
                "auth.pepper is required when keys are declared by `hash` (the hash is taken under it)".into(),
            ]);
        }
        (None, None) => policy::keys::KeyHasher::new(process_pepper()),
    };
    let pricing = policy::pricing::PriceTable::with_overrides(&file.pricing.models)
        .map_err(|e| vec![format!("pricing.models: {e}")])?;
    let settings = policy::Settings {
        default_max_tokens: file.governance.default_max_tokens,
        bytes_per_token: u64::from(file.governance.bytes_per_token.get()),
    };
    policy::Policy::compile(&spec, hasher, pricing, settings).map_err(|e| vec![name_the_entry(&spec, e)])
}

/// A policy error names a position in the merged lists (`keys[12].team`); the entry's name says
/// which one is meant, wherever it was declared (config file, team file, admin API).
fn name_the_entry(spec: &policy::spec::GovernanceSpec, e: policy::PolicyError) -> String {
    let index = |prefix: &str| -> Option<usize> { e.field.strip_prefix(prefix)?.split(']').next()?.parse().ok() };
    let named = if let Some(k) = index("keys[").and_then(|i| spec.keys.get(i)) {
        format!(" (key `{}`)", k.name)
    } else if let Some(r) = index("rate_limits[").and_then(|i| spec.rate_limits.get(i)) {
        format!(" (rate limit `{}`)", r.id)
    } else if let Some(b) = index("budgets[").and_then(|i| spec.budgets.get(i)) {
        format!(" (budget `{}`)", b.id)
    } else {
        String::new()
    };
    format!("{}{named}: {}", e.field, e.message)
}

/// The host's managed identity: the endpoint and secret header the platform put in the
/// environment (App Service, Functions, Container Apps), else the Instance Metadata Service,
/// unless the config names them.
fn managed_identity(m: &super::file::ManagedIdentitySection) -> Result<ManagedIdentity, String> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    // Azure Arc and Service Fabric speak other protocols (a challenge file; a pinned
    // certificate) through the same variables: refuse rather than speak the wrong one.
    if m.endpoint.is_none() {
        if env("IMDS_ENDPOINT").is_some() {
            return Err(
                "Azure Arc's managed identity (IMDS_ENDPOINT is set) is not supported yet; set `endpoint` to override"
                    .into(),
            );
        }
        if env("IDENTITY_SERVER_THUMBPRINT").is_some() {
            return Err("Service Fabric's managed identity (IDENTITY_SERVER_THUMBPRINT is set) is not supported yet; set `endpoint` to override".into());
        }
    }
    let (endpoint, identity_header) = match (&m.endpoint, env("IDENTITY_ENDPOINT")) {
        (Some(e), _) => (e.clone(), m.identity_header.as_ref().map(|h| h.0.clone())),
        (None, Some(e)) => (e, m.identity_header.as_ref().map(|h| h.0.clone()).or_else(|| env("IDENTITY_HEADER"))),
        (None, None) => (azure::IMDS_TOKEN_ENDPOINT.to_string(), m.identity_header.as_ref().map(|h| h.0.clone())),
    };
    Ok(ManagedIdentity {
        endpoint,
        identity_header,
        client_id: m.client_id.as_ref().map(|c| c.0.clone()).filter(|c| !c.trim().is_empty()),
        resource: m.resource.clone().unwrap_or_else(|| azure::ENTRA_RESOURCE.to_string()),
    })
}

/// Reads and checks a Vertex AI provider's service-account key.
fn vertex_target(name: &str, v: &VertexSection) -> Result<VertexTarget, String> {
    let path = &v.credentials_file.0;
    let bytes = std::fs::read(path).map_err(|e| format!("providers.{name}.vertex.credentials_file {path}: {e}"))?;
    let account = ServiceAccount::from_json(&bytes)
        .map_err(|e| format!("providers.{name}.vertex.credentials_file {path}: {e}"))?;
    let location = v.location.clone().unwrap_or_else(|| "global".to_string());
    let valid = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !valid(&location) {
        return Err(format!("providers.{name}.vertex.location {location:?}: letters, digits and '-' only"));
    }
    let project = v.project.clone().unwrap_or_else(|| account.project_id().to_string());
    if !valid(&project) {
        return Err(format!("providers.{name}.vertex.project {project:?}: letters, digits and '-' only"));
    }
    Ok(VertexTarget { project, location, account, credentials_file: path.clone() })
}

fn compile_provider(
    name: &str,
    p: &ProviderSection,
    proxy: Option<&Proxy>,
    global_ca: Option<&std::path::Path>,
) -> Result<Provider, Vec<String>> {
    let mut errors = Vec::new();
    let name_arc: Arc<str> = Arc::from(name);
    let restart = RestartPolicy {
        initial: p.actor.restart_backoff.0,
        max: p.actor.restart_backoff_max.0.max(p.actor.restart_backoff.0),
        ..RestartPolicy::default()
    };
    let mailbox = usize::try_from(p.actor.mailbox).unwrap_or(usize::MAX);
    let max_wait = Some(p.actor.max_wait.0);
    if p.actor.max_wait.0.is_zero() {
        errors.push(format!("providers.{name}.actor.max_wait must be greater than zero"));
    }
    let in_flight =
        |default: NonZeroU32| usize::try_from(p.actor.max_in_flight.unwrap_or(default).get()).unwrap_or(usize::MAX);
    if p.mock_faults && p.kind != ProviderKind::Mock {
        errors.push(format!("providers.{name}.mock_faults applies to kind mock only"));
    }
    if p.kind == ProviderKind::Mock {
        if p.base_url.is_some() || p.api_key.is_some() {
            errors.push(format!("providers.{name}: a mock provider takes no base_url or api_key"));
        }
        let actor = ActorLimits {
            max_in_flight: in_flight(NonZeroU32::new(4096).unwrap_or(NonZeroU32::MIN)),
            mailbox,
            max_wait,
        };
        return if errors.is_empty() {
            Ok(Provider {
                name: name_arc,
                kind: p.kind,
                upstream: None,
                default_max_tokens: 4096,
                aws: None,
                actor,
                restart,
                mock_faults: p.mock_faults,
                azure: None,
                quirks: None,
                vertex: None,
                entra: None,
                managed_identity: None,
                thinking: None,
            })
        } else {
            Err(errors)
        };
    }
    let aws = match p.kind {
        ProviderKind::Bedrock => match aws_signing(name, p, |k| std::env::var(k).ok()) {
            Ok(a) => Some(Arc::new(a)),
            Err(e) => return Err(e),
        },
        _ => None,
    };
    let thinking = p.thinking.as_ref().map(|t| Thinking {
        low: t.low,
        medium: t.medium,
        high: t.high,
        include_thoughts: t.include_thoughts,
    });
    match (&thinking, p.kind) {
        (None, _) => {}
        // Anthropic's documented floor for `budget_tokens`.
        (Some(t), ProviderKind::Anthropic) if [t.low, t.medium, t.high].iter().any(|b| *b < 1024) => {
            errors.push(format!("providers.{name}.thinking: Anthropic budgets are at least 1024 tokens"))
        }
        // Gemini: -1 is dynamic, 0 is off.
        (Some(t), ProviderKind::Gemini) if [t.low, t.medium, t.high].iter().any(|b| *b < -1) => {
            errors.push(format!("providers.{name}.thinking: Gemini budgets are -1 (dynamic), 0 (off) or tokens"))
        }
        (Some(_), ProviderKind::Anthropic | ProviderKind::Gemini) => {}
        (Some(_), kind) => errors.push(format!(
            "providers.{name}.thinking applies to kinds anthropic and gemini (a {kind:?} provider takes reasoning_effort as it comes)"
        )),
    }
    let openai_dialect = matches!(p.kind, ProviderKind::Openai | ProviderKind::OpenaiCompatible | ProviderKind::Azure);
    if !openai_dialect && (!p.drop_params.is_empty() || !p.rename_params.is_empty()) {
        errors.push(format!(
            "providers.{name}: drop_params and rename_params apply to OpenAI-dialect kinds (openai, openai-compatible, azure); a {:?} provider's requests are made by its adapter",
            p.kind
        ));
    }
    if p.kind != ProviderKind::Azure
        && (p.azure.api_version.is_some()
            || p.azure.surface.is_some()
            || p.azure.bearer_token.is_some()
            || p.azure.entra.is_some()
            || p.azure.managed_identity.is_some())
    {
        errors.push(format!("providers.{name}.azure applies to kind azure only"));
    }
    let vertex = match (&p.vertex, p.kind) {
        (None, _) => None,
        (Some(v), ProviderKind::Gemini) => match vertex_target(name, v) {
            Ok(t) => Some(Arc::new(t)),
            Err(e) => return Err(vec![e]),
        },
        (Some(_), _) => return Err(vec![format!("providers.{name}.vertex applies to kind gemini only")]),
    };
    if vertex.is_some() && p.api_key.is_some() {
        errors.push(format!(
            "providers.{name}: a Vertex AI provider authenticates with its service account; remove api_key"
        ));
    }
    let base = match (&p.base_url, p.kind) {
        (Some(u), _) => u.0.clone(),
        (None, ProviderKind::Bedrock) => {
            format!("https://bedrock-runtime.{}.amazonaws.com", aws.as_ref().map_or("", |a| a.region.as_str()))
        }
        (None, ProviderKind::Openai) => "https://api.openai.com/v1".to_string(),
        (None, ProviderKind::Anthropic) => "https://api.anthropic.com/v1".to_string(),
        (None, ProviderKind::Gemini) => match &vertex {
            Some(v) if v.location == "global" => "https://aiplatform.googleapis.com".to_string(),
            Some(v) => format!("https://{}-aiplatform.googleapis.com", v.location),
            None => "https://generativelanguage.googleapis.com/v1beta".to_string(),
        },
        (None, ProviderKind::Azure) => {
            errors.push(format!(
                "providers.{name}.base_url is required for kind azure (https://{{resource}}.openai.azure.com)"
            ));
            return Err(errors);
        }
        (None, _) => {
            errors.push(format!("providers.{name}.base_url is required for kind openai-compatible"));
            return Err(errors);
        }
    };
    let url = match BaseUrl::parse(&base) {
        Ok(u) if u.userinfo.is_none() => u,
        Ok(_) => return Err(vec![format!("providers.{name}.base_url must not carry credentials; use api_key")]),
        Err(e) => return Err(vec![format!("providers.{name}.base_url: {e}")]),
    };
    let mut headers = Vec::new();
    match (&p.api_key, p.kind) {
        (Some(k), _) if k.0.is_empty() => errors.push(format!("providers.{name}.api_key is empty")),
        // Anthropic authenticates with `x-api-key` and wants the API version in every request.
        (Some(k), ProviderKind::Anthropic) => {
            headers.push(("x-api-key".to_string(), k.0.clone()));
            if !p.headers.keys().any(|h| h.eq_ignore_ascii_case("anthropic-version")) {
                headers.push(("anthropic-version".to_string(), "2023-06-01".to_string()));
            }
        }
        (Some(k), ProviderKind::Gemini) => headers.push(("x-goog-api-key".to_string(), k.0.clone())),
        (Some(_), ProviderKind::Azure)
            if p.azure.bearer_token.is_some() || p.azure.entra.is_some() || p.azure.managed_identity.is_some() =>
        {
            errors.push(format!(
                "providers.{name}: give one of api_key, azure.bearer_token, azure.entra and azure.managed_identity"
            ))
        }
        (Some(k), ProviderKind::Azure) => {
            let (h, v) = azure::auth_header(&azure::AzureAuth::ApiKey(k.0.clone()));
            headers.push((h.to_string(), v));
        }
        (None, ProviderKind::Azure) => match &p.azure.bearer_token {
            _ if p.azure.entra.is_some() && p.azure.managed_identity.is_some() => errors.push(format!(
                "providers.{name}: give azure.entra (an application) or azure.managed_identity (the host's), not both"
            )),
            Some(_) if p.azure.entra.is_some() || p.azure.managed_identity.is_some() => errors.push(format!(
                "providers.{name}: give azure.bearer_token, azure.entra or azure.managed_identity, not two"
            )),
            None if p.azure.entra.is_some() || p.azure.managed_identity.is_some() => {}
            Some(t) if !t.0.is_empty() => {
                let (h, v) = azure::auth_header(&azure::AzureAuth::Bearer(t.0.clone()));
                headers.push((h.to_string(), v));
            }
            _ => errors.push(format!(
                "providers.{name}: kind azure needs api_key (use ${{AZURE_OPENAI_API_KEY}}), azure.entra (an Entra ID application), azure.managed_identity (the host's) or azure.bearer_token (an Entra ID token)"
            )),
        },
        (Some(k), _) => headers.push(("authorization".to_string(), format!("Bearer {}", k.0))),
        (None, ProviderKind::Openai) => {
            errors.push(format!("providers.{name}.api_key is required for kind openai (use ${{OPENAI_API_KEY}})"))
        }
        (None, ProviderKind::Gemini) if vertex.is_some() => {}
        (None, ProviderKind::Gemini) => errors.push(format!(
            "providers.{name}.api_key is required for kind gemini (use ${{GEMINI_API_KEY}}), or `vertex` for Vertex AI"
        )),
        (None, ProviderKind::Anthropic) => {
            errors.push(format!("providers.{name}.api_key is required for kind anthropic (use ${{ANTHROPIC_API_KEY}})"))
        }
        (None, _) => {}
    }
    extra_headers(&format!("providers.{name}"), &p.headers, &mut headers, &mut errors);
    let quirks = if openai_dialect {
        let defaults = Quirks::for_host(&format!("{}:{}", url.host, url.port));
        let rename = p.rename_params.iter().map(|(a, b)| (a.clone(), b.clone())).collect();
        let q = Quirks::merged(defaults, p.drop_params.clone(), rename);
        match q.validate() {
            Ok(()) if q.is_empty() => None,
            Ok(()) => Some(Arc::new(q)),
            Err(e) => {
                errors.push(format!("providers.{name}: {e}"));
                None
            }
        }
    } else {
        None
    };
    let entra = match (&p.azure.entra, p.kind) {
        (Some(e), ProviderKind::Azure) => {
            let empty = [("tenant_id", Some(&e.tenant_id)), ("client_id", Some(&e.client_id))]
                .into_iter()
                .chain([
                    ("client_secret", e.client_secret.as_ref()),
                    ("federated_token_file", e.federated_token_file.as_ref()),
                ])
                .find(|(_, v)| v.is_some_and(|v| v.0.trim().is_empty()));
            if let Some((field, _)) = empty {
                errors.push(format!("providers.{name}.azure.entra.{field} is empty"));
            }
            let credential = match (&e.client_secret, &e.federated_token_file) {
                (Some(secret), None) => azure::EntraCredential::Secret(secret.0.clone()),
                (None, Some(file)) => azure::EntraCredential::FederatedTokenFile(file.0.clone()),
                _ => {
                    errors.push(format!(
                        "providers.{name}.azure.entra: give exactly one of client_secret and federated_token_file"
                    ));
                    azure::EntraCredential::Secret(String::new())
                }
            };
            Some(Arc::new(EntraApp {
                authority: e.authority.clone().unwrap_or_else(|| azure::ENTRA_AUTHORITY.to_string()),
                tenant_id: e.tenant_id.0.clone(),
                client_id: e.client_id.0.clone(),
                credential,
                scope: e.scope.clone().unwrap_or_else(|| azure::ENTRA_SCOPE.to_string()),
            }))
        }
        _ => None,
    };
    let managed_identity = match (&p.azure.managed_identity, p.kind) {
        (Some(m), ProviderKind::Azure) => match managed_identity(m) {
            Ok(m) => Some(Arc::new(m)),
            Err(e) => {
                errors.push(format!("providers.{name}.azure.managed_identity: {e}"));
                None
            }
        },
        _ => None,
    };
    let azure = (p.kind == ProviderKind::Azure).then(|| match p.azure.surface {
        Some(AzureSurfaceName::V1) => AzureSurface::V1,
        _ => AzureSurface::Deployments {
            api_version: p.azure.api_version.clone().unwrap_or_else(|| azure::DEFAULT_API_VERSION.to_string()),
        },
    });
    let transport = Transport { tls: &p.tls, pool: &p.pool, timeouts: &p.timeouts, proxy, global_ca };
    let upstream = upstream_of(&format!("providers.{name}"), url, headers, &transport);
    let upstream = match (upstream, errors.is_empty()) {
        (Ok(u), true) => u,
        (Ok(_), false) => return Err(errors),
        (Err(e), _) => {
            errors.extend(e);
            return Err(errors);
        }
    };
    Ok(Provider {
        name: name_arc,
        kind: p.kind,
        default_max_tokens: p.default_max_tokens.unwrap_or(4096),
        aws,
        actor: ActorLimits { max_in_flight: in_flight(p.pool.max_connections), mailbox, max_wait },
        restart,
        mock_faults: false,
        azure,
        quirks,
        vertex,
        entra,
        managed_identity,
        thinking,
        upstream: Some(upstream),
    })
}

/// How an upstream is reached, as a config section says: TLS, pool, timeouts, egress proxy.
pub(crate) struct Transport<'a> {
    pub tls: &'a super::file::UpstreamTlsSection,
    pub pool: &'a super::file::PoolSection,
    pub timeouts: &'a super::file::UpstreamTimeoutsSection,
    pub proxy: Option<&'a Proxy>,
    pub global_ca: Option<&'a std::path::Path>,
}

/// Adds configured extra headers (lowercased) to `headers`; `field` names the section in errors.
pub(crate) fn extra_headers(
    field: &str,
    extra: &std::collections::BTreeMap<String, super::units::EnvString>,
    headers: &mut Vec<(String, String)>,
    errors: &mut Vec<String>,
) {
    for (h, v) in extra {
        let valid_name =
            !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !valid_name || v.0.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            errors.push(format!("{field}.headers.{h}: invalid header name or value"));
        } else {
            headers.push((h.to_ascii_lowercase(), v.0.clone()));
        }
    }
}

/// The upstream at `url` (credentials already in `headers`): TLS material loaded, the pool
/// key made. `field` names the config section in errors.
pub(crate) fn upstream_of(
    field: &str,
    url: BaseUrl,
    headers: Vec<(String, String)>,
    t: &Transport<'_>,
) -> Result<Upstream, Vec<String>> {
    let mut errors = Vec::new();
    for (name, d) in
        [("connect", t.timeouts.connect.0), ("first_byte", t.timeouts.first_byte.0), ("idle", t.timeouts.idle.0)]
    {
        if d.is_zero() {
            errors.push(format!("{field}.timeouts.{name} must be greater than zero"));
        }
    }
    let tls = if url.scheme == Scheme::Https {
        let ca = t.tls.ca_bundle.as_deref().or(t.global_ca);
        let sni = t.tls.server_name.clone().unwrap_or_else(|| url.host.clone());
        let server_name =
            ServerName::try_from(sni.clone()).map_err(|e| format!("{field}.tls.server_name {sni:?}: {e}"));
        let config = crate::tls::client_config(ca).map_err(|e| format!("{field}.tls: {e}"));
        match (config, server_name) {
            (Ok(config), Ok(server_name)) => {
                Some((UpstreamTls { config, server_name }, sni, ca.map(|c| c.display().to_string())))
            }
            (a, b) => {
                errors.extend(a.err());
                errors.extend(b.err());
                None
            }
        }
    } else {
        None
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let pool_key = format!(
        "{}://{}:{}|sni={}|ca={}|proxy={}|max={}",
        url.scheme.as_str(),
        url.host,
        url.port,
        tls.as_ref().map_or("", |t| t.1.as_str()),
        tls.as_ref().and_then(|t| t.2.as_deref()).unwrap_or("webpki"),
        t.proxy.map_or(String::new(), |p| format!("{}:{}", p.host, p.port)),
        t.pool.max_connections,
    );
    Ok(Upstream {
        scheme: url.scheme,
        host_header: url.host_header(),
        host: url.host,
        port: url.port,
        base_path: url.path,
        tls: tls.map(|t| t.0),
        proxy: t.proxy.cloned(),
        pool_key: Arc::from(pool_key),
        pool: PoolSettings { max_connections: t.pool.max_connections, idle_timeout: t.pool.idle_timeout.0 },
        timeouts: UpstreamTimeouts {
            connect: t.timeouts.connect.0,
            first_byte: t.timeouts.first_byte.0,
            idle: t.timeouts.idle.0,
        },
        headers,
    })
}
