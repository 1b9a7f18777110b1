//! The real `messageu-server` binary: stopping it (q, end of input, signals), the port files,
//! start-up failures, and the command line help.

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use messageu::protocol::{ClientId, Edition};

const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `messageu-server` in `dir` with exactly `args` (unlike [`BinaryServer::start`], no
/// `--port 0`), until it either logs its listening address or exits.
fn launch_in(dir: &Path, args: &[&str]) -> Launch {
    launch(server_command(dir, args))
}

fn assert_no_panic(log: &str) {
    assert!(!log.contains("panicked"), "the server panicked: {log}");
}

/// Asserts a start-up failure: non-zero exit and one clear `messageu-server: ...` line.
fn assert_startup_failure(launch: Launch, expected: &str) {
    let (status, _, stderr) = launch.exited();
    assert_no_panic(&stderr);
    assert!(!status.success(), "exit status {status}; log: {stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains(expected))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "not one error line with {expected:?}: {stderr}"
    );
    assert!(
        lines[0].starts_with("messageu-server: "),
        "error line {:?}",
        lines[0]
    );
}

fn start_on_db(dir: &Path) -> BinaryServer {
    BinaryServer::start(dir, &["--db", "server.db"])
}

/// Proves the server still answers: registers a fresh client and returns its id.
fn assert_serves(server: &BinaryServer, name: &str) -> ClientId {
    Client::connect(server.addr).register(Edition::Y2024, name)
}

fn write_stdin(server: &mut BinaryServer, text: &str) {
    let stdin = server.stdin.as_mut().expect("stdin is open");
    stdin.write_all(text.as_bytes()).expect("write to stdin");
    stdin.flush().expect("flush stdin");
}

fn signal(server: &BinaryServer, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), server.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} failed");
}

fn assert_clean_exit(server: &mut BinaryServer) {
    let status = server.wait_exit(EXIT_TIMEOUT);
    let log = server.log_text();
    assert_eq!(status.code(), Some(0), "exit status {status}; log: {log}");
    assert_no_panic(&log);
    assert!(log.contains("stopped"), "no final log line: {log}");
}

/// Waits a little and asserts the server is still running.
fn assert_keeps_running(server: &mut BinaryServer) {
    thread::sleep(Duration::from_millis(300));
    assert!(server.is_running(), "server stopped: {}", server.log_text());
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().unwrap().port()
}

#[test]
fn q_and_enter_stops_the_server_and_other_lines_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_on_db(dir.path());
    write_stdin(&mut server, "hello\nquit\nqq\n\nstop\n");
    assert_keeps_running(&mut server);
    assert_serves(&server, "still here");
    write_stdin(&mut server, "q\n");
    assert_clean_exit(&mut server);
}

#[test]
fn words_other_than_q_are_answered_with_how_to_stop() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_on_db(dir.path());
    write_stdin(&mut server, "quit\nQ\n");
    let deadline = Instant::now() + EXIT_TIMEOUT;
    let hints = |server: &BinaryServer| {
        let log = server.log_text();
        ["\"quit\" ignored: type q", "\"Q\" ignored: type q"].map(|hint| log.contains(hint))
    };
    while hints(&server) != [true, true] {
        assert!(Instant::now() < deadline, "no hint: {}", server.log_text());
        thread::sleep(Duration::from_millis(20));
    }
    assert!(server.is_running(), "stopped: {}", server.log_text());
    write_stdin(&mut server, "q\n");
    assert_clean_exit(&mut server);
}

#[test]
fn end_of_standard_input_does_not_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_on_db(dir.path());
    drop(server.stdin.take());
    assert_keeps_running(&mut server);
    let alice = assert_serves(&server, "alice");
    let mut client = Client::connect(server.addr);
    client.send(Edition::Y2021, alice, alice, 3, b"note to self");
    assert_eq!(client.pull(Edition::Y2021, alice).len(), 1);
    signal(&server, "TERM");
    assert_clean_exit(&mut server);
}

