//! `/mcp/{name}`: a virtual MCP server over streamable HTTP. `POST` carries one JSON-RPC
//! message: `initialize` opens a session (`Mcp-Session-Id`), `tools/list` merges the tools
//! of the upstream servers the caller may use (each under `server__tool`), `tools/call`
//! checks access and guardrails and routes the call to its owner, relaying the owner's
//! progress notifications and its requests (sampling, elicitation) as SSE when it streams.
//! `GET` opens the stream of what servers send outside calls ([`super::server_messages`]);
//! `DELETE` ends a session.

use std::rc::Rc;
use std::time::Instant;

use adapters::mcp::jsonrpc::{self, Message, RpcError};
use adapters::mcp::{names, texts};
use policy::guardrails::{Facts, Phase, Selected, Vault};
use policy::{Identity, Metadata};
use serde_json::{Value, json};

use super::access;
use super::compiled::{Listing, McpServer, VirtualServer};
use super::session::{ClientCaps, RELAY_PREFIX, SessionId, UpstreamSession};
use super::upstream::{self, Reply, UpstreamError};
use crate::actor::Served;
use crate::api::RequestCtx;
use crate::config::Snapshot;
use crate::error::ErrorKind;
use crate::http::{Request, Responder};
use crate::rt::{self, Conn};
use crate::shard::Shard;
use crate::store::audit::{AuditRecord, Decision};

/// Pages of an upstream's `tools/list` followed at most.
const MAX_PAGES: usize = 32;

/// Serves one request to a virtual server.
pub async fn handle<C: Conn>(
    shard: &Rc<Shard>,
    cfg: &Snapshot,
    caller: &Identity,
    req: Request,
    resp: &mut Responder<'_, C>,
    ctx: &mut RequestCtx,
) {
    if let Some(rest) = req.head.path().strip_prefix("/mcp/oauth/") {
        return match (req.head.method(), rest.strip_suffix("/authorize")) {
            ("GET", Some(server)) => super::user_oauth::authorize(cfg, caller, server, resp).await,
            _ => reply_error(resp, 404, None, RpcError::new(jsonrpc::INVALID_REQUEST, "no such OAuth route")).await,
        };
    }
    let name = req.head.path().strip_prefix("/mcp/").unwrap_or_default();
    let Some(v) = cfg.mcp.virtual_server(name) else {
        ctx.error = Some(ErrorKind::NotFound);
        let known: Vec<&str> = cfg.mcp.virtuals.iter().map(|v| &*v.name).collect();
        let why = format!(
            "no MCP virtual server `{name}` (configured: {})",
            if known.is_empty() { "none".to_owned() } else { known.join(", ") }
        );
        return reply_error(resp, 404, None, RpcError::new(jsonrpc::INVALID_REQUEST, why)).await;
    };
    if let Err(refused) = access::may_use_virtual(v, caller) {
        ctx.error = Some(ErrorKind::Forbidden);
        return reply_error(resp, 403, None, RpcError::new(jsonrpc::FORBIDDEN, refused.0)).await;
    }
    if let Some(why) = foreign_origin(&req, &cfg.mcp.allowed_origins) {
        ctx.error = Some(ErrorKind::Forbidden);
        return reply_error(resp, 403, None, RpcError::new(jsonrpc::FORBIDDEN, why)).await;
    }
    match req.head.method() {
        "POST" => post(shard, cfg, v, caller, &req, resp, ctx).await,
        "DELETE" => delete(shard, cfg, v, caller, &req, resp).await,
        "GET" => {
            if !header(&req, "accept").is_some_and(|a| a.contains("text/event-stream")) {
                ctx.error = Some(ErrorKind::BadRequest);
                let e = RpcError::new(jsonrpc::INVALID_REQUEST, "GET opens an event stream: accept text/event-stream");
                return reply_error(resp, 406, None, e).await;
            }
            match client_session(shard, v, caller, &req, ctx) {
                Ok(session) => {
                    let s = Session { shard, cfg, v, caller, session: &session };
                    super::server_messages::listen(&s, resp).await;
                }
                Err((status, e)) => reply_error(resp, status, None, e).await,
            }
        }
        _ => {
            let e = RpcError::new(
                jsonrpc::INVALID_REQUEST,
                "POST JSON-RPC messages, GET a stream, DELETE to end a session",
            );
            let _ = resp
                .start(405)
                .header("allow", "GET, POST, DELETE")
                .header("content-type", "application/json")
                .body(&jsonrpc::error(None, &e))
                .await;
        }
    }
}

/// The client session a request names (`Mcp-Session-Id`), checked, with the revision it speaks;
/// the status and error to answer otherwise.
fn client_session(
    shard: &Rc<Shard>,
    v: &VirtualServer,
    caller: &Identity,
    req: &Request,
    ctx: &mut RequestCtx,
) -> Result<SessionId, (u16, RpcError)> {
    let Some(session_header) = header(req, "mcp-session-id") else {
        ctx.error = Some(ErrorKind::BadRequest);
        let e = RpcError::new(jsonrpc::INVALID_REQUEST, "Mcp-Session-Id is required: send initialize first");
        return Err((400, e));
    };
    let Some(session) = shard.process.mcp_sessions.check(&v.name, &caller.describe(), session_header) else {
        ctx.error = Some(ErrorKind::NotFound);
        let e = RpcError::new(jsonrpc::INVALID_REQUEST, "unknown or ended MCP session: initialize a new one");
        return Err((404, e));
    };
    if let Some(pv) = header(req, "mcp-protocol-version")
        && !adapters::mcp::is_supported(pv)
    {
        ctx.error = Some(ErrorKind::BadRequest);
        let e = RpcError::new(
            jsonrpc::INVALID_REQUEST,
            format!(
                "MCP-Protocol-Version {pv} is not one this gateway speaks ({})",
                adapters::mcp::PROTOCOL_VERSIONS.join(", ")
            ),
        );
        return Err((400, e));
    }
    Ok(session)
}

