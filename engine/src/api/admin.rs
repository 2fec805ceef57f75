//! The admin API, `/admin/v1/...`: keys, teams, users, applications, rate-limit rules and
//! budgets (list, read, create or replace, delete; keys are created with a secret shown once,
//! patched and revoked), spend by entity, model and day, and `whoami`.
//!
//! Who may do what: org admins anything; team admins only inside their own teams (keys, users,
//! applications, and rules or budgets whose `when.teams` is exactly one of their teams);
//! members and viewers only `whoami`, their own keys and their own spend.
//!
//! Reads come from the config snapshot the shard already holds. Changes go to the store thread,
//! which compiles the whole policy with the change before writing anything, writes it in one
//! transaction and swaps the result in on every shard: a change is all there or not at all.

use std::collections::BTreeSet;
use std::rc::Rc;

use policy::spec::{ApplicationSpec, BudgetSpec, GovernanceSpec, KeySpec, RateLimitSpec, Role, TeamSpec, UserSpec};
use policy::{Identity, identity::Credential};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::RequestCtx;
use crate::config::Snapshot;
use crate::error::{ErrorKind, GatewayError};
use crate::http::{Request, Responder, send_error};
use crate::rt::Conn;
use crate::shard::Shard;
use crate::store::{ChangeError, Dimension, Entity, EntityKind, Mutation, SpendQuery};

pub const PREFIX: &str = "/admin/v1/";
const JSON: &str = "application/json";
const DAY_MS: u64 = 86_400_000;

/// What the caller may administer.
enum Scope {
    /// Everything.
    Org,
    /// These teams.
    Teams(BTreeSet<String>),
    /// Only themselves.
    Own,
}

impl Scope {
    fn of(id: &Identity, spec: &GovernanceSpec) -> Scope {
        match id.role {
            Role::OrgAdmin => Scope::Org,
            Role::TeamAdmin => {
                let mut teams: BTreeSet<String> = id.team.iter().map(|t| t.to_string()).collect();
                if let Some(u) = id.user.as_deref().and_then(|u| spec.users.get(u))
                    && u.role == Role::TeamAdmin
                {
                    teams.extend(u.teams.iter().cloned());
                }
                Scope::Teams(teams)
            }
            Role::Member | Role::Viewer => Scope::Own,
        }
    }

    fn covers_team(&self, team: Option<&str>) -> bool {
        match self {
            Scope::Org => true,
            Scope::Teams(ts) => team.is_some_and(|t| ts.contains(t)),
            Scope::Own => false,
        }
    }

    fn is_admin(&self) -> bool {
        !matches!(self, Scope::Own)
    }
}

fn error(kind: ErrorKind, message: impl Into<String>) -> GatewayError {
    GatewayError::new(kind, message)
}

fn forbidden(message: impl Into<String>) -> GatewayError {
    error(ErrorKind::Forbidden, message).with_code("admin_forbidden")
}

/// The kinds by their path segment.
fn kind_of(segment: &str) -> Option<EntityKind> {
    Some(match segment {
        "teams" => EntityKind::Team,
        "users" => EntityKind::User,
        "applications" => EntityKind::Application,
        "keys" => EntityKind::Key,
        "rate_limits" => EntityKind::RateLimit,
        "budgets" => EntityKind::Budget,
        _ => return None,
    })
}

/// The team an entity lives in: its own `team` field, else (keys) its user's only team or its
/// application's team, as the policy would settle it.
fn effective_team<'s>(e: &'s Entity, spec: &'s GovernanceSpec) -> Option<&'s str> {
    match e {
        Entity::Key(k) if k.team.is_none() => match (&k.user, &k.application) {
            (Some(u), _) => spec.users.get(u).and_then(|u| match u.teams.as_slice() {
                [t] => Some(t.as_str()),
                _ => None,
            }),
            (None, Some(a)) => spec.applications.get(a).and_then(|a| a.team.as_deref()),
            _ => None,
        },
        other => other.team(),
    }
}

/// Whether the caller may see or touch this entity (as it is, or as it would become).
fn in_scope(scope: &Scope, spec: &GovernanceSpec, e: &Entity, id: &Identity) -> bool {
    match scope {
        Scope::Org => true,
        Scope::Own => match e {
            Entity::Key(k) => {
                id.key.as_deref() == Some(k.name.as_str())
                    || (id.user.is_some() && k.user.as_deref() == id.user.as_deref())
            }
            Entity::User(n, _) => id.user.as_deref() == Some(n.as_str()),
            _ => false,
        },
        Scope::Teams(_) => match e {
            Entity::User(_, u) => !u.teams.is_empty() && u.teams.iter().all(|t| scope.covers_team(Some(t))),
            other => scope.covers_team(effective_team(other, spec)),
        },
    }
}

/// Answers everything under `/admin/v1/`.
pub async fn handle<C: Conn>(
    shard: &Rc<Shard>,
    cfg: &Snapshot,
    caller: &Identity,
    req: Request,
    resp: &mut Responder<'_, C>,
    ctx: &mut RequestCtx,
) {
    let result = route(shard, cfg, caller, &req).await;
    match result {
        // Cost attribution as CSV, for spreadsheets.
        Ok((200, body)) if wants_csv(req.head.target()) && req.head.path().ends_with("/costs") => {
            let _ = resp
                .start(200)
                .header("content-type", "text/csv; charset=utf-8")
                .body(costs_csv(&body).as_bytes())
                .await;
        }
        Ok((status, body)) => {
            let bytes = serde_json::to_vec(&body).unwrap_or_default();
            let _ = resp.start(status).header("content-type", JSON).body(&bytes).await;
        }
        Err(err) => {
            ctx.error = Some(err.kind);
            let _ = send_error(resp, &err).await;
        }
    }
}

