//! Upstream MCP servers on the legacy HTTP+SSE transport (revision 2024-11-05): the client
//! keeps a `GET` event stream open; the server's first event (`endpoint`) names where to POST
//! messages; answers to those POSTs come back as `message` events on the stream.
//!
//! Each shard keeps one such stream per client session and server, read by a task of its own
//! that hands each response to the request waiting for it (ids are the client's own: its session
//! upstream is its alone). When the stream ends, the waiting requests fail and the session is
//! forgotten; the next call opens a new one.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use adapters::mcp::jsonrpc::{self, Message};
use adapters::sse::SseScanner;
use bytes::Bytes;
use serde_json::Value;

use super::compiled::{McpServer, ServerTransport};
use super::upstream::{ACCEPT_BOTH, Head, UpstreamError, request_head};
use crate::rt::{self, LocalEvent};
use crate::shard::Shard;
use crate::upstream::{RequestBytes, Shared, send as send_request};

/// Largest event read from a legacy stream.
const MAX_EVENT: usize = 8 << 20;

/// A request waiting for its response.
struct Waiting {
    /// Set when something came for it (a new one is put in each time it is waited on).
    wake: LocalEvent,
    /// The caller's progress token, when it asked for progress.
    progress_token: Option<Value>,
    /// Progress notifications heard and not taken yet.
    heard: std::collections::VecDeque<Value>,
    /// The answer, once in.
    outcome: Option<Result<Value, Value>>,
}

/// One open stream and the requests waiting on it.
pub struct LegacySession {
    /// Where to POST messages (path and query), once the server said.
    endpoint: RefCell<Option<String>>,
    /// Set once the endpoint is known or the stream ended.
    ready: LocalEvent,
    /// Requests waiting, by id (its JSON text).
    pending: RefCell<HashMap<String, Waiting>>,
    /// Why the stream ended, once it did.
    closed: RefCell<Option<String>>,
    /// Set to make the reading task let the stream go (the client ended its session).
    stop: LocalEvent,
    /// When a message was last posted on it, to let go of streams no client uses.
    last_used: std::cell::Cell<std::time::Instant>,
}

impl std::fmt::Debug for LegacySession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacySession").field("endpoint", &self.endpoint.borrow()).finish_non_exhaustive()
    }
}

impl LegacySession {
    /// Lets the stream go.
    pub fn stop(&self) {
        self.stop.set();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.borrow().is_some()
    }

    /// A session with no stream behind it yet, last used at `last_used`.
    fn fresh(last_used: std::time::Instant) -> Rc<LegacySession> {
        Rc::new(LegacySession {
            endpoint: RefCell::default(),
            ready: LocalEvent::new(),
            pending: RefCell::default(),
            closed: RefCell::default(),
            stop: LocalEvent::new(),
            last_used: std::cell::Cell::new(last_used),
        })
    }

    /// A session with no stream behind it, last used at `last_used` (tests).
    #[cfg(test)]
    pub(crate) fn detached(last_used: std::time::Instant) -> Rc<LegacySession> {
        Self::fresh(last_used)
    }

    /// Makes it look as if a call waited on it (tests).
    #[cfg(test)]
    pub(crate) fn hold_a_call(&self) {
        let waiting =
            Waiting { wake: LocalEvent::new(), progress_token: None, heard: Default::default(), outcome: None };
        self.pending.borrow_mut().insert("held".into(), waiting);
    }

    /// Whether it was told to let its stream go (tests).
    #[cfg(test)]
    pub(crate) fn is_stopped(&self) -> bool {
        self.stop.is_set()
    }

    /// Whether a call waits on it (a stream with a call under way is not idle, however long).
    pub fn is_busy(&self) -> bool {
        !self.pending.borrow().is_empty()
    }

    /// How long since a client's message was last posted on it.
    pub fn idle_for(&self, now: std::time::Instant) -> std::time::Duration {
        now.saturating_duration_since(self.last_used.get())
    }