/// A browser page must not drive an MCP endpoint it was not meant to (DNS rebinding, which
/// makes the page's own origin and `Host` agree, so comparing them proves nothing): an
/// `Origin`, when sent, must be a loopback one or one of `mcp.allowed_origins`.
fn foreign_origin(req: &Request, allowed: &[String]) -> Option<String> {
    let raw = req.head.header("origin")?;
    let origin = String::from_utf8_lossy(raw).trim().trim_end_matches('/').to_ascii_lowercase();
    let host_port = origin.split_once("://").map_or(origin.as_str(), |(_, rest)| rest);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host_port.split(':').next().unwrap_or_default(),
    };
    let loopback = matches!(host, "localhost" | "127.0.0.1" | "::1");
    (!loopback && !allowed.contains(&origin))
        .then(|| format!("origin {origin} may not call this gateway's MCP endpoints (see mcp.allowed_origins)"))
}

fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.head.header(name).and_then(|v| std::str::from_utf8(v).ok()).map(str::trim)
}

async fn reply_json<C: Conn>(resp: &mut Responder<'_, C>, status: u16, body: &[u8], session: Option<&str>) {
    let mut head = resp.start(status).header("content-type", "application/json");
    if let Some(s) = session {
        head = head.header("mcp-session-id", s);
    }
    let _ = head.body(body).await;
}

pub(super) async fn reply_error<C: Conn>(resp: &mut Responder<'_, C>, status: u16, id: Option<&Value>, err: RpcError) {
    reply_json(resp, status, &jsonrpc::error(id, &err), None).await;
}

async fn post<C: Conn>(
    shard: &Rc<Shard>,
    cfg: &Snapshot,
    v: &VirtualServer,
    caller: &Identity,
    req: &Request,
    resp: &mut Responder<'_, C>,
    ctx: &mut RequestCtx,
) {
    let message = match jsonrpc::parse(&req.body) {
        Ok(m) => m,
        Err(e) => {
            ctx.error = Some(ErrorKind::BadRequest);
            return reply_error(resp, 400, None, e).await;
        }
    };
    if let Message::Request { id, method, params } = &message
        && method == "initialize"
    {
        return initialize(shard, cfg, v, caller, id, params.as_ref(), resp).await;
    }
    let session = match client_session(shard, v, caller, req, ctx) {
        Ok(s) => s,
        Err((status, e)) => return reply_error(resp, status, None, e).await,
    };
    match message {
        // A cancellation goes on to the server the call is in flight to, on whichever shard.
        Message::Notification { method, params } if method == "notifications/cancelled" => {
            let _ = resp.start(202).body(b"").await;
            if let Some(p) = params {
                cancel(shard, cfg, &session, &p, true).await;
            }
        }
        // Answers to requests relayed from servers go back to them.
        Message::Response { id: Value::String(sealed), outcome } if sealed.starts_with(RELAY_PREFIX) => {
            let s = Session { shard, cfg, v, caller, session: &session };
            super::server_messages::answer_from_client(&s, &sealed, outcome, resp).await;
        }
        // Other notifications (initialized, progress) and responses to requests the gateway
        // never sends: accepted, nothing to answer.
        Message::Notification { .. } | Message::Response { .. } => {
            let _ = resp.start(202).body(b"").await;
        }
        Message::Request { id, method, params } => match method.as_str() {
            "ping" => reply_json(resp, 200, &jsonrpc::result(&id, json!({})), None).await,
            "tools/list" | "prompts/list" | "resources/list" | "resources/templates/list" => {
                let listing = match method.as_str() {
                    "tools/list" => Listing::Tools,
                    "prompts/list" => Listing::Prompts,
                    "resources/list" => Listing::Resources,
                    _ => Listing::ResourceTemplates,
                };
                let answer = merged_list(&Session { shard, cfg, v, caller, session: &session }, &id, listing).await;
                reply_json(resp, 200, &answer, None).await;
            }
            "prompts/get" => {
                let answer = prompt_get(&Session { shard, cfg, v, caller, session: &session }, &id, params).await;
                reply_json(resp, 200, &answer, None).await;
            }
            "resources/read" => {
                let answer = resource_read(&Session { shard, cfg, v, caller, session: &session }, &id, params).await;
                reply_json(resp, 200, &answer, None).await;
            }
            "tools/call" => {
                let accepts_sse = header(req, "accept").is_some_and(|a| a.contains("text/event-stream"));
                let decisions = std::cell::RefCell::default();
                let auditing = shard.process.store.get().is_some();
                let call = Call { shard, cfg, v, caller, session: &session, id: &id, accepts_sse, decisions, auditing };
                call.run(params.unwrap_or(Value::Null), resp).await;
            }
            other => {
                let e = RpcError::new(
                    jsonrpc::METHOD_NOT_FOUND,
                    format!(
                        "method {other} is not offered by this virtual server (it serves tools, prompts and resources)"
                    ),
                );
                reply_json(resp, 200, &jsonrpc::error(Some(&id), &e), None).await;
            }
        },
    }
}

