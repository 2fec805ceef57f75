//! IBANs: country code, two check digits, then the BBAN, written solid or in groups of four;
//! the length must be the registered one for the country and the ISO 7064 mod-97 remainder 1.

use super::text::{at, before, is_word};

/// Registered IBAN lengths (SWIFT IBAN registry): SEPA countries, GB, CH, NO and a few more
/// that are common in practice.
const LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AT", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BR", 29),
    (b"CH", 21),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DK", 18),
    (b"EE", 20),
    (b"ES", 24),
    (b"FI", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"MC", 27),
    (b"MT", 31),
    (b"NL", 18),
    (b"NO", 15),
    (b"PL", 28),
    (b"PT", 25),
    (b"RO", 24),
    (b"SA", 24),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"TR", 26),
    (b"VA", 22),
];

/// The registered length for a country code.
pub(super) fn length(cc: &[u8]) -> Option<usize> {
    LENGTHS.iter().find(|(c, _)| c.as_slice() == cc).map(|&(_, n)| n)
}

/// End of an IBAN whose check digits start at the digit `s` (the country code is the two
/// uppercase letters before it).
pub(super) fn at_check_digits(b: &[u8], s: usize) -> Option<(usize, usize)> {
    let start = s.checked_sub(2)?;
    if is_word(before(b, start)) || !at(b, s + 1).is_ascii_digit() {
        return None;
    }
    let want = length(b.get(start..s)?)?;
    let mut chars = [0u8; 34];
    let mut n = 0;
    let mut i = start;
    while n < want {
        let c = at(b, i);
        if c.is_ascii_digit() || c.is_ascii_uppercase() {
            if let Some(slot) = chars.get_mut(n) {
                *slot = c;
            }
            n += 1;
            i += 1;
        } else if c == b' ' && n % 4 == 0 && at(b, i + 1).is_ascii_alphanumeric() {
            // Print form: a single space between groups of four.
            i += 1;
        } else {
            return None;
        }
    }
    if is_word(at(b, i)) {
        return None;
    }
    mod97(chars.get(..n)?).then_some((start, i))
}

/// ISO 7064 MOD 97-10 over an IBAN in electronic form (country code first).
pub(super) fn mod97(iban: &[u8]) -> bool {
    if iban.len() < 5 {
        return false;
    }
    let (head, tail) = iban.split_at(4);
    let mut rem = 0u32;
    for &c in tail.iter().chain(head) {
        rem = match c {
            b'0'..=b'9' => (rem * 10 + u32::from(c - b'0')) % 97,
            b'A'..=b'Z' => (rem * 100 + u32::from(c - b'A') + 10) % 97,
            b'a'..=b'z' => (rem * 100 + u32::from(c - b'a') + 10) % 97,
            _ => return false,
        };
    }
    rem == 1
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn mod97_registry_examples() {
        for iban in [
            "GB82WEST12345698765432",
            "DE89370400440532013000",
            "FR1420041010050500013M02606",
            "NL91ABNA0417164300",
            "CH9300762011623852957",
            "NO9386011117947",
            "BE68539007547034",
            "ES9121000418450200051332",
            "IT60X0542811101000000123456",
        ] {
            assert!(mod97(iban.as_bytes()), "{iban}");
            assert_eq!(length(&iban.as_bytes()[..2]), Some(iban.len()), "{iban}");
        }
        assert!(!mod97(b"GB82WEST12345698765433"));
        assert!(!mod97(b"GB83WEST12345698765432"));
        assert!(!mod97(b"GB8"));
    }

    #[test]
    fn print_form_and_bounds() {
        let s = b"IBAN GB82 WEST 1234 5698 7654 32.";
        assert_eq!(at_check_digits(s, 7), Some((5, 32)));
        assert_eq!(at_check_digits(b"DE89370400440532013000", 2), Some((0, 22)));
        assert_eq!(at_check_digits(b"DE893704004405320130001", 2), None);
        assert_eq!(at_check_digits(b"XDE89370400440532013000", 3), None);
        assert_eq!(at_check_digits(b"GB82 WE ST12 3456 9876 5432", 2), None);
        assert_eq!(at_check_digits(b"DE89 3704 0044 0532 0130 01", 2), None);
    }
}
