//! End-to-end tests of the client's failover (docs/client.md, "Several servers"): the real
//! binary given several nodes, by `--server a,b` or by the lines of `server.info`, against
//! real servers on loopback ports, a closed port, and a fake node that loses a send's reply;
//! and `watch` moving from a killed node to another on the same PostgreSQL database.

#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{postgres, BinaryServer, TestServer};
use messageu_protocol::{Extension, ReplyHeader, RequestHeader, REQUEST_HEADER_LEN};
use support::{eventually, keyed_pair, message, Running, User};

const TEXT: &str = "still there after the failover?";

/// A loopback port nothing listens on: connecting to it is refused at once.
fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address")
}

/// A user whose `server.info` holds `text` (any number of lines).
fn user_with_server_info(text: &str) -> User {
    let user = User::new(closed_port(), "2025", &[]);
    std::fs::write(user.dir.path().join("server.info"), text).expect("server.info");
    user
}

/// `--server` naming `nodes`, in order, then `args`.
fn through(nodes: &[SocketAddr], args: &[&str]) -> Vec<String> {
    let list: Vec<String> = nodes.iter().map(ToString::to_string).collect();
    let mut all = vec!["--server".to_owned(), list.join(",")];
    all.extend(args.iter().map(|arg| arg.to_string()));
    all
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// A user who names the service with `--server` (its `server.info` names a closed port).
fn user_with_servers(nodes: &[SocketAddr]) -> User {
    User::new(closed_port(), "2025", &strs(&through(nodes, &[])))
}

/// Registers `name` and lists the clients: both through whichever node answers.
fn register_and_list(user: &User, name: &str) -> String {
    let registered = user.ok(&["register", name]);
    assert!(
        registered.starts_with(&format!("Registered as {name}")),
        "{registered}"
    );
    user.ok(&["list"])
}

#[test]
fn the_first_address_refused_the_commands_go_through_the_second() {
    let server = TestServer::start();
    let alice = user_with_servers(&[closed_port(), server.addr]);
    let bob = User::new(server.addr, "2025", &[]);
    bob.ok(&["register", "bob"]);
    assert_eq!(register_and_list(&alice, "alice"), "bob\n");
    alice.ok(&["get-key", "bob"]);
    alice.ok(&["send-key", "bob"]);
    alice.ok(&["send-text", "bob", TEXT]);
    let pulled = bob.ok(&["pull"]);
    assert!(pulled.ends_with(&message("alice", TEXT)), "{pulled}");
}

#[test]
fn a_server_info_of_two_lines_names_two_nodes_and_one_line_still_works() {
    let server = TestServer::start();
    let two = user_with_server_info(&format!("{}\n\n{}\n", closed_port(), server.addr));
    let one = user_with_server_info(&server.addr.to_string());
    assert_eq!(register_and_list(&one, "one"), "");
    assert_eq!(register_and_list(&two, "two"), "one\n");
    assert_eq!(one.ok(&["list"]), "two\n");
}

#[test]
fn when_every_node_fails_one_line_names_each_and_why() {
    let (first, second) = (closed_port(), closed_port());
    let user = user_with_servers(&[first, second]);
    let error = user.fails(&["register", "nobody"]);
    assert!(error.contains("every server failed: "), "{error}");
    for node in [first, second] {
        assert!(
            error.contains(&format!("{node} (cannot connect: ")),
            "{node} named: {error}"
        );
    }
    assert!(!user.dir.path().join("me.info").exists());
}

/// A node that says it is classic (a 9000 to the hello), reads one request, and closes
/// without answering it: a node that dies with a send's reply. Returns the codes of the
/// requests it read.
fn node_that_loses_a_reply() -> (SocketAddr, JoinHandle<Vec<u16>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let node = thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("the client connects");
        stream
            .set_read_timeout(Some(common::IO_TIMEOUT))
            .expect("timeout");
        let mut codes = Vec::new();
        loop {
            // Read whole, so that closing never resets the connection before the reply.
            let mut header = [0; REQUEST_HEADER_LEN];
            if stream.read_exact(&mut header).is_err() {
                return codes;
            }
            let header = RequestHeader::parse(&header);
            let mut payload = vec![0; header.payload_size as usize];
            if stream.read_exact(&mut payload).is_err() {
                return codes;
            }
            if header.code != Extension::Hello.to_wire() {
                codes.push(header.code);
                return codes;
            }
            let classic = ReplyHeader {
                version: 2,
                code: 9000,
                payload_size: 0,
            };
            if stream.write_all(&classic.encode()).is_err() {
                return codes;
            }
        }
    });
    (addr, node)
}

