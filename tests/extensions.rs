//! The extensions of protocol part II (§E0–§E4) through real sockets (long-poll, §E6, is in
//! `longpoll.rs`; §E8's are in `accounts.rs`): the hello, 9000s with reasons only after it,
//! proof of key possession and its limits, and protected accounts refused to every classic
//! operation of every edition (and a long-poll, even once woken) unless the connection is
//! authenticated as them.

mod common;
mod owners;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::*;
use messageu::protocol::extension::{long_poll_payload, parse_capabilities, proof};
use messageu::protocol::{ClientId, Edition, Features, Operation, Reason, Refusal};
use owners::*;
use socket2::{Domain, Socket, Type};

const LONG_POLL: u16 = 1506;

#[test]
fn the_hello_tells_the_served_features_and_limits() {
    let server = TestServer::start_with(|config| config.max_payload = 5 << 20);
    let mut client = server.connect();
    let reply = hello(&mut client);
    let capabilities = parse_capabilities(&reply.payload).expect("capabilities");
    assert_eq!(capabilities.version, 1);
    let served = Features::AUTHENTICATION
        .with(Features::PROTECTION)
        .with(Features::PUSH)
        .with(Features::LONG_POLL)
        .with(Features::RECEIPTS)
        .with(Features::ACCOUNTS)
        .with(Features::QUEUE_STATUS)
        .with(Features::UNSEND)
        .with(Features::ACCOUNT_DELETION);
    assert_eq!(capabilities.features, served, "every feature is served");
    assert_eq!(capabilities.features.0, 0b1_1111_1111);
    assert_eq!(capabilities.max_payload, 5 << 20);
    assert_eq!(capabilities.max_pull_reply, 5 << 20);
    assert_eq!(
        (capabilities.max_long_poll_ms, capabilities.max_list_page),
        (30_000, 100)
    );
    assert_eq!(capabilities.server_name, "messageu-server");
    assert_eq!(capabilities.server_version, env!("CARGO_PKG_VERSION"));
    let size = 20 + 2 + 15 + 2 + capabilities.server_version.len();
    assert_eq!(reply.payload.len(), size, "no bytes past the fields");
    // A second hello changes nothing more.
    assert_eq!(hello(&mut client).payload, reply.payload);
}

#[test]
fn errors_are_bare_before_the_hello_and_carry_a_reason_after_it() {
    let server = TestServer::start();
    let mut client = server.connect();
    let stranger = ClientId([0x42; 16]);
    let list = EDITION.request_code(Operation::ListClients);
    // Before: a classic request and an extension request, both bare.
    assert!(client.call(stranger, list, &[]).is_error());
    assert!(client.call(stranger, CHALLENGE, &[]).is_error());
    assert!(client.call(stranger, PROVE, &[0; 32]).is_error());
    assert!(client.call(stranger, 4242, &[]).is_error());
    hello(&mut client);
    // After: the same requests, each with its reason.
    assert_reason(&client.call(stranger, list, &[]), Reason::UnknownCaller);
    assert_reason(
        &client.call(stranger, CHALLENGE, &[]),
        Reason::UnknownCaller,
    );
    assert_reason(&client.call(stranger, PROVE, &[0; 32]), Reason::BadProof);
    assert_reason(&client.call(stranger, 4242, &[]), Reason::UnknownRequest);
    assert_reason(&client.call(stranger, 1599, &[]), Reason::UnknownRequest);
    // A size the operation cannot have: skipped, the connection goes on.
    assert_reason(&client.call(stranger, list, &[1, 2]), Reason::Malformed);
    assert_reason(&client.call(stranger, PROVE, &[0; 31]), Reason::Malformed);
    assert_reason(&client.call(stranger, PROTECT, &[2]), Reason::Malformed);
    let name = "reasoned";
    let id = client.register(EDITION, name);
    let again = client.call(
        ClientId::default(),
        EDITION.request_code(Operation::Register),
        &register_body(name, &test_key(1)),
    );
    assert_reason(&again, Reason::NameTaken);
    let send = EDITION.request_code(Operation::SendMessage);
    let to_nobody = client.call(id, send, &send_body(stranger, 3, b"hi"));
    assert_reason(&to_nobody, Reason::UnknownClient);
    // Another connection that said no hello still gets bare 9000s.
    let mut classic = server.connect();
    assert!(classic.call(stranger, list, &[]).is_error());
    // Announcing more than 64 KiB for an extension closes the connection.
    let reply = client.call_declared(stranger, PROVE, (64 << 10) + 1, &[]);
    assert_reason(&reply, Reason::TooLarge);
    client.expect_closed();
}

