//! Every 9000 case of the contract (protocol §3, §4.2, §4.5, §4.6). After each error the test
//! proves what follows: the same connection still serves, or, where the contract says close,
//! the connection ends right after the 9000 and a new connection to the same server works.

mod common;

use std::io::Read;
use std::time::Duration;

use common::*;
use messageu::protocol::{ClientId, Edition, Operation};

/// The whole error reply: version 2, code 9000 (0x2328), payload size 0.
const ERROR_REPLY: [u8; 7] = [0x02, 0x28, 0x23, 0x00, 0x00, 0x00, 0x00];
/// The edition of the requests whose edition does not matter to the case.
const EDITION: Edition = Edition::Y2024;
/// How long a reply that needs no further bytes from the client may take: far less than the
/// helpers' socket timeout, so a reply within it proves the server did not wait for more.
const PROMPT: Duration = Duration::from_secs(2);

fn code(operation: Operation) -> u16 {
    EDITION.request_code(operation)
}

/// A request that declares its true payload size.
fn request(caller: ClientId, code: u16, body: &[u8]) -> Vec<u8> {
    request_bytes(caller, code, body.len() as u32, body)
}

/// `len` bytes of a payload the server must consume unread. When there is room, the payload
/// ends with a complete pull request by `caller`, so a server that skipped too little would
/// answer a pull (2104) where the test expects the next reply to be something else.
fn junk(len: usize, caller: ClientId) -> Vec<u8> {
    let decoy = request(caller, code(Operation::PullMessages), &[]);
    match len.checked_sub(decoy.len()) {
        Some(filler) => [vec![0x55; filler], decoy].concat(),
        None => vec![0x55; len],
    }
}

/// Reads exactly seven bytes and asserts they are the error reply.
fn expect_error(client: &mut Client, case: &str) {
    let mut reply = [0; 7];
    if let Err(error) = client.stream.read_exact(&mut reply) {
        panic!("{case}: no 9000 reply: {error}");
    }
    assert_eq!(reply, ERROR_REPLY, "{case}");
}

fn assert_reply(reply: Reply, code: u16, payload: Vec<u8>) {
    assert_eq!(
        reply,
        Reply {
            version: 2,
            code,
            payload
        }
    );
}

/// A server with two registered clients, alice and bob, and a connection to it.
struct Fixture {
    server: TestServer,
    client: Client,
    alice: ClientId,
    bob: ClientId,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with_config(|_| {})
    }

    fn with_config(adjust: impl FnOnce(&mut messageu::Config)) -> Fixture {
        let server = TestServer::start_with(adjust);
        let mut client = server.connect();
        let alice = client.register(EDITION, "alice");
        let bob = client.register(EDITION, "bob");
        Fixture {
            server,
            client,
            alice,
            bob,
        }
    }

    /// Sends `request`, expects exactly the error reply, then proves the same connection still
    /// serves.
    fn rejects(&mut self, request: &[u8], case: &str) {
        self.client.send_raw(request);
        expect_error(&mut self.client, case);
        self.expect_serves();
    }

    /// Sends `request` and expects the error reply at once, without sending more, then the
    /// server's close; then proves a new connection to the same server serves.
    fn rejects_and_closes(&mut self, request: &[u8], case: &str) {
        self.client.send_raw(request);
        self.client.stream.set_read_timeout(Some(PROMPT)).unwrap();
        expect_error(&mut self.client, case);
        self.client.expect_closed();
        self.client = self.server.connect();
        self.expect_serves();
    }

    /// Proves the connection serves and the client set is unchanged: alice's list is exactly
    /// bob's entry.
    fn expect_serves(&mut self) {
        let mut entry = self.bob.0.to_vec();
        entry.extend_from_slice(b"bob");
        entry.resize(16 + 255, 0);
        let reply = self
            .client
            .call(self.alice, code(Operation::ListClients), &[]);
        assert_reply(reply, 2101, entry);
    }

    /// Proves nothing is waiting for `recipient`: its pull reply is exactly empty.
    fn expect_no_messages(&mut self, recipient: ClientId) {
        let reply = self
            .client
            .call(recipient, code(Operation::PullMessages), &[]);
        assert_reply(reply, 2104, Vec::new());
    }
}

