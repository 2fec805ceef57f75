//! Verifiers for secrets with a fixed, documented prefix. Each one is called at a trigger
//! position found by the automaton and checks the exact shape locally (charset, length,
//! boundaries), so a prefix in ordinary text (`task-`, `ask-`) costs a few byte compares.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use super::Hit;
use crate::guardrails::finding::SecretKind;
use crate::guardrails::text::{before, run_len, shannon_entropy, work};

/// Minimum entropy (bits per byte) of a prefixed key's random part: real keys are ~5 bits,
/// placeholders such as `sk-aaaaaaaa…` or `ghp_0000…` are far below.
const MIN_BODY_ENTROPY: f32 = 3.0;

/// Lenient base64url: JWT segments carry no padding, but tolerate it.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Byte classes, as a table so that the runs over key bodies are one load per byte.
const ALNUM: u8 = 1;
const TOKEN: u8 = 2;
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        if b.is_ascii_alphanumeric() {
            t[i] = ALNUM | TOKEN;
        } else if b == b'_' || b == b'-' {
            t[i] = TOKEN;
        }
        i += 1;
    }
    t
};

#[inline]
fn alnum(b: u8) -> bool {
    CLASS[usize::from(b)] & ALNUM != 0
}

#[inline]
fn token_byte(b: u8) -> bool {
    CLASS[usize::from(b)] & TOKEN != 0
}

/// True when the byte before `at` cannot be part of the same token (so `task-…` or a key
/// inside a base64 blob does not count).
fn starts_token(bytes: &[u8], at: usize) -> bool {
    before(bytes, at).is_none_or(|b| !(token_byte(b) || b == b'+' || b == b'/' || b == b'.'))
}

/// Values that are obviously templates or examples rather than credentials: `xxxx`, `your`,
/// `example`, `placeholder`, `changeme`, `change_me`, `dummy`, `redacted`, `insert`, `replace`,
/// `...`, `***`, `${`, `{{` (ASCII case-insensitive), `<`, `>`, `…`, or six equal bytes in a row.
/// One pass: each byte selects the few words that can start with it.
pub(super) fn is_placeholder(v: &[u8]) -> bool {
    work(v.len());
    let at = |i: usize, w: &[u8]| v.get(i..i + w.len()).is_some_and(|x| x.eq_ignore_ascii_case(w));
    let mut prev = None;
    let mut same = 0;
    for (i, &b) in v.iter().enumerate() {
        same = if prev == Some(b) { same + 1 } else { 1 };
        prev = Some(b);
        // Six identical bytes in a row: `0000000`, `aaaaaa`; vanishingly rare in random keys.
        if same >= 6 {
            return true;
        }
        // The second byte rules out almost every candidate before a word compare.
        let second = match SECOND.get(usize::from(b)).copied().unwrap_or(0) {
            0 => continue,
            ANY => return true,
            s => s,
        };
        if v.get(i + 1).map(u8::to_ascii_lowercase) != Some(second) {
            continue;
        }
        let hit = match b.to_ascii_lowercase() {
            b'x' => at(i, b"xxxx"),
            b'y' => at(i, b"your"),
            b'e' => at(i, b"example"),
            b'p' => at(i, b"placeholder"),
            b'c' => at(i, b"changeme") || at(i, b"change_me"),
            b'd' => at(i, b"dummy"),
            b'r' => at(i, b"redacted") || at(i, b"replace"),
            b'i' => at(i, b"insert"),
            b'.' => at(i, b"..."),
            b'*' => at(i, b"***"),
            _ => true, // `${`, `{{`: two bytes, already matched.
        };
        if hit {
            return true;
        }
    }
    false
}

/// [`SECOND`] entry of a byte that is a placeholder on its own.
const ANY: u8 = 0xFF;

