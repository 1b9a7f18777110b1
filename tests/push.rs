//! Push delivery (protocol §E5) and receipts (§E7) through real sockets: messages waiting
//! pushed on subscription and new ones as they are stored, deleted only once acknowledged and
//! pushed again otherwise, several connections of one id, the window, large contents,
//! receipts for acknowledged and pulled messages, unsend of a pushed message, the end of
//! subscriptions with their account, and the checks on who may subscribe or acknowledge.

mod common;
mod owners;

use std::thread;
use std::time::{Duration, Instant};

use common::*;
use messageu::protocol::extension::{extension_request, proof};
use messageu::protocol::push::acknowledge_payload;
use messageu::protocol::{
    AccountCursor, AccountPage, ClientId, Delivery, Extension, ListAccounts, MessageId,
    NamePattern, Operation, Presence, Reason,
};
use owners::live::*;
use owners::*;

/// How soon a push must arrive once its message is stored.
const PROMPT: Duration = Duration::from_millis(500);
/// How long a connection is watched to see that nothing comes.
const QUIET: Duration = Duration::from_millis(200);
const UNSEND: u16 = 1509;
const LIST_ACCOUNTS: u16 = 1507;

/// A subscribed connection of a fresh owner, `name`.
fn subscriber(server: &TestServer, name: &str) -> (Owner, Live) {
    let mut client = server.connect();
    let owner = register_owner(&mut client, name);
    log_in(&mut client, &owner);
    (owner, Live::new(client))
}

/// Another connection, authenticated as `owner`.
fn logged_in(server: &TestServer, owner: &Owner) -> Live {
    let mut client = server.connect();
    log_in(&mut client, owner);
    Live::new(client)
}

#[test]
fn waiting_messages_are_pushed_on_subscribing_and_new_ones_as_they_are_stored() {
    let server = TestServer::start();
    let (bob, mut live) = subscriber(&server, "bob");
    let mut alice = server.connect();
    let alice_id = alice.register(EDITION, "alice");
    let first = alice.send(EDITION, alice_id, bob.id, 3, b"first");
    let second = alice.send(EDITION, alice_id, bob.id, 3, b"second");

    assert_eq!(live.subscribe(bob.id), 2, "two wait");
    for (id, content) in [(first, &b"first"[..]), (second, b"second")] {
        let pushed = live.pushed_message(PROMPT);
        assert_eq!((pushed.id, pushed.from), (id, alice_id), "in queue order");
        assert_eq!((pushed.kind, pushed.content.as_slice()), (3, content));
    }
    let third = alice.send(EDITION, alice_id, bob.id, 4, b"");
    let pushed = live.pushed_message(PROMPT);
    assert_eq!(
        (pushed.id, pushed.kind),
        (third, 4),
        "pushed as soon as stored"
    );
    live.assert_no_push(QUIET);

    // Subscribing again changes nothing: what was pushed is not pushed twice.
    assert_eq!(live.subscribe(bob.id), 3);
    live.assert_no_push(QUIET);
}

#[test]
fn only_acknowledged_messages_are_deleted_and_the_others_come_again() {
    let server = TestServer::start();
    let (bob, mut live) = subscriber(&server, "bob");
    let mut alice = server.connect();
    let alice_id = alice.register(EDITION, "alice");
    let ids: Vec<u32> = (0..3u8)
        .map(|n| alice.send(EDITION, alice_id, bob.id, 3, &[n]))
        .collect();
    live.subscribe(bob.id);
    for &id in &ids {
        assert_eq!(live.pushed_message(PROMPT).id, id);
    }
    assert_eq!(
        live.acknowledge(bob.id, &[ids[1], 999_999]),
        1,
        "unknown ids count 0"
    );
    assert_eq!(live.acknowledge(bob.id, &[ids[1]]), 0, "deleted already");
    drop(live);

    let mut again = logged_in(&server, &bob);
    assert_eq!(again.subscribe(bob.id), 2);
    let redelivered: Vec<u32> = (0..2).map(|_| again.pushed_message(PROMPT).id).collect();
    assert_eq!(
        redelivered,
        vec![ids[0], ids[2]],
        "unacknowledged, in queue order"
    );
    assert_eq!(again.acknowledge(bob.id, &[ids[0], ids[2]]), 2);
    drop(again);
    let mut classic = server.connect();
    assert!(
        classic.pull(EDITION, bob.id).is_empty(),
        "acknowledged means deleted"
    );
}

