//! End-to-end tests of the framing rules (protocol §4), through real sockets: zero-padded
//! clients, persistent and pipelining clients, requests split over many reads, the public-key
//! and send-message quirks, other declared sizes, limits, and a replay of a real session
//! captured between a C++ client and a Python client.

mod common;

use std::io::{ErrorKind, Read};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use messageu::protocol::{ClientId, Edition, Operation, ReplyHeader};

/// Padded clients pad requests and expect replies padded to multiples of this.
const BLOCK: usize = 1024;
/// One entry of a list reply: id + name field.
const LIST_ENTRY_LEN: usize = 16 + 255;
/// Destination (16) + type (1) + content size (4).
const SEND_HEADER_LEN: usize = 21;
/// Bytes some clients declare beyond the send-message header without sending them.
const SEND_SLACK: usize = 3;
/// "Answered at once": far below anything a server waiting for more bytes would need.
const PROMPT: Duration = Duration::from_secs(2);

/// A message as a pull reply carries it, without its server-assigned id.
type Message = (ClientId, u8, Vec<u8>);

/// What the reply to one request must be.
#[derive(Debug, Clone)]
enum Expect {
    Registered,
    /// The names of the other clients, in registration order.
    Listed(Vec<String>),
    Key(ClientId, [u8; 160]),
    Stored(ClientId),
    Pulled(Vec<Message>),
    Error,
}

/// One request's bytes and the reply they must get.
#[derive(Debug, Clone)]
struct Exchange {
    request: Vec<u8>,
    edition: Edition,
    expect: Expect,
}

impl Exchange {
    fn new(
        edition: Edition,
        operation: Operation,
        caller: ClientId,
        body: &[u8],
        expect: Expect,
    ) -> Exchange {
        let code = edition.request_code(operation);
        let request = request_bytes(caller, code, body.len() as u32, body);
        Exchange {
            request,
            edition,
            expect,
        }
    }

    fn register(edition: Edition, name: &str) -> Exchange {
        let body = register_body(name, &key_of(name));
        Exchange::new(
            edition,
            Operation::Register,
            ClientId::default(),
            &body,
            Expect::Registered,
        )
    }

    fn list(edition: Edition, caller: ClientId, others: Vec<String>) -> Exchange {
        Exchange::new(
            edition,
            Operation::ListClients,
            caller,
            &[],
            Expect::Listed(others),
        )
    }

    fn key(edition: Edition, caller: ClientId, target: ClientId, target_name: &str) -> Exchange {
        let expect = Expect::Key(target, key_of(target_name));
        Exchange::new(edition, Operation::PublicKey, caller, &target.0, expect)
    }

    fn send(edition: Edition, from: ClientId, to: ClientId, kind: u8, content: &[u8]) -> Exchange {
        let body = send_body(to, kind, content);
        Exchange::new(
            edition,
            Operation::SendMessage,
            from,
            &body,
            Expect::Stored(to),
        )
    }

    fn pull(edition: Edition, caller: ClientId, messages: Vec<Message>) -> Exchange {
        Exchange::new(
            edition,
            Operation::PullMessages,
            caller,
            &[],
            Expect::Pulled(messages),
        )
    }

    /// A request with any declared size and body, answered with 9000.
    fn refused(
        edition: Edition,
        operation: Operation,
        caller: ClientId,
        declared: u32,
        body: &[u8],
    ) -> Exchange {
        let request = request_bytes(caller, edition.request_code(operation), declared, body);
        Exchange {
            request,
            edition,
            expect: Expect::Error,
        }
    }

    /// The same bytes with another payload size in the header.
    fn declaring(mut self, declared: usize) -> Exchange {
        self.request[19..23].copy_from_slice(&(declared as u32).to_le_bytes());
        self
    }

    fn label(&self) -> String {
        let code = u16::from_le_bytes([self.request[17], self.request[18]]);
        let declared = u32::from_le_bytes(self.request[19..23].try_into().unwrap());
        format!(
            "request code {code}, declared size {declared}, {} bytes",
            self.request.len()
        )
    }

