//! The commit pipeline: the round's transaction, its commit, and the flush that makes it
//! durable. Every request of a round of ready events writes into one transaction (group
//! commit), opened by the first request and committed once every ready connection has been
//! served, with the deletions of delivered messages riding along. A commit that holds
//! acknowledged writes is numbered (its epoch) and flushed by the log-flush worker while the
//! next round runs; the replies it covers wait in their outboxes until that flush reports
//! back. A flush covers every commit made before it. It moves each round's [`Notices`] along
//! with its commit, so that those waiting for messages are woken, and receipts sent, once the
//! writes they tell of are durable and never before.

use std::io;
use std::mem;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use mio::Waker;

use super::deliveries::Deliveries;
use super::durability::{Flushed, Flusher};
use super::notices::{Durable, DurableWith, Notices, SenderReceipt};
use super::outbox::Awaits;
use crate::metrics::{Metrics, StorageStep};
use crate::protocol::{unix_millis, ClientId, Delivery, MessageId, QueuedMessage, Receipt};
use crate::store::{Committed, Delivered, NewsFeed, PullBudget, Store, StoreError};

/// How a round ended.
pub(crate) struct Round {
    /// Connections that staged replies in the round.
    pub touched: Vec<usize>,
    /// The commit whose durability the round's replies wait for; `None` if the round did not
    /// commit, so its replies fail.
    pub epoch: Option<u64>,
}

pub(crate) struct CommitPipeline {
    store: Box<dyn Store>,
    /// The round's transaction is open.
    open: bool,
    touched: Vec<usize>,
    flusher: Flusher,
    /// The last commit that needs a flush to be durable (numbered from 1), and the last one
    /// known durable.
    committed_epoch: u64,
    durable_epoch: u64,
    /// Connections whose replies wait for a flush.
    awaiting_flush: Vec<usize>,
    notices: Notices,
    /// What the servers sharing the store say; `None` alone on it.
    news: Option<NewsFeed>,
}

impl CommitPipeline {
    pub fn start(mut store: Box<dyn Store>, waker: Arc<Waker>) -> io::Result<CommitPipeline> {
        let news_waker = Arc::clone(&waker);
        let news = store
            .hear_others(Box::new(move || {
                if let Err(error) = news_waker.wake() {
                    log::error!("cannot wake the loop for other servers' news: {error}");
                }
            }))
            .map_err(io::Error::other)?;
        Ok(CommitPipeline {
            store,
            news,
            open: false,
            touched: Vec::new(),
            flusher: Flusher::start(waker)?,
            committed_epoch: 0,
            durable_epoch: 0,
            awaiting_flush: Vec::new(),
            notices: Notices::default(),
        })
    }

    /// The store inside the round's transaction, opened by the first request of the round.
    pub fn round(&mut self) -> Result<&mut dyn Store, StoreError> {
        if !self.open {
            self.store.begin_batch()?;
            self.open = true;
        }
        Ok(&mut *self.store)
    }

    /// The store, for work outside the round's transaction (starting an upload).
    pub fn store(&mut self) -> &mut dyn Store {
        &mut *self.store
    }

    /// Connection `key` staged a reply in this round.
    pub fn touched(&mut self, key: usize) {
        self.touched.push(key);
    }

    /// A request of the round stored message `id` for `recipient`.
    pub fn queued_for(&mut self, recipient: ClientId, id: MessageId) {
        self.notices.queued(recipient, id);
    }

    /// A request of the round deleted acknowledged messages, owing these receipts.
    pub fn acknowledged(&mut self, receipts: Vec<SenderReceipt>) {
        self.notices.acknowledged(receipts);
    }

    /// A request of the round deleted account `id`.
    pub fn account_deleted(&mut self, id: ClientId) {
        self.notices.account_deleted(id);
    }

    /// The notices that became durable since the last call (see [`Notices`]), with the news
    /// heard from the servers sharing the store.
    pub fn take_durable(&mut self) -> Durable {
        if let Some(feed) = &mut self.news {
            self.notices.heard(feed.take());
        }
        self.notices.take_durable()
    }