/// Sends a message, stops the server with `name`, restarts it and pulls the message.
fn signal_stops_gracefully_and_keeps_messages(name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_on_db(dir.path());
    let mut client = Client::connect(server.addr);
    let from = client.register(Edition::Y2022, "sender");
    let to = client.register(Edition::Y2022, "receiver");
    let id = client.send(Edition::Y2022, from, to, 3, name.as_bytes());
    signal(&server, name);
    assert_clean_exit(&mut server);

    let restarted = start_on_db(dir.path());
    let pulled = Client::connect(restarted.addr).pull(Edition::Y2026, to);
    let expected = Pulled {
        from,
        id,
        kind: 3,
        content: name.as_bytes().to_vec(),
    };
    assert_eq!(pulled, vec![expected]);
}

#[test]
fn sigterm_stops_the_server_gracefully() {
    signal_stops_gracefully_and_keeps_messages("TERM");
}

#[test]
fn sigint_stops_the_server_gracefully() {
    signal_stops_gracefully_and_keeps_messages("INT");
}

/// Starts the server without `--port` in a directory holding `file` with `port`.
fn listens_on_the_port_in(file: &str) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(dir.path().join(file), format!("{port}\n")).unwrap();
    let server = launch_in(dir.path(), &["--bind", "127.0.0.1", "--db", "server.db"]).listening();
    assert_eq!(server.addr.port(), port, "log: {}", server.log_text());
    assert_serves(&server, "port file user");
}

#[test]
fn the_port_comes_from_myport_info() {
    listens_on_the_port_in("myport.info");
}

#[test]
fn the_port_comes_from_port_info_when_myport_info_is_absent() {
    listens_on_the_port_in("port.info");
}

#[test]
fn an_invalid_port_file_falls_back_to_1357_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("myport.info"), "not a port\n").unwrap();
    std::fs::write(dir.path().join("port.info"), "99999\n").unwrap();
    let log = match launch_in(dir.path(), &["--bind", "127.0.0.1", "--db", "server.db"]) {
        Launch::Listening(server) => {
            assert_eq!(server.addr.port(), 1357, "log: {}", server.log_text());
            server.log_text()
        }
        // Port 1357 is busy on this machine: the server must say so and exit.
        Launch::Exited { status, stderr, .. } => {
            assert!(!status.success(), "log: {stderr}");
            assert!(
                stderr.contains("cannot listen on 127.0.0.1:1357"),
                "log: {stderr}"
            );
            stderr
        }
    };
    assert_no_panic(&log);
    for file in ["myport.info", "port.info"] {
        assert!(
            log.contains(&format!("{file} holds no valid port")),
            "log: {log}"
        );
    }
    assert!(log.contains("using the default port 1357"), "log: {log}");
}

#[test]
fn an_invalid_myport_info_falls_back_to_port_info_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(dir.path().join("myport.info"), "not a port\n").unwrap();
    std::fs::write(dir.path().join("port.info"), format!("{port}\n")).unwrap();
    let server = launch_in(dir.path(), &["--bind", "127.0.0.1", "--db", "server.db"]).listening();
    assert_eq!(server.addr.port(), port, "log: {}", server.log_text());
    assert!(
        server
            .log_text()
            .contains("myport.info holds no valid port"),
        "log: {}",
        server.log_text()
    );
    assert_serves(&server, "port.info user");
}

#[test]
fn a_port_in_use_fails_start_up_without_creating_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    let port = taken.local_addr().unwrap().port().to_string();
    let args = ["--bind", "127.0.0.1", "--port", &port, "--db", "fresh.db"];
    assert_startup_failure(launch_in(dir.path(), &args), "cannot listen on 127.0.0.1:");
    for leftover in ["fresh.db", "fresh.db.spool", "fresh.db-wal"] {
        assert!(
            !dir.path().join(leftover).exists(),
            "{leftover} was created"
        );
    }
}

#[test]
fn bind_accepts_a_host_name() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--bind", "localhost", "--port", "0", "--db", "server.db"];
    let server = launch_in(dir.path(), &args).listening();
    assert!(server.addr.ip().is_loopback(), "log: {}", server.log_text());
    assert_serves(&server, "localhost user");
}

