//! The runtime seam.
//!
//! Everything above this module (HTTP codec, upstream pool, API handlers) is written against the
//! small surface here: spawn a task on the current shard, listen/accept/connect, read and write
//! with owned buffers, sleep. The backends are monoio (`monoio_backend`: io_uring or epoll) and,
//! with the `runtime-glommio` feature, glommio (`glommio_backend`). Each shard thread records
//! which one it runs, and the names here dispatch on it: a match on an enum, no boxing, and in a
//! monoio-only build a single arm.
//!
//! Owned buffers: io_uring needs the kernel to own a buffer while an operation is in flight, so
//! reads and writes take a `BytesMut` by value and hand it back. Reads *append* into the buffer's
//! spare capacity, which is what a parser that accumulates bytes wants.

#[cfg(feature = "runtime-glommio")]
mod glommio_backend;
mod monoio_backend;
mod sync;

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

pub use monoio_backend::{DriverKind, DriverRequest, UnixStream, UringFlags, uring_available};
pub use sync::LocalEvent;

/// Which runtime the operator asked for (`--runtime`, `server.runtime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeRequest {
    #[default]
    Monoio,
    /// Needs the `runtime-glommio` cargo feature, io_uring and a raised memlock limit.
    Glommio,
}

/// The runtime a process actually runs on, decided once at start and logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Monoio(DriverKind),
    #[cfg(feature = "runtime-glommio")]
    Glommio,
}

impl Backend {
    /// Decides the backend for the whole process (see [`DriverKind::resolve`] for monoio).
    pub fn resolve(runtime: RuntimeRequest, driver: DriverRequest, flags: UringFlags) -> Result<Backend, String> {
        match runtime {
            RuntimeRequest::Monoio => DriverKind::resolve(driver, flags).map(Backend::Monoio),
            #[cfg(feature = "runtime-glommio")]
            RuntimeRequest::Glommio => glommio_backend::check_host().map(|()| Backend::Glommio),
            #[cfg(not(feature = "runtime-glommio"))]
            RuntimeRequest::Glommio => Err("this build has no glommio backend: rebuild with \
                 `--features shardgate-engine/runtime-glommio`, or use --runtime monoio"
                .into()),
        }
    }

    /// Short stable label for metrics and logs: `io_uring`, `epoll` or `glommio`.
    pub fn label(&self) -> &'static str {
        match self {
            Backend::Monoio(d) => d.label(),
            #[cfg(feature = "runtime-glommio")]
            Backend::Glommio => "glommio",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Monoio(d) => write!(f, "monoio, {d}"),
            #[cfg(feature = "runtime-glommio")]
            Backend::Glommio => f.write_str("glommio (io_uring)"),
        }
    }
}

/// Which backend the current thread's runtime is (set by [`run_shard_runtime`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Current {
    Monoio,
    #[cfg(feature = "runtime-glommio")]
    Glommio,
}

thread_local! {
    static CURRENT: Cell<Current> = const { Cell::new(Current::Monoio) };
}

fn current() -> Current {
    CURRENT.with(Cell::get)
}

/// Builds the runtime on the current thread, pinned to `core` when given, and runs `main` to
/// completion on it.
pub fn run_shard_runtime<F, Fut>(
    backend: Backend,
    core: Option<usize>,
    entries: u32,
    main: F,
) -> io::Result<Fut::Output>
where
    F: FnOnce() -> Fut,
    Fut: Future,
{
    match backend {
        Backend::Monoio(kind) => {
            if let Some(c) = core {
                core_affinity::set_for_current(core_affinity::CoreId { id: c });
            }
            CURRENT.with(|c| c.set(Current::Monoio));
            monoio_backend::run(kind, entries, main)
        }
        #[cfg(feature = "runtime-glommio")]
        Backend::Glommio => {
            CURRENT.with(|c| c.set(Current::Glommio));
            glommio_backend::run(core, main)
        }
    }
}

/// Spawns a task on the current shard. The task is detached; it runs until it finishes or the
/// shard's runtime stops.
pub fn spawn<F>(fut: F)
where
    F: Future<Output = ()> + 'static,
{
    match current() {
        Current::Monoio => monoio_backend::spawn(fut),
        #[cfg(feature = "runtime-glommio")]
        Current::Glommio => glommio_backend::spawn(fut),
    }
}

/// Sleeps on the current shard's timers.
pub async fn sleep(d: Duration) {
    match current() {
        Current::Monoio => monoio_backend::sleep(d).await,
        #[cfg(feature = "runtime-glommio")]
        Current::Glommio => glommio_backend::sleep(d).await,
    }
}

/// Sleeps until `deadline`.
pub async fn sleep_until(deadline: std::time::Instant) {
    match current() {
        Current::Monoio => monoio_backend::sleep_until(deadline).await,
        #[cfg(feature = "runtime-glommio")]
        Current::Glommio => glommio_backend::sleep(deadline.saturating_duration_since(std::time::Instant::now())).await,
    }
}

