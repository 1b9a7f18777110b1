//! List replies at size (issue 15): a list is the snapshot of its request, written as the
//! socket accepts it, whatever registrations and deletions happen while it is being read;
//! connections that ask for the list and never read it hold the others up for nothing.

mod common;
mod owners;

use std::io::Read;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use messageu::protocol::client::parse_client_list;
use messageu::protocol::replies::LISTED_CLIENT_LEN;
use messageu::protocol::{ClientId, Operation};
use owners::*;

const DELETE_ACCOUNT: u16 = 1510;

/// Registers `count` clients named `{prefix}{i}` over one connection, pipelined in batches so
/// that each batch is one round; returns their ids in order.
fn register_many(server: &TestServer, prefix: &str, count: usize) -> Vec<ClientId> {
    let mut client = server.connect();
    let code = EDITION.request_code(Operation::Register);
    let mut ids = Vec::with_capacity(count);
    for batch in (0..count).collect::<Vec<_>>().chunks(50) {
        let mut bytes = Vec::new();
        for i in batch {
            let body = register_body(&format!("{prefix}{i}"), &test_key(7));
            bytes.extend(request_bytes(
                ClientId::default(),
                code,
                body.len() as u32,
                &body,
            ));
        }
        client.send_raw(&bytes);
        for _ in batch {
            let reply = client.read_reply();
            assert_eq!(reply.code, EDITION.reply_code(Operation::Register));
            ids.push(ClientId::from_slice(&reply.payload).expect("an id"));
        }
    }
    ids
}

fn list_request(caller: ClientId) -> Vec<u8> {
    request_bytes(caller, EDITION.request_code(Operation::ListClients), 0, &[])
}

#[test]
fn a_list_read_slowly_is_the_snapshot_of_its_request_while_clients_come_and_go() {
    let server = TestServer::start();
    let ids = register_many(&server, "early", 3000);
    let mut leaving = Vec::new();
    for i in 0..3 {
        let mut client = server.connect();
        let owner = register_owner(&mut client, &format!("leaving{i}"));
        log_in(&mut client, &owner);
        leaving.push((client, owner));
    }

    let mut reader = server.connect();
    reader.send_raw(&list_request(ids[0]));
    let mut header = [0; 7];
    reader.stream.read_exact(&mut header).expect("reply header");
    let len = u32::from_le_bytes(header[3..7].try_into().unwrap()) as usize;
    let expected = 3000 - 1 + leaving.len();
    assert_eq!(
        len,
        expected * LISTED_CLIENT_LEN,
        "declared as of the request"
    );

    // Read a little, then change the directory under the reply being written.
    let mut payload = vec![0; 4096];
    reader
        .stream
        .read_exact(&mut payload)
        .expect("the first bytes");
    let later = register_many(&server, "later", 1100);
    for (client, owner) in &mut leaving {
        assert_eq!(client.call(owner.id, DELETE_ACCOUNT, &[]).code, 2510);
    }
    let mut rest = vec![0; len - payload.len()];
    reader
        .stream
        .read_exact(&mut rest)
        .expect("the rest, as declared");
    payload.extend(rest);
    let listed = parse_client_list(&payload).expect("whole entries");
    assert_eq!(listed.len(), expected);
    assert_eq!(
        listed[0].id, ids[1],
        "registration order, the caller left out"
    );
    assert_eq!(listed[2998].name, "early2999");
    assert!(listed[2999..].iter().all(|c| c.name.starts_with("leaving")));

    // A new list sees the changes: the later ones in, the deleted ones out.
    let now = reader.call(ids[0], EDITION.request_code(Operation::ListClients), &[]);
    let now = parse_client_list(&now.payload).expect("whole entries");
    assert_eq!(now.len(), 2999 + later.len());
    assert!(now.iter().all(|c| !c.name.starts_with("leaving")));
    assert_eq!(now.last().map(|c| c.id), later.last().copied());
}

#[test]
fn connections_that_never_read_their_list_do_not_hold_up_the_others() {
    let server = TestServer::start();
    let ids = register_many(&server, "client", 4000);
    // 20 lists of about a megabyte each, none read.
    let hoarders: Vec<Client> = (0..20)
        .map(|i| {
            let mut client = server.connect();
            client.send_raw(&list_request(ids[i]));
            client
        })
        .collect();
    thread::sleep(Duration::from_millis(200));
    let mut polite = server.connect();
    let code = EDITION.request_code(Operation::PublicKey);
    let mut slowest = Duration::ZERO;
    for i in 0..200 {
        let started = Instant::now();
        let reply = polite.call(ids[4000 - 1 - i], code, &ids[i].0);
        slowest = slowest.max(started.elapsed());
        assert_eq!(reply.code, EDITION.reply_code(Operation::PublicKey));
    }
    assert!(
        slowest < Duration::from_millis(500),
        "slowest key request {slowest:?}"
    );
    // And each list is still there, whole, for a client that reads it at last.
    for (i, mut hoarder) in hoarders.into_iter().enumerate().take(2) {
        let reply = hoarder.read_reply();
        let listed = parse_client_list(&reply.payload).expect("whole entries");
        assert_eq!(listed.len(), 3999);
        assert!(listed.iter().all(|c| c.id != ids[i]));
    }
}
