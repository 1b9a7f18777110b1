//! The commit pipeline: the round's transaction, its commit, and the flush that makes it
//! durable. Every request of a round of ready events writes into one transaction (group
//! commit), opened by the first request and committed once every ready connection has been
//! served, with the deletions of delivered messages riding along. A commit that holds
//! acknowledged writes is numbered (its epoch) and flushed by the log-flush worker while the
//! next round runs; the replies it covers wait in their outboxes until that flush reports
//! back. A flush covers every commit made before it. It also tells which recipients got
//! messages in commits that became durable, so that those waiting for them are woken then and
//! never before.

use std::collections::VecDeque;
use std::io;
use std::mem;
use std::sync::Arc;
use std::time::Instant;

use mio::Waker;

use super::deliveries::Deliveries;
use super::durability::{Flushed, Flusher};
use crate::metrics::{Metrics, StorageStep};
use crate::protocol::ClientId;
use crate::store::{Committed, Delivered, Store, StoreError};

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
    /// Recipients of the messages the round's requests stored.
    queued_for: Vec<ClientId>,
    /// Recipients of committed messages, by the epoch whose flush makes them durable.
    flushing_for: VecDeque<(u64, Vec<ClientId>)>,
    /// Recipients of messages now durable, not yet taken.
    durable_for: Vec<ClientId>,
}

impl CommitPipeline {
    pub fn start(store: Box<dyn Store>, waker: Arc<Waker>) -> io::Result<CommitPipeline> {
        Ok(CommitPipeline {
            store,
            open: false,
            touched: Vec::new(),
            flusher: Flusher::start(waker)?,
            committed_epoch: 0,
            durable_epoch: 0,
            awaiting_flush: Vec::new(),
            queued_for: Vec::new(),
            flushing_for: VecDeque::new(),
            durable_for: Vec::new(),
        })
    }

    /// The store, for work outside the round's transaction (starting an upload).
    pub fn store(&mut self) -> &mut dyn Store {
        &mut *self.store
    }

    /// The store inside the round's transaction, opened by the first request of the round.
    pub fn round(&mut self) -> Result<&mut dyn Store, StoreError> {
        if !self.open {
            self.store.begin_batch()?;
            self.open = true;
        }
        Ok(&mut *self.store)
    }

    /// Connection `key` staged a reply in this round.
    pub fn touched(&mut self, key: usize) {
        self.touched.push(key);
    }

    /// A request of the round stored a message for `recipient`.
    pub fn queued_for(&mut self, recipient: ClientId) {
        self.queued_for.push(recipient);
    }

    /// The recipients of messages that became durable since the last call, each once. A
    /// round that failed to commit, or whose flush failed, gives none: its messages may not
    /// survive.
    pub fn take_durable_recipients(&mut self) -> Vec<ClientId> {
        let mut recipients = mem::take(&mut self.durable_for);
        recipients.sort_unstable();
        recipients.dedup();
        recipients
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
        let deleted = !deleting.is_empty() && self.delete(&deleting);
        let touched = mem::take(&mut self.touched);
        let recipients = mem::take(&mut self.queued_for);
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
                    self.durable_for.extend(recipients);
                    Some(self.durable_epoch)
                }
                Ok(Committed::AfterFlush(flush)) => {
                    self.committed_epoch += 1;
                    self.flusher.request(self.committed_epoch, flush);
                    if !recipients.is_empty() {
                        self.flushing_for
                            .push_back((self.committed_epoch, recipients));
                    }
                    Some(self.committed_epoch)
                }
                Err(error) => {
                    metrics.storage_failure(StorageStep::Commit);
                    log::error!(
                        "commit failed, replies on {} connections become errors: {error}",
                        touched.len()
                    );
                    None
                }
            }
        };
        deliveries.settle(deleting, deleted && epoch.is_some(), now);
        Round { touched, epoch }
    }

    fn delete(&mut self, messages: &[Delivered]) -> bool {
        match self
            .round()
            .and_then(|store| store.delete_messages(messages))
        {
            Ok(()) => true,
            Err(error) => {
                log::error!(
                    "cannot delete {} delivered messages: {error}",
                    messages.len()
                );
                false
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
            while let Some((epoch, _)) = self.flushing_for.front() {
                if *epoch > flushed.through {
                    break;
                }
                if let Some((_, recipients)) = self.flushing_for.pop_front() {
                    if flushed.result.is_ok() {
                        self.durable_for.extend(recipients);
                    }
                }
            }
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use mio::{Poll, Token};

    use super::*;
    use crate::protocol::{ClientId, MessageId, PublicKey};
    use crate::store::{Durability, SqliteStore};

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
            metrics: Metrics::new(&path),
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
        fixture.pipeline.queued_for(id);
        fixture.pipeline.queued_for(id);
        let round = fixture
            .pipeline
            .commit(&mut deliveries, &fixture.metrics, Instant::now());
        assert_eq!(round.epoch, Some(0));
        assert_eq!(fixture.pipeline.take_durable_recipients(), vec![id]);
        assert!(fixture.pipeline.take_durable_recipients().is_empty());
    }

    #[test]
    fn recipients_are_told_once_their_commit_is_flushed() {
        let mut fixture = fixture(Durability::Full);
        let mut deliveries = Deliveries::default();
        let id = register(&mut fixture.pipeline, "first");
        fixture.pipeline.queued_for(id);
        let round = fixture
            .pipeline
            .commit(&mut deliveries, &fixture.metrics, Instant::now());
        assert_eq!(round.epoch, Some(1));
        assert!(
            fixture.pipeline.take_durable_recipients().is_empty(),
            "not before the flush"
        );
        flushed(&mut fixture);
        assert_eq!(fixture.pipeline.take_durable_recipients(), vec![id]);
    }

    #[test]
    fn deletions_of_delivered_messages_ride_on_the_round() {
        let mut fixture = fixture(Durability::Normal);
        let mut deliveries = Deliveries::default();
        let now = Instant::now();
        let ids = [41, 42].map(|id| Delivered {
            id: MessageId(id),
            len: 3,
        });
        deliveries.start(&ids);
        deliveries.delivered(ids.to_vec());
        let round = fixture
            .pipeline
            .commit(&mut deliveries, &fixture.metrics, now);
        assert!(round.epoch.is_some());
        assert_eq!(deliveries.undeleted(), 0);
        assert!(!deliveries.is_in_flight(MessageId(41)));
    }
}
