//! Client sessions of virtual servers (`Mcp-Session-Id`). The id is self-certifying: random
//! bytes, the negotiated protocol revision, the client's capabilities that the gateway relays
//! ([`ClientCaps`]), and an HMAC over them, the virtual server's name and
//! the caller (`key:name`, `user:name`) under a key made at process start. So any shard can
//! check an id without asking another (a client's next connection may land on another shard),
//! an id made for one virtual server is refused by the others, and an id that leaks is of no
//! use to another caller (MCP's security guidance: bind sessions to the user). Ended sessions (`DELETE`) are remembered
//! process-wide in a copy-on-write set that readers load without a lock.
//!
//! Each shard opens its own upstream sessions for a client session on first use
//! ([`UpstreamSessions`]), so no upstream session id crosses shards either.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// Ended sessions remembered; the oldest are forgotten beyond this (their ids then verify
/// again, but their upstream sessions are gone, so a call re-opens them).
const ENDED_KEPT: usize = 16_384;

/// A client session: its random part and protocol revision.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId {
    pub nonce: [u8; 16],
    /// Index into [`adapters::mcp::PROTOCOL_VERSIONS`].
    pub version: u8,
    /// What the client said it can do for servers (declared to upstreams in its sessions).
    pub caps: ClientCaps,
    /// The caller it belongs to (`key:name`, `user:name`): whose upstream tokens it uses.
    pub caller: Arc<str>,
}

/// The client capabilities a server may use through the gateway: requests it sends mid-call
/// (`sampling/createMessage`, `elicitation/create`, `roots/list`) are relayed to clients that
/// declared the matching capability at `initialize`, and refused for the others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ClientCaps(u8);

impl ClientCaps {
    const SAMPLING: u8 = 1;
    const ELICITATION: u8 = 2;
    const ROOTS: u8 = 4;
    const ALL: [(&'static str, &'static str, u8); 3] = [
        ("sampling", "sampling/createMessage", Self::SAMPLING),
        ("elicitation", "elicitation/create", Self::ELICITATION),
        ("roots", "roots/list", Self::ROOTS),
    ];

    /// From `initialize`'s `params.capabilities`.
    pub fn declared(capabilities: Option<&serde_json::Value>) -> ClientCaps {
        let has = |name: &str| capabilities.and_then(|c| c.get(name)).is_some_and(serde_json::Value::is_object);
        ClientCaps(Self::ALL.iter().filter(|(name, _, _)| has(name)).fold(0, |acc, (_, _, bit)| acc | bit))
    }

    /// Whether a server's request `method` may go to this client; `None` for a method that is
    /// no client capability's.
    pub fn allows(self, method: &str) -> Option<bool> {
        Self::ALL.iter().find(|(_, m, _)| *m == method).map(|(_, _, bit)| self.0 & bit != 0)
    }

    /// The capability `method` needs, for messages.
    pub fn needed_for(method: &str) -> Option<&'static str> {
        Self::ALL.iter().find(|(_, m, _)| *m == method).map(|(name, _, _)| *name)
    }

    /// As `initialize` declares them upstream.
    pub fn to_json(self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for (name, _, bit) in Self::ALL {
            if self.0 & bit != 0 {
                map.insert(name.into(), serde_json::Value::Object(serde_json::Map::new()));
            }
        }
        serde_json::Value::Object(map)
    }
}

/// Where a request an upstream sent mid-call came from: what any shard needs to post the
/// client's answer back (to that server, in that upstream session, under the server's own id).
/// It travels to the client sealed in the id of the relayed request, so the client learns
/// neither the upstream's session nor its ids, and cannot aim an answer elsewhere.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RelayRoute {
    pub server: String,
    /// The tool being called (`server__tool`): the guardrails chosen for it judge the answer.
    pub tool: String,
    pub upstream_session: Option<String>,
    pub version: String,
    /// The server's id for its request.
    pub id: serde_json::Value,
    /// Unix milliseconds after which the server no longer waits for the answer.
    pub expires_ms: u64,
}

/// What a relayed request's id starts with.
pub const RELAY_PREFIX: &str = "sg-relay-";

impl SessionId {
    pub fn protocol_version(&self) -> &'static str {
        adapters::mcp::PROTOCOL_VERSIONS
            .get(usize::from(self.version))
            .copied()
            .unwrap_or(adapters::mcp::ASSUMED_VERSION)
    }
}

