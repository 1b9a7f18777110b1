//! The SQLite backend: one connection, WAL journal, group commit, cached statements.

use std::collections::HashMap;
use std::fs::File;
use std::mem;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{ffi, params, Connection, OpenFlags, OptionalExtension};

use super::spool::{self, Spool};
use super::{
    access, migrations, Committed, ContentReader, ContentSink, ContentStore, Delivered, Durability,
    LargeContent, LogFlush, NewContent, NewMessage, PullBudget, QueueStats, Store, StoreError,
    StoredContent, StoredMessage,
};
use crate::protocol::replies::PULLED_MESSAGE_HEADER_LEN;
use crate::protocol::{ClientId, MessageId, PublicKey, PUBLIC_KEY_LEN};

/// How long LastSeen updates may wait in memory: written with every batch, they cost one
/// UPDATE per request, more than the messages themselves, and a read-only load would pay an
/// fsync per batch for a timestamp.
const LAST_SEEN_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// How many taken message ids an insert steps over before giving up.
const MESSAGE_ID_ATTEMPTS: u32 = 1 << 16;
/// How many random client ids a registration tries.
const CLIENT_ID_ATTEMPTS: u32 = 8;
/// Pages a write may need beyond its bytes: index and interior pages.
const ROOM_MARGIN_PAGES: u64 = 8;
/// Log pages after which a commit also checkpoints the log into the database. A checkpoint
/// flushes both files and holds up that commit's round; under churn the same pages are
/// rewritten, so rarer checkpoints write little more each, and delay fewer rounds.
const WAL_CHECKPOINT_PAGES: i64 = 8000;
/// How long a reading of the free disk space is trusted.
const DISK_CHECK_INTERVAL: Duration = Duration::from_millis(100);

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
    wal_path: std::path::PathBuf,
    /// LastSeen times (Unix seconds) not yet written.
    last_seen: HashMap<ClientId, i64>,
    last_seen_flushed: Instant,
    next_message_id: u32,
    /// Every registered client's public key (`None`: the stored key is malformed). Ids are
    /// never deleted, so the caller and destination checks and key lookups of every request
    /// need no query: 176 bytes per client.
    clients: HashMap<ClientId, Option<PublicKey>>,
    /// Clients registered in the current batch, forgotten again if it rolls back.
    batch_registered: Vec<ClientId>,
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
    /// The queues as committed, and what the current batch changes in them.
    queue: QueueStats,
    batch_queue: QueueChange,
}

/// Messages a batch stores and deletes, applied to the queue counts if it commits.
#[derive(Default, Clone, Copy)]
struct QueueChange {
    stored: u64,
    stored_bytes: u64,
    delivered: u64,
    delivered_bytes: u64,
}

/// The batch's bookkeeping as it stood when a request began. A request's only writes are
/// inserted rows (a registration, a message), so a request that fails is undone by deleting
/// the rows it inserted, inside the batch's transaction: the effect of a savepoint, at no
/// cost to the requests that succeed (a `SAVEPOINT` and `RELEASE` pair around every request
/// made a send-pull request cost a quarter more instructions under callgrind).
struct RequestMark {
    /// Clients registered in the batch before the request; those after it are the request's.
    registered: usize,
    /// Messages the request inserted.
    messages: Vec<MessageId>,
    contents: usize,
    removals: usize,
    acknowledges: bool,
    queue: QueueChange,
}

impl SqliteStore {
    /// Opens (creating if needed) the database and brings its schema up to date. The file is
    /// locked for this process alone: message ids and in-flight deliveries live in memory,
    /// so two servers on one database would corrupt each other's queues. Large contents go
    /// to the spool folder `<path>.spool`, where uploads must leave `min_free_space` bytes.
    pub fn open(
        path: &Path,
        durability: Durability,
        min_free_space: u64,
    ) -> Result<SqliteStore, StoreError> {
        check_free_space(path, min_free_space)
            .and_then(|()| SqliteStore::open_checked(path, durability, min_free_space))
            .map_err(|error| match error {
                // SQLite's messages and some I/O errors do not say what is wrong.
                StoreError::Sqlite(_) | StoreError::File { .. } => {
                    match access::diagnose(path, &spool::dir_of(path)) {
                        Some(problem) => problem.into(),
                        None => error,
                    }
                }
                error => error,
            })
    }

