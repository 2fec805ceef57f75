//! Secrets found by context: a value directly assigned to a secret-like name
//! (`password = "…"`, `api_key: …`, `"client_secret": "…"`, `token => '…'`, `X-Api-Key: …`).
//! The scan finds the operator (`=` or `:`, by `memchr2`); here we read the identifier before
//! it, check that it *ends* like a secret name (so `tokenizer`, `author`, `secret_name` do not
//! count), parse the operator and the value, and judge the value (length, entropy, placeholders).

use super::Hit;
use super::formats::is_placeholder;
use crate::guardrails::finding::SecretKind;
use crate::guardrails::text::{run_len, shannon_entropy, work};

/// Prefixes that a format verifier owns: a value starting with one is left to it.
const OWNED_PREFIXES: [&[u8]; 12] =
    [b"sk-", b"sk_", b"rk_", b"AKIA", b"ASIA", b"ghp_", b"gho_", b"ghs_", b"github_pat_", b"xox", b"AIza", b"eyJ"];

/// Longest identifier we look at; longer names are not worth the work.
const MAX_NAME: usize = 64;
/// Longest value we look at.
const MAX_VALUE: usize = 512;

#[inline]
fn ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

/// Settings the generic check needs from the config.
#[derive(Debug, Clone)]
pub(super) struct Limits {
    pub entropy_threshold: f32,
    pub min_len: usize,
}

/// Checks the assignment whose operator byte (`=` or `:`) is at `op`: the identifier before it
/// (optionally closed by a quote, then blanks) must end like a secret name, and the value after
/// it must look random. Returns the name's start (the order key among triggers) and the hit.
///
/// Cheapest tests first: most `=`/`:` in text follow a name that does not end like a secret,
/// which is mostly decided from the one byte before the operator.
pub(super) fn at_operator(bytes: &[u8], op: usize, lim: &Limits) -> Option<(usize, Hit)> {
    let mut name_end = op - bytes.get(..op)?.iter().rev().take(8).take_while(|&&b| b == b' ' || b == b'\t').count();
    if matches!(bytes.get(name_end.wrapping_sub(1)), Some(b'"' | b'\'')) {
        name_end -= 1;
        if bytes.get(name_end.wrapping_sub(1)) == Some(&b'\\') {
            name_end -= 1;
        }
    }
    // The name read backwards, lowercased, separators dropped: the last letter alone rejects
    // most names, and only the endings sharing it are compared.
    let before_op = bytes.get(name_end.saturating_sub(MAX_NAME)..name_end)?;
    let norm = before_op
        .iter()
        .rev()
        .take_while(|&&b| ident_byte(b))
        .filter(|&&b| !matches!(b, b'_' | b'-' | b'.'))
        .map(u8::to_ascii_lowercase);
    // Name endings (lowercase, separators removed) that mark a secret-valued field, by last
    // letter. (`clientsecret` ends in `secret`, so it needs no entry of its own.)
    let endings: &[&[u8]] = match norm.clone().next()? {
        b'd' => &[b"password", b"passwd", b"pwd"],
        b'e' => &[b"passphrase"],
        b't' => &[b"secret"],
        b'y' => &[b"secretkey", b"apikey", b"accesskey", b"privatekey"],
        b'n' => &[b"token", b"authorization"],
        b'h' => &[b"auth"],
        b'l' => &[b"credential"],
        b's' => &[b"credentials"],
        _ => return None,
    };
    work(16);
    if !endings.iter().any(|e| {
        let mut it = norm.clone();
        e.iter().rev().all(|&c| it.next() == Some(c))
    }) {
        return None;
    }
    let name_start =
        name_end - bytes.get(..name_end)?.iter().rev().take(MAX_NAME).take_while(|&&b| ident_byte(b)).count();
    let name = bytes.get(name_start..name_end)?;
    let (vs, ve) = value_after(bytes, name_end)?;
    let value = bytes.get(vs..ve)?;
    if value.len() < lim.min_len || value.len() > MAX_VALUE {
        return None;
    }
    if OWNED_PREFIXES.iter().any(|p| value.starts_with(p)) || value.starts_with(b"-----") {
        return None;
    }
    if value.iter().any(|b| b.is_ascii_whitespace())
        || is_placeholder(value)
        || shannon_entropy(value) < lim.entropy_threshold
    {
        return None;
    }
    let aws = contains_ci(name, b"aws") || normalised_ends_with(name, b"secretaccesskey");
    if aws && value.len() == 40 && value.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'/' || b == b'+') {
        if value.ends_with(b"EXAMPLEKEY") {
            // AWS's documented example secret (`wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY`).
            return None;
        }
        return Some((name_start, Hit { start: vs, end: ve, kind: SecretKind::AwsSecretKey, score: 0.9 }));
    }
    Some((name_start, Hit { start: vs, end: ve, kind: SecretKind::Generic, score: 0.7 }))
}

