//! OAuth2 access tokens for Vertex AI minted from a service-account key: the JWT bearer grant
//! (RFC 7523 §2.1, §3) as Google's "Using OAuth 2.0 for Server to Server Applications" describes
//! it (<https://developers.google.com/identity/protocols/oauth2/service-account>).
//!
//! ```text
//! assertion = b64url({"alg":"RS256","typ":"JWT","kid":private_key_id}) "."
//!             b64url({"iss":client_email,"scope":scope,"aud":token_uri,"iat":now,"exp":now+3600}) "."
//!             b64url(RSASSA-PKCS1-v1_5-SHA256(private_key, <the two parts before>))
//! POST token_uri                       Content-Type: application/x-www-form-urlencoded
//!     grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=<assertion>
//! 200 {"access_token":"ya29...","expires_in":3599,"token_type":"Bearer"}
//! 400 {"error":"invalid_grant","error_description":"Invalid JWT Signature."}
//! ```
//!
//! Pure like the rest of the crate: the engine reads the key file, owns the clock, POSTs
//! [`ServiceAccount::token_request_body`] to [`ServiceAccount::token_uri`], and reuses the
//! [`AccessToken`] until [`AccessToken::refresh_due`]. Neither the private key nor the access
//! token ever appears in an error message or in `Debug` output.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde::Serialize;
use serde_json::{Map, Value};

/// The scope Vertex AI needs.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// Google's token endpoint, used when the key file has no `token_uri`.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// The RFC 7523 grant type.
pub const JWT_BEARER_GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The `Content-Type` of [`ServiceAccount::token_request_body`].
pub const TOKEN_REQUEST_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

/// `exp - iat` of an assertion: the most Google accepts (one hour).
pub const ASSERTION_LIFETIME_SECS: u64 = 3600;

const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";
/// Longest piece of endpoint-supplied text kept in an error.
const MAX_ERROR_TEXT: usize = 512;

/// Why a key could not be loaded, an assertion made, or a token response read.
///
/// Key-file variants (`KeyFile*`, `NotServiceAccount`, `MissingField`, `InvalidField`,
/// `PrivateKey*`) are configuration errors; `Signing` is internal; `TokenEndpoint` and
/// `TokenResponse` come from upstream (see [`VertexAuthError::retryable`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VertexAuthError {
    /// The key file is not JSON. Only the position is kept: the text is never quoted.
    KeyFileSyntax { line: usize, column: usize },
    /// The key file is JSON but not an object.
    KeyFileNotObject,
    /// `type` is not `service_account` (e.g. `authorized_user`, gcloud's user credentials).
    NotServiceAccount { found: String },
    /// A required field is absent or null.
    MissingField(&'static str),
    /// A field is present but unusable (`reason` says how).
    InvalidField { field: &'static str, reason: &'static str },
    /// `private_key` is not a PEM PKCS#8 private key (`reason` says how).
    PrivateKeyPem(&'static str),
    /// `private_key` is PKCS#8 but ring does not accept it as an RSA key; ring's reason
    /// (`InvalidEncoding`, `WrongAlgorithm`, `TooSmall`, ...).
    PrivateKeyRejected(String),
    /// The JWT could not be encoded or signed (not expected with a key ring accepted).
    Signing,
    /// The token endpoint answered with an OAuth2 error (RFC 6749 §5.2).
    TokenEndpoint { status: u16, error: String, description: Option<String> },
    /// The token endpoint's answer is not one we understand. The body is never quoted (a
    /// success body carries the token).
    TokenResponse { status: u16, reason: String },
}

impl VertexAuthError {
    /// A stable, short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            VertexAuthError::KeyFileSyntax { .. } => "key_file_syntax",
            VertexAuthError::KeyFileNotObject => "key_file_not_object",
            VertexAuthError::NotServiceAccount { .. } => "not_service_account",
            VertexAuthError::MissingField(_) => "missing_field",
            VertexAuthError::InvalidField { .. } => "invalid_field",
            VertexAuthError::PrivateKeyPem(_) => "private_key_pem",
            VertexAuthError::PrivateKeyRejected(_) => "private_key_rejected",
            VertexAuthError::Signing => "signing",
            VertexAuthError::TokenEndpoint { .. } => "token_endpoint",
            VertexAuthError::TokenResponse { .. } => "token_response",
        }
    }

    /// Whether asking the token endpoint again later may succeed: 429 and 5xx answers, and the
    /// OAuth2 errors `temporarily_unavailable` / `server_error`. Everything else needs a fix.
    pub fn retryable(&self) -> bool {
        match self {
            VertexAuthError::TokenEndpoint { status, error, .. } => {
                transient_status(*status) || error == "temporarily_unavailable" || error == "server_error"
            }
            VertexAuthError::TokenResponse { status, .. } => transient_status(*status),
            _ => false,
        }
    }
}

