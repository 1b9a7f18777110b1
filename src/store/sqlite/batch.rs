//! The batch: one transaction per round, its commit and the log flush that makes it durable,
//! and the per-request undo inside it ([`RequestMark`]); the LastSeen times written with it.

use std::fs::File;
use std::mem;
use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::params;

use super::SqliteStore;
use crate::protocol::{ClientId, MessageId};
use crate::store::queue::QueueChange;
use crate::store::{Committed, LogFlush, StoreError};

/// How long LastSeen updates may wait in memory: written with every batch, they cost one
/// UPDATE per request, more than the messages themselves, and a read-only load would pay an
/// fsync per batch for a timestamp.
const LAST_SEEN_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// The batch's bookkeeping as it stood when a request began. Most requests' only writes are
/// inserted rows (a registration, a message) or a protection set, so a request that fails is
/// undone by deleting the rows it inserted (and writing the protection back), inside the
/// batch's transaction: the effect of a savepoint, at no
/// cost to the requests that succeed (a `SAVEPOINT` and `RELEASE` pair around every request
/// made a send-pull request cost a quarter more instructions under callgrind). The rare
/// requests that delete rows (unsend, account deletion) take a real savepoint first
/// ([`SqliteStore::savepoint_request`]): only they pay for it.
pub(super) struct RequestMark {
    /// Clients registered in the batch before the request; those after it are the request's.
    registered: usize,
    /// Clients deleted in the batch before the request; those after it are the request's.
    deleted: usize,
    savepoint: Savepoint,
    /// Protections changed in the batch before the request; those after it are the request's.
    protections: usize,
    /// Messages the request inserted.
    pub(super) messages: Vec<MessageId>,
    contents: usize,
    removals: usize,
    acknowledges: bool,
    queue: QueueChange,
}

/// Whether the request has taken a savepoint, which its undo rolls back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Savepoint {
    NotTaken,
    Taken,
}

impl SqliteStore {
    /// `Store::begin_batch`: opens the round's transaction.
    pub(super) fn begin_transaction(&mut self) -> Result<(), StoreError> {
        self.conn.execute_batch("BEGIN")?;
        self.room = None;
        self.in_batch = true;
        self.batch_aborted = false;
        self.batch_acknowledges = false;
        Ok(())
    }

    /// `Store::commit_batch`: commits, settles the index, the spool and the queue counts,
    /// and says whether the log must be flushed.
    pub(super) fn commit_transaction(&mut self) -> Result<Committed, StoreError> {
        if self.batch_aborted {
            self.rollback_transaction();
            return Err(StoreError::BatchAborted);
        }
        let due = self.last_seen_flushed.elapsed() >= LAST_SEEN_FLUSH_INTERVAL;
        if !self.last_seen.is_empty() && due {
            if let Err(error) = self.flush_last_seen() {
                self.rollback_transaction();
                return Err(error);
            }
        }
        if let Err(error) = self.conn.execute_batch("COMMIT") {
            self.rollback_transaction();
            return Err(error.into());
        }
        // Committed: the rows exist, whatever the flush says later, so the index and the
        // spool follow them. A failed flush fails the replies (nothing acknowledged may be
        // lost), which at worst makes a client send a stored message again.
        self.in_batch = false;
        self.message_ids.committed();
        self.batch_registered.clear();
        self.batch_deleted.clear();
        self.batch_protections.clear();
        self.settle_spool(true);
        let change = mem::take(&mut self.batch_queue);
        change.apply(&mut self.queue);
        if let Some(pending) = self.queue_count.take() {
            self.queue_count = pending.committed(change, &self.conn, &mut self.queue);
        }
        if self.durable && self.batch_acknowledges {
            Ok(Committed::AfterFlush(self.log_flush()?))
        } else {
            Ok(Committed::Durable)
        }
    }

