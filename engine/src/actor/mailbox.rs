//! A bounded mailbox for one actor on one shard: at most `limit` requests are served at once,
//! at most `capacity` more wait their turn in arrival order, and anything beyond is refused at
//! once. A refusal is the backpressure: memory never grows with the queue a caller builds up.
//!
//! Everything here lives on one shard's thread (`Rc`, `Cell`), so nothing is locked.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Why a request got no turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `capacity` requests already wait.
    Full { capacity: usize },
    /// The actor was restarted while the request waited: its pending requests are failed.
    Restarted,
}

/// What a waiting request has been told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Waiting,
    /// A turn was handed over (already counted in `running`).
    Granted,
    /// The turn became a [`Turn`] owned by the request.
    Taken,
    Failed,
}

struct Waiter {
    verdict: Cell<Verdict>,
    waker: RefCell<Option<Waker>>,
}

struct State {
    running: Cell<usize>,
    limit: Cell<usize>,
    capacity: Cell<usize>,
    queue: RefCell<VecDeque<Rc<Waiter>>>,
}

impl State {
    /// Ends one turn and hands it to the oldest waiter, if any.
    fn release(&self) {
        self.running.set(self.running.get().saturating_sub(1));
        self.grant_waiting();
    }

    fn grant_waiting(&self) {
        while self.running.get() < self.limit.get() {
            let Some(w) = self.queue.borrow_mut().pop_front() else { return };
            w.verdict.set(Verdict::Granted);
            self.running.set(self.running.get() + 1);
            if let Some(waker) = w.waker.borrow_mut().take() {
                waker.wake();
            }
        }
    }
}

/// The mailbox of one actor.
#[derive(Clone)]
pub struct Mailbox {
    state: Rc<State>,
}

impl Mailbox {
    /// `limit` requests served at once (at least one), `capacity` waiting (may be zero).
    pub fn new(limit: usize, capacity: usize) -> Self {
        Mailbox {
            state: Rc::new(State {
                running: Cell::new(0),
                limit: Cell::new(limit.max(1)),
                capacity: Cell::new(capacity),
                queue: RefCell::new(VecDeque::new()),
            }),
        }
    }

    /// Changes the limits (a config reload). A larger limit lets waiters in now; a smaller one
    /// takes effect as turns end.
    pub fn set_limits(&self, limit: usize, capacity: usize) {
        self.state.limit.set(limit.max(1));
        self.state.capacity.set(capacity);
        self.state.grant_waiting();
    }

    /// Requests being served now.
    pub fn running(&self) -> usize {
        self.state.running.get()
    }

    /// Requests waiting for a turn.
    pub fn waiting(&self) -> usize {
        self.state.queue.borrow().len()
    }

    /// A turn now, or a place in the queue, or a refusal when the queue is full.
    pub fn enter(&self) -> Enter {
        let s = &self.state;
        if s.running.get() < s.limit.get() && s.queue.borrow().is_empty() {
            s.running.set(s.running.get() + 1);
            return Enter { state: self.state.clone(), ticket: Ticket::Ready };
        }
        let mut queue = s.queue.borrow_mut();
        if queue.len() >= s.capacity.get() {
            return Enter {
                state: self.state.clone(),
                ticket: Ticket::Refused(Refused::Full { capacity: queue.len() }),
            };
        }
        let waiter = Rc::new(Waiter { verdict: Cell::new(Verdict::Waiting), waker: RefCell::new(None) });
        queue.push_back(waiter.clone());
        Enter { state: self.state.clone(), ticket: Ticket::Queued(waiter) }
    }

    /// Fails every waiting request with [`Refused::Restarted`]; returns how many there were.
    pub fn fail_waiting(&self) -> usize {
        let waiting = std::mem::take(&mut *self.state.queue.borrow_mut());
        for w in &waiting {
            w.verdict.set(Verdict::Failed);
            if let Some(waker) = w.waker.borrow_mut().take() {
                waker.wake();
            }
        }
        waiting.len()
    }
}

/// The right to be served; the next waiter gets it when this is dropped.
pub struct Turn {
    state: Rc<State>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.state.release();
    }
}

enum Ticket {
    Ready,
    Queued(Rc<Waiter>),
    Refused(Refused),
    /// Polled to completion.
    Spent,
}

/// Waits for a turn. Dropping it (the client went away) leaves the queue, or passes on a turn
/// it was granted but never took.
pub struct Enter {
    state: Rc<State>,
    ticket: Ticket,
}

impl Enter {
    /// Whether the request got a turn without waiting (or was refused at once).
    pub fn is_immediate(&self) -> bool {
        !matches!(self.ticket, Ticket::Queued(_))
    }
}

impl Future for Enter {
    type Output = Result<Turn, Refused>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let ready = match &this.ticket {
            Ticket::Ready => Ok(Turn { state: this.state.clone() }),
            Ticket::Refused(r) => Err(*r),
            Ticket::Spent => Err(Refused::Restarted),
            Ticket::Queued(w) => match w.verdict.get() {
                Verdict::Waiting => {
                    *w.waker.borrow_mut() = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                Verdict::Granted | Verdict::Taken => {
                    w.verdict.set(Verdict::Taken);
                    Ok(Turn { state: this.state.clone() })
                }
                Verdict::Failed => Err(Refused::Restarted),
            },
        };
        this.ticket = Ticket::Spent;
        Poll::Ready(ready)
    }
}

