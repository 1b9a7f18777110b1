//! Clients: registration, listing and protection in the database, the in-memory index of
//! every registered id with its protection and position that the caller and destination
//! checks read, and the directory list replies are made from. Public keys stay in the
//! database: fetched once per contact, they are not worth 176 bytes a client in memory.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection};

use super::accounts::retired;
use super::messages::inserted_unless_id_taken;
use super::SqliteStore;
use crate::protocol::{ClientId, Content, Protection, PublicKey, PUBLIC_KEY_LEN};
use crate::store::directory::{Directory, Entry};
use crate::store::StoreError;

/// How many random client ids a registration tries (taken ones, or deleted accounts').
const CLIENT_ID_ATTEMPTS: u32 = 8;

/// What the index keeps of a registered client.
#[derive(Debug, Clone)]
pub(super) struct IndexedClient {
    protection: Protection,
    /// Its registration position: its place in the directory.
    position: u64,
}

impl SqliteStore {
    /// `Store::touch_client`.
    pub(super) fn touch(
        &mut self,
        id: ClientId,
        at: SystemTime,
    ) -> Result<Option<Protection>, StoreError> {
        if self.batch_aborted {
            return Err(StoreError::BatchAborted);
        }
        let protection = self.clients.get(&id).map(|client| client.protection);
        if protection.is_some() {
            self.last_seen.insert(id, unix_seconds(at));
        }
        Ok(protection)
    }

    /// `Store::set_protection`: written in the batch, whose reply waits for it to be durable.
    pub(super) fn protect(
        &mut self,
        id: ClientId,
        protection: Protection,
    ) -> Result<(), StoreError> {
        self.run(|store| {
            let Some(client) = store.clients.get(&id) else {
                return Err(StoreError::Corrupt("protection of an unknown client"));
            };
            let was = client.protection;
            store.write_protection(id, protection)?;
            store.batch_acknowledges = true;
            store.batch_protections.push((id, was));
            Ok(())
        })
    }

    /// Writes `id`'s protection to the database and the index.
    pub(super) fn write_protection(
        &mut self,
        id: ClientId,
        protection: Protection,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("UPDATE clients SET Protected = ?2 WHERE ID = ?1")?
            .execute(params![&id.0[..], protection as i64])?;
        self.restore_protection(id, protection);
        Ok(())
    }

    /// Sets `id`'s protection in the index only (the database's was rolled back).
    pub(super) fn restore_protection(&mut self, id: ClientId, protection: Protection) {
        if let Some(client) = self.clients.get_mut(&id) {
            client.protection = protection;
        }
    }

    /// `Store::client_exists`, from the index.
    pub(super) fn is_registered(&mut self, id: ClientId) -> Result<bool, StoreError> {
        if self.batch_aborted {
            return Err(StoreError::BatchAborted);
        }
        Ok(self.clients.contains_key(&id))
    }

