//! Serving on shards, shared by the gateway and the benchmark's mock provider: bind one
//! `SO_REUSEPORT` listener per shard, run each shard on its own pinned thread and runtime, and
//! accept connections until the shard drains.

use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use futures_util::FutureExt;

use crate::http::{Service, serve_connection};
use crate::rt::{self, Backend, DriverKind, LocalEvent, TcpListener};
use crate::tls::TlsStream;

/// Binds `shards` listeners on the same address with `SO_REUSEPORT`; the kernel spreads
/// connections across them. Port 0 is resolved by the first bind and reused by the others.
pub fn bind_listeners(
    addr: SocketAddr,
    shards: usize,
    backend: Backend,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut out = Vec::with_capacity(shards);
    let mut actual = addr;
    for _ in 0..shards {
        let socket = Socket::new(Domain::for_address(actual), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_port(true)?;
        socket.set_reuse_address(true)?;
        socket.set_nodelay(true)?;
        // The epoll driver needs non-blocking sockets; io_uring does not care (and glommio sets
        // it itself).
        if backend == Backend::Monoio(DriverKind::Epoll) {
            socket.set_nonblocking(true)?;
        }
        socket.bind(&actual.into())?;
        socket.listen(4096)?;
        let l: std::net::TcpListener = socket.into();
        if actual.port() == 0 {
            actual = l.local_addr()?;
        }
        out.push(l);
    }
    Ok(out)
}

/// Where shard threads run.
#[derive(Debug, Clone, Copy)]
pub struct ShardThreads {
    pub backend: Backend,
    /// io_uring submission queue entries.
    pub entries: u32,
    /// Pin shard `i` to the `i`-th CPU this process may use.
    pub pin: bool,
}

/// Starts one thread per listener; each builds its runtime and runs `main(shard_id, listener)`.
pub fn spawn_shards<F, Fut>(
    name: &str,
    listeners: Vec<std::net::TcpListener>,
    threads: ShardThreads,
    main: F,
) -> std::io::Result<Vec<JoinHandle<()>>>
where
    F: Fn(usize, std::net::TcpListener) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()>,
{
    let cores = if threads.pin { core_affinity::get_core_ids().unwrap_or_default() } else { Vec::new() };
    let mut handles = Vec::with_capacity(listeners.len());
    for (id, listener) in listeners.into_iter().enumerate() {
        let core = cores.get(id % cores.len().max(1)).map(|c| c.id);
        let main = main.clone();
        let handle = std::thread::Builder::new().name(format!("{name}-{id}")).spawn(move || {
            tracing::debug!(shard = id, ?core, "shard thread started");
            if let Err(e) = rt::run_shard_runtime(threads.backend, core, threads.entries, || main(id, listener)) {
                tracing::error!(shard = id, error = %e, "shard runtime failed");
            }
        })?;
        handles.push(handle);
    }
    Ok(handles)
}

/// What an accept loop reports to its owner.
pub trait ConnectionObserver {
    fn opened(&self) {}
    fn closed(&self) {}
    /// A connection task panicked; the shard survived.
    fn panicked(&self, _peer: SocketAddr) {}
}

/// Accepts on `listener` until `drain` fires, serving each connection with `service` (over TLS
/// when `tls` is set, with `handshake_timeout`). Returns once accepting has stopped; open
/// connections carry on and close themselves as they finish.
pub async fn accept_loop<S, O>(
    listener: std::net::TcpListener,
    service: Rc<S>,
    observer: Rc<O>,
    drain: LocalEvent,
    tls: Option<Arc<rustls::ServerConfig>>,
    handshake_timeout: Duration,
) -> std::io::Result<()>
where
    S: Service + 'static,
    O: ConnectionObserver + 'static,
{
    let listener = TcpListener::from_std(listener)?;
    while let Some(accepted) = rt::unless(&drain, listener.accept()).await {
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                observer.opened();
                let service = service.clone();
                let observer = observer.clone();
                let tls = tls.clone();
                rt::spawn(async move {
                    let task = async {
                        match tls {
                            None => serve_connection(stream, peer, &*service).await,
                            // Boxed: a plain connection's task should not carry TLS state.
                            Some(cfg) => {
                                Box::pin(async {
                                    match rt::timeout(handshake_timeout, TlsStream::accept(stream, cfg)).await {
                                        Ok(Ok(tls)) => serve_connection(tls, peer, &*service).await,
                                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                                    }
                                })
                                .await
                            }
                        }
                    };
                    // A panic must cost one connection, never the shard.
                    if std::panic::AssertUnwindSafe(task).catch_unwind().await.is_err() {
                        observer.panicked(peer);
                    }
                    observer.closed();
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                rt::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    Ok(())
}
