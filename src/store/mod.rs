//! Durable storage of clients and messages, behind a trait so that the handlers and the event
//! loop do not depend on SQLite (a distributed backend can be added beside it).

mod migrations;
mod sqlite;

use std::time::SystemTime;

use crate::protocol::{ClientId, MessageId, MessageType, PublicKey};

pub use sqlite::{Durability, SqliteStore};

/// A message as it waits in a recipient's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub id: MessageId,
    pub from: ClientId,
    /// The type byte as stored; a database adopted from another server may hold any value.
    pub kind: u8,
    pub content: Vec<u8>,
}

/// A message to store.
#[derive(Debug, Clone, Copy)]
pub struct NewMessage<'a> {
    pub to: ClientId,
    pub from: ClientId,
    pub kind: MessageType,
    pub content: &'a [u8],
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the name is already registered")]
    NameTaken,
    #[error("the batch's transaction was rolled back by the database; it is retried as a whole")]
    BatchAborted,
    #[error("no free id found")]
    IdsExhausted,
    #[error("the database holds a malformed {0}")]
    Corrupt(&'static str),
    #[error(
        "the database schema is version {found}, newer than the {supported} this server knows"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("the database holds a value of the wrong type: {0}")]
    Column(#[from] rusqlite::types::FromSqlError),
}

/// The operations the handlers need. All writes between [`Store::begin_batch`] and
/// [`Store::commit_batch`] form one transaction (group commit): nothing is acknowledged until
/// that transaction is durable.
pub trait Store: Send {
    fn begin_batch(&mut self) -> Result<(), StoreError>;
    fn commit_batch(&mut self) -> Result<(), StoreError>;
    /// Drops every write since `begin_batch`.
    fn rollback_batch(&mut self);

    /// Whether `id` is registered; if so, records that it was seen at `at`.
    fn touch_client(&mut self, id: ClientId, at: SystemTime) -> Result<bool, StoreError>;
    fn client_exists(&mut self, id: ClientId) -> Result<bool, StoreError>;
    /// Registers a new client under a fresh random id. Fails with `NameTaken`.
    fn register_client(
        &mut self,
        name: &str,
        public_key: &PublicKey,
        at: SystemTime,
    ) -> Result<ClientId, StoreError>;
    /// Calls `each` for every client except `except`, in registration order.
    fn list_clients(
        &mut self,
        except: ClientId,
        each: &mut dyn FnMut(ClientId, &str),
    ) -> Result<(), StoreError>;
    fn public_key(&mut self, id: ClientId) -> Result<Option<PublicKey>, StoreError>;

    /// Stores a message and returns its id, unique among stored messages.
    fn insert_message(&mut self, message: NewMessage<'_>) -> Result<MessageId, StoreError>;
    /// The oldest messages queued for `to`, in send order, leaving out those `skip` names,
    /// whose entries (25 bytes + content) add up to at most `budget` bytes; the first message
    /// is returned even when it alone exceeds the budget.
    fn queued_messages(
        &mut self,
        to: ClientId,
        budget: usize,
        skip: &dyn Fn(MessageId) -> bool,
    ) -> Result<Vec<StoredMessage>, StoreError>;
    fn delete_messages(&mut self, ids: &[MessageId]) -> Result<(), StoreError>;

    /// Writes what is still buffered and closes the database.
    fn close(self: Box<Self>) -> Result<(), StoreError>;
}

/// Bytes a message takes in a pull reply besides its content: sender, id, type, size.
pub const PULLED_MESSAGE_HEADER_LEN: usize = 16 + 4 + 1 + 4;
