//! Bearer JWTs from configured OIDC issuers, verified as pure code and mapped to caller claims.
//!
//! The YAML section `auth.issuers` is a list of [`IssuerSpec`]. Each compiles into an
//! [`IssuerVerifier`]; [`Issuers`] holds them all and picks one by the token's (unverified)
//! `iss`, then checks everything. Nothing here does I/O: the engine fetches the JWKS document
//! (from `jwks_url`, or from the `jwks_uri` of `{issuer}/.well-known/openid-configuration`, see
//! [`IssuerVerifier::jwks_source`] and [`discovery_jwks_uri`]), parses it with [`Jwks::parse`] and
//! hands it to [`Issuers::set_jwks`], again every `refresh`.
//!
//! Only the JOSE framing is done here (RFC 7515/7517/7518/7519/8037); the signatures are checked
//! by `ring`. Supported: RS256/384/512, PS256/384/512 (RSA keys of 2048 to 8192 bits), ES256,
//! ES384 and EdDSA (Ed25519). `none` and the HMAC algorithms (HS*) are refused: an issuer's keys
//! are public, so a symmetric algorithm would let anyone who has the JWKS mint tokens.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use foldhash::fast::RandomState;
use ring::signature::{self, RsaParameters, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::PolicyError;
use crate::spec::Role;

/// Longest token accepted, in bytes (tokens carrying many groups reach about 8 KiB).
pub const MAX_TOKEN_LEN: usize = 32 * 1024;

// ---------------------------------------------------------------------------------------------
// Spec
// ---------------------------------------------------------------------------------------------

/// `auth.issuers[]`: one OIDC issuer whose tokens are accepted.
///
/// ```yaml
/// - issuer: https://login.example.com
///   audience: [shardgate]
///   jwks_url: https://login.example.com/.well-known/jwks.json
///   refresh: 10m
///   leeway: 60s
///   algorithms: [RS256, ES256]
///   claims: {user: email, team: groups, role: realm_access.roles, environment: env}
///   roles: {shardgate-admins: org_admin, search-leads: team_admin}
///   default_role: member
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSpec {
    /// Must equal the token's `iss` exactly (no trailing-slash normalization).
    pub issuer: String,
    /// Accepted audiences (a string or a list; required, non-empty): the token's `aud` (a string
    /// or an array) must contain one of them.
    #[serde(deserialize_with = "one_or_many")]
    pub audience: Vec<String>,
    /// Where the JWKS document is. When absent it is discovered: the `jwks_uri` of
    /// `{issuer}/.well-known/openid-configuration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// How often the JWKS is fetched again, as a humantime duration (`30s`, `10m`, `1h`). Default
    /// `10m`. Parsed and checked when the verifier is built ([`IssuerVerifier::refresh`]).
    #[serde(default = "default_refresh")]
    pub refresh: String,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, as a humantime duration. Default `60s`.
    #[serde(default = "default_leeway")]
    pub leeway: String,
    /// Algorithms accepted. Default: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384,
    /// EdDSA. `none` and HS* are refused at load.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<Algorithm>,
    /// Which claims carry the caller's identity.
    #[serde(default)]
    pub claims: ClaimsSpec,
    /// Role claim value → role. Values not listed here grant nothing; when no value matches, the
    /// caller gets `default_role`. When several match, the most privileged wins.
    #[serde(default)]
    pub roles: BTreeMap<String, Role>,
    /// The role of a caller whose role claim maps to nothing (or who has none). Default `member`.
    #[serde(default)]
    pub default_role: Role,
}

/// `auth.issuers[].claims`: claim names. A name is looked up as a top-level claim first (so
/// `https://example.com/roles` works), then, if it contains dots, as a path into nested objects
/// (`realm_access.roles`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimsSpec {
    /// The caller's user name (a string claim; required in every token). Default `sub`.
    pub user: String,
    /// The caller's teams: a string or an array of strings. All values are kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// The caller's roles: a string or an array of strings, mapped through `roles`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The caller's environment (a string claim).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
}

impl Default for ClaimsSpec {
    fn default() -> Self {
        ClaimsSpec { user: "sub".to_owned(), team: None, role: None, environment: None }
    }
}

fn default_refresh() -> String {
    "10m".to_owned()
}

fn default_leeway() -> String {
    "60s".to_owned()
}

fn default_algorithms() -> Vec<Algorithm> {
    Algorithm::ALL.to_vec()
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// A JWS algorithm this module verifies (RFC 7518 names in YAML and in tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    EdDsa,
}

impl Algorithm {
    pub const ALL: [Algorithm; 9] = [
        Algorithm::Rs256,
        Algorithm::Rs384,
        Algorithm::Rs512,
        Algorithm::Ps256,
        Algorithm::Ps384,
        Algorithm::Ps512,
        Algorithm::Es256,
        Algorithm::Es384,
        Algorithm::EdDsa,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Rs384 => "RS384",
            Algorithm::Rs512 => "RS512",
            Algorithm::Ps256 => "PS256",
            Algorithm::Ps384 => "PS384",
            Algorithm::Ps512 => "PS512",
            Algorithm::Es256 => "ES256",
            Algorithm::Es384 => "ES384",
            Algorithm::EdDsa => "EdDSA",
        }
    }

    /// The algorithm named `s` (exact, case-sensitive as in JOSE), if supported.
    pub fn parse(s: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.as_str() == s)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }

    fn rsa_params(self) -> Option<&'static RsaParameters> {
        Some(match self {
            Algorithm::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Algorithm::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Algorithm::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            Algorithm::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
            Algorithm::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
            Algorithm::Ps512 => &signature::RSA_PSS_2048_8192_SHA512,
            Algorithm::Es256 | Algorithm::Es384 | Algorithm::EdDsa => return None,
        })
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Algorithm {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Algorithm {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if let Some(alg) = Algorithm::parse(&s) {
            return Ok(alg);
        }
        let why = if s.eq_ignore_ascii_case("none") {
            "unsigned tokens are never accepted".to_owned()
        } else if s.starts_with("HS") {
            "HMAC algorithms need a shared secret; an issuer's keys are public".to_owned()
        } else {
            let all: Vec<&str> = Algorithm::ALL.iter().map(|a| a.as_str()).collect();
            format!("expected one of {}", all.join(", "))
        };
        Err(serde::de::Error::custom(format!("unsupported algorithm {s:?}: {why}")))
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why a token (or a JWKS / discovery document) was refused. The messages may be shown to the
/// client in a 401; values echoed from the token are cut to 64 characters and cleaned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("token issuer is not accepted")]
    UnknownIssuer,
    #[error("token algorithm {0:?} is not accepted")]
    UnsupportedAlgorithm(String),
    #[error("no signing key matches the token (kid {0:?})")]
    UnknownKey(String),
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token audience is not accepted")]
    WrongAudience,
    #[error("token lacks the claim {0:?}")]
    MissingClaim(String),
    #[error("token claim {0:?} has an invalid value")]
    InvalidClaim(String),
    #[error("the issuer's signing keys have not been fetched yet")]
    NoKeysYet,
    #[error("invalid JWKS document: {0}")]
    InvalidJwks(&'static str),
    #[error("invalid OpenID discovery document: {0}")]
    InvalidDiscovery(&'static str),
}

impl JwtError {
    /// A stable snake_case code for API errors and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            JwtError::Malformed(_) => "malformed_token",
            JwtError::UnknownIssuer => "unknown_issuer",
            JwtError::UnsupportedAlgorithm(_) => "unsupported_algorithm",
            JwtError::UnknownKey(_) => "unknown_signing_key",
            JwtError::BadSignature => "invalid_token_signature",
            JwtError::Expired => "token_expired",
            JwtError::NotYetValid => "token_not_yet_valid",
            JwtError::WrongAudience => "invalid_audience",
            JwtError::MissingClaim(_) => "missing_claim",
            JwtError::InvalidClaim(_) => "invalid_claim",
            JwtError::NoKeysYet => "signing_keys_unavailable",
            JwtError::InvalidJwks(_) => "invalid_jwks",
            JwtError::InvalidDiscovery(_) => "invalid_discovery_document",
        }
    }
}

/// `s` cut to 64 characters, control characters replaced: safe to put in a message or a log.
fn echo(s: &str) -> String {
    s.chars().take(64).map(|c| if c.is_control() { '?' } else { c }).collect()
}

// ---------------------------------------------------------------------------------------------
// Cheap classification
// ---------------------------------------------------------------------------------------------

/// Whether `s` has the shape of a compact JWS (three dot-separated base64url segments, the first
/// starting with `eyJ`, i.e. `{"`). Cheap, no decoding: tells a JWT from a virtual key.
pub fn looks_like_jwt(s: &str) -> bool {
    if !s.starts_with("eyJ") || s.len() > MAX_TOKEN_LEN {
        return false;
    }
    let mut dots = 0usize;
    let mut segment_len = 0usize;
    for b in s.bytes() {
        match b {
            b'.' => {
                // The header and the payload may not be empty (the signature may, for `none`).
                if segment_len == 0 {
                    return false;
                }
                dots += 1;
                segment_len = 0;
            }
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => segment_len += 1,
            _ => return false,
        }
    }
    dots == 2
}

// ---------------------------------------------------------------------------------------------
// JWKS and discovery
// ---------------------------------------------------------------------------------------------

/// The verification keys of one issuer, parsed from a JWKS document (RFC 7517). The public keys
/// are decoded once here; verification only runs the math.
#[derive(Debug, Default)]
pub struct Jwks {
    keys: Vec<Jwk>,
    by_kid: std::collections::HashMap<String, Vec<usize>, RandomState>,
    skipped: usize,
}

#[derive(Debug)]
struct Jwk {
    kid: Option<String>,
    /// The key's `alg`, when it names one: then only that algorithm may use it.
    alg: Option<Algorithm>,
    key: KeyMaterial,
}

#[derive(Debug)]
enum KeyMaterial {
    Rsa(RsaPublicKeyComponents<Vec<u8>>),
    /// Verifies ES256 (uncompressed point).
    EcP256(UnparsedPublicKey<Vec<u8>>),
    /// Verifies ES384 (uncompressed point).
    EcP384(UnparsedPublicKey<Vec<u8>>),
    /// Verifies EdDSA.
    Ed25519(UnparsedPublicKey<Vec<u8>>),
}

impl KeyMaterial {
    fn supports(&self, alg: Algorithm) -> bool {
        match self {
            KeyMaterial::Rsa(_) => alg.rsa_params().is_some(),
            KeyMaterial::EcP256(_) => alg == Algorithm::Es256,
            KeyMaterial::EcP384(_) => alg == Algorithm::Es384,
            KeyMaterial::Ed25519(_) => alg == Algorithm::EdDsa,
        }
    }

    fn verify(&self, alg: Algorithm, message: &[u8], sig: &[u8]) -> bool {
        match self {
            KeyMaterial::Rsa(components) => {
                alg.rsa_params().is_some_and(|params| components.verify(params, message, sig).is_ok())
            }
            KeyMaterial::EcP256(k) | KeyMaterial::EcP384(k) | KeyMaterial::Ed25519(k) => {
                self.supports(alg) && k.verify(message, sig).is_ok()
            }
        }
    }
}

impl Jwk {
    fn usable_with(&self, alg: Algorithm) -> bool {
        self.alg.is_none_or(|a| a == alg) && self.key.supports(alg)
    }
}

fn b64(v: &Value) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(v.as_str()?).ok()
}

