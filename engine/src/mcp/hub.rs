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
    /// The session's `GET` stream is open on `shard`: forward what servers send outside calls.
    Listening { session: SessionId, shard: usize },
    /// The session's `GET` stream on `shard` ended: stop forwarding.
    NotListening { session: SessionId, shard: usize },
    /// A message a server sent outside calls, in the sender's upstream session with it.
    Deliver {
        nonce: [u8; 16],
        server: std::sync::Arc<str>,
        upstream: Option<super::session::UpstreamSession>,
        message: adapters::mcp::jsonrpc::Message,
    },
}

/// One inbox per shard.
pub struct Hub {
    inboxes: Box<[ArrayQueue<Note>]>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("shards", &self.inboxes.len()).finish_non_exhaustive()
    }
}

impl Hub {
    pub fn new(shards: usize, capacity: usize) -> Hub {
        Hub { inboxes: (0..shards).map(|_| ArrayQueue::new(capacity.max(1))).collect() }
    }

    /// Sends `note` to every shard but `from`.
    pub fn broadcast(&self, from: usize, note: &Note) {
        for (i, inbox) in self.inboxes.iter().enumerate() {
            if i != from && inbox.push(note.clone()).is_err() {
                tracing::debug!(shard = i, "an MCP note to another shard was dropped (its inbox is full)");
            }
        }
    }

    /// Sends `note` to `shard` alone; `false` when its inbox is full.
    pub fn send_to(&self, shard: usize, note: Note) -> bool {
        self.inboxes.get(shard).is_some_and(|inbox| inbox.push(note).is_ok())
    }

    /// The next note waiting for `shard`.
    pub fn next(&self, shard: usize) -> Option<Note> {
        self.inboxes.get(shard)?.pop()
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
        Note::Listening { session, shard: at } => {
            super::server_messages::listening_elsewhere(&shard, &cfg, session, at)
        }
        Note::NotListening { session, shard: at } => shard.mcp_sessions.not_listening_elsewhere(&session, at),
        Note::Deliver { nonce, server, upstream, message } => {
            shard.mcp_sessions.deliver(nonce, super::session::Delivered { server, upstream, message });
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
        hub.broadcast(1, &Note::Ended { session });
        assert!(hub.next(0).is_some() && hub.next(0).is_none(), "one slot: the second was dropped");
        assert!(hub.next(7).is_none(), "no such shard");
    }
}
