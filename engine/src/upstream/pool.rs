//! Per-shard upstream connection pools: one pool per target identity (`Upstream::pool_key`),
//! idle connections on a LIFO stack (the most recently used stays warm), an idle timeout, and a
//! cap on open connections per target. A request that finds the target at its cap waits for
//! whichever comes first: a connection returned to the pool, or a slot freed by a closed one.
//! Nothing here is shared between shards, so nothing is locked.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::connect::UpstreamConn;

/// Limits of one target's pool (from its config).
#[derive(Debug, Clone, Copy)]
pub struct PoolLimits {
    /// Fixed when the pool is created; a reload that changes it changes the pool key.
    pub max_connections: usize,
    pub idle_timeout: Duration,
}

struct Idle {
    conn: UpstreamConn,
    since: Instant,
    slot: Slot,
}

/// The pool of one target.
pub struct TargetPool {
    idle: RefCell<Vec<Idle>>,
    /// Connections open (idle or in use), bounded by `max`.
    open: Cell<usize>,
    max: usize,
    /// Requests waiting for a connection or a slot.
    waiters: RefCell<Vec<Waker>>,
    last_used: Cell<Instant>,
    /// The idle timeout of the config that used this pool last.
    idle_timeout: Cell<Duration>,
}

impl TargetPool {
    fn wake_waiters(&self) {
        // Wake all: a waiter that was cancelled (timed out) must not swallow the wake-up.
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }

    fn pop_fresh_idle(&self, now: Instant) -> Option<Idle> {
        let timeout = self.idle_timeout.get();
        let mut idle = self.idle.borrow_mut();
        while let Some(i) = idle.pop() {
            if now.duration_since(i.since) < timeout {
                return Some(i);
            }
            // Expired: dropping it closes the socket and frees its slot.
        }
        None
    }
}

/// One unit of a target's connection cap; freed (and waiters woken) on drop.
struct Slot(Rc<TargetPool>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.set(self.0.open.get().saturating_sub(1));
        self.0.wake_waiters();
    }
}

/// A connection checked out of a pool. Dropping it closes the connection and frees its slot;
/// [`Pool::release`] puts it back for reuse instead.
pub struct PooledConn {
    pub conn: UpstreamConn,
    /// Bytes read from the connection and not yet consumed.
    pub buf: BytesMut,
    /// It served an earlier request (so it may have gone stale meanwhile).
    pub reused: bool,
    slot: Slot,
}

/// What a checkout got.
pub enum Checkout {
    /// A pooled connection, ready to use.
    Idle(PooledConn),
    /// A slot for a new connection: connect, then [`Reservation::into_conn`].
    New(Reservation),
}

/// All pools of one shard.
#[derive(Default)]
pub struct Pool {
    targets: RefCell<HashMap<Arc<str>, Rc<TargetPool>>>,
}

impl Pool {
    fn target(&self, key: &Arc<str>, limits: PoolLimits) -> Rc<TargetPool> {
        let t = self.targets.borrow().get(key).cloned();
        let t = t.unwrap_or_else(|| {
            let t = Rc::new(TargetPool {
                idle: RefCell::new(Vec::new()),
                open: Cell::new(0),
                max: limits.max_connections.max(1),
                waiters: RefCell::new(Vec::new()),
                last_used: Cell::new(Instant::now()),
                idle_timeout: Cell::new(limits.idle_timeout),
            });
            self.targets.borrow_mut().insert(key.clone(), t.clone());
            t
        });
        t.idle_timeout.set(limits.idle_timeout);
        t.last_used.set(Instant::now());
        t
    }

    /// The most recently used idle connection that has not outlived its idle timeout.
    pub fn take_idle(&self, key: &Arc<str>, limits: PoolLimits) -> Option<PooledConn> {
        let home = self.target(key, limits);
        home.pop_fresh_idle(Instant::now()).map(|i| PooledConn {
            conn: i.conn,
            buf: BytesMut::new(),
            reused: true,
            slot: i.slot,
        })
    }

    /// An idle connection or a slot for a new one; waits while the target is at its cap. The
    /// caller bounds the wait.
    pub async fn checkout(&self, key: &Arc<str>, limits: PoolLimits) -> Checkout {
        self.checkout_inner(key, limits, false).await
    }

    /// A slot for a *new* connection (the retry after a stale one). At the cap, an idle
    /// connection is closed to make room rather than handed out.
    pub async fn checkout_new(&self, key: &Arc<str>, limits: PoolLimits) -> Reservation {
        loop {
            match self.checkout_inner(key, limits, true).await {
                Checkout::New(r) => return r,
                // Dropping it frees its slot; the next round takes the slot.
                Checkout::Idle(c) => drop(c),
            }
        }
    }

