//! The accounts extensions of protocol §E8 through real sockets: listing accounts by pattern
//! a page at a time, with last-seen times and the online flag; the queue status; unsend;
//! deleting an account, after which its id is refused everywhere and its name is free.

mod common;
mod owners;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use messageu::protocol::{
    AccountCursor, AccountPage, ClientId, Edition, ListAccounts, NamePattern, Operation, Presence,
    QueueStatus, Reason, SenderCount,
};
use owners::*;

const LIST_ACCOUNTS: u16 = 1507;
const QUEUE_STATUS: u16 = 1508;
const UNSEND: u16 = 1509;
const DELETE_ACCOUNT: u16 = 1510;

/// A list-accounts payload.
fn list_payload(pattern: &str, after: u64, size: u16) -> Vec<u8> {
    let request = ListAccounts {
        pattern: NamePattern::parse(pattern).expect("pattern"),
        after: AccountCursor(after),
        page_size: size,
    };
    request.encode()
}

/// One page of the accounts matching `pattern` after `after`, listed by `caller`.
fn page(
    client: &mut Client,
    caller: ClientId,
    pattern: &str,
    after: u64,
    size: u16,
) -> AccountPage {
    let reply = client.call(caller, LIST_ACCOUNTS, &list_payload(pattern, after, size));
    assert_eq!(reply.code, 2507, "{reply:?}");
    AccountPage::parse(&reply.payload).expect("a page of accounts")
}

/// The names on a page.
fn names(page: &AccountPage) -> Vec<&str> {
    page.accounts
        .iter()
        .map(|account| account.name.as_str())
        .collect()
}

/// The names matching `pattern`, all pages of one.
fn matching(client: &mut Client, caller: ClientId, pattern: &str) -> Vec<String> {
    let found = page(client, caller, pattern, 0, 100);
    assert_eq!(found.next, None, "one page");
    found
        .accounts
        .into_iter()
        .map(|account| account.name)
        .collect()
}

fn queue_status(client: &mut Client, caller: ClientId) -> QueueStatus {
    let reply = client.call(caller, QUEUE_STATUS, &[]);
    assert_eq!(reply.code, 2508, "{reply:?}");
    QueueStatus::parse(&reply.payload).expect("a queue status")
}

fn unsend(client: &mut Client, caller: ClientId, id: u32) -> Reply {
    client.call(caller, UNSEND, &id.to_le_bytes())
}

/// Registers `name` with a test key (no RSA key: it cannot log in).
fn register(client: &mut Client, name: &str) -> ClientId {
    client.register(EDITION, name)
}

#[test]
fn patterns_match_whole_names_with_wildcards_and_escapes() {
    let server = TestServer::start();
    let mut client = server.connect();
    let all = [
        "alice",
        "alicia",
        "al",
        "Alice",
        "bob",
        "a*b",
        "alb",
        "a?c",
        "abc",
        r"back\slash",
    ];
    let ids: Vec<_> = all.iter().map(|name| register(&mut client, name)).collect();
    hello(&mut client);
    let caller = ids[0];
    assert_eq!(
        matching(&mut client, caller, "*"),
        all,
        "registration order"
    );
    assert_eq!(
        matching(&mut client, caller, "al*"),
        ["alice", "alicia", "al", "alb"]
    );
    assert_eq!(matching(&mut client, caller, "al?ce"), ["alice"]);
    assert_eq!(
        matching(&mut client, caller, "A*"),
        ["Alice"],
        "case-sensitive"
    );
    assert_eq!(matching(&mut client, caller, "bo"), Vec::<String>::new());
    assert_eq!(matching(&mut client, caller, "*i*i*"), ["alicia"]);
    assert_eq!(matching(&mut client, caller, "a?b"), ["a*b", "alb"]);
    assert_eq!(matching(&mut client, caller, r"a\*b"), ["a*b"]);
    assert_eq!(matching(&mut client, caller, r"a\?c"), ["a?c"]);
    assert_eq!(matching(&mut client, caller, r"*\\*"), [r"back\slash"]);
    let listed = page(&mut client, caller, "bob", 0, 10);
    assert_eq!(listed.accounts[0].id, ids[4]);
}