    /// Asserts `reply` is exactly the expected one.
    fn check(&self, reply: &Reply) {
        let what = self.label();
        assert_eq!(reply.version, 2, "{what}: server version of {reply:?}");
        let operation = match &self.expect {
            Expect::Error => {
                assert!(
                    reply.is_error(),
                    "{what}: expected 9000 with no payload, got {reply:?}"
                );
                return;
            }
            Expect::Registered => Operation::Register,
            Expect::Listed(_) => Operation::ListClients,
            Expect::Key(..) => Operation::PublicKey,
            Expect::Stored(_) => Operation::SendMessage,
            Expect::Pulled(_) => Operation::PullMessages,
        };
        assert_eq!(
            reply.code,
            self.edition.reply_code(operation),
            "{what}: reply code of {reply:?}"
        );
        let payload = &reply.payload;
        match &self.expect {
            Expect::Registered => assert_eq!(payload.len(), 16, "{what}: client id"),
            Expect::Listed(names) => {
                assert_eq!(&listed_names(payload), names, "{what}: listed names")
            }
            Expect::Key(target, key) => {
                assert_eq!(payload.len(), 176, "{what}: public key reply size");
                assert_eq!(&payload[..16], &target.0, "{what}: target id");
                assert_eq!(&payload[16..], &key[..], "{what}: key");
            }
            Expect::Stored(to) => {
                assert_eq!(payload.len(), 20, "{what}: send reply size");
                assert_eq!(&payload[..16], &to.0, "{what}: destination");
            }
            Expect::Pulled(messages) => {
                assert_eq!(&pulled(payload), messages, "{what}: pulled messages")
            }
            Expect::Error => unreachable!(),
        }
    }
}

/// The 160-byte key every test client registers with (as `Client::register` does).
fn key_of(name: &str) -> [u8; 160] {
    test_key(name.len() as u8)
}

/// Deterministic, non-trivial content bytes.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

/// The names in a list reply, asserting each entry's name field is NUL-terminated and
/// zero-filled.
fn listed_names(payload: &[u8]) -> Vec<String> {
    assert_eq!(
        payload.len() % LIST_ENTRY_LEN,
        0,
        "list reply of {} bytes",
        payload.len()
    );
    payload
        .chunks(LIST_ENTRY_LEN)
        .map(|entry| {
            let field = &entry[16..];
            let end = field
                .iter()
                .position(|&byte| byte == 0)
                .expect("NUL-terminated name");
            assert!(
                field[end..].iter().all(|&byte| byte == 0),
                "name field zero-filled"
            );
            String::from_utf8(field[..end].to_vec()).expect("ASCII name")
        })
        .collect()
}

fn pulled(payload: &[u8]) -> Vec<Message> {
    parse_pull(payload)
        .into_iter()
        .map(|message| (message.from, message.kind, message.content))
        .collect()
}

fn registered_id(reply: &Reply) -> ClientId {
    ClientId::from_slice(&reply.payload).expect("16-byte client id")
}

/// Names registered on one server, in registration order, to predict list replies.
#[derive(Default)]
struct Roster(Vec<String>);

impl Roster {
    fn add(&mut self, name: &str) {
        self.0.push(name.to_owned());
    }

    fn except(&self, caller: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|name| *name != caller)
            .cloned()
            .collect()
    }
}

/// Sends one exchange's request on a persistent connection and checks the exact reply.
fn exchange_on(client: &mut Client, exchange: &Exchange) -> Reply {
    client.send_raw(&exchange.request);
    let reply = client.read_reply();
    exchange.check(&reply);
    reply
}

/// Writes every request in ONE write (with `half_close`, then shuts the write side and waits
/// before reading), and checks that the replies come back exact and in order.
fn pipeline(
    client: &mut Client,
    exchanges: &[Exchange],
    half_close: Option<Duration>,
) -> Vec<Reply> {
    let bytes: Vec<u8> = exchanges
        .iter()
        .flat_map(|exchange| exchange.request.iter().copied())
        .collect();
    client.send_raw(&bytes);
    if let Some(pause) = half_close {
        client.finish_writing();
        thread::sleep(pause);
    }
    exchanges
        .iter()
        .map(|exchange| {
            let reply = client.read_reply();
            exchange.check(&reply);
            reply
        })
        .collect()
}

