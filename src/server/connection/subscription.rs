//! A connection's push subscription (protocol §E5): the id it is subscribed as and the
//! messages pushed on it and not yet acknowledged, within the window. Pushes are written
//! between replies as whole frames; the messages they carry stay queued (and in delivery) until
//! acknowledged, and are pushed again on a later subscription if the connection ends first.

use super::{Connection, State};
use crate::protocol::replies::PULLED_MESSAGE_HEADER_LEN;
use crate::protocol::{ClientId, MessageId, Push, QueuedMessage, Receipt};
use crate::server::deliveries::Deliveries;
use crate::store::PullBudget;

/// Most messages pushed on one connection and not acknowledged.
pub(crate) const PUSH_WINDOW_MESSAGES: usize = 256;
/// Most content bytes of those messages (one larger message goes when none is unacknowledged).
pub(crate) const PUSH_WINDOW_BYTES: u64 = 1 << 20;

#[derive(Debug)]
pub(super) struct Subscription {
    id: ClientId,
    /// Pushed and unacknowledged, with their content sizes, in push order.
    unacknowledged: Vec<(MessageId, u64)>,
    unacknowledged_bytes: u64,
}

impl Subscription {
    /// What more may be pushed: `None` while the window is full.
    fn room(&self) -> Option<PullBudget> {
        let messages = PUSH_WINDOW_MESSAGES.checked_sub(self.unacknowledged.len())?;
        let bytes = PUSH_WINDOW_BYTES.checked_sub(self.unacknowledged_bytes)?;
        if messages == 0 || bytes == 0 {
            return None;
        }
        Some(PullBudget {
            payload: bytes.saturating_add((messages * PULLED_MESSAGE_HEADER_LEN) as u64),
            in_memory: bytes,
            messages,
        })
    }

    /// Whether a message of `len` content bytes fits the window now: the store gives a first
    /// message beyond its budget, which only an empty window takes.
    fn fits(&self, len: u64) -> bool {
        self.unacknowledged.is_empty()
            || (self.unacknowledged.len() < PUSH_WINDOW_MESSAGES
                && self.unacknowledged_bytes + len <= PUSH_WINDOW_BYTES)
    }

    fn holds(&self, id: MessageId) -> bool {
        self.unacknowledged.iter().any(|&(held, _)| held == id)
    }

    /// Forgets `id` if it was pushed here; returns whether it was.
    fn let_go(&mut self, id: MessageId, deliveries: &mut Deliveries) -> bool {
        let Some(at) = self.unacknowledged.iter().position(|&(held, _)| held == id) else {
            return false;
        };
        let (_, len) = self.unacknowledged.remove(at);
        self.unacknowledged_bytes -= len;
        deliveries.push_ended(id);
        true
    }
}

impl Connection {
    /// Subscribes the connection as `id`, replacing a subscription as another id. Returns
    /// whether it was not subscribed as `id` already.
    pub fn subscribe(&mut self, id: ClientId, deliveries: &mut Deliveries) -> bool {
        if self.subscription.as_ref().is_some_and(|held| held.id == id) {
            return false;
        }
        self.end_subscription(deliveries);
        self.subscription = Some(Subscription {
            id,
            unacknowledged: Vec::new(),
            unacknowledged_bytes: 0,
        });
        true
    }

    /// Ends the subscription, if any; what it holds unacknowledged is pushed again on a later
    /// one.
    pub fn end_subscription(&mut self, deliveries: &mut Deliveries) {
        if let Some(subscription) = self.subscription.take() {
            for (id, _) in subscription.unacknowledged {
                deliveries.push_ended(id);
            }
        }
    }

    /// The id to push messages for and how many may go now: `None` unless subscribed, open,
    /// and with room in the window. A closing connection takes no more pushes, so that they
    /// cannot keep it open.
    pub fn push_room(&self) -> Option<(ClientId, PullBudget)> {
        if self.state != State::Open {
            return None;
        }
        let subscription = self.subscription.as_ref()?;
        Some((subscription.id, subscription.room()?))
    }

    /// Whether `id` was pushed here and is not acknowledged.
    pub fn holds_pushed(&self, id: MessageId) -> bool {
        self.subscription
            .as_ref()
            .is_some_and(|subscription| subscription.holds(id))
    }

    /// Pushes `messages`, in order, after what is already released, as many as the window
    /// takes; the others stay queued for a later push.
    pub fn push_messages(&mut self, messages: Vec<QueuedMessage>, deliveries: &mut Deliveries) {
        let Some(subscription) = self.subscription.as_mut() else {
            return;
        };
        for message in messages {
            let len = message.content.len();
            if !subscription.fits(len) {
                break;
            }
            subscription.unacknowledged.push((message.id, len));
            subscription.unacknowledged_bytes += len;
            deliveries.pushed(message.id);
            self.outbox
                .release(Push::Message(message).encode(), Vec::new(), false);
        }
    }

    /// Pushes a receipt, unless the connection is closing.
    pub fn push_receipt(&mut self, receipt: Receipt) {
        if self.state == State::Open {
            self.outbox
                .release(Push::Receipt(receipt).encode(), Vec::new(), false);
        }
    }

    /// The caller acknowledged `ids`: those pushed here leave the window. Returns whether the
    /// connection is subscribed, so may push more now.
    pub fn acknowledged(&mut self, ids: &[MessageId], deliveries: &mut Deliveries) -> bool {
        let Some(subscription) = self.subscription.as_mut() else {
            return false;
        };
        for &id in ids {
            subscription.let_go(id, deliveries);
        }
        true
    }

    /// Message `id` was deleted (acknowledged elsewhere, or pulled): if it was pushed here, it
    /// leaves the window. Returns whether it did.
    pub fn deleted(&mut self, id: MessageId, deliveries: &mut Deliveries) -> bool {
        self.subscription
            .as_mut()
            .is_some_and(|subscription| subscription.let_go(id, deliveries))
    }
}
