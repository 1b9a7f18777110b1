//! Seed corpora: valid requests of every edition and operation, each framing quirk of
//! protocol §4, the extension requests of §E0–§E8, and malformed framing, laid
//! out for each target. Written to `fuzz/seeds/` by
//! `cargo run --manifest-path fuzz/Cargo.toml --example write_seeds`.

use std::fs;
use std::io;
use std::path::Path;

use messageu::protocol::accounts::unsend_payload;
use messageu::protocol::client::{
    bare_request, public_key_request, register_request, request_header, send_request,
    send_request_head,
};
use messageu::protocol::extension::{extension_request, hello_payload};
use messageu::protocol::push::acknowledge_payload;
use messageu::protocol::request::encode_name;
use messageu::protocol::{
    AccountCursor, ClientId, Edition, Extension, ListAccounts, MessageId, NamePattern, Operation,
    PublicKey, ReplyHeader, RequestHeader, ERROR_REPLY_CODE, MAX_CONTENT_LEN, PUBLIC_KEY_LEN,
    SERVER_VERSION,
};

use crate::connection::{ALICE_MARKER, BOB_MARKER};
use crate::input::StreamInput;
use crate::request_stream;

pub const TARGETS: [&str; 3] = ["request_stream", "connection", "reply_parser"];

/// One seed file.
pub struct Seed {
    pub name: String,
    pub data: Vec<u8>,
}

/// The seeds of `target`, one of [`TARGETS`].
pub fn for_target(target: &str) -> Vec<Seed> {
    match target {
        "request_stream" => request_stream(),
        "connection" => connection(),
        "reply_parser" => reply_parser(),
        _ => panic!("no target {target}"),
    }
}

/// Replaces the contents of `dir/<target>/` with the seeds of every target.
pub fn write_all(dir: &Path) -> io::Result<()> {
    for target in TARGETS {
        let target_dir = dir.join(target);
        if target_dir.exists() {
            fs::remove_dir_all(&target_dir)?;
        }
        fs::create_dir_all(&target_dir)?;
        for seed in for_target(target) {
            fs::write(target_dir.join(&seed.name), &seed.data)?;
        }
    }
    Ok(())
}

const ALICE: ClientId = ClientId(ALICE_MARKER);
const BOB: ClientId = ClientId(BOB_MARKER);
/// Above the connection target's 4 KiB spool threshold: streamed into a spool file.
const UPLOAD_LEN: usize = 5000;
/// Chunkings every stream is seeded with: whole, byte by byte, and uneven pieces that split
/// headers, bodies and the padding.
const WHOLE: &[usize] = &[];
const DRIBBLE: &[usize] = &[1];
const UNEVEN: &[usize] = &[7, 23, 100, 2, 256];

fn edition_tag(edition: Edition) -> &'static str {
    match edition {
        Edition::Y2021 => "2021",
        Edition::Y2022 => "2022",
        Edition::Y2024 => "2024",
        Edition::Y2026 => "2026",
    }
}

fn key() -> PublicKey {
    let mut key = [0x42; PUBLIC_KEY_LEN];
    key[..3].copy_from_slice(&[0x30, 0x81, 0x9d]);
    PublicKey(key)
}

/// A request header with any declared size, and no body.
fn declaring(edition: Edition, operation: Operation, caller: ClientId, declared: u32) -> Vec<u8> {
    request_header(edition, operation, caller, declared).to_vec()
}

/// A send declaring 24 + N, as clients whose struct had 3 alignment bytes do.
fn send_24n(edition: Edition, content: &[u8]) -> Vec<u8> {
    let mut bytes = send_request(edition, BOB, ALICE, 3, content);
    bytes[19..23].copy_from_slice(&(24 + content.len() as u32).to_le_bytes());
    bytes
}

/// `request` zero-padded to a whole number of 1024-byte blocks, as padded clients send.
fn padded(mut request: Vec<u8>) -> Vec<u8> {
    request.resize(request.len().div_ceil(1024) * 1024, 0);
    request
}

