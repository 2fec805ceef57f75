//! One request/response exchange with an upstream over a pooled connection.
//!
//! Retry policy at this level is deliberately narrow: a request that failed on a *reused*
//! connection before any response byte came back is retried once on a fresh connection (the
//! pooled one had gone stale; the upstream cannot have acted on the request). Nothing else is
//! retried here; routing-level retries and fallbacks belong to the router.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::connect::{self, ConnectError};
use super::dns::DnsTable;
use super::pool::{Checkout, Pool, PoolLimits, PooledConn, Reservation};
use crate::config::Upstream;
use crate::config::snapshot::UpstreamLimits;
use crate::error::{ErrorKind, GatewayError};
use crate::http::upstream::{BodyReader, ResponseFraming, ResponseHead, UpstreamFault, read_head};
use crate::metrics::ShardMetrics;
use crate::rt::{self, Conn};

/// A request ready to send: the serialised head and the body.
#[derive(Debug, Clone)]
pub struct RequestBytes {
    pub head: Bytes,
    pub body: Bytes,
    /// `HEAD` request: the response has no body whatever its headers say.
    pub is_head: bool,
}

/// Why an exchange failed before a response head arrived.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("connecting took longer than {0:?}")]
    ConnectTimeout(Duration),
    #[error("all {0} connections to this target are busy")]
    PoolExhausted(usize),
    #[error("no response head within {0:?}")]
    FirstByteTimeout(Duration),
    #[error(transparent)]
    Fault(#[from] UpstreamFault),
}

impl SendError {
    /// The error the client gets, naming the provider.
    pub fn to_gateway_error(&self, provider: &str) -> GatewayError {
        let kind = match self {
            SendError::Connect(ConnectError::Dns(_)) => ErrorKind::UpstreamDns,
            SendError::Connect(_) => ErrorKind::UpstreamConnect,
            SendError::ConnectTimeout(_) | SendError::FirstByteTimeout(_) => ErrorKind::UpstreamTimeout,
            SendError::PoolExhausted(_) => ErrorKind::UpstreamPoolExhausted,
            SendError::Fault(f) => fault_kind(f),
        };
        GatewayError::new(kind, format!("provider {provider}: {self}"))
    }
}

/// The error kind for a fault while reading a response.
pub fn fault_kind(f: &UpstreamFault) -> ErrorKind {
    match f {
        UpstreamFault::IdleTimeout(_) => ErrorKind::UpstreamTimeout,
        UpstreamFault::BodyTooLarge(_) => ErrorKind::UpstreamTooLarge,
        UpstreamFault::Io(_) | UpstreamFault::Closed => ErrorKind::UpstreamConnect,
        UpstreamFault::Protocol(_) | UpstreamFault::HeadTooLarge(_) => ErrorKind::UpstreamProtocol,
    }
}

/// What the exchange needs from its shard.
pub struct Shared<'a> {
    pub pool: &'a Pool,
    pub dns: &'a arc_swap::ArcSwap<DnsTable>,
    pub metrics: &'a ShardMetrics,
}

/// A response whose head has arrived; the body is read on demand.
pub struct UpstreamResponse<'a> {
    pub head: ResponseHead,
    reader: BodyReader,
    conn: Option<PooledConn>,
    pool: &'a Pool,
    idle: Duration,
    /// When the request that got this answer started going out.
    sent_at: Instant,
}

impl UpstreamResponse<'_> {
    /// Shortens the longest silence allowed between two pieces of the body (a route's
    /// `timeouts.idle`).
    pub fn limit_idle(&mut self, idle: Option<Duration>) {
        if let Some(d) = idle {
            self.idle = self.idle.min(d);
        }
    }

    /// Time since the request started going out (read at the first body piece, it is the
    /// target's time to first token).
    pub fn since_sent(&self) -> Duration {
        self.sent_at.elapsed()
    }

    /// The next piece of body, or `None` at its end (the connection then goes back to the pool
    /// if it can be reused).
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, UpstreamFault> {
        let Some(c) = self.conn.as_mut() else {
            return Ok(None);
        };
        let res = self.reader.next(&mut c.conn, &mut c.buf, self.idle).await;
        match &res {
            Ok(None) => {
                if let Some(c) = self.conn.take()
                    && self.head.keep_alive
                    && self.reader.is_done()
                {
                    self.pool.release(c);
                }
            }
            Ok(Some(_)) => {}
            Err(_) => self.conn = None,
        }
        res
    }

    /// The whole body, refusing more than `limit` bytes.
    pub async fn read_to_end(&mut self, limit: u64) -> Result<Bytes, UpstreamFault> {
        if let ResponseFraming::Length(n) = self.head.framing
            && n > limit
        {
            self.conn = None;
            return Err(UpstreamFault::BodyTooLarge(limit));
        }
        let mut first: Option<Bytes> = None;
        let mut acc = BytesMut::new();
        while let Some(piece) = self.next_chunk().await? {
            let have = first.as_ref().map_or(0, Bytes::len) + acc.len();
            if (have + piece.len()) as u64 > limit {
                self.conn = None;
                return Err(UpstreamFault::BodyTooLarge(limit));
            }
            match first.take() {
                None if acc.is_empty() => first = Some(piece),
                None => acc.extend_from_slice(&piece),
                Some(f) => {
                    acc.extend_from_slice(&f);
                    acc.extend_from_slice(&piece);
                }
            }
        }
        Ok(first.unwrap_or_else(|| acc.freeze()))
    }
}

