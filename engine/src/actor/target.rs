//! The actor of one upstream target on one shard. It owns what the shard knows of the target:
//! its mailbox (how many requests it serves at once and how many may wait), its health (latency
//! and time-to-first-token averages, consecutive failures) and its supervision state. Its
//! connections live in the shard's pool under the target's pool key, and a restart empties them.
//!
//! A request is served *inside* the actor: [`TargetActor::serve`] takes a turn from the mailbox,
//! runs the request's work (adapter translation and the upstream exchange) and catches a panic
//! in it. A panic restarts the actor: the idle connections are closed (their state is unknown),
//! the averages are reset, the requests waiting in the mailbox are failed, and for a backoff
//! period (doubling while restarts keep coming) new requests are refused with a clear error
//! rather than fed to an actor that just failed. Other targets and the shard go on untouched.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;

use super::mailbox::{Mailbox, Refused};
use crate::upstream::Pool;

/// Limits of one target's actor (from its provider's config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActorLimits {
    /// Requests served at once on each shard.
    pub max_in_flight: usize,
    /// Requests that may wait for a turn on each shard; more are refused with 503.
    pub mailbox: usize,
    /// Longest wait for a turn; a request still waiting then is refused. `None` waits for as
    /// long as it takes (tests that run without a runtime's timers).
    pub max_wait: Option<Duration>,
}

/// How restarts are spaced: the first waits `initial`, each restart within `quiet` of the
/// previous one doubles the wait, up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    pub initial: Duration,
    pub max: Duration,
    pub quiet: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            quiet: Duration::from_secs(60),
        }
    }
}

/// Why the actor did not run a request (the request was not sent upstream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The mailbox holds `waiting` requests already.
    MailboxFull { waiting: usize },
    /// The request waited `waited` for a turn and got none.
    WaitedTooLong { waited: Duration },
    /// The actor restarts after a fault; try again after `retry_after`.
    Restarting { retry_after: Duration },
    /// The actor was restarted while the request waited in its mailbox.
    RestartedWhileWaiting,
}

/// What became of a request given to the actor.
#[derive(Debug)]
pub enum Served<T> {
    Done(T),
    Refused(Refusal),
    /// The work panicked; the actor restarted. The message is the panic's.
    Panicked(String),
}

/// What the outside world sees of a target on one shard (written by the shard, summed by
/// `/metrics`).
#[derive(Debug)]
pub struct TargetMetrics {
    pub target: Arc<str>,
    pub shard: usize,
    pub restarts: AtomicU64,
    pub refused_full: AtomicU64,
    pub refused_restarting: AtomicU64,
    pub refused_wait: AtomicU64,
    /// Requests that waited in the mailbox and were failed by a restart.
    pub failed_waiting: AtomicU64,
    pub in_flight: AtomicI64,
    pub waiting: AtomicI64,
    pub latency_ewma_us: AtomicU64,
    pub ttft_ewma_us: AtomicU64,
    pub consecutive_failures: AtomicU64,
}

impl TargetMetrics {
    fn new(target: Arc<str>, shard: usize) -> Self {
        TargetMetrics {
            target,
            shard,
            restarts: AtomicU64::new(0),
            refused_full: AtomicU64::new(0),
            refused_restarting: AtomicU64::new(0),
            refused_wait: AtomicU64::new(0),
            failed_waiting: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            waiting: AtomicI64::new(0),
            latency_ewma_us: AtomicU64::new(0),
            ttft_ewma_us: AtomicU64::new(0),
            consecutive_failures: AtomicU64::new(0),
        }
    }
}

/// Weight of the newest sample in the moving averages.
const EWMA_WEIGHT: f64 = 0.2;

/// Latency and health as this shard has seen them since the actor last (re)started.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Health {
    /// Moving average of the whole exchange, microseconds (0 before the first sample).
    pub latency_us: f64,
    /// Moving average of the time to the first byte of the answer's body, microseconds.
    pub ttft_us: f64,
    pub consecutive_failures: u32,
    pub served: u64,
}

