//! Request heads: httparse does the tokenising; this module decides framing, strictly.
//!
//! Everything that could let two parties disagree on where a request ends is refused here
//! (request smuggling): both `Content-Length` and `Transfer-Encoding`, more than one
//! `Content-Length`, a transfer coding other than a lone `chunked`, `Transfer-Encoding` on
//! HTTP/1.0, a malformed length, a bare LF line ending (httparse tolerates it; a front proxy
//! that does not would see different headers). The connection is closed after such a refusal.
//! Paths with `.` or `..` segments (raw or percent-encoded) are refused too: pass-through
//! forwards paths with the provider's key attached, and a normalising upstream would otherwise
//! resolve `/v1/files/../x` to a path no one allowed.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body (no `Content-Length`, no `Transfer-Encoding`).
    Empty,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A request the codec refuses, with the status to answer and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub status: u16,
    pub message: String,
}

impl Reject {
    fn bad(message: impl Into<String>) -> Self {
        Reject { status: 400, message: message.into() }
    }
}

#[derive(Debug, Clone)]
struct HeaderSpan {
    name: Range<u32>,
    value: Range<u32>,
}

/// A parsed request head. Strings are views into the raw head bytes: no copy per header.
#[derive(Debug, Clone)]
pub struct RequestHead {
    raw: Bytes,
    method: Range<u32>,
    target: Range<u32>,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    headers: Vec<HeaderSpan>,
    pub framing: BodyFraming,
    /// The client allows this connection to carry another request after this one.
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
}

fn span(base: *const u8, part: &[u8]) -> Range<u32> {
    // Both pointers come from the same buffer, which is at most `u32::MAX` long (the header
    // limit is far below that), so the offsets fit.
    let start = (part.as_ptr() as usize).wrapping_sub(base as usize) as u32;
    start..start + part.len() as u32
}

impl RequestHead {
    /// Parses a buffer that holds exactly one complete head.
    pub fn parse(raw: Bytes, max_headers: usize) -> Result<RequestHead, Reject> {
        match Self::analyse(&raw, max_headers)? {
            Some((mut head, len)) if len == raw.len() => {
                head.raw = raw;
                Ok(head)
            }
            _ => Err(Reject::bad("incomplete request head")),
        }
    }

    /// Parses a head at the start of `buf` (one httparse pass) and, when it is complete,
    /// splits it off `buf` without copying. `Ok(None)`: more bytes are needed.
    pub fn split_from(buf: &mut BytesMut, max_headers: usize) -> Result<Option<RequestHead>, Reject> {
        Ok(Self::analyse(buf, max_headers)?.map(|(mut head, len)| {
            head.raw = buf.split_to(len).freeze();
            head
        }))
    }

