//! What one worker measured: HDR histograms for every latency (microseconds) and counters by
//! status and error kind. Workers record without sharing anything; the run merges them.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest recordable latency: one hour, in microseconds.
const MAX_US: u64 = 3_600_000_000;

/// Three significant digits over 1µs..1h.
#[allow(clippy::expect_used)] // Constant, valid bounds: hdrhistogram rejects only invalid ones.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("constant histogram bounds are valid")
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(MAX_US).clamp(1, MAX_US)
}

/// Why a request failed (a stable label each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorKind {
    Connect,
    Tls,
    Timeout,
    /// The connection broke (reset, closed early).
    Io,
    /// The answer was not valid HTTP.
    Protocol,
    /// Open loop: more requests were due than `max_in_flight` allowed; not sent.
    Skipped,
}

impl ErrorKind {
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Tls => "tls",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Io => "io",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Skipped => "skipped",
        }
    }
}

/// One worker's measurements.
pub struct Recorder {
    /// From the intended send time to the last byte (coordinated-omission free).
    pub latency: Histogram<u64>,
    /// From the first byte written to the last byte read.
    pub service: Histogram<u64>,
    /// From the first byte written to the response head.
    pub ttfb: Histogram<u64>,
    /// Streams: from the first byte written to the first token event.
    pub ttft: Histogram<u64>,
    /// Streams: between consecutive token events.
    pub itl: Histogram<u64>,
    /// How late requests left against their intended time (the load generator's own health).
    pub schedule_lag: Histogram<u64>,
    /// Streams: output tokens per second after the first token.
    pub stream_tokens_per_sec: Histogram<u64>,
    pub statuses: BTreeMap<u16, u64>,
    pub errors: BTreeMap<ErrorKind, u64>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub bytes_received: u64,
    /// Requests sent (measured or not).
    pub sent: u64,
    /// Requests whose intended time fell in the warm-up.
    pub warmup_requests: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            latency: histogram(),
            service: histogram(),
            ttfb: histogram(),
            ttft: histogram(),
            itl: histogram(),
            schedule_lag: histogram(),
            stream_tokens_per_sec: histogram(),
            statuses: BTreeMap::new(),
            errors: BTreeMap::new(),
            prompt_tokens: 0,
            completion_tokens: 0,
            bytes_received: 0,
            sent: 0,
            warmup_requests: 0,
        }
    }
}

/// Records a duration into a histogram, saturating instead of failing.
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let _ = h.record(us(d));
}

impl Recorder {
    pub fn error(&mut self, kind: ErrorKind) {
        *self.errors.entry(kind).or_default() += 1;
    }

    pub fn status(&mut self, status: u16) {
        *self.statuses.entry(status).or_default() += 1;
    }

    /// Requests answered (any status).
    pub fn completed(&self) -> u64 {
        self.statuses.values().sum()
    }

    /// Requests answered 2xx.
    pub fn ok(&self) -> u64 {
        self.statuses.range(200..300).map(|(_, n)| n).sum()
    }

    pub fn merge(&mut self, other: &Recorder) {
        for (mine, theirs) in [
            (&mut self.latency, &other.latency),
            (&mut self.service, &other.service),
            (&mut self.ttfb, &other.ttfb),
            (&mut self.ttft, &other.ttft),
            (&mut self.itl, &other.itl),
            (&mut self.schedule_lag, &other.schedule_lag),
            (&mut self.stream_tokens_per_sec, &other.stream_tokens_per_sec),
        ] {
            let _ = mine.add(theirs);
        }
        for (k, v) in &other.statuses {
            *self.statuses.entry(*k).or_default() += v;
        }
        for (k, v) in &other.errors {
            *self.errors.entry(*k).or_default() += v;
        }
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.bytes_received += other.bytes_received;
        self.sent += other.sent;
        self.warmup_requests += other.warmup_requests;
    }
}

/// A histogram summarised for reports: microseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Distribution {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub stdev: f64,
    pub max: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub p99_99: u64,
    /// `[percentile, value]` pairs at HDR's quantile iteration steps (the full spectrum).
    pub spectrum: Vec<(f64, u64)>,
}

impl Distribution {
    pub fn of(h: &Histogram<u64>) -> Option<Distribution> {
        if h.is_empty() {
            return None;
        }
        let spectrum =
            h.iter_quantiles(2).map(|v| (v.quantile_iterated_to() * 100.0, v.value_iterated_to())).collect::<Vec<_>>();
        Some(Distribution {
            count: h.len(),
            min: h.min(),
            mean: h.mean(),
            stdev: h.stdev(),
            max: h.max(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p99_9: h.value_at_quantile(0.999),
            p99_99: h.value_at_quantile(0.9999),
            spectrum,
        })
    }

    /// The value at a percentile (0-100) of the histogram this summarises, from the spectrum.
    pub fn at(&self, percentile: f64) -> u64 {
        self.spectrum.iter().find(|(p, _)| *p >= percentile).map_or(self.max, |(_, v)| *v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_and_summarise() {
        let mut a = Recorder::default();
        let mut b = Recorder::default();
        for i in 1..=100 {
            record(&mut a.latency, Duration::from_micros(i));
            record(&mut b.latency, Duration::from_micros(i + 100));
        }
        a.status(200);
        b.status(200);
        b.status(503);
        b.error(ErrorKind::Timeout);
        a.merge(&b);
        let d = Distribution::of(&a.latency).unwrap();
        assert_eq!(d.count, 200);
        assert_eq!((d.min, d.max), (1, 200));
        assert!((99..=101).contains(&d.p50), "{}", d.p50);
        assert!((197..=199).contains(&d.p99), "{}", d.p99);
        assert_eq!((a.completed(), a.ok()), (3, 2));
        assert_eq!(a.errors[&ErrorKind::Timeout], 1);
        assert!(Distribution::of(&Recorder::default().ttft).is_none());
        assert!(d.at(50.0) >= 99 && d.at(100.0) == 200);
    }
}
