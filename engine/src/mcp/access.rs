//! Who may use which tool of a virtual server. Three gates, in order: the virtual server's
//! teams, the tool's server's teams, then the virtual server's access rules. A tool a caller
//! may not use is neither listed nor callable, and a refused call names the rule that refused.

use policy::Identity;

use super::compiled::{AccessRule, McpConfig, VirtualServer};

/// Why a caller may not use a virtual server or a tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl Refused {
    /// The rule that refused: the config path the message starts with.
    pub fn rule(&self) -> &str {
        self.0.split_once(": ").map_or(self.0.as_str(), |(rule, _)| rule)
    }
}

fn team_allowed(teams: &[String], caller: &Identity) -> bool {
    teams.is_empty() || caller.team.as_deref().is_some_and(|t| teams.iter().any(|x| x == t))
}

/// Whether `caller` may use `v` at all.
pub fn may_use_virtual(v: &VirtualServer, caller: &Identity) -> Result<(), Refused> {
    if team_allowed(&v.teams, caller) {
        Ok(())
    } else {
        Err(Refused(format!(
            "mcp.virtual.{}.teams: this virtual server is for teams {}; the caller's team is {}",
            v.name,
            v.teams.join(", "),
            caller.team.as_deref().unwrap_or("(none)")
        )))
    }
}

/// Whether `caller` may use server `server` (index) at all (its `teams`).
pub fn may_use_server(mcp: &McpConfig, server: usize, caller: &Identity) -> bool {
    mcp.servers.get(server).is_some_and(|s| team_allowed(&s.teams, caller))
}

/// Whether the rule speaks of `caller`: every list it gives names the caller.
fn names_caller(rule: &AccessRule, caller: &Identity) -> bool {
    let within =
        |list: &[String], value: Option<&str>| list.is_empty() || value.is_some_and(|v| list.iter().any(|x| x == v));
    within(&rule.teams, caller.team.as_deref())
        && within(&rule.users, caller.user.as_deref())
        && within(&rule.applications, caller.application.as_deref())
        && within(&rule.keys, caller.key.as_deref())
        && within(&rule.environments, caller.environment.as_deref())
}

/// Whether `caller` may use tool `tool` of server `server` (index) that `v` lists as
/// `prefixed`. The tool must be one `v` exposes (checked by the caller of this function).
pub fn may_use_tool(
    mcp: &McpConfig,
    v: &VirtualServer,
    caller: &Identity,
    server: usize,
    prefixed: &str,
) -> Result<(), Refused> {
    if let Some(s) = mcp.servers.get(server)
        && !team_allowed(&s.teams, caller)
    {
        return Err(Refused(format!(
            "mcp.servers.{}.teams: server {} is for teams {}; the caller's team is {}",
            s.name,
            s.name,
            s.teams.join(", "),
            caller.team.as_deref().unwrap_or("(none)")
        )));
    }
    for rule in v.access.iter().filter(|r| names_caller(r, caller)) {
        if let Some(g) = rule.deny.iter().find(|g| g.matches(prefixed)) {
            return Err(Refused(format!("{}: `{}` denies {prefixed}", rule.label, g.as_str())));
        }
        if !rule.allow.is_empty() && !rule.allow.iter().any(|g| g.matches(prefixed)) {
            return Err(Refused(format!("{}: its allow list does not name {prefixed}", rule.label)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::mcp::spec::McpSection;
    use std::sync::Arc;

    fn config() -> McpConfig {
        let spec: McpSection = serde_saphyr::from_str(
            "servers:\n  gh: {url: 'http://127.0.0.1:1/mcp'}\n  fs: {url: 'http://127.0.0.1:1/fs', teams: [ops]}\n\
             virtual:\n  tools:\n    tools: ['gh/*', 'fs/read_*']\n    access:\n      - {teams: [support], deny: ['gh__delete_*']}\n      - {users: [intern], allow: ['gh__search_*']}\n",
        )
        .unwrap();
        McpConfig::compile(&spec, None, None).unwrap()
    }

    fn caller(team: Option<&str>, user: Option<&str>) -> Identity {
        let mut id = Identity::anonymous();
        id.team = team.map(Arc::from);
        id.user = user.map(Arc::from);
        id
    }

    #[test]
    fn rules_deny_and_restrict_by_caller() {
        let mcp = config();
        let v = mcp.virtual_server("tools").unwrap();
        let (gh, _) = mcp.server("gh").unwrap();
        let (fs, _) = mcp.server("fs").unwrap();
        assert!(v.exposes(gh, "create_issue") && v.exposes(fs, "read_file") && !v.exposes(fs, "write_file"));
        let support = caller(Some("support"), None);
        assert!(may_use_tool(&mcp, v, &support, gh, "gh__create_issue").is_ok());
        let e = may_use_tool(&mcp, v, &support, gh, "gh__delete_repo").unwrap_err();
        assert!(e.0.contains("mcp.virtual.tools.access[0]") && e.0.contains("gh__delete_*"), "{e:?}");
        let intern = caller(Some("support"), Some("intern"));
        assert!(may_use_tool(&mcp, v, &intern, gh, "gh__search_code").is_ok());
        let e = may_use_tool(&mcp, v, &intern, gh, "gh__create_issue").unwrap_err();
        assert!(e.0.contains("access[1]"), "{e:?}");
        // The fs server is for team ops only.
        assert!(may_use_tool(&mcp, v, &support, fs, "fs__read_file").unwrap_err().0.contains("mcp.servers.fs.teams"));
        assert!(may_use_tool(&mcp, v, &caller(Some("ops"), None), fs, "fs__read_file").is_ok());
    }

    #[test]
    fn config_errors_name_their_field() {
        let spec: McpSection = serde_saphyr::from_str(
            "stdio_commands: [node]\nservers:\n  a__b: {url: 'http://127.0.0.1:1/'}\n  s: {transport: stdio}\n  n: {}\n\
             \x20 q: {transport: stdio, command: [rm, -rf, /]}\n\
             \x20 r: {transport: stdio, command: [node, x.js], url: 'http://127.0.0.1:1/'}\n\
             \x20 t: {transport: sse, url: 'http://127.0.0.1:1/'}\n\
             \x20 o: {url: 'http://127.0.0.1:1/', auth: {oauth2: {flow: authorization_code, client_id: c}}}\n\
             \x20 p: {url: 'http://127.0.0.1:1/', auth: {oauth2: {flow: client_credentials, client_id: c, token_url: 'http://127.0.0.1:1/t'}}}\n\
             virtual:\n  v:\n    tools: ['nope/x', 'bad']\n",
        )
        .unwrap();
        let errors = McpConfig::compile(&spec, None, None).unwrap_err().join("\n");
        for needle in [
            "mcp.servers.a__b: the name holds `__`",
            "mcp.servers.s.command is required for transport stdio",
            "mcp.servers.q.command: \"rm\" is not in mcp.stdio_commands (the programs the gateway may run: node)",
            "mcp.servers.r: a stdio server takes a command, not url",
            "mcp.servers.n.url is required",
            "mcp.servers.o.auth.oauth2.authorize_url is required for authorization_code",
            "mcp.servers.p.auth.oauth2: client_id and client_secret are required",
            "mcp.virtual.v.tools[0]: no server `nope`",
            "mcp.virtual.v.tools[1] \"bad\"",
        ] {
            assert!(errors.contains(needle), "{needle} in {errors}");
        }
    }
}
