//! shardgate's engine: shards and their runtimes, HTTP/1.1 both ways, TLS, upstream pools,
//! config loading and reload, API handlers. The `shardgate` binary is a thin layer over
//! [`gateway::Gateway`] and [`cli`].

pub mod actor;
pub mod alerts;
pub mod api;
pub mod cli;
pub mod config;
pub mod error;
pub mod gateway;
pub mod gossip;
pub mod http;
pub mod jwks;
pub mod listener;
pub mod mcp;
pub mod metrics;
pub mod minted;
pub mod mock;
pub mod request_log;
pub mod route_health;
pub mod router;
pub mod rt;
pub mod shard;
pub mod side_http;
pub mod store;
pub mod tls;
pub mod upstream;

pub use gateway::{Gateway, StartError, StartOptions};
