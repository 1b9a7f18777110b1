//! Exactly-once accounting: every send the server acknowledged must be pulled by its
//! destination exactly once, intact, with the message id the acknowledgement gave.
//!
//! Each event-loop thread keeps its own ledger (no locking on the hot path); they are merged
//! and judged once every queue has been drained. Receipts may be recorded before the
//! acknowledgement they match (the receiver can run on another thread than the sender), so
//! nothing is judged until the end.

use std::collections::HashMap;

use messageu_protocol::MessageId;

use crate::record::Stamp;

/// What became of one send request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Acknowledged {
        destination: u32,
        id: MessageId,
    },
    /// Failed or timed out: the server may or may not have stored it.
    Unacknowledged,
}

/// One message as a pull reply delivered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    pub stamp: Stamp,
    /// The client whose queue held it.
    pub receiver: u32,
    pub id: MessageId,
    /// The sender id and message type in the pull reply are the ones sent.
    pub envelope_matches: bool,
}

/// Sends and receipts seen by one or more event loops.
#[derive(Debug, Default)]
pub struct Ledger {
    sends: HashMap<Stamp, Fate>,
    receipts: Vec<Receipt>,
    /// Delivered contents that are not a benchmark record at all.
    garbled: u64,
}

/// The judgement of a ledger after the final drain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verdict {
    pub acknowledged: u64,
    /// Sends that failed or timed out; the server owes nothing for them.
    pub unacknowledged: u64,
    /// Messages pulled, in total.
    pub delivered: u64,
    /// Unacknowledged sends that were delivered anyway (stored, but the reply was lost).
    pub delivered_unacknowledged: u64,
    /// Acknowledged, never pulled.
    pub lost: u64,
    /// Pulls of a message beyond its first.
    pub duplicated: u64,
    /// Pulled with a content, sender, type, destination or message id other than sent.
    pub corrupted: u64,
}

impl Verdict {
    /// Every acknowledged message delivered exactly once, intact.
    pub fn is_exactly_once(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.corrupted == 0
    }
}

impl Ledger {
    pub fn acknowledged(&mut self, stamp: Stamp, destination: u32, id: MessageId) {
        self.sends
            .insert(stamp, Fate::Acknowledged { destination, id });
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

    /// Adds another loop's sends and receipts; senders are never shared between loops.
    pub fn merge(&mut self, other: Ledger) {
        self.sends.extend(other.sends);
        self.receipts.extend(other.receipts);
        self.garbled += other.garbled;
    }

    /// Judges the ledger; meaningful only once every queue has been drained.
    pub fn verdict(&self) -> Verdict {
        let mut verdict = Verdict {
            delivered: self.receipts.len() as u64 + self.garbled,
            corrupted: self.garbled,
            ..Verdict::default()
        };
        let mut pulls: HashMap<Stamp, u64> = HashMap::with_capacity(self.sends.len());
        for receipt in &self.receipts {
            let intact = match self.sends.get(&receipt.stamp) {
                // A record the benchmark never sent: its stamp was altered.
                None => false,
                Some(Fate::Acknowledged { destination, id }) => {
                    receipt.envelope_matches
                        && receipt.receiver == *destination
                        && receipt.id == *id
                }
                Some(Fate::Unacknowledged) => receipt.envelope_matches,
            };
            if !intact {
                verdict.corrupted += 1;
            }
            *pulls.entry(receipt.stamp).or_default() += 1;
        }
        for (stamp, fate) in &self.sends {
            let count = pulls.get(stamp).copied().unwrap_or(0);
            verdict.duplicated += count.saturating_sub(1);
            match fate {
                Fate::Acknowledged { .. } => {
                    verdict.acknowledged += 1;
                    if count == 0 {
                        verdict.lost += 1;
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

    fn stamp(sender: u32, seq: u64) -> Stamp {
        Stamp { sender, seq }
    }

    fn receipt(stamp: Stamp, receiver: u32, id: u32) -> Receipt {
        Receipt {
            stamp,
            receiver,
            id: MessageId(id),
            envelope_matches: true,
        }
    }

    #[test]
    fn each_acknowledged_message_pulled_once_is_exactly_once() {
        let mut ledger = Ledger::default();
        ledger.acknowledged(stamp(0, 0), 1, MessageId(10));
        ledger.acknowledged(stamp(1, 0), 0, MessageId(11));
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
        ledger.acknowledged(stamp(3, 9), 4, MessageId(1));
        assert!(ledger.verdict().is_exactly_once());
    }

    #[test]
    fn never_pulled_is_lost_and_pulled_twice_is_duplicated() {
        let mut ledger = Ledger::default();
        ledger.acknowledged(stamp(0, 0), 1, MessageId(1));
        ledger.acknowledged(stamp(0, 1), 1, MessageId(2));
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
            ledger.acknowledged(stamp(0, seq), 1, MessageId(seq as u32));
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
        sender_side.acknowledged(stamp(0, 0), 1, MessageId(1));
        let mut receiver_side = Ledger::default();
        receiver_side.received(receipt(stamp(0, 0), 1, 1));
        assert_eq!(sender_side.verdict().lost, 1);
        sender_side.merge(receiver_side);
        assert!(sender_side.verdict().is_exactly_once());
    }
}
