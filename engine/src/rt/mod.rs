//! The runtime seam.
//!
//! Everything above this module (HTTP codec, upstream pool, API handlers) is written against the
//! small surface here: spawn a task on the current shard, listen/accept/connect, read and write
//! with owned buffers, sleep. The monoio backend lives in [`monoio_backend`]; a second backend
//! (glommio) plugs in behind the same names without touching the code above.
//!
//! Owned buffers: io_uring needs the kernel to own a buffer while an operation is in flight, so
//! reads and writes take a `BytesMut` by value and hand it back. Reads *append* into the buffer's
//! spare capacity, which is what a parser that accumulates bytes wants.

mod monoio_backend;
mod sync;

use std::future::Future;
use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

pub use monoio_backend::{
    DriverKind, DriverRequest, TcpListener, TcpStream, UnixStream, UringFlags, run_shard_runtime, sleep, sleep_until,
    spawn, uring_available,
};
pub use sync::LocalEvent;

/// A byte stream with owned-buffer I/O: a plain TCP socket, or TLS over one.
///
/// Futures here are `!Send` by design: a connection never leaves its shard.
#[allow(async_fn_in_trait)]
pub trait Conn {
    /// Reads at least one byte into the spare capacity of `buf`, appending after its current
    /// contents. Returns `Ok(0)` on end of stream. The caller reserves capacity first.
    async fn read(&mut self, buf: BytesMut) -> (io::Result<usize>, BytesMut);

    /// Writes all of `buf`. The buffer is handed back (contents unspecified) for reuse.
    async fn write_all(&mut self, buf: BytesMut) -> (io::Result<()>, BytesMut);

    /// Writes all of a shared, immutable buffer (relayed bodies).
    async fn write_bytes(&mut self, buf: Bytes) -> io::Result<()>;

    /// Half-closes the write side, flushing anything buffered (TLS close_notify).
    async fn shutdown(&mut self) -> io::Result<()>;
}

/// Why a [`timeout`] gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

/// Runs `fut` for at most `limit`; the future is dropped (and its I/O cancelled) on expiry.
pub async fn timeout<F: Future>(limit: Duration, fut: F) -> Result<F::Output, Elapsed> {
    use futures_util::future::{Either, select};
    let fut = std::pin::pin!(fut);
    let timer = std::pin::pin!(sleep(limit));
    match select(fut, timer).await {
        Either::Left((out, _)) => Ok(out),
        Either::Right(((), _)) => Err(Elapsed),
    }
}

/// Runs `fut` unless `cancel` fires first; `None` means it was cancelled.
pub async fn unless<F: Future>(cancel: &LocalEvent, fut: F) -> Option<F::Output> {
    use futures_util::future::{Either, select};
    if cancel.is_set() {
        return None;
    }
    let fut = std::pin::pin!(fut);
    let wait = std::pin::pin!(cancel.wait());
    match select(fut, wait).await {
        Either::Left((out, _)) => Some(out),
        Either::Right(((), _)) => None,
    }
}

/// Reads until `buf` holds at least `want` bytes, or fails with `UnexpectedEof`.
pub async fn read_at_least<C: Conn>(conn: &mut C, mut buf: BytesMut, want: usize) -> (io::Result<()>, BytesMut) {
    while buf.len() < want {
        buf.reserve(want - buf.len());
        let (res, b) = conn.read(buf).await;
        buf = b;
        match res {
            Ok(0) => return (Err(io::ErrorKind::UnexpectedEof.into()), buf),
            Ok(_) => {}
            Err(e) => return (Err(e), buf),
        }
    }
    (Ok(()), buf)
}
