//! A connection's input, turned into work for the loop. The loop starts a pass (a turn's
//! read, an expired deadline, a stored upload), then takes [`Work`] from
//! [`Connection::next_work`] until there is none, handing each answer back before asking
//! again. The connection reads its socket and feeds its reader as the pass needs, within the
//! turn's read and request budgets; it never serves a request itself.

use std::io::{self, Read};
use std::time::Instant;

use super::long_poll::Unpark;
use super::upload::{InboundUpload, LargeSend, Syncing};
use super::{Connection, State, READ_BUDGET, REQUESTS_PER_TURN};
use crate::auth::Session;
use crate::handlers::Response;
use crate::metrics::ConnectionKind;
use crate::protocol::{Code, Reason, Refusal, RequestHeader};
use crate::server::outbox::Awaits;
use crate::server::reader::Event;
use crate::store::ContentSink;

/// What a connection's input needs done by the server. Each kind says how its answer comes
/// back.
pub(crate) enum Work<'a> {
    /// A request to serve, with the connection's session; its reply goes back through
    /// [`Connection::answer`].
    Request {
        header: RequestHeader,
        code: Code,
        body: &'a [u8],
        padded: bool,
        session: &'a mut Session,
    },
    /// A request the framing refused (an unknown code, a size its operation cannot have):
    /// answer 9000 for `reason` through [`Connection::answer`]; the connection goes on.
    Rejected { padded: bool, reason: Reason },
    /// Framing that cannot be trusted: the connection reads nothing more. Answer through
    /// [`Connection::close_with_error`] with `reason`.
    Fatal { reason: Reason },
    /// A large send's head: open its upload, and hand it (or the refusal) to
    /// [`Connection::upload_opened`].
    UploadStart(LargeSend),
    /// A large send's content is whole: have it made durable, and say whether that started
    /// through [`Connection::sync_started`]. No later request is served before its reply.
    UploadComplete(ContentSink),
    /// A large send whose content could not be kept (refused, or a write failed): answer
    /// 9000 with `refusal` through [`Connection::answer`].
    UploadFailed { padded: bool, refusal: Refusal },
    /// A request waits for its padding to be known until `until`: call
    /// [`Connection::on_deadline`] then.
    Wait { until: Instant },
    /// The parked long-poll of `header` is to be answered, as `unpark` says, with the
    /// connection's session; its reply goes back through [`Connection::answer_parked`].
    Unparked {
        header: RequestHeader,
        unpark: Unpark,
        session: &'a mut Session,
    },
}

/// What staging a reply changed that the server records.
#[must_use]
#[derive(Debug, Default)]
pub(crate) struct Answered {
    /// The connection's first reply of the round: seal it after the round's commit.
    pub opens_round: bool,
    /// The request told how the client is served: the connection's kind before and after.
    pub classified: Option<(ConnectionKind, ConnectionKind)>,
}

/// Where [`Connection::next_work`] is in a pass over the input.
#[derive(Debug, Clone, Copy)]
pub(super) enum Pass {
    /// No pass: nothing to do until the loop starts one.
    Idle,
    /// Serving what the reader holds, then going on with `after`. `requests_left` is what it
    /// was when serving began.
    Serving { requests_left: usize, after: After },
    /// Reading the socket, `budget` bytes of this turn's left.
    Reading { budget: usize },
}

/// What follows serving the buffered requests.
#[derive(Debug, Clone, Copy)]
pub(super) enum After {
    /// Read more from the socket, within `budget`.
    Read { budget: usize },
    /// The client has finished sending: close unless requests wait behind backpressure.
    PeerClosed,
    /// The pass is over.
    Done,
}

impl Connection {
    /// Starts the turn's pass: serve what is buffered, then read what the socket holds
    /// (within the budget) and serve the complete requests.
    pub fn start_turn(&mut self) {
        self.requests_left = REQUESTS_PER_TURN;
        self.start_serving(After::Read {
            budget: READ_BUDGET,
        });
    }

    /// A deadline of this connection passed: the padding grace time or the linger time.
    /// A held request is then decided in a pass.
    pub fn on_deadline(&mut self, now: Instant) {
        if self.deadline.is_none_or(|deadline| deadline > now) {
            return;
        }
        self.deadline = None;
        match self.state {
            State::Open if self.reader.is_holding() => self.start_serving(After::Done),
            State::Lingering => self.state = State::Closed,
            _ => {}
        }
    }

