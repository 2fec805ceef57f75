//! Running a plan: one thread and runtime per worker (thread-per-core, like the gateway), each
//! with its own connections, schedule and recorder; nothing shared but the clock and a counter.
//!
//! **Open loop.** Each worker owns `rate / workers` of the arrival schedule (constant spacing or
//! Poisson). A request is due at its *intended* time whether or not an earlier one came back;
//! if every connection is busy it waits for one, and that wait counts in its latency. Latency is
//! measured from the intended time, so a stalled server cannot hide behind a stalled client
//! (coordinated omission). Requests are released by a ticker thread that sleeps to each intended
//! time (see [`crate::ticker`]); how late they still leave is measured (`schedule_lag`), and
//! `service` (from the first byte written) is reported beside `latency`.
//!
//! **Closed loop.** `connections` loops, each sending its next request when the previous one is
//! answered: the maximum throughput a fixed concurrency gets.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use adapters::openai::usage::UsageReader;
use bytes::{Buf, BytesMut};
use engine::rt::{self, Conn, DriverKind, LocalEvent, TcpStream};
use engine::tls::TlsStream;
use engine::upstream::connect::UpstreamConn;
use engine::upstream::pool::{Checkout, Pool, PoolLimits, PooledConn, Reservation};

use crate::exchange::exchange;
use crate::mix::Mix;
use crate::recorder::{ErrorKind, Recorder, record};
use crate::report::Report;
use crate::target::Target;
use crate::ticker::{self, Schedule};

/// How requests are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// A fixed arrival rate (requests per second), spaced evenly or as a Poisson process, over at
    /// most `max_connections`.
    Open { rate: f64, poisson: bool, max_connections: usize },
    /// `connections` loops as fast as answers come back.
    Closed { connections: usize },
}

/// A whole run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub target: Target,
    pub mix: Mix,
    pub mode: Mode,
    /// Measured time, after the warm-up.
    pub duration: Duration,
    /// Excluded from the results.
    pub warmup: Duration,
    /// Stop after this many requests (warm-up included).
    pub max_requests: Option<u64>,
    pub workers: usize,
    /// Pin worker `i` to `cores[i % len]` (empty: no pinning).
    pub cores: Vec<usize>,
    pub driver: DriverKind,
    /// Per request, from its first byte written.
    pub timeout: Duration,
    /// Open loop: requests due but not yet answered, per worker, beyond which new ones are
    /// skipped (and counted) rather than queued without bound.
    pub max_in_flight: usize,
}

struct Clock {
    start: Instant,
    warmup_end: Instant,
    end: Instant,
    sent: AtomicU64,
    max_requests: u64,
}

impl Clock {
    /// Claims the next request number; `false` once the count cap is reached.
    fn claim(&self) -> bool {
        self.sent.fetch_add(1, Relaxed) < self.max_requests
    }
}

/// Runs the plan and returns the merged report.
pub fn run(plan: &Plan) -> Result<Report, String> {
    let workers = plan.workers.max(1);
    let start = Instant::now() + Duration::from_millis(50);
    let clock = Arc::new(Clock {
        start,
        warmup_end: start + plan.warmup,
        end: start + plan.warmup + plan.duration,
        sent: AtomicU64::new(0),
        max_requests: plan.max_requests.unwrap_or(u64::MAX),
    });
    let mut handles = Vec::with_capacity(workers);
    for id in 0..workers {
        let plan = plan.clone();
        let clock = clock.clone();
        let core = (!plan.cores.is_empty()).then(|| plan.cores[id % plan.cores.len()]);
        let handle = std::thread::Builder::new()
            .name(format!("loadgen-{id}"))
            .spawn(move || {
                rt::run_shard_runtime(rt::Backend::Monoio(plan.driver), core, 4096, || {
                    worker(id, workers, core, plan.clone(), clock.clone())
                })
            })
            .map_err(|e| format!("cannot start worker {id}: {e}"))?;
        handles.push(handle);
    }
    let mut merged = Recorder::default();
    for h in handles {
        match h.join() {
            Ok(Ok(rec)) => merged.merge(&rec),
            Ok(Err(e)) => return Err(format!("worker runtime failed: {e}")),
            Err(_) => return Err("a worker panicked".into()),
        }
    }
    Ok(Report::new(plan, &merged))
}

