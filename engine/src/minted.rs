//! Access tokens the gateway mints for providers, by a plain thread, never on the request path:
//! Vertex AI's from a service-account key (the JWT bearer grant) and Azure OpenAI's from an
//! Entra ID application (the client credentials grant) or the host's managed identity (asked
//! of the platform's endpoint, never through the egress proxy). Shards read the current
//! `Authorization` value through `arc-swap`; the thread refreshes a token five minutes (or a
//! fifth of its life, if shorter) before it expires and retries a failed mint with backoff,
//! keeping a token that still works.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use adapters::azure::{EntraApp, ManagedIdentity};
use adapters::gemini::vertex_auth::{
    AccessToken, CLOUD_PLATFORM_SCOPE, TOKEN_REQUEST_CONTENT_TYPE, VertexAuthError, parse_token_response,
};
use arc_swap::ArcSwap;

use crate::config::{Provider, Snapshot, VertexTarget};

/// A token is refreshed this long before it expires (less for short-lived tokens).
const REFRESH_MARGIN_SECS: u64 = 300;
/// A failed mint is retried after this, doubling up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// Largest token response read.
const MAX_RESPONSE: u64 = 64 * 1024;

/// What a shard can send for one provider.
#[derive(Clone)]
enum Credential {
    /// `Bearer ...`, valid for a while yet.
    Ready(Arc<str>),
    /// No token: why (the last mint's error), or that none was tried yet.
    Missing(Arc<str>),
}

/// The tokens in force, per provider name.
#[derive(Default)]
pub struct ProviderTokens {
    current: ArcSwap<HashMap<Arc<str>, Credential>>,
}

impl ProviderTokens {
    /// The `Authorization` value for `provider`, or why there is none.
    pub fn authorization(&self, provider: &str) -> Result<Arc<str>, Arc<str>> {
        match self.current.load().get(provider) {
            Some(Credential::Ready(v)) => Ok(v.clone()),
            Some(Credential::Missing(why)) => Err(why.clone()),
            None => Err(Arc::from("no access token was minted yet")),
        }
    }
}

/// Whom a provider's tokens come from.
#[derive(Clone)]
enum Issuer {
    Google(Arc<VertexTarget>),
    Entra(Arc<EntraApp>),
    Managed(Arc<ManagedIdentity>),
    /// An upstream MCP server's OAuth application (client credentials).
    OAuth2(Arc<adapters::mcp::oauth::ClientCredentials>),
}

impl Issuer {
    fn of(p: &Provider) -> Option<Issuer> {
        match (&p.vertex, &p.entra, &p.managed_identity) {
            (Some(v), ..) => Some(Issuer::Google(v.clone())),
            (None, Some(e), _) => Some(Issuer::Entra(e.clone())),
            (None, None, Some(m)) => Some(Issuer::Managed(m.clone())),
            (None, None, None) => None,
        }
    }