async fn route(
    shard: &Rc<Shard>,
    cfg: &Snapshot,
    caller: &Identity,
    req: &Request,
) -> Result<(u16, Value), GatewayError> {
    let method = req.head.method();
    let path = req.head.path();
    let rest = path.strip_prefix(PREFIX).unwrap_or("");
    // Segments are percent-decoded, so names with `/` (team files' `search/rpm`) can be named.
    let decoded: Vec<String> = rest.split('/').filter(|s| !s.is_empty()).map(super::ops::percent_decode).collect();
    let parts: Vec<&str> = decoded.iter().map(String::as_str).collect();
    if caller.credential == Credential::Anonymous {
        return Err(error(ErrorKind::Unauthorized, "The admin API needs a credential: an admin key or token.")
            .with_code("missing_api_key"));
    }
    let merged = merged_spec(cfg);
    let scope = Scope::of(caller, &merged);
    match (method, parts.as_slice()) {
        ("GET", ["whoami"]) => Ok((200, whoami(caller, &scope))),
        ("GET", ["spend"]) => spend(shard, caller, &scope, req.head.target()).await,
        ("GET", ["audit"]) => audit(shard, &scope, req.head.target()).await,
        ("GET", ["requests"]) => requests(shard, &scope, req.head.target(), None).await,
        ("GET", ["costs"]) => costs(shard, &scope, req.head.target()).await,
        ("GET", ["requests", id]) => requests(shard, &scope, req.head.target(), Some(id)).await,
        (_, ["mcp", ..]) if !matches!(scope, Scope::Org) => Err(forbidden("Only org admins may manage MCP servers.")),
        ("GET", ["mcp"]) => Ok((200, mcp_listing(cfg))),
        ("PUT", ["mcp", kind @ ("servers" | "virtual"), name]) => {
            let change = crate::store::McpChange {
                kind: if *kind == "servers" { "server" } else { "virtual" },
                name: (*name).to_owned(),
                spec: Some(String::from_utf8_lossy(&req.body).into_owned()),
            };
            apply_mcp(shard, caller, change).await?;
            Ok((200, mcp_listing(&shard.config())))
        }
        ("DELETE", ["mcp", kind @ ("servers" | "virtual"), name]) => {
            let change = crate::store::McpChange {
                kind: if *kind == "servers" { "server" } else { "virtual" },
                name: (*name).to_owned(),
                spec: None,
            };
            apply_mcp(shard, caller, change).await?;
            Ok((200, mcp_listing(&shard.config())))
        }
        ("GET", ["targets"]) if matches!(scope, Scope::Org) => Ok((200, targets(shard, cfg))),
        ("GET", ["targets"]) => Err(forbidden("Only org admins may see the providers' state.")),
        ("GET", [kind]) => {
            let kind = kind_of(kind).ok_or_else(|| not_found(path))?;
            Ok((200, list(cfg, &merged, kind, &scope, caller)))
        }
        ("GET", [kind, name]) => {
            let kind = kind_of(kind).ok_or_else(|| not_found(path))?;
            let (e, source) = find(cfg, kind, name).ok_or_else(|| missing(kind, name))?;
            if !in_scope(&scope, &merged, &e, caller) {
                return Err(missing(kind, name));
            }
            Ok((200, render(&e, source)))
        }
        ("POST", ["keys"]) => create_key(shard, cfg, &merged, caller, &scope, &req.body).await,
        ("POST", ["keys", name, "revoke"]) => {
            let k = managed_key(cfg, &merged, name, &scope, caller)?;
            let revoked = KeySpec { revoked: true, ..k };
            apply(shard, caller, vec![Mutation::Put(Box::new(Entity::Key(revoked.clone())))]).await?;
            Ok((200, render(&Entity::Key(revoked), "admin")))
        }
        ("PATCH", ["keys", name]) => {
            let k = managed_key(cfg, &merged, name, &scope, caller)?;
            let patched = patch_key(k, &req.body, &scope)?;
            if !in_scope(&scope, &merged, &Entity::Key(patched.clone()), caller) {
                return Err(forbidden("A team admin can only move keys within their own teams."));
            }
            apply(shard, caller, vec![Mutation::Put(Box::new(Entity::Key(patched.clone())))]).await?;
            Ok((200, render(&Entity::Key(patched), "admin")))
        }
        ("PUT", [kind, name]) => {
            let kind = kind_of(kind).ok_or_else(|| not_found(path))?;
            if kind == EntityKind::Key {
                return Err(error(
                    ErrorKind::MethodNotAllowed,
                    "Keys are created with POST /admin/v1/keys and changed with PATCH (their secret is made here, once).",
                ));
            }
            if !scope.is_admin() {
                return Err(forbidden(
                    "Only org and team admins may change teams, users, applications, rules and budgets.",
                ));
            }
            let e = parse_entity(kind, name, &req.body)?;
            if kind == EntityKind::Team && !matches!(scope, Scope::Org) {
                return Err(forbidden("Only org admins may create or change teams."));
            }
            if let Entity::User(_, u) = &e
                && u.role == Role::OrgAdmin
                && !matches!(scope, Scope::Org)
            {
                return Err(forbidden("Only org admins may make org admins."));
            }
            if !in_scope(&scope, &merged, &e, caller) {
                return Err(forbidden(out_of_scope(kind)));
            }
            if let Some((old, source)) = find(cfg, kind, name) {
                if source == "config" {
                    return Err(declared_in_config(kind, name));
                }
                if !in_scope(&scope, &merged, &old, caller) {
                    return Err(forbidden(out_of_scope(kind)));
                }
            }
            let existed = find(cfg, kind, name).is_some();
            apply(shard, caller, vec![Mutation::Put(Box::new(e.clone()))]).await?;
            Ok((if existed { 200 } else { 201 }, render(&e, "admin")))
        }
        ("DELETE", [kind, name]) => {
            let kind = kind_of(kind).ok_or_else(|| not_found(path))?;
            let (old, source) = find(cfg, kind, name).ok_or_else(|| missing(kind, name))?;
            if !scope.is_admin()
                || !in_scope(&scope, &merged, &old, caller)
                || (kind == EntityKind::Team && !matches!(scope, Scope::Org))
            {
                return Err(forbidden(out_of_scope(kind)));
            }
            if source == "config" {
                return Err(declared_in_config(kind, name));
            }
            apply(shard, caller, vec![Mutation::Delete { kind, name: (*name).to_string() }]).await?;
            Ok((200, json!({"object": kind.as_str(), "name": name, "deleted": true})))
        }
        _ => Err(not_found(path)),
    }
}

