//! Large file messages: contents above the spool threshold are streamed into the store as
//! they arrive (spool files, or PostgreSQL's chunk rows) and streamed back out of it, and
//! nothing half-written survives a disconnect or a crash.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{parse_pull, request_bytes, BinaryServer, Client, TestServer, TestStore, IO_TIMEOUT};
use messageu::protocol::{ClientId, Edition, Operation, BLOCK_LEN};
use messageu::Config;

const EDITION: Edition = Edition::Y2024;
const FILE: u8 = 4;

/// Bytes that differ at every offset, so a shifted or reordered chunk is caught.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

/// The sizes of the large contents `server`'s store holds.
fn stored(server: &TestServer) -> Vec<u64> {
    server.store().large_contents()
}

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + IO_TIMEOUT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

fn code(operation: Operation) -> u16 {
    EDITION.request_code(operation)
}

/// The head of a send request (header and message header) announcing `len` content bytes.
fn send_head(from: ClientId, to: ClientId, len: usize) -> Vec<u8> {
    let mut head = request_bytes(from, code(Operation::SendMessage), 21 + len as u32, &to.0);
    head.push(FILE);
    head.extend_from_slice(&(len as u32).to_le_bytes());
    head
}

struct Pair {
    alice: ClientId,
    bob: ClientId,
}

/// A client that exchanges small messages without pause (carol to dave, on a connection of
/// its own) until `stop` is set; the thread returns how many it exchanged.
fn chatter(
    server: &TestServer,
    client: &mut Client,
    stop: &Arc<AtomicBool>,
) -> thread::JoinHandle<usize> {
    let (carol, dave) = (
        client.register(EDITION, "carol"),
        client.register(EDITION, "dave"),
    );
    let stop = Arc::clone(stop);
    let mut small = server.connect();
    thread::spawn(move || {
        let mut exchanged = 0;
        while !stop.load(Ordering::Relaxed) {
            small.send(EDITION, carol, dave, 3, b"still here");
            assert_eq!(small.pull(EDITION, dave).len(), 1);
            exchanged += 1;
        }
        exchanged
    })
}

fn register_pair(client: &mut Client) -> Pair {
    Pair {
        alice: client.register(EDITION, "alice"),
        bob: client.register(EDITION, "bob"),
    }
}

#[test]
fn a_64_mib_file_round_trips_exactly_and_its_spool_file_goes_with_it() {
    let server = TestServer::start();
    let mut client = server.connect();
    let pair = register_pair(&mut client);
    let content = pattern(64 << 20, 1);
    client.send(EDITION, pair.alice, pair.bob, FILE, &content);
    assert_eq!(stored(&server), vec![64 << 20]);

    let pulled = client.pull(EDITION, pair.bob);
    assert_eq!(pulled.len(), 1);
    assert_eq!(pulled[0].from, pair.alice);
    assert_eq!(pulled[0].kind, FILE);
    assert!(pulled[0].content == content, "content differs");
    wait_for("the delivered file is removed", || {
        stored(&server).is_empty()
    });
    assert!(client.pull(EDITION, pair.bob).is_empty());
}

#[test]
fn small_and_spooled_contents_interleave_in_one_pull_reply_in_both_durabilities() {
    for durability in ["full", "normal"] {
        let server = TestServer::start_with(|config| {
            config.spool_threshold = 1000;
            config.durability = if durability == "full" {
                messageu::store::Durability::Full
            } else {
                messageu::store::Durability::Normal
            };
        });
        let mut client = server.connect();
        let pair = register_pair(&mut client);
        let contents: Vec<Vec<u8>> = [10, 300_000, 0, 1001, 1000, 2_000_000]
            .iter()
            .enumerate()
            .map(|(seed, &len)| pattern(len, seed as u32))
            .collect();
        let ids: Vec<u32> = contents
            .iter()
            .map(|content| client.send(EDITION, pair.alice, pair.bob, FILE, content))
            .collect();
        assert_eq!(stored(&server).len(), 3, "{durability}");
        let pulled = client.pull(EDITION, pair.bob);
        let got: Vec<(u32, &[u8])> = pulled.iter().map(|m| (m.id, &m.content[..])).collect();
        let sent: Vec<(u32, &[u8])> = ids
            .iter()
            .copied()
            .zip(contents.iter().map(|c| &c[..]))
            .collect();
        assert!(got == sent, "{durability}: pulled messages differ");
    }
}

