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
use crate::upstream::{RequestBytes, Shared, send};

/// Largest event read from a legacy stream.
const MAX_EVENT: usize = 8 << 20;

/// A request waiting for its response: the event that wakes it, and the answer once in.
type Waiting = (LocalEvent, Option<Result<Value, Value>>);

/// One open stream and the requests waiting on it.
pub struct LegacySession {
    /// Where to POST messages (path and query), once the server said.
    endpoint: RefCell<Option<String>>,
    /// Set once the endpoint is known or the stream ended.
    ready: LocalEvent,
    /// Responses by request id (its JSON text): the event to wake the waiter, and the answer.
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

    /// A session with no stream behind it, last used at `last_used` (tests).
    #[cfg(test)]
    pub(crate) fn detached(last_used: std::time::Instant) -> Rc<LegacySession> {
        Rc::new(LegacySession {
            endpoint: RefCell::default(),
            ready: LocalEvent::new(),
            pending: RefCell::default(),
            closed: RefCell::default(),
            stop: LocalEvent::new(),
            last_used: std::cell::Cell::new(last_used),
        })
    }

    /// Whether it was told to let its stream go (tests).
    #[cfg(test)]
    pub(crate) fn is_stopped(&self) -> bool {
        self.stop.is_set()
    }

    /// How long since a message was last posted on it.
    pub fn idle_for(&self, now: std::time::Instant) -> std::time::Duration {
        now.saturating_duration_since(self.last_used.get())
    }

    fn close(&self, why: String) {
        *self.closed.borrow_mut() = Some(why);
        self.ready.set();
        for (event, _) in self.pending.borrow().values() {
            event.set();
        }
    }

    /// One event from the stream.
    fn take(&self, event: Option<&str>, data: &[u8]) {
        match event {
            Some("endpoint") => {
                let url = String::from_utf8_lossy(data).trim().to_owned();
                // It goes into a request line: nothing but visible ASCII.
                if url.is_empty() || !url.bytes().all(|b| b.is_ascii_graphic()) {
                    return self.close("its endpoint event is not a URL".into());
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
            Some("message") | None => {
                if let Ok(Message::Response { id, outcome }) = jsonrpc::parse(data)
                    && let Some((event, slot)) = self.pending.borrow_mut().get_mut(&id.to_string())
                {
                    *slot = Some(outcome);
                    event.set();
                }
            }
            Some(_) => {}
        }
    }
}

/// Opens the stream of a new session with `server` and waits for its endpoint.
pub async fn open(shard: &Rc<Shard>, server: &McpServer, user: &str) -> Result<Rc<LegacySession>, UpstreamError> {
    let ServerTransport::LegacySse(up) = &server.transport else {
        return Err(UpstreamError::Failed("not a legacy HTTP+SSE server".into()));
    };
    let session = Rc::new(LegacySession {
        endpoint: RefCell::default(),
        ready: LocalEvent::new(),
        pending: RefCell::default(),
        closed: RefCell::default(),
        stop: LocalEvent::new(),
        last_used: std::cell::Cell::new(std::time::Instant::now()),
    });
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
    rt::spawn(async move {
        let shard = task_shard;
        let session = task_session;
        let cfg = shard.config();
        let Some(ServerTransport::LegacySse(up)) = cfg.mcp.server(&name).map(|(_, s)| &s.transport) else {
            return session.close("the server left the config".into());
        };
        let shared = Shared { pool: &shard.pool, dns: &shard.process.dns, metrics: &shard.metrics };
        let mut stream = match send(&shared, up, &request, cfg.upstream_limits).await {
            Ok(s) if s.head.status == 200 && s.head.is_event_stream() => s,
            Ok(s) => return session.close(format!("its event stream answered HTTP {}", s.head.status)),
            Err(e) => return session.close(e.to_string()),
        };
        let mut scanner = SseScanner::new(MAX_EVENT);
        let why = loop {
            match rt::unless(&session.stop, stream.next_chunk()).await {
                Some(Ok(Some(chunk))) => {
                    scanner.feed(&chunk, |e| session.take(e.event, e.data));
                    if scanner.overflowed() {
                        break format!("an event passed {MAX_EVENT} bytes");
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

/// Posts one message on `session`; for a request, waits for its response on the stream.
pub async fn post(
    shard: &Shard,
    server: &McpServer,
    session: &LegacySession,
    user: &str,
    body: &[u8],
) -> Result<Option<Message>, UpstreamError> {
    let ServerTransport::LegacySse(up) = &server.transport else {
        return Err(UpstreamError::Failed("not a legacy HTTP+SSE server".into()));
    };
    if session.is_closed() {
        return Err(UpstreamError::SessionGone);
    }
    session.last_used.set(std::time::Instant::now());
    let endpoint = session.endpoint.borrow().clone().unwrap_or_else(|| "/".into());
    let id = match jsonrpc::parse(body) {
        Ok(Message::Request { id, .. }) => Some(id),
        Ok(_) => None,
        Err(e) => return Err(UpstreamError::Failed(e.message)),
    };
    let wake = LocalEvent::new();
    if let Some(id) = &id {
        let mut pending = session.pending.borrow_mut();
        if pending.contains_key(&id.to_string()) {
            return Err(UpstreamError::Failed(format!("a request with id {id} is already in flight in this session")));
        }
        pending.insert(id.to_string(), (wake.clone(), None));
    }
    // Whatever happens next, the entry goes.
    let key = id.as_ref().map(Value::to_string);
    let _forget = Forget { session, key: key.clone() };
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
    let mut answer = send(&shared, up, &request, shard.config().upstream_limits)
        .await
        .map_err(|e| UpstreamError::Failed(e.to_string()))?;
    let status = answer.head.status;
    let _ = answer.read_to_end(64 << 10).await;
    if !(200..300).contains(&status) {
        return Err(UpstreamError::Failed(format!("its message endpoint answered HTTP {status}")));
    }
    let (Some(id), Some(key)) = (id, key) else { return Ok(None) };
    wake.wait().await;
    let outcome = session.pending.borrow_mut().get_mut(&key).and_then(|(_, slot)| slot.take());
    match outcome {
        Some(outcome) => Ok(Some(Message::Response { id, outcome })),
        None => Err(UpstreamError::Failed(session.closed.borrow().clone().unwrap_or_else(|| "no answer".into()))),
    }
}

/// Removes a request's entry when its call ends, however it ends.
struct Forget<'a> {
    session: &'a LegacySession,
    key: Option<String>,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if let Some(k) = &self.key {
            self.session.pending.borrow_mut().remove(k);
        }
    }
}
