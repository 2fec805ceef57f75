//! The upstream side of the codec: parse a response head, then read its body by the framing the
//! head declares (length, chunked, or until close), one piece at a time.

use std::io;
use std::ops::Range;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::chunked::{ChunkedDecoder, Decoded};
use crate::rt::{self, Conn};

/// How an upstream response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body (HEAD, 1xx, 204, 304, or `Content-Length: 0`).
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection (HTTP/1.0 style); the connection is not reusable.
    UntilClose,
}

/// Faults on the upstream side, with the phase they happened in.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamFault {
    #[error("upstream I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("upstream closed the connection before the response was complete")]
    Closed,
    #[error("upstream did not send a byte for {0:?}")]
    IdleTimeout(Duration),
    #[error("upstream sent an invalid response: {0}")]
    Protocol(String),
    #[error("upstream response head exceeds {0} bytes")]
    HeadTooLarge(usize),
    #[error("upstream response body exceeds {0} bytes")]
    BodyTooLarge(u64),
}

/// A parsed upstream response head.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    raw: Bytes,
    pub status: u16,
    headers: Vec<(Range<u32>, Range<u32>)>,
    pub framing: ResponseFraming,
    /// The upstream allows another request on this connection.
    pub keep_alive: bool,
}

const MAX_RESPONSE_HEADERS: usize = 128;

impl ResponseHead {
    /// Parses a head from the start of `buf`. `Ok(None)` means more bytes are needed. Returns the
    /// head and its length. Interim (1xx) responses are returned like any other; callers skip them.
    pub fn parse(buf: &[u8], request_was_head: bool) -> Result<Option<(ResponseHead, usize)>, UpstreamFault> {
        Ok(Self::parse_spans(buf, request_was_head)?.map(|(mut head, len)| {
            head.raw = Bytes::copy_from_slice(&buf[..len]);
            (head, len)
        }))
    }

    /// Parses a head at the start of `buf` and, when complete, splits it off `buf` (no copy).
    pub fn split_from(buf: &mut BytesMut, request_was_head: bool) -> Result<Option<ResponseHead>, UpstreamFault> {
        Ok(Self::parse_spans(buf, request_was_head)?.map(|(mut head, len)| {
            head.raw = buf.split_to(len).freeze();
            head
        }))
    }

    /// The parse itself: header positions are offsets into `buf`; `raw` is left empty.
    fn parse_spans(buf: &[u8], request_was_head: bool) -> Result<Option<(ResponseHead, usize)>, UpstreamFault> {
        let mut storage = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
        let mut resp = httparse::Response::new(&mut storage);
        let len = match resp.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(UpstreamFault::Protocol(format!("malformed response head: {e}"))),
        };
        let (Some(status), Some(version)) = (resp.code, resp.version) else {
            return Err(UpstreamFault::Protocol("incomplete status line".into()));
        };
        let base = buf.as_ptr() as usize;
        let off = |p: *const u8| (p as usize).wrapping_sub(base) as u32;

        let mut content_length: Option<u64> = None;
        let mut chunked = false;
        let mut te = false;
        let mut close = version == 0;
        let mut headers = Vec::with_capacity(resp.headers.len());
        for h in resp.headers.iter() {
            let v = h.value;
            if h.name.eq_ignore_ascii_case("content-length") {
                let n = crate::http::head::parse_content_length(v).map_err(|_| {
                    UpstreamFault::Protocol(format!("invalid Content-Length {:?}", String::from_utf8_lossy(v)))
                })?;
                if content_length.is_some_and(|c| c != n) {
                    return Err(UpstreamFault::Protocol("conflicting Content-Length headers".into()));
                }
                content_length = Some(n);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                te = true;
                let last = v.rsplit(|&b| b == b',').next().unwrap_or(&[]);
                chunked = std::str::from_utf8(last).is_ok_and(|s| s.trim().eq_ignore_ascii_case("chunked"));
            } else if h.name.eq_ignore_ascii_case("connection") {
                for tok in v.split(|&b| b == b',') {
                    let tok = std::str::from_utf8(tok).map(str::trim).unwrap_or("");
                    if tok.eq_ignore_ascii_case("close") {
                        close = true;
                    } else if tok.eq_ignore_ascii_case("keep-alive") && version == 0 {
                        close = false;
                    }
                }
            }
            let n = off(h.name.as_ptr());
            let vo = off(v.as_ptr());
            headers.push((n..n + h.name.len() as u32, vo..vo + v.len() as u32));
        }
        let no_body = request_was_head || (100..200).contains(&status) || status == 204 || status == 304;
        let framing = if no_body {
            ResponseFraming::Empty
        } else if te {
            // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length; a final coding other
            // than chunked means "read until close".
            if chunked { ResponseFraming::Chunked } else { ResponseFraming::UntilClose }
        } else {
            match content_length {
                Some(0) => ResponseFraming::Empty,
                Some(n) => ResponseFraming::Length(n),
                None => ResponseFraming::UntilClose,
            }
        };
        // A response with both headers, or one delimited by close, leaves the connection in a
        // state we cannot trust for reuse.
        // 101 hands the connection to another protocol: never back to the pool.
        let keep_alive =
            !close && status != 101 && framing != ResponseFraming::UntilClose && !(te && content_length.is_some());
        let head = ResponseHead { raw: Bytes::new(), status, headers, framing, keep_alive };
        Ok(Some((head, len)))
    }

    /// All headers in order, names as sent.
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.headers.iter().map(|(n, v)| {
            let at = |r: &Range<u32>| self.raw.get(r.start as usize..r.end as usize).unwrap_or(&[]);
            (at(n), at(v))
        })
    }

    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers().find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| v)
    }

    /// `Content-Type: text/event-stream`.
    pub fn is_event_stream(&self) -> bool {
        const SSE: &[u8] = b"text/event-stream";
        self.header("content-type")
            .map(<[u8]>::trim_ascii_start)
            .is_some_and(|v| v.len() >= SSE.len() && v[..SSE.len()].eq_ignore_ascii_case(SSE))
    }
}