#[test]
fn a_message_larger_than_the_reply_cap_is_sent_alone() {
    let server = TestServer::start();
    let mut client = server.connect();
    let pair = register_pair(&mut client);
    let sizes = [2 << 20, 1 << 20, 1 << 20];
    for (seed, size) in sizes.iter().enumerate() {
        client.send(
            EDITION,
            pair.alice,
            pair.bob,
            FILE,
            &pattern(*size, seed as u32),
        );
    }
    drop(client);
    let dir = server.stop();
    let server = TestServer::start_in(dir, |config| config.max_payload = 3 << 19);
    let mut client = server.connect();
    for (seed, size) in sizes.iter().enumerate() {
        let pulled = client.pull(EDITION, pair.bob);
        assert_eq!(pulled.len(), 1, "one message per reply");
        assert!(pulled[0].content == pattern(*size, seed as u32));
        wait_for("the delivered message is deleted", || {
            stored(&server).len() == sizes.len() - seed - 1
        });
    }
}

#[test]
fn a_disconnect_in_the_middle_of_an_upload_leaves_no_message_and_no_file() {
    let server = TestServer::start();
    let mut client = server.connect();
    let pair = register_pair(&mut client);
    let content = pattern(8 << 20, 2);
    let mut uploader = server.connect();
    uploader.send_raw(&send_head(pair.alice, pair.bob, content.len()));
    uploader.send_raw(&content[..3 << 20]);
    wait_for("part of the upload is stored", || {
        server.store().upload_written()
    });
    drop(uploader);
    wait_for("the partial content is removed", || {
        stored(&server).is_empty() && !server.store().upload_written()
    });
    assert!(client.pull(EDITION, pair.bob).is_empty());
}

#[test]
fn other_clients_are_served_and_committed_while_an_upload_is_in_flight() {
    let server = TestServer::start();
    let mut client = server.connect();
    let pair = register_pair(&mut client);
    let content = pattern(4 << 20, 3);
    let mut uploader = server.connect();
    uploader.send_raw(&send_head(pair.alice, pair.bob, content.len()));
    uploader.send_raw(&content[..1 << 20]);

    let carol = client.register(EDITION, "carol");
    let id = client.send(EDITION, carol, pair.alice, 3, b"while you upload");
    let pulled = client.pull(EDITION, pair.alice);
    assert_eq!(pulled.len(), 1);
    assert_eq!(pulled[0].id, id);

    uploader.send_raw(&content[1 << 20..]);
    let reply = uploader.read_reply();
    assert_eq!(reply.code, EDITION.reply_code(Operation::SendMessage));
    let pulled = client.pull(EDITION, pair.bob);
    assert!(pulled.len() == 1 && pulled[0].content == content);
}

/// Bulk transfers are paced while other clients are active: neither side may starve. A
/// client that never stops sending small messages and a 32 MiB round trip both finish.
#[test]
fn a_large_round_trip_and_a_client_that_never_pauses_both_make_progress() {
    let server = TestServer::start();
    let mut client = server.connect();
    let pair = register_pair(&mut client);
    let stop = Arc::new(AtomicBool::new(false));
    let chatter = chatter(&server, &mut client, &stop);

    let content = pattern(32 << 20, 9);
    let started = Instant::now();
    let id = client.send(EDITION, pair.alice, pair.bob, FILE, &content);
    let pulled = client.pull(EDITION, pair.bob);
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let exchanged = chatter
        .join()
        .expect("the small client's requests all succeed");
    assert!(pulled.len() == 1 && pulled[0].id == id && pulled[0].content == content);
    assert!(
        exchanged > 0,
        "the small client was served during the transfer"
    );
    // Well under a second here; a starved transfer takes minutes.
    assert!(
        took < Duration::from_secs(15),
        "the transfer starved: {took:?}"
    );
}