    fn open_checked(
        path: &Path,
        durability: Durability,
        min_free_space: u64,
    ) -> Result<SqliteStore, StoreError> {
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // No waiting on a lock: only another process can hold one, and start-up should then
        // fail at once with a clear error.
        conn.busy_timeout(Duration::ZERO)?;
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
        // Before anything is written: switching to WAL alone rewrites the file's header.
        migrations::check(&conn)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Commits never wait for the disk themselves; with durability full the log is flushed
        // after the commits that need it (see `log_flush`).
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
        conn.set_prepared_statement_cache_capacity(32);
        migrations::apply(&mut conn)?;
        let spool = Spool::open(path, min_free_space, durability == Durability::Full)?;
        recover_spool(&conn, &spool)?;
        let page_size = conn.pragma_query_value(None, "page_size", |row| row.get(0))?;
        let clients = load_clients(&conn)?;
        let queue = count_queue(&conn)?;
        let last_id: Option<u32> = conn
            .query_row(
                "SELECT ID FROM messages ORDER BY rowid DESC LIMIT 1",
                [],
                |row| row.get(0),
            )
            .optional()?;
        Ok(SqliteStore {
            conn,
            in_batch: false,
            batch_aborted: false,
            batch_acknowledges: false,
            wal: None,
            durable: durability == Durability::Full,
            wal_path: wal_path(path),
            last_seen: HashMap::new(),
            last_seen_flushed: Instant::now(),
            clients,
            batch_registered: Vec::new(),
            next_message_id: last_id.map_or(1, following_message_id),
            page_size,
            spool,
            batch_contents: Vec::new(),
            batch_removals: Vec::new(),
            request: None,
            max_pages: None,
            spare_disk: None,
            queue,
            batch_queue: QueueChange::default(),
        })
    }

    /// Caps the database file at about `bytes`: a quota, and a way to test a full disk.
    pub fn limit_size(&mut self, bytes: u64) -> Result<(), StoreError> {
        let pages = (bytes / self.page_size).max(1);
        self.conn.pragma_update(None, "max_page_count", pages)?;
        self.max_pages = Some(pages);
        Ok(())
    }

    /// Refuses a write of about `bytes` that the database could not take. On a full disk
    /// SQLite rolls back the whole transaction, so the write must fail before it is tried,
    /// or every other reply of its batch would fail with it.
    fn ensure_room(&mut self, bytes: u64) -> Result<(), StoreError> {
        let needed = bytes.div_ceil(self.page_size) + ROOM_MARGIN_PAGES;
        // Cached statements: this runs for every insert.
        let pragma = |sql| -> Result<u64, StoreError> {
            Ok(self
                .conn
                .prepare_cached(sql)?
                .query_row([], |row| row.get(0))?)
        };
        let free_pages = pragma("PRAGMA freelist_count")?;
        if needed <= free_pages {
            return Ok(());
        }
        let growth = needed - free_pages;
        let no_space = |available| StoreError::NoSpace {
            len: bytes,
            available,
        };
        if let Some(max_pages) = self.max_pages {
            let page_count = pragma("PRAGMA page_count")?;
            if page_count + growth > max_pages {
                let left = max_pages.saturating_sub(page_count) + free_pages;
                return Err(no_space(left * self.page_size));
            }
        }
        let now = Instant::now();
        let spare = match self.spare_disk {
            Some((at, spare)) if now.duration_since(at) < DISK_CHECK_INTERVAL => spare,
            _ => {
                let spare = self.spool.spare_space()?;
                self.spare_disk = Some((now, spare));
                spare
            }
        };
        // The pages go to the write-ahead log first, then to the database file.
        if 2 * growth * self.page_size > spare {
            return Err(no_space(spare));
        }
        Ok(())
    }

    /// Runs one operation of the batch, noticing when a failure made SQLite roll back the
    /// whole transaction.
    fn run<T>(
        &mut self,
        operation: impl FnOnce(&mut Self) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.batch_aborted {
            return Err(StoreError::BatchAborted);
        }
        let result = operation(self);
        if result.is_err() && self.in_batch && self.conn.is_autocommit() {
            self.batch_aborted = true;
        }
        result
    }

    fn flush_last_seen(&mut self) -> Result<(), StoreError> {
        let mut update = self.conn.prepare_cached(
            "UPDATE clients SET LastSeen = strftime('%Y-%m-%dT%H:%M:%SZ', ?2, 'unixepoch') WHERE ID = ?1",
        )?;
        for (id, seconds) in &self.last_seen {
            update.execute(params![&id.0[..], seconds])?;
        }
        drop(update);
        self.last_seen.clear();
        self.last_seen_flushed = Instant::now();
        Ok(())
    }

    /// Deletes the rows a failed request inserted.
    fn delete_inserted(
        &mut self,
        clients: &[ClientId],
        messages: &[MessageId],
    ) -> Result<(), StoreError> {
        let mut delete = self
            .conn
            .prepare_cached("DELETE FROM clients WHERE ID = ?1")?;
        for id in clients {
            delete.execute([&id.0[..]])?;
        }
        let mut delete = self
            .conn
            .prepare_cached("DELETE FROM messages WHERE ID = ?1")?;
        for id in messages {
            delete.execute([id.0])?;
        }
        Ok(())
    }

    fn try_insert_message(
        &mut self,
        id: u32,
        message: &NewMessage<'_>,
    ) -> Result<bool, StoreError> {
        let mut insert = self.conn.prepare_cached(
            "INSERT INTO messages (ID, ToClient, FromClient, Type, Content, SpoolFile, SpoolSize) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        let (content, spool_file, spool_size): (&[u8], _, _) = match &message.content {
            NewContent::Inline(bytes) => (bytes, None, None),
            NewContent::Large(content) => (&[], Some(content.key()), Some(content.len())),
        };
        inserted_unless_id_taken(insert.execute(params![
            id,
            &message.to.0[..],
            &message.from.0[..],
            message.kind as u8,
            content,
            spool_file,
            spool_size
        ]))
    }

