//! Long-poll pull (protocol §E6) through real sockets: answered at once when messages wait,
//! parked until a message for the caller is durable or the wait ends, capped at the server's
//! limit, requests behind it answered after it, the client's close, two parked connections
//! of one id, timeouts and eviction that spare a parked connection, and classic clients
//! unaffected.

mod common;

use std::io::ErrorKind;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use messageu::protocol::extension::{
    extension_request, hello_payload, long_poll_payload, parse_capabilities,
};
use messageu::protocol::{ClientId, Edition, Extension, Operation};

const EDITION: Edition = Edition::Y2024;
const LONG_POLL_REPLY: u16 = 2506;
/// How soon a parked long-poll must be answered once a message for it is sent.
const PROMPT: Duration = Duration::from_millis(500);

fn long_poll_request(caller: ClientId, wait: Duration) -> Vec<u8> {
    extension_request(Extension::LongPoll, caller, &long_poll_payload(wait))
}

fn hello(client: &mut Client) {
    client.send_raw(&extension_request(
        Extension::Hello,
        ClientId::default(),
        &hello_payload(),
    ));
    assert_eq!(client.read_reply().code, 2500, "hello");
}

/// Reads a long-poll reply: its messages.
fn long_poll_reply(client: &mut Client) -> Vec<Pulled> {
    let reply = client.read_reply();
    assert_eq!(reply.code, LONG_POLL_REPLY, "{reply:?}");
    parse_pull(&reply.payload)
}

/// Asserts that nothing arrives on `client` for `period`.
fn assert_silent(client: &mut Client, period: Duration) {
    client
        .stream
        .set_read_timeout(Some(period))
        .expect("timeout");
    let peeked = client.stream.peek(&mut [0; 1]);
    client
        .stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("timeout");
    match peeked {
        Err(error) => assert!(
            matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{error}"
        ),
        Ok(n) => panic!("expected silence, got {n} bytes"),
    }
}

/// Two registered clients, `to` and `from`, and a connection that said hello.
fn setup(server: &TestServer) -> (ClientId, ClientId, Client) {
    let mut classic = server.connect();
    let to = classic.register(EDITION, "recipient");
    let from = classic.register(EDITION, "sender");
    let mut waiting = server.connect();
    hello(&mut waiting);
    (to, from, waiting)
}

fn send(server: &TestServer, from: ClientId, to: ClientId, content: &[u8]) -> u32 {
    server.connect().send(EDITION, from, to, 3, content)
}

#[test]
fn waiting_messages_are_answered_at_once_like_a_pull() {
    let server = TestServer::start();
    let (to, from, mut waiting) = setup(&server);
    let sent = [
        send(&server, from, to, b"one"),
        send(&server, from, to, b"two"),
    ];
    let asked = Instant::now();
    waiting.send_raw(&long_poll_request(to, Duration::from_secs(10)));
    let pulled = long_poll_reply(&mut waiting);
    assert!(asked.elapsed() < PROMPT, "took {:?}", asked.elapsed());
    let got: Vec<_> = pulled.iter().map(|m| (m.id, m.from, m.kind)).collect();
    assert_eq!(got, vec![(sent[0], from, 3), (sent[1], from, 3)]);
    assert_eq!(pulled[1].content, b"two");
    // Deleted once written, as a pull's: nothing is left, and a wait of 0 answers at once.
    waiting.send_raw(&long_poll_request(to, Duration::ZERO));
    assert!(long_poll_reply(&mut waiting).is_empty());
    assert!(server.connect().pull(EDITION, to).is_empty());
}

