//! Clients, messages and their large contents, batches and per-request undo, reopening: on
//! every backend.

use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{budget, ids, key, listed, on_every_backend, send, send_large, Backend, Harness};
use crate::protocol::{ClientId, MessageId, MessageType, Protection};
use crate::store::{
    eventually, Content, Delivered, Durability, NewContent, NewMessage, PullBudget, QueueStats,
    Store, StoreError,
};

on_every_backend!(
    names_are_unique_and_case_sensitive,
    clients_are_listed_in_registration_order_without_the_caller,
    queued_messages_respect_order_budget_and_skip,
    large_contents_follow_their_rows_through_commit_and_rollback,
    registrations_follow_commits_rollbacks_and_reopening,
    queue_counts_follow_commits_rollbacks_and_reopening,
    a_rolled_back_batch_leaves_nothing,
    last_seen_is_iso_8601_utc,
    protection_persists_and_is_undone_with_its_request_or_batch,
    message_ids_are_never_given_again_even_after_reopening_with_empty_queues,
    a_failed_request_undoes_its_own_writes_and_keeps_the_rounds_others,
    large_contents_are_read_back_whole_across_chunks,
);

const TO: ClientId = ClientId([1; 16]);
const FROM: ClientId = ClientId([2; 16]);

/// Pulled messages of `len` content bytes each, as the server deletes them.
fn delivered(ids: &[MessageId], len: u64) -> Vec<Delivered> {
    ids.iter()
        .map(|&id| Delivered {
            id,
            len,
            stored_apart: false,
            from: ClientId([0; 16]),
            to: ClientId([0; 16]),
        })
        .collect()
}

fn names_are_unique_and_case_sensitive(backend: Backend) {
    let mut store = Harness::open(backend);
    let now = SystemTime::now();
    store.register_client("Alice", &key(1), now).unwrap();
    assert!(matches!(
        store.register_client("Alice", &key(2), now),
        Err(StoreError::NameTaken)
    ));
    store.register_client("alice", &key(3), now).unwrap();
}

fn clients_are_listed_in_registration_order_without_the_caller(backend: Backend) {
    let mut store = Harness::open(backend);
    let now = SystemTime::now();
    let ids: Vec<_> = ["c", "a", "b"]
        .iter()
        .map(|name| store.register_client(name, &key(0), now).unwrap())
        .collect();
    assert_eq!(
        listed(&mut *store, ids[1]),
        vec![(ids[0], "c".to_owned()), (ids[2], "b".to_owned())]
    );
}

fn queued_messages_respect_order_budget_and_skip(backend: Backend) {
    let mut store = Harness::open(backend);
    let ids: Vec<_> = (0..4u8)
        .map(|n| send(&mut *store, FROM, TO, &[n; 100]))
        .collect();
    let all = store.queued_messages(TO, budget(u64::MAX), &|_| false);
    assert_eq!(self::ids(&all.unwrap()), ids);
    let two = store
        .queued_messages(TO, budget(2 * 125 + 124), &|id| id == ids[0])
        .unwrap();
    assert_eq!(self::ids(&two), vec![ids[1], ids[2]]);
    let oversized = store.queued_messages(TO, budget(1), &|_| false).unwrap();
    assert_eq!(oversized.len(), 1);
    let memory = PullBudget {
        payload: u64::MAX,
        in_memory: 250,
        messages: usize::MAX,
    };
    let in_memory = store.queued_messages(TO, memory, &|_| false).unwrap();
    assert_eq!(self::ids(&in_memory), ids[..2]);
    match &in_memory[1].content {
        Content::Inline(bytes) => assert_eq!(bytes, &[1; 100]),
        other => panic!("expected a content in its row, got {other:?}"),
    }
    store.delete_messages(&delivered(&ids[..2], 0)).unwrap();
    let left = store.queued_messages(TO, budget(u64::MAX), &|_| false);
    assert_eq!(left.unwrap().len(), 2);
}

