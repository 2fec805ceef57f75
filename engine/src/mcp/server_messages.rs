//! What upstream servers send of their own accord: requests in the middle of a call
//! (`sampling/createMessage`, `elicitation/create`, `roots/list`), relayed to the client on
//! the call's event stream and its answers carried back; and the `GET` stream, where each
//! server's messages outside any call (list changes, logs, requests) reach the client.
//!
//! A relayed request goes to the client under an id that seals where it came from
//! ([`RelayRoute`]: server, upstream session, the server's own id), so the client's answer is
//! routed by whichever shard it lands on, with no state shared between shards.

use std::rc::Rc;

use adapters::mcp::jsonrpc::{self, Message, RpcError};
use futures_util::stream::{self, StreamExt};
use policy::Metadata;
use policy::guardrails::{Phase, Selected};
use serde_json::{Value, json};

use super::compiled::{McpServer, ServerTransport};
use super::endpoint::{Call, Session, Stop, all_texts, in_actor, put_all_texts, reply_error, sse_event};
use super::session::{MAX_LISTENING, RelayRoute, UpstreamSession};
use super::upstream::{self, UpstreamError};
use crate::config::Snapshot;
use crate::http::Responder;
use crate::rt::{self, Conn};
use crate::shard::Shard;

/// How often an idle `GET` stream says something, so a client that left is noticed.
const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// A request a server sent in the middle of a call.
pub(super) struct ServerRequest<'a> {
    pub id: Value,
    pub method: String,
    pub params: Option<Value>,
    /// The tool called (`server__tool`), and the guardrails chosen for it.
    pub listed: &'a str,
    pub selected: &'a Selected,
}

/// The server requests relayed on one stream, by server, upstream session and the server's own
/// id, to their sealed ids: a server's `notifications/cancelled` names its own id, which the
/// client never saw (and a `GET` stream mixes several upstream sessions of one server, whose ids
/// may repeat).
#[derive(Default)]
pub(super) struct RelayedIds(std::collections::HashMap<String, String>);

/// Requests remembered per stream; a GET stream lives long, so the oldest are let go.
const RELAYED_KEPT: usize = 1024;

impl RelayedIds {
    fn key(server: &str, upstream: Option<&UpstreamSession>, id: &Value) -> String {
        let session = upstream.and_then(|u| u.id.as_deref()).unwrap_or_default();
        format!("{server}\0{session}\0{id}")
    }

    pub(super) fn note(&mut self, server: &str, upstream: Option<&UpstreamSession>, id: &Value, sealed: String) {
        if self.0.len() >= RELAYED_KEPT {
            self.0.clear();
        }
        self.0.insert(Self::key(server, upstream, id), sealed);
    }

    /// A notification from `server` (in `upstream`) as the client may see it: a cancellation
    /// of a relayed request names the sealed id; one of a request the client never got is
    /// dropped (`None`).
    pub(super) fn for_client(
        &self,
        server: &str,
        upstream: Option<&UpstreamSession>,
        method: &str,
        mut params: Option<Value>,
    ) -> Option<Option<Value>> {
        if method != "notifications/cancelled" {
            return Some(params);
        }
        let id = params.as_ref().and_then(|p| p.get("requestId"))?;
        let sealed = self.0.get(&Self::key(server, upstream, id))?.clone();
        if let Some(Value::Object(p)) = params.as_mut() {
            p.insert("requestId".into(), Value::String(sealed));
        }
        Some(params)
    }
}

/// A server's request as relayed to the client.
pub(super) struct Relayed {
    /// The id the client sees.
    pub sealed: String,
    pub message: Vec<u8>,
}