#[test]
fn a_parked_long_poll_is_answered_when_a_message_for_its_caller_is_stored() {
    let server = TestServer::start();
    let (to, from, mut waiting) = setup(&server);
    waiting.send_raw(&long_poll_request(to, Duration::from_secs(10)));
    assert_silent(&mut waiting, Duration::from_millis(300));
    // A message for someone else wakes nobody.
    send(&server, to, from, b"not for the waiting one");
    assert_silent(&mut waiting, Duration::from_millis(200));
    let sent_at = Instant::now();
    let id = send(&server, from, to, b"hello");
    let pulled = long_poll_reply(&mut waiting);
    assert!(sent_at.elapsed() < PROMPT, "took {:?}", sent_at.elapsed());
    assert_eq!(pulled.len(), 1);
    assert_eq!((pulled[0].id, &pulled[0].content[..]), (id, &b"hello"[..]));
    assert!(server.connect().pull(EDITION, to).is_empty(), "delivered");
}

#[test]
fn a_long_poll_ends_empty_when_its_wait_is_over() {
    let server = TestServer::start();
    let (to, _, mut waiting) = setup(&server);
    let asked = Instant::now();
    waiting.send_raw(&long_poll_request(to, Duration::from_millis(300)));
    assert!(long_poll_reply(&mut waiting).is_empty());
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(2),
        "took {took:?}"
    );
}

#[test]
fn the_wait_is_capped_at_the_limit_the_hello_announces() {
    let server =
        TestServer::start_with(|config| config.long_poll_limit = Duration::from_millis(300));
    let mut client = server.connect();
    let to = client.register(EDITION, "recipient");
    let reply = client.call(ClientId::default(), 1500, &hello_payload());
    let capabilities = parse_capabilities(&reply.payload).expect("capabilities");
    assert_eq!(capabilities.max_long_poll_ms, 300);
    let asked = Instant::now();
    client.send_raw(&long_poll_request(to, Duration::from_secs(60)));
    assert!(long_poll_reply(&mut client).is_empty());
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(2),
        "took {took:?}"
    );
}

#[test]
fn requests_behind_a_parked_long_poll_are_answered_after_it_in_order() {
    let server = TestServer::start();
    let (to, from, mut waiting) = setup(&server);
    let mut pipelined = long_poll_request(to, Duration::from_secs(10));
    let list = EDITION.request_code(Operation::ListClients);
    pipelined.extend(request_bytes(to, list, 0, &[]));
    pipelined.extend(request_bytes(
        to,
        EDITION.request_code(Operation::PullMessages),
        0,
        &[],
    ));
    waiting.send_raw(&pipelined);
    assert_silent(&mut waiting, Duration::from_millis(300));
    let sent_at = Instant::now();
    let id = send(&server, from, to, b"first");
    let pulled = long_poll_reply(&mut waiting);
    assert!(sent_at.elapsed() < PROMPT, "took {:?}", sent_at.elapsed());
    assert_eq!(pulled.iter().map(|m| m.id).collect::<Vec<_>>(), vec![id]);
    assert_eq!(
        waiting.read_reply().code,
        EDITION.reply_code(Operation::ListClients)
    );
    let pull = waiting.read_reply();
    assert_eq!(pull.code, EDITION.reply_code(Operation::PullMessages));
    assert!(pull.payload.is_empty(), "the long-poll took the message");

    // Behind a wait that ends empty, too.
    let mut pipelined = long_poll_request(to, Duration::from_millis(200));
    pipelined.extend(request_bytes(to, list, 0, &[]));
    waiting.send_raw(&pipelined);
    assert!(long_poll_reply(&mut waiting).is_empty());
    assert_eq!(
        waiting.read_reply().code,
        EDITION.reply_code(Operation::ListClients)
    );
}