/// The content of the one message waiting for [`TO`], read whole.
fn only_content(store: &mut dyn Store) -> Vec<u8> {
    let mut queued = store
        .queued_messages(TO, budget(u64::MAX), &|_| false)
        .unwrap();
    assert_eq!(queued.len(), 1);
    match queued.pop().map(|m| m.content) {
        Some(Content::Streamed { mut reader, len }) => {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut reader, &mut bytes).unwrap();
            assert_eq!(bytes.len() as u64, len);
            bytes
        }
        other => panic!("expected a streamed content, got {other:?}"),
    }
}

fn large_contents_follow_their_rows_through_commit_and_rollback(backend: Backend) {
    let mut store = Harness::open(backend);
    store.begin_batch().unwrap();
    send_large(&mut *store, FROM, TO, b"gone");
    store.rollback_batch();
    eventually("the rolled-back content is removed", || {
        store.large_contents() == 0
    });

    store.begin_batch().unwrap();
    let id = send_large(&mut *store, FROM, TO, b"kept");
    store.commit_batch().unwrap();
    assert_eq!(only_content(&mut *store), b"kept");

    store.begin_batch().unwrap();
    let large = [Delivered {
        stored_apart: true,
        ..delivered(&[id], 4)[0]
    }];
    store.delete_messages(&large).unwrap();
    store.rollback_batch();
    assert_eq!(store.large_contents(), 1);
    store.begin_batch().unwrap();
    store.delete_messages(&large).unwrap();
    store.commit_batch().unwrap();
    eventually("the deleted content is removed", || {
        store.large_contents() == 0
    });
}

fn large_contents_are_read_back_whole_across_chunks(backend: Backend) {
    let mut store = Harness::open(backend);
    // Past one 256 KiB chunk of the PostgreSQL store, written in uneven pieces.
    let content: Vec<u8> = (0..700_000u32).map(|n| (n % 251) as u8).collect();
    let mut sink = store.begin_content(content.len() as u64).unwrap();
    for piece in content.chunks(100_003) {
        sink.write(piece).unwrap();
    }
    let large = sink.make_durable().unwrap();
    store
        .insert_message(NewMessage {
            to: TO,
            from: FROM,
            kind: MessageType::File,
            content: NewContent::Large(large),
        })
        .unwrap();
    assert_eq!(only_content(&mut *store), content);
}

fn registrations_follow_commits_rollbacks_and_reopening(backend: Backend) {
    let mut store = Harness::open(backend);
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
    let mut store = store.reopen();
    assert!(store.client_exists(kept).unwrap());
    assert_eq!(store.public_key(kept).unwrap(), Some(key(2)));
    assert!(!store.client_exists(gone).unwrap());
}

fn queue_counts_follow_commits_rollbacks_and_reopening(backend: Backend) {
    let mut store = Harness::open(backend);
    store.begin_batch().unwrap();
    let first = send(&mut *store, FROM, TO, b"12345");
    send_large(&mut *store, FROM, TO, &[7; 100]);
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
    send(&mut *store, FROM, TO, b"rolled back");
    store.delete_messages(&delivered(&[first], 5)).unwrap();
    store.rollback_batch();
    assert_eq!(store.queue(), stats(2, 105, 2, 0));

    store.begin_batch().unwrap();
    store.delete_messages(&delivered(&[first], 5)).unwrap();
    store.commit_batch().unwrap();
    assert_eq!(store.queue(), stats(1, 100, 2, 1));

    // A backend may count the queues at start-up in the background (SQLite): the count is in
    // after a commit once done, with what commits changed since added.
    let mut store = store.reopen();
    store.begin_batch().unwrap();
    send(&mut *store, FROM, TO, b"after");
    store.commit_batch().unwrap();
    let wanted = stats(2, 105, 1, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.queue() != wanted && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
        store.begin_batch().unwrap();
        store.commit_batch().unwrap();
    }
    assert_eq!(store.queue(), wanted);
}