/// Makes and checks session ids; remembers ended ones.
pub struct Sessions {
    key: hmac::Key,
    /// Seals [`RelayRoute`]s; made at start like `key`.
    relay_key: super::user_oauth::TokenKey,
    rng: SystemRandom,
    ended: ArcSwap<HashSet<[u8; 16]>>,
    /// Order of ending, to forget the oldest; only `DELETE` takes this lock.
    order: Mutex<VecDeque<[u8; 16]>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let b = s.as_bytes();
    if b.len() != N * 2 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).and_then(|d| u8::try_from(d).ok());
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = digit(*b.get(2 * i)?)? << 4 | digit(*b.get(2 * i + 1)?)?;
    }
    Some(out)
}

impl Sessions {
    /// A fresh key; fails only when the system's random source does.
    pub fn new() -> Result<Sessions, String> {
        let rng = SystemRandom::new();
        let key =
            hmac::Key::generate(hmac::HMAC_SHA256, &rng).map_err(|_| "no system randomness for MCP session keys")?;
        let relay_key = super::user_oauth::TokenKey::generate()?;
        Ok(Sessions {
            key,
            relay_key,
            rng,
            ended: ArcSwap::from_pointee(HashSet::new()),
            order: Mutex::new(VecDeque::new()),
        })
    }

    fn tag(&self, virtual_server: &str, caller: &str, nonce: &[u8; 16], version: u8, caps: ClientCaps) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(virtual_server.as_bytes());
        ctx.update(&[0]);
        ctx.update(caller.as_bytes());
        ctx.update(&[0]);
        ctx.update(nonce);
        ctx.update(&[version, caps.0]);
        ctx.sign()
    }

    /// A new session of `virtual_server` at protocol revision `version` (an index into
    /// [`adapters::mcp::PROTOCOL_VERSIONS`]) for a client that declared `caps`: the id to send
    /// as `Mcp-Session-Id`.
    pub fn open(
        &self,
        virtual_server: &str,
        caller: &str,
        version: u8,
        caps: ClientCaps,
    ) -> Result<(SessionId, String), String> {
        let mut nonce = [0u8; 16];
        self.rng.fill(&mut nonce).map_err(|_| "no system randomness for an MCP session id")?;
        let tag = self.tag(virtual_server, caller, &nonce, version, caps);
        let id = format!("{}.{version}.{}.{}", hex(&nonce), caps.0, hex(tag.as_ref().get(..16).unwrap_or_default()));
        Ok((SessionId { nonce, version, caps, caller: Arc::from(caller) }, id))
    }

    /// The session `header` names, if it is one of ours for `virtual_server` and `caller`,
    /// and not ended.
    pub fn check(&self, virtual_server: &str, caller: &str, header: &str) -> Option<SessionId> {
        let mut parts = header.split('.');
        let (nonce, version, caps, tag) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let nonce = unhex::<16>(nonce)?;
        let version: u8 = version.parse().ok()?;
        let caps = ClientCaps(caps.parse().ok()?);
        let tag = unhex::<16>(tag)?;
        let expect = self.tag(virtual_server, caller, &nonce, version, caps);
        // Constant-time comparison of the truncated tags.
        let same = expect.as_ref().get(..16).is_some_and(|e| ring_eq(e, &tag));
        (same && !self.ended.load().contains(&nonce)).then(|| SessionId {
            nonce,
            version,
            caps,
            caller: Arc::from(caller),
        })
    }

    fn relay_context(virtual_server: &str, session: &SessionId) -> String {
        format!("relay\0{virtual_server}\0{}", hex(&session.nonce))
    }

    /// The id under which a server's request goes to the client of `session`.
    pub fn seal_route(&self, virtual_server: &str, session: &SessionId, route: &RelayRoute) -> Result<String, String> {
        let plain = serde_json::to_vec(route).map_err(|e| e.to_string())?;
        let sealed = self.relay_key.seal(&Self::relay_context(virtual_server, session), &plain)?;
        Ok(format!("{RELAY_PREFIX}{sealed}"))
    }

    /// The route sealed in `id`, if it is one this process sealed for `session` of
    /// `virtual_server`.
    pub fn open_route(&self, virtual_server: &str, session: &SessionId, id: &str) -> Option<RelayRoute> {
        let sealed = id.strip_prefix(RELAY_PREFIX)?;
        let plain = self.relay_key.open(&Self::relay_context(virtual_server, session), sealed)?;
        serde_json::from_slice(&plain).ok()
    }

    /// Whether `id` was ended (on any shard) since it was checked.
    pub fn is_ended(&self, id: &SessionId) -> bool {
        self.ended.load().contains(&id.nonce)
    }

    /// Ends a session: its id is refused from now on, on every shard.
    pub fn end(&self, id: &SessionId) {
        let Ok(mut order) = self.order.lock() else { return };
        order.push_back(id.nonce);
        let forget = if order.len() > ENDED_KEPT { order.pop_front() } else { None };
        self.ended.rcu(|set| {
            let mut next = HashSet::clone(set);
            next.insert(id.nonce);
            if let Some(old) = forget {
                next.remove(&old);
            }
            next
        });
    }
}

