//! What a served request changes beyond the store ([`Effect`]), applied to the server's state:
//! messages queued for the round's notices, subscriptions begun and ended (protocol §E5),
//! acknowledgements that free a window and owe receipts (§E7); and the pushes themselves,
//! durable messages read for a subscribed connection within its window.

use super::connection::Connection;
use super::serving::Core;
use crate::handlers::Effect;

impl Core {
    /// Applies `effect`, of a request served on `connection`.
    pub(super) fn apply(&mut self, effect: Effect, connection: &mut Connection) {
        let key = connection.key();
        match effect {
            Effect::Queued { to, id } => self.pipeline.queued_for(to, id),
            Effect::Subscribed(id) => {
                if connection.subscribe(id, &mut self.deliveries) {
                    if let Some(previous) = self.waiters.unsubscribe(key) {
                        self.presence.unsubscribed(previous);
                    }
                    self.waiters.subscribe(key, id);
                    self.presence.subscribed(id);
                }
                self.push_due.push(key);
            }
            Effect::Acknowledged { ids, receipts } => {
                self.pipeline.acknowledged(receipts);
                if connection.acknowledged(&ids, &mut self.deliveries) {
                    self.push_due.push(key);
                }
            }
            Effect::AccountDeleted(id) => {
                self.pipeline.account_deleted(id);
                connection.end_subscription(&mut self.deliveries);
                self.ended_subscriptions
                    .extend(self.waiters.unsubscribe_all(id));
            }
        }
    }

    /// Pushes on `connection` what its subscription may take now: the oldest durable messages
    /// for its id that no pull reply in writing carries and that it does not hold already. A
    /// failed read pushes nothing; the next wake or acknowledgement tries again.
    pub(super) fn push_waiting(&mut self, connection: &mut Connection) {
        let Some((id, budget)) = connection.push_room() else {
            return;
        };
        let deliveries = &self.deliveries;
        let held = &*connection;
        let queued = self.pipeline.durable_queued(id, budget, &|message| {
            deliveries.is_in_flight(message) || held.holds_pushed(message)
        });
        match queued {
            Ok(messages) => {
                self.metrics.pushed(messages.len());
                connection.push_messages(messages, &mut self.deliveries);
            }
            Err(error) => log::warn!(
                "{}: cannot read messages to push: {error}",
                connection.peer()
            ),
        }
    }

    /// The connections whose subscription a deleted account ended elsewhere.
    pub(super) fn take_ended_subscriptions(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.ended_subscriptions)
    }

    /// The subscribed connections that may push now.
    pub(super) fn take_push_due(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.push_due)
    }
}
