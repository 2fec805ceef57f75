//! The OpenAI dialect, which is also shardgate's canonical schema: chat completions and
//! embeddings as OpenAI documents them.
//!
//! Because downstream requests already speak this dialect, the hot path does not translate
//! them: it reads a few facts ([`request`]), optionally swaps the model name, forwards the body
//! untouched, and reads token counts on the way back ([`usage`]).

pub mod compat;
pub mod embeddings;
pub mod request;
pub mod usage;
