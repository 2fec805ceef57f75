//! Releasing open-loop requests on time. The runtime's timer wheel ticks every millisecond, so
//! requests timed by it would leave in bursts up to a millisecond late; at 5k req/s that puts
//! five requests in one burst and queues them inside the system under test, which is exactly
//! the added latency a benchmark must not invent. A plain thread per worker sleeps to each
//! request's intended time instead (with its timer slack lowered to 1 ns) and hands the time to
//! the worker over a Unix socket, which the worker's runtime polls like any other socket.
//!
//! Each record is the intended time as nanoseconds since the run's start (8 bytes, little
//! endian). If the worker falls behind, the socket buffer fills and the ticker waits: times are
//! never lost, only late, and the lateness shows in `schedule_lag`.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// An arrival schedule.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Run start; offsets are measured from here.
    pub start: Instant,
    /// First intended time.
    pub first: Instant,
    /// Nothing at or after this.
    pub end: Instant,
    /// Mean spacing.
    pub interval: Duration,
    pub poisson: bool,
    pub seed: u64,
}

/// Starts the ticker thread; returns the worker's end of the socket.
pub fn start(schedule: Schedule, core: Option<usize>) -> std::io::Result<(UnixStream, JoinHandle<()>)> {
    let (worker_end, mut ticker_end) = UnixStream::pair()?;
    let handle = std::thread::Builder::new().name("loadgen-ticker".into()).spawn(move || {
        if let Some(c) = core {
            core_affinity::set_for_current(core_affinity::CoreId { id: c });
        }
        crate::sys::tighten_timer_slack();
        let mut rng = fastrand::Rng::with_seed(schedule.seed);
        let mut next = schedule.first;
        let mut batch = Vec::with_capacity(64 * 8);
        while next < schedule.end {
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
            // Everything due by now goes in one write.
            let now = Instant::now();
            while next <= now && next < schedule.end {
                let offset = u64::try_from(next.duration_since(schedule.start).as_nanos()).unwrap_or(u64::MAX);
                batch.extend_from_slice(&offset.to_le_bytes());
                let gap = if schedule.poisson {
                    schedule.interval.mul_f64(-(1.0 - rng.f64()).ln())
                } else {
                    schedule.interval
                };
                next += gap.max(Duration::from_nanos(1));
            }
            if ticker_end.write_all(&batch).is_err() {
                return; // The worker is gone.
            }
            batch.clear();
        }
        // Dropping the socket tells the worker the schedule is over.
    })?;
    Ok((worker_end, handle))
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn offsets(schedule: Schedule) -> Vec<u64> {
        let (mut rx, handle) = start(schedule, None).unwrap();
        let mut bytes = Vec::new();
        rx.read_to_end(&mut bytes).unwrap();
        handle.join().unwrap();
        bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect()
    }

    #[test]
    fn constant_schedule_is_exact_and_bounded() {
        let start = Instant::now();
        let s = Schedule {
            start,
            first: start + Duration::from_millis(1),
            end: start + Duration::from_millis(21),
            interval: Duration::from_millis(1),
            poisson: false,
            seed: 1,
        };
        let got = offsets(s);
        assert_eq!(got.len(), 20);
        for (i, o) in got.iter().enumerate() {
            assert_eq!(*o, (i as u64 + 1) * 1_000_000);
        }
    }

    #[test]
    fn poisson_schedule_has_the_right_mean() {
        let start = Instant::now();
        let s = Schedule {
            start,
            first: start,
            end: start + Duration::from_millis(300),
            interval: Duration::from_micros(100),
            poisson: true,
            seed: 42,
        };
        let n = offsets(s).len() as f64;
        // 3000 expected; a Poisson count's deviation is ~55.
        assert!((2750.0..3250.0).contains(&n), "{n}");
    }
}
