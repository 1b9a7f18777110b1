//! Accounts: the account list in registration order, account deletion, and the deleted
//! ids (the `deleted_clients` table), which registrations never draw again and whose
//! registration positions no later client takes.

use std::ops::ControlFlow;
use std::time::{Duration, UNIX_EPOCH};

use rusqlite::{params, Connection};

use super::SqliteStore;
use crate::protocol::ClientId;
use crate::store::{StoreError, StoredAccount};

impl SqliteStore {
    /// `Store::accounts_after`. LastSeen times not yet written are read from memory.
    pub(super) fn accounts(
        &mut self,
        after: u64,
        each: &mut dyn FnMut(StoredAccount<'_>) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        self.run(|store| {
            let mut query = store.conn.prepare_cached(
                "SELECT rowid, ID, UserName, CAST(strftime('%s', LastSeen) AS INTEGER) \
                 FROM clients WHERE rowid > ?1 ORDER BY rowid",
            )?;
            let after = i64::try_from(after).unwrap_or(i64::MAX);
            let mut rows = query.query([after])?;
            while let Some(row) = rows.next()? {
                // Rows whose id is not 16 bytes (an adopted database) are no account anyone
                // can use, as in the client index.
                let Some(id) = ClientId::from_slice(row.get_ref(1)?.as_blob()?) else {
                    continue;
                };
                let seconds = match store.last_seen.get(&id) {
                    Some(&pending) => Some(pending),
                    None => row.get::<_, Option<i64>>(3)?,
                };
                let account = StoredAccount {
                    position: row.get::<_, i64>(0)?.unsigned_abs(),
                    id,
                    name: row.get_ref(2)?.as_str()?,
                    last_seen: seconds
                        .and_then(|seconds| u64::try_from(seconds).ok())
                        .map(|seconds| UNIX_EPOCH + Duration::from_secs(seconds)),
                };
                if each(account).is_break() {
                    break;
                }
            }
            Ok(())
        })
    }

    /// `Store::delete_client`: under a savepoint, so that the request's undo can bring back
    /// the rows it deletes.
    pub(super) fn delete_account(&mut self, id: ClientId) -> Result<(), StoreError> {
        self.run(|store| {
            if !store.clients.contains_key(&id) {
                return Err(StoreError::Corrupt("deletion of an unknown client"));
            }
            store.savepoint_request()?;
            let mut queue = store.conn.prepare_cached(
                "DELETE FROM messages WHERE ToClient = ?1 \
                 RETURNING SpoolFile, coalesce(SpoolSize, length(Content))",
            )?;
            let mut rows = queue.query([&id.0[..]])?;
            while let Some(row) = rows.next()? {
                if let Some(name) = row.get::<_, Option<String>>(0)? {
                    store.batch_removals.push(name);
                }
                store.batch_queue.withdrawn += 1;
                store.batch_queue.withdrawn_bytes += row.get::<_, u64>(1)?;
            }
            drop(rows);
            let position: i64 = store
                .conn
                .prepare_cached("DELETE FROM clients WHERE ID = ?1 RETURNING rowid")?
                .query_row([&id.0[..]], |row| row.get(0))?;
            store
                .conn
                .prepare_cached("INSERT INTO deleted_clients (ID, Position) VALUES (?1, ?2)")?
                .execute(params![&id.0[..], position])?;
            drop(queue);
            let removed = store.remove_client(id);
            store.last_seen.remove(&id);
            if let Some(removed) = removed.filter(|_| store.in_batch) {
                store.batch_deleted.push(removed);
            }
            store.batch_acknowledges = true;
            Ok(())
        })
    }
}

/// Whether `id` belonged to a deleted account: a registration must not draw it.
pub(super) fn retired(conn: &Connection, id: ClientId) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM deleted_clients WHERE ID = ?1")?
        .exists([&id.0[..]])?)
}

/// The position the next registration takes: above every client's, present or deleted.
pub(super) fn next_position(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row(
        "SELECT 1 + max(coalesce((SELECT max(rowid) FROM clients), 0), \
                        coalesce((SELECT max(Position) FROM deleted_clients), 0))",
        [],
        |row| row.get(0),
    )?)
}
