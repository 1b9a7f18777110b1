//! End-to-end runs of the real `messageu-bench` binary: a short run against our server finds
//! no loss, and a server that acknowledges sends but never delivers them is caught.

#[path = "../../tests/common/mod.rs"]
mod common;
mod report;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use common::{assert_names_itself, BinaryServer, TestServer, TestStore};
use messageu_protocol::{
    Operation, ReplyHeader, RequestCode, RequestHeader, REQUEST_HEADER_LEN, SERVER_VERSION,
};
use report::count;

/// A short run with few clients: enough to exercise every phase, quick enough for `cargo test`.
fn bench(addr: SocketAddr, extra: &[&str]) -> Output {
    let addr = addr.to_string();
    let mut args = vec![
        "--addr",
        &addr,
        "--clients",
        "4",
        "--warmup",
        "0.3",
        "--duration",
        "1",
        "--timeout",
        "5",
    ];
    args.extend_from_slice(extra);
    Command::new(env!("CARGO_BIN_EXE_messageu-bench"))
        .args(&args)
        .output()
        .expect("messageu-bench runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn two_rounds_against_the_server_binary_deliver_everything_exactly_once() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = TestStore::in_dir(dir.path(), "server.db").db_arg();
    let server = BinaryServer::start(dir.path(), &["--db", &db, "--durability", "normal"]);
    let pid = server.child.id().to_string();
    let output = bench(
        server.addr,
        &[
            "--rounds",
            "2",
            "--server-pid",
            &pid,
            "--markdown",
            "--durability-label",
            "normal",
        ],
    );
    let report = text(&output.stderr);
    assert!(output.status.success(), "{report}");
    assert!(count(&report, "acknowledged") > 0, "{report}");
    for label in ["lost", "duplicated", "corrupted"] {
        assert_eq!(count(&report, label), 0, "{report}");
    }
    assert!(
        report.contains("clients served in every window: 4/4"),
        "{report}"
    );

    let rows = text(&output.stdout);
    assert_eq!(
        rows.lines().count(),
        2,
        "a row for send and one for pull:\n{rows}"
    );
    for row in rows.lines() {
        assert!(row.starts_with("| 4 | send-pull | normal |"), "{row}");
        assert!(
            row.contains("| 4/4 | 0/0/0 |"),
            "served, then lost/dup/corrupt: {row}"
        );
    }
}

#[test]
fn the_push_mix_pushes_and_acknowledges_every_message_once_beside_send_pull() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = TestStore::in_dir(dir.path(), "server.db").db_arg();
    let server = BinaryServer::start(dir.path(), &["--db", &db, "--durability", "full"]);
    let pid = server.child.id().to_string();
    let output = bench(
        server.addr,
        &[
            "--mix",
            "push",
            "--rounds",
            "2",
            "--server-pid",
            &pid,
            "--markdown",
            "--durability-label",
            "full",
        ],
    );
    let report = text(&output.stderr);
    assert!(output.status.success(), "{report}");
    let push = report
        .lines()
        .find(|line| line.starts_with("delivery (push):"))
        .unwrap_or_else(|| panic!("no push delivery line:\n{report}"));
    let acknowledged = count(push, "acknowledged");
    assert!(acknowledged > 0, "{report}");
    for label in ["pushed", "listed", "deleted"] {
        assert_eq!(count(push, label), acknowledged, "{label}: {report}");
    }
    for label in ["lost", "duplicated", "corrupted", "pulled only"] {
        assert_eq!(count(push, label), 0, "{label}: {report}");
    }
    let send_pull = report
        .lines()
        .find(|line| line.starts_with("delivery (send-pull):"))
        .unwrap_or_else(|| panic!("no send-pull delivery line:\n{report}"));
    assert!(count(send_pull, "acknowledged") > 0, "{report}");
    assert!(
        report.contains("recipients: 0 connection errors"),
        "{report}"
    );

    let rows = text(&output.stdout);
    let rows: Vec<&str> = rows.lines().collect();
    assert_eq!(
        rows.len(),
        2,
        "a row for push and one for send-pull: {rows:?}"
    );
    assert!(rows[0].starts_with("| 4 | full | push |"), "{}", rows[0]);
    assert!(
        rows[1].starts_with("| 4 | full | send-pull |"),
        "{}",
        rows[1]
    );
    for row in rows {
        assert!(row.contains("| 0/0/0 |"), "lost/dup/corrupt: {row}");
    }
}

