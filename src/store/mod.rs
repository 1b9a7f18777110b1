//! Durable storage of clients and messages, behind a trait so that the handlers and the event
//! loop do not depend on SQLite (a distributed backend can be added beside it).

mod access;
mod content;
pub mod directory;
mod migrations;
mod news;
mod postgres;
mod queue;
mod sqlite;
#[cfg(test)]
mod tests;

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use crate::protocol::{ClientId, MessageId, MessageType, Protection, PublicKey};

// The read side returns what a pull reply carries: messages, their contents in memory or
// streamed.
pub use crate::protocol::{Content, ContentReader, QueuedMessage};
pub use access::Inaccessible;
pub use content::{ContentSink, ContentStore, LargeContent, PendingContent};
pub use migrations::SchemaMismatch;
pub use news::{News, NewsFeed};
pub use postgres::{PostgresStore, DEFAULT_CLAIM_LEASE};
pub use sqlite::SqliteStore;

/// A message a pull reply carries: its id, its content's size for the queue counts, whether
/// the content is stored apart from the message (a large content, streamed), and who sent it
/// to whom, for its receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub id: MessageId,
    pub len: u64,
    pub stored_apart: bool,
    pub from: ClientId,
    pub to: ClientId,
}

/// A message deleted because its recipient acknowledged it, and its sender, for its receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acknowledged {
    pub id: MessageId,
    pub from: ClientId,
}

/// A message to store.
pub struct NewMessage<'a> {
    pub to: ClientId,
    pub from: ClientId,
    pub kind: MessageType,
    pub content: NewContent<'a>,
}

/// The content of a message to store: small ones from the request buffer, large ones
/// already streamed to the backend and made durable.
pub enum NewContent<'a> {
    Inline(&'a [u8]),
    Large(LargeContent),
}

/// A registered client as the account list shows it.
#[derive(Debug, Clone, Copy)]
pub struct StoredAccount<'a> {
    /// Its place in registration order, never given to another client, even after its
    /// deletion: the account list's cursor.
    pub position: u64,
    pub id: ClientId,
    pub name: &'a str,
    /// When a request last named it as the caller, to the second; `None` if never recorded.
    pub last_seen: Option<SystemTime>,
}

/// The messages from one sender that wait in a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderQueue {
    pub from: ClientId,
    pub messages: u64,
    /// Their content bytes.
    pub bytes: u64,
}

/// What an unsend found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsendOutcome {
    /// The message waited, from that sender; it is deleted.
    Deleted,
    /// No such message waits from that sender.
    NotWaiting,
    /// A pull reply carrying it is being written: it stays.
    InDelivery,
}

/// How a committed batch becomes durable.
pub enum Committed {
    /// Already: nothing in it must survive a power cut, or the durability setting says so.
    Durable,
    /// Once this flush has run. The server runs it off the event loop, and releases the
    /// batch's replies after it; flushes coalesce, since each covers every earlier commit.
    AfterFlush(LogFlush),
}

/// What makes the commits taken so far durable, however the backend does it (the SQLite
/// store flushes its write-ahead log). It may run on another thread.
pub struct LogFlush(Box<dyn FnOnce() -> std::io::Result<()> + Send>);

impl LogFlush {
    pub fn new(flush: impl FnOnce() -> std::io::Result<()> + Send + 'static) -> LogFlush {
        LogFlush(Box::new(flush))
    }

    pub fn run(self) -> std::io::Result<()> {
        (self.0)()
    }
}

/// What an acknowledgement waits for: a setting of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Every acknowledged write has reached the disk before its reply.
    Full,
    /// Acknowledged writes survive a crash of the server; the last ones may be lost on a
    /// power cut.
    Normal,
}

impl Durability {
    pub const ALL: [Durability; 2] = [Durability::Full, Durability::Normal];

