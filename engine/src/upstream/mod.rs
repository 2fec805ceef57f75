//! The upstream side: name resolution (`dns`), opening connections through an optional proxy
//! and TLS (`connect`), per-shard pools (`pool`), and one request/response exchange (`exchange`).

pub mod connect;
pub mod dns;
pub mod exchange;
pub mod pool;

pub use dns::DnsTable;
pub use exchange::{RequestBytes, SendError, Shared, UpstreamResponse, send};
pub use pool::Pool;
