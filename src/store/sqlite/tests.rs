//! Unit tests of the SQLite store's own machinery: spool recovery at start-up, message id
//! wrap-around, adopted databases, retired ids. The tests every backend passes are in
//! `store/tests/`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use rusqlite::Connection;

use super::SqliteStore;
use crate::protocol::{ClientId, MessageId, MessageType, PublicKey, PUBLIC_KEY_LEN};
use crate::store::{
    ContentStore, Durability, NewContent, NewMessage, PullBudget, QueuedMessage, Store, StoreError,
};

fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("test.db"), Durability::Normal, 0).unwrap();
    (dir, store)
}

fn budget(payload: u64) -> PullBudget {
    PullBudget {
        payload,
        in_memory: u64::MAX,
        messages: usize::MAX,
    }
}

fn ids(messages: &[QueuedMessage]) -> Vec<MessageId> {
    messages.iter().map(|m| m.id).collect()
}

fn key(byte: u8) -> PublicKey {
    PublicKey([byte; PUBLIC_KEY_LEN])
}

fn register(store: &mut SqliteStore, name: &str) -> ClientId {
    store
        .register_client(name, &key(1), SystemTime::now())
        .unwrap()
}

fn spooled_message(store: &mut SqliteStore, content: &[u8]) -> MessageId {
    let mut sink = store.begin_content(content.len() as u64).unwrap();
    sink.write(content).unwrap();
    store
        .insert_message(NewMessage {
            to: ClientId([1; 16]),
            from: ClientId([2; 16]),
            kind: MessageType::File,
            content: NewContent::Large(sink.make_durable().unwrap()),
        })
        .unwrap()
}

fn spool_files(store: &SqliteStore) -> usize {
    std::fs::read_dir(store.spool.dir()).unwrap().count()
}

#[test]
fn reopening_removes_stray_files_and_rows_that_lost_theirs() {
    let (dir, mut store) = open();
    let path = dir.path().join("test.db");
    store.begin_batch().unwrap();
    spooled_message(&mut store, b"whole");
    let cut = spooled_message(&mut store, b"cut short");
    store.commit_batch().unwrap();
    std::fs::write(store.spool.dir().join("stray"), b"partial upload").unwrap();
    let cut_name: String = store
        .conn
        .query_row(
            "SELECT SpoolFile FROM messages WHERE ID = ?1",
            [cut.0],
            |r| r.get(0),
        )
        .unwrap();
    std::fs::write(store.spool.dir().join(&cut_name), b"cut").unwrap();
    Box::new(store).close().unwrap();

    let mut store = SqliteStore::open(&path, Durability::Normal, 0).unwrap();
    let left = store.queued_messages(ClientId([1; 16]), budget(u64::MAX), &|_| false);
    assert_eq!(left.unwrap().len(), 1);
    assert_eq!(spool_files(&store), 1);
}

#[test]
fn message_ids_wrap_and_skip_taken_ones() {
    let (_dir, mut store) = open();
    let (to, from) = (ClientId([1; 16]), ClientId([2; 16]));
    let message = || NewMessage {
        to,
        from,
        kind: MessageType::File,
        content: NewContent::Inline(b"x"),
    };
    store.message_ids.jump_to(1);
    assert_eq!(store.insert_message(message()).unwrap(), MessageId(1));
    store.message_ids.jump_to(u32::MAX);
    assert_eq!(
        store.insert_message(message()).unwrap(),
        MessageId(u32::MAX)
    );
    assert_eq!(store.insert_message(message()).unwrap(), MessageId(2));
    let order = ids(&store
        .queued_messages(to, budget(u64::MAX), &|_| false)
        .unwrap());
    assert_eq!(order, vec![MessageId(1), MessageId(u32::MAX), MessageId(2)]);
}

#[test]
fn a_constraint_of_an_adopted_database_fails_instead_of_retrying() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("adopted.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TABLE clients (ID BLOB PRIMARY KEY, UserName TEXT UNIQUE, \
             PublicKey BLOB, LastSeen TEXT, Extra TEXT NOT NULL)",
        )
        .unwrap();
    let mut store = SqliteStore::open(&path, Durability::Normal, 0).unwrap();
    let result = store.register_client("x", &key(0), SystemTime::now());
    assert!(matches!(result, Err(StoreError::Sqlite(_))), "{result:?}");
}

static DRAWS: AtomicUsize = AtomicUsize::new(0);
const DELETED: ClientId = ClientId([7; 16]);
const FRESH: ClientId = ClientId([8; 16]);

/// The first registration draws [`DELETED`]; the next draws it again, then [`FRESH`].
fn colliding_draws() -> ClientId {
    match DRAWS.fetch_add(1, Ordering::SeqCst) {
        0 | 1 => DELETED,
        _ => FRESH,
    }
}

#[test]
fn a_deleted_id_is_never_drawn_again() {
    let (dir, mut store) = open();
    store.draw_client_id = colliding_draws;
    assert_eq!(register(&mut store, "first"), DELETED);
    store.delete_client(DELETED).unwrap();
    assert_eq!(register(&mut store, "first"), FRESH, "drawn again instead");
    assert_eq!(DRAWS.load(Ordering::SeqCst), 3);
    // The deleted ids are stored: after reopening, a draw of nothing else finds no id.
    Box::new(store).close().unwrap();
    let mut store = SqliteStore::open(&dir.path().join("test.db"), Durability::Normal, 0).unwrap();
    store.draw_client_id = || DELETED;
    let refused = store.register_client("third", &key(1), SystemTime::now());
    assert!(
        matches!(refused, Err(StoreError::IdsExhausted)),
        "{refused:?}"
    );
}

#[test]
fn a_database_without_an_id_mark_numbers_after_its_last_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ids.db");
    let mut store = SqliteStore::open(&path, Durability::Full, 0).unwrap();
    let message = || NewMessage {
        to: ClientId([1; 16]),
        from: ClientId([2; 16]),
        kind: MessageType::Text,
        content: NewContent::Inline(b""),
    };
    let first = store.insert_message(message()).unwrap();
    Box::new(store).close().unwrap();
    let conn = Connection::open(&path).unwrap();
    conn.execute("DELETE FROM message_ids", []).unwrap();
    drop(conn);
    let mut store = SqliteStore::open(&path, Durability::Full, 0).unwrap();
    assert_eq!(
        store.insert_message(message()).unwrap(),
        MessageId(first.0 + 1)
    );
}