    /// `Store::register_client`.
    pub(super) fn register(
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
            // The rowid is the registration position, set rather than left to SQLite, which
            // would give a deleted last client's again.
            let mut insert = store.conn.prepare_cached(
                "INSERT INTO clients (rowid, ID, UserName, PublicKey, LastSeen) \
                 VALUES (?5, ?1, ?2, ?3, strftime('%Y-%m-%dT%H:%M:%SZ', ?4, 'unixepoch'))",
            )?;
            // A random 122-bit id collides with an existing or deleted one practically never;
            // retry anyway.
            for _ in 0..CLIENT_ID_ATTEMPTS {
                let id = (store.draw_client_id)();
                if retired(&store.conn, id)? {
                    continue;
                }
                let (seconds, position) = (unix_seconds(at), store.next_position);
                let params = params![&id.0[..], name, &public_key.0[..], seconds, position];
                if inserted_unless_id_taken(insert.execute(params))? {
                    store.next_position += 1;
                    store.batch_acknowledges = true;
                    let position = position as u64;
                    let client = IndexedClient {
                        protection: Protection::Open,
                        position,
                    };
                    let entry = Entry {
                        position,
                        id,
                        name: name.to_owned(),
                    };
                    drop(insert);
                    store.add_client(client, entry);
                    if store.in_batch {
                        store.batch_registered.push(id);
                    }
                    return Ok(id);
                }
            }
            Err(StoreError::IdsExhausted)
        })
    }

    /// `Store::client_list`: from the directory, shared, encoded as the reply is written.
    pub(super) fn list(&mut self, except: ClientId) -> Result<Content, StoreError> {
        if self.batch_aborted {
            return Err(StoreError::BatchAborted);
        }
        let except = self.clients.get(&except).map(|client| client.position);
        Ok(self.directory.listing(except))
    }

    /// Adds a client to the index and the directory (registered, or its deletion undone).
    pub(super) fn add_client(&mut self, client: IndexedClient, entry: Entry) {
        self.clients.insert(entry.id, client);
        self.directory.insert(entry.position, entry.id, &entry.name);
    }

    /// Takes a client out of the index and the directory (deleted, or its registration
    /// undone); returns what they held, to add back if the deletion is undone.
    pub(super) fn remove_client(&mut self, id: ClientId) -> Option<(IndexedClient, Entry)> {
        let client = self.clients.remove(&id)?;
        let entry = self.directory.remove(client.position)?;
        Some((client, entry))
    }

    /// `Store::public_key`: an unknown id from the index, a key from the database, by its
    /// position, the row's rowid: one lookup, not the id's index and then the row.
    pub(super) fn key_of(&mut self, id: ClientId) -> Result<Option<PublicKey>, StoreError> {
        let Some(position) = self.clients.get(&id).map(|client| client.position) else {
            return if self.batch_aborted {
                Err(StoreError::BatchAborted)
            } else {
                Ok(None)
            };
        };
        self.run(|store| {
            let mut query = store
                .conn
                .prepare_cached("SELECT PublicKey FROM clients WHERE rowid = ?1")?;
            let key = query.query_row([position as i64], |row| {
                Ok(row
                    .get_ref(0)?
                    .as_blob()
                    .ok()
                    .and_then(|key| <[u8; PUBLIC_KEY_LEN]>::try_from(key).ok()))
            })?;
            key.map(|key| Some(PublicKey(key)))
                .ok_or(StoreError::Corrupt("public key"))
        })
    }
}

/// The registered clients, their protections and positions, for the in-memory index, and
/// their names for the directory. Rows whose id is not 16 bytes (from an adopted database) cannot
/// be addressed by any request and are left out; names are read as stored (a name that is
/// not text lists as empty).
pub(super) fn load_clients(
    conn: &Connection,
) -> Result<(HashMap<ClientId, IndexedClient>, Directory), StoreError> {
    // Sized once: growing would hold the old table and the new one at the same time.
    let count: usize = conn.query_row("SELECT count(*) FROM clients", [], |row| row.get(0))?;
    let mut clients = HashMap::with_capacity(count);
    let mut directory = Directory::default();
    let mut query =
        conn.prepare("SELECT ID, Protected, rowid, UserName FROM clients ORDER BY rowid")?;
    let mut rows = query.query([])?;
    while let Some(row) = rows.next()? {
        let Some(id) = ClientId::from_slice(row.get_ref(0)?.as_blob()?) else {
            continue;
        };
        // Any value but 1 (the only one this server writes) leaves the account open.
        let protection = match row.get_ref(1)?.as_i64() {
            Ok(1) => Protection::Protected,
            _ => Protection::Open,
        };
        let position = row.get::<_, i64>(2)? as u64;
        let name = row.get_ref(3)?.as_str().unwrap_or_default();
        directory.insert(position, id, name);
        clients.insert(
            id,
            IndexedClient {
                protection,
                position,
            },
        );
    }
    Ok((clients, directory))
}

fn unix_seconds(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() as i64)
}

pub(super) fn client_id(bytes: &[u8]) -> Result<ClientId, StoreError> {
    ClientId::from_slice(bytes).ok_or(StoreError::Corrupt("client id"))
}
