//! What one shard tells the others about MCP client sessions. A client's next connection may
//! land on any shard, but a call in flight and the upstream sessions opened for it live on one:
//! a cancellation that lands elsewhere, or a `DELETE` ending the session, is passed on through
//! one bounded lock-free inbox per shard (crossbeam's `ArrayQueue`, as for counter gossip),
//! read every gossip interval. A note that finds an inbox full is dropped: a cancellation is
//! advisory in MCP, and an upstream session left open expires upstream, as it did before.
//!
//! A client's `GET` stream lives on one shard too, while its upstream sessions may be on any:
//! the stream's shard says so (`Listening`), and every other shard with an upstream session for
//! that client opens the server's `GET` stream there and forwards what comes (`Deliver`) to the
//! listening shard ([`super::server_messages`]).

use std::rc::Rc;

use crossbeam_queue::ArrayQueue;
use serde_json::Value;

use super::session::SessionId;
use crate::shard::Shard;

/// News of one client session.
#[derive(Debug, Clone)]
pub enum Note {
    /// `notifications/cancelled` for a request that is not in flight on the shard it reached.
    Cancel { session: SessionId, params: Value },
    /// The session was ended (`DELETE`): each shard closes its upstream sessions for it.
    Ended { session: SessionId },
    /// The session's `GET` stream `number` is open on `shard`: forward what servers send
    /// outside calls.
    Listening { session: SessionId, shard: usize, number: u64, opened_ms: u64 },
    /// The session's `GET` stream `number` on `shard` ended: stop forwarding to it.
    NotListening { session: SessionId, shard: usize, number: u64 },
    /// A message a server sent outside calls, in the sender's upstream session with it, for
    /// `GET` stream `number` of client session `nonce`.
    Deliver {
        nonce: [u8; 16],
        number: u64,
        server: std::sync::Arc<str>,
        upstream: Option<super::session::UpstreamSession>,
        message: adapters::mcp::jsonrpc::Message,
    },
}

/// Two inboxes per shard: one for what clients can send many of (cancellations, forwarded
/// messages), one for session news (ends, streams opening and closing), so that a flood of the
/// first never crowds out the second.
pub struct Hub {
    control: Box<[ArrayQueue<Note>]>,
    data: Box<[ArrayQueue<Note>]>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("shards", &self.control.len()).finish_non_exhaustive()
    }
}

impl Hub {
    pub fn new(shards: usize, capacity: usize) -> Hub {
        let inboxes = || (0..shards).map(|_| ArrayQueue::new(capacity.max(1))).collect();
        Hub { control: inboxes(), data: inboxes() }
    }

    fn inboxes_for(&self, note: &Note) -> &[ArrayQueue<Note>] {
        match note {
            Note::Cancel { .. } | Note::Deliver { .. } => &self.data,
            Note::Ended { .. } | Note::Listening { .. } | Note::NotListening { .. } => &self.control,
        }
    }

    /// Sends `note` to every shard but `from`.
    pub fn broadcast(&self, from: usize, note: &Note) {
        for (i, inbox) in self.inboxes_for(note).iter().enumerate() {
            if i != from && inbox.push(note.clone()).is_err() {
                tracing::debug!(shard = i, "an MCP note to another shard was dropped (its inbox is full)");
            }
        }
    }

    /// Sends `note` to `shard` alone; `false` when its inbox is full.
    pub fn send_to(&self, shard: usize, note: Note) -> bool {
        self.inboxes_for(&note).get(shard).is_some_and(|inbox| inbox.push(note).is_ok())
    }

    /// The next note waiting for `shard`, session news first.
    pub fn next(&self, shard: usize) -> Option<Note> {
        self.control.get(shard)?.pop().or_else(|| self.data.get(shard)?.pop())
    }
}

/// Acts on the notes waiting for this shard (from its gossip loop); each runs as a task of its
/// own, since acting means talking to upstream servers.
pub fn receive(shard: &Rc<Shard>) {
    while let Some(note) = shard.process.mcp_hub.next(shard.id) {
        crate::rt::spawn(act(shard.clone(), note));
    }
}

async fn act(shard: Rc<Shard>, note: Note) {
    let cfg = shard.config();
    match note {
        Note::Cancel { session, params } => {
            let in_flight_here =
                params.get("requestId").is_some_and(|id| shard.mcp_sessions.owner(&session, id).is_some());
            if in_flight_here {
                shard.metrics.mcp_cancels_from_elsewhere.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                super::endpoint::cancel(&shard, &cfg, &session, &params, false).await;
            }
        }
        Note::Ended { session } => {
            shard.metrics.mcp_ends_from_elsewhere.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            super::endpoint::close_upstream_sessions(&shard, &cfg, &session).await;
        }
        Note::Listening { session, shard: at, number, opened_ms } => {
            super::server_messages::listening_elsewhere(&shard, &cfg, &session, (at, number), opened_ms);
        }
        Note::NotListening { session, shard: at, number } => {
            shard.mcp_sessions.not_listening_elsewhere(&session, at, number);
        }
        Note::Deliver { nonce, number, server, upstream, message } => {
            shard.mcp_sessions.deliver(nonce, number, super::session::Delivered { server, upstream, message });
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn notes_reach_every_other_shard_once_and_a_full_inbox_drops_them() {
        let sessions = super::super::session::Sessions::new().unwrap();
        let (session, _) = sessions.open("v", "anonymous", 0, Default::default()).unwrap();
        let hub = Hub::new(3, 1);
        hub.broadcast(1, &Note::Ended { session: session.clone() });
        assert!(hub.next(1).is_none(), "not to itself");
        assert!(matches!(hub.next(0), Some(Note::Ended { .. })) && hub.next(0).is_none());
        assert!(matches!(hub.next(2), Some(Note::Ended { .. })));
        hub.broadcast(1, &Note::Ended { session: session.clone() });
        hub.broadcast(1, &Note::Ended { session: session.clone() });
        assert!(hub.next(0).is_some() && hub.next(0).is_none(), "one slot: the second was dropped");
        assert!(hub.next(7).is_none(), "no such shard");
        // A flood of cancellations does not crowd out session news, which is read first.
        let cancel = Note::Cancel { session: session.clone(), params: Value::Null };
        hub.broadcast(1, &cancel);
        hub.broadcast(1, &cancel);
        hub.broadcast(1, &Note::Ended { session });
        assert!(matches!(hub.next(0), Some(Note::Ended { .. })));
        assert!(matches!(hub.next(0), Some(Note::Cancel { .. })) && hub.next(0).is_none());
    }
}