/// Asserts the connection is still open and nothing follows the last reply (no padding).
fn assert_open_and_quiet(client: &mut Client) {
    client
        .stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut byte = [0; 1];
    match client.stream.read(&mut byte) {
        Ok(0) => panic!("the server closed a persistent connection"),
        Ok(_) => panic!("unexpected byte {:#04x} after the last reply", byte[0]),
        Err(error) => assert!(
            matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "expected an open, quiet connection: {error}"
        ),
    }
    client.stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
}

/// Asserts the reply is a 9000 that arrives promptly, followed by the server's close.
fn expect_error_and_close(client: &mut Client, what: &str) {
    let started = Instant::now();
    client.stream.set_read_timeout(Some(PROMPT)).unwrap();
    let reply = client.read_reply();
    assert!(reply.is_error(), "{what}: expected 9000, got {reply:?}");
    client.expect_closed();
    assert!(
        started.elapsed() < PROMPT,
        "{what}: the server took {:?}",
        started.elapsed()
    );
}

/// Registers two clients through `call`, then exchanges keys and every message type, as a
/// whole session of two clients does.
fn conversation(
    edition: Edition,
    tag: &str,
    roster: &mut Roster,
    call: &mut dyn FnMut(&Exchange) -> Reply,
) {
    let alice = format!("alice {tag}");
    let bob = format!("bob, {tag}'s peer");
    let mut register = |name: &str| {
        let exchange = Exchange::register(edition, name);
        let id = registered_id(&call(&exchange));
        roster.add(name);
        id
    };
    let (alice_id, bob_id) = (register(&alice), register(&bob));
    // Type 4 content of 3000 bytes makes that request 3044 bytes long: three blocks padded.
    let to_bob = [
        (1, Vec::new()),
        (2, pattern(128, 2)),
        (3, pattern(80, 3)),
        (4, pattern(3000, 4)),
    ];
    let to_alice = (3, pattern(48, 5));
    let mut steps = vec![
        Exchange::list(edition, alice_id, roster.except(&alice)),
        Exchange::list(edition, bob_id, roster.except(&bob)),
        Exchange::key(edition, alice_id, bob_id, &bob),
        Exchange::key(edition, bob_id, alice_id, &alice),
    ];
    steps.extend(
        to_bob
            .iter()
            .map(|(kind, content)| Exchange::send(edition, alice_id, bob_id, *kind, content)),
    );
    steps.push(Exchange::pull(
        edition,
        bob_id,
        to_bob
            .iter()
            .map(|(kind, content)| (alice_id, *kind, content.clone()))
            .collect(),
    ));
    steps.push(Exchange::send(
        edition,
        bob_id,
        alice_id,
        to_alice.0,
        &to_alice.1,
    ));
    steps.push(Exchange::pull(
        edition,
        alice_id,
        vec![(bob_id, to_alice.0, to_alice.1)],
    ));
    steps.push(Exchange::pull(edition, bob_id, Vec::new()));
    for step in &steps {
        call(step);
    }
}

/// `request` zero-padded to the next multiple of 1024 (it must not be one already).
fn pad(request: &[u8]) -> Vec<u8> {
    assert_ne!(
        request.len() % BLOCK,
        0,
        "a request of whole blocks cannot show padding"
    );
    let mut bytes = request.to_vec();
    bytes.resize(request.len().next_multiple_of(BLOCK), 0);
    bytes
}

/// Reads a reply the way padded clients do, in 1024-byte blocks; asserts it is padded with
/// zeros to the least multiple of 1024 and that the server then closes.
fn read_padded_reply(client: &mut Client) -> Reply {
    let mut bytes = vec![0; BLOCK];
    client
        .stream
        .read_exact(&mut bytes)
        .expect("first reply block");
    let header = ReplyHeader::parse(bytes[..7].try_into().unwrap());
    let end = 7 + header.payload_size as usize;
    bytes.resize(end.next_multiple_of(BLOCK), 0);
    client
        .stream
        .read_exact(&mut bytes[BLOCK..])
        .expect("further reply blocks");
    assert!(
        bytes[end..].iter().all(|&byte| byte == 0),
        "reply padding must be zeros"
    );
    client.expect_closed();
    Reply {
        version: header.version,
        code: header.code,
        payload: bytes[7..end].to_vec(),
    }
}