/// Reads a response head from `conn`, skipping interim 1xx responses. `buf` may already hold
/// bytes; on return it holds whatever followed the head.
pub async fn read_head<C: Conn>(
    conn: &mut C,
    buf: &mut BytesMut,
    request_was_head: bool,
    max_head: usize,
) -> Result<ResponseHead, UpstreamFault> {
    loop {
        if let Some(head) = ResponseHead::split_from(buf, request_was_head)? {
            if (100..200).contains(&head.status) && head.status != 101 {
                continue;
            }
            return Ok(head);
        }
        if buf.len() >= max_head {
            return Err(UpstreamFault::HeadTooLarge(max_head));
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        let (res, b) = conn.read(std::mem::take(buf)).await;
        *buf = b;
        if res? == 0 {
            return Err(UpstreamFault::Closed);
        }
    }
}

const MIN_READ: usize = 4 * 1024;
const MAX_READ: usize = 64 * 1024;

/// Reads a body piece by piece according to its framing.
#[derive(Debug)]
pub struct BodyReader {
    state: BodyState,
    /// Bytes to reserve for the next read: grows while reads fill it, shrinks when they do not.
    read_size: usize,
}

#[derive(Debug)]
enum BodyState {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

impl BodyReader {
    pub fn new(framing: ResponseFraming) -> Self {
        let state = match framing {
            ResponseFraming::Empty | ResponseFraming::Length(0) => BodyState::Done,
            ResponseFraming::Length(n) => BodyState::Length(n),
            ResponseFraming::Chunked => BodyState::Chunked(ChunkedDecoder::new(64 * 1024)),
            ResponseFraming::UntilClose => BodyState::UntilClose,
        };
        BodyReader { state, read_size: MIN_READ }
    }

    /// The whole body was read and the framing was intact.
    pub fn is_done(&self) -> bool {
        matches!(self.state, BodyState::Done)
    }

    /// The next piece of body, or `None` at its end. `buf` holds bytes read but not yet consumed;
    /// each read from the socket waits at most `idle`.
    pub async fn next<C: Conn>(
        &mut self,
        conn: &mut C,
        buf: &mut BytesMut,
        idle: Duration,
    ) -> Result<Option<Bytes>, UpstreamFault> {
        loop {
            match &mut self.state {
                BodyState::Done => return Ok(None),
                BodyState::Length(remaining) => {
                    if !buf.is_empty() {
                        let n = (buf.len() as u64).min(*remaining) as usize;
                        *remaining -= n as u64;
                        if *remaining == 0 {
                            self.state = BodyState::Done;
                        }
                        return Ok(Some(buf.split_to(n).freeze()));
                    }
                }
                BodyState::Chunked(dec) => match dec.decode(buf) {
                    Ok(Decoded::Data(d)) => return Ok(Some(d)),
                    Ok(Decoded::Done) => {
                        self.state = BodyState::Done;
                        return Ok(None);
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(e) => return Err(UpstreamFault::Protocol(format!("bad chunked body: {e}"))),
                },
                BodyState::UntilClose => {
                    if !buf.is_empty() {
                        return Ok(Some(buf.split().freeze()));
                    }
                }
            }
            // Reads start small (a stream's events are a few hundred bytes, and thousands of
            // streams each hold a buffer) and double while they keep filling it.
            if buf.capacity() - buf.len() < self.read_size / 4 {
                buf.reserve(self.read_size);
            }
            let spare = buf.capacity() - buf.len();
            let (res, b) = match rt::timeout(idle, conn.read(std::mem::take(buf))).await {
                Ok(r) => r,
                Err(rt::Elapsed) => return Err(UpstreamFault::IdleTimeout(idle)),
            };
            *buf = b;
            let n = res?;
            self.read_size =
                if n == spare { (self.read_size * 2).min(MAX_READ) } else { (self.read_size / 2).max(MIN_READ) };
            if n == 0 {
                if matches!(self.state, BodyState::UntilClose) {
                    self.state = BodyState::Done;
                    return Ok(None);
                }
                return Err(UpstreamFault::Closed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_framings() {
        let (h, len) =
            ResponseHead::parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false).unwrap().unwrap();
        assert_eq!((h.status, h.framing, h.keep_alive, len), (200, ResponseFraming::Length(5), true, 38));
        let (h, _) = ResponseHead::parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, ResponseFraming::Chunked);
        assert!(h.is_event_stream());
        let (h, _) = ResponseHead::parse(b"HTTP/1.0 200 OK\r\n\r\n", false).unwrap().unwrap();
        assert_eq!(h.framing, ResponseFraming::UntilClose);
        assert!(!h.keep_alive);
        let (h, _) = ResponseHead::parse(b"HTTP/1.1 204 No Content\r\n\r\n", false).unwrap().unwrap();
        assert_eq!(h.framing, ResponseFraming::Empty);
        let (h, _) = ResponseHead::parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true).unwrap().unwrap();
        assert_eq!(h.framing, ResponseFraming::Empty);
    }

    #[test]
    fn refuses_garbage_and_conflicts() {
        assert!(ResponseHead::parse(b"garbage\r\n\r\n", false).is_err());
        assert!(
            ResponseHead::parse(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", false).is_err()
        );
        assert!(ResponseHead::parse(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false).is_err());
        assert!(ResponseHead::parse(b"HTTP/1.1 200 OK\r\nContent-Len", false).unwrap().is_none());
    }
}
