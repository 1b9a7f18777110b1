//! The accounts side of the stores, on every backend: the account list and its positions,
//! account deletion, unsend, the queue per sender, and their undo.

use std::ops::ControlFlow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{budget, key, listed, on_every_backend, send, send_large, Backend, Harness};
use crate::protocol::{ClientId, MessageId};
use crate::store::{eventually, SenderQueue, UnsendOutcome};

on_every_backend!(
    accounts_are_listed_after_a_position_with_their_last_seen_time,
    deleting_an_account_removes_its_queue_and_keeps_what_it_sent,
    positions_are_never_given_twice_even_after_the_last_account_is_deleted,
    only_the_sender_unsends_a_waiting_message_not_in_flight,
    deletions_and_unsends_are_undone_with_their_request_or_batch,
    the_queue_is_counted_per_sender_most_first,
);

fn register(store: &mut Harness, name: &str) -> ClientId {
    store
        .register_client(name, &key(1), SystemTime::now())
        .unwrap()
}

/// Every account after `after`: position, id and name.
fn accounts(store: &mut Harness, after: u64) -> Vec<(u64, ClientId, String)> {
    let mut listed = Vec::new();
    store
        .accounts_after(after, &mut |account| {
            listed.push((account.position, account.id, account.name.to_owned()));
            ControlFlow::Continue(())
        })
        .unwrap();
    listed
}

fn position(store: &mut Harness, id: ClientId) -> u64 {
    let listed = accounts(store, 0);
    let found = listed.iter().find(|(_, listed, _)| *listed == id);
    found.expect("listed").0
}

/// The ids of the messages waiting for `to`, and their senders.
fn waiting(store: &mut Harness, to: ClientId) -> Vec<(MessageId, ClientId)> {
    let messages = store
        .queued_messages(to, budget(u64::MAX), &|_| false)
        .unwrap();
    messages.iter().map(|m| (m.id, m.from)).collect()
}