impl Health {
    fn observe(&mut self, latency: Duration, ttft: Option<Duration>, ok: bool) {
        let ewma = |avg: f64, sample: Duration| {
            let s = sample.as_secs_f64() * 1e6;
            if avg == 0.0 { s } else { avg + EWMA_WEIGHT * (s - avg) }
        };
        self.latency_us = ewma(self.latency_us, latency);
        if let Some(t) = ttft {
            self.ttft_us = ewma(self.ttft_us, t);
        }
        self.consecutive_failures = if ok { 0 } else { self.consecutive_failures.saturating_add(1) };
        self.served += 1;
    }
}

/// A request's turn in an actor: counted in flight, and its mailbox slot held, until dropped.
pub struct Admitted<'a> {
    _counted: crate::metrics::GaugeUnit<'a>,
    _turn: super::mailbox::Turn,
}

struct Supervision {
    restarts: u64,
    last_restart: Option<Instant>,
    backoff: Duration,
    /// Requests are refused until then.
    down_until: Option<Instant>,
}

/// One target's actor on one shard.
pub struct TargetActor {
    name: Arc<str>,
    pool_key: Option<Arc<str>>,
    mailbox: Mailbox,
    limits: Cell<ActorLimits>,
    policy: Cell<RestartPolicy>,
    health: RefCell<Health>,
    supervision: RefCell<Supervision>,
    metrics: Arc<TargetMetrics>,
}

impl TargetActor {
    fn new(
        name: Arc<str>,
        shard: usize,
        pool_key: Option<Arc<str>>,
        limits: ActorLimits,
        policy: RestartPolicy,
    ) -> Self {
        TargetActor {
            metrics: Arc::new(TargetMetrics::new(name.clone(), shard)),
            name,
            pool_key,
            mailbox: Mailbox::new(limits.max_in_flight, limits.mailbox),
            limits: Cell::new(limits),
            policy: Cell::new(policy),
            health: RefCell::new(Health::default()),
            supervision: RefCell::new(Supervision {
                restarts: 0,
                last_restart: None,
                backoff: Duration::ZERO,
                down_until: None,
            }),
        }
    }

    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    pub fn health(&self) -> Health {
        *self.health.borrow()
    }

    pub fn restarts(&self) -> u64 {
        self.supervision.borrow().restarts
    }

    pub fn metrics(&self) -> &Arc<TargetMetrics> {
        &self.metrics
    }

    fn configure(&self, limits: ActorLimits, policy: RestartPolicy) {
        if self.limits.get() != limits {
            self.limits.set(limits);
            self.mailbox.set_limits(limits.max_in_flight, limits.mailbox);
        }
        self.policy.set(policy);
    }

