//! OAuth 2.0 authorization code with PKCE, per user, toward upstream MCP servers: the gateway
//! runs the consent redirect flow, keeps each user's tokens encrypted at rest in the embedded
//! store, refreshes them before they expire off the request path, and presents the caller's own
//! token on each call to that server.
//!
//! - `GET /mcp/oauth/{server}/authorize` (with the caller's own credential): a `302` to the
//!   authorization server with a PKCE challenge (S256) and a sealed `state` (AES-256-GCM under
//!   `mcp.token_key`) holding the caller, the server, the verifier and an expiry: nothing is
//!   kept on the gateway between the two legs, and any shard can finish the flow.
//! - `GET /mcp/oauth/callback?code=...&state=...` (no credential: the browser comes back from
//!   the authorization server): the state is opened, the code exchanged with the verifier, the
//!   tokens kept.
//!
//! Tokens live in a process-wide copy-on-write map that shards read without a lock, and in the
//! store sealed under the same key.

use adapters::bedrock::sigv4::uri_encode;
use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;

use crate::config::Upstream;

/// How long a consent started at `/authorize` may take to come back.
const STATE_LIFE_SECS: u64 = 600;
/// Where browsers come back to.
pub const CALLBACK_PATH: &str = "/mcp/oauth/callback";

/// An upstream server's per-user OAuth application.
#[derive(Debug)]
pub struct PerUser {
    pub authorize_url: String,
    pub token_url: String,
    /// The token endpoint, as an upstream (its path in `base_path`).
    pub token_upstream: Upstream,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub scope: Option<String>,
    pub resource: String,
    /// The gateway's callback as browsers reach it.
    pub redirect_uri: String,
}

/// `mcp.token_key`: AES-256-GCM for tokens at rest and for the consent `state`.
pub struct TokenKey {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// From the config's base64 of 32 bytes.
    pub fn from_base64(text: &str) -> Result<TokenKey, String> {
        let raw = STANDARD
            .decode(text.trim())
            .or_else(|_| B64.decode(text.trim()))
            .map_err(|_| "mcp.token_key is not base64 (make one with `openssl rand -base64 32`)".to_owned())?;
        let key = UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| "mcp.token_key must be 32 bytes".to_owned())?;
        Ok(TokenKey { key: LessSafeKey::new(key), rng: SystemRandom::new() })
    }

    /// A random key, for what needs sealing only while this process runs.
    pub fn generate() -> Result<TokenKey, String> {
        let rng = SystemRandom::new();
        let mut raw = [0u8; 32];
        rng.fill(&mut raw).map_err(|_| "no system randomness for a sealing key")?;
        let key = UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| "AES-256-GCM refused a 32-byte key".to_owned())?;
        Ok(TokenKey { key: LessSafeKey::new(key), rng })
    }

    /// `nonce || ciphertext || tag`, base64url; `context` is bound in (a sealed token cannot be
    /// passed off as a consent state, or one user's token as another's).
    pub fn seal(&self, context: &str, plain: &[u8]) -> Result<String, String> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| "no system randomness")?;
        let mut data = plain.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context.as_bytes()), &mut data)
            .map_err(|_| "sealing failed")?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(B64.encode(out))
    }

    /// The plain text of [`TokenKey::seal`]'s output, if it is authentic for `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Option<Vec<u8>> {
        let raw = B64.decode(sealed.trim()).ok()?;
        let (nonce, rest) = raw.split_at_checked(NONCE_LEN)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut data = rest.to_vec();
        let plain = self.key.open_in_place(nonce, Aad::from(context.as_bytes()), &mut data).ok()?;
        Some(plain.to_vec())
    }

    fn random(&self, n: usize) -> Result<Vec<u8>, String> {
        let mut b = vec![0u8; n];
        self.rng.fill(&mut b).map_err(|_| "no system randomness")?;
        Ok(b)
    }
}