fn transient_status(status: u16) -> bool {
    status == 429 || status >= 500
}

impl fmt::Display for VertexAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VertexAuthError::KeyFileSyntax { line, column } => {
                write!(f, "service-account key file is not valid JSON (line {line}, column {column})")
            }
            VertexAuthError::KeyFileNotObject => f.write_str("service-account key file is not a JSON object"),
            VertexAuthError::NotServiceAccount { found } => {
                write!(f, "service-account key file has type {found:?}, expected \"service_account\"")
            }
            VertexAuthError::MissingField(field) => {
                write!(f, "service-account key file has no `{field}` field")
            }
            VertexAuthError::InvalidField { field, reason } => {
                write!(f, "service-account key file: `{field}` {reason}")
            }
            VertexAuthError::PrivateKeyPem(reason) => {
                write!(f, "service-account key file: `private_key` {reason}")
            }
            VertexAuthError::PrivateKeyRejected(why) => {
                write!(f, "service-account key file: `private_key` is not a usable RSA key ({why})")
            }
            VertexAuthError::Signing => f.write_str("could not sign the service-account JWT assertion"),
            VertexAuthError::TokenEndpoint { status, error, description } => {
                write!(f, "token endpoint answered HTTP {status}: {error}")?;
                match description {
                    Some(d) => write!(f, ": {d}"),
                    None => Ok(()),
                }
            }
            VertexAuthError::TokenResponse { status, reason } => {
                write!(f, "token endpoint answered HTTP {status}: {reason}")
            }
        }
    }
}

impl std::error::Error for VertexAuthError {}

/// A service account, loaded from its JSON key file, with its private key ready to sign.
pub struct ServiceAccount {
    client_email: String,
    private_key_id: String,
    token_uri: String,
    project_id: String,
    key_pair: RsaKeyPair,
}

impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("token_uri", &self.token_uri)
            .field("project_id", &self.project_id)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

impl ServiceAccount {
    /// Reads a JSON key file as the Cloud console downloads it. Required: `type`
    /// (`service_account`), `client_email`, `private_key` (PEM PKCS#8), `private_key_id`,
    /// `project_id`; `token_uri` defaults to [`DEFAULT_TOKEN_URI`] and must be `https://` (or
    /// `http://` to a loopback host, for tests against a mock). Other fields are ignored.
    pub fn from_json(bytes: &[u8]) -> Result<ServiceAccount, VertexAuthError> {
        let obj = match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(obj)) => obj,
            Ok(_) => return Err(VertexAuthError::KeyFileNotObject),
            Err(e) => return Err(VertexAuthError::KeyFileSyntax { line: e.line(), column: e.column() }),
        };
        let kind = required_str(&obj, "type")?;
        if kind != "service_account" {
            return Err(VertexAuthError::NotServiceAccount { found: truncated(kind) });
        }
        let client_email = required_str(&obj, "client_email")?.to_owned();
        let private_key_id = required_str(&obj, "private_key_id")?.to_owned();
        let project_id = required_str(&obj, "project_id")?.to_owned();
        let token_uri = optional_str(&obj, "token_uri")?.unwrap_or(DEFAULT_TOKEN_URI).to_owned();
        if !acceptable_token_uri(&token_uri) {
            return Err(VertexAuthError::InvalidField {
                field: "token_uri",
                reason: "is not an https:// URL (http:// is accepted only for localhost)",
            });
        }
        let der = pkcs8_der_from_pem(required_str(&obj, "private_key")?)?;
        let key_pair = RsaKeyPair::from_pkcs8(&der).map_err(|e| VertexAuthError::PrivateKeyRejected(e.to_string()))?;
        Ok(ServiceAccount { client_email, private_key_id, token_uri, project_id, key_pair })
    }

    /// The account's email: the assertion's issuer.
    pub fn client_email(&self) -> &str {
        &self.client_email
    }

    /// Which of the account's keys this is: the assertion's `kid`.
    pub fn private_key_id(&self) -> &str {
        &self.private_key_id
    }

    /// Where to POST [`ServiceAccount::token_request_body`]; also the assertion's audience.
    pub fn token_uri(&self) -> &str {
        &self.token_uri
    }

    /// The project the account belongs to (the default for Vertex AI URLs).
    pub fn project_id(&self) -> &str {
        &self.project_id
    }

    /// The signed RS256 JWT asking for `scope` (space-separated scopes), issued at `now_unix`
    /// and valid for [`ASSERTION_LIFETIME_SECS`].
    pub fn assertion(&self, scope: &str, now_unix: u64) -> Result<String, VertexAuthError> {
        if scope.trim().is_empty() {
            return Err(VertexAuthError::InvalidField { field: "scope", reason: "is empty" });
        }
        let header = JwtHeader { alg: "RS256", typ: "JWT", kid: &self.private_key_id };
        let claims = JwtClaims {
            iss: &self.client_email,
            scope,
            aud: &self.token_uri,
            iat: now_unix,
            exp: now_unix.saturating_add(ASSERTION_LIFETIME_SECS),
        };
        let header = serde_json::to_vec(&header).map_err(|_| VertexAuthError::Signing)?;
        let claims = serde_json::to_vec(&claims).map_err(|_| VertexAuthError::Signing)?;
        let modulus_len = self.key_pair.public().modulus_len();
        let mut jwt = String::with_capacity((header.len() + claims.len() + modulus_len) * 4 / 3 + 8);
        URL_SAFE_NO_PAD.encode_string(&header, &mut jwt);
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(&claims, &mut jwt);
        let mut signature = vec![0u8; modulus_len];
        // PKCS#1 v1.5 padding is deterministic; ring takes a random source for the API's sake.
        self.key_pair
            .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), jwt.as_bytes(), &mut signature)
            .map_err(|_| VertexAuthError::Signing)?;
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut jwt);
        Ok(jwt)
    }

    /// The `application/x-www-form-urlencoded` body of the token request:
    /// `grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=<jwt>`.
    pub fn token_request_body(&self, scope: &str, now_unix: u64) -> Result<String, VertexAuthError> {
        let assertion = self.assertion(scope, now_unix)?;
        let mut body = String::with_capacity(assertion.len() + 96);
        body.push_str("grant_type=");
        form_encode_into(JWT_BEARER_GRANT_TYPE, &mut body);
        body.push_str("&assertion=");
        form_encode_into(&assertion, &mut body);
        Ok(body)
    }
}

