//! Deterministic abuse through real sockets. Many connections, from a few threads, write
//! random bytes and random mutations of valid requests of every edition (flipped header bytes,
//! random and huge payload sizes, truncated bodies, wrong content sizes, padding, pipelined
//! bursts), split at random points with random small pauses, and end at random moments: dropped,
//! shut down both ways mid-request, half-closed, or left open a while. Every reply that arrives
//! must be a well-formed reply. The extension requests (protocol part II) are among the valid
//! ones, so that connections that said hello get reasoned 9000s, which must be well-formed too. Meanwhile a well-behaved client keeps registering, sending and
//! pulling on its own connection and must get correct answers promptly. Afterwards the server
//! must still serve fresh connections, must not be spinning, and must stop cleanly.
//!
//! Everything a client sends comes from a fixed-seed xorshift generator, so a failure names a
//! thread, a connection number and a seed that regenerate the exact bytes that were sent.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use messageu::protocol::accounts::unsend_payload;
use messageu::protocol::extension::{
    extension_request, hello_payload, long_poll_payload, parse_capabilities,
};
use messageu::protocol::push::acknowledge_payload;
use messageu::protocol::{
    AccountPage, ClientId, Edition, ErrorForm, Extension, MessageId, Operation, QueueStatus,
    Refusal,
};

/// The server's limit in this test: larger declared sizes must be refused without reading.
const MAX_PAYLOAD: u32 = 1 << 20;
const SEED: u64 = 0x6d65_7373_6167_6555;
const THREADS: u64 = 5;
/// Connections each thread keeps open at once (so THREADS * SLOTS concurrently).
const SLOTS: usize = 10;
/// Connections each thread opens over the whole run.
const CONNECTIONS_PER_THREAD: u64 = 1200;
/// Every round trip of the well-behaved client must complete within this.
const ROUND_TRIP: Duration = Duration::from_secs(2);
/// After a client closes its side, the server must close its own within this.
const CLOSE_BOUND: Duration = Duration::from_secs(5);
/// A server that reads nothing from a client that reads everything is stalled after this.
const STALL_BOUND: Duration = Duration::from_secs(5);
/// The abuse threads must be done within this (they normally need a few seconds on SQLite,
/// and two to three times as long on PostgreSQL, whose store makes its round trips on the
/// event loop's thread): past it, the server is taken as hung.
fn chaos_bound() -> Duration {
    Duration::from_secs(if common::on_postgres() { 50 } else { 25 })
}
/// The well-behaved client makes at least this many rounds, however fast the abuse ends.
const MIN_STEADY_ROUNDS: usize = 60;

const BLOCK: usize = 1024;
const REPLY_HEADER_LEN: usize = 7;
const LIST_ENTRY_LEN: usize = 16 + 255;
const PULLED_HEADER_LEN: usize = 16 + 4 + 1 + 4;
/// Offset of the content size field of a send-message request: header, destination, type.
const CONTENT_SIZE_AT: usize = 23 + 16 + 1;

// ---------------------------------------------------------------------------------------------
// Checking what the server answers.

/// The zero bytes that bring a reply of `len` bytes to whole 1024-byte blocks.
fn padding_after(len: usize) -> usize {
    (BLOCK - len % BLOCK) % BLOCK
}

/// Checks a reply header on a connection whose 9000s are laid out in `errors`; returns the
/// payload size.
fn check_header(header: &[u8], errors: ErrorForm) -> Result<usize, String> {
    let version = header[0];
    let code = u16::from_le_bytes([header[1], header[2]]);
    let size = u32::from_le_bytes([header[3], header[4], header[5], header[6]]) as usize;
    if version != 2 {
        return Err(format!(
            "reply header {header:02x?}: version {version}, not 2"
        ));
    }
    let classic = matches!(code, 2000..=2004 | 2100..=2104);
    let fixed = match code {
        9000 if errors == ErrorForm::Bare => Some(0),
        // A reason code, and a string of at least its length.
        9000 => None,
        2500 | 2507 | 2508 => None,
        2501 => Some(128),
        2502 | 2503 | 2509 | 2510 => Some(0),
        // A long-poll's reply: a pull's layout (protocol §E6), checked as one below.
        2506 => None,
        2000..=2004 | 2100..=2104 => match code % 100 {
            0 => Some(16),
            1 => None,
            2 => Some(16 + 160),
            3 => Some(20),
            _ => None,
        },
        _ => {
            return Err(format!(
                "reply header {header:02x?}: code {code} is no reply code"
            ))
        }
    };
    if let Some(expected) = fixed {
        if size != expected {
            return Err(format!(
                "reply code {code} with payload size {size}, expected {expected}"
            ));
        }
    }
    if classic && code % 100 == 1 && !size.is_multiple_of(LIST_ENTRY_LEN) {
        return Err(format!(
            "list reply of {size} bytes, not whole {LIST_ENTRY_LEN}-byte entries"
        ));
    }
    // A pull reply carries at most MAX_PAYLOAD bytes of messages, or one message alone
    // (21 + content <= MAX_PAYLOAD, so 25 + content <= MAX_PAYLOAD + 4).
    let pull = (classic && code % 100 == 4) || code == 2506;
    if pull && size > MAX_PAYLOAD as usize + 4 {
        return Err(format!("pull reply of {size} bytes exceeds the cap"));
    }
    if size > 64 << 20 {
        return Err(format!("reply code {code} announces {size} bytes"));
    }
    Ok(size)
}