/// One request of a padded client: a new connection, the request padded to whole blocks
/// (with `split`, the padding's second half a few milliseconds later), the padded reply,
/// then the server's close.
fn padded_call(server: &TestServer, exchange: &Exchange, split: bool) -> Reply {
    let bytes = pad(&exchange.request);
    let mut client = server.connect();
    if split {
        let at = exchange.request.len() + (bytes.len() - exchange.request.len()) / 2;
        client.send_raw(&bytes[..at]);
        thread::sleep(Duration::from_millis(5));
        client.send_raw(&bytes[at..]);
    } else {
        client.send_raw(&bytes);
    }
    let reply = read_padded_reply(&mut client);
    exchange.check(&reply);
    reply
}

#[test]
fn zero_padded_clients_get_padded_replies_and_a_close_per_request() {
    let server = TestServer::start();
    let mut roster = Roster::default();
    for edition in EDITIONS {
        let mut count = 0;
        // Every second request's padding arrives in two writes: the grace-time path.
        conversation(
            edition,
            &format!("padded {}", edition.name()),
            &mut roster,
            &mut |exchange| {
                count += 1;
                padded_call(&server, exchange, count % 2 == 0)
            },
        );
    }
}

#[test]
fn persistent_clients_get_exact_replies_and_the_connection_stays_open() {
    let server = TestServer::start();
    let mut client = server.connect();
    let mut roster = Roster::default();
    for edition in EDITIONS {
        conversation(
            edition,
            &format!("persistent {}", edition.name()),
            &mut roster,
            &mut |exchange| exchange_on(&mut client, exchange),
        );
        assert_open_and_quiet(&mut client);
    }
    // Idle longer than the padding grace time: still open, still serving.
    thread::sleep(Duration::from_millis(400));
    let caller = client.register(Edition::Y2024, "late caller");
    roster.add("late caller");
    exchange_on(
        &mut client,
        &Exchange::list(Edition::Y2021, caller, roster.except("late caller")),
    );
    assert_open_and_quiet(&mut client);
}

/// Registers alice and bob on a connection of their own; returns their ids.
fn two_clients(
    server: &TestServer,
    roster: &mut Roster,
    alice: &str,
    bob: &str,
) -> (ClientId, ClientId) {
    let mut setup = server.connect();
    let ids = (
        setup.register(Edition::Y2024, alice),
        setup.register(Edition::Y2024, bob),
    );
    roster.add(alice);
    roster.add(bob);
    ids
}

/// 60 requests of every kind and edition: each pull must return exactly the message sent
/// just before it, and each list the clients registered before it.
fn mixed_pipeline(
    roster: &mut Roster,
    alice: (&str, ClientId),
    bob: (&str, ClientId),
    tag: &str,
) -> Vec<Exchange> {
    let mut exchanges = Vec::new();
    for i in 0..12 {
        let edition = EDITIONS[i % EDITIONS.len()];
        let content = format!("{tag} message {i}").into_bytes();
        let name = format!("{tag} client {i}");
        exchanges.push(Exchange::send(edition, alice.1, bob.1, 3, &content));
        exchanges.push(Exchange::list(edition, alice.1, roster.except(alice.0)));
        exchanges.push(Exchange::key(edition, alice.1, bob.1, bob.0));
        exchanges.push(Exchange::register(edition, &name));
        roster.add(&name);
        exchanges.push(Exchange::pull(edition, bob.1, vec![(alice.1, 3, content)]));
    }
    exchanges
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = TestServer::start();
    let mut roster = Roster::default();
    let (alice, bob) = two_clients(&server, &mut roster, "alice", "bob");
    let mut client = server.connect();
    let exchanges = mixed_pipeline(&mut roster, ("alice", alice), ("bob", bob), "pipelined");
    assert!(exchanges.len() >= 50);
    let replies = pipeline(&mut client, &exchanges, None);
    let new_ids: Vec<_> = replies
        .iter()
        .filter(|reply| reply.payload.len() == 16)
        .map(registered_id)
        .collect();
    assert_open_and_quiet(&mut client);
    // The clients registered inside the pipeline are real: their keys are served.
    let last = Exchange::key(Edition::Y2026, alice, new_ids[11], "pipelined client 11");
    exchange_on(&mut client, &last);
    assert_open_and_quiet(&mut client);
}

