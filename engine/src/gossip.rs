//! Gossip between shards: every `governance.gossip_interval` each shard sends what its counters
//! changed to every other shard through a bounded lock-free queue per shard (crossbeam's
//! `ArrayQueue`), and merges what the others sent. A round that finds an inbox full is not
//! lost: its counters stay dirty and go out, with their newer values, next round (merges are
//! idempotent, so the shards that did get it are not harmed by a resend).
//!
//! A shard also merges its inbox right before each admission, so what it decides on is at most
//! one interval old: a limit can be overshot by about (shards − 1) × interval × admission rate.

use std::sync::Arc;

use crossbeam_queue::ArrayQueue;
use policy::Governor;
use policy::counters::Delta;

/// News of a route target's health that one shard learned and the others should act on.
#[derive(Debug, Clone)]
pub struct HealthNews {
    /// The target's key (see [`crate::route_health::target_key`]).
    pub key: Arc<str>,
    pub event: HealthEvent,
}

#[derive(Debug, Clone, Copy)]
pub enum HealthEvent {
    /// Its breaker opened until then.
    Opened { until: std::time::Instant },
    /// Its moving averages as one shard sees them (time to first token and per output token,
    /// microseconds) after `samples` answers: shards with little traffic learn from busier ones.
    Latency { ttft_us: f64, tpot_us: f64, samples: u32 },
}

/// Health news between shards: one bounded lock-free inbox per shard. A shard whose breaker
/// opens tells the others at once, and every few answers it shares its latency averages; each
/// reads its inbox before routing a request. News that finds an inbox full is dropped: that
/// shard will learn by its own requests, as it would have without gossip.
pub struct HealthHub {
    inboxes: Box<[ArrayQueue<HealthNews>]>,
}

impl HealthHub {
    pub fn new(shards: usize, capacity: usize) -> HealthHub {
        HealthHub { inboxes: (0..shards).map(|_| ArrayQueue::new(capacity.max(1))).collect() }
    }

    pub fn shards(&self) -> usize {
        self.inboxes.len()
    }

    /// Sends `news` to every shard but `from`.
    pub fn broadcast(&self, from: usize, news: &HealthNews) {
        for (i, inbox) in self.inboxes.iter().enumerate() {
            if i != from {
                let _ = inbox.push(news.clone());
            }
        }
    }

    /// The next news waiting for `shard`.
    pub fn next(&self, shard: usize) -> Option<HealthNews> {
        self.inboxes.get(shard)?.pop()
    }
}

/// The inboxes of every shard of the process.
pub struct GossipHub {
    inboxes: Box<[ArrayQueue<Arc<Delta>>]>,
}

impl GossipHub {
    /// One inbox of `capacity` rounds per shard.
    pub fn new(shards: usize, capacity: usize) -> GossipHub {
        GossipHub { inboxes: (0..shards).map(|_| ArrayQueue::new(capacity.max(1))).collect() }
    }

    pub fn shards(&self) -> usize {
        self.inboxes.len()
    }

    /// Sends `delta` to every shard but `from`; says whether every inbox took it.
    pub fn broadcast(&self, from: usize, delta: &Arc<Delta>) -> bool {
        let mut all = true;
        for (i, inbox) in self.inboxes.iter().enumerate() {
            if i != from && inbox.push(delta.clone()).is_err() {
                all = false;
            }
        }
        all
    }

    /// Merges every round waiting in `shard`'s inbox.
    pub fn receive(&self, shard: usize, governor: &mut Governor) -> usize {
        let Some(inbox) = self.inboxes.get(shard) else { return 0 };
        let mut n = 0;
        while let Some(d) = inbox.pop() {
            governor.merge(&d);
            n += 1;
        }
        n
    }

    /// One round for `shard`: merge what arrived, send what changed (requeued if an inbox was
    /// full). Returns whether anything went out.
    pub fn round(&self, shard: usize, governor: &mut Governor) -> bool {
        self.receive(shard, governor);
        if self.inboxes.len() < 2 {
            return false;
        }
        let Some(delta) = governor.take_delta() else { return false };
        let delta = Arc::new(delta);
        if !self.broadcast(shard, &delta) {
            governor.requeue(&delta);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use policy::counters::{CounterKey, Measure};
    use policy::spec::GovernanceSpec;
    use policy::{AdmitRequest, Estimate, Metadata, Policy, Settings};

    fn policy() -> Policy {
        let spec: GovernanceSpec =
            serde_saphyr::from_str("rate_limits: [{id: r, limits: {requests_per_minute: 100}}]").unwrap();
        Policy::compile(
            &spec,
            policy::keys::KeyHasher::new(b"p"),
            policy::pricing::PriceTable::shipped(),
            Settings::default(),
        )
        .unwrap()
    }

    fn admit(p: &Policy, g: &mut Governor, now: u64) {
        let m = Metadata::new();
        let req = AdmitRequest {
            identity: p.anonymous(),
            model: "m",
            metadata: &m,
            estimate: Estimate::default(),
            price: None,
        };
        let adm = g.admit(p, &req, now).unwrap();
        g.settle(adm, Default::default(), now);
    }

    #[test]
    fn a_full_inbox_loses_nothing() {
        let p = policy();
        let key = CounterKey {
            owner: "r".into(),
            entity: "*".into(),
            measure: Measure::Requests,
            window_ms: 60_000,
            period: 0,
        };
        let hub = GossipHub::new(2, 1);
        let mut a = Governor::new(0, 2);
        let mut b = Governor::new(1, 2);
        let t = 1_800_000_000_000;
        // b's inbox is full: a's round cannot be delivered and is kept for the next.
        assert!(hub.broadcast(0, &Arc::new(Delta { origin: 0, round: 0, updates: Vec::new() })));
        for _ in 0..5 {
            admit(&p, &mut a, t);
        }
        assert!(hub.round(0, &mut a));
        hub.receive(1, &mut b);
        assert_eq!(b.total(&key, t), 0);
        assert!(hub.round(0, &mut a), "the undelivered counters go out again");
        hub.receive(1, &mut b);
        assert_eq!(b.total(&key, t), 5);
        // Both directions, then nothing left to send.
        admit(&p, &mut b, t);
        assert!(hub.round(1, &mut b));
        hub.receive(0, &mut a);
        assert_eq!(a.total(&key, t), 6);
        assert!(!hub.round(0, &mut a));
    }
}