    /// The oldest messages queued for `to` that are durable, leaving out those `skip` names,
    /// within `budget`: what may be pushed. Read outside any round.
    pub fn durable_queued(
        &mut self,
        to: ClientId,
        budget: PullBudget,
        skip: &dyn Fn(MessageId) -> bool,
    ) -> Result<Vec<QueuedMessage>, StoreError> {
        let notices = &self.notices;
        self.store
            .queued_messages(to, budget, &|id| skip(id) || notices.is_undurable(id))
    }

    /// What a reply that delivers `messages` waits for, where the store's pulls only read
    /// (it then tells of nothing its round wrote): the flushes that make those messages
    /// durable, or the round's own if one was stored in it; nothing more if all are durable
    /// already. Where pulls write, the round.
    pub fn delivery_awaits(&self, messages: &[Delivered]) -> Awaits {
        if self.store.pulls_write() {
            return Awaits::Round;
        }
        let mut epoch = self.durable_epoch;
        for message in messages {
            match self.notices.durable_with(message.id) {
                None => {}
                Some(DurableWith::OpenRound) => return Awaits::Round,
                Some(DurableWith::Flush(at)) => epoch = epoch.max(at),
            }
        }
        Awaits::Durable(epoch)
    }

    /// The last commit known durable.
    pub fn durable_epoch(&self) -> u64 {
        self.durable_epoch
    }

    /// Deletes the messages delivered since the last round and commits the round. A round
    /// without acknowledged writes waits for nothing: what it read may still be in a flush,
    /// but only a power cut could undo that, and then its writer was never told it succeeded.
    pub fn commit(
        &mut self,
        deliveries: &mut Deliveries,
        metrics: &Metrics,
        now: Instant,
    ) -> Round {
        let deleting = deliveries.take_due(now);
        let deleted = if deleting.is_empty() {
            None
        } else {
            self.delete(&deleting)
        };
        // Receipts for what this deletion removed: a message acknowledged meanwhile (pushed
        // to another connection, or through another server) was told of already.
        let pulled: Vec<SenderReceipt> = match &deleted {
            Some(ids) => {
                let at_ms = unix_millis(SystemTime::now());
                deleting
                    .iter()
                    .filter(|message| ids.contains(&message.id))
                    .map(|message| pulled_receipt(message, at_ms))
                    .collect()
            }
            None => Vec::new(),
        };
        if self.open && self.news.is_some() {
            let news = self.notices.round_news(&pulled);
            if let Err(error) = self.store.tell_others(&news) {
                log::error!("cannot tell the servers sharing the store the round's news: {error}");
            }
        }
        let touched = mem::take(&mut self.touched);
        let epoch = if !self.open {
            Some(self.durable_epoch)
        } else {
            self.open = false;
            let started = Instant::now();
            let committed = self.store.commit_batch();
            metrics.commit(started.elapsed());
            metrics.set_queue(self.store.queue());
            match committed {
                Ok(Committed::Durable) => {
                    self.notices.round_durable();
                    Some(self.durable_epoch)
                }
                Ok(Committed::AfterFlush(flush)) => {
                    self.committed_epoch += 1;
                    self.flusher.request(self.committed_epoch, flush);
                    self.notices.round_flushing(self.committed_epoch);
                    Some(self.committed_epoch)
                }
                Err(error) => {
                    self.notices.round_failed();
                    metrics.storage_failure(StorageStep::Commit);
                    log::error!(
                        "commit failed, replies on {} connections become errors: {error}",
                        touched.len()
                    );
                    None
                }
            }
        };
        if epoch.is_some() {
            self.notices.pulled(pulled);
        }
        deliveries.settle(deleting, deleted.is_some() && epoch.is_some(), now);
        if let Err(error) = self.store.renew_claims(now, &mut deliveries.in_flight()) {
            log::warn!("cannot renew the claims of messages in delivery: {error}");
        }
        Round { touched, epoch }
    }

