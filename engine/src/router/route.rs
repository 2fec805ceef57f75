//! A compiled route: the tree the strategies walk, and the policies a [`crate::router::Plan`]
//! applies to it.

use std::time::Duration;

use super::breaker::BreakerPolicy;
use super::condition::Condition;
use super::retry::{FallbackPolicy, RetryPolicy, Timeouts};
use super::table::TargetId;

/// How one node chooses among its children (the compiled form of the YAML `strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strategy {
    Fallback,
    Weighted,
    Latency,
    LeastBusy,
    Usage,
    Cost,
    Conditional,
    Affinity,
}

impl Strategy {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Strategy::Fallback => "fallback",
            Strategy::Weighted => "weighted",
            Strategy::Latency => "latency",
            Strategy::LeastBusy => "least-busy",
            Strategy::Usage => "usage",
            Strategy::Cost => "cost",
            Strategy::Conditional => "conditional",
            Strategy::Affinity => "affinity",
        }
    }
}

/// A route or nested route: a strategy over children (for `fallback`, sorted by priority).
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) strategy: Strategy,
    pub(crate) children: Vec<Child>,
    /// `conditional` only: the child without `when`.
    pub(crate) default: Option<usize>,
}

/// One child of a node, with what the strategies need to know about it precomputed.
#[derive(Debug)]
pub(crate) struct Child {
    pub(crate) kind: ChildKind,
    /// For `weighted` (and `affinity` without a key): explicit, or derived from capacity.
    pub(crate) weight: u32,
    pub(crate) when: Option<Condition>,
    /// price.input + price.output; infinite when no price is declared (so it sorts last).
    pub(crate) cost: f64,
    pub(crate) rpm: Option<u64>,
    pub(crate) tpm: Option<u64>,
    /// Stable identity for rendezvous hashing (a hash of `provider/model`, or of the position).
    pub(crate) seed: u64,
}

#[derive(Debug)]
pub(crate) enum ChildKind {
    /// `slot`: the target's index among the distinct targets of its fallback group, the bit a
    /// plan sets when it tries this target.
    Target {
        id: TargetId,
        slot: u32,
    },
    Route(Node),
}

impl Child {
    /// Wraps a whole (non-fallback) root so that it can stand as the route's single group.
    pub(crate) fn group(node: Node) -> Child {
        Child {
            kind: ChildKind::Route(node),
            weight: 1,
            when: None,
            cost: f64::INFINITY,
            rpm: None,
            tpm: None,
            seed: 0,
        }
    }

    pub(crate) fn leaf(id: TargetId, slot: u32) -> Child {
        Child {
            kind: ChildKind::Target { id, slot },
            weight: 1,
            when: None,
            cost: f64::INFINITY,
            rpm: None,
            tpm: None,
            seed: 0,
        }
    }

    fn collect_targets(&self, out: &mut Vec<TargetId>) {
        match &self.kind {
            ChildKind::Target { id, .. } => {
                if !out.contains(id) {
                    out.push(*id);
                }
            }
            ChildKind::Route(node) => node.children.iter().for_each(|c| c.collect_targets(out)),
        }
    }
}

/// `latency` strategy settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyPolicy {
    /// Scores within this factor of the best count as equal (then in-flight decides).
    pub equal_within: f64,
    /// Targets with fewer samples are tried first, so that every target gets measured.
    pub min_samples: u32,
}

impl Default for LatencyPolicy {
    fn default() -> Self {
        LatencyPolicy { equal_within: 1.2, min_samples: 5 }
    }
}

/// Where an `affinity` route's key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AffinitySource {
    /// A request header (name lower-cased).
    Header(String),
    /// The body's `user` field.
    User,
}

/// When to send a second, hedging request (parsed and stored; the engine decides).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HedgeAfter {
    /// A percentile of the target's observed time to first token, e.g. 95.0 for `p95`.
    Percentile(f64),
    Fixed(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HedgePolicy {
    pub after: HedgeAfter,
}

/// Active probes of a route's targets (`health_check:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub interval: Duration,
    pub timeout: Duration,
    /// Under each provider's base path.
    pub path: String,
}

/// One model's compiled route.
#[derive(Debug)]
pub struct Route {
    pub retry: RetryPolicy,
    pub fallback: FallbackPolicy,
    pub timeouts: Timeouts,
    pub breaker: BreakerPolicy,
    pub hedge: Option<HedgePolicy>,
    pub latency: LatencyPolicy,
    pub health_check: Option<HealthCheck>,
    pub(crate) model: String,
    /// The fallback groups, in order: the root's children for a `fallback` root, else the root.
    pub(crate) groups: Vec<Child>,
    /// Distinct targets per group (the size of a plan's `tried` set in that group).
    pub(crate) group_slots: Vec<u32>,
    pub(crate) targets: Vec<TargetId>,
    pub(crate) affinity: Option<AffinitySource>,
    pub(crate) needs_params: bool,
    /// Whether some node hashes the affinity key / scores latency: lets a plan skip asking.
    pub(crate) uses_affinity: bool,
    pub(crate) uses_latency: bool,
}

impl Route {
    /// The model name this route serves.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Fallback groups: the root fallback's children, else 1.
    pub fn groups(&self) -> usize {
        self.groups.len()
    }

    /// Every target of this route, each once, in config order.
    pub fn targets(&self) -> &[TargetId] {
        &self.targets
    }

    /// The distinct targets of fallback group `g` (empty past the last group).
    pub fn group_targets(&self, g: usize) -> Vec<TargetId> {
        let mut out = Vec::new();
        if let Some(group) = self.groups.get(g) {
            group.collect_targets(&mut out);
        }
        out
    }

    /// Whether some condition reads `params.*`, i.e. the engine must parse the body first.
    pub fn needs_params(&self) -> bool {
        self.needs_params
    }

    pub fn affinity(&self) -> Option<&AffinitySource> {
        self.affinity.as_ref()
    }
}