    /// `Store::rollback_batch`.
    pub(super) fn rollback_transaction(&mut self) {
        if !self.conn.is_autocommit() {
            if let Err(error) = self.conn.execute_batch("ROLLBACK") {
                log::error!("rollback failed: {error}");
            }
        }
        self.in_batch = false;
        self.batch_aborted = false;
        self.message_ids.rolled_back();
        self.batch_queue = QueueChange::default();
        for id in mem::take(&mut self.batch_registered) {
            self.remove_client(id);
        }
        for (client, entry) in mem::take(&mut self.batch_deleted) {
            self.add_client(client, entry);
        }
        for (id, was) in mem::take(&mut self.batch_protections).into_iter().rev() {
            self.restore_protection(id, was);
        }
        self.settle_spool(false);
    }

    /// `Store::begin_request`: records where the batch stands.
    pub(super) fn mark_request(&mut self) -> Result<(), StoreError> {
        if self.batch_aborted {
            return Err(StoreError::BatchAborted);
        }
        self.request = Some(RequestMark {
            registered: self.batch_registered.len(),
            deleted: self.batch_deleted.len(),
            savepoint: Savepoint::NotTaken,
            protections: self.batch_protections.len(),
            messages: Vec::new(),
            contents: self.batch_contents.len(),
            removals: self.batch_removals.len(),
            acknowledges: self.batch_acknowledges,
            queue: self.batch_queue,
        });
        Ok(())
    }

    /// Makes the current request's undo roll back to a savepoint taken now, before it
    /// deletes rows. Outside a request or a batch there is nothing to undo.
    pub(super) fn savepoint_request(&mut self) -> Result<(), StoreError> {
        let Some(mark) = &self.request else {
            return Ok(());
        };
        if mark.savepoint == Savepoint::Taken || self.conn.is_autocommit() {
            return Ok(());
        }
        self.conn.execute_batch("SAVEPOINT request")?;
        if let Some(mark) = &mut self.request {
            mark.savepoint = Savepoint::Taken;
        }
        Ok(())
    }

    /// `Store::commit_request`: keeps the request's writes in the batch.
    pub(super) fn keep_request(&mut self) -> Result<(), StoreError> {
        let taken = self
            .request
            .as_ref()
            .is_some_and(|mark| mark.savepoint == Savepoint::Taken);
        if taken {
            // On failure the mark stays, and the request is undone.
            self.run(|store| Ok(store.conn.execute_batch("RELEASE request")?))?;
        }
        self.request = None;
        Ok(())
    }

    /// `Store::rollback_request`: deletes what the request inserted (or rolls back to its
    /// savepoint) and restores the batch's bookkeeping from its mark.
    pub(super) fn undo_request(&mut self) {
        let Some(mark) = self.request.take() else {
            return;
        };
        let registered = self.batch_registered.split_off(mark.registered);
        let deleted = self.batch_deleted.split_off(mark.deleted);
        let protections = self.batch_protections.split_off(mark.protections);
        // An aborted batch is rolled back as a whole anyway.
        if !self.batch_aborted && !self.conn.is_autocommit() {
            let undone = match mark.savepoint {
                Savepoint::Taken => self
                    .conn
                    .execute_batch("ROLLBACK TO request; RELEASE request")
                    .map_err(StoreError::from),
                Savepoint::NotTaken => Ok(()),
            }
            .and_then(|()| self.delete_inserted(&registered, &mark.messages));
            if let Err(error) = undone {
                log::error!("cannot undo a failed request's writes: {error}; failing the batch");
                self.batch_aborted = true;
            }
        }
        for id in registered {
            self.remove_client(id);
        }
        for (client, entry) in deleted {
            self.add_client(client, entry);
        }
        // The request's only update: a protection, written back as it was.
        for (id, was) in protections.into_iter().rev() {
            if self.batch_aborted {
                self.restore_protection(id, was);
            } else if let Err(error) = self.write_protection(id, was) {
                log::error!("cannot undo a protection: {error}; failing the batch");
                self.batch_aborted = true;
                self.restore_protection(id, was);
            }
        }
        // Dropped contents remove their files; the removals belonged to undone deletions.
        self.batch_contents.truncate(mark.contents);
        self.batch_removals.truncate(mark.removals);
        self.batch_acknowledges = mark.acknowledges;
        self.batch_queue = mark.queue;
    }

    /// Runs one operation of the batch, noticing when a failure made SQLite roll back the
    /// whole transaction.
    pub(super) fn run<T>(
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

    pub(super) fn flush_last_seen(&mut self) -> Result<(), StoreError> {
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