#[test]
fn an_oversized_extension_request_is_a_bare_9000_before_the_hello() {
    let server = TestServer::start();
    let mut client = server.connect();
    let reply = client.call_declared(ClientId::default(), HELLO, u32::MAX, &[]);
    assert!(reply.is_error());
    client.expect_closed();
}

#[test]
fn the_right_proof_authenticates_and_a_challenge_serves_once() {
    let server = TestServer::start();
    let mut client = server.connect();
    let owner = register_owner(&mut client, "owner");
    hello(&mut client);
    let secret = challenge(&mut client, &owner);
    let right = proof(&secret, owner.id);
    let reply = prove(&mut client, owner.id, &right);
    assert_eq!((reply.code, reply.payload.len()), (2502, 0));
    // Used up: the same proof again is refused.
    assert_reason(&prove(&mut client, owner.id, &right), Reason::BadProof);

    // A wrong proof uses the challenge up too.
    let secret = challenge(&mut client, &owner);
    assert_reason(&prove(&mut client, owner.id, &[0; 32]), Reason::BadProof);
    let late = prove(&mut client, owner.id, &proof(&secret, owner.id));
    assert_reason(&late, Reason::BadProof);

    // A proof for another id than the challenge's.
    let other = register_owner(&mut client, "other");
    let secret = challenge(&mut client, &owner);
    let reply = prove(&mut client, other.id, &proof(&secret, other.id));
    assert_reason(&reply, Reason::BadProof);
}

#[test]
fn a_proof_cannot_be_replayed_on_another_connection() {
    let server = TestServer::start();
    let mut first = server.connect();
    let owner = register_owner(&mut first, "owner");
    hello(&mut first);
    let secret = challenge(&mut first, &owner);
    let right = proof(&secret, owner.id);
    let mut second = server.connect();
    hello(&mut second);
    assert_reason(&prove(&mut second, owner.id, &right), Reason::BadProof);
    // The other connection cannot act as the owner either.
    assert_reason(
        &protect(&mut second, owner.id, true),
        Reason::NotAuthenticated,
    );
    // The challenge still belongs to the connection that asked for it.
    assert_eq!(prove(&mut first, owner.id, &right).code, 2502);
    assert_eq!(protect(&mut first, owner.id, false).code, 2503);
}

#[test]
fn an_expired_challenge_is_refused() {
    let server = TestServer::start_with(|config| {
        config.challenge_lifetime = Duration::from_millis(100);
    });
    let mut client = server.connect();
    let owner = register_owner(&mut client, "owner");
    hello(&mut client);
    let secret = challenge(&mut client, &owner);
    std::thread::sleep(Duration::from_millis(200));
    let reply = prove(&mut client, owner.id, &proof(&secret, owner.id));
    assert_reason(&reply, Reason::BadProof);
    // A fresh one is served.
    let secret = challenge(&mut client, &owner);
    assert_eq!(
        prove(&mut client, owner.id, &proof(&secret, owner.id)).code,
        2502
    );
}

#[test]
fn a_key_that_is_not_rsa_cannot_be_challenged() {
    let server = TestServer::start();
    let mut client = server.connect();
    let id = client.register(EDITION, "not rsa");
    hello(&mut client);
    assert_reason(&client.call(id, CHALLENGE, &[]), Reason::BadKey);
}

