//! The load generator's event loop: one mio poll per thread, owning a share of the clients.
//! Every client has exactly one request outstanding (closed loop): a real MessageU client waits
//! for each reply before it sends its next request.
//!
//! The driver only moves bytes and frames replies; a [`Phase`] decides what each client asks
//! next and judges each reply.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use messageu_protocol::padding::reply_padding;
use messageu_protocol::{ReplyHeader, REPLY_HEADER_LEN};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::stats::ErrorKind;
use crate::workload::Request;

/// How often timeouts and retries are looked at.
const SWEEP: Duration = Duration::from_millis(20);
/// How long a client whose connection failed waits before it tries again.
const RETRY_DELAY: Duration = Duration::from_millis(100);
const READ_CHUNK: usize = 64 << 10;
/// New persistent connections one loop keeps waiting for their first reply. A connection
/// waits in the server's accept queue until the server gets to it; thousands at once overflow
/// a listen backlog (Linux's default is 128), and the kernel retries the dropped handshakes
/// only after 1 s, 3 s...: the measured window would hold fewer clients than asked for. With a
/// connection per request, opening connections is the workload itself, so it is not paced.
const MAX_OPENING: usize = 64;
/// Loopback source addresses a connection per request spreads its clients over:
/// 127.0.0.2 and the next ones.
const SOURCE_ADDRESSES: u32 = 250;

/// How clients use connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnStyle {
    /// One connection per client for the whole run.
    Persistent,
    /// A new connection for every request, closed by the client after the reply.
    PerRequest,
    /// Like [`ConnStyle::PerRequest`], with requests zero-padded to a multiple of 1024 bytes
    /// and padded replies read up to their block boundary (protocol §4.3).
    Padded,
}

impl ConnStyle {
    pub fn name(self) -> &'static str {
        match self {
            ConnStyle::Persistent => "persistent connections",
            ConnStyle::PerRequest => "a connection per request",
            ConnStyle::Padded => "zero-padded requests, a connection per request",
        }
    }
}

/// A whole reply, borrowed from the client's input buffer.
#[derive(Debug, Clone, Copy)]
pub struct ReplyView<'a> {
    pub header: ReplyHeader,
    /// The payload, without padding.
    pub payload: &'a [u8],
}

impl ReplyView<'_> {
    /// Header and payload bytes.
    pub fn len(&self) -> usize {
        REPLY_HEADER_LEN + self.payload.len()
    }
}

/// Why a request got no whole reply.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("no whole reply within {0:?}")]
    Timeout(Duration),
    #[error("connection failed: {0}")]
    Io(#[from] io::Error),
    #[error("the server closed the connection before the whole reply")]
    Closed,
    #[error("{0} bytes arrived beyond the reply")]
    TrailingBytes(usize),
}

impl Failure {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Failure::Timeout(_) => ErrorKind::Timeout,
            Failure::Io(_) | Failure::Closed => ErrorKind::Connection,
            Failure::TrailingBytes(_) => ErrorKind::Malformed,
        }
    }
}

/// A client as a phase sees it: its global index and its place in this driver.
#[derive(Debug, Clone, Copy)]
pub struct ClientRef {
    pub index: u32,
    pub slot: usize,
}

/// What the clients do in one stage of a run.
pub trait Phase {
    /// The client's next request, or `None` once it has nothing more to do in this phase.
    fn next_request(&mut self, client: ClientRef, now: Instant) -> Option<Request>;

    /// The outcome of the client's request; `latency` runs from its first byte written (or its
    /// connect, with a connection per request) to its last reply byte read.
    fn finish(
        &mut self,
        client: ClientRef,
        request: Request,
        outcome: Result<ReplyView<'_>, Failure>,
        latency: Duration,
        now: Instant,
    );
}

struct InFlight {
    request: Request,
    written: usize,
    issued: Instant,
    /// When timing began: the connect with a connection per request, else the first write.
    started: Option<Instant>,
    /// A failure found before any event could report it (connect refused at once).
    failed: Option<Failure>,
}

enum State {
    Waiting(InFlight),
    RetryAt(Instant),
    Done,
}

struct Client {
    index: u32,
    /// The server (node) this client talks to for the whole run.
    target: SocketAddr,
    /// The address its connections come from, if not the kernel's choice.
    source: Option<IpAddr>,
    socket: Option<TcpStream>,
    /// The handshake is done: requests can be written.
    connected: bool,
    /// A reply came back on this connection: the server has accepted it.
    accepted: bool,
    /// The server closed its side; the connection is dropped after this reply.
    peer_closed: bool,
    input: Vec<u8>,
    state: State,
}