/// Equality without early exit, so the time taken says nothing of where a forged tag differs.
fn ring_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An upstream session one shard opened for a client session.
#[derive(Debug, Clone)]
pub struct UpstreamSession {
    /// The upstream's `Mcp-Session-Id`; `None` for a server without sessions.
    pub id: Option<Arc<str>>,
    /// The revision the upstream agreed to (sent as `MCP-Protocol-Version`).
    pub version: Arc<str>,
}

/// Most upstream sessions one shard keeps; beyond this one is dropped (a later call re-opens
/// it).
const UPSTREAM_KEPT: usize = 8192;

/// A client session's nonce and an upstream server's name.
type UpstreamKey = ([u8; 16], Arc<str>);

/// A client session's nonce and a request id (its JSON text).
type CallKey = ([u8; 16], String);

/// One shard's upstream sessions, by client session and server; and the calls in flight on
/// this shard, by client session and request id, with the server each went to (for
/// `notifications/cancelled`).
#[derive(Debug, Default)]
pub struct UpstreamSessions {
    map: std::cell::RefCell<HashMap<UpstreamKey, UpstreamSession>>,
    in_flight: std::cell::RefCell<HashMap<CallKey, Arc<str>>>,
    /// Which server listed a resource URI, per client session (for `resources/read`).
    resources: std::cell::RefCell<HashMap<CallKey, Arc<str>>>,
    /// Upstream sessions being opened now: whoever needs the same one waits for that opening
    /// instead of opening a second (a client's GET stream and its first calls come together).
    opening: std::cell::RefCell<HashMap<UpstreamKey, crate::rt::LocalEvent>>,
    /// The client sessions with a `GET` stream open on this shard, each with its stream's
    /// number and the event that stops it.
    listening: std::cell::RefCell<HashMap<[u8; 16], Listening>>,
    /// Numbers `GET` streams.
    listens: std::cell::Cell<u64>,
    /// Client sessions whose `GET` stream is on another shard: which, and the session.
    listeners_elsewhere: std::cell::RefCell<HashMap<[u8; 16], Listener>>,
    /// Forwarders running here (a server's `GET` stream read for a listener elsewhere), by
    /// client session and server, each with the event that stops it.
    forwarders: std::cell::RefCell<HashMap<UpstreamKey, Forwarder>>,
    /// Numbers forwarders (so one that ends removes its own entry, not its successor's).
    forwarder_ids: std::cell::Cell<u64>,
    /// What other shards forwarded to the `GET` streams open here, by client session.
    inboxes: std::cell::RefCell<HashMap<[u8; 16], Inbox>>,
    /// Open streams to legacy HTTP+SSE servers, per client session and server.
    legacy: std::cell::RefCell<HashMap<UpstreamKey, std::rc::Rc<super::legacy_sse::LegacySession>>>,
}

/// A call in flight, forgotten when dropped (answered, failed, cancelled or timed out).
pub struct InFlight<'a> {
    sessions: &'a UpstreamSessions,
    key: CallKey,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.sessions.in_flight.borrow_mut().remove(&self.key);
    }
}

/// An upstream session being opened; waiters wake when it drops (opened or failed).
pub struct Opening<'a> {
    sessions: &'a UpstreamSessions,
    key: UpstreamKey,
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        if let Some(done) = self.sessions.opening.borrow_mut().remove(&self.key) {
            done.set();
        }
    }
}

/// A legacy HTTP+SSE stream no message went through for this long is let go (the next call
/// opens another).
pub const LEGACY_IDLE: std::time::Duration = std::time::Duration::from_secs(600);

/// Most `GET` streams open on one shard at once. Each holds a connection to every server it
/// listens to, so without a bound, clients could take all of a server's pooled connections.
pub const MAX_LISTENING: usize = 128;

/// A client session's `GET` stream on this shard; let go when dropped.
pub struct ListenSlot<'a> {
    sessions: &'a UpstreamSessions,
    nonce: [u8; 16],
    /// This stream's number on this shard (with the shard's id, it names the stream).
    pub number: u64,
    /// When it opened (Unix ms) and on which shard: of a client's streams, the newest wins.
    pub opened: (u64, usize),
    /// Set when another `GET` of the same session replaces this one.
    pub stop: crate::rt::LocalEvent,
    /// Set when this one has let go of its upstream streams (dropped).
    done: crate::rt::LocalEvent,
    /// The one this replaced, done once it let go.
    pub replaced: Option<crate::rt::LocalEvent>,
}

