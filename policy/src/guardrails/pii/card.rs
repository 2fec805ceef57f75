//! Payment card numbers: 13–19 digits, optionally grouped with single spaces or dashes, with a
//! known issuer prefix (IIN) and a valid Luhn check digit. Both checks are needed: Luhn alone
//! passes one random number in ten.

use super::groups::{Groups, number_ends};

/// End of a card number starting at the digit `s`, if there is one.
pub(super) fn at(b: &[u8], s: usize) -> Option<usize> {
    let g = Groups::read(b, s);
    // Longest grouping first, so "4242 4242 4242 4242" is not cut short by a shorter valid prefix.
    for k in (1..=g.len()).rev() {
        let n = g.digits(k);
        if !(13..=19).contains(&n) || !g.consistent(k) {
            continue;
        }
        // Grouped numbers use groups of 3+ digits ("4242 4242 ...", Amex "3782 822463 10005").
        if k > 1 && g.spans(k).iter().any(|&(s, e)| e - s < 3) {
            continue;
        }
        let end = g.end(k);
        if !number_ends(b, end) {
            continue;
        }
        let mut digits = [0u8; 19];
        let len = g.collect(b, k, &mut digits);
        let digits = digits.get(..len).unwrap_or_default();
        if luhn(digits) && known_issuer(digits) {
            return Some(end);
        }
    }
    None
}

/// The Luhn (mod 10) checksum over ASCII digits.
pub(super) fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, &d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d.wrapping_sub(b'0'));
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// Whether the number starts with a prefix of a major network and has a length that network
/// issues (Visa, Mastercard, Amex, Discover, JCB, Diners Club, UnionPay).
pub(super) fn known_issuer(digits: &[u8]) -> bool {
    let prefix = |n: usize| super::text::number(digits, 0, n.min(digits.len()));
    let len = digits.len();
    let (p1, p2, p3, p4) = (prefix(1), prefix(2), prefix(3), prefix(4));
    match p1 {
        4 => matches!(len, 13 | 16 | 19),
        5 => (51..=55).contains(&p2) && len == 16,
        2 => (2221..=2720).contains(&p4) && len == 16,
        3 => {
            (matches!(p2, 34 | 37) && len == 15)
                || ((3528..=3589).contains(&p4) && (16..=19).contains(&len))
                || ((matches!(p2, 36 | 38) || (300..=305).contains(&p3)) && (14..=19).contains(&len))
        }
        6 => (p4 == 6011 || p2 == 65 || (644..=649).contains(&p3) || p2 == 62) && (16..=19).contains(&len),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn luhn_known_values() {
        assert!(luhn(b"4242424242424242"));
        assert!(luhn(b"79927398713"));
        assert!(!luhn(b"79927398710"));
        assert!(!luhn(b"4242424242424241"));
        assert!(!luhn(b""));
    }

    #[test]
    fn issuers() {
        // Stripe's documented test numbers.
        for n in [
            "4242424242424242",
            "5555555555554444",
            "2223003122003222",
            "378282246310005",
            "6011111111111117",
            "3566002020360505",
            "36227206271667",
            "6200000000000005",
        ] {
            assert!(known_issuer(n.as_bytes()) && luhn(n.as_bytes()), "{n}");
        }
        assert!(!known_issuer(b"1234567812345670"));
        assert!(known_issuer(b"4222222222222")); // 13 digits is fine for Visa...
        assert!(!known_issuer(b"55555555555544")); // ...14 is not for Mastercard
    }

    #[test]
    fn grouped_and_bounded() {
        assert_eq!(at(b"4242 4242 4242 4242", 0), Some(19));
        assert_eq!(at(b"4242-4242-4242-4242.", 0), Some(19));
        assert_eq!(at(b"4242 4242-4242 4242", 0), None);
        assert_eq!(at(b"4242424242424242.5", 0), None);
        assert_eq!(at(b"4242424242424241", 0), None);
        assert_eq!(at(b"3782 822463 10005 x", 0), Some(17));
    }
}