fn not_found(path: &str) -> GatewayError {
    error(ErrorKind::NotFound, format!("no admin route {path}"))
}

fn missing(kind: EntityKind, name: &str) -> GatewayError {
    error(ErrorKind::NotFound, format!("no {} named {name:?}", kind.as_str())).with_code("not_found")
}

fn declared_in_config(kind: EntityKind, name: &str) -> GatewayError {
    error(
        ErrorKind::Conflict,
        format!(
            "{} {name:?} is declared in the config file; change it there (the admin API only changes what it made)",
            kind.as_str()
        ),
    )
}

fn out_of_scope(kind: EntityKind) -> String {
    match kind {
        EntityKind::Team => "Only org admins may create, change or delete teams.".into(),
        EntityKind::RateLimit | EntityKind::Budget => format!(
            "A team admin may only manage {}s whose `when.teams` is exactly one of their own teams.",
            kind.as_str()
        ),
        _ => format!("A team admin may only manage {}s of their own teams.", kind.as_str()),
    }
}

fn merged_spec(cfg: &Snapshot) -> GovernanceSpec {
    crate::store::entity::merge(&cfg.declared, &cfg.managed).unwrap_or_else(|_| (*cfg.declared).clone())
}

/// An entity and where it comes from (`config` or `admin`).
fn find(cfg: &Snapshot, kind: EntityKind, name: &str) -> Option<(Entity, &'static str)> {
    Entity::find_in(kind, name, &cfg.declared)
        .map(|e| (e, "config"))
        .or_else(|| Entity::find_in(kind, name, &cfg.managed).map(|e| (e, "admin")))
}

/// A key the admin API made, that the caller may change.
fn managed_key(
    cfg: &Snapshot,
    spec: &GovernanceSpec,
    name: &str,
    scope: &Scope,
    caller: &Identity,
) -> Result<KeySpec, GatewayError> {
    let (e, source) = find(cfg, EntityKind::Key, name).ok_or_else(|| missing(EntityKind::Key, name))?;
    let Entity::Key(k) = e else { return Err(missing(EntityKind::Key, name)) };
    // Members may revoke their own keys; everything else needs an admin.
    if !in_scope(scope, spec, &Entity::Key(k.clone()), caller) {
        return Err(missing(EntityKind::Key, name));
    }
    if source == "config" {
        return Err(declared_in_config(EntityKind::Key, name));
    }
    Ok(k)
}

/// `GET /admin/v1/targets`: every configured provider, and what each shard's actor for it
/// knows (a shard that never sent it a request has no actor for it).
fn targets(shard: &Shard, cfg: &Snapshot) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let actors = shard.process.registry.targets();
    let route_stats = shard.process.registry.route_targets();
    let data: Vec<Value> = cfg
        .providers
        .iter()
        .map(|p| {
            let mut shards: Vec<Value> = actors
                .iter()
                .filter(|t| t.target == p.name)
                .map(|t| {
                    json!({
                        "shard": t.shard,
                        "in_flight": t.in_flight.load(Relaxed),
                        "waiting": t.waiting.load(Relaxed),
                        "latency_ewma_ms": t.latency_ewma_us.load(Relaxed) as f64 / 1000.0,
                        "ttft_ewma_ms": t.ttft_ewma_us.load(Relaxed) as f64 / 1000.0,
                        "consecutive_failures": t.consecutive_failures.load(Relaxed),
                        "restarts": t.restarts.load(Relaxed),
                        "refused": {
                            "mailbox_full": t.refused_full.load(Relaxed),
                            "waited_too_long": t.refused_wait.load(Relaxed),
                            "restarting": t.refused_restarting.load(Relaxed),
                            "restarted_while_waiting": t.failed_waiting.load(Relaxed),
                        },
                    })
                })
                .collect();
            shards.sort_by_key(|v| v["shard"].as_u64());
            // The route targets this provider serves: breaker and averages per shard.
            let mut routes: Vec<Value> = cfg
                .route_targets
                .iter()
                .filter(|(_, spec)| spec.provider == *p.name)
                .map(|(_, spec)| {
                    let key = crate::route_health::target_key(spec);
                    let mut per_shard: Vec<Value> = route_stats
                        .iter()
                        .filter(|t| *t.key == *key)
                        .map(|t| {
                            json!({
                                "shard": t.shard,
                                "breaker": t.breaker_label(),
                                "breaker_opens": t.breaker_opens.load(Relaxed),
                                "in_flight": t.in_flight.load(Relaxed),
                                "attempts": t.attempts.load(Relaxed),
                                "failures": t.failures.load(Relaxed),
                                "ttft_ewma_ms": t.ttft_ewma_us.load(Relaxed) as f64 / 1000.0,
                                "per_token_ewma_ms": t.tpot_ewma_us.load(Relaxed) as f64 / 1000.0,
                            })
                        })
                        .collect();
                    per_shard.sort_by_key(|v| v["shard"].as_u64());
                    json!({"target": key, "model": spec.model, "shards": per_shard})
                })
                .collect();
            routes.sort_by(|a, b| a["target"].as_str().cmp(&b["target"].as_str()));
            json!({
                "object": "target",
                "provider": &*p.name,
                "routes": routes,
                "kind": p.kind.label(),
                "limits": {
                    "max_in_flight": p.actor.max_in_flight,
                    "mailbox": p.actor.mailbox,
                    "max_wait_ms": p.actor.max_wait.map(|d| d.as_millis()),
                },
                "shards": shards,
            })
        })
        .collect();
    json!({"object": "list", "data": data})
}

