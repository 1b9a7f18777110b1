//! Opening the database: pragmas, migrations, the spool and its recovery, and what is loaded
//! into memory at start-up; then the limits every insert checks (free pages, the size cap,
//! the disk's spare space).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::accounts::next_position;
use super::clients::load_clients;
use super::count::PendingCount;
use super::ids::MessageIds;
use super::spool::{self, Spool};
use super::SqliteStore;
use crate::protocol::ClientId;
use crate::store::queue::QueueChange;
use crate::store::{access, migrations, Durability, QueueStats, StoreError};

/// Pages a write may need beyond its bytes: index and interior pages.
const ROOM_MARGIN_PAGES: u64 = 8;
/// Log pages after which a commit also checkpoints the log into the database. A checkpoint
/// flushes both files and holds up that commit's round; under churn the same pages are
/// rewritten, so rarer checkpoints write little more each, and delay fewer rounds.
pub(super) const WAL_CHECKPOINT_PAGES: i64 = 8000;
/// How long a reading of the free disk space is trusted.
const DISK_CHECK_INTERVAL: Duration = Duration::from_millis(100);

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
        let (clients, directory) = load_clients(&conn)?;
        let next_position = next_position(&conn)?;
        let queue_count = PendingCount::start(&conn, path)?;
        let last_id: Option<u32> = conn
            .query_row(
                "SELECT ID FROM messages ORDER BY rowid DESC LIMIT 1",
                [],
                |row| row.get(0),
            )
            .optional()?;
        let id_mark: Option<u64> = conn
            .query_row("SELECT Reserved FROM message_ids", [], |row| row.get(0))
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
            directory,
            batch_protections: Vec::new(),
            batch_registered: Vec::new(),
            batch_deleted: Vec::new(),
            next_position,
            draw_client_id: ClientId::random,
            message_ids: MessageIds::resume(id_mark, last_id),
            page_size,
            spool,
            batch_contents: Vec::new(),
            batch_removals: Vec::new(),
            request: None,
            max_pages: None,
            spare_disk: None,
            room: None,
            queue: QueueStats::default(),
            queue_count: Some(queue_count),
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
    /// or every other reply of its batch would fail with it. The room found is kept for the
    /// round's next writes, each taking its own pages and one more (a page split) from it,
    /// while each still needs the whole margin: looking costs a statement or two, and runs
    /// for every insert otherwise.
    pub(super) fn ensure_room(&mut self, bytes: u64) -> Result<(), StoreError> {
        let pages = bytes.div_ceil(self.page_size);
        let needed = pages + ROOM_MARGIN_PAGES;
        let room = match self.room.filter(|&room| needed <= room) {
            Some(room) => room,
            None => self.look_for_room(bytes, needed)?,
        };
        self.room = Some(room.saturating_sub(pages + 1));
        Ok(())
    }

    /// The pages the database can still take, at least `needed`, or why not.
    fn look_for_room(&mut self, bytes: u64, needed: u64) -> Result<u64, StoreError> {
        // Cached statements: this runs for the first insert of a round, and when the room
        // found runs out.
        let pragma = |sql| -> Result<u64, StoreError> {
            Ok(self
                .conn
                .prepare_cached(sql)?
                .query_row([], |row| row.get(0))?)
        };
        let free_pages = pragma("PRAGMA freelist_count")?;
        if needed <= free_pages {
            return Ok(free_pages);
        }
        let no_space = |available| StoreError::NoSpace {
            len: bytes,
            available,
        };
        let mut room = u64::MAX;
        if let Some(max_pages) = self.max_pages {
            let page_count = pragma("PRAGMA page_count")?;
            room = max_pages.saturating_sub(page_count) + free_pages;
            if needed > room {
                return Err(no_space(room * self.page_size));
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
        let growth = needed - free_pages;
        if 2 * growth * self.page_size > spare {
            return Err(no_space(spare));
        }
        Ok(room.min(free_pages + spare / (2 * self.page_size)))
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
fn wal_path(path: &Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
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
