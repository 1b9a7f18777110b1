//! The server generations of a crash campaign: each started on the same database, killed
//! with SIGKILL after a random delay, its log checked; the last one stopped cleanly, and a
//! final one started to check that nothing was left behind.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use super::content::SPOOL_THRESHOLD;
use super::{edition_of, Settings, Shared};
use crate::common::{
    launch, on_postgres, server_command, BinaryServer, Client, Launch, Rng, TestStore, IO_TIMEOUT,
};

pub const DATABASE: &str = "crash.db";
const SIGKILL: i32 = 9;
/// The servers' `--claim-lease` (PostgreSQL only).
pub const CLAIM_LEASE: Duration = Duration::from_secs(1);

pub fn start_server(dir: &Path, generation: usize, settings: &Settings) -> BinaryServer {
    let mut command = server_command(dir, &["--bind", "127.0.0.1", "--port", "0"]);
    let db = TestStore::in_dir(dir, DATABASE).db_arg();
    command.args(["--db", &db, "--durability", "full"]);
    command.args(["--spool-threshold", &SPOOL_THRESHOLD.to_string()]);
    // A killed generation's claims on PostgreSQL lapse after this (the next generation is
    // another server to them).
    command.args(["--claim-lease", &CLAIM_LEASE.as_secs_f64().to_string()]);
    match launch(command) {
        Launch::Listening(server) => server,
        Launch::Exited { status, stderr, .. } => panic!(
            "server generation {generation} did not start ({status}); {settings}; log:\n{stderr}"
        ),
    }
}

/// Fails on log lines that no kill explains: a panic, an error, a locked database.
fn assert_clean_log(server: &BinaryServer, generation: usize, settings: &Settings) {
    let log = server.log_text();
    let bad: Vec<&str> = log
        .lines()
        .filter(|line| {
            [" ERROR ", "panicked", "database is locked"]
                .iter()
                .any(|sign| line.contains(sign))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "server generation {generation} logged trouble; {settings}:\n{}",
        bad.join("\n")
    );
}

/// SIGKILLs a server that must still be running, reaps it, and checks its log.
fn kill_server(server: &mut BinaryServer, generation: usize, settings: &Settings) {
    if let Some(status) = server.child.try_wait().expect("try_wait") {
        panic!(
            "server generation {generation} died before its kill ({status}); {settings}; log:\n{}",
            server.log_text()
        );
    }
    server.child.kill().expect("send SIGKILL");
    let status = server.child.wait().expect("reap the killed server");
    assert_eq!(
        status.signal(),
        Some(SIGKILL),
        "server generation {generation} ended by {status}, not by the kill; {settings}"
    );
    assert_clean_log(server, generation, settings);
}

fn millis_below(rng: &mut Rng, bound: usize) -> Duration {
    Duration::from_millis(rng.below(bound) as u64)
}

/// How long a server generation runs before its kill: a quarter of the time very briefly
/// (start-up, clients reconnecting at once), otherwise long enough for hundreds of requests.
fn kill_delay(rng: &mut Rng) -> Duration {
    if rng.below(4) == 0 {
        millis_below(rng, 40)
    } else {
        Duration::from_millis(40) + millis_below(rng, 1000)
    }
}

/// Kills the running server `settings.kills` times, each after a random delay, restarting it
/// on the same database. Returns the last server and how long each generation ran.
pub fn kill_and_restart(
    mut server: BinaryServer,
    dir: &Path,
    shared: &Shared,
    settings: &Settings,
    deadline: Instant,
) -> (BinaryServer, Vec<Duration>) {
    let mut rng = Rng::new(settings.seed);
    let mut lifetimes = Vec::new();
    for generation in 0..settings.kills {
        assert!(
            Instant::now() < deadline,
            "deadline passed after {generation} kills; {settings}"
        );
        let lifetime = kill_delay(&mut rng);
        thread::sleep(lifetime);
        shared.withdraw();
        kill_server(&mut server, generation, settings);
        lifetimes.push(lifetime);
        server = start_server(dir, generation + 1, settings);
        shared.publish(generation + 1, server.addr);
    }
    (server, lifetimes)
}

/// Stops a server with `q` and Enter; it must exit 0 with a clean log.
pub fn stop_server(server: &mut BinaryServer, generation: usize, settings: &Settings) {
    let stdin = server.stdin.as_mut().expect("server stdin");
    stdin.write_all(b"q\n").expect("type q");
    let status = server.wait_exit(IO_TIMEOUT);
    assert!(
        status.success(),
        "server generation {generation} stopped with {status}; {settings}"
    );
    assert_clean_log(server, generation, settings);
}

/// After a clean stop every deletion is committed: a restarted server has nothing queued,
/// and no large content is left behind, neither of delivered messages nor of cut uploads.
pub fn assert_queues_empty_after_restart(
    dir: &Path,
    generation: usize,
    shared: &Shared,
    settings: &Settings,
) {
    // Uploads made durable whose messages a kill cut off are left for the start to remove.
    let store = TestStore::in_dir(dir, DATABASE);
    store.backdate_contents();
    let server = start_server(dir, generation, settings);
    // What the killed generations had claimed is held until their claims lapse.
    if on_postgres() {
        thread::sleep(CLAIM_LEASE);
    }
    let mut checker = Client::connect(server.addr);
    for (index, id) in shared.ids.iter().enumerate() {
        let back = checker.pull(edition_of(index), *id);
        assert!(
            back.is_empty(),
            "client {index}: {} messages came back after a clean stop; {settings}",
            back.len()
        );
    }
    let left = store.large_contents().len();
    assert_eq!(left, 0, "large contents left in {store:?}; {settings}");
}