    /// The parse and the framing decision. Positions are offsets into `buf`; `raw` is empty.
    fn analyse(buf: &[u8], max_headers: usize) -> Result<Option<(RequestHead, usize)>, Reject> {
        let mut storage = [httparse::EMPTY_HEADER; 128];
        let slots = max_headers.min(storage.len());
        let mut req = httparse::Request::new(&mut storage[..slots]);
        let len = match req.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Reject {
                    status: 431,
                    message: format!("too many request headers (the limit is {slots})"),
                });
            }
            Err(e) => return Err(Reject::bad(format!("malformed request head: {e}"))),
        };
        let base = buf.as_ptr();
        let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
            return Err(Reject::bad("incomplete request line"));
        };
        let head = &buf[..len];
        if memchr::memchr_iter(b'\n', head).any(|i| i == 0 || head.get(i - 1) != Some(&b'\r')) {
            return Err(Reject::bad("bare LF line ending in the request head; use CRLF"));
        }
        if has_dot_segment(path) {
            return Err(Reject::bad("the request path must not contain '.' or '..' segments"));
        }
        if version > 1 {
            return Err(Reject { status: 505, message: "HTTP version not supported".into() });
        }

        let mut content_length: Option<u64> = None;
        let mut chunked = false;
        let mut te_seen = false;
        let mut host_count = 0;
        let mut conn_close = false;
        let mut conn_keep_alive = false;
        let mut expect_continue = false;
        let mut headers = Vec::with_capacity(req.headers.len());

        for h in req.headers.iter() {
            let name = h.name;
            let value = h.value;
            if name.eq_ignore_ascii_case("content-length") {
                if content_length.is_some() {
                    return Err(Reject::bad("more than one Content-Length header"));
                }
                content_length = Some(parse_content_length(value)?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                if te_seen {
                    return Err(Reject::bad("more than one Transfer-Encoding header"));
                }
                te_seen = true;
                chunked = transfer_coding_is_chunked(value)?;
            } else if name.eq_ignore_ascii_case("host") {
                host_count += 1;
            } else if name.eq_ignore_ascii_case("connection") {
                for token in value.split(|&b| b == b',') {
                    let token = trim(token);
                    if token.eq_ignore_ascii_case(b"close") {
                        conn_close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        conn_keep_alive = true;
                    }
                }
            } else if name.eq_ignore_ascii_case("expect") {
                if trim(value).eq_ignore_ascii_case(b"100-continue") {
                    expect_continue = version == 1;
                } else {
                    return Err(Reject { status: 417, message: "unsupported Expect value".into() });
                }
            }
            headers.push(HeaderSpan { name: span(base, name.as_bytes()), value: span(base, value) });
        }

        if te_seen && content_length.is_some() {
            return Err(Reject::bad("both Content-Length and Transfer-Encoding are present"));
        }
        if te_seen && version == 0 {
            return Err(Reject::bad("Transfer-Encoding is not allowed in an HTTP/1.0 request"));
        }
        if host_count > 1 {
            return Err(Reject::bad("more than one Host header"));
        }
        if host_count == 0 && version == 1 {
            return Err(Reject::bad("an HTTP/1.1 request needs a Host header"));
        }
        if !(path.starts_with('/') || (path == "*" && method == "OPTIONS")) {
            return Err(Reject::bad("the request target must be a path starting with '/'"));
        }

        let framing = if chunked {
            BodyFraming::Chunked
        } else {
            match content_length {
                Some(0) | None => BodyFraming::Empty,
                Some(n) => BodyFraming::Length(n),
            }
        };
        let keep_alive = if version == 1 { !conn_close } else { conn_keep_alive && !conn_close };

        let method = span(base, method.as_bytes());
        let target = span(base, path.as_bytes());
        let head = RequestHead {
            raw: Bytes::new(),
            method,
            target,
            minor_version: version,
            headers,
            framing,
            keep_alive,
            expect_continue: expect_continue && framing != BodyFraming::Empty,
        };
        Ok(Some((head, len)))
    }

    fn str_at(&self, r: &Range<u32>) -> &str {
        // httparse only accepts token characters in methods and visible ASCII in targets and
        // header names, so these ranges are ASCII; an empty string is the impossible fallback.
        self.raw.get(r.start as usize..r.end as usize).and_then(|b| std::str::from_utf8(b).ok()).unwrap_or("")
    }

    fn bytes_at(&self, r: &Range<u32>) -> &[u8] {
        self.raw.get(r.start as usize..r.end as usize).unwrap_or(&[])
    }

    pub fn method(&self) -> &str {
        self.str_at(&self.method)
    }

    /// The request target as sent: path and query.
    pub fn target(&self) -> &str {
        self.str_at(&self.target)
    }

    /// The path without the query string.
    pub fn path(&self) -> &str {
        let t = self.target();
        t.split_once('?').map_or(t, |(p, _)| p)
    }

    /// All headers in order, names as sent (ASCII tokens: httparse checked them).
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.headers.iter().map(|h| (self.bytes_at(&h.name), self.bytes_at(&h.value)))
    }

    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers().find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| v)
    }

    /// The raw head bytes (request line through the blank line).
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }
}

/// A `.` or `..` path segment, raw or percent-encoded (`%2e`).
fn has_dot_segment(target: &str) -> bool {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    path.split('/').any(|seg| is_dot_segment(seg.as_bytes()))
}

/// `.` or `..`, each dot possibly written `%2e`/`%2E`.
fn is_dot_segment(seg: &[u8]) -> bool {
    let mut dots = 0;
    let mut rest = seg;
    while !rest.is_empty() {
        rest = match rest {
            [b'.', tail @ ..] => tail,
            [b'%', b'2', e, tail @ ..] if e.eq_ignore_ascii_case(&b'e') => tail,
            _ => return false,
        };
        dots += 1;
        if dots > 2 {
            return false;
        }
    }
    dots > 0
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !c.is_ascii_whitespace()).map_or(start, |i| i + 1);
    &b[start..end.max(start)]
}

/// `Content-Length` must be plain decimal digits: no sign, no list, no spaces inside.
pub(crate) fn parse_content_length(value: &[u8]) -> Result<u64, Reject> {
    let v = trim(value);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(Reject::bad("invalid Content-Length"));
    }
    v.iter()
        .try_fold(0u64, |acc, &d| acc.checked_mul(10)?.checked_add(u64::from(d - b'0')))
        .ok_or_else(|| Reject::bad("invalid Content-Length"))
}

