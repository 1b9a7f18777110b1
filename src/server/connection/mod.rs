//! One client connection: the socket shell around a [`RequestReader`] (bytes in, requests
//! out) and an [`Outbox`] (replies out, once their commit is durable). It reads and writes
//! within per-turn budgets, serves what the reader yields, pauses while its replies pile up,
//! and says when it is slow, silent or idle. Large sends are in [`upload`].

mod upload;

use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::deliveries::Deliveries;
use super::outbox::{Outbox, Written};
use super::reader::{Event, RequestReader};
use super::timers::Timers;
use super::Env;
use crate::config::Config;
use crate::handlers::Response;
use crate::metrics::{ConnectionKind, ErrorCause};
use crate::protocol::FrameDecoder;
use upload::{InboundUpload, Syncing};

/// Unsent reply bytes above which a connection's requests are no longer read: a client that
/// pipelines without reading replies cannot make the server buffer without bound.
const OUTPUT_HIGH_WATER: usize = 256 << 10;
/// Bytes read from one connection per turn, so one fast sender cannot starve the others.
const READ_BUDGET: usize = 256 << 10;
/// Bytes written to one connection per turn: a client reading a 4 GiB reply as fast as
/// loopback allows must not hold the loop for the whole reply.
const WRITE_BUDGET: usize = 256 << 10;
/// Requests served from one connection per turn, so that a client pipelining thousands of
/// requests cannot make everyone else wait for the end of its turn.
const REQUESTS_PER_TURN: usize = 64;

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

pub(crate) struct Connection {
    socket: TcpStream,
    key: usize,
    serial: u64,
    peer: SocketAddr,
    state: State,
    deadline: Option<Instant>,
    /// No WouldBlock seen since the last readiness event: the socket may hold more bytes.
    readable: bool,
    peer_closed: bool,
    writable_interest: bool,

    reader: RequestReader,
    /// Processing stopped (backpressure, turn budget) with input left to process.
    stalled: bool,
    /// Requests this connection may still serve in the current turn.
    requests_left: usize,
    upload: Option<InboundUpload>,
    syncing: Option<Syncing>,

    outbox: Outbox,
    /// The last flush stopped at its budget, not at a full socket: no event will come.
    write_budget_spent: bool,

    /// When bytes last arrived.
    last_read: Instant,
    /// When the first bytes of the request not yet complete arrived.
    request_started: Option<Instant>,
    /// Requests answered so far. Once one is, the connection is never closed for being idle:
    /// persistent clients connect once and may sit at their menu for hours (protocol §4.4).
    requests_served: u64,
    /// How it is served, for the metrics.
    kind: ConnectionKind,
}

/// The limits [`Connection::timed_out`] enforces.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub request: Duration,
    pub idle: Duration,
}

impl Connection {
    pub fn new(
        socket: TcpStream,
        key: usize,
        serial: u64,
        peer: SocketAddr,
        config: &Config,
        now: Instant,
    ) -> Connection {
        Connection {
            socket,
            key,
            serial,
            peer,
            state: State::Open,
            deadline: None,
            readable: true,
            peer_closed: false,
            writable_interest: false,
            reader: RequestReader::new(
                FrameDecoder::new(config.max_payload, config.spool_threshold),
                config.padding_grace,
            ),
            stalled: false,
            requests_left: REQUESTS_PER_TURN,
            upload: None,
            syncing: None,
            outbox: Outbox::new(now),
            write_budget_spent: false,
            last_read: now,
            request_started: None,
            requests_served: 0,
            kind: ConnectionKind::New,
        }
    }

    pub fn kind(&self) -> ConnectionKind {
        self.kind
    }

    fn classify(&mut self, kind: ConnectionKind, env: &Env<'_>) {
        if self.kind != kind {
            env.core.metrics.connection_classified(self.kind, kind);
            self.kind = kind;
        }
    }

