//! Phone numbers: E.164 (`+` or `00`, then 8–15 digits) and the common national shapes (North
//! American 3-3-4, and trunk-prefix `0` numbers as written in the UK, France, Germany and most of
//! Europe). Bare digit runs without a `+` are not phones: they are ids far more often.

use super::groups::number_ends;
use super::text::{at, digit_end};

const MAX: usize = 8;

/// A phone-shaped run: digit groups joined by one separator each, where exactly one group may be
/// wrapped in parentheses ("(555) 123-4567", "+44 (0)20 7946 0958").
struct Parsed {
    spans: [(usize, usize); MAX],
    /// Separator before each group: the byte, or `b'('` when a parenthesis is involved.
    seps: [u8; MAX],
    /// Index of the parenthesized group, if any.
    paren: Option<usize>,
    /// Whether the parenthesis was closed right after that group.
    closed: bool,
    len: usize,
}

fn parse(b: &[u8], anchor: usize) -> Parsed {
    let mut p = Parsed { spans: [(0, 0); MAX], seps: [0; MAX], paren: None, closed: false, len: 0 };
    let mut i = anchor;
    if at(b, i) == b'+' {
        i += 1;
    }
    if at(b, i) == b'(' {
        p.paren = Some(0);
        i += 1;
    }
    let mut sep = 0u8;
    while p.len < MAX {
        let e = digit_end(b, i);
        if e == i {
            break;
        }
        if let (Some(span), Some(s)) = (p.spans.get_mut(p.len), p.seps.get_mut(p.len)) {
            *span = (i, e);
            *s = sep;
        }
        p.len += 1;
        let mut j = e;
        sep = 0;
        if at(b, j) == b')' {
            if p.paren != Some(p.len - 1) {
                break;
            }
            p.closed = true;
            sep = b'(';
            j += 1;
        }
        let c = at(b, j);
        if matches!(c, b' ' | b'-' | b'.' | b'/') {
            if sep == 0 {
                sep = c;
            }
            j += 1;
        }
        let opens = at(b, j) == b'(' && p.paren.is_none();
        if opens {
            sep = b'(';
            j += 1;
        }
        if sep == 0 || !at(b, j).is_ascii_digit() {
            break;
        }
        // Only now is the parenthesis part of the number ("555-0199 (24/7)" leaves it out).
        if opens {
            p.paren = Some(p.len);
        }
        i = j;
    }
    p
}

/// End of a phone number starting at `anchor` (a digit, `+` or `(`), if there is one.
pub(super) fn at_anchor(b: &[u8], anchor: usize) -> Option<usize> {
    let plus = at(b, anchor) == b'+';
    let p = parse(b, anchor);
    for k in (1..=p.len).rev() {
        let spans = p.spans.get(..k).unwrap_or_default();
        let seps = p.seps.get(1..k).unwrap_or_default();
        // A parenthesis within the number must be closed, and not on its last group.
        let paren = p.paren.filter(|&g| g < k);
        if let Some(g) = paren
            && (g + 1 >= k || !p.closed)
        {
            continue;
        }
        let end = spans.last().map_or(anchor, |&(_, e)| e);
        if !number_ends(b, end) {
            continue;
        }
        if valid(b, spans, seps, plus, paren.is_some()) {
            return Some(end);
        }
    }
    None
}

fn valid(b: &[u8], spans: &[(usize, usize)], seps: &[u8], plus: bool, paren: bool) -> bool {
    let digits: usize = spans.iter().map(|&(s, e)| e - s).sum();
    let lens = |i: usize| spans.get(i).map_or(0, |&(s, e)| e - s);
    let first = |i: usize| spans.get(i).map_or(0, |&(s, _)| at(b, s));
    let second = |i: usize| spans.get(i).map_or(0, |&(s, _)| at(b, s + 1));
    // Separators other than parentheses must agree ("555-123-4567", not "555 123-4567"); a
    // slash is only the German area-code form "030/1234567".
    let mut other = seps.iter().copied().filter(|&c| c != b'(');
    let sep = other.next();
    if !other.all(|c| Some(c) == sep) {
        return false;
    }
    if plus {
        return sep != Some(b'/') && (8..=15).contains(&digits);
    }
    if first(0) == b'0' && second(0) == b'0' {
        // International prefix 00 instead of +.
        return spans.len() > 1 && sep != Some(b'/') && (10..=17).contains(&digits) && lens(0) >= 3;
    }
    if spans.len() < 2 {
        return false;
    }
    if first(0) == b'0' {
        // Trunk-prefixed national number: 2–5 digit area code, all groups 2+ digits.
        let groups_ok = (2..=5).contains(&lens(0)) && (0..spans.len()).all(|i| (2..=8).contains(&lens(i)));
        let slash_ok = sep != Some(b'/') || spans.len() == 2;
        return groups_ok && slash_ok && spans.len() <= 5 && (10..=12).contains(&digits);
    }
    // North American: [1] NXX XXX XXXX, area code optionally in parentheses. The exchange is
    // not checked: "555-123-4567" is how people write (fictional) numbers.
    let off = usize::from(lens(0) == 1 && first(0) == b'1');
    let nanp =
        spans.len() == 3 + off && lens(off) == 3 && lens(off + 1) == 3 && lens(off + 2) == 4 && first(off) >= b'2';
    nanp && sep != Some(b'/') && (!paren || spans.len() == 3 + off)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
    use super::*;

    fn phone(s: &str) -> bool {
        at_anchor(s.as_bytes(), 0) == Some(s.len())
    }

    #[test]
    fn accepts_common_formats() {
        for s in [
            "+1 (555) 123-4567",
            "+1-555-123-4567",
            "+15551234567",
            "+44 20 7946 0958",
            "+44 (0)20 7946 0958",
            "+33 1 23 45 67 89",
            "+49 30 1234567",
            "0044 20 7946 0958",
            "(555) 123-4567",
            "(555)123-4567",
            "555-123-4567",
            "555.123.4567",
            "1-800-555-0199",
            "020 7946 0958",
            "07700 900123",
            "01 23 45 67 89",
            "01.23.45.67.89",
            "030 1234567",
            "030/1234567",
            "0151 12345678",
        ] {
            assert!(phone(s), "{s}");
        }
    }

    #[test]
    fn rejects_lookalikes() {
        for s in [
            "1.2.3",
            "2024-01-15",
            "15/01/2024",
            "01.01.2024",
            "192.168.1.1",
            "5551234567",
            "12345678901",
            "555 123-4567",
            "123-456-7890",
            "0-306-40615-2",
            "978-3-16-148410-0",
            "+1.2",
            "(555 123-4567",
            "555)-123-4567",
        ] {
            assert!(!phone(s), "{s}");
        }
        assert_eq!(at_anchor(b"555-123-4567-89", 0), None);
        assert_eq!(at_anchor(b"555-123-4567.", 0), Some(12));
        assert_eq!(at_anchor(b"555.010.0199 (legal)", 0), Some(12));
        assert_eq!(at_anchor(b"1-800-555-0199 (24/7)", 0), Some(14));
    }
}