#[test]
fn the_clients_close_ends_a_parked_long_poll() {
    let server = TestServer::start();
    let (to, from, mut waiting) = setup(&server);
    // Half-closed: the request is still answered, empty and at once, then the connection
    // closes.
    waiting.send_raw(&long_poll_request(to, Duration::from_secs(10)));
    assert_silent(&mut waiting, Duration::from_millis(200));
    let closed_at = Instant::now();
    waiting.finish_writing();
    assert!(long_poll_reply(&mut waiting).is_empty());
    assert!(
        closed_at.elapsed() < PROMPT,
        "took {:?}",
        closed_at.elapsed()
    );
    waiting.expect_closed();

    // Gone altogether: a message sent afterwards is not lost to it.
    let mut gone = server.connect();
    hello(&mut gone);
    gone.send_raw(&long_poll_request(to, Duration::from_secs(10)));
    assert_silent(&mut gone, Duration::from_millis(200));
    drop(gone);
    thread::sleep(Duration::from_millis(200));
    let id = send(&server, from, to, b"kept");
    let pulled = server.connect().pull(EDITION, to);
    assert_eq!(pulled.iter().map(|m| m.id).collect::<Vec<_>>(), vec![id]);
}

#[test]
fn two_parked_connections_of_one_id_are_both_woken_and_one_takes_the_message() {
    let server = TestServer::start();
    let (to, from, mut first) = setup(&server);
    let mut second = server.connect();
    hello(&mut second);
    first.send_raw(&long_poll_request(to, Duration::from_secs(10)));
    second.send_raw(&long_poll_request(to, Duration::from_secs(10)));
    assert_silent(&mut second, Duration::from_millis(300));
    let sent_at = Instant::now();
    let id = send(&server, from, to, b"only one");
    let (one, other) = (long_poll_reply(&mut first), long_poll_reply(&mut second));
    assert!(sent_at.elapsed() < PROMPT, "took {:?}", sent_at.elapsed());
    let mut ids: Vec<u32> = one.iter().chain(&other).map(|m| m.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![id], "exactly one of them carries it");
}

#[test]
fn timeouts_and_eviction_spare_a_parked_long_poll() {
    let server = TestServer::start_with(|config| {
        config.request_timeout = Duration::from_millis(200);
        config.idle_timeout = Duration::from_millis(200);
        config.max_connections = 2;
    });
    let (to, _, mut waiting) = setup(&server);
    let asked = Instant::now();
    waiting.send_raw(&long_poll_request(to, Duration::from_millis(1500)));
    thread::sleep(Duration::from_millis(300));
    // At the cap, a newcomer makes room by closing the idle connection, not the parked one.
    let mut idle = server.connect();
    hello(&mut idle);
    thread::sleep(Duration::from_millis(100));
    let mut newcomer = server.connect();
    hello(&mut newcomer);
    assert!(closed_by_server(&mut idle.stream), "the idle one made room");
    assert!(long_poll_reply(&mut waiting).is_empty());
    let took = asked.elapsed();
    assert!(took >= Duration::from_millis(1490), "took {took:?}");
    // And it goes on serving.
    waiting.send_raw(&long_poll_request(to, Duration::ZERO));
    assert!(long_poll_reply(&mut waiting).is_empty());
}

#[test]
fn classic_clients_are_served_as_before_while_a_long_poll_waits() {
    let server = TestServer::start();
    let (to, from, mut waiting) = setup(&server);
    waiting.send_raw(&long_poll_request(to, Duration::from_secs(10)));
    let mut classic = server.connect();
    for edition in EDITIONS {
        let started = Instant::now();
        let id = classic.send(edition, to, from, 3, b"for the sender");
        let pulled = classic.pull(edition, from);
        assert_eq!(pulled.iter().map(|m| m.id).collect::<Vec<_>>(), vec![id]);
        assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());
    }
    assert_silent(&mut waiting, Duration::from_millis(100));
    // A classic pull of the waiting id takes what came first; the wait is unaffected.
    assert!(classic.pull(EDITION, to).is_empty());
    let id = classic.send(EDITION, from, to, 3, b"at last");
    let pulled = long_poll_reply(&mut waiting);
    assert_eq!(pulled.iter().map(|m| m.id).collect::<Vec<_>>(), vec![id]);
}