fn a_rolled_back_batch_leaves_nothing(backend: Backend) {
    let mut store = Harness::open(backend);
    store.begin_batch().unwrap();
    store
        .register_client("gone", &key(0), SystemTime::now())
        .unwrap();
    store.rollback_batch();
    assert!(listed(&mut *store, ClientId::default()).is_empty());
}

fn last_seen_is_iso_8601_utc(backend: Backend) {
    let mut store = Harness::open_with(backend, Durability::Full);
    let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let id = store.register_client("t", &key(0), at).unwrap();
    let seen = store.touch_client(id, at + Duration::from_secs(5)).unwrap();
    assert_eq!(seen, Some(Protection::Open));
    assert_eq!(store.touch_client(ClientId([9; 16]), at).unwrap(), None);
    let seen = store.text_after_close("SELECT LastSeen FROM clients");
    assert_eq!(seen, "2023-11-14T22:13:25Z");
}

fn protection_persists_and_is_undone_with_its_request_or_batch(backend: Backend) {
    let mut store = Harness::open(backend);
    let now = SystemTime::now();
    let id = store.register_client("owner", &key(0), now).unwrap();
    let protection = |store: &mut Harness| store.touch_client(id, now).unwrap();

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
    let mut store = store.reopen();
    assert_eq!(protection(&mut store), Some(Protection::Protected));
    store.begin_batch().unwrap();
    store.set_protection(id, Protection::Open).unwrap();
    store.commit_batch().unwrap();
    assert_eq!(protection(&mut store), Some(Protection::Open));
}

fn message_ids_are_never_given_again_even_after_reopening_with_empty_queues(backend: Backend) {
    let mut store = Harness::open_with(backend, Durability::Full);
    let first = send(&mut *store, FROM, TO, b"");
    store.delete_messages(&delivered(&[first], 0)).unwrap();
    let mut store = store.reopen();
    store.begin_batch().unwrap();
    let rolled_back = store
        .insert_message(NewMessage {
            to: TO,
            from: FROM,
            kind: MessageType::Text,
            content: NewContent::Inline(b""),
        })
        .unwrap();
    store.rollback_batch();
    assert!(rolled_back.0 > first.0, "{rolled_back:?} after {first:?}");
    let next = send(&mut *store, FROM, TO, b"");
    assert!(next.0 > first.0, "{next:?} after {first:?}");
    let mut store = store.reopen();
    let last = send(&mut *store, FROM, TO, b"");
    assert!(last.0 > next.0, "{last:?} after {next:?}");
}

fn a_failed_request_undoes_its_own_writes_and_keeps_the_rounds_others(backend: Backend) {
    let mut store = Harness::open(backend);
    let now = SystemTime::now();
    store.begin_batch().unwrap();
    store.begin_request().unwrap();
    let kept = store.register_client("kept", &key(1), now).unwrap();
    store.commit_request().unwrap();
    store.begin_request().unwrap();
    let undone = store.register_client("undone", &key(2), now).unwrap();
    send_large(&mut *store, FROM, TO, b"undone content");
    store.rollback_request();
    assert!(!store.client_exists(undone).unwrap());
    store.begin_request().unwrap();
    let id = send_large(&mut *store, FROM, TO, b"kept content");
    store.commit_request().unwrap();
    store.commit_batch().unwrap();

    assert!(store.client_exists(kept).unwrap());
    let queued = store.queued_messages(TO, budget(u64::MAX), &|_| false);
    assert_eq!(ids(&queued.unwrap()), vec![id]);
    let queue = store.queue();
    assert_eq!(
        (queue.messages, queue.stored),
        (1, 1),
        "the undone message is not counted"
    );
    eventually("the undone content is removed", || {
        store.large_contents() == 1
    });
    // The undone name is free again.
    store.begin_batch().unwrap();
    store.begin_request().unwrap();
    assert!(store.register_client("undone", &key(3), now).is_ok());
    store.commit_request().unwrap();
    store.commit_batch().unwrap();
}