fn upload(edition: Edition, declared_slack: u32) -> Vec<u8> {
    let content: Vec<u8> = (0..UPLOAD_LEN).map(|i| i as u8).collect();
    let mut bytes = send_request(edition, BOB, ALICE, 4, &content);
    let declared = 21 + UPLOAD_LEN as u32 + declared_slack;
    bytes[19..23].copy_from_slice(&declared.to_le_bytes());
    bytes
}

/// The client streams of the seeds, by name: both stream targets send these.
fn streams() -> Vec<(String, Vec<u8>)> {
    let mut streams = Vec::new();
    for edition in Edition::ALL {
        let tag = edition_tag(edition);
        let name = format!("Michael Jackson {tag}");
        let mut key_size_0 = declaring(edition, Operation::PublicKey, ALICE, 0);
        key_size_0.extend_from_slice(&BOB.0);
        let single = [
            ("register", register_request(edition, &name, &key())),
            ("list", bare_request(edition, Operation::ListClients, ALICE)),
            ("public-key", public_key_request(edition, ALICE, BOB)),
            ("public-key-size-0", key_size_0),
            ("send-21n", send_request(edition, BOB, ALICE, 3, b"hello")),
            ("send-24n", send_24n(edition, b"hello")),
            (
                "send-key-request",
                send_request(edition, BOB, ALICE, 1, b""),
            ),
            (
                "pull",
                bare_request(edition, Operation::PullMessages, ALICE),
            ),
            ("upload", upload(edition, 0)),
            ("upload-24n", upload(edition, 3)),
        ];
        let mut pipelined = Vec::new();
        for (operation, request) in &single {
            if !operation.starts_with("upload") && *operation != "register" {
                pipelined.extend_from_slice(request);
            }
            streams.push((format!("{tag}-{operation}"), request.clone()));
        }
        // Last, so that a request is followed by the zeros of a register's client id, which
        // must not pass for a padded client's padding.
        pipelined.extend_from_slice(&single[0].1);
        streams.push((format!("{tag}-pipelined"), pipelined));
        let padded_register = register_request(edition, &format!("padded {tag}"), &key());
        streams.push((format!("{tag}-padded-register"), padded(padded_register)));
        let padded_pull = bare_request(edition, Operation::PullMessages, ALICE);
        streams.push((format!("{tag}-padded-pull"), padded(padded_pull)));
        streams.push((format!("{tag}-padded-upload"), padded(upload(edition, 0))));
    }

    // More requests than the server serves from one connection per turn (64).
    let mut pipelined_100 = Vec::new();
    for round in 0..25 {
        let edition = Edition::ALL[round % 4];
        pipelined_100.extend(bare_request(edition, Operation::ListClients, ALICE));
        pipelined_100.extend(public_key_request(edition, ALICE, BOB));
        pipelined_100.extend(send_request(edition, BOB, ALICE, 3, &[round as u8; 8]));
        pipelined_100.extend(bare_request(edition, Operation::PullMessages, ALICE));
    }
    streams.push(("pipelined-100".into(), pipelined_100));

    let e = Edition::Y2024;
    let mut wrong_sizes = Vec::new();
    for (operation, declared) in [
        (Operation::ListClients, 10),
        (Operation::PullMessages, 3),
        (Operation::Register, 414),
        (Operation::Register, 416),
        (Operation::PublicKey, 5),
    ] {
        wrong_sizes.extend(declaring(e, operation, ALICE, declared));
        wrong_sizes.resize(wrong_sizes.len() + declared as usize, 0x55);
    }
    let unknown = |code: u16, declared: u32| {
        let mut request = request_header(e, Operation::ListClients, ALICE, declared).to_vec();
        request[17..19].copy_from_slice(&code.to_le_bytes());
        request.resize(request.len() + declared as usize, 0x66);
        request
    };
    wrong_sizes.extend(unknown(4242, 7));
    wrong_sizes.extend(bare_request(e, Operation::ListClients, ALICE));
    streams.push(("wrong-sizes-then-list".into(), wrong_sizes));
    let mut unknown_codes = unknown(0, 0);
    unknown_codes.extend(unknown(2100, 0));
    unknown_codes.extend(unknown(9000, 3));
    unknown_codes.extend(unknown(u16::MAX, 1));
    streams.push(("unknown-codes".into(), unknown_codes));

    let oversized = |operation, declared: u32| {
        let mut request = declaring(e, operation, ALICE, declared);
        request.extend_from_slice(&[0x77; 64]);
        request
    };
    streams.push((
        "oversized-send".into(),
        oversized(Operation::SendMessage, 70_000),
    ));
    streams.push((
        "oversized-register".into(),
        oversized(Operation::Register, u32::MAX),
    ));
    streams.push((
        "oversized-list".into(),
        oversized(Operation::ListClients, 1 << 20),
    ));
    let mut too_short = declaring(e, Operation::SendMessage, BOB, 20);
    too_short.extend(bare_request(e, Operation::PullMessages, ALICE));
    streams.push(("send-declared-20".into(), too_short));
    let mut mismatch = send_request(e, BOB, ALICE, 3, b"hello");
    mismatch[19..23].copy_from_slice(&27u32.to_le_bytes());
    streams.push(("send-declared-27-content-5".into(), mismatch));
    streams.push((
        "send-type-9".into(),
        send_request(e, BOB, ALICE, 9, b"hello"),
    ));
    streams.push((
        "send-unknown-destination".into(),
        send_request(e, BOB, ClientId([7; 16]), 3, b"hello"),
    ));
    // Content size N = MAX_CONTENT_LEN + 1 fits 21 + N in a u32, but no pull reply could carry it.
    let undeliverable = send_request_head(e, BOB, ALICE, 4, MAX_CONTENT_LEN + 1);
    streams.push(("send-undeliverable".into(), undeliverable));
    streams.extend(extension_streams());
    let mut name_255 = declaring(e, Operation::Register, ClientId::default(), 415);
    name_255.resize(name_255.len() + 255, b'x');
    name_255.extend_from_slice(&key().0);
    streams.push(("register-name-not-terminated".into(), name_255));
    streams
}