/// Per byte (either ASCII case), the lowercase second byte of the placeholder words it starts,
/// 0 if none; [`ANY`] for `<`, `>` and 0xE2 (`<OPENAI_API_KEY>`, the ellipsis `…` = U+2026).
static SECOND: [u8; 256] = {
    let mut t = [0u8; 256];
    let pairs: [(u8, u8); 12] = [
        (b'x', b'x'),
        (b'y', b'o'),
        (b'e', b'x'),
        (b'p', b'l'),
        (b'c', b'h'),
        (b'd', b'u'),
        (b'r', b'e'),
        (b'i', b'n'),
        (b'.', b'.'),
        (b'*', b'*'),
        (b'$', b'{'),
        (b'{', b'{'),
    ];
    let mut k = 0;
    while k < pairs.len() {
        let (first, second) = pairs[k];
        t[first as usize] = second;
        t[first.to_ascii_uppercase() as usize] = second;
        k += 1;
    }
    t[b'<' as usize] = ANY;
    t[b'>' as usize] = ANY;
    t[0xE2] = ANY;
    t
};

fn random_enough(body: &[u8]) -> bool {
    !is_placeholder(body) && shannon_entropy(body) >= MIN_BODY_ENTROPY
}

/// `sk-…`: OpenAI (legacy 48 alnum, `sk-proj-`, `sk-svcacct-`, `sk-admin-`) or Anthropic
/// (`sk-ant-api03-`, `sk-ant-admin01-`).
pub(super) fn sk_dash(bytes: &[u8], at: usize) -> Option<Hit> {
    if !starts_token(bytes, at) {
        return None;
    }
    let body_start = at + 3;
    let n = run_len(bytes, body_start, 1024, token_byte);
    let body = bytes.get(body_start..body_start + n)?;
    let end = body_start + n;
    let (kind, rest) = if let Some(r) = body.strip_prefix(b"ant-") {
        let r = r.strip_prefix(b"api03-").or_else(|| r.strip_prefix(b"admin01-")).unwrap_or(r);
        (SecretKind::Anthropic, r)
    } else if let Some(r) =
        body.strip_prefix(b"proj-").or_else(|| body.strip_prefix(b"svcacct-")).or_else(|| body.strip_prefix(b"admin-"))
    {
        (SecretKind::OpenAi, r)
    } else if body.len() == 48 && body.iter().all(|&b| alnum(b)) {
        (SecretKind::OpenAi, body)
    } else {
        return None;
    };
    (rest.len() >= 32 && random_enough(rest)).then_some(Hit { start: at, end, kind, score: 1.0 })
}

/// `sk_live_`, `rk_live_`, `sk_test_`, `rk_test_` + ≥ 24 alnum. The trigger is `k_live_` /
/// `k_test_`, so the byte before it must be `s` or `r`.
pub(super) fn stripe(bytes: &[u8], at: usize, test_keys: bool) -> Option<Hit> {
    let start = at.checked_sub(1)?;
    if !matches!(bytes.get(start), Some(b's' | b'r')) || !starts_token(bytes, start) {
        return None;
    }
    let test = bytes.get(at + 2..at + 6) == Some(b"test");
    if test && !test_keys {
        return None;
    }
    let body_start = at + 7;
    let n = run_len(bytes, body_start, 256, alnum);
    let body = bytes.get(body_start..body_start + n)?;
    let end = body_start + n;
    if n < 24 || bytes.get(end).is_some_and(|&b| token_byte(b)) || !random_enough(body) {
        return None;
    }
    // Test-mode keys reach no money but still authenticate to the account: reported, weighed lower.
    Some(Hit { start, end, kind: SecretKind::Stripe, score: if test { 0.5 } else { 1.0 } })
}