/// Bulk reads and bulk writes share one admission per turn: a pull of a spooled content
/// keeps flowing while another client streams an upload and a third never pauses.
#[test]
fn a_large_pull_flows_while_another_client_streams_an_upload() {
    use std::io::Write;

    let server = TestServer::start();
    let mut client = server.connect();
    let pair = register_pair(&mut client);
    let content = pattern(8 << 20, 10);
    let id = client.send(EDITION, pair.alice, pair.bob, FILE, &content);
    let stop = Arc::new(AtomicBool::new(false));
    let chatter = chatter(&server, &mut client, &stop);
    // Cut short when the pull is done, so it leaves nothing stored.
    const UPLOAD_LEN: usize = 256 << 20;
    let streamed = Arc::new(AtomicUsize::new(0));
    let uploader = thread::spawn({
        let (stop, streamed) = (Arc::clone(&stop), Arc::clone(&streamed));
        let mut up = server.connect();
        let (alice, bob) = (pair.alice, pair.bob);
        move || {
            up.send_raw(&send_head(alice, bob, UPLOAD_LEN));
            let chunk = vec![5; 1 << 20];
            while !stop.load(Ordering::Relaxed)
                && streamed.load(Ordering::Relaxed) < UPLOAD_LEN
                && up.stream.write_all(&chunk).is_ok()
            {
                streamed.fetch_add(chunk.len(), Ordering::Relaxed);
            }
        }
    });
    wait_for("the upload is streaming", || {
        streamed.load(Ordering::Relaxed) >= 8 << 20
    });

    let pulled = client.pull(EDITION, pair.bob);
    let streamed_meanwhile = streamed.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    chatter
        .join()
        .expect("the small client's requests all succeed");
    uploader.join().expect("the uploader stops");
    assert!(pulled.len() == 1 && pulled[0].id == id && pulled[0].content == content);
    // The pull and the upload get a slice each per admitted turn: 8 MiB go out while about as
    // much comes in. Held back while the upload streamed, the pull ended only after it.
    assert!(
        streamed_meanwhile < UPLOAD_LEN,
        "the pull waited for the whole upload"
    );
}

#[test]
fn a_disconnect_in_the_middle_of_a_large_pull_leaves_the_message_queued() {
    let server = TestServer::start();
    let mut client = server.connect();
    let pair = register_pair(&mut client);
    let content = pattern(32 << 20, 4);
    let id = client.send(EDITION, pair.alice, pair.bob, FILE, &content);

    let mut reader = server.connect();
    reader.send_raw(&request_bytes(
        pair.bob,
        code(Operation::PullMessages),
        0,
        &[],
    ));
    let mut start = vec![0; 64 << 10];
    std::io::Read::read_exact(&mut reader.stream, &mut start).expect("first bytes of the reply");
    drop(reader);

    // The interrupted reply's message is pullable again once the server sees the close.
    wait_for("the message is queued again", || {
        let pulled = client.pull(EDITION, pair.bob);
        match pulled.first() {
            Some(message) => {
                assert_eq!(message.id, id);
                assert!(message.content == content);
                true
            }
            None => false,
        }
    });
}

#[test]
fn an_upload_the_disk_cannot_take_is_refused_before_its_content_is_read() {
    if common::skip_on_postgres("--min-free-space is about the spool folder's disk") {
        return;
    }
    // Leave 512 MiB spare: small writes fit, a 1 GiB upload does not.
    let dir = tempfile::tempdir().expect("temporary directory");
    let available = fs4::available_space(dir.path()).expect("free space");
    let server = TestServer::start_in(dir, |config| {
        config.min_free_space = available.saturating_sub(512 << 20)
    });
    let mut client = server.connect();
    let pair = register_pair(&mut client);
    let mut uploader = server.connect();
    uploader.send_raw(&send_head(pair.alice, pair.bob, 1 << 30));
    assert!(uploader.read_reply().is_error());
    uploader.expect_closed();
    assert!(stored(&server).is_empty());
    // Small messages fit in the spare space and are still accepted.
    client.send(EDITION, pair.alice, pair.bob, 3, b"small");
    assert_eq!(client.pull(EDITION, pair.bob).len(), 1);
}

#[test]
fn a_refused_upload_is_passed_over_and_the_connection_keeps_serving() {
    let server = TestServer::start();
    let mut client = server.connect();
    let pair = register_pair(&mut client);
    let unknown = ClientId([0xee; 16]);
    let content = pattern(1 << 20, 5);
    let mut request = send_head(pair.alice, unknown, content.len());
    request.extend_from_slice(&content);
    request.extend_from_slice(&request_bytes(
        pair.bob,
        code(Operation::PullMessages),
        0,
        &[],
    ));
    client.send_raw(&request);
    assert!(client.read_reply().is_error());
    let pull = client.read_reply();
    assert_eq!(pull.code, EDITION.reply_code(Operation::PullMessages));
    assert!(pull.payload.is_empty());
    assert!(stored(&server).is_empty());
}

