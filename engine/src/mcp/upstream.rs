//! The gateway as an MCP client of upstream servers over streamable HTTP: one POST per
//! message, an answer as one JSON message or an SSE stream of messages (the server's
//! notifications, then the response), sessions opened per shard with `initialize`.
//!
//! Every exchange runs inside the server's actor on this shard (mailbox, in-flight bound,
//! supervision), like a provider call, and is bounded by the server's `timeout`.

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

use adapters::mcp::jsonrpc::{self, Message};
use adapters::sse::SseScanner;
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Value, json};

use super::compiled::{McpServer, ServerTransport};
use super::session::{SessionId, UpstreamSession};
use crate::config::Snapshot;
use crate::config::Upstream;
use crate::shard::Shard;
use crate::upstream::{RequestBytes, Shared, UpstreamResponse, send};

/// Largest single message read from an upstream (a whole JSON answer or one SSE event).
const MAX_MESSAGE: usize = 8 << 20;

/// Why an exchange with an upstream server failed.
#[derive(Debug)]
pub enum UpstreamError {
    /// The upstream no longer knows the session (HTTP 404 to a request that carried one).
    SessionGone,
    /// Anything else, said for the client.
    Failed(String),
    /// The client went away while its answer was being written (nothing wrong upstream).
    Client(String),
    /// The server takes each user's own token, and this caller has not connected their account
    /// (or its token expired and could not be refreshed).
    NeedsConsent(String),
}

impl UpstreamError {
    pub fn message(&self, server: &str) -> String {
        match self {
            UpstreamError::SessionGone => format!("MCP server {server} ended the session"),
            UpstreamError::Failed(why) => format!("MCP server {server}: {why}"),
            UpstreamError::Client(why) => format!("the client left: {why}"),
            UpstreamError::NeedsConsent(server) => format!(
                "MCP server {server} acts as each user: connect your account first by opening /mcp/oauth/{server}/authorize with your gateway credential"
            ),
        }
    }
}

fn failed(why: impl Into<String>) -> UpstreamError {
    UpstreamError::Failed(why.into())
}

/// The head of a request to `server`: `POST` with a JSON body of `len` bytes, or `DELETE`;
/// What a request to an upstream server is, beyond its body.
pub(super) struct Head<'a> {
    pub method: &'a str,
    /// `None`: the server's URL path.
    pub path: Option<&'a str>,
    /// A JSON body of this many bytes.
    pub len: Option<usize>,
    pub session: Option<&'a str>,
    pub version: Option<&'a str>,
    pub accept: &'a str,
    /// The caller, for servers that take each user's own token.
    pub user: Option<&'a str>,
}

/// The head of a request to `server`, with its configured headers and, when the server takes
/// one, the current OAuth token (an error when none was minted).
pub(super) fn request_head(
    shard: &Shard,
    server: &McpServer,
    up: &Upstream,
    head: &Head<'_>,
) -> Result<Bytes, UpstreamError> {
    let token: Option<Arc<str>> = match (&server.oauth, &server.per_user) {
        (Some(_), _) => {
            Some(shard.process.minted.authorization(&server.actor_name).map_err(|why| failed(why.to_string()))?)
        }
        (None, Some(_)) => {
            let user = head.user.unwrap_or("anonymous");
            let now = crate::api::governance::now_ms() / 1000;
            let resource = server.per_user.as_ref().map_or("", |p| p.resource.as_str());
            let bearer = shard.process.mcp_user_tokens.authorization(&server.name, resource, user, now);
            Some(Arc::from(bearer.ok_or_else(|| UpstreamError::NeedsConsent(server.name.to_string()))?))
        }
        (None, None) => None,
    };
    let base = if up.base_path.is_empty() { "/" } else { up.base_path.as_str() };
    let mut h = BytesMut::with_capacity(384);
    h.put_slice(head.method.as_bytes());
    h.put_u8(b' ');
    h.put_slice(head.path.unwrap_or(base).as_bytes());
    h.put_slice(b" HTTP/1.1\r\nhost: ");
    h.put_slice(up.host_header.as_bytes());
    h.put_slice(b"\r\n");
    if let Some(len) = head.len {
        h.put_slice(b"content-type: application/json\r\ncontent-length: ");
        h.put_slice(itoa::Buffer::new().format(len).as_bytes());
        h.put_slice(b"\r\n");
    }
    let optional = [
        ("accept", Some(head.accept)),
        ("mcp-protocol-version", head.version),
        ("mcp-session-id", head.session),
        ("authorization", token.as_deref()),
    ];
    let present = optional.iter().filter_map(|(n, v)| v.map(|v| (*n, v)));
    for (n, v) in present.chain(up.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()))) {
        h.put_slice(n.as_bytes());
        h.put_slice(b": ");
        h.put_slice(v.as_bytes());
        h.put_slice(b"\r\n");
    }
    h.put_slice(b"\r\n");
    Ok(h.freeze())
}