#[test]
fn a_client_that_half_closes_after_pipelining_gets_every_reply() {
    let server = TestServer::start();
    let mut roster = Roster::default();
    let (alice, bob) = two_clients(&server, &mut roster, "alice", "bob");
    // Enough clients that the 40 list replies (about 670 KB) exceed the 256 KiB the server
    // buffers for one connection: it pauses, and must still serve the rest after the close.
    let crowd: Vec<_> = (0..60)
        .map(|i| Exchange::register(Edition::Y2024, &format!("member {i}")))
        .collect();
    pipeline(&mut server.connect(), &crowd, None);
    (0..60).for_each(|i| roster.add(&format!("member {i}")));
    let mut client = server.connect();
    let mut exchanges = mixed_pipeline(&mut roster, ("alice", alice), ("bob", bob), "half-closed");
    exchanges
        .extend((0..40).map(|_| Exchange::list(Edition::Y2026, alice, roster.except("alice"))));
    exchanges.push(Exchange::pull(Edition::Y2021, bob, Vec::new()));
    pipeline(&mut client, &exchanges, Some(Duration::from_millis(300)));
    client.expect_closed();
}

/// Writes `bytes` one byte per write (the connection has TCP_NODELAY), pausing every few
/// bytes so that the server sees many small reads.
fn dribble(client: &mut Client, bytes: &[u8]) {
    for (index, byte) in bytes.iter().enumerate() {
        client.send_raw(std::slice::from_ref(byte));
        if index % 4 == 3 {
            thread::sleep(Duration::from_millis(1));
        }
    }
}