#[test]
fn requests_pipelined_behind_an_upload_are_answered_in_order() {
    let server = TestServer::start();
    let mut client = server.connect();
    let pair = register_pair(&mut client);
    let content = pattern(3 << 20, 6);
    let mut request = send_head(pair.alice, pair.bob, content.len());
    request.extend_from_slice(&content);
    request.extend_from_slice(&request_bytes(
        pair.bob,
        code(Operation::PullMessages),
        0,
        &[],
    ));
    request.extend_from_slice(&request_bytes(
        pair.bob,
        code(Operation::PublicKey),
        16,
        &pair.alice.0,
    ));
    client.send_raw(&request);
    let sent = client.read_reply();
    assert_eq!(sent.code, EDITION.reply_code(Operation::SendMessage));
    let pulled = client.read_reply();
    assert_eq!(pulled.code, EDITION.reply_code(Operation::PullMessages));
    let messages = parse_pull(&pulled.payload);
    assert!(messages.len() == 1 && messages[0].content == content);
    let key = client.read_reply();
    assert_eq!(key.code, EDITION.reply_code(Operation::PublicKey));
}

#[test]
fn a_zero_padded_client_can_send_and_pull_a_large_file() {
    let server = TestServer::start();
    let mut client = server.connect();
    let pair = register_pair(&mut client);
    let content = pattern(1 << 20, 7);
    let padded = |mut request: Vec<u8>| {
        let blocks = (request.len() as u64).div_ceil(BLOCK_LEN);
        request.resize((blocks * BLOCK_LEN) as usize, 0);
        request
    };
    let mut request = send_head(pair.alice, pair.bob, content.len());
    request.extend_from_slice(&content);
    let replies = [
        padded(request),
        padded(request_bytes(
            pair.bob,
            code(Operation::PullMessages),
            0,
            &[],
        )),
    ]
    .map(|request| {
        let mut connection = server.connect();
        connection.send_raw(&request);
        let mut reply = Vec::new();
        std::io::Read::read_to_end(&mut connection.stream, &mut reply).expect("padded reply");
        assert_eq!(
            reply.len() as u64 % BLOCK_LEN,
            0,
            "reply padded to whole blocks"
        );
        reply
    });
    assert_eq!(
        &replies[0][1..3],
        &EDITION.reply_code(Operation::SendMessage).to_le_bytes()
    );
    let size = u32::from_le_bytes(replies[1][3..7].try_into().unwrap()) as usize;
    let messages = parse_pull(&replies[1][7..7 + size]);
    assert!(messages.len() == 1 && messages[0].content == content);
}

#[test]
fn an_upload_cut_short_by_a_crash_is_removed_at_the_next_start() {
    if common::skip_on_postgres("a killed upload leaves a spool file; on PostgreSQL it rolls back")
    {
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let spool = TestStore::Sqlite(dir.path().join("defensive.db"));
    let mut server = BinaryServer::start(dir.path(), &[]);
    let mut client = Client::connect(server.addr);
    let pair = register_pair(&mut client);
    let mut uploader = Client::connect(server.addr);
    uploader.send_raw(&send_head(pair.alice, pair.bob, 8 << 20));
    uploader.send_raw(&pattern(2 << 20, 8));
    wait_for("part of the upload is on disk", || {
        spool.large_contents().first().is_some_and(|&len| len > 0)
    });
    server.child.kill().expect("SIGKILL the server");
    server.child.wait().expect("reap the server");
    assert_eq!(
        spool.large_contents().len(),
        1,
        "the crash left the partial file"
    );

    let server = BinaryServer::start(dir.path(), &[]);
    assert!(spool.large_contents().is_empty());
    let mut client = Client::connect(server.addr);
    assert!(client.pull(EDITION, pair.bob).is_empty());
    assert!(server
        .log_text()
        .contains("removing unreferenced spool file"));
}

#[test]
fn the_default_payload_limit_is_the_protocols() {
    assert_eq!(Config::loopback(PathBuf::new()).max_payload, u32::MAX);
}