fn strip_leading_zeros(mut bytes: &[u8]) -> &[u8] {
    while let [0, rest @ ..] = bytes {
        bytes = rest;
    }
    bytes
}

/// One JWK, or `None` when it is of a kind not used here (skipped, not an error).
fn parse_jwk(v: &Value) -> Option<Jwk> {
    let obj = v.as_object()?;
    let field = |name: &str| obj.get(name);
    let text = |name: &str| field(name).and_then(Value::as_str);
    if text("use").is_some_and(|u| u != "sig") || field("use").is_some_and(|u| !u.is_string()) {
        return None;
    }
    if let Some(ops) = field("key_ops") {
        let verify = ops.as_array().is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
        if !verify {
            return None;
        }
    }
    let alg = match field("alg") {
        None => None,
        Some(a) => Some(Algorithm::parse(a.as_str()?)?),
    };
    let key = match (text("kty")?, text("crv")) {
        ("RSA", _) => {
            let n = b64(field("n")?)?;
            let e = b64(field("e")?)?;
            let (n, e) = (strip_leading_zeros(&n), strip_leading_zeros(&e));
            // 2048 to 8192 bits (ring checks exactly); the exponent fits in 33 bits.
            if !(256..=1024).contains(&n.len()) || e.is_empty() || e.len() > 5 {
                return None;
            }
            KeyMaterial::Rsa(RsaPublicKeyComponents { n: n.to_vec(), e: e.to_vec() })
        }
        ("EC", Some(crv @ ("P-256" | "P-384"))) => {
            let x = b64(field("x")?)?;
            let y = b64(field("y")?)?;
            let len = if crv == "P-256" { 32 } else { 48 };
            if x.len() != len || y.len() != len {
                return None;
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            if crv == "P-256" {
                KeyMaterial::EcP256(UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point))
            } else {
                KeyMaterial::EcP384(UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point))
            }
        }
        ("OKP", Some("Ed25519")) => {
            let x = b64(field("x")?)?;
            if x.len() != signature::ED25519_PUBLIC_KEY_LEN {
                return None;
            }
            KeyMaterial::Ed25519(UnparsedPublicKey::new(&signature::ED25519, x))
        }
        _ => return None,
    };
    if alg.is_some_and(|a| !key.supports(a)) {
        return None;
    }
    let kid = match field("kid") {
        None => None,
        Some(k) => Some(k.as_str()?.to_owned()),
    };
    Some(Jwk { kid, alg, key })
}

impl Jwks {
    /// Parses a JWKS document (`{"keys": [...]}`). Keys of other types or curves (`oct`, P-521,
    /// Ed448, ...), for another `use` than `sig`, with `key_ops` lacking `verify`, with an `alg`
    /// not supported here, or malformed, are skipped (counted in [`Jwks::skipped`]). A document
    /// with no usable key parses (then every token fails with [`JwtError::UnknownKey`]); check
    /// [`Jwks::is_empty`] before replacing good keys with it.
    pub fn parse(bytes: &[u8]) -> Result<Jwks, JwtError> {
        let doc: Value = serde_json::from_slice(bytes).map_err(|_| JwtError::InvalidJwks("not JSON"))?;
        let list = doc.get("keys").and_then(Value::as_array).ok_or(JwtError::InvalidJwks("no \"keys\" array"))?;
        let mut jwks = Jwks::default();
        for v in list {
            match parse_jwk(v) {
                Some(jwk) => {
                    if let Some(kid) = &jwk.kid {
                        jwks.by_kid.entry(kid.clone()).or_default().push(jwks.keys.len());
                    }
                    jwks.keys.push(jwk);
                }
                None => jwks.skipped += 1,
            }
        }
        Ok(jwks)
    }

    /// Usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Keys of the document that were not usable.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Whether a usable key has this `kid` (a token naming an unknown one may mean a key
    /// rotation: time to fetch the JWKS again).
    pub fn contains_kid(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }

    /// The `kid`s of the usable keys.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().filter_map(|k| k.kid.as_deref())
    }

    /// Whether `signature` over `message` is valid for one of the keys `kid` names (all keys
    /// when the token has no `kid`) that may be used with `alg`.
    fn verify(&self, alg: Algorithm, kid: Option<&str>, message: &[u8], sig: &[u8]) -> Result<(), JwtError> {
        let mut tried = false;
        let mut check = |jwk: &Jwk| {
            if !jwk.usable_with(alg) {
                return false;
            }
            tried = true;
            jwk.key.verify(alg, message, sig)
        };
        let ok = match kid {
            Some(kid) => {
                self.by_kid.get(kid).is_some_and(|ids| ids.iter().filter_map(|&i| self.keys.get(i)).any(&mut check))
            }
            None => self.keys.iter().any(&mut check),
        };
        match (ok, tried) {
            (true, _) => Ok(()),
            (false, true) => Err(JwtError::BadSignature),
            (false, false) => Err(JwtError::UnknownKey(kid.map(echo).unwrap_or_default())),
        }
    }
}

