//! A full database: sends are refused with 9000 while every read and pull goes on, and sends
//! are accepted again once pulls have made room. The disk is simulated by `--max-db-size`
//! (SQLite's `max_page_count`).

mod common;

use common::{parse_pull, request_bytes, send_body, BinaryServer, Client, TestServer};
use messageu::protocol::{Edition, Operation};

const EDITION: Edition = Edition::Y2026;

/// Why these tests do not run on PostgreSQL.
const MAX_DB_SIZE_IS_SQLITES: &str =
    "--max-db-size caps the SQLite file; PostgreSQL's space is its administrator's";

fn code(operation: Operation) -> u16 {
    EDITION.request_code(operation)
}

#[test]
fn a_full_database_refuses_sends_serves_everything_else_and_recovers() {
    if common::skip_on_postgres(MAX_DB_SIZE_IS_SQLITES) {
        return;
    }
    let server = TestServer::start_with(|config| config.max_db_size = Some(96 << 10));
    let mut client = server.connect();
    let alice = client.register(EDITION, "alice");
    let bob = client.register(EDITION, "bob");
    let content = vec![0x42; 2000];

    let mut stored = Vec::new();
    loop {
        let reply = client.call(
            alice,
            code(Operation::SendMessage),
            &send_body(bob, 3, &content),
        );
        if reply.is_error() {
            break;
        }
        stored.push(u32::from_le_bytes(
            reply.payload[16..20].try_into().unwrap(),
        ));
        assert!(stored.len() < 100, "the size cap never stopped a send");
    }
    assert!(stored.len() >= 5, "only {} messages fit", stored.len());

    // A refused send and the reads pipelined behind it share a batch: only the send fails.
    let mut pipelined = request_bytes(
        alice,
        code(Operation::SendMessage),
        21 + 2000,
        &send_body(bob, 3, &content),
    );
    pipelined.extend_from_slice(&request_bytes(alice, code(Operation::ListClients), 0, &[]));
    pipelined.extend_from_slice(&request_bytes(
        alice,
        code(Operation::PublicKey),
        16,
        &bob.0,
    ));
    client.send_raw(&pipelined);
    assert!(client.read_reply().is_error(), "the send is refused");
    assert_eq!(client.read_reply().payload.len(), 271, "list");
    assert_eq!(client.read_reply().payload.len(), 176, "public key");
    let registered = client.call(
        Default::default(),
        code(Operation::Register),
        &common::register_body("carol", &common::test_key(3)),
    );
    assert!(registered.is_error() || registered.payload.len() == 16);

    let pulled = client.pull(EDITION, bob);
    let ids: Vec<u32> = pulled.iter().map(|message| message.id).collect();
    assert_eq!(ids, stored, "every acknowledged message is delivered");
    assert!(pulled.iter().all(|message| message.content == content));

    // The pulled messages are deleted once their reply is written; their pages are reused.
    let deadline = std::time::Instant::now() + common::IO_TIMEOUT;
    loop {
        let reply = client.call(
            alice,
            code(Operation::SendMessage),
            &send_body(bob, 3, &content),
        );
        if !reply.is_error() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sends never recovered"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let again = client.call(bob, code(Operation::PullMessages), &[]);
    assert_eq!(parse_pull(&again.payload).len(), 1);
}

#[test]
fn the_size_cap_is_a_command_line_option() {
    if common::skip_on_postgres(MAX_DB_SIZE_IS_SQLITES) {
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = BinaryServer::start(dir.path(), &["--max-db-size", "98304"]);
    let mut client = Client::connect(server.addr);
    let alice = client.register(EDITION, "alice");
    let mut refused = false;
    for _ in 0..100 {
        let reply = client.call(
            alice,
            code(Operation::SendMessage),
            &send_body(alice, 3, &[1; 4000]),
        );
        if reply.is_error() {
            refused = true;
            break;
        }
    }
    assert!(refused, "96 KiB never filled up");
    assert!(client.pull(EDITION, alice).len() > 1);
}
