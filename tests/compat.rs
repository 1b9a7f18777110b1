//! The contract's rules that came from running the published clients against the server:
//! persistent connections are never closed for idling (§4 rule 4), ids without zero bytes
//! (§3), the key-only public-key reply of the version-1 2024–25 client (§4 rule 7), and
//! fixed-size requests announcing huge sizes refused at once (§4 rule 6).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::faulty_store::FaultyStore;
use common::*;
use messageu::protocol::{ClientId, Edition, Operation, RequestHeader};

const EDITION: Edition = Edition::Y2024;

fn code(edition: Edition, operation: Operation) -> u16 {
    edition.request_code(operation)
}

#[test]
fn a_persistent_connection_idle_past_the_idle_timeout_still_serves() {
    let idle = Duration::from_millis(300);
    let server = TestServer::start_with(|config| config.idle_timeout = idle);
    let mut persistent = server.connect();
    let me = persistent.register(EDITION, "at the menu");
    let mut silent = server.connect();
    thread::sleep(idle * 5);
    // The connection that never completed a request is timed out...
    assert!(closed_by_server(&mut silent.stream));
    // ...the one that did is still served, like a user back at the menu after hours.
    assert!(persistent.pull(EDITION, me).is_empty());
    let reply = persistent.call(me, code(EDITION, Operation::ListClients), &[]);
    assert_eq!(reply.code, EDITION.reply_code(Operation::ListClients));
}

#[test]
fn at_the_connection_cap_the_longest_idle_connection_makes_room() {
    let server = TestServer::start_with(|config| config.max_connections = 3);
    let list = code(EDITION, Operation::ListClients);
    let mut clients: Vec<Client> = (0..3).map(|_| server.connect()).collect();
    let me = clients[0].register(EDITION, "first");
    // Served in order, so the first is idle the longest.
    for client in &mut clients {
        assert_eq!(client.call(me, list, &[]).code, 2101);
        thread::sleep(Duration::from_millis(20));
    }
    let mut newcomer = server.connect();
    assert_eq!(newcomer.call(me, list, &[]).code, 2101);
    assert!(
        closed_by_server(&mut clients[0].stream),
        "the longest-idle connection is closed"
    );
    for client in &mut clients[1..] {
        assert_eq!(client.call(me, list, &[]).code, 2101);
    }
}

#[test]
fn at_the_connection_cap_a_session_whose_request_has_arrived_is_not_closed_for_room() {
    let slow_list = Arc::new(AtomicBool::new(false));
    let server = {
        let slow_list = Arc::clone(&slow_list);
        TestServer::start_on_with(
            |config| config.max_connections = 2,
            move |database| FaultyStore::open(database, slow_list),
        )
    };
    // A persistent session, served once, then idle at its menu.
    let mut alice = server.connect();
    let me = alice.register(EDITION, "alice");
    thread::sleep(Duration::from_millis(100));
    // Another session, whose next request holds the event loop for half a second.
    let mut carol = server.connect();
    let her = carol.register(EDITION, "carol");
    slow_list.store(true, Ordering::SeqCst);
    carol.send_raw(&request_bytes(
        her,
        code(EDITION, Operation::ListClients),
        0,
        &[],
    ));
    thread::sleep(Duration::from_millis(150));
    // Meanwhile the idle session sends its next request, then a newcomer arrives at the cap.
    alice.send_raw(&request_bytes(
        me,
        code(EDITION, Operation::PullMessages),
        0,
        &[],
    ));
    thread::sleep(Duration::from_millis(20));
    let _newcomer = TcpStream::connect(server.addr).expect("connect");
    slow_list.store(false, Ordering::SeqCst);
    let reply = alice.read_reply();
    assert_eq!(reply.code, EDITION.reply_code(Operation::PullMessages));
    assert_eq!(
        carol.read_reply().code,
        EDITION.reply_code(Operation::ListClients)
    );
}

