//! A node dies under load (issue 14): two `messageu-server` processes share one PostgreSQL
//! database, clients send and pull through both, one node is killed with SIGKILL in the
//! middle, and its clients fail over to the other. Every message a node acknowledged must
//! then be delivered, intact; duplicates (a pull reply written whole just before the kill,
//! whose deletion never committed) are counted, not forbidden. Messages the dead node had
//! claimed for a pull reply wait for the claim's lease (`--claim-lease`, 1 s here) and are
//! then delivered by the survivor. Always on PostgreSQL: a SQLite file has one server.

mod common;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::postgres::server_schema_url;
use common::*;
use messageu::protocol::{ClientId, Edition, Operation};

const EDITION: Edition = Edition::Y2024;
const CLIENTS: usize = 12;
/// How long the load runs before the kill, and after it.
const BEFORE_KILL: Duration = Duration::from_millis(1500);
const AFTER_KILL: Duration = Duration::from_millis(1500);
/// The claim lease the nodes run with, and how long a drain waits for an empty queue to stay
/// empty: past the lease, so that what the dead node had claimed comes back.
const LEASE: &str = "1";
const SETTLE: Duration = Duration::from_millis(1600);

/// One request and its reply over `stream`: (code, payload), or the error that broke it.
fn call(
    stream: &mut TcpStream,
    caller: ClientId,
    op: Operation,
    body: &[u8],
) -> io::Result<(u16, Vec<u8>)> {
    let code = EDITION.request_code(op);
    stream.write_all(&request_bytes(caller, code, body.len() as u32, body))?;
    let mut header = [0; 7];
    stream.read_exact(&mut header)?;
    let reply = u16::from_le_bytes([header[1], header[2]]);
    let len = u32::from_le_bytes([header[3], header[4], header[5], header[6]]) as usize;
    let mut payload = vec![0; len];
    stream.read_exact(&mut payload)?;
    Ok((reply, payload))
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// A client that fails over: it uses node `current` until a request fails, then the next.
struct FailoverClient {
    id: ClientId,
    nodes: Vec<SocketAddr>,
    current: usize,
    stream: Option<TcpStream>,
    failovers: usize,
}

impl FailoverClient {
    /// The reply to one request, or `None` if its connection broke (the next request goes to
    /// the next node).
    fn try_call(&mut self, op: Operation, body: &[u8]) -> Option<(u16, Vec<u8>)> {
        if self.stream.is_none() {
            self.stream = connect(self.nodes[self.current]).ok();
        }
        let stream = self.stream.as_mut()?;
        match call(stream, self.id, op, body) {
            Ok(reply) => Some(reply),
            Err(_) => {
                self.stream = None;
                self.current = (self.current + 1) % self.nodes.len();
                self.failovers += 1;
                None
            }
        }
    }
}

/// What one client saw: the messages acknowledged to it as sent (id → content), and those
/// pulled (id, content), in order.
#[derive(Default)]
struct Seen {
    acknowledged: HashMap<u32, Vec<u8>>,
    pulled: Vec<(u32, Vec<u8>)>,
    failovers: usize,
}

fn run_client(
    mut client: FailoverClient,
    ids: Vec<ClientId>,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> Seen {
    let mut rng = Rng::new(seed);
    let mut seen = Seen::default();
    let mut sent = 0u32;
    let pull = |client: &mut FailoverClient, seen: &mut Seen| -> Option<usize> {
        let (code, payload) = client.try_call(Operation::PullMessages, &[])?;
        if code != EDITION.reply_code(Operation::PullMessages) {
            return Some(0);
        }
        let pulled = parse_pull(&payload);
        let count = pulled.len();
        seen.pulled
            .extend(pulled.into_iter().map(|m| (m.id, m.content)));
        Some(count)
    };
    while !stop.load(Ordering::Relaxed) {
        let to = ids[rng.below(ids.len())];
        let content = format!("{}:{sent}", client.id).into_bytes();
        sent += 1;
        if let Some((code, payload)) =
            client.try_call(Operation::SendMessage, &send_body(to, 3, &content))
        {
            if code == EDITION.reply_code(Operation::SendMessage) {
                let id = u32::from_le_bytes(payload[16..20].try_into().expect("4 bytes"));
                seen.acknowledged.insert(id, content);
            }
        }
        pull(&mut client, &mut seen);
    }
    // Drain: until the queue has stayed empty past the claim lease.
    let mut empty_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    while empty_since.elapsed() < SETTLE && Instant::now() < deadline {
        match pull(&mut client, &mut seen) {
            Some(0) => thread::sleep(Duration::from_millis(50)),
            _ => empty_since = Instant::now(),
        }
    }
    seen.failovers = client.failovers;
    seen
}

#[test]
fn a_node_killed_under_load_loses_no_acknowledged_message() {
    let database = server_schema_url(&format!("node_failure_{}", std::process::id()));
    let dirs: Vec<_> = (0..2)
        .map(|_| tempfile::tempdir().expect("temporary directory"))
        .collect();
    let mut nodes: Vec<BinaryServer> = dirs
        .iter()
        .map(|dir| BinaryServer::start(dir.path(), &["--db", &database, "--claim-lease", LEASE]))
        .collect();
    let addrs: Vec<SocketAddr> = nodes.iter().map(|node| node.addr).collect();

    let mut registrar = Client::connect(addrs[1]);
    let ids: Vec<ClientId> = (0..CLIENTS)
        .map(|i| registrar.register(EDITION, &format!("client{i}")))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |elapsed| elapsed.as_nanos() as u64);
    println!("seed {seed}");
    let clients: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            let client = FailoverClient {
                id,
                nodes: addrs.clone(),
                current: i % 2,
                stream: None,
                failovers: 0,
            };
            let (ids, stop) = (ids.clone(), Arc::clone(&stop));
            thread::spawn(move || run_client(client, ids, stop, seed + i as u64))
        })
        .collect();

    thread::sleep(BEFORE_KILL);
    nodes[0].child.kill().expect("SIGKILL the first node");
    nodes[0].child.wait().expect("reaped");
    thread::sleep(AFTER_KILL);
    stop.store(true, Ordering::Relaxed);

    let mut acknowledged = HashMap::new();
    let mut deliveries: HashMap<u32, (usize, Vec<u8>)> = HashMap::new();
    let mut failovers = 0;
    for client in clients {
        let seen = client.join().expect("client thread");
        acknowledged.extend(seen.acknowledged);
        failovers += seen.failovers;
        for (id, content) in seen.pulled {
            deliveries.entry(id).or_insert((0, content)).0 += 1;
        }
    }
    let lost: Vec<_> = acknowledged
        .keys()
        .filter(|id| !deliveries.contains_key(id))
        .collect();
    let corrupted = acknowledged
        .iter()
        .filter(|(id, content)| deliveries.get(id).is_some_and(|(_, got)| got != *content))
        .count();
    let duplicated = deliveries.values().filter(|(count, _)| *count > 1).count();
    println!(
        "{} acknowledged sends, {} delivered, {failovers} failovers, {} lost, {corrupted} \
         corrupted, {duplicated} duplicated",
        acknowledged.len(),
        deliveries.len(),
        lost.len()
    );
    assert!(
        failovers >= CLIENTS / 2,
        "the first node's clients failed over"
    );
    assert!(
        acknowledged.len() > 100,
        "the load ran: {}",
        acknowledged.len()
    );
    assert!(
        lost.is_empty(),
        "acknowledged and never delivered: {lost:?}"
    );
    assert_eq!(corrupted, 0);
    assert!(
        nodes[1].is_running(),
        "the survivor runs: {}",
        nodes[1].log_text()
    );
}