    /// What makes the commits so far durable: a flush of the write-ahead log, to run off the
    /// event loop. The first time, the log's folder entry is flushed here. The log file is
    /// kept open by SQLite for the connection's life (exclusive locking mode) and reused from
    /// its start after checkpoints, so one handle stays its file.
    fn log_flush(&mut self) -> Result<LogFlush, StoreError> {
        let file_error = |path: &Path| {
            let path = path.to_owned();
            move |source| StoreError::File { path, source }
        };
        let wal = match &self.wal {
            Some(wal) => wal,
            None => {
                let wal = File::open(&self.wal_path).map_err(file_error(&self.wal_path))?;
                let dir = self
                    .wal_path
                    .parent()
                    .filter(|dir| !dir.as_os_str().is_empty());
                if let Some(dir) = dir {
                    File::open(dir)
                        .and_then(|dir| dir.sync_all())
                        .map_err(file_error(dir))?;
                }
                self.wal.insert(wal)
            }
        };
        let handle = wal.try_clone().map_err(file_error(&self.wal_path))?;
        Ok(LogFlush::new(move || handle.sync_data()))
    }

    /// Ends the batch's spool bookkeeping: new contents are kept or removed, deleted
    /// messages' files removed or kept, as the transaction went.
    fn settle_spool(&mut self, committed: bool) {
        for content in self.batch_contents.drain(..) {
            if committed {
                content.keep();
            }
        }
        let removals = mem::take(&mut self.batch_removals);
        if committed {
            for name in &removals {
                self.spool.remove(name);
            }
        }
    }
}

/// Refuses a minimum free space larger than the database's file system, which would refuse
/// every send; warns when it is more than is free now.
fn check_free_space(path: &Path, min_free: u64) -> Result<(), StoreError> {
    let folder = access::folder_of(path);
    let file_error = |source| StoreError::File {
        path: folder.to_owned(),
        source,
    };
    let total = fs4::total_space(folder).map_err(file_error)?;
    if min_free > total {
        return Err(StoreError::MinFreeSpaceTooLarge { min_free, total });
    }
    let available = fs4::available_space(folder).map_err(file_error)?;
    if min_free > available {
        log::warn!(
            "the minimum free space (--min-free-space) of {min_free} bytes exceeds the \
             {available} bytes free now: sends are refused until space is freed"
        );
    }
    Ok(())
}

/// The write-ahead log of the database at `path`.
fn wal_path(path: &Path) -> std::path::PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    std::path::PathBuf::from(wal)
}

/// The registered clients and their keys, for the in-memory index. Rows whose id is not
/// 16 bytes (from an adopted database) cannot be addressed by any request and are left out.
fn load_clients(conn: &Connection) -> Result<HashMap<ClientId, Option<PublicKey>>, StoreError> {
    let mut clients = HashMap::new();
    let mut query = conn.prepare("SELECT ID, PublicKey FROM clients")?;
    let mut rows = query.query([])?;
    while let Some(row) = rows.next()? {
        let Some(id) = ClientId::from_slice(row.get_ref(0)?.as_blob()?) else {
            continue;
        };
        let key = row
            .get_ref(1)?
            .as_blob()
            .ok()
            .and_then(|key| <[u8; PUBLIC_KEY_LEN]>::try_from(key).ok())
            .map(PublicKey);
        clients.insert(id, key);
    }
    Ok(clients)
}

/// The queue counts at start-up: one pass over the table, so that later they are kept as
/// writes commit instead of counted.
fn count_queue(conn: &Connection) -> Result<QueueStats, StoreError> {
    let (messages, bytes) = conn.query_row(
        "SELECT count(*), coalesce(sum(coalesce(SpoolSize, length(Content))), 0) FROM messages",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    Ok(QueueStats {
        messages,
        bytes,
        ..QueueStats::default()
    })
}

/// Removes spool files no row names, and the rows whose file is missing or cut short: with
/// durability normal, a power cut can keep a row while losing its file's data.
fn recover_spool(conn: &Connection, spool: &Spool) -> Result<(), StoreError> {
    let mut referenced = HashMap::new();
    let mut query =
        conn.prepare("SELECT SpoolFile, SpoolSize FROM messages WHERE SpoolFile IS NOT NULL")?;
    let mut rows = query.query([])?;
    while let Some(row) = rows.next()? {
        referenced.insert(row.get::<_, String>(0)?, row.get::<_, u64>(1)?);
    }
    for name in spool.recover(&referenced)? {
        log::error!("message content {name} is missing or incomplete; dropping its message");
        conn.execute("DELETE FROM messages WHERE SpoolFile = ?1", [&name])?;
    }
    Ok(())
}

/// Whether an insert succeeded (`true`) or found its id taken (`false`). Other constraint
/// failures, such as a column an adopted database requires, are errors: retrying them with
/// another id would never succeed.
fn inserted_unless_id_taken(result: rusqlite::Result<usize>) -> Result<bool, StoreError> {
    match result {
        Ok(_) => Ok(true),
        Err(rusqlite::Error::SqliteFailure(error, _))
            if error.extended_code == ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                || error.extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE =>
        {
            Ok(false)
        }
        Err(error) => Err(error.into()),
    }
}

/// Message ids run 1..=u32::MAX and wrap, skipping 0.
fn following_message_id(id: u32) -> u32 {
    id.checked_add(1).unwrap_or(1)
}

fn unix_seconds(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() as i64)
}

