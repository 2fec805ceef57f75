//! The runtime form of `mcp:`: upstream servers with their transport resolved, virtual
//! servers with their tool selections and access rules compiled. Built with the rest of the
//! config snapshot; the request path only reads it.

use std::sync::Arc;
use std::time::Duration;

use adapters::mcp::names;
use policy::glob::Glob;

use super::spec::{AccessSpec, McpSection, TransportKind, VirtualSpec};
use crate::actor::{ActorLimits, RestartPolicy};
use crate::config::Upstream;
use crate::config::snapshot::Proxy;
use crate::config::snapshot::{Transport, extra_headers, upstream_of};
use crate::config::url::BaseUrl;

/// How a server is reached.
#[derive(Debug)]
pub enum ServerTransport {
    /// Streamable HTTP at this upstream.
    Http(Box<Upstream>),
    /// The legacy HTTP+SSE transport (2024-11-05): the event stream at this upstream.
    LegacySse(Box<Upstream>),
    /// A local process the gateway runs: the program and its arguments.
    Stdio(Vec<String>),
}

/// One upstream MCP server.
#[derive(Debug)]
pub struct McpServer {
    pub name: Arc<str>,
    /// Its actor's name on each shard (`mcp:{name}`), apart from the providers'.
    pub actor_name: Arc<str>,
    pub transport: ServerTransport,
    /// Bound on one call, answer included.
    pub timeout: Duration,
    /// Teams that may use it; empty: all.
    pub teams: Box<[String]>,
    pub actor: ActorLimits,
    pub restart: RestartPolicy,
    /// The OAuth application whose token (minted off the request path, under `actor_name`)
    /// is presented upstream.
    pub oauth: Option<Arc<adapters::mcp::oauth::ClientCredentials>>,
    /// Per-user OAuth: each caller's own token is presented.
    pub per_user: Option<Arc<super::user_oauth::PerUser>>,
}

impl McpServer {
    /// The pool key of its HTTP connections (none for a stdio server).
    pub fn pool_key(&self) -> Option<&Arc<str>> {
        match &self.transport {
            ServerTransport::Http(up) | ServerTransport::LegacySse(up) => Some(&up.pool_key),
            ServerTransport::Stdio(_) => None,
        }
    }

    /// Where its HTTP requests go (none for a stdio server).
    pub fn upstream(&self) -> Option<&Upstream> {
        match &self.transport {
            ServerTransport::Http(up) | ServerTransport::LegacySse(up) => Some(up),
            ServerTransport::Stdio(_) => None,
        }
    }
}

/// `server/tool-glob` of a virtual server.
#[derive(Debug)]
pub struct Selection {
    /// Index into [`McpConfig::servers`].
    pub server: usize,
    pub tool: Glob,
}

/// A compiled access rule.
#[derive(Debug)]
pub struct AccessRule {
    /// Where it is in the config, for the error that names it.
    pub label: String,
    pub teams: Vec<String>,
    pub users: Vec<String>,
    pub applications: Vec<String>,
    pub keys: Vec<String>,
    pub environments: Vec<String>,
    pub allow: Vec<Glob>,
    pub deny: Vec<Glob>,
}

/// A virtual server: the endpoint `/mcp/{name}`.
#[derive(Debug)]
pub struct VirtualServer {
    pub name: Arc<str>,
    /// Tools.
    pub selections: Vec<Selection>,
    pub prompts: Vec<Selection>,
    /// Servers whose resources it exposes.
    pub resource_servers: Vec<usize>,
    /// The servers its tool selections draw from, each once, in config order.
    pub servers: Vec<usize>,
    pub teams: Box<[String]>,
    pub fail_closed: bool,
    pub access: Vec<AccessRule>,
    pub audit_arguments: bool,
}

/// What a virtual server lists: its tools, prompts, resources or resource templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    Tools,
    Prompts,
    Resources,
    ResourceTemplates,
}

impl Listing {
    pub fn method(self) -> &'static str {
        match self {
            Listing::Tools => "tools/list",
            Listing::Prompts => "prompts/list",
            Listing::Resources => "resources/list",
            Listing::ResourceTemplates => "resources/templates/list",
        }
    }

    /// The result's member that holds the list.
    pub fn key(self) -> &'static str {
        match self {
            Listing::Tools => "tools",
            Listing::Prompts => "prompts",
            Listing::Resources => "resources",
            Listing::ResourceTemplates => "resourceTemplates",
        }
    }

    /// Tools and prompts are listed under `server__name`; resources keep their URIs.
    pub fn renamed(self) -> bool {
        matches!(self, Listing::Tools | Listing::Prompts)
    }
}

