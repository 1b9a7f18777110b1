//! Target `connection`: the same inputs as `request_stream`, sent to a real server over
//! loopback TCP, so that the connection state machine, the handlers and the store all run.
//!
//! One server runs in the fuzzing process (restarted with a fresh database every
//! [`INPUTS_PER_SERVER`] inputs, so that list replies stay small). Each input opens a
//! connection, writes the stream in its chunks (TCP_NODELAY, optional pauses), half-closes,
//! and reads until the server closes. Every reply must be well-formed, answer the request the
//! stream framed at its position, and the server must close within [`HANG_TIMEOUT`].
//!
//! Two clients, alice and bob, are registered at each start. Their ids are random, so inputs
//! name them by markers, `[0xA1; 16]` and `[0xB0; 16]`, which are replaced before sending:
//! that lets inputs reach successful sends, uploads, key lookups and pulls.
//!
//! Options byte: bits 0–2 pick the pauses between chunks (see [`PAUSES`]).
//!
//! Run it with `-detect_leaks=0`: a restart starts the server thread inside an input, and
//! LeakSanitizer then intermittently reports the buffers that thread still uses (the read
//! buffer and the mio event list of `Server::run`) as leaked. Lasting growth shows instead in
//! the descriptor and thread check at each restart and in libFuzzer's RSS limit.

use std::fs;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::{Mutex, TryLockError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use messageu::protocol::client::{check_reply_code, parse_registered, register_request};
use messageu::protocol::padding::BLOCK_LEN;
use messageu::protocol::{
    ClientId, Code, Edition, Extension, Frame, MessageType, Operation, PublicKey, ReplyHeader,
    Request, ERROR_REPLY_CODE, PUBLIC_KEY_LEN, REPLY_HEADER_LEN, REQUEST_HEADER_LEN,
};
use messageu::{Config, Server, ShutdownHandle};

use crate::decoding::{Decoded, Decoding, Limits, Served};
use crate::input::StreamInput;
use crate::replies::{parse_reply_stream, ReplyStream};

/// Small limits, so that inputs of a few KiB reach oversized declarations and uploads.
pub const LIMITS: Limits = Limits {
    max_payload: 64 << 10,
    spool_threshold: 4 << 10,
};
pub const ALICE_MARKER: [u8; 16] = [0xA1; 16];
pub const BOB_MARKER: [u8; 16] = [0xB0; 16];
/// The server must have closed this long after the last byte was written.
pub const HANG_TIMEOUT: Duration = Duration::from_secs(2);
/// Options bits 0–2: (pause, how many chunks are followed by it). Mostly none, as pauses
/// cost fuzzing speed; the longer one outlasts the padding grace time, so that a partly
/// arrived block of padding is decided by the timer.
pub const PAUSES: [(Duration, usize); 8] = [
    (Duration::ZERO, 0),
    (Duration::ZERO, 0),
    (Duration::ZERO, 0),
    (Duration::ZERO, 0),
    (Duration::ZERO, 0),
    (Duration::ZERO, 0),
    (Duration::from_millis(1), 2),
    (Duration::from_millis(8), 1),
];
const PADDING_GRACE: Duration = Duration::from_millis(5);
const LINGER: Duration = Duration::from_millis(100);
/// Well within [`HANG_TIMEOUT`], though the input's half-close ends a wait before it.
const LONG_POLL_LIMIT: Duration = Duration::from_millis(100);
const INPUTS_PER_SERVER: u32 = 500;
/// Descriptors and threads a server may still hold for connections that are closing.
const RESOURCE_SLACK: usize = 16;
/// More reply bytes than any input of the fuzzing run can cause.
const MAX_RECEIVED: usize = 64 << 20;

static HARNESS: Mutex<Option<Harness>> = Mutex::new(None);

pub fn check(data: &[u8]) {
    let Some(input) = StreamInput::parse(data) else {
        return;
    };
    let mut harness = HARNESS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let server = Harness::next_input(&mut harness);
    let stream = server.name_clients(input.stream);
    let expected = Decoding::whole(&stream, LIMITS);
    let (pause, paused_chunks) = PAUSES[usize::from(input.options & 7)];
    let received = exchange(server.addr, &input.chunks(&stream), pause, paused_chunks)
        .unwrap_or_else(|error| panic!("{error}"));
    let replies = parse_reply_stream(&received, LIMITS.max_payload)
        .unwrap_or_else(|error| panic!("malformed reply stream: {error}"));
    check_answers(&expected, &stream, &replies, server);
}

/// Sends `chunks`, half-closes, and returns every byte received until the server closed.
fn exchange(
    addr: SocketAddr,
    chunks: &[&[u8]],
    pause: Duration,
    paused_chunks: usize,
) -> Result<Vec<u8>, String> {
    let socket = TcpStream::connect(addr).map_err(|error| format!("connect: {error}"))?;
    socket
        .set_nodelay(true)
        .and_then(|()| socket.set_write_timeout(Some(HANG_TIMEOUT)))
        .map_err(|error| format!("socket options: {error}"))?;
    let mut writer = socket
        .try_clone()
        .map_err(|error| format!("clone socket: {error}"))?;
    let (written, received) = thread::scope(|scope| {
        // Written from a second thread: a server that answers while it reads must never
        // wait on a client that is not reading.
        let written = scope.spawn(move || {
            for (index, chunk) in chunks.iter().enumerate() {
                match writer.write_all(chunk) {
                    Ok(()) => {}
                    // The server closed first (a fatal request, a padded client): fine.
                    Err(error) if closed_by_peer(&error) => return Ok(()),
                    Err(error) if timed_out(&error) => {
                        return Err(format!(
                            "hang: the server read nothing of chunk {index} for {HANG_TIMEOUT:?}"
                        ))
                    }
                    Err(error) => return Err(format!("write of chunk {index}: {error}")),
                }
                if index < paused_chunks {
                    thread::sleep(pause);
                }
            }
            match writer.shutdown(Shutdown::Write) {
                Err(error) if !closed_by_peer(&error) => Err(format!("half-close: {error}")),
                _ => Ok(()),
            }
        });
        let pauses = pause * paused_chunks.min(chunks.len()) as u32;
        let received = read_until_closed(&socket, Instant::now() + pauses + HANG_TIMEOUT);
        let written = written
            .join()
            .unwrap_or_else(|_| Err("the writer panicked".into()));
        (written, received)
    });
    written?;
    received
}

fn closed_by_peer(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::BrokenPipe | ErrorKind::ConnectionReset
    )
}

