//! `mcp:` as written in the config file: upstream MCP servers, and the virtual servers the
//! gateway serves at `/mcp/{name}`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::file::{PoolSection, UpstreamTimeoutsSection, UpstreamTlsSection};
use crate::config::units::{Dur, EnvString};

/// `mcp:`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpSection {
    /// Upstream MCP servers, by a name of your choice (letters, digits, `-`, `_`; no `__`).
    #[serde(default)]
    pub servers: BTreeMap<String, ServerSpec>,
    /// Virtual servers: each an endpoint `/mcp/{name}` with a curated set of tools.
    #[serde(default, rename = "virtual")]
    pub virtual_servers: BTreeMap<String, VirtualSpec>,
    /// Programs stdio servers may run (`command[0]` must be one of these, exactly): the
    /// config cannot make the gateway start anything else.
    #[serde(default)]
    pub stdio_commands: Vec<String>,
    /// Browser origins allowed to call virtual servers (`https://app.example.com`), besides
    /// loopback ones. A request with any other `Origin` is refused (DNS rebinding); clients
    /// that are not browsers send none.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// 32 bytes, base64 (`${MCP_TOKEN_KEY}`; make one with `openssl rand -base64 32`): seals
    /// users' upstream tokens at rest and the consent flow's state. Required when a server
    /// uses `flow: authorization_code`.
    pub token_key: Option<EnvString>,
}

/// The config file's `mcp:` with what the admin API made added. The file wins: an object the
/// admin API made under a name the file now declares is left out (and logged), so that a file
/// edit never keeps the gateway from starting. The admin API itself refuses such names
/// ([`clashes`]).
pub fn merged(file: &McpSection, admin: &McpSection) -> McpSection {
    let mut out = file.clone();
    for (name, s) in &admin.servers {
        if out.servers.contains_key(name) {
            tracing::warn!(%name, "an MCP server made through the admin API is shadowed by the config file's");
        } else {
            out.servers.insert(name.clone(), s.clone());
        }
    }
    for (name, v) in &admin.virtual_servers {
        if out.virtual_servers.contains_key(name) {
            tracing::warn!(%name, "an MCP virtual server made through the admin API is shadowed by the config file's");
        } else {
            out.virtual_servers.insert(name.clone(), v.clone());
        }
    }
    out
}

/// [`merged`], leaving out each admin-made object that keeps the whole from compiling (its
/// stdio program taken off the allow-list, its server gone, its server's name now a file
/// virtual server's...), so that what the admin API once made never keeps the gateway from
/// starting either. `compile` says whether a section compiles. When the file's own section does
/// not compile, everything is kept, so that the file's errors are the ones reported. Returns the
/// section and what was left out (`mcp.servers.x`, `mcp.virtual.y`), each with why.
pub fn merged_leaving_out(
    file: &McpSection,
    admin: &McpSection,
    compile: impl Fn(&McpSection) -> Result<(), Vec<String>>,
) -> (McpSection, Vec<(String, String)>) {
    let all = merged(file, admin);
    if compile(&all).is_ok() || compile(file).is_err() {
        return (all, Vec::new());
    }
    let mut kept = file.clone();
    let mut left_out = Vec::new();
    let mut try_add = |what: String, add: &dyn Fn(&mut McpSection)| {
        let mut candidate = kept.clone();
        add(&mut candidate);
        match compile(&candidate) {
            Ok(()) => kept = candidate,
            Err(errors) => left_out.push((what, errors.join("; "))),
        }
    };
    for (name, s) in admin.servers.iter().filter(|(n, _)| !file.servers.contains_key(*n)) {
        try_add(format!("mcp.servers.{name}"), &|c| {
            c.servers.insert(name.clone(), s.clone());
        });
    }
    for (name, v) in admin.virtual_servers.iter().filter(|(n, _)| !file.virtual_servers.contains_key(*n)) {
        try_add(format!("mcp.virtual.{name}"), &|c| {
            c.virtual_servers.insert(name.clone(), v.clone());
        });
    }
    for (what, why) in &left_out {
        tracing::error!(object = %what, %why, "an MCP object made through the admin API no longer compiles and is left out");
    }
    (kept, left_out)
}

/// The names in `admin` that the config file declares too.
pub fn clashes(file: &McpSection, admin: &McpSection) -> Vec<String> {
    let servers = admin.servers.keys().filter(|n| file.servers.contains_key(*n)).map(|n| format!("mcp.servers.{n}"));
    let virtuals = admin
        .virtual_servers
        .keys()
        .filter(|n| file.virtual_servers.contains_key(*n))
        .map(|n| format!("mcp.virtual.{n}"));
    servers.chain(virtuals).collect()
}

/// How the gateway reaches an upstream MCP server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransportKind {
    /// JSON-RPC over POST, answers as JSON or SSE (MCP 2025-03-26 and later).
    #[default]
    StreamableHttp,
    /// The legacy HTTP+SSE transport (MCP 2024-11-05).
    Sse,
    /// A local process spoken to over stdin/stdout.
    Stdio,
}