#[test]
fn clients_with_a_connection_per_request_get_every_message_exact_or_padded() {
    for (style, name) in [
        ("--conn-per-request", "a connection per request"),
        ("--padded", "zero-padded requests, a connection per request"),
    ] {
        let server = TestServer::start();
        let output = bench(server.addr, &[style, "--mix", "send-pull"]);
        let report = text(&output.stdout);
        assert!(output.status.success(), "{report}{}", text(&output.stderr));
        assert!(report.contains(name), "{style}: {report}");
        assert!(count(&report, "acknowledged") > 0, "{report}");
        for label in ["lost", "duplicated", "corrupted"] {
            assert_eq!(count(&report, label), 0, "{style}, {label}: {report}");
        }
        // The floor ran in the same mode: every operation has a ratio.
        assert!(!report.contains("no floor"), "{style}: {report}");
        for operation in ["send ", "pull "] {
            let row = report
                .lines()
                .find(|line| line.starts_with(operation))
                .unwrap_or_else(|| panic!("no {operation}row: {report}"));
            let ratio: f64 = row
                .rsplit(' ')
                .next()
                .and_then(|ratio| ratio.parse().ok())
                .unwrap_or_else(|| panic!("{style}: no ratio in {row:?}"));
            assert!(ratio > 0.0, "{style}: {row}");
        }
    }
}

#[test]
fn public_keys_are_checked_against_the_registered_ones() {
    let server = TestServer::start();
    let output = bench(server.addr, &["--mix", "pubkey", "--edition", "2021"]);
    let report = text(&output.stdout);
    assert!(output.status.success(), "{report}{}", text(&output.stderr));
    assert!(report.contains("pubkey"), "{report}");
    assert!(!report.contains("errors in"), "{report}");
}

#[test]
fn a_server_that_acknowledges_but_never_delivers_is_caught() {
    let server = BlackHole::start();
    let output = bench(server.addr, &["--no-floor"]);
    let report = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{report}{}",
        text(&output.stderr)
    );
    let acknowledged = count(&report, "acknowledged");
    assert!(acknowledged > 0, "{report}");
    assert_eq!(count(&report, "lost"), acknowledged, "{report}");
    server.stop();
}

/// A fake server that registers clients and acknowledges every send, but whose queues are
/// always empty.
struct BlackHole {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    acceptor: JoinHandle<()>,
}

impl BlackHole {
    fn start() -> BlackHole {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&stopping);
        let next_id = Arc::new(AtomicU32::new(1));
        let acceptor = thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::Acquire) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let next_id = Arc::clone(&next_id);
                thread::spawn(move || answer_until_closed(stream, &next_id));
            }
        });
        BlackHole {
            addr,
            stopping,
            acceptor,
        }
    }

    fn stop(self) {
        self.stopping.store(true, Ordering::Release);
        // Wakes the blocked accept so that the thread sees the flag.
        drop(TcpStream::connect(self.addr));
        self.acceptor.join().expect("acceptor thread");
    }
}

fn answer_until_closed(mut stream: TcpStream, next_id: &AtomicU32) {
    let mut header = [0; REQUEST_HEADER_LEN];
    while stream.read_exact(&mut header).is_ok() {
        let header = RequestHeader::parse(&header);
        let mut payload = vec![0; header.payload_size as usize];
        if stream.read_exact(&mut payload).is_err() {
            return;
        }
        let Some(code) = RequestCode::from_wire(header.code) else {
            return;
        };
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let body = match code.operation {
            Operation::Register => [id.to_le_bytes(); 4].concat(),
            Operation::SendMessage => [&payload[..16], &id.to_le_bytes()[..]].concat(),
            _ => Vec::new(),
        };
        let mut reply = ReplyHeader {
            version: SERVER_VERSION,
            code: code.reply_code(),
            payload_size: body.len() as u32,
        }
        .encode()
        .to_vec();
        reply.extend_from_slice(&body);
        if stream.write_all(&reply).is_err() {
            return;
        }
    }
}

#[test]
fn the_bench_names_itself_in_version() {
    assert_names_itself(
        "messageu-bench",
        Path::new(env!("CARGO_BIN_EXE_messageu-bench")),
    );
}