/// One user's tokens for one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserToken {
    pub access: String,
    pub refresh: Option<String>,
    /// Unix seconds.
    pub expires_at: u64,
    /// When it was issued (unix seconds), for the refresh margin.
    #[serde(default)]
    pub issued_at: u64,
    /// The server's `resource` it was issued for: a server re-pointed under the same name
    /// never receives tokens meant for the old one.
    #[serde(default)]
    pub resource: String,
}

/// Every user's tokens, by (server, user): read by shards without a lock.
#[derive(Debug, Default)]
pub struct UserTokens {
    map: ArcSwap<HashMap<(String, String), UserToken>>,
    /// Consent states already used, with when each would have expired anyway: a state works
    /// once (a replayed callback URL, from a browser's history or a log, is refused). Only the
    /// callback takes this lock.
    spent: std::sync::Mutex<HashMap<String, u64>>,
}

impl UserTokens {
    /// Marks `state` used; `false` when it already was.
    pub fn spend_state(&self, state: &str, now: u64) -> bool {
        let Ok(mut spent) = self.spent.lock() else { return false };
        spent.retain(|_, expires| *expires >= now);
        spent.insert(state.to_owned(), now + STATE_LIFE_SECS).is_none()
    }

    /// `Bearer ...` for `user` at `server` (whose resource is `resource`), if they connected
    /// and it has not expired.
    pub fn authorization(&self, server: &str, resource: &str, user: &str, now: u64) -> Option<String> {
        let map = self.map.load();
        let t = map.get(&(server.to_owned(), user.to_owned()))?;
        (t.expires_at > now && t.resource == resource).then(|| format!("Bearer {}", t.access))
    }

    pub fn put(&self, server: &str, user: &str, token: UserToken) {
        self.map.rcu(|m| {
            let mut next = HashMap::clone(m);
            next.insert((server.to_owned(), user.to_owned()), token.clone());
            next
        });
    }

    pub fn remove(&self, server: &str, user: &str) {
        self.map.rcu(|m| {
            let mut next = HashMap::clone(m);
            next.remove(&(server.to_owned(), user.to_owned()));
            next
        });
    }

    /// Every (server, user, token), for the refresher.
    pub fn all(&self) -> Vec<(String, String, UserToken)> {
        self.map.load().iter().map(|((s, u), t)| (s.clone(), u.clone(), t.clone())).collect()
    }
}

/// What a consent `state` carries.
#[derive(Debug, Serialize, Deserialize)]
struct State {
    /// The caller (`key:name`, `user:name`).
    u: String,
    s: String,
    /// The PKCE verifier.
    v: String,
    /// Expiry, unix seconds.
    e: u64,
    /// SHA-256 (base64url) of the browser binding: a random value also set as a cookie at
    /// `/authorize`; the callback must come with it, so a consent URL sent to someone else
    /// cannot put their account under the sender's name (or the other way round).
    b: String,
}

/// The cookie that binds a consent to the browser that started it.
pub const BINDING_COOKIE: &str = "shardgate_mcp_oauth";

const STATE_CONTEXT: &str = "shardgate mcp oauth state";

/// The context a user's token is sealed under in the store.
pub fn token_context(server: &str, user: &str) -> String {
    format!("shardgate mcp token\0{server}\0{user}")
}

/// The authorization server's URL for `user`'s consent to `server`, and the browser binding
/// to set as a cookie.
pub fn authorize_url(
    key: &TokenKey,
    p: &PerUser,
    server: &str,
    user: &str,
    now: u64,
) -> Result<(String, String), String> {
    let verifier = B64.encode(key.random(32)?);
    let challenge = B64.encode(digest(&SHA256, verifier.as_bytes()));
    let binding = B64.encode(key.random(32)?);
    let b = B64.encode(digest(&SHA256, binding.as_bytes()));
    let state = State { u: user.to_owned(), s: server.to_owned(), v: verifier, e: now + STATE_LIFE_SECS, b };
    let sealed = key.seal(STATE_CONTEXT, &serde_json::to_vec(&state).map_err(|e| e.to_string())?)?;
    let mut url = p.authorize_url.clone();
    url.push(if url.contains('?') { '&' } else { '?' });
    url.push_str(&format!(
        "response_type=code&client_id={}&redirect_uri={}&code_challenge={challenge}&code_challenge_method=S256&state={sealed}&resource={}",
        uri_encode(&p.client_id),
        uri_encode(&p.redirect_uri),
        uri_encode(&p.resource)
    ));
    if let Some(scope) = &p.scope {
        url.push_str(&format!("&scope={}", uri_encode(scope)));
    }
    Ok((url, binding))
}

