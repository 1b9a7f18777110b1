//! End-to-end tests of the live commands (protocol §E5, §E7): `watch` and `chat` run as the
//! real binary against a real server on a loopback port, the subscription itself through the
//! library, and the message id `send-text` prints.

#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::TestServer;
use messageu_client::live::{Event, Subscription};
use messageu_client::push_frames::PushedMessage;
use messageu_client::{ConnectionMode, Session, SessionOptions};
use messageu_protocol::Edition;
use serde_json::Value;
use support::{eventually, keyed_pair, Running, User};

const TEXT: &str = "are you there?";

/// The id in `Message 42 sent to bob`.
fn sent_id(output: &str) -> u64 {
    let id = output
        .strip_prefix("Message ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|id| id.parse().ok());
    id.unwrap_or_else(|| panic!("no message id in {output:?}"))
}

fn queue_is_empty(user: &User) -> bool {
    user.ok(&["status"]).starts_with("0 messages waiting")
}

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"))
}

/// Waits until `watcher` has subscribed (it says so on standard error).
fn subscribed(watcher: &Running) {
    eventually("watch subscribed", || watcher.stderr().contains("watching"));
}

#[test]
fn send_text_prints_the_id_that_unsend_takes() {
    let server = TestServer::start();
    let (alice, _bob) = keyed_pair(&server);
    let sent = alice.ok(&["send-text", "bob", TEXT]);
    assert!(sent.ends_with(" sent to bob\n"), "{sent}");
    let id = sent_id(&sent).to_string();
    assert_eq!(
        alice.ok(&["unsend", &id]),
        format!("Message {id} taken back\n")
    );
}

#[test]
fn watch_prints_a_message_as_it_arrives_and_acknowledges_it() {
    let server = TestServer::start();
    let (alice, bob) = keyed_pair(&server);
    let mut watcher = Running::start(&bob, &["watch"]);
    // alice's key waited: pushed on subscribing.
    watcher.line_with("symmetric key received");
    let sent_at = Instant::now();
    alice.ok(&["send-text", "bob", TEXT]);
    watcher.line_with(TEXT);
    assert!(
        sent_at.elapsed() < Duration::from_secs(10),
        "pushed, not late"
    );
    eventually("acknowledged", || queue_is_empty(&bob));
    assert_eq!(
        watcher.lines(9),
        [
            "From: alice",
            "Content:",
            "symmetric key received",
            "-----<EOM>-----",
            "",
            "From: alice",
            "Content:",
            TEXT,
            "-----<EOM>-----",
        ]
    );
}

#[test]
fn watch_json_has_pull_json_fields_and_the_sender_watches_its_receipts() {
    let server = TestServer::start();
    let (alice, bob) = keyed_pair(&server);
    let mut receipts = Running::start(&alice, &["watch", "--json"]);
    subscribed(&receipts);
    let mut watcher = Running::start(&bob, &["watch", "--json"]);
    let first = sent_id(&alice.ok(&["send-text", "bob", TEXT]));
    let watched = json(&watcher.line_with(TEXT));
    assert_eq!(watched["message_id"], first);
    let receipt_of = |id: u64| move |line: &str| json(line)["message_id"] == id;
    let acknowledged = json(&receipts.line_where("a receipt", receipt_of(first)));
    assert_eq!(acknowledged["event"], "receipt");
    assert_eq!(acknowledged["to"], "bob");
    assert_eq!(acknowledged["delivery"], "acknowledged");
    assert!(acknowledged["at_ms"].as_u64().is_some_and(|ms| ms > 0));
    eventually("acknowledged", || queue_is_empty(&bob));
    drop(watcher);

    let second = sent_id(&alice.ok(&["send-text", "bob", TEXT]));
    let pulled = json(bob.ok(&["pull", "--json"]).trim_end());
    let fields = |object: &Value| -> BTreeSet<String> {
        object
            .as_object()
            .expect("an object")
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(fields(&watched), fields(&pulled));
    for field in fields(&pulled) {
        if field != "message_id" {
            assert_eq!(watched[&field], pulled[&field], "{field}");
        }
    }
    assert_eq!(pulled["message_id"], second);
    let receipt = json(&receipts.line_where("a receipt", receipt_of(second)));
    assert_eq!(receipt["delivery"], "pulled");
}

#[test]
fn watch_reconnects_and_subscribes_again_after_the_server_restarts() {
    let server = TestServer::start();
    let addr = server.addr;
    let (alice, bob) = keyed_pair(&server);
    let mut watcher = Running::start(&bob, &["watch"]);
    watcher.line_with("symmetric key received");
    eventually("acknowledged", || queue_is_empty(&bob));

    // Same port, same database: the stop closes the subscribed connection.
    let dir = server.stop();
    let _server = TestServer::start_in(dir, |config| config.listen = addr);
    alice.ok(&["send-text", "bob", TEXT]);
    watcher.line_with(TEXT);
    eventually("acknowledged after the restart", || queue_is_empty(&bob));
    let stderr = watcher.stderr();
    assert!(stderr.contains("connection lost"), "{stderr}");
    assert!(stderr.contains("reconnected"), "{stderr}");
}

fn session_of(user: &User) -> Session {
    Session::open(SessionOptions {
        edition: Edition::Y2024,
        mode: ConnectionMode::Persistent,
        server: None,
        dir: user.dir.path().to_owned(),
        downloads: None,
    })
    .expect("session")
}

/// The next message pushed, if one comes within `wait`.
fn next_message(subscription: &mut Subscription, wait: Duration) -> Option<PushedMessage> {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        match subscription
            .next(Duration::from_millis(100))
            .expect("subscribed")
        {
            Some(Event::Message(message)) => return Some(message),
            Some(Event::Lost { error, .. }) => panic!("connection lost: {error}"),
            _ => {}
        }
    }
    None
}