fn whoami(id: &Identity, scope: &Scope) -> Value {
    let credential = match id.credential {
        Credential::Key => "key",
        Credential::Jwt => "jwt",
        Credential::Anonymous => "anonymous",
    };
    let teams: Vec<String> = match scope {
        Scope::Teams(ts) => ts.iter().cloned().collect(),
        _ => Vec::new(),
    };
    json!({
        "object": "identity",
        "credential": credential,
        "key": id.key.as_deref(),
        "user": id.user.as_deref(),
        "team": id.team.as_deref(),
        "application": id.application.as_deref(),
        "environment": id.environment.as_deref(),
        "role": id.role.as_str(),
        "administers": match scope { Scope::Org => json!("everything"), Scope::Teams(_) => json!(teams), Scope::Own => Value::Null },
        "metadata": id.metadata.iter().collect::<std::collections::BTreeMap<_, _>>(),
    })
}

/// How an entity is shown: its spec (a key without its digest), its kind, name and source.
fn render(e: &Entity, source: &str) -> Value {
    let spec = match e {
        Entity::Team(_, s) => serde_json::to_value(s),
        Entity::User(_, s) => serde_json::to_value(s),
        Entity::Application(_, s) => serde_json::to_value(s),
        Entity::Key(k) => serde_json::to_value(KeySpec { hash: None, secret: None, ..k.clone() }),
        Entity::RateLimit(s) => serde_json::to_value(s),
        Entity::Budget(s) => serde_json::to_value(s),
    };
    let mut spec = spec.unwrap_or(Value::Null);
    if let Value::Object(m) = &mut spec {
        // Absent fields say nothing: drop the nulls, and the secret fields entirely.
        m.retain(|k, v| !v.is_null() && k != "hash" && k != "secret");
        m.remove("name");
        m.remove("id");
    }
    json!({"object": e.kind().as_str(), "name": e.name(), "source": source, "spec": spec})
}

fn list(cfg: &Snapshot, spec: &GovernanceSpec, kind: EntityKind, scope: &Scope, caller: &Identity) -> Value {
    let mut data = Vec::new();
    for (part, source) in [(&*cfg.declared, "config"), (&*cfg.managed, "admin")] {
        for e in Entity::all_in(kind, part) {
            if in_scope(scope, spec, &e, caller) {
                data.push(render(&e, source));
            }
        }
    }
    json!({"object": "list", "data": data})
}

/// Reads a JSON body into `T`, naming the field at fault.
fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, GatewayError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let kind = if inner.is_syntax() || inner.is_eof() { ErrorKind::InvalidJson } else { ErrorKind::InvalidField };
        let err = error(kind, format!("{path}: {inner}"));
        if path == "." { err } else { err.with_param(path) }
    })
}

fn parse_entity(kind: EntityKind, name: &str, body: &[u8]) -> Result<Entity, GatewayError> {
    valid_name(name)?;
    Ok(match kind {
        EntityKind::Team => Entity::Team(name.into(), parse_body::<TeamSpec>(body)?),
        EntityKind::User => Entity::User(name.into(), parse_body::<UserSpec>(body)?),
        EntityKind::Application => Entity::Application(name.into(), parse_body::<ApplicationSpec>(body)?),
        EntityKind::RateLimit => {
            let spec: RateLimitSpec = parse_body(&with_field(body, "id", name)?)?;
            Entity::RateLimit(RateLimitSpec { id: name.into(), ..spec })
        }
        EntityKind::Budget => {
            let spec: BudgetSpec = parse_body(&with_field(body, "id", name)?)?;
            Entity::Budget(BudgetSpec { id: name.into(), ..spec })
        }
        EntityKind::Key => return Err(error(ErrorKind::MethodNotAllowed, "use POST /admin/v1/keys")),
    })
}

/// The body with `field` set from the path when absent (rules and budgets carry their id), and
/// refused when it disagrees.
fn with_field(body: &[u8], field: &str, value: &str) -> Result<Vec<u8>, GatewayError> {
    let mut v: Value = parse_body(body)?;
    let Value::Object(m) = &mut v else {
        return Err(error(ErrorKind::InvalidJson, "the body must be a JSON object"));
    };
    match m.get(field) {
        Some(Value::String(s)) if s != value => {
            return Err(error(ErrorKind::InvalidField, format!("{field}: {s:?} differs from the path's {value:?}"))
                .with_param(field.to_string()));
        }
        _ => {
            m.insert(field.into(), Value::String(value.into()));
        }
    }
    Ok(serde_json::to_vec(&v).unwrap_or_default())
}