#[test]
fn bad_payloads_are_malformed_and_the_connection_goes_on() {
    let server = TestServer::start();
    let mut client = server.connect();
    let caller = register(&mut client, "caller");
    hello(&mut client);
    let list = |pattern: &[u8], page_size: u16| {
        let mut payload = (pattern.len() as u16).to_le_bytes().to_vec();
        payload.extend_from_slice(pattern);
        payload.extend_from_slice(&0u64.to_le_bytes());
        payload.extend_from_slice(&page_size.to_le_bytes());
        payload
    };
    let bad = [
        (LIST_ACCOUNTS, list(br"ends in \", 10)),
        (LIST_ACCOUNTS, list(b"*", 0)),
        (LIST_ACCOUNTS, list(&[0xff, 0xfe], 10)),
        (LIST_ACCOUNTS, list(&[b'a'; 256], 10)),
        (LIST_ACCOUNTS, list(b"*", 10)[..12].to_vec()),
        (LIST_ACCOUNTS, vec![0; 11]),
        (QUEUE_STATUS, vec![0]),
        (UNSEND, vec![1, 0, 0]),
        (UNSEND, vec![1, 0, 0, 0, 0]),
        (DELETE_ACCOUNT, vec![1]),
    ];
    for (code, payload) in bad {
        let reply = client.call(caller, code, &payload);
        assert_reason(&reply, Reason::Malformed);
    }
    assert_eq!(matching(&mut client, caller, "*"), ["caller"]);
    // Before a hello, a classic connection's 9000 is bare.
    let mut classic = server.connect();
    assert!(classic.call(caller, QUEUE_STATUS, &[0]).is_error());
}

#[test]
fn pages_follow_the_cursor_while_accounts_come_and_go() {
    let server = TestServer::start();
    let mut client = server.connect();
    let lister = register(&mut client, "lister");
    let mut owners = Vec::new();
    for n in 0..8 {
        owners.push(register_owner(&mut client, &format!("user{n}")));
    }
    hello(&mut client);
    let first = page(&mut client, lister, "user*", 0, 3);
    assert_eq!(names(&first), ["user0", "user1", "user2"]);
    let cursor = first.next.expect("more pages");
    // One listed and one not yet listed go; a newcomer comes.
    for gone in [1, 3] {
        let mut connection = server.connect();
        log_in(&mut connection, &owners[gone]);
        let reply = connection.call(owners[gone].id, DELETE_ACCOUNT, &[]);
        assert_eq!((reply.code, reply.payload.len()), (2510, 0));
    }
    register(&mut client, "user8");
    let mut listed: Vec<String> = names(&first).iter().map(|n| n.to_string()).collect();
    let mut next = Some(cursor);
    while let Some(cursor) = next {
        let more = page(&mut client, lister, "user*", cursor.0, 3);
        assert!(more.accounts.len() <= 3);
        listed.extend(more.accounts.iter().map(|account| account.name.clone()));
        next = more.next;
    }
    assert_eq!(
        listed,
        ["user0", "user1", "user2", "user4", "user5", "user6", "user7", "user8"]
    );
    // From the start again: the deleted ones are gone.
    let all = page(&mut client, lister, "user*", 0, 100);
    assert_eq!(all.accounts.len(), 7);
    assert_eq!(all.next, None);
}

#[test]
fn a_page_holds_at_most_the_announced_limit() {
    let server = TestServer::start();
    let mut client = server.connect();
    let lister = register(&mut client, "lister");
    for n in 0..105 {
        register(&mut client, &format!("many{n:03}"));
    }
    hello(&mut client);
    let first = page(&mut client, lister, "many*", 0, u16::MAX);
    assert_eq!(first.accounts.len(), 100);
    assert_eq!(first.accounts[99].name, "many099");
    let cursor = first.next.expect("a second page");
    let second = page(&mut client, lister, "many*", cursor.0, u16::MAX);
    assert_eq!(
        names(&second),
        ["many100", "many101", "many102", "many103", "many104"]
    );
    assert_eq!(second.next, None);
}

#[test]
fn accounts_show_when_they_were_last_seen_and_whether_they_are_online() {
    let server = TestServer::start();
    let mut client = server.connect();
    let before = SystemTime::now();
    let alice = register(&mut client, "alice");
    let bob = register(&mut client, "bob");
    hello(&mut client);
    // Registering makes no request as the new id: only the lister is online.
    let listed = page(&mut client, bob, "*", 0, 10);
    let presence: Vec<_> = listed.accounts.iter().map(|a| a.presence).collect();
    assert_eq!(presence, [Presence::Offline, Presence::Online]);
    let ms = |at: SystemTime| at.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let after = SystemTime::now();
    for account in &listed.accounts {
        // Kept to the second, so up to a second before the registration.
        let seen = account.last_seen_ms;
        assert!(seen + 1000 > ms(before) && seen <= ms(after), "{account:?}");
        assert_eq!(seen % 1000, 0, "whole seconds");
    }
    client.pull(EDITION, alice);
    let listed = page(&mut client, bob, "alice", 0, 10);
    assert_eq!(listed.accounts[0].presence, Presence::Online);
}

#[test]
fn the_queue_status_counts_what_waits_per_sender() {
    let server = TestServer::start_with(|config| config.spool_threshold = 1000);
    let mut client = server.connect();
    let owner = register_owner(&mut client, "owner");
    let (a, b, c) = (
        register(&mut client, "a"),
        register(&mut client, "b"),
        register(&mut client, "c"),
    );
    client.send(EDITION, b, owner.id, 3, b"from b");
    for content in [&b"a1"[..], b"a22", b"a333"] {
        client.send(EDITION, a, owner.id, 3, content);
    }
    client.send(EDITION, c, owner.id, 4, &[9; 3000]);
    client.send(EDITION, c, owner.id, 3, b"c");
    client.send(EDITION, owner.id, a, 3, b"not for the owner");
    hello(&mut client);
    let status = queue_status(&mut client, owner.id);
    let count = |from, messages| SenderCount { from, messages };
    assert_eq!(
        status,
        QueueStatus {
            messages: 6,
            bytes: 6 + 2 + 3 + 4 + 3000 + 1,
            senders: vec![count(a, 3), count(c, 2), count(b, 1)],
        }
    );
    let pulled = client.pull(EDITION, owner.id);
    assert_eq!(pulled.len(), 6);
    // Pulled messages wait until the round after their reply was written deletes them.
    eventually("the pulled messages are deleted", || {
        queue_status(&mut client, owner.id)
            == QueueStatus {
                messages: 0,
                bytes: 0,
                senders: Vec::new(),
            }
    });

    // The caller must be registered, and a protected account's own connection.
    let stranger = ClientId([0x42; 16]);
    assert_reason(
        &client.call(stranger, QUEUE_STATUS, &[]),
        Reason::UnknownCaller,
    );
    let mut owner_connection = server.connect();
    log_in(&mut owner_connection, &owner);
    assert_eq!(protect(&mut owner_connection, owner.id, true).code, 2503);
    for (code, payload) in [
        (QUEUE_STATUS, Vec::new()),
        (UNSEND, vec![1, 0, 0, 0]),
        (LIST_ACCOUNTS, list_payload("*", 0, 1)),
    ] {
        assert_reason(&client.call(owner.id, code, &payload), Reason::Protected);
    }
    assert_eq!(queue_status(&mut owner_connection, owner.id).messages, 0);
}

#[test]
fn only_the_sender_unsends_a_message_that_still_waits() {
    let server = TestServer::start();
    let mut client = server.connect();
    let a = register(&mut client, "a");
    let b = register(&mut client, "b");
    let first = client.send(EDITION, a, b, 3, b"take it back");
    let second = client.send(EDITION, a, b, 3, b"keep it");
    hello(&mut client);
    let reply = unsend(&mut client, a, first);
    assert_eq!((reply.code, reply.payload.len()), (2509, 0));
    assert_reason(&unsend(&mut client, a, first), Reason::UnknownMessage);
    assert_reason(&unsend(&mut client, b, second), Reason::UnknownMessage);
    assert_reason(&unsend(&mut client, a, 0xdead), Reason::UnknownMessage);
    let status = queue_status(&mut client, b);
    assert_eq!((status.messages, status.bytes), (1, 7));
    let pulled = client.pull(EDITION, b);
    assert_eq!(pulled.iter().map(|m| m.id).collect::<Vec<_>>(), [second]);
    // Pulled: gone once its deletion commits, right after the reply was written.
    assert_reason(
        &unsend_settled(&mut client, a, second),
        Reason::UnknownMessage,
    );
}

/// Unsends until the answer is not `in-delivery`: a pulled message stays in delivery until
/// the round after its reply was written deletes it.
fn unsend_settled(client: &mut Client, caller: ClientId, id: u32) -> Reply {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let reply = unsend(client, caller, id);
        if reply.code != 9000 || reason(&reply) != Reason::InDelivery.code() {
            return reply;
        }
        assert!(Instant::now() < deadline, "still in delivery");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_message_whose_pull_reply_is_being_written_cannot_be_unsent() {
    let server = TestServer::start_with(|config| config.spool_threshold = 1000);
    let mut sender = server.connect();
    let a = register(&mut sender, "a");
    let b = register(&mut sender, "b");
    // Far more than the sockets buffer: the reply stalls until b reads it.
    let content = vec![5; 32 << 20];
    let id = sender.send(EDITION, a, b, 4, &content);
    hello(&mut sender);
    let mut recipient = server.connect();
    let pull = request_bytes(b, EDITION.request_code(Operation::PullMessages), 0, &[]);
    recipient.send_raw(&pull);
    let mut header = [0; 7];
    std::io::Read::read_exact(&mut recipient.stream, &mut header).expect("the reply starts");
    assert_eq!(
        &header[1..3],
        &EDITION.reply_code(Operation::PullMessages).to_le_bytes()
    );
    assert_reason(&unsend(&mut sender, a, id), Reason::InDelivery);
    let mut rest = vec![0; u32::from_le_bytes(header[3..7].try_into().unwrap()) as usize];
    std::io::Read::read_exact(&mut recipient.stream, &mut rest).expect("the whole reply");
    assert_eq!(parse_pull(&rest)[0].content.len(), content.len());
    assert_reason(&unsend_settled(&mut sender, a, id), Reason::UnknownMessage);
}

/// Waits until `condition` holds, for what the server does in the background.
fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + IO_TIMEOUT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_deleted_account_is_gone_everywhere_but_in_what_it_sent() {
    let server = TestServer::start_with(|config| config.spool_threshold = 1000);
    let mut client = server.connect();
    let owner = register_owner(&mut client, "leaving");
    let friend = register(&mut client, "friend");
    client.send(EDITION, friend, owner.id, 3, b"small");
    client.send(EDITION, friend, owner.id, 4, &[1; 3000]);
    let kept = client.send(EDITION, owner.id, friend, 3, b"goodbye");
    assert_eq!(server.store().large_contents().len(), 1);

    let mut leaving = server.connect();
    log_in(&mut leaving, &owner);
    let mut elsewhere = server.connect();
    log_in(&mut elsewhere, &owner);
    // Only a connection authenticated as the account deletes it.
    hello(&mut client);
    assert_reason(
        &client.call(owner.id, DELETE_ACCOUNT, &[]),
        Reason::NotAuthenticated,
    );
    let reply = leaving.call(owner.id, DELETE_ACCOUNT, &[]);
    assert_eq!((reply.code, reply.payload.len()), (2510, 0));
    eventually("its queue's large content is removed", || {
        server.store().large_contents().is_empty()
    });

    // Its authentication ended here; elsewhere, requests as it find no such caller.
    assert_reason(
        &protect(&mut leaving, owner.id, true),
        Reason::NotAuthenticated,
    );
    assert_reason(
        &leaving.call(owner.id, QUEUE_STATUS, &[]),
        Reason::UnknownCaller,
    );
    assert_reason(
        &elsewhere.call(owner.id, QUEUE_STATUS, &[]),
        Reason::UnknownCaller,
    );
    assert_reason(
        &elsewhere.call(owner.id, DELETE_ACCOUNT, &[]),
        Reason::UnknownCaller,
    );
    assert_reason(&elsewhere.call(owner.id, 1501, &[]), Reason::UnknownCaller);
    // Every classic request as it, in every edition, and as a target or destination.
    for edition in Edition::ALL {
        let code = |operation| edition.request_code(operation);
        let as_it = [
            (code(Operation::ListClients), Vec::new()),
            (code(Operation::PullMessages), Vec::new()),
            (code(Operation::PublicKey), friend.0.to_vec()),
            (code(Operation::SendMessage), send_body(friend, 3, b"ghost")),
        ];
        for (code, body) in as_it {
            assert_reason(&client.call(owner.id, code, &body), Reason::UnknownCaller);
        }
        let key = client.call(friend, code(Operation::PublicKey), &owner.id.0);
        assert_reason(&key, Reason::UnknownClient);
        let to_it = client.call(
            friend,
            code(Operation::SendMessage),
            &send_body(owner.id, 3, b"?"),
        );
        assert_reason(&to_it, Reason::UnknownClient);
    }
    let mut classic = server.connect();
    assert!(classic
        .call(owner.id, EDITION.request_code(Operation::PullMessages), &[])
        .is_error());

    // What it sent is still delivered, from its id.
    let pulled = client.pull(EDITION, friend);
    assert_eq!(pulled.len(), 1);
    assert_eq!((pulled[0].id, pulled[0].from), (kept, owner.id));
    // Its name is free; the new account is another.
    let again = register(&mut client, "leaving");
    assert_ne!(again, owner.id);
    let listed = page(&mut client, friend, "leaving", 0, 10);
    assert_eq!(listed.accounts.len(), 1);
    assert_eq!(listed.accounts[0].id, again);
    let status = queue_status(&mut client, again);
    assert_eq!(status.messages, 0, "the old queue did not pass to the name");
}
