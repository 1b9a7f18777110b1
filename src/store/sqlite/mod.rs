//! The SQLite backend: one connection, WAL journal, group commit, cached statements, the
//! clients indexed in memory, and large contents in a spool folder beside the database.
//!
//! This file owns the [`SqliteStore`] state and maps the [`Store`] operations to the files
//! that do each job: `open.rs` (opening, pragmas, recovery at start-up, room checks and size
//! limits), `batch.rs` (the batch's transaction, per-request undo, log flushes), `clients.rs`
//! (registrations and the in-memory client index), `accounts.rs` (the account list,
//! account deletion and the deleted ids), `messages.rs` (messages and the queue counts),
//! `count.rs` (the queue counts at start-up, taken in the background) and
//! `spool.rs` (the spool folder: this backend's [`ContentStore`]).

mod accounts;
mod batch;
mod clients;
mod count;
mod ids;
mod messages;
mod open;
mod spool;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fs::File;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use rusqlite::Connection;

use super::directory::{Directory, Entry};
use super::queue::QueueChange;
use super::{
    Acknowledged, Committed, ContentSink, ContentStore, Delivered, LargeContent, NewMessage,
    PullBudget, QueueStats, QueuedMessage, SenderQueue, Store, StoreError, StoredAccount,
    UnsendOutcome,
};
use crate::protocol::{ClientId, Content, MessageId, Protection, PublicKey};
use batch::RequestMark;
use clients::IndexedClient;
use count::PendingCount;
use ids::MessageIds;
use spool::Spool;

/// The store on one SQLite database and its spool folder. Its state is kept here; each job's
/// file works on it.
pub struct SqliteStore {
    conn: Connection,
    in_batch: bool,
    /// The database rolled the batch's transaction back (e.g. disk full): every later
    /// operation of the batch fails rather than run outside the transaction.
    batch_aborted: bool,
    /// The batch holds writes that will be acknowledged (messages, registrations), so its
    /// commit must reach the disk before the replies go out. Deletions of delivered messages
    /// need not: losing one to a power cut only delivers a message again.
    batch_acknowledges: bool,
    /// With durability full: the write-ahead log, flushed after each commit that
    /// acknowledges. Opened once the log exists.
    wal: Option<File>,
    durable: bool,
    wal_path: PathBuf,
    /// LastSeen times (Unix seconds) not yet written.
    last_seen: HashMap<ClientId, i64>,
    last_seen_flushed: Instant,
    message_ids: MessageIds,
    /// Every registered client's protection and position, so that the caller and
    /// destination checks of every request need no query: 33-byte buckets, up to two per
    /// client.
    clients: HashMap<ClientId, IndexedClient>,
    /// Every registered client's id and name by position, for list replies: about 40 bytes
    /// per client, shared by the replies being written.
    directory: Directory,
    /// Clients registered in the current batch, forgotten again if it rolls back.
    batch_registered: Vec<ClientId>,
    /// Clients the current batch deleted, with what the index and the directory held: back
    /// if it rolls back.
    batch_deleted: Vec<(IndexedClient, Entry)>,
    /// The registration position the next client gets: above every client's, registered
    /// or deleted, so that no position is given twice (the account list's cursor).
    next_position: i64,
    /// Where registrations draw their ids; tests force collisions through it.
    draw_client_id: fn() -> ClientId,
    /// Protections the current batch changed, with what they were: restored if it rolls
    /// back.
    batch_protections: Vec<(ClientId, Protection)>,
    spool: Spool,
    /// Large contents of the batch's new messages: kept if it commits, removed if not.
    batch_contents: Vec<LargeContent>,
    /// Spool files of the batch's deleted messages, removed once it commits.
    batch_removals: Vec<String>,
    /// Where the request being served began in the batch, to undo its writes alone.
    request: Option<RequestMark>,
    page_size: u64,
    /// The size limit set with [`SqliteStore::limit_size`], in pages.
    max_pages: Option<u64>,
    /// The last reading of the spare disk space, and when it was taken.
    spare_disk: Option<(Instant, u64)>,
    /// Pages the round's writes may still take without looking again (`ensure_room`);
    /// `None`: look.
    room: Option<u64>,
    /// The queues as committed, and what the current batch changes in them.
    queue: QueueStats,
    /// The count of the queues at start-up, until it is in: `queue` holds only what commits
    /// changed since.
    queue_count: Option<PendingCount>,
    batch_queue: QueueChange,
}

