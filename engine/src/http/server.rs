//! One downstream connection: read requests (pipelined ones in order), enforce the limits, hand
//! each request to a [`Service`], and keep the connection alive when both sides allow it.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::chunked::{ChunkedDecoder, Decoded};
use super::head::{BodyFraming, Reject, RequestHead};
use super::response::{DownstreamIo, Responder};
use crate::error::{ErrorKind, GatewayError};
use crate::rt::{self, Conn, LocalEvent};

/// Downstream limits; every one is configurable (`server.limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of request line plus headers.
    pub max_header_bytes: usize,
    /// Number of header fields.
    pub max_headers: usize,
    /// Bytes of request body (after de-chunking).
    pub max_body_bytes: u64,
    /// From the first byte of a request to the end of its head.
    pub header_timeout: Duration,
    /// From the end of the head to the end of the body.
    pub body_timeout: Duration,
    /// How long an idle keep-alive connection waits for its next request.
    pub idle_timeout: Duration,
    /// Longest one write to the client may take.
    pub send_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_body_bytes: 10 * 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
        }
    }
}

/// A complete request: head, de-framed body, and where it came from.
pub struct Request {
    pub head: RequestHead,
    pub body: Bytes,
    pub peer: SocketAddr,
    /// When the first byte of this request arrived.
    pub received_at: Instant,
}

/// What the connection loop needs from the application above it.
#[allow(async_fn_in_trait)]
pub trait Service {
    /// The limits in force now (they may change on reload).
    fn limits(&self) -> Limits;

    /// Fires when the shard starts draining: idle connections close, busy ones finish.
    fn drain_event(&self) -> &LocalEvent;

