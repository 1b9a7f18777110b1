//! A latency histogram with fixed buckets, recorded with relaxed atomics: the event loop
//! observes without locks, and a reader on another thread sees each count whole.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in nanoseconds: 25 µs to 2.5 s, the range from a cached key
/// lookup to a flush on a busy disk.
pub const BOUNDS_NS: [u64; 16] = [
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
];

#[derive(Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last one is above every bound.
    buckets: [AtomicU64; BOUNDS_NS.len() + 1],
    sum_ns: AtomicU64,
}

/// What a reader sees: cumulative counts per bound, as the exposition format wants them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub cumulative: [u64; BOUNDS_NS.len()],
    pub count: u64,
    pub sum: Duration,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_NS.partition_point(|&bound| bound < ns);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Observations so far; cheaper than a snapshot.
    pub fn count(&self) -> u64 {
        self.buckets
            .iter()
            .map(|bucket| bucket.load(Ordering::Relaxed))
            .sum()
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut cumulative = [0; BOUNDS_NS.len()];
        let mut count = 0;
        for (index, bucket) in self.buckets.iter().enumerate() {
            count += bucket.load(Ordering::Relaxed);
            if let Some(slot) = cumulative.get_mut(index) {
                *slot = count;
            }
        }
        Snapshot {
            cumulative,
            count,
            sum: Duration::from_nanos(self.sum_ns.load(Ordering::Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(25)); // on a bound: that bucket
        histogram.observe(Duration::from_micros(26));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(60)); // above every bound
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.cumulative[0], 1);
        assert_eq!(snapshot.cumulative[1], 2);
        assert_eq!(snapshot.cumulative[6], 2);
        assert_eq!(snapshot.cumulative[7], 3);
        assert_eq!(snapshot.cumulative[BOUNDS_NS.len() - 1], 3);
        assert_eq!(snapshot.count, 4);
        assert_eq!(histogram.count(), 4);
        assert_eq!(
            snapshot.sum,
            Duration::from_micros(25 + 26 + 3000) + Duration::from_secs(60)
        );
    }
}
