//! End-to-end delivery: send order, deletion on pull, the pull reply cap, large messages,
//! in-flight pull replies, many concurrent clients, and restarts on the same database.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use messageu::protocol::{ClientId, Edition, Operation};
use messageu::store::Durability;

/// Bytes a message takes in a pull reply besides its content.
const ENTRY_HEADER: usize = 25;

/// Deterministic, seed-dependent bytes (xorshift), so that a mix-up of contents shows.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A message the server acknowledged.
#[derive(Debug, Clone)]
struct Sent {
    from: ClientId,
    to: ClientId,
    id: u32,
    kind: u8,
    content: Vec<u8>,
}

fn send_recorded(
    client: &mut Client,
    edition: Edition,
    from: ClientId,
    to: ClientId,
    kind: u8,
    content: Vec<u8>,
) -> Sent {
    let id = client.send(edition, from, to, kind, &content);
    Sent {
        from,
        to,
        id,
        kind,
        content,
    }
}

/// Registers one client per name, cycling through the editions.
fn register_all(client: &mut Client, names: &[&str]) -> Vec<ClientId> {
    names
        .iter()
        .enumerate()
        .map(|(index, name)| client.register(EDITIONS[index % EDITIONS.len()], name))
        .collect()
}

/// Asserts that `pulled` is exactly `sent`, in order, with sender, id, type and bytes.
fn assert_delivered(pulled: &[Pulled], sent: &[Sent]) {
    let summary = |m: &Pulled| (m.id, m.kind, m.content.len());
    assert_eq!(
        pulled.len(),
        sent.len(),
        "pulled {:?}, expected ids {:?}",
        pulled.iter().map(summary).collect::<Vec<_>>(),
        sent.iter().map(|s| s.id).collect::<Vec<_>>()
    );
    for (index, (got, want)) in pulled.iter().zip(sent).enumerate() {
        assert_eq!(got.from, want.from, "sender of message {index}");
        assert_eq!(got.id, want.id, "id of message {index}");
        assert_eq!(got.kind, want.kind, "type of message {index}");
        assert!(
            got.content == want.content,
            "content of message {index} differs"
        );
    }
}

fn pull_request(edition: Edition, caller: ClientId) -> Vec<u8> {
    request_bytes(
        caller,
        edition.request_code(Operation::PullMessages),
        0,
        &[],
    )
}

#[test]
fn pull_returns_messages_in_send_order_and_deletes_them() {
    let server = TestServer::start();
    let mut client = server.connect();
    let ids = register_all(&mut client, &["alice", "bob", "carol", "Michael Jackson"]);
    let (alice, bob, carol, michael) = (ids[0], ids[1], ids[2], ids[3]);

    let mut to_carol = Vec::new();
    let mut to_michael = Vec::new();
    for round in 0..8u8 {
        let edition = EDITIONS[usize::from(round) % EDITIONS.len()];
        let kind = round % 4 + 1;
        let (from, other) = if round % 3 == 0 {
            (bob, alice)
        } else {
            (alice, bob)
        };
        let content = match kind {
            1 => Vec::new(),
            2 => pattern(u64::from(round), 128),
            _ => pattern(u64::from(round), 100 * usize::from(round) + 1),
        };
        to_carol.push(send_recorded(
            &mut client,
            edition,
            from,
            carol,
            kind,
            content,
        ));
        let content = format!("to michael {round}").into_bytes();
        to_michael.push(send_recorded(
            &mut client,
            edition,
            other,
            michael,
            3,
            content,
        ));
    }
    let mut all_ids: Vec<u32> = to_carol.iter().chain(&to_michael).map(|s| s.id).collect();
    all_ids.sort_unstable();
    all_ids.dedup();
    assert_eq!(
        all_ids.len(),
        16,
        "message ids are unique among stored messages"
    );

    // Nothing waits for the senders.
    assert!(client.pull(Edition::Y2024, alice).is_empty());
    assert!(client.pull(Edition::Y2021, bob).is_empty());

    assert_delivered(&client.pull(Edition::Y2026, carol), &to_carol);
    assert!(
        client.pull(Edition::Y2026, carol).is_empty(),
        "pulled messages are deleted"
    );
    assert!(client.pull(Edition::Y2022, carol).is_empty());

    // Carol's pull left Michael's queue alone; another connection sees it too.
    let mut other = server.connect();
    assert_delivered(&other.pull(Edition::Y2022, michael), &to_michael);
    assert!(other.pull(Edition::Y2021, michael).is_empty());

    // New messages after a pull are queued afresh.
    let later = send_recorded(
        &mut client,
        Edition::Y2024,
        michael,
        carol,
        3,
        b"later".to_vec(),
    );
    assert_delivered(&client.pull(Edition::Y2024, carol), &[later]);
}