fn accounts_are_listed_after_a_position_with_their_last_seen_time(backend: Backend) {
    let mut store = Harness::open(backend);
    let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let a = store.register_client("a", &key(1), at).unwrap();
    let b = store.register_client("b", &key(1), at).unwrap();
    let listed = accounts(&mut store, 0);
    let names: Vec<_> = listed
        .iter()
        .map(|(_, id, name)| (*id, name.as_str()))
        .collect();
    assert_eq!(names, vec![(a, "a"), (b, "b")]);
    assert!(listed[0].0 < listed[1].0);
    assert_eq!(accounts(&mut store, listed[0].0).len(), 1);
    assert!(accounts(&mut store, listed[1].0).is_empty());
    // A time seen and not yet written is read from memory; a break stops the listing.
    store.touch_client(b, at + Duration::from_secs(7)).unwrap();
    let mut seen = Vec::new();
    store
        .accounts_after(0, &mut |account| {
            seen.push(account.last_seen);
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(seen, vec![Some(at), Some(at + Duration::from_secs(7))]);
    let mut calls = 0;
    store
        .accounts_after(0, &mut |_| {
            calls += 1;
            ControlFlow::Break(())
        })
        .unwrap();
    assert_eq!(calls, 1);
}

fn deleting_an_account_removes_its_queue_and_keeps_what_it_sent(backend: Backend) {
    let mut store = Harness::open(backend);
    let gone = register(&mut store, "gone");
    let other = register(&mut store, "other");
    store.begin_batch().unwrap();
    send(&mut *store, other, gone, b"12345");
    send_large(&mut *store, other, gone, &[7; 100]);
    let kept = send(&mut *store, gone, other, b"from the gone");
    store.commit_batch().unwrap();
    assert_eq!(store.large_contents(), 1);
    assert_eq!(store.queue().messages, 3);

    store.begin_batch().unwrap();
    store.delete_client(gone).unwrap();
    store.commit_batch().unwrap();
    assert!(!store.client_exists(gone).unwrap());
    assert_eq!(store.touch_client(gone, SystemTime::now()).unwrap(), None);
    let queue = store.queue();
    assert_eq!((queue.messages, queue.bytes, queue.delivered), (1, 13, 0));
    eventually("the queue's large content is removed", || {
        store.large_contents() == 0
    });
    assert!(waiting(&mut store, gone).is_empty());
    assert_eq!(waiting(&mut store, other), vec![(kept, gone)]);
    // The name is free again.
    let again = register(&mut store, "gone");
    assert_ne!(again, gone);
    let names: Vec<_> = accounts(&mut store, 0)
        .into_iter()
        .map(|(_, _, name)| name)
        .collect();
    assert_eq!(names, vec!["other", "gone"]);
}

fn positions_are_never_given_twice_even_after_the_last_account_is_deleted(backend: Backend) {
    let mut store = Harness::open(backend);
    register(&mut store, "a");
    let b = register(&mut store, "b");
    let b_position = position(&mut store, b);
    store.delete_client(b).unwrap();
    let c = register(&mut store, "c");
    let c_position = position(&mut store, c);
    assert!(c_position > b_position, "{c_position} after {b_position}");
    store.delete_client(c).unwrap();
    let mut store = store.reopen();
    let d = register(&mut store, "d");
    assert!(position(&mut store, d) > c_position, "after reopening too");
}

fn only_the_sender_unsends_a_waiting_message_not_in_flight(backend: Backend) {
    let mut store = Harness::open(backend);
    let (a, b) = (register(&mut store, "a"), register(&mut store, "b"));
    store.begin_batch().unwrap();
    let small = send(&mut *store, a, b, b"12345");
    let large = send_large(&mut *store, a, b, &[1; 50]);
    send(&mut *store, b, a, b"x");
    store.commit_batch().unwrap();

    store.begin_batch().unwrap();
    let unsend = |store: &mut Harness, from, id, in_flight: &dyn Fn(MessageId) -> bool| {
        store.unsend_message(from, id, in_flight).unwrap()
    };
    assert_eq!(
        unsend(&mut store, b, small, &|_| false),
        UnsendOutcome::NotWaiting,
        "another sender's"
    );
    let unknown = MessageId(999);
    assert_eq!(
        unsend(&mut store, a, unknown, &|_| false),
        UnsendOutcome::NotWaiting
    );
    assert_eq!(
        unsend(&mut store, a, small, &|id| id == small),
        UnsendOutcome::InDelivery
    );
    assert_eq!(
        unsend(&mut store, a, small, &|_| false),
        UnsendOutcome::Deleted
    );
    assert_eq!(
        unsend(&mut store, a, large, &|_| false),
        UnsendOutcome::Deleted
    );
    assert_eq!(
        unsend(&mut store, a, small, &|_| false),
        UnsendOutcome::NotWaiting,
        "already unsent"
    );
    store.commit_batch().unwrap();
    let queue = store.queue();
    assert_eq!((queue.messages, queue.bytes, queue.delivered), (1, 1, 0));
    eventually("the unsent large content is removed", || {
        store.large_contents() == 0
    });
    assert!(waiting(&mut store, b).is_empty());
}

fn deletions_and_unsends_are_undone_with_their_request_or_batch(backend: Backend) {
    let mut store = Harness::open(backend);
    let gone = register(&mut store, "gone");
    let other = register(&mut store, "other");
    store.begin_batch().unwrap();
    let queued = send(&mut *store, other, gone, b"waits");
    let sent = send(&mut *store, gone, other, b"sent");
    store.commit_batch().unwrap();

    store.begin_batch().unwrap();
    store.begin_request().unwrap();
    store.delete_client(gone).unwrap();
    store.rollback_request();
    store.begin_request().unwrap();
    let unsent = store.unsend_message(gone, sent, &|_| false).unwrap();
    assert_eq!(unsent, UnsendOutcome::Deleted);
    store.rollback_request();
    // A request that succeeds keeps its deletion.
    let kept = send(&mut *store, other, other, b"to self");
    store.begin_request().unwrap();
    let unsent = store.unsend_message(other, kept, &|_| false).unwrap();
    assert_eq!(unsent, UnsendOutcome::Deleted);
    store.commit_request().unwrap();
    store.commit_batch().unwrap();
    assert!(store.client_exists(gone).unwrap());
    assert_eq!(waiting(&mut store, gone), vec![(queued, other)]);
    assert_eq!(waiting(&mut store, other), vec![(sent, gone)]);
    assert_eq!(store.queue().messages, 2);

    store.begin_batch().unwrap();
    store.delete_client(gone).unwrap();
    assert_eq!(listed(&mut *store, other), vec![], "gone from the list");
    store.rollback_batch();
    assert!(store.client_exists(gone).unwrap());
    assert_eq!(accounts(&mut store, 0).len(), 2);
    assert_eq!(store.queue().messages, 2);
    let back = vec![(gone, "gone".to_owned())];
    assert_eq!(listed(&mut *store, other), back, "listed again");
    let later = register(&mut store, "later");
    store.begin_batch().unwrap();
    store.delete_client(gone).unwrap();
    store.commit_batch().unwrap();
    assert_eq!(
        listed(&mut *store, other),
        vec![(later, "later".to_owned())]
    );
}

fn the_queue_is_counted_per_sender_most_first(backend: Backend) {
    let mut store = Harness::open(backend);
    let to = register(&mut store, "to");
    let (a, b, c) = (
        register(&mut store, "a"),
        register(&mut store, "b"),
        register(&mut store, "c"),
    );
    store.begin_batch().unwrap();
    send(&mut *store, b, to, b"b");
    send(&mut *store, a, to, b"aa");
    send_large(&mut *store, c, to, &[3; 10]);
    send(&mut *store, a, to, b"aaa");
    send(&mut *store, to, a, b"elsewhere");
    store.commit_batch().unwrap();
    let sender = |from, messages, bytes| SenderQueue {
        from,
        messages,
        bytes,
    };
    assert_eq!(
        store.queue_of(to).unwrap(),
        vec![sender(a, 2, 5), sender(b, 1, 1), sender(c, 1, 10)]
    );
    assert!(store.queue_of(b).unwrap().is_empty());
}
