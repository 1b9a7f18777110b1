//! Slow, idle and greedy clients, and failing handlers: each costs only its own connection or
//! request, and everyone else goes on being served.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::faulty_store::{FaultyStore, POISONED, POISONED_CONTENT, POISONED_NAME};
use common::{request_bytes, Client, TestServer};
use messageu::config::Database;
use messageu::protocol::{ClientId, Edition, Operation};
use messageu::store::Store;
use messageu::Config;

const EDITION: Edition = Edition::Y2024;

fn code(operation: Operation) -> u16 {
    EDITION.request_code(operation)
}

/// Reads until the server closes the connection; returns how long that took.
fn time_until_closed(stream: &mut TcpStream) -> Duration {
    let start = Instant::now();
    let mut sink = [0; 64 << 10];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return start.elapsed(),
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {
                return start.elapsed()
            }
            Err(error) => panic!("expected the server to close the connection: {error}"),
        }
    }
}

fn with_timeouts(request: Duration, idle: Duration) -> impl FnOnce(&mut Config) {
    move |config| {
        config.request_timeout = request;
        config.idle_timeout = idle;
    }
}

#[test]
fn a_request_that_stalls_is_closed_after_the_request_timeout() {
    let timeout = Duration::from_millis(400);
    let server = TestServer::start_with(with_timeouts(timeout, Duration::from_secs(60)));
    let mut staller = server.connect();
    let half_header = &request_bytes(ClientId([1; 16]), code(Operation::ListClients), 0, &[])[..11];
    staller.send_raw(half_header);
    let mut polite = server.connect();
    let me = polite.register(EDITION, "polite");
    let closed_after = time_until_closed(&mut staller.stream);
    assert!(
        closed_after >= timeout - Duration::from_millis(50) && closed_after < timeout * 5,
        "closed after {closed_after:?}"
    );
    // A polite client that takes its time between requests is not affected.
    thread::sleep(timeout);
    assert!(polite.pull(EDITION, me).is_empty());
}

#[test]
fn an_idle_connection_is_closed_and_a_busy_one_is_not() {
    let idle = Duration::from_millis(400);
    let server = TestServer::start_with(with_timeouts(Duration::from_secs(60), idle));
    let mut busy = server.connect();
    let me = busy.register(EDITION, "busy");
    let mut quiet = server.connect();
    let start = Instant::now();
    while start.elapsed() < idle * 3 {
        assert!(busy.pull(EDITION, me).is_empty());
        thread::sleep(idle / 4);
    }
    let mut byte = [0; 1];
    assert_eq!(quiet.stream.read(&mut byte).expect("closed quietly"), 0);
}

#[test]
fn an_upload_that_keeps_coming_outlives_the_request_timeout_and_a_stalled_one_does_not() {
    let timeout = Duration::from_millis(300);
    let server = TestServer::start_with(|config| {
        with_timeouts(timeout, Duration::from_secs(60))(config);
        config.spool_threshold = 1000;
    });
    let mut client = server.connect();
    let alice = client.register(EDITION, "alice");
    let bob = client.register(EDITION, "bob");
    let content = vec![0x5a; 400_000];
    let mut request = request_bytes(alice, code(Operation::SendMessage), 21 + 400_000, &bob.0);
    request.push(4);
    request.extend_from_slice(&400_000u32.to_le_bytes());

    let mut slow = server.connect();
    slow.send_raw(&request);
    for chunk in content.chunks(40_000) {
        thread::sleep(timeout / 3);
        slow.send_raw(chunk);
    }
    let reply = slow.read_reply();
    assert_eq!(reply.code, EDITION.reply_code(Operation::SendMessage));

    let mut stalled = server.connect();
    stalled.send_raw(&request);
    stalled.send_raw(&content[..1000]);
    let closed_after = time_until_closed(&mut stalled.stream);
    assert!(closed_after < timeout * 5, "closed after {closed_after:?}");
    let pulled = client.pull(EDITION, bob);
    assert_eq!(pulled.len(), 1, "only the completed upload is stored");
}

