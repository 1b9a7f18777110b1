//! One client connection: reassembles requests from reads, frames them, decides whether the
//! client pads, stages replies until the batch commits, and writes them out while tracking
//! which pull replies have been delivered whole.

use std::collections::{HashSet, VecDeque};
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::timers::Timers;
use super::Env;
use crate::handlers::Response;
use crate::protocol::padding::{self, Padding};
use crate::protocol::{Frame, FrameDecoder, MessageId, Reply, Step, REQUEST_HEADER_LEN};

/// Unsent reply bytes above which a connection's requests are no longer read: a client that
/// pipelines without reading replies cannot make the server buffer without bound.
const OUTPUT_HIGH_WATER: usize = 256 << 10;
/// Bytes read from one connection per turn, so one fast sender cannot starve the others.
const READ_BUDGET: usize = 1 << 20;
/// Requests served from one connection per turn, so that a client pipelining thousands of
/// requests cannot make everyone else wait for the end of its turn.
const REQUESTS_PER_TURN: usize = 64;
/// Input buffers larger than this are given back once empty (after a large request).
const INPUT_KEEP_CAPACITY: usize = 64 << 10;
/// Most reply buffers handed to one vectored write.
const MAX_WRITE_SLICES: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Serving requests.
    Open,
    /// No more requests: write what is produced, then close.
    ClosingAfterFlush,
    /// Everything written and our side shut down; dropping what the peer still sends until it
    /// closes or the linger time ends, so that a reset cannot destroy the last reply.
    Lingering,
    Closed,
}

/// A released reply, and the messages it delivers once written whole.
struct Outgoing {
    bytes: Vec<u8>,
    delivered: Vec<MessageId>,
}

/// A reply produced in the current batch, released to the socket only after the commit.
struct Staged {
    response: Response,
    padded: bool,
}

pub(crate) struct Connection {
    socket: TcpStream,
    key: usize,
    peer: SocketAddr,
    state: State,
    deadline: Option<Instant>,
    /// No WouldBlock seen since the last readiness event: the socket may hold more bytes.
    readable: bool,
    peer_closed: bool,
    writable_interest: bool,

    input: Vec<u8>,
    /// `input[input_start..]` is not yet consumed.
    input_start: usize,
    /// Stream offset of `input[input_start]`.
    consumed: u64,
    /// Stream offset where the request being decoded began.
    request_start: u64,
    decoder: FrameDecoder,
    /// A complete request held until its padding can be classified.
    held: Option<(Frame, usize)>,
    grace_expired: bool,
    /// Processing stopped (backpressure, turn budget) with input left to process.
    stalled: bool,
    /// Requests this connection may still serve in the current turn.
    requests_left: usize,

    staged: Vec<Staged>,
    staged_len: usize,
    output: VecDeque<Outgoing>,
    /// Bytes of `output.front()` already written.
    output_offset: usize,
    output_len: usize,
}

impl Connection {
    pub fn new(socket: TcpStream, key: usize, peer: SocketAddr, max_payload: u32) -> Connection {
        Connection {
            socket,
            key,
            peer,
            state: State::Open,
            deadline: None,
            readable: true,
            peer_closed: false,
            writable_interest: false,
            input: Vec::new(),
            input_start: 0,
            consumed: 0,
            request_start: 0,
            decoder: FrameDecoder::new(max_payload),
            held: None,
            grace_expired: false,
            stalled: false,
            requests_left: REQUESTS_PER_TURN,
            staged: Vec::new(),
            staged_len: 0,
            output: VecDeque::new(),
            output_offset: 0,
            output_len: 0,
        }
    }