/// What MCP clients accept on a POST.
pub(super) const ACCEPT_BOTH: &str = "application/json, text/event-stream";

/// An upstream's answer to one POST: its messages, read as they come.
pub struct Reply<'a> {
    pub status: u16,
    /// The `Mcp-Session-Id` it set (on `initialize`).
    pub session_id: Option<String>,
    /// Whether the messages come as a stream (SSE) rather than one JSON body.
    pub streamed: bool,
    /// The upstream session it was sent in (streamable HTTP servers'), where answers to the
    /// server's own requests go.
    pub upstream: Option<UpstreamSession>,
    body: Body<'a>,
}

enum Body<'a> {
    /// No message (202 Accepted to a notification).
    Empty,
    /// One JSON message, not read yet.
    Json(UpstreamResponse<'a>),
    Sse {
        response: UpstreamResponse<'a>,
        scanner: SseScanner,
        ready: VecDeque<Vec<u8>>,
    },
    /// A legacy server's progress, then its answer, as they come on its stream.
    Legacy(super::legacy_sse::LegacyCall),
    /// A stdio server's progress, then its answer to request `id`.
    Stdio {
        call: super::stdio::StdioCall,
        id: Value,
    },
}

impl Reply<'_> {
    /// The next message, `None` when there are no more.
    pub async fn next_message(&mut self) -> Result<Option<Message>, UpstreamError> {
        loop {
            match &mut self.body {
                Body::Empty => return Ok(None),
                Body::Legacy(call) => return call.next().await,
                Body::Stdio { call, id } => {
                    return match call.next().await.map_err(failed)? {
                        super::stdio::Heard::Progress(params) => Ok(Some(Message::Notification {
                            method: "notifications/progress".into(),
                            params: Some(params),
                        })),
                        super::stdio::Heard::Answer(answer) => {
                            let message = Message::Response { id: id.clone(), outcome: answer.map_err(failed)? };
                            self.body = Body::Empty;
                            Ok(Some(message))
                        }
                    };
                }
                Body::Json(response) => {
                    let body = response
                        .read_to_end(MAX_MESSAGE as u64)
                        .await
                        .map_err(|e| failed(format!("reading the answer: {e}")))?;
                    self.body = Body::Empty;
                    return jsonrpc::parse(&body)
                        .map(Some)
                        .map_err(|e| failed(format!("the answer is not a JSON-RPC message: {}", e.message)));
                }
                Body::Sse { response, scanner, ready } => {
                    if let Some(data) = ready.pop_front() {
                        match jsonrpc::parse(&data) {
                            Ok(m) => return Ok(Some(m)),
                            // Event streams may carry keep-alive or priming events without a
                            // message; skip what is not one.
                            Err(_) if data.iter().all(u8::is_ascii_whitespace) => continue,
                            Err(e) => return Err(failed(format!("an event is not a JSON-RPC message: {}", e.message))),
                        }
                    }
                    let chunk = response.next_chunk().await.map_err(|e| failed(format!("reading the stream: {e}")))?;
                    let Some(chunk) = chunk else {
                        let mut tail = Vec::new();
                        scanner.finish(|e| tail.push(e.data.to_vec()));
                        if tail.is_empty() {
                            self.body = Body::Empty;
                        } else {
                            ready.extend(tail);
                        }
                        continue;
                    };
                    scanner.feed(&chunk, |e| ready.push_back(e.data.to_vec()));
                    if scanner.overflowed() {
                        return Err(failed(format!("an event passed {MAX_MESSAGE} bytes")));
                    }
                }
            }
        }
    }

    /// Reads messages up to the response to `id`; `on_other` gets every other message
    /// (progress and log notifications) in order.
    pub async fn response_to(
        &mut self,
        id: &Value,
        mut on_other: impl AsyncFnMut(Message),
    ) -> Result<Result<Value, Value>, UpstreamError> {
        while let Some(m) = self.next_message().await? {
            match m {
                Message::Response { id: got, outcome } if &got == id => return Ok(outcome),
                other => on_other(other).await,
            }
        }
        Err(failed("the answer ended without a response to the request"))
    }
}