impl Drop for ListenSlot<'_> {
    fn drop(&mut self) {
        self.done.set();
        let mut listening = self.sessions.listening.borrow_mut();
        if listening.get(&self.nonce).is_some_and(|l| l.number == self.number) {
            listening.remove(&self.nonce);
        }
    }
}

/// A message a server sent outside calls on another shard, for the `GET` stream open here.
#[derive(Debug)]
pub struct Delivered {
    pub server: Arc<str>,
    /// The sending shard's upstream session with the server (where answers to its requests go).
    pub upstream: Option<UpstreamSession>,
    pub message: adapters::mcp::jsonrpc::Message,
}

/// Messages waiting for a `GET` stream (the stream's number), and the event that wakes it.
#[derive(Debug, Default)]
struct Inbox {
    number: u64,
    queue: VecDeque<Delivered>,
    wake: crate::rt::LocalEvent,
}

/// Messages kept per `GET` stream while it is busy; beyond this the oldest go.
const INBOX_KEPT: usize = 1024;

/// A `GET` stream open here: its number, when it opened (Unix ms, shard), the event that stops
/// it, and the one set once it let go.
#[derive(Debug)]
struct Listening {
    number: u64,
    opened: (u64, usize),
    stop: crate::rt::LocalEvent,
    done: crate::rt::LocalEvent,
}

/// A client's `GET` stream on another shard: which shard, and its number there.
#[derive(Debug)]
struct Listener {
    at: usize,
    number: u64,
}

/// A forwarder running here: the stream it forwards to (shard, number), its own id, and the
/// event that stops it.
#[derive(Debug)]
struct Forwarder {
    to: (usize, u64),
    id: u64,
    stop: crate::rt::LocalEvent,
}

/// A forwarder's place; let go when it ends.
pub struct Forwarding<'a> {
    sessions: &'a UpstreamSessions,
    key: UpstreamKey,
    id: u64,
    pub stop: crate::rt::LocalEvent,
}

impl Drop for Forwarding<'_> {
    fn drop(&mut self) {
        let mut forwarders = self.sessions.forwarders.borrow_mut();
        if forwarders.get(&self.key).is_some_and(|f| f.id == self.id) {
            forwarders.remove(&self.key);
        }
    }
}

/// A `GET` stream's inbox here; let go when dropped.
pub struct InboxGuard<'a> {
    sessions: &'a UpstreamSessions,
    nonce: [u8; 16],
    number: u64,
}

impl Drop for InboxGuard<'_> {
    fn drop(&mut self) {
        let mut inboxes = self.sessions.inboxes.borrow_mut();
        if inboxes.get(&self.nonce).is_some_and(|i| i.number == self.number) {
            inboxes.remove(&self.nonce);
        }
    }
}

impl InboxGuard<'_> {
    /// The next message forwarded here, waiting for one (for ever once a newer stream of the
    /// session took the inbox: this one is being stopped).
    pub async fn next(&self) -> Delivered {
        loop {
            let wake = {
                let mut inboxes = self.sessions.inboxes.borrow_mut();
                match inboxes.get_mut(&self.nonce).filter(|i| i.number == self.number) {
                    Some(inbox) => {
                        if let Some(d) = inbox.queue.pop_front() {
                            return d;
                        }
                        if inbox.wake.is_set() {
                            inbox.wake = crate::rt::LocalEvent::new();
                        }
                        Some(inbox.wake.clone())
                    }
                    None => None,
                }
            };
            match wake {
                Some(w) => w.wait().await,
                None => std::future::pending::<()>().await,
            }
        }
    }
}

/// What [`UpstreamSessions::open_or_wait`] found.
pub enum OpenTurn<'a> {
    /// Another task is opening it: wait for this, then look again.
    Wait(crate::rt::LocalEvent),
    /// Open it; others wait until this drops.
    Open(Opening<'a>),
}