/// A listening socket owned by one shard.
pub struct TcpListener(ListenerInner);

enum ListenerInner {
    Monoio(monoio_backend::Listener),
    #[cfg(feature = "runtime-glommio")]
    Glommio(glommio_backend::Listener),
}

impl TcpListener {
    /// Adopts a listener bound by the process (one per shard, `SO_REUSEPORT`).
    pub fn from_std(listener: std::net::TcpListener) -> io::Result<Self> {
        match current() {
            Current::Monoio => {
                monoio_backend::Listener::from_std(listener).map(|l| TcpListener(ListenerInner::Monoio(l)))
            }
            #[cfg(feature = "runtime-glommio")]
            Current::Glommio => {
                glommio_backend::Listener::from_std(listener).map(|l| TcpListener(ListenerInner::Glommio(l)))
            }
        }
    }

    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        match &self.0 {
            ListenerInner::Monoio(l) => l.accept().await.map(|(s, p)| (TcpStream(StreamInner::Monoio(s)), p)),
            #[cfg(feature = "runtime-glommio")]
            ListenerInner::Glommio(l) => l.accept().await.map(|(s, p)| (TcpStream(StreamInner::Glommio(s)), p)),
        }
    }
}

/// A TCP connection owned by one shard.
pub struct TcpStream(StreamInner);

enum StreamInner {
    Monoio(monoio_backend::Stream),
    #[cfg(feature = "runtime-glommio")]
    Glommio(glommio_backend::Stream),
}

impl TcpStream {
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        match current() {
            Current::Monoio => monoio_backend::Stream::connect(addr).await.map(|s| TcpStream(StreamInner::Monoio(s))),
            #[cfg(feature = "runtime-glommio")]
            Current::Glommio => {
                glommio_backend::Stream::connect(addr).await.map(|s| TcpStream(StreamInner::Glommio(s)))
            }
        }
    }

    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        match &self.0 {
            StreamInner::Monoio(s) => s.set_nodelay(on),
            #[cfg(feature = "runtime-glommio")]
            StreamInner::Glommio(s) => s.set_nodelay(on),
        }
    }
}

impl Conn for TcpStream {
    async fn read(&mut self, buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        match &mut self.0 {
            StreamInner::Monoio(s) => s.read(buf).await,
            #[cfg(feature = "runtime-glommio")]
            StreamInner::Glommio(s) => s.read(buf).await,
        }
    }

    async fn write_all(&mut self, buf: BytesMut) -> (io::Result<()>, BytesMut) {
        match &mut self.0 {
            StreamInner::Monoio(s) => s.write_all(buf).await,
            #[cfg(feature = "runtime-glommio")]
            StreamInner::Glommio(s) => s.write_all(buf).await,
        }
    }

    async fn write_bytes(&mut self, buf: Bytes) -> io::Result<()> {
        match &mut self.0 {
            StreamInner::Monoio(s) => s.write_bytes(buf).await,
            #[cfg(feature = "runtime-glommio")]
            StreamInner::Glommio(s) => s.write_bytes(buf).await,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match &mut self.0 {
            StreamInner::Monoio(s) => s.shutdown().await,
            #[cfg(feature = "runtime-glommio")]
            StreamInner::Glommio(s) => s.shutdown().await,
        }
    }
}

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
pub fn timeout<F: Future>(limit: Duration, fut: F) -> Timeout<F, impl Future<Output = ()>> {
    Timeout { fut, timer: Some(sleep(limit)) }
}

/// [`timeout`] when there is a limit, else `fut` as it is.
pub fn timeout_opt<F: Future>(limit: Option<Duration>, fut: F) -> Timeout<F, impl Future<Output = ()>> {
    Timeout { fut, timer: limit.map(sleep) }
}

pin_project_lite::pin_project! {
    /// A future with a time limit. A struct rather than an `async fn`: an `async fn` keeps its
    /// argument and the pinned copy it awaits side by side, doubling the size of whatever it
    /// wraps, and request futures are large enough for every copy to show in a profile.
    pub struct Timeout<F, S> {
        #[pin]
        fut: F,
        #[pin]
        timer: Option<S>,
    }
}

impl<F: Future, S: Future<Output = ()>> Future for Timeout<F, S> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let this = self.project();
        if let std::task::Poll::Ready(out) = this.fut.poll(cx) {
            return std::task::Poll::Ready(Ok(out));
        }
        match this.timer.as_pin_mut().map(|t| t.poll(cx)) {
            Some(std::task::Poll::Ready(())) => std::task::Poll::Ready(Err(Elapsed)),
            _ => std::task::Poll::Pending,
        }
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
