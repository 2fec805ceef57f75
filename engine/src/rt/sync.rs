//! Shard-local synchronisation: no atomics, no locks, because nothing here crosses threads.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// A one-shot broadcast: once set, every present and future waiter wakes. Used for the shard's
/// drain signal, which every connection waits on between requests.
///
/// A waiter deregisters when its future is dropped, so the event holds exactly one waker per
/// *current* waiter: a shard that has served a million connections does not keep a million
/// stale wakers (each of which would pin its finished task's memory).
#[derive(Clone, Default)]
pub struct LocalEvent {
    inner: Rc<EventInner>,
}

#[derive(Default)]
struct EventInner {
    set: Cell<bool>,
    waiters: RefCell<slab::Slab<Waker>>,
}

impl std::fmt::Debug for LocalEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEvent").field("set", &self.is_set()).finish_non_exhaustive()
    }
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
        for (_, w) in waiters {
            w.wake();
        }
    }

    /// Completes once the event is set.
    pub fn wait(&self) -> Wait<'_> {
        Wait { event: self, key: None }
    }

    /// Waiters registered now (tests).
    pub fn waiter_count(&self) -> usize {
        self.inner.waiters.borrow().len()
    }
}

/// The future of [`LocalEvent::wait`].
pub struct Wait<'a> {
    event: &'a LocalEvent,
    key: Option<usize>,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let inner = &self.event.inner;
        if inner.set.get() {
            self.key = None;
            return Poll::Ready(());
        }
        let mut waiters = inner.waiters.borrow_mut();
        match self.key.and_then(|k| waiters.get_mut(k)) {
            Some(w) => w.clone_from(cx.waker()),
            None => {
                let key = waiters.insert(cx.waker().clone());
                drop(waiters);
                self.key = Some(key);
            }
        }
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if let Some(k) = self.key.take()
            && !self.event.inner.set.get()
        {
            self.event.inner.waiters.borrow_mut().try_remove(k);
        }
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

    #[test]
    fn dropped_waiters_deregister() {
        let e = LocalEvent::new();
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        for _ in 0..1000 {
            let mut w = std::pin::pin!(e.wait());
            assert!(w.as_mut().poll(&mut cx).is_pending());
            assert!(w.as_mut().poll(&mut cx).is_pending(), "a second poll reuses the slot");
            assert_eq!(e.waiter_count(), 1);
        }
        assert_eq!(e.waiter_count(), 0, "no waker outlives its waiter");
        let mut w = std::pin::pin!(e.wait());
        assert!(w.as_mut().poll(&mut cx).is_pending());
        e.set();
        assert!(w.as_mut().poll(&mut cx).is_ready());
    }
}