#[derive(Serialize)]
struct JwtHeader<'a> {
    alg: &'static str,
    typ: &'static str,
    kid: &'a str,
}

#[derive(Serialize)]
struct JwtClaims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

/// An access token and when it stops working.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    /// Sent as `Authorization: Bearer <token>`.
    pub token: String,
    /// `now + expires_in` at the time the response was read.
    pub expires_at_unix: u64,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"<redacted>")
            .field("expires_at_unix", &self.expires_at_unix)
            .finish()
    }
}

impl AccessToken {
    /// Whether the token expires within `margin_secs` of `now_unix` (or already has).
    pub fn refresh_due(&self, now_unix: u64, margin_secs: u64) -> bool {
        now_unix.saturating_add(margin_secs) >= self.expires_at_unix
    }
}

/// Reads the token endpoint's answer, received at `now_unix`. A 2xx body must carry
/// `access_token` and `expires_in` (seconds, a number or a numeric string); `token_type`, when
/// present, must be `Bearer` (any case). An `error` body becomes [`VertexAuthError::TokenEndpoint`]
/// with `error_description` (Google's `{"error":{"status","message"}}` form is read as well).
pub fn parse_token_response(status: u16, body: &[u8], now_unix: u64) -> Result<AccessToken, VertexAuthError> {
    let malformed = |reason: &str| VertexAuthError::TokenResponse { status, reason: reason.to_owned() };
    let obj = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(obj)) => Some(obj),
        _ => None,
    };
    let success = (200..300).contains(&status);
    if let Some(obj) = &obj
        && (!success || !obj.contains_key("access_token"))
        && let Some(err) = oauth_error(status, obj)
    {
        return Err(err);
    }
    if !success {
        return Err(malformed(if obj.is_some() {
            "error body without an OAuth2 `error` field"
        } else {
            "error body is not a JSON object"
        }));
    }
    let Some(obj) = obj else {
        return Err(malformed("body is not a JSON object"));
    };
    let token = match obj.get("access_token") {
        Some(Value::String(t)) if !t.is_empty() => t.clone(),
        Some(_) => return Err(malformed("`access_token` is not a non-empty string")),
        None => return Err(malformed("`access_token` is missing")),
    };
    match obj.get("token_type") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if t.eq_ignore_ascii_case("bearer") => {}
        Some(Value::String(t)) => {
            return Err(malformed(&format!("`token_type` is {:?}, not \"Bearer\"", truncated(t))));
        }
        Some(_) => return Err(malformed("`token_type` is not a string")),
    }
    let expires_in = match obj.get("expires_in") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse::<u64>().ok(),
        None => return Err(malformed("`expires_in` is missing")),
        Some(_) => None,
    };
    let Some(expires_in) = expires_in else {
        return Err(malformed("`expires_in` is not a non-negative whole number of seconds"));
    };
    Ok(AccessToken { token, expires_at_unix: now_unix.saturating_add(expires_in) })
}