    /// Runs `work` as one of this actor's requests: after a turn from the mailbox, with a panic
    /// caught and answered by a restart. `work` does not start before its turn.
    pub fn serve<'s, F: Future + 's>(
        &'s self,
        pool: &'s Pool,
        work: F,
    ) -> impl Future<Output = Served<F::Output>> + 's {
        // The panic guard is put around `work` before the future that waits for the turn takes
        // it: `work` is the request's whole state, and an `async fn` taking it would hold it
        // twice (its argument, and what it awaits).
        let guarded = AssertUnwindSafe(work).catch_unwind();
        async move {
            let admitted = match self.admit().await {
                Ok(a) => a,
                Err(refusal) => return Served::Refused(refusal),
            };
            let outcome = guarded.await;
            let served = self.concluded(pool, outcome);
            drop(admitted);
            served
        }
    }

    /// Takes a turn from the mailbox (waiting for one within `max_wait`): the request counts as
    /// in flight until the [`Admitted`] is dropped. For work done in several steps (a hedged
    /// attempt fetches, then relays if it wins), each under [`TargetActor::supervise`].
    pub async fn admit(&self) -> Result<Admitted<'_>, Refusal> {
        if let Some(retry_after) = self.down_for(Instant::now()) {
            self.metrics.refused_restarting.fetch_add(1, Relaxed);
            return Err(Refusal::Restarting { retry_after });
        }
        let enter = self.mailbox.enter();
        let queued = !enter.is_immediate();
        if queued {
            self.metrics.waiting.store(count(self.mailbox.waiting()), Relaxed);
        }
        let turn = match self.limits.get().max_wait {
            Some(limit) if queued => match crate::rt::timeout(limit, enter).await {
                Ok(t) => t,
                Err(crate::rt::Elapsed) => {
                    self.metrics.refused_wait.fetch_add(1, Relaxed);
                    self.metrics.waiting.store(count(self.mailbox.waiting()), Relaxed);
                    return Err(Refusal::WaitedTooLong { waited: limit });
                }
            },
            _ => enter.await,
        };
        if queued {
            self.metrics.waiting.store(count(self.mailbox.waiting()), Relaxed);
        }
        let turn = match turn {
            Ok(t) => t,
            Err(Refused::Full { capacity }) => {
                self.metrics.refused_full.fetch_add(1, Relaxed);
                return Err(Refusal::MailboxFull { waiting: capacity });
            }
            Err(Refused::Restarted) => return Err(Refusal::RestartedWhileWaiting),
        };
        let counted = crate::metrics::GaugeUnit::enter(&self.metrics.in_flight);
        Ok(Admitted { _counted: counted, _turn: turn })
    }

    /// Runs `work` for an admitted request, catching a panic: the actor restarts (before the
    /// turn is given back: it must not pass to a waiter the restart fails).
    pub async fn supervise<F: Future>(&self, pool: &Pool, _admitted: &Admitted<'_>, work: F) -> Served<F::Output> {
        let outcome = AssertUnwindSafe(work).catch_unwind().await;
        self.concluded(pool, outcome)
    }

    /// A panic restarts the actor (while the caller still holds the turn).
    fn concluded<T>(&self, pool: &Pool, outcome: Result<T, Box<dyn Any + Send>>) -> Served<T> {
        match outcome {
            Ok(v) => Served::Done(v),
            Err(payload) => {
                let message = panic_message(payload.as_ref());
                self.restart(pool, &message);
                Served::Panicked(message)
            }
        }
    }

    /// Records how a served request went (the caller knows what counts as a failure).
    pub fn observe(&self, latency: Duration, ttft: Option<Duration>, ok: bool) {
        let mut h = self.health.borrow_mut();
        h.observe(latency, ttft, ok);
        self.metrics.latency_ewma_us.store(h.latency_us as u64, Relaxed);
        self.metrics.ttft_ewma_us.store(h.ttft_us as u64, Relaxed);
        self.metrics.consecutive_failures.store(u64::from(h.consecutive_failures), Relaxed);
    }

    /// Time left before the actor takes requests again, if it is down.
    fn down_for(&self, now: Instant) -> Option<Duration> {
        let s = self.supervision.borrow();
        s.down_until.and_then(|until| until.checked_duration_since(now)).filter(|d| !d.is_zero())
    }

    /// The supervisor's answer to a panic.
    fn restart(&self, pool: &Pool, message: &str) {
        let now = Instant::now();
        let policy = self.policy.get();
        let backoff = {
            let mut s = self.supervision.borrow_mut();
            let recent = s.last_restart.is_some_and(|t| now.duration_since(t) < policy.quiet);
            s.backoff = if recent { (s.backoff * 2).clamp(policy.initial, policy.max) } else { policy.initial };
            s.restarts += 1;
            s.last_restart = Some(now);
            s.down_until = Some(now + s.backoff);
            s.backoff
        };
        let failed = self.mailbox.fail_waiting();
        if let Some(key) = &self.pool_key {
            pool.clear_target(key);
        }
        *self.health.borrow_mut() = Health::default();
        self.metrics.restarts.fetch_add(1, Relaxed);
        self.metrics.failed_waiting.fetch_add(count_u64(failed), Relaxed);
        self.metrics.waiting.store(0, Relaxed);
        tracing::error!(
            target_name = %self.name,
            shard = self.metrics.shard,
            panic = message,
            failed_waiting = failed,
            backoff_ms = backoff.as_millis() as u64,
            "target actor panicked; restarted"
        );
    }
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn count_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// The actors of one shard, one per target, made on first use.
#[derive(Default)]
pub struct Targets {
    actors: RefCell<HashMap<Arc<str>, Rc<TargetActor>>>,
    /// Every actor's metrics, read by `/metrics` from another thread. Appended to (rarely: an
    /// actor's first request on this shard) by copy-and-swap, so readers never lock.
    published: Arc<arc_swap::ArcSwap<Vec<Arc<TargetMetrics>>>>,
}