#[test]
fn a_send_whose_reply_was_lost_is_reported_and_not_sent_to_the_next_node() {
    let server = TestServer::start();
    let (alice, bob) = keyed_pair(&server);
    bob.ok(&["pull"]);

    let (lossy, node) = node_that_loses_a_reply();
    let args = through(&[lossy, server.addr], &["send-text", "bob", TEXT]);
    let error = alice.fails(&strs(&args));
    assert!(
        error.contains(&format!(
            "the connection to {lossy} failed before it confirmed the message to bob: the \
             message may or may not have been stored, and was not sent again"
        )),
        "{error}"
    );
    assert_eq!(node.join().expect("the node"), [603], "one send, of 2025");
    assert_eq!(bob.ok(&["pull"]), "", "nothing reached the second node");

    // The console says the same, asks, and comes back to its menu when told not to resend.
    let (lossy, node) = node_that_loses_a_reply();
    let console = User {
        dir: alice.dir,
        options: through(&[lossy, server.addr], &[]),
    };
    let output = console.console("151\nbob\nn\n0\n");
    let asked = output
        .find("may or may not have been stored")
        .and_then(|at| output[at..].find("Send it again? (y/n)"));
    assert!(asked.is_some(), "{output}");
    assert_eq!(output.matches("at your service").count(), 2, "{output}");
    assert!(!output.contains("sent to bob"), "{output}");
    assert_eq!(node.join().expect("the node"), [603]);
    assert_eq!(bob.ok(&["pull"]), "", "nothing reached the second node");
}

#[test]
fn a_read_whose_reply_was_lost_is_asked_of_the_next_node_and_a_pull_is_not() {
    let server = TestServer::start();
    let (alice, bob) = keyed_pair(&server);

    let (lossy, node) = node_that_loses_a_reply();
    let args = through(&[lossy, server.addr], &["list"]);
    assert_eq!(
        alice.ok(&strs(&args)),
        "bob\n",
        "answered by the second node"
    );
    assert_eq!(node.join().expect("the node"), [601], "the list, of 2025");

    alice.ok(&["send-text", "bob", TEXT]);
    let (lossy, node) = node_that_loses_a_reply();
    let args = through(&[lossy, server.addr], &["pull"]);
    let error = bob.fails(&strs(&args));
    assert!(
        error.contains(&format!(
            "the connection to {lossy} failed before the pull's reply was complete: messages \
             in that reply may be lost"
        )),
        "{error}"
    );
    assert_eq!(node.join().expect("the node"), [604]);
    let pulled = bob.ok(&["pull"]);
    assert!(
        pulled.ends_with(&message("alice", TEXT)),
        "not pulled from the second node behind the user's back: {pulled}"
    );
}

/// Two `messageu-server` processes on one PostgreSQL database (a schema of the throwaway
/// cluster of its own): one service of two nodes, whatever store the other tests run on.
fn two_nodes() -> [(BinaryServer, tempfile::TempDir); 2] {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let schema = format!(
        "failover_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let url = postgres::server_schema_url(&schema);
    [(), ()].map(|()| {
        let dir = tempfile::tempdir().expect("temporary directory");
        let server = BinaryServer::start(dir.path(), &["--db", &url]);
        (server, dir)
    })
}

#[test]
fn watch_moves_to_the_next_node_when_its_node_is_killed() {
    let [(mut first, _first_dir), (second, _second_dir)] = two_nodes();
    let info = format!("{}\n{}\n", first.addr, second.addr);
    let alice = user_with_server_info(&info);
    let bob = user_with_server_info(&info);
    alice.ok(&["register", "alice"]);
    bob.ok(&["register", "bob"]);
    alice.ok(&["get-key", "bob"]);
    alice.ok(&["send-key", "bob"]);

    let mut watcher = Running::start(&bob, &["watch"]);
    watcher.line_with("symmetric key received");
    eventually("the key acknowledged", || {
        bob.ok(&["status"]).starts_with("0 messages waiting")
    });

    first.child.kill().expect("SIGKILL the first node");
    first.child.wait().expect("the first node ends");
    let sent_at = Instant::now();
    alice.ok(&["send-text", "bob", TEXT]);
    watcher.line_with(TEXT);
    assert!(
        sent_at.elapsed() < Duration::from_secs(10),
        "pushed by the second node within 10 s, not {:?}",
        sent_at.elapsed()
    );
    let stderr = watcher.stderr();
    assert!(
        stderr.contains(&format!("connection lost to {}", first.addr)),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "reconnected to {} and subscribed again",
            second.addr
        )),
        "{stderr}"
    );
    eventually("the text acknowledged through the second node", || {
        bob.ok(&["status"]).starts_with("0 messages waiting")
    });
    let keys = watcher
        .seen
        .iter()
        .filter(|line| line.contains("symmetric key received"))
        .count();
    assert_eq!(keys, 1, "nothing shown twice: {:?}", watcher.seen);
}