#[test]
fn five_failed_proofs_for_an_id_stop_its_challenges() {
    let server = TestServer::start();
    let mut client = server.connect();
    let owner = register_owner(&mut client, "owner");
    let bystander = register_owner(&mut client, "bystander");
    hello(&mut client);
    for _ in 0..5 {
        challenge(&mut client, &owner);
        assert_reason(&prove(&mut client, owner.id, &[0; 32]), Reason::BadProof);
    }
    let reply = client.call(owner.id, CHALLENGE, &[]);
    assert_reason(&reply, Reason::RateLimited);
    let (_, text) = Refusal::parse(&reply.payload).expect("reason");
    assert!(text.contains("try again in"), "{text}");
    // Even from another connection; another id from the same address is still served.
    let mut fresh = server.connect();
    hello(&mut fresh);
    assert_reason(&fresh.call(owner.id, CHALLENGE, &[]), Reason::RateLimited);
    challenge(&mut fresh, &bystander);
    // The owner, connecting from another address, is not locked out.
    let mut elsewhere = connect_from(&server, Ipv4Addr::new(127, 0, 0, 2));
    hello(&mut elsewhere);
    challenge(&mut elsewhere, &owner);
}

/// A client whose connection comes from `source`, another loopback address.
fn connect_from(server: &TestServer, source: Ipv4Addr) -> Client {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::from((source, 0)).into())
        .expect("bind the source address");
    socket.connect(&server.addr.into()).expect("connect");
    Client::from_stream(socket.into())
}

#[test]
fn twenty_failed_proofs_from_an_address_stop_its_challenges() {
    let server = TestServer::start();
    let mut client = server.connect();
    let owner = register_owner(&mut client, "owner");
    hello(&mut client);
    // Four failures for each of five ids: no id reaches its limit, the address does.
    for n in 0..5u8 {
        let id = ClientId([n; 16]);
        for _ in 0..4 {
            assert_reason(&prove(&mut client, id, &[0; 32]), Reason::BadProof);
        }
    }
    let mut fresh = server.connect();
    hello(&mut fresh);
    assert_reason(&fresh.call(owner.id, CHALLENGE, &[]), Reason::RateLimited);
}

/// Every classic request of `edition` that names `caller` as its caller, but register's,
/// with the code of the reply it gets when served; `other` is a registered destination.
fn classic_requests(edition: Edition, caller: ClientId, other: ClientId) -> Vec<(Vec<u8>, u16)> {
    let request = |operation, body: &[u8]| {
        let code = edition.request_code(operation);
        let bytes = request_bytes(caller, code, body.len() as u32, body);
        (bytes, edition.reply_code(operation))
    };
    vec![
        request(Operation::ListClients, &[]),
        request(Operation::PublicKey, &other.0),
        request(
            Operation::SendMessage,
            &send_body(other, 3, b"as the owner"),
        ),
        request(Operation::PullMessages, &[]),
    ]
}

/// A send whose content is above the spool threshold: an upload.
fn large_send(edition: Edition, caller: ClientId, other: ClientId) -> Vec<u8> {
    let body = send_body(other, 4, &[7; 3000]);
    let code = edition.request_code(Operation::SendMessage);
    request_bytes(caller, code, body.len() as u32, &body)
}

/// Sends every classic request naming `caller`, in every edition, and returns the reply
/// codes, expected and got.
fn classic_replies(client: &mut Client, caller: ClientId, other: ClientId) -> Vec<(u16, Reply)> {
    let mut replies = Vec::new();
    for edition in Edition::ALL {
        let upload = (
            large_send(edition, caller, other),
            edition.reply_code(Operation::SendMessage),
        );
        for (request, served) in classic_requests(edition, caller, other)
            .into_iter()
            .chain([upload])
        {
            client.send_raw(&request);
            replies.push((served, client.read_reply()));
        }
    }
    replies
}

