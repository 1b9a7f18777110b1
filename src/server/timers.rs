//! Deadlines of connections, ordered so the loop knows how long it may sleep.

use std::collections::BTreeSet;
use std::time::Instant;

/// Scheduled (deadline, connection key) pairs. An entry may be stale: the connection decides,
/// when it fires, whether that deadline is still its own.
#[derive(Debug, Default)]
pub struct Timers {
    scheduled: BTreeSet<(Instant, usize)>,
}

impl Timers {
    pub fn schedule(&mut self, at: Instant, key: usize) {
        self.scheduled.insert((at, key));
    }

    pub fn next(&self) -> Option<Instant> {
        self.scheduled.first().map(|&(at, _)| at)
    }

    /// Removes and returns the keys whose deadline has passed.
    pub fn expired(&mut self, now: Instant) -> Vec<usize> {
        let mut keys = Vec::new();
        while let Some(&(at, key)) = self.scheduled.first() {
            if at > now {
                break;
            }
            self.scheduled.pop_first();
            keys.push(key);
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn expired_returns_due_keys_in_order() {
        let now = Instant::now();
        let mut timers = Timers::default();
        timers.schedule(now + Duration::from_secs(2), 1);
        timers.schedule(now, 2);
        timers.schedule(now + Duration::from_secs(1), 3);
        assert_eq!(timers.next(), Some(now));
        assert_eq!(timers.expired(now + Duration::from_secs(1)), vec![2, 3]);
        assert_eq!(
            timers.expired(now + Duration::from_secs(1)),
            Vec::<usize>::new()
        );
        assert_eq!(timers.next(), Some(now + Duration::from_secs(2)));
    }
}