#[test]
fn subscribing_and_acknowledging_need_a_connection_authenticated_as_the_caller() {
    let server = TestServer::start();
    let mut client = server.connect();
    let owner = register_owner(&mut client, "owner");
    let other = client.register(EDITION, "other");
    let subscribe = |caller| extension_request(Extension::Subscribe, caller, &[]);

    // A classic connection gets the bare 9000, an extended one the reason.
    client.send_raw(&subscribe(owner.id));
    assert!(client.read_reply().is_error());
    hello(&mut client);
    client.send_raw(&subscribe(owner.id));
    assert_reason(&client.read_reply(), Reason::NotAuthenticated);
    let acknowledge = acknowledge_payload(&[MessageId(1)]);
    let reply = client.call(owner.id, ACKNOWLEDGE, &acknowledge);
    assert_reason(&reply, Reason::NotAuthenticated);

    let secret = challenge(&mut client, &owner);
    let proved = prove(&mut client, owner.id, &proof(&secret, owner.id));
    assert_eq!(proved.code, 2502);
    client.send_raw(&subscribe(other));
    assert_reason(&client.read_reply(), Reason::NotAuthenticated);
    // A count that does not fill its payload is malformed; the connection goes on.
    let reply = client.call(owner.id, ACKNOWLEDGE, &[2, 0, 0, 0, 1, 0, 0, 0]);
    assert_reason(&reply, Reason::Malformed);
    let mut live = Live::new(client);
    assert_eq!(live.subscribe(owner.id), 0);
}

#[test]
fn every_subscribed_connection_of_an_id_gets_every_message_and_the_first_ack_deletes_it() {
    let server = TestServer::start();
    let (bob, mut phone) = subscriber(&server, "bob");
    let mut laptop = logged_in(&server, &bob);
    phone.subscribe(bob.id);
    laptop.subscribe(bob.id);
    let mut alice = server.connect();
    let alice_id = alice.register(EDITION, "alice");
    let id = alice.send(EDITION, alice_id, bob.id, 3, b"to both");
    assert_eq!(phone.pushed_message(PROMPT).id, id);
    assert_eq!(laptop.pushed_message(PROMPT).id, id);
    assert_eq!(phone.acknowledge(bob.id, &[id]), 1);
    assert_eq!(
        laptop.acknowledge(bob.id, &[id]),
        0,
        "the first ack deleted it"
    );
}

#[test]
fn a_message_acknowledged_on_one_connection_leaves_the_window_of_the_others() {
    let server = TestServer::start();
    let (bob, mut phone) = subscriber(&server, "bob");
    let mut laptop = logged_in(&server, &bob);
    let mut alice = server.connect();
    let alice_id = alice.register(EDITION, "alice");
    let sent: Vec<u32> = (0..300u32)
        .map(|n| alice.send(EDITION, alice_id, bob.id, 3, &n.to_le_bytes()))
        .collect();
    phone.subscribe(bob.id);
    laptop.subscribe(bob.id);
    for live in [&mut phone, &mut laptop] {
        let pushed: Vec<u32> = (0..256).map(|_| live.pushed_message(PROMPT).id).collect();
        assert_eq!(pushed, sent[..256]);
    }
    // Only the phone acknowledges: the laptop's window empties too, and the rest comes.
    assert_eq!(phone.acknowledge(bob.id, &sent[..256]), 256);
    for live in [&mut phone, &mut laptop] {
        let rest: Vec<u32> = (0..44).map(|_| live.pushed_message(PROMPT).id).collect();
        assert_eq!(rest, sent[256..]);
    }
    // Fill both windows again; a pull takes everything, and empties them as well.
    let refill: Vec<u32> = (0..213u32)
        .map(|n| alice.send(EDITION, alice_id, bob.id, 3, &n.to_le_bytes()))
        .collect();
    for live in [&mut phone, &mut laptop] {
        let pushed: Vec<u32> = (0..212).map(|_| live.pushed_message(PROMPT).id).collect();
        assert_eq!(pushed, refill[..212]);
        live.assert_no_push(QUIET);
    }
    let mut classic = server.connect();
    assert_eq!(classic.pull(EDITION, bob.id).len(), 44 + 213);
    let more = alice.send(EDITION, alice_id, bob.id, 3, b"more");
    assert_eq!(laptop.pushed_message(PROMPT).id, more);
    assert_eq!(phone.pushed_message(PROMPT).id, more);
}