#[test]
fn pull_replies_carry_whole_messages_within_the_cap() {
    const CAP: usize = 10_000;
    let server = TestServer::start_with(|config| config.max_payload = CAP as u32);
    let mut client = server.connect();
    let ids = register_all(&mut client, &["sender", "receiver"]);
    let (sender, receiver) = (ids[0], ids[1]);
    let edition = Edition::Y2024;
    let mut send = |seed: u64, len: usize| {
        send_recorded(
            &mut client,
            edition,
            sender,
            receiver,
            3,
            pattern(seed, len),
        )
    };

    // Two entries of exactly half the cap fill one reply.
    let halves: Vec<Sent> = (10..12).map(|n| send(n, CAP / 2 - ENTRY_HEADER)).collect();
    // 3025-byte entries: three fit in 10 000 bytes, four do not.
    let queued: Vec<Sent> = (0..7).map(|n| send(n, 3000)).collect();
    // The largest content a send may carry (21 + N = cap) makes an entry above the cap.
    let small = send(20, 10);
    let oversized = send(21, CAP - 21);
    let after = send(22, 10);

    let mut client = server.connect();
    let mut pull = || {
        let reply = client.call(receiver, edition.request_code(Operation::PullMessages), &[]);
        assert_eq!(reply.code, edition.reply_code(Operation::PullMessages));
        reply.payload
    };
    let payload = pull();
    assert_eq!(
        payload.len(),
        CAP,
        "entries adding up to exactly the cap fit"
    );
    assert_delivered(&parse_pull(&payload), &halves);
    for expected in [&queued[0..3], &queued[3..6]] {
        let payload = pull();
        assert_eq!(payload.len(), 3 * 3025);
        assert_delivered(&parse_pull(&payload), expected);
    }
    // The oversized message does not join the last 3000-byte one and the small one...
    assert_delivered(&parse_pull(&pull()), &[queued[6].clone(), small]);
    // ...but is delivered alone, and nothing joins it.
    let payload = pull();
    assert_eq!(
        payload.len(),
        CAP + 4,
        "a message above the cap is delivered alone"
    );
    assert_delivered(&parse_pull(&payload), &[oversized]);
    assert_delivered(&parse_pull(&pull()), &[after]);
    assert!(pull().is_empty());
}

#[test]
fn a_five_mebibyte_file_round_trips_exactly() {
    let server = TestServer::start();
    let mut client = server.connect();
    let ids = register_all(&mut client, &["uploader", "downloader"]);
    let file = pattern(5, 5 << 20);
    let sent = send_recorded(&mut client, Edition::Y2022, ids[0], ids[1], 4, file);
    let mut other = server.connect();
    assert_delivered(&other.pull(Edition::Y2022, ids[1]), &[sent]);
    assert!(other.pull(Edition::Y2022, ids[1]).is_empty());
}

#[test]
fn a_reply_not_yet_written_is_not_pulled_twice_and_returns_when_it_fails() {
    const COUNT: usize = 40;
    const SIZE: usize = 1 << 20;
    let server = TestServer::start_with(|config| config.durability = Durability::Normal);
    let mut client = server.connect();
    let ids = register_all(&mut client, &["big sender", "big receiver"]);
    let (sender, receiver) = (ids[0], ids[1]);
    let edition = Edition::Y2026;
    let sent: Vec<Sent> = (0..COUNT as u64)
        .map(|n| send_recorded(&mut client, edition, sender, receiver, 4, pattern(n, SIZE)))
        .collect();

    // Connection A asks for the queue and reads only the reply header: 40 MiB cannot fit in
    // the socket buffers, so the server cannot finish writing the reply.
    let mut stalled = server.connect();
    stalled.send_raw(&pull_request(edition, receiver));
    let mut header = [0; 7];
    std::io::Read::read_exact(&mut stalled.stream, &mut header).expect("reply header");
    let payload_size = u32::from_le_bytes(header[3..7].try_into().unwrap()) as usize;
    assert_eq!(
        payload_size,
        COUNT * (ENTRY_HEADER + SIZE),
        "one reply carries them all"
    );

    let mut other = server.connect();
    let during = other.pull(edition, receiver);
    assert!(
        during.is_empty(),
        "messages of an unfinished reply were pulled again: {:?}",
        during.iter().map(|m| m.id).collect::<Vec<_>>()
    );

    // A fails before its reply is written whole: every message becomes pullable again.
    drop(stalled);
    let mut received: Vec<Pulled> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while received.len() < COUNT && Instant::now() < deadline {
        let pulled = other.pull(edition, receiver);
        if pulled.is_empty() {
            thread::sleep(Duration::from_millis(50));
        }
        received.extend(pulled);
    }
    assert_delivered(&received, &sent);
    assert!(
        other.pull(edition, receiver).is_empty(),
        "delivered messages are deleted"
    );
}

