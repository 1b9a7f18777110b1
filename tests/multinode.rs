//! Several servers on one PostgreSQL database act as one (issue 14): names unique across
//! nodes, a message sent through one node pulled through another, each message delivered by
//! exactly one pull even when nodes pull one queue at once, and pushes, long-poll wakes and
//! receipts reaching connections on whatever node they are. These run on PostgreSQL whatever
//! `MESSAGEU_TEST_STORE` says: a SQLite file has one server.

mod common;
mod owners;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::postgres::{server_schema_query, server_schema_url};
use common::*;
use messageu::config::Database;
use messageu::protocol::client::parse_client_list;
use messageu::protocol::extension::{extension_request, long_poll_payload};
use messageu::protocol::{ClientId, Delivery, Extension, Operation};
use owners::live::*;
use owners::*;

/// How soon news must cross from one node to another.
const PROMPT: Duration = Duration::from_secs(2);
/// How long a whole test may take.
const BOUND: Duration = Duration::from_secs(60);

/// A fresh database (schema) for the nodes of one test, and its name.
fn shared_database() -> (Database, String) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "nodes_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    (Database::Postgres(server_schema_url(&name)), name)
}

/// `count` nodes on one fresh database.
fn nodes(count: usize) -> Vec<TestServer> {
    nodes_on(&shared_database().0, count)
}

fn nodes_on(database: &Database, count: usize) -> Vec<TestServer> {
    (0..count)
        .map(|_| TestServer::start_node(database, |_| {}))
        .collect()
}

fn register_fails(client: &mut Client, name: &str) {
    let reply = client.call(
        ClientId::default(),
        EDITION.request_code(Operation::Register),
        &register_body(name, &test_key(1)),
    );
    assert!(reply.is_error(), "{name} is taken on another node");
}

#[test]
fn nodes_on_one_database_serve_the_same_users() {
    let nodes = nodes(3);
    let mut a = nodes[0].connect();
    let mut b = nodes[1].connect();
    let mut c = nodes[2].connect();
    let alice = a.register(EDITION, "alice");
    register_fails(&mut b, "alice");
    let bob = c.register(EDITION, "bob");

    let listed = b.call(alice, EDITION.request_code(Operation::ListClients), &[]);
    assert_eq!(
        &listed.payload[..16],
        &bob.0,
        "bob, registered on C, listed on B"
    );
    let key = a.call(
        alice,
        EDITION.request_code(Operation::PublicKey),
        &bob.0[..],
    );
    assert_eq!(&key.payload[16..], &test_key(3)[..], "bob's key through A");

    let id = a.send(EDITION, alice, bob, 3, b"through A");
    let pulled = b.pull(EDITION, bob);
    assert_eq!(pulled.len(), 1);
    assert_eq!((pulled[0].id, pulled[0].from), (id, alice));
    assert_eq!(pulled[0].content, b"through A");
    assert!(
        c.pull(EDITION, bob).is_empty(),
        "delivered once, gone on every node"
    );
    let again = c.send(EDITION, alice, bob, 3, b"through C");
    assert_ne!(again, id, "message ids unique across nodes");
}

#[test]
fn two_nodes_pulling_one_queue_at_once_deliver_each_message_once() {
    const MESSAGES: u32 = 600;
    let nodes = nodes(2);
    let mut sender = nodes[0].connect();
    let alice = sender.register(EDITION, "alice");
    let bob = sender.register(EDITION, "bob");
    let sent: HashSet<u32> = (0..MESSAGES)
        .map(|i| sender.send(EDITION, alice, bob, 3, &i.to_le_bytes()))
        .collect();

    let pulls: Vec<_> = nodes
        .iter()
        .flat_map(|node| [node.addr, node.addr])
        .map(|addr| {
            thread::spawn(move || {
                let mut client = Client::connect(addr);
                let mut got = Vec::new();
                let mut empty = 0;
                let deadline = Instant::now() + BOUND;
                // Small pulls race best: each reply carries at most the budget.
                while empty < 3 && Instant::now() < deadline {
                    let pulled = client.pull(EDITION, bob);
                    if pulled.is_empty() {
                        empty += 1;
                    }
                    got.extend(pulled.into_iter().map(|message| message.id));
                }
                got
            })
        })
        .collect();
    let mut delivered = HashMap::new();
    let mut per_puller = Vec::new();
    for pull in pulls {
        let got = pull.join().expect("puller");
        per_puller.push(got.len());
        for id in got {
            *delivered.entry(id).or_insert(0) += 1;
        }
    }
    let twice: Vec<_> = delivered.iter().filter(|(_, &n)| n > 1).collect();
    assert!(
        twice.is_empty(),
        "{} messages delivered more than once, such as {:?}",
        twice.len(),
        &twice[..twice.len().min(5)]
    );
    let ids: HashSet<u32> = delivered.into_keys().collect();
    assert_eq!(
        ids, sent,
        "every message delivered ({per_puller:?} per puller)"
    );
}