fn valid_name(name: &str) -> Result<(), GatewayError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@' | b':'));
    if ok {
        Ok(())
    } else {
        Err(error(ErrorKind::InvalidField, format!("name {name:?}: 1 to 128 of A-Z a-z 0-9 - _ . @ :"))
            .with_param("name"))
    }
}

/// `POST /admin/v1/keys`: the body is a key spec without `hash` or `secret`; the answer carries
/// the secret, once.
async fn create_key(
    shard: &Rc<Shard>,
    cfg: &Snapshot,
    spec_all: &GovernanceSpec,
    caller: &Identity,
    scope: &Scope,
    body: &[u8],
) -> Result<(u16, Value), GatewayError> {
    let mut spec: KeySpec = parse_body(body)?;
    if spec.hash.is_some() || spec.secret.is_some() {
        return Err(error(ErrorKind::InvalidField, "hash/secret: the gateway makes the secret; do not send one")
            .with_param(if spec.hash.is_some() { "hash" } else { "secret" }));
    }
    if spec.display.is_some() {
        return Err(error(ErrorKind::InvalidField, "display is set by the gateway").with_param("display"));
    }
    if spec.name.is_empty() {
        spec.name = format!("key-{}", &random_hex()?[..12]);
    }
    valid_name(&spec.name)?;
    match scope {
        Scope::Org => {}
        Scope::Teams(ts) => {
            if spec.team.is_none() && ts.len() == 1 {
                spec.team = ts.iter().next().cloned();
            }
            if spec.role == Some(Role::OrgAdmin) {
                return Err(forbidden("Only org admins may make org-admin keys."));
            }
        }
        Scope::Own => {
            // Members make keys for themselves only, never above their own role.
            if spec.user.is_none() && spec.application.is_none() {
                spec.user = caller.user.as_deref().map(str::to_owned);
            }
            if spec.team.is_none() {
                spec.team = caller.team.as_deref().map(str::to_owned);
            }
            if spec.user.as_deref() != caller.user.as_deref() || spec.user.is_none() || spec.application.is_some() {
                return Err(forbidden("Members may only create keys for themselves."));
            }
            if spec.role.is_some_and(|r| r != Role::Member && r != Role::Viewer) {
                return Err(forbidden("Members may only create member or viewer keys."));
            }
        }
    }
    if matches!(scope, Scope::Teams(_)) && !in_scope(scope, spec_all, &Entity::Key(spec.clone()), caller) {
        return Err(forbidden(out_of_scope(EntityKind::Key)));
    }
    if find(cfg, EntityKind::Key, &spec.name).is_some() {
        return Err(error(ErrorKind::Conflict, format!("a key named {:?} exists", spec.name)).with_param("name"));
    }
    let made = policy::keys::generate(cfg.policy.hasher()).map_err(|e| error(ErrorKind::Internal, e))?;
    spec.hash = Some(made.digest.to_text());
    spec.display = Some(made.display.clone());
    apply(shard, caller, vec![Mutation::Put(Box::new(Entity::Key(spec.clone())))]).await?;
    let mut shown = render(&Entity::Key(spec), "admin");
    if let Value::Object(m) = &mut shown {
        m.insert("key".into(), Value::String(made.secret));
        m.insert("note".into(), Value::String("The key is shown once; only its digest is kept.".into()));
    }
    Ok((201, shown))
}

/// `PATCH /admin/v1/keys/{name}`: the fields given replace the key's.
fn patch_key(k: KeySpec, body: &[u8], scope: &Scope) -> Result<KeySpec, GatewayError> {
    let patch: Value = parse_body(body)?;
    let Value::Object(fields) = patch else {
        return Err(error(ErrorKind::InvalidJson, "the body must be a JSON object"));
    };
    for f in ["name", "hash", "secret", "display"] {
        if fields.contains_key(f) {
            return Err(error(ErrorKind::InvalidField, format!("{f} cannot be changed")).with_param(f));
        }
    }
    if !scope.is_admin() && fields.keys().any(|f| f != "revoked" && f != "expires_at") {
        return Err(forbidden("Members may only revoke their keys or bring their expiry forward."));
    }
    let mut current = serde_json::to_value(&k).map_err(|e| error(ErrorKind::Internal, e.to_string()))?;
    if let Value::Object(m) = &mut current {
        for (f, v) in fields {
            m.insert(f, v);
        }
    }
    let bytes = serde_json::to_vec(&current).unwrap_or_default();
    let patched: KeySpec = parse_body(&bytes)?;
    if !scope.is_admin() && k.revoked && !patched.revoked {
        return Err(forbidden("A revoked key stays revoked."));
    }
    if matches!(scope, Scope::Teams(_)) && patched.role == Some(Role::OrgAdmin) {
        return Err(forbidden("Only org admins may make org-admin keys."));
    }
    Ok(patched)
}

fn store_of(shard: &Shard) -> Result<&crate::store::Store, GatewayError> {
    shard.process.store.get().map(|s| &**s).ok_or_else(|| {
        error(
            ErrorKind::Unavailable,
            "This gateway runs without a store (`store.path: none`, or config given as text): the admin API is read-only.",
        )
    })
}

