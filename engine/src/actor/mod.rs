//! Actors: a task's worth of state on one shard with a bounded mailbox and a supervisor.
//!
//! A shard runs on one thread, so an actor here is not a thread or a channel reader: it is state
//! owned by the shard (`Rc`, `Cell`), a [`mailbox::Mailbox`] that bounds how many requests it
//! serves and how many wait, and a supervisor that catches a panic in the work it runs, restarts
//! the actor's state with backoff and fails what waited. Upstream targets are actors
//! ([`target`]); costly guardrails will be too.

pub mod mailbox;
pub mod target;

pub use target::{ActorLimits, Admitted, Refusal, RestartPolicy, Served, TargetActor, TargetMetrics, Targets};
