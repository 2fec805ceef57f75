//! monoio behind the runtime seam: io_uring (with optional ring setup flags) or epoll.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::AsyncReadRent;
use monoio::io::AsyncWriteRent;

use super::Conn;

/// What the operator asked for (`--driver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverRequest {
    /// io_uring when the kernel and sandbox allow it, else epoll.
    #[default]
    Auto,
    /// io_uring or fail at start.
    Uring,
    /// epoll.
    Epoll,
}

/// io_uring setup flags (`--uring-flags`). The probe on our box found DEFER_TASKRUN the fastest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UringFlags {
    /// `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN` (Linux 6.1+).
    #[default]
    DeferTaskrun,
    /// `IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_SINGLE_ISSUER`.
    CoopTaskrun,
    /// No setup flags (monoio's default ring).
    None,
}

/// The driver a process actually runs on, decided once at start and logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    Uring(UringFlags),
    Epoll,
}

impl std::fmt::Display for DriverKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DriverKind::Uring(UringFlags::DeferTaskrun) => f.write_str("io_uring (SINGLE_ISSUER|DEFER_TASKRUN)"),
            DriverKind::Uring(UringFlags::CoopTaskrun) => f.write_str("io_uring (COOP_TASKRUN|SINGLE_ISSUER)"),
            DriverKind::Uring(UringFlags::None) => f.write_str("io_uring (no setup flags)"),
            DriverKind::Epoll => f.write_str("epoll"),
        }
    }
}

impl DriverKind {
    /// Short stable label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            DriverKind::Uring(_) => "io_uring",
            DriverKind::Epoll => "epoll",
        }
    }

    /// Decides the driver for the whole process. `auto` falls back to epoll (and to a ring
    /// without setup flags first) where io_uring is unavailable: container seccomp profiles,
    /// `kernel.io_uring_disabled`, old kernels.
    pub fn resolve(request: DriverRequest, flags: UringFlags) -> Result<DriverKind, String> {
        match request {
            DriverRequest::Epoll => Ok(DriverKind::Epoll),
            DriverRequest::Uring => {
                if !uring_available() {
                    return Err("io_uring is not available here (kernel.io_uring_disabled, a seccomp \
                         profile denying io_uring_setup, or MONOIO_FORCE_LEGACY_DRIVER); \
                         use --driver epoll or --driver auto"
                        .into());
                }
                probe_flags(flags)
                    .map_err(|e| format!("io_uring refused the setup flags {flags:?}: {e}; try --uring-flags none"))?;
                Ok(DriverKind::Uring(flags))
            }
            DriverRequest::Auto => {
                if !uring_available() {
                    return Ok(DriverKind::Epoll);
                }
                if probe_flags(flags).is_ok() {
                    Ok(DriverKind::Uring(flags))
                } else if probe_flags(UringFlags::None).is_ok() {
                    Ok(DriverKind::Uring(UringFlags::None))
                } else {
                    Ok(DriverKind::Epoll)
                }
            }
        }
    }
}

/// True when io_uring can be set up here and has the opcodes monoio needs.
pub fn uring_available() -> bool {
    monoio::utils::detect_uring()
}

fn uring_builder(flags: UringFlags) -> io_uring::Builder {
    let mut b = io_uring::IoUring::builder();
    match flags {
        UringFlags::DeferTaskrun => {
            b.setup_single_issuer().setup_defer_taskrun();
        }
        UringFlags::CoopTaskrun => {
            b.setup_coop_taskrun().setup_taskrun_flag().setup_single_issuer();
        }
        UringFlags::None => {}
    }
    b
}

fn probe_flags(flags: UringFlags) -> io::Result<()> {
    uring_builder(flags).build(8).map(drop)
}

/// Builds a runtime of the chosen kind on the current thread and runs `main` to completion on it.
pub(super) fn run<F, Fut>(kind: DriverKind, entries: u32, main: F) -> io::Result<Fut::Output>
where
    F: FnOnce() -> Fut,
    Fut: Future,
{
    match kind {
        DriverKind::Uring(flags) => {
            let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .with_entries(entries)
                .uring_builder(uring_builder(flags))
                .enable_timer()
                .build()?;
            Ok(rt.block_on(main()))
        }
        DriverKind::Epoll => {
            let mut rt =
                monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().with_entries(entries).enable_timer().build()?;
            Ok(rt.block_on(main()))
        }
    }
}