fn change_error(e: ChangeError) -> GatewayError {
    match e {
        ChangeError::Invalid(m) => error(ErrorKind::InvalidField, m),
        ChangeError::NotFound(m) => error(ErrorKind::NotFound, m),
        ChangeError::Conflict(m) => error(ErrorKind::Conflict, m),
        ChangeError::Store(m) => error(ErrorKind::Internal, m),
    }
}

/// `PUT`/`DELETE /admin/v1/mcp/{servers|virtual}/{name}`: the body is the object's spec as
/// the config file writes it, in JSON.
async fn apply_mcp(shard: &Rc<Shard>, caller: &Identity, change: crate::store::McpChange) -> Result<(), GatewayError> {
    store_of(shard)?.change_mcp(change, caller.describe()).await.map_err(change_error)
}

/// `GET /admin/v1/mcp`: every server and virtual server in force, where each comes from, and the
/// admin-made ones left out because they no longer compile (`left_out`, each with why).
fn mcp_listing(cfg: &Snapshot) -> Value {
    let servers: Vec<Value> = cfg
        .mcp
        .servers
        .iter()
        .map(|s| {
            let (transport, target) = match &s.transport {
                crate::mcp::compiled::ServerTransport::Http(up) => ("streamable-http", up.host_header.clone()),
                crate::mcp::compiled::ServerTransport::LegacySse(up) => ("sse", up.host_header.clone()),
                crate::mcp::compiled::ServerTransport::Stdio(c) => ("stdio", c.join(" ")),
            };
            let auth = if s.per_user.is_some() { "oauth2_per_user" } else if s.oauth.is_some() { "oauth2_client" } else { "headers" };
            serde_json::json!({"name": &*s.name, "transport": transport, "target": target, "auth": auth, "teams": &*s.teams})
        })
        .collect();
    let virtuals: Vec<Value> = cfg
        .mcp
        .virtuals
        .iter()
        .map(|v| {
            let names = |sel: &[crate::mcp::compiled::Selection]| -> Vec<String> {
                sel.iter()
                    .filter_map(|s| cfg.mcp.servers.get(s.server).map(|srv| format!("{}/{}", srv.name, s.tool.as_str())))
                    .collect()
            };
            serde_json::json!({"name": &*v.name, "tools": names(&v.selections), "prompts": names(&v.prompts), "teams": &*v.teams})
        })
        .collect();
    let left_out: Vec<Value> =
        cfg.mcp_left_out.iter().map(|(object, why)| serde_json::json!({"object": object, "why": why})).collect();
    serde_json::json!({"servers": servers, "virtual": virtuals, "left_out": left_out})
}

async fn apply(shard: &Rc<Shard>, caller: &Identity, changes: Vec<Mutation>) -> Result<(), GatewayError> {
    store_of(shard)?.change(changes, caller.describe()).await.map_err(change_error)
}

fn random_hex() -> Result<String, GatewayError> {
    let bytes = policy::keys::random_pepper().map_err(|e| error(ErrorKind::Internal, e))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `GET /admin/v1/spend?group_by=team,model&from=2026-11-01&to=2026-11-30&team=search`.
async fn spend(
    shard: &Rc<Shard>,
    caller: &Identity,
    scope: &Scope,
    target: &str,
) -> Result<(u16, Value), GatewayError> {
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let now = super::governance::now_ms();
    let mut q = SpendQuery {
        group_by: vec![Dimension::Day],
        filters: Vec::new(),
        from_ms: now - now % DAY_MS - 29 * DAY_MS,
        to_ms: now - now % DAY_MS + DAY_MS,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = super::ops::percent_decode(&v.replace('+', " "));
        match k {
            "group_by" => {
                q.group_by = v
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        Dimension::parse(s).ok_or_else(|| {
                            error(ErrorKind::InvalidField, format!("group_by: unknown dimension {s:?} (day, key, user, team, application, environment, model)"))
                                .with_param("group_by")
                        })
                    })
                    .collect::<Result<_, _>>()?;
            }
            "from" => q.from_ms = day_ms(&v, "from")?,
            "to" => q.to_ms = day_ms(&v, "to")? + DAY_MS,
            other => {
                let dim = Dimension::parse(other).filter(|d| *d != Dimension::Day).ok_or_else(|| {
                    error(ErrorKind::InvalidField, format!("unknown parameter {other:?}")).with_param(other.to_string())
                })?;
                q.filters.push((dim, v.split(',').map(str::to_owned).collect()));
            }
        }
    }
    if q.to_ms <= q.from_ms {
        return Err(error(ErrorKind::InvalidField, "to must not be before from").with_param("to"));
    }
    // Narrow to what the caller may see.
    match scope {
        Scope::Org => {}
        Scope::Teams(ts) => {
            let allowed: Vec<String> = ts.iter().cloned().collect();
            narrow(&mut q, Dimension::Team, &allowed)?;
        }
        Scope::Own => match (&caller.user, &caller.key) {
            (Some(u), _) => narrow(&mut q, Dimension::User, &[u.to_string()])?,
            (None, Some(k)) => narrow(&mut q, Dimension::Key, &[k.to_string()])?,
            _ => return Err(forbidden("Anonymous callers have no spend to show.")),
        },
    }
    let Some(store) = shard.process.store.get() else {
        return Err(error(ErrorKind::Unavailable, "This gateway runs without a store: no spend ledger."));
    };
    let rows = store.report(q.clone()).await.map_err(|e| error(ErrorKind::Internal, e))?;
    let data: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut m = serde_json::Map::new();
            for (d, v) in q.group_by.iter().zip(&r.group) {
                m.insert(d.as_str().into(), v.clone().map_or(Value::Null, Value::String));
            }
            m.insert("requests".into(), r.requests.into());
            m.insert("input_tokens".into(), r.input_tokens.into());
            m.insert("output_tokens".into(), r.output_tokens.into());
            m.insert("cached_tokens".into(), r.cached_tokens.into());
            m.insert("cost_usd".into(), Value::String(super::governance::format_usd(r.cost_micros)));
            Value::Object(m)
        })
        .collect();
    let total: u64 = rows.iter().map(|r| r.cost_micros).sum();
    Ok((
        200,
        json!({
            "object": "spend_report",
            "group_by": q.group_by.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
            "from": policy::clock::date_of_ms(q.from_ms),
            "to": policy::clock::date_of_ms(q.to_ms - DAY_MS),
            "total_usd": super::governance::format_usd(total),
            "data": data,
        }),
    ))
}

