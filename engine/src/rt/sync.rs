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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_is_sticky() {
        let e = LocalEvent::new();
        assert!(!e.is_set());
        e.set();
        e.set();
        assert!(e.is_set());
    }
}