#[test]
fn the_window_holds_256_unacknowledged_messages_and_acks_make_room() {
    let server = TestServer::start();
    let (bob, mut live) = subscriber(&server, "bob");
    let mut alice = server.connect();
    let alice_id = alice.register(EDITION, "alice");
    let sent: Vec<u32> = (0..300u32)
        .map(|n| alice.send(EDITION, alice_id, bob.id, 3, &n.to_le_bytes()))
        .collect();
    assert_eq!(live.subscribe(bob.id), 300);
    let first: Vec<u32> = (0..256).map(|_| live.pushed_message(PROMPT).id).collect();
    assert_eq!(first, sent[..256]);
    live.assert_no_push(QUIET);
    assert_eq!(live.acknowledge(bob.id, &first[..20]), 20);
    let next: Vec<u32> = (0..20).map(|_| live.pushed_message(PROMPT).id).collect();
    assert_eq!(next, sent[256..276]);
    live.assert_no_push(QUIET);
}

#[test]
fn a_large_content_is_pushed_whole() {
    let server = TestServer::start_with(|config| config.spool_threshold = 64 << 10);
    let (bob, mut live) = subscriber(&server, "bob");
    let mut alice = server.connect();
    let alice_id = alice.register(EDITION, "alice");
    let content: Vec<u8> = (0..(3 << 20)).map(|n: u32| (n % 251) as u8).collect();
    live.subscribe(bob.id);
    let id = alice.send(EDITION, alice_id, bob.id, 4, &content);
    let pushed = live.pushed_message(Duration::from_secs(5));
    assert_eq!((pushed.id, pushed.content.len()), (id, content.len()));
    assert!(pushed.content == content, "intact");
}

#[test]
fn a_subscribed_sender_gets_receipts_for_acknowledged_and_pulled_messages() {
    let server = TestServer::start();
    let (alice, mut alice_live) = subscriber(&server, "alice");
    let (bob, mut bob_live) = subscriber(&server, "bob");
    alice_live.subscribe(alice.id);
    bob_live.subscribe(bob.id);
    let mut carol = server.connect();
    let carol_id = carol.register(EDITION, "carol");

    let send = |live: &mut Live, to: ClientId| {
        let reply = live.call(
            alice.id,
            EDITION.request_code(Operation::SendMessage),
            &send_body(to, 3, b"hi"),
        );
        assert_eq!(reply.code, EDITION.reply_code(Operation::SendMessage));
        u32::from_le_bytes(reply.payload[16..20].try_into().expect("id"))
    };
    let to_bob = send(&mut alice_live, bob.id);
    assert_eq!(bob_live.pushed_message(PROMPT).id, to_bob);
    alice_live.assert_no_push(QUIET);
    bob_live.acknowledge(bob.id, &[to_bob]);
    let receipt = alice_live.receipt(PROMPT);
    assert_eq!(
        (receipt.id, receipt.recipient, receipt.how),
        (MessageId(to_bob), bob.id, Delivery::Acknowledged)
    );
    assert!(
        receipt.at_ms > 1_700_000_000_000,
        "a time: {}",
        receipt.at_ms
    );

    let to_carol = send(&mut alice_live, carol_id);
    assert_eq!(carol.pull(EDITION, carol_id).len(), 1);
    let receipt = alice_live.receipt(PROMPT);
    assert_eq!(
        (receipt.id, receipt.recipient, receipt.how),
        (MessageId(to_carol), carol_id, Delivery::Pulled)
    );
    alice_live.assert_no_push(QUIET);
}