impl Targets {
    pub fn new(published: Arc<arc_swap::ArcSwap<Vec<Arc<TargetMetrics>>>>) -> Self {
        Targets { actors: RefCell::default(), published }
    }

    /// The actor of `name`, made now if this shard has none; its limits follow the config.
    pub fn actor(
        &self,
        shard: usize,
        name: &Arc<str>,
        pool_key: Option<&Arc<str>>,
        limits: ActorLimits,
        policy: RestartPolicy,
    ) -> Rc<TargetActor> {
        if let Some(a) = self.actors.borrow().get(name)
            && a.pool_key.as_ref() == pool_key
        {
            a.configure(limits, policy);
            return a.clone();
        }
        // New, or the provider now points elsewhere (a reload): a fresh actor, whose metrics
        // replace the old ones.
        let actor = Rc::new(TargetActor::new(name.clone(), shard, pool_key.cloned(), limits, policy));
        self.actors.borrow_mut().insert(name.clone(), actor.clone());
        let m = actor.metrics.clone();
        self.published.rcu(|list| {
            let mut next: Vec<Arc<TargetMetrics>> = list.iter().filter(|x| x.target != m.target).cloned().collect();
            next.push(m.clone());
            next
        });
        actor
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::task::{Context, Poll, Waker};

    use super::*;

    fn limits(max_in_flight: usize, mailbox: usize) -> ActorLimits {
        ActorLimits { max_in_flight, mailbox, max_wait: None }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }

    fn quiet_panics<T>(f: impl FnOnce() -> T) -> T {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let out = f();
        std::panic::set_hook(hook);
        out
    }

    #[test]
    fn a_panic_restarts_the_actor_with_doubling_backoff() {
        let targets = Targets::default();
        let policy = RestartPolicy {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(50),
            quiet: Duration::from_secs(60),
        };
        let a = targets.actor(0, &Arc::from("t"), None, limits(4, 4), policy);
        let pool = Pool::default();
        a.observe(Duration::from_millis(5), Some(Duration::from_millis(1)), true);
        let served = quiet_panics(|| block_on(a.serve(&pool, async { panic!("adapter bug") })));
        assert!(matches!(&served, Served::<()>::Panicked(m) if m == "adapter bug"));
        assert_eq!(a.restarts(), 1);
        assert_eq!(a.health(), Health::default(), "a restart forgets what the failed actor knew");
        let Served::Refused(Refusal::Restarting { retry_after }) = block_on(a.serve(&pool, async {})) else {
            panic!("refused while it restarts")
        };
        assert!(retry_after <= Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(25));
        assert!(matches!(block_on(a.serve(&pool, async { 7 })), Served::Done(7)));
        // A second panic soon after doubles the wait.
        let _ = quiet_panics(|| block_on(a.serve(&pool, async { panic!("again") })));
        let Served::Refused(Refusal::Restarting { retry_after }) = block_on(a.serve(&pool, async {})) else {
            panic!("refused while it restarts")
        };
        assert!(retry_after > Duration::from_millis(20) && retry_after <= Duration::from_millis(40));
        assert_eq!(a.metrics().restarts.load(Relaxed), 2);
        assert_eq!(a.metrics().refused_restarting.load(Relaxed), 2);
    }

    /// Pending until `open` is set.
    async fn gate(open: &Cell<bool>) {
        std::future::poll_fn(|_| if open.get() { Poll::Ready(()) } else { Poll::Pending }).await
    }

    #[test]
    fn a_restart_fails_the_waiters_before_the_turn_is_given_back() {
        let targets = Targets::default();
        let a = targets.actor(0, &Arc::from("t"), None, limits(1, 4), RestartPolicy::default());
        let pool = Pool::default();
        let open = Cell::new(false);
        let mut cx = Context::from_waker(Waker::noop());
        let mut holder = std::pin::pin!(a.serve(&pool, async {
            gate(&open).await;
            panic!("adapter bug")
        }));
        assert!(holder.as_mut().poll(&mut cx).is_pending());
        let mut waiter = std::pin::pin!(a.serve(&pool, async { "must not run" }));
        assert!(waiter.as_mut().poll(&mut cx).is_pending());
        open.set(true);
        let Poll::Ready(Served::Panicked(_)) = quiet_panics(|| holder.as_mut().poll(&mut cx)) else {
            panic!("the holder's panic is caught")
        };
        let Poll::Ready(Served::Refused(Refusal::RestartedWhileWaiting)) = waiter.as_mut().poll(&mut cx) else {
            panic!("the waiter is failed, not served by the restarted actor")
        };
        assert_eq!(a.metrics().failed_waiting.load(Relaxed), 1);
    }

    #[test]
    fn the_actor_is_kept_and_follows_its_limits() {
        let targets = Targets::default();
        let name: Arc<str> = Arc::from("t");
        let a = targets.actor(0, &name, None, limits(1, 0), RestartPolicy::default());
        let b = targets.actor(0, &name, None, limits(2, 0), RestartPolicy::default());
        assert!(Rc::ptr_eq(&a, &b));
        assert_eq!(a.limits.get(), limits(2, 0));
        let key: Arc<str> = Arc::from("https://elsewhere:443");
        let c = targets.actor(0, &name, Some(&key), limits(2, 0), RestartPolicy::default());
        assert!(!Rc::ptr_eq(&a, &c), "a target that moved gets a fresh actor");
        assert_eq!(targets.published.load().len(), 1, "its metrics replace the old actor's");
    }

    #[test]
    fn a_full_mailbox_refuses() {
        let targets = Targets::default();
        let a = targets.actor(0, &Arc::from("t"), None, limits(1, 0), RestartPolicy::default());
        let pool = Pool::default();
        let inside = Cell::new(false);
        let refused = block_on(a.serve(&pool, async {
            inside.set(true);
            // While this request holds the only turn, another finds no room.
            block_on(a.serve(&pool, async {}))
        }));
        assert!(inside.get());
        assert!(matches!(refused, Served::Done(Served::Refused(Refusal::MailboxFull { waiting: 0 }))));
        assert_eq!(a.metrics().refused_full.load(Relaxed), 1);
    }

    #[test]
    fn a_request_dropped_mid_way_is_no_longer_counted() {
        let targets = Targets::default();
        let a = targets.actor(0, &Arc::from("t"), None, limits(1, 4), RestartPolicy::default());
        let pool = Pool::default();
        let open = Cell::new(false);
        let mut cx = Context::from_waker(Waker::noop());
        {
            let mut pending = std::pin::pin!(a.serve(&pool, gate(&open)));
            assert!(pending.as_mut().poll(&mut cx).is_pending());
            assert_eq!(a.metrics().in_flight.load(Relaxed), 1);
        }
        assert_eq!(a.metrics().in_flight.load(Relaxed), 0);
        assert_eq!(a.mailbox.running(), 0, "its turn was given back too");
    }

    #[test]
    fn health_averages_and_counts_failures() {
        let mut h = Health::default();
        h.observe(Duration::from_millis(10), Some(Duration::from_millis(2)), true);
        assert_eq!((h.latency_us, h.ttft_us), (10_000.0, 2_000.0));
        h.observe(Duration::from_millis(20), None, false);
        assert!((h.latency_us - 12_000.0).abs() < 1e-6);
        assert_eq!(h.ttft_us, 2_000.0);
        h.observe(Duration::from_millis(20), None, false);
        assert_eq!(h.consecutive_failures, 2);
        h.observe(Duration::from_millis(20), None, true);
        assert_eq!(h.consecutive_failures, 0);
        assert_eq!(h.served, 4);
    }
}