/// The `jwks_uri` of an OpenID Connect discovery document
/// (`{issuer}/.well-known/openid-configuration`).
pub fn discovery_jwks_uri(bytes: &[u8]) -> Result<String, JwtError> {
    #[derive(Deserialize)]
    struct Discovery {
        jwks_uri: Option<String>,
    }
    let doc: Discovery = serde_json::from_slice(bytes).map_err(|_| JwtError::InvalidDiscovery("not a JSON object"))?;
    match doc.jwks_uri {
        Some(uri) if uri.starts_with("https://") || uri.starts_with("http://") => Ok(uri),
        Some(_) => Err(JwtError::InvalidDiscovery("jwks_uri is not an http(s) URL")),
        None => Err(JwtError::InvalidDiscovery("no jwks_uri")),
    }
}

// ---------------------------------------------------------------------------------------------
// Token parsing
// ---------------------------------------------------------------------------------------------

/// A decoded but not yet verified token.
struct Token<'t> {
    alg: Algorithm,
    kid: Option<String>,
    /// `header.payload`, what the signature covers.
    signing_input: &'t [u8],
    signature: Vec<u8>,
    claims: Map<String, Value>,
}

#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    kid: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
}

fn decode_segment(segment: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD.decode(segment).map_err(|_| JwtError::Malformed("invalid base64url"))
}

impl<'t> Token<'t> {
    fn parse(token: &'t str) -> Result<Token<'t>, JwtError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(JwtError::Malformed("token too large"));
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(JwtError::Malformed("a JWT has three dot-separated parts"));
        };
        if h.is_empty() || p.is_empty() {
            return Err(JwtError::Malformed("empty header or payload"));
        }
        let header_json = decode_segment(h)?;
        let header: Header<'_> =
            serde_json::from_slice(&header_json).map_err(|_| JwtError::Malformed("invalid header"))?;
        if header.crit.is_some() {
            return Err(JwtError::Malformed("unsupported critical header parameters"));
        }
        let alg = Algorithm::parse(&header.alg).ok_or_else(|| JwtError::UnsupportedAlgorithm(echo(&header.alg)))?;
        let kid = header.kid.map(|k| k.into_owned());
        let claims: Map<String, Value> =
            serde_json::from_slice(&decode_segment(p)?).map_err(|_| JwtError::Malformed("invalid payload"))?;
        let signature = decode_segment(s)?;
        let signing_input =
            token.as_bytes().get(..h.len() + 1 + p.len()).ok_or(JwtError::Malformed("truncated token"))?;
        Ok(Token { alg, kid, signing_input, signature, claims })
    }
}

/// The token's `iss`, unverified (to tell which issuer's JWKS to refetch after
/// [`JwtError::UnknownKey`], say). `None` when the token does not parse.
pub fn unverified_issuer(token: &str) -> Option<String> {
    let t = Token::parse(token).ok()?;
    t.claims.get("iss").and_then(Value::as_str).map(str::to_owned)
}

// ---------------------------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------------------------

/// What a verified token says about its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtClaims {
    /// The issuer (as configured, shared).
    pub issuer: Arc<str>,
    /// `sub`, or the user claim's value when the token has no `sub`.
    pub subject: String,
    /// The user claim's value (`claims.user`).
    pub user: String,
    /// The team claim's values, in token order (empty without a team claim).
    pub teams: Vec<String>,
    /// The most privileged role the role claim maps to, else `default_role`.
    pub role: Role,
    pub environment: Option<String>,
    /// `exp`, in Unix seconds (cache the result no longer than this).
    pub expires_at: u64,
}

/// Where the engine gets an issuer's JWKS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// The configured `jwks_url`.
    Url(String),
    /// No `jwks_url`: fetch this discovery document, take its `jwks_uri`
    /// ([`discovery_jwks_uri`]), fetch that.
    Discovery(String),
}

impl JwksSource {
    pub fn url(&self) -> &str {
        match self {
            JwksSource::Url(u) | JwksSource::Discovery(u) => u,
        }
    }
}

/// A claim name: a top-level key, or failing that a dotted path into nested objects.
#[derive(Debug, Clone)]
struct ClaimPath {
    name: String,
    parts: Vec<String>,
}

impl ClaimPath {
    fn new(name: &str) -> Option<ClaimPath> {
        if name.is_empty() {
            return None;
        }
        let parts: Vec<String> = name.split('.').map(str::to_owned).collect();
        let parts = if parts.len() > 1 && parts.iter().all(|p| !p.is_empty()) { parts } else { Vec::new() };
        Some(ClaimPath { name: name.to_owned(), parts })
    }

    fn lookup<'c>(&self, claims: &'c Map<String, Value>) -> Option<&'c Value> {
        if let Some(v) = claims.get(self.name.as_str()) {
            return Some(v);
        }
        let (first, rest) = self.parts.split_first()?;
        let mut cur = claims.get(first.as_str())?;
        for part in rest {
            cur = cur.as_object()?.get(part.as_str())?;
        }
        Some(cur)
    }
}

/// The strings of a claim that is a string or an array (non-strings in the array are ignored).
fn str_values(v: &Value) -> impl Iterator<Item = &str> {
    let (one, many): (Option<&str>, &[Value]) = match v {
        Value::String(s) => (Some(s.as_str()), &[]),
        Value::Array(a) => (None, a.as_slice()),
        _ => (None, &[]),
    };
    one.into_iter().chain(many.iter().filter_map(Value::as_str))
}

/// A NumericDate (RFC 7519: seconds, possibly fractional, here floored).
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, JwtError> {
    let Some(v) = claims.get(name) else { return Ok(None) };
    if let Some(n) = v.as_u64() {
        return Ok(Some(n));
    }
    match v.as_f64() {
        Some(f) if f.is_finite() && f >= 0.0 => Ok(Some(f as u64)),
        _ => Err(JwtError::InvalidClaim(name.to_owned())),
    }
}

/// How much a role may do (higher wins when a token maps to several).
fn privilege(role: Role) -> u8 {
    match role {
        Role::OrgAdmin => 3,
        Role::TeamAdmin => 2,
        Role::Member => 1,
        Role::Viewer => 0,
    }
}

/// The settings of one issuer, compiled.
#[derive(Debug)]
struct IssuerConfig {
    issuer: Arc<str>,
    audience: Vec<String>,
    /// Bit set of [`Algorithm::bit`].
    algorithms: u16,
    leeway: u64,
    refresh: Duration,
    source: JwksSource,
    user: ClaimPath,
    team: Option<ClaimPath>,
    role: Option<ClaimPath>,
    environment: Option<ClaimPath>,
    roles: std::collections::HashMap<String, Role, RandomState>,
    default_role: Role,
}

/// Verifies the tokens of one issuer. Cheap to clone (the settings and keys are shared).
#[derive(Debug, Clone)]
pub struct IssuerVerifier {
    config: Arc<IssuerConfig>,
    keys: Option<Arc<Jwks>>,
}

fn duration(field: &str, text: &str) -> Result<Duration, PolicyError> {
    humantime::parse_duration(text.trim())
        .map_err(|e| PolicyError::new(field, format!("invalid duration {text:?} ({e}); write e.g. 30s, 10m")))
}

fn claim_path(field: &str, name: &str) -> Result<ClaimPath, PolicyError> {
    ClaimPath::new(name).ok_or_else(|| PolicyError::new(field, "a claim name may not be empty"))
}