const CLIENTS: usize = 200;
const MESSAGES_EACH: usize = 5;

/// The recipient of sender `from`'s message `seq`: never the sender itself.
fn recipient(from: usize, seq: usize) -> usize {
    (from + 1 + seq * 41) % CLIENTS
}

/// Shared state of the concurrent clients.
#[derive(Default)]
struct Crowd {
    ids: Mutex<HashMap<usize, ClientId>>,
    registered: AtomicUsize,
    failed: AtomicBool,
}

/// Marks the crowd as failed when a client thread panics, so the others stop waiting.
struct FailOnPanic<'a>(&'a AtomicBool);

impl Drop for FailOnPanic<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

/// One client of the crowd: registers, sends its messages, and pulls until it has all of
/// its own. Returns what it sent and what it received.
fn crowd_member(
    server: std::net::SocketAddr,
    me: usize,
    crowd: &Crowd,
    deadline: Instant,
) -> (Vec<Sent>, Vec<Pulled>) {
    let _guard = FailOnPanic(&crowd.failed);
    let edition = EDITIONS[me % EDITIONS.len()];
    let mut client = Client::connect(server);
    let my_id = client.register(edition, &format!("crowd member {me}"));
    crowd.ids.lock().unwrap().insert(me, my_id);
    crowd.registered.fetch_add(1, Ordering::SeqCst);
    while crowd.registered.load(Ordering::SeqCst) < CLIENTS {
        assert!(
            !crowd.failed.load(Ordering::SeqCst),
            "another client failed"
        );
        assert!(
            Instant::now() < deadline,
            "not every client registered in time"
        );
        thread::sleep(Duration::from_millis(5));
    }
    let ids = crowd.ids.lock().unwrap().clone();

    let sent: Vec<Sent> = (0..MESSAGES_EACH)
        .map(|seq| {
            let content = format!("from {me} seq {seq};")
                .repeat(seq * 20 + 1)
                .into_bytes();
            let kind = (seq % 4) as u8 + 1;
            send_recorded(
                &mut client,
                edition,
                my_id,
                ids[&recipient(me, seq)],
                kind,
                content,
            )
        })
        .collect();

    let expected = (0..CLIENTS)
        .flat_map(|from| (0..MESSAGES_EACH).map(move |seq| recipient(from, seq)))
        .filter(|&to| to == me)
        .count();
    let mut received = Vec::new();
    while received.len() < expected {
        assert!(
            !crowd.failed.load(Ordering::SeqCst),
            "another client failed"
        );
        assert!(
            Instant::now() < deadline,
            "client {me} received {} of {expected} messages in time",
            received.len()
        );
        let pulled = client.pull(edition, my_id);
        if pulled.is_empty() {
            thread::sleep(Duration::from_millis(10));
        }
        received.extend(pulled);
    }
    assert!(
        client.pull(edition, my_id).is_empty(),
        "client {me}: more than expected"
    );
    (sent, received)
}

#[test]
fn two_hundred_concurrent_clients_get_every_message_exactly_once() {
    let server = TestServer::start();
    let addr = server.addr;
    let crowd = Arc::new(Crowd::default());
    let deadline = Instant::now() + Duration::from_secs(60);
    let threads: Vec<_> = (0..CLIENTS)
        .map(|me| {
            let crowd = Arc::clone(&crowd);
            thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || crowd_member(addr, me, &crowd, deadline))
                .expect("spawn client thread")
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|thread| thread.join()).collect();
    let results: Vec<_> = results
        .into_iter()
        .enumerate()
        .map(|(me, result)| result.unwrap_or_else(|_| panic!("client {me} failed")))
        .collect();

    let ids = crowd.ids.lock().unwrap().clone();
    // Contents embed sender and sequence, so they identify the acknowledged messages.
    let mut acknowledged: HashMap<Vec<u8>, Sent> = results
        .iter()
        .flat_map(|(sent, _)| sent.iter().cloned())
        .map(|sent| (sent.content.clone(), sent))
        .collect();
    assert_eq!(acknowledged.len(), CLIENTS * MESSAGES_EACH);
    for (me, (_, received)) in results.iter().enumerate() {
        for message in received {
            let sent = acknowledged.remove(&message.content).unwrap_or_else(|| {
                panic!(
                    "client {me} got an unknown or duplicate message: {:?}",
                    String::from_utf8_lossy(&message.content[..message.content.len().min(40)])
                )
            });
            assert_eq!(sent.to, ids[&me], "message delivered to the wrong client");
            assert_eq!(
                (message.from, message.id, message.kind),
                (sent.from, sent.id, sent.kind)
            );
        }
    }
    assert!(
        acknowledged.is_empty(),
        "{} messages never delivered",
        acknowledged.len()
    );
}