    fn close(&self, why: String) {
        *self.closed.borrow_mut() = Some(why);
        self.ready.set();
        for w in self.pending.borrow().values() {
            w.wake.set();
        }
    }

    /// One event from the stream; the answer to send back when it was a request from the
    /// server (`ping` is answered; others are refused: nothing on this transport says which call
    /// they belong to, so they cannot be put on a call's stream).
    fn take(&self, event: Option<&str>, data: &[u8]) -> Option<Vec<u8>> {
        match event {
            Some("endpoint") => {
                let url = String::from_utf8_lossy(data).trim().to_owned();
                // It goes into a request line: nothing but visible ASCII.
                if url.is_empty() || !url.bytes().all(|b| b.is_ascii_graphic()) {
                    self.close("its endpoint event is not a URL".into());
                    return None;
                }
                // An absolute URL keeps only its path (the stream's host is the one to post to);
                // a relative one is taken from the root.
                let path = match url.split_once("://") {
                    Some((_, rest)) => rest.find('/').map_or("/".to_owned(), |i| rest[i..].to_owned()),
                    None if url.starts_with('/') => url,
                    None => format!("/{url}"),
                };
                *self.endpoint.borrow_mut() = Some(path);
                self.ready.set();
            }
            // The session is this client's alone, so ids and progress tokens are its own.
            Some("message") | None => match jsonrpc::parse(data) {
                Ok(Message::Response { id, outcome }) => {
                    if let Some(w) = self.pending.borrow_mut().get_mut(&id.to_string()) {
                        w.outcome = Some(outcome);
                        w.wake.set();
                    }
                }
                Ok(Message::Notification { method, params: Some(params) }) if method == "notifications/progress" => {
                    let token = params.get("progressToken");
                    let mut pending = self.pending.borrow_mut();
                    if let Some(w) =
                        pending.values_mut().find(|w| w.progress_token.is_some() && w.progress_token.as_ref() == token)
                    {
                        w.heard.push_back(params);
                        w.wake.set();
                    }
                }
                Ok(Message::Request { id, method, .. }) => {
                    return Some(if method == "ping" {
                        jsonrpc::result(&id, serde_json::json!({}))
                    } else {
                        let why = format!(
                            "the gateway does not relay {method} from servers on the legacy HTTP+SSE transport"
                        );
                        jsonrpc::error(Some(&id), &jsonrpc::RpcError::new(jsonrpc::METHOD_NOT_FOUND, why))
                    });
                }
                _ => {}
            },
            Some(_) => {}
        }
        None
    }
}