impl Call<'_> {
    /// A server's request mid-call (`sampling/createMessage`, `elicitation/create`,
    /// `roots/list`): the message to relay to the client, under an id that seals where it came
    /// from ([`RelayRoute`]), so that the client's answer, on whichever shard it lands, goes back
    /// to this server in this upstream session. Relayed only to a client that declared the
    /// capability and takes this call's answer as a stream; its text passes the `tool_result`
    /// rules first (it comes from the tool). Otherwise the server gets an error at once rather
    /// than waiting for an answer that cannot come; `ping` is answered here.
    pub(super) async fn server_request(
        &self,
        server: &McpServer,
        upstream_session: Option<&UpstreamSession>,
        mut asked: ServerRequest<'_>,
    ) -> Option<Relayed> {
        let method = asked.method.as_str();
        let refusal = match self.session.caps.allows(method) {
            _ if method == "ping" => None,
            None => Some(format!("{method} is not a request this gateway relays to clients")),
            Some(false) => Some(format!(
                "the client did not declare the {} capability",
                super::session::ClientCaps::needed_for(method).unwrap_or(method)
            )),
            Some(true) if !self.accepts_sse => {
                Some("the client takes this call's answer as JSON, so no request can reach it".to_owned())
            }
            Some(true) => None,
        };
        let answer = |outcome: Result<Value, RpcError>| match outcome {
            Ok(result) => jsonrpc::result(&asked.id, result),
            Err(e) => jsonrpc::error(Some(&asked.id), &e),
        };
        let mut reply_now = None;
        if method == "ping" {
            reply_now = Some(answer(Ok(json!({}))));
        } else if let Some(why) = refusal {
            self.decide("server_request", method, "refused", None);
            reply_now = Some(answer(Err(RpcError::new(jsonrpc::METHOD_NOT_FOUND, why))));
        } else if let Some(p) = asked.params.as_mut()
            && let Err(Stop::Refused(e)) =
                self.guard(asked.selected, Phase::ToolResult, asked.listed, p, all_texts, put_all_texts).await
        {
            self.decide("server_request", method, "blocked", None);
            reply_now = Some(answer(Err(e)));
        }
        // Answered here, within the server's timeout (outside a call no actor bounds it).
        let reply = |message: Vec<u8>| {
            let send = answer_upstream(self.shard, self.cfg, server, upstream_session, &self.session.caller, message);
            rt::timeout(server.timeout, send)
        };
        if let Some(message) = reply_now {
            let _ = reply(message).await;
            return None;
        }
        let route = RelayRoute {
            server: server.name.to_string(),
            tool: asked.listed.to_owned(),
            upstream_session: upstream_session.and_then(|s| s.id.as_deref().map(str::to_owned)),
            version: upstream_session
                .map_or_else(|| self.session.protocol_version().to_owned(), |s| s.version.to_string()),
            id: asked.id.clone(),
            // An answer is of use while the server may still wait for it.
            expires_ms: crate::api::governance::now_ms()
                .saturating_add(u64::try_from(server.timeout.as_millis()).unwrap_or(u64::MAX)),
        };
        match self.shard.process.mcp_sessions.seal_route(&self.v.name, self.session, &route) {
            Ok(sealed) => {
                self.decide("server_request", method, "relayed", None);
                self.shard.metrics.mcp_server_requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let message = jsonrpc::request(&Value::String(sealed.clone()), method, asked.params.as_ref());
                Some(Relayed { sealed, message })
            }
            Err(why) => {
                let e = RpcError::new(jsonrpc::INTERNAL_ERROR, format!("the gateway could not relay it: {why}"));
                let _ = reply(answer(Err(e))).await;
                None
            }
        }
    }
}

