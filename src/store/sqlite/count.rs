//! The queue counts at start-up, taken in the background: counting every message is a scan
//! of the whole table (seconds at ten million messages), which start-up should not wait for
//! and the event loop should not run. The counts are metrics only.
//!
//! The count reads the database file through a second, read-only connection that bypasses
//! SQLite's locks (`immutable`), since the store's connection holds the file exclusively. It
//! sees exactly the database as opened: the log is checkpointed into the file first, and not
//! again until the count is in, so that nothing writes the file meanwhile (commits go to the
//! log). Changes committed since are kept aside and added to the count when it arrives.

use std::path::Path;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::thread;

use rusqlite::{Connection, OpenFlags};

use super::messages::count_queue;
use super::open::WAL_CHECKPOINT_PAGES;
use crate::store::queue::QueueChange;
use crate::store::{QueueStats, StoreError};

/// A count in progress, and what commits changed since the database was opened.
pub(super) struct PendingCount {
    result: Receiver<Result<QueueStats, StoreError>>,
    since_open: QueueChange,
}

impl PendingCount {
    /// Starts counting the queues of the database at `path`, open on `conn`.
    pub fn start(conn: &Connection, path: &Path) -> Result<PendingCount, StoreError> {
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))?;
        if busy != 0 {
            return Err(StoreError::Corrupt("start-up checkpoint incomplete"));
        }
        let uri = immutable_uri(path);
        let (sender, result) = mpsc::channel();
        thread::Builder::new()
            .name("queue-count".into())
            .spawn(move || {
                let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
                    | OpenFlags::SQLITE_OPEN_URI
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let counted = Connection::open_with_flags(&uri, flags)
                    .map_err(StoreError::from)
                    .and_then(|conn| count_queue(&conn));
                // The store may be gone already (closed during the count).
                let _ = sender.send(counted);
            })
            .map_err(|source| StoreError::File {
                path: path.to_owned(),
                source,
            })?;
        Ok(PendingCount {
            result,
            since_open: QueueChange::default(),
        })
    }

    /// Notes a committed change; returns the queues once the count is in (and checkpoints
    /// are back on), or keeps waiting.
    pub fn committed(
        mut self,
        change: QueueChange,
        conn: &Connection,
        queue: &mut QueueStats,
    ) -> Option<PendingCount> {
        self.since_open.add(change);
        let counted = match self.result.try_recv() {
            Err(TryRecvError::Empty) => return Some(self),
            Ok(counted) => counted,
            Err(TryRecvError::Disconnected) => Err(StoreError::Corrupt("queue count lost")),
        };
        if let Err(error) = conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES) {
            log::error!("cannot turn log checkpoints back on: {error}");
        }
        match counted {
            Ok(mut counted) => {
                self.since_open.apply(&mut counted);
                queue.messages = counted.messages;
                queue.bytes = counted.bytes;
            }
            Err(error) => log::error!(
                "cannot count the queues at start-up ({error}): the queue metrics count only \
                 the messages since"
            ),
        }
        None
    }
}

/// A URI that opens the database file at `path` read-only, without locks or its log.
fn immutable_uri(path: &Path) -> String {
    let mut uri = String::from("file:");
    for &byte in path.as_os_str().as_encoded_bytes() {
        if byte.is_ascii_alphanumeric() || b"/-_.~".contains(&byte) {
            uri.push(byte as char);
        } else {
            uri.push_str(&format!("%{byte:02X}"));
        }
    }
    uri.push_str("?immutable=1");
    uri
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uri_escapes_what_a_uri_would_read() {
        let uri = immutable_uri(Path::new("/tmp/a b?c#d%e/m.db"));
        assert_eq!(uri, "file:/tmp/a%20b%3Fc%23d%25e/m.db?immutable=1");
    }
}