/// How a socket timeout shows: EAGAIN, which std reports as `WouldBlock`.
fn timed_out(error: &io::Error) -> bool {
    matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn read_until_closed(mut socket: &TcpStream, deadline: Instant) -> Result<Vec<u8>, String> {
    let mut received = Vec::new();
    let mut buffer = vec![0; 64 << 10];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "hang: the server did not close within {HANG_TIMEOUT:?} of the client's \
                 half-close; {} bytes received",
                received.len()
            ));
        }
        socket
            .set_read_timeout(Some(left))
            .map_err(|error| format!("read timeout: {error}"))?;
        match socket.read(&mut buffer) {
            Ok(0) => return Ok(received),
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(error) if closed_by_peer(&error) => return Ok(received),
            Err(error) if timed_out(&error) => {}
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => return Err(format!("read: {error}")),
        }
        if received.len() > MAX_RECEIVED {
            return Err(format!("more than {MAX_RECEIVED} reply bytes"));
        }
    }
}

/// The replies answer the requests the stream framed, one each and in order, until the
/// stream ends, a fatal request, or a request the server took for a padded client's.
fn check_answers(expected: &Decoded, stream: &[u8], replies: &ReplyStream, server: &Running) {
    let served = &expected.served;
    let answered = replies.replies.len();
    assert!(
        answered <= served.len(),
        "{answered} replies to {} requests",
        served.len()
    );
    assert_eq!(
        answered == 0,
        served.is_empty(),
        "{answered} replies to {} requests",
        served.len()
    );
    for (index, (reply, request)) in replies.replies.iter().zip(served).enumerate() {
        let answer = answer_to(request, stream, server);
        let acceptable = match answer {
            Answer::Error => reply.code == ERROR_REPLY_CODE,
            Answer::Success(code) => reply.code == code,
            Answer::Either(code) => reply.code == code || reply.code == ERROR_REPLY_CODE,
        };
        assert!(
            acceptable,
            "reply {index} has code {}, expected {answer:?} for {request:?}",
            reply.code
        );
    }
    if answered < served.len() || replies.padded {
        let last = &served[answered - 1];
        assert!(
            may_look_padded(last, stream),
            "the server stopped after reply {} (padded: {}) though request {last:?} is no \
             padded client's",
            answered - 1,
            replies.padded
        );
    }
}

