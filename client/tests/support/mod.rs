//! Helpers shared by the client's end-to-end tests: users with their own folders running the
//! real binary, bounded in time, and clients left running (watch, chat) whose output is read
//! as it comes. Each test binary declares `mod common` (the server's helpers) beside this.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::common::TestServer;
use tempfile::TempDir;

/// The captured C++ session, at the workspace root: the server's tests read it too.
pub const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/vectors");

/// Every client run is killed, and the test failed, after this long.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(60);

/// Runs `command` with `input` on its standard input; kills it if it outlives the deadline.
pub fn run_bounded(mut command: Command, input: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn messageu-client");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_owned();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let mut stdout = child.stdout.take().expect("stdout");
    let out = thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout.read_to_end(&mut bytes);
        bytes
    });
    let mut stderr = child.stderr.take().expect("stderr");
    let err = thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr.read_to_end(&mut bytes);
        bytes
    });
    let deadline = Instant::now() + CLIENT_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("messageu-client did not finish within {CLIENT_DEADLINE:?}");
        }
        thread::sleep(Duration::from_millis(5));
    };
    writer.join().expect("stdin writer");
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// One user: a folder with `server.info`, and the options every run gets.
pub struct User {
    pub dir: TempDir,
    pub options: Vec<String>,
}

impl User {
    pub fn new(server: SocketAddr, edition: &str, mode: &[&str]) -> User {
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::write(dir.path().join("server.info"), format!("{server}\n")).expect("server.info");
        let mut options = vec!["--edition".to_owned(), edition.to_owned()];
        options.extend(mode.iter().map(|option| option.to_string()));
        User { dir, options }
    }

    /// The client with this user's folder and options, then `args`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_messageu-client"));
        command
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.options)
            .args(args);
        command
    }

    pub fn run(&self, args: &[&str], input: &str) -> Output {
        let output = run_bounded(self.command(args), input);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
        output
    }

    /// Makes this user the owner of a `me.info` from the test vectors (made by a C++ or the
    /// Python client).
    pub fn use_me_info_of(&self, who: &str) {
        let vectors = Path::new(VECTORS);
        std::fs::copy(
            vectors.join(format!("{who}.me.info")),
            self.dir.path().join("me.info"),
        )
        .expect("me.info copied");
    }

    /// Runs a subcommand that must succeed; returns its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args, "");
        assert!(
            output.status.success(),
            "{args:?} {:?} failed: {}",
            self.options,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("UTF-8 output")
    }

    /// Runs a subcommand that must fail; returns its one-line message.
    pub fn fails(&self, args: &[&str]) -> String {
        let output = self.run(args, "");
        assert!(!output.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8(output.stderr).expect("UTF-8 errors");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        stderr
    }

    /// Drives the interactive console with `input`; returns what it printed.
    pub fn console(&self, input: &str) -> String {
        let output = self.run(&[], input);
        assert!(output.status.success(), "console failed");
        String::from_utf8(output.stdout).expect("UTF-8 output")
    }
}

pub fn message(from: &str, content: &str) -> String {
    format!("From: {from}\nContent:\n{content}\n-----<EOM>-----\n")
}

/// alice and bob, registered, with alice's symmetric key sent to bob.
pub fn keyed_pair(server: &TestServer) -> (User, User) {
    let alice = User::new(server.addr, "2025", &[]);
    let bob = User::new(server.addr, "2025", &[]);
    alice.ok(&["register", "alice"]);
    bob.ok(&["register", "bob"]);
    alice.ok(&["get-key", "bob"]);
    alice.ok(&["send-key", "bob"]);
    (alice, bob)
}

/// A client left running (watch, chat), its output read line by line as it comes.
pub struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Every line printed so far.
    pub seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Running {
    pub fn start(user: &User, args: &[&str]) -> Running {
        let mut child = user
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn messageu-client");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut errors = child.stderr.take().expect("stderr");
        let collected = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut chunk = [0; 1024];
            while let Ok(read @ 1..) = errors.read(&mut chunk) {
                let text = String::from_utf8_lossy(&chunk[..read]).into_owned();
                collected.lock().expect("stderr").push_str(&text);
            }
        });
        Running {
            child,
            stdin,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// Waits for a printed line that `wanted` accepts (one printed already, or one to come)
    /// and returns it.
    pub fn line_where(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        if let Some(line) = self.seen.iter().find(|line| wanted(line)) {
            return line.clone();
        }
        loop {
            let line = self.next_line(what);
            if wanted(&line) {
                return line;
            }
        }
    }

    /// Waits until `count` lines have been printed; returns them all.
    pub fn lines(&mut self, count: usize) -> Vec<String> {
        while self.seen.len() < count {
            self.next_line(&format!("{count} lines"));
        }
        self.seen.clone()
    }

    /// The next line printed, also kept in `seen`.
    fn next_line(&mut self, what: &str) -> String {
        match self.lines.recv_timeout(CLIENT_DEADLINE) {
            Ok(line) => {
                self.seen.push(line.clone());
                line
            }
            Err(_) => panic!(
                "never printed {what}: {:?}, stderr {}",
                self.seen,
                self.stderr()
            ),
        }
    }

    /// Waits for a line holding `needle`.
    pub fn line_with(&mut self, needle: &str) -> String {
        self.line_where(needle, |line| line.contains(needle))
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }

    pub fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("input open");
        writeln!(stdin, "{line}").expect("the client reads");
    }

    /// Closes the input, then waits for the client to exit.
    pub fn finish(mut self) -> ExitStatus {
        self.stdin = None;
        let deadline = Instant::now() + CLIENT_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the client did not exit");
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `check` until it holds, for up to [`CLIENT_DEADLINE`].
pub fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + CLIENT_DEADLINE;
    while !check() {
        assert!(Instant::now() < deadline, "never: {what}");
        thread::sleep(Duration::from_millis(50));
    }
}