/// The caller, server and verifier a `state` came back with, if it is ours, fresh, and came
/// back to the browser that started it (`binding`: its cookie).
pub fn open_state(
    key: &TokenKey,
    state: &str,
    binding: Option<&str>,
    now: u64,
) -> Result<(String, String, String), String> {
    let plain = key.open(STATE_CONTEXT, state).ok_or("the state is not one this gateway made")?;
    let s: State = serde_json::from_slice(&plain).map_err(|_| "the state is not one this gateway made")?;
    if s.e < now {
        return Err("the consent took too long (over 10 minutes); start again".into());
    }
    let bound = binding.is_some_and(|b| B64.encode(digest(&SHA256, b.as_bytes())) == s.b);
    if !bound {
        return Err(
            "this consent was started in another browser: open /mcp/oauth/{server}/authorize in this one".into()
        );
    }
    Ok((s.u, s.s, s.v))
}

/// The form of the code exchange.
pub fn code_exchange_body(p: &PerUser, code: &str, verifier: &str) -> String {
    let mut body = format!(
        "grant_type=authorization_code&code={}&redirect_uri={}&client_id={}&code_verifier={}&resource={}",
        uri_encode(code),
        uri_encode(&p.redirect_uri),
        uri_encode(&p.client_id),
        uri_encode(verifier),
        uri_encode(&p.resource)
    );
    if let Some(secret) = &p.client_secret {
        body.push_str(&format!("&client_secret={}", uri_encode(secret)));
    }
    body
}

/// The form of a refresh.
pub fn refresh_body(p: &PerUser, refresh: &str) -> String {
    let mut body = format!(
        "grant_type=refresh_token&refresh_token={}&client_id={}&resource={}",
        uri_encode(refresh),
        uri_encode(&p.client_id),
        uri_encode(&p.resource)
    );
    if let Some(secret) = &p.client_secret {
        body.push_str(&format!("&client_secret={}", uri_encode(secret)));
    }
    body
}

/// A token response: the tokens, or the authorization server's reason. A refresh answer
/// without a new refresh token keeps `previous_refresh`.
pub fn read_tokens(
    status: u16,
    body: &[u8],
    now: u64,
    previous_refresh: Option<&str>,
    resource: &str,
) -> Result<UserToken, String> {
    let access = adapters::gemini::vertex_auth::parse_token_response(status, body, now).map_err(|e| e.to_string())?;
    let refresh = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("refresh_token").and_then(Value::as_str).map(str::to_owned))
        .or_else(|| previous_refresh.map(str::to_owned));
    Ok(UserToken {
        access: access.token,
        refresh,
        expires_at: access.expires_at_unix,
        issued_at: now,
        resource: resource.to_owned(),
    })
}

/// The query parameter `name` of `query`, percent-decoded.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v))
        .map(|v| crate::api::percent_decode(&v.replace('+', " ")))
}

/// Loads the tokens the store kept (at start). Rows the current key cannot open (the key
/// changed) are skipped: those users connect again.
pub fn restore(mcp: &super::McpConfig, tokens: &UserTokens, rows: &[(String, String, String)]) {
    let Some(key) = &mcp.token_key else { return };
    let mut lost = 0;
    for (server, user, sealed) in rows {
        let token = key
            .open(&token_context(server, user), sealed)
            .and_then(|plain| serde_json::from_slice::<UserToken>(&plain).ok());
        match token {
            Some(t) => tokens.put(server, user, t),
            None => lost += 1,
        }
    }
    if lost > 0 {
        tracing::warn!(
            lost,
            "users' MCP tokens that mcp.token_key cannot open were skipped: those users connect again"
        );
    }
}