#[test]
fn ten_thousand_registrations_get_ids_without_a_zero_byte() {
    let server = TestServer::start();
    let mut stream = server.connect().stream;
    let key = test_key(7);
    let register = code(Edition::Y2022, Operation::Register);
    const COUNT: usize = 10_000;
    let mut requests = Vec::new();
    for n in 0..COUNT {
        requests.extend(request_bytes(
            ClientId::default(),
            register,
            415,
            &register_body(&format!("user {n}"), &key),
        ));
    }
    // Pipelined from a second thread, so that neither side waits on a full buffer.
    let mut writer = stream.try_clone().expect("clone");
    let sender = thread::spawn(move || writer.write_all(&requests).expect("write"));
    let mut replies = vec![0; COUNT * 23];
    stream.read_exact(&mut replies).expect("replies");
    sender.join().expect("sender");
    let mut zero_free = 0;
    for reply in replies.chunks(23) {
        assert_eq!(&reply[..7], &[2, 0x34, 0x08, 16, 0, 0, 0], "a 2100 reply");
        let id = &reply[7..];
        assert!(!id.contains(&0), "id {id:02x?} has a zero byte");
        zero_free += 1;
    }
    assert_eq!(zero_free, COUNT);
}

/// A public-key request with client version `version`; returns the reply's code and payload.
fn public_key(
    client: &mut Client,
    version: u8,
    edition: Edition,
    caller: ClientId,
    target: ClientId,
) -> (u16, Vec<u8>) {
    let header = RequestHeader {
        client_id: caller,
        version,
        code: code(edition, Operation::PublicKey),
        payload_size: 16,
    };
    client.send_raw(&header.encode());
    client.send_raw(&target.0);
    let reply = client.read_reply();
    (reply.code, reply.payload)
}

#[test]
fn version_1_of_the_2024_edition_gets_the_key_alone_and_every_other_request_the_id_too() {
    let server = TestServer::start();
    let mut client = server.connect();
    let alice = client.register(EDITION, "alice");
    let bob = client.register(EDITION, "bob");
    let bob_key = test_key("bob".len() as u8);
    let (reply, payload) = public_key(&mut client, 1, Edition::Y2024, alice, bob);
    assert_eq!(reply, 2102);
    assert_eq!(payload, bob_key, "the 160-byte key alone");
    for edition in Edition::ALL {
        for version in [1, 2] {
            if (edition, version) == (Edition::Y2024, 1) {
                continue;
            }
            let (reply, payload) = public_key(&mut client, version, edition, alice, bob);
            assert_eq!(reply, edition.reply_code(Operation::PublicKey));
            assert_eq!(payload.len(), 176, "{edition:?} version {version}");
            assert_eq!(&payload[..16], &bob.0);
            assert_eq!(&payload[16..], &bob_key);
        }
    }
    // An unknown target is still 9000 for the version-1 client.
    let (reply, payload) = public_key(&mut client, 1, Edition::Y2024, alice, ClientId([9; 16]));
    assert_eq!((reply, payload.len()), (9000, 0));
}

#[test]
fn fixed_size_requests_announcing_a_huge_size_are_refused_at_once() {
    let server = TestServer::start();
    let mut client = server.connect();
    let me = client.register(EDITION, "me");
    for edition in Edition::ALL {
        for operation in [
            Operation::Register,
            Operation::ListClients,
            Operation::PublicKey,
            Operation::PullMessages,
        ] {
            let mut stream = server.connect().stream;
            let started = Instant::now();
            stream
                .write_all(&request_bytes(me, code(edition, operation), u32::MAX, &[]))
                .expect("write");
            let mut reply = [0; 7];
            stream.read_exact(&mut reply).expect("a reply at once");
            assert_eq!(reply, [2, 0x28, 0x23, 0, 0, 0, 0], "9000 for {operation:?}");
            assert!(closed_by_server(&mut stream), "closed after {operation:?}");
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{operation:?} took {:?}",
                started.elapsed()
            );
        }
    }
    // The others go on.
    assert!(client.pull(EDITION, me).is_empty());
}
