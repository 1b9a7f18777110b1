//! Who waits for messages: the connections whose long-poll (protocol §E6) is parked, by the
//! recipient they wait for, with their deadlines, and the connections subscribed (§E5) as
//! each id, whose interest a wake does not end. The loop feeds it the recipients of each
//! round's messages once that round's commit is durable ([`Waiters::wake`]) and the time
//! ([`Waiters::expired`]); it answers with the connections to serve, and says who is
//! subscribed as a sender, for receipts. I/O-free, owned by the loop.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use crate::protocol::ClientId;

/// Parked long-polls: one per connection at most (a connection serves nothing behind its
/// parked request).
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    /// The connection keys waiting for each recipient, in the order they parked.
    by_recipient: HashMap<ClientId, Vec<usize>>,
    /// What each parked connection waits for, and until when.
    parked: HashMap<usize, (ClientId, Instant)>,
    /// The same deadlines, ordered, so the loop knows how long it may sleep.
    deadlines: BTreeSet<(Instant, usize)>,
    /// The connections subscribed as each id, in the order they subscribed.
    subscribers: HashMap<ClientId, Vec<usize>>,
    /// The id each subscribed connection is subscribed as.
    subscriptions: HashMap<usize, ClientId>,
}

/// The connections a wake concerns.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Woken {
    /// Parked long-polls to answer; their waits are over.
    pub parked: Vec<usize>,
    /// Subscribed connections to push to; they stay subscribed.
    pub subscribed: Vec<usize>,
}

impl Waiters {
    /// Connection `key` waits for a message for `recipient` until `until`; a wait it had
    /// before is replaced.
    pub fn park(&mut self, key: usize, recipient: ClientId, until: Instant) {
        self.forget(key);
        self.by_recipient.entry(recipient).or_default().push(key);
        self.parked.insert(key, (recipient, until));
        self.deadlines.insert((until, key));
    }

    /// Connection `key` waits no more (answered, or closed); returns whether it waited.
    pub fn forget(&mut self, key: usize) -> bool {
        let Some((recipient, until)) = self.parked.remove(&key) else {
            return false;
        };
        self.deadlines.remove(&(until, key));
        if let Some(keys) = self.by_recipient.get_mut(&recipient) {
            keys.retain(|&waiting| waiting != key);
            if keys.is_empty() {
                self.by_recipient.remove(&recipient);
            }
        }
        true
    }

    /// Messages for `recipients` are durable: returns the connections that waited for any of
    /// them, in the order they parked per recipient, and forgets their waits; and the
    /// connections subscribed as them.
    pub fn wake(&mut self, recipients: &[ClientId]) -> Woken {
        let mut woken = Woken::default();
        for recipient in recipients {
            if let Some(keys) = self.subscribers.get(recipient) {
                woken.subscribed.extend(keys);
            }
            let Some(keys) = self.by_recipient.remove(recipient) else {
                continue;
            };
            for key in keys {
                if let Some((_, until)) = self.parked.remove(&key) {
                    self.deadlines.remove(&(until, key));
                    woken.parked.push(key);
                }
            }
        }
        woken
    }