#[test]
fn a_protected_account_serves_only_connections_authenticated_as_it() {
    let server = TestServer::start_with(|config| config.spool_threshold = 1000);
    let mut owner_connection = server.connect();
    let owner = register_owner(&mut owner_connection, "owner");
    let other = owner_connection.register(EDITION, "other");
    log_in(&mut owner_connection, &owner);
    assert_eq!(protect(&mut owner_connection, owner.id, true).code, 2503);

    // Classic clients of every edition: bare 9000 for every operation naming the owner.
    let mut classic = server.connect();
    for (_, reply) in classic_replies(&mut classic, owner.id, other) {
        assert!(reply.is_error(), "{reply:?}");
    }
    // Others may still name the owner as target or destination.
    let sent = classic.send(EDITION, other, owner.id, 3, b"to the owner");
    let key = classic.call(
        other,
        EDITION.request_code(Operation::PublicKey),
        &owner.id.0,
    );
    assert_eq!(key.code, EDITION.reply_code(Operation::PublicKey));
    // An extended connection not authenticated as the owner is told why.
    let mut stranger = server.connect();
    hello(&mut stranger);
    let list = EDITION.request_code(Operation::ListClients);
    assert_reason(&stranger.call(owner.id, list, &[]), Reason::Protected);
    assert_reason(
        &protect(&mut stranger, owner.id, false),
        Reason::NotAuthenticated,
    );
    // Authenticated as another id is not enough.
    let mut impostor = server.connect();
    let impostor_owner = register_owner(&mut impostor, "impostor");
    log_in(&mut impostor, &impostor_owner);
    assert_reason(&impostor.call(owner.id, list, &[]), Reason::Protected);

    // The owner's connection is served in every edition.
    let replies = classic_replies(&mut owner_connection, owner.id, other);
    for (served, reply) in &replies {
        assert_eq!(reply.code, *served, "{reply:?}");
    }
    let pulled: Vec<_> = replies
        .iter()
        .filter(|(served, _)| served % 100 == 4)
        .flat_map(|(_, reply)| parse_pull(&reply.payload))
        .map(|message| message.id)
        .collect();
    assert_eq!(pulled, vec![sent], "the owner pulled its message");

    // Protection survives a restart.
    let dir = server.stop();
    let server = TestServer::start_in(dir, |config| config.spool_threshold = 1000);
    let mut classic = server.connect();
    assert!(classic.call(owner.id, list, &[]).is_error());

    // Unprotected, classic clients are served again.
    let mut owner_connection = server.connect();
    log_in(&mut owner_connection, &owner);
    assert_eq!(protect(&mut owner_connection, owner.id, false).code, 2503);
    for (served, reply) in classic_replies(&mut classic, owner.id, other) {
        assert_eq!(reply.code, served, "{reply:?}");
    }
}

#[test]
fn a_protected_accounts_long_poll_needs_its_owner_even_once_woken() {
    let server = TestServer::start();
    let mut owner_connection = server.connect();
    let owner = register_owner(&mut owner_connection, "owner");
    let sender = owner_connection.register(EDITION, "sender");
    // Parked while the account is open, on a connection not authenticated as it.
    let mut stranger = server.connect();
    hello(&mut stranger);
    let wait = long_poll_payload(Duration::from_secs(10));
    stranger.send_raw(&request_bytes(owner.id, LONG_POLL, 4, &wait));
    std::thread::sleep(Duration::from_millis(200));
    log_in(&mut owner_connection, &owner);
    assert_eq!(protect(&mut owner_connection, owner.id, true).code, 2503);
    // Woken after the owner protected the account: refused, and the message stays queued.
    let id = owner_connection.send(EDITION, sender, owner.id, 3, b"private");
    assert_reason(&stranger.read_reply(), Reason::Protected);
    assert_reason(
        &stranger.call(owner.id, LONG_POLL, &long_poll_payload(Duration::ZERO)),
        Reason::Protected,
    );
    let reply = owner_connection.call(owner.id, LONG_POLL, &wait);
    assert_eq!(reply.code, 2506, "{reply:?}");
    let pulled: Vec<u32> = parse_pull(&reply.payload).iter().map(|m| m.id).collect();
    assert_eq!(pulled, vec![id]);
}

#[test]
fn protecting_needs_an_authenticated_connection() {
    let server = TestServer::start();
    let mut client = server.connect();
    let id = client.register(EDITION, "plain");
    assert!(protect(&mut client, id, true).is_error());
    hello(&mut client);
    assert_reason(&protect(&mut client, id, true), Reason::NotAuthenticated);
    // Still open to classic requests.
    let list = EDITION.request_code(Operation::ListClients);
    assert_eq!(
        client.call(id, list, &[]).code,
        EDITION.reply_code(Operation::ListClients)
    );
}
