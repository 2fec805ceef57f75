//! Signing keys of the configured token issuers (`auth.issuers`), fetched and refreshed by a
//! plain thread, never on the request path. Shards read the current verifiers through
//! `arc-swap`; a token signed by a key the gateway has not seen yet (the issuer rotated) asks
//! the thread for an early fetch, at most once every [`REFETCH_MIN`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use policy::jwt::{IssuerSpec, Issuers, Jwks, JwksSource};

/// Early fetches after an unknown key are at most this frequent (a forged `kid` must not make
/// the gateway hammer the issuer).
const REFETCH_MIN: Duration = Duration::from_secs(10);
/// A failed fetch is retried after this, doubling up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// Largest JWKS or discovery document read.
const MAX_DOCUMENT: u64 = 1 << 20;

/// The verifiers in force, with the keys fetched so far.
pub struct TokenVerifiers {
    current: ArcSwap<Issuers>,
    /// A shard saw a token whose key is unknown.
    refetch: AtomicBool,
    /// Successful fetches (tests and metrics).
    pub fetched: AtomicU64,
}

impl Default for TokenVerifiers {
    fn default() -> Self {
        TokenVerifiers {
            current: ArcSwap::from_pointee(Issuers::default()),
            refetch: AtomicBool::new(false),
            fetched: AtomicU64::new(0),
        }
    }
}

impl TokenVerifiers {
    pub fn load(&self) -> arc_swap::Guard<Arc<Issuers>> {
        self.current.load()
    }

    /// Asks for an early fetch (a token named a key we do not have).
    pub fn want_refetch(&self) {
        self.refetch.store(true, SeqCst);
    }
}

/// Per issuer: when it was last fetched or tried.
struct Schedule {
    last_ok: Option<Instant>,
    next_try: Instant,
    backoff: Duration,
}

/// The fetcher thread's state.
pub struct Fetcher {
    /// Made on the first fetch: a gateway without issuers never pays for an HTTP client.
    agent: Option<crate::side_http::SideAgent>,
    /// `server.egress.proxy`, as of the last tick.
    proxy: Option<String>,
    specs: Vec<IssuerSpec>,
    schedule: HashMap<String, Schedule>,
    last_refetch: Option<Instant>,
}

impl Default for Fetcher {
    fn default() -> Self {
        Self::new()
    }
}

impl Fetcher {
    pub fn new() -> Fetcher {
        Fetcher { agent: None, proxy: None, specs: Vec::new(), schedule: HashMap::new(), last_refetch: None }
    }

    /// One pass: adopt new issuer specs (keeping the keys of issuers whose spec did not
    /// change), then fetch what is due. Called every few hundred milliseconds.
    pub fn tick(&mut self, specs: &[IssuerSpec], proxy: Option<&str>, verifiers: &TokenVerifiers) {
        if self.proxy.as_deref() != proxy {
            self.proxy = proxy.map(str::to_owned);
        }
        if specs != self.specs.as_slice() {
            self.adopt(specs, verifiers);
        }
        if specs.is_empty() {
            return;
        }
        let now = Instant::now();
        let early =
            verifiers.refetch.swap(false, SeqCst) && self.last_refetch.is_none_or(|t| t.elapsed() >= REFETCH_MIN);
        if early {
            self.last_refetch = Some(now);
        }
        for spec in specs {
            let Some(s) = self.schedule.get(&spec.issuer) else { continue };
            let refresh = verifiers.load().get(&spec.issuer).map_or(Duration::from_secs(600), |v| v.refresh());
            let due = now >= s.next_try && (s.last_ok.is_none_or(|t| t.elapsed() >= refresh) || early);
            if !due {
                continue;
            }
            let source = verifiers.load().get(&spec.issuer).map(|v| v.jwks_source().clone());
            let Some(source) = source else { continue };
            let result = self.fetch(&source);
            let Some(s) = self.schedule.get_mut(&spec.issuer) else { continue };
            match result {
                Ok(jwks) => {
                    let keys = jwks.len();
                    let mut next = (**verifiers.load()).clone();
                    next.set_jwks(&spec.issuer, jwks);
                    verifiers.current.store(Arc::new(next));
                    verifiers.fetched.fetch_add(1, SeqCst);
                    s.last_ok = Some(Instant::now());
                    s.backoff = RETRY_FIRST;
                    s.next_try = Instant::now();
                    tracing::info!(issuer = %spec.issuer, keys, "token signing keys fetched");
                }
                Err(e) => {
                    s.next_try = Instant::now() + s.backoff;
                    s.backoff = (s.backoff * 2).min(RETRY_MAX);
                    tracing::warn!(issuer = %spec.issuer, error = %e, retry_in = ?s.backoff, "cannot fetch token signing keys");
                }
            }
        }
    }

    fn adopt(&mut self, specs: &[IssuerSpec], verifiers: &TokenVerifiers) {
        let old = verifiers.load_full();
        let mut next = match Issuers::new(specs) {
            Ok(i) => i,
            Err(e) => {
                // The config was validated with the same call: this cannot happen.
                tracing::error!(error = %e, "token issuers refused");
                return;
            }
        };
        for spec in specs {
            let kept = self.specs.iter().any(|s| s == spec);
            if !(kept && next.keep_keys(&old, &spec.issuer)) {
                self.schedule.insert(
                    spec.issuer.clone(),
                    Schedule { last_ok: None, next_try: Instant::now(), backoff: RETRY_FIRST },
                );
            }
        }
        self.schedule.retain(|i, _| specs.iter().any(|s| &s.issuer == i));
        verifiers.current.store(Arc::new(next));
        self.specs = specs.to_vec();
    }

    fn get(&mut self, url: &str) -> Result<Vec<u8>, String> {
        let agent = self
            .agent
            .get_or_insert_with(|| {
                crate::side_http::SideAgent::new(crate::side_http::Settings {
                    timeout: Duration::from_secs(5),
                    status_as_error: true,
                    max_redirects: 3,
                })
            })
            .get(self.proxy.as_deref())?;
        let mut resp = agent.get(url).call().map_err(|e| format!("GET {url}: {e}"))?;
        resp.body_mut().with_config().limit(MAX_DOCUMENT).read_to_vec().map_err(|e| format!("GET {url}: {e}"))
    }

    fn fetch(&mut self, source: &JwksSource) -> Result<Jwks, String> {
        let url = match source {
            JwksSource::Url(u) => u.clone(),
            JwksSource::Discovery(d) => {
                policy::jwt::discovery_jwks_uri(&self.get(d)?).map_err(|e| format!("{d}: {e}"))?
            }
        };
        let jwks = Jwks::parse(&self.get(&url)?).map_err(|e| format!("{url}: {e}"))?;
        if jwks.is_empty() {
            // Keep the keys that work rather than replace them with none.
            return Err(format!("{url}: no usable signing key ({} skipped)", jwks.skipped()));
        }
        Ok(jwks)
    }
}

impl TokenVerifiers {
    fn load_full(&self) -> Arc<Issuers> {
        self.current.load_full()
    }
}