    /// Every id a connection waits for or is subscribed as.
    pub fn ids(&self) -> Vec<ClientId> {
        let mut ids: Vec<ClientId> = self.by_recipient.keys().copied().collect();
        ids.extend(self.subscribers.keys());
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Connection `key` subscribes as `id`; returns whether it was not subscribed as it.
    pub fn subscribe(&mut self, key: usize, id: ClientId) -> bool {
        if self.subscriptions.get(&key) == Some(&id) {
            return false;
        }
        self.unsubscribe(key);
        self.subscriptions.insert(key, id);
        self.subscribers.entry(id).or_default().push(key);
        true
    }

    /// Connection `key` is subscribed no more (closed); returns the id it was subscribed as.
    pub fn unsubscribe(&mut self, key: usize) -> Option<ClientId> {
        let id = self.subscriptions.remove(&key)?;
        if let Some(keys) = self.subscribers.get_mut(&id) {
            keys.retain(|&subscribed| subscribed != key);
            if keys.is_empty() {
                self.subscribers.remove(&id);
            }
        }
        Some(id)
    }

    /// Every subscription as `id` ends (its account is gone); returns their connections.
    pub fn unsubscribe_all(&mut self, id: ClientId) -> Vec<usize> {
        let keys = self.subscribers.remove(&id).unwrap_or_default();
        for key in &keys {
            self.subscriptions.remove(key);
        }
        keys
    }

    /// The connections subscribed as `id`.
    pub fn subscribers(&self, id: ClientId) -> &[usize] {
        self.subscribers.get(&id).map_or(&[], Vec::as_slice)
    }

    /// The connections whose wait ended by `now`, earliest first; their waits are forgotten.
    pub fn expired(&mut self, now: Instant) -> Vec<usize> {
        let mut ended = Vec::new();
        while let Some(&(until, key)) = self.deadlines.first() {
            if until > now {
                break;
            }
            self.forget(key);
            ended.push(key);
        }
        ended
    }

    /// The earliest deadline of a wait.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(until, _)| until)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const ALICE: ClientId = ClientId([1; 16]);
    const BOB: ClientId = ClientId([2; 16]);

    #[test]
    fn a_message_wakes_every_connection_waiting_for_its_recipient_once() {
        let now = Instant::now();
        let later = now + Duration::from_secs(30);
        let mut waiters = Waiters::default();
        waiters.park(4, ALICE, later);
        waiters.park(7, BOB, later);
        waiters.park(2, ALICE, later + Duration::from_secs(1));
        assert_eq!(
            waiters.wake(&[ALICE]).parked,
            vec![4, 2],
            "in the order they parked"
        );
        assert!(waiters.wake(&[ALICE]).parked.is_empty(), "woken once");
        assert_eq!(waiters.next_deadline(), Some(later), "Bob's wait is left");
        assert_eq!(waiters.wake(&[ClientId([9; 16]), BOB]).parked, vec![7]);
        assert_eq!(waiters.next_deadline(), None);
    }

    #[test]
    fn waits_end_at_their_deadlines_earliest_first() {
        let now = Instant::now();
        let mut waiters = Waiters::default();
        waiters.park(1, ALICE, now + Duration::from_millis(300));
        waiters.park(2, BOB, now + Duration::from_millis(100));
        waiters.park(3, ALICE, now + Duration::from_millis(200));
        assert_eq!(
            waiters.next_deadline(),
            Some(now + Duration::from_millis(100))
        );
        assert!(waiters.expired(now).is_empty());
        assert_eq!(
            waiters.expired(now + Duration::from_millis(200)),
            vec![2, 3]
        );
        assert_eq!(
            waiters.wake(&[ALICE, BOB]).parked,
            vec![1],
            "ended waits are not woken"
        );
        assert!(waiters.expired(now + Duration::from_secs(1)).is_empty());
    }

    #[test]
    fn a_forgotten_wait_is_neither_woken_nor_expired() {
        let now = Instant::now();
        let mut waiters = Waiters::default();
        waiters.park(5, ALICE, now);
        assert!(waiters.forget(5));
        assert!(!waiters.forget(5));
        assert!(waiters.wake(&[ALICE]).parked.is_empty());
        assert!(waiters.expired(now + Duration::from_secs(1)).is_empty());
        assert_eq!(waiters.next_deadline(), None);
    }

    #[test]
    fn subscriptions_are_woken_every_time_until_they_end() {
        let now = Instant::now();
        let mut waiters = Waiters::default();
        assert!(waiters.subscribe(3, ALICE));
        assert!(!waiters.subscribe(3, ALICE), "already subscribed");
        assert!(waiters.subscribe(8, ALICE));
        waiters.park(5, ALICE, now);
        let woken = waiters.wake(&[ALICE]);
        assert_eq!((woken.parked, woken.subscribed), (vec![5], vec![3, 8]));
        assert_eq!(
            waiters.wake(&[ALICE]).subscribed,
            vec![3, 8],
            "not ended by a wake"
        );
        assert_eq!(waiters.unsubscribe(3), Some(ALICE));
        assert_eq!(waiters.subscribers(ALICE), &[8]);
        assert!(waiters.subscribe(8, BOB), "a connection changes id");
        assert!(waiters.subscribers(ALICE).is_empty());
        assert!(waiters.subscribe(9, BOB));
        assert_eq!(waiters.unsubscribe_all(BOB), vec![8, 9]);
        assert_eq!(waiters.unsubscribe(8), None);
        assert_eq!(waiters.wake(&[BOB]), Woken::default());
    }

    #[test]
    fn parking_again_replaces_the_connections_wait() {
        let now = Instant::now();
        let mut waiters = Waiters::default();
        waiters.park(5, ALICE, now);
        waiters.park(5, BOB, now + Duration::from_secs(1));
        assert!(waiters.wake(&[ALICE]).parked.is_empty());
        assert_eq!(waiters.next_deadline(), Some(now + Duration::from_secs(1)));
        assert_eq!(waiters.wake(&[BOB]).parked, vec![5]);
    }
}