async fn initialize<C: Conn>(
    shard: &Rc<Shard>,
    cfg: &Snapshot,
    v: &VirtualServer,
    caller: &Identity,
    id: &Value,
    params: Option<&Value>,
    resp: &mut Responder<'_, C>,
) {
    let asked = params.and_then(|p| p.get("protocolVersion")).and_then(Value::as_str);
    let version = adapters::mcp::negotiate(asked);
    let index = adapters::mcp::PROTOCOL_VERSIONS.iter().position(|x| *x == version).unwrap_or(0);
    let caps = ClientCaps::declared(params.and_then(|p| p.get("capabilities")));
    let opened = u8::try_from(index)
        .map_err(|e| e.to_string())
        .and_then(|i| shard.process.mcp_sessions.open(&v.name, &caller.describe(), i, caps));
    let (_, session) = match opened {
        Ok(s) => s,
        Err(why) => return reply_error(resp, 500, Some(id), RpcError::new(jsonrpc::INTERNAL_ERROR, why)).await,
    };
    let mut capabilities = serde_json::Map::new();
    // Servers' list changes reach clients on the GET stream, which only streamable HTTP servers
    // feed.
    let list_changed = v.servers.iter().any(|&i| {
        cfg.mcp.servers.get(i).is_some_and(|s| matches!(s.transport, super::compiled::ServerTransport::Http(_)))
    });
    if !v.selections.is_empty() {
        capabilities.insert("tools".into(), json!({"listChanged": list_changed}));
    }
    if !v.prompts.is_empty() {
        capabilities.insert("prompts".into(), json!({"listChanged": list_changed}));
    }
    if !v.resource_servers.is_empty() {
        capabilities.insert("resources".into(), json!({"listChanged": list_changed, "subscribe": false}));
    }
    let result = json!({
        "protocolVersion": version,
        "capabilities": capabilities,
        "serverInfo": {"name": format!("shardgate/{}", v.name), "version": env!("CARGO_PKG_VERSION")},
    });
    reply_json(resp, 200, &jsonrpc::result(id, result), Some(&session)).await;
}

async fn delete<C: Conn>(
    shard: &Rc<Shard>,
    cfg: &Snapshot,
    v: &VirtualServer,
    caller: &Identity,
    req: &Request,
    resp: &mut Responder<'_, C>,
) {
    let who = caller.describe();
    let Some(session) = header(req, "mcp-session-id").and_then(|h| shard.process.mcp_sessions.check(&v.name, &who, h))
    else {
        let e = RpcError::new(jsonrpc::INVALID_REQUEST, "unknown or ended MCP session");
        return reply_error(resp, 404, None, e).await;
    };
    shard.process.mcp_sessions.end(&session);
    // Every shard closes its upstream sessions for it (the others when their gossip loop reads
    // the note; a GET stream elsewhere ends at its next keep-alive).
    shard.process.mcp_hub.broadcast(shard.id, &super::hub::Note::Ended { session: session.clone() });
    close_upstream_sessions(shard, cfg, &session).await;
    let _ = resp.start(204).no_body().await;
}

/// Closes this shard's upstream sessions of an ended client session (legacy streams stop).
pub(super) async fn close_upstream_sessions(shard: &Rc<Shard>, cfg: &Snapshot, session: &SessionId) {
    for (server, up) in shard.mcp_sessions.take_all(session) {
        if let Some((_, s)) = cfg.mcp.server(&server) {
            upstream::close_session(shard, cfg, s, &up, &session.caller).await;
        }
    }
}

/// Forwards a client's `notifications/cancelled` to the server its request is in flight to,
/// in the client's upstream session there (the request went up under the client's own id).
/// A request not in flight on this shard may be on another: with `pass_on`, the others are
/// told.
pub(super) async fn cancel(shard: &Rc<Shard>, cfg: &Snapshot, session: &SessionId, params: &Value, pass_on: bool) {
    let Some(request) = params.get("requestId") else { return };
    let Some(server) =
        shard.mcp_sessions.owner(session, request).and_then(|name| cfg.mcp.server(&name).map(|(_, s)| s))
    else {
        if pass_on {
            let note = super::hub::Note::Cancel { session: session.clone(), params: params.clone() };
            shard.process.mcp_hub.broadcast(shard.id, &note);
        }
        return;
    };
    let note = jsonrpc::notification("notifications/cancelled", Some(params));
    // A legacy stream is this client's alone, so the id is its own there too. (A stdio process
    // is shared: its requests carry ids of the gateway's, and a cancellation is not passed on.)
    if let super::compiled::ServerTransport::LegacySse(_) = server.transport {
        if let Some(legacy) = shard.mcp_sessions.legacy(session, &server.name) {
            let _ = super::legacy_sse::send(shard, server, &legacy, &session.caller, &note, true).await;
        }
        return;
    }
    let Some(up) = shard.mcp_sessions.get(session, &server.name) else { return };
    let sent = upstream::post(shard, cfg, server, Some(&up), Some(&up.version), &session.caller, note).await;
    if let Ok(mut reply) = sent {
        while let Ok(Some(_)) = reply.next_message().await {}
    }
}

