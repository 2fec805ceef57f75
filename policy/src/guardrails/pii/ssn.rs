//! US Social Security numbers: AAA-GG-SSSS with dashes or spaces, or nine bare digits right
//! after an "SSN" / "social security" keyword. Applies the SSA's never-issued rules (area 000,
//! 666 or 900–999; group 00; serial 0000) and rejects the two famous invalid numbers,
//! 078-05-1120 (the 1938 Woolworth wallet card, voided) and 123-45-6789 (reserved for
//! advertising): they appear in documentation far more often than as anyone's number.

use super::groups::{Groups, number_ends};
use super::text::number;

/// How a candidate is shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// AAA-GG-SSSS or AAA GG SSSS.
    Grouped,
    /// Nine bare digits (only an SSN next to a keyword).
    Bare,
}

/// End and shape of an SSN-shaped number starting at the digit `s`.
pub(super) fn at(b: &[u8], s: usize) -> Option<(usize, Shape)> {
    let g = Groups::read(b, s);
    let spans = g.spans(3);
    let (shape, k) = match spans {
        [(a0, a1), (g0, g1), (s0, s1), ..] if a1 - a0 == 3 && g1 - g0 == 2 && s1 - s0 == 4 && g.consistent(3) => {
            (Shape::Grouped, 3)
        }
        [(a0, a1), ..] if a1 - a0 == 9 => (Shape::Bare, 1),
        _ => return None,
    };
    let end = g.end(k);
    if !number_ends(b, end) {
        return None;
    }
    let mut d = [0u8; 9];
    if g.collect(b, k, &mut d) != 9 || !valid(&d) {
        return None;
    }
    Some((end, shape))
}

/// The SSA's issuance rules over the nine digits.
pub(super) fn valid(d: &[u8; 9]) -> bool {
    let area = number(d, 0, 3);
    let group = number(d, 3, 5);
    let serial = number(d, 5, 9);
    let famous = d == b"078051120" || d == b"123456789";
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0 && !famous
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn issuance_rules() {
        assert!(valid(b"536221234"));
        assert!(!valid(b"000221234"));
        assert!(!valid(b"666221234"));
        assert!(!valid(b"900221234"));
        assert!(!valid(b"999221234"));
        assert!(!valid(b"536001234"));
        assert!(!valid(b"536220000"));
        assert!(!valid(b"078051120"));
        assert!(!valid(b"123456789"));
        assert!(valid(b"899991234"));
    }

    #[test]
    fn shapes() {
        assert_eq!(at(b"536-22-1234", 0), Some((11, Shape::Grouped)));
        assert_eq!(at(b"536 22 1234.", 0), Some((11, Shape::Grouped)));
        assert_eq!(at(b"536221234", 0), Some((9, Shape::Bare)));
        assert_eq!(at(b"536-22 1234", 0), None);
        assert_eq!(at(b"536-22-12345", 0), None);
        assert_eq!(at(b"536-22-1234-5", 0), None);
        assert_eq!(at(b"5362212345", 0), None);
    }
}