/// Opens the stream of a new session with `server` and waits for its endpoint.
pub async fn open(shard: &Rc<Shard>, server: &McpServer, user: &str) -> Result<Rc<LegacySession>, UpstreamError> {
    let ServerTransport::LegacySse(up) = &server.transport else {
        return Err(UpstreamError::Failed("not a legacy HTTP+SSE server".into()));
    };
    let session = LegacySession::fresh(std::time::Instant::now());
    let request = RequestBytes {
        head: request_head(
            shard,
            server,
            up,
            &Head {
                method: "GET",
                path: None,
                len: None,
                session: None,
                version: None,
                accept: "text/event-stream",
                user: Some(user),
            },
        )?,
        body: Bytes::new(),
        is_head: false,
    };
    let (task_shard, task_session, name) = (shard.clone(), session.clone(), server.name.clone());
    let user = user.to_owned();
    rt::spawn(async move {
        let shard = task_shard;
        let session = task_session;
        let cfg = shard.config();
        let Some(ServerTransport::LegacySse(up)) = cfg.mcp.server(&name).map(|(_, s)| &s.transport) else {
            return session.close("the server left the config".into());
        };
        let shared = Shared { pool: &shard.pool, dns: &shard.process.dns, metrics: &shard.metrics };
        let mut stream = match send_request(&shared, up, &request, cfg.upstream_limits).await {
            Ok(s) if s.head.status == 200 && s.head.is_event_stream() => s,
            Ok(s) => return session.close(format!("its event stream answered HTTP {}", s.head.status)),
            Err(e) => return session.close(e.to_string()),
        };
        let mut scanner = SseScanner::new(MAX_EVENT);
        let why = loop {
            match rt::unless(&session.stop, stream.next_chunk()).await {
                Some(Ok(Some(chunk))) => {
                    let mut answers = Vec::new();
                    scanner.feed(&chunk, |e| answers.extend(session.take(e.event, e.data)));
                    if scanner.overflowed() {
                        break format!("an event passed {MAX_EVENT} bytes");
                    }
                    // Sent by tasks of their own: this one keeps reading the stream meanwhile.
                    for answer in answers {
                        let (shard, session, cfg, name, user) =
                            (shard.clone(), session.clone(), cfg.clone(), name.clone(), user.clone());
                        rt::spawn(async move {
                            if let Some((_, server)) = cfg.mcp.server(&name) {
                                let _ = send(&shard, server, &session, &user, &answer, false).await;
                            }
                        });
                    }
                }
                Some(Ok(None)) => break "its event stream ended".to_owned(),
                Some(Err(e)) => break format!("its event stream broke: {e}"),
                None => break "the session ended".to_owned(),
            }
        };
        session.close(why);
    });
    session.ready.wait().await;
    match (session.endpoint.borrow().is_some(), session.closed.borrow().clone()) {
        (true, _) => {}
        (false, why) => return Err(UpstreamError::Failed(why.unwrap_or_else(|| "no endpoint event".into()))),
    }
    Ok(session)
}

/// Posts one message on `session`; for a request, waits for its response on the stream
/// (progress notifications along the way are let go).
pub async fn post(
    shard: &Shard,
    server: &McpServer,
    session: &Rc<LegacySession>,
    user: &str,
    body: &[u8],
) -> Result<Option<Message>, UpstreamError> {
    let Some(mut call) = send(shard, server, session, user, body, true).await? else { return Ok(None) };
    loop {
        match call.next().await? {
            Some(Message::Notification { .. }) => {}
            other => return Ok(other),
        }
    }
}

/// Posts one message on `session`: for a request, what it hears comes from the [`LegacyCall`];
/// `None` for a notification. `from_client`: on a client's behalf (what keeps a stream from
/// being let go as idle; the gateway's own answers to the server's pings do not).
pub async fn send(
    shard: &Shard,
    server: &McpServer,
    session: &Rc<LegacySession>,
    user: &str,
    body: &[u8],
    from_client: bool,
) -> Result<Option<LegacyCall>, UpstreamError> {
    let ServerTransport::LegacySse(up) = &server.transport else {
        return Err(UpstreamError::Failed("not a legacy HTTP+SSE server".into()));
    };
    if session.is_closed() {
        return Err(UpstreamError::SessionGone);
    }
    if from_client {
        session.last_used.set(std::time::Instant::now());
    }
    let endpoint = session.endpoint.borrow().clone().unwrap_or_else(|| "/".into());
    let (id, progress_token) = match jsonrpc::parse(body) {
        Ok(Message::Request { id, params, .. }) => {
            let token = params.as_ref().and_then(|p| p.get("_meta")).and_then(|m| m.get("progressToken")).cloned();
            (Some(id), token)
        }
        Ok(_) => (None, None),
        Err(e) => return Err(UpstreamError::Failed(e.message)),
    };
    // Registered before the POST, so an answer that beats the POST's own response is kept; the
    // call forgets it when dropped, however it ends.
    let call = match id {
        Some(id) => {
            let key = id.to_string();
            let mut pending = session.pending.borrow_mut();
            if pending.contains_key(&key) {
                return Err(UpstreamError::Failed(format!(
                    "a request with id {id} is already in flight in this session"
                )));
            }
            let waiting = Waiting { wake: LocalEvent::new(), progress_token, heard: Default::default(), outcome: None };
            pending.insert(key.clone(), waiting);
            Some(LegacyCall { session: session.clone(), key, id, answered: false })
        }
        None => None,
    };
    let request = RequestBytes {
        head: request_head(
            shard,
            server,
            up,
            &Head {
                method: "POST",
                path: Some(&endpoint),
                len: Some(body.len()),
                session: None,
                version: None,
                accept: ACCEPT_BOTH,
                user: Some(user),
            },
        )?,
        body: Bytes::copy_from_slice(body),
        is_head: false,
    };
    let shared = Shared { pool: &shard.pool, dns: &shard.process.dns, metrics: &shard.metrics };
    let mut answer = send_request(&shared, up, &request, shard.config().upstream_limits)
        .await
        .map_err(|e| UpstreamError::Failed(e.to_string()))?;
    let status = answer.head.status;
    let _ = answer.read_to_end(64 << 10).await;
    if !(200..300).contains(&status) {
        return Err(UpstreamError::Failed(format!("its message endpoint answered HTTP {status}")));
    }
    Ok(call)
}