#[test]
fn a_pushed_message_cannot_be_unsent_until_acknowledged() {
    let server = TestServer::start();
    let (bob, mut live) = subscriber(&server, "bob");
    let mut alice = server.connect();
    hello(&mut alice);
    let alice_id = alice.register(EDITION, "alice");
    let id = alice.send(EDITION, alice_id, bob.id, 3, b"oops");
    live.subscribe(bob.id);
    assert_eq!(live.pushed_message(PROMPT).id, id);
    let reply = alice.call(alice_id, UNSEND, &id.to_le_bytes());
    assert_reason(&reply, Reason::InDelivery);
    live.acknowledge(bob.id, &[id]);
    let reply = alice.call(alice_id, UNSEND, &id.to_le_bytes());
    assert_reason(&reply, Reason::UnknownMessage);

    // A message pushed to a connection that closed may be unsent again.
    let second = alice.send(EDITION, alice_id, bob.id, 3, b"again");
    assert_eq!(live.pushed_message(PROMPT).id, second);
    drop(live);
    let deadline = Instant::now() + PROMPT;
    loop {
        let reply = alice.call(alice_id, UNSEND, &second.to_le_bytes());
        if reply.code == 2509 {
            break;
        }
        assert!(Instant::now() < deadline, "still in delivery: {reply:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_subscription_keeps_its_id_online_and_ends_with_its_account() {
    let server = TestServer::start();
    let (bob, mut phone) = subscriber(&server, "bob");
    let mut laptop = logged_in(&server, &bob);
    phone.subscribe(bob.id);
    laptop.subscribe(bob.id);
    let mut carol = server.connect();
    hello(&mut carol);
    let carol_id = carol.register(EDITION, "carol");
    let list = ListAccounts {
        pattern: NamePattern::parse("bob").expect("pattern"),
        after: AccountCursor(0),
        page_size: 1,
    };
    let reply = carol.call(carol_id, LIST_ACCOUNTS, &list.encode());
    let page = AccountPage::parse(&reply.payload).expect("page");
    assert_eq!(page.accounts[0].presence, Presence::Online);

    // Bob sent Carol a message; then his account is deleted from the laptop.
    let sent = laptop.call(
        bob.id,
        EDITION.request_code(Operation::SendMessage),
        &send_body(carol_id, 3, b"bye"),
    );
    assert_eq!(sent.code, EDITION.reply_code(Operation::SendMessage));
    let deleted = laptop.call(bob.id, 1510, &[]);
    assert_eq!(deleted.code, 2510, "{deleted:?}");
    assert_eq!(carol.pull(EDITION, carol_id).len(), 1, "still delivered");
    phone.assert_no_push(QUIET);
    laptop.assert_no_push(QUIET);
}

#[test]
fn a_message_acknowledged_while_a_pull_reply_carries_it_gets_one_receipt() {
    let server = TestServer::start();
    let (bob, mut device) = subscriber(&server, "bob");
    device.subscribe(bob.id);
    let (alice, mut alice_live) = subscriber(&server, "alice");
    alice_live.subscribe(alice.id);
    let mut puller = logged_in(&server, &bob);
    let mut sender = server.connect();
    let pull = request_bytes(
        bob.id,
        EDITION.request_code(Operation::PullMessages),
        0,
        &[],
    );
    for round in 0..20u8 {
        let id = sender.send(EDITION, alice.id, bob.id, 3, &[round]);
        assert_eq!(device.pushed_message(PROMPT).id, id);
        // A pull carrying the message and its acknowledgement, at once: whichever deletes
        // it, the sender is told once.
        let ids = [MessageId(id)];
        let ack = request_bytes(
            bob.id,
            ACKNOWLEDGE,
            acknowledge_payload(&ids).len() as u32,
            &acknowledge_payload(&ids),
        );
        puller.client.send_raw(&pull);
        device.client.send_raw(&ack);
        assert_eq!(device.client.read_reply().code, 2505);
        let pulled = parse_pull(&puller.client.read_reply().payload);
        assert!(pulled.len() <= 1);
        let receipt = alice_live.receipt(PROMPT);
        assert_eq!(receipt.id.0, id);
        alice_live.assert_no_push(QUIET);
    }
}
