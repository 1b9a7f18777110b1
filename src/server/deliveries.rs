//! Messages in delivery. A pull reply's messages are in flight from the moment the reply is
//! built until it is written whole (no second pull reply may carry them) or given up (they
//! become pullable again). Written whole, they are delivered and deleted in the next round;
//! a deletion that fails keeps them in flight and is retried shortly. Pushed messages
//! (protocol §E5) are in delivery, on each connection that holds them unacknowledged, until
//! acknowledged there or that connection ends; they stay pullable meanwhile.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::protocol::MessageId;
use crate::store::Delivered;

/// How long a failed deletion of delivered messages waits before it is retried.
const DELETE_RETRY: Duration = Duration::from_millis(100);

#[derive(Default)]
pub struct Deliveries {
    in_flight: HashSet<MessageId>,
    /// Pushed and unacknowledged: on how many connections.
    pushed: HashMap<MessageId, u32>,
    /// Written whole, to delete in the next round.
    delivered: Vec<Delivered>,
    /// When a failed deletion may be tried again.
    retry_at: Option<Instant>,
}

impl Deliveries {
    /// Whether a pull reply not yet written whole carries `id`.
    pub fn is_in_flight(&self, id: MessageId) -> bool {
        self.in_flight.contains(&id)
    }

    /// Whether a pull reply not yet written whole, or an unacknowledged push, carries `id`.
    pub fn is_in_delivery(&self, id: MessageId) -> bool {
        self.in_flight.contains(&id) || self.pushed.contains_key(&id)
    }

    /// The messages pull replies not yet written whole carry, or whose deletion is pending.
    pub fn in_flight(&self) -> impl Iterator<Item = MessageId> + '_ {
        self.in_flight.iter().copied()
    }

    /// A connection pushed `id`.
    pub fn pushed(&mut self, id: MessageId) {
        *self.pushed.entry(id).or_default() += 1;
    }

    /// A connection that pushed `id` holds it no more: acknowledged, or the connection ended.
    pub fn push_ended(&mut self, id: MessageId) {
        if let Some(count) = self.pushed.get_mut(&id) {
            *count -= 1;
            if *count == 0 {
                self.pushed.remove(&id);
            }
        }
    }

    /// A pull reply carries these messages.
    pub fn start(&mut self, messages: &[Delivered]) {
        self.in_flight
            .extend(messages.iter().map(|message| message.id));
    }

    /// Their reply will not be written: they are pullable again.
    pub fn give_up(&mut self, messages: &[Delivered]) {
        for message in messages {
            self.in_flight.remove(&message.id);
        }
    }

    /// Their reply was written whole.
    pub fn delivered(&mut self, messages: Vec<Delivered>) {
        self.delivered.extend(messages);
    }

    /// The delivered messages to delete now: none while a failed deletion waits to be
    /// retried.
    pub fn take_due(&mut self, now: Instant) -> Vec<Delivered> {
        if self.retry_at.is_none_or(|at| at <= now) {
            std::mem::take(&mut self.delivered)
        } else {
            Vec::new()
        }
    }

    /// The round that was to delete `messages` ended: they are gone if it `deleted` them and
    /// committed; otherwise they stay in flight, so not pulled again, and are retried shortly.
    pub fn settle(&mut self, messages: Vec<Delivered>, deleted: bool, now: Instant) {
        if messages.is_empty() {
            return;
        }
        if deleted {
            self.give_up(&messages);
            self.retry_at = None;
        } else {
            self.delivered.extend(messages);
            self.retry_at = Some(now + DELETE_RETRY);
        }
    }

    /// When deletions are due (`now` if nothing holds them back), if any wait.
    pub fn due_at(&self, now: Instant) -> Option<Instant> {
        if self.delivered.is_empty() {
            None
        } else {
            Some(self.retry_at.unwrap_or(now))
        }
    }

    /// Delivered messages whose deletion has not committed.
    pub fn undeleted(&self) -> usize {
        self.delivered.len()
    }

    /// Retries at once: the server is stopping.
    pub fn retry_now(&mut self) {
        self.retry_at = None;
    }
}

/// Delivered messages of ten content bytes each, for tests.
#[cfg(test)]
pub(crate) fn delivered(ids: &[u32]) -> Vec<Delivered> {
    ids.iter()
        .map(|&id| Delivered {
            id: MessageId(id),
            len: 10,
            stored_apart: false,
            from: crate::protocol::ClientId([1; 16]),
            to: crate::protocol::ClientId([2; 16]),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::delivered as ids;
    use super::*;

    #[test]
    fn a_message_stays_in_flight_until_its_deletion_commits() {
        let mut deliveries = Deliveries::default();
        let now = Instant::now();
        deliveries.start(&ids(&[1, 2, 3]));
        deliveries.give_up(&ids(&[3]));
        assert!(!deliveries.is_in_flight(MessageId(3)));
        deliveries.delivered(ids(&[1, 2]));
        assert_eq!(deliveries.due_at(now), Some(now));
        let due = deliveries.take_due(now);
        assert_eq!(due, ids(&[1, 2]));
        deliveries.settle(due, true, now);
        assert!(!deliveries.is_in_flight(MessageId(1)));
        assert_eq!((deliveries.due_at(now), deliveries.undeleted()), (None, 0));
    }

    #[test]
    fn a_pushed_message_is_in_delivery_until_every_connection_that_holds_it_lets_go() {
        let mut deliveries = Deliveries::default();
        deliveries.pushed(MessageId(4));
        deliveries.pushed(MessageId(4));
        assert!(!deliveries.is_in_flight(MessageId(4)), "still pullable");
        deliveries.push_ended(MessageId(4));
        assert!(deliveries.is_in_delivery(MessageId(4)));
        deliveries.push_ended(MessageId(4));
        assert!(!deliveries.is_in_delivery(MessageId(4)));
        deliveries.push_ended(MessageId(4));
        assert!(!deliveries.is_in_delivery(MessageId(4)));
    }

    #[test]
    fn a_failed_deletion_keeps_its_messages_in_flight_and_is_retried_later() {
        let mut deliveries = Deliveries::default();
        let now = Instant::now();
        deliveries.start(&ids(&[7]));
        deliveries.delivered(ids(&[7]));
        let due = deliveries.take_due(now);
        deliveries.settle(due, false, now);
        assert!(deliveries.is_in_flight(MessageId(7)));
        assert_eq!(deliveries.due_at(now), Some(now + DELETE_RETRY));
        assert!(deliveries.take_due(now).is_empty(), "not before the retry");
        assert_eq!(deliveries.take_due(now + DELETE_RETRY), ids(&[7]));
    }
}
