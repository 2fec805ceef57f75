//! AWS Signature Version 4 for request headers (AWS docs: "Create a signed AWS API request",
//! "Elements of an AWS API request signature").
//!
//! ```text
//! CanonicalRequest = Method \n CanonicalURI \n CanonicalQuery \n CanonicalHeaders \n
//!                    SignedHeaders \n hex(SHA256(payload))
//! StringToSign     = "AWS4-HMAC-SHA256" \n AmzDate \n Date/Region/Service/aws4_request \n
//!                    hex(SHA256(CanonicalRequest))
//! SigningKey       = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, Date), Region), Service), "aws4_request")
//! Signature        = hex(HMAC(SigningKey, StringToSign))
//! ```
//!
//! The canonical URI is the request path *as sent on the wire* with each segment URI-encoded
//! once more (every service but S3, whose path is used as sent). So a raw Bedrock path
//! `/model/anthropic.claude-v2:1/converse` signs as `/model/anthropic.claude-v2%3A1/converse`,
//! and the path the SDKs send, `/model/anthropic.claude-v2%3A1/converse` (what
//! [`super::converse::to_converse`] builds), signs as `.../anthropic.claude-v2%253A1/...`: AWS
//! recomputes the canonical URI from the path it receives, so either is valid as long as the
//! same path is sent. Dot segments are not normalized (Bedrock paths have none).

use ring::{digest, hmac};
use std::time::{SystemTime, UNIX_EPOCH};

/// The hex SHA-256 of the empty payload.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// AWS credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// For temporary credentials (STS): sent and signed as `x-amz-security-token`.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &self.session_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The parts of a request that are signed.
#[derive(Debug, Clone, Copy)]
pub struct SigningRequest<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// The path as sent on the wire (percent-encoding included), e.g. `/model/x%3A0/converse`.
    pub path: &'a str,
    /// The query string as sent, without `?` (may be empty).
    pub query: &'a str,
    /// Headers to sign, `host` among them; names in any case. Headers added by [`sign`]
    /// (`x-amz-date`, `x-amz-security-token`, `x-amz-content-sha256`) must not be passed.
    pub headers: &'a [(&'a str, &'a str)],
    /// The body.
    pub payload: &'a [u8],
    /// Also send and sign `x-amz-content-sha256` (S3 requires it; Bedrock accepts it).
    pub content_sha256_header: bool,
}

/// The headers to add to the request, in this order: `x-amz-date`, `x-amz-security-token`
/// (when the credentials have a session token), `x-amz-content-sha256` (when asked for),
/// `authorization`. `now` is the caller's clock.
pub fn sign(
    req: &SigningRequest<'_>,
    creds: &Credentials,
    region: &str,
    service: &str,
    now: SystemTime,
) -> Vec<(String, String)> {
    let secs = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    sign_at(req, creds, region, service, &amz_date(secs))
}

/// [`sign`] at an `x-amz-date` given as `YYYYMMDDTHHMMSSZ`.
pub fn sign_at(
    req: &SigningRequest<'_>,
    creds: &Credentials,
    region: &str,
    service: &str,
    amz_date: &str,
) -> Vec<(String, String)> {
    let date = amz_date.get(..8).unwrap_or(amz_date);
    let payload_hash = hex(digest::digest(&digest::SHA256, req.payload).as_ref());

    let mut added: Vec<(String, String)> = vec![("x-amz-date".into(), amz_date.to_string())];
    if let Some(token) = &creds.session_token {
        added.push(("x-amz-security-token".into(), token.clone()));
    }
    if req.content_sha256_header {
        added.push(("x-amz-content-sha256".into(), payload_hash.clone()));
    }

    let mut all: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), canonical_header_value(v)))
        .chain(added.iter().map(|(n, v)| (n.clone(), canonical_header_value(v))))
        .collect();
    // Stable sort by name keeps repeated headers in the order given; they join with commas.
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let mut canonical_headers = String::new();
    let mut signed_headers = String::new();
    let mut i = 0;
    while let Some((name, value)) = all.get(i) {
        let mut joined = value.clone();
        let mut j = i + 1;
        while let Some((n, v)) = all.get(j).filter(|(n, _)| n == name) {
            let _ = n;
            joined.push(',');
            joined.push_str(v);
            j += 1;
        }
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        canonical_headers.push_str(&joined);
        canonical_headers.push('\n');
        if !signed_headers.is_empty() {
            signed_headers.push(';');
        }
        signed_headers.push_str(name);
        i = j;
    }

    let canonical = canonical_request(
        req.method,
        &canonical_uri(req.path, service),
        &canonical_query(req.query),
        &canonical_headers,
        &signed_headers,
        &payload_hash,
    );
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
    );
    let key = signing_key(&creds.secret_access_key, date, region, service);
    let signature = hex(hmac::sign(&key, string_to_sign.as_bytes()).as_ref());
    added.push((
        "authorization".into(),
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            creds.access_key_id
        ),
    ));
    added
}

fn canonical_request(method: &str, uri: &str, query: &str, headers: &str, signed: &str, payload_hash: &str) -> String {
    format!("{method}\n{uri}\n{query}\n{headers}\n{signed}\n{payload_hash}")
}

/// The derived key: `AWS4`+secret → date → region → service → `aws4_request`.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> hmac::Key {
    let mut k = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, format!("AWS4{secret}").as_bytes()), date.as_bytes());
    for part in [region, service, "aws4_request"] {
        k = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, k.as_ref()), part.as_bytes());
    }
    hmac::Key::new(hmac::HMAC_SHA256, k.as_ref())
}

/// Header value for the canonical form: trimmed, runs of spaces collapsed to one.
fn canonical_header_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for word in v.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// The canonical URI: each segment of the wire path URI-encoded (S3: the path as sent).
pub fn canonical_uri(path: &str, service: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    if service == "s3" {
        return path.to_string();
    }
    path.split('/').map(uri_encode).collect::<Vec<_>>().join("/")
}

/// The canonical query: pairs decoded, re-encoded the AWS way, sorted by name then value.
pub fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (uri_encode(&percent_decode(k)), uri_encode(&percent_decode(v)))
        })
        .collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

/// AWS URI encoding: unreserved characters (`A-Z a-z 0-9 - . _ ~`) as they are, every other
/// byte as `%XX` with upper-case hex.
pub fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(nibble(&HEX_UPPER, b >> 4));
            out.push(nibble(&HEX_UPPER, b));
        }
    }
    out
}

const HEX_UPPER: [u8; 16] = *b"0123456789ABCDEF";
const HEX_LOWER: [u8; 16] = *b"0123456789abcdef";

/// The hex digit of the low four bits of `n`.
fn nibble(table: &[u8; 16], n: u8) -> char {
    char::from(table.get(usize::from(n & 0xf)).copied().unwrap_or(b'0'))
}

/// `%XX` sequences decoded (a malformed one is kept as is); invalid UTF-8 replaced.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i + 1).and_then(|c| char::from(*c).to_digit(16));
            let lo = bytes.get(i + 2).and_then(|c| char::from(*c).to_digit(16));
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(nibble(&HEX_LOWER, b >> 4));
        out.push(nibble(&HEX_LOWER, b));
    }
    out
}

/// `YYYYMMDDTHHMMSSZ` for seconds since the Unix epoch (UTC).
pub fn amz_date(unix_secs: u64) -> String {
    let days = unix_secs / 86_400;
    let rem = unix_secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}