impl VirtualServer {
    /// Whether `tool` of server `server` is one this virtual server exposes.
    pub fn exposes(&self, server: usize, tool: &str) -> bool {
        self.selections.iter().any(|s| s.server == server && s.tool.matches(tool))
    }

    /// Whether item `name` of `server` is one this virtual server lists under `listing`.
    pub fn exposes_item(&self, listing: Listing, server: usize, name: &str) -> bool {
        match listing {
            Listing::Tools => self.exposes(server, name),
            Listing::Prompts => self.prompts.iter().any(|s| s.server == server && s.tool.matches(name)),
            Listing::Resources | Listing::ResourceTemplates => self.resource_servers.contains(&server),
        }
    }

    /// The servers a listing draws from, each once, in config order.
    pub fn servers_for(&self, listing: Listing) -> Vec<usize> {
        let mut out: Vec<usize> = match listing {
            Listing::Tools => return self.servers.clone(),
            Listing::Prompts => self.prompts.iter().map(|s| s.server).collect(),
            Listing::Resources | Listing::ResourceTemplates => self.resource_servers.clone(),
        };
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// All of `mcp:`.
#[derive(Debug, Default)]
pub struct McpConfig {
    pub servers: Vec<McpServer>,
    pub virtuals: Vec<VirtualServer>,
    /// `mcp.allowed_origins`, lowercased.
    pub allowed_origins: Vec<String>,
    /// `mcp.token_key`, when set.
    pub token_key: Option<Arc<super::user_oauth::TokenKey>>,
}

impl McpConfig {
    pub fn virtual_server(&self, name: &str) -> Option<&VirtualServer> {
        self.virtuals.iter().find(|v| &*v.name == name)
    }

    /// The server called `name`, with its index.
    pub fn server(&self, name: &str) -> Option<(usize, &McpServer)> {
        self.servers.iter().enumerate().find(|(_, s)| &*s.name == name)
    }

    /// Compiles `mcp:`; every problem found is reported, each naming its field.
    pub fn compile(
        spec: &McpSection,
        proxy: Option<&Proxy>,
        global_ca: Option<&std::path::Path>,
    ) -> Result<McpConfig, Vec<String>> {
        let mut errors = Vec::new();
        let mut servers = Vec::new();
        for (name, s) in &spec.servers {
            let field = format!("mcp.servers.{name}");
            if let Some(why) = names::invalid_server_name(name) {
                errors.push(format!("{field}: the name {why}"));
                continue;
            }
            let actor = ActorLimits {
                max_in_flight: usize::try_from(s.pool.max_connections.get()).unwrap_or(usize::MAX),
                mailbox: 1024,
                max_wait: Some(s.timeout.0),
            };
            match s.transport {
                TransportKind::StreamableHttp if !s.command.is_empty() => {
                    errors.push(format!("{field}.command is for transport stdio"));
                    continue;
                }
                TransportKind::StreamableHttp | TransportKind::Sse => {}
                TransportKind::Stdio => {
                    match stdio_command(&field, s, &spec.stdio_commands) {
                        Ok(command) => servers.push(McpServer {
                            name: Arc::from(name.as_str()),
                            actor_name: Arc::from(format!("mcp:{name}")),
                            transport: ServerTransport::Stdio(command),
                            timeout: s.timeout.0,
                            teams: s.teams.clone().into_boxed_slice(),
                            actor,
                            restart: RestartPolicy::default(),
                            oauth: None,
                            per_user: None,
                        }),
                        Err(e) => errors.push(e),
                    }
                    continue;
                }
            }
            let Some(url) = &s.url else {
                errors.push(format!("{field}.url is required for transport streamable-http"));
                continue;
            };
            let parsed = match BaseUrl::parse(&url.0) {
                Ok(u) if u.userinfo.is_none() => u,
                Ok(_) => {
                    errors.push(format!("{field}.url must not carry credentials; use headers"));
                    continue;
                }
                Err(e) => {
                    errors.push(format!("{field}.url: {e}"));
                    continue;
                }
            };
            if s.timeout.0.is_zero() {
                errors.push(format!("{field}.timeout must be greater than zero"));
            }
            let transport = Transport { tls: &s.tls, pool: &s.pool, timeouts: &s.timeouts, proxy, global_ca };
            let (oauth, per_user) = match s.auth.as_ref().map(|a| &a.oauth2) {
                None => (None, None),
                Some(o) if o.flow == super::spec::OAuth2Flow::AuthorizationCode => {
                    match per_user(&field, o, &url.0, &transport) {
                        Ok(p) => (None, Some(Arc::new(p))),
                        Err(e) => {
                            errors.extend(e);
                            continue;
                        }
                    }
                }
                Some(o) => match oauth(&field, o, &url.0) {
                    Ok(o) => (Some(Arc::new(o)), None),
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                },
            };
            if per_user.is_some() && spec.token_key.is_none() {
                errors.push(format!(
                    "{field}.auth.oauth2: per-user tokens are kept encrypted: set mcp.token_key (32 bytes, base64)"
                ));
            }
            if s.auth.is_some() && s.headers.keys().any(|h| h.eq_ignore_ascii_case("authorization")) {
                errors.push(format!("{field}: give auth.oauth2 or an authorization header, not both"));
            }
            let mut headers = Vec::new();
            extra_headers(&field, &s.headers, &mut headers, &mut errors);
            match upstream_of(&field, parsed, headers, &transport) {
                Ok(upstream) => servers.push(McpServer {
                    name: Arc::from(name.as_str()),
                    actor_name: Arc::from(format!("mcp:{name}")),
                    transport: if s.transport == TransportKind::Sse {
                        ServerTransport::LegacySse(Box::new(upstream))
                    } else {
                        ServerTransport::Http(Box::new(upstream))
                    },
                    timeout: s.timeout.0,
                    teams: s.teams.clone().into_boxed_slice(),
                    actor,
                    restart: RestartPolicy::default(),
                    oauth,
                    per_user,
                }),
                Err(e) => errors.extend(e),
            }
        }
        let mut virtuals = Vec::new();
        for (name, v) in &spec.virtual_servers {
            match compile_virtual(name, v, &servers, &spec.servers) {
                Ok(v) => virtuals.push(v),
                Err(e) => errors.extend(e),
            }
        }
        let allowed_origins =
            spec.allowed_origins.iter().map(|o| o.trim_end_matches('/').to_ascii_lowercase()).collect();
        let token_key = match spec.token_key.as_ref().map(|k| super::user_oauth::TokenKey::from_base64(&k.0)) {
            None => None,
            Some(Ok(k)) => Some(Arc::new(k)),
            Some(Err(e)) => {
                errors.push(e);
                None
            }
        };
        if virtuals.iter().any(|v: &VirtualServer| &*v.name == "oauth") {
            errors.push("mcp.virtual.oauth: the name `oauth` is the gateway's own (/mcp/oauth/...)".to_owned());
        }
        if errors.is_empty() { Ok(McpConfig { servers, virtuals, allowed_origins, token_key }) } else { Err(errors) }
    }
}

/// A stdio server's command, checked against the allow-list.
fn stdio_command(field: &str, s: &super::spec::ServerSpec, allowed: &[String]) -> Result<Vec<String>, String> {
    if s.url.is_some() || s.auth.is_some() || !s.headers.is_empty() {
        return Err(format!("{field}: a stdio server takes a command, not url, headers or auth"));
    }
    let Some(program) = s.command.first() else {
        return Err(format!("{field}.command is required for transport stdio: [program, args...]"));
    };
    if !allowed.iter().any(|a| a == program) {
        return Err(format!(
            "{field}.command: {program:?} is not in mcp.stdio_commands (the programs the gateway may run: {})",
            if allowed.is_empty() { "none".to_owned() } else { allowed.join(", ") }
        ));
    }
    Ok(s.command.clone())
}

fn oauth(
    field: &str,
    o: &super::spec::OAuth2Spec,
    server_url: &str,
) -> Result<adapters::mcp::oauth::ClientCredentials, String> {
    let token_url = o.token_url.clone().ok_or_else(|| format!("{field}.auth.oauth2.token_url is required"))?;
    BaseUrl::parse(&token_url).map_err(|e| format!("{field}.auth.oauth2.token_url: {e}"))?;
    let secret = o.client_secret.as_ref().map(|s| s.0.clone()).unwrap_or_default();
    if o.client_id.0.trim().is_empty() || secret.trim().is_empty() {
        return Err(format!("{field}.auth.oauth2: client_id and client_secret are required (use ${{ENV_VAR}})"));
    }
    Ok(adapters::mcp::oauth::ClientCredentials {
        token_url,
        client_id: o.client_id.0.clone(),
        client_secret: secret,
        scope: o.scope.clone(),
        audience: o.audience.clone(),
        resource: Some(o.resource.clone().unwrap_or_else(|| server_url.to_owned())),
    })
}

/// A per-user (authorization code) application.
fn per_user(
    field: &str,
    o: &super::spec::OAuth2Spec,
    server_url: &str,
    transport: &Transport<'_>,
) -> Result<super::user_oauth::PerUser, Vec<String>> {
    let need = |v: &Option<String>, name: &str| {
        v.clone()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| vec![format!("{field}.auth.oauth2.{name} is required for authorization_code")])
    };
    let authorize_url = need(&o.authorize_url, "authorize_url")?;
    let token_url = need(&o.token_url, "token_url")?;
    let redirect_uri = need(&o.redirect_uri, "redirect_uri")?;
    if !redirect_uri.ends_with(super::user_oauth::CALLBACK_PATH) {
        return Err(vec![format!(
            "{field}.auth.oauth2.redirect_uri must end in {} (the gateway's callback)",
            super::user_oauth::CALLBACK_PATH
        )]);
    }
    let parsed = BaseUrl::parse(&token_url).map_err(|e| vec![format!("{field}.auth.oauth2.token_url: {e}")])?;
    let token_upstream = upstream_of(&format!("{field}.auth.oauth2"), parsed, Vec::new(), transport)?;
    if o.client_id.0.trim().is_empty() {
        return Err(vec![format!("{field}.auth.oauth2.client_id is empty")]);
    }
    Ok(super::user_oauth::PerUser {
        authorize_url,
        token_url,
        token_upstream,
        client_id: o.client_id.0.clone(),
        client_secret: o.client_secret.as_ref().map(|s| s.0.clone()).filter(|s| !s.is_empty()),
        scope: o.scope.clone(),
        resource: o.resource.clone().unwrap_or_else(|| server_url.to_owned()),
        redirect_uri,
    })
}

fn compile_virtual(
    name: &str,
    v: &VirtualSpec,
    servers: &[McpServer],
    declared: &std::collections::BTreeMap<String, super::spec::ServerSpec>,
) -> Result<VirtualServer, Vec<String>> {
    let field = format!("mcp.virtual.{name}");
    let mut errors = Vec::new();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        errors.push(format!(
            "{field}: a virtual server's name (its path, /mcp/{{name}}) may hold only letters, digits, `-` and `_`"
        ));
    }
    if v.tools.is_empty() && v.prompts.is_empty() && v.resources.is_empty() {
        errors.push(format!(
            "{field}: name at least one of tools (`server/tool`, globs allowed: `server/*`), prompts or resources"
        ));
    }
    let selections = select(&format!("{field}.tools"), &v.tools, servers, declared, &mut errors);
    let prompts = select(&format!("{field}.prompts"), &v.prompts, servers, declared, &mut errors);
    let mut resource_servers = Vec::new();
    for (i, server) in v.resources.iter().enumerate() {
        match servers.iter().position(|s| &*s.name == server) {
            Some(index) => resource_servers.push(index),
            None if declared.contains_key(server) => {}
            None => errors.push(format!("{field}.resources[{i}]: no server `{server}` under mcp.servers")),
        }
    }
    let mut used: Vec<usize> = Vec::new();
    for s in &selections {
        if !used.contains(&s.server) {
            used.push(s.server);
        }
    }
    used.sort_unstable();
    let access = v.access.iter().enumerate().map(|(i, a)| access_rule(format!("{field}.access[{i}]"), a)).collect();
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(VirtualServer {
        name: Arc::from(name),
        selections,
        prompts,
        resource_servers,
        servers: used,
        teams: v.teams.clone().into_boxed_slice(),
        fail_closed: v.fail_closed,
        access,
        audit_arguments: v.audit_arguments,
    })
}