    /// The same snapshot's issuer (nothing to do).
    fn is(&self, other: &Issuer) -> bool {
        match (self, other) {
            (Issuer::Google(a), Issuer::Google(b)) => Arc::ptr_eq(a, b),
            (Issuer::Entra(a), Issuer::Entra(b)) => Arc::ptr_eq(a, b),
            (Issuer::Managed(a), Issuer::Managed(b)) => Arc::ptr_eq(a, b),
            (Issuer::OAuth2(a), Issuer::OAuth2(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// The same credential (a reload that kept it keeps its token).
    fn same_credential(&self, other: &Issuer) -> bool {
        match (self, other) {
            (Issuer::Google(a), Issuer::Google(b)) => {
                a.account.client_email() == b.account.client_email()
                    && a.account.private_key_id() == b.account.private_key_id()
            }
            (Issuer::Entra(a), Issuer::Entra(b)) => a == b,
            (Issuer::Managed(a), Issuer::Managed(b)) => a == b,
            (Issuer::OAuth2(a), Issuer::OAuth2(b)) => a == b,
            _ => false,
        }
    }

    /// Where the credential comes from, for logs and errors (never the secret).
    fn describe(&self) -> String {
        match self {
            Issuer::Google(v) => format!("the service-account key {}", v.credentials_file),
            Issuer::Entra(e) => match &e.credential {
                adapters::azure::EntraCredential::Secret(_) => {
                    format!("Entra ID application {} in tenant {}", e.client_id, e.tenant_id)
                }
                adapters::azure::EntraCredential::FederatedTokenFile(path) => format!(
                    "Entra ID application {} in tenant {} (federated token file {path})",
                    e.client_id, e.tenant_id
                ),
            },
            Issuer::Managed(m) => match &m.client_id {
                Some(id) => format!("the managed identity {id} at {}", m.endpoint),
                None => format!("the system-assigned managed identity at {}", m.endpoint),
            },
            Issuer::OAuth2(o) => format!("OAuth client {} at {}", o.client_id, o.token_url),
        }
    }

    /// The token request: a form posted to the token endpoint, or (a managed identity) a GET
    /// of the platform's endpoint.
    fn request(&self, now: u64) -> Result<TokenCall, String> {
        match self {
            Issuer::Google(v) => {
                let body = v.account.token_request_body(CLOUD_PLATFORM_SCOPE, now).map_err(|e| e.to_string())?;
                Ok(TokenCall::Form(v.account.token_uri().to_string(), body))
            }
            Issuer::Managed(m) => {
                let (url, headers) = m.token_request();
                Ok(TokenCall::Get(url, headers))
            }
            Issuer::OAuth2(o) => Ok(TokenCall::Form(o.token_url.clone(), o.request_body())),
            Issuer::Entra(e) => {
                // A federated token is rotated by the platform under us: read it each time.
                let assertion = match &e.credential {
                    adapters::azure::EntraCredential::FederatedTokenFile(path) => Some(
                        std::fs::read_to_string(path)
                            .map_err(|err| format!("reading the federated token file {path}: {err}"))?,
                    ),
                    adapters::azure::EntraCredential::Secret(_) => None,
                };
                Ok(TokenCall::Form(e.token_url(), e.token_request_body(assertion.as_deref())?))
            }
        }
    }
}

/// How a token is asked for.
enum TokenCall {
    /// POST this form to this URL (through the egress proxy, like any call out).
    Form(String, String),
    /// GET this URL with these headers: the platform's own endpoint, on the host or
    /// link-local, so never through the proxy.
    Get(String, Vec<(&'static str, String)>),
}

/// One provider's credential and its token's life.
struct Account {
    issuer: Issuer,
    /// When the token in hand was minted (unix seconds).
    minted_at: u64,
    token: Option<AccessToken>,
    next_try: Instant,
    backoff: Duration,
}

impl Account {
    /// Takes a token just minted. One the issuer handed back unchanged (a managed identity's
    /// platform caches tokens) keeps its first mint time, so its refresh margin does not shrink
    /// with each ask, and is asked for again only after a growing backoff, not on every pass.
    fn minted(&mut self, t: AccessToken, now: u64, at: Instant) {
        if self.token.as_ref().is_some_and(|held| held.token == t.token) {
            self.next_try = at + self.backoff;
            self.backoff = (self.backoff * 2).min(RETRY_MAX);
            self.token = Some(t);
            return;
        }
        self.token = Some(t);
        self.minted_at = now;
        self.backoff = RETRY_FIRST;
    }

    /// How long before expiry the token is refreshed: five minutes, or a fifth of its life
    /// when that is shorter (at least a second), so a short-lived token is not re-minted on
    /// every pass.
    fn margin(&self) -> u64 {
        let life = self.token.as_ref().map_or(0, |t| t.expires_at_unix.saturating_sub(self.minted_at));
        (life / 5).clamp(1, REFRESH_MARGIN_SECS)
    }
}

/// The minting thread's state.
#[derive(Default)]
pub struct Minter {
    /// Made on the first mint: a gateway without Vertex providers never pays for an HTTP client.
    agent: Option<crate::side_http::SideAgent>,
    accounts: HashMap<Arc<str>, Account>,
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Minter {
    /// One pass: follow the config's Vertex providers (a changed key starts over), then mint
    /// what is due. Called every few hundred milliseconds.
    pub fn tick(&mut self, cfg: &Snapshot, tokens: &ProviderTokens) {
        // Providers by name; upstream MCP servers under their actor's name (`mcp:{name}`).
        let mcp = cfg.mcp.servers.iter().filter_map(|s| Some((s.actor_name.clone(), Issuer::OAuth2(s.oauth.clone()?))));
        let wanted: Vec<(Arc<str>, Issuer)> =
            cfg.providers.iter().filter_map(|p| Some((p.name.clone(), Issuer::of(p)?))).chain(mcp).collect();
        let changed = wanted.len() != self.accounts.len()
            || wanted.iter().any(|(n, i)| self.accounts.get(n).is_none_or(|a| !a.issuer.is(i)));
        if changed {
            self.accounts.retain(|n, _| wanted.iter().any(|(w, _)| w == n));
            for (name, issuer) in &wanted {
                if self.accounts.get(name).is_some_and(|a| a.issuer.is(issuer)) {
                    continue;
                }
                let kept = self.accounts.get_mut(name).filter(|a| a.issuer.same_credential(issuer));
                let (token, minted_at) = kept.map_or((None, 0), |a| (a.token.take(), a.minted_at));
                let account = Account {
                    issuer: issuer.clone(),
                    minted_at,
                    token,
                    next_try: Instant::now(),
                    backoff: RETRY_FIRST,
                };
                self.accounts.insert(name.clone(), account);
            }
        }
        if self.accounts.is_empty() {
            if changed {
                tokens.current.store(Arc::default());
            }
            return;
        }
        let now = now_unix();
        let due: Vec<Arc<str>> = self
            .accounts
            .iter()
            .filter(|(_, a)| {
                Instant::now() >= a.next_try && a.token.as_ref().is_none_or(|t| t.refresh_due(now, a.margin()))
            })
            .map(|(n, _)| n.clone())
            .collect();
        if due.is_empty() && !changed {
            return;
        }
        let mut published: HashMap<Arc<str>, Credential> = (**tokens.current.load()).clone();
        published.retain(|n, _| self.accounts.contains_key(n));
        for name in due {
            let Some(issuer) = self.accounts.get(&name).map(|a| a.issuer.clone()) else { continue };
            let minted = self.mint(&issuer, now, cfg.egress_proxy.as_deref());
            let Some(a) = self.accounts.get_mut(&name) else { continue };
            match minted {
                Ok(t) => {
                    tracing::info!(provider = %name, expires_in_s = t.expires_at_unix.saturating_sub(now), "provider access token minted");
                    a.minted(t, now, Instant::now());
                }
                Err(e) => {
                    a.next_try = Instant::now() + a.backoff;
                    a.backoff = (a.backoff * 2).min(RETRY_MAX);
                    tracing::warn!(provider = %name, from = %issuer.describe(), error = %e, retry_in = ?a.backoff, "cannot mint a provider access token");
                    // A token that still works is kept; only an expired one is withdrawn.
                    if a.token.as_ref().is_some_and(|t| t.refresh_due(now, 0)) {
                        a.token = None;
                    }
                    if a.token.is_none() {
                        let why = format!("minting an access token from {} failed: {e}", issuer.describe());
                        published.insert(name.clone(), Credential::Missing(Arc::from(why)));
                    }
                }
            }
        }
        for (name, a) in &self.accounts {
            if let Some(t) = &a.token {
                published.insert(name.clone(), Credential::Ready(Arc::from(format!("Bearer {}", t.token))));
            } else {
                published
                    .entry(name.clone())
                    .or_insert_with(|| Credential::Missing(Arc::from("no access token was minted yet")));
            }
        }
        tokens.current.store(Arc::new(published));
    }

    fn mint(&mut self, issuer: &Issuer, now: u64, proxy: Option<&str>) -> Result<AccessToken, String> {
        let call = issuer.request(now)?;
        let proxy = match call {
            TokenCall::Form(..) => proxy,
            TokenCall::Get(..) => None,
        };
        let agent = self
            .agent
            .get_or_insert_with(|| {
                crate::side_http::SideAgent::new(crate::side_http::Settings {
                    timeout: Duration::from_secs(10),
                    // Error answers carry the reason (`invalid_grant`, ...): read them.
                    status_as_error: false,
                    max_redirects: 0,
                })
            })
            .get(proxy)?;
        let (uri, sent) = match call {
            TokenCall::Form(uri, body) => {
                let sent = agent.post(&uri).header("content-type", TOKEN_REQUEST_CONTENT_TYPE).send(body.as_bytes());
                (uri, sent)
            }
            TokenCall::Get(uri, headers) => {
                let request = headers.iter().fold(agent.get(&uri), |r, (n, v)| r.header(*n, v.as_str()));
                (uri, request.call())
            }
        };
        let mut resp = sent.map_err(|e| format!("{uri}: {e}"))?;
        let status = resp.status().as_u16();
        let bytes =
            resp.body_mut().with_config().limit(MAX_RESPONSE).read_to_vec().map_err(|e| format!("{uri}: {e}"))?;
        match issuer {
            Issuer::Managed(m) => m.read_token(status, &bytes, now),
            _ => parse_token_response(status, &bytes, now).map_err(|e: VertexAuthError| e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn account() -> Account {
        let identity = ManagedIdentity {
            endpoint: adapters::azure::IMDS_TOKEN_ENDPOINT.into(),
            identity_header: None,
            client_id: None,
            resource: adapters::azure::ENTRA_RESOURCE.into(),
        };
        Account {
            issuer: Issuer::Managed(Arc::new(identity)),
            minted_at: 0,
            token: None,
            next_try: Instant::now(),
            backoff: RETRY_FIRST,
        }
    }

    fn token(name: &str, expires_at_unix: u64) -> AccessToken {
        AccessToken { token: name.into(), expires_at_unix }
    }

    #[test]
    fn a_token_handed_back_unchanged_keeps_its_margin_and_backs_off() {
        let mut a = account();
        let start = Instant::now();
        a.minted(token("A", 3_600), 0, start);
        assert_eq!((a.minted_at, a.margin()), (0, 300));
        // Asked again five minutes before expiry, the platform returns the same token: the
        // margin stays five minutes, and the next ask waits (longer each time).
        a.minted(token("A", 3_600), 3_300, start);
        assert_eq!((a.minted_at, a.margin()), (0, 300));
        assert_eq!(a.next_try, start + RETRY_FIRST);
        a.minted(token("A", 3_600), 3_301, start);
        assert_eq!(a.next_try, start + RETRY_FIRST * 2);
        // A new token starts over.
        a.minted(token("B", 7_200), 3_400, start);
        assert_eq!((a.minted_at, a.backoff, a.margin()), (3_400, RETRY_FIRST, 300));
    }
}