/// Per-worker state shared by its tasks.
struct Worker {
    plan: Plan,
    clock: Arc<Clock>,
    pool: Pool,
    pool_key: Arc<str>,
    limits: PoolLimits,
    rec: RefCell<Recorder>,
    /// Scratch for reading usage, one per concurrent exchange, reused.
    usage: RefCell<Vec<UsageReader>>,
    in_flight: Cell<usize>,
    rng: RefCell<fastrand::Rng>,
    /// Set when the run is over: requests still waiting give up. (monoio never drops tasks that
    /// are parked when its runtime ends, so every task must finish for its sockets to close.)
    stop: LocalEvent,
}

async fn worker(id: usize, workers: usize, core: Option<usize>, plan: Plan, clock: Arc<Clock>) -> Recorder {
    let connections = match plan.mode {
        Mode::Open { max_connections, .. } => share(max_connections, id, workers),
        Mode::Closed { connections } => share(connections, id, workers),
    };
    let w = Rc::new(Worker {
        limits: PoolLimits { max_connections: connections.max(1), idle_timeout: Duration::from_secs(3600) },
        plan,
        clock,
        pool: Pool::default(),
        pool_key: Arc::from("target"),
        rec: RefCell::new(Recorder::default()),
        usage: RefCell::new(Vec::new()),
        in_flight: Cell::new(0),
        rng: RefCell::new(fastrand::Rng::with_seed(0x5eed + id as u64)),
        stop: LocalEvent::new(),
    });
    match w.plan.mode {
        Mode::Open { rate, poisson, .. } => {
            if let Err(e) = open_loop(&w, id, workers, core, rate, poisson).await {
                tracing::error!(worker = id, error = %e, "open loop failed");
            }
        }
        Mode::Closed { .. } => {
            rt::sleep_until(w.clock.start).await;
            closed_loop(&w, connections).await
        }
    }
    w.rec.replace(Recorder::default())
}

/// The `id`-th of `n` shares of `total` (the first ones get the remainder).
fn share(total: usize, id: usize, n: usize) -> usize {
    total / n + usize::from(id < total % n)
}

async fn open_loop(
    w: &Rc<Worker>,
    id: usize,
    workers: usize,
    core: Option<usize>,
    rate: f64,
    poisson: bool,
) -> std::io::Result<()> {
    let per_worker = (rate / workers as f64).max(f64::MIN_POSITIVE);
    let interval = Duration::from_secs_f64(1.0 / per_worker);
    // Workers are staggered so their schedules interleave instead of firing together.
    let schedule = Schedule {
        start: w.clock.start,
        first: w.clock.start + interval.mul_f64(id as f64 / workers as f64),
        end: w.clock.end,
        interval,
        poisson,
        seed: 0x7ac0 + id as u64,
    };
    let (socket, ticker) = ticker::start(schedule, core)?;
    socket.set_nonblocking(true)?;
    let mut due = rt::UnixStream::from_std(socket)?;
    let mut buf = BytesMut::with_capacity(8 * 1024);
    'schedule: loop {
        let (res, b) = due.read(buf).await;
        buf = b;
        if res? == 0 {
            break;
        }
        while buf.len() >= 8 {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(&buf[..8]);
            buf.advance(8);
            let intended = w.clock.start + Duration::from_nanos(u64::from_le_bytes(raw));
            if !w.clock.claim() {
                break 'schedule;
            }
            if w.in_flight.get() >= w.plan.max_in_flight {
                if intended >= w.clock.warmup_end {
                    w.rec.borrow_mut().error(ErrorKind::Skipped);
                }
                continue;
            }
            w.in_flight.set(w.in_flight.get() + 1);
            let task = w.clone();
            rt::spawn(async move {
                one_request(&task, intended, Instant::now()).await;
                task.in_flight.set(task.in_flight.get() - 1);
            });
        }
    }
    drop(due);
    drop(ticker);
    // Let what was sent finish (bounded by the request timeout), then stop the rest.
    let drain_until = Instant::now() + w.plan.timeout + Duration::from_millis(100);
    while w.in_flight.get() > 0 && Instant::now() < drain_until {
        rt::sleep(Duration::from_millis(1)).await;
    }
    stop_all(w, || w.in_flight.get() == 0).await;
    Ok(())
}

