//! What the client knows about its peers: ids and names from the client list, public keys
//! fetched from the server, and the AES key shared with each.
//!
//! The C++ clients keep this in memory only. Scripted use runs one process per operation, so
//! it is kept in `peers.json` beside `me.info`:
//!
//! ```json
//! {
//!   "owner": "<our client id, 32 hex digits>",
//!   "peers": [
//!     { "id": "<32 hex digits>", "name": "bob",
//!       "public_key": "<320 hex digits>", "symmetric_key": "<32 hex digits>" }
//!   ]
//! }
//! ```
//!
//! `public_key` and `symmetric_key` are absent until known. A file whose owner is not the id
//! in `me.info` belongs to an earlier registration and is ignored.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::crypto::{AesKey, AES_KEY_LEN};
use super::error::ClientError;
use super::identity::{decode_hex, encode_hex, exists};
use messageu_protocol::client::ListedClient;
use messageu_protocol::{ClientId, PublicKey, PUBLIC_KEY_LEN};

/// The state file, beside `me.info`.
pub const STATE_FILE: &str = "peers.json";

/// A state file that cannot be read back. Only the peers' keys are lost by removing it: ids
/// and names come back with the next list.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{path} is damaged ({reason}); remove it to go on: that forgets the peers' public and \
     symmetric keys remembered between runs, which can be fetched and exchanged again"
)]
pub struct DamagedState {
    pub path: PathBuf,
    pub reason: String,
}

/// One peer as this client knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: ClientId,
    /// The name from the client list.
    pub name: String,
    pub public_key: Option<PublicKey>,
    pub symmetric_key: Option<AesKey>,
}

/// Every peer this client knows, in the order it learned them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peers {
    peers: Vec<Peer>,
}

impl Peers {
    /// The peer the client list calls `name`.
    pub fn by_name(&self, name: &str) -> Option<&Peer> {
        self.peers.iter().find(|peer| peer.name == name)
    }

    /// The peer with client id `id`.
    pub fn by_id(&self, id: ClientId) -> Option<&Peer> {
        self.peers.iter().find(|peer| peer.id == id)
    }

    fn by_id_mut(&mut self, id: ClientId) -> Option<&mut Peer> {
        self.peers.iter_mut().find(|peer| peer.id == id)
    }

    /// Adds the clients of a list reply, keeping the keys of those already known.
    pub fn learn(&mut self, listed: &[ListedClient]) {
        for client in listed {
            match self.by_id_mut(client.id) {
                Some(peer) => peer.name.clone_from(&client.name),
                None => self.peers.push(Peer {
                    id: client.id,
                    name: client.name.clone(),
                    public_key: None,
                    symmetric_key: None,
                }),
            }
        }
    }

    /// Records `id`'s public key; the peer must already be known by name.
    pub fn set_public_key(&mut self, id: ClientId, key: PublicKey) {
        if let Some(peer) = self.by_id_mut(id) {
            peer.public_key = Some(key);
        }
    }

    /// Records the key shared with `id`, remembering the peer under `name` if it is new.
    pub fn set_symmetric_key(&mut self, id: ClientId, name: &str, key: AesKey) {
        if self.by_id(id).is_none() {
            self.learn(&[ListedClient {
                id,
                name: name.to_owned(),
            }]);
        }
        if let Some(peer) = self.by_id_mut(id) {
            peer.symmetric_key = Some(key);
        }
    }

    /// Reads the state file of `owner`; a missing file, or one of another owner, is empty.
    pub fn load(path: &Path, owner: ClientId) -> Result<Peers, ClientError> {
        if !exists(path)? {
            return Ok(Peers::default());
        }
        let bytes = fs::read(path).map_err(|source| ClientError::File {
            path: path.to_owned(),
            source,
        })?;
        let damaged = |reason: String| {
            ClientError::BadState(DamagedState {
                path: path.to_owned(),
                reason,
            })
        };
        let file: StateFile =
            serde_json::from_slice(&bytes).map_err(|error| damaged(error.to_string()))?;
        if decode_hex::<16>(&file.owner) != Some(owner.0) {
            return Ok(Peers::default());
        }
        let peers = file
            .peers
            .into_iter()
            .map(|record| record.to_peer().ok_or_else(|| damaged(record_error())))
            .collect::<Result<_, _>>()?;
        Ok(Peers { peers })
    }

    /// Replaces the state file atomically, readable by the owner only.
    pub fn save(&self, path: &Path, owner: ClientId) -> Result<(), ClientError> {
        let file = StateFile {
            owner: encode_hex(&owner.0),
            peers: self.peers.iter().map(PeerRecord::from_peer).collect(),
        };
        let json = serde_json::to_vec_pretty(&file).map_err(|error| ClientError::File {
            path: path.to_owned(),
            source: std::io::Error::other(error),
        })?;
        let dir = path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let file_error = |source| ClientError::File {
            path: PathBuf::from(path),
            source,
        };
        // tempfile creates the file with mode 0600 on Unix.
        let mut temporary = tempfile::NamedTempFile::new_in(dir).map_err(file_error)?;
        temporary.write_all(&json).map_err(file_error)?;
        temporary.write_all(b"\n").map_err(file_error)?;
        temporary
            .persist(path)
            .map_err(|error| file_error(error.error))?;
        Ok(())
    }
}