/// The value assigned after the name ending at `i`: `[=|:|=>|:=] value`, the value quoted or
/// bare. `None` for comparisons (`==`), paths (`a::b`), lookups (`env["TOKEN"]`), calls.
fn value_after(bytes: &[u8], mut i: usize) -> Option<(usize, usize)> {
    // The key's closing quote (JSON, dict literal), possibly escaped inside a JSON string.
    if bytes.get(i) == Some(&b'\\') && matches!(bytes.get(i + 1), Some(b'"' | b'\'')) {
        i += 1;
    }
    if matches!(bytes.get(i), Some(b'"' | b'\'')) {
        i += 1;
    }
    i += run_len(bytes, i, 8, |b| b == b' ' || b == b'\t');
    match (bytes.get(i), bytes.get(i + 1)) {
        (Some(b'='), Some(b'>')) | (Some(b':'), Some(b'=')) => i += 2,
        (Some(b'='), Some(b'=')) | (Some(b':'), Some(b':')) => return None,
        (Some(b'=' | b':'), _) => i += 1,
        _ => return None,
    }
    i += run_len(bytes, i, 8, |b| b == b' ' || b == b'\t');
    let escaped = bytes.get(i) == Some(&b'\\');
    let q = *bytes.get(i + usize::from(escaped))?;
    // A value starting with a known key prefix is left to its format verifier: stop here.
    let vs = i + usize::from(escaped) + usize::from(matches!(q, b'"' | b'\'' | b'`'));
    if bytes.get(vs..).is_some_and(|v| OWNED_PREFIXES.iter().any(|p| v.starts_with(p))) {
        return None;
    }
    if matches!(q, b'"' | b'\'' | b'`') {
        let vs = i + usize::from(escaped) + 1;
        let len = run_len(bytes, vs, MAX_VALUE + 1, |b| b != q && b != b'\n' && b != b'\\');
        let mut ve = vs + len;
        if escaped && bytes.get(ve) == Some(&b'\\') && bytes.get(ve + 1) == Some(&q) {
            return Some(strip_scheme(bytes, vs, ve));
        }
        if bytes.get(ve) != Some(&q) {
            // Unterminated, or a backslash escape inside: take what we have only if it is long.
            ve = vs + len;
            if len < 32 {
                return None;
            }
        }
        return Some(strip_scheme(bytes, vs, ve));
    }
    if escaped {
        return None;
    }
    let bare = |b: u8| !b.is_ascii_whitespace() && !matches!(b, b',' | b';' | b'"' | b'\'' | b'`' | b')' | b']' | b'}');
    let stop = |b: u8| bare(b) && !matches!(b, b'(' | b'[' | b'{');
    let len = run_len(bytes, i, MAX_VALUE + 1, stop);
    let (vs, ve) = (i, i + len);
    if matches!(bytes.get(ve), Some(b'(' | b'[' | b'{')) || len == 0 {
        return None;
    }
    let value = bytes.get(vs..ve)?;
    if matches!(value, b"Bearer" | b"bearer" | b"Basic" | b"basic" | b"Token" | b"token") {
        let j = ve + run_len(bytes, ve, 4, |b| b == b' ');
        let n = run_len(bytes, j, MAX_VALUE + 1, bare);
        return (n > 0).then_some((j, j + n));
    }
    // A bare dotted identifier without digits is a reference (`settings.OPENAI_KEY`, `$TOKEN`),
    // not a literal.
    if value.first() == Some(&b'$') || value.first() == Some(&b'%') || is_reference(value) {
        return None;
    }
    Some((vs, ve))
}

/// `"Bearer abc…"` inside quotes: the secret is what follows the scheme.
fn strip_scheme(bytes: &[u8], vs: usize, ve: usize) -> (usize, usize) {
    for scheme in [&b"Bearer "[..], b"bearer ", b"Basic ", b"Token ", b"token "] {
        if bytes.get(vs..ve).is_some_and(|v| v.starts_with(scheme)) {
            return (vs + scheme.len(), ve);
        }
    }
    (vs, ve)
}

fn is_reference(v: &[u8]) -> bool {
    !v.iter().any(u8::is_ascii_digit)
        && v.split(|&b| b == b'.').all(|part| {
            part.first().is_some_and(|&b| b.is_ascii_alphabetic() || b == b'_')
                && part.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_')
        })
}

/// Whether `name`, lowercased with `_ - .` removed, ends with `suffix` (given lowercase).
fn normalised_ends_with(name: &[u8], suffix: &[u8]) -> bool {
    let mut it = name.iter().rev().filter(|&&b| !matches!(b, b'_' | b'-' | b'.')).map(u8::to_ascii_lowercase);
    suffix.iter().rev().all(|&s| it.next() == Some(s))
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}
