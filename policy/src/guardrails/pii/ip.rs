//! IP addresses. IPv4: a dotted quad of octets ≤ 255, not part of a longer dotted number and not
//! introduced as a version. IPv6: a run of hex digits, colons and dots around a `:`, parsed by
//! `std::net::Ipv6Addr` (so compressed and IPv4-mapped forms are handled by the standard library).

use std::net::Ipv6Addr;

use super::text::{at, before, digit_end, is_word, number, word_before};

/// End of an IPv4 address starting at the digit `s`.
pub(super) fn v4_at(b: &[u8], s: usize) -> Option<usize> {
    let mut i = s;
    for octet in 0..4 {
        let e = digit_end(b, i);
        let len = e - i;
        // No leading zeros: "010" is octal to some parsers and a zero-padded counter to others.
        if len == 0 || len > 3 || (len > 1 && at(b, i) == b'0') || number(b, i, e) > 255 {
            return None;
        }
        i = e;
        if octet < 3 {
            if at(b, i) != b'.' {
                return None;
            }
            i += 1;
        }
    }
    if is_word(at(b, i)) || (at(b, i) == b'.' && at(b, i + 1).is_ascii_digit()) {
        return None;
    }
    // "version 1.2.3.4", "v1.2.3.4" are four-part versions, not hosts.
    let prev = word_before(b, s, b" :=");
    let versionish = ["version", "ver", "v", "release", "build", "firmware"];
    if versionish.iter().any(|w| prev.eq_ignore_ascii_case(w.as_bytes())) {
        return None;
    }
    Some(i)
}

fn v6_byte(c: u8) -> bool {
    c.is_ascii_hexdigit() || c == b':' || c == b'.'
}

/// Scans for IPv6 addresses, calling `emit(start, end)` for each, in order.
pub(super) fn scan_v6(b: &[u8], mut emit: impl FnMut(usize, usize)) {
    let mut next_free = 0;
    for p in memchr::memchr_iter(b':', b) {
        if p < next_free {
            continue;
        }
        // Cheap reject: JSON `"key": value`, prose "Note: x".
        if !v6_byte(before(b, p)) && !v6_byte(at(b, p + 1)) {
            continue;
        }
        // Colons are visited left to right, so this is the address's first colon and at most
        // one group (four hex digits) precedes it. Anything glued to a longer word ("std::",
        // "Duration::", "u8::") is dismissed before the forward walk.
        let mut s = p;
        while p - s < 4 && before(b, s).is_ascii_hexdigit() {
            s -= 1;
        }
        if is_word(before(b, s)) || v6_byte(before(b, s)) {
            continue;
        }
        let mut e = p;
        while v6_byte(at(b, e)) {
            e += 1;
        }
        next_free = e;
        if let Some(end) = v6_candidate(b, s, e) {
            emit(s, end);
        }
    }
}

/// Validates the maximal run `b[s..e]`; returns the end of the address within it.
fn v6_candidate(b: &[u8], s: usize, e: usize) -> Option<usize> {
    // Glued to an identifier ("std::vector", "u8::MAX") or a longer token.
    if is_word(before(b, s)) || is_word(at(b, e)) {
        return None;
    }
    let mut end = e;
    while before(b, end) == b'.' {
        end -= 1;
    }
    let run = b.get(s..end)?;
    let colons = run.iter().filter(|&&c| c == b':').count();
    if colons < 2 || !run.iter().any(u8::is_ascii_digit) {
        return None;
    }
    let parses = |r: &[u8]| std::str::from_utf8(r).ok().and_then(|t| t.parse::<Ipv6Addr>().ok()).is_some();
    if parses(run) {
        return Some(end);
    }
    // "fe80::1: link-local" — a trailing colon belongs to the prose.
    let trimmed = run.strip_suffix(b":").filter(|r| !r.ends_with(b":"))?;
    parses(trimmed).then_some(end - 1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
    use super::*;

    fn v6(s: &str) -> Vec<&str> {
        let mut v = Vec::new();
        scan_v6(s.as_bytes(), |a, z| v.push(&s[a..z]));
        v
    }

    #[test]
    fn v4_edges() {
        assert_eq!(v4_at(b"192.168.1.1", 0), Some(11));
        assert_eq!(v4_at(b"255.255.255.255:80", 0), Some(15));
        assert_eq!(v4_at(b"10.0.0.0/8", 0), Some(8));
        assert_eq!(v4_at(b"10.0.0.1.", 0), Some(8));
        assert_eq!(v4_at(b"256.1.1.1", 0), None);
        assert_eq!(v4_at(b"1.2.3", 0), None);
        assert_eq!(v4_at(b"1.2.3.4.5", 0), None);
        assert_eq!(v4_at(b"01.2.3.4", 0), None);
        assert_eq!(v4_at(b"1.2.3.4a", 0), None);
        assert_eq!(v4_at(b"1234.2.3.4", 0), None);
        assert_eq!(v4_at(b"version 1.2.3.4", 8), None);
        assert_eq!(v4_at(b"v 1.2.3.4", 2), None);
        assert_eq!(v4_at(b"host 1.2.3.4", 5), Some(12));
    }

    #[test]
    fn v6_edges() {
        assert_eq!(v6("addr 2001:db8::ff00:42:8329 ok"), ["2001:db8::ff00:42:8329"]);
        assert_eq!(v6("fe80::1."), ["fe80::1"]);
        assert_eq!(v6("fe80::1: link"), ["fe80::1"]);
        assert_eq!(v6("[::1]:8080"), ["::1"]);
        assert_eq!(v6("::ffff:192.0.2.1"), ["::ffff:192.0.2.1"]);
        assert_eq!(v6("2001:0db8:0000:0000:0000:ff00:0042:8329"), ["2001:0db8:0000:0000:0000:ff00:0042:8329"]);
        assert!(v6("::").is_empty());
        assert!(v6("std::vector<int> a; u8::MAX; fmt::Debug").is_empty());
        assert!(v6("12:30:45 and 00:1a:2b:3c:4d:5e").is_empty());
        assert!(v6("{\"a\":1,\"b\":2}").is_empty());
        assert!(v6("dead::beef").is_empty());
        assert!(v6("2024-01-15T10:30:45Z").is_empty());
    }
}
