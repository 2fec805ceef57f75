//! Tool names on a virtual MCP server: `{server}__{tool}`, so two upstreams' tools of the same
//! name stay apart and a call finds its owner from the name alone. Server names may not hold
//! the separator (checked at config load), so the first `__` splits a name unambiguously.

/// Between the server's name and the tool's.
pub const SEPARATOR: &str = "__";

/// The name a virtual server lists `tool` of `server` under.
pub fn prefixed(server: &str, tool: &str) -> String {
    let mut s = String::with_capacity(server.len() + SEPARATOR.len() + tool.len());
    s.push_str(server);
    s.push_str(SEPARATOR);
    s.push_str(tool);
    s
}

/// `(server, tool)` of a prefixed name; `None` when it has no separator or an empty part.
pub fn split(name: &str) -> Option<(&str, &str)> {
    let (server, tool) = name.split_once(SEPARATOR)?;
    (!server.is_empty() && !tool.is_empty()).then_some((server, tool))
}

/// Why `name` cannot name an upstream MCP server, if it cannot.
pub fn invalid_server_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.contains(SEPARATOR) || name.starts_with('_') || name.ends_with('_') {
        // `a_` + `__` + `b` would read back as server `a`, tool `_b`.
        Some("holds `__` or starts or ends with `_`: `__` separates server and tool in a virtual server's tool names")
    } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        Some("may hold only letters, digits, `-` and `_`")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixed_names_split_back() {
        assert_eq!(prefixed("github", "create_issue"), "github__create_issue");
        assert_eq!(split("github__create_issue"), Some(("github", "create_issue")));
        // A tool's own double underscore stays in the tool's part.
        assert_eq!(split("fs__read__all"), Some(("fs", "read__all")));
        assert_eq!(split("plain"), None);
        assert_eq!(split("__x"), None);
        assert_eq!(split("x__"), None);
    }

    #[test]
    fn server_names_cannot_hold_the_separator() {
        assert!(invalid_server_name("git_hub").is_none());
        assert!(invalid_server_name("git__hub").is_some());
        assert!(invalid_server_name("a_").is_some() && invalid_server_name("_a").is_some());
        assert_eq!(split(&prefixed("a", "_b")), Some(("a", "_b")));
        assert!(invalid_server_name("").is_some());
        assert!(invalid_server_name("a/b").is_some());
    }
}