fn client_id(bytes: &[u8]) -> Result<ClientId, StoreError> {
    ClientId::from_slice(bytes).ok_or(StoreError::Corrupt("client id"))
}

impl ContentStore for SqliteStore {
    fn begin_content(&mut self, len: u64) -> Result<ContentSink, StoreError> {
        self.spool.begin_content(len)
    }
}

impl Store for SqliteStore {
    fn begin_batch(&mut self) -> Result<(), StoreError> {
        self.conn.execute_batch("BEGIN")?;
        self.in_batch = true;
        self.batch_aborted = false;
        self.batch_acknowledges = false;
        Ok(())
    }

    fn commit_batch(&mut self) -> Result<Committed, StoreError> {
        if self.batch_aborted {
            self.rollback_batch();
            return Err(StoreError::BatchAborted);
        }
        let due = self.last_seen_flushed.elapsed() >= LAST_SEEN_FLUSH_INTERVAL;
        if !self.last_seen.is_empty() && due {
            if let Err(error) = self.flush_last_seen() {
                self.rollback_batch();
                return Err(error);
            }
        }
        if let Err(error) = self.conn.execute_batch("COMMIT") {
            self.rollback_batch();
            return Err(error.into());
        }
        // Committed: the rows exist, whatever the flush says later, so the index and the
        // spool follow them. A failed flush fails the replies (nothing acknowledged may be
        // lost), which at worst makes a client send a stored message again.
        self.in_batch = false;
        self.batch_registered.clear();
        self.settle_spool(true);
        let change = mem::take(&mut self.batch_queue);
        let queue = &mut self.queue;
        queue.messages = (queue.messages + change.stored).saturating_sub(change.delivered);
        queue.bytes = (queue.bytes + change.stored_bytes).saturating_sub(change.delivered_bytes);
        queue.stored += change.stored;
        queue.delivered += change.delivered;
        if self.durable && self.batch_acknowledges {
            Ok(Committed::AfterFlush(self.log_flush()?))
        } else {
            Ok(Committed::Durable)
        }
    }

    fn rollback_batch(&mut self) {
        if !self.conn.is_autocommit() {
            if let Err(error) = self.conn.execute_batch("ROLLBACK") {
                log::error!("rollback failed: {error}");
            }
        }
        self.in_batch = false;
        self.batch_aborted = false;
        self.batch_queue = QueueChange::default();
        for id in self.batch_registered.drain(..) {
            self.clients.remove(&id);
        }
        self.settle_spool(false);
    }

    fn begin_request(&mut self) -> Result<(), StoreError> {
        if self.batch_aborted {
            return Err(StoreError::BatchAborted);
        }
        self.request = Some(RequestMark {
            registered: self.batch_registered.len(),
            messages: Vec::new(),
            contents: self.batch_contents.len(),
            removals: self.batch_removals.len(),
            acknowledges: self.batch_acknowledges,
            queue: self.batch_queue,
        });
        Ok(())
    }

    fn commit_request(&mut self) -> Result<(), StoreError> {
        self.request = None;
        Ok(())
    }

    fn rollback_request(&mut self) {
        let Some(mark) = self.request.take() else {
            return;
        };
        let registered = self.batch_registered.split_off(mark.registered);
        // An aborted batch is rolled back as a whole anyway.
        if !self.batch_aborted && !self.conn.is_autocommit() {
            if let Err(error) = self.delete_inserted(&registered, &mark.messages) {
                log::error!("cannot undo a failed request's writes: {error}; failing the batch");
                self.batch_aborted = true;
            }
        }
        for id in registered {
            self.clients.remove(&id);
        }
        // Dropped contents remove their files; the removals belonged to undone deletions.
        self.batch_contents.truncate(mark.contents);
        self.batch_removals.truncate(mark.removals);
        self.batch_acknowledges = mark.acknowledges;
        self.batch_queue = mark.queue;
    }

    fn touch_client(&mut self, id: ClientId, at: SystemTime) -> Result<bool, StoreError> {
        let exists = self.client_exists(id)?;
        if exists {
            self.last_seen.insert(id, unix_seconds(at));
        }
        Ok(exists)
    }

