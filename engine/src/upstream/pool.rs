//! Per-shard upstream connection pools: one pool per target identity (`Upstream::pool_key`),
//! idle connections on a LIFO stack (the most recently used stays warm), an idle timeout, and a
//! cap on connections per target. Nothing here is shared between shards, so nothing is locked.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::connect::UpstreamConn;
use crate::rt::{LocalSemaphore, SemaphorePermit};

struct Idle {
    conn: UpstreamConn,
    since: Instant,
    permit: SemaphorePermit,
}

/// The pool of one target.
pub struct TargetPool {
    idle: RefCell<Vec<Idle>>,
    permits: LocalSemaphore,
    last_used: Cell<Instant>,
    /// The idle timeout of the config that used this pool last.
    idle_timeout: Cell<Duration>,
}

/// A connection checked out of a pool. Dropping it closes the connection and frees its slot;
/// [`Pool::release`] puts it back for reuse instead.
pub struct PooledConn {
    pub conn: UpstreamConn,
    /// Bytes read from the connection and not yet consumed.
    pub buf: BytesMut,
    /// It served an earlier request (so it may have gone stale meanwhile).
    pub reused: bool,
    permit: SemaphorePermit,
    home: Rc<TargetPool>,
}

/// Limits of one target's pool (from its config).
#[derive(Debug, Clone, Copy)]
pub struct PoolLimits {
    /// Fixed when the pool is created; a reload that changes it changes the pool key.
    pub max_connections: usize,
    pub idle_timeout: Duration,
}

/// All pools of one shard.
#[derive(Default)]
pub struct Pool {
    targets: RefCell<HashMap<Arc<str>, Rc<TargetPool>>>,
}

impl Pool {
    fn target(&self, key: &Arc<str>, limits: PoolLimits) -> Rc<TargetPool> {
        if let Some(t) = self.targets.borrow().get(key) {
            t.idle_timeout.set(limits.idle_timeout);
            return t.clone();
        }
        let t = Rc::new(TargetPool {
            idle: RefCell::new(Vec::new()),
            permits: LocalSemaphore::new(limits.max_connections),
            last_used: Cell::new(Instant::now()),
            idle_timeout: Cell::new(limits.idle_timeout),
        });
        self.targets.borrow_mut().insert(key.clone(), t.clone());
        t
    }

    /// The most recently used idle connection that has not outlived `idle_timeout`.
    pub fn take_idle(&self, key: &Arc<str>, limits: PoolLimits) -> Option<PooledConn> {
        let home = self.target(key, limits);
        let idle_timeout = limits.idle_timeout;
        let now = Instant::now();
        home.last_used.set(now);
        let mut idle = home.idle.borrow_mut();
        while let Some(i) = idle.pop() {
            if now.duration_since(i.since) < idle_timeout {
                drop(idle);
                return Some(PooledConn { conn: i.conn, buf: BytesMut::new(), reused: true, permit: i.permit, home });
            }
            // Expired: dropping it closes the socket and frees its slot.
        }
        None
    }

    /// A slot for a new connection; waits while the target is at its cap. The caller bounds the
    /// wait and then connects.
    pub async fn reserve(&self, key: &Arc<str>, limits: PoolLimits) -> Reservation {
        let home = self.target(key, limits);
        home.last_used.set(Instant::now());
        let permit = home.permits.acquire().await;
        Reservation { permit, home }
    }

    /// Returns a connection whose response was read completely and which may be reused.
    pub fn release(&self, c: PooledConn) {
        if !c.buf.is_empty() {
            // Bytes beyond the response: the framing is off, do not reuse.
            return;
        }
        c.home.idle.borrow_mut().push(Idle { conn: c.conn, since: Instant::now(), permit: c.permit });
    }

    /// Closes idle connections past their target's idle timeout and forgets pools unused for as
    /// long (pools of targets removed by a reload go away this way).
    pub fn sweep(&self) {
        let now = Instant::now();
        self.targets.borrow_mut().retain(|_, t| {
            let idle_timeout = t.idle_timeout.get();
            t.idle.borrow_mut().retain(|i| now.duration_since(i.since) < idle_timeout);
            let in_use = Rc::strong_count(t) > 1;
            in_use || !t.idle.borrow().is_empty() || now.duration_since(t.last_used.get()) < idle_timeout
        });
    }

    /// Idle connections across targets (tests, metrics).
    pub fn idle_count(&self) -> usize {
        self.targets.borrow().values().map(|t| t.idle.borrow().len()).sum()
    }
}

/// A reserved slot, to be turned into a connection.
pub struct Reservation {
    permit: SemaphorePermit,
    home: Rc<TargetPool>,
}

impl Reservation {
    pub fn into_conn(self, conn: UpstreamConn) -> PooledConn {
        PooledConn { conn, buf: BytesMut::new(), reused: false, permit: self.permit, home: self.home }
    }
}