    pub fn socket(&mut self) -> &mut TcpStream {
        &mut self.socket
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    pub fn mark_readable(&mut self) {
        self.readable = true;
    }

    fn backpressured(&self) -> bool {
        self.output_len + self.staged_len > OUTPUT_HIGH_WATER
    }

    /// Whether requests must wait: too much unsent output, or this turn's budget is spent.
    fn must_pause(&self) -> bool {
        self.backpressured() || self.requests_left == 0
    }

    /// Whether the loop should come back to this connection without waiting for an event:
    /// bytes may be left in the socket, or requests in the buffer, after a budget or
    /// backpressure stop.
    pub fn wants_service(&self) -> bool {
        match self.state {
            State::Closed => false,
            State::Open => !self.backpressured() && (self.readable || self.stalled),
            State::ClosingAfterFlush | State::Lingering => self.readable,
        }
    }

    /// Reads what the socket holds (within the budget) and serves the complete requests.
    pub fn on_readable(&mut self, env: &mut Env<'_>, scratch: &mut [u8]) {
        self.requests_left = REQUESTS_PER_TURN;
        self.process(env);
        let mut budget = READ_BUDGET;
        while self.readable && budget > 0 && self.state != State::Closed {
            if self.state == State::Open && self.must_pause() {
                break;
            }
            match self.socket.read(scratch) {
                Ok(0) => {
                    self.readable = false;
                    self.peer_closed = true;
                }
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    if self.state == State::Open {
                        self.input.extend_from_slice(&scratch[..n]);
                        self.process(env);
                    } else {
                        self.consumed += n as u64;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => self.readable = false,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => self.fail("read", &error),
            }
        }
        if self.peer_closed {
            self.on_peer_closed(env);
        }
    }

    fn on_peer_closed(&mut self, env: &mut Env<'_>) {
        match self.state {
            State::Open => {
                // A held request is decided now: no more bytes will come.
                self.process(env);
                if !self.stalled {
                    log::debug!("{}: closed by the client", self.peer);
                    self.drop_input();
                    self.state = State::ClosingAfterFlush;
                }
            }
            State::Lingering => self.state = State::Closed,
            State::ClosingAfterFlush | State::Closed => {}
        }
    }

    /// A deadline of this connection passed: the padding grace time or the linger time.
    pub fn on_deadline(&mut self, env: &mut Env<'_>, now: Instant) {
        if self.deadline.is_none_or(|deadline| deadline > now) {
            return;
        }
        self.deadline = None;
        match self.state {
            State::Open if self.held.is_some() => {
                self.grace_expired = true;
                self.process(env);
            }
            State::Lingering => self.state = State::Closed,
            _ => {}
        }
    }

    fn set_deadline(&mut self, at: Instant, timers: &mut Timers) {
        self.deadline = Some(at);
        timers.schedule(at, self.key);
    }

    /// Serves every complete request in the buffer, in order.
    fn process(&mut self, env: &mut Env<'_>) {
        self.stalled = false;
        while self.state == State::Open {
            if self.must_pause() {
                self.stalled = self.input_start < self.input.len() || self.held.is_some();
                break;
            }
            let (frame, len) = match self.held.take() {
                Some(held) => held,
                None => match self.decoder.decode(&self.input[self.input_start..]) {
                    Step::NeedMore => break,
                    Step::Discarded(n) => {
                        self.consume(n);
                        continue;
                    }
                    Step::Frame { frame, len } => (frame, len),
                },
            };
            if let Frame::Fatal { header, reason } = frame {
                log::warn!(
                    "{}: request code {}: {reason}; closing",
                    self.peer,
                    header.code
                );
                self.stage(Response::error(), false, env);
                self.drop_input();
                self.state = State::ClosingAfterFlush;
                break;
            }
            let end = self.consumed + len as u64;
            let following = &self.input[self.input_start + len..];
            let closed = self.peer_closed || self.grace_expired;
            match padding::classify(self.request_start, end, following, closed) {
                Padding::Undecided => {
                    self.held = Some((frame, len));
                    if self.deadline.is_none() {
                        let at = env.now + env.core.config.padding_grace;
                        self.set_deadline(at, &mut env.core.timers);
                    }
                    break;
                }
                Padding::Exact => {
                    self.serve(frame, false, env);
                    self.consume(len);
                    self.request_start = self.consumed;
                }
                Padding::Padded => {
                    // The padding, and anything after it, is never parsed: the client sends
                    // one request per connection.
                    log::debug!("{}: zero-padded client", self.peer);
                    self.serve(frame, true, env);
                    self.drop_input();
                    self.state = State::ClosingAfterFlush;
                }
            }
            self.grace_expired = false;
            self.deadline = None;
        }
        self.compact_input();
    }

    /// Runs one framed request (still at the start of the unconsumed input) and stages its
    /// reply.
    fn serve(&mut self, frame: Frame, padded: bool, env: &mut Env<'_>) {
        self.requests_left = self.requests_left.saturating_sub(1);
        let response = match frame {
            Frame::Request {
                header,
                code,
                body_len,
            } => {
                let body_start = self.input_start + REQUEST_HEADER_LEN;
                let body = &self.input[body_start..body_start + body_len];
                log::debug!("{}: {code:?} from {}", self.peer, header.client_id);
                env.serve(code, header.client_id, body, self.peer)
            }
            Frame::Rejected { header } => {
                log::warn!(
                    "{}: request code {} with payload size {} rejected",
                    self.peer,
                    header.code,
                    header.payload_size
                );
                Response::error()
            }
            Frame::Fatal { .. } => Response::error(),
        };
        self.stage(response, padded, env);
    }

    fn stage(&mut self, response: Response, padded: bool, env: &mut Env<'_>) {
        if self.staged.is_empty() {
            env.batch.touched.push(self.key);
        }
        self.staged_len += response.reply.encoded_len();
        self.staged.push(Staged { response, padded });
    }

    fn consume(&mut self, n: usize) {
        self.input_start += n;
        self.consumed += n as u64;
    }

    fn drop_input(&mut self) {
        self.consume(self.input.len() - self.input_start);
        self.held = None;
        self.stalled = false;
    }

    fn compact_input(&mut self) {
        if self.input_start == self.input.len() {
            self.input.clear();
            self.input_start = 0;
            if self.input.capacity() > INPUT_KEEP_CAPACITY {
                self.input.shrink_to(INPUT_KEEP_CAPACITY);
            }
        } else if self.input_start > self.input.len() / 2 {
            self.input.drain(..self.input_start);
            self.input_start = 0;
        }
    }

    /// Moves the batch's replies to the output once its fate is known: as produced if it
    /// committed, as 9000 if it did not (their writes are gone, their messages stay queued).
    pub fn release(&mut self, committed: bool, in_flight: &mut HashSet<MessageId>) {
        for Staged { response, padded } in self.staged.drain(..) {
            let (reply, delivered) = if committed {
                (response.reply, response.delivered)
            } else {
                forget(&response.delivered, in_flight);
                (Reply::error(), Vec::new())
            };
            let bytes = reply.into_bytes(padded);
            self.output_len += bytes.len();
            self.output.push_back(Outgoing { bytes, delivered });
        }
        self.staged_len = 0;
    }

    /// Writes released replies until the socket would block. Messages of every reply written
    /// whole are added to `delivered`. A connection that is done starts lingering until
    /// `linger_until`.
    pub fn flush(
        &mut self,
        delivered: &mut Vec<MessageId>,
        timers: &mut Timers,
        linger_until: Instant,
    ) {
        while self.output_len > 0 && self.state != State::Closed {
            let mut slices = [IoSlice::new(&[]); MAX_WRITE_SLICES];
            let mut count = 0;
            for (index, outgoing) in self.output.iter().take(MAX_WRITE_SLICES).enumerate() {
                let skip = if index == 0 { self.output_offset } else { 0 };
                slices[index] = IoSlice::new(&outgoing.bytes[skip..]);
                count += 1;
            }
            match self.socket.write_vectored(&slices[..count]) {
                Ok(0) => self.fail("write", &io::ErrorKind::WriteZero.into()),
                Ok(n) => self.advance_output(n, delivered),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => self.fail("write", &error),
            }
        }
        if self.state == State::ClosingAfterFlush && self.output_len == 0 && self.staged.is_empty()
        {
            if self.peer_closed {
                self.state = State::Closed;
            } else {
                if let Err(error) = self.socket.shutdown(Shutdown::Write) {
                    log::debug!("{}: shutdown: {error}", self.peer);
                }
                self.state = State::Lingering;
                self.set_deadline(linger_until, timers);
            }
        }
    }

    /// Drops `n` written bytes from the output; the messages of replies now written whole go
    /// to `delivered`.
    fn advance_output(&mut self, mut n: usize, delivered: &mut Vec<MessageId>) {
        self.output_len -= n;
        while n > 0 {
            let Some(front) = self.output.front() else {
                break;
            };
            let left = front.bytes.len() - self.output_offset;
            if n < left {
                self.output_offset += n;
                break;
            }
            n -= left;
            if let Some(done) = self.output.pop_front() {
                delivered.extend(done.delivered);
            }
            self.output_offset = 0;
        }
    }

    fn fail(&mut self, operation: &str, error: &io::Error) {
        log::debug!("{}: {operation} failed: {error}", self.peer);
        self.state = State::Closed;
    }

    /// Stops serving for shutdown: requests not yet served are dropped; produced replies are
    /// still written.
    pub fn begin_shutdown(&mut self) {
        if self.state == State::Open {
            self.drop_input();
            self.state = State::ClosingAfterFlush;
        }
        if self.output_len == 0 && self.staged.is_empty() {
            self.state = State::Closed;
        }
    }

    /// Asks for WRITABLE events only while output is waiting.
    pub fn update_interest(&mut self, registry: &Registry) -> io::Result<()> {
        let want = self.output_len > 0;
        if want != self.writable_interest {
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            registry.reregister(&mut self.socket, Token(self.key), interest)?;
            self.writable_interest = want;
        }
        Ok(())
    }

    /// Makes the messages of replies that were never written whole pullable again.
    pub fn abandon(self, in_flight: &mut HashSet<MessageId>) {
        for staged in &self.staged {
            forget(&staged.response.delivered, in_flight);
        }
        let unwritten: Vec<&[MessageId]> = self
            .output
            .iter()
            .map(|outgoing| outgoing.delivered.as_slice())
            .filter(|ids| !ids.is_empty())
            .collect();
        for ids in &unwritten {
            forget(ids, in_flight);
        }
        if !unwritten.is_empty() {
            log::warn!(
                "{}: connection lost before a pull reply was written; its messages stay queued",
                self.peer
            );
        }
    }
}

fn forget(ids: &[MessageId], in_flight: &mut HashSet<MessageId>) {
    for id in ids {
        in_flight.remove(id);
    }
}