    async fn checkout_inner(&self, key: &Arc<str>, limits: PoolLimits, prefer_new: bool) -> Checkout {
        let home = self.target(key, limits);
        poll_fn(|cx| {
            if prefer_new && home.open.get() < home.max {
                home.open.set(home.open.get() + 1);
                return Poll::Ready(Checkout::New(Reservation { slot: Slot(home.clone()) }));
            }
            if let Some(i) = home.pop_fresh_idle(Instant::now()) {
                return Poll::Ready(Checkout::Idle(PooledConn {
                    conn: i.conn,
                    buf: BytesMut::new(),
                    reused: true,
                    slot: i.slot,
                }));
            }
            if home.open.get() < home.max {
                home.open.set(home.open.get() + 1);
                return Poll::Ready(Checkout::New(Reservation { slot: Slot(home.clone()) }));
            }
            home.waiters.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Returns a connection whose response was read completely and which may be reused.
    pub fn release(&self, c: PooledConn) {
        if !c.buf.is_empty() {
            // Bytes beyond the response: the framing is off, do not reuse.
            return;
        }
        let home = c.slot.0.clone();
        home.idle.borrow_mut().push(Idle { conn: c.conn, since: Instant::now(), slot: c.slot });
        home.wake_waiters();
    }

    /// Closes idle connections past their target's idle timeout and forgets pools unused for as
    /// long (pools of targets removed by a reload go away this way).
    pub fn sweep(&self) {
        let now = Instant::now();
        // Expired connections are collected first and dropped after the borrows end: dropping
        // one frees its slot, which touches the pool.
        let mut expired = Vec::new();
        self.targets.borrow_mut().retain(|_, t| {
            let idle_timeout = t.idle_timeout.get();
            let mut idle = t.idle.borrow_mut();
            let (keep, old): (Vec<Idle>, Vec<Idle>) =
                std::mem::take(&mut *idle).into_iter().partition(|i| now.duration_since(i.since) < idle_timeout);
            *idle = keep;
            // Connections of this target still in use (the expired ones are about to close).
            let in_use = t.open.get().saturating_sub(idle.len() + old.len());
            expired.extend(old);
            in_use > 0 || !idle.is_empty() || now.duration_since(t.last_used.get()) < idle_timeout
        });
        drop(expired);
    }

    /// Closes the idle connections of one target (its actor restarted: their state is unknown).
    /// Connections in use close when their request ends, as usual.
    pub fn clear_target(&self, key: &Arc<str>) {
        let idle = self.targets.borrow().get(key).map(|t| std::mem::take(&mut *t.idle.borrow_mut()));
        drop(idle);
    }

    /// Closes every idle connection and forgets every target (shutdown).
    pub fn clear(&self) {
        let targets = std::mem::take(&mut *self.targets.borrow_mut());
        for t in targets.values() {
            drop(std::mem::take(&mut *t.idle.borrow_mut()));
        }
    }

    /// Idle connections across targets (tests, metrics).
    pub fn idle_count(&self) -> usize {
        self.targets.borrow().values().map(|t| t.idle.borrow().len()).sum()
    }
}

/// A reserved slot, to be turned into a connection.
pub struct Reservation {
    slot: Slot,
}

impl Reservation {
    pub fn into_conn(self, conn: UpstreamConn) -> PooledConn {
        PooledConn { conn, buf: BytesMut::new(), reused: false, slot: self.slot }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, idle_ms: u64) -> PoolLimits {
        PoolLimits { max_connections: max, idle_timeout: Duration::from_millis(idle_ms) }
    }

    /// Drives a checkout that must not wait (no runtime needed).
    fn checkout_now(pool: &Pool, key: &Arc<str>, l: PoolLimits) -> Option<Checkout> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut fut = std::pin::pin!(pool.checkout(key, l));
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(c) => Some(c),
            Poll::Pending => None,
        }
    }

    #[test]
    fn the_cap_counts_reservations_and_frees_on_drop() {
        let pool = Pool::default();
        let key: Arc<str> = Arc::from("t");
        let a = checkout_now(&pool, &key, limits(2, 1000));
        let b = checkout_now(&pool, &key, limits(2, 1000));
        assert!(matches!(a, Some(Checkout::New(_))) && matches!(b, Some(Checkout::New(_))));
        assert!(checkout_now(&pool, &key, limits(2, 1000)).is_none(), "at the cap");
        drop(a);
        assert!(matches!(checkout_now(&pool, &key, limits(2, 1000)), Some(Checkout::New(_))));
    }

    /// Regression: sweep compared a target's open count with the expired connections of every
    /// target visited so far, and could forget a pool whose connection was still in use.
    #[test]
    fn sweep_keeps_a_pool_whose_connection_is_in_use() {
        let pool = Pool::default();
        let busy: Arc<str> = Arc::from("busy");
        let held = checkout_now(&pool, &busy, limits(4, 0));
        assert!(matches!(held, Some(Checkout::New(_))));
        if let Some(t) = pool.targets.borrow().get(&busy) {
            t.last_used.set(Instant::now() - Duration::from_secs(1));
        }
        pool.sweep();
        assert!(pool.targets.borrow().contains_key(&busy), "a pool with a connection in use stays");
        drop(held);
        pool.sweep();
        assert!(!pool.targets.borrow().contains_key(&busy), "an unused, empty pool goes");
    }

    /// The same with another target's expired connections swept first, on a real runtime.
    #[test]
    fn sweep_counts_expired_connections_per_target() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let out = crate::rt::run_shard_runtime(
            crate::rt::Backend::Monoio(crate::rt::DriverKind::Epoll),
            None,
            64,
            || async move {
                let pool = Pool::default();
                // Eight targets with an idle connection each that expires at once; the sweep visits
                // them in HashMap order, so "b" almost surely comes after some of them.
                let b: Arc<str> = Arc::from("b");
                for i in 0..8 {
                    let a: Arc<str> = Arc::from(format!("a{i}"));
                    let Some(Checkout::New(r)) = checkout_now(&pool, &a, limits(8, 0)) else { panic!("slot") };
                    let conn = crate::rt::TcpStream::connect(addr).await.unwrap();
                    pool.release(r.into_conn(UpstreamConn::Plain(conn)));
                }
                // Target "b" has one connection in use and no recent checkout.
                let held = checkout_now(&pool, &b, limits(8, 0));
                for t in pool.targets.borrow().values() {
                    t.last_used.set(Instant::now() - Duration::from_secs(1));
                }
                pool.sweep();
                let kept = pool.targets.borrow().contains_key(&b);
                drop(held);
                kept
            },
        )
        .unwrap();
        assert!(out, "b's pool survives a sweep that expired a's connections");
    }
}