    fn client_exists(&mut self, id: ClientId) -> Result<bool, StoreError> {
        if self.batch_aborted {
            return Err(StoreError::BatchAborted);
        }
        Ok(self.clients.contains_key(&id))
    }

    fn register_client(
        &mut self,
        name: &str,
        public_key: &PublicKey,
        at: SystemTime,
    ) -> Result<ClientId, StoreError> {
        self.run(|store| {
            let taken = store
                .conn
                .prepare_cached("SELECT 1 FROM clients WHERE UserName = ?1")?
                .exists([name])?;
            if taken {
                return Err(StoreError::NameTaken);
            }
            store.ensure_room((name.len() + public_key.0.len()) as u64)?;
            let mut insert = store.conn.prepare_cached(
                "INSERT INTO clients (ID, UserName, PublicKey, LastSeen) \
                 VALUES (?1, ?2, ?3, strftime('%Y-%m-%dT%H:%M:%SZ', ?4, 'unixepoch'))",
            )?;
            // A random 122-bit id collides with an existing one practically never; retry anyway.
            for _ in 0..CLIENT_ID_ATTEMPTS {
                let id = ClientId::random();
                let params = params![&id.0[..], name, &public_key.0[..], unix_seconds(at)];
                if inserted_unless_id_taken(insert.execute(params))? {
                    store.batch_acknowledges = true;
                    store.clients.insert(id, Some(public_key.clone()));
                    if store.in_batch {
                        store.batch_registered.push(id);
                    }
                    return Ok(id);
                }
            }
            Err(StoreError::IdsExhausted)
        })
    }

    fn list_clients(
        &mut self,
        except: ClientId,
        each: &mut dyn FnMut(ClientId, &str),
    ) -> Result<(), StoreError> {
        self.run(|store| {
            let mut query = store
                .conn
                .prepare_cached("SELECT ID, UserName FROM clients WHERE ID != ?1 ORDER BY rowid")?;
            let mut rows = query.query([&except.0[..]])?;
            while let Some(row) = rows.next()? {
                let id = client_id(row.get_ref(0)?.as_blob()?)?;
                each(id, row.get_ref(1)?.as_str()?);
            }
            Ok(())
        })
    }

    fn public_key(&mut self, id: ClientId) -> Result<Option<PublicKey>, StoreError> {
        if self.batch_aborted {
            return Err(StoreError::BatchAborted);
        }
        match self.clients.get(&id) {
            None => Ok(None),
            Some(Some(key)) => Ok(Some(key.clone())),
            Some(None) => Err(StoreError::Corrupt("public key")),
        }
    }

    fn insert_message(&mut self, message: NewMessage<'_>) -> Result<MessageId, StoreError> {
        let content_bytes = match &message.content {
            NewContent::Inline(bytes) => bytes.len() as u64,
            NewContent::Large(content) => content.len(),
        };
        let id = self.run(|store| {
            let row_bytes = match &message.content {
                NewContent::Inline(bytes) => bytes.len() as u64,
                NewContent::Large(_) => 0,
            };
            store.ensure_room(row_bytes + PULLED_MESSAGE_HEADER_LEN as u64)?;
            for _ in 0..MESSAGE_ID_ATTEMPTS {
                let id = store.next_message_id;
                store.next_message_id = following_message_id(id);
                if store.try_insert_message(id, &message)? {
                    store.batch_acknowledges = true;
                    return Ok(MessageId(id));
                }
            }
            Err(StoreError::IdsExhausted)
        })?;
        self.batch_queue.stored += 1;
        self.batch_queue.stored_bytes += content_bytes;
        if let Some(request) = &mut self.request {
            request.messages.push(id);
        }
        if let NewContent::Large(content) = message.content {
            self.batch_contents.push(content);
        }
        Ok(id)
    }

    fn queued_messages(
        &mut self,
        to: ClientId,
        budget: PullBudget,
        skip: &dyn Fn(MessageId) -> bool,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.run(|store| {
            // length(Content) comes from the record header; the content itself is read only
            // for messages that fit the budget.
            let mut query = store.conn.prepare_cached(
                "SELECT ID, FromClient, Type, length(Content), Content, SpoolFile, SpoolSize \
                 FROM messages WHERE ToClient = ?1 ORDER BY rowid",
            )?;
            let mut rows = query.query([&to.0[..]])?;
            let mut messages = Vec::new();
            let (mut payload, mut in_memory) = (0u64, 0u64);
            while let Some(row) = rows.next()? {
                let id = MessageId(row.get(0)?);
                if skip(id) {
                    continue;
                }
                let spool_file: Option<String> = row.get(5)?;
                let (content_len, memory) = match spool_file {
                    Some(_) => (row.get::<_, u64>(6)?, 0),
                    None => {
                        let len = row.get::<_, u64>(3)?;
                        (len, len)
                    }
                };
                let entry = PULLED_MESSAGE_HEADER_LEN as u64 + content_len;
                let fits =
                    payload + entry <= budget.payload && in_memory + memory <= budget.in_memory;
                if !messages.is_empty() && !fits {
                    break;
                }
                payload += entry;
                in_memory += memory;
                let content = match spool_file {
                    Some(name) => StoredContent::Streamed {
                        reader: ContentReader::new(store.spool.open_content(&name)?),
                        len: content_len,
                    },
                    None => StoredContent::Inline(row.get_ref(4)?.as_blob()?.to_vec()),
                };
                messages.push(StoredMessage {
                    id,
                    from: client_id(row.get_ref(1)?.as_blob()?)?,
                    kind: row.get(2)?,
                    content,
                });
            }
            Ok(messages)
        })
    }

