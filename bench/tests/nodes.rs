//! `messageu-bench --addr a,b` against two real nodes on one PostgreSQL database (always
//! PostgreSQL: SQLite files are private to their server, so two nodes cannot share one): the
//! clients are spread over the nodes, each sending and pulling through its own, and a message
//! sent through one node is delivered through the other, exactly once.

#[path = "../../tests/common/mod.rs"]
mod common;
mod report;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::postgres::TestDatabase;
use common::IO_TIMEOUT;
use messageu::config::Database;
use messageu::{Config, Server, ShutdownHandle};
use report::count;

/// One node: a server in this process on the shared database, with its metrics served.
struct Node {
    addr: SocketAddr,
    metrics: SocketAddr,
    shutdown: ShutdownHandle,
    thread: Option<JoinHandle<()>>,
}

impl Node {
    fn start(url: &str) -> Node {
        let mut config = Config::loopback(Database::Postgres(url.to_owned()));
        config.metrics = Some(([127, 0, 0, 1], 0).into());
        let server = Server::bind(config).expect("node starts");
        let metrics = server.metrics_addr().expect("metrics are served");
        let (addr, shutdown) = (server.local_addr(), server.shutdown_handle());
        let thread = thread::spawn(move || server.run().expect("node runs and stops"));
        Node {
            addr,
            metrics,
            shutdown,
            thread: Some(thread),
        }
    }

    /// A counter of the node's metrics.
    fn counter(&self, name: &str) -> u64 {
        let mut stream = TcpStream::connect(self.metrics).expect("connect to the metrics");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
        )
        .expect("write the request");
        let mut text = String::new();
        stream.read_to_string(&mut text).expect("read the metrics");
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.shutdown();
        if let Some(thread) = self.thread.take() {
            let deadline = Instant::now() + IO_TIMEOUT;
            while !thread.is_finished() {
                assert!(Instant::now() < deadline, "node did not stop in time");
                thread::sleep(Duration::from_millis(10));
            }
            let result = thread.join();
            if !thread::panicking() {
                result.expect("node thread panicked");
            }
        }
    }
}

#[test]
fn two_clients_on_two_nodes_deliver_every_message_through_the_other_node() {
    let database = TestDatabase::create();
    let nodes = [Node::start(&database.url()), Node::start(&database.url())];
    let addrs = format!("{},{}", nodes[0].addr, nodes[1].addr);
    // Two clients: client 0 on the first node, client 1 on the second, and each sends only
    // to the other, so every message crosses from one node to the other.
    let output = Command::new(env!("CARGO_BIN_EXE_messageu-bench"))
        .args(["--addr", &addrs, "--clients", "2", "--mix", "send-pull"])
        .args(["--warmup", "0.3", "--duration", "1", "--timeout", "5"])
        .output()
        .expect("messageu-bench runs");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report.contains(&addrs), "the report names both: {report}");
    for label in ["lost", "duplicated", "corrupted", "unacknowledged"] {
        assert_eq!(count(&report, label), 0, "{label}: {report}");
    }
    let acknowledged = count(&report, "acknowledged");
    assert!(acknowledged > 0, "{report}");

    // A pull's deletions are counted a turn after its reply: wait for them to settle.
    let deadline = Instant::now() + IO_TIMEOUT;
    let (stored, delivered) = loop {
        let stored = nodes
            .each_ref()
            .map(|n| n.counter("messageu_messages_stored_total"));
        let delivered = nodes
            .each_ref()
            .map(|n| n.counter("messageu_messages_delivered_total"));
        if stored[0] == delivered[1] && stored[1] == delivered[0] || Instant::now() > deadline {
            break (stored, delivered);
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert!(
        stored[0] > 0 && stored[1] > 0,
        "both nodes took sends: {stored:?}"
    );
    assert_eq!(
        (stored[0], stored[1]),
        (delivered[1], delivered[0]),
        "what one node stored, the other delivered"
    );
    assert_eq!(stored[0] + stored[1], acknowledged, "{report}");
}