impl UpstreamSessions {
    /// Notes that `session`'s `GET` stream is stream `number` of shard `at`, opened at
    /// `opened_ms`; forwarders here aimed at an older one are stopped (the caller starts new
    /// ones). Of a client's streams the newest wins: an older one open here is stopped, and
    /// `false` (nothing done) when the one here is newer.
    pub fn listening_elsewhere(&self, session: &SessionId, at: usize, number: u64, opened_ms: u64) -> bool {
        if let Some(here) = self.listening.borrow().get(&session.nonce) {
            if here.opened > (opened_ms, at) {
                return false;
            }
            here.stop.set();
        }
        let mut map = self.listeners_elsewhere.borrow_mut();
        if map.len() >= UPSTREAM_KEPT
            && let Some(k) = map.keys().next().copied()
        {
            map.remove(&k);
        }
        map.insert(session.nonce, Listener { at, number });
        drop(map);
        self.stop_forwarders(session, |to| to != (at, number));
        true
    }

    /// The stream (shard, number) `session`'s `GET` is on elsewhere, when another shard said.
    pub fn listener_of(&self, session: &SessionId) -> Option<(usize, u64)> {
        self.listeners_elsewhere.borrow().get(&session.nonce).map(|l| (l.at, l.number))
    }

    /// `session`'s stream `number` on shard `at` ended: forwarders aimed at it stop.
    pub fn not_listening_elsewhere(&self, session: &SessionId, at: usize, number: u64) {
        let mut map = self.listeners_elsewhere.borrow_mut();
        if map.get(&session.nonce).is_some_and(|l| (l.at, l.number) == (at, number)) {
            map.remove(&session.nonce);
        }
        drop(map);
        self.stop_forwarders(session, |to| to == (at, number));
    }

    /// A `GET` stream of `session` opens here: other shards' streams are not this shard's
    /// concern any more, and its forwarders stop (they hold the servers' streams it needs).
    pub fn listening_here(&self, session: &SessionId) {
        self.listeners_elsewhere.borrow_mut().remove(&session.nonce);
        self.stop_forwarders(session, |_| true);
    }

    fn stop_forwarders(&self, session: &SessionId, aimed: impl Fn((usize, u64)) -> bool) {
        self.forwarders.borrow_mut().retain(|k, f| {
            let stop = k.0 == session.nonce && aimed(f.to);
            if stop {
                f.stop.set();
            }
            !stop
        });
    }

