//! The small URL subset config needs: `http(s)://host[:port][/path]`, with optional userinfo for
//! proxies. Anything else is refused with a message, at load time.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub scheme: Scheme,
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// Path without a trailing slash (`/v1`), or empty.
    pub path: String,
    /// `user:password` if present.
    pub userinfo: Option<String>,
}

impl BaseUrl {
    pub fn parse(s: &str) -> Result<BaseUrl, String> {
        let (scheme, rest) = if let Some(r) = s.strip_prefix("https://") {
            (Scheme::Https, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (Scheme::Http, r)
        } else {
            return Err(format!("URL {s:?} must start with http:// or https://"));
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if path.contains(['?', '#']) {
            return Err(format!("URL {s:?} must not have a query or fragment"));
        }
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()), h),
            None => (None, authority),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let Some((h, after)) = v6.split_once(']') else {
                return Err(format!("URL {s:?} has an unterminated IPv6 literal"));
            };
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(format!("URL {s:?} has garbage after the IPv6 literal")),
            };
            (h, port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(format!("URL {s:?} has no valid host"));
        }
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| format!("URL {s:?} has an invalid port {p:?}"))?,
            None => scheme.default_port(),
        };
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("URL {s:?} has an invalid path"));
        }
        Ok(BaseUrl {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
            path: path.trim_end_matches('/').to_string(),
            userinfo,
        })
    }

    /// The `Host` header value: the port is omitted when it is the scheme's default.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == self.scheme.default_port() { host } else { format!("{host}:{}", self.port) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let u = BaseUrl::parse("https://api.openai.com/v1/").unwrap();
        assert_eq!((u.scheme, u.host.as_str(), u.port, u.path.as_str()), (Scheme::Https, "api.openai.com", 443, "/v1"));
        assert_eq!(u.host_header(), "api.openai.com");
        let u = BaseUrl::parse("http://127.0.0.1:8000").unwrap();
        assert_eq!((u.port, u.path.as_str(), u.host_header().as_str()), (8000, "", "127.0.0.1:8000"));
        let u = BaseUrl::parse("http://[::1]:9/x").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.host_header().as_str()), ("::1", 9, "[::1]:9"));
        let u = BaseUrl::parse("http://bob:pw@proxy:3128").unwrap();
        assert_eq!(u.userinfo.as_deref(), Some("bob:pw"));
    }

    #[test]
    fn refuses() {
        for bad in ["ftp://x", "https://", "https://x:99999", "http://x/a?b", "http://[::1", "x.com"] {
            assert!(BaseUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