/// `AKIA`/`ASIA` + 16 of `[A-Z0-9]`. AWS's documented examples (ending in `EXAMPLE`, such as
/// `AKIAIOSFODNN7EXAMPLE`) are deliberately not reported: they fill documentation.
pub(super) fn aws_access_key(bytes: &[u8], at: usize) -> Option<Hit> {
    if !starts_token(bytes, at) {
        return None;
    }
    let n = run_len(bytes, at + 4, 17, |b| b.is_ascii_uppercase() || b.is_ascii_digit());
    let end = at + 4 + n;
    if n != 16 || bytes.get(end).is_some_and(|&b| token_byte(b)) {
        return None;
    }
    let id = bytes.get(at..end)?;
    if id.ends_with(b"EXAMPLE") || is_placeholder(id) {
        return None;
    }
    Some(Hit { start: at, end, kind: SecretKind::AwsAccessKey, score: 1.0 })
}

/// `ghp_ gho_ ghu_ ghs_ ghr_` + 36 alnum (longer accepted), `github_pat_` + ≥ 40 of `[A-Za-z0-9_]`.
pub(super) fn github(bytes: &[u8], at: usize, fine_grained: bool) -> Option<Hit> {
    if !starts_token(bytes, at) {
        return None;
    }
    let (body_start, min, pred): (usize, usize, fn(u8) -> bool) =
        if fine_grained { (at + 11, 40, |b| alnum(b) || b == b'_') } else { (at + 4, 36, alnum) };
    let n = run_len(bytes, body_start, 256, pred);
    let end = body_start + n;
    let body = bytes.get(body_start..end)?;
    if n < min || bytes.get(end).is_some_and(|&b| token_byte(b)) || !random_enough(body) {
        return None;
    }
    Some(Hit { start: at, end, kind: SecretKind::GitHub, score: 1.0 })
}

/// `xoxb- xoxp- xoxa- xoxr- xoxs-` + dash-separated alnum groups.
pub(super) fn slack_token(bytes: &[u8], at: usize) -> Option<Hit> {
    if !starts_token(bytes, at) || !matches!(bytes.get(at + 3), Some(b'b' | b'p' | b'a' | b'r' | b's')) {
        return None;
    }
    if bytes.get(at + 4) != Some(&b'-') {
        return None;
    }
    let body_start = at + 5;
    let n = run_len(bytes, body_start, 256, |b| alnum(b) || b == b'-');
    let end = body_start + n;
    let body = bytes.get(body_start..end)?;
    let has_digit = body.iter().any(u8::is_ascii_digit);
    if n < 20 || !has_digit || !body.contains(&b'-') || !random_enough(body) {
        return None;
    }
    Some(Hit { start: at, end, kind: SecretKind::Slack, score: 1.0 })
}

/// `hooks.slack.com/services/T…/B…/…` (the span includes a preceding `https://`).
pub(super) fn slack_webhook(bytes: &[u8], at: usize) -> Option<Hit> {
    const TRIGGER_LEN: usize = b"hooks.slack.com/services/".len();
    let upper = |b: u8| b.is_ascii_uppercase() || b.is_ascii_digit();
    let mut i = at + TRIGGER_LEN;
    for lead in [b'T', b'B'] {
        if bytes.get(i) != Some(&lead) {
            return None;
        }
        let n = run_len(bytes, i + 1, 32, upper);
        if n < 8 || bytes.get(i + 1 + n) != Some(&b'/') {
            return None;
        }
        i += n + 2;
    }
    let n = run_len(bytes, i, 64, alnum);
    let secret = bytes.get(i..i + n)?;
    if n < 20 || !random_enough(secret) {
        return None;
    }
    let start = [&b"https://"[..], b"http://"]
        .iter()
        .find_map(|p| at.checked_sub(p.len()).filter(|&s| bytes.get(s..at) == Some(*p)))
        .unwrap_or(at);
    Some(Hit { start, end: i + n, kind: SecretKind::Slack, score: 1.0 })
}

/// `AIza` + exactly 35 of `[A-Za-z0-9_-]`.
pub(super) fn google(bytes: &[u8], at: usize) -> Option<Hit> {
    if !starts_token(bytes, at) {
        return None;
    }
    let n = run_len(bytes, at + 4, 36, token_byte);
    let body = bytes.get(at + 4..at + 4 + n)?;
    (n == 35 && random_enough(body)).then_some(Hit { start: at, end: at + 4 + n, kind: SecretKind::Google, score: 1.0 })
}