/// Posts a response to a server's request in its upstream session; a failure is logged (the
/// server's own timeout then ends its wait).
async fn answer_upstream(
    shard: &Rc<Shard>,
    cfg: &Snapshot,
    server: &McpServer,
    session: Option<&UpstreamSession>,
    caller: &str,
    message: Vec<u8>,
) -> Result<(), UpstreamError> {
    let version = session.map(|s| &*s.version);
    let sent = upstream::post(shard, cfg, server, session, version, caller, message).await;
    let drained = match sent {
        Ok(mut reply) => loop {
            match reply.next_message().await {
                Ok(Some(_)) => {}
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        },
        Err(e) => Err(e),
    };
    if let Err(e) = &drained {
        tracing::warn!(server = %server.name, error = %e.message(&server.name), "an answer to an MCP server's request was not delivered");
    }
    drained
}

/// A client's answer to a request relayed from a server ([`Call::server_request`]): its id
/// names the server, the upstream session and the server's own id; the answer passes the
/// `tool_args` rules (it goes to the tool) and is posted there. 202 once the server took it.
pub(super) async fn answer_from_client<C: Conn>(
    s: &Session<'_>,
    sealed: &str,
    outcome: Result<Value, Value>,
    resp: &mut Responder<'_, C>,
) {
    let now = crate::api::governance::now_ms();
    let Some(route) = s.shard.process.mcp_sessions.open_route(&s.v.name, s.session, sealed) else {
        let e = RpcError::new(
            jsonrpc::INVALID_REQUEST,
            "this answer's id is not that of a request relayed to this session (or the gateway restarted since)",
        );
        return reply_error(resp, 400, None, e).await;
    };
    if route.expires_ms < now {
        let e = RpcError::new(
            jsonrpc::INVALID_REQUEST,
            format!("this answer came after MCP server {}'s timeout: it no longer waits for it", route.server),
        );
        return reply_error(resp, 400, None, e).await;
    }
    let Some(server) = s.cfg.mcp.server(&route.server).filter(|(i, _)| s.v.servers.contains(i)).map(|(_, x)| x) else {
        let e = RpcError::new(
            jsonrpc::INVALID_REQUEST,
            format!("MCP server {} is no longer part of {}", route.server, s.v.name),
        );
        // 400, not 404: a 404 tells the client its whole session is gone.
        return reply_error(resp, 400, None, e).await;
    };
    let call = s.unaudited_call(&route.id, false);
    let selected = s.cfg.guardrails.select(s.caller, &route.tool, &Metadata::new());
    let message = match outcome {
        Ok(mut result) => {
            match call.guard(&selected, Phase::ToolArgs, &route.tool, &mut result, all_texts, put_all_texts).await {
                Ok(()) => jsonrpc::result(&route.id, result),
                // The server learns its request was refused, not what was in the answer.
                Err(Stop::Refused(e)) => jsonrpc::error(Some(&route.id), &e),
            }
        }
        // An error object carries the client's text too (`message`, `data`).
        Err(mut error) => {
            match call.guard(&selected, Phase::ToolArgs, &route.tool, &mut error, all_texts, put_all_texts).await {
                Ok(()) => jsonrpc::error_value(&route.id, error),
                Err(Stop::Refused(e)) => jsonrpc::error(Some(&route.id), &e),
            }
        }
    };
    let up = UpstreamSession {
        id: route.upstream_session.as_deref().map(std::sync::Arc::from),
        version: std::sync::Arc::from(route.version.as_str()),
    };
    let work = answer_upstream(s.shard, s.cfg, server, Some(&up), &s.session.caller, message);
    match in_actor(s.shard, server, work).await {
        Ok(()) => {
            s.shard.metrics.mcp_client_answers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ = resp.start(202).body(b"").await;
        }
        Err(why) => {
            let e = RpcError::new(jsonrpc::UPSTREAM_ERROR, why.message(&server.name))
                .with_data(json!({"server": &*server.name}));
            reply_error(resp, 502, None, e).await;
        }
    }
}

/// Another shard says `session`'s `GET` stream is stream `to` (shard, number): this shard
/// forwards there what its upstream sessions for that client hear outside calls, now and as it
/// opens more (forwarders aimed at an older stream stop).
pub(super) fn listening_elsewhere(
    shard: &Rc<Shard>,
    cfg: &Snapshot,
    session: &super::session::SessionId,
    to: (usize, u64),
    opened_ms: u64,
) {
    if shard.mcp_sessions.listening_elsewhere(session, to.0, to.1, opened_ms) {
        forward_all(shard, cfg, session, to);
    }
}

/// Starts forwarders for every upstream session this shard holds for `session`.
fn forward_all(shard: &Rc<Shard>, cfg: &Snapshot, session: &super::session::SessionId, to: (usize, u64)) {
    for (server, up) in shard.mcp_sessions.upstreams_of(session) {
        if let Some((_, s)) = cfg.mcp.server(&server) {
            forward(shard, s, session, &up, to);
        }
    }
}

/// When `session` has a `GET` stream on another shard, forwards there what `server` sends in
/// upstream session `up` outside calls (a task reading the server's `GET` stream, one per
/// client session and server, until that stream goes, the server's ends, or the shard drains).
pub(super) fn forward_if_listened(
    shard: &Rc<Shard>,
    server: &McpServer,
    session: &super::session::SessionId,
    up: &UpstreamSession,
) {
    if let Some(to) = shard.mcp_sessions.listener_of(session) {
        forward(shard, server, session, up, to);
    }
}

fn forward(
    shard: &Rc<Shard>,
    server: &McpServer,
    session: &super::session::SessionId,
    up: &UpstreamSession,
    to: (usize, u64),
) {
    if !matches!(server.transport, ServerTransport::Http(_)) || to.0 == shard.id {
        return;
    }
    let (shard, session, up, name) = (shard.clone(), session.clone(), up.clone(), server.name.clone());
    rt::spawn(async move {
        let Some(slot) = shard.mcp_sessions.forwarding(&session, &name, to) else { return };
        let cfg = shard.config();
        let Some((_, server)) = cfg.mcp.server(&name) else { return };
        let Some(mut reply) = listen_retrying(&shard, &cfg, server, &up, &session.caller).await else { return };
        loop {
            let next = rt::unless(&slot.stop, rt::unless(&shard.drain, reply.next_message())).await;
            let Some(Some(Ok(Some(message)))) = next else { break };
            let note = super::hub::Note::Deliver {
                nonce: session.nonce,
                number: to.1,
                server: name.clone(),
                upstream: Some(up.clone()),
                message,
            };
            if shard.process.mcp_hub.send_to(to.0, note) {
                shard.metrics.mcp_forwarded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            } else {
                tracing::debug!(server = %name, "a message for a GET stream on another shard was dropped (its inbox is full)");
            }
        }
    });
}

/// `server`'s `GET` stream in upstream session `up`, within the server's timeout; tried again
/// a few times while the server still holds the stream before it (409: one per session, and a
/// stream just let go may not have been noticed yet).
async fn listen_retrying<'s>(
    shard: &'s Rc<Shard>,
    cfg: &Snapshot,
    server: &McpServer,
    up: &UpstreamSession,
    user: &str,
) -> Option<upstream::Reply<'s>> {
    for _ in 0..10 {
        match rt::timeout(server.timeout, upstream::listen(shard, cfg, server, up, user)).await {
            Ok(Err(UpstreamError::Failed(why))) if why == upstream::LISTENING_ALREADY => {
                rt::sleep(std::time::Duration::from_millis(50)).await;
            }
            Ok(Ok(reply)) => return reply,
            _ => return None,
        }
    }
    None
}