/// Posts one message to `server`, in its session when there is one.
pub async fn post<'s>(
    shard: &'s Rc<Shard>,
    cfg: &Snapshot,
    server: &McpServer,
    session: Option<&UpstreamSession>,
    version: Option<&str>,
    user: &str,
    body: Vec<u8>,
) -> Result<Reply<'s>, UpstreamError> {
    let up = match &server.transport {
        ServerTransport::Http(up) => up,
        ServerTransport::Stdio(command) => return post_stdio(shard, server, command, &body).await,
        ServerTransport::LegacySse(_) => {
            return Err(failed("a legacy HTTP+SSE server is reached through its session's stream"));
        }
    };
    let spec = Head {
        method: "POST",
        path: None,
        len: Some(body.len()),
        session: session.and_then(|s| s.id.as_deref()),
        version,
        accept: ACCEPT_BOTH,
        user: Some(user),
    };
    let head = request_head(shard, server, up, &spec)?;
    let request = RequestBytes { head, body: Bytes::from(body), is_head: false };
    let shared = Shared { pool: &shard.pool, dns: &shard.process.dns, metrics: &shard.metrics };
    let response = send(&shared, up, &request, cfg.upstream_limits).await.map_err(|e| failed(e.to_string()))?;
    let status = response.head.status;
    let session_id =
        response.head.header("mcp-session-id").and_then(|v| std::str::from_utf8(v).ok()).map(|s| s.trim().to_owned());
    if status == 404 && session.is_some_and(|s| s.id.is_some()) {
        return Err(UpstreamError::SessionGone);
    }
    let upstream = session.cloned();
    if status == 202 || status == 204 {
        return Ok(Reply { status, session_id, streamed: false, upstream, body: Body::Empty });
    }
    if !(200..300).contains(&status) {
        let mut response = response;
        let body = response.read_to_end(64 << 10).await.unwrap_or_default();
        // An error answer may still be a JSON-RPC error; say what it says.
        let detail = match jsonrpc::parse(&body) {
            Ok(Message::Response { outcome: Err(e), .. }) => {
                e.get("message").and_then(Value::as_str).unwrap_or("no message").to_owned()
            }
            _ => String::from_utf8_lossy(body.get(..body.len().min(200)).unwrap_or_default()).into_owned(),
        };
        return Err(failed(format!("HTTP {status}: {detail}")));
    }
    let streamed = response.head.is_event_stream();
    let body = if streamed {
        Body::Sse { response, scanner: SseScanner::new(MAX_MESSAGE), ready: VecDeque::new() }
    } else {
        Body::Json(response)
    };
    Ok(Reply { status, session_id, streamed, upstream, body })
}

/// What [`listen`] fails with when the server still holds a stream of the session (409).
pub const LISTENING_ALREADY: &str = "it already streams to this session (HTTP 409)";