impl IssuerVerifier {
    /// Compiles `spec`, without keys yet (tokens fail with [`JwtError::NoKeysYet`] until
    /// [`IssuerVerifier::set_jwks`]). Error fields are relative to the issuer entry (`leeway`).
    pub fn new(spec: &IssuerSpec) -> Result<IssuerVerifier, PolicyError> {
        if spec.issuer.trim().is_empty() {
            return Err(PolicyError::new("issuer", "required"));
        }
        if spec.audience.is_empty() || spec.audience.iter().any(|a| a.is_empty()) {
            return Err(PolicyError::new("audience", "list at least one audience; none may be empty"));
        }
        let algorithms = spec.algorithms.iter().fold(0u16, |set, a| set | a.bit());
        if algorithms == 0 {
            return Err(PolicyError::new("algorithms", "list at least one algorithm"));
        }
        let refresh = duration("refresh", &spec.refresh)?;
        if refresh.is_zero() {
            return Err(PolicyError::new("refresh", "must be more than zero"));
        }
        let leeway = duration("leeway", &spec.leeway)?.as_secs();
        let source = match &spec.jwks_url {
            Some(url) if url.trim().is_empty() => return Err(PolicyError::new("jwks_url", "may not be empty")),
            Some(url) => JwksSource::Url(url.clone()),
            None => JwksSource::Discovery(format!(
                "{}/.well-known/openid-configuration",
                spec.issuer.strip_suffix('/').unwrap_or(&spec.issuer)
            )),
        };
        let optional = |field: &str, name: &Option<String>| name.as_deref().map(|n| claim_path(field, n)).transpose();
        if let Some(value) = spec.roles.keys().find(|k| k.is_empty()) {
            return Err(PolicyError::new("roles", format!("empty claim value {value:?}")));
        }
        let config = IssuerConfig {
            issuer: Arc::from(spec.issuer.as_str()),
            audience: spec.audience.clone(),
            algorithms,
            leeway,
            refresh,
            source,
            user: claim_path("claims.user", &spec.claims.user)?,
            team: optional("claims.team", &spec.claims.team)?,
            role: optional("claims.role", &spec.claims.role)?,
            environment: optional("claims.environment", &spec.claims.environment)?,
            roles: spec.roles.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            default_role: spec.default_role,
        };
        Ok(IssuerVerifier { config: Arc::new(config), keys: None })
    }

    /// Replaces the keys (after a fetch).
    pub fn set_jwks(&mut self, jwks: Jwks) {
        self.keys = Some(Arc::new(jwks));
    }

    /// A copy of this verifier with `jwks` as its keys.
    pub fn with_jwks(&self, jwks: Jwks) -> IssuerVerifier {
        IssuerVerifier { config: Arc::clone(&self.config), keys: Some(Arc::new(jwks)) }
    }

    /// The current keys, if fetched.
    pub fn jwks(&self) -> Option<&Jwks> {
        self.keys.as_deref()
    }

    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// How often to fetch the JWKS again (`refresh`).
    pub fn refresh(&self) -> Duration {
        self.config.refresh
    }

    /// The clock skew tolerated, in seconds (`leeway`).
    pub fn leeway_secs(&self) -> u64 {
        self.config.leeway
    }

    pub fn jwks_source(&self) -> &JwksSource {
        &self.config.source
    }

    /// Verifies `token` (the compact JWS, without `Bearer `) at `now_unix_secs`.
    pub fn verify(&self, token: &str, now_unix_secs: u64) -> Result<JwtClaims, JwtError> {
        self.verify_token(&Token::parse(token)?, now_unix_secs)
    }

    fn verify_token(&self, t: &Token<'_>, now: u64) -> Result<JwtClaims, JwtError> {
        let cfg = &*self.config;
        if cfg.algorithms & t.alg.bit() == 0 {
            return Err(JwtError::UnsupportedAlgorithm(t.alg.as_str().to_owned()));
        }
        match t.claims.get("iss") {
            Some(Value::String(iss)) if **iss == *cfg.issuer => {}
            Some(_) => return Err(JwtError::UnknownIssuer),
            None => return Err(JwtError::MissingClaim("iss".to_owned())),
        }
        let keys = self.keys.as_deref().ok_or(JwtError::NoKeysYet)?;
        keys.verify(t.alg, t.kid.as_deref(), t.signing_input, &t.signature)?;

        // The signature holds: now the claims.
        let claims = &t.claims;
        let expires_at = numeric_date(claims, "exp")?.ok_or_else(|| JwtError::MissingClaim("exp".to_owned()))?;
        if now >= expires_at.saturating_add(cfg.leeway) {
            return Err(JwtError::Expired);
        }
        let soonest = now.saturating_add(cfg.leeway);
        if numeric_date(claims, "nbf")?.is_some_and(|nbf| nbf > soonest) {
            return Err(JwtError::NotYetValid);
        }
        if numeric_date(claims, "iat")?.is_some_and(|iat| iat > soonest) {
            return Err(JwtError::NotYetValid);
        }
        let aud = claims.get("aud").ok_or_else(|| JwtError::MissingClaim("aud".to_owned()))?;
        if !str_values(aud).any(|a| cfg.audience.iter().any(|want| want == a)) {
            return Err(JwtError::WrongAudience);
        }

        let user = match cfg.user.lookup(claims) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(_) => return Err(JwtError::InvalidClaim(cfg.user.name.clone())),
            None => return Err(JwtError::MissingClaim(cfg.user.name.clone())),
        };
        let subject = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => user.clone(),
        };
        let teams = match cfg.team.as_ref().and_then(|p| p.lookup(claims)) {
            Some(v) => str_values(v).filter(|s| !s.is_empty()).map(str::to_owned).collect(),
            None => Vec::new(),
        };
        let role = cfg
            .role
            .as_ref()
            .and_then(|p| p.lookup(claims))
            .and_then(|v| str_values(v).filter_map(|s| cfg.roles.get(s).copied()).max_by_key(|r| privilege(*r)))
            .unwrap_or(cfg.default_role);
        let environment = match cfg.environment.as_ref().and_then(|p| p.lookup(claims)) {
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Null) | None => None,
            Some(_) => {
                return Err(JwtError::InvalidClaim(
                    cfg.environment.as_ref().map(|p| p.name.clone()).unwrap_or_default(),
                ));
            }
        };
        Ok(JwtClaims { issuer: Arc::clone(&cfg.issuer), subject, user, teams, role, environment, expires_at })
    }
}

/// All configured issuers: picks the verifier by the token's `iss`, then verifies everything.
/// Cheap to clone (verifiers share their settings and keys).
#[derive(Debug, Clone, Default)]
pub struct Issuers {
    verifiers: Vec<IssuerVerifier>,
}