    fn delete_messages(&mut self, messages: &[Delivered]) -> Result<(), StoreError> {
        self.run(|store| {
            // The sizes come with the ids: returning length(Content) here cost about 4,000
            // instructions a send-pull request under callgrind.
            let mut delete = store
                .conn
                .prepare_cached("DELETE FROM messages WHERE ID = ?1 RETURNING SpoolFile")?;
            for message in messages {
                let mut rows = delete.query([message.id.0])?;
                while let Some(row) = rows.next()? {
                    if let Some(name) = row.get::<_, Option<String>>(0)? {
                        store.batch_removals.push(name);
                    }
                    store.batch_queue.delivered += 1;
                    store.batch_queue.delivered_bytes += message.len;
                }
            }
            Ok(())
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MessageType;
    use crate::store::eventually;

    fn open() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("test.db"), Durability::Normal, 0).unwrap();
        (dir, store)
    }

    fn budget(payload: u64) -> PullBudget {
        PullBudget {
            payload,
            in_memory: u64::MAX,
        }
    }

    fn ids(messages: &[StoredMessage]) -> Vec<MessageId> {
        messages.iter().map(|m| m.id).collect()
    }

    fn key(byte: u8) -> PublicKey {
        PublicKey([byte; PUBLIC_KEY_LEN])
    }

    #[test]
    fn names_are_unique_and_case_sensitive() {
        let (_dir, mut store) = open();
        let now = SystemTime::now();
        store.register_client("Alice", &key(1), now).unwrap();
        assert!(matches!(
            store.register_client("Alice", &key(2), now),
            Err(StoreError::NameTaken)
        ));
        store.register_client("alice", &key(3), now).unwrap();
    }

    #[test]
    fn clients_are_listed_in_registration_order_without_the_caller() {
        let (_dir, mut store) = open();
        let now = SystemTime::now();
        let ids: Vec<_> = ["c", "a", "b"]
            .iter()
            .map(|name| store.register_client(name, &key(0), now).unwrap())
            .collect();
        let mut listed = Vec::new();
        store
            .list_clients(ids[1], &mut |id, name| listed.push((id, name.to_owned())))
            .unwrap();
        assert_eq!(
            listed,
            vec![(ids[0], "c".to_owned()), (ids[2], "b".to_owned())]
        );
    }

    #[test]
    fn queued_messages_respect_order_budget_and_skip() {
        let (_dir, mut store) = open();
        let (to, from) = (ClientId([1; 16]), ClientId([2; 16]));
        let ids: Vec<_> = (0..4u8)
            .map(|n| {
                let content = [n; 100];
                store
                    .insert_message(NewMessage {
                        to,
                        from,
                        kind: MessageType::Text,
                        content: NewContent::Inline(&content),
                    })
                    .unwrap()
            })
            .collect();
        let all = store.queued_messages(to, budget(u64::MAX), &|_| false);
        assert_eq!(self::ids(&all.unwrap()), ids);
        let two = store
            .queued_messages(to, budget(2 * 125 + 124), &|id| id == ids[0])
            .unwrap();
        assert_eq!(self::ids(&two), vec![ids[1], ids[2]]);
        let oversized = store.queued_messages(to, budget(1), &|_| false).unwrap();
        assert_eq!(oversized.len(), 1);
        let memory = PullBudget {
            payload: u64::MAX,
            in_memory: 250,
        };
        let in_memory = store.queued_messages(to, memory, &|_| false).unwrap();
        assert_eq!(self::ids(&in_memory), ids[..2]);
        store.delete_messages(&delivered(&ids[..2], 0)).unwrap();
        let left = store.queued_messages(to, budget(u64::MAX), &|_| false);
        assert_eq!(left.unwrap().len(), 2);
    }

    fn spooled_message(store: &mut SqliteStore, content: &[u8]) -> MessageId {
        let mut sink = store.begin_content(content.len() as u64).unwrap();
        sink.write(content).unwrap();
        store
            .insert_message(NewMessage {
                to: ClientId([1; 16]),
                from: ClientId([2; 16]),
                kind: MessageType::File,
                content: NewContent::Large(sink.make_durable().unwrap()),
            })
            .unwrap()
    }

    /// Pulled messages of `len` content bytes each, as the server deletes them.
    fn delivered(ids: &[MessageId], len: u64) -> Vec<Delivered> {
        ids.iter().map(|&id| Delivered { id, len }).collect()
    }

    fn spool_files(store: &SqliteStore) -> usize {
        std::fs::read_dir(store.spool.dir()).unwrap().count()
    }

    #[test]
    fn spooled_contents_follow_their_rows_through_commit_and_rollback() {
        let (_dir, mut store) = open();
        let to = ClientId([1; 16]);
        store.begin_batch().unwrap();
        spooled_message(&mut store, b"gone");
        store.rollback_batch();
        eventually("the rolled-back content is removed", || {
            spool_files(&store) == 0
        });

        store.begin_batch().unwrap();
        let id = spooled_message(&mut store, b"kept");
        store.commit_batch().unwrap();
        let mut queued = store.queued_messages(to, budget(u64::MAX), &|_| false);
        match queued
            .as_mut()
            .map(|messages| messages.pop().map(|m| m.content))
        {
            Ok(Some(StoredContent::Streamed { reader, len: 4 })) => {
                assert_eq!(std::io::read_to_string(reader).unwrap(), "kept");
            }
            other => panic!("expected a spooled content, got {other:?}"),
        }

        store.begin_batch().unwrap();
        store.delete_messages(&delivered(&[id], 4)).unwrap();
        store.rollback_batch();
        assert_eq!(spool_files(&store), 1);
        store.begin_batch().unwrap();
        store.delete_messages(&delivered(&[id], 4)).unwrap();
        store.commit_batch().unwrap();
        eventually("the deleted content is removed", || {
            spool_files(&store) == 0
        });
    }

    #[test]
    fn reopening_removes_stray_files_and_rows_that_lost_theirs() {
        let (dir, mut store) = open();
        let path = dir.path().join("test.db");
        store.begin_batch().unwrap();
        spooled_message(&mut store, b"whole");
        let cut = spooled_message(&mut store, b"cut short");
        store.commit_batch().unwrap();
        std::fs::write(store.spool.dir().join("stray"), b"partial upload").unwrap();
        let cut_name: String = store
            .conn
            .query_row(
                "SELECT SpoolFile FROM messages WHERE ID = ?1",
                [cut.0],
                |r| r.get(0),
            )
            .unwrap();
        std::fs::write(store.spool.dir().join(&cut_name), b"cut").unwrap();
        Box::new(store).close().unwrap();

        let mut store = SqliteStore::open(&path, Durability::Normal, 0).unwrap();
        let left = store.queued_messages(ClientId([1; 16]), budget(u64::MAX), &|_| false);
        assert_eq!(left.unwrap().len(), 1);
        assert_eq!(spool_files(&store), 1);
    }

    #[test]
    fn message_ids_wrap_and_skip_taken_ones() {
        let (_dir, mut store) = open();
        let (to, from) = (ClientId([1; 16]), ClientId([2; 16]));
        let message = || NewMessage {
            to,
            from,
            kind: MessageType::File,
            content: NewContent::Inline(b"x"),
        };
        store.next_message_id = 1;
        assert_eq!(store.insert_message(message()).unwrap(), MessageId(1));
        store.next_message_id = u32::MAX;
        assert_eq!(
            store.insert_message(message()).unwrap(),
            MessageId(u32::MAX)
        );
        assert_eq!(store.insert_message(message()).unwrap(), MessageId(2));
        let order = ids(&store
            .queued_messages(to, budget(u64::MAX), &|_| false)
            .unwrap());
        assert_eq!(order, vec![MessageId(1), MessageId(u32::MAX), MessageId(2)]);
    }

    #[test]
    fn a_constraint_of_an_adopted_database_fails_instead_of_retrying() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("adopted.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TABLE clients (ID BLOB PRIMARY KEY, UserName TEXT UNIQUE, \
                 PublicKey BLOB, LastSeen TEXT, Extra TEXT NOT NULL)",
            )
            .unwrap();
        let mut store = SqliteStore::open(&path, Durability::Normal, 0).unwrap();
        let result = store.register_client("x", &key(0), SystemTime::now());
        assert!(matches!(result, Err(StoreError::Sqlite(_))), "{result:?}");
    }

