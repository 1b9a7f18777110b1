//! Per-operation counts, reply sizes, errors and latency histograms of a measured window.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use messageu_protocol::Operation;

/// Latencies up to a minute are recorded exactly to 3 significant digits; longer ones saturate.
const HIGHEST_NANOS: u64 = 60_000_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

/// The span of time whose completions count; requests completing outside it are not recorded.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: Instant,
    pub end: Instant,
}

impl Window {
    pub fn contains(&self, instant: Instant) -> bool {
        instant >= self.start && instant < self.end
    }

    pub fn length(&self) -> Duration {
        self.end - self.start
    }
}

/// How a request failed, for the error breakdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The server replied 9000.
    Refused,
    /// A reply the request did not call for: wrong code, size or content.
    Malformed,
    /// No whole reply in time.
    Timeout,
    /// Connecting, writing or reading failed, or the server closed the connection early.
    Connection,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 4] = [
        ErrorKind::Refused,
        ErrorKind::Malformed,
        ErrorKind::Timeout,
        ErrorKind::Connection,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Refused => "9000",
            ErrorKind::Malformed => "malformed",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connection => "connection",
        }
    }
}

/// Latency percentiles of one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percentiles {
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
}

/// What one operation did in the window.
#[derive(Debug, Clone)]
pub struct OpStats {
    /// Successful replies completed in the window.
    pub completed: u64,
    /// Their total size, header included, unpadded.
    pub reply_bytes: u64,
    /// Failures at any time of the load phase, by [`ErrorKind`].
    pub errors: [u64; ErrorKind::ALL.len()],
    latency: Histogram<u64>,
}

impl Default for OpStats {
    fn default() -> Self {
        OpStats {
            completed: 0,
            reply_bytes: 0,
            errors: [0; ErrorKind::ALL.len()],
            latency: Histogram::new_with_bounds(1, HIGHEST_NANOS, SIGNIFICANT_DIGITS)
                .expect("constant histogram bounds are valid"),
        }
    }
}

impl OpStats {
    pub fn record(&mut self, latency: Duration, reply_len: usize) {
        self.completed += 1;
        self.reply_bytes += reply_len as u64;
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.latency.saturating_record(nanos.max(1));
    }

    pub fn error_count(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// The mean reply size, if any reply completed.
    pub fn mean_reply_len(&self) -> Option<usize> {
        (self.completed > 0)
            .then(|| (self.reply_bytes as f64 / self.completed as f64).round() as usize)
    }

    pub fn percentiles(&self) -> Option<Percentiles> {
        let at = |quantile| Duration::from_nanos(self.latency.value_at_quantile(quantile));
        (self.completed > 0).then(|| Percentiles {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            p999: at(0.999),
            max: Duration::from_nanos(self.latency.max()),
        })
    }

    fn merge(&mut self, other: &OpStats) {
        self.completed += other.completed;
        self.reply_bytes += other.reply_bytes;
        for (mine, theirs) in self.errors.iter_mut().zip(other.errors) {
            *mine += theirs;
        }
        self.latency
            .add(&other.latency)
            .expect("histograms with equal bounds always add");
    }
}

/// [`OpStats`] for every operation.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    ops: [OpStats; Operation::ALL.len()],
}

impl Stats {
    pub fn op(&self, operation: Operation) -> &OpStats {
        &self.ops[operation as usize]
    }

    pub fn op_mut(&mut self, operation: Operation) -> &mut OpStats {
        &mut self.ops[operation as usize]
    }

    pub fn completed(&self) -> u64 {
        self.ops.iter().map(|op| op.completed).sum()
    }

    pub fn merge(&mut self, other: &Stats) {
        for (mine, theirs) in self.ops.iter_mut().zip(&other.ops) {
            mine.merge(theirs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close_to(actual: Duration, expected_micros: u64) -> bool {
        let expected = expected_micros as f64 * 1000.0;
        (actual.as_nanos() as f64 - expected).abs() <= expected * 0.001
    }

    #[test]
    fn percentiles_of_a_uniform_spread_are_within_three_digits() {
        let mut stats = OpStats::default();
        for micros in 1..=10_000 {
            stats.record(Duration::from_micros(micros), 27);
        }
        let p = stats.percentiles().expect("recorded");
        assert!(close_to(p.p50, 5_000), "{p:?}");
        assert!(close_to(p.p90, 9_000), "{p:?}");
        assert!(close_to(p.p99, 9_900), "{p:?}");
        assert!(close_to(p.p999, 9_990), "{p:?}");
        assert!(close_to(p.max, 10_000), "{p:?}");
        assert_eq!(stats.mean_reply_len(), Some(27));
    }

    #[test]
    fn one_slow_request_in_a_thousand_shows_only_at_the_top() {
        let mut stats = OpStats::default();
        for _ in 0..999 {
            stats.record(Duration::from_micros(100), 0);
        }
        stats.record(Duration::from_secs(2), 0);
        let p = stats.percentiles().expect("recorded");
        assert!(close_to(p.p99, 100));
        assert!(close_to(p.p999, 100));
        assert!(close_to(p.max, 2_000_000));
    }

    #[test]
    fn latencies_beyond_the_range_saturate_instead_of_failing() {
        let mut stats = OpStats::default();
        stats.record(Duration::from_secs(3600), 0);
        stats.record(Duration::ZERO, 0);
        assert_eq!(stats.completed, 2);
        let p = stats.percentiles().expect("recorded");
        assert!(p.max >= Duration::from_secs(59));
    }

    #[test]
    fn merging_adds_counts_errors_and_histograms() {
        let mut one = Stats::default();
        one.op_mut(Operation::SendMessage)
            .record(Duration::from_micros(10), 27);
        one.op_mut(Operation::SendMessage).errors[ErrorKind::Timeout as usize] += 1;
        let mut other = Stats::default();
        other
            .op_mut(Operation::SendMessage)
            .record(Duration::from_micros(30), 27);
        other
            .op_mut(Operation::PullMessages)
            .record(Duration::from_micros(20), 7);
        one.merge(&other);
        assert_eq!(one.completed(), 3);
        assert_eq!(one.op(Operation::SendMessage).error_count(), 1);
        let send = one.op(Operation::SendMessage);
        assert!(close_to(send.percentiles().expect("recorded").max, 30));
        assert_eq!(send.mean_reply_len(), Some(27));
        assert_eq!(one.op(Operation::ListClients).percentiles(), None);
    }

    #[test]
    fn a_window_holds_its_start_but_not_its_end() {
        let start = Instant::now();
        let window = Window {
            start,
            end: start + Duration::from_secs(1),
        };
        assert!(window.contains(start));
        assert!(!window.contains(window.end));
        assert_eq!(window.length(), Duration::from_secs(1));
    }
}
