//! Push redelivery (protocol §E5) through real sockets: what a subscriber leaves
//! unacknowledged when its connection closes is pushed again on its next subscription.

mod common;
mod owners;

use common::*;
use messageu::protocol::codes::Extension;
use messageu::protocol::extension::extension_request;
use messageu::protocol::push::{acknowledge_payload, parse_count};
use messageu::protocol::{MessageId, PushCode};
use owners::{log_in, register_owner, EDITION};

/// Reads frames until a push and the reply to `extension` have both come (a subscription's
/// first pushes may come before its reply, §E5); returns the reply's count and the push.
fn reply_and_push(client: &mut Client, extension: Extension) -> (u32, Reply) {
    let (mut count, mut push) = (None, None);
    while count.is_none() || push.is_none() {
        let frame = client.read_reply();
        if frame.code == PushCode::Message.to_wire() {
            assert!(push.is_none(), "one message waits, pushed once: {frame:?}");
            push = Some(frame);
        } else {
            assert_eq!(frame.code, extension.reply_code(), "{frame:?}");
            count = parse_count(&frame.payload);
        }
    }
    (count.expect("a count"), push.expect("a push"))
}

/// The deterministic case of `crash_push.rs`'s dropped subscribers: a message pushed on a connection that
/// closes unacknowledged is pushed again, the same, on the next subscription; acknowledged
/// there, it is gone.
#[test]
fn a_push_left_unacknowledged_by_a_closed_connection_comes_again() {
    let server = TestServer::start();
    let mut alice = server.connect();
    let sender = alice.register(EDITION, "alice");
    let bob = register_owner(&mut alice, "bob");
    let id = alice.send(EDITION, sender, bob.id, 3, b"hello");

    let mut first = server.connect();
    log_in(&mut first, &bob);
    first.send_raw(&extension_request(Extension::Subscribe, bob.id, &[]));
    let (waiting, pushed) = reply_and_push(&mut first, Extension::Subscribe);
    assert_eq!(waiting, 1);
    drop(first);

    let mut second = server.connect();
    log_in(&mut second, &bob);
    second.send_raw(&extension_request(Extension::Subscribe, bob.id, &[]));
    let (waiting, again) = reply_and_push(&mut second, Extension::Subscribe);
    assert_eq!(waiting, 1);
    assert_eq!(again, pushed, "the same message, pushed again");
    let message = parse_pull(&again.payload);
    assert_eq!(
        (message[0].id, message[0].from, &message[0].content[..]),
        (id, sender, &b"hello"[..])
    );
    let acknowledge = acknowledge_payload(&[MessageId(id)]);
    let reply = second.call(bob.id, Extension::Acknowledge.to_wire(), &acknowledge);
    assert_eq!(
        (reply.code, parse_count(&reply.payload)),
        (Extension::Acknowledge.reply_code(), Some(1))
    );
    assert!(alice.pull(EDITION, bob.id).is_empty(), "deleted");
}
