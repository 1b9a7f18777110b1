//! 5,000 connections that send half a header and stall, while 50 clients send and pull: the
//! stalled ones are all closed once the request timeout passes, and the active clients are
//! served throughout. Their latency is measured first without the stalled connections, then
//! with them, in the same run, and printed (run with `--release -- --nocapture` for the
//! figures in docs/reliability.md); the bound asserted here is loose, for debug builds on busy
//! machines.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{request_bytes, BinaryServer, Client, TestStore};
use messageu::protocol::{ClientId, Edition, Operation};

const EDITION: Edition = Edition::Y2024;
const STALLED: usize = 5000;
const ACTIVE: usize = 50;
const REQUEST_TIMEOUT_SECS: u64 = 3;

/// Raises this process's descriptor limit for the stalled connections; returns how many it
/// may open.
fn stalled_connections() -> usize {
    let (soft, hard) = rlimit::Resource::NOFILE.get().expect("descriptor limit");
    let wanted = (STALLED + ACTIVE + 256) as u64;
    if soft < wanted {
        rlimit::Resource::NOFILE
            .set(hard.min(wanted), hard)
            .expect("raise the descriptor limit");
    }
    let available = hard.min(wanted).saturating_sub((ACTIVE + 256) as u64) as usize;
    available.min(STALLED)
}

/// Sends and pulls in a loop until told to stop; returns each round trip's latency.
fn active_client(
    addr: SocketAddr,
    me: ClientId,
    peer: ClientId,
    stop: Arc<AtomicBool>,
) -> Vec<Duration> {
    let mut client = Client::connect(addr);
    let mut latencies = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        client.send(EDITION, me, peer, 3, b"still here");
        latencies.push(start.elapsed());
        let start = Instant::now();
        client.pull(EDITION, me);
        latencies.push(start.elapsed());
    }
    latencies
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * fraction) as usize]
}

/// Runs the active clients until `until` returns; returns their sorted latencies and what
/// `until` returned.
fn measure_active<T>(
    addr: SocketAddr,
    ids: &[ClientId],
    until: impl FnOnce() -> T,
) -> (Vec<Duration>, T) {
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..ACTIVE)
        .map(|n| {
            let stop = Arc::clone(&stop);
            let (me, peer) = (ids[n], ids[(n + 1) % ACTIVE]);
            thread::spawn(move || active_client(addr, me, peer, stop))
        })
        .collect();
    let result = until();
    stop.store(true, Ordering::Relaxed);
    let mut latencies: Vec<Duration> = workers
        .into_iter()
        .flat_map(|worker| worker.join().expect("active client"))
        .collect();
    latencies.sort();
    (latencies, result)
}

fn summary(latencies: &[Duration]) -> String {
    format!(
        "{} round trips, p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
        latencies[latencies.len() - 1]
    )
}

#[test]
fn stalled_connections_are_closed_on_time_and_do_not_stop_active_clients() {
    let stalled_count = stalled_connections();
    let dir = tempfile::tempdir().expect("temporary directory");
    let timeout = REQUEST_TIMEOUT_SECS.to_string();
    let db = TestStore::in_dir(dir.path(), "server.db").db_arg();
    let server = BinaryServer::start(dir.path(), &["--db", &db, "--request-timeout", &timeout]);
    let mut setup = Client::connect(server.addr);
    let ids: Vec<ClientId> = (0..ACTIVE)
        .map(|n| setup.register(EDITION, &format!("active-{n}")))
        .collect();

    let (alone, ()) = measure_active(server.addr, &ids, || {
        thread::sleep(Duration::from_secs(REQUEST_TIMEOUT_SECS))
    });

    let half_header = &request_bytes(
        ClientId([7; 16]),
        EDITION.request_code(Operation::PullMessages),
        0,
        &[],
    )[..11];
    let (latencies, (closed, open_took, all_closed_after)) =
        measure_active(server.addr, &ids, || {
            let opened = Instant::now();
            let stalled: Vec<TcpStream> = (0..stalled_count)
                .map(|_| {
                    let stream = TcpStream::connect(server.addr).expect("connect a stalled client");
                    std::io::Write::write_all(&mut &stream, half_header).expect("half a header");
                    stream
                })
                .collect();
            let open_took = opened.elapsed();
            // Every stalled connection is closed within the timeout, plus a sweep.
            let deadline = opened
                + Duration::from_secs(REQUEST_TIMEOUT_SECS)
                + open_took
                + Duration::from_secs(3);
            let closed = stalled
                .iter()
                .filter(|stream| closed_before(stream, deadline))
                .count();
            (closed, open_took, opened.elapsed())
        });
    println!(
        "{closed}/{stalled_count} stalled connections closed after {all_closed_after:?} \
         (timeout {REQUEST_TIMEOUT_SECS} s, opening them took {open_took:?}); \
         {ACTIVE} active clients alone: {}; with the stalled connections: {}",
        summary(&alone),
        summary(&latencies),
    );
    assert_eq!(
        closed, stalled_count,
        "some stalled connections stayed open"
    );
    assert!(latencies.len() > ACTIVE * 10, "active clients were starved");
    let p99 = percentile(&latencies, 0.99);
    assert!(p99 < Duration::from_millis(500), "p99 {p99:?}");
}

/// Whether the server closes `stream` before `deadline`, sending nothing.
fn closed_before(mut stream: &TcpStream, deadline: Instant) -> bool {
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    stream.set_read_timeout(Some(left)).expect("read timeout");
    let mut byte = [0; 1];
    match std::io::Read::read(&mut stream, &mut byte) {
        Ok(0) => true,
        Err(error) => error.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => panic!("a stalled connection got a reply"),
    }
}
