//! A store wrapped to inject faults and delays into a real server.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime};

use messageu::config::Database;
use messageu::protocol::{ClientId, Content, MessageId, Protection, PublicKey};
use messageu::store::{
    Acknowledged, Committed, ContentSink, ContentStore, Delivered, Durability, LogFlush,
    NewContent, NewMessage, PostgresStore, PullBudget, QueueStats, QueuedMessage, SenderQueue,
    SqliteStore, Store, StoreError, StoredAccount, UnsendOutcome,
};

/// A store with faults a request can reach: the public-key lookup panics for one target, a
/// registration of one name panics and a message with one content fails, both after
/// writing, and listing clients takes half a second while `slow_list` is set (holding the
/// event loop); and, if made with [`FaultyStore::slow_flush`], log flushes that take longer.
pub struct FaultyStore {
    inner: Box<dyn Store>,
    slow_list: Arc<AtomicBool>,
    flush_delay: Duration,
}

pub const POISONED: ClientId = ClientId([0xab; 16]);
pub const POISONED_NAME: &str = "poisoned name";
pub const POISONED_CONTENT: &[u8] = b"poisoned content";

impl FaultyStore {
    /// Opens `database` (either backend) and wraps it.
    pub fn open(database: &Database, slow_list: Arc<AtomicBool>) -> Box<dyn Store> {
        Box::new(FaultyStore {
            inner: open_store(database),
            slow_list,
            flush_delay: Duration::ZERO,
        })
    }

    /// Opens `database` with every log flush taking `delay` more (a slow disk).
    pub fn slow_flush(database: &Database, delay: Duration) -> Box<dyn Store> {
        Box::new(FaultyStore {
            inner: open_store(database),
            slow_list: Arc::default(),
            flush_delay: delay,
        })
    }
}

fn open_store(database: &Database) -> Box<dyn Store> {
    match database {
        Database::Sqlite(path) => {
            Box::new(SqliteStore::open(path, Durability::Full, 0).expect("store"))
        }
        Database::Postgres(conninfo) => {
            Box::new(PostgresStore::open(conninfo, Durability::Full).expect("store"))
        }
    }
}

impl ContentStore for FaultyStore {
    fn begin_content(&mut self, len: u64) -> Result<ContentSink, StoreError> {
        self.inner.begin_content(len)
    }
}

impl Store for FaultyStore {
    fn begin_batch(&mut self) -> Result<(), StoreError> {
        self.inner.begin_batch()
    }
    fn commit_batch(&mut self) -> Result<Committed, StoreError> {
        let delay = self.flush_delay;
        Ok(match self.inner.commit_batch()? {
            Committed::AfterFlush(flush) if !delay.is_zero() => {
                Committed::AfterFlush(LogFlush::new(move || {
                    thread::sleep(delay);
                    flush.run()
                }))
            }
            committed => committed,
        })
    }
    fn rollback_batch(&mut self) {
        self.inner.rollback_batch()
    }
    fn begin_request(&mut self) -> Result<(), StoreError> {
        self.inner.begin_request()
    }
    fn commit_request(&mut self) -> Result<(), StoreError> {
        self.inner.commit_request()
    }
    fn rollback_request(&mut self) {
        self.inner.rollback_request()
    }
    fn touch_client(
        &mut self,
        id: ClientId,
        at: SystemTime,
    ) -> Result<Option<Protection>, StoreError> {
        self.inner.touch_client(id, at)
    }
    fn set_protection(&mut self, id: ClientId, protection: Protection) -> Result<(), StoreError> {
        self.inner.set_protection(id, protection)
    }
    fn client_exists(&mut self, id: ClientId) -> Result<bool, StoreError> {
        self.inner.client_exists(id)
    }
    fn register_client(
        &mut self,
        name: &str,
        key: &PublicKey,
        at: SystemTime,
    ) -> Result<ClientId, StoreError> {
        let id = self.inner.register_client(name, key, at)?;
        assert_ne!(name, POISONED_NAME, "injected bug after writing");
        Ok(id)
    }
    fn client_list(&mut self, except: ClientId) -> Result<Content, StoreError> {
        if self.slow_list.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(500));
        }
        self.inner.client_list(except)
    }
    fn public_key(&mut self, id: ClientId) -> Result<Option<PublicKey>, StoreError> {
        assert_ne!(id, POISONED, "injected bug");
        self.inner.public_key(id)
    }
    fn accounts_after(
        &mut self,
        after: u64,
        each: &mut dyn FnMut(StoredAccount<'_>) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        self.inner.accounts_after(after, each)
    }
    fn delete_client(&mut self, id: ClientId) -> Result<(), StoreError> {
        self.inner.delete_client(id)
    }
    fn insert_message(&mut self, message: NewMessage<'_>) -> Result<MessageId, StoreError> {
        let poisoned = matches!(message.content, NewContent::Inline(POISONED_CONTENT));
        let id = self.inner.insert_message(message)?;
        if poisoned {
            return Err(StoreError::Corrupt("injected failure after writing"));
        }
        Ok(id)
    }
    fn queued_messages(
        &mut self,
        to: ClientId,
        budget: PullBudget,
        skip: &dyn Fn(MessageId) -> bool,
    ) -> Result<Vec<QueuedMessage>, StoreError> {
        self.inner.queued_messages(to, budget, skip)
    }
    fn delete_messages(&mut self, messages: &[Delivered]) -> Result<Vec<MessageId>, StoreError> {
        self.inner.delete_messages(messages)
    }
    fn queue_of(&mut self, to: ClientId) -> Result<Vec<SenderQueue>, StoreError> {
        self.inner.queue_of(to)
    }
    fn unsend_message(
        &mut self,
        from: ClientId,
        id: MessageId,
        in_flight: &dyn Fn(MessageId) -> bool,
    ) -> Result<UnsendOutcome, StoreError> {
        self.inner.unsend_message(from, id, in_flight)
    }
    fn acknowledge_messages(
        &mut self,
        to: ClientId,
        ids: &[MessageId],
    ) -> Result<Vec<Acknowledged>, StoreError> {
        self.inner.acknowledge_messages(to, ids)
    }
    fn pulls_write(&self) -> bool {
        self.inner.pulls_write()
    }
    fn queue(&self) -> QueueStats {
        self.inner.queue()
    }
    fn close(self: Box<Self>) -> Result<(), StoreError> {
        self.inner.close()
    }
}
