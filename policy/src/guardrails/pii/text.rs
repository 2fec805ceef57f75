//! Byte-level helpers shared by the validators. Every accessor is bounds-checked and returns a
//! NUL sentinel past either end, so validators can peek around a position without indexing.

/// The byte at `i`, or 0 past the end.
#[inline]
pub(super) fn at(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}

/// The byte just before `i`, or 0 at the start.
#[inline]
pub(super) fn before(b: &[u8], i: usize) -> u8 {
    i.checked_sub(1).map_or(0, |j| at(b, j))
}

/// ASCII letters, digits and `_`: what glues a number to an identifier. Non-ASCII bytes do not
/// count, so a number right after CJK text (which has no spaces) is still a candidate.
#[inline]
pub(super) fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// End of the run of ASCII digits starting at `i` (`i` itself when there is none).
#[inline]
pub(super) fn digit_end(b: &[u8], i: usize) -> usize {
    let mut j = i;
    while at(b, j).is_ascii_digit() {
        j += 1;
    }
    j
}

/// End of the run of ASCII letters starting at `i`.
#[inline]
pub(super) fn alpha_end(b: &[u8], i: usize) -> usize {
    let mut j = i;
    while at(b, j).is_ascii_alphabetic() {
        j += 1;
    }
    j
}

/// Start of the run of ASCII letters ending just before `i`.
#[inline]
pub(super) fn alpha_start(b: &[u8], i: usize) -> usize {
    let mut j = i;
    while before(b, j).is_ascii_alphabetic() {
        j -= 1;
    }
    j
}

/// The value of the ASCII digits in `b[s..e]` (saturating; callers bound the length).
pub(super) fn number(b: &[u8], s: usize, e: usize) -> u32 {
    b.get(s..e)
        .unwrap_or_default()
        .iter()
        .fold(0u32, |acc, &d| acc.saturating_mul(10).saturating_add(u32::from(d.wrapping_sub(b'0'))))
}

#[cfg(any(test, not(target_arch = "x86_64")))]
const ONES: u64 = 0x0101_0101_0101_0101;
#[cfg(any(test, not(target_arch = "x86_64")))]
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Bit `k` set when byte `k` of the little-endian word `w` is an ASCII digit (SWAR, exact).
#[inline]
#[cfg(any(test, not(target_arch = "x86_64")))]
fn digit_bits8(w: u64) -> u64 {
    let low7 = w & !HIGHS;
    // Bit 7 of each byte: low7 >= '0' and low7 <= '9' (neither sum nor difference can carry
    // across bytes), and the byte itself is ASCII.
    let ge = low7.wrapping_add(ONES * 0x50);
    let le = (ONES * 0xB9).wrapping_sub(low7);
    let flags = (ge & le & !w & HIGHS) >> 7;
    // Gather the eight flags (one per byte, bit 0) into the top byte.
    flags.wrapping_mul(0x0102_0408_1020_4080) >> 56
}

/// Bit `k` set when byte `k` of `lane` (16 bytes) is an ASCII digit: two SSE2 compares and a
/// movemask, which every x86-64 CPU has. Built from two word loads, so no `unsafe` is needed.
#[cfg(target_arch = "x86_64")]
#[inline]
fn digit_bits16(lane: &[u8]) -> u64 {
    use std::arch::x86_64::{
        _mm_and_si128, _mm_cmpgt_epi8, _mm_cmplt_epi8, _mm_movemask_epi8, _mm_set_epi64x, _mm_set1_epi8,
    };
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(lane.get(i..i + 8).unwrap_or(&[0; 8]));
        i64::from_le_bytes(w)
    };
    // SAFETY: these intrinsics only need SSE2, which is part of the x86-64 baseline (every
    // x86_64 target enables it), and they take no pointers. Checked against the SWAR version
    // on every byte value by `digit_bits16_matches_swar`.
    #[allow(unsafe_code)]
    let movemask = unsafe {
        let v = _mm_set_epi64x(word(8), word(0));
        // Signed compares: bytes ≥ 0x80 are negative, so they fail the first one.
        let ge = _mm_cmpgt_epi8(v, _mm_set1_epi8(b'0' as i8 - 1));
        let le = _mm_cmplt_epi8(v, _mm_set1_epi8(b'9' as i8 + 1));
        _mm_movemask_epi8(_mm_and_si128(ge, le))
    };
    u64::from(movemask as u16)
}

/// The portable fallback of [`digit_bits16`]: two SWAR words.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn digit_bits16(lane: &[u8]) -> u64 {
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(lane.get(i..i + 8).unwrap_or(&[0; 8]));
        u64::from_le_bytes(w)
    };
    digit_bits8(word(0)) | digit_bits8(word(8)) << 8
}

