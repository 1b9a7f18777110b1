//! `messageu-bench --addr a,b` against two real nodes on one PostgreSQL database (always
//! PostgreSQL: SQLite files are private to their server, so two nodes cannot share one): the
//! clients are spread over the nodes, each sending and pulling through its own, and a message
//! sent through one node is delivered through the other, exactly once.

#[path = "../../tests/common/mod.rs"]
mod common;
mod report;

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::http::{http, sample};
use common::postgres::TestDatabase;
use common::{TestServer, IO_TIMEOUT};
use messageu::config::Database;
use report::count;

/// A node: a server in this process on the shared database, with its metrics served.
fn node(url: &str) -> TestServer {
    TestServer::start_node(&Database::Postgres(url.to_owned()), |config| {
        config.metrics = Some(([127, 0, 0, 1], 0).into());
    })
}

/// A counter of `node`'s metrics.
fn counter(node: &TestServer, name: &str) -> u64 {
    let metrics = node.metrics.expect("metrics are served");
    let (_, scrape) = http(metrics, "GET", "/metrics");
    sample(&scrape, name).unwrap_or_else(|| panic!("no {name} in:\n{scrape}")) as u64
}

#[test]
fn two_clients_on_two_nodes_deliver_every_message_through_the_other_node() {
    let database = TestDatabase::create();
    let nodes = [node(&database.url()), node(&database.url())];
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
            .map(|n| counter(n, "messageu_messages_stored_total"));
        let delivered = nodes
            .each_ref()
            .map(|n| counter(n, "messageu_messages_delivered_total"));
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