#[test]
fn requests_split_over_many_reads_are_reassembled() {
    let server = TestServer::start();
    let mut roster = Roster::default();
    let bob = server.connect().register(Edition::Y2022, "bob");
    roster.add("bob");
    let mut client = server.connect();
    let started = Instant::now();
    let register = Exchange::register(Edition::Y2022, "dribbling alice");
    dribble(&mut client, &register.request);
    let reply = client.read_reply();
    register.check(&reply);
    roster.add("dribbling alice");
    let alice = registered_id(&reply);
    let content = pattern(100, 7);
    for exchange in [
        Exchange::send(Edition::Y2022, alice, bob, 3, &content),
        Exchange::pull(Edition::Y2022, bob, vec![(alice, 3, content.clone())]),
    ] {
        dribble(&mut client, &exchange.request);
        exchange.check(&client.read_reply());
    }
    assert_open_and_quiet(&mut client);
    // A list on a new connection, pipelined with a register split right after its zero
    // client id: those zeros are not padding once the rest of the register arrives.
    let mut client = server.connect();
    let list = Exchange::list(Edition::Y2022, bob, roster.except("bob"));
    let register = Exchange::register(Edition::Y2022, "late alice");
    let mut bytes = list.request.clone();
    bytes.extend_from_slice(&register.request);
    client.send_raw(&bytes[..list.request.len() + 10]);
    thread::sleep(Duration::from_millis(20));
    client.send_raw(&bytes[list.request.len() + 10..]);
    list.check(&client.read_reply());
    register.check(&client.read_reply());
    assert_open_and_quiet(&mut client);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn public_key_with_payload_size_zero_reads_the_target_that_follows() {
    let server = TestServer::start();
    let mut roster = Roster::default();
    let (alice, bob) = two_clients(&server, &mut roster, "alice", "bob");
    for edition in EDITIONS {
        let zero = Exchange::key(edition, alice, bob, "bob").declaring(0);
        // As the first request of a connection, pipelined with more requests.
        let mut client = server.connect();
        pipeline(
            &mut client,
            &[
                zero.clone(),
                Exchange::key(edition, bob, alice, "alice").declaring(0),
                Exchange::list(edition, alice, roster.except("alice")),
            ],
            None,
        );
        // Alone, waiting for its reply, on a connection that keeps serving.
        exchange_on(&mut client, &zero);
        exchange_on(&mut client, &Exchange::pull(edition, bob, Vec::new()));
        assert_open_and_quiet(&mut client);
    }
}

#[test]
fn send_message_is_framed_by_content_size_whether_declared_21_or_24_plus_n() {
    let server = TestServer::start();
    let mut roster = Roster::default();
    let (alice, bob) = two_clients(&server, &mut roster, "alice", "bob");
    for edition in EDITIONS {
        let mut client = server.connect();
        for len in [0, 1, 75, 1500] {
            for declared in [SEND_HEADER_LEN + SEND_SLACK + len, SEND_HEADER_LEN + len] {
                let kind = if len == 0 { 1 } else { 3 };
                let content = pattern(len, declared as u8);
                // The pull right behind the send (same write) shows where the server thinks
                // the send ended.
                let send = Exchange::send(edition, alice, bob, kind, &content).declaring(declared);
                pipeline(
                    &mut client,
                    &[
                        send,
                        Exchange::pull(edition, bob, vec![(alice, kind, content)]),
                    ],
                    None,
                );
            }
        }
        assert_open_and_quiet(&mut client);
    }
}

#[test]
fn send_message_with_any_other_declared_size_is_refused_and_closed() {
    let server = TestServer::start();
    let mut roster = Roster::default();
    let (alice, bob) = two_clients(&server, &mut roster, "alice", "bob");
    let code = Edition::Y2024.request_code(Operation::SendMessage);
    // Below the 21-byte message header: answered at once, with only the header sent.
    for declared in [0, 1, 20] {
        let mut client = server.connect();
        client.send_raw(&request_bytes(alice, code, declared, &[]));
        expect_error_and_close(&mut client, &format!("send declaring {declared}"));
    }
    let content = pattern(5, 1);
    for declared in [
        SEND_HEADER_LEN + 4,
        SEND_HEADER_LEN + 6,
        SEND_HEADER_LEN + 7,
        SEND_HEADER_LEN + 9,
    ] {
        let mut client = server.connect();
        let send = Exchange::send(Edition::Y2024, alice, bob, 3, &content).declaring(declared);
        let mut bytes = send.request.clone();
        bytes.extend_from_slice(&Exchange::pull(Edition::Y2024, bob, Vec::new()).request);
        client.send_raw(&bytes);
        expect_error_and_close(
            &mut client,
            &format!("send of 5 bytes declaring {declared}"),
        );
    }
    // Nothing was stored.
    exchange_on(
        &mut server.connect(),
        &Exchange::pull(Edition::Y2024, bob, Vec::new()),
    );
}

#[test]
fn other_declared_sizes_are_consumed_refused_and_the_connection_keeps_serving() {
    let server = TestServer::start();
    let mut roster = Roster::default();
    let (alice, bob) = two_clients(&server, &mut roster, "alice", "bob");
    for edition in EDITIONS {
        let mut client = server.connect();
        let name = format!("carol {}", edition.name());
        let register = register_body(&name, &key_of(&name));
        let mut register_416 = register.clone();
        register_416.push(7);
        let list = Exchange::list(edition, alice, roster.except("alice")).request;
        let pull = Exchange::pull(edition, bob, Vec::new()).request;
        let mut two_ids = bob.0.to_vec();
        two_ids.extend_from_slice(&bob.0);
        // The declared bytes of list and pull are whole requests: parsing them would
        // produce replies that are not there.
        let mut exchanges = vec![
            Exchange::refused(
                edition,
                Operation::ListClients,
                alice,
                pull.len() as u32,
                &pull,
            ),
            Exchange::list(edition, alice, roster.except("alice")),
            Exchange::refused(
                edition,
                Operation::PullMessages,
                bob,
                list.len() as u32,
                &list,
            ),
            Exchange::pull(edition, bob, Vec::new()),
            Exchange::refused(edition, Operation::ListClients, alice, 1, &[1]),
            Exchange::refused(edition, Operation::PullMessages, bob, 5, &[0xab; 5]),
            Exchange::refused(
                edition,
                Operation::Register,
                ClientId::default(),
                414,
                &register[..414],
            ),
            Exchange::refused(
                edition,
                Operation::Register,
                ClientId::default(),
                416,
                &register_416,
            ),
            Exchange::refused(edition, Operation::Register, ClientId::default(), 0, &[]),
            // The refused registrations registered nothing: the name is still free.
            Exchange::register(edition, &name),
            Exchange::refused(edition, Operation::PublicKey, alice, 5, &[0xcd; 5]),
            Exchange::refused(edition, Operation::PublicKey, alice, 32, &two_ids),
            Exchange::key(edition, alice, bob, "bob"),
        ];
        roster.add(&name);
        exchanges.push(Exchange::list(edition, alice, roster.except("alice")));
        pipeline(&mut client, &exchanges, None);
        assert_open_and_quiet(&mut client);
        exchange_on(&mut client, &Exchange::key(edition, bob, alice, "alice"));
    }
}

#[test]
fn sizes_above_the_limit_are_refused_and_closed_without_waiting() {
    let server = TestServer::start_with(|config| config.max_payload = 4096);
    let mut roster = Roster::default();
    let (alice, bob) = two_clients(&server, &mut roster, "alice", "bob");
    let edition = Edition::Y2021;
    const GIB: usize = 1 << 30;
    // A send announcing 1 GiB of content: only the headers are sent, never the content.
    for (declared, content_size) in [
        (SEND_HEADER_LEN + GIB, GIB),
        (SEND_HEADER_LEN + SEND_SLACK + GIB, GIB),
        (4000, GIB),
    ] {
        let mut client = server.connect();
        let mut request = Exchange::send(edition, alice, bob, 4, &[])
            .declaring(declared)
            .request;
        request[23 + 17..].copy_from_slice(&(content_size as u32).to_le_bytes());
        client.send_raw(&request);
        expect_error_and_close(
            &mut client,
            &format!("send declaring {declared}, content size {content_size}"),
        );
    }
    // Any request announcing a payload above the limit.
    for (operation, declared) in [
        (Operation::ListClients, GIB),
        (Operation::Register, 4097),
        (Operation::PublicKey, GIB),
    ] {
        let mut client = server.connect();
        client.send_raw(&request_bytes(
            alice,
            edition.request_code(operation),
            declared as u32,
            &[],
        ));
        expect_error_and_close(&mut client, &format!("{operation:?} declaring {declared}"));
    }
    // Exactly at the limit is served; one byte more is not.
    let mut client = server.connect();
    let at_limit = pattern(4096 - SEND_HEADER_LEN, 9);
    exchange_on(
        &mut client,
        &Exchange::send(edition, alice, bob, 4, &at_limit),
    );
    exchange_on(
        &mut client,
        &Exchange::pull(edition, bob, vec![(alice, 4, at_limit)]),
    );
    client.send_raw(
        &Exchange::send(edition, alice, bob, 4, &pattern(4097 - SEND_HEADER_LEN, 9)).request,
    );
    expect_error_and_close(&mut client, "send of 4097 bytes");
}

/// One frame of `session-capture.json`.
struct Captured {
    n: u64,
    to_server: bool,
    who: String,
    bytes: Vec<u8>,
}

/// The raw value of `"key": value` in one flat JSON object: a string's contents or a number.
fn json_field<'a>(object: &'a str, key: &str) -> &'a str {
    let quoted = format!("\"{key}\"");
    let start = object
        .find(&quoted)
        .unwrap_or_else(|| panic!("no field {key} in {object}"))
        + quoted.len();
    let value = object[start..]
        .trim_start()
        .strip_prefix(':')
        .expect("colon")
        .trim_start();
    match value.strip_prefix('"') {
        Some(string) => &string[..string.find('"').expect("closing quote")],
        None => value[..value.find([',', '}']).unwrap_or(value.len())].trim(),
    }
}

