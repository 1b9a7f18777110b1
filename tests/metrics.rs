//! What operators see: the Prometheus endpoint and health check over real sockets, and the
//! start-up limits and summary lines of the binary's log.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::http::{http, sample};
use common::*;
use messageu::protocol::{ClientId, Edition, Operation};
use messageu::{Config, Server, ShutdownHandle};

const WAIT: Duration = Duration::from_secs(10);
/// Zero-padded clients send and read blocks of this many bytes (protocol §4.3).
const PADDED_BLOCK: usize = 1024;

/// Scrapes until `ready` holds for a scrape (the loop records some things a turn after the
/// reply: deletions of delivered messages, closed connections); returns that scrape.
fn scrape_until(addr: SocketAddr, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = http(addr, "GET", "/metrics");
        assert_eq!(status, 200);
        if ready(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "metrics never settled:\n{body}");
        thread::sleep(Duration::from_millis(20));
    }
}

struct MetricsServer {
    addr: SocketAddr,
    metrics: SocketAddr,
    shutdown: ShutdownHandle,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl MetricsServer {
    fn start() -> MetricsServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::loopback(common::test_database(dir.path()));
        config.metrics = Some(([127, 0, 0, 1], 0).into());
        let server = Server::bind(config).expect("server starts");
        let metrics = server.metrics_addr().expect("metrics are served");
        assert_ne!(metrics.port(), 0);
        let (addr, shutdown) = (server.local_addr(), server.shutdown_handle());
        let thread = thread::spawn(move || server.run().expect("server runs and stops"));
        MetricsServer {
            addr,
            metrics,
            shutdown,
            thread: Some(thread),
            _dir: dir,
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shutdown.shutdown();
        if let Some(thread) = self.thread.take() {
            let joined = thread.join();
            if !thread::panicking() {
                joined.expect("server thread");
            }
        }
    }
}

#[test]
fn metrics_count_known_traffic_exactly() {
    let server = MetricsServer::start();
    let edition = Edition::Y2024;
    let mut client = Client::connect(server.addr);
    let alice = client.register(edition, "alice");
    let bob = client.register(edition, "bob");
    client.send(edition, alice, bob, 3, b"hello bob");
    assert_eq!(client.pull(edition, bob).len(), 1);
    let list = edition.request_code(Operation::ListClients);
    assert!(client.call(ClientId([9; 16]), list, &[]).is_error());
    assert!(client.call(alice, 999, &[]).is_error());

    // A zero-padded client: one request per connection, closed after its reply.
    let mut padded = Client::connect(server.addr);
    let mut request = request_bytes(alice, list, 0, &[]);
    request.resize(PADDED_BLOCK, 0);
    padded.send_raw(&request);
    let mut reply = Vec::new();
    padded.stream.read_to_end(&mut reply).expect("padded reply");
    assert_eq!(reply.len(), PADDED_BLOCK);
    drop(padded);

    let scrape = scrape_until(server.metrics, |scrape| {
        sample(scrape, "messageu_messages_delivered_total") == Some(1.0)
            && sample(scrape, "messageu_connections_open{kind=\"padded\"}") == Some(0.0)
    });
    let requests = |operation: &str| {
        format!("messageu_requests_total{{edition=\"2024-25\",operation=\"{operation}\"}}")
    };
    for (name, value) in [
        (requests("register"), 2),
        (requests("send"), 1),
        (requests("pull"), 1),
        (requests("list"), 2),
        (requests("public-key"), 0),
        (
            "messageu_requests_total{edition=\"2021\",operation=\"send\"}".into(),
            0,
        ),
        (
            "messageu_request_duration_seconds_count{edition=\"2024-25\",operation=\"register\"}"
                .into(),
            2,
        ),
        ("messageu_errors_total{cause=\"unknown_caller\"}".into(), 1),
        ("messageu_errors_total{cause=\"rejected\"}".into(), 1),
        ("messageu_errors_total{cause=\"malformed\"}".into(), 0),
        ("messageu_messages_stored_total".into(), 1),
        ("messageu_messages_delivered_total".into(), 1),
        ("messageu_queued_messages".into(), 0),
        ("messageu_queued_bytes".into(), 0),
        ("messageu_connections_total{kind=\"new\"}".into(), 2),
        ("messageu_connections_total{kind=\"persistent\"}".into(), 1),
        ("messageu_connections_total{kind=\"padded\"}".into(), 1),
        ("messageu_connections_open{kind=\"persistent\"}".into(), 1),
        ("messageu_connections_open{kind=\"new\"}".into(), 0),
        ("messageu_connections_refused_total".into(), 0),
        ("messageu_storage_failures_total{step=\"commit\"}".into(), 0),
    ] {
        assert_eq!(
            sample(&scrape, &name),
            Some(f64::from(value)),
            "{name} in\n{scrape}"
        );
    }
    // Durability full: the registrations and the send were committed and, on SQLite, its
    // log flushed after each commit, and its file has a size. PostgreSQL's COMMIT is durable
    // when it returns (no flush follows) and its files are not the server's to measure.
    let sqlite = !on_postgres();
    let commits = sample(&scrape, "messageu_commit_duration_seconds_count");
    assert!(commits.is_some_and(|n| n >= 1.0), "commits in\n{scrape}");
    let flushes = sample(&scrape, "messageu_fsync_duration_seconds_count");
    assert!(
        flushes.is_some_and(|n| (n >= 1.0) == sqlite),
        "flushes in\n{scrape}"
    );
    let bytes = sample(&scrape, "messageu_database_bytes");
    assert!(bytes.is_some_and(|n| (n > 0.0) == sqlite), "{scrape}");

    // A message left waiting shows in the queue gauges.
    client.send(edition, bob, alice, 3, b"12345");
    let scrape = scrape_until(server.metrics, |scrape| {
        sample(scrape, "messageu_queued_messages") == Some(1.0)
    });
    assert_eq!(sample(&scrape, "messageu_queued_bytes"), Some(5.0));
}

#[test]
fn health_and_unknown_routes_over_http() {
    let server = MetricsServer::start();
    assert_eq!(http(server.metrics, "GET", "/health"), (200, "ok\n".into()));
    assert_eq!(http(server.metrics, "GET", "/nothing").0, 404);
    assert_eq!(http(server.metrics, "POST", "/metrics").0, 405);
    let (status, body) = http(server.metrics, "GET", "/metrics");
    assert_eq!(status, 200);
    assert!(
        body.contains("# TYPE messageu_requests_total counter"),
        "{body}"
    );
}

#[test]
fn the_binary_logs_its_limits_a_summary_and_where_metrics_are() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestStore::in_dir(dir.path(), "server.db").db_arg();
    let args = [
        "--db",
        &db,
        "--stats-interval",
        "1",
        "--metrics",
        "127.0.0.1:0",
    ];
    let mut server = BinaryServer::start(dir.path(), &args);
    let deadline = Instant::now() + WAIT;
    let find = |server: &BinaryServer, text: &str| {
        let log = server.log.lock().unwrap();
        log.iter().find(|line| line.contains(text)).cloned()
    };
    let metrics_line = loop {
        if let Some(line) = find(&server, "metrics on http://") {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "no metrics line: {}",
            server.log_text()
        );
        thread::sleep(Duration::from_millis(20));
    };
    let addr: SocketAddr = metrics_line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|addr| addr.parse().ok())
        .expect("the metrics address in the log");
    assert_eq!(http(addr, "GET", "/health").0, 200);
    let limits = find(&server, "limits: ").expect("a limits line");
    assert!(limits.contains("max payload 4294967295 bytes"), "{limits}");
    assert!(
        limits.contains("request timeout 30 s, idle timeout 600 s"),
        "{limits}"
    );
    assert!(
        limits.contains("connections (descriptor limit "),
        "{limits}"
    );

    Client::connect(server.addr).register(Edition::Y2026, "carol");
    while find(&server, "s: 1 requests, 0 messages stored, 0 delivered").is_none() {
        assert!(
            Instant::now() < deadline,
            "no summary line: {}",
            server.log_text()
        );
        thread::sleep(Duration::from_millis(50));
    }
    let stdin = server.stdin.as_mut().expect("stdin is open");
    stdin.write_all(b"q\n").expect("write q");
    assert_eq!(
        server.wait_exit(WAIT).code(),
        Some(0),
        "{}",
        server.log_text()
    );
}

#[test]
fn a_metrics_address_in_use_fails_start_up_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let args = ["--port", "0", "--db", "server.db", "--metrics", &addr];
    let (status, _, stderr) = launch(server_command(dir.path(), &args)).exited();
    assert!(!status.success(), "{stderr}");
    let expected = format!("messageu-server: cannot serve metrics on {addr} (");
    assert!(
        stderr.lines().any(|line| line.starts_with(&expected)),
        "{stderr}"
    );
    // Ports are bound before the database is opened: a failed start leaves nothing behind.
    assert!(!dir.path().join("server.db").exists());
    assert!(!dir.path().join("server.db.spool").exists());
}