    #[test]
    fn the_client_index_follows_commits_rollbacks_and_reopening() {
        let (dir, mut store) = open();
        let now = SystemTime::now();
        store.begin_batch().unwrap();
        let gone = store.register_client("gone", &key(1), now).unwrap();
        assert!(store.client_exists(gone).unwrap());
        store.rollback_batch();
        assert!(!store.client_exists(gone).unwrap());
        assert_eq!(store.public_key(gone).unwrap(), None);

        store.begin_batch().unwrap();
        let kept = store.register_client("kept", &key(2), now).unwrap();
        store.commit_batch().unwrap();
        Box::new(store).close().unwrap();
        let mut store =
            SqliteStore::open(&dir.path().join("test.db"), Durability::Normal, 0).unwrap();
        assert!(store.client_exists(kept).unwrap());
        assert_eq!(store.public_key(kept).unwrap(), Some(key(2)));
        assert!(!store.client_exists(gone).unwrap());
    }

    #[test]
    fn queue_counts_follow_commits_rollbacks_and_reopening() {
        let (dir, mut store) = open();
        let inline = |store: &mut SqliteStore, content: &[u8]| {
            store
                .insert_message(NewMessage {
                    to: ClientId([1; 16]),
                    from: ClientId([2; 16]),
                    kind: MessageType::Text,
                    content: NewContent::Inline(content),
                })
                .unwrap()
        };
        store.begin_batch().unwrap();
        let first = inline(&mut store, b"12345");
        spooled_message(&mut store, &[7; 100]);
        assert_eq!(
            store.queue(),
            QueueStats::default(),
            "counted before the commit"
        );
        store.commit_batch().unwrap();
        let two = QueueStats {
            messages: 2,
            bytes: 105,
            stored: 2,
            delivered: 0,
        };
        assert_eq!(store.queue(), two);

        store.begin_batch().unwrap();
        inline(&mut store, b"rolled back");
        store.delete_messages(&delivered(&[first], 5)).unwrap();
        store.rollback_batch();
        assert_eq!(store.queue(), two);

        store.begin_batch().unwrap();
        store.delete_messages(&delivered(&[first], 5)).unwrap();
        store.commit_batch().unwrap();
        let one = QueueStats {
            messages: 1,
            bytes: 100,
            stored: 2,
            delivered: 1,
        };
        assert_eq!(store.queue(), one);

        Box::new(store).close().unwrap();
        let store = SqliteStore::open(&dir.path().join("test.db"), Durability::Normal, 0).unwrap();
        let reopened = QueueStats {
            messages: 1,
            bytes: 100,
            ..QueueStats::default()
        };
        assert_eq!(store.queue(), reopened);
    }