/// One event loop and its clients.
pub struct Driver {
    poll: Poll,
    clients: Vec<Client>,
    style: ConnStyle,
    timeout: Duration,
    scratch: Vec<u8>,
    /// Clients with nothing more to do in the running phase.
    done: usize,
    /// Connections not yet accepted by the server.
    opening: usize,
    /// Clients waiting for their connection attempt to start.
    connect_queue: VecDeque<usize>,
}

impl Driver {
    /// A loop for the clients with the given global indices; client `index` talks to
    /// `targets[index % targets.len()]` (several nodes of one service, round robin).
    pub fn new(
        targets: &[SocketAddr],
        style: ConnStyle,
        timeout: Duration,
        indices: impl IntoIterator<Item = u32>,
    ) -> io::Result<Driver> {
        if targets.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no server address",
            ));
        }
        let clients = indices
            .into_iter()
            .map(|index| {
                let target = targets[index as usize % targets.len()];
                Client {
                    index,
                    target,
                    source: source_address(index, target, style),
                    socket: None,
                    connected: false,
                    accepted: false,
                    peer_closed: false,
                    input: Vec::new(),
                    state: State::Done,
                }
            })
            .collect();
        Ok(Driver {
            poll: Poll::new()?,
            clients,
            style,
            timeout,
            scratch: vec![0; READ_CHUNK],
            done: 0,
            opening: 0,
            connect_queue: VecDeque::new(),
        })
    }

    /// The number of clients this loop owns.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Runs `phase` until every client has nothing more to do.
    pub fn run(&mut self, phase: &mut impl Phase) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut ready = Vec::new();
        let now = Instant::now();
        self.done = 0;
        for slot in 0..self.clients.len() {
            self.issue(slot, phase, now);
            ready.push(slot);
        }
        let mut next_sweep = now + SWEEP;
        loop {
            while let Some(slot) = ready.pop() {
                let now = Instant::now();
                if let Some(outcome) = self.progress(slot, now) {
                    self.complete(slot, outcome, phase, now);
                    ready.push(slot);
                }
            }
            let now = Instant::now();
            self.start_connects(now);
            if now >= next_sweep {
                self.sweep(phase, now, &mut ready);
                next_sweep = now + SWEEP;
                continue;
            }
            if self.done == self.clients.len() {
                return Ok(());
            }
            match self.poll.poll(&mut events, Some(next_sweep - now)) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
            ready.extend(events.iter().map(|event| event.token().0));
        }
    }

    /// Fails timed-out requests and restarts clients whose retry delay is over.
    fn sweep(&mut self, phase: &mut impl Phase, now: Instant, ready: &mut Vec<usize>) {
        for slot in 0..self.clients.len() {
            let failure = match &mut self.clients[slot].state {
                State::Waiting(flight) => match flight.failed.take() {
                    Some(failure) => failure,
                    None if now - flight.issued >= self.timeout => Failure::Timeout(self.timeout),
                    None => continue,
                },
                State::RetryAt(at) if *at <= now => {
                    self.issue(slot, phase, now);
                    ready.push(slot);
                    continue;
                }
                State::RetryAt(_) | State::Done => continue,
            };
            self.complete(slot, Err(failure), phase, now);
            ready.push(slot);
        }
    }

    /// Asks the phase for the client's next request and starts it.
    fn issue(&mut self, slot: usize, phase: &mut impl Phase, now: Instant) {
        let style = self.style;
        let client_ref = ClientRef {
            index: self.clients[slot].index,
            slot,
        };
        let Some(mut request) = phase.next_request(client_ref, now) else {
            self.clients[slot].state = State::Done;
            self.done += 1;
            return;
        };
        if style == ConnStyle::Padded {
            let padded_len = request.bytes.len() + reply_padding(request.bytes.len());
            request.bytes.resize(padded_len, 0);
        }
        let client = &mut self.clients[slot];
        client.state = State::Waiting(InFlight {
            request,
            written: 0,
            issued: now,
            started: None,
            failed: None,
        });
        if client.socket.is_none() {
            self.connect_queue.push_back(slot);
        }
    }

    /// Starts queued connection attempts while fewer than [`MAX_OPENING`] persistent
    /// connections wait to be accepted.
    fn start_connects(&mut self, now: Instant) {
        let paced = self.style == ConnStyle::Persistent;
        while !paced || self.opening < MAX_OPENING {
            let Some(slot) = self.connect_queue.pop_front() else {
                return;
            };
            let client = &mut self.clients[slot];
            let State::Waiting(flight) = &mut client.state else {
                continue;
            };
            if client.socket.is_some() || flight.failed.is_some() {
                continue;
            }
            match connect_from(client.target, client.source, &self.poll, slot) {
                Ok(socket) => {
                    client.socket = Some(socket);
                    client.connected = false;
                    client.accepted = false;
                    client.peer_closed = false;
                    client.input.clear();
                    self.opening += 1;
                    if self.style != ConnStyle::Persistent {
                        flight.started = Some(now);
                    }
                }
                Err(error) => flight.failed = Some(Failure::Io(error)),
            }
        }
    }

    fn disconnect(&mut self, slot: usize) {
        let client = &mut self.clients[slot];
        if let Some(mut socket) = client.socket.take() {
            if !client.accepted {
                self.opening -= 1;
            }
            // Closing the descriptor removes it from the poll anyway; failure changes nothing.
            let _ = self.poll.registry().deregister(&mut socket);
        }
        client.connected = false;
        client.input.clear();
    }

    /// Writes and reads what the socket allows; `Some` once the request has its outcome.
    fn progress(&mut self, slot: usize, now: Instant) -> Option<Result<(), Failure>> {
        let style = self.style;
        let client = &mut self.clients[slot];
        let State::Waiting(flight) = &mut client.state else {
            return None;
        };
        if flight.failed.is_some() {
            return None;
        }
        let socket = client.socket.as_mut()?;
        if !client.connected {
            match established(socket) {
                Ok(true) => {
                    client.connected = true;
                    if let Err(error) = socket.set_nodelay(true) {
                        return Some(Err(Failure::Io(error)));
                    }
                }
                Ok(false) => return None,
                Err(error) => return Some(Err(Failure::Io(error))),
            }
        }
        let writing = flight.written < flight.request.bytes.len();
        while flight.written < flight.request.bytes.len() {
            flight.started.get_or_insert(now);
            match socket.write(&flight.request.bytes[flight.written..]) {
                Ok(0) => return Some(Err(Failure::Closed)),
                Ok(written) => flight.written += written,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return None,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Some(Err(Failure::Io(error))),
            }
        }
        if writing {
            // No reply before the whole request; its arrival raises a readable event.
            return None;
        }
        loop {
            match socket.read(&mut self.scratch) {
                Ok(0) => {
                    client.peer_closed = true;
                    break;
                }
                Ok(read) => client.input.extend_from_slice(&self.scratch[..read]),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Some(Err(Failure::Io(error))),
            }
        }
        match reply_len(&client.input, style) {
            Some(len) if client.input.len() > len => {
                Some(Err(Failure::TrailingBytes(client.input.len() - len)))
            }
            Some(len) if client.input.len() == len => Some(Ok(())),
            _ if client.peer_closed => Some(Err(Failure::Closed)),
            _ => None,
        }
    }

    /// Hands the outcome to the phase, then starts the client's next request (or a retry).
    fn complete(
        &mut self,
        slot: usize,
        outcome: Result<(), Failure>,
        phase: &mut impl Phase,
        now: Instant,
    ) {
        let client = &mut self.clients[slot];
        let State::Waiting(flight) = std::mem::replace(&mut client.state, State::Done) else {
            return;
        };
        let client_ref = ClientRef {
            index: client.index,
            slot,
        };
        let latency = now - flight.started.unwrap_or(flight.issued);
        let failed = outcome.is_err();
        if !failed && !client.accepted {
            client.accepted = true;
            self.opening -= 1;
        }
        let outcome = outcome.map(|()| {
            let header = ReplyHeader::parse(
                client.input[..REPLY_HEADER_LEN]
                    .try_into()
                    .expect("a complete reply has a whole header"),
            );
            let end = REPLY_HEADER_LEN + header.payload_size as usize;
            ReplyView {
                header,
                payload: &client.input[REPLY_HEADER_LEN..end],
            }
        });
        phase.finish(client_ref, flight.request, outcome, latency, now);
        client.input.clear();
        if failed || client.peer_closed || self.style != ConnStyle::Persistent {
            self.disconnect(slot);
        }
        if failed {
            self.clients[slot].state = State::RetryAt(now + RETRY_DELAY);
        } else {
            self.issue(slot, phase, now);
        }
    }
}

