//! Instructions hidden in base64 (≥ 24 chars) or hex (≥ 32 chars) runs.
//!
//! Runs are found without looking at every byte (see [`scan`]): only every other 8-byte block
//! is range-checked, and a run is extended from a block that lies inside one. A run is decoded
//! (the first 64 chars first, so a base64 image is rejected after one small decode), and
//! decoded text that is mostly printable is matched against the phrase regex.

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

/// Bytes of a base64 (standard or URL-safe) or hex run, as a table: one load per byte.
static RUN: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_');
        i += 1;
    }
    t
};

#[inline]
fn in_run(b: u8) -> bool {
    RUN[usize::from(b)]
}

/// Whether the 8 bytes of `w` may all be run bytes: none below `+` (0x2B) or above `z` (0x7A).
/// Word-at-a-time tests (exact for "any byte < n" with n ≤ 128, "any byte > n" with n ≤ 127).
#[inline]
fn may_be_run(w: u64) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let below = w.wrapping_sub(LO * 0x2B) & !w & HI;
    let above = (w.wrapping_add(LO * (127 - 0x7A)) | w) & HI;
    below | above == 0
}

/// Calls `found(start, end, decoded)` for every base64/hex run whose decoded text is mostly
/// printable.
///
/// A run of ≥ 24 bytes contains two consecutive whole 8-byte-aligned blocks, one of them at an
/// even block index, so only every other block is tested (one word-at-a-time range check,
/// which fails on any space or most punctuation) before a run is extended byte by byte.
pub(super) fn scan(bytes: &[u8], mut found: impl FnMut(usize, usize, &str)) {
    let mut b = 0;
    while let Some(block) = bytes.get(b..b + 8) {
        let w = u64::from_le_bytes(block.try_into().unwrap_or([0; 8]));
        if !may_be_run(w) || !block.iter().all(|&x| in_run(x)) {
            b += 16;
            continue;
        }
        let s = b - bytes.get(..b).map_or(0, |h| h.iter().rev().take_while(|&&x| in_run(x)).count());
        let e = b + bytes.get(b..).map_or(0, |t| t.iter().take_while(|&&x| in_run(x)).count());
        crate::guardrails::text::work(e - s);
        if e - s >= MIN_RUN
            && let Some(run) = bytes.get(s..e)
            && let Some(text) = decode(run)
        {
            found(s, e, &text);
        }
        // The next even block at or after the end of this run.
        b = (e + 15) & !15;
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
