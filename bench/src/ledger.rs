//! Exactly-once accounting: every send the server acknowledged must be delivered to its
//! destination exactly once, intact, with the message id the acknowledgement gave; delivered
//! by a pull reply, or pushed (protocol §E5) and then acknowledged by the recipient, every
//! acknowledgement deleting what it listed.
//!
//! Each event-loop thread keeps its own ledger (no locking on the hot path); they are merged
//! and judged once every queue has been drained. Receipts may be recorded before the
//! acknowledgement they match (the receiver can run on another thread than the sender), so
//! nothing is judged until the end. Both sides note when they saw the message, which gives
//! the delivery delay: from the send's reply read by the sender to the message read by its
//! recipient.

use std::collections::HashMap;
use std::time::Instant;

use messageu_protocol::MessageId;

use crate::record::Stamp;
use crate::stats::{OpStats, Window};

/// What became of one send request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Acknowledged {
        destination: u32,
        id: MessageId,
        /// When the sender read the reply.
        at: Instant,
    },
    /// Failed or timed out: the server may or may not have stored it.
    Unacknowledged,
}

/// How a message reached its recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Pull,
    Push,
}

/// One message as a pull reply or a push delivered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    pub stamp: Stamp,
    /// The client whose queue held it.
    pub receiver: u32,
    pub id: MessageId,
    /// The sender id and message type delivered are the ones sent.
    pub envelope_matches: bool,
    pub via: Via,
    /// When the recipient read it.
    pub at: Instant,
}

/// Sends and receipts seen by one or more event loops.
#[derive(Debug, Default)]
pub struct Ledger {
    sends: HashMap<Stamp, Fate>,
    receipts: Vec<Receipt>,
    /// Delivered contents that are not a benchmark record at all.
    garbled: u64,
    /// Message ids listed in acknowledge requests, and how many of them the replies said
    /// were deleted.
    acks_listed: u64,
    acks_deleted: u64,
}

/// The judgement of a ledger after the final drain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verdict {
    pub acknowledged: u64,
    /// Sends that failed or timed out; the server owes nothing for them.
    pub unacknowledged: u64,
    /// Messages delivered (pulled or pushed), in total.
    pub delivered: u64,
    /// Of those, pushed.
    pub pushed: u64,
    /// Unacknowledged sends that were delivered anyway (stored, but the reply was lost).
    pub delivered_unacknowledged: u64,
    /// Acknowledged, never delivered.
    pub lost: u64,
    /// Deliveries of a message beyond its first (pushed again, or pushed and then pulled).
    pub duplicated: u64,
    /// Delivered with a content, sender, type, destination or message id other than sent.
    pub corrupted: u64,
    /// Acknowledged sends that reached their recipient only by a pull (with push delivery,
    /// left in the queue instead of pushed).
    pub pulled_only: u64,
    /// Message ids the recipients acknowledged, and how many of them that deleted.
    pub acks_listed: u64,
    pub acks_deleted: u64,
}

impl Verdict {
    /// Every acknowledged message delivered exactly once, intact.
    pub fn is_exactly_once(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.corrupted == 0
    }

    /// [`Verdict::is_exactly_once`], every message pushed, and every acknowledgement of a
    /// pushed message deleting it (none acknowledged twice or deleted some other way).
    pub fn is_exactly_once_pushed(&self) -> bool {
        self.is_exactly_once()
            && self.pulled_only == 0
            && self.acks_listed == self.pushed
            && self.acks_deleted == self.acks_listed
    }
}

impl Ledger {
    pub fn acknowledged(&mut self, stamp: Stamp, destination: u32, id: MessageId, at: Instant) {
        self.sends.insert(
            stamp,
            Fate::Acknowledged {
                destination,
                id,
                at,
            },
        );
    }

    pub fn unacknowledged(&mut self, stamp: Stamp) {
        self.sends.insert(stamp, Fate::Unacknowledged);
    }

