//! Clients: registration and listing in the database, and the in-memory index of every
//! registered id and key that the caller and destination checks and key lookups read.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection};

use super::messages::inserted_unless_id_taken;
use super::SqliteStore;
use crate::protocol::{ClientId, PublicKey, PUBLIC_KEY_LEN};
use crate::store::StoreError;

/// How many random client ids a registration tries.
const CLIENT_ID_ATTEMPTS: u32 = 8;

impl SqliteStore {
    /// `Store::touch_client`.
    pub(super) fn touch(&mut self, id: ClientId, at: SystemTime) -> Result<bool, StoreError> {
        let exists = self.is_registered(id)?;
        if exists {
            self.last_seen.insert(id, unix_seconds(at));
        }
        Ok(exists)
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

    /// `Store::list_clients`.
    pub(super) fn list(
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

    /// `Store::public_key`, from the index.
    pub(super) fn key_of(&mut self, id: ClientId) -> Result<Option<PublicKey>, StoreError> {
        if self.batch_aborted {
            return Err(StoreError::BatchAborted);
        }
        match self.clients.get(&id) {
            None => Ok(None),
            Some(Some(key)) => Ok(Some(key.clone())),
            Some(None) => Err(StoreError::Corrupt("public key")),
        }
    }
}

/// The registered clients and their keys, for the in-memory index. Rows whose id is not
/// 16 bytes (from an adopted database) cannot be addressed by any request and are left out.
pub(super) fn load_clients(
    conn: &Connection,
) -> Result<HashMap<ClientId, Option<PublicKey>>, StoreError> {
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

fn unix_seconds(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() as i64)
}

pub(super) fn client_id(bytes: &[u8]) -> Result<ClientId, StoreError> {
    ClientId::from_slice(bytes).ok_or(StoreError::Corrupt("client id"))
}
