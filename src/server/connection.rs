//! One client connection: reassembles requests from reads, frames them, decides whether the
//! client pads, stages replies until the batch commits, and writes them out while tracking
//! which pull replies have been delivered whole. Large send contents are streamed into a
//! spool file as they arrive, and large pull replies from their files as the socket accepts
//! them, so memory does not grow with message size.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::sync::Synced;
use super::timers::Timers;
use super::Env;
use crate::config::Config;
use crate::handlers::{HandlerError, Part, Response};
use crate::metrics::{ConnectionKind, ErrorCause};
use crate::protocol::padding::{self, Padding};
use crate::protocol::{
    Frame, FrameDecoder, MessageId, Reply, RequestCode, RequestHeader, SendHead, Step,
    REQUEST_HEADER_LEN,
};
use crate::store::Upload;

/// Unsent reply bytes above which a connection's requests are no longer read: a client that
/// pipelines without reading replies cannot make the server buffer without bound.
const OUTPUT_HIGH_WATER: usize = 256 << 10;
/// Bytes read from one connection per turn, so one fast sender cannot starve the others.
const READ_BUDGET: usize = 256 << 10;
/// Bytes written to one connection per turn: a client reading a 4 GiB reply as fast as
/// loopback allows must not hold the loop for the whole reply.
const WRITE_BUDGET: usize = 256 << 10;
/// Bytes of a spooled content read from its file per write.
const FILE_CHUNK: usize = 256 << 10;
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

/// A released piece of a reply, and the messages its reply delivers once this, its last
/// piece, is written whole.
struct Outgoing {
    data: Outbound,
    delivered: Vec<MessageId>,
}

enum Outbound {
    Bytes(Vec<u8>),
    /// A spooled content, `remaining` bytes of it still to be read from `file`.
    File {
        file: File,
        remaining: u64,
    },
}

impl Outbound {
    fn len(&self) -> u64 {
        match self {
            Outbound::Bytes(bytes) => bytes.len() as u64,
            Outbound::File { remaining, .. } => *remaining,
        }
    }
}

/// A large send whose content is arriving.
struct InboundUpload {
    header: RequestHeader,
    code: RequestCode,
    head: SendHead,
    /// Content bytes still to come.
    remaining: u64,
    /// Where they go: the spool file, or nowhere for a refused request, which is answered
    /// with 9000 once its content has passed, keeping the stream in step.
    sink: Result<Upload, HandlerError>,
}

impl InboundUpload {
    /// Takes the content bytes at the start of `bytes`; returns how many. Each
    /// `writeback_step` bytes, what has arrived starts going to the disk while the rest
    /// arrives.
    fn feed(&mut self, bytes: &[u8], writeback_step: u64, peer: SocketAddr) -> usize {
        let taken = bytes
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        if let Ok(upload) = &mut self.sink {
            match upload.write(&bytes[..taken]) {
                Ok(()) => upload.write_back_early(writeback_step),
                Err(error) => {
                    log::warn!("{peer}: cannot write an uploaded content: {error}");
                    self.sink = Err(HandlerError::Upload(error));
                }
            }
        }
        self.remaining -= taken as u64;
        taken
    }

    fn frame(&self) -> Frame {
        Frame::Upload {
            header: self.header,
            code: self.code,
            head: self.head,
        }
    }
}

/// A whole uploaded content being made durable; no later request of the connection is
/// served before its reply.
struct Syncing {
    header: RequestHeader,
    code: RequestCode,
    head: SendHead,
    padded: bool,
}

/// A reply produced in the current batch, released to the socket only after the commit.
struct Staged {
    response: Response,
    padded: bool,
    /// Bytes it will take in the output.
    len: u64,
    /// The commit whose durability it waits for; `None` until its batch commits.
    epoch: Option<u64>,
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
    upload: Option<InboundUpload>,
    syncing: Option<Syncing>,

    /// Replies produced but not yet released: those of the current batch, then those whose
    /// commit is waiting for its flush, in request order.
    staged: VecDeque<Staged>,
    staged_len: u64,
    output: VecDeque<Outgoing>,
    /// Bytes of `output.front()` already written, when it holds bytes.
    output_offset: usize,
    output_len: u64,
    /// A chunk of the file at the front of the output, read but not yet all written.
    file_chunk: Vec<u8>,
    file_chunk_written: usize,
    /// The last flush stopped at its budget, not at a full socket: no event will come.
    write_budget_spent: bool,

