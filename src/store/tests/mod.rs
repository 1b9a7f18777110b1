//! Unit tests of the stores through the [`Store`] trait, each run against every backend:
//! SQLite in a temporary folder and PostgreSQL in a database of a throwaway cluster
//! (`tests/common/postgres.rs`). Tests of one backend's own machinery stay beside it.

#[path = "../../../tests/common/postgres.rs"]
pub(crate) mod cluster;

mod accounts;
mod batches;

use std::ops::{Deref, DerefMut};

use super::{
    Durability, MessageId, NewContent, NewMessage, PostgresStore, PullBudget, QueuedMessage,
    SqliteStore, Store,
};
use crate::protocol::{ClientId, Content, MessageType, PublicKey, PUBLIC_KEY_LEN};
use cluster::TestDatabase;

/// Which store a test runs on.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Where a test's store keeps its data, which outlives reopening it.
enum Place {
    Sqlite(tempfile::TempDir),
    Postgres(TestDatabase),
}

/// A store under test and where it lives. Fields drop in order: the store before its data.
pub struct Harness {
    store: Box<dyn Store>,
    place: Place,
    durability: Durability,
}

impl Harness {
    pub fn open(backend: Backend) -> Harness {
        Harness::open_with(backend, Durability::Normal)
    }

    pub fn open_with(backend: Backend, durability: Durability) -> Harness {
        let place = match backend {
            Backend::Sqlite => Place::Sqlite(tempfile::tempdir().unwrap()),
            Backend::Postgres => Place::Postgres(TestDatabase::create()),
        };
        Harness::open_at(place, durability)
    }

    fn open_at(place: Place, durability: Durability) -> Harness {
        let store: Box<dyn Store> = match &place {
            Place::Sqlite(dir) => {
                Box::new(SqliteStore::open(&dir.path().join("test.db"), durability, 0).unwrap())
            }
            Place::Postgres(database) => {
                Box::new(PostgresStore::open(&database.conninfo(), durability).unwrap())
            }
        };
        Harness {
            store,
            place,
            durability,
        }
    }

    /// Closes the store and opens it again on the same data.
    pub fn reopen(self) -> Harness {
        let durability = self.durability;
        Harness::open_at(self.close(), durability)
    }

    fn close(self) -> Place {
        self.store.close().unwrap();
        self.place
    }

    /// Closes the store, then reads one text value from its tables with `sql`.
    pub fn text_after_close(self, sql: &str) -> String {
        match self.close() {
            Place::Sqlite(dir) => rusqlite::Connection::open(dir.path().join("test.db"))
                .unwrap()
                .query_row(sql, [], |row| row.get(0))
                .unwrap(),
            Place::Postgres(database) => database.query(sql),
        }
    }

    /// How many large contents the backend keeps (spool files, or `contents` rows).
    pub fn large_contents(&self) -> usize {
        match &self.place {
            Place::Sqlite(dir) => std::fs::read_dir(dir.path().join("test.db.spool"))
                .unwrap()
                .count(),
            Place::Postgres(database) => database
                .query("SELECT count(*) FROM contents")
                .parse()
                .unwrap(),
        }
    }
}

impl Deref for Harness {
    type Target = dyn Store;

    fn deref(&self) -> &Self::Target {
        &*self.store
    }
}

impl DerefMut for Harness {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut *self.store
    }
}

/// Runs each named test function (taking a [`Backend`]) on every backend: as
/// `<module>::sqlite::<name>` and `<module>::postgres::<name>`.
macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $test() {
                    super::$test($crate::store::tests::Backend::Sqlite)
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $test() {
                    super::$test($crate::store::tests::Backend::Postgres)
                }
            )*
        }
    };
}
pub(crate) use on_every_backend;

pub fn budget(payload: u64) -> PullBudget {
    PullBudget {
        payload,
        in_memory: u64::MAX,
        messages: usize::MAX,
    }
}

pub fn ids(messages: &[QueuedMessage]) -> Vec<MessageId> {
    messages.iter().map(|m| m.id).collect()
}

/// The clients a list reply for `except` carries: (id, name), in order.
pub fn listed(store: &mut dyn Store, except: ClientId) -> Vec<(ClientId, String)> {
    let bytes = match store.client_list(except).unwrap() {
        Content::Inline(bytes) => bytes,
        Content::Streamed { mut reader, len } => {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut reader, &mut bytes).unwrap();
            assert_eq!(bytes.len() as u64, len, "as long as declared");
            bytes
        }
    };
    crate::protocol::client::parse_client_list(&bytes)
        .unwrap()
        .into_iter()
        .map(|client| (client.id, client.name))
        .collect()
}

pub fn key(byte: u8) -> PublicKey {
    PublicKey([byte; PUBLIC_KEY_LEN])
}

/// Stores a message from `from` to `to` with `content` in its row.
pub fn send(store: &mut dyn Store, from: ClientId, to: ClientId, content: &[u8]) -> MessageId {
    store
        .insert_message(NewMessage {
            to,
            from,
            kind: MessageType::Text,
            content: NewContent::Inline(content),
        })
        .unwrap()
}

/// Stores a message from `from` to `to` with `content` as a large content.
pub fn send_large(
    store: &mut dyn Store,
    from: ClientId,
    to: ClientId,
    content: &[u8],
) -> MessageId {
    let mut sink = store.begin_content(content.len() as u64).unwrap();
    sink.write(content).unwrap();
    store
        .insert_message(NewMessage {
            to,
            from,
            kind: MessageType::File,
            content: NewContent::Large(sink.make_durable().unwrap()),
        })
        .unwrap()
}

#[test]
fn durabilities_read_and_print_by_name() {
    for durability in Durability::ALL {
        assert_eq!(durability.name().parse(), Ok(durability));
        assert_eq!(durability.to_string(), durability.name());
    }
    assert!("FULL".parse::<Durability>().is_err());
}
