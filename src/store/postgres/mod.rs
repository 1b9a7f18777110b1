//! The PostgreSQL backend: one connection for the rounds' transactions (group commit: one
//! transaction per round, its replies released once COMMIT has returned, which with
//! synchronous_commit on means durable), a savepoint per request, and large contents in the
//! database (`contents.rs`) on connections of a pool (`conn.rs`).
//!
//! Unlike the SQLite store it keeps no index of clients in memory: every check reads the
//! database, so that servers sharing it see each other's registrations. For now its calls
//! run synchronously on the event loop's thread, each a round trip to the database; moving
//! them to a store thread of their own is the next step.
//!
//! This file owns the [`PostgresStore`] state, opening, and maps the [`Store`] operations to
//! the files that do each job: `batch.rs` (the round's transaction, savepoints, LastSeen
//! times, reconnecting between rounds through `link.rs`), `clients.rs` (registrations, the account list, account deletion), `messages.rs`
//! (messages and the queue counts) and `migrate.rs` (the schema).

mod batch;
mod claims;
mod clients;
mod conn;
mod contents;
mod known;
mod link;
mod listen;
mod messages;
mod migrate;
mod notify;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::queue::QueueChange;
use super::{
    Acknowledged, Committed, Content, ContentSink, ContentStore, Delivered, Durability,
    LargeContent, NewMessage, News, NewsFeed, PullBudget, QueueStats, QueuedMessage, SenderQueue,
    Store, StoreError, StoredAccount, UnsendOutcome,
};
use crate::protocol::{ClientId, MessageId, Protection, PublicKey};
use batch::RequestMark;
use claims::Claims;
pub use claims::DEFAULT_CLAIM_LEASE;
use conn::{Conn, Pool};
use known::{KnownClients, Raise};
use link::Link;

/// How old an unreferenced content must be before a start removes it: the upload of a
/// server sharing the database may still be waiting for its message's round.
const STRAY_CONTENT_AGE: &str = "10 minutes";

/// The store on one PostgreSQL database.
pub struct PostgresStore {
    conn: Link,
    pool: Arc<Pool>,
    in_batch: bool,
    /// A statement of the batch failed outside a request's savepoint: PostgreSQL has
    /// aborted the transaction, so the batch fails as a whole.
    batch_aborted: bool,
    /// Where the request being served began, to undo its writes alone.
    request: Option<RequestMark>,
    /// A kept request's savepoint is still open: released with the next one's.
    kept_savepoint: bool,
    /// LastSeen times (Unix seconds) not yet written.
    last_seen: HashMap<ClientId, i64>,
    last_seen_flushed: Instant,
    /// Large contents of the batch's new messages: kept if it commits, removed if not.
    batch_contents: Vec<LargeContent>,
    /// The queues as committed, and what the current batch changes in them.
    queue: QueueStats,
    batch_queue: QueueChange,
    claims: Claims,
    /// What the caller and destination checks know without a query (`known.rs`).
    known: KnownClients,
    /// The counters of client changes the round raises (`known.rs`).
    raise: Raise,
    /// The channel news goes on (`notify.rs`).
    channel: String,
}

impl PostgresStore {
    /// Connects to the database `conninfo` names (a libpq connection string, key=value or
    /// URL, with every host and option the `postgres` crate takes, such as several hosts
    /// and `target_session_attrs=read-write`) and brings its schema up to date.
    pub fn open(conninfo: &str, durability: Durability) -> Result<PostgresStore, StoreError> {
        let config: postgres::Config = conninfo.parse()?;
        let mut conn = Conn::connect(&config, durability)?;
        migrate::apply(&mut conn)?;
        let removed = conn.execute(
            "DELETE FROM contents c WHERE Stored < now() - $1::text::interval \
             AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.SpoolFile = c.Key)",
            &[&STRAY_CONTENT_AGE],
        )?;
        if removed > 0 {
            log::info!("removed {removed} contents no message names");
        }
        let queue = messages::count_queue(&mut conn)?;
        let node = conn
            .query_one("SELECT nextval('node_numbers')", &[])?
            .try_get(0)?;
        let schema: String = conn.query_one("SELECT current_schema()", &[])?.try_get(0)?;
        let pool = Arc::new(Pool::new(config, durability));
        Ok(PostgresStore {
            conn: Link::new(conn, Arc::clone(&pool)),
            pool,
            in_batch: false,
            batch_aborted: false,
            request: None,
            kept_savepoint: false,
            last_seen: HashMap::new(),
            last_seen_flushed: Instant::now(),
            batch_contents: Vec::new(),
            queue,
            batch_queue: QueueChange::default(),
            claims: Claims::new(node),
            known: KnownClients::default(),
            raise: Raise::default(),
            channel: notify::channel(&schema),
        })
    }
}

impl ContentStore for PostgresStore {
    fn begin_content(&mut self, len: u64) -> Result<ContentSink, StoreError> {
        contents::start(&self.pool, len).map(ContentSink::new)
    }
}

impl Store for PostgresStore {
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

    fn claim_messages(
        &mut self,
        messages: Vec<QueuedMessage>,
    ) -> Result<Vec<QueuedMessage>, StoreError> {
        self.claim(messages)
    }

    fn renew_claims(
        &mut self,
        now: Instant,
        in_flight: &mut dyn Iterator<Item = MessageId>,
    ) -> Result<(), StoreError> {
        self.renew(now, in_flight)
    }

    fn tell_others(&mut self, news: &[News]) -> Result<(), StoreError> {
        self.tell(news)
    }

    fn hear_others(&mut self, wake: Box<dyn Fn() + Send>) -> Result<Option<NewsFeed>, StoreError> {
        let feed = listen::start(
            self.pool.config().clone(),
            self.channel.clone(),
            self.claims.node,
            wake,
        )
        .map_err(StoreError::Thread)?;
        Ok(Some(feed))
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
        true
    }

    fn queue(&self) -> QueueStats {
        self.queue
    }

    fn close(mut self: Box<Self>) -> Result<(), StoreError> {
        if self.in_batch {
            self.rollback_transaction();
        }
        if !self.last_seen.is_empty() {
            self.flush_last_seen()?;
        }
        // Messages whose replies were given up are free for the next server at once.
        self.release_claims()
    }
}
