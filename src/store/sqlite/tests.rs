//! Unit tests of the SQLite store: clients, messages and their spooled contents, batches and
//! per-request undo, reopening.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

use super::SqliteStore;
use crate::protocol::{ClientId, MessageId, MessageType, Protection, PublicKey, PUBLIC_KEY_LEN};
use crate::store::{
    eventually, Content, ContentStore, Delivered, Durability, NewContent, NewMessage, PullBudget,
    QueueStats, QueuedMessage, Store, StoreError,
};

pub(super) fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("test.db"), Durability::Normal, 0).unwrap();
    (dir, store)
}

pub(super) fn budget(payload: u64) -> PullBudget {
    PullBudget {
        payload,
        in_memory: u64::MAX,
        messages: usize::MAX,
    }
}

fn ids(messages: &[QueuedMessage]) -> Vec<MessageId> {
    messages.iter().map(|m| m.id).collect()
}

pub(super) fn key(byte: u8) -> PublicKey {
    PublicKey([byte; PUBLIC_KEY_LEN])
}

#[test]
fn names_are_unique_and_case_sensitive() {
    let (_dir, mut store) = open();
    let now = SystemTime::now();
    store.register_client("Alice", &key(1), now).unwrap();
    assert!(matches!(
        store.register_client("Alice", &key(2), now),
        Err(StoreError::NameTaken)
    ));
    store.register_client("alice", &key(3), now).unwrap();
}

#[test]
fn clients_are_listed_in_registration_order_without_the_caller() {
    let (_dir, mut store) = open();
    let now = SystemTime::now();
    let ids: Vec<_> = ["c", "a", "b"]
        .iter()
        .map(|name| store.register_client(name, &key(0), now).unwrap())
        .collect();
    let mut listed = Vec::new();
    store
        .list_clients(ids[1], &mut |id, name| listed.push((id, name.to_owned())))
        .unwrap();
    assert_eq!(
        listed,
        vec![(ids[0], "c".to_owned()), (ids[2], "b".to_owned())]
    );
}

#[test]
fn queued_messages_respect_order_budget_and_skip() {
    let (_dir, mut store) = open();
    let (to, from) = (ClientId([1; 16]), ClientId([2; 16]));
    let ids: Vec<_> = (0..4u8)
        .map(|n| {
            let content = [n; 100];
            store
                .insert_message(NewMessage {
                    to,
                    from,
                    kind: MessageType::Text,
                    content: NewContent::Inline(&content),
                })
                .unwrap()
        })
        .collect();
    let all = store.queued_messages(to, budget(u64::MAX), &|_| false);
    assert_eq!(self::ids(&all.unwrap()), ids);
    let two = store
        .queued_messages(to, budget(2 * 125 + 124), &|id| id == ids[0])
        .unwrap();
    assert_eq!(self::ids(&two), vec![ids[1], ids[2]]);
    let oversized = store.queued_messages(to, budget(1), &|_| false).unwrap();
    assert_eq!(oversized.len(), 1);
    let memory = PullBudget {
        payload: u64::MAX,
        in_memory: 250,
        messages: usize::MAX,
    };
    let in_memory = store.queued_messages(to, memory, &|_| false).unwrap();
    assert_eq!(self::ids(&in_memory), ids[..2]);
    store.delete_messages(&delivered(&ids[..2], 0)).unwrap();
    let left = store.queued_messages(to, budget(u64::MAX), &|_| false);
    assert_eq!(left.unwrap().len(), 2);
}