/// A non-blocking connection attempt to `target`, watched by `poll` under `slot`.
pub fn connect(target: SocketAddr, poll: &Poll, slot: usize) -> io::Result<TcpStream> {
    watched(TcpStream::connect(target)?, poll, slot)
}

/// `socket`, connecting, registered with `poll` under `slot`.
fn watched(mut socket: TcpStream, poll: &Poll, slot: usize) -> io::Result<TcpStream> {
    poll.registry().register(
        &mut socket,
        Token(slot),
        Interest::READABLE | Interest::WRITABLE,
    )?;
    Ok(socket)
}

/// Where client `index`'s connections to `target` come from: with a connection per request
/// to a loopback server, 127.0.0.2 and the next [`SOURCE_ADDRESSES`] addresses, round robin.
///
/// Thousands of connections a second, each left in TIME_WAIT for a minute by the side that
/// closes first, exhaust one source address's ports to a server: the kernel then searches
/// for a free one at every connect (perf: three quarters of the generator's CPU in
/// `__inet_hash_connect`), which caps server and floor alike at the generator's pace. Real
/// clients come from many hosts; on loopback, any 127.0.0.0/8 address is this host.
fn source_address(index: u32, target: SocketAddr, style: ConnStyle) -> Option<IpAddr> {
    if style == ConnStyle::Persistent || !target.ip().is_loopback() || !target.is_ipv4() {
        return None;
    }
    let host = 2 + index % SOURCE_ADDRESSES;
    Some(IpAddr::V4(Ipv4Addr::from(
        u32::from(Ipv4Addr::LOCALHOST) & !0xff | host,
    )))
}

