//! The batch: one transaction per round, committed with `COMMIT` (durable once it returns,
//! with synchronous_commit on), a savepoint per request so that a failed request undoes
//! its own writes alone, and the LastSeen times written with it at most once a second.
//!
//! PostgreSQL aborts a transaction at its first failed statement. A failure inside a
//! request leaves the request to be rolled back to its savepoint; one outside any request
//! fails the batch as a whole, which is rolled back instead of committed. Each savepoint is a
//! round trip, so it is taken at the request's first statement (a request that makes none
//! takes none), and the previous request's savepoint is released in the same round trip.
//!
//! A connection that broke fails its batch the same way (the transaction died with it); the
//! next batch, or the next statement outside any batch, runs on a new connection (`link.rs`),
//! and the queue counts are read again, since the database may have changed meanwhile (a
//! failover, other servers sharing it).

use std::mem;
use std::time::{Duration, Instant};

use super::known::{Counters, Raise};
use super::link::Checked;
use super::{messages, PostgresStore};
use crate::store::queue::QueueChange;
use crate::store::{Committed, StoreError};

/// A round's start, with the counters of client changes (`known.rs`), in one round trip.
const BEGIN: &str = "BEGIN; SELECT Version || ' ' || Listed FROM client_changes";

/// How long LastSeen updates may wait in memory: written with every request, they would
/// make every request a write.
const LAST_SEEN_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// The batch's bookkeeping as it stood when a request began, restored if it is undone.
pub(super) struct RequestMark {
    contents: usize,
    queue: QueueChange,
    /// A statement of the request failed: it can only be rolled back.
    failed: bool,
    /// Its savepoint is taken (at its first statement).
    savepoint: bool,
}

impl PostgresStore {
    /// `Store::begin_batch`.
    pub(super) fn begin_transaction(&mut self) -> Result<(), StoreError> {
        self.reconnect_if_lost()?;
        let version = match self.conn.batch_value(BEGIN) {
            Ok(version) => version,
            // A connection that broke while idle shows it only now: once more on a new one.
            Err(error) if !self.conn.is_closed() => return Err(error.into()),
            Err(_) => {
                self.reconnect_if_lost()?;
                self.conn.batch_value(BEGIN)?
            }
        };
        let counters = version
            .as_deref()
            .and_then(Counters::parse)
            .ok_or(StoreError::Corrupt("client_changes"))?;
        self.known.round_began(counters);
        self.in_batch = true;
        self.batch_aborted = false;
        self.kept_savepoint = false;
        Ok(())
    }