/// Digit bitmap of the 64 bytes at `base` (bit `k` for `b[base + k]`), zero past the end.
fn digit_mask(b: &[u8], base: usize) -> u64 {
    let block = b.get(base..).unwrap_or_default();
    let mut mask = 0u64;
    if let Some(full) = block.first_chunk::<64>() {
        for (k, lane) in full.chunks_exact(16).enumerate() {
            mask |= digit_bits16(lane) << (16 * k);
        }
    } else {
        for (k, c) in block.iter().enumerate() {
            mask |= u64::from(c.is_ascii_digit()) << k;
        }
    }
    mask
}

/// Finds digits left to right, 64 bytes at a time: a block's digit bitmap is computed once
/// (branch-free SWAR) and then answers every query that lands in it. This walk is the one pass
/// over the whole text, so it has to cost well under a cycle per byte.
pub(super) struct DigitFinder<'a> {
    b: &'a [u8],
    base: usize,
    mask: u64,
}

impl<'a> DigitFinder<'a> {
    pub(super) fn new(b: &'a [u8]) -> DigitFinder<'a> {
        DigitFinder { b, base: 0, mask: digit_mask(b, 0) }
    }

    /// The first digit at or after `from`. Calls must not go backwards.
    #[inline]
    pub(super) fn next_from(&mut self, mut from: usize) -> Option<usize> {
        loop {
            if from >= self.base + 64 {
                self.base = from & !63;
                self.mask = digit_mask(self.b, self.base);
            }
            let shift = from.saturating_sub(self.base);
            let rest = self.mask.checked_shr(shift as u32).unwrap_or(0);
            if rest != 0 {
                return Some(from + rest.trailing_zeros() as usize);
            }
            from = self.base + 64;
            if from >= self.b.len() {
                return None;
            }
        }
    }
}

impl DigitFinder<'_> {
    /// End of the digit run starting at `s` (the last position `next_from` returned): read off
    /// the bitmap when the run ends inside the current block.
    #[inline]
    pub(super) fn run_end(&self, s: usize) -> usize {
        let shift = s.saturating_sub(self.base);
        if let Some(rest) = (!self.mask).checked_shr(shift as u32) {
            let len = rest.trailing_zeros() as usize;
            if shift + len < 64 {
                return s + len;
            }
        }
        digit_end(self.b, s)
    }
}

/// Position of the next ASCII digit at or after `i` (for tests and one-off queries).
#[cfg(test)]
pub(super) fn next_digit(b: &[u8], i: usize) -> Option<usize> {
    DigitFinder::new(b).next_from(i)
}

/// The ASCII word just before `i`, skipping the separators in `skip` first (e.g. `"version: "`).
pub(super) fn word_before<'a>(b: &'a [u8], i: usize, skip: &[u8]) -> &'a [u8] {
    let mut e = i;
    while e > 0 && skip.contains(&before(b, e)) {
        e -= 1;
    }
    let s = alpha_start(b, e);
    b.get(s..e).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn next_digit_matches_naive() {
        let samples: [&[u8]; 6] = [b"", b"abc", b"abcdefgh9", b"/:;@[`", b"xxxxxxxxxxxxxxxxxxxxxx0", b"\xff\x2f\x3a5"];
        for s in samples {
            let mut finder = DigitFinder::new(s);
            for i in 0..=s.len() {
                let naive = s[i..].iter().position(u8::is_ascii_digit).map(|p| p + i);
                assert_eq!(next_digit(s, i), naive, "{s:?} from {i}");
                assert_eq!(finder.next_from(i), naive, "{s:?} from {i} (reused)");
                if let Some(d) = naive {
                    assert_eq!(finder.run_end(d), digit_end(s, d), "{s:?} run at {d}");
                }
            }
        }
    }

    /// The SSE2 lanes (on x86_64) agree with the SWAR words and the plain definition on every
    /// byte value in every position.
    #[test]
    fn digit_bits16_matches_swar() {
        for value in 0..=255u8 {
            for at in 0..16 {
                let mut lane = [b'a'; 16];
                lane[at] = value;
                let expect = u64::from(value.is_ascii_digit()) << at;
                assert_eq!(digit_bits16(&lane), expect, "byte {value:#x} at {at}");
                let word = |i: usize| u64::from_le_bytes(lane[i..i + 8].try_into().unwrap());
                assert_eq!(digit_bits8(word(0)) | digit_bits8(word(8)) << 8, expect);
            }
        }
        let mixed = *b"0a9/:\xff5\x80 12\x009x8Z";
        let naive = mixed.iter().enumerate().fold(0u64, |m, (k, c)| m | u64::from(c.is_ascii_digit()) << k);
        assert_eq!(digit_bits16(&mixed), naive);
    }

    #[test]
    fn word_before_skips_separators() {
        assert_eq!(word_before(b"version: 1", 9, b" :"), b"version");
        assert_eq!(word_before(b"1", 0, b" "), b"");
    }
}
