//! Adapters translate between shardgate's canonical schema (OpenAI chat completions and
//! embeddings) and provider dialects.
//!
//! Everything here is a pure function or a small reusable scanner: bytes in, values or bytes
//! out, no I/O, no runtime, no clock. The engine owns transport and calls into this crate on
//! its hot path, so the functions are written to read lazily and to reuse buffers.
//!
//! This first slice holds the OpenAI dialect, which is also the canonical one:
//! - [`openai::request`]: a lazy scan of a request body for `model`, `stream`,
//!   `stream_options.include_usage` and `max_tokens`, and a byte-preserving model rewrite;
//! - [`openai::usage`]: token usage from a response body or a stream chunk;
//! - [`sse`]: the incremental Server-Sent Events scanner that every streaming dialect uses.

pub mod anthropic;
pub mod azure;
pub mod bedrock;
pub mod canonical;
pub mod gemini;
mod json;
pub mod mcp;
pub mod openai;
pub mod sse;