fn record_error() -> String {
    "a peer has an id, public key or symmetric key that is not hex of the right length".into()
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    owner: String,
    peers: Vec<PeerRecord>,
}

#[derive(Serialize, Deserialize)]
struct PeerRecord {
    id: String,
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    symmetric_key: Option<String>,
}

impl PeerRecord {
    fn from_peer(peer: &Peer) -> PeerRecord {
        PeerRecord {
            id: encode_hex(&peer.id.0),
            name: peer.name.clone(),
            public_key: peer.public_key.as_ref().map(|key| encode_hex(&key.0)),
            symmetric_key: peer.symmetric_key.as_ref().map(|key| encode_hex(&key.0)),
        }
    }

    fn to_peer(&self) -> Option<Peer> {
        let public_key = match &self.public_key {
            Some(hex) => Some(PublicKey(decode_hex::<PUBLIC_KEY_LEN>(hex)?)),
            None => None,
        };
        let symmetric_key = match &self.symmetric_key {
            Some(hex) => Some(AesKey(decode_hex::<AES_KEY_LEN>(hex)?)),
            None => None,
        };
        Some(Peer {
            id: ClientId(decode_hex::<16>(&self.id)?),
            name: self.name.clone(),
            public_key,
            symmetric_key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(id: u8, name: &str) -> ListedClient {
        ListedClient {
            id: ClientId([id; 16]),
            name: name.to_owned(),
        }
    }

    fn known_peers() -> Peers {
        let mut peers = Peers::default();
        peers.learn(&[listed(1, "alice"), listed(2, "Michael Jackson")]);
        peers.set_public_key(ClientId([1; 16]), PublicKey([7; PUBLIC_KEY_LEN]));
        peers.set_symmetric_key(ClientId([2; 16]), "Michael Jackson", AesKey([9; 16]));
        peers
    }

    #[test]
    fn peers_and_their_keys_survive_a_save_and_load() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join(STATE_FILE);
        let owner = ClientId([5; 16]);
        let peers = known_peers();
        peers.save(&path, owner).expect("saved");
        assert_eq!(Peers::load(&path, owner).expect("loaded"), peers);
        let loaded = Peers::load(&path, owner).expect("loaded");
        let jackson = loaded.by_name("Michael Jackson").expect("known");
        assert_eq!(jackson.symmetric_key, Some(AesKey([9; 16])));
        assert_eq!(jackson.public_key, None);
    }

    #[test]
    fn a_missing_file_or_one_of_another_owner_is_empty() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join(STATE_FILE);
        assert_eq!(
            Peers::load(&path, ClientId([5; 16])).expect("empty"),
            Peers::default()
        );
        known_peers().save(&path, ClientId([5; 16])).expect("saved");
        assert_eq!(
            Peers::load(&path, ClientId([6; 16])).expect("empty"),
            Peers::default()
        );
    }

    #[test]
    fn a_damaged_file_is_an_error_not_a_loss() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join(STATE_FILE);
        let owner = "05".repeat(16);
        for text in [
            "{ not json".to_owned(),
            format!(r#"{{"owner":"{owner}","peers":[{{"id":"zz","name":"x"}}]}}"#),
            format!(
                r#"{{"owner":"{owner}","peers":[{{"id":"{owner}","name":"x","symmetric_key":"00"}}]}}"#
            ),
        ] {
            fs::write(&path, text).expect("written");
            assert!(matches!(
                Peers::load(&path, ClientId([5; 16])),
                Err(ClientError::BadState(_))
            ));
        }
    }

    #[test]
    fn a_new_list_renames_and_adds_but_keeps_keys() {
        let mut peers = known_peers();
        peers.learn(&[listed(1, "alice2"), listed(3, "carol")]);
        assert!(peers.by_name("alice").is_none());
        assert_eq!(
            peers.by_name("alice2").and_then(|p| p.public_key.clone()),
            Some(PublicKey([7; PUBLIC_KEY_LEN]))
        );
        assert_eq!(
            peers.by_id(ClientId([3; 16])).map(|p| p.name.as_str()),
            Some("carol")
        );
        assert!(peers.by_name("Michael Jackson").is_some());
    }

    #[test]
    fn a_key_from_an_unlisted_sender_is_kept_under_the_name_given() {
        let mut peers = Peers::default();
        peers.set_symmetric_key(ClientId([4; 16]), "04040404", AesKey([1; 16]));
        assert_eq!(
            peers.by_name("04040404").map(|p| p.id),
            Some(ClientId([4; 16]))
        );
    }
}