#[test]
fn an_unknown_bind_host_fails_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--bind",
        "no-such-host.invalid",
        "--port",
        "0",
        "--db",
        "server.db",
    ];
    assert_startup_failure(
        launch_in(dir.path(), &args),
        "cannot resolve --bind no-such-host.invalid (",
    );
    assert!(!dir.path().join("server.db").exists());
}

#[test]
fn a_database_that_cannot_be_opened_fails_start_up() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("a directory")).unwrap();
    std::fs::write(dir.path().join("a file"), "").unwrap();
    let cases = [
        (
            "no such directory/server.db",
            "folder no such directory does not exist",
        ),
        ("a directory", "a directory is a folder"),
        ("a file/server.db", "a file is not a folder"),
    ];
    for (db, cause) in cases {
        let args = ["--bind", "127.0.0.1", "--port", "0", "--db", db];
        let expected = format!("cannot open the database {db} ({cause})");
        assert_startup_failure(launch_in(dir.path(), &args), &expected);
    }
}

/// Runs the server with `--db <folder>/server.db` where `folder` is mounted read-only by
/// `mount` (a shell command on "$1") in a mount namespace of its own; `None` where this
/// machine allows no such namespace.
fn launch_on_read_only(dir: &Path, folder: &str, mount: &str) -> Option<Launch> {
    let usable = Command::new("unshare")
        .args(["-rm", "true"])
        .status()
        .is_ok_and(|status| status.success());
    if !usable {
        println!("note: skipped, unshare cannot create a mount namespace here");
        return None;
    }
    let mut command = Command::new("unshare");
    command
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .args(["-rm", "sh", "-c"])
        .arg(format!(
            "{mount} && exec \"$2\" --bind 127.0.0.1 --port 0 --db \"$1/server.db\""
        ))
        .args(["sh", folder, env!("CARGO_BIN_EXE_messageu-server")]);
    Some(launch(command))
}

#[test]
fn a_read_only_file_system_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    let mount_tmpfs = "mount -t tmpfs -o ro tmpfs \"$1\"";
    let Some(launch) = launch_on_read_only(dir.path(), "empty", mount_tmpfs) else {
        return;
    };
    assert_startup_failure(
        launch,
        "cannot open the database empty/server.db (cannot create files in folder empty: \
         read-only file system)",
    );

    // A database that exists, on a file system remounted read-only.
    drop(start_on_db(&dir.path().join("empty")));
    let mount_bind = "mount --bind \"$1\" \"$1\" && mount -o remount,bind,ro \"$1\"";
    let launch = launch_on_read_only(dir.path(), "empty", mount_bind).expect("unshare works");
    assert_startup_failure(
        launch,
        "cannot open the database empty/server.db (cannot write empty/server.db: \
         read-only file system)",
    );
}

/// Whether this process runs as root, whom permission bits do not stop.
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

#[test]
fn permission_denied_is_named() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mode = |path: &Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    mode(dir.path(), 0o755);
    let locked = dir.path().join("locked");
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    drop(start_on_db(&open));
    std::fs::create_dir(&locked).unwrap();
    mode(&locked, 0o555);
    mode(&open, 0o777);
    mode(&open.join("server.db"), 0o444);
    // Root passes permission bits: the server then runs as nobody.
    let unprivileged = |args: &[&str]| {
        let mut command = if is_root() {
            let mut command = Command::new("setpriv");
            command
                .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(env!("CARGO_BIN_EXE_messageu-server"));
            command
        } else {
            Command::new(env!("CARGO_BIN_EXE_messageu-server"))
        };
        command
            .current_dir(dir.path())
            .env("RUST_LOG", "info")
            .args(args);
        command
    };
    let runs = unprivileged(&["--version"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !runs {
        println!("note: skipped, the server cannot run as nobody here (setpriv, folder modes)");
        return;
    }
    let cases = [
        (
            "locked/server.db",
            "cannot create files in folder locked: permission denied",
        ),
        (
            "open/server.db",
            "cannot write open/server.db: permission denied",
        ),
    ];
    for (db, cause) in cases {
        let args = ["--bind", "127.0.0.1", "--port", "0", "--db", db];
        let expected = format!("cannot open the database {db} ({cause})");
        assert_startup_failure(launch(unprivileged(&args)), &expected);
    }
}

#[test]
fn a_minimum_free_space_larger_than_the_disk_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let too_much = u64::MAX.to_string();
    let args = [
        "--bind",
        "127.0.0.1",
        "--port",
        "0",
        "--db",
        "server.db",
        "--min-free-space",
        &too_much,
    ];
    assert_startup_failure(
        launch_in(dir.path(), &args),
        &format!("(the minimum free space (--min-free-space) of {too_much} bytes exceeds"),
    );
    assert!(!dir.path().join("server.db").exists());
}

