//! One client connection: the socket shell around a [`RequestReader`] (bytes in, requests
//! out) and an [`Outbox`] (replies out, once their commit is durable). It reads and writes
//! within per-turn budgets, pauses while its replies pile up, and says when it is slow,
//! silent or idle. It knows nothing of the server: what its input needs done (a request
//! served, an upload opened or synced, a deadline kept) it yields as [`Work`] from
//! [`Connection::next_work`], and the loop hands back the answers ([`work`]). Large sends are
//! in [`upload`], a parked long-poll in [`long_poll`], a push subscription in
//! [`subscription`].

mod long_poll;
mod subscription;
mod upload;
mod work;

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::deliveries::Deliveries;
use super::outbox::{Flush, Outbox, RoundEnd, Written};
use super::reader::RequestReader;
use crate::auth::Session;
use crate::config::Config;
use crate::metrics::ConnectionKind;
use crate::protocol::FrameDecoder;
use long_poll::Parked;
pub(crate) use long_poll::Unpark;
use subscription::Subscription;
pub(crate) use upload::LargeSend;
use upload::{InboundUpload, Syncing};
use work::Pass;
pub(crate) use work::{Answered, Work};

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
    ClosingAfterWriting,
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
    /// The padding-grace or linger deadline; the loop keeps the timer.
    deadline: Option<Instant>,
    /// No WouldBlock seen since the last readiness event: the socket may hold more bytes.
    readable: bool,
    peer_closed: bool,
    writable_interest: bool,

    reader: RequestReader,
    /// Where [`Connection::next_work`] is in the input.
    pass: Pass,
    /// Processing stopped (backpressure, turn budget) with input left to process.
    stalled: bool,
    /// Requests this connection may still serve in the current turn.
    requests_left: usize,
    upload: Option<InboundUpload>,
    syncing: Option<Syncing>,
    /// A long-poll waiting for a message; nothing behind it is served until it is answered.
    parked: Option<Parked>,
    /// Messages for this id are pushed here (protocol §E5).
    subscription: Option<Subscription>,

    outbox: Outbox,
    /// What the client has established on this connection: hello, challenge,
    /// authentication.
    session: Session,
    /// The last write stopped at its budget, not at a full socket: no event will come.
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
            pass: Pass::Idle,
            stalled: false,
            requests_left: REQUESTS_PER_TURN,
            upload: None,
            syncing: None,
            parked: None,
            subscription: None,
            outbox: Outbox::new(now),
            session: Session::default(),
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

    pub fn key(&self) -> usize {
        self.key
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

    /// The session, for a request served outside [`Connection::next_work`]'s borrow (a large
    /// send's head).
    pub fn session_mut(&mut self) -> &mut Session {
        &mut self.session
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

    /// Whether requests must wait: too much unsent output, this turn's budget is spent, an
    /// upload's reply is not known yet, or a long-poll is parked.
    fn must_pause(&self) -> bool {
        self.reads_paused() || self.parked.is_some()
    }

    /// Whether the socket must not be read: requests wait for one of the reasons of
    /// [`must_pause`](Self::must_pause), but behind a parked long-poll bytes are still read,
    /// up to a bound, so that the client's close is seen.
    fn reads_paused(&self) -> bool {
        self.backpressured()
            || self.requests_left == 0
            || self.syncing.is_some()
            || self.parked_input_full()
    }

    /// Whether the loop should come back to this connection without waiting for an event:
    /// bytes may be left in the socket, or requests in the buffer, after a budget or
    /// backpressure stop.
    pub fn wants_service(&self) -> bool {
        match self.state {
            State::Closed => false,
            _ if self.write_budget_spent => true,
            // A sync in progress wakes the loop itself when it ends, and a parked long-poll's
            // waiters do; until then only the socket may need reading.
            State::Open if self.parked.is_some() => {
                self.readable && !self.backpressured() && !self.parked_input_full()
            }
            State::Open => {
                self.syncing.is_none() && !self.backpressured() && (self.readable || self.stalled)
            }
            State::ClosingAfterWriting | State::Lingering => self.readable,
        }
    }

    /// Ties the current round's staged replies to how it ended (see [`Outbox::seal`]).
    pub fn seal(&mut self, end: RoundEnd, deliveries: &mut Deliveries) {
        self.outbox.seal(end, deliveries);
    }

    /// Releases the replies whose commit is durable (see [`Outbox::release_through`]).
    pub fn release_through(&mut self, durable: u64, flush: Flush, deliveries: &mut Deliveries) {
        self.outbox.release_through(durable, flush, deliveries);
    }

    /// Whether replies wait for a commit to become durable.
    pub fn awaits_flush(&self) -> bool {
        self.outbox.awaits_flush()
    }

    /// Writes released replies until the socket would block or this turn's write budget is
    /// spent. Messages of every reply written whole are delivered. A connection that is done
    /// starts lingering until `linger_until`, and returns that deadline for the loop to keep.
    #[must_use]
    pub fn write_out(
        &mut self,
        deliveries: &mut Deliveries,
        linger_until: Instant,
    ) -> Option<Instant> {
        self.write_budget_spent = false;
        if self.state == State::Closed {
            return None;
        }
        match self
            .outbox
            .write_to(&mut self.socket, WRITE_BUDGET, deliveries)
        {
            Ok(written) => self.write_budget_spent = written == Written::BudgetSpent,
            Err(error) => self.fail("write", &error),
        }
        let done = self.outbox.is_empty() && self.syncing.is_none() && self.parked.is_none();
        if self.state == State::ClosingAfterWriting && done {
            if self.peer_closed {
                self.state = State::Closed;
            } else {
                if let Err(error) = self.socket.shutdown(Shutdown::Write) {
                    log::debug!("{}: shutdown: {error}", self.peer);
                }
                self.state = State::Lingering;
                self.deadline = Some(linger_until);
                return self.deadline;
            }
        }
        None
    }

    /// Why the connection should be closed for slowness or silence at `now`, if it should. A
    /// sync in progress and a parked long-poll are the server's own waits, never the
    /// client's.
    pub fn timed_out(&self, now: Instant, limits: Timeouts) -> Option<&'static str> {
        let since = |at: Instant| now.saturating_duration_since(at);
        if matches!(self.state, State::Closed | State::Lingering) || self.syncing.is_some() {
            return None;
        }
        if self.outbox.unwritten() > 0 && since(self.outbox.last_progress()) >= limits.request {
            return Some("did not read its replies");
        }
        if self.state != State::Open || self.parked.is_some() {
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
    /// `None` while it is busy, subscribed or closing. At the connection cap, the longest-idle
    /// one makes room for a new one.
    pub fn idle_since(&self) -> Option<Instant> {
        // Readable: bytes may have arrived that were not read yet.
        let waiting = self.state == State::Open
            && !self.readable
            && self.request_started.is_none()
            && self.upload.is_none()
            && self.syncing.is_none()
            && self.parked.is_none()
            && self.subscription.is_none()
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
        self.pass = Pass::Idle;
    }

    fn fail(&mut self, operation: &str, error: &io::Error) {
        log::debug!("{}: {operation} failed: {error}", self.peer);
        self.state = State::Closed;
    }

    /// Drops every request not yet served, and the content of an upload in progress.
    fn drop_input(&mut self) {
        self.reader.stop();
        self.upload = None;
        self.stalled = false;
    }

    /// Stops serving for shutdown: requests not yet served are dropped; produced replies are
    /// still written, and a parked long-poll is answered empty first.
    pub fn begin_shutdown(&mut self) {
        if self.state == State::Open {
            self.drop_input();
            self.state = State::ClosingAfterWriting;
        }
        if self.parked.is_some() {
            self.unpark(Unpark::Empty);
        } else if self.outbox.is_empty() && self.syncing.is_none() {
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

    /// Makes the messages of replies that were never written whole pullable again, and those
    /// pushed and not acknowledged free to push again.
    pub fn abandon(mut self, deliveries: &mut Deliveries) {
        self.end_subscription(deliveries);
        if self.outbox.abandon(deliveries) {
            log::warn!(
                "{}: connection lost before a pull reply was written; its messages stay queued",
                self.peer
            );
        }
    }
}