/// Messages and clients outlive a restart on the same database; pulled ones stay deleted,
/// and new message ids do not collide with stored ones.
fn messages_survive_a_restart(durability: Durability) {
    let adjust = move |config: &mut messageu::Config| config.durability = durability;
    let server = TestServer::start_with(adjust);
    let mut client = server.connect();
    let ids = register_all(&mut client, &["writer", "reader", "early reader"]);
    let (writer, reader, early) = (ids[0], ids[1], ids[2]);
    let edition = Edition::Y2021;
    let mut waiting: Vec<Sent> = (0..3)
        .map(|n| {
            send_recorded(
                &mut client,
                edition,
                writer,
                reader,
                n + 2,
                pattern(n.into(), 300),
            )
        })
        .collect();
    let pulled = send_recorded(&mut client, edition, writer, early, 1, Vec::new());
    assert_delivered(&client.pull(edition, early), &[pulled]);
    drop(client);
    let dir = server.stop();

    let server = TestServer::start_in(dir, adjust);
    let mut client = server.connect();
    let stored: Vec<u32> = waiting.iter().map(|s| s.id).collect();
    for n in 0..3u8 {
        let sent = send_recorded(&mut client, Edition::Y2024, writer, reader, 3, vec![n; 50]);
        assert!(
            !stored.contains(&sent.id),
            "new id {} collides with {stored:?}",
            sent.id
        );
        waiting.push(sent);
    }
    assert!(
        client.pull(edition, early).is_empty(),
        "a pulled message came back"
    );
    assert_delivered(&client.pull(Edition::Y2024, reader), &waiting);
    assert!(client.pull(edition, reader).is_empty());
}

#[test]
fn messages_survive_a_restart_with_full_durability() {
    messages_survive_a_restart(Durability::Full);
}

#[test]
fn normal_durability_delivers_and_survives_a_restart() {
    messages_survive_a_restart(Durability::Normal);
}

/// A pull reply carries a message only once it is durable: it waits for the flush of the
/// message's commit, not for its own round's (where pulls write nothing), so that no message
/// goes out before its send could be acknowledged. Here every flush takes 600 ms more (a slow
/// disk).
#[test]
fn a_pull_reply_waits_for_the_flush_of_the_messages_it_carries() {
    if common::skip_on_postgres("a log flush after the commit is SQLite's; COMMIT is durable") {
        return;
    }
    const DELAY: Duration = Duration::from_millis(600);
    let server = TestServer::start_on(|database| {
        common::faulty_store::FaultyStore::slow_flush(database, DELAY)
    });
    let edition = Edition::Y2026;
    let mut alice = server.connect();
    let mut bob = server.connect();
    let a = alice.register(edition, "alice");
    let b = bob.register(edition, "bob");
    let started = Instant::now();
    alice.send(edition, a, b, 3, b"first");
    assert!(
        started.elapsed() >= DELAY,
        "a send is acknowledged once flushed"
    );

    let sent_at = Instant::now();
    let sender = thread::spawn(move || alice.send(edition, a, b, 3, b"second"));
    thread::sleep(Duration::from_millis(100));
    // The second message is committed by now, its flush under way; the pull's own round
    // writes nothing and needs no flush.
    let pulled = bob.pull(edition, b);
    let at = sent_at.elapsed();
    let contents: Vec<&[u8]> = pulled.iter().map(|m| &m.content[..]).collect();
    assert_eq!(contents, [&b"first"[..], &b"second"[..]]);
    assert!(
        at >= DELAY,
        "the second message went out {at:?} after its send"
    );
    sender.join().unwrap();

    let started = Instant::now();
    assert!(bob.pull(edition, b).is_empty());
    assert!(
        started.elapsed() < DELAY / 2,
        "an empty pull waits for no flush"
    );
}