/// [`connect`] from `source` (any port) when given.
fn connect_from(
    target: SocketAddr,
    source: Option<IpAddr>,
    poll: &Poll,
    slot: usize,
) -> io::Result<TcpStream> {
    let Some(source) = source else {
        return connect(target, poll, slot);
    };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(target),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(error) if error.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(error) => return Err(error),
    }
    watched(TcpStream::from_std(socket.into()), poll, slot)
}

/// Whether a non-blocking connect has completed; an error if it failed.
pub fn established(socket: &TcpStream) -> io::Result<bool> {
    if let Some(error) = socket.take_error()? {
        return Err(error);
    }
    match socket.peer_addr() {
        Ok(_) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(error) => Err(error),
    }
}

/// The length of the reply at the start of `input` once its header is there, padding included
/// for padded connections.
fn reply_len(input: &[u8], style: ConnStyle) -> Option<usize> {
    let header: &[u8; REPLY_HEADER_LEN] = input.get(..REPLY_HEADER_LEN)?.try_into().ok()?;
    let len = REPLY_HEADER_LEN + ReplyHeader::parse(header).payload_size as usize;
    Some(match style {
        ConnStyle::Padded => len + reply_padding(len),
        ConnStyle::Persistent | ConnStyle::PerRequest => len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(payload_size: u32) -> Vec<u8> {
        ReplyHeader {
            version: 2,
            code: 2102,
            payload_size,
        }
        .encode()
        .to_vec()
    }

    #[test]
    fn a_reply_ends_after_its_declared_payload() {
        assert_eq!(reply_len(&reply(176)[..6], ConnStyle::Persistent), None);
        assert_eq!(reply_len(&reply(176), ConnStyle::Persistent), Some(183));
        assert_eq!(reply_len(&reply(176), ConnStyle::PerRequest), Some(183));
    }

    #[test]
    fn only_connections_per_request_to_loopback_get_source_addresses_of_their_own() {
        let loopback: SocketAddr = "127.0.0.1:1357".parse().expect("address");
        let remote: SocketAddr = "192.0.2.1:1357".parse().expect("address");
        assert_eq!(source_address(0, loopback, ConnStyle::Persistent), None);
        assert_eq!(source_address(0, remote, ConnStyle::PerRequest), None);
        let first = source_address(0, loopback, ConnStyle::PerRequest);
        assert_eq!(first, Some("127.0.0.2".parse().expect("address")));
        assert_eq!(
            source_address(249, loopback, ConnStyle::Padded),
            Some("127.0.0.251".parse().expect("address"))
        );
        assert_eq!(source_address(250, loopback, ConnStyle::Padded), first);
    }

    #[test]
    fn a_padded_reply_ends_at_its_block_boundary() {
        assert_eq!(reply_len(&reply(176), ConnStyle::Padded), Some(1024));
        assert_eq!(reply_len(&reply(1017), ConnStyle::Padded), Some(1024));
        assert_eq!(reply_len(&reply(1018), ConnStyle::Padded), Some(2048));
    }
}