/// Restricts a query's `dim` to `allowed` (intersecting any filter already there).
fn narrow(q: &mut SpendQuery, dim: Dimension, allowed: &[String]) -> Result<(), GatewayError> {
    match q.filters.iter_mut().find(|(d, _)| *d == dim) {
        Some((_, values)) => {
            values.retain(|v| allowed.contains(v));
            if values.is_empty() {
                return Err(forbidden(format!("You may only see spend of your own {}.", dim.as_str())));
            }
        }
        None => q.filters.push((dim, allowed.to_vec())),
    }
    Ok(())
}

/// An instant given as RFC 3339 or Unix milliseconds.
fn instant(v: &str, field: &'static str) -> Result<u64, GatewayError> {
    v.parse::<u64>().or_else(|_| policy::clock::parse_instant(v)).map_err(|_| {
        error(ErrorKind::InvalidField, format!("{field}: {v:?} is neither RFC 3339 nor Unix milliseconds"))
            .with_param(field)
    })
}

/// The query string's parameters, values percent-decoded.
fn query_pairs(target: &str) -> impl Iterator<Item = (&str, String)> {
    let query = target.split_once('?').map_or("", |(_, q)| q);
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k, super::ops::percent_decode(&v.replace('+', " ")))
    })
}

/// `GET /admin/v1/audit`: MCP tool-call records, newest first, filtered by `key`, `user`,
/// `team`, `application`, `virtual_server`, `server`, `tool`, `from` and `to` (RFC 3339 or
/// Unix milliseconds) and `limit` (default 100, at most 1000). Org admins see every record;
/// team admins their teams' (naming the team when they have several); others none.
async fn audit(shard: &Rc<Shard>, scope: &Scope, target: &str) -> Result<(u16, Value), GatewayError> {
    let mut q = crate::store::audit::AuditQuery { limit: 100, ..Default::default() };
    for (k, v) in query_pairs(target) {
        match k {
            "key" => q.key = Some(v),
            "user" => q.user = Some(v),
            "team" => q.team = Some(v),
            "application" => q.application = Some(v),
            "virtual_server" => q.virtual_server = Some(v),
            "server" => q.server = Some(v),
            "tool" => q.tool = Some(v),
            "from" => q.from_ms = Some(instant(&v, "from")?),
            "to" => q.to_ms = Some(instant(&v, "to")?),
            "limit" => {
                q.limit = v.parse().map_err(|_| {
                    error(ErrorKind::InvalidField, format!("limit: {v:?} is not a number")).with_param("limit")
                })?
            }
            other => {
                return Err(error(ErrorKind::InvalidField, format!("unknown parameter {other:?}"))
                    .with_param(other.to_string()));
            }
        }
    }
    match scope {
        Scope::Org => {}
        Scope::Teams(ts) => match &q.team {
            Some(t) if ts.contains(t) => {}
            Some(t) => return Err(forbidden(format!("You administer no team named {t:?}."))),
            None if ts.len() == 1 => q.team = ts.iter().next().cloned(),
            None => return Err(forbidden("Name one of your teams: ?team=...")),
        },
        Scope::Own => return Err(forbidden("Only admins may read the audit trail.")),
    }
    let store = shard.process.store.get().ok_or_else(|| {
        error(ErrorKind::NotFound, "this gateway runs without a store, so it keeps no audit trail")
            .with_code("no_store")
    })?;
    let records = store.audit(q).await.map_err(|e| error(ErrorKind::Unavailable, e))?;
    Ok((200, serde_json::json!({"object": "list", "data": records})))
}

/// Who may read what the request log holds: org admins everything (`None`), team admins their
/// teams'; and the store that holds it.
fn request_log_scope<'s>(
    shard: &'s Rc<Shard>,
    scope: &Scope,
    what: &str,
) -> Result<(Option<Vec<String>>, &'s crate::store::Store), GatewayError> {
    let teams = match scope {
        Scope::Org => None,
        Scope::Teams(ts) => Some(ts.iter().cloned().collect()),
        Scope::Own => return Err(forbidden(format!("Only admins may read {what}."))),
    };
    let store = shard.process.store.get().ok_or_else(|| {
        error(ErrorKind::NotFound, "this gateway runs without a store, so it keeps no request log")
            .with_code("no_store")
    })?;
    Ok((teams, &**store))
}

fn wants_csv(target: &str) -> bool {
    query_pairs(target).any(|(k, v)| k == "format" && v == "csv")
}