/// Checks the payload of a list or pull reply entry by entry.
fn check_payload(code: u16, payload: &[u8]) -> Result<(), String> {
    match code {
        9000 => {
            return Refusal::parse(payload)
                .map(drop)
                .ok_or_else(|| format!("a 9000 payload that is no reason: {payload:02x?}"))
        }
        2500 => {
            return parse_capabilities(payload)
                .map(drop)
                .ok_or_else(|| format!("a hello reply that does not parse: {payload:02x?}"))
        }
        2507 => {
            return AccountPage::parse(payload)
                .map(drop)
                .ok_or_else(|| format!("an account page that does not parse: {payload:02x?}"))
        }
        2508 => {
            return QueueStatus::parse(payload)
                .map(drop)
                .ok_or_else(|| format!("a queue status that does not parse: {payload:02x?}"))
        }
        2501..=2503 | 2509 | 2510 => return Ok(()),
        _ => {}
    }
    // A long-poll's reply has the pull layout (protocol §E6).
    let operation = if code == 2506 { 4 } else { code % 100 };
    match operation {
        1 => {
            for (index, entry) in payload.chunks(LIST_ENTRY_LEN).enumerate() {
                let name = &entry[16..];
                let end = name
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or_else(|| format!("list entry {index}: the name field has no NUL"))?;
                if end == 0 || !name[..end].iter().all(|b| (b' '..=b'~').contains(b)) {
                    return Err(format!(
                        "list entry {index}: bad name {:?}",
                        String::from_utf8_lossy(&name[..end])
                    ));
                }
                if name[end..].iter().any(|&b| b != 0) {
                    return Err(format!("list entry {index}: name field not zero-filled"));
                }
            }
        }
        4 => {
            let mut rest = payload;
            let mut index = 0;
            while !rest.is_empty() {
                if rest.len() < PULLED_HEADER_LEN {
                    return Err(format!("pull reply message {index}: truncated header"));
                }
                let kind = rest[20];
                if !(1..=4).contains(&kind) {
                    return Err(format!("pull reply message {index}: type {kind}"));
                }
                let size = u32::from_le_bytes(rest[21..25].try_into().unwrap()) as usize;
                if rest.len() < PULLED_HEADER_LEN + size {
                    return Err(format!(
                        "pull reply message {index}: content size {size} overruns the payload"
                    ));
                }
                rest = &rest[PULLED_HEADER_LEN + size..];
                index += 1;
            }
        }
        _ => {}
    }
    Ok(())
}

/// An incremental checker of one connection's reply stream: whole, well-formed replies, the
/// last possibly zero-padded to whole blocks, and nothing after that padding.
#[derive(Default)]
struct ReplyStream {
    header: Vec<u8>,
    payload: Vec<u8>,
    /// The code of the reply whose payload is being read, and its bytes still to come.
    current: Option<(u16, usize)>,
    /// Padding bytes still allowed, once padding has begun.
    padding_left: Option<usize>,
    last_reply_len: usize,
    replies: usize,
    /// Replies with a success code, and zero-padded replies.
    successes: usize,
    /// How 9000s are laid out: with a reason once a hello was answered.
    errors: ErrorForm,
    padded: usize,
    offset: u64,
}