/// Runs `work` (an exchange with `server`) as one of its actor's requests, bounded by the
/// server's timeout.
pub(super) async fn in_actor<T>(
    shard: &Rc<Shard>,
    server: &McpServer,
    work: impl Future<Output = Result<T, UpstreamError>>,
) -> Result<T, UpstreamError> {
    let actor = shard.targets.actor(shard.id, &server.actor_name, server.pool_key(), server.actor, server.restart);
    let started = Instant::now();
    let bounded = rt::timeout(server.timeout, work);
    let failed = |why: String| UpstreamError::Failed(why);
    let result = match actor.serve(&shard.pool, Box::pin(bounded)).await {
        Served::Done(Ok(r)) => r,
        Served::Done(Err(_)) => Err(failed(format!("no answer within {} ms", server.timeout.as_millis()))),
        Served::Refused(r) => Err(failed(format!("busy on this gateway ({r:?}); retry later"))),
        Served::Panicked(m) => Err(failed(format!("the gateway's handler failed ({m})"))),
    };
    // A client that left says nothing of the server's health.
    actor.observe(started.elapsed(), None, matches!(result, Ok(_) | Err(UpstreamError::Client(_))));
    result
}

/// Posts `body` in `client`'s upstream session with `server`, re-opening that session once
/// if the upstream no longer knows it.
async fn exchange<'s>(
    shard: &'s Rc<Shard>,
    cfg: &Snapshot,
    server: &McpServer,
    client: &SessionId,
    body: &[u8],
) -> Result<Reply<'s>, UpstreamError> {
    if let super::compiled::ServerTransport::LegacySse(_) = server.transport {
        return upstream::exchange_legacy(shard, server, client, body).await;
    }
    let mut reopened = false;
    loop {
        let up: UpstreamSession = upstream::session_for(shard, cfg, server, client).await?;
        match upstream::post(shard, cfg, server, Some(&up), Some(&up.version), &client.caller, body.to_vec()).await {
            Err(UpstreamError::SessionGone) if !reopened => {
                shard.mcp_sessions.forget(client, &server.name);
                reopened = true;
            }
            other => return other,
        }
    }
}

/// A client session's request: who asks which virtual server, in which session.
#[derive(Clone, Copy)]
pub(super) struct Session<'a> {
    pub shard: &'a Rc<Shard>,
    pub cfg: &'a Snapshot,
    pub v: &'a VirtualServer,
    pub caller: &'a Identity,
    pub session: &'a SessionId,
}

impl<'a> Session<'a> {
    /// A [`Call`] context for what is not a tool call of its own (a server's request, a client's
    /// answer): its guardrails and decisions, no audit record.
    pub(super) fn unaudited_call(&self, id: &'a Value, accepts_sse: bool) -> Call<'a> {
        Call {
            shard: self.shard,
            cfg: self.cfg,
            v: self.v,
            caller: self.caller,
            session: self.session,
            id,
            accepts_sse,
            decisions: std::cell::RefCell::default(),
            auditing: false,
        }
    }
}

/// Every item `server` lists under `listing`, following its pages.
async fn list_items(
    shard: &Rc<Shard>,
    cfg: &Snapshot,
    server: &McpServer,
    client: &SessionId,
    listing: Listing,
) -> Result<Vec<Value>, UpstreamError> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 0..MAX_PAGES {
        let id = json!(format!("shardgate-{}-{page}", listing.key()));
        let params = cursor.take().map(|c| json!({"cursor": c}));
        let body = jsonrpc::request(&id, listing.method(), params.as_ref());
        let mut reply = exchange(shard, cfg, server, client, &body).await?;
        let result = reply
            .response_to(&id, async |_| {})
            .await?
            .map_err(|e| UpstreamError::Failed(format!("{} refused: {e}", listing.method())))?;
        if let Some(Value::Array(list)) = result.get(listing.key()) {
            items.extend(list.iter().cloned());
        }
        match result.get("nextCursor").and_then(Value::as_str) {
            Some(c) if !c.is_empty() => cursor = Some(c.to_owned()),
            _ => return Ok(items),
        }
    }
    Ok(items)
}

/// The merged, filtered listing, as the JSON-RPC response to send: tools and prompts under
/// `server__name` (only those the caller may use), resources as their servers give them (their
/// owners noted, for `resources/read`).
async fn merged_list(c: &Session<'_>, id: &Value, listing: Listing) -> Vec<u8> {
    let Session { shard, cfg, v, caller, session } = *c;
    let offered = match listing {
        Listing::Tools => !v.selections.is_empty(),
        Listing::Prompts => !v.prompts.is_empty(),
        Listing::Resources | Listing::ResourceTemplates => !v.resource_servers.is_empty(),
    };
    if !offered {
        let e = RpcError::new(
            jsonrpc::METHOD_NOT_FOUND,
            format!("this virtual server offers no {} (see its capabilities)", listing.key()),
        );
        return jsonrpc::error(Some(id), &e);
    }
    let servers = v.servers_for(listing);
    let servers = servers.iter().filter_map(|&i| cfg.mcp.servers.get(i).map(|s| (i, s)));
    let asks = servers.map(|(i, s)| async move {
        let listed = in_actor(shard, s, list_items(shard, cfg, s, session, listing)).await;
        (i, s, listed.map_err(|e| e.message(&s.name)))
    });
    let lists = futures_util::future::join_all(asks).await;
    let mut items = Vec::new();
    for (i, server, got) in lists {
        let list = match got {
            Ok(list) => list,
            Err(why) if v.fail_closed => {
                let e = RpcError::new(jsonrpc::UPSTREAM_ERROR, why).with_data(json!({"server": &*server.name}));
                return jsonrpc::error(Some(id), &e);
            }
            Err(why) => {
                tracing::warn!(virtual_server = %v.name, server = %server.name, %why, method = listing.method(), "MCP server left out of a listing");
                continue;
            }
        };
        for mut item in list {
            if !listing.renamed() {
                if let Some(uri) = item.get("uri").and_then(Value::as_str) {
                    shard.mcp_sessions.note_resource(session, uri, &server.name);
                }
                items.push(item);
                continue;
            }
            let Some(name) = item.get("name").and_then(Value::as_str) else { continue };
            if !v.exposes_item(listing, i, name) {
                continue;
            }
            let listed = names::prefixed(&server.name, name);
            if access::may_use_tool(&cfg.mcp, v, caller, i, &listed).is_err() {
                continue;
            }
            if let Some(o) = item.as_object_mut() {
                o.insert("name".into(), Value::String(listed));
            }
            items.push(item);
        }
    }
    jsonrpc::result(id, json!({ listing.key(): items }))
}

