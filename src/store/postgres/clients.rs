//! Clients: registration, listing, protection and keys, the account list in registration
//! order, and account deletion with the ids it retires (`deleted_clients`). Every check
//! reads the database, which servers sharing it keep up to date for each other.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postgres::fallible_iterator::FallibleIterator;

use super::known::Known;
use super::messages::count_and_bytes;
use super::PostgresStore;
use crate::protocol::{ClientId, Content, Protection, PublicKey, PUBLIC_KEY_LEN};
use crate::store::directory::Directory;
use crate::store::{StoreError, StoredAccount};

/// How many random client ids a registration tries (taken ones, or deleted accounts').
const CLIENT_ID_ATTEMPTS: u32 = 8;

impl PostgresStore {
    /// `Store::touch_client`: the LastSeen time is kept in memory, written with a later
    /// commit.
    pub(super) fn touch(
        &mut self,
        id: ClientId,
        at: SystemTime,
    ) -> Result<Option<Protection>, StoreError> {
        let protection = self.protection_of(id)?;
        if protection.is_some() {
            self.last_seen.insert(id, unix_seconds(at));
        }
        Ok(protection)
    }

    /// Whether `id` is registered, and its protection: known in this round (`known.rs`), or
    /// read.
    fn protection_of(&mut self, id: ClientId) -> Result<Option<Protection>, StoreError> {
        let known = self.known.get(id).filter(|_| self.in_batch);
        let found = match known {
            Some(known) => known,
            None => self.run(|store| {
                let row = store
                    .conn
                    .query_opt("SELECT Protected FROM clients WHERE ID = $1", &[&&id.0[..]])?;
                let found = match row {
                    // Any value but 1 (the only one this server writes) leaves it open.
                    Some(row) => Known::Registered(match row.try_get::<_, i32>(0)? {
                        1 => Protection::Protected,
                        _ => Protection::Open,
                    }),
                    None => Known::Unregistered,
                };
                if store.in_batch {
                    store.known.learn(id, found);
                }
                Ok(found)
            })?,
        };
        Ok(match found {
            Known::Registered(protection) => Some(protection),
            Known::Unregistered => None,
        })
    }

    /// `id`'s protection changed, or it was deleted, in the round: the counter of client
    /// changes is raised with its COMMIT, so that every server reads again what it knows of
    /// clients at its next round (`known.rs`).
    fn client_changed(&mut self, id: ClientId) {
        self.known.changed(id);
        self.raise.version = true;
    }

    /// The round registered or deleted a client: the counter of listed clients is raised
    /// with its COMMIT, so that every server reads the list again.
    fn list_changed(&mut self) {
        self.known.list_changed();
        self.raise.listed = true;
    }

    /// `Store::set_protection`.
    pub(super) fn protect(
        &mut self,
        id: ClientId,
        protection: Protection,
    ) -> Result<(), StoreError> {
        self.run(|store| {
            let updated = store.conn.execute(
                "UPDATE clients SET Protected = $2 WHERE ID = $1",
                &[&&id.0[..], &(protection as i32)],
            )?;
            match updated {
                0 => Err(StoreError::Corrupt("protection of an unknown client")),
                _ => {
                    store.client_changed(id);
                    Ok(())
                }
            }
        })
    }

    /// `Store::client_exists`.
    pub(super) fn is_registered(&mut self, id: ClientId) -> Result<bool, StoreError> {
        Ok(self.protection_of(id)?.is_some())
    }

    /// `Store::register_client`: no statement fails for a taken name or id (a failed
    /// statement would abort the transaction), so both are looked for first and the insert
    /// skips conflicts.
    pub(super) fn register(
        &mut self,
        name: &str,
        public_key: &PublicKey,
        at: SystemTime,
    ) -> Result<ClientId, StoreError> {
        self.run(|store| {
            let seconds = unix_seconds(at);
            for _ in 0..CLIENT_ID_ATTEMPTS {
                if store.name_taken(name)? {
                    return Err(StoreError::NameTaken);
                }
                let id = ClientId::random();
                let inserted = store.conn.execute(
                    "INSERT INTO clients (ID, UserName, PublicKey, LastSeen) \
                     SELECT $1, $2, $3, to_char(to_timestamp($4::bigint) AT TIME ZONE 'UTC', \
                                                'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
                     WHERE NOT EXISTS (SELECT 1 FROM deleted_clients WHERE ID = $1) \
                     ON CONFLICT DO NOTHING",
                    &[&&id.0[..], &name, &&public_key.0[..], &seconds],
                )?;
                if inserted == 1 {
                    store.list_changed();
                    store.known.learn(id, Known::Registered(Protection::Open));
                    return Ok(id);
                }
            }
            Err(StoreError::IdsExhausted)
        })
    }