#[test]
fn unknown_codes_get_exactly_9000_and_the_connection_still_serves() {
    let mut fx = Fixture::new();
    let outside_editions = Edition::ALL.into_iter().flat_map(|edition| {
        let first = edition.request_code(Operation::Register);
        [first - 1, first + 5]
    });
    for unknown in outside_editions.chain([0, 1, 2000, 2100, 9000, u16::MAX]) {
        fx.rejects(&request(fx.alice, unknown, &[]), &format!("code {unknown}"));
    }
}

#[test]
fn unknown_code_payload_is_consumed_and_the_connection_still_serves() {
    let mut fx = Fixture::new();
    for unknown in [0, 1234, 9000] {
        for len in [1, 23, 500, 5000] {
            let case = format!("code {unknown}, {len} bytes");
            fx.rejects(&request(fx.alice, unknown, &junk(len, fx.alice)), &case);
        }
    }
}

#[test]
fn register_with_a_malformed_name_gets_9000_and_registers_nothing() {
    let mut fx = Fixture::new();
    let no_nul = [b'a'; 255];
    let cases: [(&str, &[u8]); 7] = [
        ("no NUL in the 255-byte field", &no_nul),
        ("empty name", b""),
        ("tab", b"tab\there"),
        ("bell", b"bell\x07"),
        ("escape", b"\x1bescape"),
        ("DEL", b"del\x7f"),
        ("non-ASCII", b"caf\xe9"),
    ];
    for edition in Edition::ALL {
        for (case, name) in cases {
            let mut body = name.to_vec();
            body.resize(255, 0);
            body.extend_from_slice(&test_key(9));
            let code = edition.request_code(Operation::Register);
            fx.rejects(&request(ClientId::default(), code, &body), case);
        }
    }
}

#[test]
fn a_taken_name_gets_9000_in_every_edition_and_keeps_the_first_registration() {
    let mut fx = Fixture::new();
    let body = register_body("bob", &test_key(0xee));
    for edition in Edition::ALL {
        let code = edition.request_code(Operation::Register);
        fx.rejects(&request(ClientId::default(), code, &body), edition.name());
    }
    let reply = fx
        .client
        .call(fx.alice, code(Operation::PublicKey), &fx.bob.0);
    assert_reply(reply, 2102, [&fx.bob.0[..], &test_key(3)].concat());
}

#[test]
fn register_with_a_declared_size_other_than_415_is_consumed_and_registers_nothing() {
    let mut fx = Fixture::new();
    for len in [0, 1, 16, 255, 414, 416, 1024] {
        let mut body = register_body(&format!("mallory{len}"), &test_key(7));
        body.resize(len, 0x55);
        let case = format!("register of {len} bytes");
        fx.rejects(
            &request(ClientId::default(), code(Operation::Register), &body),
            &case,
        );
    }
}

#[test]
fn unknown_caller_gets_9000_for_list_public_key_send_and_pull() {
    let mut fx = Fixture::new();
    for stranger in [ClientId::random(), ClientId::default()] {
        for edition in Edition::ALL {
            let requests = [
                (Operation::ListClients, Vec::new()),
                (Operation::PublicKey, fx.bob.0.to_vec()),
                (Operation::SendMessage, send_body(fx.bob, 3, b"from nobody")),
                (Operation::PullMessages, Vec::new()),
            ];
            for (operation, body) in requests {
                let case = format!("{operation:?} by {stranger} in {}", edition.name());
                fx.rejects(
                    &request(stranger, edition.request_code(operation), &body),
                    &case,
                );
            }
        }
    }
    fx.expect_no_messages(fx.bob);
}

#[test]
fn unknown_public_key_target_gets_9000_in_both_framings() {
    let mut fx = Fixture::new();
    for target in [ClientId::random(), ClientId::default()] {
        for edition in Edition::ALL {
            let code = edition.request_code(Operation::PublicKey);
            for declared in [16, 0] {
                let case = format!("target {target}, size {declared}, {}", edition.name());
                fx.rejects(&request_bytes(fx.alice, code, declared, &target.0), &case);
            }
        }
    }
}

#[test]
fn unknown_destination_gets_9000_and_the_connection_still_serves() {
    let mut fx = Fixture::new();
    let body = send_body(ClientId::random(), 3, b"to nobody");
    for edition in Edition::ALL {
        let code = edition.request_code(Operation::SendMessage);
        fx.rejects(&request(fx.alice, code, &body), edition.name());
    }
    fx.expect_no_messages(fx.alice);
}

