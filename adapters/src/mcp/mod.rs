//! The Model Context Protocol as the gateway speaks it (streamable HTTP, JSON-RPC 2.0): message
//! shapes, protocol-version negotiation, the prefixed tool names of virtual servers, and the
//! texts of tool arguments and results that guardrails read and rewrite. Pure code: the engine
//! owns the transport (`engine/src/mcp`).

pub mod jsonrpc;
pub mod names;
pub mod oauth;
pub mod texts;

/// Protocol revisions the gateway speaks, newest first. Streamable HTTP exists since
/// 2025-03-26, so older revisions (HTTP+SSE only) are not offered to clients.
pub const PROTOCOL_VERSIONS: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];

/// The newest revision the gateway speaks to upstream servers: 2025-11-25 lets a server close
/// an SSE stream mid-call for the client to resume it with `GET` and `Last-Event-ID`, which the
/// gateway does not do yet; a server that speaks 2025-11-25 also speaks 2025-06-18.
pub const UPSTREAM_MAX_VERSION: &str = "2025-06-18";

/// The revision to ask an upstream for when the client speaks `client`: the same, capped at
/// [`UPSTREAM_MAX_VERSION`].
pub fn upstream_version(client: &str) -> &'static str {
    let newest_first = PROTOCOL_VERSIONS.iter().position(|v| *v == UPSTREAM_MAX_VERSION).unwrap_or(0);
    PROTOCOL_VERSIONS.iter().skip(newest_first).find(|v| **v <= client).copied().unwrap_or(UPSTREAM_MAX_VERSION)
}

/// The revision assumed when a client sends no `MCP-Protocol-Version` header after
/// initialization (the spec's rule for backwards compatibility).
pub const ASSUMED_VERSION: &str = "2025-03-26";

/// The revision to answer a client's `initialize` with: the one it asked for when the gateway
/// speaks it, else the newest (the client then decides whether it can go on).
pub fn negotiate(requested: Option<&str>) -> &'static str {
    requested.and_then(|r| PROTOCOL_VERSIONS.iter().find(|v| **v == r)).copied().unwrap_or(PROTOCOL_VERSIONS[0])
}

/// Whether a revision named in an `MCP-Protocol-Version` header is one the gateway speaks.
pub fn is_supported(version: &str) -> bool {
    PROTOCOL_VERSIONS.contains(&version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_echoes_known_revisions_and_offers_the_newest_otherwise() {
        assert_eq!(negotiate(Some("2025-06-18")), "2025-06-18");
        assert_eq!(negotiate(Some("2025-03-26")), "2025-03-26");
        assert_eq!(negotiate(Some("2024-11-05")), PROTOCOL_VERSIONS[0]);
        assert_eq!(negotiate(None), PROTOCOL_VERSIONS[0]);
        assert!(is_supported("2025-11-25") && !is_supported("2099-01-01"));
        assert_eq!(upstream_version("2025-11-25"), "2025-06-18");
        assert_eq!(upstream_version("2025-06-18"), "2025-06-18");
        assert_eq!(upstream_version("2025-03-26"), "2025-03-26");
    }
}
