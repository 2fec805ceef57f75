//! shardgate's governance, as pure code: who is calling (keys and identities), what they may do
//! (RBAC), how much (rate limits and budgets), what it costs (pricing), and how the shards of one
//! process agree on the counts (gossip merge rules). No I/O and no runtime: the engine feeds it
//! values and acts on what it returns.
//!
//! The path of one request: [`Policy::authenticate`] → [`Policy::check_model`] →
//! [`Governor::admit`] (reserve) → the provider call → [`Governor::settle`] (or
//! [`Governor::release`] if the call failed).

pub mod admission;
pub mod clock;
pub mod compiled;
pub mod counters;
pub mod glob;
pub mod guardrails;
pub mod identity;
pub mod jwt;
pub mod keys;
pub mod pricing;
pub mod rules;
pub mod spec;

pub use admission::{Admission, AdmitRequest, Alert, Estimate, Governor, RateHeaders, Refusal, RefusalKind, Settled};
pub use compiled::{AuthError, Denied, Policy, RecordedCaller, Settings};
pub use identity::Identity;
pub use jwt::{IssuerSpec, IssuerVerifier, Issuers, Jwks, JwtClaims, JwtError};
pub use rules::Metadata;

/// A policy that does not compile: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct PolicyError {
    /// Where, as a path into the config (`keys[3].team`, `rate_limits[0].per`).
    pub field: String,
    pub message: String,
}

impl PolicyError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> PolicyError {
        PolicyError { field: field.into(), message: message.into() }
    }
}