#[test]
fn two_hundred_clients_across_three_nodes_get_every_message_exactly_once() {
    const CLIENTS: usize = 200;
    const EACH: usize = 5;
    let nodes = nodes(3);
    let addrs: Vec<_> = nodes.iter().map(|node| node.addr).collect();
    let mut registrar = Vec::new();
    for addr in &addrs {
        registrar.push(Client::connect(*addr));
    }
    let ids: Vec<ClientId> = (0..CLIENTS)
        .map(|i| registrar[i % 3].register(EDITION, &format!("client{i}")))
        .collect();

    // Client i sends through node i % 3 to clients i + 1 .. i + EACH, then pulls through
    // node (i + 1) % 3.
    let workers: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (ids, addrs) = (ids.clone(), addrs.clone());
            thread::spawn(move || {
                let mut send = Client::connect(addrs[i % 3]);
                let mut sent = Vec::new();
                for k in 1..=EACH {
                    let to = ids[(i + k) % CLIENTS];
                    let content = format!("{i}->{}", (i + k) % CLIENTS);
                    let id = send.send(EDITION, ids[i], to, 3, content.as_bytes());
                    sent.push((id, content));
                }
                sent
            })
        })
        .collect();
    let mut expected: HashMap<u32, String> = HashMap::new();
    for worker in workers {
        expected.extend(worker.join().expect("sender"));
    }
    assert_eq!(expected.len(), CLIENTS * EACH, "ids unique across nodes");

    let pullers: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (me, addr) = (ids[i], addrs[(i + 1) % 3]);
            thread::spawn(move || {
                let mut client = Client::connect(addr);
                let mut got = Vec::new();
                let deadline = Instant::now() + BOUND;
                while got.len() < EACH && Instant::now() < deadline {
                    got.extend(client.pull(EDITION, me));
                }
                assert!(client.pull(EDITION, me).is_empty(), "nothing more");
                got
            })
        })
        .collect();
    let mut delivered = 0;
    for puller in pullers {
        for message in puller.join().expect("puller") {
            let content = expected.remove(&message.id).expect("delivered once");
            assert_eq!(message.content, content.as_bytes());
            delivered += 1;
        }
    }
    assert_eq!(delivered, CLIENTS * EACH);
    assert!(expected.is_empty());
}

#[test]
fn pushes_wakes_and_receipts_cross_nodes() {
    let nodes = nodes(2);
    let mut on_b = nodes[1].connect();
    let bob = register_owner(&mut on_b, "bob");
    log_in(&mut on_b, &bob);
    let mut bob_live = Live::new(on_b);
    assert_eq!(bob_live.subscribe(bob.id), 0);

    let mut on_a = nodes[0].connect();
    let alice = register_owner(&mut on_a, "alice");
    log_in(&mut on_a, &alice);
    let mut alice_live = Live::new(on_a);
    alice_live.subscribe(alice.id);

    let mut sender = nodes[0].connect();
    let id = sender.send(EDITION, alice.id, bob.id, 3, b"across");
    let pushed = bob_live.pushed_message(PROMPT);
    assert_eq!((pushed.id, pushed.content.as_slice()), (id, &b"across"[..]));
    assert_eq!(bob_live.acknowledge(bob.id, &[id]), 1);
    let receipt = alice_live.receipt(PROMPT);
    assert_eq!((receipt.id.0, receipt.recipient), (id, bob.id));
    assert_eq!(receipt.how, Delivery::Acknowledged);

    // A long-poll parked on B is woken by a send through A.
    let mut carol_client = nodes[1].connect();
    let carol = carol_client.register(EDITION, "carol");
    hello(&mut carol_client);
    let long_poll = extension_request(
        Extension::LongPoll,
        carol,
        &long_poll_payload(Duration::from_secs(10)),
    );
    carol_client.send_raw(&long_poll);
    thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let sent = sender.send(EDITION, alice.id, carol, 3, b"wake up");
    let reply = carol_client.read_reply();
    assert!(started.elapsed() < PROMPT, "woken, not timed out");
    let pulled = parse_pull(&reply.payload);
    assert_eq!(pulled.len(), 1);
    assert_eq!(pulled[0].id, sent);
}