/// What the merged `GET` stream yields next.
enum Next {
    /// A message from server `streams[i]`.
    Message(usize, Message),
    /// A message another shard's upstream session heard, forwarded here.
    Forwarded(super::session::Delivered),
    /// Server `streams[i]`'s stream ended.
    Ended(usize),
    /// Time to show the client we are still here.
    KeepAlive,
    /// The shard drains (the client will reconnect elsewhere), or a newer `GET` of the same
    /// session took this one's place.
    Stop,
}

/// `GET /mcp/{name}`: one event stream merging the `GET` streams of the servers the caller may
/// use (streamable HTTP ones that offer one). Notifications pass the `tool_result` rules (they
/// come from tools) under the name `server__*`; requests are relayed as within a call. The
/// stream ends when every server's has, the session ends, the shard drains, or another `GET` of
/// the session replaces it; the client then reconnects. 405 when no server offers a stream; 503
/// when this shard has [`MAX_LISTENING`] open.
pub(super) async fn listen<C: Conn>(s: &Session<'_>, resp: &mut Responder<'_, C>) {
    let Some(slot) = s.shard.mcp_sessions.listen_slot(s.session, s.shard.id) else {
        let e = RpcError::new(
            jsonrpc::INTERNAL_ERROR,
            format!("this gateway shard has {MAX_LISTENING} event streams open; retry later"),
        );
        return reply_error(resp, 503, None, e).await;
    };
    // This shard's forwarders for the client stop (they hold the servers' streams this one
    // opens), and so does the stream this one replaces (servers allow one per session).
    s.shard.mcp_sessions.listening_here(s.session);
    if let Some(before) = &slot.replaced {
        let _ = rt::timeout(std::time::Duration::from_secs(1), before.wait()).await;
    }
    let mut servers: Vec<(&McpServer, String)> = Vec::new();
    let mut streams = Vec::new();
    for &i in &s.v.servers {
        let Some(server) = s.cfg.mcp.servers.get(i) else { continue };
        if !matches!(server.transport, ServerTransport::Http(_))
            || !super::access::may_use_server(&s.cfg.mcp, i, s.caller)
        {
            continue;
        }
        let opened = rt::timeout(server.timeout, open_listen(s.shard, s.cfg, server, s.session)).await;
        match opened {
            Ok(Ok(Some(reply))) => {
                servers.push((server, format!("{}__*", server.name)));
                streams.push(reply);
            }
            Ok(Ok(None)) => {}
            Ok(Err(why)) => tracing::debug!(server = %server.name, error = %why.message(&server.name), "no GET stream"),
            Err(_) => tracing::debug!(server = %server.name, "no GET stream within the server's timeout"),
        }
    }
    if streams.is_empty() {
        let e = RpcError::new(
            jsonrpc::INVALID_REQUEST,
            "no server of this virtual server sends messages outside calls; POST JSON-RPC messages, DELETE to end the session",
        );
        let _ = resp
            .start(405)
            .header("allow", "POST, DELETE")
            .header("content-type", "application/json")
            .body(&jsonrpc::error(None, &e))
            .await;
        return;
    }
    let sessions: Vec<Option<UpstreamSession>> = streams.iter().map(|r| r.upstream.clone()).collect();
    let mut live = streams.len();
    let per_server = streams.into_iter().enumerate().map(|(i, reply)| {
        stream::unfold(Some(reply), move |state| async move {
            let mut reply = state?;
            match reply.next_message().await {
                Ok(Some(m)) => Some((Next::Message(i, m), Some(reply))),
                _ => Some((Next::Ended(i), None)),
            }
        })
        .boxed_local()
    });
    let ticks = stream::unfold((), |()| async {
        rt::sleep(KEEP_ALIVE).await;
        Some((Next::KeepAlive, ()))
    })
    .boxed_local();
    let drain = stream::once(async {
        s.shard.drain.wait().await;
        Next::Stop
    })
    .boxed_local();
    let replaced = stream::once(async {
        slot.stop.wait().await;
        Next::Stop
    })
    .boxed_local();
    // What other shards' upstream sessions for this client hear comes here too.
    let inbox = s.shard.mcp_sessions.inbox(s.session, slot.number);
    let _announced = Announced::new(s.shard, s.session, slot.number, slot.opened.0);
    let forwarded =
        stream::unfold(&inbox, |inbox| async move { Some((Next::Forwarded(inbox.next().await), inbox)) }).boxed_local();
    let mut merged = stream::select_all(per_server.chain([ticks, drain, replaced, forwarded]));
    let Ok(mut out) = resp.start_event_stream(200).stream().await else { return };
    let call = s.unaudited_call(&Value::Null, true);
    let mut relayed = RelayedIds::default();
    while let Some(next) = merged.next().await {
        let (server, name, session, message) = match next {
            Next::Message(i, m) => {
                let (Some((server, name)), Some(session)) = (servers.get(i), sessions.get(i)) else { continue };
                (*server, name.clone(), session.clone(), m)
            }
            Next::Forwarded(d) => {
                let Some((i, server)) = s.cfg.mcp.server(&d.server) else { continue };
                if !s.v.servers.contains(&i) || !super::access::may_use_server(&s.cfg.mcp, i, s.caller) {
                    continue;
                }
                (server, format!("{}__*", server.name), d.upstream, d.message)
            }
            Next::Ended(i) => {
                if let Some((server, _)) = servers.get(i) {
                    tracing::debug!(server = %server.name, "an MCP server's GET stream ended");
                }
                live = live.saturating_sub(1);
                if live == 0 {
                    break;
                }
                continue;
            }
            Next::KeepAlive => {
                // A session ended on another shard: its upstream sessions here go too.
                if s.shard.process.mcp_sessions.is_ended(s.session) {
                    drop(merged);
                    let _ = out.finish().await;
                    for (name, up) in s.shard.mcp_sessions.take_all(s.session) {
                        if let Some((_, server)) = s.cfg.mcp.server(&name) {
                            upstream::close_session(s.shard, s.cfg, server, &up, &s.session.caller).await;
                        }
                    }
                    return;
                }
                if out.send(b": keep-alive\n\n").await.is_err() {
                    return;
                }
                continue;
            }
            Next::Stop => break,
        };
        let name = name.as_str();
        let selected = s.cfg.guardrails.select(s.caller, name, &Metadata::new());
        let to_client = match message {
            Message::Notification { method, params } => {
                let Some(mut params) = relayed.for_client(&server.name, session.as_ref(), &method, params) else {
                    continue;
                };
                if let Some(p) = params.as_mut()
                    && call.guard(&selected, Phase::ToolResult, name, p, all_texts, put_all_texts).await.is_err()
                {
                    continue;
                }
                jsonrpc::notification(&method, params.as_ref())
            }
            Message::Request { id, method, params } => {
                let server_id = id.clone();
                let asked = ServerRequest { id, method, params, listed: name, selected: &selected };
                let Some(r) = call.server_request(server, session.as_ref(), asked).await else { continue };
                relayed.note(&server.name, session.as_ref(), &server_id, r.sealed);
                r.message
            }
            Message::Response { .. } => continue,
        };
        if out.send(&sse_event(&to_client)).await.is_err() {
            return;
        }
    }
    let _ = out.finish().await;
}

