//! HTTP/1.1 on both sides of the gateway, on httparse: our own codec, because an LLM gateway
//! needs exact control of buffer ownership, SSE flushing and framing strictness.

pub mod chunked;
pub mod head;
pub mod response;
pub mod server;
pub mod upstream;

pub use head::RequestHead;
pub use response::{BodyStream, DownstreamIo, Responder};
pub use server::{Limits, Request, Service, send_error, serve_connection};
