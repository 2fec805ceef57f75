//! Writing one response downstream: status line, headers, then a length-delimited body or a
//! stream (chunked on HTTP/1.1, close-delimited on HTTP/1.0) flushed piece by piece.
//!
//! The type-state (`Responder` → `Head` → `BodyStream`) makes "headers after the body"
//! unrepresentable; one response per request is kept by the connection loop, which hands each
//! request a fresh `Responder` and checks it was used.

use std::io;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use super::chunked::{LAST_CHUNK, encode_chunk};
use crate::rt::{self, Conn};

/// Buffers of one downstream connection. Reads append to `rbuf`; responses are assembled in
/// `wbuf` and written with one call where possible.
pub struct DownstreamIo<C> {
    pub conn: C,
    pub rbuf: BytesMut,
    pub wbuf: BytesMut,
    /// Longest one write may block: a client that stops reading must not pin the connection,
    /// its request and an upstream connection forever.
    pub send_timeout: Duration,
}

impl<C: Conn> DownstreamIo<C> {
    pub fn new(conn: C) -> Self {
        DownstreamIo {
            conn,
            // Small to start: an idle or streaming connection holds these for its whole life.
            rbuf: BytesMut::with_capacity(4096),
            wbuf: BytesMut::with_capacity(1024),
            send_timeout: Duration::from_secs(60),
        }
    }

    /// Reads more bytes into `rbuf`. `Ok(0)` is end of stream.
    pub async fn fill(&mut self) -> io::Result<usize> {
        if self.rbuf.capacity() - self.rbuf.len() < 1024 {
            self.rbuf.reserve(4096);
        }
        let (res, buf) = self.conn.read(std::mem::take(&mut self.rbuf)).await;
        self.rbuf = buf;
        res
    }

    /// Writes out `wbuf` and empties it, within `send_timeout`.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        match rt::timeout(self.send_timeout, self.conn.write_all(std::mem::take(&mut self.wbuf))).await {
            Ok((res, mut buf)) => {
                buf.clear();
                self.wbuf = buf;
                res
            }
            Err(rt::Elapsed) => Err(send_timed_out()),
        }
    }

    /// Writes a shared buffer as is, within `send_timeout`.
    pub async fn write_bytes(&mut self, bytes: Bytes) -> io::Result<()> {
        rt::timeout(self.send_timeout, self.conn.write_bytes(bytes)).await.unwrap_or_else(|_| Err(send_timed_out()))
    }
}

fn send_timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the client did not take the response in time (server.limits.send_timeout)")
}

/// Statuses whose responses never carry a body (RFC 9110 §6.4.1): no framing headers either.
pub fn is_bodyless(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

/// Reason phrases for the statuses we send; others get an empty phrase, which HTTP allows.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        529 => "Site Overloaded",
        _ => "",
    }
}

/// The right to answer one request.
pub struct Responder<'a, C> {
    io: &'a mut DownstreamIo<C>,
    keep_alive: bool,
    head_only: bool,
    http10: bool,
    state: ResponderState,
    status: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResponderState {
    Fresh,
    /// A complete response was written.
    Done,
    /// A stream was started and not finished cleanly: the connection must close.
    Broken,
}

impl<'a, C: Conn> Responder<'a, C> {
    pub fn new(io: &'a mut DownstreamIo<C>, keep_alive: bool, head_only: bool, http10: bool) -> Self {
        Responder { io, keep_alive, head_only, http10, state: ResponderState::Fresh, status: 0 }
    }

    /// Whether the connection stays open after this response.
    pub fn keep_alive(&self) -> bool {
        self.keep_alive && self.state != ResponderState::Broken
    }

    /// Ask for the connection to close after this response (must be called before `start`).
    pub fn close_after(&mut self) {
        self.keep_alive = false;
    }

    /// Gives up on a response already begun (its writer failed midway): what was written of it
    /// stays unflushed or truncated, so the connection closes after it.
    pub fn abandon(&mut self) {
        self.state = ResponderState::Broken;
    }

    /// A response was fully written.
    pub fn is_done(&self) -> bool {
        self.state == ResponderState::Done
    }

    /// Nothing has been written yet.
    pub fn is_fresh(&self) -> bool {
        self.state == ResponderState::Fresh
    }

    /// The status sent (0 before `start`).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The request was `HEAD`: headers only.
    pub fn is_head_only(&self) -> bool {
        self.head_only
    }

    /// Begins the response with its status line.
    pub fn start(&mut self, status: u16) -> Head<'_, 'a, C> {
        self.status = status;
        let w = &mut self.io.wbuf;
        w.put_slice(if self.http10 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
        let mut code = itoa::Buffer::new();
        w.put_slice(code.format(status).as_bytes());
        w.put_u8(b' ');
        w.put_slice(reason(status).as_bytes());
        w.put_slice(b"\r\n");
        Head { r: self }
    }

    /// Begins a Server-Sent Events answer: status, `text/event-stream`, no caching.
    pub fn start_event_stream(&mut self, status: u16) -> Head<'_, 'a, C> {
        self.start(status)
            .header("content-type", "text/event-stream; charset=utf-8")
            .header("cache-control", "no-cache")
    }

    /// Writes raw bytes in place of a response, then the connection closes. For test doubles
    /// that must misbehave on purpose (garbage heads, truncated bodies); the gateway never
    /// calls it.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.state = ResponderState::Broken;
        self.io.wbuf.extend_from_slice(bytes);
        self.io.flush().await
    }

    /// Writes an interim `100 Continue` (before the body is read).
    pub async fn send_continue(io: &mut DownstreamIo<C>) -> io::Result<()> {
        io.wbuf.put_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        io.flush().await
    }
}