    /// Answers one request. Must write a response through `resp` unless the connection broke.
    async fn call<C: Conn>(&self, req: Request, resp: &mut Responder<'_, C>);

    /// The codec refused a request before it reached `call` (for metrics).
    fn rejected(&self, _kind: ErrorKind) {}
}

enum HeadFailure {
    /// The peer went away or the socket failed: nothing to answer.
    Gone,
    Reject(Reject),
}

/// Serves one connection until it closes, fails, times out, or the shard drains.
pub async fn serve_connection<C: Conn, S: Service>(conn: C, peer: SocketAddr, svc: &S) {
    let mut io = DownstreamIo::new(conn);
    let drain = svc.drain_event().clone();
    loop {
        let limits = svc.limits();
        io.send_timeout = limits.send_timeout;
        // Between requests: wait for the first byte, at most `idle_timeout`, unless draining.
        if io.rbuf.is_empty() {
            match rt::unless(&drain, rt::timeout(limits.idle_timeout, io.fill())).await {
                Some(Ok(Ok(n))) if n > 0 => {}
                _ => return,
            }
        }
        let received_at = Instant::now();

        let head = match rt::timeout(limits.header_timeout, read_head(&mut io, &limits)).await {
            Ok(Ok(head)) => head,
            Ok(Err(HeadFailure::Gone)) => return,
            Ok(Err(HeadFailure::Reject(r))) => {
                return Box::pin(refuse(&mut io, svc, ErrorKind::from_status(r.status), r.message)).await;
            }
            Err(rt::Elapsed) => {
                let msg = format!(
                    "the request head did not arrive within {:?} (server.limits.header_timeout)",
                    limits.header_timeout
                );
                return Box::pin(refuse(&mut io, svc, ErrorKind::RequestTimeout, msg)).await;
            }
        };

        let body = match read_body(&mut io, &head, &limits).await {
            Ok(body) => body,
            Err(BodyFailure::Gone) => return,
            Err(BodyFailure::Refuse(kind, msg)) => return Box::pin(refuse(&mut io, svc, kind, msg)).await,
        };

        let keep_alive = head.keep_alive && !drain.is_set();
        let head_only = head.method() == "HEAD";
        let http10 = head.minor_version == 0;
        let req = Request { head, body, peer, received_at };
        let mut resp = Responder::new(&mut io, keep_alive, head_only, http10);
        svc.call(req, &mut resp).await;
        if resp.is_fresh() {
            // A handler that wrote nothing is a bug; the client still gets an answer.
            let err = GatewayError::new(ErrorKind::Internal, "the gateway produced no response");
            let _ = resp.start(500).header("content-type", "application/json").body(&err.to_json()).await;
        }
        if !resp.keep_alive() || !resp.is_done() {
            break;
        }
        // A large body must not keep its buffer for the rest of a keep-alive connection's life.
        if io.rbuf.is_empty() && io.rbuf.capacity() > 64 * 1024 {
            io.rbuf = BytesMut::with_capacity(4096);
        }
        if io.wbuf.capacity() > 64 * 1024 {
            io.wbuf = BytesMut::with_capacity(1024);
        }
    }
    let _ = io.conn.shutdown().await;
}

/// Answers a request the codec refused, then closes the connection. The close "lingers": the
/// client may still be sending (a body we will not read), and closing with unread bytes would
/// reset the connection and could destroy the error response in flight.
async fn refuse<C: Conn, S: Service>(io: &mut DownstreamIo<C>, svc: &S, kind: ErrorKind, message: String) {
    svc.rejected(kind);
    let err = GatewayError::new(kind, message);
    let mut resp = Responder::new(io, false, false, false);
    if resp.start(err.status()).header("content-type", "application/json").body(&err.to_json()).await.is_err() {
        return;
    }
    let _ = io.conn.shutdown().await;
    let _ = rt::timeout(Duration::from_millis(500), async {
        let mut discarded = 0usize;
        while discarded < 1 << 20 {
            io.rbuf.clear();
            match io.fill().await {
                Ok(n) if n > 0 => discarded += n,
                _ => break,
            }
        }
    })
    .await;
}

/// Whether a head could end in `buf[from..]`: a line break followed by another one. Parsing
/// only then keeps a client that trickles its head byte by byte from costing a full parse per
/// byte (quadratic in the head size).
fn head_may_end(buf: &[u8], from: usize) -> bool {
    let from = from.saturating_sub(3).min(buf.len());
    memchr::memchr_iter(b'\n', &buf[from..]).any(|i| {
        let rest = &buf[from + i + 1..];
        rest.starts_with(b"\n") || rest.starts_with(b"\r\n")
    })
}

async fn read_head<C: Conn>(io: &mut DownstreamIo<C>, limits: &Limits) -> Result<RequestHead, HeadFailure> {
    let mut scanned = 0;
    loop {
        if head_may_end(&io.rbuf, scanned) {
            match RequestHead::split_from(&mut io.rbuf, limits.max_headers) {
                Ok(Some(head)) if head.raw().len() > limits.max_header_bytes => {
                    return Err(HeadFailure::Reject(too_large_head(limits)));
                }
                Ok(Some(head)) => return Ok(head),
                Ok(None) => {}
                Err(r) => return Err(HeadFailure::Reject(r)),
            }
        }
        scanned = io.rbuf.len();
        if io.rbuf.len() >= limits.max_header_bytes {
            return Err(HeadFailure::Reject(too_large_head(limits)));
        }
        match io.fill().await {
            Ok(n) if n > 0 => {}
            _ => return Err(HeadFailure::Gone),
        }
    }
}

fn too_large_head(limits: &Limits) -> Reject {
    Reject {
        status: 431,
        message: format!(
            "the request header section exceeds {} bytes (server.limits.max_header)",
            limits.max_header_bytes
        ),
    }
}

enum BodyFailure {
    Gone,
    Refuse(ErrorKind, String),
}

fn body_too_large(limits: &Limits) -> BodyFailure {
    BodyFailure::Refuse(
        ErrorKind::BodyTooLarge,
        format!("the request body exceeds {} bytes (server.limits.max_body)", limits.max_body_bytes),
    )
}

async fn read_body<C: Conn>(
    io: &mut DownstreamIo<C>,
    head: &RequestHead,
    limits: &Limits,
) -> Result<Bytes, BodyFailure> {
    if let BodyFraming::Length(n) = head.framing
        && n > limits.max_body_bytes
    {
        // Refused before the client sends it: no `100 Continue`.
        return Err(body_too_large(limits));
    }
    if head.expect_continue && io.rbuf.is_empty() {
        Responder::send_continue(io).await.map_err(|_| BodyFailure::Gone)?;
    }
    let timeout_msg = || {
        BodyFailure::Refuse(
            ErrorKind::RequestTimeout,
            format!("the request body did not arrive within {:?} (server.limits.body_timeout)", limits.body_timeout),
        )
    };
    match head.framing {
        BodyFraming::Empty => Ok(Bytes::new()),
        BodyFraming::Length(n) => {
            // `n` is at most `max_body_bytes`, which is a usize-sized config value.
            let n = usize::try_from(n).map_err(|_| body_too_large(limits))?;
            let read = async {
                while io.rbuf.len() < n {
                    // Grow with what arrives, not with what was announced: a client declaring
                    // 10 MiB and sending nothing must not cost 10 MiB.
                    io.rbuf.reserve((n - io.rbuf.len()).min(256 * 1024));
                    match io.fill().await {
                        Ok(k) if k > 0 => {}
                        _ => return Err(BodyFailure::Gone),
                    }
                }
                Ok(io.rbuf.split_to(n).freeze())
            };
            rt::timeout(limits.body_timeout, read).await.map_err(|_| timeout_msg())?
        }
        BodyFraming::Chunked => {
            let read = async {
                let mut decoder = ChunkedDecoder::new(limits.max_header_bytes);
                let mut body = BytesMut::new();
                loop {
                    match decoder.decode(&mut io.rbuf) {
                        Ok(Decoded::Data(d)) => {
                            if (body.len() + d.len()) as u64 > limits.max_body_bytes {
                                return Err(body_too_large(limits));
                            }
                            body.extend_from_slice(&d);
                        }
                        Ok(Decoded::Done) => return Ok(body.freeze()),
                        Ok(Decoded::NeedMore) => match io.fill().await {
                            Ok(k) if k > 0 => {}
                            _ => return Err(BodyFailure::Gone),
                        },
                        Err(e) => {
                            return Err(BodyFailure::Refuse(
                                ErrorKind::BadRequest,
                                format!("malformed chunked request body: {e}"),
                            ));
                        }
                    }
                }
            };
            rt::timeout(limits.body_timeout, read).await.map_err(|_| timeout_msg())?
        }
    }
}

/// Convenience for services: answer with a gateway error.
pub async fn send_error<C: Conn>(resp: &mut Responder<'_, C>, err: &GatewayError) -> io::Result<()> {
    resp.start(err.status()).header("content-type", "application/json").body(&err.to_json()).await
}

#[cfg(test)]
mod tests {
    use super::head_may_end;

    #[test]
    fn head_end_detection() {
        assert!(head_may_end(b"GET / HTTP/1.1\r\n\r\n", 0));
        assert!(head_may_end(b"GET / HTTP/1.1\n\n", 0));
        assert!(!head_may_end(b"GET / HTTP/1.1\r\nHost: a\r\n", 0));
        // The end straddles the previous read: looking back three bytes finds it.
        let buf = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert!(head_may_end(buf, buf.len() - 1));
        assert!(!head_may_end(b"", 0));
    }
}