fn hex_decode(hex: &str) -> Vec<u8> {
    assert_eq!(hex.len() % 2, 0, "odd hex length");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn load_capture() -> Vec<Captured> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/session-capture.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{path}: {error}"));
    // A list of flat objects: no value contains a brace.
    let mut frames: Vec<Captured> = text
        .split('{')
        .skip(1)
        .map(|object| Captured {
            n: json_field(object, "n").parse().expect("frame number"),
            to_server: match json_field(object, "dir") {
                "c2s" => true,
                "s2c" => false,
                other => panic!("direction {other}"),
            },
            who: json_field(object, "who").to_owned(),
            bytes: hex_decode(json_field(object, "hex")),
        })
        .collect();
    frames.sort_by_key(|frame| frame.n);
    assert_eq!(frames.len(), 30, "frames in the capture");
    frames
}

/// Ids of the original server mapped to ours: client ids and message ids.
#[derive(Default)]
struct IdMap {
    clients: Vec<([u8; 16], [u8; 16])>,
    messages: Vec<(u32, u32)>,
}

impl IdMap {
    /// Rewrites a captured client id in place; zeros (register's header) stay zeros.
    fn rewrite(&self, id: &mut [u8]) {
        if id.iter().all(|&byte| byte == 0) {
            return;
        }
        let (_, ours) = self
            .clients
            .iter()
            .find(|(captured, _)| captured == id)
            .expect("captured id registered before use");
        id.copy_from_slice(ours);
    }