impl Issuers {
    /// Compiles `auth.issuers`. Error fields are `auth.issuers[i].<field>`.
    pub fn new(specs: &[IssuerSpec]) -> Result<Issuers, PolicyError> {
        let mut verifiers: Vec<IssuerVerifier> = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let v = IssuerVerifier::new(spec)
                .map_err(|e| PolicyError::new(format!("auth.issuers[{i}].{}", e.field), e.message))?;
            if verifiers.iter().any(|o| o.issuer() == v.issuer()) {
                return Err(PolicyError::new(format!("auth.issuers[{i}].issuer"), "declared twice"));
            }
            verifiers.push(v);
        }
        Ok(Issuers { verifiers })
    }

    pub fn is_empty(&self) -> bool {
        self.verifiers.is_empty()
    }

    pub fn len(&self) -> usize {
        self.verifiers.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &IssuerVerifier> {
        self.verifiers.iter()
    }

    /// The verifier of `issuer` (exact match).
    pub fn get(&self, issuer: &str) -> Option<&IssuerVerifier> {
        self.verifiers.iter().find(|v| v.issuer() == issuer)
    }

    /// Takes `issuer`'s keys from `old` (a reload that kept the issuer's settings); false when
    /// either has no such issuer or `old` had no keys for it.
    pub fn keep_keys(&mut self, old: &Issuers, issuer: &str) -> bool {
        let Some(keys) = old.get(issuer).and_then(|v| v.keys.clone()) else { return false };
        match self.verifiers.iter_mut().find(|v| v.issuer() == issuer) {
            Some(v) => {
                v.keys = Some(keys);
                true
            }
            None => false,
        }
    }

    /// Installs fetched keys for `issuer`; false when no such issuer is configured.
    pub fn set_jwks(&mut self, issuer: &str, jwks: Jwks) -> bool {
        match self.verifiers.iter_mut().find(|v| v.issuer() == issuer) {
            Some(v) => {
                v.set_jwks(jwks);
                true
            }
            None => false,
        }
    }

    /// Verifies `token` against the issuer its `iss` names.
    pub fn verify(&self, token: &str, now_unix_secs: u64) -> Result<JwtClaims, JwtError> {
        let t = Token::parse(token)?;
        let verifier = match t.claims.get("iss") {
            Some(Value::String(iss)) => self.get(iss).ok_or(JwtError::UnknownIssuer)?,
            Some(_) => return Err(JwtError::UnknownIssuer),
            None => return Err(JwtError::MissingClaim("iss".to_owned())),
        };
        verifier.verify_token(&t, now_unix_secs)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
    use serde_json::json;

    use super::*;

    /// A 2048-bit RSA key made for these tests only (`openssl genpkey -algorithm RSA -pkeyopt
    /// rsa_keygen_bits:2048`, then `openssl pkcs8 -topk8 -nocrypt`), PKCS#8 DER in base64.
    const RSA_TEST_KEY: &[&str] = &[
        "MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQCaVrp05jA4roGTbdQNZy0rJ+knkiQoKW901BoIjAe8Ly2K/u/V",
        "yCD9ykHcssS9nle5M71cAeS5tvDk6xk1IOAJIFxW2xo0ed6WzfIwH1SldGFwk1Gzqv2kqsF+3IDKn4VwHKfeFLQKSHhnELjL029h",
        "/+dCSfy9jPC7iw+q4JtlTVZ697nGyEYfrWAedRjyq7uYBQsEBmQ1kXhYiNUt4R3twCD9XRsFPc56jszQ9ll7FZI67J/Jo0ofcjAK",
        "cWfOla51hO3qtHJ/CyPLKbAk09QLtRtvIFvvUL/sifu13tm/IS+jJ33A1+8SA4ULix3Qtk7GB6jvFhn0Cvuy4F3mGSkzAgMBAAEC",
        "ggEAHEoOVjQFHbaayJemeShyxojDuz2VxAjIRa1E8lEcb9lj6yjMdC6BIZOrm9Tmq+z0nl1F9bHhJ0tJf2Q6VBspBXM5ibASbxDx",
        "hEnOfRSZEtSwsY5HOPv8Du0/l026i6lOr5yJBnNcBtB+xUFy5eVk8p0R2fwux92oGHAmWIdf5GLOAQiWUzqJjn9v1H1xQUB57RqV",
        "AmjXpM7VipvoloF4nsaX7EWAcWfamNvLJeB4LMo8sYMjeFuBO9A9vaG3/JR/1pILDUw+dDR3mcjqzI4dVqnh/8NVAlD8OlDTU1BG",
        "HI/hzy7BwkvfHW+XvxH4F9qwi1DhU4ocYIqIxdaDM2Hc3QKBgQDXHdNikYyyHol1hGyfIReFrkQJRvyeIHSXrE8/I2mJRlCzRl8O",
        "Lj6Yo5Q98oAjFsvup54C3i3Xva/qlsRDh77NTPFKds67vV/f1MloYZv14Ll8CE84nkiTtFt5+8H6Sgc//wf8wlpF9Vsi+waDC0eR",
        "3ZJIVDzJd/9JwgGpHnhZ1QKBgQC3q9pJmBOijyhn9JFR8P9OUAlbDbbyaAupVDYF33XBgjts2AwsxBD5G/GjpMqVB2plAChDkqqd",
        "u4sQSz/+hIZV+VfWOtoNJG0t/DnCN4lHVRmCEFGTCXghPOEv23km1Pg2xrseeLqPHdCVJ4z8radqw5+ywBdn+hIqvuvVP+Ky5wKB",
        "gQCxs2e9kzLAqU0wEPaR9Yoy2iRF7agdD/6AlMzaAWzbA4UCs20uj7ER8n8xNTP4yIoqWbjD8bm48G9zwJvclTRe7+Kbes2IdQXQ",
        "Jz1BxvBJCxzugwa+ZLLboS+38uro0WJv0UNN31cnV2mz2d4lPpoeuwRuT3fvjfsLeQJaLFuLCQKBgCQzXfnFXJFcr/UVUhMZceiI",
        "g9+La3SJp0q/i0pLCdWTCo1gY73rAwFmTZEYaMlIxeKUTltLLA+cqEMU4c8TZbrKQ1K5FMMkW9SFcwjhk1AY6Mcm2j0lz6SVcDjT",
        "hCRwM1/weW7/Ep4knTjYq8QdofK8DdzYWYSn2C7OpILKba8fAoGBAJ8FhRc8soKvcHk+9kP71W5tgeh5Llu1GMyuHysK83FjMqOj",
        "mSyQbue1hB1NCYS8ozg12tLfA3jCgnJ46JLCHwACf8+hl0KvsFtVGQt5Y3biqvV/UiNcluJvNttk10TdqvRBZ04p7skHWX5VR9Oj",
        "x+Ueaqnmo50lR4DkK8PKAObV",
    ];

    const ISS: &str = "https://login.example.com";
    const NOW: u64 = 1_800_000_000;

    fn enc(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    struct Keys {
        rsa: RsaKeyPair,
        es256: EcdsaKeyPair,
        es384: EcdsaKeyPair,
        ed: Ed25519KeyPair,
        jwks: Value,
    }

    fn keys() -> Keys {
        let rng = SystemRandom::new();
        let der = base64::engine::general_purpose::STANDARD.decode(RSA_TEST_KEY.concat()).unwrap();
        let rsa = RsaKeyPair::from_pkcs8(&der).unwrap();
        let ec = |alg| EcdsaKeyPair::from_pkcs8(alg, EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap().as_ref(), &rng);
        let es256 = ec(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let es384 = ec(&signature::ECDSA_P384_SHA384_FIXED_SIGNING).unwrap();
        let ed = Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref()).unwrap();
        let rsa_pub: RsaPublicKeyComponents<Vec<u8>> = rsa.public().into();
        let xy = |kp: &EcdsaKeyPair, len: usize| {
            let p = kp.public_key().as_ref();
            (enc(&p[1..1 + len]), enc(&p[1 + len..]))
        };
        let (x256, y256) = xy(&es256, 32);
        let (x384, y384) = xy(&es384, 48);
        // `rsa-any` has a leading zero on n, as some issuers write it.
        let mut padded_n = vec![0u8];
        padded_n.extend_from_slice(&rsa_pub.n);
        let jwks = json!({"keys": [
            {"kty": "RSA", "kid": "rsa1", "use": "sig", "alg": "RS256", "n": enc(&rsa_pub.n), "e": enc(&rsa_pub.e)},
            {"kty": "RSA", "kid": "rsa-any", "n": enc(&padded_n), "e": enc(&rsa_pub.e)},
            {"kty": "EC", "kid": "ec256", "crv": "P-256", "x": x256, "y": y256},
            {"kty": "EC", "kid": "ec384", "crv": "P-384", "x": x384, "y": y384, "key_ops": ["verify"]},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": enc(ed.public_key().as_ref())},
        ]});
        Keys { rsa, es256, es384, ed, jwks }
    }

    fn encode_unsigned(header: &Value, claims: &Value) -> String {
        format!("{}.{}", enc(header.to_string().as_bytes()), enc(claims.to_string().as_bytes()))
    }

    impl Keys {
        /// A token signed with the key `alg` calls for; `kid` goes in the header when given.
        fn sign(&self, alg: &str, kid: Option<&str>, claims: &Value) -> String {
            let rng = SystemRandom::new();
            let mut header = json!({"alg": alg, "typ": "JWT"});
            if let Some(kid) = kid {
                header["kid"] = json!(kid);
            }
            let input = encode_unsigned(&header, claims);
            let msg = input.as_bytes();
            let sig = match alg {
                "ES256" => self.es256.sign(&rng, msg).unwrap().as_ref().to_vec(),
                "ES384" => self.es384.sign(&rng, msg).unwrap().as_ref().to_vec(),
                "EdDSA" => self.ed.sign(msg).as_ref().to_vec(),
                _ => {
                    let padding: &dyn signature::RsaEncoding = match alg {
                        "RS256" => &signature::RSA_PKCS1_SHA256,
                        "RS384" => &signature::RSA_PKCS1_SHA384,
                        "RS512" => &signature::RSA_PKCS1_SHA512,
                        "PS256" => &signature::RSA_PSS_SHA256,
                        "PS384" => &signature::RSA_PSS_SHA384,
                        "PS512" => &signature::RSA_PSS_SHA512,
                        other => panic!("no signer for {other}"),
                    };
                    let mut sig = vec![0; self.rsa.public().modulus_len()];
                    self.rsa.sign(padding, &rng, msg, &mut sig).unwrap();
                    sig
                }
            };
            format!("{input}.{}", enc(&sig))
        }
    }

    fn spec() -> IssuerSpec {
        serde_saphyr::from_str(
            "issuer: https://login.example.com\n\
             audience: [shardgate, other]\n\
             claims: {user: email, team: groups, role: realm_access.roles, environment: env}\n\
             roles: {shardgate-admins: org_admin, search-leads: team_admin, readers: viewer}\n",
        )
        .unwrap()
    }

    fn claims() -> Value {
        json!({
            "iss": ISS, "aud": ["x", "shardgate"], "sub": "u-123", "email": "ada@example.com",
            "groups": ["search", "infra"], "env": "prod",
            "realm_access": {"roles": ["readers", "search-leads", "unmapped"]},
            "exp": NOW + 300, "iat": NOW - 10, "nbf": NOW - 10,
        })
    }

    fn setup_with(spec: &IssuerSpec) -> (Keys, IssuerVerifier) {
        let keys = keys();
        let jwks = Jwks::parse(keys.jwks.to_string().as_bytes()).unwrap();
        assert_eq!((jwks.len(), jwks.skipped()), (5, 0));
        let verifier = IssuerVerifier::new(spec).unwrap().with_jwks(jwks);
        (keys, verifier)
    }

    fn setup() -> (Keys, IssuerVerifier) {
        setup_with(&spec())
    }

    fn with(mut claims: Value, patch: Value) -> Value {
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        claims
    }

    #[test]
    fn spec_yaml_shape_and_defaults() {
        let full: IssuerSpec = serde_saphyr::from_str(
            "issuer: https://login.example.com\n\
             audience: [shardgate]\n\
             jwks_url: https://login.example.com/.well-known/jwks.json\n\
             refresh: 5m\n\
             leeway: 30s\n\
             algorithms: [RS256, ES256, EdDSA]\n\
             claims: {user: email, team: groups, role: roles, environment: env}\n\
             roles: {shardgate-admins: org_admin, search-leads: team_admin}\n\
             default_role: viewer\n",
        )
        .unwrap();
        assert_eq!(full.algorithms, vec![Algorithm::Rs256, Algorithm::Es256, Algorithm::EdDsa]);
        assert_eq!(full.roles.get("search-leads"), Some(&Role::TeamAdmin));
        assert_eq!(full.default_role, Role::Viewer);
        let v = IssuerVerifier::new(&full).unwrap();
        assert_eq!((v.refresh(), v.leeway_secs()), (Duration::from_secs(300), 30));
        assert_eq!(v.jwks_source(), &JwksSource::Url("https://login.example.com/.well-known/jwks.json".into()));

        let minimal: IssuerSpec = serde_saphyr::from_str("issuer: https://idp.test/\naudience: gw\n").unwrap();
        assert_eq!(minimal.audience, vec!["gw".to_owned()]);
        assert_eq!(minimal.algorithms, Algorithm::ALL.to_vec());
        assert_eq!((minimal.refresh.as_str(), minimal.leeway.as_str()), ("10m", "60s"));
        assert_eq!((minimal.claims.user.as_str(), minimal.default_role), ("sub", Role::Member));
        let v = IssuerVerifier::new(&minimal).unwrap();
        assert_eq!((v.refresh(), v.leeway_secs()), (Duration::from_secs(600), 60));
        assert_eq!(v.jwks_source(), &JwksSource::Discovery("https://idp.test/.well-known/openid-configuration".into()));

        // Round trip through Serialize.
        let yaml = serde_saphyr::to_string(&full).unwrap();
        assert_eq!(serde_saphyr::from_str::<IssuerSpec>(&yaml).unwrap(), full);

        for bad in [
            "issuer: x\naudience: [a]\nextra: 1\n",
            "issuer: x\n",
            "issuer: x\naudience: [a]\nalgorithms: [none]\n",
            "issuer: x\naudience: [a]\nalgorithms: [HS256]\n",
            "issuer: x\naudience: [a]\nalgorithms: [ES512]\n",
            "issuer: x\naudience: [a]\nclaims: {usr: email}\n",
            "issuer: x\naudience: [a]\nroles: {g: superuser}\n",
        ] {
            assert!(serde_saphyr::from_str::<IssuerSpec>(bad).is_err(), "{bad}");
        }
        let err = serde_saphyr::from_str::<IssuerSpec>("issuer: x\naudience: [a]\nalgorithms: [HS256]\n").unwrap_err();
        assert!(err.to_string().contains("HMAC"), "{err}");

        let compile = |yaml: &str| IssuerVerifier::new(&serde_saphyr::from_str(yaml).unwrap()).map(|_| ()).unwrap_err();
        assert_eq!(compile("issuer: x\naudience: []\n").field, "audience");
        assert_eq!(compile("issuer: x\naudience: [a]\nleeway: soon\n").field, "leeway");
        assert_eq!(compile("issuer: x\naudience: [a]\nrefresh: 0s\n").field, "refresh");
        assert_eq!(compile("issuer: x\naudience: [a]\nalgorithms: []\n").field, "algorithms");
        assert_eq!(compile("issuer: x\naudience: [a]\nclaims: {user: ''}\n").field, "claims.user");
        assert_eq!(compile("issuer: ''\naudience: [a]\n").field, "issuer");

        let twice = Issuers::new(&[minimal.clone(), minimal]).unwrap_err();
        assert_eq!(twice.field, "auth.issuers[1].issuer");
    }

    #[test]
    fn valid_token_maps_claims() {
        let (keys, v) = setup();
        let token = keys.sign("ES256", Some("ec256"), &claims());
        assert!(looks_like_jwt(&token));
        let c = v.verify(&token, NOW).unwrap();
        assert_eq!(
            c,
            JwtClaims {
                issuer: Arc::from(ISS),
                subject: "u-123".into(),
                user: "ada@example.com".into(),
                teams: vec!["search".into(), "infra".into()],
                // readers → viewer, search-leads → team_admin, unmapped → nothing: the highest wins.
                role: Role::TeamAdmin,
                environment: Some("prod".into()),
                expires_at: NOW + 300,
            }
        );
        assert_eq!(unverified_issuer(&token).as_deref(), Some(ISS));
    }

    #[test]
    fn every_algorithm_verifies() {
        let (keys, v) = setup();
        for (alg, kid) in [
            ("RS256", "rsa1"),
            ("RS256", "rsa-any"),
            ("RS384", "rsa-any"),
            ("RS512", "rsa-any"),
            ("PS256", "rsa-any"),
            ("PS384", "rsa-any"),
            ("PS512", "rsa-any"),
            ("ES256", "ec256"),
            ("ES384", "ec384"),
            ("EdDSA", "ed"),
        ] {
            let token = keys.sign(alg, Some(kid), &claims());
            assert_eq!(v.verify(&token, NOW).map(|c| c.user), Ok("ada@example.com".into()), "{alg} {kid}");
            // Without a kid, every key fit for the algorithm is tried.
            let token = keys.sign(alg, None, &claims());
            assert!(v.verify(&token, NOW).is_ok(), "{alg} without kid");
        }
        // rsa1 is pinned to RS256 by its `alg`.
        let token = keys.sign("PS256", Some("rsa1"), &claims());
        assert_eq!(v.verify(&token, NOW), Err(JwtError::UnknownKey("rsa1".into())));
    }

    #[test]
    fn role_mapping() {
        let (keys, v) = setup();
        let role = |claims: Value| v.verify(&keys.sign("EdDSA", Some("ed"), &claims), NOW).unwrap().role;
        let admin = with(claims(), json!({"realm_access": {"roles": ["readers", "shardgate-admins"]}}));
        assert_eq!(role(admin), Role::OrgAdmin);
        assert_eq!(role(with(claims(), json!({"realm_access": {"roles": "readers"}}))), Role::Viewer);
        assert_eq!(role(with(claims(), json!({"realm_access": {"roles": ["unmapped", 7]}}))), Role::Member);
        assert_eq!(role(with(claims(), json!({"realm_access": null}))), Role::Member);

        // A top-level claim whose name has dots wins over the nested path; a string team claim.
        let mut spec = spec();
        spec.claims = ClaimsSpec {
            user: "sub".into(),
            team: Some("team".into()),
            role: Some("https://example.com/roles".into()),
            environment: None,
        };
        spec.default_role = Role::Viewer;
        let (keys, v) = setup_with(&spec);
        let claims = with(claims(), json!({"https://example.com/roles": ["search-leads"], "team": "search"}));
        let c = v.verify(&keys.sign("ES384", Some("ec384"), &claims), NOW).unwrap();
        assert_eq!(
            (c.user.as_str(), c.role, c.teams, c.environment),
            ("u-123", Role::TeamAdmin, vec!["search".into()], None)
        );
        let no_role = with(claims, json!({"https://example.com/roles": null}));
        assert_eq!(v.verify(&keys.sign("ES384", Some("ec384"), &no_role), NOW).unwrap().role, Role::Viewer);
    }

    #[test]
    fn time_claims_with_leeway() {
        let (keys, v) = setup();
        let check = |patch: Value| v.verify(&keys.sign("ES256", Some("ec256"), &with(claims(), patch)), NOW);
        assert_eq!(check(json!({"exp": NOW - 61})), Err(JwtError::Expired));
        assert_eq!(check(json!({"exp": NOW - 60})), Err(JwtError::Expired));
        assert!(check(json!({"exp": NOW - 59})).is_ok(), "expired within the leeway");
        assert!(check(json!({"exp": (NOW + 10) as f64 + 0.5})).is_ok(), "fractional NumericDate");
        assert_eq!(check(json!({"exp": null})), Err(JwtError::MissingClaim("exp".into())));
        assert_eq!(check(json!({"exp": "tomorrow"})), Err(JwtError::InvalidClaim("exp".into())));
        assert_eq!(check(json!({"exp": -5})), Err(JwtError::InvalidClaim("exp".into())));
        assert_eq!(check(json!({"nbf": NOW + 61})), Err(JwtError::NotYetValid));
        assert!(check(json!({"nbf": NOW + 60})).is_ok(), "nbf within the leeway");
        assert_eq!(check(json!({"iat": NOW + 3600})), Err(JwtError::NotYetValid));
        assert!(check(json!({"iat": null, "nbf": null})).is_ok());
    }

    #[test]
    fn issuer_and_audience() {
        let (keys, v) = setup();
        let check = |patch: Value| v.verify(&keys.sign("ES256", Some("ec256"), &with(claims(), patch)), NOW);
        assert_eq!(check(json!({"iss": "https://evil.example.com"})), Err(JwtError::UnknownIssuer));
        assert_eq!(check(json!({"iss": "https://login.example.com/"})), Err(JwtError::UnknownIssuer));
        assert_eq!(check(json!({"iss": null})), Err(JwtError::MissingClaim("iss".into())));
        assert_eq!(check(json!({"aud": ["x", "y"]})), Err(JwtError::WrongAudience));
        assert_eq!(check(json!({"aud": "shardgate-dev"})), Err(JwtError::WrongAudience));
        assert_eq!(check(json!({"aud": null})), Err(JwtError::MissingClaim("aud".into())));
        assert!(check(json!({"aud": "other"})).is_ok());
        assert_eq!(check(json!({"email": null})), Err(JwtError::MissingClaim("email".into())));
        assert_eq!(check(json!({"email": 42})), Err(JwtError::InvalidClaim("email".into())));
    }

    #[test]
    fn multiple_issuers_pick_by_iss() {
        let keys = keys();
        let jwks = || Jwks::parse(keys.jwks.to_string().as_bytes()).unwrap();
        let other: IssuerSpec = serde_saphyr::from_str("issuer: https://other.test\naudience: [gw]\n").unwrap();
        let mut issuers = Issuers::new(&[spec(), other]).unwrap();
        let token = keys.sign("ES256", Some("ec256"), &claims());
        assert_eq!(issuers.verify(&token, NOW), Err(JwtError::NoKeysYet));
        assert!(issuers.set_jwks(ISS, jwks()));
        assert!(!issuers.set_jwks("https://nobody.test", jwks()));
        assert_eq!(issuers.verify(&token, NOW).unwrap().user, "ada@example.com");

        let theirs = with(claims(), json!({"iss": "https://other.test", "aud": "gw"}));
        let token = keys.sign("ES256", Some("ec256"), &theirs);
        assert_eq!(issuers.verify(&token, NOW), Err(JwtError::NoKeysYet));
        assert!(issuers.set_jwks("https://other.test", jwks()));
        let c = issuers.verify(&token, NOW).unwrap();
        assert_eq!((&*c.issuer, c.user.as_str(), c.teams.len()), ("https://other.test", "u-123", 0));

        let stranger = keys.sign("ES256", Some("ec256"), &with(claims(), json!({"iss": "https://x.test"})));
        assert_eq!(issuers.verify(&stranger, NOW), Err(JwtError::UnknownIssuer));
        let numeric = keys.sign("ES256", Some("ec256"), &with(claims(), json!({"iss": 5})));
        assert_eq!(issuers.verify(&numeric, NOW), Err(JwtError::UnknownIssuer));
    }

    #[test]
    fn bad_signatures() {
        let (keys, v) = setup();
        for (alg, kid) in [("RS256", "rsa1"), ("PS256", "rsa-any"), ("ES256", "ec256"), ("EdDSA", "ed")] {
            let token = keys.sign(alg, Some(kid), &claims());
            let (input, sig) = token.rsplit_once('.').unwrap();
            let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
            sig[10] ^= 0x01;
            let flipped = format!("{input}.{}", enc(&sig));
            assert_eq!(v.verify(&flipped, NOW), Err(JwtError::BadSignature), "{alg}");
            let truncated = format!("{input}.{}", enc(&sig[..sig.len() - 1]));
            assert_eq!(v.verify(&truncated, NOW), Err(JwtError::BadSignature), "{alg}");
            assert_eq!(v.verify(&format!("{input}."), NOW), Err(JwtError::BadSignature), "{alg}");
        }
        // The payload swapped under a valid signature.
        let token = keys.sign("ES256", Some("ec256"), &claims());
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = enc(with(claims(), json!({"email": "root@example.com"})).to_string().as_bytes());
        parts[1] = &forged;
        assert_eq!(v.verify(&parts.join("."), NOW), Err(JwtError::BadSignature));
        // Signed by a key of the same type that the JWKS does not have.
        let stranger = self::keys();
        let token = stranger.sign("ES256", Some("ec256"), &claims());
        assert_eq!(v.verify(&token, NOW), Err(JwtError::BadSignature));
    }

    #[test]
    fn refused_algorithms_and_keys() {
        let (keys, v) = setup();
        let none = format!("{}.", encode_unsigned(&json!({"alg": "none"}), &claims()));
        assert!(looks_like_jwt(&none));
        assert_eq!(v.verify(&none, NOW), Err(JwtError::UnsupportedAlgorithm("none".into())));
        let hs = format!("{}.c2ln", encode_unsigned(&json!({"alg": "HS256", "kid": "rsa1"}), &claims()));
        assert_eq!(v.verify(&hs, NOW), Err(JwtError::UnsupportedAlgorithm("HS256".into())));
        let missing = format!("{}.c2ln", encode_unsigned(&json!({"typ": "JWT"}), &claims()));
        assert!(matches!(v.verify(&missing, NOW), Err(JwtError::Malformed(_))));

        // Supported, but not allowed for this issuer.
        let mut only_rs = spec();
        only_rs.algorithms = vec![Algorithm::Rs256];
        let (keys2, strict) = setup_with(&only_rs);
        let token = keys2.sign("ES256", Some("ec256"), &claims());
        assert_eq!(strict.verify(&token, NOW), Err(JwtError::UnsupportedAlgorithm("ES256".into())));

        let token = keys.sign("ES256", Some("nope"), &claims());
        assert_eq!(v.verify(&token, NOW), Err(JwtError::UnknownKey("nope".into())));
        // A known kid, but of another key type.
        let token = keys.sign("ES256", Some("ed"), &claims());
        assert_eq!(v.verify(&token, NOW), Err(JwtError::UnknownKey("ed".into())));
        // No keys yet.
        let fresh = IssuerVerifier::new(&spec()).unwrap();
        assert_eq!(fresh.verify(&keys.sign("ES256", Some("ec256"), &claims()), NOW), Err(JwtError::NoKeysYet));
        // An empty key set.
        let empty = fresh.with_jwks(Jwks::parse(br#"{"keys": []}"#).unwrap());
        assert_eq!(empty.verify(&keys.sign("EdDSA", None, &claims()), NOW), Err(JwtError::UnknownKey(String::new())));
        // Critical header parameters are not understood, hence refused.
        let crit =
            format!("{}.c2ln", encode_unsigned(&json!({"alg": "ES256", "crit": ["b64"], "b64": false}), &claims()));
        assert!(matches!(v.verify(&crit, NOW), Err(JwtError::Malformed(_))));
    }

    #[test]
    fn garbage_never_panics() {
        let (keys, v) = setup();
        let issuers = {
            let mut i = Issuers::new(&[spec()]).unwrap();
            i.set_jwks(ISS, Jwks::parse(keys.jwks.to_string().as_bytes()).unwrap());
            i
        };
        let good = keys.sign("ES256", Some("ec256"), &claims());
        let (h, rest) = good.split_once('.').unwrap();
        let padded = format!("{h}=.{rest}");
        let four = format!("{good}.AAAA");
        let five = format!("{good}.AAAA.BBBB");
        let spaced = format!(" {good}");
        let huge = format!("{h}.{}.{}", "A".repeat(MAX_TOKEN_LEN), "A");
        let array_payload = format!("{}.c2ln", encode_unsigned(&json!({"alg": "ES256"}), &json!([1, 2])));
        let header_string = format!("{}.{}.c2ln", enc(b"\"ES256\""), enc(b"{}"));
        let not_json = format!("{}.{}.c2ln", enc(b"{alg"), enc(b"{}"));
        let bad_utf8 = format!("{}.{}.c2ln", enc(b"{\"alg\":\"\xff\"}"), enc(b"{}"));
        let trailing_bits = format!("{h}.{rest}").replacen('.', "B.", 1);
        let cases: Vec<&str> = vec![
            "",
            ".",
            "..",
            "...",
            "a.b.c",
            "eyJ.eyJ.",
            "eyJhbGciOiJFUzI1NiJ9",
            "sk-sg-0123456789abcdef",
            "eyJhbGciOiJFUzI1NiJ9..",
            "eyJ!.eyJ.x",
            "é.é.é",
            &padded,
            &four,
            &five,
            &spaced,
            &huge,
            &array_payload,
            &header_string,
            &not_json,
            &bad_utf8,
            &trailing_bits,
        ];
        for case in cases {
            assert!(v.verify(case, NOW).is_err(), "{case:.80}");
            assert!(issuers.verify(case, NOW).is_err(), "{case:.80}");
            let _ = unverified_issuer(case);
        }
        let err = v.verify(&padded, NOW).unwrap_err();
        assert_eq!(err.code(), "malformed_token");
    }

    #[test]
    fn jwks_skips_unsupported_keys() {
        let keys = keys();
        let mut list = keys.jwks["keys"].as_array().unwrap().clone();
        let good = list.len();
        let rsa = list[0].clone();
        let ec = list[2].clone();
        let short_n = enc(&URL_SAFE_NO_PAD.decode(rsa["n"].as_str().unwrap()).unwrap()[..128]);
        list.extend([
            json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}),
            json!({"kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA"}),
            json!({"kty": "OKP", "kid": "ed448", "crv": "Ed448", "x": enc(&[1; 57])}),
            json!({"kty": "OKP", "kid": "x25519", "crv": "X25519", "x": enc(&[1; 32])}),
            with(rsa.clone(), json!({"kid": "enc", "use": "enc"})),
            with(rsa.clone(), json!({"kid": "ops", "key_ops": ["encrypt"]})),
            with(rsa.clone(), json!({"kid": "oaep", "alg": "RSA-OAEP"})),
            with(rsa.clone(), json!({"kid": "mismatch", "alg": "ES256"})),
            with(rsa.clone(), json!({"kid": "rsa1024", "n": short_n})),
            with(rsa.clone(), json!({"kid": "no-e", "e": null})),
            with(rsa, json!({"kid": 12})),
            with(ec.clone(), json!({"kid": "bad-b64", "x": "!!!"})),
            with(ec.clone(), json!({"kid": "short-x", "x": "AAAA"})),
            with(ec, json!({"kid": "padded", "y": format!("{}=", "A".repeat(43))})),
            json!("not an object"),
            json!({"kid": "no-kty"}),
        ]);
        let skipped = list.len() - good;
        let jwks = Jwks::parse(json!({"keys": list}).to_string().as_bytes()).unwrap();
        assert_eq!((jwks.len(), jwks.skipped()), (good, skipped));
        assert!(jwks.contains_kid("ec256") && !jwks.contains_kid("hmac"));
        assert_eq!(jwks.kids().collect::<Vec<_>>(), ["rsa1", "rsa-any", "ec256", "ec384", "ed"]);

        for bad in [&b"not json"[..], b"[]", br#"{"keys": {}}"#, br#"{"key": []}"#] {
            assert!(matches!(Jwks::parse(bad), Err(JwtError::InvalidJwks(_))));
        }
    }

    #[test]
    fn discovery_document() {
        let doc = br#"{"issuer": "https://login.example.com", "jwks_uri": "https://login.example.com/keys",
                       "id_token_signing_alg_values_supported": ["RS256"]}"#;
        assert_eq!(discovery_jwks_uri(doc).unwrap(), "https://login.example.com/keys");
        assert_eq!(discovery_jwks_uri(br#"{"issuer": "x"}"#), Err(JwtError::InvalidDiscovery("no jwks_uri")));
        assert!(discovery_jwks_uri(br#"{"jwks_uri": "file:///etc/passwd"}"#).is_err());
        assert!(discovery_jwks_uri(br#"{"jwks_uri": 5}"#).is_err());
        assert!(discovery_jwks_uri(b"<html>").is_err());
    }

    #[test]
    fn looks_like_jwt_shapes() {
        assert!(looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"));
        assert!(looks_like_jwt("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."));
        for s in [
            "sk-sg-abcdef0123456789",
            "",
            "eyJ",
            "eyJhbGci.eyJzdWIi",
            "eyJhbGci..c2ln",
            ".eyJ.c2ln",
            "eyJhbGci.eyJzdWIi.c2ln.more",
            "eyJhbGci=.eyJzdWIi.c2ln",
            "eyJhbGci.eyJ zdWIi.c2ln",
            "abc.def.ghi",
            "eyJ+/.eyJ.c2ln",
        ] {
            assert!(!looks_like_jwt(s), "{s}");
        }
    }

    #[test]
    fn error_codes_and_messages() {
        assert_eq!(JwtError::Expired.code(), "token_expired");
        assert_eq!(JwtError::BadSignature.code(), "invalid_token_signature");
        assert_eq!(JwtError::UnknownIssuer.code(), "unknown_issuer");
        assert_eq!(JwtError::WrongAudience.code(), "invalid_audience");
        assert_eq!(JwtError::NoKeysYet.code(), "signing_keys_unavailable");
        // Values echoed from a token are cut and cleaned.
        let long = format!("{}.c2ln", encode_unsigned(&json!({"alg": format!("X\n{}", "A".repeat(500))}), &claims()));
        let err = setup().1.verify(&long, NOW).unwrap_err();
        let JwtError::UnsupportedAlgorithm(alg) = &err else { panic!("{err:?}") };
        assert_eq!((alg.chars().count(), alg.starts_with("X?")), (64, true));
    }
}