    pub fn received(&mut self, receipt: Receipt) {
        self.receipts.push(receipt);
    }

    /// A delivered content that does not decode as a record.
    pub fn garbled(&mut self) {
        self.garbled += 1;
    }

    /// An acknowledge request listed `listed` message ids and its reply said `deleted` of
    /// them were deleted.
    pub fn acknowledgement(&mut self, listed: u64, deleted: u64) {
        self.acks_listed += listed;
        self.acks_deleted += deleted;
    }

    /// Adds another loop's sends and receipts; senders are never shared between loops.
    pub fn merge(&mut self, other: Ledger) {
        self.sends.extend(other.sends);
        self.receipts.extend(other.receipts);
        self.garbled += other.garbled;
        self.acks_listed += other.acks_listed;
        self.acks_deleted += other.acks_deleted;
    }

    /// The receipts of the message `stamp`, in the order recorded.
    pub fn receipts_of(&self, stamp: Stamp) -> impl Iterator<Item = &Receipt> {
        self.receipts
            .iter()
            .filter(move |receipt| receipt.stamp == stamp)
    }

    /// The delay from each send's reply to its message's first delivery, for the messages
    /// both acknowledged and delivered inside one of `windows`: one still queued when its
    /// window closed waits for a later load, which says nothing about this one.
    pub fn delivery_delays(&self, windows: &[Window]) -> OpStats {
        let mut first: HashMap<Stamp, Instant> = HashMap::with_capacity(self.sends.len());
        for receipt in &self.receipts {
            first
                .entry(receipt.stamp)
                .and_modify(|at| *at = (*at).min(receipt.at))
                .or_insert(receipt.at);
        }
        let mut delays = OpStats::default();
        for (stamp, fate) in &self.sends {
            let (Fate::Acknowledged { at: sent, .. }, Some(&arrived)) = (fate, first.get(stamp))
            else {
                continue;
            };
            let inside = |window: &Window| window.contains(*sent) && window.contains(arrived);
            if windows.iter().any(inside) {
                // The recipient may read the message before the sender's loop reads the
                // reply the server wrote first: that counts as no delay.
                delays.record(arrived.saturating_duration_since(*sent), 0);
            }
        }
        delays
    }