    fn client(&self, captured: &[u8]) -> Vec<u8> {
        let mut id = captured.to_vec();
        self.rewrite(&mut id);
        id
    }

    fn message(&self, captured: u32) -> u32 {
        self.messages
            .iter()
            .find(|(theirs, _)| *theirs == captured)
            .expect("message id stored before pulled")
            .1
    }
}

fn reply_from_capture(bytes: &[u8]) -> Reply {
    let header = ReplyHeader::parse(bytes[..7].try_into().unwrap());
    assert_eq!(
        bytes.len(),
        7 + header.payload_size as usize,
        "captured reply frame"
    );
    Reply {
        version: header.version,
        code: header.code,
        payload: bytes[7..].to_vec(),
    }
}

/// Compares our reply with the captured one: same code and size, and the same payload once
/// the original server's ids are mapped to ours.
fn compare_replies(ids: &mut IdMap, captured: &Reply, ours: &Reply, what: &str) {
    assert_eq!(
        (ours.version, ours.code, ours.payload.len()),
        (captured.version, captured.code, captured.payload.len()),
        "{what}: version, code, payload size"
    );
    let (theirs, payload) = (&captured.payload, &ours.payload);
    match captured.code {
        2100 => ids.clients.push((
            theirs[..16].try_into().unwrap(),
            payload[..16].try_into().unwrap(),
        )),
        2101 => {
            for (their_entry, our_entry) in theirs
                .chunks(LIST_ENTRY_LEN)
                .zip(payload.chunks(LIST_ENTRY_LEN))
            {
                assert_eq!(
                    ids.client(&their_entry[..16]),
                    &our_entry[..16],
                    "{what}: listed id"
                );
                assert_eq!(&their_entry[16..], &our_entry[16..], "{what}: listed name");
            }
        }
        2102 => {
            assert_eq!(
                ids.client(&theirs[..16]),
                &payload[..16],
                "{what}: target id"
            );
            assert_eq!(&theirs[16..], &payload[16..], "{what}: key");
        }
        2103 => {
            assert_eq!(
                ids.client(&theirs[..16]),
                &payload[..16],
                "{what}: destination"
            );
            let message_id = |bytes: &[u8]| u32::from_le_bytes(bytes[16..20].try_into().unwrap());
            ids.messages.push((message_id(theirs), message_id(payload)));
        }
        2104 => {
            let (theirs, ours) = (parse_pull(theirs), parse_pull(payload));
            assert_eq!(theirs.len(), ours.len(), "{what}: message count");
            for (their, our) in theirs.iter().zip(&ours) {
                assert_eq!(ids.client(&their.from.0), &our.from.0, "{what}: sender");
                assert_eq!(ids.message(their.id), our.id, "{what}: message id");
                assert_eq!(their.kind, our.kind, "{what}: message type");
                assert_eq!(their.content, our.content, "{what}: content bytes");
            }
        }
        code => panic!("{what}: unexpected captured reply code {code}"),
    }
}

#[test]
fn the_captured_session_replays_against_our_server() {
    let server = TestServer::start();
    let mut connections = [("alice", server.connect()), ("bob", server.connect())];
    let mut ids = IdMap::default();
    for frame in load_capture() {
        let what = format!("frame {} ({})", frame.n, frame.who);
        let (_, client) = connections
            .iter_mut()
            .find(|(who, _)| *who == frame.who)
            .expect("alice or bob");
        if frame.to_server {
            let mut request = frame.bytes.clone();
            ids.rewrite(&mut request[..16]);
            let code = u16::from_le_bytes([request[17], request[18]]);
            // Public key: the target; send: the destination.
            if code == 602 || code == 603 {
                ids.rewrite(&mut request[23..39]);
            }
            client.send_raw(&request);
        } else {
            let reply = client.read_reply();
            compare_replies(&mut ids, &reply_from_capture(&frame.bytes), &reply, &what);
        }
    }
    assert_eq!(ids.clients.len(), 2);
    assert_eq!(ids.messages.len(), 7);
    for (_, client) in &mut connections {
        assert_open_and_quiet(client);
    }
}