/// Keeps a user's tokens: in memory for the shards, sealed in the store.
fn keep(process: &crate::shard::ProcessState, key: &TokenKey, server: &str, user: &str, token: UserToken) {
    if let Some(store) = process.store.get() {
        match serde_json::to_vec(&token)
            .map_err(|e| e.to_string())
            .and_then(|t| key.seal(&token_context(server, user), &t))
        {
            Ok(sealed) => store.send_user_token(server.to_owned(), user.to_owned(), sealed),
            Err(e) => tracing::error!(%server, %user, error = %e, "a user's MCP token is not saved"),
        }
    }
    process.mcp_user_tokens.put(server, user, token);
}

fn now_unix() -> u64 {
    crate::api::governance::now_ms() / 1000
}

/// `GET /mcp/oauth/{server}/authorize`: a `302` to the authorization server for the caller's
/// consent (the URL is in the JSON body too, for clients that do not follow redirects).
pub async fn authorize<C: crate::rt::Conn>(
    cfg: &crate::config::Snapshot,
    caller: &policy::Identity,
    server: &str,
    resp: &mut crate::http::Responder<'_, C>,
) {
    let found = cfg.mcp.server(server).and_then(|(_, s)| s.per_user.as_ref().map(|p| (s, p)));
    let (Some((s, p)), Some(key)) = (found, cfg.mcp.token_key.as_ref()) else {
        return text(resp, 404, &format!("no MCP server `{server}` that acts as each user")).await;
    };
    // Every anonymous caller is the same caller: one account would serve them all.
    if caller.credential == policy::identity::Credential::Anonymous {
        return text(resp, 403, "connecting an account needs your own gateway credential (a key or a token)").await;
    }
    match authorize_url(key, p, &s.name, &caller.describe(), now_unix()) {
        Ok((url, binding)) => {
            let body = serde_json::json!({"authorize_url": url}).to_string();
            let secure = if p.redirect_uri.starts_with("https://") { "; Secure" } else { "" };
            let cookie =
                format!("{BINDING_COOKIE}={binding}; Path=/mcp/oauth; Max-Age=600; HttpOnly; SameSite=Lax{secure}");
            let _ = resp
                .start(302)
                .header("location", &url)
                .header("set-cookie", &cookie)
                .header("cache-control", "no-store")
                .header("content-type", "application/json")
                .body(body.as_bytes())
                .await;
        }
        Err(e) => text(resp, 500, &e).await,
    }
}

async fn text<C: crate::rt::Conn>(resp: &mut crate::http::Responder<'_, C>, status: u16, message: &str) {
    let _ = resp
        .start(status)
        .header("content-type", "text/plain; charset=utf-8")
        .header("cache-control", "no-store")
        .body(message.as_bytes())
        .await;
}

/// `GET /mcp/oauth/callback`: the browser back from the authorization server. The state says
/// who and which server; the code is exchanged (with the PKCE verifier) on the shard's own
/// upstream connection to the token endpoint.
pub async fn callback<C: crate::rt::Conn>(
    shard: &crate::shard::Shard,
    cfg: &crate::config::Snapshot,
    query: &str,
    cookies: Option<&str>,
    resp: &mut crate::http::Responder<'_, C>,
) {
    if let Some(error) = query_param(query, "error") {
        let detail = query_param(query, "error_description").unwrap_or_default();
        return text(resp, 400, &format!("the authorization server refused: {error} {detail}")).await;
    }
    let Some(key) = cfg.mcp.token_key.as_ref() else { return text(resp, 404, "no per-user MCP servers").await };
    let (Some(code), Some(state)) = (query_param(query, "code"), query_param(query, "state")) else {
        return text(resp, 400, "the callback needs `code` and `state`").await;
    };
    let binding = cookies.and_then(|c| {
        c.split(';').find_map(|kv| kv.trim().strip_prefix(BINDING_COOKIE).and_then(|v| v.strip_prefix('=')))
    });
    let now = now_unix();
    let (user, server, verifier) = match open_state(key, &state, binding, now) {
        Ok(s) => s,
        Err(e) => return text(resp, 400, &e).await,
    };
    if !shard.process.mcp_user_tokens.spend_state(&state, now) {
        return text(resp, 400, "this consent was already completed: start again to connect once more").await;
    }
    let Some(p) = cfg.mcp.server(&server).and_then(|(_, s)| s.per_user.clone()) else {
        return text(resp, 400, &format!("MCP server `{server}` no longer acts as each user")).await;
    };
    match exchange_code(shard, cfg, &p, &code, &verifier).await {
        Ok(token) => {
            keep(&shard.process, key, &server, &user, token);
            tracing::info!(%server, %user, "a user connected an MCP server");
            text(resp, 200, &format!("Connected: the gateway now calls {server} as you. You may close this window."))
                .await;
        }
        Err(e) => text(resp, 502, &format!("the code could not be exchanged: {e}")).await,
    }
}