    /// Judges the ledger; meaningful only once every queue has been drained.
    pub fn verdict(&self) -> Verdict {
        let mut verdict = Verdict {
            delivered: self.receipts.len() as u64 + self.garbled,
            corrupted: self.garbled,
            acks_listed: self.acks_listed,
            acks_deleted: self.acks_deleted,
            ..Verdict::default()
        };
        let mut deliveries: HashMap<Stamp, (u64, bool)> = HashMap::with_capacity(self.sends.len());
        for receipt in &self.receipts {
            let intact = match self.sends.get(&receipt.stamp) {
                // A record the benchmark never sent: its stamp was altered.
                None => false,
                Some(Fate::Acknowledged {
                    destination, id, ..
                }) => {
                    receipt.envelope_matches
                        && receipt.receiver == *destination
                        && receipt.id == *id
                }
                Some(Fate::Unacknowledged) => receipt.envelope_matches,
            };
            if !intact {
                verdict.corrupted += 1;
            }
            let pushed = receipt.via == Via::Push;
            verdict.pushed += u64::from(pushed);
            let entry = deliveries.entry(receipt.stamp).or_default();
            entry.0 += 1;
            entry.1 |= pushed;
        }
        for (stamp, fate) in &self.sends {
            let (count, pushed) = deliveries.get(stamp).copied().unwrap_or_default();
            verdict.duplicated += count.saturating_sub(1);
            match fate {
                Fate::Acknowledged { .. } => {
                    verdict.acknowledged += 1;
                    if count == 0 {
                        verdict.lost += 1;
                    } else if !pushed {
                        verdict.pulled_only += 1;
                    }
                }
                Fate::Unacknowledged => {
                    verdict.unacknowledged += 1;
                    if count > 0 {
                        verdict.delivered_unacknowledged += 1;
                    }
                }
            }
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn stamp(sender: u32, seq: u64) -> Stamp {
        Stamp { sender, seq }
    }

    fn receipt(stamp: Stamp, receiver: u32, id: u32) -> Receipt {
        Receipt {
            stamp,
            receiver,
            id: MessageId(id),
            envelope_matches: true,
            via: Via::Pull,
            at: Instant::now(),
        }
    }

    fn pushed(stamp: Stamp, receiver: u32, id: u32) -> Receipt {
        Receipt {
            via: Via::Push,
            ..receipt(stamp, receiver, id)
        }
    }

    fn acknowledged(ledger: &mut Ledger, stamp: Stamp, destination: u32, id: u32) {
        ledger.acknowledged(stamp, destination, MessageId(id), Instant::now());
    }

    #[test]
    fn each_acknowledged_message_pulled_once_is_exactly_once() {
        let mut ledger = Ledger::default();
        acknowledged(&mut ledger, stamp(0, 0), 1, 10);
        acknowledged(&mut ledger, stamp(1, 0), 0, 11);
        ledger.received(receipt(stamp(0, 0), 1, 10));
        ledger.received(receipt(stamp(1, 0), 0, 11));
        let verdict = ledger.verdict();
        assert!(verdict.is_exactly_once(), "{verdict:?}");
        assert_eq!((verdict.acknowledged, verdict.delivered), (2, 2));
    }

    #[test]
    fn a_receipt_may_come_before_its_acknowledgement() {
        let mut ledger = Ledger::default();
        ledger.received(receipt(stamp(3, 9), 4, 1));
        acknowledged(&mut ledger, stamp(3, 9), 4, 1);
        assert!(ledger.verdict().is_exactly_once());
    }

    #[test]
    fn never_pulled_is_lost_and_pulled_twice_is_duplicated() {
        let mut ledger = Ledger::default();
        acknowledged(&mut ledger, stamp(0, 0), 1, 1);
        acknowledged(&mut ledger, stamp(0, 1), 1, 2);
        ledger.received(receipt(stamp(0, 1), 1, 2));
        ledger.received(receipt(stamp(0, 1), 1, 2));
        ledger.received(receipt(stamp(0, 1), 1, 2));
        let verdict = ledger.verdict();
        assert_eq!(verdict.lost, 1);
        assert_eq!(verdict.duplicated, 2);
        assert_eq!(verdict.corrupted, 0);
        assert!(!verdict.is_exactly_once());
    }

    #[test]
    fn wrong_receiver_id_envelope_or_content_is_corrupted() {
        let mut ledger = Ledger::default();
        for seq in 0..4 {
            acknowledged(&mut ledger, stamp(0, seq), 1, seq as u32);
        }
        ledger.received(receipt(stamp(0, 0), 2, 0));
        ledger.received(receipt(stamp(0, 1), 1, 99));
        ledger.received(Receipt {
            envelope_matches: false,
            ..receipt(stamp(0, 2), 1, 2)
        });
        ledger.received(receipt(stamp(0, 3), 1, 3));
        ledger.received(receipt(stamp(5, 0), 1, 7));
        ledger.garbled();
        let verdict = ledger.verdict();
        assert_eq!(verdict.corrupted, 5);
        assert_eq!(verdict.lost, 0, "a corrupted delivery is still a delivery");
        assert_eq!(verdict.delivered, 6);
    }

    #[test]
    fn unacknowledged_sends_are_owed_nothing_but_may_not_be_duplicated() {
        let mut ledger = Ledger::default();
        ledger.unacknowledged(stamp(0, 0));
        ledger.unacknowledged(stamp(0, 1));
        ledger.received(receipt(stamp(0, 1), 3, 5));
        let verdict = ledger.verdict();
        assert!(verdict.is_exactly_once(), "{verdict:?}");
        assert_eq!(verdict.unacknowledged, 2);
        assert_eq!(verdict.delivered_unacknowledged, 1);

        ledger.received(receipt(stamp(0, 1), 3, 5));
        assert_eq!(ledger.verdict().duplicated, 1);
    }

    #[test]
    fn merged_ledgers_are_judged_together() {
        let mut sender_side = Ledger::default();
        acknowledged(&mut sender_side, stamp(0, 0), 1, 1);
        let mut receiver_side = Ledger::default();
        receiver_side.received(receipt(stamp(0, 0), 1, 1));
        assert_eq!(sender_side.verdict().lost, 1);
        sender_side.merge(receiver_side);
        assert!(sender_side.verdict().is_exactly_once());
    }

    #[test]
    fn pushed_messages_must_be_acknowledged_once_and_not_left_for_a_pull() {
        let mut ledger = Ledger::default();
        for seq in 0..3 {
            acknowledged(&mut ledger, stamp(0, seq), 1, seq as u32);
        }
        ledger.received(pushed(stamp(0, 0), 1, 0));
        ledger.received(pushed(stamp(0, 1), 1, 1));
        ledger.acknowledgement(2, 2);
        ledger.received(receipt(stamp(0, 2), 1, 2));
        let verdict = ledger.verdict();
        assert!(verdict.is_exactly_once(), "{verdict:?}");
        assert_eq!((verdict.pushed, verdict.pulled_only), (2, 1));
        assert!(
            !verdict.is_exactly_once_pushed(),
            "one was left for the drain"
        );

        let mut ledger = Ledger::default();
        acknowledged(&mut ledger, stamp(0, 0), 1, 0);
        ledger.received(pushed(stamp(0, 0), 1, 0));
        ledger.acknowledgement(1, 0);
        let verdict = ledger.verdict();
        assert!(verdict.is_exactly_once());
        assert!(
            !verdict.is_exactly_once_pushed(),
            "an acknowledgement that deleted nothing: {verdict:?}"
        );

        let mut ledger = Ledger::default();
        acknowledged(&mut ledger, stamp(0, 0), 1, 0);
        ledger.received(pushed(stamp(0, 0), 1, 0));
        ledger.acknowledgement(1, 1);
        assert!(ledger.verdict().is_exactly_once_pushed());
        ledger.received(pushed(stamp(0, 0), 1, 0));
        ledger.acknowledgement(1, 0);
        assert_eq!(ledger.verdict().duplicated, 1, "pushed again");
    }

    #[test]
    fn delays_count_messages_sent_and_delivered_inside_a_window() {
        let start = Instant::now();
        let window = Window {
            start,
            end: start + Duration::from_secs(10),
        };
        let mut ledger = Ledger::default();
        let at = |ms| start + Duration::from_millis(ms);
        ledger.acknowledged(stamp(0, 0), 1, MessageId(0), at(100));
        ledger.received(Receipt {
            at: at(103),
            ..pushed(stamp(0, 0), 1, 0)
        });
        // Read by the recipient before the sender read its reply: no delay.
        ledger.acknowledged(stamp(0, 1), 1, MessageId(1), at(200));
        ledger.received(Receipt {
            at: at(199),
            ..pushed(stamp(0, 1), 1, 1)
        });
        // Delivered after the window closed: left out.
        ledger.acknowledged(stamp(0, 2), 1, MessageId(2), at(9_999));
        ledger.received(Receipt {
            at: at(10_500),
            ..pushed(stamp(0, 2), 1, 2)
        });
        let delays = ledger.delivery_delays(&[window]);
        assert_eq!(delays.completed, 2);
        let p = delays.percentiles().expect("recorded");
        assert!(p.max >= Duration::from_micros(2_990), "{p:?}");
        assert!(p.p50 < Duration::from_micros(10), "{p:?}");
    }
}