/// `prompts/get`: the prompt's owner answers under the prompt's own name.
async fn prompt_get(c: &Session<'_>, id: &Value, params: Option<Value>) -> Vec<u8> {
    let Session { shard, cfg, v, caller, session } = *c;
    let mut params = match params {
        Some(Value::Object(p)) => p,
        _ => {
            return jsonrpc::error(
                Some(id),
                &RpcError::new(jsonrpc::INVALID_PARAMS, "prompts/get takes params {name}"),
            );
        }
    };
    let name = params.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
    let unknown =
        || jsonrpc::error(Some(id), &RpcError::new(jsonrpc::INVALID_PARAMS, format!("Unknown prompt: {name}")));
    let Some((server_name, prompt)) = names::split(&name) else { return unknown() };
    let Some((si, server)) = cfg.mcp.server(server_name) else { return unknown() };
    if !v.exposes_item(Listing::Prompts, si, prompt) {
        return unknown();
    }
    if let Err(refused) = access::may_use_tool(&cfg.mcp, v, caller, si, &name) {
        let e =
            RpcError::new(jsonrpc::FORBIDDEN, format!("prompt {name} is not allowed for this caller: {}", refused.0))
                .with_data(json!({"rule": refused.rule()}));
        return jsonrpc::error(Some(id), &e);
    }
    params.insert("name".into(), Value::String(prompt.to_owned()));
    let body = jsonrpc::request(id, "prompts/get", Some(&Value::Object(params)));
    forward(shard, cfg, server, session, id, &body).await.unwrap_or_else(|why| upstream_error(id, &why, server))
}

/// `resources/read`: asked of the server that listed the URI (on this shard), else of each
/// resource server in turn until one has it.
async fn resource_read(c: &Session<'_>, id: &Value, params: Option<Value>) -> Vec<u8> {
    let Session { shard, cfg, v, session, .. } = *c;
    let Some(uri) = params.as_ref().and_then(|p| p.get("uri")).and_then(Value::as_str).map(str::to_owned) else {
        return jsonrpc::error(Some(id), &RpcError::new(jsonrpc::INVALID_PARAMS, "resources/read takes params {uri}"));
    };
    let body = jsonrpc::request(id, "resources/read", params.as_ref());
    let owner = shard.mcp_sessions.resource_owner(session, &uri);
    let mut order: Vec<&McpServer> = v.resource_servers.iter().filter_map(|&i| cfg.mcp.servers.get(i)).collect();
    order.sort_by_key(|s| Some(&s.name) != owner.as_ref());
    let mut last = None;
    for server in order {
        match forward(shard, cfg, server, session, id, &body).await {
            Ok(answer) if !answer_is_error(&answer) => return answer,
            Ok(answer) => last = Some(answer),
            Err(why) => last = Some(upstream_error(id, &why, server)),
        }
    }
    last.unwrap_or_else(|| {
        let e = RpcError::new(-32002, "Resource not found").with_data(json!({"uri": uri}));
        jsonrpc::error(Some(id), &e)
    })
}

fn answer_is_error(answer: &[u8]) -> bool {
    matches!(jsonrpc::parse(answer), Ok(Message::Response { outcome: Err(_), .. }))
}

fn upstream_error(id: &Value, why: &UpstreamError, server: &McpServer) -> Vec<u8> {
    let e =
        RpcError::new(jsonrpc::UPSTREAM_ERROR, why.message(&server.name)).with_data(json!({"server": &*server.name}));
    jsonrpc::error(Some(id), &e)
}

/// Sends a request as it is and returns the server's answer to it (result or error), as the
/// JSON-RPC response to send.
async fn forward(
    shard: &Rc<Shard>,
    cfg: &Snapshot,
    server: &McpServer,
    session: &SessionId,
    id: &Value,
    body: &[u8],
) -> Result<Vec<u8>, UpstreamError> {
    let work = async {
        let mut reply = exchange(shard, cfg, server, session, body).await?;
        reply.response_to(id, async |_| {}).await
    };
    Ok(match in_actor(shard, server, work).await? {
        Ok(result) => jsonrpc::result(id, result),
        Err(error) => jsonrpc::error_value(id, error),
    })
}