/// The OAuth2 error in `obj`, if it has one.
fn oauth_error(status: u16, obj: &Map<String, Value>) -> Option<VertexAuthError> {
    let text = |v: Option<&Value>| match v {
        Some(Value::String(s)) if !s.is_empty() => Some(truncated(s)),
        _ => None,
    };
    let (error, description) = match obj.get("error")? {
        Value::String(e) => (truncated(e), text(obj.get("error_description"))),
        Value::Object(e) => {
            let code = e.get("code").and_then(Value::as_u64).map(|c| c.to_string());
            (text(e.get("status")).or(code).unwrap_or_else(|| "unknown".to_owned()), text(e.get("message")))
        }
        _ => return None,
    };
    Some(VertexAuthError::TokenEndpoint { status, error, description })
}

/// `Some` non-empty string, `None` when absent or null.
fn optional_str<'a>(obj: &'a Map<String, Value>, field: &'static str) -> Result<Option<&'a str>, VertexAuthError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => {
            Err(VertexAuthError::InvalidField { field, reason: "is empty" })
        }
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(VertexAuthError::InvalidField { field, reason: "is not a string" }),
    }
}

fn required_str<'a>(obj: &'a Map<String, Value>, field: &'static str) -> Result<&'a str, VertexAuthError> {
    optional_str(obj, field)?.ok_or(VertexAuthError::MissingField(field))
}

/// `https://<host>...`, or `http://` to `localhost`, `127.0.0.1` or `[::1]`.
fn acceptable_token_uri(uri: &str) -> bool {
    let has_scheme = |scheme: &str| uri.get(..scheme.len()).is_some_and(|s| s.eq_ignore_ascii_case(scheme));
    let rest = |scheme: &str| uri.get(scheme.len()..).unwrap_or("");
    let authority = |rest: &str| rest.split(['/', '?', '#']).next().unwrap_or("").to_owned();
    if has_scheme("https://") {
        let authority = authority(rest("https://"));
        return !authority.is_empty() && !authority.contains('@');
    }
    if has_scheme("http://") {
        let authority = authority(rest("http://"));
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => authority.split(':').next().unwrap_or(""),
        };
        return host.eq_ignore_ascii_case("localhost") || host == "127.0.0.1" || host == "::1";
    }
    false
}

/// The DER inside a `-----BEGIN PRIVATE KEY-----` PEM block. Error reasons never quote the key.
fn pkcs8_der_from_pem(pem: &str) -> Result<Vec<u8>, VertexAuthError> {
    let Some(begin) = pem.find(PEM_BEGIN) else {
        return Err(VertexAuthError::PrivateKeyPem(if pem.contains("-----BEGIN RSA PRIVATE KEY-----") {
            "is a PKCS#1 key (BEGIN RSA PRIVATE KEY); a PKCS#8 key (BEGIN PRIVATE KEY) is expected"
        } else if pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
            "is encrypted; an unencrypted PKCS#8 key (BEGIN PRIVATE KEY) is expected"
        } else {
            "has no -----BEGIN PRIVATE KEY----- line"
        }));
    };
    let after = &pem[begin + PEM_BEGIN.len()..];
    let Some(end) = after.find(PEM_END) else {
        return Err(VertexAuthError::PrivateKeyPem("has no -----END PRIVATE KEY----- line"));
    };
    // Keys pasted through an environment variable often keep `\n` as two characters; base64
    // has no backslash, so dropping them is safe.
    let body: String = after[..end].replace("\\n", "").chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if body.is_empty() {
        return Err(VertexAuthError::PrivateKeyPem("has an empty PEM body"));
    }
    STANDARD.decode(body.as_bytes()).map_err(|_| VertexAuthError::PrivateKeyPem("has a PEM body that is not base64"))
}

/// Percent-encodes all but RFC 3986 unreserved characters (valid form-urlencoding).
fn form_encode_into(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

/// Endpoint- or file-supplied text, bounded for error messages.
fn truncated(s: &str) -> String {
    if s.len() <= MAX_ERROR_TEXT {
        return s.to_owned();
    }
    let mut end = MAX_ERROR_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests;
