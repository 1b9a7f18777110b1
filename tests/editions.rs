//! Every operation in every edition (protocol §1–§3), checked byte for byte on the wire: the
//! request and reply codes are spelled out here, not taken from the server's own table.

mod common;

use std::collections::HashSet;
use std::io::Read;

use common::*;
use messageu::protocol::{ClientId, Edition, Operation};

const LIST_ENTRY_LEN: usize = 16 + 255;

/// The request code of `operation` in `edition`, from the specification's table.
fn request_code(edition: Edition, operation: Operation) -> u16 {
    let base = match edition {
        Edition::Y2021 => 1000,
        Edition::Y2022 => 1100,
        Edition::Y2024 => 600,
        Edition::Y2026 => 700,
    };
    base + operation as u16
}

/// The code of a successful reply to `operation` in `edition`, from the specification's table.
fn reply_code(edition: Edition, operation: Operation) -> u16 {
    let base = match edition {
        Edition::Y2021 => 2000,
        Edition::Y2022 | Edition::Y2024 | Edition::Y2026 => 2100,
    };
    base + operation as u16
}

/// The exact bytes of a successful reply: server version 2, code, payload size, payload.
fn wire_reply(code: u16, payload: &[u8]) -> Vec<u8> {
    let mut wire = vec![2];
    wire.extend_from_slice(&code.to_le_bytes());
    wire.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    wire.extend_from_slice(payload);
    wire
}

/// One message of a pull reply: sender id | message id | type | content size | content.
fn pulled_entry(from: ClientId, id: u32, kind: u8, content: &[u8]) -> Vec<u8> {
    let mut entry = from.0.to_vec();
    entry.extend_from_slice(&id.to_le_bytes());
    entry.push(kind);
    entry.extend_from_slice(&(content.len() as u32).to_le_bytes());
    entry.extend_from_slice(content);
    entry
}

/// A distinct 160-byte key per name, so that a key returned for the wrong client shows.
fn key_of(name: &str) -> [u8; 160] {
    test_key(
        name.bytes()
            .fold(7u8, |seed, byte| seed.wrapping_mul(31).wrapping_add(byte)),
    )
}

/// A message to send: sender, type, content.
type Message<'a> = (ClientId, u8, &'a [u8]);

/// A persistent connection that sends every request with the client version byte `version`
/// and reads replies as raw bytes.
struct Wire {
    client: Client,
    version: u8,
}

impl Wire {
    fn new(server: &TestServer) -> Wire {
        Wire {
            client: server.connect(),
            version: 2,
        }
    }

    /// Sends one request with its true payload size and returns the whole reply as sent.
    fn exchange(
        &mut self,
        edition: Edition,
        caller: ClientId,
        operation: Operation,
        body: &[u8],
    ) -> Vec<u8> {
        let code = request_code(edition, operation);
        let mut request = request_bytes(caller, code, body.len() as u32, body);
        request[16] = self.version;
        self.client.send_raw(&request);
        let mut wire = vec![0; 7];
        self.client
            .stream
            .read_exact(&mut wire)
            .expect("read reply header");
        let size = u32::from_le_bytes(wire[3..7].try_into().unwrap()) as usize;
        wire.resize(7 + size, 0);
        self.client
            .stream
            .read_exact(&mut wire[7..])
            .expect("read reply payload");
        wire
    }

    /// Asserts the whole reply is the edition's success code with exactly `payload`.
    fn expect(
        &mut self,
        edition: Edition,
        caller: ClientId,
        operation: Operation,
        body: &[u8],
        payload: &[u8],
    ) {
        assert_eq!(
            self.exchange(edition, caller, operation, body),
            wire_reply(reply_code(edition, operation), payload),
            "{operation:?} in edition {}, client version {}",
            edition.name(),
            self.version
        );
    }

    /// Registers `name` with `key_of(name)`; checks the whole reply and that the new id is a
    /// version-4 UUID.
    fn register(&mut self, edition: Edition, name: &str) -> ClientId {
        let body = register_body(name, &key_of(name));
        let wire = self.exchange(edition, ClientId::default(), Operation::Register, &body);
        assert_eq!(
            wire.len(),
            7 + 16,
            "register {name:?} in {}: {wire:02x?}",
            edition.name()
        );
        let id = ClientId::from_slice(&wire[7..]).unwrap();
        assert_eq!(
            wire,
            wire_reply(reply_code(edition, Operation::Register), &id.0)
        );
        assert_eq!(id.0[6] >> 4, 4, "UUID version of {id}");
        assert_eq!(id.0[8] >> 6, 0b10, "UUID variant of {id}");
        id
    }