/// Tells every request task to give up, waits until `done`, and closes idle connections.
async fn stop_all(w: &Worker, done: impl Fn() -> bool) {
    w.stop.set();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() && Instant::now() < deadline {
        rt::sleep(Duration::from_millis(1)).await;
    }
    w.pool.clear();
}

async fn closed_loop(w: &Rc<Worker>, connections: usize) {
    let done = Rc::new(Cell::new(0usize));
    for _ in 0..connections {
        let (task, done) = (w.clone(), done.clone());
        rt::spawn(async move {
            while Instant::now() < task.clock.end && task.clock.claim() {
                let now = Instant::now();
                one_request(&task, now, now).await;
            }
            done.set(done.get() + 1);
        });
    }
    // Each loop ends after its current request; one stuck past the timeout is stopped.
    let drain_until = w.clock.end + w.plan.timeout + Duration::from_millis(100);
    while done.get() < connections && Instant::now() < drain_until {
        rt::sleep(Duration::from_millis(1)).await;
    }
    stop_all(w, || done.get() == connections).await;
}

/// Sends one request due at `intended`, dispatched at `dispatched`, and records it; gives up
/// when the run stops.
async fn one_request(w: &Worker, intended: Instant, dispatched: Instant) {
    let _ = rt::unless(&w.stop, request(w, intended, dispatched)).await;
}

async fn request(w: &Worker, intended: Instant, dispatched: Instant) {
    let measured = intended >= w.clock.warmup_end && intended < w.clock.end;
    let template = {
        let mut rng = w.rng.borrow_mut();
        w.plan.mix.pick(&mut rng).clone()
    };
    {
        let mut rec = w.rec.borrow_mut();
        rec.sent += 1;
        if measured {
            record(&mut rec.schedule_lag, dispatched.saturating_duration_since(intended));
        } else {
            rec.warmup_requests += 1;
        }
    }
    let mut conn = match checkout(w).await {
        Ok(c) => c,
        Err(kind) => {
            if measured {
                w.rec.borrow_mut().error(kind);
            }
            return;
        }
    };
    let mut usage = w.usage.borrow_mut().pop().unwrap_or_default();
    let result =
        exchange(&mut conn.conn, &mut conn.buf, &template, &mut usage, measured.then_some(&w.rec), w.plan.timeout)
            .await;
    w.usage.borrow_mut().push(usage);
    let end = Instant::now();
    let mut rec = w.rec.borrow_mut();
    match result {
        Ok(done) => {
            if measured {
                record(&mut rec.latency, end.saturating_duration_since(intended));
            }
            if done.reusable {
                w.pool.release(conn);
            }
        }
        Err(kind) => {
            if measured {
                rec.error(kind);
            }
        }
    }
}

/// A pooled connection, or a new one within the worker's connection budget.
async fn checkout(w: &Worker) -> Result<PooledConn, ErrorKind> {
    match w.pool.checkout(&w.pool_key, w.limits).await {
        Checkout::Idle(c) => Ok(c),
        // Connecting (and the TLS handshake) is the rare path with a large state: boxed.
        Checkout::New(r) => Box::pin(connect(w, r)).await,
    }
}

async fn connect(w: &Worker, reservation: Reservation) -> Result<PooledConn, ErrorKind> {
    let target = &w.plan.target;
    let addr = target.addrs[0];
    let tcp = match rt::timeout(w.plan.timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(_)) => return Err(ErrorKind::Connect),
        Err(_) => return Err(ErrorKind::Timeout),
    };
    let _ = tcp.set_nodelay(true);
    let conn = match &target.tls {
        None => UpstreamConn::Plain(tcp),
        Some((cfg, name)) => {
            match rt::timeout(w.plan.timeout, TlsStream::connect(tcp, cfg.clone(), name.clone())).await {
                Ok(Ok(s)) => UpstreamConn::Tls(Box::new(s)),
                Ok(Err(_)) => return Err(ErrorKind::Tls),
                Err(_) => return Err(ErrorKind::Timeout),
            }
        }
    };
    Ok(reservation.into_conn(conn))
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn shares_add_up() {
        for total in [0, 1, 7, 64, 1000] {
            for n in 1..5 {
                assert_eq!((0..n).map(|i| share(total, i, n)).sum::<usize>(), total);
            }
        }
    }
}
