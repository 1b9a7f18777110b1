//! Failed proofs, limited per id and per peer address (protocol §E3): after 5 failures for
//! one id from one address, or 20 from one address, within a minute, challenges for that id
//! from that address, or any from that address, are refused until a minute has passed since
//! the oldest of those failures. An id's failures are counted per address so that nobody can
//! lock its owner out by failing on purpose. Free of I/O and clocks: every call says what
//! time it is.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::protocol::ClientId;

/// How long a failure counts.
const WINDOW: Duration = Duration::from_secs(60);
/// Failures for one id from one address within the window that stop its challenges there.
const PER_ID: usize = 5;
/// Failures from one address within the window that stop its challenges.
const PER_ADDRESS: usize = 20;

/// Challenges are refused until `retry_after` from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    pub retry_after: Duration,
}

/// The failed proofs of the last minute, by id and by address.
#[derive(Debug, Default)]
pub struct ProofLimiter {
    /// By id and address: failures for an id from elsewhere do not stop its owner.
    by_id: Failures<(ClientId, IpAddr)>,
    by_address: Failures<IpAddr>,
}

impl ProofLimiter {
    /// Whether a challenge for `id` from `address` may be given at `now`.
    pub fn check(
        &mut self,
        id: ClientId,
        address: IpAddr,
        now: Instant,
    ) -> Result<(), RateLimited> {
        let wait = [
            self.by_id.wait(&(id, address), PER_ID, now),
            self.by_address.wait(&address, PER_ADDRESS, now),
        ];
        match wait.into_iter().flatten().max() {
            Some(retry_after) => Err(RateLimited { retry_after }),
            None => Ok(()),
        }
    }

    /// A proof for `id` from `address` failed at `now`.
    pub fn failed(&mut self, id: ClientId, address: IpAddr, now: Instant) {
        self.by_id.record((id, address), now);
        self.by_address.record(address, now);
    }
}

/// Failure times per key, oldest first, none older than the window once pruned.
#[derive(Debug)]
struct Failures<K> {
    times: HashMap<K, VecDeque<Instant>>,
    /// Keys at the last sweep of expired entries: sweeping again when the map has doubled
    /// since keeps the map within twice the keys of the last minute, at a constant cost per
    /// failure.
    swept_len: usize,
}

impl<K> Default for Failures<K> {
    fn default() -> Failures<K> {
        Failures {
            times: HashMap::new(),
            swept_len: 0,
        }
    }
}

impl<K: Eq + Hash> Failures<K> {
    /// How long until `key` has fewer than `limit` failures in the window; `None` if it has.
    fn wait(&mut self, key: &K, limit: usize, now: Instant) -> Option<Duration> {
        let times = self.times.get_mut(key)?;
        prune(times, now);
        if times.is_empty() {
            self.times.remove(key);
            return None;
        }
        // The failure whose expiry brings the count below the limit.
        let oldest_counted = times.len().checked_sub(limit).map(|index| times[index])?;
        Some((oldest_counted + WINDOW).saturating_duration_since(now))
    }

    fn record(&mut self, key: K, now: Instant) {
        let times = self.times.entry(key).or_default();
        prune(times, now);
        times.push_back(now);
        if self.times.len() > 2 * self.swept_len.max(64) {
            self.times.retain(|_, times| {
                prune(times, now);
                !times.is_empty()
            });
            self.swept_len = self.times.len();
        }
    }
}

fn prune(times: &mut VecDeque<Instant>, now: Instant) {
    while times
        .front()
        .is_some_and(|&at| now.saturating_duration_since(at) >= WINDOW)
    {
        times.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const ID: ClientId = ClientId([1; 16]);

    fn address(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    #[test]
    fn five_failures_for_an_id_stop_it_from_that_address_for_a_minute_since_the_oldest() {
        let start = Instant::now();
        let mut limiter = ProofLimiter::default();
        for second in 0..5 {
            let at = start + Duration::from_secs(second);
            assert_eq!(limiter.check(ID, address(1), at), Ok(()));
            limiter.failed(ID, address(1), at);
        }
        let at = start + Duration::from_secs(10);
        assert_eq!(
            limiter.check(ID, address(1), at),
            Err(RateLimited {
                retry_after: Duration::from_secs(50)
            })
        );
        // The owner, elsewhere, is not locked out; another id from that address is served.
        assert_eq!(limiter.check(ID, address(2), at), Ok(()));
        assert_eq!(limiter.check(ClientId([2; 16]), address(1), at), Ok(()));
        assert_eq!(limiter.check(ID, address(1), start + WINDOW), Ok(()));
    }

    #[test]
    fn failures_for_an_id_from_many_addresses_do_not_add_up() {
        let start = Instant::now();
        let mut limiter = ProofLimiter::default();
        for n in 0..50 {
            limiter.failed(ID, address(n), start);
        }
        assert_eq!(limiter.check(ID, address(200), start), Ok(()));
    }

    #[test]
    fn twenty_failures_from_an_address_stop_it_whatever_the_id() {
        let start = Instant::now();
        let mut limiter = ProofLimiter::default();
        for n in 0..20u8 {
            let id = ClientId([n; 16]);
            assert_eq!(limiter.check(id, address(1), start), Ok(()));
            limiter.failed(id, address(1), start);
        }
        let fresh = ClientId([200; 16]);
        assert_eq!(
            limiter.check(fresh, address(1), start + Duration::from_secs(1)),
            Err(RateLimited {
                retry_after: Duration::from_secs(59)
            })
        );
        assert_eq!(limiter.check(fresh, address(2), start), Ok(()));
        assert_eq!(limiter.check(fresh, address(1), start + WINDOW), Ok(()));
    }

    #[test]
    fn old_failures_are_swept() {
        let start = Instant::now();
        let mut limiter = ProofLimiter::default();
        for n in 0..1000u32 {
            let id = ClientId(u128::from(n).to_le_bytes());
            limiter.failed(
                id,
                address(1),
                start + Duration::from_millis(u64::from(n) * 100),
            );
        }
        assert!(limiter.by_id.times.len() <= 2 * 600 + 64);
    }
}