    /// A forwarder for `session` and `server` to stream `to` (shard, number), unless one runs
    /// to it; one aimed elsewhere is stopped.
    pub fn forwarding(&self, session: &SessionId, server: &Arc<str>, to: (usize, u64)) -> Option<Forwarding<'_>> {
        let key = (session.nonce, server.clone());
        let mut forwarders = self.forwarders.borrow_mut();
        if let Some(f) = forwarders.get(&key) {
            if f.to == to {
                return None;
            }
            f.stop.set();
        }
        let id = self.forwarder_ids.get() + 1;
        self.forwarder_ids.set(id);
        let stop = crate::rt::LocalEvent::new();
        forwarders.insert(key.clone(), Forwarder { to, id, stop: stop.clone() });
        Some(Forwarding { sessions: self, key, id, stop })
    }

    /// This shard's upstream sessions of `session` (streamable HTTP ones).
    pub fn upstreams_of(&self, session: &SessionId) -> Vec<(Arc<str>, UpstreamSession)> {
        self.map
            .borrow()
            .iter()
            .filter(|((n, _), _)| *n == session.nonce)
            .map(|((_, s), u)| (s.clone(), u.clone()))
            .collect()
    }

    /// An inbox for `GET` stream `number` of `session` open here (a newer stream takes it).
    pub fn inbox(&self, session: &SessionId, number: u64) -> InboxGuard<'_> {
        self.inboxes.borrow_mut().insert(session.nonce, Inbox { number, ..Inbox::default() });
        InboxGuard { sessions: self, nonce: session.nonce, number }
    }

    /// A message forwarded from another shard, for stream `number` of `nonce` here (dropped
    /// when that stream is gone).
    pub fn deliver(&self, nonce: [u8; 16], number: u64, d: Delivered) {
        let mut inboxes = self.inboxes.borrow_mut();
        let Some(inbox) = inboxes.get_mut(&nonce).filter(|i| i.number == number) else { return };
        if inbox.queue.len() >= INBOX_KEPT {
            inbox.queue.pop_front();
        }
        inbox.queue.push_back(d);
        inbox.wake.set();
    }

    /// A `GET` stream for `session` on this shard: one per session (a new one stops the one
    /// before), `None` when [`MAX_LISTENING`] are open.
    pub fn listen_slot(&self, session: &SessionId, shard_id: usize) -> Option<ListenSlot<'_>> {
        let mut listening = self.listening.borrow_mut();
        let mut replaced = None;
        if let Some(before) = listening.remove(&session.nonce) {
            before.stop.set();
            replaced = Some(before.done);
        } else if listening.len() >= MAX_LISTENING {
            return None;
        }
        let number = self.listens.get() + 1;
        self.listens.set(number);
        let (stop, done) = (crate::rt::LocalEvent::new(), crate::rt::LocalEvent::new());
        let opened = (crate::api::governance::now_ms(), shard_id);
        listening.insert(session.nonce, Listening { number, opened, stop: stop.clone(), done: done.clone() });
        Some(ListenSlot { sessions: self, nonce: session.nonce, number, opened, stop, done, replaced })
    }

    /// Who opens `session`'s upstream session with `server`: this task, or one already at it.
    pub fn open_or_wait(&self, session: &SessionId, server: &Arc<str>) -> OpenTurn<'_> {
        let key = (session.nonce, server.clone());
        let mut opening = self.opening.borrow_mut();
        if let Some(event) = opening.get(&key) {
            return OpenTurn::Wait(event.clone());
        }
        opening.insert(key.clone(), crate::rt::LocalEvent::new());
        OpenTurn::Open(Opening { sessions: self, key })
    }

    /// Notes that request `id` of `session` went to `server`, until the guard drops.
    pub fn begin(&self, session: &SessionId, id: &serde_json::Value, server: &Arc<str>) -> InFlight<'_> {
        let key = (session.nonce, id.to_string());
        self.in_flight.borrow_mut().insert(key.clone(), server.clone());
        InFlight { sessions: self, key }
    }

    /// Notes that `server` listed resource `uri` to `session`.
    pub fn note_resource(&self, session: &SessionId, uri: &str, server: &Arc<str>) {
        let mut map = self.resources.borrow_mut();
        if map.len() >= UPSTREAM_KEPT * 8
            && let Some(k) = map.keys().next().cloned()
        {
            map.remove(&k);
        }
        map.insert((session.nonce, uri.to_owned()), server.clone());
    }

    /// The server that listed `uri` to `session` on this shard, if one did.
    pub fn resource_owner(&self, session: &SessionId, uri: &str) -> Option<Arc<str>> {
        self.resources.borrow().get(&(session.nonce, uri.to_owned())).cloned()
    }

    /// The server request `id` of `session` is in flight to on this shard.
    pub fn owner(&self, session: &SessionId, id: &serde_json::Value) -> Option<Arc<str>> {
        self.in_flight.borrow().get(&(session.nonce, id.to_string())).cloned()
    }

    pub fn get(&self, session: &SessionId, server: &Arc<str>) -> Option<UpstreamSession> {
        self.map.borrow().get(&(session.nonce, server.clone())).cloned()
    }

    pub fn put(&self, session: &SessionId, server: &Arc<str>, upstream: UpstreamSession) {
        let mut map = self.map.borrow_mut();
        if map.len() >= UPSTREAM_KEPT
            && let Some(k) = map.keys().next().cloned()
        {
            map.remove(&k);
        }
        map.insert((session.nonce, server.clone()), upstream);
    }

    /// Forgets one (the upstream said it no longer knows it).
    pub fn forget(&self, session: &SessionId, server: &Arc<str>) {
        self.map.borrow_mut().remove(&(session.nonce, server.clone()));
    }

    /// The open legacy stream of `session` with `server`, if any.
    pub fn legacy(
        &self,
        session: &SessionId,
        server: &Arc<str>,
    ) -> Option<std::rc::Rc<super::legacy_sse::LegacySession>> {
        self.legacy.borrow().get(&(session.nonce, server.clone())).cloned()
    }

    pub fn put_legacy(&self, session: &SessionId, server: &Arc<str>, s: std::rc::Rc<super::legacy_sse::LegacySession>) {
        let mut map = self.legacy.borrow_mut();
        map.retain(|_, s| !s.is_closed());
        if map.len() >= UPSTREAM_KEPT
            && let Some(k) = map.keys().next().cloned()
            && let Some(old) = map.remove(&k)
        {
            old.stop();
        }
        if let Some(replaced) = map.insert((session.nonce, server.clone()), s) {
            replaced.stop();
        }
    }

    /// Stops the legacy streams no message went through for `idle` (a client that went away
    /// without `DELETE` would otherwise keep them open for good); the count stopped.
    pub fn expire_legacy(&self, now: std::time::Instant, idle: std::time::Duration) -> usize {
        let mut map = self.legacy.borrow_mut();
        let before = map.len();
        map.retain(|_, s| {
            let keep = !s.is_closed() && (s.is_busy() || s.idle_for(now) < idle);
            if !keep {
                s.stop();
            }
            keep
        });
        before - map.len()
    }

    /// Takes every upstream session of `session` (it ended), to close them upstream.
    pub fn take_all(&self, session: &SessionId) -> Vec<(Arc<str>, UpstreamSession)> {
        let mut map = self.map.borrow_mut();
        let keys: Vec<_> = map.keys().filter(|(n, _)| *n == session.nonce).cloned().collect();
        // Legacy streams are let go at once.
        self.legacy.borrow_mut().retain(|(n, _), s| {
            if *n == session.nonce {
                s.stop();
            }
            *n != session.nonce
        });
        keys.into_iter().filter_map(|k| map.remove(&k).map(|s| (k.1, s))).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn ids_verify_for_their_virtual_server_only_and_not_after_ending() {
        let s = Sessions::new().unwrap();
        let caps = ClientCaps::declared(Some(&serde_json::json!({"sampling": {}, "roots": {"listChanged": true}})));
        let (id, header) = s.open("tools", "key:a", 1, caps).unwrap();
        assert_eq!(id.caps.allows("sampling/createMessage"), Some(true));
        assert_eq!(id.caps.allows("roots/list"), Some(true));
        assert_eq!(id.caps.allows("elicitation/create"), Some(false), "not declared");
        assert_eq!(id.caps.allows("tools/call"), None, "no client capability's");
        assert_eq!(s.check("tools", "key:a", &header), Some(id.clone()));
        assert_eq!(id.protocol_version(), adapters::mcp::PROTOCOL_VERSIONS[1]);
        assert_eq!(s.check("other", "key:a", &header), None, "bound to its virtual server");
        assert_eq!(s.check("tools", "key:b", &header), None, "bound to its caller");
        let mut forged = header.clone();
        forged.replace_range(0..1, if forged.starts_with('0') { "1" } else { "0" });
        assert_eq!(s.check("tools", "key:a", &forged), None, "nonce changed");
        let bumped = header.replacen(".1.", ".2.", 1);
        assert_eq!(s.check("tools", "key:a", &bumped), None, "version changed");
        let more = header.replacen(".5.", ".7.", 1);
        assert_ne!(more, header);
        assert_eq!(s.check("tools", "key:a", &more), None, "capabilities claimed that were not declared");
        for junk in ["", "a.b.c", "zz.1.zz", &format!("{header}.x")] {
            assert_eq!(s.check("tools", "key:a", junk), None, "{junk}");
        }
        assert_eq!(Sessions::new().unwrap().check("tools", "key:a", &header), None, "another process's key");
        s.end(&id);
        assert_eq!(s.check("tools", "key:a", &header), None, "ended");
        let (_, other) = s.open("tools", "key:a", 0, ClientCaps::default()).unwrap();
        assert!(s.check("tools", "key:a", &other).is_some());
        assert!(header.bytes().all(|b| (0x21..=0x7e).contains(&b)), "visible ASCII, as the spec asks");
    }

    #[test]
    fn upstream_sessions_are_kept_per_client_session_and_server() {
        let s = Sessions::new().unwrap();
        let (a, _) = s.open("v", "anonymous", 0, ClientCaps::default()).unwrap();
        let (b, _) = s.open("v", "anonymous", 0, ClientCaps::default()).unwrap();
        let ups = UpstreamSessions::default();
        let gh: Arc<str> = Arc::from("gh");
        ups.put(&a, &gh, UpstreamSession { id: Some(Arc::from("u1")), version: Arc::from("2025-06-18") });
        assert!(ups.get(&a, &gh).is_some() && ups.get(&b, &gh).is_none());
        assert_eq!(ups.take_all(&a).len(), 1);
        assert!(ups.get(&a, &gh).is_none());
    }

    #[test]
    fn relay_routes_open_only_in_the_session_and_virtual_server_they_were_sealed_for() {
        let s = Sessions::new().unwrap();
        let (a, _) = s.open("v", "key:a", 0, ClientCaps::default()).unwrap();
        let (b, _) = s.open("v", "key:a", 0, ClientCaps::default()).unwrap();
        let route = RelayRoute {
            server: "gh".into(),
            tool: "gh__ask".into(),
            upstream_session: Some("up-1".into()),
            version: "2025-06-18".into(),
            id: serde_json::json!(7),
            expires_ms: 1,
        };
        let id = s.seal_route("v", &a, &route).unwrap();
        assert!(id.starts_with(RELAY_PREFIX) && !id.contains("up-1"), "the upstream session stays hidden: {id}");
        assert_eq!(s.open_route("v", &a, &id), Some(route.clone()));
        assert_eq!(s.open_route("v", &b, &id), None, "another session");
        assert_eq!(s.open_route("w", &a, &id), None, "another virtual server");
        assert_eq!(Sessions::new().unwrap().open_route("v", &a, &id), None, "another process");
        let mut forged = id.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(s.open_route("v", &a, &forged), None, "altered");
        for junk in ["", RELAY_PREFIX, "7", "sg-relay-!!"] {
            assert_eq!(s.open_route("v", &a, junk), None, "{junk}");
        }
    }

    /// Two tasks needing the same upstream session at once (a client's GET stream and its first
    /// call) opened two, and the stream listened on the one the calls did not use.
    #[test]
    fn one_opening_per_upstream_session_and_the_others_wait_for_it() {
        let s = Sessions::new().unwrap();
        let (a, _) = s.open("v", "anonymous", 0, ClientCaps::default()).unwrap();
        let ups = UpstreamSessions::default();
        let gh: Arc<str> = Arc::from("gh");
        let fs: Arc<str> = Arc::from("fs");
        let OpenTurn::Open(first) = ups.open_or_wait(&a, &gh) else { panic!("the first opens") };
        let OpenTurn::Wait(done) = ups.open_or_wait(&a, &gh) else { panic!("the second waits") };
        assert!(matches!(ups.open_or_wait(&a, &fs), OpenTurn::Open(_)), "another server is another session");
        assert!(!done.is_set());
        drop(first);
        assert!(done.is_set(), "waiters wake when the opening ends, opened or failed");
        assert!(matches!(ups.open_or_wait(&a, &gh), OpenTurn::Open(_)), "and may open it themselves if it failed");
    }

    #[test]
    fn one_get_stream_per_session_and_shard_and_a_bound_on_all() {
        let s = Sessions::new().unwrap();
        let ups = UpstreamSessions::default();
        let (a, _) = s.open("v", "anonymous", 0, ClientCaps::default()).unwrap();
        let first = ups.listen_slot(&a, 0).unwrap();
        let second = ups.listen_slot(&a, 0).unwrap();
        assert!(first.stop.is_set() && !second.stop.is_set(), "the new stream stops the old");
        let old_done = second.replaced.clone().unwrap();
        assert!(!old_done.is_set());
        drop(first);
        assert!(old_done.is_set(), "and learns when the old one let go");
        assert_eq!(ups.listening.borrow().len(), 1, "the old one's end does not free the new one's place");
        drop(second);
        assert!(ups.listening.borrow().is_empty());
        let mut held = Vec::new();
        for _ in 0..MAX_LISTENING {
            let (x, _) = s.open("v", "anonymous", 0, ClientCaps::default()).unwrap();
            held.push(ups.listen_slot(&x, 0).unwrap());
        }
        let (late, _) = s.open("v", "anonymous", 0, ClientCaps::default()).unwrap();
        assert!(ups.listen_slot(&late, 0).is_none(), "full");
        held.pop();
        assert!(ups.listen_slot(&late, 0).is_some());
    }

    #[test]
    fn idle_legacy_streams_are_let_go() {
        use std::time::{Duration, Instant};
        let s = Sessions::new().unwrap();
        let (a, _) = s.open("v", "anonymous", 0, ClientCaps::default()).unwrap();
        let (b, _) = s.open("v", "anonymous", 0, ClientCaps::default()).unwrap();
        let ups = UpstreamSessions::default();
        let server: Arc<str> = Arc::from("legacy");
        let now = Instant::now();
        let old = super::super::legacy_sse::LegacySession::detached(now.checked_sub(Duration::from_secs(700)).unwrap());
        let fresh = super::super::legacy_sse::LegacySession::detached(now);
        let (c, _) = s.open("v", "anonymous", 0, ClientCaps::default()).unwrap();
        let busy =
            super::super::legacy_sse::LegacySession::detached(now.checked_sub(Duration::from_secs(700)).unwrap());
        busy.hold_a_call();
        ups.put_legacy(&a, &server, old.clone());
        ups.put_legacy(&b, &server, fresh.clone());
        ups.put_legacy(&c, &server, busy.clone());
        assert_eq!(ups.expire_legacy(now, LEGACY_IDLE), 1);
        assert!(old.is_stopped() && !fresh.is_stopped());
        assert!(!busy.is_stopped(), "a call under way for longer than the idle time keeps its stream");
        assert!(ups.legacy(&a, &server).is_none() && ups.legacy(&b, &server).is_some());
    }
}
