//! Instructions hidden in base64 (≥ 24 chars) or hex (≥ 32 chars) runs.
//!
//! Runs are found without looking at every byte: a run of at least `MIN_RUN` bytes contains a
//! position that is a multiple of `MIN_RUN`, so only those positions are probed and a run is
//! extended from a probe that lands in one. A run is decoded (the first 64 chars first, so a
//! base64 image is rejected after one small decode), and decoded text that is mostly
//! printable is matched against the phrase regex.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

const MIN_RUN: usize = 24;
const MIN_HEX: usize = 32;
/// Longest prefix of a run that is decoded (an override phrase sits near the start).
const MAX_DECODE: usize = 800;

const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);

#[inline]
fn in_run(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_')
}

/// Calls `found(start, end, decoded)` for every base64/hex run whose decoded text is mostly
/// printable.
pub(super) fn scan(bytes: &[u8], mut found: impl FnMut(usize, usize, &str)) {
    let mut p = MIN_RUN - 1;
    while let Some(&b) = bytes.get(p) {
        if !in_run(b) {
            p += MIN_RUN;
            continue;
        }
        let s = p - bytes.get(..p).map_or(0, |h| h.iter().rev().take_while(|&&b| in_run(b)).count());
        let e = p + bytes.get(p..).map_or(0, |t| t.iter().take_while(|&&b| in_run(b)).count());
        if e - s >= MIN_RUN
            && let Some(run) = bytes.get(s..e)
            && let Some(text) = decode(run)
        {
            found(s, e, &text);
        }
        p = e + MIN_RUN;
    }
}

fn decode(run: &[u8]) -> Option<String> {
    // `key=base64…`: the payload is after the last interior `=` (padding only trails).
    let run = match run.iter().rposition(|&b| b == b'=') {
        Some(i) if run.get(i + 1..).is_some_and(|t| t.iter().any(|&b| b != b'=')) => run.get(i + 1..)?,
        _ => run,
    };
    let run = run.strip_prefix(b"0x").unwrap_or(run);
    if run.len() < MIN_RUN {
        return None;
    }
    let body = run.get(..run.len().min(MAX_DECODE))?;
    let is_hex = run.len() >= MIN_HEX && run.iter().all(u8::is_ascii_hexdigit);
    let decoded = if is_hex {
        let even = body.get(..body.len() & !1)?;
        let probe = hex(even.get(..even.len().min(64))?)?;
        if !printable(&probe) {
            return None;
        }
        hex(even)?
    } else {
        let engine = if run.iter().any(|&b| b == b'-' || b == b'_') { &URL_SAFE } else { &STANDARD };
        // Whole 4-char groups only, so a prefix decodes on its own.
        let trimmed: &[u8] = body.get(..body.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1))?;
        let probe = engine.decode(trimmed.get(..trimmed.len().min(64) & !3)?).ok()?;
        if !printable(&probe) {
            return None;
        }
        engine.decode(trimmed.get(..trimmed.len() & !3)?).ok()?
    };
    printable(&decoded).then(|| String::from_utf8_lossy(&decoded).into_owned())
}

fn hex(s: &[u8]) -> Option<Vec<u8>> {
    s.chunks_exact(2)
        .map(|p| {
            let h = |c: u8| (c as char).to_digit(16);
            Some((h(*p.first()?)? * 16 + h(*p.get(1)?)?) as u8)
        })
        .collect()
}

/// At least 90% printable ASCII or whitespace (UTF-8 text counts as printable when valid).
fn printable(d: &[u8]) -> bool {
    if d.len() < 8 {
        return false;
    }
    let utf8 = std::str::from_utf8(d).is_ok();
    let ok =
        d.iter().filter(|&&b| (0x20..0x7f).contains(&b) || matches!(b, b'\n' | b'\r' | b'\t') || (utf8 && b >= 0x80));
    ok.count() * 10 >= d.len() * 9
}