/// Opens `server`'s stream of messages sent outside any request (`GET` in the session):
/// `None` when the server offers none (405, as the spec allows; or another transport).
pub async fn listen<'s>(
    shard: &'s Rc<Shard>,
    cfg: &Snapshot,
    server: &McpServer,
    session: &UpstreamSession,
    user: &str,
) -> Result<Option<Reply<'s>>, UpstreamError> {
    let ServerTransport::Http(up) = &server.transport else { return Ok(None) };
    let spec = Head {
        method: "GET",
        path: None,
        len: None,
        session: session.id.as_deref(),
        version: Some(&session.version),
        accept: "text/event-stream",
        user: Some(user),
    };
    let head = request_head(shard, server, up, &spec)?;
    let request = RequestBytes { head, body: Bytes::new(), is_head: false };
    let shared = Shared { pool: &shard.pool, dns: &shard.process.dns, metrics: &shard.metrics };
    let response = send(&shared, up, &request, cfg.upstream_limits).await.map_err(|e| failed(e.to_string()))?;
    match response.head.status {
        405 => Ok(None),
        404 if session.id.is_some() => Err(UpstreamError::SessionGone),
        // Servers allow one such stream per session: the one before has not been let go yet.
        409 => Err(UpstreamError::Failed(LISTENING_ALREADY.into())),
        200 if response.head.is_event_stream() => {
            let body = Body::Sse { response, scanner: SseScanner::new(MAX_MESSAGE), ready: VecDeque::new() };
            Ok(Some(Reply { status: 200, session_id: None, streamed: true, upstream: Some(session.clone()), body }))
        }
        other => Err(failed(format!("HTTP {other} to GET (a stream of its messages)"))),
    }
}

/// An exchange with a legacy HTTP+SSE server, in `client`'s stream with it on this shard
/// (opened, and its MCP session initialized, on first use; opened again once if it ended).
pub async fn exchange_legacy<'s>(
    shard: &'s Rc<Shard>,
    server: &McpServer,
    client: &SessionId,
    body: &[u8],
) -> Result<Reply<'s>, UpstreamError> {
    let mut reopened = false;
    loop {
        let session = match shard.mcp_sessions.legacy(client, &server.name).filter(|s| !s.is_closed()) {
            Some(s) => s,
            None => {
                let s = super::legacy_sse::open(shard, server, &client.caller).await?;
                if let Err(e) = initialize_legacy(shard, server, &s, &client.caller).await {
                    s.stop();
                    return Err(e);
                }
                shard.mcp_sessions.put_legacy(client, &server.name, s.clone());
                s
            }
        };
        match super::legacy_sse::send(shard, server, &session, &client.caller, body, true).await {
            Err(UpstreamError::SessionGone) if !reopened => reopened = true,
            Ok(call) => {
                let body = call.map_or(Body::Empty, Body::Legacy);
                return Ok(Reply { status: 200, session_id: None, streamed: true, upstream: None, body });
            }
            Err(e) => return Err(e),
        }
    }
}

/// `initialize` and `notifications/initialized` on a new legacy stream, at revision 2024-11-05
/// (the legacy transport's own).
async fn initialize_legacy(
    shard: &Rc<Shard>,
    server: &McpServer,
    session: &Rc<super::legacy_sse::LegacySession>,
    user: &str,
) -> Result<(), UpstreamError> {
    let id = json!("shardgate-initialize");
    let params = json!({
        "protocolVersion": "2024-11-05",
        "capabilities": {},
        "clientInfo": {"name": "shardgate", "version": env!("CARGO_PKG_VERSION")},
    });
    let request = jsonrpc::request(&id, "initialize", Some(&params));
    match super::legacy_sse::post(shard, server, session, user, &request).await? {
        Some(Message::Response { outcome: Ok(_), .. }) => {}
        Some(Message::Response { outcome: Err(e), .. }) => return Err(failed(format!("initialize refused: {e}"))),
        _ => return Err(failed("no answer to initialize")),
    }
    let note = jsonrpc::notification("notifications/initialized", None);
    super::legacy_sse::post(shard, server, session, user, &note).await.map(|_| ())
}

/// A request to a stdio server: through its process's thread, the answer made a [`Reply`].
async fn post_stdio<'s>(
    shard: &'s Rc<Shard>,
    server: &McpServer,
    command: &[String],
    body: &[u8],
) -> Result<Reply<'s>, UpstreamError> {
    let (id, method, params) = match jsonrpc::parse(body) {
        Ok(Message::Request { id, method, params }) => (id, method, params),
        // Notifications: the process's thread made the session itself.
        Ok(_) => {
            return Ok(Reply { status: 202, session_id: None, streamed: false, upstream: None, body: Body::Empty });
        }
        Err(e) => return Err(failed(e.message)),
    };
    let process = shard.process.mcp_stdio.server(&server.name, command).map_err(failed)?;
    let call = process.request(&method, params, server.timeout).map_err(failed)?;
    let body = Body::Stdio { call, id };
    Ok(Reply { status: 200, session_id: None, streamed: true, upstream: None, body })
}