impl ReplyStream {
    fn feed(&mut self, mut data: &[u8]) -> Result<(), String> {
        while !data.is_empty() {
            let at = self.offset;
            if let Some(left) = self.padding_left.as_mut() {
                if *left == 0 || data[0] != 0 {
                    return Err(format!(
                        "byte {:#04x} at offset {at}, after the padding of a padded reply",
                        data[0]
                    ));
                }
                *left -= 1;
                data = &data[1..];
                self.offset += 1;
                continue;
            }
            if let Some((code, left)) = self.current {
                let take = left.min(data.len());
                self.payload.extend_from_slice(&data[..take]);
                data = &data[take..];
                self.offset += take as u64;
                if take == left {
                    self.current = None;
                    check_payload(code, &self.payload).map_err(|error| {
                        format!("reply ending at offset {}: {error}", self.offset)
                    })?;
                    if code == Extension::Hello.reply_code() {
                        self.errors = ErrorForm::WithReason;
                    }
                    self.payload.clear();
                    self.replies += 1;
                } else {
                    self.current = Some((code, left - take));
                }
                continue;
            }
            if self.header.is_empty() && data[0] == 0 && self.replies > 0 {
                let padding = padding_after(self.last_reply_len);
                if padding == 0 {
                    return Err(format!(
                        "zero byte at offset {at} where a reply header must begin"
                    ));
                }
                self.padding_left = Some(padding);
                self.padded += 1;
                continue;
            }
            let take = (REPLY_HEADER_LEN - self.header.len()).min(data.len());
            self.header.extend_from_slice(&data[..take]);
            data = &data[take..];
            self.offset += take as u64;
            if self.header.len() == REPLY_HEADER_LEN {
                let size = check_header(&self.header, self.errors)
                    .map_err(|error| format!("reply at offset {}: {error}", self.offset - 7))?;
                let code = u16::from_le_bytes([self.header[1], self.header[2]]);
                self.successes += usize::from(code != 9000);
                self.header.clear();
                self.last_reply_len = REPLY_HEADER_LEN + size;
                if size == 0 {
                    self.replies += 1;
                } else {
                    self.current = Some((code, size));
                }
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "{} whole replies, {} bytes; partial header {:02x?}; payload of code {:?} with {} \
             bytes read; padding left {:?}",
            self.replies,
            self.offset,
            self.header,
            self.current.map(|(code, _)| code),
            self.payload.len(),
            self.padding_left
        )
    }

    /// Whether the stream may end here: between replies, or after complete padding.
    fn at_boundary(&self) -> bool {
        self.header.is_empty()
            && self.current.is_none()
            && self.padding_left.is_none_or(|left| left == 0)
    }
}

// ---------------------------------------------------------------------------------------------
// Generating garbage.

/// A client id the server knows (a victim), a random one, or zeros.
fn some_id(rng: &mut Rng, victims: &[ClientId]) -> ClientId {
    match rng.below(10) {
        0..=6 => rng.pick(victims),
        7..=8 => ClientId(rng.bytes(16).try_into().unwrap()),
        _ => ClientId::default(),
    }
}

/// A well-formed request of a random edition and operation, or, one time in ten, of an
/// extension.
fn valid_request(rng: &mut Rng, victims: &[ClientId]) -> Vec<u8> {
    if rng.chance(10) {
        return extension(rng, victims);
    }
    let edition = rng.pick(&EDITIONS);
    let operation = rng.pick(&Operation::ALL);
    let caller = some_id(rng, victims);
    let body = match operation {
        // A small pool of names: most registrations after the first few are refused as taken.
        Operation::Register => {
            register_body(&format!("junk-{:02}", rng.below(16)), &test_key(rng.byte()))
        }
        Operation::ListClients | Operation::PullMessages => Vec::new(),
        Operation::PublicKey => some_id(rng, victims).0.to_vec(),
        Operation::SendMessage => {
            let len = if rng.chance(90) {
                rng.below(300)
            } else {
                rng.below(6000)
            };
            let kind = if rng.chance(90) {
                rng.range(1, 4) as u8
            } else {
                rng.byte()
            };
            let to = some_id(rng, victims);
            let content = rng.bytes(len);
            send_body(to, kind, &content)
        }
    };
    request_bytes(
        caller,
        edition.request_code(operation),
        body.len() as u32,
        &body,
    )
}

/// A well-formed extension request: a hello, a challenge (the victims' keys are not RSA:
/// refused), a proof that cannot be right, a protection or deletion the connection cannot
/// make, an account list with a pattern of wildcards (or a trailing escape), a queue status,
/// an unsend of a small message id, a subscription or acknowledgement the connection is not
/// authenticated for (some with a count that does not fill the payload), or a short long-poll.
fn extension(rng: &mut Rng, victims: &[ClientId]) -> Vec<u8> {
    let caller = some_id(rng, victims);
    let extension = rng.pick(&Extension::ALL);
    let payload = match extension {
        Extension::Hello => hello_payload().to_vec(),
        Extension::Challenge
        | Extension::QueueStatus
        | Extension::DeleteAccount
        | Extension::Subscribe => Vec::new(),
        Extension::Acknowledge => {
            let ids: Vec<MessageId> = (0..rng.below(5))
                .map(|_| MessageId(rng.below(64) as u32))
                .collect();
            let mut payload = acknowledge_payload(&ids);
            if rng.below(4) == 0 {
                payload.truncate(payload.len().saturating_sub(2));
            }
            payload
        }
        Extension::Prove => rng.bytes(32),
        Extension::Protect => vec![rng.byte() % 3],
        Extension::ListAccounts => {
            let pattern: Vec<u8> = (0..rng.below(8)).map(|_| rng.pick(b"*?\\junk-0")).collect();
            let mut payload = (pattern.len() as u16).to_le_bytes().to_vec();
            payload.extend_from_slice(&pattern);
            payload.extend_from_slice(&(rng.below(64) as u64).to_le_bytes());
            payload.extend_from_slice(&(rng.below(300) as u16).to_le_bytes());
            payload
        }
        Extension::Unsend => unsend_payload(MessageId(rng.below(64) as u32)).to_vec(),
        // Short waits: a parked request holds up the garbage behind it.
        Extension::LongPoll => {
            long_poll_payload(Duration::from_millis(rng.below(50) as u64)).to_vec()
        }
    };
    extension_request(extension, caller, &payload)
}

fn set_u32(bytes: &mut [u8], at: usize, value: u32) {
    if bytes.len() >= at + 4 {
        bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }
}

/// One random corruption of a request.
fn mutate(rng: &mut Rng, request: &mut Vec<u8>) {
    let declared = u32::from_le_bytes(request[19..23].try_into().unwrap());
    match rng.below(10) {
        // Flip bytes of the header (the version, code and size fields most often).
        0 => {
            for _ in 0..rng.range(1, 3) {
                let at = if rng.chance(75) {
                    rng.range(16, 22)
                } else {
                    rng.below(16)
                };
                request[at] ^= rng.range(1, 255) as u8;
            }
        }
        // A random declared payload size.
        1 => {
            let size = match rng.below(9) {
                0 => 0,
                1 => rng.u32(),
                2 => MAX_PAYLOAD + 1 + rng.below(1 << 16) as u32,
                3 => u32::MAX,
                4 => declared.wrapping_add(rng.range(1, 3) as u32),
                5 => declared.saturating_sub(rng.range(1, 3) as u32),
                6 => rng.pick(&[16, 20, 21, 24, 415, 416]),
                7 => MAX_PAYLOAD - rng.below(64) as u32,
                _ => rng.below(64) as u32,
            };
            set_u32(request, 19, size);
        }
        // Truncated: the next item's bytes complete it (or the stream ends).
        2 => {
            let keep = rng.below(request.len());
            request.truncate(keep);
        }
        // Extra bytes after the body.
        3 => {
            let extra = rng.range(1, 100);
            request.extend(rng.bytes(extra));
        }
        // A random content size in a send-message body (or where one would be).
        4 => {
            let content = match rng.below(7) {
                0 => 0,
                1 => rng.u32(),
                2 => MAX_PAYLOAD,
                3 => declared.wrapping_sub(21),
                4 => declared.wrapping_sub(24),
                5 => declared.wrapping_sub(18),
                _ => rng.below(100) as u32,
            };
            set_u32(request, CONTENT_SIZE_AT, content);
        }
        // A random code: near an edition's codes, a reply code, or anything.
        5 => {
            let code = match rng.below(4) {
                0 => rng.pick(&EDITIONS).request_code(Operation::Register) + rng.below(10) as u16,
                1 => rng.pick(&[2000, 2100, 2104, 9000, 0, u16::MAX]),
                2 => rng.range(590, 1110) as u16,
                _ => rng.u32() as u16,
            };
            request[17..19].copy_from_slice(&code.to_le_bytes());
        }
        // Flip bytes of the body.
        6 if request.len() > 23 => {
            for _ in 0..rng.range(1, 4) {
                let at = rng.range(23, request.len() - 1);
                request[at] ^= rng.range(1, 255) as u8;
            }
        }
        // The quirks: declared size 0, or 3 more than sent.
        7 => {
            let size = if rng.chance(50) {
                0
            } else {
                declared.wrapping_add(3)
            };
            set_u32(request, 19, size);
        }
        // Pipelined copies.
        8 => {
            let copy = request.clone();
            for _ in 0..rng.range(1, 4) {
                request.extend_from_slice(&copy);
            }
        }
        _ => request[16] = rng.byte(),
    }
}

/// A header with a random code and a plausible size, and a body that may or may not match it.
fn random_header(rng: &mut Rng, victims: &[ClientId]) -> Vec<u8> {
    let code = if rng.chance(70) {
        rng.pick(&EDITIONS).request_code(rng.pick(&Operation::ALL))
    } else {
        rng.u32() as u16
    };
    let size = rng.below(700);
    let body_len = if rng.chance(70) { size } else { rng.below(700) };
    let body = rng.bytes(body_len);
    let caller = some_id(rng, victims);
    request_bytes(caller, code, size as u32, &body)
}

/// The bytes one garbage connection sends.
fn script(rng: &mut Rng, victims: &[ClientId]) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.range(1, 10) {
        match rng.below(100) {
            0..=14 => {
                let len = rng.range(1, 1500);
                out.extend(rng.bytes(len));
            }
            15..=24 => out.extend(random_header(rng, victims)),
            25..=74 => {
                let mut request = valid_request(rng, victims);
                if rng.chance(65) {
                    mutate(rng, &mut request);
                }
                out.extend(request);
            }
            // A zero-padded client's request, the padding possibly cut short.
            75..=81 => {
                let request = valid_request(rng, victims);
                let mut padded_len = request.len() + padding_after(request.len());
                if rng.chance(30) {
                    padded_len = rng.range(request.len(), padded_len);
                }
                out.extend(&request);
                out.resize(out.len() + padded_len - request.len(), 0);
            }
            // A pipelined burst of small valid requests.
            82..=87 => {
                for _ in 0..rng.range(20, 300) {
                    let edition = rng.pick(&EDITIONS);
                    let caller = rng.pick(victims);
                    let (operation, body) = match rng.below(3) {
                        0 => (Operation::ListClients, Vec::new()),
                        1 => (Operation::PullMessages, Vec::new()),
                        _ => (Operation::PublicKey, rng.pick(victims).0.to_vec()),
                    };
                    out.extend(request_bytes(
                        caller,
                        edition.request_code(operation),
                        body.len() as u32,
                        &body,
                    ));
                }
            }
            88..=93 => {
                let len = rng.range(1, 3000);
                out.resize(out.len() + len, 0);
            }
            _ => {
                // Random bytes with an occasional valid header inside.
                let len = rng.range(1, 200);
                out.extend(rng.bytes(len));
                out.extend(valid_request(rng, victims));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// One garbage connection.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Just drop the socket (a reset if replies are unread).
    Drop,
    /// shutdown(Both), then drop.
    ShutdownBoth,
    /// shutdown(Write), then read until the server closes: it must do so promptly, at a
    /// reply boundary.
    HalfClose,
    /// Stay connected, reading, for a random time, then drop.
    Linger,
}

#[derive(Debug, Default)]
struct Tally {
    connections: u64,
    bytes_sent: u64,
    replies: u64,
    successes: u64,
    padded: u64,
    reply_bytes: u64,
    closed_by_server: u64,
    reset: u64,
}

struct Junk {
    label: String,
    stream: TcpStream,
    script: Vec<u8>,
    /// Where each write ends, precomputed so that the split points are deterministic.
    splits: Vec<usize>,
    next_split: usize,
    written: usize,
    ending: Ending,
    linger: Duration,
    read_paused_until: Option<Instant>,
    replies: ReplyStream,
    write_failed: bool,
    eof: bool,
    reset: bool,
    last_progress: Instant,
    ending_since: Option<Instant>,
}

impl Junk {
    fn open(addr: SocketAddr, thread: u64, number: u64, victims: &[ClientId]) -> Junk {
        let seed = SEED ^ (thread << 32) ^ number;
        let mut rng = Rng::new(seed);
        let script = script(&mut rng, victims);
        let cut = if rng.chance(50) {
            script.len()
        } else {
            rng.below(script.len() + 1)
        };
        let mut splits = Vec::new();
        let mut at = 0;
        while at < cut {
            let len = match rng.below(10) {
                0..=4 => rng.range(1, 16),
                5..=7 => rng.range(17, 300),
                8 => rng.range(301, 4096),
                _ => cut - at,
            };
            at = (at + len).min(cut);
            splits.push(at);
        }
        let ending = match rng.below(100) {
            0..=29 => Ending::Drop,
            30..=49 => Ending::ShutdownBoth,
            50..=84 => Ending::HalfClose,
            _ => Ending::Linger,
        };
        let linger = Duration::from_millis(rng.below(300) as u64);
        let read_paused_until = rng
            .chance(12)
            .then(|| Instant::now() + Duration::from_millis(rng.range(50, 400) as u64));
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nonblocking(true).unwrap();
        if rng.chance(50) {
            stream.set_nodelay(true).unwrap();
        }
        Junk {
            label: format!(
                "thread {thread} connection {number} (seed {seed:#x}, cut after {} of {} bytes, ending {ending:?})",
                cut,
                script.len()
            ),
            stream,
            script,
            splits,
            next_split: 0,
            written: 0,
            ending,
            linger,
            read_paused_until,
            replies: ReplyStream::default(),
            write_failed: false,
            eof: false,
            reset: false,
            last_progress: Instant::now(),
            ending_since: None,
        }
    }

    fn reading_paused(&self, now: Instant) -> bool {
        self.read_paused_until.is_some_and(|until| now < until)
    }

    /// One write, or one step of the ending. True when the connection is done.
    fn step(&mut self) -> Result<bool, String> {
        let now = Instant::now();
        if self.next_split < self.splits.len() && !self.write_failed {
            let end = self.splits[self.next_split];
            match self.stream.write(&self.script[self.written..end]) {
                Ok(0) => self.write_failed = true,
                Ok(n) => {
                    self.written += n;
                    if self.written == end {
                        self.next_split += 1;
                    }
                    self.last_progress = now;
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => {
                    if self.reading_paused(now) || self.eof || self.reset {
                        self.last_progress = now;
                    } else if now - self.last_progress > STALL_BOUND {
                        return Err(format!(
                            "{}: the server read nothing for {STALL_BOUND:?} although every reply \
                             was read ({} bytes written, {} replies)",
                            self.label, self.written, self.replies.replies
                        ));
                    }
                }
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(_) => self.write_failed = true,
            }
            return Ok(false);
        }
        match self.ending {
            Ending::Drop => Ok(true),
            Ending::ShutdownBoth => {
                let _ = self.stream.shutdown(Shutdown::Both);
                Ok(true)
            }
            Ending::HalfClose => {
                let since = match self.ending_since {
                    Some(since) => since,
                    None => {
                        let _ = self.stream.shutdown(Shutdown::Write);
                        self.read_paused_until = None;
                        self.ending_since = Some(now);
                        now
                    }
                };
                if self.eof || self.reset {
                    return Ok(true);
                }
                if now - since > CLOSE_BOUND {
                    return Err(format!(
                        "{}: the server did not close within {CLOSE_BOUND:?} after the client \
                         closed its side ({} replies read, reply stream at a boundary: {})",
                        self.label,
                        self.replies.replies,
                        self.replies.at_boundary()
                    ));
                }
                Ok(false)
            }
            Ending::Linger => {
                let since = *self.ending_since.get_or_insert(now);
                Ok(now - since >= self.linger)
            }
        }
    }

    /// Reads and checks whatever the server has sent.
    fn drain(&mut self, buffer: &mut [u8]) -> Result<(), String> {
        if self.eof || self.reset || self.reading_paused(Instant::now()) {
            return Ok(());
        }
        loop {
            match self.stream.read(buffer) {
                Ok(0) => {
                    self.eof = true;
                    if !self.replies.at_boundary() {
                        return Err(format!(
                            "{}: the server closed in the middle of a reply ({})",
                            self.label,
                            self.replies.describe()
                        ));
                    }
                    return Ok(());
                }
                Ok(n) => self
                    .replies
                    .feed(&buffer[..n])
                    .map_err(|error| format!("{}: {error}", self.label))?,
                Err(error) if error.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.reset = true;
                    return Ok(());
                }
            }
        }
    }

    fn tally(&self, tally: &mut Tally) {
        tally.connections += 1;
        tally.bytes_sent += self.written as u64;
        tally.replies += self.replies.replies as u64;
        tally.successes += self.replies.successes as u64;
        tally.padded += self.replies.padded as u64;
        tally.reply_bytes += self.replies.offset;
        tally.closed_by_server += u64::from(self.eof);
        tally.reset += u64::from(self.reset);
    }
}

/// One abuse thread: SLOTS connections at a time, CONNECTIONS_PER_THREAD in all, plus one
/// connection that sends half a header and then nothing until the end.
fn abuse(thread: u64, addr: SocketAddr, victims: Vec<ClientId>) -> Result<Tally, String> {
    let started = Instant::now();
    let mut rng = Rng::new(SEED.rotate_left(17) ^ thread);
    let mut idle = TcpStream::connect(addr).expect("connect");
    idle.write_all(&victims[0].0[..10]).expect("write");
    let mut live: Vec<Junk> = Vec::new();
    let mut opened = 0;
    let mut buffer = vec![0; 64 << 10];
    let mut tally = Tally::default();
    while opened < CONNECTIONS_PER_THREAD || !live.is_empty() {
        while live.len() < SLOTS && opened < CONNECTIONS_PER_THREAD {
            live.push(Junk::open(addr, thread, opened, &victims));
            opened += 1;
        }
        let index = rng.below(live.len());
        // A finished connection is removed before the next drain: after its own
        // shutdown(Both), a read would return 0 although the server closed nothing.
        if live[index].step()? {
            live.swap_remove(index).tally(&mut tally);
        }
        for junk in &mut live {
            junk.drain(&mut buffer)?;
        }
        if rng.chance(25) {
            thread::sleep(Duration::from_micros(rng.below(1500) as u64));
        }
        if started.elapsed() > chaos_bound() {
            return Err(format!(
                "thread {thread}: not done after {:?} ({opened} connections opened)",
                chaos_bound()
            ));
        }
    }
    drop(idle);
    Ok(tally)
}

// ---------------------------------------------------------------------------------------------
// The well-behaved client.

struct Steady {
    stream: TcpStream,
    worst: Duration,
    calls: usize,
}

impl Steady {
    fn connect(addr: SocketAddr) -> Steady {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(ROUND_TRIP)).unwrap();
        stream.set_write_timeout(Some(ROUND_TRIP)).unwrap();
        stream.set_nodelay(true).unwrap();
        Steady {
            stream,
            worst: Duration::ZERO,
            calls: 0,
        }
    }

    fn call(&mut self, request: &[u8], what: &str) -> Reply {
        let start = Instant::now();
        self.stream
            .write_all(request)
            .unwrap_or_else(|error| panic!("{what}: cannot write the request: {error}"));
        let mut header = [0; REPLY_HEADER_LEN];
        self.stream.read_exact(&mut header).unwrap_or_else(|error| {
            panic!(
                "{what}: no reply within {ROUND_TRIP:?} ({error}) after {:?}",
                start.elapsed()
            )
        });
        let size = check_header(&header, ErrorForm::Bare)
            .unwrap_or_else(|error| panic!("{what}: {error}"));
        let mut payload = vec![0; size];
        self.stream
            .read_exact(&mut payload)
            .unwrap_or_else(|error| {
                panic!(
                    "{what}: reply payload incomplete after {:?}: {error}",
                    start.elapsed()
                )
            });
        let elapsed = start.elapsed();
        assert!(
            elapsed <= ROUND_TRIP,
            "{what}: the round trip took {elapsed:?}"
        );
        self.worst = self.worst.max(elapsed);
        self.calls += 1;
        Reply {
            version: header[0],
            code: u16::from_le_bytes([header[1], header[2]]),
            payload,
        }
    }

    fn expect(&mut self, request: &[u8], code: u16, what: &str) -> Vec<u8> {
        let reply = self.call(request, what);
        assert_eq!(reply.code, code, "{what}: reply code");
        reply.payload
    }

    fn register(&mut self, edition: Edition, name: &str, key: &[u8; 160]) -> ClientId {
        let request = request_bytes(
            ClientId::default(),
            edition.request_code(Operation::Register),
            415,
            &register_body(name, key),
        );
        let code = edition.reply_code(Operation::Register);
        let payload = self.expect(&request, code, &format!("register {name:?}"));
        ClientId::from_slice(&payload).unwrap()
    }
}

/// What the well-behaved client knows: its clients, and the messages waiting for `to`.
struct SteadyState {
    rng: Rng,
    from: ClientId,
    to: ClientId,
    /// (name, id, key) of every client this client registered, in order.
    registered: Vec<(String, ClientId, [u8; 160])>,
    /// (message id, type, content) sent to `to` and not yet pulled.
    waiting: Vec<(u32, u8, Vec<u8>)>,
}

impl SteadyState {
    fn start(client: &mut Steady, tag: &str, seed: u64) -> SteadyState {
        let mut registered = Vec::new();
        for (index, role) in ["sender", "recipient"].iter().enumerate() {
            let name = format!("Steady {tag} {role}");
            let key = test_key(200 + index as u8);
            let id = client.register(EDITIONS[index], &name, &key);
            registered.push((name, id, key));
        }
        SteadyState {
            rng: Rng::new(seed),
            from: registered[0].1,
            to: registered[1].1,
            registered,
            waiting: Vec::new(),
        }
    }

    fn send(&mut self, client: &mut Steady, edition: Edition) {
        let len = if self.rng.chance(80) {
            self.rng.below(200)
        } else {
            self.rng.below(5000)
        };
        let content = self.rng.bytes(len);
        let kind = self.rng.range(1, 4) as u8;
        let body = send_body(self.to, kind, &content);
        // Half the time, the clients that declare 3 alignment bytes they never send.
        let declared = body.len() as u32 + if self.rng.chance(50) { 3 } else { 0 };
        let request = request_bytes(
            self.from,
            edition.request_code(Operation::SendMessage),
            declared,
            &body,
        );
        let code = edition.reply_code(Operation::SendMessage);
        let payload = client.expect(&request, code, "send");
        assert_eq!(&payload[..16], &self.to.0, "send: destination echoed");
        let id = u32::from_le_bytes(payload[16..20].try_into().unwrap());
        self.waiting.push((id, kind, content));
    }

    fn pull(&mut self, client: &mut Steady, edition: Edition) {
        let request = request_bytes(
            self.to,
            edition.request_code(Operation::PullMessages),
            0,
            &[],
        );
        let code = edition.reply_code(Operation::PullMessages);
        let payload = client.expect(&request, code, "pull");
        let pulled: Vec<(u32, u8, Vec<u8>)> = parse_pull(&payload)
            .into_iter()
            .map(|message| {
                assert_eq!(message.from, self.from, "pull: sender");
                (message.id, message.kind, message.content)
            })
            .collect();
        assert_eq!(
            pulled.len(),
            self.waiting.len(),
            "pull: {} messages waiting, got {}",
            self.waiting.len(),
            pulled.len()
        );
        assert!(
            pulled == self.waiting,
            "pull: the messages differ from those sent"
        );
        self.waiting.clear();
    }

    fn register_and_fetch_key(&mut self, client: &mut Steady, edition: Edition, round: usize) {
        let name = format!("Steady {round:05} {}", self.rng.below(1000));
        let key = test_key(self.rng.byte());
        let id = client.register(edition, &name, &key);
        // Half the time, the clients that declare size 0 and send the target anyway.
        let declared = if self.rng.chance(50) { 0 } else { 16 };
        let request = request_bytes(
            self.from,
            edition.request_code(Operation::PublicKey),
            declared,
            &id.0,
        );
        let code = edition.reply_code(Operation::PublicKey);
        let payload = client.expect(&request, code, "public key");
        assert_eq!(&payload[..16], &id.0, "public key: id");
        assert_eq!(&payload[16..], &key[..], "public key: key");
        self.registered.push((name, id, key));
    }

    fn list(&mut self, client: &mut Steady, edition: Edition) {
        let request = request_bytes(
            self.from,
            edition.request_code(Operation::ListClients),
            0,
            &[],
        );
        let code = edition.reply_code(Operation::ListClients);
        let payload = client.expect(&request, code, "list");
        let listed: Vec<(ClientId, String)> = payload
            .chunks(LIST_ENTRY_LEN)
            .map(|entry| {
                let name = &entry[16..];
                let end = name.iter().position(|&b| b == 0).unwrap();
                (
                    ClientId::from_slice(&entry[..16]).unwrap(),
                    String::from_utf8_lossy(&name[..end]).into_owned(),
                )
            })
            .collect();
        assert!(
            !listed.iter().any(|(id, _)| *id == self.from),
            "list: the caller is listed"
        );
        for (name, id, _) in &self.registered[1..] {
            assert!(
                listed.iter().any(|entry| entry == &(*id, name.clone())),
                "list: {name:?} missing"
            );
        }
    }

    fn unknown_code(&mut self, client: &mut Steady) {
        let code = [5, 599, 1005, 2100, 9000][self.rng.below(5)];
        let request = request_bytes(self.from, code, 0, &[]);
        let reply = client.call(&request, "unknown code");
        assert!(reply.is_error(), "unknown code {code}: {reply:?}");
    }

    /// One round: a send or two, and now and then a pull, a registration with a key fetch,
    /// a list, or an unknown code. The connection stays usable throughout.
    fn round(&mut self, client: &mut Steady, round: usize) {
        let edition = EDITIONS[round % 4];
        for _ in 0..self.rng.range(1, 2) {
            self.send(client, edition);
        }
        if round % 2 == 1 {
            self.pull(client, EDITIONS[(round / 2) % 4]);
        }
        if round.is_multiple_of(5) {
            self.register_and_fetch_key(client, edition, round);
        }
        if round % 7 == 3 {
            self.list(client, edition);
        }
        if round % 11 == 5 {
            self.unknown_code(client);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// After the abuse.

/// A zero-padded one-shot client: one register padded to a block, a padded reply, a close.
fn padded_register(addr: SocketAddr, name: &str) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(ROUND_TRIP)).unwrap();
    let mut request = request_bytes(
        ClientId::default(),
        Edition::Y2021.request_code(Operation::Register),
        415,
        &register_body(name, &test_key(7)),
    );
    request.resize(BLOCK, 0);
    stream.write_all(&request).unwrap();
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .expect("padded reply, then the server's close");
    assert_eq!(reply.len(), BLOCK, "a padded reply fills one block");
    assert_eq!(&reply[..7], &[2, 0xd0, 0x07, 16, 0, 0, 0]);
    assert!(reply[23..].iter().all(|&b| b == 0));
}

/// Whole-process CPU time in clock ticks (user + system), from /proc/self/stat.
#[cfg(target_os = "linux")]
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    // Fields 14 and 15 of the file (utime, stime); the slice starts at field 3.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn random_abuse_never_crashes_hangs_or_stalls_the_server() {
    let test_started = Instant::now();
    let server = TestServer::start_with(|config| config.max_payload = MAX_PAYLOAD);
    let addr = server.addr;

    // Victims: clients the garbage knows, whose queues it fills and pulls.
    let mut setup = Steady::connect(addr);
    let victims: Vec<ClientId> = (0..4)
        .map(|index| {
            setup.register(
                EDITIONS[index],
                &format!("victim-{index}"),
                &test_key(index as u8),
            )
        })
        .collect();
    drop(setup);

    let mut steady = Steady::connect(addr);
    let mut state = SteadyState::start(&mut steady, "main", SEED ^ 0x5eed);

    let abusers: Vec<_> = (0..THREADS)
        .map(|thread| {
            let victims = victims.clone();
            thread::Builder::new()
                .name(format!("abuse-{thread}"))
                .spawn(move || abuse(thread, addr, victims))
                .unwrap()
        })
        .collect();

    let mut rounds = 0;
    while rounds < MIN_STEADY_ROUNDS || !abusers.iter().all(|handle| handle.is_finished()) {
        state.round(&mut steady, rounds);
        rounds += 1;
        if rounds % 3 == 0 {
            thread::sleep(Duration::from_millis(2));
        }
        assert!(
            test_started.elapsed() < chaos_bound() + Duration::from_secs(5),
            "the abuse threads never finished"
        );
    }
    let chaos_time = test_started.elapsed();
    let mut tally = Tally::default();
    for (thread, handle) in abusers.into_iter().enumerate() {
        match handle.join() {
            Ok(Ok(part)) => {
                tally.connections += part.connections;
                tally.bytes_sent += part.bytes_sent;
                tally.replies += part.replies;
                tally.successes += part.successes;
                tally.padded += part.padded;
                tally.reply_bytes += part.reply_bytes;
                tally.closed_by_server += part.closed_by_server;
                tally.reset += part.reset;
            }
            Ok(Err(failure)) => panic!("abuse thread {thread}: {failure}"),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
    eprintln!(
        "abuse: {tally:?} in {chaos_time:?}; well-behaved client: {rounds} rounds, {} round \
         trips, slowest {:?}",
        steady.calls, steady.worst
    );
    assert!(
        tally.replies > 1000 && tally.successes > 100 && tally.padded > 10,
        "the garbage reached too few of the server's paths to mean anything"
    );

    // The old connection of the well-behaved client still works and nothing was lost.
    state.pull(&mut steady, Edition::Y2026);
    state.list(&mut steady, Edition::Y2022);

    // Fresh connections are served, in every edition.
    let mut fresh = Steady::connect(addr);
    let mut after = SteadyState::start(&mut fresh, "after", SEED ^ 0xaf7e);
    for round in 0..12 {
        after.round(&mut fresh, round);
    }
    after.pull(&mut fresh, Edition::Y2021);
    padded_register(addr, "Steady padded");

    // The victims' queues, whatever the garbage left in them, are served whole.
    let mut checker = Steady::connect(addr);
    for (index, victim) in victims.iter().enumerate() {
        let edition = EDITIONS[index];
        let request = request_bytes(
            *victim,
            edition.request_code(Operation::PullMessages),
            0,
            &[],
        );
        let code = edition.reply_code(Operation::PullMessages);
        let payload = checker.expect(&request, code, "victim pull");
        check_payload(code, &payload).unwrap();
    }
    drop((steady, fresh, checker));

    // With every client gone, the server must be idle, not spinning.
    #[cfg(target_os = "linux")]
    {
        thread::sleep(Duration::from_millis(300));
        let before = cpu_ticks();
        thread::sleep(Duration::from_secs(1));
        let used = cpu_ticks() - before;
        assert!(
            used < 40,
            "the process used {used} ticks (of 100 per second) while no client was connected"
        );
    }

    drop(server);
    eprintln!("whole test: {:?}", test_started.elapsed());
}
