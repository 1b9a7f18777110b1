//! Shared helpers for the end-to-end tests: a server on an ephemeral loopback port with a
//! temporary database, and a minimal blocking client that speaks the wire format. The client's
//! and the bench's tests include this module by path (`#[path]`), so it names no binary of
//! the server package with `env!`.
#![allow(dead_code)] // each test binary uses a different subset

pub mod crash;
pub mod faulty_store;
pub mod http;
pub mod pg_pair;
pub mod postgres;
pub mod store;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use messageu::config::Database;
use messageu::protocol::{ClientId, Edition, Operation, ReplyHeader, RequestHeader};
use messageu::store::Store;
use messageu::{Config, Server, ShutdownHandle};
#[allow(unused_imports)] // each test binary uses a different subset
pub use store::{on_postgres, skip_on_postgres, TestStore};

/// Every blocking socket call in the tests gives up after this long.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

pub const EDITIONS: [Edition; 4] = Edition::ALL;

/// A server running in a thread of the test process.
pub struct TestServer {
    pub addr: SocketAddr,
    /// Where its metrics are served, if they are.
    pub metrics: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
    shutdown: ShutdownHandle,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::start_with(|_| {})
    }

    pub fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("temporary directory");
        TestServer::start_in(dir, adjust)
    }

    /// Starts a server on the database `server.db` in `dir` (kept, so a restart finds it),
    /// or with `MESSAGEU_TEST_STORE=postgres` on a PostgreSQL schema named after `dir`.
    pub fn start_in(dir: tempfile::TempDir, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = Config::loopback(test_database(dir.path()));
        adjust(&mut config);
        let server = Server::bind(config).expect("server starts");
        TestServer::run(dir, server)
    }

    /// Starts one of several servers sharing `database` (a PostgreSQL one): each a node of
    /// one service.
    pub fn start_node(database: &Database, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut config = Config::loopback(database.clone());
        adjust(&mut config);
        let server = Server::bind(config).expect("node starts");
        TestServer::run(dir, server)
    }

    /// Starts a server on the store `open` makes of the test's database (in a new temporary
    /// folder): one wrapped to inject faults.
    pub fn start_on(open: impl FnOnce(&Database) -> Box<dyn Store>) -> TestServer {
        TestServer::start_on_with(|_| {}, open)
    }

    /// [`start_on`](Self::start_on) with settings of its own.
    pub fn start_on_with(
        adjust: impl FnOnce(&mut Config),
        open: impl FnOnce(&Database) -> Box<dyn Store>,
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut config = Config::loopback(test_database(dir.path()));
        adjust(&mut config);
        let store = open(&config.database);
        let server = Server::bind_with_store(config, store).expect("server starts");
        TestServer::run(dir, server)
    }

    fn run(dir: tempfile::TempDir, server: Server) -> TestServer {
        let addr = server.local_addr();
        let metrics = server.metrics_addr();
        let shutdown = server.shutdown_handle();
        let thread = thread::spawn(move || server.run().expect("server runs and stops cleanly"));
        TestServer {
            addr,
            metrics,
            dir,
            shutdown,
            thread: Some(thread),
        }
    }

    /// Its store, to look at what it holds.
    pub fn store(&self) -> TestStore {
        TestStore::in_dir(self.dir.path(), "server.db")
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Stops the server and waits for it; returns the directory so it can be restarted.
    pub fn stop(mut self) -> tempfile::TempDir {
        self.halt();
        let dir = tempfile::tempdir().expect("temporary directory");
        std::mem::replace(&mut self.dir, dir)
    }

    fn halt(&mut self) {
        self.shutdown.shutdown();
        if let Some(thread) = self.thread.take() {
            let deadline = Instant::now() + IO_TIMEOUT;
            while !thread.is_finished() {
                assert!(Instant::now() < deadline, "server did not stop in time");
                thread::sleep(Duration::from_millis(10));
            }
            let result = thread.join();
            if !thread::panicking() {
                result.expect("server thread panicked");
            }
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The store end-to-end servers run on: the SQLite database `server.db` in `dir`, or with
/// `MESSAGEU_TEST_STORE=postgres` a schema of a throwaway cluster named after `dir`.
pub fn test_database(dir: &Path) -> Database {
    TestStore::in_dir(dir, "server.db").database()
}

/// A reply as read from the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub version: u8,
    pub code: u16,
    pub payload: Vec<u8>,
}

impl Reply {
    pub fn is_error(&self) -> bool {
        self.version == 2 && self.code == 9000 && self.payload.is_empty()
    }
}

pub fn request_bytes(caller: ClientId, code: u16, declared: u32, body: &[u8]) -> Vec<u8> {
    let header = RequestHeader {
        client_id: caller,
        version: 2,
        code,
        payload_size: declared,
    };
    let mut bytes = header.encode().to_vec();
    bytes.extend_from_slice(body);
    bytes
}

pub fn register_body(name: &str, key: &[u8; 160]) -> Vec<u8> {
    let mut body = name.as_bytes().to_vec();
    body.resize(255, 0);
    body.extend_from_slice(key);
    body
}

pub fn send_body(to: ClientId, kind: u8, content: &[u8]) -> Vec<u8> {
    let mut body = to.0.to_vec();
    body.push(kind);
    body.extend_from_slice(&(content.len() as u32).to_le_bytes());
    body.extend_from_slice(content);
    body
}

/// A key that looks like the 160-byte DER public keys real clients send, distinct per seed.
pub fn test_key(seed: u8) -> [u8; 160] {
    let mut key = [seed; 160];
    key[..3].copy_from_slice(&[0x30, 0x81, 0x9d]);
    key[157..].copy_from_slice(&[0x02, 0x01, 0x11]);
    key
}

/// One message of a pull reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    pub from: ClientId,
    pub id: u32,
    pub kind: u8,
    pub content: Vec<u8>,
}

pub fn parse_pull(payload: &[u8]) -> Vec<Pulled> {
    let mut messages = Vec::new();
    let mut rest = payload;
    while !rest.is_empty() {
        assert!(rest.len() >= 25, "truncated message header in pull reply");
        let size = u32::from_le_bytes(rest[21..25].try_into().unwrap()) as usize;
        messages.push(Pulled {
            from: ClientId::from_slice(&rest[..16]).unwrap(),
            id: u32::from_le_bytes(rest[16..20].try_into().unwrap()),
            kind: rest[20],
            content: rest[25..25 + size].to_vec(),
        });
        rest = &rest[25 + size..];
    }
    messages
}

/// True when the server closes `stream` within five seconds without sending anything.
pub fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    match stream.read(&mut [0; 1]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => error.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// A blocking client on one persistent connection.
pub struct Client {
    pub stream: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::from_stream(TcpStream::connect(addr).expect("connect"))
    }

    /// A client on a connected stream, with the tests' timeouts.
    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client { stream }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write request");
    }

    pub fn read_reply(&mut self) -> Reply {
        let mut header = [0; 7];
        self.stream
            .read_exact(&mut header)
            .expect("read reply header");
        let header = ReplyHeader::parse(&header);
        let mut payload = vec![0; header.payload_size as usize];
        self.stream
            .read_exact(&mut payload)
            .expect("read reply payload");
        Reply {
            version: header.version,
            code: header.code,
            payload,
        }
    }

    /// Sends one request with its true payload size and reads the reply.
    pub fn call(&mut self, caller: ClientId, code: u16, body: &[u8]) -> Reply {
        self.call_declared(caller, code, body.len() as u32, body)
    }

    pub fn call_declared(
        &mut self,
        caller: ClientId,
        code: u16,
        declared: u32,
        body: &[u8],
    ) -> Reply {
        self.send_raw(&request_bytes(caller, code, declared, body));
        self.read_reply()
    }

    pub fn register(&mut self, edition: Edition, name: &str) -> ClientId {
        let reply = self.call(
            ClientId::default(),
            edition.request_code(Operation::Register),
            &register_body(name, &test_key(name.len() as u8)),
        );
        assert_eq!(
            reply.code,
            edition.reply_code(Operation::Register),
            "register {name}"
        );
        ClientId::from_slice(&reply.payload).expect("16-byte client id")
    }

    /// Sends a message and returns its id.
    pub fn send(
        &mut self,
        edition: Edition,
        from: ClientId,
        to: ClientId,
        kind: u8,
        content: &[u8],
    ) -> u32 {
        let reply = self.call(
            from,
            edition.request_code(Operation::SendMessage),
            &send_body(to, kind, content),
        );
        assert_eq!(
            reply.code,
            edition.reply_code(Operation::SendMessage),
            "send"
        );
        assert_eq!(&reply.payload[..16], &to.0);
        u32::from_le_bytes(reply.payload[16..20].try_into().unwrap())
    }

    pub fn pull(&mut self, edition: Edition, caller: ClientId) -> Vec<Pulled> {
        let reply = self.call(caller, edition.request_code(Operation::PullMessages), &[]);
        assert_eq!(
            reply.code,
            edition.reply_code(Operation::PullMessages),
            "pull"
        );
        parse_pull(&reply.payload)
    }

    /// Asserts the server closes the connection (EOF) without sending anything more.
    pub fn expect_closed(&mut self) {
        let mut byte = [0; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => {}
            Ok(_) => panic!("expected the connection to be closed, got more bytes"),
            Err(error) => assert!(
                matches!(error.kind(), std::io::ErrorKind::ConnectionReset),
                "expected EOF, got {error}"
            ),
        }
    }

    pub fn finish_writing(&self) {
        self.stream
            .shutdown(Shutdown::Write)
            .expect("shutdown write");
    }
}