pub(super) fn spooled_message(store: &mut SqliteStore, content: &[u8]) -> MessageId {
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

/// Pulled messages of `len` content bytes each, as the server deletes them.
fn delivered(ids: &[MessageId], len: u64) -> Vec<Delivered> {
    ids.iter()
        .map(|&id| Delivered {
            id,
            len,
            from: ClientId([0; 16]),
            to: ClientId([0; 16]),
        })
        .collect()
}

pub(super) fn spool_files(store: &SqliteStore) -> usize {
    std::fs::read_dir(store.spool.dir()).unwrap().count()
}

#[test]
fn spooled_contents_follow_their_rows_through_commit_and_rollback() {
    let (_dir, mut store) = open();
    let to = ClientId([1; 16]);
    store.begin_batch().unwrap();
    spooled_message(&mut store, b"gone");
    store.rollback_batch();
    eventually("the rolled-back content is removed", || {
        spool_files(&store) == 0
    });

    store.begin_batch().unwrap();
    let id = spooled_message(&mut store, b"kept");
    store.commit_batch().unwrap();
    let mut queued = store.queued_messages(to, budget(u64::MAX), &|_| false);
    match queued
        .as_mut()
        .map(|messages| messages.pop().map(|m| m.content))
    {
        Ok(Some(Content::Streamed { reader, len: 4 })) => {
            assert_eq!(std::io::read_to_string(reader).unwrap(), "kept");
        }
        other => panic!("expected a spooled content, got {other:?}"),
    }

    store.begin_batch().unwrap();
    store.delete_messages(&delivered(&[id], 4)).unwrap();
    store.rollback_batch();
    assert_eq!(spool_files(&store), 1);
    store.begin_batch().unwrap();
    store.delete_messages(&delivered(&[id], 4)).unwrap();
    store.commit_batch().unwrap();
    eventually("the deleted content is removed", || {
        spool_files(&store) == 0
    });
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

#[test]
fn the_client_index_follows_commits_rollbacks_and_reopening() {
    let (dir, mut store) = open();
    let now = SystemTime::now();
    store.begin_batch().unwrap();
    let gone = store.register_client("gone", &key(1), now).unwrap();
    assert!(store.client_exists(gone).unwrap());
    store.rollback_batch();
    assert!(!store.client_exists(gone).unwrap());
    assert_eq!(store.public_key(gone).unwrap(), None);

    store.begin_batch().unwrap();
    let kept = store.register_client("kept", &key(2), now).unwrap();
    store.commit_batch().unwrap();
    Box::new(store).close().unwrap();
    let mut store = SqliteStore::open(&dir.path().join("test.db"), Durability::Normal, 0).unwrap();
    assert!(store.client_exists(kept).unwrap());
    assert_eq!(store.public_key(kept).unwrap(), Some(key(2)));
    assert!(!store.client_exists(gone).unwrap());
}

#[test]
fn queue_counts_follow_commits_rollbacks_and_reopening() {
    let (dir, mut store) = open();
    let inline = |store: &mut SqliteStore, content: &[u8]| {
        store
            .insert_message(NewMessage {
                to: ClientId([1; 16]),
                from: ClientId([2; 16]),
                kind: MessageType::Text,
                content: NewContent::Inline(content),
            })
            .unwrap()
    };
    store.begin_batch().unwrap();
    let first = inline(&mut store, b"12345");
    spooled_message(&mut store, &[7; 100]);
    assert_eq!(
        store.queue(),
        QueueStats::default(),
        "counted before the commit"
    );
    store.commit_batch().unwrap();
    // Messages waiting, their bytes, stored and delivered since the store was opened.
    let stats = |messages, bytes, stored, delivered| QueueStats {
        messages,
        bytes,
        stored,
        delivered,
    };
    assert_eq!(store.queue(), stats(2, 105, 2, 0));

    store.begin_batch().unwrap();
    inline(&mut store, b"rolled back");
    store.delete_messages(&delivered(&[first], 5)).unwrap();
    store.rollback_batch();
    assert_eq!(store.queue(), stats(2, 105, 2, 0));

    store.begin_batch().unwrap();
    store.delete_messages(&delivered(&[first], 5)).unwrap();
    store.commit_batch().unwrap();
    assert_eq!(store.queue(), stats(1, 100, 2, 1));

    Box::new(store).close().unwrap();
    let store = SqliteStore::open(&dir.path().join("test.db"), Durability::Normal, 0).unwrap();
    assert_eq!(store.queue(), stats(1, 100, 0, 0));
}

#[test]
fn a_rolled_back_batch_leaves_nothing() {
    let (_dir, mut store) = open();
    store.begin_batch().unwrap();
    store
        .register_client("gone", &key(0), SystemTime::now())
        .unwrap();
    store.rollback_batch();
    let mut count = 0;
    store
        .list_clients(ClientId::default(), &mut |_, _| count += 1)
        .unwrap();
    assert_eq!(count, 0);
}

#[test]
fn last_seen_is_iso_8601_utc() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seen.db");
    let mut store = SqliteStore::open(&path, Durability::Full, 0).unwrap();
    let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let id = store.register_client("t", &key(0), at).unwrap();
    let seen = store.touch_client(id, at + Duration::from_secs(5)).unwrap();
    assert_eq!(seen, Some(Protection::Open));
    assert_eq!(store.touch_client(ClientId([9; 16]), at).unwrap(), None);
    Box::new(store).close().unwrap();
    let conn = Connection::open(&path).unwrap();
    let seen: String = conn
        .query_row("SELECT LastSeen FROM clients", [], |row| row.get(0))
        .unwrap();
    assert_eq!(seen, "2023-11-14T22:13:25Z");
}

#[test]
fn protection_persists_and_is_undone_with_its_request_or_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("protected.db");
    let mut store = SqliteStore::open(&path, Durability::Normal, 0).unwrap();
    let now = SystemTime::now();
    let id = store.register_client("owner", &key(0), now).unwrap();
    let protection = |store: &mut SqliteStore| store.touch_client(id, now).unwrap();

    // A failed request's protection is written back; the rest of the batch stays.
    store.begin_batch().unwrap();
    store.begin_request().unwrap();
    store.set_protection(id, Protection::Protected).unwrap();
    assert_eq!(protection(&mut store), Some(Protection::Protected));
    store.rollback_request();
    assert_eq!(protection(&mut store), Some(Protection::Open));
    store.commit_batch().unwrap();

    // A batch rolled back as a whole forgets it too.
    store.begin_batch().unwrap();
    store.set_protection(id, Protection::Protected).unwrap();
    store.rollback_batch();
    assert_eq!(protection(&mut store), Some(Protection::Open));

    store.begin_batch().unwrap();
    store.set_protection(id, Protection::Protected).unwrap();
    store.commit_batch().unwrap();
    Box::new(store).close().unwrap();
    let mut store = SqliteStore::open(&path, Durability::Normal, 0).unwrap();
    assert_eq!(protection(&mut store), Some(Protection::Protected));
    store.begin_batch().unwrap();
    store.set_protection(id, Protection::Open).unwrap();
    store.commit_batch().unwrap();
    assert_eq!(protection(&mut store), Some(Protection::Open));
}