/// Opens a session with `server` at the client's protocol revision: `initialize`, then
/// `notifications/initialized`.
pub async fn open_session(
    shard: &Rc<Shard>,
    cfg: &Snapshot,
    server: &McpServer,
    version: &str,
    user: &str,
    caps: super::session::ClientCaps,
) -> Result<UpstreamSession, UpstreamError> {
    let id = json!("shardgate-initialize");
    // The client's capabilities that the gateway relays: a server may then ask it (sampling,
    // elicitation, roots) in the middle of a call.
    let params = json!({
        "protocolVersion": version,
        "capabilities": caps.to_json(),
        "clientInfo": {"name": "shardgate", "version": env!("CARGO_PKG_VERSION")},
    });
    let mut reply =
        post(shard, cfg, server, None, None, user, jsonrpc::request(&id, "initialize", Some(&params))).await?;
    let outcome = reply.response_to(&id, async |_| {}).await?;
    let result = outcome.map_err(|e| failed(format!("initialize refused: {e}")))?;
    let agreed = result.get("protocolVersion").and_then(Value::as_str).unwrap_or(version);
    if !adapters::mcp::is_supported(agreed) {
        return Err(failed(format!("it speaks protocol revision {agreed}, which this gateway does not")));
    }
    let session = UpstreamSession { id: reply.session_id.take().map(Arc::from), version: Arc::from(agreed) };
    drop(reply);
    let note = jsonrpc::notification("notifications/initialized", None);
    let mut ack = post(shard, cfg, server, Some(&session), Some(agreed), user, note).await?;
    while ack.next_message().await?.is_some() {}
    Ok(session)
}

/// This shard's upstream session of `client` with `server`, opened now if there is none.
pub async fn session_for(
    shard: &Rc<Shard>,
    cfg: &Snapshot,
    server: &McpServer,
    client: &SessionId,
) -> Result<UpstreamSession, UpstreamError> {
    if let ServerTransport::Stdio(_) | ServerTransport::LegacySse(_) = server.transport {
        // One process, one session, opened by its own thread.
        return Ok(UpstreamSession { id: None, version: Arc::from(client.protocol_version()) });
    }
    loop {
        if let Some(s) = shard.mcp_sessions.get(client, &server.name) {
            return Ok(s);
        }
        let _opening = match shard.mcp_sessions.open_or_wait(client, &server.name) {
            super::session::OpenTurn::Wait(done) => {
                done.wait().await;
                continue;
            }
            super::session::OpenTurn::Open(opening) => opening,
        };
        let version = adapters::mcp::upstream_version(client.protocol_version());
        let s = open_session(shard, cfg, server, version, &client.caller, client.caps).await?;
        shard.mcp_sessions.put(client, &server.name, s.clone());
        super::server_messages::forward_if_listened(shard, server, client, &s);
        return Ok(s);
    }
}

/// Sends `DELETE` for an upstream session (the client ended its own); failures are ignored,
/// the upstream will expire it.
pub async fn close_session(
    shard: &Rc<Shard>,
    cfg: &Snapshot,
    server: &McpServer,
    session: &UpstreamSession,
    user: &str,
) {
    let (Some(id), ServerTransport::Http(up)) = (session.id.as_deref(), &server.transport) else { return };
    let spec = Head {
        method: "DELETE",
        path: None,
        len: None,
        session: Some(id),
        version: Some(&session.version),
        accept: ACCEPT_BOTH,
        user: Some(user),
    };
    let Ok(head) = request_head(shard, server, up, &spec) else { return };
    let request = RequestBytes { head, body: Bytes::new(), is_head: false };
    let shared = Shared { pool: &shard.pool, dns: &shard.process.dns, metrics: &shard.metrics };
    if let Ok(mut r) = send(&shared, up, &request, cfg.upstream_limits).await {
        let _ = r.read_to_end(64 << 10).await;
    }
}