/// Headers of a response being written.
pub struct Head<'r, 'a, C> {
    r: &'r mut Responder<'a, C>,
}

impl<'r, 'a, C: Conn> Head<'r, 'a, C> {
    /// Adds a header. Names and values are written as given: callers pass valid tokens, and
    /// values relayed from upstream were already validated by the parser.
    pub fn header(self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Self {
        let w = &mut self.r.io.wbuf;
        w.put_slice(name.as_ref());
        w.put_slice(b": ");
        w.put_slice(value.as_ref());
        w.put_slice(b"\r\n");
        self
    }

    fn end_head(&mut self, content_length: Option<usize>) {
        let keep_alive = self.r.keep_alive;
        let http10 = self.r.http10;
        let bodyless = is_bodyless(self.r.status);
        let w = &mut self.r.io.wbuf;
        if let Some(n) = content_length.filter(|_| !bodyless) {
            w.put_slice(b"content-length: ");
            let mut b = itoa::Buffer::new();
            w.put_slice(b.format(n).as_bytes());
            w.put_slice(b"\r\n");
        }
        if !keep_alive {
            w.put_slice(b"connection: close\r\n");
        } else if http10 {
            w.put_slice(b"connection: keep-alive\r\n");
        }
        w.put_slice(b"\r\n");
    }

    /// Finishes without a body and without adding framing headers: for `HEAD`, 204 and 304
    /// answers, whose relayed `Content-Length` (if any) describes a body that is not sent.
    pub async fn no_body(mut self) -> io::Result<()> {
        self.end_head(None);
        let res = self.r.io.flush().await;
        self.r.state = if res.is_ok() { ResponderState::Done } else { ResponderState::Broken };
        res
    }

    /// Finishes with a complete body (copied into the write buffer: one write for small bodies).
    pub async fn body(mut self, body: &[u8]) -> io::Result<()> {
        self.end_head(Some(body.len()));
        if !self.r.head_only && !is_bodyless(self.r.status) {
            self.r.io.wbuf.extend_from_slice(body);
        }
        let res = self.r.io.flush().await;
        self.r.state = if res.is_ok() { ResponderState::Done } else { ResponderState::Broken };
        res
    }

    /// Finishes with a shared body, written after the head without copying.
    pub async fn body_bytes(mut self, body: Bytes) -> io::Result<()> {
        if body.len() <= 16 * 1024 {
            return self.body(&body).await;
        }
        self.end_head(Some(body.len()));
        let mut res = self.r.io.flush().await;
        if res.is_ok() && !self.r.head_only && !is_bodyless(self.r.status) {
            res = self.r.io.write_bytes(body).await;
        }
        self.r.state = if res.is_ok() { ResponderState::Done } else { ResponderState::Broken };
        res
    }

    /// Sends the head with a known `Content-Length` and streams exactly that many bytes after it
    /// (relaying a large upstream body without buffering it).
    pub async fn stream_sized(mut self, len: u64) -> io::Result<BodyStream<'r, 'a, C>> {
        let mut b = itoa::Buffer::new();
        self.r.io.wbuf.put_slice(b"content-length: ");
        self.r.io.wbuf.put_slice(b.format(len).as_bytes());
        self.r.io.wbuf.put_slice(b"\r\n");
        self.end_head(None);
        self.r.state = ResponderState::Broken;
        self.r.io.flush().await?;
        Ok(BodyStream { r: self.r, chunked: false, remaining: Some(len) })
    }

    /// Sends the head and switches to a streamed body. On HTTP/1.1 the body is chunked; on
    /// HTTP/1.0 it is delimited by closing the connection.
    pub async fn stream(mut self) -> io::Result<BodyStream<'r, 'a, C>> {
        let chunked = !self.r.http10;
        if chunked {
            self.r.io.wbuf.put_slice(b"transfer-encoding: chunked\r\n");
        } else {
            self.r.keep_alive = false;
        }
        self.end_head(None);
        // Until `finish`, an interrupted stream leaves the connection unusable.
        self.r.state = ResponderState::Broken;
        self.r.io.flush().await?;
        Ok(BodyStream { r: self.r, chunked, remaining: None })
    }
}

/// A streamed response body; every `send` reaches the socket before it returns.
pub struct BodyStream<'r, 'a, C> {
    r: &'r mut Responder<'a, C>,
    chunked: bool,
    /// For a sized body: bytes still owed.
    remaining: Option<u64>,
}

impl<C: Conn> BodyStream<'_, '_, C> {
    /// Sends one piece of the body (one chunk), flushed.
    pub async fn send(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() || self.r.head_only {
            return Ok(());
        }
        if let Some(rem) = self.remaining.as_mut() {
            let n = data.len() as u64;
            if n > *rem {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "body longer than its Content-Length"));
            }
            *rem -= n;
        }
        if self.chunked {
            encode_chunk(&mut self.r.io.wbuf, data);
        } else {
            self.r.io.wbuf.extend_from_slice(data);
        }
        self.r.io.flush().await
    }

    /// Ends the body cleanly; the connection may be reused.
    pub async fn finish(self) -> io::Result<()> {
        if self.remaining.is_some_and(|r| r > 0) && !self.r.head_only {
            // Short of its declared length: the client must see the connection end.
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "body shorter than its Content-Length"));
        }
        if self.chunked && !self.r.head_only {
            self.r.io.wbuf.put_slice(LAST_CHUNK);
            self.r.io.flush().await?;
        }
        // A sized body is complete; on HTTP/1.0 `keep_alive` is already off and closing the
        // connection ends the body.
        self.r.state = ResponderState::Done;
        Ok(())
    }
}