    /// When bytes last arrived.
    last_read: Instant,
    /// When the output last made progress, or became non-empty.
    last_write: Instant,
    /// When the first bytes of the request not yet complete arrived.
    request_started: Option<Instant>,
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
            input: Vec::new(),
            input_start: 0,
            consumed: 0,
            request_start: 0,
            decoder: FrameDecoder::new(config.max_payload, config.spool_threshold),
            held: None,
            grace_expired: false,
            stalled: false,
            requests_left: REQUESTS_PER_TURN,
            upload: None,
            syncing: None,
            staged: VecDeque::new(),
            staged_len: 0,
            output: VecDeque::new(),
            output_offset: 0,
            output_len: 0,
            file_chunk: Vec::new(),
            file_chunk_written: 0,
            write_budget_spent: false,
            last_read: now,
            last_write: now,
            request_started: None,
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
        self.state == State::Open
            && self.syncing.is_none()
            && self.input_start == self.input.len()
            && self
                .upload
                .as_ref()
                .is_some_and(|upload| upload.remaining > 0)
    }

    /// Whether the next write would send a spooled content: bulk work, paced.
    pub fn bulk_writing(&self) -> bool {
        self.state != State::Closed
            && matches!(
                self.output.front(),
                Some(Outgoing {
                    data: Outbound::File { .. },
                    ..
                })
            )
    }

    pub fn is_bulk(&self) -> bool {
        self.bulk_reading() || self.bulk_writing()
    }

    fn backpressured(&self) -> bool {
        self.output_len + self.staged_len > OUTPUT_HIGH_WATER as u64
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
                }
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    self.last_read = env.now;
                    if self.state == State::Open {
                        self.request_started.get_or_insert(env.now);
                        let writeback_step = env.core.pacer.writeback_step(env.now);
                        let rest = self.feed_upload_directly(&scratch[..n], writeback_step);
                        self.input.extend_from_slice(rest);
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

    /// Content bytes that arrive while nothing else is buffered go straight to the upload,
    /// without a copy into the input buffer. Returns the bytes left over.
    fn feed_upload_directly<'b>(&mut self, bytes: &'b [u8], writeback_step: u64) -> &'b [u8] {
        let Some(upload) = self.upload.as_mut() else {
            return bytes;
        };
        if self.input_start < self.input.len() {
            return bytes;
        }
        let taken = upload.feed(bytes, writeback_step, self.peer);
        self.consumed += taken as u64;
        &bytes[taken..]
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
        let requests_left = self.requests_left;
        self.serve_buffered(env);
        // A request left incomplete must arrive whole within the request timeout, counted
        // from when the request before it was served. Uploads are timed by their progress,
        // and requests held by backpressure by the client's reading.
        let incomplete = !self.stalled
            && self.syncing.is_none()
            && self.upload.is_none()
            && (self.input_start < self.input.len()
                || self.held.is_some()
                || self.decoder.is_skipping());
        self.request_started = if !incomplete {
            None
        } else if self.requests_left < requests_left {
            Some(env.now)
        } else {
            self.request_started.or(Some(env.now))
        };
    }

    fn serve_buffered(&mut self, env: &mut Env<'_>) {
        self.stalled = false;
        while self.state == State::Open {
            if self.must_pause() {
                self.stalled = self.input_start < self.input.len() || self.held.is_some();
                break;
            }
            let Some((frame, len)) = self.next_frame(env) else {
                break;
            };
            if let Frame::Fatal { header, reason } = frame {
                log::warn!(
                    "{}: request code {}: {reason}; closing",
                    self.peer,
                    header.code
                );
                env.count_error(ErrorCause::Framing);
                self.close_with_error(env);
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
                    self.classify(ConnectionKind::Persistent, env);
                    self.serve(frame, false, env);
                    self.consume(len);
                    self.request_start = self.consumed;
                }
                Padding::Padded => {
                    // The padding, and anything after it, is never parsed: the client sends
                    // one request per connection.
                    log::debug!("{}: zero-padded client", self.peer);
                    self.classify(ConnectionKind::Padded, env);
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

    /// The next request to classify and serve, with the bytes it covers at the start of the
    /// unconsumed input; `None` until more bytes arrive. An upload's content is streamed to
    /// its file on the way, and the upload counts as a request of no bytes once it is whole.
    fn next_frame(&mut self, env: &mut Env<'_>) -> Option<(Frame, usize)> {
        if let Some(held) = self.held.take() {
            return Some(held);
        }
        loop {
            if let Some(upload) = self.upload.as_mut() {
                let writeback_step = env.core.pacer.writeback_step(env.now);
                let taken = upload.feed(&self.input[self.input_start..], writeback_step, self.peer);
                let (whole, frame) = (upload.remaining == 0, upload.frame());
                self.consume(taken);
                return whole.then_some((frame, 0));
            }
            match self.decoder.decode(&self.input[self.input_start..]) {
                Step::NeedMore => return None,
                Step::Discarded(n) => self.consume(n),
                Step::Frame {
                    frame: Frame::Upload { header, code, head },
                    len,
                } => {
                    self.consume(len);
                    if !self.start_upload(header, code, head, env) {
                        return None;
                    }
                }
                Step::Frame { frame, len } => return Some((frame, len)),
            }
        }
    }

    /// Checks a large send from its head and opens its spool file. A refusal that cannot
    /// wait for the content (no disk space) closes the connection; returns whether it is
    /// still open.
    fn start_upload(
        &mut self,
        header: RequestHeader,
        code: RequestCode,
        head: SendHead,
        env: &mut Env<'_>,
    ) -> bool {
        let sink = env.start_upload(code, header.client_id, &head);
        if let Err(error) = &sink {
            log::warn!(
                "{}: {}-byte upload refused: {error}",
                self.peer,
                head.content_len
            );
            if error.closes_connection() {
                self.close_with_error(env);
                return false;
            }
        }
        self.upload = Some(InboundUpload {
            header,
            code,
            head,
            remaining: u64::from(head.content_len),
            sink,
        });
        true
    }

    /// Answers 9000 and closes after writing it: the rest of the stream cannot be trusted.
    fn close_with_error(&mut self, env: &mut Env<'_>) {
        self.stage(Response::error(), false, env);
        self.drop_input();
        self.state = State::ClosingAfterFlush;
    }

    /// Runs one framed request (still at the start of the unconsumed input) and stages its
    /// reply.
    fn serve(&mut self, frame: Frame, padded: bool, env: &mut Env<'_>) {
        self.requests_left = self.requests_left.saturating_sub(1);
        if !matches!(frame, Frame::Upload { .. }) {
            env.core.pacer.saw_request(env.now);
        }
        let response = match frame {
            Frame::Request {
                header,
                code,
                body_len,
            } => {
                let body_start = self.input_start + REQUEST_HEADER_LEN;
                let body = &self.input[body_start..body_start + body_len];
                log::debug!("{}: {code} from {}", self.peer, header.client_id);
                env.serve(code, header.client_id, body, self.peer)
            }
            Frame::Upload {
                header, code, head, ..
            } => match self.upload.take().map(|upload| upload.sink) {
                Some(Ok(upload)) => {
                    let syncing = Syncing {
                        header,
                        code,
                        head,
                        padded,
                    };
                    self.sync_upload(upload, syncing, env);
                    return;
                }
                Some(Err(_)) | None => Response::error(),
            },
            Frame::Rejected { header } => {
                log::warn!(
                    "{}: request code {} with payload size {} rejected",
                    self.peer,
                    header.code,
                    header.payload_size
                );
                env.count_error(ErrorCause::Rejected);
                Response::error()
            }
            Frame::Fatal { .. } => Response::error(),
        };
        self.stage(response, padded, env);
    }

    /// Hands a whole upload to a sync thread; its reply is staged when the sync is done.
    fn sync_upload(&mut self, upload: Upload, syncing: Syncing, env: &mut Env<'_>) {
        match env.core.syncer.sync(self.key, self.serial, upload) {
            Ok(()) => self.syncing = Some(syncing),
            Err(error) => {
                log::error!("{}: cannot start a sync thread: {error}", self.peer);
                self.stage(Response::error(), syncing.padded, env);
            }
        }
    }

    /// An upload's content is durable (or failed to become so): stores its message, stages
    /// the reply, and goes on with the requests that followed it.
    pub fn on_synced(&mut self, synced: Synced, env: &mut Env<'_>) {
        let Some(syncing) = self.syncing.take() else {
            return;
        };
        let response = match synced.result {
            Ok(()) => env.finish_upload(
                syncing.code,
                syncing.header.client_id,
                &syncing.head,
                synced.upload,
                self.peer,
            ),
            Err(error) => {
                log::error!("{}: cannot make an upload durable: {error}", self.peer);
                env.count_error(ErrorCause::Upload);
                Response::error()
            }
        };
        self.stage(response, syncing.padded, env);
        if self.state == State::Open {
            self.requests_left = REQUESTS_PER_TURN;
            if self.peer_closed {
                self.on_peer_closed(env);
            } else {
                self.process(env);
            }
        }
    }

    fn stage(&mut self, response: Response, padded: bool, env: &mut Env<'_>) {
        if self.staged.back().is_none_or(|last| last.epoch.is_some()) {
            env.batch.touched.push(self.key);
        }
        let tail: u64 = response.tail.iter().map(Part::len).sum();
        let len = response.reply.encoded_len() as u64 + tail;
        self.staged_len += len;
        self.staged.push_back(Staged {
            response,
            padded,
            len,
            epoch: None,
        });
    }

    fn consume(&mut self, n: usize) {
        self.input_start += n;
        self.consumed += n as u64;
    }

    /// Drops every request not yet served, and the content of an upload in progress.
    fn drop_input(&mut self) {
        self.consume(self.input.len() - self.input_start);
        self.held = None;
        self.upload = None;
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

    /// Ties the current batch's replies to commit `epoch` once the batch's fate is known: as
    /// produced if it committed, as 9000 if it did not (their writes are gone, their messages
    /// stay queued). They are released once that commit is durable.
    pub fn seal(&mut self, epoch: u64, committed: bool, in_flight: &mut HashSet<MessageId>) {
        for staged in self.staged.iter_mut().rev() {
            if staged.epoch.is_some() {
                break;
            }
            staged.epoch = Some(epoch);
            if !committed {
                forget(&staged.response.delivered, in_flight);
                staged.response = Response::error();
            }
        }
    }

    /// Moves the replies whose commit is durable through `durable` to the output, in order.
    /// If that flush failed, they become 9000: their writes may not survive a power cut.
    pub fn release_through(
        &mut self,
        durable: u64,
        flushed: bool,
        in_flight: &mut HashSet<MessageId>,
    ) {
        while self
            .staged
            .front()
            .is_some_and(|staged| staged.epoch.is_some_and(|epoch| epoch <= durable))
        {
            let Some(Staged {
                response,
                padded,
                len,
                ..
            }) = self.staged.pop_front()
            else {
                break;
            };
            self.staged_len -= len;
            if flushed {
                self.queue_reply(response, padded);
            } else {
                forget(&response.delivered, in_flight);
                self.push_output(Outbound::Bytes(Reply::error().into_bytes(padded)));
            }
        }
    }

    /// Whether replies wait for a commit to become durable.
    pub fn awaits_flush(&self) -> bool {
        self.staged
            .front()
            .is_some_and(|staged| staged.epoch.is_some())
    }

    /// Queues a reply's pieces; its delivered messages ride on the last one.
    fn queue_reply(&mut self, response: Response, padded: bool) {
        let Response {
            reply,
            tail,
            delivered,
        } = response;
        if tail.is_empty() {
            self.push_output(Outbound::Bytes(reply.into_bytes(padded)));
        } else {
            let tail_len: u64 = tail.iter().map(Part::len).sum();
            let head = reply.into_head(tail_len);
            let total = head.len() as u64 + tail_len;
            self.push_output(Outbound::Bytes(head));
            for part in tail.into_iter().filter(|part| !part.is_empty()) {
                self.push_output(match part {
                    Part::Bytes(bytes) => Outbound::Bytes(bytes),
                    Part::File { file, len } => Outbound::File {
                        file,
                        remaining: len,
                    },
                });
            }
            let padding = if padded {
                padding::reply_padding(total as usize)
            } else {
                0
            };
            if padding > 0 {
                self.push_output(Outbound::Bytes(vec![0; padding]));
            }
        }
        if let Some(last) = self.output.back_mut() {
            last.delivered = delivered;
        }
    }

    fn push_output(&mut self, data: Outbound) {
        if self.output.is_empty() {
            self.last_write = Instant::now();
        }
        self.output_len += data.len();
        self.output.push_back(Outgoing {
            data,
            delivered: Vec::new(),
        });
    }

    /// Writes released replies until the socket would block or this turn's write budget is
    /// spent. Messages of every reply written whole are added to `delivered`. A connection
    /// that is done starts lingering until `linger_until`.
    pub fn flush(
        &mut self,
        delivered: &mut Vec<MessageId>,
        timers: &mut Timers,
        linger_until: Instant,
    ) {
        let mut budget = WRITE_BUDGET;
        let pending = self.output_len;
        while self.output_len > 0 && self.state != State::Closed && budget > 0 {
            let written = match self.output.front().map(|front| &front.data) {
                Some(Outbound::File { .. }) => self.write_file_chunk(),
                _ => self.write_bytes(),
            };
            match written {
                Ok(0) => self.fail("write", &io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    self.advance_output(n, delivered);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => self.fail("write", &error),
            }
        }
        self.write_budget_spent = budget == 0 && self.output_len > 0;
        if self.output_len < pending {
            self.last_write = Instant::now();
        }
        let done = self.output_len == 0 && self.staged.is_empty() && self.syncing.is_none();
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

    /// One vectored write of the byte pieces at the front of the output.
    fn write_bytes(&mut self) -> io::Result<usize> {
        let mut slices = [IoSlice::new(&[]); MAX_WRITE_SLICES];
        let mut count = 0;
        for (index, outgoing) in self.output.iter().take(MAX_WRITE_SLICES).enumerate() {
            let Outbound::Bytes(bytes) = &outgoing.data else {
                break;
            };
            let skip = if index == 0 { self.output_offset } else { 0 };
            slices[index] = IoSlice::new(&bytes[skip..]);
            count += 1;
        }
        self.socket.write_vectored(&slices[..count])
    }

    /// Writes from the file at the front of the output, reading its next chunk when the last
    /// one has been written.
    fn write_file_chunk(&mut self) -> io::Result<usize> {
        if self.file_chunk_written == self.file_chunk.len() {
            let Some(Outgoing {
                data: Outbound::File { file, remaining },
                ..
            }) = self.output.front_mut()
            else {
                return Ok(0);
            };
            let len = usize::try_from(*remaining).map_or(FILE_CHUNK, |left| left.min(FILE_CHUNK));
            self.file_chunk.resize(len, 0);
            // A short file means the content changed under us: the reply cannot be finished.
            file.read_exact(&mut self.file_chunk)?;
            *remaining -= len as u64;
            self.file_chunk_written = 0;
        }
        self.socket
            .write(&self.file_chunk[self.file_chunk_written..])
    }

    /// Drops `n` written bytes from the output; the messages of replies now written whole go
    /// to `delivered`.
    fn advance_output(&mut self, mut n: usize, delivered: &mut Vec<MessageId>) {
        self.output_len -= n as u64;
        while n > 0 {
            let Some(front) = self.output.front_mut() else {
                break;
            };
            let finished = match &front.data {
                Outbound::Bytes(bytes) => {
                    let left = bytes.len() - self.output_offset;
                    let taken = n.min(left);
                    self.output_offset += taken;
                    n -= taken;
                    taken == left
                }
                Outbound::File { remaining, .. } => {
                    self.file_chunk_written += n;
                    n = 0;
                    *remaining == 0 && self.file_chunk_written == self.file_chunk.len()
                }
            };
            if !finished {
                break;
            }
            if let Some(done) = self.output.pop_front() {
                delivered.extend(done.delivered);
            }
            self.output_offset = 0;
            self.file_chunk.clear();
            self.file_chunk_written = 0;
        }
        if self.output.is_empty() && self.file_chunk.capacity() > 0 {
            self.file_chunk = Vec::new();
        }
    }

    /// Why the connection should be closed for slowness or silence at `now`, if it should. A
    /// sync in progress is the server's own wait, never the client's.
    pub fn timed_out(&self, now: Instant, limits: Timeouts) -> Option<&'static str> {
        let since = |at: Instant| now.saturating_duration_since(at);
        if matches!(self.state, State::Closed | State::Lingering) || self.syncing.is_some() {
            return None;
        }
        if self.output_len > 0 && since(self.last_write) >= limits.request {
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
                let quiet = self.output_len == 0 && self.staged.is_empty() && !self.stalled;
                (quiet && since(self.last_read) >= limits.idle).then_some("idle")
            }
        }
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
        if self.output_len == 0 && self.staged.is_empty() && self.syncing.is_none() {
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
