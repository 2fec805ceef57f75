//! What to load: a URL resolved once, with TLS settings when it is HTTPS.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;

use engine::config::url::{BaseUrl, Scheme};
use rustls::pki_types::ServerName;

/// A parsed and resolved target.
#[derive(Debug, Clone)]
pub struct Target {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// Path and query of the URL (`/` when empty).
    pub path: String,
    pub host_header: String,
    pub addrs: Vec<SocketAddr>,
    pub tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

impl Target {
    /// Parses `http(s)://host[:port][/path][?query]`, resolves the host, and builds the TLS
    /// configuration (Mozilla roots plus `ca`, if given).
    pub fn parse(url: &str, ca: Option<&Path>) -> Result<Target, String> {
        let after_scheme = url.find("://").map(|i| i + 3).ok_or_else(|| format!("{url:?} is not an http(s) URL"))?;
        let path_at = url[after_scheme..].find(['/', '?']).map_or(url.len(), |i| after_scheme + i);
        let base = BaseUrl::parse(&url[..path_at])?;
        let mut path = url[path_at..].to_string();
        if path.is_empty() || path.starts_with('?') {
            path.insert(0, '/');
        }
        let addrs: Vec<SocketAddr> = (base.host.as_str(), base.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", base.host))?
            .collect();
        if addrs.is_empty() {
            return Err(format!("{} resolves to no address", base.host));
        }
        let tls = match base.scheme {
            Scheme::Http => None,
            Scheme::Https => {
                let cfg = engine::tls::client_config(ca).map_err(|e| e.to_string())?;
                let name =
                    ServerName::try_from(base.host.clone()).map_err(|e| format!("server name {}: {e}", base.host))?;
                Some((cfg, name))
            }
        };
        Ok(Target {
            scheme: base.scheme,
            host_header: base.host_header(),
            host: base.host,
            port: base.port,
            path,
            addrs,
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_and_queries() {
        let t = Target::parse("http://127.0.0.1:8080/v1/chat/completions?x=1", None).unwrap();
        assert_eq!(
            (t.port, t.path.as_str(), t.host_header.as_str()),
            (8080, "/v1/chat/completions?x=1", "127.0.0.1:8080")
        );
        assert_eq!(Target::parse("http://127.0.0.1:9", None).unwrap().path, "/");
        assert_eq!(Target::parse("http://127.0.0.1:9?q", None).unwrap().path, "/?q");
        assert!(Target::parse("ftp://x", None).is_err());
        assert!(Target::parse("127.0.0.1:80", None).is_err());
    }
}
