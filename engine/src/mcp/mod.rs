//! The MCP gateway: virtual MCP servers at `/mcp/{name}` that draw tools from upstream MCP
//! servers, with per-tool access rules, guardrails on tool arguments and results, and
//! sessions that any shard can serve.
//!
//! - [`spec`]: the `mcp:` config section; [`compiled`]: its runtime form;
//! - [`access`]: who may use which tool;
//! - [`session`]: client session ids and the per-shard upstream sessions;
//! - [`upstream`]: the gateway as a client of upstream servers (streamable HTTP);
//! - [`stdio`]: upstream servers that are local processes;
//! - [`legacy_sse`]: upstream servers on the 2024-11-05 HTTP+SSE transport;
//! - [`user_oauth`]: per-user OAuth (authorization code with PKCE) toward upstream servers;
//! - [`endpoint`]: the virtual servers' HTTP endpoint;
//! - [`hub`]: what one shard tells the others of a client session (cancellations, ends);
//! - [`server_messages`]: what servers send of their own accord (requests mid-call, the `GET`
//!   stream), relayed to clients.

pub mod access;
pub mod compiled;
pub mod endpoint;
pub mod hub;
pub mod legacy_sse;
pub mod server_messages;
pub mod session;
pub mod spec;
pub mod stdio;
pub mod upstream;
pub mod user_oauth;

pub use compiled::McpConfig;