    pub fn serial(&self) -> u64 {
        self.serial
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

    /// Whether the next read would take an upload's content: bulk work, paced.
    pub fn bulk_reading(&self) -> bool {
        self.state == State::Open && self.syncing.is_none() && self.reader.awaits_upload_bytes()
    }

    /// Whether the next write would send a spooled content: bulk work, paced.
    pub fn bulk_writing(&self) -> bool {
        self.state != State::Closed && self.outbox.writes_stream_next()
    }

    pub fn is_bulk(&self) -> bool {
        self.bulk_reading() || self.bulk_writing()
    }

    fn backpressured(&self) -> bool {
        self.outbox.queued() > OUTPUT_HIGH_WATER as u64
    }

    /// Whether requests must wait: too much unsent output, this turn's budget is spent, or an
    /// upload's reply is not known yet.
    fn must_pause(&self) -> bool {
        self.backpressured() || self.requests_left == 0 || self.syncing.is_some()
    }

    /// Whether the loop should come back to this connection without waiting for an event:
    /// bytes may be left in the socket, or requests in the buffer, after a budget or
    /// backpressure stop.
    pub fn wants_service(&self) -> bool {
        match self.state {
            State::Closed => false,
            _ if self.write_budget_spent => true,
            // A sync in progress wakes the loop itself when it ends.
            State::Open => {
                self.syncing.is_none() && !self.backpressured() && (self.readable || self.stalled)
            }
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
                    self.reader.close_input();
                }
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    self.last_read = env.now;
                    if self.state == State::Open {
                        self.request_started.get_or_insert(env.now);
                        // Content that arrives while nothing else is buffered goes straight
                        // to its upload, without a copy into the reader's buffer.
                        let (content, rest) = self.reader.take_upload_bytes(&scratch[..n]);
                        self.write_upload(content, env);
                        self.reader.feed(rest);
                        self.process(env);
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
            State::Open if self.reader.is_holding() => self.process(env),
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
        let requests_left = self.requests_left;
        self.serve_buffered(env);
        // A request left incomplete must arrive whole within the request timeout, counted
        // from when the request before it was served. Uploads are timed by their progress,
        // and requests held by backpressure by the client's reading.
        let incomplete =
            !self.stalled && self.syncing.is_none() && self.reader.has_partial_request();
        self.request_started = if !incomplete {
            None
        } else if self.requests_left < requests_left {
            Some(env.now)
        } else {
            self.request_started.or(Some(env.now))
        };
    }

    /// Serves what the reader has, in order, until it needs more bytes or the connection
    /// must pause.
    fn serve_buffered(&mut self, env: &mut Env<'_>) {
        self.stalled = false;
        while self.state == State::Open {
            if self.must_pause() {
                self.stalled = self.reader.has_buffered();
                break;
            }
            let peer = self.peer;
            let (response, padded) = match self.reader.next(env.now) {
                Event::NeedMore => break,
                Event::Undecided { until } => {
                    if self.deadline.is_none() {
                        self.set_deadline(until, &mut env.core.timers);
                    }
                    break;
                }
                Event::Request {
                    header,
                    code,
                    body,
                    padded,
                } => {
                    log::debug!("{peer}: {code} from {}", header.client_id);
                    env.core.pacer.saw_request(env.now);
                    (env.serve(code, &header, body, peer), padded)
                }
                Event::Rejected { header, padded } => {
                    env.count_error(ErrorCause::Rejected);
                    log::warn!(
                        "{peer}: request code {} with payload size {} rejected",
                        header.code,
                        header.payload_size
                    );
                    env.core.pacer.saw_request(env.now);
                    (Response::error(), padded)
                }
                Event::Fatal { header, reason } => {
                    env.count_error(ErrorCause::Framing);
                    log::warn!("{peer}: request code {}: {reason}; closing", header.code);
                    self.close_with_error(env);
                    break;
                }
                Event::UploadStart { header, code, head } => {
                    self.start_upload(header, code, head, env);
                    continue;
                }
                Event::UploadBytes(content) => {
                    if let Some(upload) = self.upload.as_mut() {
                        let writeback_step = env.core.pacer.writeback_step(env.now);
                        upload.write(content, writeback_step, peer);
                    }
                    continue;
                }
                Event::UploadEnd { padded } => match self.upload.take() {
                    Some(InboundUpload {
                        header,
                        code,
                        head,
                        sink: Ok(upload),
                    }) => {
                        self.count_request(padded, env);
                        let syncing = Syncing {
                            header,
                            code,
                            head,
                            padded,
                        };
                        self.sync_upload(upload, syncing, env);
                        continue;
                    }
                    Some(InboundUpload { sink: Err(_), .. }) | None => (Response::error(), padded),
                },
            };
            self.count_request(padded, env);
            self.stage(response, padded, env);
        }
    }

    /// A request was answered (or is being made durable): padded clients get nothing more.
    fn count_request(&mut self, padded: bool, env: &Env<'_>) {
        self.requests_left = self.requests_left.saturating_sub(1);
        self.requests_served += 1;
        self.deadline = None;
        if padded {
            log::debug!("{}: zero-padded client", self.peer);
            self.classify(ConnectionKind::Padded, env);
            self.drop_input();
            self.state = State::ClosingAfterFlush;
        } else {
            self.classify(ConnectionKind::Persistent, env);
        }
    }

    /// Answers 9000 and closes after writing it: the rest of the stream cannot be trusted.
    fn close_with_error(&mut self, env: &mut Env<'_>) {
        self.stage(Response::error(), false, env);
        self.drop_input();
        self.state = State::ClosingAfterFlush;
    }

    fn stage(&mut self, response: Response, padded: bool, env: &mut Env<'_>) {
        let Response { reply, delivered } = response;
        if self.outbox.stage(reply.encode(), delivered, padded) {
            env.core.pipeline.touched(self.key);
        }
    }

    /// Drops every request not yet served, and the content of an upload in progress.
    fn drop_input(&mut self) {
        self.reader.stop();
        self.upload = None;
        self.stalled = false;
    }

    /// Ties the current round's staged replies to commit `epoch` (see [`Outbox::seal`]).
    pub fn seal(&mut self, epoch: u64, committed: bool, deliveries: &mut Deliveries) {
        self.outbox.seal(epoch, committed, deliveries);
    }

    /// Releases the replies whose commit is durable (see [`Outbox::release_through`]).
    pub fn release_through(&mut self, durable: u64, flushed: bool, deliveries: &mut Deliveries) {
        self.outbox.release_through(durable, flushed, deliveries);
    }

    /// Whether replies wait for a commit to become durable.
    pub fn awaits_flush(&self) -> bool {
        self.outbox.awaits_flush()
    }

    /// Writes released replies until the socket would block or this turn's write budget is
    /// spent. Messages of every reply written whole are delivered. A connection
    /// that is done starts lingering until `linger_until`.
    pub fn flush(
        &mut self,
        deliveries: &mut Deliveries,
        timers: &mut Timers,
        linger_until: Instant,
    ) {
        self.write_budget_spent = false;
        if self.state == State::Closed {
            return;
        }
        match self
            .outbox
            .write_to(&mut self.socket, WRITE_BUDGET, deliveries)
        {
            Ok(written) => self.write_budget_spent = written == Written::BudgetSpent,
            Err(error) => self.fail("write", &error),
        }
        let done = self.outbox.is_empty() && self.syncing.is_none();
        if self.state == State::ClosingAfterFlush && done {
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

    /// Why the connection should be closed for slowness or silence at `now`, if it should. A
    /// sync in progress is the server's own wait, never the client's.
    pub fn timed_out(&self, now: Instant, limits: Timeouts) -> Option<&'static str> {
        let since = |at: Instant| now.saturating_duration_since(at);
        if matches!(self.state, State::Closed | State::Lingering) || self.syncing.is_some() {
            return None;
        }
        if self.outbox.unwritten() > 0 && since(self.outbox.last_progress()) >= limits.request {
            return Some("did not read its replies");
        }
        if self.state != State::Open {
            return None;
        }
        if self.upload.is_some() {
            return (since(self.last_read) >= limits.request).then_some("stalled in an upload");
        }
        match self.request_started {
            Some(at) => (since(at) >= limits.request).then_some("did not complete a request"),
            None => {
                let never_served = self.requests_served == 0;
                (never_served && self.is_quiet() && since(self.last_read) >= limits.idle)
                    .then_some("idle before its first request")
            }
        }
    }

    /// Since when the connection has been waiting for its client with nothing in progress;
    /// `None` while it is busy or closing. At the connection cap, the longest-idle one makes
    /// room for a new one.
    pub fn idle_since(&self) -> Option<Instant> {
        // Readable: bytes may have arrived that were not read yet.
        let waiting = self.state == State::Open
            && !self.readable
            && self.request_started.is_none()
            && self.upload.is_none()
            && self.syncing.is_none()
            && !self.reader.is_holding();
        (waiting && self.is_quiet()).then_some(self.last_read.max(self.outbox.last_progress()))
    }

    /// Nothing to write, nothing staged and no input held back.
    fn is_quiet(&self) -> bool {
        self.outbox.is_empty() && !self.stalled
    }

    /// Closes the connection at once, for a timeout or an internal failure.
    pub fn force_close(&mut self) {
        self.state = State::Closed;
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
        if self.outbox.is_empty() && self.syncing.is_none() {
            self.state = State::Closed;
        }
    }

    /// Asks for WRITABLE events only while output is waiting.
    pub fn update_interest(&mut self, registry: &Registry) -> io::Result<()> {
        let want = self.outbox.unwritten() > 0;
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
    pub fn abandon(self, deliveries: &mut Deliveries) {
        if self.outbox.abandon(deliveries) {
            log::warn!(
                "{}: connection lost before a pull reply was written; its messages stay queued",
                self.peer
            );
        }
    }
}