impl ContentStore for SqliteStore {
    fn begin_content(&mut self, len: u64) -> Result<ContentSink, StoreError> {
        self.spool.begin_content(len)
    }
}

impl Store for SqliteStore {
    fn begin_batch(&mut self) -> Result<(), StoreError> {
        self.begin_transaction()
    }

    fn commit_batch(&mut self) -> Result<Committed, StoreError> {
        self.commit_transaction()
    }

    fn rollback_batch(&mut self) {
        self.rollback_transaction()
    }

    fn begin_request(&mut self) -> Result<(), StoreError> {
        self.mark_request()
    }

    fn commit_request(&mut self) -> Result<(), StoreError> {
        self.keep_request()
    }

    fn rollback_request(&mut self) {
        self.undo_request()
    }

    fn touch_client(
        &mut self,
        id: ClientId,
        at: SystemTime,
    ) -> Result<Option<Protection>, StoreError> {
        self.touch(id, at)
    }

    fn set_protection(&mut self, id: ClientId, protection: Protection) -> Result<(), StoreError> {
        self.protect(id, protection)
    }

    fn client_exists(&mut self, id: ClientId) -> Result<bool, StoreError> {
        self.is_registered(id)
    }

    fn register_client(
        &mut self,
        name: &str,
        public_key: &PublicKey,
        at: SystemTime,
    ) -> Result<ClientId, StoreError> {
        self.register(name, public_key, at)
    }

    fn client_list(&mut self, except: ClientId) -> Result<Content, StoreError> {
        self.list(except)
    }

    fn public_key(&mut self, id: ClientId) -> Result<Option<PublicKey>, StoreError> {
        self.key_of(id)
    }

    fn accounts_after(
        &mut self,
        after: u64,
        each: &mut dyn FnMut(StoredAccount<'_>) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        self.accounts(after, each)
    }

    fn delete_client(&mut self, id: ClientId) -> Result<(), StoreError> {
        self.delete_account(id)
    }

    fn insert_message(&mut self, message: NewMessage<'_>) -> Result<MessageId, StoreError> {
        self.insert(message)
    }

    fn queued_messages(
        &mut self,
        to: ClientId,
        budget: PullBudget,
        skip: &dyn Fn(MessageId) -> bool,
    ) -> Result<Vec<QueuedMessage>, StoreError> {
        self.queued(to, budget, skip)
    }

    fn delete_messages(&mut self, messages: &[Delivered]) -> Result<Vec<MessageId>, StoreError> {
        self.delete_delivered(messages)
    }

    fn acknowledge_messages(
        &mut self,
        to: ClientId,
        ids: &[MessageId],
    ) -> Result<Vec<Acknowledged>, StoreError> {
        self.acknowledge(to, ids)
    }

    fn queue_of(&mut self, to: ClientId) -> Result<Vec<SenderQueue>, StoreError> {
        self.senders_to(to)
    }

    fn unsend_message(
        &mut self,
        from: ClientId,
        id: MessageId,
        in_flight: &dyn Fn(MessageId) -> bool,
    ) -> Result<UnsendOutcome, StoreError> {
        self.unsend(from, id, in_flight)
    }

    fn pulls_write(&self) -> bool {
        false
    }

    fn queue(&self) -> QueueStats {
        self.queue
    }

    fn close(mut self: Box<Self>) -> Result<(), StoreError> {
        if !self.last_seen.is_empty() {
            self.flush_last_seen()?;
        }
        self.conn.close().map_err(|(_, error)| error.into())
    }
}
