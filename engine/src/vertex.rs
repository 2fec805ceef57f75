//! Access tokens for Vertex AI providers, minted from their service-account keys by a plain
//! thread (the JWT bearer grant), never on the request path. Shards read the current
//! `Authorization` value through `arc-swap`; the thread refreshes a token five minutes before it
//! expires and retries a failed mint with backoff.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use adapters::gemini::vertex_auth::{
    AccessToken, CLOUD_PLATFORM_SCOPE, TOKEN_REQUEST_CONTENT_TYPE, VertexAuthError, parse_token_response,
};
use arc_swap::ArcSwap;

use crate::config::{Snapshot, VertexTarget};

/// A token is refreshed this long before it expires.
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
pub struct VertexTokens {
    current: ArcSwap<HashMap<Arc<str>, Credential>>,
}

impl VertexTokens {
    /// The `Authorization` value for `provider`, or why there is none.
    pub fn authorization(&self, provider: &str) -> Result<Arc<str>, Arc<str>> {
        match self.current.load().get(provider) {
            Some(Credential::Ready(v)) => Ok(v.clone()),
            Some(Credential::Missing(why)) => Err(why.clone()),
            None => Err(Arc::from("no access token was minted yet")),
        }
    }
}

/// One provider's key and its token's life.
struct Account {
    target: Arc<VertexTarget>,
    token: Option<AccessToken>,
    next_try: Instant,
    backoff: Duration,
}

/// The minting thread's state.
#[derive(Default)]
pub struct Minter {
    /// Made on the first mint: a gateway without Vertex providers never pays for an HTTP client.
    agent: Option<ureq::Agent>,
    accounts: HashMap<Arc<str>, Account>,
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Minter {
    /// One pass: follow the config's Vertex providers (a changed key starts over), then mint
    /// what is due. Called every few hundred milliseconds.
    pub fn tick(&mut self, cfg: &Snapshot, tokens: &VertexTokens) {
        let wanted: Vec<(Arc<str>, Arc<VertexTarget>)> =
            cfg.providers.iter().filter_map(|p| Some((p.name.clone(), p.vertex.clone()?))).collect();
        let changed = wanted.len() != self.accounts.len()
            || wanted.iter().any(|(n, t)| self.accounts.get(n).is_none_or(|a| !Arc::ptr_eq(&a.target, t)));
        if changed {
            self.accounts.retain(|n, _| wanted.iter().any(|(w, _)| w == n));
            for (name, target) in &wanted {
                // Same key file contents in a new snapshot: keep the token it minted.
                let same = self.accounts.get(name).is_some_and(|a| {
                    a.target.account.client_email() == target.account.client_email()
                        && a.target.account.private_key_id() == target.account.private_key_id()
                });
                let token = if same { self.accounts.get_mut(name).and_then(|a| a.token.take()) } else { None };
                let account = Account { target: target.clone(), token, next_try: Instant::now(), backoff: RETRY_FIRST };
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
                Instant::now() >= a.next_try && a.token.as_ref().is_none_or(|t| t.refresh_due(now, REFRESH_MARGIN_SECS))
            })
            .map(|(n, _)| n.clone())
            .collect();
        if due.is_empty() && !changed {
            return;
        }
        let mut published: HashMap<Arc<str>, Credential> = (**tokens.current.load()).clone();
        published.retain(|n, _| self.accounts.contains_key(n));
        for name in due {
            let Some(target) = self.accounts.get(&name).map(|a| a.target.clone()) else { continue };
            let minted = self.mint(&target, now);
            let Some(a) = self.accounts.get_mut(&name) else { continue };
            match minted {
                Ok(t) => {
                    tracing::info!(provider = %name, expires_in_s = t.expires_at_unix.saturating_sub(now), "Vertex AI access token minted");
                    a.token = Some(t);
                    a.backoff = RETRY_FIRST;
                }
                Err(e) => {
                    a.next_try = Instant::now() + a.backoff;
                    a.backoff = (a.backoff * 2).min(RETRY_MAX);
                    tracing::warn!(provider = %name, key = %target.credentials_file, error = %e, retry_in = ?a.backoff, "cannot mint a Vertex AI access token");
                    // A token that still works is kept; only an expired one is withdrawn.
                    if a.token.as_ref().is_some_and(|t| t.refresh_due(now, 0)) {
                        a.token = None;
                    }
                    if a.token.is_none() {
                        let why = format!("minting an access token from {} failed: {e}", target.credentials_file);
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

    fn mint(&mut self, target: &VertexTarget, now: u64) -> Result<AccessToken, String> {
        let body = target.account.token_request_body(CLOUD_PLATFORM_SCOPE, now).map_err(|e| e.to_string())?;
        let agent = self.agent.get_or_insert_with(|| {
            ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(10)))
                // Error answers carry the reason (`invalid_grant`, ...): read them.
                .http_status_as_error(false)
                .max_redirects(0)
                .build()
                .into()
        });
        let uri = target.account.token_uri();
        let mut resp = agent
            .post(uri)
            .header("content-type", TOKEN_REQUEST_CONTENT_TYPE)
            .send(body.as_bytes())
            .map_err(|e| format!("POST {uri}: {e}"))?;
        let status = resp.status().as_u16();
        let bytes =
            resp.body_mut().with_config().limit(MAX_RESPONSE).read_to_vec().map_err(|e| format!("POST {uri}: {e}"))?;
        parse_token_response(status, &bytes, now).map_err(|e: VertexAuthError| e.to_string())
    }
}