/// Only a lone `chunked` is accepted. Other codings are not implemented (501); a list whose
/// last coding is not `chunked` cannot be framed at all (400).
fn transfer_coding_is_chunked(value: &[u8]) -> Result<bool, Reject> {
    let codings: Vec<&[u8]> = value.split(|&b| b == b',').map(trim).collect();
    match codings.as_slice() {
        [only] if only.eq_ignore_ascii_case(b"chunked") => Ok(true),
        [.., last] if last.eq_ignore_ascii_case(b"chunked") => {
            Err(Reject { status: 501, message: "only the chunked transfer coding is supported".into() })
        }
        _ => Err(Reject::bad("the final transfer coding must be chunked")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> Result<RequestHead, Reject> {
        RequestHead::parse(Bytes::copy_from_slice(s.as_bytes()), 100)
    }

    #[test]
    fn simple_get() {
        let h = head("GET /v1/models?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(h.method(), "GET");
        assert_eq!(h.target(), "/v1/models?x=1");
        assert_eq!(h.path(), "/v1/models");
        assert_eq!(h.framing, BodyFraming::Empty);
        assert!(h.keep_alive);
        assert_eq!(h.header("HOST"), Some(&b"a"[..]));
    }

    #[test]
    fn framing_rules() {
        let h = head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n").unwrap();
        assert_eq!(h.framing, BodyFraming::Length(12));
        let h = head("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n").unwrap();
        assert_eq!(h.framing, BodyFraming::Chunked);
        for bad in [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET http://x/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
            "GET / HTTP/1.1\nHost: a\r\n\r\n",
            "GET /v1/files/../organization HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /v1/files/%2E%2e/x HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /v1/./models HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert_eq!(head(bad).map(|_| ()).unwrap_err().status, 400, "{bad:?}");
        }
        let r = head("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(r.map(|_| ()).unwrap_err().status, 501);
    }

    #[test]
    fn dots_inside_names_are_fine() {
        assert!(head("GET /v1/files/a..b/.x?q=../.. HTTP/1.1\r\nHost: a\r\n\r\n").is_ok());
    }

    #[test]
    fn keep_alive_defaults() {
        assert!(!head("GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap().keep_alive);
        assert!(!head("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap().keep_alive);
    }

    #[test]
    fn expect_continue_only_with_body() {
        let h = head("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
        assert!(h.unwrap().expect_continue);
        let h = head("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n").unwrap();
        assert!(!h.expect_continue);
        assert_eq!(head("POST / HTTP/1.1\r\nHost: a\r\nExpect: x\r\n\r\n").unwrap_err().status, 417);
    }

    #[test]
    fn too_many_headers_is_431() {
        let mut s = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 0..200 {
            s.push_str(&format!("x-{i}: y\r\n"));
        }
        s.push_str("\r\n");
        let mut buf = BytesMut::from(s.as_bytes());
        assert!(matches!(RequestHead::split_from(&mut buf, 100), Err(Reject { status: 431, .. })));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut buf = BytesMut::from(&data[..]);
            if let Ok(Some(head)) = RequestHead::split_from(&mut buf, 100) {
                let _ = (head.method(), head.target(), head.headers().count());
                proptest::prop_assert_eq!(head.raw().len() + buf.len(), data.len());
            }
        }

        /// Whatever the header mix, an accepted head never carries two framings.
        #[test]
        fn no_ambiguous_framing(
            cls in proptest::collection::vec("[0-9 ,+]{0,4}", 0..3),
            tes in proptest::collection::vec("(chunked|Chunked|gzip|identity|chunked, chunked| chunked )", 0..3),
            v in 0u8..2,
        ) {
            let mut s = format!("POST / HTTP/1.{v}\r\nHost: a\r\n");
            for c in &cls { s.push_str(&format!("Content-Length: {c}\r\n")); }
            for t in &tes { s.push_str(&format!("Transfer-Encoding: {t}\r\n")); }
            s.push_str("\r\n");
            if let Ok(h) = head(&s) {
                proptest::prop_assert!(cls.len() + tes.len() <= 1);
                if !tes.is_empty() {
                    proptest::prop_assert_eq!(h.framing, BodyFraming::Chunked);
                    proptest::prop_assert_eq!(v, 1);
                }
            }
        }
    }
}