#[test]
fn a_message_pushed_and_not_acknowledged_is_pushed_again() {
    let server = TestServer::start();
    let (_alice, bob) = keyed_pair(&server);
    let session = session_of(&bob);
    let long = Duration::from_secs(10);

    let mut first = Subscription::start(&session, "watch").expect("subscribed");
    let pushed = next_message(&mut first, long).expect("the waiting key");
    // The connection closes before anything is acknowledged.
    drop(first);

    let mut second = Subscription::start(&session, "watch").expect("subscribed");
    let again = next_message(&mut second, long).expect("pushed again");
    assert_eq!(again, pushed);
    second.handled(&again);
    assert!(second.acknowledge().expect("acknowledged").is_none());
    drop(second);

    assert!(queue_is_empty(&bob));
    let mut third = Subscription::start(&session, "watch").expect("subscribed");
    assert_eq!(next_message(&mut third, Duration::from_secs(1)), None);
}

#[test]
fn chat_exchanges_lines_both_ways_after_exchanging_a_key() {
    let server = TestServer::start();
    let alice = User::new(server.addr, "2025", &[]);
    let bob = User::new(server.addr, "2025", &[]);
    let carol = User::new(server.addr, "2025", &[]);
    for (user, name) in [(&alice, "alice"), (&bob, "bob"), (&carol, "carol")] {
        user.ok(&["register", name]);
    }
    let mut alices = Running::start(&alice, &["chat", "bob"]);
    let mut bobs = Running::start(&bob, &["chat", "alice"]);
    alices.line_with("chatting with bob");
    bobs.line_with("chatting with alice");

    // Typed before the key may have come: kept until it does.
    alices.type_line("hello bob");
    bobs.line_with("alice: hello bob");
    bobs.type_line("hi alice, and again");
    alices.line_with("bob: hi alice, and again");
    alices.type_line("bye");
    bobs.line_with("alice: bye");

    // Someone else's messages are shown too, marked.
    carol.ok(&["get-key", "bob"]);
    carol.ok(&["send-key", "bob"]);
    carol.ok(&["send-text", "bob", "psst"]);
    bobs.line_with("carol (not in this chat): psst");

    assert!(alices.finish().success());
    assert!(bobs.finish().success());
    eventually("everything acknowledged", || {
        queue_is_empty(&alice) && queue_is_empty(&bob)
    });
}

#[test]
fn the_console_watches_until_enter_then_chats_until_quit() {
    let server = TestServer::start();
    let (alice, bob) = keyed_pair(&server);
    let mut console = Running::start(&bob, &[]);
    console.line_with("161) Chat live with a client");
    console.type_line("160");
    console.line_with("press Enter to return to the menu");
    console.line_with("symmetric key received");
    eventually("acknowledged", || queue_is_empty(&bob));
    console.type_line("");
    console.seen.clear();
    console.line_with("171) Show the waiting messages' status");

    console.type_line("161");
    console.type_line("alice");
    console.line_with("chatting with alice");
    alice.ok(&["send-text", "bob", TEXT]);
    console.line_with(&format!("alice: {TEXT}"));
    console.type_line("/quit");
    console.seen.clear();
    console.line_with("0) Exit client");
    console.type_line("0");
    assert!(console.finish().success());
}