/// Whether a padded client could have sent this request: not an extension request (§E0:
/// never padded), it begins on a block boundary, ends inside a block, and a zero follows
/// (protocol §4.3; the server may decide on any zeros seen before the grace time ends).
fn may_look_padded(request: &Served, stream: &[u8]) -> bool {
    let extension = matches!(
        request.frame,
        Frame::Request {
            code: Code::Extension(_),
            ..
        }
    );
    !extension
        && request.start.is_multiple_of(BLOCK_LEN)
        && !request.end.is_multiple_of(BLOCK_LEN)
        && stream.get(request.end as usize) == Some(&0)
}

/// The reply code a request must get.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Error,
    Success(u16),
    /// Success or 9000, depending on state the harness does not track (names taken, ids the
    /// input made up).
    Either(u16),
}

fn answer_to(request: &Served, stream: &[u8], server: &Running) -> Answer {
    let (header, code, body) = match request.frame {
        Frame::Request {
            header,
            code,
            body_len,
        } => {
            let body_start = request.start as usize + REQUEST_HEADER_LEN;
            (header, code, &stream[body_start..body_start + body_len])
        }
        Frame::Upload { header, code, head } => {
            let known = server.is_client(header.client_id) && server.is_client(head.to);
            return match MessageType::try_from(head.kind) {
                Ok(_) if known => Answer::Success(code.reply_code()),
                Ok(_) => Answer::Either(code.reply_code()),
                Err(_) => Answer::Error,
            };
        }
        Frame::Rejected { .. } | Frame::Fatal { .. } => return Answer::Error,
    };
    let code = match code {
        Code::Classic(code) => code,
        // No input can answer a challenge (it would need the key's private half), so none
        // authenticates, and none can protect or delete an account, subscribe or acknowledge.
        Code::Extension(Extension::Hello) => return Answer::Success(Extension::Hello.reply_code()),
        Code::Extension(
            extension @ (Extension::Challenge
            | Extension::ListAccounts
            | Extension::QueueStatus
            | Extension::Unsend),
        ) => return Answer::Either(extension.reply_code()),
        Code::Extension(
            Extension::Prove
            | Extension::Protect
            | Extension::DeleteAccount
            | Extension::Subscribe
            | Extension::Acknowledge,
        ) => return Answer::Error,
        // The half-close after the input ends a parked wait at once.
        Code::Extension(Extension::LongPoll) => {
            let reply = Extension::LongPoll.reply_code();
            return if server.is_client(header.client_id) {
                Answer::Success(reply)
            } else {
                Answer::Either(reply)
            };
        }
    };
    let Ok(parsed) = Request::parse(code, body) else {
        return Answer::Error;
    };
    let caller_known = server.is_client(header.client_id);
    let certain = match parsed {
        Request::Register(_) => false,
        Request::ListClients(_) | Request::PullMessages(_) => caller_known,
        Request::PublicKey(key) => caller_known && server.is_client(key.target),
        Request::SendMessage(send) => caller_known && server.is_client(send.to),
    };
    if certain {
        Answer::Success(code.reply_code())
    } else {
        Answer::Either(code.reply_code())
    }
}

/// The server of the fuzzing process and what is checked across inputs.
struct Harness {
    server: Running,
    inputs: u32,
    /// Descriptors and threads of the process with a server started and idle.
    baseline: Resources,
}

impl Harness {
    /// The running server, started or restarted as needed.
    fn next_input(slot: &mut Option<Harness>) -> &Running {
        let harness = slot.get_or_insert_with(Harness::start);
        if harness.inputs == INPUTS_PER_SERVER {
            harness.check_resources();
            harness.server.stop();
            harness.server = Running::start();
            harness.inputs = 0;
        }
        harness.inputs += 1;
        &harness.server
    }

    fn start() -> Harness {
        // libFuzzer's main, not Rust's, runs this process: SIGPIPE is not ignored, so the
        // server writing to a connection the client reset would kill it.
        // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        // SAFETY: registers a function without arguments; being `extern "C"`, it aborts
        // rather than unwinds into C if it panics.
        unsafe { libc::atexit(stop_at_exit) };
        let server = Running::start();
        Harness {
            server,
            inputs: 0,
            baseline: Resources::now(),
        }
    }