/// One `tools/call`.
pub(super) struct Call<'a> {
    pub shard: &'a Rc<Shard>,
    pub cfg: &'a Snapshot,
    pub v: &'a VirtualServer,
    pub caller: &'a Identity,
    pub session: &'a SessionId,
    pub id: &'a Value,
    pub accepts_sse: bool,
    /// Every access and guardrail decision taken, for the audit record.
    pub decisions: std::cell::RefCell<Vec<Decision>>,
    /// The gateway keeps an audit trail (it has a store).
    pub auditing: bool,
}

/// How a call ended before its result was sent.
pub(super) enum Stop {
    Refused(RpcError),
}

impl Call<'_> {
    pub(super) fn decide(&self, kind: &str, rule: &str, verdict: &str, phase: Option<Phase>) {
        if !self.auditing {
            return;
        }
        self.decisions.borrow_mut().push(Decision {
            kind: kind.to_owned(),
            rule: rule.to_owned(),
            verdict: verdict.to_owned(),
            phase: phase.map(|p| p.as_str().to_owned()),
        });
    }

    /// Serves the call and records it in the audit trail and the metrics.
    async fn run<C: Conn>(&self, params: Value, resp: &mut Responder<'_, C>) {
        let started = Instant::now();
        let tool = params.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
        // The argument hash and the decisions are for the audit trail: not made without a store.
        let arguments = match params.get("arguments") {
            Some(a) if self.auditing => serde_json::to_vec(a).unwrap_or_default(),
            _ => b"{}".to_vec(),
        };
        let mut sent_arguments = None;
        let mut server_name = None;
        let outcome = match self.prepare(params).await {
            Ok((server, upstream_params, selected, listed)) => {
                server_name = Some(server.name.to_string());
                if self.v.audit_arguments {
                    sent_arguments = upstream_params.get("arguments").map(Value::to_string);
                }
                let body = jsonrpc::request(self.id, "tools/call", Some(&upstream_params));
                let relay = self.relay(server, &listed, &body, &selected, resp);
                match in_actor(self.shard, server, relay).await {
                    Ok(outcome) => outcome,
                    // The client left while the answer was being written: the tool ran.
                    Err(UpstreamError::Client(_)) => {
                        resp.abandon();
                        "client_closed"
                    }
                    Err(why) if resp.is_fresh() => {
                        let e = RpcError::new(jsonrpc::UPSTREAM_ERROR, why.message(&server.name))
                            .with_data(json!({"server": &*server.name, "tool": listed}));
                        reply_json(resp, 200, &jsonrpc::error(Some(self.id), &e), None).await;
                        "upstream_error"
                    }
                    // The answer had begun (progress relayed): nothing more can be said.
                    Err(_) => {
                        resp.abandon();
                        "upstream_error"
                    }
                }
            }
            Err(Stop::Refused(e)) => {
                reply_json(resp, 200, &jsonrpc::error(Some(self.id), &e), None).await;
                match e.code {
                    jsonrpc::FORBIDDEN => "forbidden",
                    jsonrpc::GUARDRAIL_VIOLATION => "guardrail_blocked",
                    jsonrpc::RATE_LIMITED => "rate_limited",
                    jsonrpc::INVALID_PARAMS if e.message.starts_with("Unknown tool") => "unknown_tool",
                    _ => "invalid",
                }
            }
        };
        self.record(tool, server_name, &arguments, sent_arguments, outcome, started.elapsed());
    }

    /// The call in the metrics, the log and the audit trail.
    fn record(
        &self,
        tool: String,
        server: Option<String>,
        arguments: &[u8],
        sent_arguments: Option<String>,
        outcome: &'static str,
        latency: std::time::Duration,
    ) {
        let slot = crate::metrics::MCP_OUTCOMES.iter().position(|o| *o == outcome);
        if let Some(c) = slot.and_then(|i| self.shard.metrics.mcp_calls.get(i)) {
            c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        tracing::debug!(
            virtual_server = %self.v.name, tool = %tool, outcome, latency_us = latency.as_micros(),
            key = self.caller.key.as_deref(), user = self.caller.user.as_deref(), team = self.caller.team.as_deref(),
            "MCP tool call"
        );
        if !self.auditing {
            return;
        }
        let text = |s: &Option<std::sync::Arc<str>>| s.as_deref().map(str::to_owned);
        self.shard.audit(AuditRecord {
            at_ms: crate::api::governance::now_ms(),
            key: text(&self.caller.key),
            user: text(&self.caller.user),
            team: text(&self.caller.team),
            application: text(&self.caller.application),
            environment: text(&self.caller.environment),
            virtual_server: self.v.name.to_string(),
            server,
            tool,
            arguments_sha256: crate::store::audit::sha256_hex(arguments),
            arguments: sent_arguments,
            outcome: outcome.to_owned(),
            latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            decisions: self.decisions.take(),
        });
    }

    /// Checks the call (tool exposed, caller allowed, arguments through the guardrails) and
    /// makes the upstream's parameters: its own tool name, the checked arguments.
    async fn prepare(&self, params: Value) -> Result<(&McpServer, Value, Selected, String), Stop> {
        let Value::Object(mut params) = params else {
            return Err(Stop::Refused(RpcError::new(
                jsonrpc::INVALID_PARAMS,
                "tools/call takes params {name, arguments}",
            )));
        };
        let name = params.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
        let unknown = || Stop::Refused(RpcError::new(jsonrpc::INVALID_PARAMS, format!("Unknown tool: {name}")));
        let (server_name, tool) = names::split(&name).ok_or_else(unknown)?;
        let (si, server) =
            self.cfg.mcp.server(server_name).filter(|(i, _)| self.v.servers.contains(i)).ok_or_else(unknown)?;
        if !self.v.exposes(si, tool) {
            return Err(unknown());
        }
        if let Err(refused) = access::may_use_tool(&self.cfg.mcp, self.v, self.caller, si, &name) {
            self.decide("access", refused.rule(), "denied", None);
            let e =
                RpcError::new(jsonrpc::FORBIDDEN, format!("tool {name} is not allowed for this caller: {}", refused.0))
                    .with_data(json!({"rule": refused.rule()}));
            return Err(Stop::Refused(e));
        }
        if self.auditing {
            self.decide("access", &format!("mcp.virtual.{}", self.v.name), "allowed", None);
        }
        self.admit(&name)?;
        let selected = self.cfg.guardrails.select(self.caller, &name, &Metadata::new());
        let mut arguments = params.remove("arguments").unwrap_or_else(|| json!({}));
        self.guard(&selected, Phase::ToolArgs, &name, &mut arguments, all_texts, put_all_texts).await?;
        params.insert("name".into(), Value::String(tool.to_owned()));
        params.insert("arguments".into(), arguments);
        Ok((server, Value::Object(params), selected, name))
    }

    /// Rate limits and budgets, through the same limiter (and gossip) as LLM requests: a tool
    /// call is a request to model `mcp:{server}__{tool}` with no tokens and no price, so rules
    /// aimed at `models: ['mcp:*']` (or one tool) count tool calls, and rules that name no
    /// model count them too.
    fn admit(&self, listed: &str) -> Result<(), Stop> {
        let model = format!("mcp:{listed}");
        let metadata = Metadata::new();
        let ask = crate::api::governance::Ask {
            identity: self.caller,
            model: &model,
            upstream_model: &model,
            metadata: &metadata,
            body_len: 0,
            max_tokens: Some(0),
        };
        let mut ctx = RequestCtx::new(Instant::now());
        match crate::api::governance::admit(self.shard, self.cfg, &ask, &mut ctx) {
            Ok(()) => {
                // Counted now: a call is one request whatever it answers.
                if let Some(held) = ctx.held.take() {
                    held.settle(Some(&adapters::openai::usage::Usage::default()));
                }
                Ok(())
            }
            Err(refusal) => {
                self.decide("rate_limit", &refusal.rule, "refused", None);
                let e = RpcError::new(jsonrpc::RATE_LIMITED, refusal.message()).with_data(json!({
                    "rule": &*refusal.rule,
                    "scope": refusal.scope,
                    "retry_after_seconds": refusal.retry_after_secs(),
                }));
                Err(Stop::Refused(e))
            }
        }
    }

    /// Runs the selected rules of `phase` over the texts `read` finds in `value`, writing
    /// rewritten texts back with `write`. A block stops the call.
    pub(super) async fn guard(
        &self,
        selected: &Selected,
        phase: Phase,
        tool: &str,
        value: &mut Value,
        read: impl Fn(&Value) -> Vec<String>,
        write: impl Fn(&mut Value, Vec<String>),
    ) -> Result<(), Stop> {
        let rules = &self.cfg.guardrails;
        if !rules.applies(selected, phase) {
            return Ok(());
        }
        let what = if phase == Phase::ToolArgs { "arguments" } else { "result" };
        let blocked = |v: &policy::guardrails::Verdict, unavailable: bool| {
            let kind = if unavailable { "guardrail_unavailable" } else { "guardrail_violation" };
            let e = RpcError::new(
                jsonrpc::GUARDRAIL_VIOLATION,
                format!("the {what} of {tool} were blocked: {}", v.describe()),
            )
            .with_data(json!({"type": kind, "rule": &*v.rule, "phase": phase.as_str()}));
            Stop::Refused(e)
        };
        let mut found: Vec<std::borrow::Cow<'_, str>> = read(value).into_iter().map(std::borrow::Cow::Owned).collect();
        let metadata = Metadata::new();
        let facts = Facts { metadata: &metadata, asked_json: false, schema: None };
        let mut vault = Vault::default();
        let checked = rules.check(selected, phase, &mut found, facts, &mut vault);
        for v in &checked.verdicts {
            crate::api::guard::count_and_log(self.shard, self.cfg, v);
            self.decide("guardrail", &v.rule, v.outcome.as_str(), Some(phase));
        }
        if let Some(v) = checked.blocked() {
            return Err(blocked(v, false));
        }
        let mut changed = checked.changed;
        // Rules that ask a service (moderation, a webhook), in config order, each on the texts
        // as the rules before it left them; their timeouts bound the wait.
        for rule in rules.externals(selected, phase) {
            let asked = crate::api::guard_external::ask(self.shard, self.cfg, rule, phase, tool, &metadata, &found);
            let asked = Box::pin(asked).await;
            let rewrite = match (&asked, rule.mode) {
                (Ok(a), policy::guardrails::Mode::Mutate)
                    if rule.enforcement != policy::guardrails::Enforcement::Audit =>
                {
                    a.texts.clone()
                }
                _ => None,
            };
            let rewritten = rewrite.as_ref().is_some_and(|t| t.len() == found.len() && !t.iter().eq(found.iter()));
            let answer = asked.as_ref().map_err(String::as_str);
            if let Some(v) = policy::guardrails::Guardrails::external_verdict(rule, phase, answer, rewritten) {
                crate::api::guard::count_and_log(self.shard, self.cfg, &v);
                self.decide("guardrail", &v.rule, v.outcome.as_str(), Some(phase));
                if v.outcome == policy::guardrails::Outcome::Blocked {
                    return Err(blocked(&v, asked.is_err()));
                }
            }
            if let (Some(t), true) = (rewrite, rewritten) {
                found = t.into_iter().map(std::borrow::Cow::Owned).collect();
                changed = true;
            }
        }
        if changed {
            write(value, found.into_iter().map(std::borrow::Cow::into_owned).collect());
        }
        Ok(())
    }

    /// Sends the call upstream and answers the client: notifications relayed as SSE (when the
    /// upstream streams them and the client takes SSE), then the result, checked by the
    /// `tool_result` guardrails.
    async fn relay<C: Conn>(
        &self,
        server: &McpServer,
        listed: &str,
        body: &[u8],
        selected: &Selected,
        resp: &mut Responder<'_, C>,
    ) -> Result<&'static str, UpstreamError> {
        let _in_flight = self.shard.mcp_sessions.begin(self.session, self.id, &server.name);
        let mut reply = exchange(self.shard, self.cfg, server, self.session, body).await?;
        let upstream_session = reply.upstream.clone();
        let mut relayed = super::server_messages::RelayedIds::default();
        let mut events = None;
        let outcome = loop {
            let to_client = match reply.next_message().await? {
                None => return Err(UpstreamError::Failed("the answer ended without a result".into())),
                Some(Message::Response { id, outcome }) if &id == self.id => break outcome,
                Some(Message::Notification { method, params }) if self.accepts_sse => {
                    let up = upstream_session.as_ref();
                    let Some(mut params) = relayed.for_client(&server.name, up, &method, params) else { continue };
                    // What the server says along the way (log data, progress messages) reaches
                    // the agent too: the result's rules judge it first; a blocked one is dropped.
                    if let Some(p) = params.as_mut()
                        && self.guard(selected, Phase::ToolResult, listed, p, all_texts, put_all_texts).await.is_err()
                    {
                        continue;
                    }
                    jsonrpc::notification(&method, params.as_ref())
                }
                Some(Message::Request { id, method, params }) => {
                    let server_id = id.clone();
                    let asked = super::server_messages::ServerRequest { id, method, params, listed, selected };
                    let Some(r) = self.server_request(server, upstream_session.as_ref(), asked).await else { continue };
                    relayed.note(&server.name, upstream_session.as_ref(), &server_id, r.sealed);
                    r.message
                }
                // Notifications go nowhere when the client takes JSON only; responses to
                // requests the gateway did not send are dropped.
                Some(_) => continue,
            };
            if events.is_none() {
                let stream = resp.start_event_stream(200).stream().await;
                events = Some(stream.map_err(|e| UpstreamError::Client(e.to_string()))?);
            }
            if let Some(stream) = events.as_mut() {
                stream.send(&sse_event(&to_client)).await.map_err(|e| UpstreamError::Client(e.to_string()))?;
            }
        };
        drop(reply);
        let (answer, verdict) = match outcome {
            Ok(mut result) => {
                match self
                    .guard(
                        selected,
                        Phase::ToolResult,
                        listed,
                        &mut result,
                        texts::result_texts,
                        texts::put_result_texts,
                    )
                    .await
                {
                    Ok(()) => {
                        let failed = result.get("isError").and_then(Value::as_bool) == Some(true);
                        (jsonrpc::result(self.id, result), if failed { "tool_error" } else { "ok" })
                    }
                    Err(Stop::Refused(e)) => (jsonrpc::error(Some(self.id), &e), "guardrail_blocked"),
                }
            }
            // An error object may carry the tool's own text (`message`, `data`): judged too.
            Err(mut error) => {
                match self.guard(selected, Phase::ToolResult, listed, &mut error, all_texts, put_all_texts).await {
                    Ok(()) => (jsonrpc::error_value(self.id, error), "tool_error"),
                    Err(Stop::Refused(e)) => (jsonrpc::error(Some(self.id), &e), "guardrail_blocked"),
                }
            }
        };
        match events {
            Some(mut stream) => {
                let sent = stream.send(&sse_event(&answer)).await;
                sent.and(stream.finish().await).map_err(|e| UpstreamError::Client(e.to_string()))?;
                Ok(verdict)
            }
            None => {
                reply_json(resp, 200, &answer, None).await;
                Ok(verdict)
            }
        }
    }
}

/// Every text of a value ([`texts::strings`]).
pub(super) fn all_texts(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    texts::strings(v, &mut out);
    out
}

pub(super) fn put_all_texts(v: &mut Value, t: Vec<String>) {
    texts::put_strings(v, &mut t.into_iter());
}

/// One SSE event carrying a JSON-RPC message.
pub(super) fn sse_event(message: &[u8]) -> Vec<u8> {
    let mut e = Vec::with_capacity(message.len() + 24);
    e.extend_from_slice(b"event: message\ndata: ");
    e.extend_from_slice(message);
    e.extend_from_slice(b"\n\n");
    e
}