/// Where the next `-----END ` marker is, remembered across the PEM triggers of one scan so
/// that many `-----BEGIN` headers without an end cost one search, not one each.
#[derive(Default)]
pub(super) struct PemEnds {
    /// `(searched from, first "-----END " at or after it)`.
    cached: Option<(usize, Option<usize>)>,
}

impl PemEnds {
    fn next_from(&mut self, bytes: &[u8], from: usize) -> Option<usize> {
        if let Some((searched, found)) = self.cached
            && searched <= from
            && found.is_none_or(|f| f >= from)
        {
            return found;
        }
        let rest = bytes.get(from..).unwrap_or(&[]);
        let found = memchr::memmem::find(rest, b"-----END ").map(|e| from + e);
        work(found.map_or(rest.len(), |f| f - from));
        self.cached = Some((from, found));
        found
    }
}

/// Longest part of a PEM body searched for base64 (real keys start with it after the header).
const PEM_BODY_PROBE: usize = 1024;

/// `-----BEGIN … PRIVATE KEY-----` through the matching `-----END …-----`; an unterminated
/// block runs to the end of the text. The body must hold a base64 run of ≥ 32 bytes (within its
/// first KiB), so a documentation stub (`-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----`)
/// is skipped.
pub(super) fn pem_private_key(bytes: &[u8], at: usize, ends: &mut PemEnds) -> Option<Hit> {
    const BEGIN: usize = b"-----BEGIN ".len();
    let label_len = run_len(bytes, at + BEGIN, 64, |b| b.is_ascii_uppercase() || b == b' ');
    let label = bytes.get(at + BEGIN..at + BEGIN + label_len)?;
    let header_end = at + BEGIN + label_len;
    if bytes.get(header_end..header_end + 5) != Some(b"-----") || !contains(label, b"PRIVATE KEY") {
        return None;
    }
    let body_start = header_end + 5;
    let (body_end, end) = match ends.next_from(bytes, body_start) {
        Some(e) => {
            let tail = e + 9;
            let close = bytes.get(tail..).and_then(|t| memchr::memmem::find(t.get(..80.min(t.len()))?, b"-----"));
            (e, close.map_or(tail, |c| tail + c + 5))
        }
        None => (bytes.len(), bytes.len()),
    };
    let body = bytes.get(body_start..body_end.min(body_start + PEM_BODY_PROBE))?;
    work(body.len());
    let b64 = |b: u8| alnum(b) || matches!(b, b'+' | b'/' | b'=');
    let mut longest = 0;
    let mut cur = 0;
    for &b in body {
        cur = if b64(b) { cur + 1 } else { 0 };
        longest = longest.max(cur);
        if longest >= 32 {
            break;
        }
    }
    (longest >= 32).then_some(Hit { start: at, end, kind: SecretKind::PrivateKey, score: 1.0 })
}

/// A JWT: three base64url segments, the header decoding to a JSON object with `"alg"`.
pub(super) fn jwt(bytes: &[u8], at: usize) -> Option<Hit> {
    if !starts_token(bytes, at) {
        return None;
    }
    let seg = |from: usize| run_len(bytes, from, 8192, token_byte);
    let h = seg(at);
    let p_start = at + h + 1;
    if h < 10 || bytes.get(at + h) != Some(&b'.') {
        return None;
    }
    let p = seg(p_start);
    let s_start = p_start + p + 1;
    if p < 4 || bytes.get(p_start + p) != Some(&b'.') {
        return None;
    }
    let s = seg(s_start);
    if s < 16 {
        return None;
    }
    let header = B64URL.decode(bytes.get(at..at + h)?).ok()?;
    let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header).ok()?;
    obj.contains_key("alg").then_some(Hit { start: at, end: s_start + s, kind: SecretKind::Jwt, score: 1.0 })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}