    /// Connections the client has closed must not keep descriptors or threads.
    fn check_resources(&self) {
        let now = Resources::now();
        assert!(
            now.descriptors <= self.baseline.descriptors + RESOURCE_SLACK
                && now.threads <= self.baseline.threads + RESOURCE_SLACK,
            "after {} inputs the process holds {now:?}, {:?} when the server started",
            self.inputs,
            self.baseline
        );
    }
}

/// Stops the server when libFuzzer exits, so that its temporary directory is removed.
extern "C" fn stop_at_exit() {
    // Never wait: the exit may come from another thread while an input is running. A failed
    // check (under `cargo test`) poisons the lock and leaves the server to stop all the same.
    let mut harness = match HARNESS.try_lock() {
        Ok(harness) => harness,
        Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        Err(TryLockError::WouldBlock) => return,
    };
    if let Some(mut harness) = harness.take() {
        harness.server.stop();
    }
}

#[derive(Debug, Clone, Copy)]
struct Resources {
    descriptors: usize,
    threads: usize,
}

impl Resources {
    fn now() -> Resources {
        let count = |dir: &str| fs::read_dir(dir).map_or(0, |entries| entries.count());
        Resources {
            descriptors: count("/proc/self/fd"),
            threads: count("/proc/self/task"),
        }
    }
}

/// A server in a thread of this process, with alice and bob registered.
struct Running {
    addr: SocketAddr,
    shutdown: ShutdownHandle,
    thread: Option<JoinHandle<()>>,
    alice: ClientId,
    bob: ClientId,
    _dir: tempfile::TempDir,
}

impl Running {
    fn start() -> Running {
        // The database on tmpfs when there is one: fsyncs are then free.
        let parent = Path::new("/dev/shm");
        let dir = if parent.is_dir() {
            tempfile::Builder::new()
                .prefix("messageu-fuzz")
                .tempdir_in(parent)
        } else {
            tempfile::Builder::new().prefix("messageu-fuzz").tempdir()
        }
        .expect("a temporary directory for the database");
        let mut config = Config::loopback(dir.path().join("fuzz.db"));
        config.max_payload = LIMITS.max_payload;
        config.spool_threshold = LIMITS.spool_threshold;
        config.padding_grace = PADDING_GRACE;
        config.linger = LINGER;
        config.long_poll_limit = LONG_POLL_LIMIT;
        let server = Server::bind(config).expect("the server starts");
        let addr = server.local_addr();
        let shutdown = server.shutdown_handle();
        let thread = thread::spawn(move || server.run().expect("the server stops cleanly"));
        Running {
            addr,
            shutdown,
            thread: Some(thread),
            alice: register(addr, "fuzz alice"),
            bob: register(addr, "fuzz bob"),
            _dir: dir,
        }
    }

    fn stop(&mut self) {
        self.shutdown.shutdown();
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the server thread ends");
        }
    }

    fn is_client(&self, id: ClientId) -> bool {
        id == self.alice || id == self.bob
    }

    /// The stream with the client markers replaced by alice's and bob's ids.
    fn name_clients(&self, stream: &[u8]) -> Vec<u8> {
        let mut named = stream.to_vec();
        let mut at = 0;
        while let Some(window) = named.get(at..at + 16) {
            let id = match window.try_into() {
                Ok(ALICE_MARKER) => self.alice,
                Ok(BOB_MARKER) => self.bob,
                _ => {
                    at += 1;
                    continue;
                }
            };
            named[at..at + 16].copy_from_slice(&id.0);
            at += 16;
        }
        named
    }
}

/// Registers `name` (2024 edition) and returns its id.
fn register(addr: SocketAddr, name: &str) -> ClientId {
    let mut socket = TcpStream::connect(addr).expect("connect to register");
    socket
        .set_read_timeout(Some(HANG_TIMEOUT))
        .expect("read timeout");
    let key = PublicKey([0x30; PUBLIC_KEY_LEN]);
    socket
        .write_all(&register_request(Edition::Y2024, name, &key))
        .expect("send a register request");
    let mut head = [0; REPLY_HEADER_LEN];
    socket.read_exact(&mut head).expect("a register reply");
    let header = ReplyHeader::parse(&head);
    check_reply_code(Edition::Y2024, Operation::Register, &header).expect("registered");
    let mut payload = [0; 16];
    socket.read_exact(&mut payload).expect("a client id");
    parse_registered(&payload).expect("a client id")
}