/// The extension requests (protocol §E0–§E8): each alone, pipelined with classic
/// ones after a hello (whose 9000s then carry reasons), at wrong sizes, and oversized.
fn extension_streams() -> Vec<(String, Vec<u8>)> {
    let hello = extension_request(Extension::Hello, ClientId::default(), &hello_payload());
    let challenge = extension_request(Extension::Challenge, ALICE, &[]);
    let prove = extension_request(Extension::Prove, ALICE, &[0x5a; 32]);
    let protect = extension_request(Extension::Protect, ALICE, &[1]);
    let long_poll = extension_request(Extension::LongPoll, ALICE, &[0x10, 0x27, 0, 0]);
    let accounts = ListAccounts {
        pattern: NamePattern::parse(r"fuzz \* ?li*").expect("a pattern"),
        after: AccountCursor::START,
        page_size: 10,
    };
    let list = extension_request(Extension::ListAccounts, BOB, &accounts.encode());
    let status = extension_request(Extension::QueueStatus, ALICE, &[]);
    let unsend = extension_request(Extension::Unsend, BOB, &unsend_payload(MessageId(1)));
    let delete = extension_request(Extension::DeleteAccount, ALICE, &[]);
    let subscribe = extension_request(Extension::Subscribe, ALICE, &[]);
    let acknowledge = extension_request(
        Extension::Acknowledge,
        ALICE,
        &acknowledge_payload(&[MessageId(1), MessageId(2)]),
    );
    let mut pipelined = [
        &hello[..],
        &challenge,
        &prove,
        &protect,
        &list,
        &status,
        &unsend,
        &subscribe,
        &acknowledge,
        &delete,
        &long_poll,
    ]
    .concat();
    pipelined.extend(bare_request(Edition::Y2024, Operation::ListClients, ALICE));
    pipelined.extend(send_request(
        Edition::Y2026,
        BOB,
        ClientId([7; 16]),
        3,
        b"x",
    ));
    let declaring = |extension: Extension, declared: u32, body_len: usize| {
        let header = RequestHeader {
            client_id: ALICE,
            version: 3,
            code: extension.to_wire(),
            payload_size: declared,
        };
        let mut request = header.encode().to_vec();
        request.resize(request.len() + body_len, 0x44);
        request
    };
    let mut wrong_sizes = hello.clone();
    wrong_sizes.extend(declaring(Extension::Prove, 31, 31));
    wrong_sizes.extend(declaring(Extension::Challenge, 2, 2));
    wrong_sizes.extend(declaring(Extension::Protect, 1, 1));
    wrong_sizes.extend(declaring(Extension::LongPoll, 2, 2));
    wrong_sizes.extend(declaring(Extension::Subscribe, 4, 4));
    wrong_sizes.extend(declaring(Extension::Acknowledge, 9, 9));
    wrong_sizes.extend(declaring(Extension::Acknowledge, 2, 2));
    wrong_sizes.extend(declaring(Extension::ListAccounts, 11, 11));
    wrong_sizes.extend(declaring(Extension::ListAccounts, 20, 20));
    wrong_sizes.extend(declaring(Extension::ListAccounts, 268, 268));
    wrong_sizes.extend(declaring(Extension::Unsend, 3, 3));
    wrong_sizes.extend(bare_request(Edition::Y2021, Operation::PullMessages, ALICE));
    let mut oversized = hello.clone();
    oversized.extend(declaring(Extension::Hello, (64 << 10) + 1, 64));
    vec![
        ("extension-hello".into(), hello),
        ("extension-challenge".into(), challenge),
        ("extension-prove".into(), prove),
        ("extension-protect".into(), protect),
        ("extension-long-poll".into(), long_poll),
        ("extension-list-accounts".into(), list),
        ("extension-queue-status".into(), status),
        ("extension-unsend".into(), unsend),
        ("extension-delete-account".into(), delete),
        ("extension-pipelined".into(), pipelined),
        ("extension-wrong-sizes".into(), wrong_sizes),
        ("extension-oversized".into(), oversized),
    ]
}