#[test]
fn message_ids_are_never_given_again_even_after_a_restart_with_empty_queues() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ids.db");
    let mut store = SqliteStore::open(&path, Durability::Full, 0).unwrap();
    let message = || NewMessage {
        to: ClientId([1; 16]),
        from: ClientId([2; 16]),
        kind: MessageType::Text,
        content: NewContent::Inline(b""),
    };
    store.begin_batch().unwrap();
    let first = store.insert_message(message()).unwrap();
    store.commit_batch().unwrap();
    store.delete_messages(&delivered(&[first], 0)).unwrap();
    Box::new(store).close().unwrap();

    let mut store = SqliteStore::open(&path, Durability::Full, 0).unwrap();
    store.begin_batch().unwrap();
    let second = store.insert_message(message()).unwrap();
    store.rollback_batch();
    assert!(second.0 > first.0, "{second:?} after {first:?}");
    // The rolled-back round's reservation is made again by the next one, and kept.
    store.begin_batch().unwrap();
    let third = store.insert_message(message()).unwrap();
    store.commit_batch().unwrap();
    Box::new(store).close().unwrap();
    let conn = Connection::open(&path).unwrap();
    conn.execute("DELETE FROM messages", []).unwrap();
    drop(conn);
    let mut store = SqliteStore::open(&path, Durability::Full, 0).unwrap();
    let fourth = store.insert_message(message()).unwrap();
    assert!(fourth.0 > third.0, "{fourth:?} after {third:?}");
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

#[test]
fn a_failed_request_undoes_its_own_writes_and_keeps_the_rounds_others() {
    let (_dir, mut store) = open();
    let now = SystemTime::now();
    let to = ClientId([1; 16]);
    store.begin_batch().unwrap();
    store.begin_request().unwrap();
    let kept = store.register_client("kept", &key(1), now).unwrap();
    store.commit_request().unwrap();
    store.begin_request().unwrap();
    let undone = store.register_client("undone", &key(2), now).unwrap();
    spooled_message(&mut store, b"undone content");
    store.rollback_request();
    assert!(!store.client_exists(undone).unwrap());
    store.begin_request().unwrap();
    let id = spooled_message(&mut store, b"kept content");
    store.commit_request().unwrap();
    store.commit_batch().unwrap();

    assert!(store.client_exists(kept).unwrap());
    let queued = store.queued_messages(to, budget(u64::MAX), &|_| false);
    assert_eq!(ids(&queued.unwrap()), vec![id]);
    let queue = store.queue();
    assert_eq!(
        (queue.messages, queue.stored),
        (1, 1),
        "the undone message is not counted"
    );
    eventually("the undone content is removed", || spool_files(&store) == 1);
    // The undone name is free again.
    store.begin_batch().unwrap();
    store.begin_request().unwrap();
    assert!(store.register_client("undone", &key(3), now).is_ok());
    store.commit_request().unwrap();
    store.commit_batch().unwrap();
}