    /// Deletes `messages`; returns those that were still there, or `None` if the deletion
    /// failed (it is retried).
    fn delete(&mut self, messages: &[Delivered]) -> Option<Vec<MessageId>> {
        match self
            .round()
            .and_then(|store| store.delete_messages(messages))
        {
            Ok(deleted) => Some(deleted),
            // The store has logged the loss of the database once; retried next round.
            Err(StoreError::Disconnected) => None,
            Err(error) => {
                log::error!(
                    "cannot delete {} delivered messages: {error}",
                    messages.len()
                );
                None
            }
        }
    }

    /// Connection `key` has replies waiting for a flush.
    pub fn await_flush(&mut self, key: usize) {
        self.awaiting_flush.push(key);
    }

    /// The flushes finished since the last call, oldest first.
    pub fn finished_flushes(&mut self, metrics: &Metrics) -> Vec<Flushed> {
        let finished: Vec<Flushed> = self.flusher.finished().collect();
        for flushed in &finished {
            metrics.flush(flushed.took);
            if let Err(error) = &flushed.result {
                log::error!("cannot flush the database log; the replies it covers fail: {error}");
                metrics.storage_failure(StorageStep::Flush);
            }
            self.durable_epoch = self.durable_epoch.max(flushed.through);
            self.notices
                .flushed(flushed.through, flushed.result.is_ok());
        }
        finished
    }

    /// The connections whose replies waited for a flush; those that a later flush still
    /// holds replies of wait again through [`await_flush`](Self::await_flush).
    pub fn take_awaiting(&mut self) -> Vec<usize> {
        let mut waiting = mem::take(&mut self.awaiting_flush);
        waiting.sort_unstable();
        waiting.dedup();
        waiting
    }

    /// Closes the database once the last round has committed.
    pub fn close(self) -> Result<(), StoreError> {
        self.store.close()
    }
}

