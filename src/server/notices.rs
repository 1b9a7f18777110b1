//! What the loop tells connections once commits are durable: whose queues grew (parked
//! long-polls to answer, subscriptions to push to) and the delivery receipts owed to senders
//! (protocol §E5–§E7). A round's notices wait for its commit, then for the flush that makes it
//! durable; a round that fails, or whose flush fails, tells nothing, since its writes may not
//! survive. It also knows which committed messages are not durable yet, so that none is pushed
//! before its send's reply may go out. A round's notices are also news for the servers
//! sharing the store, whose news joins the durable notices. I/O-free; owned by the commit
//! pipeline.

use std::collections::{HashMap, VecDeque};
use std::mem;

use crate::protocol::{ClientId, MessageId, Receipt};
use crate::store::News;

/// A receipt, and the sender whose subscriptions it goes to.
pub(crate) type SenderReceipt = (ClientId, Receipt);

/// Notices whose writes are durable.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Durable {
    /// Recipients of new messages, each once.
    pub recipients: Vec<ClientId>,
    pub receipts: Vec<SenderReceipt>,
    /// Accounts deleted: their subscriptions end.
    pub deleted: Vec<ClientId>,
    /// News from the servers sharing the store may have been lost: any queue may have grown.
    pub missed: bool,
}

impl Durable {
    fn append(&mut self, other: &mut Durable) {
        self.recipients.append(&mut other.recipients);
        self.receipts.append(&mut other.receipts);
        self.deleted.append(&mut other.deleted);
        self.missed |= mem::take(&mut other.missed);
    }
}

/// When a stored message becomes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DurableWith {
    /// With the open round's commit (and its flush).
    OpenRound,
    /// With the flush of this epoch.
    Flush(u64),
}

/// The notices of one round, with the messages it stored.
#[derive(Debug, Default)]
struct RoundNotices {
    notices: Durable,
    messages: Vec<MessageId>,
}

#[derive(Debug, Default)]
pub(crate) struct Notices {
    round: RoundNotices,
    /// Committed rounds' notices, by the epoch whose flush makes them durable.
    flushing: VecDeque<(u64, RoundNotices)>,
    /// Messages stored in the open round (`None`), or committed as an epoch whose flush has
    /// not finished.
    undurable: HashMap<MessageId, Option<u64>>,
    durable: Durable,
}

impl Notices {
    /// The round stored message `id` for `to`.
    pub fn queued(&mut self, to: ClientId, id: MessageId) {
        self.round.notices.recipients.push(to);
        self.round.messages.push(id);
        self.undurable.insert(id, None);
    }

    /// The round deleted acknowledged messages: their receipts go out once it is durable.
    pub fn acknowledged(&mut self, receipts: Vec<SenderReceipt>) {
        self.round.notices.receipts.extend(receipts);
    }

    /// The round deleted account `id`.
    pub fn account_deleted(&mut self, id: ClientId) {
        self.round.notices.deleted.push(id);
    }

    /// What the round tells the servers sharing the store, with the receipts of the pulled
    /// messages it deletes.
    pub fn round_news(&self, pulled: &[SenderReceipt]) -> Vec<News> {
        let round = &self.round.notices;
        let queued = round.recipients.iter().map(|&to| News::Queued(to));
        let receipts = round.receipts.iter().chain(pulled);
        let receipts = receipts.map(|&(sender, receipt)| News::Receipt(sender, receipt));
        let deleted = round.deleted.iter().map(|&id| News::AccountDeleted(id));
        queued.chain(receipts).chain(deleted).collect()
    }

    /// News from the servers sharing the store, durable there already.
    pub fn heard(&mut self, news: Vec<News>) {
        for item in news {
            match item {
                News::Queued(to) => self.durable.recipients.push(to),
                News::Receipt(sender, receipt) => self.durable.receipts.push((sender, receipt)),
                News::AccountDeleted(id) => self.durable.deleted.push(id),
                News::Missed => self.durable.missed = true,
            }
        }
    }

    /// Pulled messages' deletion committed: their receipts go out now (protocol §E7).
    pub fn pulled(&mut self, receipts: impl IntoIterator<Item = SenderReceipt>) {
        self.durable.receipts.extend(receipts);
    }

    /// The round committed and is durable already.
    pub fn round_durable(&mut self) {
        let mut round = mem::take(&mut self.round);
        for id in &round.messages {
            self.undurable.remove(id);
        }
        self.durable.append(&mut round.notices);
    }

