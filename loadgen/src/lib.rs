//! shardgate-loadgen: an HTTP load generator for LLM traffic, trusted over wrk2, oha and k6
//! because it measures what they do not: open loop without coordinated omission, closed loop,
//! SLO search, and for event streams time to first byte, time to first token, inter-token
//! latency and tokens per second, with usage tokens read from the answers.
//!
//! It is thread-per-core like the gateway (monoio, one runtime per worker) and reuses the
//! engine's runtime seam, HTTP/1.1 codec, TLS and connection pool: one codec to trust, checked
//! against wrk and oha by `bench-harness/scripts/validate-loadgen.sh`. It knows nothing of the
//! gateway; it loads any HTTP endpoint.

pub mod exchange;
pub mod mix;
pub mod recorder;
pub mod report;
pub mod run;
pub mod search;
mod sys;
pub mod target;
pub mod ticker;

pub use mix::{Mix, RequestSpec};
pub use report::Report;
pub use run::{Mode, Plan, run};
pub use search::{Search, SearchReport, search};
pub use target::Target;