/// Whether a stream means what its name says only without a payload limit (with one, it is
/// simply oversized).
fn needs_unlimited_payload(name: &str) -> bool {
    name == "send-undeliverable"
}

/// Streams up to this long are also seeded against the edges of the limits.
const EDGE_SEED_MAX_LEN: usize = 2048;

fn request_stream() -> Vec<Seed> {
    let default = request_stream::options(5, 5);
    let mut seeds = Vec::new();
    for (name, stream) in streams() {
        let options = if needs_unlimited_payload(&name) {
            request_stream::options(7, 5)
        } else {
            default
        };
        for (chunking, sizes) in [("whole", WHOLE), ("dribble", DRIBBLE), ("uneven", UNEVEN)] {
            seeds.push(Seed {
                name: format!("{name}.{chunking}"),
                data: StreamInput::encode(options, sizes, &stream),
            });
        }
        if stream.len() > EDGE_SEED_MAX_LEN {
            continue;
        }
        // The same stream against the edges of the limits: nothing fits, only a register
        // fits, everything is an upload.
        for (tag, options) in [
            ("max-20", request_stream::options(1, 5)),
            ("max-415", request_stream::options(2, 5)),
            ("threshold-0", request_stream::options(6, 0)),
            ("threshold-16", request_stream::options(5, 2)),
        ] {
            seeds.push(Seed {
                name: format!("{name}.{tag}"),
                data: StreamInput::encode(options, UNEVEN, &stream),
            });
        }
    }
    seeds
}

fn connection() -> Vec<Seed> {
    let mut seeds = Vec::new();
    for (name, stream) in streams() {
        for (chunking, sizes) in [("whole", WHOLE), ("uneven", UNEVEN)] {
            seeds.push(Seed {
                name: format!("{name}.{chunking}"),
                data: StreamInput::encode(0, sizes, &stream),
            });
        }
        if name.contains("padded") || name.contains("pipelined") {
            // Pieces arriving 1 ms apart, and 8 ms apart: past the padding grace time.
            for (tag, options) in [("paused-1ms", 6), ("paused-8ms", 7)] {
                seeds.push(Seed {
                    name: format!("{name}.{tag}"),
                    data: StreamInput::encode(options, &[40, 256], &stream),
                });
            }
        }
    }
    seeds
}

/// A reply with `code` and `payload`, as a server writes it.
pub(crate) fn reply(code: u16, payload: &[u8]) -> Vec<u8> {
    let header = ReplyHeader {
        version: SERVER_VERSION,
        code,
        payload_size: payload.len() as u32,
    };
    let mut bytes = header.encode().to_vec();
    bytes.extend_from_slice(payload);
    bytes
}