impl Drop for Enter {
    fn drop(&mut self) {
        match &self.ticket {
            // Counted in `running` but never handed out as a `Turn`.
            Ticket::Ready => self.state.release(),
            Ticket::Queued(w) => match w.verdict.get() {
                Verdict::Waiting => self.state.queue.borrow_mut().retain(|q| !Rc::ptr_eq(q, w)),
                Verdict::Granted => self.state.release(),
                Verdict::Taken | Verdict::Failed => {}
            },
            Ticket::Refused(_) | Ticket::Spent => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::task::Wake;

    use super::*;

    struct Flag(std::sync::atomic::AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn poll(e: &mut Enter) -> (Poll<Result<Turn, Refused>>, Arc<Flag>) {
        let flag = Arc::new(Flag(std::sync::atomic::AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        (Pin::new(e).poll(&mut cx), flag)
    }

    fn woken(f: &Flag) -> bool {
        f.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[test]
    fn serves_up_to_the_limit_then_queues_then_refuses() {
        let mb = Mailbox::new(2, 1);
        let mut a = mb.enter();
        let mut b = mb.enter();
        assert!(a.is_immediate() && b.is_immediate());
        let (Poll::Ready(Ok(ta)), _) = poll(&mut a) else { panic!("a is served") };
        let (Poll::Ready(Ok(_tb)), _) = poll(&mut b) else { panic!("b is served") };
        let mut c = mb.enter();
        assert!(!c.is_immediate());
        let (p, flag) = poll(&mut c);
        assert!(p.is_pending());
        let mut d = mb.enter();
        let (Poll::Ready(Err(Refused::Full { capacity: 1 })), _) = poll(&mut d) else { panic!("d is refused") };
        assert_eq!((mb.running(), mb.waiting()), (2, 1));
        drop(ta);
        assert!(woken(&flag), "the waiter is woken when a turn ends");
        let (Poll::Ready(Ok(_tc)), _) = poll(&mut c) else { panic!("c is served") };
        assert_eq!((mb.running(), mb.waiting()), (2, 0));
    }

    #[test]
    fn waiters_are_served_in_arrival_order() {
        let mb = Mailbox::new(1, 8);
        let mut first = mb.enter();
        let (Poll::Ready(Ok(t)), _) = poll(&mut first) else { panic!() };
        let mut second = mb.enter();
        let mut third = mb.enter();
        assert!(poll(&mut second).0.is_pending() && poll(&mut third).0.is_pending());
        drop(t);
        assert!(poll(&mut third).0.is_pending(), "the later waiter still waits");
        let (Poll::Ready(Ok(_)), _) = poll(&mut second) else { panic!("the earlier waiter goes first") };
    }

    #[test]
    fn a_newcomer_does_not_jump_the_queue() {
        let mb = Mailbox::new(1, 8);
        let mut first = mb.enter();
        let (Poll::Ready(Ok(t)), _) = poll(&mut first) else { panic!() };
        let mut waiting = mb.enter();
        assert!(poll(&mut waiting).0.is_pending());
        drop(t);
        // The turn went to the waiter, so a newcomer must queue even before it polls.
        let newcomer = mb.enter();
        assert!(!newcomer.is_immediate());
    }

    #[test]
    fn restart_fails_waiters_but_not_running_turns() {
        let mb = Mailbox::new(1, 8);
        let mut first = mb.enter();
        let (Poll::Ready(Ok(t)), _) = poll(&mut first) else { panic!() };
        let mut w1 = mb.enter();
        let mut w2 = mb.enter();
        let (_, f1) = poll(&mut w1);
        let _ = poll(&mut w2);
        assert_eq!(mb.fail_waiting(), 2);
        assert!(woken(&f1));
        assert!(matches!(poll(&mut w1).0, Poll::Ready(Err(Refused::Restarted))));
        assert!(matches!(poll(&mut w2).0, Poll::Ready(Err(Refused::Restarted))));
        assert_eq!(mb.running(), 1);
        drop(t);
        assert_eq!(mb.running(), 0);
    }

    #[test]
    fn abandoned_waits_give_back_their_place_or_their_turn() {
        let mb = Mailbox::new(1, 8);
        let mut first = mb.enter();
        let (Poll::Ready(Ok(t)), _) = poll(&mut first) else { panic!() };
        let mut gone = mb.enter();
        assert!(poll(&mut gone).0.is_pending());
        drop(gone);
        assert_eq!(mb.waiting(), 0, "a dropped waiter leaves the queue");

        let mut granted_then_dropped = mb.enter();
        assert!(poll(&mut granted_then_dropped).0.is_pending());
        drop(t);
        assert_eq!(mb.running(), 1, "the turn passed to the waiter");
        drop(granted_then_dropped);
        assert_eq!(mb.running(), 0, "a granted turn never taken is given back");

        let never_polled = mb.enter();
        assert_eq!(mb.running(), 1);
        drop(never_polled);
        assert_eq!(mb.running(), 0);
    }

    #[test]
    fn raising_the_limit_lets_waiters_in() {
        let mb = Mailbox::new(1, 8);
        let mut first = mb.enter();
        let (Poll::Ready(Ok(_t)), _) = poll(&mut first) else { panic!() };
        let mut w = mb.enter();
        let (_, flag) = poll(&mut w);
        mb.set_limits(2, 8);
        assert!(woken(&flag));
        assert!(matches!(poll(&mut w).0, Poll::Ready(Ok(_))));
    }
}