#[test]
fn a_minimum_free_space_above_the_free_space_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let total = fs4::total_space(dir.path()).unwrap();
    let available = fs4::available_space(dir.path()).unwrap();
    if total - available < 1 << 20 {
        println!("note: skipped, the file system is nearly empty");
        return;
    }
    let between = (available + (total - available) / 2).to_string();
    let server = BinaryServer::start(
        dir.path(),
        &["--db", "server.db", "--min-free-space", &between],
    );
    assert!(
        server
            .log_text()
            .contains("bytes free now: sends are refused"),
        "log: {}",
        server.log_text()
    );
}

#[test]
fn an_incompatible_database_fails_start_up_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("foreign.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "CREATE TABLE clients (ID BLOB PRIMARY KEY, UserName TEXT, LastSeen TEXT);
             INSERT INTO clients VALUES (x'01', 'alice', NULL);",
        )
        .unwrap();
    let before = std::fs::read(&db).unwrap();
    let args = ["--bind", "127.0.0.1", "--port", "0", "--db", "foreign.db"];
    assert_startup_failure(
        launch_in(dir.path(), &args),
        "cannot open the database foreign.db (its schema does not fit this server: \
         table clients has no column PublicKey)",
    );
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "the database was changed"
    );
    let mut left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(left, ["foreign.db"], "files besides the database");
}

#[test]
fn a_database_in_use_by_another_server_fails_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let first = start_on_db(dir.path());
    let started = Instant::now();
    let args = ["--bind", "127.0.0.1", "--port", "0", "--db", "server.db"];
    assert_startup_failure(launch_in(dir.path(), &args), "cannot open the database");
    assert!(started.elapsed() < EXIT_TIMEOUT);
    assert_serves(&first, "first server still works");
}

#[test]
fn an_invalid_command_line_fails_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for (args, expected) in [
        (
            &["--port", "http"][..],
            "invalid value 'http' for '--port <PORT>'",
        ),
        (
            &["--no-such-option"][..],
            "unexpected argument '--no-such-option'",
        ),
    ] {
        let (status, _, stderr) = launch_in(dir.path(), args).exited();
        assert_eq!(status.code(), Some(2), "log: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "log: {stderr}");
        assert!(
            stderr.starts_with("messageu-server: invalid command line (")
                && stderr.contains(expected),
            "log: {stderr}"
        );
    }
}

#[test]
fn help_mentions_every_option() {
    let dir = tempfile::tempdir().unwrap();
    let (status, stdout, stderr) = launch_in(dir.path(), &["--help"]).exited();
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    let options = [
        "--port",
        "--bind",
        "--db",
        "--durability",
        "--max-payload",
        "--max-connections",
    ];
    for option in options {
        assert!(stdout.contains(option), "--help lacks {option}: {stdout}");
    }
}

/// The client and the bench check their own `--version` in their packages' tests.
#[test]
fn the_server_names_itself_in_version_and_values_say_their_unit() {
    assert_names_itself(
        "messageu-server",
        Path::new(env!("CARGO_BIN_EXE_messageu-server")),
    );
    let help = Command::new(env!("CARGO_BIN_EXE_messageu-server"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for option in [
        "--max-payload <BYTES>",
        "--request-timeout <SECONDS>",
        "--idle-timeout <SECONDS>",
        "--bind <HOST>",
    ] {
        assert!(help.contains(option), "--help lacks {option}: {help}");
    }
}