fn listed(names: &[&str]) -> Vec<u8> {
    let mut payload = Vec::new();
    for (index, name) in names.iter().enumerate() {
        payload.extend_from_slice(&[index as u8 + 1; 16]);
        encode_name(name, &mut payload);
    }
    payload
}

fn pulled(contents: &[&[u8]]) -> Vec<u8> {
    let mut payload = Vec::new();
    for (index, content) in contents.iter().enumerate() {
        payload.extend_from_slice(&BOB.0);
        payload.extend_from_slice(&(index as u32 + 1).to_le_bytes());
        payload.push(index as u8 % 4 + 1);
        payload.extend_from_slice(&(content.len() as u32).to_le_bytes());
        payload.extend_from_slice(content);
    }
    payload
}

fn reply_parser() -> Vec<Seed> {
    let mut seeds = Vec::new();
    let mut add = |name: String, data: Vec<u8>| seeds.push(Seed { name, data });
    let long_name = "x".repeat(254);
    let three = listed(&["alice", "Michael Jackson", &long_name]);
    let messages = pulled(&[b"", b"hello", &[0xee; 128]]);
    for edition in Edition::ALL {
        let tag = edition_tag(edition);
        let code = |operation| edition.reply_code(operation);
        let mut key_reply = ALICE.0.to_vec();
        key_reply.extend_from_slice(&key().0);
        let mut sent = ALICE.0.to_vec();
        sent.extend_from_slice(&77u32.to_le_bytes());
        let replies = [
            ("registered", reply(code(Operation::Register), &BOB.0)),
            ("list-empty", reply(code(Operation::ListClients), &[])),
            (
                "list-1",
                reply(code(Operation::ListClients), &listed(&["bob"])),
            ),
            ("list-3", reply(code(Operation::ListClients), &three)),
            ("public-key", reply(code(Operation::PublicKey), &key_reply)),
            ("sent", reply(code(Operation::SendMessage), &sent)),
            ("pull-empty", reply(code(Operation::PullMessages), &[])),
            ("pull-3", reply(code(Operation::PullMessages), &messages)),
        ];
        for (name, data) in replies {
            add(format!("{tag}-{name}"), data);
        }
    }
    add("error".into(), reply(ERROR_REPLY_CODE, &[]));
    add("pull-cut-short".into(), reply(2104, &messages[..40]));
    add("pull-header-cut-short".into(), reply(2104, &messages[..10]));
    let mut unterminated = listed(&["bob"]);
    unterminated[16..].fill(b'y');
    add("list-name-unterminated".into(), reply(2101, &unterminated));
    add("list-partial-entry".into(), reply(2101, &three[..300]));
    seeds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_disk(target: &str) -> Vec<Seed> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("seeds")
            .join(target);
        let mut seeds: Vec<Seed> = fs::read_dir(&dir)
            .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
            .map(|entry| {
                let path = entry.expect("a directory entry").path();
                Seed {
                    name: path
                        .file_name()
                        .expect("a file name")
                        .to_string_lossy()
                        .into(),
                    data: fs::read(&path).expect("a readable seed"),
                }
            })
            .collect();
        seeds.sort_by(|a, b| a.name.cmp(&b.name));
        seeds
    }

    #[test]
    fn committed_seeds_are_the_generated_ones() {
        for target in TARGETS {
            let mut generated = for_target(target);
            generated.sort_by(|a, b| a.name.cmp(&b.name));
            let committed = on_disk(target);
            let names = |seeds: &[Seed]| seeds.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
            assert_eq!(
                names(&committed),
                names(&generated),
                "{target}: rerun write_seeds"
            );
            for (committed, generated) in committed.iter().zip(&generated) {
                assert!(
                    committed.data == generated.data,
                    "{target}/{}: rerun write_seeds",
                    committed.name
                );
            }
        }
    }

    #[test]
    fn every_seed_passes_its_target() {
        for seed in request_stream() {
            crate::request_stream::check(&seed.data);
        }
        for seed in reply_parser() {
            crate::reply_parser::check(&seed.data);
        }
        for seed in connection() {
            crate::connection::check(&seed.data);
        }
    }
}
