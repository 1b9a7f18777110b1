//! Resource limits: the connection cap, running out of file descriptors, and backpressure on
//! clients that pipeline without reading their replies.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use messageu::protocol::{ClientId, Edition, Operation};

const EDITION: Edition = Edition::Y2024;

fn list_code() -> u16 {
    EDITION.request_code(Operation::ListClients)
}

#[test]
fn connections_past_the_cap_with_none_idle_are_closed_and_open_ones_keep_serving() {
    let server = TestServer::start_with(|config| config.max_connections = 3);
    let mut clients: Vec<Client> = (0..3).map(|_| server.connect()).collect();
    let me = clients[0].register(EDITION, "first");
    let list = request_bytes(me, list_code(), 0, &[]);
    // The server has surely accepted the three once each has been answered; half a request
    // then keeps each busy, so none can be closed to make room.
    for client in &mut clients {
        assert_eq!(client.call(me, list_code(), &[]).code, 2101);
        client.send_raw(&list[..10]);
    }
    thread::sleep(Duration::from_millis(100));
    let mut refused =
        TcpStream::connect(server.addr).expect("the kernel still completes the handshake");
    assert!(
        closed_by_server(&mut refused),
        "a fourth connection must be closed"
    );
    for client in &mut clients {
        client.send_raw(&list[10..]);
        assert_eq!(client.read_reply().code, 2101);
    }
    drop(clients.pop());
    // A slot freed: a new connection is served (retry while the server notices the close).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut client = server.connect();
        client.send_raw(&request_bytes(me, list_code(), 0, &[]));
        let mut header = [0; 7];
        if client.stream.read_exact(&mut header).is_ok() {
            assert_eq!(&header[..3], &[2, 0x35, 0x08]);
            break;
        }
        assert!(Instant::now() < deadline, "freed slot never became usable");
        thread::sleep(Duration::from_millis(20));
    }
}

/// CPU time (user + system, in clock ticks) the process has used so far.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    let after_name = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    // Fields 14 and 15 of stat (utime, stime) are at 11 and 12 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn running_out_of_descriptors_neither_kills_nor_spins_the_loop() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!(
            "ulimit -n 48 && exec '{}' --bind 127.0.0.1 --port 0 --max-connections 1000 --db '{}'",
            env!("CARGO_BIN_EXE_messageu-server"),
            TestStore::in_dir(dir.path(), "server.db").db_arg()
        ))
        .current_dir(dir.path())
        .env("RUST_LOG", "info");
    let server = launch(command).listening();
    let (pid, addr) = (server.child.id(), server.addr);

    let mut first = Client::connect(addr);
    let me = first.register(EDITION, "owner");
    // Far more connections than descriptors: the surplus waits in the backlog.
    let flood: Vec<TcpStream> = (0..80)
        .filter_map(|_| TcpStream::connect(addr).ok())
        .collect();
    thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(pid);
    thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(pid) - before;
    assert!(
        used < 40,
        "the loop spun on EMFILE: {used} ticks of CPU in one second"
    );
    assert_eq!(
        first.call(me, list_code(), &[]).code,
        2101,
        "open connections keep serving"
    );
    drop(flood);
    // Once descriptors are free again, new connections are served.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut client = Client::connect(addr);
        client
            .stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        client.send_raw(&request_bytes(me, list_code(), 0, &[]));
        let mut header = [0; 7];
        if client.stream.read_exact(&mut header).is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "server never recovered from EMFILE"
        );
    }
    let log = server.log_text();
    assert!(log.contains("accept failed"), "EMFILE is logged: {log}");
}

#[test]
fn a_client_that_pipelines_without_reading_gets_every_reply_in_order() {
    let server = TestServer::start();
    let mut client = server.connect();
    let names: Vec<String> = (0..300).map(|n| format!("client number {n}")).collect();
    let ids: Vec<ClientId> = names
        .iter()
        .map(|name| client.register(EDITION, name))
        .collect();
    // 200 list replies of 299 entries each: about 16 MiB, far past the output high-water mark.
    let requests = 200;
    let writer = {
        let mut stream = client.stream.try_clone().unwrap();
        let bytes: Vec<u8> = (0..requests)
            .flat_map(|n| request_bytes(ids[n % ids.len()], list_code(), 0, &[]))
            .collect();
        thread::spawn(move || std::io::Write::write_all(&mut stream, &bytes).unwrap())
    };
    // Let the server fill its buffers and stall before anything is read.
    thread::sleep(Duration::from_millis(500));
    for n in 0..requests {
        let reply = client.read_reply();
        assert_eq!(reply.code, 2101);
        assert_eq!(reply.payload.len(), 299 * 271, "reply {n}");
        let caller = ids[n % ids.len()];
        assert!(
            reply
                .payload
                .chunks(271)
                .all(|entry| entry[..16] != caller.0),
            "caller excluded"
        );
    }
    writer.join().unwrap();
}

#[test]
fn clients_pipelining_floods_of_requests_do_not_stall_the_others() {
    let server = TestServer::start();
    let mut polite = server.connect();
    let me = polite.register(EDITION, "polite");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Each flooder pipelines thousands of pulls for an unknown id and drains the 9000 replies.
    let flooders: Vec<_> = (0..16)
        .map(|_| {
            let mut client = server.connect();
            let stop = std::sync::Arc::clone(&stop);
            let pull = EDITION.request_code(Operation::PullMessages);
            let burst: Vec<u8> = (0..5_000)
                .flat_map(|_| request_bytes(ClientId([0xEE; 16]), pull, 0, &[]))
                .collect();
            thread::spawn(move || {
                let mut reader = client.stream.try_clone().unwrap();
                let drain = thread::spawn(move || {
                    let mut sink = [0; 64 << 10];
                    while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
                });
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    client.send_raw(&burst);
                }
                // Hang up rather than wait for the server to answer everything still queued.
                let _ = client.stream.shutdown(std::net::Shutdown::Both);
                drain.join().unwrap();
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(200));
    let mut round_trips: Vec<Duration> = (0..40)
        .map(|_| {
            let start = Instant::now();
            assert_eq!(polite.call(me, list_code(), &[]).code, 2101);
            start.elapsed()
        })
        .collect();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for flooder in flooders {
        flooder.join().unwrap();
    }
    round_trips.sort();
    let median = round_trips[round_trips.len() / 2];
    assert!(
        median < Duration::from_millis(50),
        "median round trip {median:?} under a flood"
    );
}