/// The server binary, started as a user would.
pub struct BinaryServer {
    pub child: Child,
    pub addr: SocketAddr,
    pub stdin: Option<ChildStdin>,
    pub log: Arc<Mutex<Vec<String>>>,
}

/// How a server process started by [`launch`] turned out.
pub enum Launch {
    Listening(BinaryServer),
    Exited {
        status: ExitStatus,
        stdout: String,
        stderr: String,
    },
}

impl Launch {
    pub fn listening(self) -> BinaryServer {
        match self {
            Launch::Listening(server) => server,
            Launch::Exited { status, stderr, .. } => {
                panic!("server exited ({status}) instead of listening: {stderr}")
            }
        }
    }

    /// The exit status, standard output and standard error of a process that did not listen.
    pub fn exited(self) -> (ExitStatus, String, String) {
        match self {
            Launch::Exited {
                status,
                stdout,
                stderr,
            } => (status, stdout, stderr),
            Launch::Listening(server) => {
                panic!("server started instead of exiting: {}", server.log_text())
            }
        }
    }
}

/// The `messageu-server` binary. Cargo names it to the server's own tests; the client's and
/// the bench's tests, which include these helpers by path, find it beside their own
/// executable (`target/<profile>/deps/`), where the workspace's `cargo test` built it.
pub fn server_binary() -> PathBuf {
    if let Some(path) = option_env!("CARGO_BIN_EXE_messageu-server") {
        return PathBuf::from(path);
    }
    let test = std::env::current_exe().expect("the test executable's path");
    let profile_dir = test
        .parent()
        .and_then(Path::parent)
        .expect("the test executable is in target/<profile>/deps");
    let binary = profile_dir.join(format!("messageu-server{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.is_file(),
        "{} is not built: run the workspace's `cargo test`, or `cargo build --bin messageu-server` first",
        binary.display()
    );
    binary
}

/// Checks that `binary --version` prints `name` and the package version.
pub fn assert_names_itself(name: &str, binary: &Path) {
    let output = Command::new(binary).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        version.trim(),
        format!("{name} {}", env!("CARGO_PKG_VERSION"))
    );
}