    /// The name the command line and the logs use.
    pub const fn name(self) -> &'static str {
        match self {
            Durability::Full => "full",
            Durability::Normal => "normal",
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Durability {
    type Err = String;

    fn from_str(text: &str) -> Result<Durability, String> {
        Durability::ALL
            .into_iter()
            .find(|durability| durability.name() == text)
            .ok_or_else(|| format!("expected full or normal, not {text:?}"))
    }
}

/// How much one pull reply may carry.
#[derive(Debug, Clone, Copy)]
pub struct PullBudget {
    /// Payload bytes (25 + content per message); a u32 on the wire.
    pub payload: u64,
    /// Content bytes held in memory (contents stored in rows); large contents are streamed.
    pub in_memory: u64,
    /// Messages.
    pub messages: usize,
}

impl PullBudget {
    /// An empty reply to fill within this budget.
    pub(crate) fn filling(self) -> PullFilling {
        PullFilling {
            budget: self,
            payload: 0,
            in_memory: 0,
            messages: 0,
        }
    }
}

/// A pull reply being filled, message by message in queue order, within its budget: the
/// rule both backends choose by.
pub(crate) struct PullFilling {
    budget: PullBudget,
    payload: u64,
    in_memory: u64,
    messages: usize,
}

impl PullFilling {
    /// Takes the next message, of `len` content bytes, held in memory if `inline`, if it fits;
    /// the first always does, so that a message larger than the budget still goes alone.
    /// False: the reply is full.
    pub fn take(&mut self, len: u64, inline: bool) -> bool {
        let entry = crate::protocol::replies::PULLED_MESSAGE_HEADER_LEN as u64 + len;
        let memory = if inline { len } else { 0 };
        let fits = self.payload + entry <= self.budget.payload
            && self.in_memory + memory <= self.budget.in_memory
            && self.messages < self.budget.messages;
        if self.messages > 0 && !fits {
            return false;
        }
        self.payload += entry;
        self.in_memory += memory;
        self.messages += 1;
        true
    }
}

/// The message queues as of the last commit, kept as writes commit so that reading them
/// scans nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Messages waiting to be pulled.
    pub messages: u64,
    /// Their content bytes, in rows and large contents.
    pub bytes: u64,
    /// Messages stored since the store was opened.
    pub stored: u64,
    /// Messages deleted after delivery since the store was opened.
    pub delivered: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the name is already registered")]
    NameTaken,
    #[error("the batch's transaction was rolled back by the database; it is retried as a whole")]
    BatchAborted,
    #[error("not enough free disk space for a {len}-byte content ({available} bytes available)")]
    NoSpace { len: u64, available: u64 },
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the store's thread: {0}")]
    Thread(std::io::Error),
    #[error("no free id found")]
    IdsExhausted,
    #[error("the database holds a malformed {0}")]
    Corrupt(&'static str),
    #[error(
        "the database schema is version {found}, newer than the {supported} this server knows"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("its schema does not fit this server: {0}")]
    Incompatible(#[from] SchemaMismatch),
    #[error(transparent)]
    Inaccessible(#[from] Inaccessible),
    #[error(
        "the minimum free space (--min-free-space) of {min_free} bytes exceeds the {total} \
         bytes of its whole file system"
    )]
    MinFreeSpaceTooLarge { min_free: u64, total: u64 },
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Postgres(#[from] ::postgres::Error),
    #[error("a statement of the request failed; its writes are undone")]
    RequestAborted,
    #[error("the connection to the database is lost; reconnecting")]
    Disconnected,
    #[error("the database holds a value of the wrong type: {0}")]
    Column(#[from] rusqlite::types::FromSqlError),
}

/// The operations the handlers need. All writes between [`Store::begin_batch`] and
/// [`Store::commit_batch`] form one transaction (group commit): nothing is acknowledged until
/// that transaction is durable, which [`Committed`] says how to wait for. Large contents are
/// begun through the [`ContentStore`] half.
pub trait Store: ContentStore + Send {
    fn begin_batch(&mut self) -> Result<(), StoreError>;
    fn commit_batch(&mut self) -> Result<Committed, StoreError>;
    /// Drops every write since `begin_batch`.
    fn rollback_batch(&mut self);
    /// Starts one request's writes inside the batch, so that a request that fails (or whose
    /// handler panics) undoes its own writes and no other request's.
    fn begin_request(&mut self) -> Result<(), StoreError>;
    /// Keeps the writes since `begin_request` in the batch.
    fn commit_request(&mut self) -> Result<(), StoreError>;
    /// Undoes the writes since `begin_request`; the rest of the batch goes on.
    fn rollback_request(&mut self);

    /// Whether `id` is registered, and then its protection (protocol §E4); if so, records
    /// that it was seen at `at`.
    fn touch_client(
        &mut self,
        id: ClientId,
        at: SystemTime,
    ) -> Result<Option<Protection>, StoreError>;
    /// Protects the registered `id`'s account, or stops protecting it.
    fn set_protection(&mut self, id: ClientId, protection: Protection) -> Result<(), StoreError>;
    fn client_exists(&mut self, id: ClientId) -> Result<bool, StoreError>;
    /// Registers a new client under a fresh random id. Fails with `NameTaken`.
    fn register_client(
        &mut self,
        name: &str,
        public_key: &PublicKey,
        at: SystemTime,
    ) -> Result<ClientId, StoreError>;
    /// The list reply's entries: every client except `except`, in registration order, in
    /// wire form (streamed as the reply is written).
    fn client_list(&mut self, except: ClientId) -> Result<Content, StoreError>;
    fn public_key(&mut self, id: ClientId) -> Result<Option<PublicKey>, StoreError>;
    /// Calls `each` for the clients registered after position `after` (0: from the first),
    /// in registration order, until it breaks.
    fn accounts_after(
        &mut self,
        after: u64,
        each: &mut dyn FnMut(StoredAccount<'_>) -> ControlFlow<()>,
    ) -> Result<(), StoreError>;
    /// Deletes the registered `id`: the client, the messages queued for it and their large
    /// contents. Its name is free again; its id and position are never given out again.
    /// The messages it sent stay queued for their recipients.
    fn delete_client(&mut self, id: ClientId) -> Result<(), StoreError>;

    /// Stores a message and returns its id, unique among stored messages. A large content
    /// belongs to the message once the batch commits, and is removed if it does not.
    fn insert_message(&mut self, message: NewMessage<'_>) -> Result<MessageId, StoreError>;
    /// The oldest messages queued for `to`, in send order, leaving out those `skip` names,
    /// as many as fit the budget; the first message is returned even when it alone exceeds
    /// it.
    fn queued_messages(
        &mut self,
        to: ClientId,
        budget: PullBudget,
        skip: &dyn Fn(MessageId) -> bool,
    ) -> Result<Vec<QueuedMessage>, StoreError>;
    /// Claims the messages a pull reply is to carry against the servers sharing the store;
    /// returns those claimed, in order. A server alone on its store (SQLite) holds them all
    /// already: the server's in-flight set keeps a second reply of its own from carrying them.
    fn claim_messages(
        &mut self,
        messages: Vec<QueuedMessage>,
    ) -> Result<Vec<QueuedMessage>, StoreError> {
        Ok(messages)
    }
    /// Keeps the claims of the messages `in_flight` here and lets the others go, outside any
    /// round; the store decides how often it needs to. Nothing to do alone on a store.
    fn renew_claims(
        &mut self,
        _now: Instant,
        _in_flight: &mut dyn Iterator<Item = MessageId>,
    ) -> Result<(), StoreError> {
        Ok(())
    }
    /// Tells the servers sharing the store `news`, once the round commits (inside it).
    /// Nobody to tell alone on a store.
    fn tell_others(&mut self, _news: &[News]) -> Result<(), StoreError> {
        Ok(())
    }
    /// Starts hearing the news of the servers sharing the store; `wake` wakes the loop when
    /// some arrives. `None` alone on a store.
    fn hear_others(&mut self, _wake: Box<dyn Fn() + Send>) -> Result<Option<NewsFeed>, StoreError> {
        Ok(None)
    }
    /// Deletes messages whose pull reply was written whole; returns those it deleted (one
    /// acknowledged after a push meanwhile, or deleted through another server, is gone
    /// already).
    fn delete_messages(&mut self, messages: &[Delivered]) -> Result<Vec<MessageId>, StoreError>;
    /// Deletes the messages among `ids` that wait for `to`, which acknowledged them; returns
    /// them. Their deletion is acknowledged: durable before the reply.
    fn acknowledge_messages(
        &mut self,
        to: ClientId,
        ids: &[MessageId],
    ) -> Result<Vec<Acknowledged>, StoreError>;
    /// The messages queued for `to`, per sender: most messages first, then the sender whose
    /// oldest message has waited longest.
    fn queue_of(&mut self, to: ClientId) -> Result<Vec<SenderQueue>, StoreError>;
    /// Deletes message `id` if `from` sent it and it waits, unless `in_flight` says a pull
    /// reply carrying it is being written.
    fn unsend_message(
        &mut self,
        from: ClientId,
        id: MessageId,
        in_flight: &dyn Fn(MessageId) -> bool,
    ) -> Result<UnsendOutcome, StoreError>;
    /// The queues as of the last commit.
    fn queue(&self) -> QueueStats;
    /// Whether a pull writes to the store (PostgreSQL's claims, held against the servers
    /// sharing it), so that its reply stands only once its round commits. Where pulls only
    /// read, a reply of durable messages may go out before its round is flushed.
    fn pulls_write(&self) -> bool;

    /// Writes what is still buffered and closes the database.
    fn close(self: Box<Self>) -> Result<(), StoreError>;
}

/// Waits (up to 5 s) until `condition` holds: for contents removed in the background.
#[cfg(test)]
pub(crate) fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}