#[test]
fn message_types_0_and_5_and_above_get_9000_and_store_nothing() {
    let mut fx = Fixture::new();
    for edition in Edition::ALL {
        for kind in [0, 5, 6, 255] {
            let code = edition.request_code(Operation::SendMessage);
            let case = format!("type {kind} in {}", edition.name());
            fx.rejects(
                &request(fx.alice, code, &send_body(fx.bob, kind, b"content")),
                &case,
            );
        }
    }
    fx.expect_no_messages(fx.bob);
}

#[test]
fn list_and_pull_with_a_payload_are_consumed_and_deliver_nothing() {
    let mut fx = Fixture::new();
    let waiting = fx.client.send(EDITION, fx.bob, fx.alice, 3, b"still here");
    for edition in Edition::ALL {
        for operation in [Operation::ListClients, Operation::PullMessages] {
            for len in [1, 16, 23, 300] {
                let code = edition.request_code(operation);
                let case = format!("{operation:?} with {len} bytes in {}", edition.name());
                fx.rejects(&request(fx.alice, code, &junk(len, fx.alice)), &case);
            }
        }
    }
    let pulled = fx.client.pull(EDITION, fx.alice);
    let content = b"still here".to_vec();
    assert_eq!(
        pulled,
        [Pulled {
            from: fx.bob,
            id: waiting,
            kind: 3,
            content
        }]
    );
}

#[test]
fn public_key_with_a_size_other_than_0_or_16_is_consumed() {
    let mut fx = Fixture::new();
    for len in [1_usize, 15, 17, 32, 300] {
        let mut body = fx.bob.0.to_vec();
        body.extend_from_slice(&junk(len.saturating_sub(16), fx.alice));
        body.truncate(len);
        let case = format!("public key of {len} bytes");
        fx.rejects(&request(fx.alice, code(Operation::PublicKey), &body), &case);
    }
}

#[test]
fn send_declaring_less_than_21_bytes_is_answered_at_once_and_closed() {
    let mut fx = Fixture::new();
    for declared in [0, 1, 20] {
        let header_only = request_bytes(fx.alice, code(Operation::SendMessage), declared, &[]);
        fx.rejects_and_closes(&header_only, &format!("send declaring {declared} bytes"));
    }
    fx.expect_no_messages(fx.bob);
}

#[test]
fn send_declaring_neither_21_plus_n_nor_24_plus_n_gets_9000_and_close() {
    let mut fx = Fixture::new();
    let body = send_body(fx.bob, 3, b"12345");
    for declared in [21, 25, 27, 28, 30, 1000] {
        let bytes = request_bytes(fx.alice, code(Operation::SendMessage), declared, &body);
        fx.rejects_and_closes(
            &bytes,
            &format!("send of 21 + 5 bytes declaring {declared}"),
        );
    }
    let mut huge_content = send_body(fx.bob, 3, b"");
    huge_content[17..21].copy_from_slice(&u32::MAX.to_le_bytes());
    let bytes = request_bytes(fx.alice, code(Operation::SendMessage), 24, &huge_content);
    fx.rejects_and_closes(&bytes, "content size u32::MAX declaring 24");
    fx.expect_no_messages(fx.bob);
}

#[test]
fn payload_above_the_configured_maximum_gets_9000_and_close_without_being_read() {
    const MAX: u32 = 4096;
    let mut fx = Fixture::with_config(|config| config.max_payload = MAX);
    for code in Operation::ALL.map(code).into_iter().chain([1234]) {
        for declared in [MAX + 1, u32::MAX] {
            let header_only = request_bytes(fx.alice, code, declared, &[]);
            fx.rejects_and_closes(&header_only, &format!("code {code} declaring {declared}"));
        }
    }
    fx.expect_no_messages(fx.bob);
    let content = vec![0x42; MAX as usize - 21];
    let id = fx.client.send(EDITION, fx.alice, fx.bob, 4, &content);
    let pulled = fx.client.pull(EDITION, fx.bob);
    let exactly_max = Pulled {
        from: fx.alice,
        id,
        kind: 4,
        content,
    };
    assert_eq!(
        pulled,
        [exactly_max],
        "a payload of exactly the maximum is accepted"
    );
}
