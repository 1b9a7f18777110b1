//! Unit tests of the PostgreSQL store's own machinery: migrations, message id wrap-around,
//! what a start or a dropped upload removes, and claims between servers sharing a database. The tests every backend passes are in
//! `store/tests/`.

use std::thread;
use std::time::{Duration, Instant};

use super::{migrate, PostgresStore};
use crate::protocol::{ClientId, MessageId, MessageType};
use crate::store::tests::cluster::TestDatabase;
use crate::store::tests::{budget, ids};
use crate::store::{ContentStore, Durability, NewContent, NewMessage, Store, StoreError};

fn open(database: &TestDatabase) -> PostgresStore {
    PostgresStore::open(&database.conninfo(), Durability::Full).unwrap()
}

#[test]
fn migrations_are_applied_once_and_a_newer_schema_is_refused() {
    let database = TestDatabase::create();
    Box::new(open(&database)).close().unwrap();
    // By URL too.
    Box::new(PostgresStore::open(&database.url(), Durability::Normal).unwrap())
        .close()
        .unwrap();
    let versions = database.query("SELECT string_agg(Version::text, ',') FROM schema_migrations");
    let expected: Vec<String> = (1..=migrate::latest()).map(|v| v.to_string()).collect();
    assert_eq!(versions, expected.join(","));
    database.query("INSERT INTO schema_migrations (Version) VALUES (99)");
    let refused = PostgresStore::open(&database.conninfo(), Durability::Full);
    assert!(
        matches!(refused, Err(StoreError::SchemaTooNew { found: 99, .. })),
        "{:?}",
        refused.err()
    );
}

#[test]
fn message_ids_wrap_and_skip_taken_ones() {
    let database = TestDatabase::create();
    let mut store = open(&database);
    let (to, from) = (ClientId([1; 16]), ClientId([2; 16]));
    let message = || NewMessage {
        to,
        from,
        kind: MessageType::File,
        content: NewContent::Inline(b"x"),
    };
    store.jump_to_message_id(1);
    assert_eq!(store.insert_message(message()).unwrap(), MessageId(1));
    store.jump_to_message_id(u32::MAX);
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
fn an_upload_dropped_before_its_message_leaves_nothing() {
    let database = TestDatabase::create();
    let mut store = open(&database);
    let mut sink = store.begin_content(10).unwrap();
    sink.write(b"hello").unwrap();
    drop(sink);
    let mut sink = store.begin_content(5).unwrap();
    sink.write(b"hello").unwrap();
    drop(sink.make_durable().unwrap());
    assert_eq!(database.query("SELECT count(*) FROM contents"), "0");
    assert_eq!(database.query("SELECT count(*) FROM content_chunks"), "0");
}

#[test]
fn a_start_removes_old_contents_no_message_names() {
    let database = TestDatabase::create();
    Box::new(open(&database)).close().unwrap();
    database.query(
        "INSERT INTO contents (Key, Size, Stored) VALUES \
         ('old', 1, now() - interval '1 hour'), ('recent', 1, now()); \
         INSERT INTO content_chunks (Key, Seq, Data) VALUES ('old', 0, '\\x01')",
    );
    Box::new(open(&database)).close().unwrap();
    assert_eq!(
        database.query("SELECT string_agg(Key, ',') FROM contents"),
        "recent"
    );
    assert_eq!(database.query("SELECT count(*) FROM content_chunks"), "0");
}

/// Stores `count` messages for `to` in one committed batch; returns their ids.
fn queue_messages(store: &mut PostgresStore, to: ClientId, count: usize) -> Vec<MessageId> {
    store.begin_batch().unwrap();
    let sent = (0..count)
        .map(|_| {
            store
                .insert_message(NewMessage {
                    to,
                    from: ClientId([9; 16]),
                    kind: MessageType::Text,
                    content: NewContent::Inline(b"claimed?"),
                })
                .unwrap()
        })
        .collect();
    store.commit_batch().unwrap();
    sent
}

/// What `store` would put in a pull reply for `to`, claimed, in a committed batch.
fn pull(store: &mut PostgresStore, to: ClientId) -> Vec<MessageId> {
    store.begin_batch().unwrap();
    let queued = store
        .queued_messages(to, budget(u64::MAX), &|_| false)
        .unwrap();
    let claimed = ids(&store.claim_messages(queued).unwrap());
    store.commit_batch().unwrap();
    claimed
}

#[test]
fn a_claim_holds_messages_against_other_servers_until_its_lease_ends() {
    let database = TestDatabase::create();
    let (mut first, mut second) = (open(&database), open(&database));
    first.set_claim_lease(Duration::from_millis(300));
    let to = ClientId([1; 16]);
    let sent = queue_messages(&mut first, to, 3);
    assert_eq!(pull(&mut first, to), sent);
    assert_eq!(pull(&mut second, to), vec![], "held by the first server");
    assert_eq!(
        pull(&mut first, to),
        sent,
        "its own claims hold nothing back"
    );
    thread::sleep(Duration::from_millis(400));
    assert_eq!(pull(&mut second, to), sent, "a dead server's claims expire");
}

#[test]
fn renewal_keeps_the_claims_in_flight_and_lets_the_others_go() {
    let database = TestDatabase::create();
    let (mut first, mut second) = (open(&database), open(&database));
    first.set_claim_lease(Duration::from_millis(600));
    let to = ClientId([1; 16]);
    let sent = queue_messages(&mut first, to, 2);
    assert_eq!(pull(&mut first, to), sent);
    thread::sleep(Duration::from_millis(250));
    // Only the first is still in flight: its reply is being written; the other's was given up.
    let in_flight = [sent[0]];
    first
        .renew_claims(Instant::now(), &mut in_flight.iter().copied())
        .unwrap();
    thread::sleep(Duration::from_millis(450));
    assert_eq!(
        pull(&mut second, to),
        vec![sent[1]],
        "the renewed claim holds past its first lease; the given-up one is free"
    );
}