/// The rows of a costs answer as CSV: a header line of its `columns`, then one line per row
/// (fields quoted when they hold a comma, a quote or a line break).
fn costs_csv(body: &Value) -> String {
    let columns: Vec<&str> =
        body["columns"].as_array().map(|c| c.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let field = |v: &Value| {
        let text = match v {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if text.contains([',', '"', '\n', '\r']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text }
    };
    let mut out = columns.join(",");
    out.push('\n');
    for row in body["data"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let line: Vec<String> = columns.iter().map(|c| field(&row[*c])).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

/// `GET /admin/v1/costs`: requests, tokens and cost from the request log, grouped by
/// `group_by` (`key`, `user`, `team`, `application`, `environment`, `model`, `provider`) and
/// summed per `granularity` (`hour`, `day`, `month`) when given, between `from` and `to`,
/// filtered by any dimension (`team=search`), only the `top` costliest groups (of each period);
/// `format=csv` answers CSV. Org admins see all; team admins their teams'.
async fn costs(shard: &Rc<Shard>, scope: &Scope, target: &str) -> Result<(u16, Value), GatewayError> {
    use crate::store::requests::{CostDimension, CostQuery, Granularity};
    let mut q = CostQuery::default();
    let invalid = |field: &str, why: String| error(ErrorKind::InvalidField, why).with_param(field.to_owned());
    for (k, v) in query_pairs(target) {
        match k {
            "group_by" => {
                for name in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let d = CostDimension::parse(name).ok_or_else(|| {
                        invalid("group_by", format!("group_by: unknown dimension {name:?} (key, user, team, application, environment, model, provider)"))
                    })?;
                    q.group_by.push(d);
                }
            }
            "granularity" => {
                q.granularity =
                    Some(Granularity::parse(&v).ok_or_else(|| {
                        invalid("granularity", format!("granularity: {v:?} is not hour, day or month"))
                    })?);
            }
            "from" => q.from_ms = Some(instant(&v, "from")?),
            "to" => q.to_ms = Some(instant(&v, "to")?),
            "top" => q.top = Some(v.parse().map_err(|_| invalid("top", format!("top: {v:?} is not a number")))?),
            "format" if v == "csv" || v == "json" => {}
            "format" => return Err(invalid("format", format!("format: {v:?} is not csv or json"))),
            other => match CostDimension::parse(other) {
                Some(d) => q.filters.push((d, v)),
                None => return Err(invalid(other, format!("unknown parameter {other:?}"))),
            },
        }
    }
    let (teams, store) = request_log_scope(shard, scope, "cost attribution")?;
    q.teams = teams;
    let mut columns: Vec<&str> = q.granularity.map(|_| "period").into_iter().collect();
    columns.extend(q.group_by.iter().map(|d| d.as_str()));
    columns.extend(["requests", "input_tokens", "output_tokens", "cached_tokens", "cost_usd"]);
    let rows = store.costs(q).await.map_err(|e| error(ErrorKind::Unavailable, e))?;
    Ok((200, serde_json::json!({"object": "list", "columns": columns, "data": rows})))
}

/// `GET /admin/v1/requests`: the request log, newest first, filtered by `key`, `user`, `team`,
/// `application`, `model`, `provider`, `status`, `from` and `to` (RFC 3339 or Unix
/// milliseconds) and `limit` (default 100, at most 10,000); `GET /admin/v1/requests/{id}`: one
/// record (404 when there is none). Org admins see every request; team admins their teams'.
async fn requests(
    shard: &Rc<Shard>,
    scope: &Scope,
    target: &str,
    id: Option<&str>,
) -> Result<(u16, Value), GatewayError> {
    let mut q = crate::store::requests::RequestQuery { limit: 100, id: id.map(str::to_owned), ..Default::default() };
    let number = |v: &str, field: &'static str| {
        v.parse()
            .map_err(|_| error(ErrorKind::InvalidField, format!("{field}: {v:?} is not a number")).with_param(field))
    };
    for (k, v) in query_pairs(target) {
        match k {
            "key" => q.key = Some(v),
            "user" => q.user = Some(v),
            "team" => q.team = Some(v),
            "application" => q.application = Some(v),
            "model" => q.model = Some(v),
            "provider" => q.provider = Some(v),
            "status" => {
                let n = number(&v, "status")?;
                q.status = Some(u16::try_from(n).map_err(|_| {
                    error(ErrorKind::InvalidField, format!("status: {v:?} is not an HTTP status")).with_param("status")
                })?);
            }
            "from" => q.from_ms = Some(instant(&v, "from")?),
            "to" => q.to_ms = Some(instant(&v, "to")?),
            "limit" => q.limit = number(&v, "limit")?,
            other => {
                return Err(error(ErrorKind::InvalidField, format!("unknown parameter {other:?}"))
                    .with_param(other.to_string()));
            }
        }
    }
    let (teams, store) = request_log_scope(shard, scope, "the request log")?;
    q.teams = teams;
    let records = store.requests(q).await.map_err(|e| error(ErrorKind::Unavailable, e))?;
    match id {
        Some(id) => match records.into_iter().next() {
            Some(r) => Ok((200, r)),
            None => Err(error(ErrorKind::NotFound, format!("no request {id:?} in the log")).with_code("not_found")),
        },
        None => Ok((200, serde_json::json!({"object": "list", "data": records}))),
    }
}

fn day_ms(v: &str, field: &'static str) -> Result<u64, GatewayError> {
    policy::clock::parse_instant(&format!("{v}T00:00:00Z")).map_err(|_| {
        error(ErrorKind::InvalidField, format!("{field}: {v:?} is not a date (YYYY-MM-DD)")).with_param(field)
    })
}