/// Spawns a task on the current shard. The task is detached; it runs until it finishes or the
/// shard's runtime stops.
pub(super) fn spawn<F>(fut: F)
where
    F: Future<Output = ()> + 'static,
{
    drop(monoio::spawn(fut));
}

/// Sleeps on the current shard's timer wheel.
pub(super) fn sleep(d: Duration) -> impl Future<Output = ()> {
    monoio::time::sleep(d)
}

/// Sleeps until `deadline` (the timer wheel's resolution is one millisecond).
pub(super) fn sleep_until(deadline: std::time::Instant) -> impl Future<Output = ()> {
    monoio::time::sleep_until(monoio::time::Instant::from_std(deadline))
}

/// A listening socket owned by one shard.
pub(super) struct Listener(monoio::net::TcpListener);

impl Listener {
    pub(super) fn from_std(listener: std::net::TcpListener) -> io::Result<Self> {
        monoio::net::TcpListener::from_std(listener).map(Listener)
    }

    pub(super) async fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        let (stream, peer) = self.0.accept().await?;
        Ok((Io(stream), peer))
    }
}

/// A monoio socket with owned-buffer I/O: a TCP connection ([`Stream`]) or one end of a Unix
/// socket pair ([`UnixStream`]).
pub struct Io<S>(S);

/// A TCP connection owned by one shard.
pub(super) type Stream = Io<monoio::net::TcpStream>;

impl Stream {
    pub(super) async fn connect(addr: SocketAddr) -> io::Result<Self> {
        monoio::net::TcpStream::connect_addr(addr).await.map(Io)
    }

    pub(super) fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.0.set_nodelay(on)
    }
}

/// Owned-buffer I/O shared by every monoio stream type.
async fn read_into<S: AsyncReadRent>(s: &mut S, mut buf: BytesMut) -> (io::Result<usize>, BytesMut) {
    if buf.capacity() == buf.len() {
        buf.reserve(4096);
    }
    let start = buf.len();
    let end = buf.capacity();
    let (res, slice) = s.read(buf.slice_mut(start..end)).await;
    (res, slice.into_inner())
}

async fn write_all_from<S: AsyncWriteRent>(s: &mut S, mut buf: BytesMut) -> (io::Result<()>, BytesMut) {
    let mut pos = 0;
    let len = buf.len();
    while pos < len {
        let (res, slice) = s.write(buf.slice(pos..len)).await;
        buf = slice.into_inner();
        match res {
            Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), buf),
            Ok(n) => pos += n,
            Err(e) => return (Err(e), buf),
        }
    }
    (Ok(()), buf)
}

async fn write_bytes_from<S: AsyncWriteRent>(s: &mut S, mut buf: Bytes) -> io::Result<()> {
    while !buf.is_empty() {
        let (res, b) = s.write(buf).await;
        buf = b;
        match res {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes::Buf::advance(&mut buf, n),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl<S: AsyncReadRent + AsyncWriteRent> Conn for Io<S> {
    async fn read(&mut self, buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        read_into(&mut self.0, buf).await
    }

    async fn write_all(&mut self, buf: BytesMut) -> (io::Result<()>, BytesMut) {
        write_all_from(&mut self.0, buf).await
    }

    async fn write_bytes(&mut self, buf: Bytes) -> io::Result<()> {
        write_bytes_from(&mut self.0, buf).await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.0.shutdown().await
    }
}

/// One end of a Unix stream socket pair, adopted by the current shard (used to hand work from a
/// plain thread to a shard without a cross-thread waker).
pub type UnixStream = Io<monoio::net::UnixStream>;

impl UnixStream {
    pub fn from_std(stream: std::os::unix::net::UnixStream) -> io::Result<Self> {
        monoio::net::UnixStream::from_std(stream).map(Io)
    }
}
