//! Client sessions of virtual servers (`Mcp-Session-Id`). The id is self-certifying: random
//! bytes, the negotiated protocol revision, and an HMAC over both, the virtual server's name and
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
    /// The caller it belongs to (`key:name`, `user:name`): whose upstream tokens it uses.
    pub caller: Arc<str>,
}

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
        Ok(Sessions { key, rng, ended: ArcSwap::from_pointee(HashSet::new()), order: Mutex::new(VecDeque::new()) })
    }

    fn tag(&self, virtual_server: &str, caller: &str, nonce: &[u8; 16], version: u8) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(virtual_server.as_bytes());
        ctx.update(&[0]);
        ctx.update(caller.as_bytes());
        ctx.update(&[0]);
        ctx.update(nonce);
        ctx.update(&[version]);
        ctx.sign()
    }

    /// A new session of `virtual_server` at protocol revision `version` (an index into
    /// [`adapters::mcp::PROTOCOL_VERSIONS`]): the id to send as `Mcp-Session-Id`.
    pub fn open(&self, virtual_server: &str, caller: &str, version: u8) -> Result<(SessionId, String), String> {
        let mut nonce = [0u8; 16];
        self.rng.fill(&mut nonce).map_err(|_| "no system randomness for an MCP session id")?;
        let tag = self.tag(virtual_server, caller, &nonce, version);
        let id = format!("{}.{version}.{}", hex(&nonce), hex(tag.as_ref().get(..16).unwrap_or_default()));
        Ok((SessionId { nonce, version, caller: Arc::from(caller) }, id))
    }

    /// The session `header` names, if it is one of ours for `virtual_server` and `caller`,
    /// and not ended.
    pub fn check(&self, virtual_server: &str, caller: &str, header: &str) -> Option<SessionId> {
        let mut parts = header.split('.');
        let (nonce, version, tag) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let nonce = unhex::<16>(nonce)?;
        let version: u8 = version.parse().ok()?;
        let tag = unhex::<16>(tag)?;
        let expect = self.tag(virtual_server, caller, &nonce, version);
        // Constant-time comparison of the truncated tags.
        let same = expect.as_ref().get(..16).is_some_and(|e| ring_eq(e, &tag));
        (same && !self.ended.load().contains(&nonce)).then(|| SessionId { nonce, version, caller: Arc::from(caller) })
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

impl UpstreamSessions {
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
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ids_verify_for_their_virtual_server_only_and_not_after_ending() {
        let s = Sessions::new().unwrap();
        let (id, header) = s.open("tools", "key:a", 1).unwrap();
        assert_eq!(s.check("tools", "key:a", &header), Some(id.clone()));
        assert_eq!(id.protocol_version(), adapters::mcp::PROTOCOL_VERSIONS[1]);
        assert_eq!(s.check("other", "key:a", &header), None, "bound to its virtual server");
        assert_eq!(s.check("tools", "key:b", &header), None, "bound to its caller");
        let mut forged = header.clone();
        forged.replace_range(0..1, if forged.starts_with('0') { "1" } else { "0" });
        assert_eq!(s.check("tools", "key:a", &forged), None, "nonce changed");
        let bumped = header.replacen(".1.", ".2.", 1);
        assert_eq!(s.check("tools", "key:a", &bumped), None, "version changed");
        for junk in ["", "a.b.c", "zz.1.zz", &format!("{header}.x")] {
            assert_eq!(s.check("tools", "key:a", junk), None, "{junk}");
        }
        assert_eq!(Sessions::new().unwrap().check("tools", "key:a", &header), None, "another process's key");
        s.end(&id);
        assert_eq!(s.check("tools", "key:a", &header), None, "ended");
        let (_, other) = s.open("tools", "key:a", 0).unwrap();
        assert!(s.check("tools", "key:a", &other).is_some());
        assert!(header.bytes().all(|b| (0x21..=0x7e).contains(&b)), "visible ASCII, as the spec asks");
    }

    #[test]
    fn upstream_sessions_are_kept_per_client_session_and_server() {
        let s = Sessions::new().unwrap();
        let (a, _) = s.open("v", "anonymous", 0).unwrap();
        let (b, _) = s.open("v", "anonymous", 0).unwrap();
        let ups = UpstreamSessions::default();
        let gh: Arc<str> = Arc::from("gh");
        ups.put(&a, &gh, UpstreamSession { id: Some(Arc::from("u1")), version: Arc::from("2025-06-18") });
        assert!(ups.get(&a, &gh).is_some() && ups.get(&b, &gh).is_none());
        assert_eq!(ups.take_all(&a).len(), 1);
        assert!(ups.get(&a, &gh).is_none());
    }
}
