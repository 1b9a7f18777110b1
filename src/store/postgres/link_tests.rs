//! Reconnection: connections of the store killed from the database's side, between rounds and
//! in the middle of one.

use std::thread;

use crate::protocol::{ClientId, MessageType};
use crate::store::tests::budget;
use crate::store::tests::cluster::TestDatabase;
use crate::store::{Durability, NewContent, NewMessage, Store, StoreError};

use super::super::PostgresStore;
use super::{Pool, REDIAL_INTERVAL};

const TO: ClientId = ClientId([1; 16]);

fn message(content: &[u8]) -> NewMessage<'_> {
    NewMessage {
        to: TO,
        from: ClientId([2; 16]),
        kind: MessageType::Text,
        content: NewContent::Inline(content),
    }
}

/// Ends every connection to the database but psql's own, as a failover does.
fn cut_connections(database: &TestDatabase) {
    database.query(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    );
}

fn store_one(store: &mut PostgresStore, content: &[u8]) -> Result<(), StoreError> {
    store.begin_batch()?;
    store.insert_message(message(content))?;
    store.commit_batch().map(drop)
}

#[test]
fn a_connection_cut_between_rounds_is_replaced_by_the_next_round() {
    let database = TestDatabase::create();
    let mut store = PostgresStore::open(&database.conninfo(), Durability::Full).unwrap();
    store_one(&mut store, b"before").unwrap();
    cut_connections(&database);
    // Messages stored meanwhile by another server sharing the database.
    database.query(
        "INSERT INTO messages (ID, ToClient, FromClient, Type, Content) \
         VALUES (1000, '\\x01010101010101010101010101010101', \
                 '\\x02020202020202020202020202020202', 3, 'abc')",
    );
    store_one(&mut store, b"after").unwrap();
    assert_eq!(store.queue().messages, 3, "the counts are read again");
    let queued = store
        .queued_messages(TO, budget(u64::MAX), &|_| false)
        .unwrap();
    assert_eq!(queued.len(), 3);
}

#[test]
fn a_round_whose_connection_is_cut_fails_whole_and_the_next_one_commits() {
    let database = TestDatabase::create();
    let mut store = PostgresStore::open(&database.conninfo(), Durability::Full).unwrap();
    store.begin_batch().unwrap();
    store.begin_request().unwrap();
    store
        .insert_message(message(b"lost with the round"))
        .unwrap();
    store.commit_request().unwrap();
    cut_connections(&database);
    store.begin_request().ok();
    let inserted = store.insert_message(message(b"on a dead connection"));
    assert!(inserted.is_err());
    store.rollback_request();
    assert!(store.commit_batch().is_err(), "the round cannot commit");
    store_one(&mut store, b"next round").unwrap();
    assert_eq!(
        database.query("SELECT Content FROM messages"),
        "\\x6e65787420726f756e64"
    );
    assert_eq!(store.queue().messages, 1);
}

#[test]
fn while_the_database_is_unreachable_attempts_are_rate_limited() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let config = format!("host=127.0.0.1 port={port} user=postgres")
        .parse()
        .unwrap();
    let pool = Pool::new(config, Durability::Full);
    assert!(matches!(pool.dial(), Err(StoreError::Postgres(_))), "tried");
    assert!(
        matches!(pool.dial(), Err(StoreError::Disconnected)),
        "not yet again"
    );
    thread::sleep(REDIAL_INTERVAL);
    assert!(
        matches!(pool.dial(), Err(StoreError::Postgres(_))),
        "tried again"
    );
}