struct AttemptError {
    error: SendError,
    /// Failed before any response byte: safe to retry on a fresh connection.
    retryable: bool,
}

/// Sends `req` to `up` and waits for the response head.
pub async fn send<'a>(
    shared: &Shared<'a>,
    up: &Upstream,
    req: &RequestBytes,
    limits: UpstreamLimits,
) -> Result<UpstreamResponse<'a>, SendError> {
    let pool_limits = PoolLimits {
        max_connections: usize::try_from(up.pool.max_connections.get()).unwrap_or(usize::MAX),
        idle_timeout: up.pool.idle_timeout,
    };
    let checkout = match shared.pool.take_idle(&up.pool_key, pool_limits) {
        Some(conn) => Checkout::Idle(conn),
        None => rt::timeout(limits.connect_timeout(up), shared.pool.checkout(&up.pool_key, pool_limits))
            .await
            .map_err(|_| SendError::PoolExhausted(pool_limits.max_connections))?,
    };
    match checkout {
        Checkout::Idle(conn) => {
            shared.metrics.upstream_reused.fetch_add(1, Relaxed);
            match attempt(shared, conn, up, req, limits).await {
                Ok(resp) => Ok(resp),
                Err(e) if e.retryable => {
                    shared.metrics.upstream_retries.fetch_add(1, Relaxed);
                    Box::pin(send_fresh(shared, up, req, limits, pool_limits)).await
                }
                Err(e) => Err(e.error),
            }
        }
        // Connecting (TCP, proxy, TLS handshake) is the rare path and its state is large: boxed,
        // so every in-flight request on a pooled connection does not carry it.
        Checkout::New(reservation) => Box::pin(connect_and_send(shared, reservation, up, req, limits)).await,
    }
}

/// The retry after a stale reused connection: always a new connection.
async fn send_fresh<'a>(
    shared: &Shared<'a>,
    up: &Upstream,
    req: &RequestBytes,
    limits: UpstreamLimits,
    pool_limits: PoolLimits,
) -> Result<UpstreamResponse<'a>, SendError> {
    let reservation = rt::timeout(limits.connect_timeout(up), shared.pool.checkout_new(&up.pool_key, pool_limits))
        .await
        .map_err(|_| SendError::PoolExhausted(pool_limits.max_connections))?;
    connect_and_send(shared, reservation, up, req, limits).await
}

async fn connect_and_send<'a>(
    shared: &Shared<'a>,
    reservation: Reservation,
    up: &Upstream,
    req: &RequestBytes,
    limits: UpstreamLimits,
) -> Result<UpstreamResponse<'a>, SendError> {
    let connect_timeout = limits.connect_timeout(up);
    let conn = match rt::timeout(connect_timeout, connect::open(up, shared.dns)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(e.into()),
        Err(rt::Elapsed) => return Err(SendError::ConnectTimeout(connect_timeout)),
    };
    shared.metrics.upstream_new.fetch_add(1, Relaxed);
    attempt(shared, reservation.into_conn(conn), up, req, limits).await.map_err(|e| e.error)
}

async fn attempt<'a>(
    shared: &Shared<'a>,
    mut c: PooledConn,
    up: &Upstream,
    req: &RequestBytes,
    limits: UpstreamLimits,
) -> Result<UpstreamResponse<'a>, AttemptError> {
    let started = Instant::now();
    // `first_byte` bounds sending the request and receiving the response head together: an
    // upstream that stops reading our body must not hang the request either.
    let first_byte = up.timeouts.first_byte;
    let timed_out = || AttemptError { error: SendError::FirstByteTimeout(first_byte), retryable: false };
    let write = async {
        // Small bodies go out with the head in one write.
        if req.body.len() <= 16 * 1024 {
            let mut out = BytesMut::with_capacity(req.head.len() + req.body.len());
            out.extend_from_slice(&req.head);
            out.extend_from_slice(&req.body);
            c.conn.write_all(out).await.0
        } else {
            match c.conn.write_bytes(req.head.clone()).await {
                Ok(()) => c.conn.write_bytes(req.body.clone()).await,
                Err(e) => Err(e),
            }
        }
    };
    match rt::timeout(first_byte, write).await {
        Err(rt::Elapsed) => return Err(timed_out()),
        Ok(Err(e)) => return Err(AttemptError { error: UpstreamFault::Io(e).into(), retryable: c.reused }),
        Ok(Ok(())) => {}
    }
    let remaining = first_byte.saturating_sub(started.elapsed());
    let head =
        match rt::timeout(remaining, read_head(&mut c.conn, &mut c.buf, req.is_head, limits.max_head_bytes)).await {
            Err(rt::Elapsed) => return Err(timed_out()),
            Ok(Err(fault)) => {
                let before_any_byte = c.buf.is_empty() && matches!(fault, UpstreamFault::Closed | UpstreamFault::Io(_));
                return Err(AttemptError { error: fault.into(), retryable: c.reused && before_any_byte });
            }
            Ok(Ok(head)) => head,
        };
    shared.metrics.upstream_first_byte.observe(started.elapsed());
    let reader = BodyReader::new(head.framing);
    Ok(UpstreamResponse { head, reader, conn: Some(c), pool: shared.pool, idle: up.timeouts.idle, sent_at: started })
}

/// Hop-by-hop and framing headers that never cross the gateway in either direction.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    const HOP: [&str; 10] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    ];
    HOP.iter().any(|h| h.as_bytes().eq_ignore_ascii_case(name))
}