/// The receipt of a message whose pull reply was written whole, deleted at `at_ms`, to its
/// sender.
fn pulled_receipt(message: &Delivered, at_ms: u64) -> SenderReceipt {
    let receipt = Receipt {
        id: message.id,
        recipient: message.to,
        how: Delivery::Pulled,
        at_ms,
    };
    (message.from, receipt)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use mio::{Poll, Token};

    use super::*;
    use crate::protocol::{ClientId, MessageId, MessageType, PublicKey};
    use crate::store::{Durability, NewContent, NewMessage, SqliteStore};

    struct Fixture {
        _dir: tempfile::TempDir,
        _poll: Poll,
        pipeline: CommitPipeline,
        metrics: Metrics,
    }

    fn fixture(durability: Durability) -> Fixture {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("test.db");
        let store = SqliteStore::open(&path, durability, 0).expect("store");
        let poll = Poll::new().expect("poll");
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).expect("waker"));
        Fixture {
            pipeline: CommitPipeline::start(Box::new(store), waker).expect("pipeline"),
            metrics: Metrics::new(Some(&path)),
            _poll: poll,
            _dir: dir,
        }
    }

    fn register(pipeline: &mut CommitPipeline, name: &str) -> ClientId {
        let store = pipeline.round().expect("round");
        store
            .register_client(name, &PublicKey([7; 160]), SystemTime::now())
            .expect("register")
    }

    /// Waits for the flushes of the commits made so far.
    fn flushed(fixture: &mut Fixture) -> Vec<Flushed> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let done = fixture.pipeline.finished_flushes(&fixture.metrics);
            if !done.is_empty() {
                return done;
            }
            assert!(Instant::now() < deadline, "no flush finished");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn acknowledged_writes_wait_for_their_flush_and_reads_for_nothing() {
        let mut fixture = fixture(Durability::Full);
        let mut deliveries = Deliveries::default();
        let now = Instant::now();
        register(&mut fixture.pipeline, "first");
        fixture.pipeline.touched(3);
        let round = fixture
            .pipeline
            .commit(&mut deliveries, &fixture.metrics, now);
        assert_eq!((round.touched, round.epoch), (vec![3], Some(1)));
        assert_eq!(fixture.pipeline.durable_epoch(), 0);
        fixture.pipeline.await_flush(3);
        fixture.pipeline.await_flush(3);

        // A round that only reads waits for no flush.
        fixture.pipeline.round().expect("round");
        let round = fixture
            .pipeline
            .commit(&mut deliveries, &fixture.metrics, now);
        assert_eq!(round.epoch, Some(0));

        let done = flushed(&mut fixture);
        assert_eq!(done.last().map(|flushed| flushed.through), Some(1));
        assert!(done.iter().all(|flushed| flushed.result.is_ok()));
        assert_eq!(fixture.pipeline.durable_epoch(), 1);
        assert_eq!(fixture.pipeline.take_awaiting(), vec![3]);
        assert!(fixture.pipeline.take_awaiting().is_empty());
    }

    #[test]
    fn durability_normal_needs_no_flush() {
        let mut fixture = fixture(Durability::Normal);
        let mut deliveries = Deliveries::default();
        let id = register(&mut fixture.pipeline, "first");
        fixture.pipeline.queued_for(id, MessageId(1));
        fixture.pipeline.queued_for(id, MessageId(2));
        let round = fixture
            .pipeline
            .commit(&mut deliveries, &fixture.metrics, Instant::now());
        assert_eq!(round.epoch, Some(0));
        assert_eq!(fixture.pipeline.take_durable().recipients, vec![id]);
        assert!(fixture.pipeline.take_durable().recipients.is_empty());
    }

    #[test]
    fn recipients_are_told_once_their_commit_is_flushed() {
        let mut fixture = fixture(Durability::Full);
        let mut deliveries = Deliveries::default();
        let id = register(&mut fixture.pipeline, "first");
        fixture.pipeline.queued_for(id, MessageId(1));
        let round = fixture
            .pipeline
            .commit(&mut deliveries, &fixture.metrics, Instant::now());
        assert_eq!(round.epoch, Some(1));
        assert!(
            fixture.pipeline.take_durable().recipients.is_empty(),
            "not before the flush"
        );
        flushed(&mut fixture);
        assert_eq!(fixture.pipeline.take_durable().recipients, vec![id]);
    }

    #[test]
    fn deletions_of_delivered_messages_ride_on_the_round() {
        let mut fixture = fixture(Durability::Normal);
        let mut deliveries = Deliveries::default();
        let now = Instant::now();
        let (from, to) = (ClientId([1; 16]), ClientId([2; 16]));
        let store = fixture.pipeline.round().expect("round");
        let stored: Vec<MessageId> = (0..2)
            .map(|_| {
                let message = NewMessage {
                    to,
                    from,
                    kind: MessageType::Text,
                    content: NewContent::Inline(b"abc"),
                };
                store.insert_message(message).expect("stored")
            })
            .collect();
        fixture
            .pipeline
            .commit(&mut deliveries, &fixture.metrics, now);
        // The second is gone before its pull reply's deletion (acknowledged after a push).
        let gone = MessageId(stored[1].0 + 1000);
        let ids = [stored[0], stored[1], gone].map(|id| Delivered {
            id,
            len: 3,
            stored_apart: false,
            from,
            to,
        });
        deliveries.start(&ids);
        deliveries.delivered(ids.to_vec());
        let round = fixture
            .pipeline
            .commit(&mut deliveries, &fixture.metrics, now);
        assert!(round.epoch.is_some());
        assert_eq!(deliveries.undeleted(), 0);
        assert!(!deliveries.is_in_flight(stored[0]));
        let receipts = fixture.pipeline.take_durable().receipts;
        let told: Vec<_> = receipts
            .iter()
            .map(|(sender, receipt)| (*sender, receipt.id, receipt.recipient, receipt.how))
            .collect();
        let pulled = |id| (from, id, to, Delivery::Pulled);
        assert_eq!(
            told,
            vec![pulled(stored[0]), pulled(stored[1])],
            "the senders of what was deleted are told, not of what was gone already"
        );
    }
}