    /// Starts serving what the reader holds, in order, going on with `after` once it needs
    /// more bytes or the connection must pause.
    pub(super) fn start_serving(&mut self, after: After) {
        self.stalled = false;
        self.pass = Pass::Serving {
            requests_left: self.requests_left,
            after,
        };
    }

    /// The next piece of work of the current pass, at `now`; `None` once the pass is over.
    /// Upload content is written back early every `writeback_step` bytes; `scratch` is the
    /// buffer socket reads go through.
    pub fn next_work(
        &mut self,
        now: Instant,
        writeback_step: u64,
        scratch: &mut [u8],
    ) -> Option<Work<'_>> {
        loop {
            match self.pass {
                Pass::Idle => return None,
                Pass::Reading { budget } => self.read_socket(budget, now, writeback_step, scratch),
                // Before the state: a parked long-poll is answered even when shutting down.
                Pass::Serving { .. } if self.parked.is_some() && self.state != State::Closed => {
                    if let Some((header, unpark)) = self.unparked() {
                        return Some(Work::Unparked {
                            header,
                            unpark,
                            session: &mut self.session,
                        });
                    }
                    self.stalled = self.reader.has_buffered();
                    self.end_serving(now);
                }
                Pass::Serving { .. } if self.state != State::Open => self.end_serving(now),
                Pass::Serving { .. } if self.must_pause() => {
                    self.stalled = self.reader.has_buffered();
                    self.end_serving(now);
                }
                Pass::Serving { .. } => match self.reader.next(now) {
                    Event::NeedMore => self.end_serving(now),
                    Event::Undecided { until } => {
                        self.end_serving(now);
                        if self.deadline.is_none() {
                            self.deadline = Some(until);
                            return Some(Work::Wait { until });
                        }
                    }
                    Event::Request {
                        header,
                        code,
                        padded,
                    } => {
                        log::debug!("{}: {code} from {}", self.peer, header.client_id);
                        let body = self.reader.body();
                        return Some(Work::Request {
                            header,
                            code,
                            body,
                            padded,
                            session: &mut self.session,
                        });
                    }
                    Event::Rejected { header, padded } => {
                        log::warn!(
                            "{}: request code {} with payload size {} rejected",
                            self.peer,
                            header.code,
                            header.payload_size
                        );
                        // A code this server serves was sent with a size it cannot have.
                        let reason = match Code::from_wire(header.code) {
                            Some(_) => Reason::Malformed,
                            None => Reason::UnknownRequest,
                        };
                        return Some(Work::Rejected { padded, reason });
                    }
                    Event::Fatal { header, reason } => {
                        log::warn!(
                            "{}: request code {}: {reason}; closing",
                            self.peer,
                            header.code
                        );
                        return Some(Work::Fatal {
                            reason: reason.reason(),
                        });
                    }
                    Event::UploadStart { header, code, head } => {
                        return Some(Work::UploadStart(LargeSend { header, code, head }));
                    }
                    Event::UploadBytes(content) => {
                        if let Some(upload) = self.upload.as_mut() {
                            upload.write(content, writeback_step, self.peer);
                        }
                    }
                    Event::UploadEnd { padded } => match self.upload.take() {
                        Some(InboundUpload {
                            send,
                            sink: Ok(upload),
                        }) => {
                            self.syncing = Some(Syncing { send, padded });
                            return Some(Work::UploadComplete(upload));
                        }
                        Some(InboundUpload {
                            sink: Err(error), ..
                        }) => {
                            let refusal = error.refusal();
                            return Some(Work::UploadFailed { padded, refusal });
                        }
                        None => {
                            let refusal = Refusal::new(Reason::Internal);
                            return Some(Work::UploadFailed { padded, refusal });
                        }
                    },
                },
            }
        }
    }

    /// Serving stopped: the reader needs more bytes, or the connection must pause. Times the
    /// request left incomplete and goes on with the rest of the pass.
    fn end_serving(&mut self, now: Instant) {
        let Pass::Serving {
            requests_left,
            after,
        } = self.pass
        else {
            return;
        };
        // A request left incomplete must arrive whole within the request timeout, counted
        // from when the request before it was served. Uploads are timed by their progress,
        // and requests held by backpressure by the client's reading.
        let incomplete =
            !self.stalled && self.syncing.is_none() && self.reader.has_partial_request();
        self.request_started = if !incomplete {
            None
        } else if self.requests_left < requests_left {
            Some(now)
        } else {
            self.request_started.or(Some(now))
        };
        self.pass = match after {
            After::Read { budget } => Pass::Reading { budget },
            After::PeerClosed => {
                if !self.stalled {
                    log::debug!("{}: closed by the client", self.peer);
                    self.drop_input();
                    self.state = State::ClosingAfterWriting;
                }
                Pass::Idle
            }
            After::Done => Pass::Idle,
        };
    }

    /// Reads one chunk from the socket, and serves it; ends the pass once the socket is
    /// drained, the budget spent, or requests must wait.
    fn read_socket(
        &mut self,
        budget: usize,
        now: Instant,
        writeback_step: u64,
        scratch: &mut [u8],
    ) {
        let paused = self.state == State::Open && self.reads_paused();
        if !self.readable || budget == 0 || self.state == State::Closed || paused {
            self.pass = Pass::Idle;
            if self.peer_closed {
                self.on_peer_closed();
            }
            return;
        }
        match self.socket.read(scratch) {
            Ok(0) => {
                self.readable = false;
                self.peer_closed = true;
                self.reader.close_input();
            }
            Ok(n) => {
                let budget = budget.saturating_sub(n);
                self.pass = Pass::Reading { budget };
                self.last_read = now;
                if self.state == State::Open {
                    self.request_started.get_or_insert(now);
                    // Content that arrives while nothing else is buffered goes straight to
                    // its upload, without a copy into the reader's buffer.
                    let (content, rest) = self.reader.take_upload_bytes(&scratch[..n]);
                    self.write_upload(content, writeback_step);
                    self.reader.feed(rest);
                    self.start_serving(After::Read { budget });
                }
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => self.readable = false,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => self.fail("read", &error),
        }
    }

    /// The client has finished sending: requests it sent are still served (a held one is
    /// decided now, no more bytes will come), then the connection closes.
    pub(super) fn on_peer_closed(&mut self) {
        match self.state {
            State::Open => self.start_serving(After::PeerClosed),
            State::Lingering => self.state = State::Closed,
            State::ClosingAfterWriting | State::Closed => {}
        }
    }

    /// Answers the request of the last [`Work`] with `response`: padded clients get nothing
    /// more.
    pub fn answer(&mut self, response: Response, padded: bool, awaits: Awaits) -> Answered {
        let classified = self.count_request(padded);
        Answered {
            opens_round: self.stage(response, padded, awaits),
            classified,
        }
    }

    /// A request was answered (or is being made durable). Returns the change of the
    /// connection's kind, if this request told it.
    pub(super) fn count_request(
        &mut self,
        padded: bool,
    ) -> Option<(ConnectionKind, ConnectionKind)> {
        self.requests_left = self.requests_left.saturating_sub(1);
        self.requests_served += 1;
        self.deadline = None;
        let kind = if padded {
            log::debug!("{}: zero-padded client", self.peer);
            self.drop_input();
            self.state = State::ClosingAfterWriting;
            ConnectionKind::Padded
        } else {
            ConnectionKind::Persistent
        };
        let was = std::mem::replace(&mut self.kind, kind);
        (was != kind).then_some((was, kind))
    }

    /// Answers 9000 for `refusal` and closes after writing it: the rest of the stream cannot
    /// be trusted.
    pub fn close_with_error(&mut self, refusal: Refusal) -> Answered {
        let opens_round = self.stage(Response::error(refusal), false, Awaits::Round);
        self.drop_input();
        self.state = State::ClosingAfterWriting;
        Answered {
            opens_round,
            classified: None,
        }
    }

    /// Stages a reply of the round, encoded; returns whether it is the connection's first of
    /// the round.
    pub(super) fn stage(&mut self, response: Response, padded: bool, awaits: Awaits) -> bool {
        let Response {
            reply, delivered, ..
        } = response;
        let errors = self.session.errors();
        self.outbox
            .stage(reply.encode(errors), delivered, padded, errors, awaits)
    }
}