    /// Asserts `caller`'s list is exactly `others` in this order, each as the id and the name
    /// NUL-terminated and zero-filled to 255 bytes.
    fn expect_list(&mut self, edition: Edition, caller: ClientId, others: &[(ClientId, &str)]) {
        let mut payload = Vec::new();
        for (id, name) in others {
            payload.extend_from_slice(&id.0);
            payload.extend_from_slice(name.as_bytes());
            payload.resize(payload.len() + 255 - name.len(), 0);
        }
        assert_eq!(payload.len(), others.len() * LIST_ENTRY_LEN);
        self.expect(edition, caller, Operation::ListClients, &[], &payload);
    }

    /// Asserts the public key reply is exactly `target` and the key registered as `name`; the
    /// key alone for the version-1 client of the 2024–25 edition (protocol §4 rule 7).
    fn expect_key(&mut self, edition: Edition, caller: ClientId, target: ClientId, name: &str) {
        let key = key_of(name);
        let payload = if edition == Edition::Y2024 && self.version == 1 {
            key.to_vec()
        } else {
            [&target.0[..], &key].concat()
        };
        self.expect(edition, caller, Operation::PublicKey, &target.0, &payload);
    }

    /// Sends a message to `to`; checks the whole reply (destination id + message id) and
    /// returns the message id.
    fn send(&mut self, edition: Edition, to: ClientId, (from, kind, content): Message) -> u32 {
        let body = send_body(to, kind, content);
        let wire = self.exchange(edition, from, Operation::SendMessage, &body);
        assert_eq!(
            wire.len(),
            7 + 20,
            "send in {}: {wire:02x?}",
            edition.name()
        );
        let payload = [&to.0[..], &wire[23..]].concat();
        assert_eq!(
            wire,
            wire_reply(reply_code(edition, Operation::SendMessage), &payload)
        );
        u32::from_le_bytes(wire[23..].try_into().unwrap())
    }

    fn expect_no_messages(&mut self, edition: Edition, recipient: ClientId) {
        self.expect(edition, recipient, Operation::PullMessages, &[], &[]);
    }

    /// Sends `messages` to `to`, then asserts that one pull returns exactly them in send order
    /// and the next pull is empty; returns the message ids.
    fn send_and_pull(&mut self, edition: Edition, to: ClientId, messages: &[Message]) -> Vec<u32> {
        let mut ids = Vec::new();
        let mut expected = Vec::new();
        for &(from, kind, content) in messages {
            let id = self.send(edition, to, (from, kind, content));
            expected.extend(pulled_entry(from, id, kind, content));
            ids.push(id);
        }
        self.expect(edition, to, Operation::PullMessages, &[], &expected);
        self.expect_no_messages(edition, to);
        ids
    }
}

/// Runs `test` once per edition, each on a fresh server and connection.
fn for_each_edition(mut test: impl FnMut(Edition, &mut Wire)) {
    for edition in Edition::ALL {
        let server = TestServer::start();
        test(edition, &mut Wire::new(&server));
    }
}

fn assert_distinct(ids: &[u32]) {
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "message ids {ids:?}"
    );
}

#[test]
fn register_replies_with_a_distinct_version_4_uuid_in_every_edition() {
    let mut seen = HashSet::new();
    for_each_edition(|edition, wire| {
        for name in ["alice", "bob", "carol"] {
            let id = wire.register(edition, name);
            assert!(seen.insert(id), "id {id} handed out twice");
        }
    });
}

#[test]
fn list_excludes_the_caller_and_keeps_registration_order_in_every_edition() {
    for_each_edition(|edition, wire| {
        let alice = wire.register(edition, "alice");
        wire.expect_list(edition, alice, &[]);
        let bob = wire.register(edition, "bob");
        let carol = wire.register(edition, "carol");
        let all = [(alice, "alice"), (bob, "bob"), (carol, "carol")];
        for (caller, _) in all {
            let others: Vec<_> = all.into_iter().filter(|&(id, _)| id != caller).collect();
            wire.expect_list(edition, caller, &others);
        }
    });
}

#[test]
fn public_key_returns_the_target_id_and_its_exact_registered_key_in_every_edition() {
    for_each_edition(|edition, wire| {
        let alice = wire.register(edition, "alice");
        let bob = wire.register(edition, "bob");
        assert_ne!(key_of("alice"), key_of("bob"));
        wire.expect_key(edition, alice, bob, "bob");
        wire.expect_key(edition, bob, alice, "alice");
        wire.expect_key(edition, alice, alice, "alice");
    });
}

#[test]
fn send_replies_with_the_destination_and_distinct_message_ids_in_every_edition() {
    for_each_edition(|edition, wire| {
        let alice = wire.register(edition, "alice");
        let bob = wire.register(edition, "bob");
        let ids = [
            wire.send(edition, bob, (alice, 3, b"one")),
            wire.send(edition, bob, (alice, 3, b"two")),
            wire.send(edition, alice, (bob, 3, b"three")),
            wire.send(edition, bob, (alice, 1, b"")),
        ];
        assert_distinct(&ids);
    });
}