#[test]
fn a_client_that_does_not_read_its_replies_is_closed_and_its_messages_stay_queued() {
    let timeout = Duration::from_millis(400);
    let server = TestServer::start_with(with_timeouts(timeout, Duration::from_secs(60)));
    let mut client = server.connect();
    let me = client.register(EDITION, "reader");
    client.send(EDITION, me, me, 4, &vec![7; 8 << 20]);
    let mut greedy = server.connect();
    greedy.send_raw(&request_bytes(me, code(Operation::PullMessages), 0, &[]));
    // Nothing is read: the 8 MiB reply fills the socket buffers and stops.
    thread::sleep(timeout * 4);
    let mut header = [0; 7];
    greedy.stream.read_exact(&mut header).expect("reply header");
    let closed_after = time_until_closed(&mut greedy.stream);
    assert!(closed_after < Duration::from_secs(5), "{closed_after:?}");
    let pulled = client.pull(EDITION, me);
    assert_eq!(
        pulled.len(),
        1,
        "the unread reply's message is still queued"
    );
}

#[test]
fn connections_past_the_per_address_cap_are_refused_and_the_others_go_on() {
    let server = TestServer::start_with(|config| config.max_connections_per_ip = 5);
    let mut open: Vec<Client> = (0..5).map(|_| server.connect()).collect();
    let me = open[0].register(EDITION, "capped");
    let mut refused = server.connect();
    assert!(time_until_closed(&mut refused.stream) < Duration::from_secs(5));
    for client in &mut open {
        assert!(client.pull(EDITION, me).is_empty());
    }
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = server.connect();
        again.send_raw(&request_bytes(me, code(Operation::PullMessages), 0, &[]));
        let mut header = [0; 7];
        if again.stream.read_exact(&mut header).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "a freed slot was never reused");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_handler_that_panics_answers_9000_and_the_connection_and_server_go_on() {
    let server = TestServer::start_on(panicking_store);
    let mut client = server.connect();
    let me = client.register(EDITION, "victim");
    let reply = client.call(me, code(Operation::PublicKey), &POISONED.0);
    assert!(reply.is_error());
    let reply = client.call(me, code(Operation::PublicKey), &me.0);
    assert_eq!(reply.code, EDITION.reply_code(Operation::PublicKey));
    assert!(server.connect().pull(EDITION, me).is_empty());
}

fn panicking_store(database: &Database) -> Box<dyn Store> {
    FaultyStore::open(database, Arc::default())
}

#[test]
fn a_request_that_fails_after_writing_leaves_nothing_behind_and_its_round_commits() {
    let server = TestServer::start_on(panicking_store);
    let mut client = server.connect();
    let me = client.register(EDITION, "survivor");
    // Pipelined, so that all of them share one round's transaction.
    let mut round = request_bytes(
        ClientId::default(),
        code(Operation::Register),
        415,
        &common::register_body(POISONED_NAME, &common::test_key(1)),
    );
    round.extend(request_bytes(
        me,
        code(Operation::SendMessage),
        21 + POISONED_CONTENT.len() as u32,
        &common::send_body(me, 3, POISONED_CONTENT),
    ));
    round.extend(request_bytes(
        me,
        code(Operation::SendMessage),
        21 + 4,
        &common::send_body(me, 3, b"kept"),
    ));
    client.send_raw(&round);
    assert!(
        client.read_reply().is_error(),
        "the registration that panicked"
    );
    assert!(client.read_reply().is_error(), "the send that failed");
    assert_eq!(
        client.read_reply().code,
        EDITION.reply_code(Operation::SendMessage)
    );
    let listed = client.call(me, code(Operation::ListClients), &[]);
    assert_eq!(listed.payload.len(), 0, "the failed registration is gone");
    let pulled = client.pull(EDITION, me);
    assert_eq!(pulled.len(), 1);
    assert_eq!(pulled[0].content, b"kept");

    // Nothing of the failed requests reached the database either: a server started on it
    // afresh lists only the client that registered.
    drop(client);
    let server = TestServer::start_in(server.stop(), |_| {});
    let listed = server.connect().call(me, code(Operation::ListClients), &[]);
    assert_eq!(listed.payload.len(), 0, "the failed registration is gone");
    assert_eq!(server.connect().pull(EDITION, me).len(), 0);
}