#[test]
fn news_missed_while_a_node_was_not_listening_still_reaches_its_subscribers() {
    let (database, schema) = shared_database();
    let nodes = nodes_on(&database, 2);
    let mut on_b = nodes[1].connect();
    let bob = register_owner(&mut on_b, "bob");
    log_in(&mut on_b, &bob);
    let mut bob_live = Live::new(on_b);
    assert_eq!(bob_live.subscribe(bob.id), 0);
    let mut sender = nodes[0].connect();
    let alice = sender.register(EDITION, "alice");

    // The nodes' listening connections end (as in a failover); a message sent meanwhile is
    // news nobody hears, until a node listening again reports news missed.
    let ended = server_schema_query(
        &schema,
        &format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE query LIKE 'LISTEN \"messageu.{schema}\"%'"
        ),
    );
    assert_eq!(ended, "2", "both nodes listen");
    let id = sender.send(EDITION, alice, bob.id, 3, b"while deaf");
    let pushed = bob_live.pushed_message(PROMPT);
    assert_eq!(
        (pushed.id, pushed.content.as_slice()),
        (id, &b"while deaf"[..])
    );
}

#[test]
fn a_protection_or_deletion_through_one_node_holds_on_the_others_at_once() {
    let nodes = nodes(2);
    let mut on_a = nodes[0].connect();
    let owner = register_owner(&mut on_a, "owner");
    log_in(&mut on_a, &owner);
    let mut stranger = nodes[1].connect();
    let pull = EDITION.request_code(Operation::PullMessages);
    // B knows the account as open: it served it.
    assert_ne!(stranger.call(owner.id, pull, &[]).code, 9000);

    assert_eq!(protect(&mut on_a, owner.id, true).code, 2503);
    assert_eq!(
        stranger.call(owner.id, pull, &[]).code,
        9000,
        "protected through A: refused on B's very next request"
    );
    let mut owner_on_b = nodes[1].connect();
    log_in(&mut owner_on_b, &owner);
    assert_ne!(owner_on_b.call(owner.id, pull, &[]).code, 9000);

    assert_eq!(
        on_a.call(owner.id, 1510, &[]).code,
        2510,
        "deleted through A"
    );
    assert_eq!(
        owner_on_b.call(owner.id, pull, &[]).code,
        9000,
        "gone on B at once"
    );
    let alice = stranger.register(EDITION, "alice");
    let send = stranger.call(
        alice,
        EDITION.request_code(Operation::SendMessage),
        &send_body(owner.id, 3, b"to nobody"),
    );
    assert_eq!(send.code, 9000, "no message to a deleted account through B");
}

#[test]
fn the_list_a_node_keeps_follows_registrations_and_deletions_on_the_others() {
    let nodes = nodes(2);
    let mut on_a = nodes[0].connect();
    let mut on_b = nodes[1].connect();
    let list = EDITION.request_code(Operation::ListClients);
    let listed = |client: &mut Client, caller: ClientId| -> Vec<ClientId> {
        let reply = client.call(caller, list, &[]);
        parse_client_list(&reply.payload)
            .expect("whole entries")
            .iter()
            .map(|client| client.id)
            .collect()
    };
    let alice = on_a.register(EDITION, "alice");
    assert!(
        listed(&mut on_a, alice).is_empty(),
        "A reads and keeps its list"
    );
    assert!(listed(&mut on_a, alice).is_empty());

    let owner = register_owner(&mut on_b, "owner");
    assert_eq!(
        listed(&mut on_a, alice),
        vec![owner.id],
        "registered through B: on A's very next list"
    );
    log_in(&mut on_b, &owner);
    assert_eq!(
        on_b.call(owner.id, 1510, &[]).code,
        2510,
        "deleted through B"
    );
    assert!(
        listed(&mut on_a, alice).is_empty(),
        "gone from A's very next list"
    );
}