/// Tells the other shards that a client's `GET` stream is open here, and, when dropped, that it
/// is no more; then, if the client's stream is now on another shard, this shard forwards there.
struct Announced<'a> {
    shard: &'a Rc<Shard>,
    session: &'a super::session::SessionId,
    number: u64,
}

impl<'a> Announced<'a> {
    fn new(shard: &'a Rc<Shard>, session: &'a super::session::SessionId, number: u64, opened_ms: u64) -> Announced<'a> {
        let note = super::hub::Note::Listening { session: session.clone(), shard: shard.id, number, opened_ms };
        shard.process.mcp_hub.broadcast(shard.id, &note);
        Announced { shard, session, number }
    }
}

impl Drop for Announced<'_> {
    fn drop(&mut self) {
        let note =
            super::hub::Note::NotListening { session: self.session.clone(), shard: self.shard.id, number: self.number };
        self.shard.process.mcp_hub.broadcast(self.shard.id, &note);
        if let Some(to) = self.shard.mcp_sessions.listener_of(self.session) {
            forward_all(self.shard, &self.shard.config(), self.session, to);
        }
    }
}

/// `server`'s `GET` stream in the client's upstream session on this shard (opening it, and once
/// more if the server forgot it).
async fn open_listen<'s>(
    shard: &'s Rc<Shard>,
    cfg: &Snapshot,
    server: &McpServer,
    client: &super::session::SessionId,
) -> Result<Option<upstream::Reply<'s>>, UpstreamError> {
    let mut reopened = false;
    let mut conflicts = 0;
    loop {
        let up = upstream::session_for(shard, cfg, server, client).await?;
        match upstream::listen(shard, cfg, server, &up, &client.caller).await {
            Err(UpstreamError::SessionGone) if !reopened => {
                shard.mcp_sessions.forget(client, &server.name);
                reopened = true;
            }
            // The stream this GET replaced is closed, but the server may not have seen it yet.
            Err(UpstreamError::Failed(why)) if why == upstream::LISTENING_ALREADY && conflicts < 10 => {
                conflicts += 1;
                rt::sleep(std::time::Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}