    #[test]
    fn a_rolled_back_batch_leaves_nothing() {
        let (_dir, mut store) = open();
        store.begin_batch().unwrap();
        store
            .register_client("gone", &key(0), SystemTime::now())
            .unwrap();
        store.rollback_batch();
        let mut count = 0;
        store
            .list_clients(ClientId::default(), &mut |_, _| count += 1)
            .unwrap();
        assert_eq!(count, 0);
    }

    #[test]
    fn last_seen_is_iso_8601_utc() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seen.db");
        let mut store = SqliteStore::open(&path, Durability::Full, 0).unwrap();
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let id = store.register_client("t", &key(0), at).unwrap();
        assert!(store.touch_client(id, at + Duration::from_secs(5)).unwrap());
        assert!(!store.touch_client(ClientId([9; 16]), at).unwrap());
        Box::new(store).close().unwrap();
        let conn = Connection::open(&path).unwrap();
        let seen: String = conn
            .query_row("SELECT LastSeen FROM clients", [], |row| row.get(0))
            .unwrap();
        assert_eq!(seen, "2023-11-14T22:13:25Z");
    }

    #[test]
    fn next_message_id_follows_the_last_stored_one_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ids.db");
        let mut store = SqliteStore::open(&path, Durability::Full, 0).unwrap();
        let message = || NewMessage {
            to: ClientId([1; 16]),
            from: ClientId([2; 16]),
            kind: MessageType::Text,
            content: NewContent::Inline(b""),
        };
        let first = store.insert_message(message()).unwrap();
        Box::new(store).close().unwrap();
        let mut store = SqliteStore::open(&path, Durability::Full, 0).unwrap();
        assert_eq!(
            store.insert_message(message()).unwrap(),
            MessageId(first.0 + 1)
        );
    }

    #[test]
    fn a_failed_request_undoes_its_own_writes_and_keeps_the_rounds_others() {
        let (_dir, mut store) = open();
        let now = SystemTime::now();
        let to = ClientId([1; 16]);
        store.begin_batch().unwrap();
        store.begin_request().unwrap();
        let kept = store.register_client("kept", &key(1), now).unwrap();
        store.commit_request().unwrap();
        store.begin_request().unwrap();
        let undone = store.register_client("undone", &key(2), now).unwrap();
        spooled_message(&mut store, b"undone content");
        store.rollback_request();
        assert!(!store.client_exists(undone).unwrap());
        store.begin_request().unwrap();
        let id = spooled_message(&mut store, b"kept content");
        store.commit_request().unwrap();
        store.commit_batch().unwrap();

        assert!(store.client_exists(kept).unwrap());
        let queued = store.queued_messages(to, budget(u64::MAX), &|_| false);
        assert_eq!(ids(&queued.unwrap()), vec![id]);
        let queue = store.queue();
        assert_eq!(
            (queue.messages, queue.stored),
            (1, 1),
            "the undone message is not counted"
        );
        eventually("the undone content is removed", || spool_files(&store) == 1);
        // The undone name is free again.
        store.begin_batch().unwrap();
        store.begin_request().unwrap();
        assert!(store.register_client("undone", &key(3), now).is_ok());
        store.commit_request().unwrap();
        store.commit_batch().unwrap();
    }
}