/// `mcp.servers.<name>:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSpec {
    #[serde(default)]
    pub transport: TransportKind,
    /// The server's MCP endpoint (`https://mcp.example.com/mcp`), for streamable HTTP.
    pub url: Option<EnvString>,
    /// The program and its arguments, for stdio (`[npx, -y, some-mcp-server]`).
    #[serde(default)]
    pub command: Vec<String>,
    /// Headers presented upstream on every call (`authorization: Bearer ${GITHUB_TOKEN}`):
    /// the gateway's credential, never the caller's.
    #[serde(default)]
    pub headers: BTreeMap<String, EnvString>,
    /// How the gateway authenticates upstream beyond static headers: `{oauth2: {...}}`.
    #[serde(default)]
    pub auth: Option<AuthSpec>,
    /// Longest a call (`tools/call`, `tools/list`, the session's `initialize`) may take,
    /// answer included. Default 60s.
    #[serde(default = "default_call_timeout")]
    pub timeout: Dur,
    /// Teams whose callers may use this server through any virtual server; empty: every team.
    #[serde(default)]
    pub teams: Vec<String>,
    #[serde(default)]
    pub tls: UpstreamTlsSection,
    #[serde(default)]
    pub pool: PoolSection,
    #[serde(default)]
    pub timeouts: UpstreamTimeoutsSection,
}

fn default_call_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(60))
}

/// `mcp.servers.<name>.auth:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSpec {
    pub oauth2: OAuth2Spec,
}

/// OAuth 2.0 grants toward an upstream server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OAuth2Flow {
    /// The gateway's own application (RFC 6749 §4.4): one token for every caller.
    ClientCredentials,
    /// Each user's consent (authorization code with PKCE): each caller presents their own token.
    AuthorizationCode,
}

/// `mcp.servers.<name>.auth.oauth2:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Spec {
    pub flow: OAuth2Flow,
    /// authorization_code: the authorization server's authorize endpoint.
    pub authorize_url: Option<String>,
    /// authorization_code: the gateway's callback as users' browsers reach it
    /// (`https://gateway.example/mcp/oauth/callback`), registered with the authorization server.
    pub redirect_uri: Option<String>,
    /// The authorization server's token endpoint.
    pub token_url: Option<String>,
    pub client_id: EnvString,
    /// Use `${ENV_VAR}`.
    pub client_secret: Option<EnvString>,
    pub scope: Option<String>,
    /// Some servers (Auth0, Okta) want the API named as `audience`.
    pub audience: Option<String>,
    /// RFC 8707 resource indicator; default: the server's `url`, as MCP's authorization spec asks.
    pub resource: Option<String>,
}

/// `mcp.virtual.<name>:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualSpec {
    /// The tools it exposes, as `server/tool` with globs in the tool part (`github/*`,
    /// `files/read_*`). Each is listed and called as `server__tool`.
    #[serde(default)]
    pub tools: Vec<String>,
    /// The prompts it exposes, as `server/prompt` (globs allowed), listed and got as
    /// `server__prompt`.
    #[serde(default)]
    pub prompts: Vec<String>,
    /// The servers whose resources (and resource templates) it exposes; URIs stay as the
    /// servers give them.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Teams whose callers may use it; empty: every caller the gateway admits.
    #[serde(default)]
    pub teams: Vec<String>,
    /// When an upstream fails during `tools/list`, fail the whole listing instead of listing
    /// the others' tools. Default false.
    #[serde(default)]
    pub fail_closed: bool,
    /// Per-tool access rules, in order: see [`AccessSpec`].
    #[serde(default)]
    pub access: Vec<AccessSpec>,
    /// Keep each call's arguments (as sent upstream, after the guardrails rewrote them) in
    /// its audit record; otherwise only their SHA-256 is kept. Default false.
    #[serde(default)]
    pub audit_arguments: bool,
}

/// `mcp.virtual.<name>.access[]`: for the callers it names (all of the given lists must match;
/// an empty list matches anyone), `deny` removes tools and `allow`, when given, is the only
/// tools left. Patterns are globs over the virtual server's names (`github__create_*`). A tool
/// one rule denies stays denied whatever another allows.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessSpec {
    #[serde(default)]
    pub teams: Vec<String>,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub applications: Vec<String>,
    #[serde(default)]
    pub keys: Vec<String>,
    #[serde(default)]
    pub environments: Vec<String>,
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn section(yaml: &str) -> McpSection {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn compiles(m: &McpSection) -> Result<(), Vec<String>> {
        super::super::McpConfig::compile(m, None, None).map(|_| ())
    }

    /// An admin-made stdio server whose program left the file's allow-list kept the gateway
    /// from starting; now it is left out, with what uses it, and the rest is kept.
    #[test]
    fn admin_objects_that_stopped_compiling_are_left_out_not_fatal() {
        let file = section("stdio_commands: [node]\nservers:\n  gh: {url: 'http://127.0.0.1:1/mcp'}\n");
        let admin = section(
            "servers:\n  local: {transport: stdio, command: [python3, s.py]}\n  fs: {url: 'http://127.0.0.1:1/fs'}\n\
             virtual:\n  uses-local: {tools: ['local/*']}\n  fine: {tools: ['gh/*', 'fs/*']}\n",
        );
        assert!(compiles(&merged(&file, &admin)).is_err(), "as merged before, it did not compile");
        let (kept, left_out) = merged_leaving_out(&file, &admin, compiles);
        assert!(compiles(&kept).is_ok());
        let mut servers: Vec<&String> = kept.servers.keys().collect();
        servers.sort();
        assert_eq!(servers, ["fs", "gh"]);
        assert_eq!(kept.virtual_servers.keys().collect::<Vec<_>>(), ["fine"]);
        assert_eq!(left_out.len(), 2, "{left_out:?}");
        assert_eq!(left_out[0].0, "mcp.servers.local");
        assert!(left_out[0].1.contains("not in mcp.stdio_commands"), "{left_out:?}");
        assert_eq!(left_out[1].0, "mcp.virtual.uses-local");
        // A file that does not compile itself keeps everything, so its own errors are reported.
        let broken = section("servers:\n  n: {}\n");
        let (all, none) = merged_leaving_out(&broken, &admin, compiles);
        assert!(none.is_empty() && all.servers.len() == 3);
    }
}