#[test]
fn pull_returns_messages_in_send_order_then_nothing_because_they_are_deleted_in_every_edition() {
    for_each_edition(|edition, wire| {
        let alice = wire.register(edition, "alice");
        let bob = wire.register(edition, "bob");
        let carol = wire.register(edition, "carol");
        wire.expect_no_messages(edition, bob);
        let messages: [Message; 4] = [
            (alice, 3, b"first from alice"),
            (carol, 3, b"then carol"),
            (alice, 4, &[0xc3; 300]),
            (carol, 1, b""),
        ];
        let ids = wire.send_and_pull(edition, bob, &messages);
        assert_distinct(&ids);
        wire.expect_no_messages(edition, alice);
        wire.expect_no_messages(edition, carol);
    });
}

#[test]
fn one_connection_mixes_editions_and_each_reply_uses_its_request_edition() {
    let server = TestServer::start();
    let mut wire = Wire::new(&server);
    let alice = wire.register(Edition::Y2021, "alice");
    let bob = wire.register(Edition::Y2026, "bob");
    let carol = wire.register(Edition::Y2022, "carol");
    wire.expect_list(Edition::Y2026, alice, &[(bob, "bob"), (carol, "carol")]);
    wire.expect_list(Edition::Y2021, bob, &[(alice, "alice"), (carol, "carol")]);
    wire.expect_key(Edition::Y2024, alice, bob, "bob");
    wire.expect_key(Edition::Y2021, carol, bob, "bob");
    let messages: [(Edition, Message); 3] = [
        (Edition::Y2022, (alice, 3, b"sent in 2022-23")),
        (Edition::Y2021, (carol, 3, b"sent in 2021")),
        (Edition::Y2026, (alice, 4, b"sent in 2026")),
    ];
    let mut pulled = Vec::new();
    for (edition, (from, kind, content)) in messages {
        let id = wire.send(edition, bob, (from, kind, content));
        pulled.extend(pulled_entry(from, id, kind, content));
    }
    wire.expect(Edition::Y2024, bob, Operation::PullMessages, &[], &pulled);
    wire.expect_no_messages(Edition::Y2021, bob);
}

#[test]
fn names_with_spaces_and_of_254_characters_register_and_list_verbatim() {
    let long: String = (0..254)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    for_each_edition(|edition, wire| {
        let singer = wire.register(edition, "Michael Jackson");
        let spaced = wire.register(edition, " leading and trailing ");
        let longest = wire.register(edition, &long);
        let observer = wire.register(edition, "observer");
        let others = [
            (singer, "Michael Jackson"),
            (spaced, " leading and trailing "),
            (longest, &long),
        ];
        wire.expect_list(edition, observer, &others);
    });
}

#[test]
fn names_differing_only_in_case_are_distinct_names() {
    for_each_edition(|edition, wire| {
        let upper = wire.register(edition, "Bob");
        let lower = wire.register(edition, "bob");
        let shout = wire.register(edition, "BOB");
        assert_ne!(upper, lower);
        wire.expect_list(edition, shout, &[(upper, "Bob"), (lower, "bob")]);
    });
}

#[test]
fn any_client_version_byte_is_accepted_for_every_operation() {
    for_each_edition(|edition, wire| {
        let mut registered: Vec<(ClientId, String)> = Vec::new();
        for version in [0, 1, 2, 255] {
            wire.version = version;
            let name = format!("client version {version}");
            let id = wire.register(edition, &name);
            let earlier: Vec<_> = registered
                .iter()
                .map(|(id, name)| (*id, name.as_str()))
                .collect();
            wire.expect_list(edition, id, &earlier);
            wire.expect_key(edition, id, id, &name);
            wire.send_and_pull(edition, id, &[(id, 3, name.as_bytes())]);
            registered.push((id, name));
        }
    });
}

#[test]
fn message_types_one_to_four_are_stored_and_pulled_verbatim() {
    // AES-128-CBC of "hello world" under key 00..0f with a zero IV (protocol §5).
    let text = [
        0x92, 0x76, 0xfd, 0xf3, 0x84, 0xf3, 0x85, 0x18, 0xfa, 0x6c, 0x83, 0x10, 0xf1, 0x91, 0x67,
        0x8d,
    ];
    let file: Vec<u8> = (0..=255).cycle().take(4096).collect();
    for_each_edition(|edition, wire| {
        let alice = wire.register(edition, "alice");
        let bob = wire.register(edition, "bob");
        let messages: [Message; 5] = [
            (alice, 1, b""),
            (alice, 1, b"a key request with content"),
            (alice, 2, &[0x5a; 128]),
            (alice, 3, &text),
            (alice, 4, &file),
        ];
        let ids = wire.send_and_pull(edition, bob, &messages);
        assert_distinct(&ids);
    });
}