    /// The round committed as `epoch`, durable once that epoch's flush has run.
    pub fn round_flushing(&mut self, epoch: u64) {
        let round = mem::take(&mut self.round);
        if round.notices == Durable::default() {
            return;
        }
        for &id in &round.messages {
            self.undurable.insert(id, Some(epoch));
        }
        self.flushing.push_back((epoch, round));
    }

    /// The round did not commit: its writes are gone.
    pub fn round_failed(&mut self) {
        let round = mem::take(&mut self.round);
        for id in &round.messages {
            self.undurable.remove(id);
        }
    }

    /// The flush through `epoch` ended; if it `succeeded`, its rounds' notices are due.
    pub fn flushed(&mut self, epoch: u64, succeeded: bool) {
        while self.flushing.front().is_some_and(|(at, _)| *at <= epoch) {
            let Some((_, mut round)) = self.flushing.pop_front() else {
                break;
            };
            for id in &round.messages {
                self.undurable.remove(id);
            }
            if succeeded {
                self.durable.append(&mut round.notices);
            }
        }
    }

    /// Whether message `id` is stored (in the open round, or in a commit) but not durable
    /// yet.
    pub fn is_undurable(&self, id: MessageId) -> bool {
        self.undurable.contains_key(&id)
    }

    /// When stored message `id` becomes durable; `None` if it is already.
    pub fn durable_with(&self, id: MessageId) -> Option<DurableWith> {
        self.undurable.get(&id).map(|epoch| match epoch {
            None => DurableWith::OpenRound,
            Some(epoch) => DurableWith::Flush(*epoch),
        })
    }

    /// The notices that became durable since the last call.
    pub fn take_durable(&mut self) -> Durable {
        let mut durable = mem::take(&mut self.durable);
        durable.recipients.sort_unstable();
        durable.recipients.dedup();
        durable
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Delivery;

    const ALICE: ClientId = ClientId([1; 16]);
    const BOB: ClientId = ClientId([2; 16]);

    fn receipt(id: u32) -> SenderReceipt {
        let receipt = Receipt {
            id: MessageId(id),
            recipient: BOB,
            how: Delivery::Acknowledged,
            at_ms: 5,
        };
        (ALICE, receipt)
    }

    #[test]
    fn a_rounds_notices_wait_for_its_flush_and_its_messages_are_undurable_until_then() {
        let mut notices = Notices::default();
        notices.queued(BOB, MessageId(7));
        assert!(
            notices.is_undurable(MessageId(7)),
            "stored in the open round"
        );
        notices.queued(BOB, MessageId(8));
        notices.acknowledged(vec![receipt(3)]);
        assert_eq!(
            notices.durable_with(MessageId(8)),
            Some(DurableWith::OpenRound)
        );
        notices.round_flushing(1);
        assert_eq!(
            notices.durable_with(MessageId(8)),
            Some(DurableWith::Flush(1))
        );
        assert!(notices.is_undurable(MessageId(7)));
        assert_eq!(notices.take_durable(), Durable::default());
        notices.queued(ALICE, MessageId(9));
        notices.round_flushing(2);
        notices.flushed(1, true);
        assert!(!notices.is_undurable(MessageId(8)));
        assert!(notices.is_undurable(MessageId(9)));
        let durable = notices.take_durable();
        assert_eq!(durable.recipients, vec![BOB], "each recipient once");
        assert_eq!(durable.receipts, vec![receipt(3)]);
        notices.flushed(2, false);
        assert!(!notices.is_undurable(MessageId(9)));
        assert_eq!(
            notices.take_durable(),
            Durable::default(),
            "a failed flush tells nothing"
        );
    }

    #[test]
    fn durable_rounds_and_pulls_tell_at_once_and_failed_rounds_never() {
        let mut notices = Notices::default();
        notices.queued(BOB, MessageId(1));
        notices.round_failed();
        assert!(!notices.is_undurable(MessageId(1)), "gone with its round");
        notices.round_durable();
        assert_eq!(notices.take_durable(), Durable::default());
        notices.queued(BOB, MessageId(2));
        notices.round_durable();
        notices.pulled([receipt(4)]);
        let durable = notices.take_durable();
        assert_eq!(
            (durable.recipients, durable.receipts),
            (vec![BOB], vec![receipt(4)])
        );
        assert!(!notices.is_undurable(MessageId(2)));
    }
}