    fn name_taken(&mut self, name: &str) -> Result<bool, StoreError> {
        let row = self
            .conn
            .query_opt("SELECT 1 FROM clients WHERE UserName = $1", &[&name])?;
        Ok(row.is_some())
    }

    /// `Store::client_list`: the list as last read while no registration or deletion
    /// anywhere changed it (`known.rs`), else read whole into a directory, rows streamed
    /// from the database; encoded as the reply is written.
    pub(super) fn list(&mut self, except: ClientId) -> Result<Content, StoreError> {
        if let Some(listing) = self.known.listing(except).filter(|_| self.in_batch) {
            return Ok(listing);
        }
        self.run(|store| {
            let mut directory = Directory::default();
            let mut positions = HashMap::new();
            let mut rows = store.conn.query_iter(
                "SELECT Position, ID, UserName FROM clients ORDER BY Position",
                &[],
            )?;
            while let Some(row) = rows.next()? {
                let position = u64::try_from(row.try_get::<_, i64>(0)?)
                    .map_err(|_| StoreError::Corrupt("client position"))?;
                let id = client_id(row.try_get(1)?)?;
                positions.insert(id, position);
                directory.insert(position, id, row.try_get(2)?);
            }
            let listing = directory.listing(positions.get(&except).copied());
            if store.in_batch {
                store.known.listed(directory, positions);
            }
            Ok(listing)
        })
    }

    /// `Store::public_key`.
    pub(super) fn key_of(&mut self, id: ClientId) -> Result<Option<PublicKey>, StoreError> {
        self.run(|store| {
            let row = store
                .conn
                .query_opt("SELECT PublicKey FROM clients WHERE ID = $1", &[&&id.0[..]])?;
            let Some(row) = row else {
                return Ok(None);
            };
            let key = <[u8; PUBLIC_KEY_LEN]>::try_from(row.try_get::<_, &[u8]>(0)?)
                .map_err(|_| StoreError::Corrupt("public key"))?;
            Ok(Some(PublicKey(key)))
        })
    }

    /// `Store::accounts_after`, read as the caller goes: LastSeen times not yet written are
    /// read from memory.
    pub(super) fn accounts(
        &mut self,
        after: u64,
        each: &mut dyn FnMut(StoredAccount<'_>) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        self.run(|store| {
            let after = i64::try_from(after).unwrap_or(i64::MAX);
            let mut rows = store.conn.query_iter(
                "SELECT Position, ID, UserName, \
                        extract(epoch FROM LastSeen::timestamptz)::bigint \
                 FROM clients WHERE Position > $1 ORDER BY Position",
                &[&after],
            )?;
            while let Some(row) = rows.next()? {
                let id = client_id(row.try_get(1)?)?;
                let seconds = match store.last_seen.get(&id) {
                    Some(&pending) => Some(pending),
                    None => row.try_get::<_, Option<i64>>(3)?,
                };
                let account = StoredAccount {
                    position: row.try_get::<_, i64>(0)?.unsigned_abs(),
                    id,
                    name: row.try_get(2)?,
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

    /// `Store::delete_client`: its queue and their contents, then the client, whose id and
    /// position are retired; all undone with the request if it fails.
    pub(super) fn delete_account(&mut self, id: ClientId) -> Result<(), StoreError> {
        self.run(|store| {
            let row = store.conn.query_one(
                "WITH gone AS (DELETE FROM messages WHERE ToClient = $1 \
                               RETURNING SpoolFile, coalesce(SpoolSize, length(Content)) AS len), \
                      removed AS (DELETE FROM contents WHERE Key IN (SELECT SpoolFile FROM gone)) \
                 SELECT count(*), coalesce(sum(len), 0)::bigint FROM gone",
                &[&&id.0[..]],
            )?;
            let (count, bytes) = count_and_bytes(&row)?;
            let retired = store.conn.execute(
                "WITH gone AS (DELETE FROM clients WHERE ID = $1 RETURNING ID, Position) \
                 INSERT INTO deleted_clients (ID, Position) SELECT ID, Position FROM gone",
                &[&&id.0[..]],
            )?;
            if retired == 0 {
                return Err(StoreError::Corrupt("deletion of an unknown client"));
            }
            store.client_changed(id);
            store.list_changed();
            store.last_seen.remove(&id);
            store.batch_queue.withdrawn += count;
            store.batch_queue.withdrawn_bytes += bytes;
            Ok(())
        })
    }
}

fn unix_seconds(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() as i64)
}

pub(super) fn client_id(bytes: &[u8]) -> Result<ClientId, StoreError> {
    ClientId::from_slice(bytes).ok_or(StoreError::Corrupt("client id"))
}