async fn exchange_code(
    shard: &crate::shard::Shard,
    cfg: &crate::config::Snapshot,
    p: &PerUser,
    code: &str,
    verifier: &str,
) -> Result<UserToken, String> {
    use bytes::{BufMut, Bytes, BytesMut};
    let body = code_exchange_body(p, code, verifier);
    let up = &p.token_upstream;
    let mut h = BytesMut::with_capacity(256);
    h.put_slice(b"POST ");
    h.put_slice(if up.base_path.is_empty() { b"/" } else { up.base_path.as_bytes() });
    h.put_slice(b" HTTP/1.1\r\nhost: ");
    h.put_slice(up.host_header.as_bytes());
    h.put_slice(b"\r\ncontent-type: application/x-www-form-urlencoded\r\naccept: application/json\r\ncontent-length: ");
    h.put_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    h.put_slice(b"\r\n\r\n");
    let request = crate::upstream::RequestBytes { head: h.freeze(), body: Bytes::from(body), is_head: false };
    let shared = crate::upstream::Shared { pool: &shard.pool, dns: &shard.process.dns, metrics: &shard.metrics };
    let mut answer =
        crate::upstream::send(&shared, up, &request, cfg.upstream_limits).await.map_err(|e| e.to_string())?;
    let status = answer.head.status;
    let bytes = answer.read_to_end(64 << 10).await.map_err(|e| e.to_string())?;
    read_tokens(status, &bytes, now_unix(), None, &p.resource)
}

/// Refreshes users' tokens before they expire, on the gateway's credentials thread (a blocking
/// client, off the request path).
#[derive(Default)]
pub struct Refresher {
    agent: Option<crate::side_http::SideAgent>,
    /// When a failed refresh may be tried again, by (server, user).
    retry_at: HashMap<(String, String), u64>,
    /// Since when tokens have been of no more use, by (server, user).
    unused_since: HashMap<(String, String), u64>,
}

/// How long tokens stay after the config stopped having a use for them (a reload that drops a
/// server by mistake, and is fixed, must not make every user consent again).
pub const ORPHAN_GRACE_SECS: u64 = 3600;

/// Why a user's tokens for a server are of no more use, if they are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orphaned {
    /// The caller's key was revoked: deleted at once.
    Revoked,
    /// The server is gone, no longer acts as each user, or points elsewhere (tokens are bound
    /// to its resource), or the caller's key is gone: deleted after [`ORPHAN_GRACE_SECS`].
    Unused(&'static str),
}

/// Whether `user`'s tokens for `server` are of any more use. (Callers known by a token
/// issuer's `sub` come and go with their tokens, so theirs are kept; so are those of a server
/// the admin API made and a file edit keeps from compiling, until it is fixed or removed.)
pub fn orphaned(cfg: &crate::config::Snapshot, server: &str, user: &str, token: &UserToken) -> Option<Orphaned> {
    let key = user.strip_prefix("key:").map(|name| cfg.policy.directory.key_named(name));
    if key.is_some_and(|k| k.is_some_and(|id| id.revoked)) {
        return Some(Orphaned::Revoked);
    }
    let left_out = cfg.mcp_left_out.iter().any(|(name, _)| name.strip_prefix("mcp.servers.") == Some(server));
    let Some(p) = cfg.mcp.server(server).and_then(|(_, s)| s.per_user.as_ref()) else {
        return (!left_out).then_some(Orphaned::Unused("the server is gone or no longer acts as each user"));
    };
    if p.resource != token.resource {
        return Some(Orphaned::Unused("the server points elsewhere now"));
    }
    key.is_some_and(|k| k.is_none()).then_some(Orphaned::Unused("the caller's key is gone"))
}