/// A request on a legacy stream, as its caller waits for it.
pub struct LegacyCall {
    session: Rc<LegacySession>,
    key: String,
    id: Value,
    answered: bool,
}

impl LegacyCall {
    /// What the server says of the request next: its progress, then its response; `None` after.
    pub async fn next(&mut self) -> Result<Option<Message>, UpstreamError> {
        if self.answered {
            return Ok(None);
        }
        loop {
            let wake = {
                let mut pending = self.session.pending.borrow_mut();
                let Some(w) = pending.get_mut(&self.key) else {
                    return Err(UpstreamError::Failed("no answer".into()));
                };
                if let Some(params) = w.heard.pop_front() {
                    let method = "notifications/progress".to_owned();
                    return Ok(Some(Message::Notification { method, params: Some(params) }));
                }
                if let Some(outcome) = w.outcome.take() {
                    self.answered = true;
                    return Ok(Some(Message::Response { id: self.id.clone(), outcome }));
                }
                if let Some(why) = self.session.closed.borrow().clone() {
                    return Err(UpstreamError::Failed(why));
                }
                // Whatever set the last one was taken above: wait for the next.
                if w.wake.is_set() {
                    w.wake = LocalEvent::new();
                }
                w.wake.clone()
            };
            wake.wait().await;
        }
    }
}

impl Drop for LegacyCall {
    fn drop(&mut self) {
        self.session.pending.borrow_mut().remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A server's request on a legacy stream was ignored, so the server waited for an answer
    /// that never came; now `ping` is answered and the rest refused at once.
    #[test]
    fn requests_from_the_stream_are_answered_and_progress_goes_to_its_call() {
        let s = LegacySession::detached(std::time::Instant::now());
        let ping = s.take(Some("message"), br#"{"jsonrpc":"2.0","id":"p","method":"ping"}"#).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&ping).unwrap()["result"], serde_json::json!({}));
        let asked = br#"{"jsonrpc":"2.0","id":9,"method":"sampling/createMessage","params":{}}"#;
        let refused: Value = serde_json::from_slice(&s.take(None, asked).unwrap()).unwrap();
        assert_eq!(refused["id"], 9);
        assert_eq!(refused["error"]["code"], jsonrpc::METHOD_NOT_FOUND);
        // Progress under a waiting request's token is queued for it and wakes it; other tokens
        // and notifications are let go.
        let waiting = Waiting {
            wake: LocalEvent::new(),
            progress_token: Some(serde_json::json!("t1")),
            heard: Default::default(),
            outcome: None,
        };
        s.pending.borrow_mut().insert("5".into(), waiting);
        let progress =
            br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t1","progress":1}}"#;
        let other =
            br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t2","progress":1}}"#;
        assert!(s.take(Some("message"), progress).is_none() && s.take(Some("message"), other).is_none());
        let pending = s.pending.borrow();
        let w = pending.get("5").unwrap();
        assert_eq!(w.heard.len(), 1);
        assert!(w.wake.is_set());
    }
}
