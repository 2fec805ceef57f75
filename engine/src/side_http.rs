//! The HTTP client of the gateway's side threads (provider token minting, JWKS and OIDC
//! discovery): blocking `ureq`, off the request path, through the configured egress proxy
//! like every upstream connection. Environment proxy variables are not read, as on the data
//! path: the config says where traffic goes.

use std::time::Duration;

/// How a side thread's requests behave.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub timeout: Duration,
    /// Whether 4xx/5xx answers are errors (`false` when their bodies carry the reason).
    pub status_as_error: bool,
    pub max_redirects: u32,
}

/// An agent made on first use, and made again when the egress proxy changes (a reload).
pub struct SideAgent {
    settings: Settings,
    made: Option<(Option<String>, ureq::Agent)>,
}

impl SideAgent {
    pub fn new(settings: Settings) -> SideAgent {
        SideAgent { settings, made: None }
    }

    /// The agent that goes through `proxy` (an `http://[user:pass@]host:port` URL).
    pub fn get(&mut self, proxy: Option<&str>) -> Result<&ureq::Agent, String> {
        if self.made.as_ref().is_none_or(|(p, _)| p.as_deref() != proxy) {
            let proxy_cfg = match proxy {
                Some(url) => Some(ureq::Proxy::new(url).map_err(|e| format!("egress proxy: {e}"))?),
                None => None,
            };
            let agent = ureq::Agent::config_builder()
                .timeout_global(Some(self.settings.timeout))
                .http_status_as_error(self.settings.status_as_error)
                .max_redirects(self.settings.max_redirects)
                .proxy(proxy_cfg)
                .build()
                .into();
            self.made = Some((proxy.map(str::to_owned), agent));
        }
        self.made.as_ref().map(|(_, a)| a).ok_or_else(|| "no HTTP agent".to_string())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_agent_follows_the_proxy_setting() {
        let mut a =
            SideAgent::new(Settings { timeout: Duration::from_secs(1), status_as_error: false, max_redirects: 0 });
        let first: *const ureq::Agent = a.get(None).unwrap();
        let again: *const ureq::Agent = a.get(None).unwrap();
        assert_eq!(first, again, "kept while the setting holds");
        a.get(Some("http://user:pw@127.0.0.1:3128")).unwrap();
        assert_eq!(a.made.as_ref().unwrap().0.as_deref(), Some("http://user:pw@127.0.0.1:3128"));
        assert!(a.get(Some("not a url at all ::")).is_err());
    }
}