impl Refresher {
    /// One pass: tokens of no more use are deleted ([`orphaned`]); every token due (five
    /// minutes before expiry, or a fifth of its life when shorter) that has a refresh token is
    /// refreshed.
    pub fn tick(&mut self, cfg: &crate::config::Snapshot, process: &crate::shard::ProcessState) {
        let Some(key) = cfg.mcp.token_key.as_ref() else { return };
        let now = now_unix();
        for (server, user, token) in process.mcp_user_tokens.all() {
            let pair = (server.clone(), user.clone());
            let delete = match orphaned(cfg, &server, &user, &token) {
                None => {
                    self.unused_since.remove(&pair);
                    None
                }
                Some(Orphaned::Revoked) => Some("the caller's key was revoked"),
                Some(Orphaned::Unused(why)) => {
                    let since = *self.unused_since.entry(pair.clone()).or_insert(now);
                    (now.saturating_sub(since) >= ORPHAN_GRACE_SECS).then_some(why)
                }
            };
            if let Some(why) = delete {
                tracing::info!(%server, %user, why, "a user's MCP tokens are deleted");
                process.mcp_user_tokens.remove(&server, &user);
                if let Some(store) = process.store.get() {
                    store.forget_user_token(server.clone(), user.clone());
                }
                self.retry_at.remove(&pair);
                self.unused_since.remove(&pair);
                continue;
            }
            let Some(refresh) = token.refresh.as_deref() else { continue };
            let Some(p) = cfg.mcp.server(&server).and_then(|(_, s)| s.per_user.clone()) else { continue };
            // Five minutes before expiry, or a fifth of its life when that is shorter.
            let margin = (token.expires_at.saturating_sub(token.issued_at) / 5).clamp(1, 300);
            let due = token.expires_at <= now + margin;
            let waiting = self.retry_at.get(&(server.clone(), user.clone())).is_some_and(|t| *t > now);
            if !due || waiting {
                continue;
            }
            match self.refresh(&p, refresh, cfg.egress_proxy.as_deref()) {
                Ok(t) => {
                    self.retry_at.remove(&(server.clone(), user.clone()));
                    keep(process, key, &server, &user, t);
                }
                // A refresh token the server no longer honours is dropped: that user connects again.
                Err(e) if e.contains("invalid_grant") => {
                    tracing::warn!(%server, %user, error = %e, "a user's MCP refresh token was refused; they must connect again");
                    keep(process, key, &server, &user, UserToken { refresh: None, ..token });
                }
                Err(e) => {
                    tracing::warn!(%server, %user, error = %e, "a user's MCP token could not be refreshed");
                    self.retry_at.insert((server, user), now + 30);
                }
            }
        }
    }

