//! E-mail addresses, RFC 5322-ish: a dot-atom local part, `@`, and a domain of two or more
//! labels whose last one (the TLD) is 2+ letters. Triggered by `memchr` on `@`.

use super::text::{at, before};

/// Image and asset extensions: "logo@2x.png" is a retina asset, not an address.
const ASSET_TLDS: &[&str] = &[
    "png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "bmp", "tif", "tiff", "css", "js", "json", "map", "woff",
    "woff2", "ttf", "mp4", "webm",
];

fn local_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-' | b'\'' | b'!' | b'#' | b'&' | b'=')
}

fn domain_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-')
}

/// Scans for e-mail addresses, calling `emit(start, end)` for each, in order.
pub(super) fn scan(b: &[u8], mut emit: impl FnMut(usize, usize)) {
    let mut next_free = 0;
    for p in memchr::memchr_iter(b'@', b) {
        if p < next_free {
            continue;
        }
        if let Some((s, e)) = at_sign(b, p) {
            emit(s, e);
            next_free = e;
        }
    }
}

/// The address around the `@` at `p`.
fn at_sign(b: &[u8], p: usize) -> Option<(usize, usize)> {
    let mut s = p;
    while s + 64 > p && local_byte(before(b, s)) {
        s -= 1;
    }
    // Leading punctuation is the surrounding prose ("'bob@x.com'", "...bob@x.com").
    while matches!(at(b, s), b'.' | b'\'' | b'-' | b'+' | b'=' | b'!' | b'#' | b'&') && s < p {
        s += 1;
    }
    let local = b.get(s..p)?;
    if local.is_empty() || local.ends_with(b".") || local.windows(2).any(|w| w == b"..") {
        return None;
    }
    let mut e = p + 1;
    while e < p + 254 && domain_byte(at(b, e)) {
        e += 1;
    }
    while matches!(before(b, e), b'.' | b'-') && e > p + 1 {
        e -= 1;
    }
    let domain = b.get(p + 1..e)?;
    if !valid_domain(domain) {
        return None;
    }
    // "git@github.com:org/repo.git" is an scp-style remote; "https://u:p@host" carries
    // credentials (the secrets detector's business), not an address.
    if at(b, e) == b':' && at(b, e + 1).is_ascii_alphanumeric() {
        return None;
    }
    if before(b, s) == b':' && url_userinfo(b, s) {
        return None;
    }
    Some((s, e))
}

/// Whether the token ending at `s` contains "://" (the userinfo part of a URL).
fn url_userinfo(b: &[u8], s: usize) -> bool {
    let from = s.saturating_sub(200);
    let token = b.get(from..s).unwrap_or_default();
    let tail = token.rsplit(|c| c.is_ascii_whitespace()).next().unwrap_or_default();
    tail.windows(3).any(|w| w == b"://")
}

fn valid_domain(d: &[u8]) -> bool {
    let mut labels = 0;
    let mut tld: &[u8] = &[];
    for label in d.split(|&c| c == b'.') {
        if label.is_empty() || label.len() > 63 || label.starts_with(b"-") || label.ends_with(b"-") {
            return false;
        }
        labels += 1;
        tld = label;
    }
    labels >= 2
        && tld.len() >= 2
        && tld.iter().all(u8::is_ascii_alphabetic)
        && !ASSET_TLDS.iter().any(|a| tld.eq_ignore_ascii_case(a.as_bytes()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
    use super::*;

    fn emails(s: &str) -> Vec<&str> {
        let mut v = Vec::new();
        scan(s.as_bytes(), |a, z| v.push(&s[a..z]));
        v
    }

    #[test]
    fn finds_addresses() {
        assert_eq!(emails("mail jane.doe+tag@example.co.uk."), ["jane.doe+tag@example.co.uk"]);
        assert_eq!(emails("<bob@mail-server.example.org>"), ["bob@mail-server.example.org"]);
        assert_eq!(emails("mailto:info@example.com"), ["info@example.com"]);
        assert_eq!(emails("'o'neil@example.ie'"), ["o'neil@example.ie"]);
        assert_eq!(emails("a@b.io, c@d.de"), ["a@b.io", "c@d.de"]);
    }

    #[test]
    fn rejects_lookalikes() {
        for s in [
            "@app.route('/')",
            "user@localhost",
            "a@b.c",
            "x@host.123",
            "name@domain..com",
            "logo@2x.png",
            "pkg@1.2.3",
            "git@github.com:org/repo.git",
            "https://user:pass@example.com/",
            "a..b@example.com",
            "me.@example.com",
            "x@-bad.com",
            "@",
            "foo@",
        ] {
            assert!(emails(s).is_empty(), "{s}");
        }
    }
}
