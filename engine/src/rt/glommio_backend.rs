//! glommio behind the runtime seam (cargo feature `runtime-glommio`, `--runtime glommio`).
//!
//! glommio drives everything through io_uring (no epoll fallback) and registers memory with the
//! kernel, so it needs io_uring and a `RLIMIT_MEMLOCK` of at least 512 KiB per shard: both are
//! checked at start, with a message naming the fix.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};

use super::Conn;

/// Most bytes one read asks for (the window zeroed before it).
const READ_WINDOW: usize = 4096;

/// glommio refuses to start an executor below this (per executor).
const MIN_MEMLOCK: u64 = 512 * 1024;

/// Checks what glommio needs from the host, raising the memlock limit when allowed.
pub(super) fn check_host() -> Result<(), String> {
    if !super::uring_available() {
        return Err("glommio needs io_uring, which is not available here (kernel.io_uring_disabled, or a seccomp \
                    profile that denies io_uring_setup); use --runtime monoio, which falls back to epoll"
            .into());
    }
    let (soft, hard) =
        rlimit::getrlimit(rlimit::Resource::MEMLOCK).map_err(|e| format!("cannot read RLIMIT_MEMLOCK: {e}"))?;
    if soft >= MIN_MEMLOCK {
        return Ok(());
    }
    let want = MIN_MEMLOCK.max(hard.min(64 * 1024 * 1024));
    if rlimit::setrlimit(rlimit::Resource::MEMLOCK, want, hard.max(want)).is_ok() {
        return Ok(());
    }
    Err(format!(
        "glommio needs RLIMIT_MEMLOCK of at least {} KiB per shard, and it is {} KiB (hard limit {} KiB); raise it \
         with `ulimit -l 1024` in the starting shell, `LimitMEMLOCK=1M` in a systemd unit, or `--ulimit memlock=1048576` \
         for Docker, or use --runtime monoio",
        MIN_MEMLOCK / 1024,
        soft / 1024,
        hard / 1024
    ))
}

/// Runs `main` on a glommio executor made on this thread, placed on `core` when given.
pub(super) fn run<F, Fut>(core: Option<usize>, main: F) -> io::Result<Fut::Output>
where
    F: FnOnce() -> Fut,
    Fut: Future,
{
    let placement = core.map_or(glommio::Placement::Unbound, glommio::Placement::Fixed);
    // The registered-buffer arena defaults to 10 MiB per executor; we read into our own
    // buffers, so the minimum keeps idle memory small.
    let executor =
        glommio::LocalExecutorBuilder::new(placement).io_memory(64 * 1024).make().map_err(io::Error::from)?;
    Ok(executor.run(main()))
}

pub(super) fn spawn<F>(fut: F)
where
    F: Future<Output = ()> + 'static,
{
    glommio::spawn_local(fut).detach();
}

pub(super) async fn sleep(d: Duration) {
    glommio::timer::sleep(d).await;
}

pub(super) struct Listener(glommio::net::TcpListener);

impl Listener {
    pub(super) fn from_std(listener: std::net::TcpListener) -> io::Result<Self> {
        let fd = listener.into_raw_fd();
        // SAFETY: `fd` comes from `into_raw_fd` on a bound, listening TCP socket we own, so it is
        // open, of the right kind, and owned by nothing else from here on; glommio takes over
        // its ownership (and closes it on drop).
        #[allow(unsafe_code)]
        let listener = unsafe { glommio::net::TcpListener::from_raw_fd(fd) };
        Ok(Listener(listener))
    }

    pub(super) async fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        let stream = self.0.accept().await.map_err(io::Error::from)?;
        let peer = stream.peer_addr().map_err(io::Error::from)?;
        Ok((Stream(stream), peer))
    }
}

pub(super) struct Stream(glommio::net::TcpStream);

impl Stream {
    pub(super) async fn connect(addr: SocketAddr) -> io::Result<Self> {
        glommio::net::TcpStream::connect(addr).await.map(Stream).map_err(io::Error::from)
    }

    pub(super) fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.0.set_nodelay(on).map_err(io::Error::from)
    }
}

impl Conn for Stream {
    async fn read(&mut self, mut buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        // glommio reads into borrowed, initialised memory: zero a bounded window of the spare
        // capacity (zeroing all of it cost more than the read itself).
        if buf.capacity() == buf.len() {
            buf.reserve(4096);
        }
        let start = buf.len();
        let window = (buf.capacity() - start).min(READ_WINDOW);
        buf.resize(start + window, 0);
        let res = self.0.read(&mut buf[start..]).await;
        let n = *res.as_ref().unwrap_or(&0);
        buf.truncate(start + n);
        (res, buf)
    }

    async fn write_all(&mut self, buf: BytesMut) -> (io::Result<()>, BytesMut) {
        let res = self.0.write_all(&buf).await;
        (res, buf)
    }

    async fn write_bytes(&mut self, buf: Bytes) -> io::Result<()> {
        self.0.write_all(&buf).await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.0.shutdown(std::net::Shutdown::Write).await.map_err(io::Error::from)
    }
}
