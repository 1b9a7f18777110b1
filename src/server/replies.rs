//! The end of a turn, from the commit to the sockets: the round committed, each touched
//! connection's replies tied to its commit, replies released, long-polls woken, messages
//! pushed and receipts sent as commits become durable, and what is released written within
//! the pacer's share for bulk writes.

use std::time::{Duration, Instant};

use super::connection::Unpark;
use super::outbox::{Flush, RoundEnd};
use super::Server;

impl Server {
    /// Commits the round, ties each touched connection's staged replies to its commit and
    /// releases those already durable. Returns the touched connections.
    pub(super) fn commit_round(&mut self, now: Instant) -> Vec<usize> {
        let round = self
            .core
            .pipeline
            .commit(&mut self.core.deliveries, &self.core.metrics, now);
        let durable = self.core.pipeline.durable_epoch();
        for &key in &round.touched {
            if let Some(connection) = self.connections.get_mut(key) {
                let deliveries = &mut self.core.deliveries;
                let end = match round.epoch {
                    Some(epoch) => RoundEnd::Committed(epoch),
                    None => RoundEnd::RolledBack { durable },
                };
                connection.seal(end, deliveries);
                connection.release_through(durable, Flush::Succeeded, deliveries);
                if connection.awaits_flush() {
                    self.core.pipeline.await_flush(key);
                }
            }
        }
        round.touched
    }

    /// Releases the replies that finished flushes made durable (or fails them, if a flush
    /// failed). Returns the connections that got output.
    pub(super) fn release_flushed(&mut self) -> Vec<usize> {
        let mut released = Vec::new();
        for flushed in self.core.pipeline.finished_flushes(&self.core.metrics) {
            let flush = match &flushed.result {
                Ok(()) => Flush::Succeeded,
                Err(_) => Flush::Failed,
            };
            let waiting = self.core.pipeline.take_awaiting();
            for &key in &waiting {
                if let Some(connection) = self.connections.get_mut(key) {
                    connection.release_through(flushed.through, flush, &mut self.core.deliveries);
                    if connection.awaits_flush() {
                        self.core.pipeline.await_flush(key);
                    }
                }
            }
            released.extend(waiting);
        }
        released
    }

    /// Tells connections what became durable: wakes the long-polls waiting for the
    /// recipients of new messages (they pull in the next turn, which comes at once), takes
    /// deleted messages out of the windows that hold them, sends receipts to their senders'
    /// subscriptions, and pushes to the subscriptions that may take more. Returns the
    /// connections that got output.
    pub(super) fn tell_durable(&mut self) -> Vec<usize> {
        let mut durable = self.core.pipeline.take_durable();
        if durable.missed {
            durable.recipients = self.core.waiters.ids();
        }
        for &id in &durable.deleted {
            let ended = self.core.waiters.unsubscribe_all(id);
            self.core.ended_subscriptions.extend(ended);
        }
        let woken = self.core.waiters.wake(&durable.recipients);
        for key in woken.parked {
            if let Some(connection) = self.connections.get_mut(key) {
                connection.unpark(Unpark::Pull);
                self.needs_service.push(key);
            }
        }
        let mut told = Vec::new();
        let mut due = self.core.take_push_due();
        for (sender, receipt) in durable.receipts {
            // A deleted message leaves the window of every connection it was pushed on.
            for &key in self.core.waiters.subscribers(receipt.recipient) {
                if let Some(connection) = self.connections.get_mut(key) {
                    if connection.deleted(receipt.id, &mut self.core.deliveries) {
                        due.push(key);
                    }
                }
            }
            for &key in self.core.waiters.subscribers(sender) {
                if let Some(connection) = self.connections.get_mut(key) {
                    connection.push_receipt(receipt);
                    told.push(key);
                }
            }
        }
        for key in self.core.take_ended_subscriptions() {
            if let Some(connection) = self.connections.get_mut(key) {
                connection.end_subscription(&mut self.core.deliveries);
            }
        }
        due.extend(woken.subscribed);
        due.sort_unstable();
        due.dedup();
        for key in due {
            if let Some(connection) = self.connections.get_mut(key) {
                self.core.push_waiting(connection);
                told.push(key);
            }
        }
        told
    }

    /// Writes what each connection has released to its socket, reregisters interest, and
    /// removes the connections that closed. Bulk writes follow the turn's admission,
    /// `bulk_allowed`, like its bulk reads, which took `bulk_time`; the pacer is charged for
    /// both at once.
    pub(super) fn write_out(
        &mut self,
        mut keys: Vec<usize>,
        now: Instant,
        bulk_allowed: bool,
        mut bulk_time: Duration,
    ) {
        keys.sort_unstable();
        keys.dedup();
        let linger_until = now + self.core.config.linger;
        let mut closed = Vec::new();
        let mut wanting = Vec::new();
        for key in keys {
            let Some(connection) = self.connections.get_mut(key) else {
                continue;
            };
            let bulk = connection.bulk_writing();
            if bulk && !bulk_allowed {
                wait_for_pacer(&mut self.bulk_waiting, key);
                continue;
            }
            let started = bulk.then(Instant::now);
            if let Some(at) = connection.write_out(&mut self.core.deliveries, linger_until) {
                self.core.timers.schedule(at, key);
            }
            if let Some(started) = started {
                bulk_time += started.elapsed();
            }
            if connection.is_closed() {
                closed.push(key);
                continue;
            }
            if let Err(error) = connection.update_interest(self.poll.registry()) {
                log::warn!(
                    "{}: cannot watch the connection: {error}",
                    connection.peer()
                );
                closed.push(key);
                continue;
            }
            if connection.wants_service() {
                wanting.push((key, connection.is_bulk()));
            }
        }
        let done = Instant::now();
        self.core.pacer.ran(bulk_time, done);
        let bulk_allowed = self.core.pacer.may_run(done);
        for (key, bulk) in wanting {
            if bulk && !bulk_allowed {
                wait_for_pacer(&mut self.bulk_waiting, key);
            } else {
                self.needs_service.push(key);
            }
        }
        for key in closed {
            self.remove(key);
        }
    }
}

/// Queues a bulk transfer until the pacer lets bulk work run, once.
fn wait_for_pacer(waiting: &mut Vec<usize>, key: usize) {
    if !waiting.contains(&key) {
        waiting.push(key);
    }
}
