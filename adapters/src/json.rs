//! Shared JSON plumbing for the dialect modules: a reusable simd-json tape over a padded copy
//! of the input, an ordered raw-JSON editor for bodies whose members change but whose other
//! bytes must not, and the string escaping every writer needs.
//!
//! Private on purpose: dialect modules expose facts and bytes, never simd-json types, so the
//! parser can change without touching the engine.

pub(crate) mod escape;
pub(crate) mod raw;
pub(crate) mod tape;