/// `server/name-glob` entries of `field`.
fn select(
    field: &str,
    entries: &[String],
    servers: &[McpServer],
    declared: &std::collections::BTreeMap<String, super::spec::ServerSpec>,
    errors: &mut Vec<String>,
) -> Vec<Selection> {
    let mut selections = Vec::new();
    for (i, t) in entries.iter().enumerate() {
        let Some((server, name)) = t.split_once('/').filter(|(s, t)| !s.is_empty() && !t.is_empty()) else {
            errors.push(format!("{field}[{i}] {t:?}: write `server/name` (globs allowed in the name part)"));
            continue;
        };
        match servers.iter().position(|s| &*s.name == server) {
            Some(index) => selections.push(Selection { server: index, tool: Glob::new(name) }),
            // A server with its own error is reported there.
            None if declared.contains_key(server) => {}
            None => errors.push(format!("{field}[{i}]: no server `{server}` under mcp.servers")),
        }
    }
    selections
}

fn access_rule(label: String, a: &AccessSpec) -> AccessRule {
    let globs = |v: &[String]| v.iter().map(|p| Glob::new(p)).collect();
    AccessRule {
        label,
        teams: a.teams.clone(),
        users: a.users.clone(),
        applications: a.applications.clone(),
        keys: a.keys.clone(),
        environments: a.environments.clone(),
        allow: globs(&a.allow),
        deny: globs(&a.deny),
    }
}