    fn refresh(&mut self, p: &PerUser, refresh: &str, proxy: Option<&str>) -> Result<UserToken, String> {
        let agent = self
            .agent
            .get_or_insert_with(|| {
                crate::side_http::SideAgent::new(crate::side_http::Settings {
                    timeout: std::time::Duration::from_secs(10),
                    status_as_error: false,
                    max_redirects: 0,
                })
            })
            .get(proxy)?;
        let sent = agent
            .post(&p.token_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .send(refresh_body(p, refresh).as_bytes());
        let mut resp = sent.map_err(|e| format!("{}: {e}", p.token_url))?;
        let status = resp.status().as_u16();
        let bytes = resp.body_mut().with_config().limit(64 * 1024).read_to_vec().map_err(|e| e.to_string())?;
        read_tokens(status, &bytes, now_unix(), Some(refresh), &p.resource)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key() -> TokenKey {
        TokenKey::from_base64(&STANDARD.encode([7u8; 32])).unwrap()
    }

    #[test]
    fn sealed_values_open_only_in_their_context() {
        let k = key();
        let sealed = k.seal("a", b"secret").unwrap();
        assert_eq!(k.open("a", &sealed).unwrap(), b"secret");
        assert!(k.open("b", &sealed).is_none(), "bound to its context");
        let mut tampered = sealed.clone();
        tampered.replace_range(20..21, if &sealed[20..21] == "A" { "B" } else { "A" });
        assert!(k.open("a", &tampered).is_none());
        assert!(TokenKey::from_base64("short").is_err());
        assert!(TokenKey::from_base64(&STANDARD.encode([1u8; 16])).is_err());
    }

    #[test]
    fn states_carry_the_caller_and_expire() {
        let k = key();
        let b = B64.encode(digest(&SHA256, b"cookie"));
        let plain = format!(r#"{{"u":"user:ada","s":"gh","v":"ver","e":100,"b":"{b}"}}"#);
        let sealed = k.seal(STATE_CONTEXT, plain.as_bytes()).unwrap();
        assert_eq!(
            open_state(&k, &sealed, Some("cookie"), 50).unwrap(),
            ("user:ada".into(), "gh".into(), "ver".into())
        );
        assert!(open_state(&k, &sealed, Some("cookie"), 101).unwrap_err().contains("too long"));
        assert!(open_state(&k, &sealed, Some("other"), 50).unwrap_err().contains("another browser"));
        assert!(open_state(&k, &sealed, None, 50).is_err());
        assert!(open_state(&k, "garbage", Some("cookie"), 50).is_err());
    }

    /// Tokens were deleted within 100 ms of any config without their server: a reload with a
    /// typo made every user consent again. Now only a revoked key deletes them at once.
    #[test]
    fn only_a_revoked_key_orphans_tokens_at_once() {
        let yaml = format!(
            "auth: {{pepper: test-pepper-0123456789}}\n\
             users:\n  ada: {{}}\n\
             keys:\n  - {{name: a, secret: sk-sg-aaaaaaaaaaaaaaaaaaaa, user: ada}}\n  - {{name: r, secret: sk-sg-rrrrrrrrrrrrrrrrrrrr, user: ada, revoked: true}}\n\
             mcp:\n  token_key: '{}'\n  servers:\n    gh:\n      url: 'http://127.0.0.1:1/mcp'\n      auth: {{oauth2: {{flow: authorization_code, client_id: c, authorize_url: 'http://127.0.0.1:1/a', token_url: 'http://127.0.0.1:1/t', redirect_uri: 'http://127.0.0.1:1/mcp/oauth/callback'}}}}\n",
            STANDARD.encode([7u8; 32])
        );
        let file = crate::config::parse("t.yaml", &yaml).unwrap();
        let cfg = crate::config::compile(&file, "t.yaml", 1).unwrap();
        let resource = cfg.mcp.server("gh").and_then(|(_, s)| s.per_user.as_ref()).unwrap().resource.clone();
        let token = |resource: &str| UserToken {
            access: "x".into(),
            refresh: None,
            expires_at: 9,
            issued_at: 1,
            resource: resource.to_owned(),
        };
        let good = token(&resource);
        assert_eq!(orphaned(&cfg, "gh", "key:a", &good), None);
        assert_eq!(orphaned(&cfg, "gh", "user:bob", &good), None, "a token issuer's subject is kept");
        assert_eq!(orphaned(&cfg, "gh", "key:r", &good), Some(Orphaned::Revoked));
        assert!(matches!(orphaned(&cfg, "gh", "key:gone", &good), Some(Orphaned::Unused(_))));
        assert!(matches!(orphaned(&cfg, "nope", "key:a", &good), Some(Orphaned::Unused(_))));
        assert!(matches!(orphaned(&cfg, "gh", "key:a", &token("http://elsewhere/")), Some(Orphaned::Unused(_))));
    }
}