/// A command running `messageu-server` in `dir` with `args`, logging at info.
pub fn server_command(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(server_binary());
    command.current_dir(dir).args(args).env("RUST_LOG", "info");
    command
}

/// Runs a server command until it either logs its listening address or exits.
pub fn launch(mut command: Command) -> Launch {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn messageu-server");
    let mut stdout_pipe = child.stdout.take().unwrap();
    let stdout = thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout_pipe.read_to_string(&mut text);
        text
    });
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (found, listening) = mpsc::channel();
    let lines = Arc::clone(&log);
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let addr = line
                .split("listening on ")
                .nth(1)
                .and_then(|rest| rest.split(',').next())
                .map(|addr| addr.parse::<SocketAddr>().expect("listening address"));
            lines.lock().unwrap().push(line);
            if let Some(addr) = addr {
                let _ = found.send(addr);
            }
        }
    });
    let stdin = child.stdin.take();
    let mut server = BinaryServer {
        child,
        addr: ([127, 0, 0, 1], 0).into(),
        stdin,
        log,
    };
    match listening.recv_timeout(IO_TIMEOUT) {
        Ok(addr) => {
            server.addr = addr;
            Launch::Listening(server)
        }
        // Standard error closed: the process is exiting.
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            let status = server.wait_exit(IO_TIMEOUT);
            let stdout = stdout.join().expect("stdout reader");
            Launch::Exited {
                status,
                stdout,
                stderr: server.log_text(),
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("server neither listened nor exited: {}", server.log_text())
        }
    }
}

impl BinaryServer {
    /// Starts `messageu-server` in `dir` on an ephemeral loopback port, with the extra arguments.
    pub fn start(dir: &Path, args: &[&str]) -> BinaryServer {
        let mut command = server_command(dir, &["--bind", "127.0.0.1", "--port", "0"]);
        command.args(args);
        launch(command).listening()
    }

    /// Waits for the process to exit on its own; kills it and fails after the timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("server did not exit; log: {:?}", self.log.lock().unwrap());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for BinaryServer {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A small seeded generator (xorshift64*), so that a test's random choices can be repeated
/// from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Scrambles the seed (splitmix64), so that neighbouring seeds give unrelated streams.
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    pub fn u32(&mut self) -> u32 {
        (self.next() >> 32) as u32
    }

    pub fn byte(&mut self) -> u8 {
        (self.next() >> 56) as u8
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}
