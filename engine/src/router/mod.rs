//! Routing: which upstream target a request goes to, and what happens when it fails.
//!
//! The router is pure: it reads no clock, draws no random number and does no I/O. The engine
//! passes `now` and a random `u64` into every decision, and tells the router what it knows about
//! the request ([`RequestFacts`]) and about the targets' health ([`HealthView`]). That keeps every
//! decision reproducible in a unit test and lets each shard run the router without locks.
//!
//! - [`spec`]: the YAML shape of `models.<name>.route`.
//! - [`compile()`]: spec → [`Route`], collecting every config error with its YAML path.
//! - [`condition`]: the `when:` conditions of `conditional` routes.
//! - [`pick`]: the strategies that choose among a route's children.
//! - [`plan`]: one request's way through a route (the retry loop's state and decisions).
//! - [`retry`]: retry/fallback policies, backoff, `retry-after` parsing, failure classification.
//! - [`breaker`]: the circuit breaker of one target.

pub mod breaker;
pub mod compile;
pub mod condition;
pub mod pick;
pub mod plan;
pub mod retry;
pub mod route;
pub mod spec;
pub mod table;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod testkit;

pub use breaker::{Admission, Breaker, BreakerPolicy, BreakerState, OpenReason, Outcome, Sla, Transition};
pub use compile::{compile, single};
pub use condition::{Condition, Field, FieldValue, RequestFacts, lookup_param};
pub use pick::{HealthView, TargetHealth};
pub use plan::{Next, Overrides, Pick, Plan};
pub use retry::{Failure, FailureClass, FallbackPolicy, RetryPolicy, Timeouts, classify, parse_retry_after};
pub use route::{AffinitySource, HealthCheck, HedgeAfter, HedgePolicy, LatencyPolicy, Route};
pub use spec::RouteSpec;
pub use table::{Price, TargetId, TargetSpec, TargetTable};
