//! Digit groups: the shape shared by cards, phones and SSNs ("4242 4242 4242 4242",
//! "555-123-4567"). Parsed into a fixed array on the stack, so a candidate costs no allocation.

use super::text::{at, digit_end, is_word};

/// At most this many groups are read; longer runs are not cards, phones or SSNs.
pub(super) const MAX_GROUPS: usize = 8;

/// Digit groups separated by exactly one space or dash.
#[derive(Clone, Copy)]
pub(super) struct Groups {
    /// `(start, end)` of each group's digits.
    spans: [(usize, usize); MAX_GROUPS],
    /// The separator before each group (0 before the first).
    seps: [u8; MAX_GROUPS],
    len: usize,
}

impl Groups {
    /// Reads groups from `s` (which must be a digit) while a space or dash is followed by a
    /// digit.
    pub(super) fn read(b: &[u8], s: usize) -> Groups {
        let mut g = Groups { spans: [(0, 0); MAX_GROUPS], seps: [0; MAX_GROUPS], len: 0 };
        let mut i = s;
        let mut sep = 0u8;
        while g.len < MAX_GROUPS {
            let e = digit_end(b, i);
            if e == i {
                break;
            }
            if let (Some(span), Some(sp)) = (g.spans.get_mut(g.len), g.seps.get_mut(g.len)) {
                *span = (i, e);
                *sp = sep;
            }
            g.len += 1;
            let c = at(b, e);
            if !matches!(c, b' ' | b'-') || !at(b, e + 1).is_ascii_digit() {
                break;
            }
            sep = c;
            i = e + 1;
        }
        g
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The first `k` groups' spans.
    pub(super) fn spans(&self, k: usize) -> &[(usize, usize)] {
        self.spans.get(..k.min(self.len)).unwrap_or_default()
    }

    /// The separators before groups `1..k` (all equal when the grouping is consistent).
    pub(super) fn seps(&self, k: usize) -> &[u8] {
        self.seps.get(1..k.min(self.len)).unwrap_or_default()
    }

    /// End of group `k - 1`.
    pub(super) fn end(&self, k: usize) -> usize {
        self.spans(k).last().map_or(0, |&(_, e)| e)
    }

    /// Whether all separators up to group `k` are the same byte.
    pub(super) fn consistent(&self, k: usize) -> bool {
        let seps = self.seps(k);
        seps.first().is_none_or(|&f| seps.iter().all(|&c| c == f))
    }

    /// Total digits in the first `k` groups.
    pub(super) fn digits(&self, k: usize) -> usize {
        self.spans(k).iter().map(|&(s, e)| e - s).sum()
    }

    /// The digits of the first `k` groups, copied into `buf`; returns how many.
    pub(super) fn collect(&self, b: &[u8], k: usize, buf: &mut [u8]) -> usize {
        let mut n = 0;
        for &(s, e) in self.spans(k) {
            for &d in b.get(s..e).unwrap_or_default() {
                if let Some(slot) = buf.get_mut(n) {
                    *slot = d;
                    n += 1;
                }
            }
        }
        n
    }
}

/// Whether a number may end at `e`: not glued to a word, and not continued by `.5`, `-5`, `/5`,
/// `,5` or `:5` (the tail of a longer number, date, time or version).
pub(super) fn number_ends(b: &[u8], e: usize) -> bool {
    let c = at(b, e);
    if is_word(c) {
        return false;
    }
    !(matches!(c, b'.' | b'-' | b'/' | b',' | b':') && at(b, e + 1).is_ascii_digit())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn reads_groups() {
        let b = b"555-123-4567 x";
        let g = Groups::read(b, 0);
        assert_eq!(g.len(), 3);
        assert_eq!(g.digits(3), 10);
        assert_eq!(g.end(3), 12);
        assert!(g.consistent(3));
        let g = Groups::read(b"12 34-56", 0);
        assert!(!g.consistent(3));
        assert!(g.consistent(2));
    }

    #[test]
    fn number_boundaries() {
        assert!(number_ends(b"12.", 2));
        assert!(!number_ends(b"12.5", 2));
        assert!(!number_ends(b"12a", 2));
        assert!(number_ends(b"12", 2));
    }
}