    /// `Store::commit_batch`: nothing waits for a flush after it, since COMMIT returns once
    /// the transaction is as durable as the durability setting asks.
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
        let commit = mem::take(&mut self.raise).commit();
        if let Err(error) = self.conn.batch(commit) {
            self.rollback_transaction();
            return Err(error.into());
        }
        self.in_batch = false;
        for content in self.batch_contents.drain(..) {
            content.keep();
        }
        mem::take(&mut self.batch_queue).apply(&mut self.queue);
        Ok(Committed::Durable)
    }

    /// `Store::rollback_batch`.
    pub(super) fn rollback_transaction(&mut self) {
        // On a closed connection the transaction is already gone.
        if self.in_batch && !self.conn.is_closed() {
            if let Err(error) = self.conn.batch("ROLLBACK") {
                log::error!("rollback failed: {error}");
            }
        }
        self.in_batch = false;
        self.batch_aborted = false;
        self.kept_savepoint = false;
        self.raise = Raise::default();
        self.request = None;
        self.known.forget_all();
        self.batch_queue = QueueChange::default();
        // Dropped, the batch's new contents are deleted.
        self.batch_contents.clear();
    }

    /// `Store::begin_request`: a savepoint, and the batch's bookkeeping.
    pub(super) fn mark_request(&mut self) -> Result<(), StoreError> {
        if self.batch_aborted {
            return Err(StoreError::BatchAborted);
        }
        self.known.request_began();
        self.request = Some(RequestMark {
            contents: self.batch_contents.len(),
            queue: self.batch_queue,
            failed: false,
            savepoint: false,
        });
        Ok(())
    }

    /// Takes the request's savepoint before its first statement, releasing the kept one of
    /// the request before it in the same round trip.
    fn take_savepoint(&mut self) -> Result<(), StoreError> {
        let Some(mark) = self.request.as_mut().filter(|mark| !mark.savepoint) else {
            return Ok(());
        };
        mark.savepoint = true;
        let sql = if mem::take(&mut self.kept_savepoint) {
            "RELEASE SAVEPOINT request; SAVEPOINT request"
        } else {
            "SAVEPOINT request"
        };
        if let Err(error) = self.conn.batch(sql) {
            self.batch_aborted = true;
            return Err(error.into());
        }
        Ok(())
    }

    /// `Store::commit_request`: keeps the request's writes in the batch. A request one of
    /// whose statements failed cannot be kept: the caller rolls it back.
    pub(super) fn keep_request(&mut self) -> Result<(), StoreError> {
        let Some(mark) = &self.request else {
            return Ok(());
        };
        if mark.failed {
            return Err(StoreError::RequestAborted);
        }
        self.known.request_kept();
        // Released with the next request's savepoint, or by the COMMIT.
        self.kept_savepoint |= self.in_batch && mark.savepoint;
        self.request = None;
        Ok(())
    }

    /// `Store::rollback_request`: back to the savepoint, and the bookkeeping to the mark.
    pub(super) fn undo_request(&mut self) {
        let Some(mark) = self.request.take() else {
            return;
        };
        if !mark.savepoint {
            // No statement ran: nothing to undo in the database.
        } else if self.in_batch && !self.batch_aborted && self.conn.is_closed() {
            self.batch_aborted = true;
        } else if self.in_batch && !self.batch_aborted {
            let undone = self
                .conn
                .batch("ROLLBACK TO SAVEPOINT request; RELEASE SAVEPOINT request");
            if let Err(error) = undone {
                log::error!("cannot undo a failed request's writes: {error}; failing the batch");
                self.batch_aborted = true;
            }
        }
        self.known.request_undone();
        // Dropped, the request's new contents are deleted.
        self.batch_contents.truncate(mark.contents);
        self.batch_queue = mark.queue;
    }

    /// Runs one operation, noting a failed statement: it aborted the request (inside one)
    /// or the whole batch (outside any).
    pub(super) fn run<T>(
        &mut self,
        operation: impl FnOnce(&mut Self) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.batch_aborted {
            return Err(StoreError::BatchAborted);
        }
        if self.request.as_ref().is_some_and(|mark| mark.failed) {
            return Err(StoreError::RequestAborted);
        }
        if !self.in_batch {
            self.reconnect_if_lost()?;
        } else {
            self.take_savepoint()?;
        }
        let result = operation(self);
        if matches!(result, Err(StoreError::Postgres(_))) && self.in_batch {
            match &mut self.request {
                Some(mark) => mark.failed = true,
                None => self.batch_aborted = true,
            }
        }
        result
    }

    /// Writes the LastSeen times kept in memory, in one statement. A client row another
    /// transaction holds (a server sharing the database writing its own LastSeen, say) is
    /// left as it is rather than waited for: waiting could deadlock two servers' rounds.
    pub(super) fn flush_last_seen(&mut self) -> Result<(), StoreError> {
        if !self.in_batch {
            self.reconnect_if_lost()?;
        }
        let (ids, seconds): (Vec<&[u8]>, Vec<i64>) = self
            .last_seen
            .iter()
            .map(|(id, seconds)| (&id.0[..], *seconds))
            .unzip();
        self.conn.execute(
            "UPDATE clients SET LastSeen = to_char(to_timestamp(seen.at) AT TIME ZONE 'UTC', \
                                                  'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
             FROM unnest($1::bytea[], $2::bigint[]) AS seen (id, at) WHERE clients.ID = seen.id \
             AND clients.ID IN (SELECT ID FROM clients WHERE ID = ANY($1) FOR UPDATE SKIP LOCKED)",
            &[&ids, &seconds],
        )?;
        self.last_seen.clear();
        self.last_seen_flushed = Instant::now();
        Ok(())
    }

    /// Replaces a lost connection where no transaction is open, and reads again what the
    /// store keeps of the database in memory.
    fn reconnect_if_lost(&mut self) -> Result<(), StoreError> {
        if self.conn.ensure()? == Checked::Renewed {
            self.queue = messages::count_queue(&mut self.conn)?;
        }
        Ok(())
    }
}
