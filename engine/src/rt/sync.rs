//! Shard-local synchronisation: no atomics, no locks, because nothing here crosses threads.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

/// A one-shot broadcast: once set, every present and future waiter wakes. Used for the shard's
/// drain signal.
#[derive(Clone, Default)]
pub struct LocalEvent {
    inner: Rc<EventInner>,
}

#[derive(Default)]
struct EventInner {
    set: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl LocalEvent {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_set(&self) -> bool {
        self.inner.set.get()
    }

    pub fn set(&self) {
        if self.inner.set.replace(true) {
            return;
        }
        let waiters = std::mem::take(&mut *self.inner.waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }

    /// Completes once the event is set.
    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.inner.set.get() {
                return Poll::Ready(());
            }
            let mut waiters = self.inner.waiters.borrow_mut();
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}

/// A counting semaphore for one shard: bounds upstream connections per target.
#[derive(Clone)]
pub struct LocalSemaphore {
    inner: Rc<SemInner>,
}

struct SemInner {
    available: Cell<usize>,
    waiters: RefCell<Vec<Waker>>,
}

/// Returns its unit to the semaphore on drop.
pub struct SemaphorePermit {
    sem: LocalSemaphore,
}

impl Drop for SemaphorePermit {
    fn drop(&mut self) {
        let inner = &self.sem.inner;
        inner.available.set(inner.available.get() + 1);
        // Wake every waiter: one that was cancelled would otherwise swallow the wake-up and
        // strand the others while a unit sits free. Losers simply re-queue.
        let waiters = std::mem::take(&mut *inner.waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }
}

impl LocalSemaphore {
    pub fn new(units: usize) -> Self {
        LocalSemaphore {
            inner: Rc::new(SemInner { available: Cell::new(units), waiters: RefCell::new(Default::default()) }),
        }
    }

    pub fn available(&self) -> usize {
        self.inner.available.get()
    }

    pub fn try_acquire(&self) -> Option<SemaphorePermit> {
        let n = self.inner.available.get();
        if n == 0 {
            return None;
        }
        self.inner.available.set(n - 1);
        Some(SemaphorePermit { sem: self.clone() })
    }

    /// Waits for a unit.
    pub async fn acquire(&self) -> SemaphorePermit {
        poll_fn(|cx| {
            if let Some(p) = self.try_acquire() {
                return Poll::Ready(p);
            }
            self.inner.waiters.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_return_on_drop() {
        let s = LocalSemaphore::new(2);
        let a = s.try_acquire();
        let b = s.try_acquire();
        assert!(a.is_some() && b.is_some());
        assert!(s.try_acquire().is_none());
        drop(a);
        assert_eq!(s.available(), 1);
        assert!(s.try_acquire().is_some());
    }

    #[test]
    fn event_is_sticky() {
        let e = LocalEvent::new();
        assert!(!e.is_set());
        e.set();
        e.set();
        assert!(e.is_set());
    }
}
