//! The request reader of one connection, free of I/O: bytes in, events out. It frames
//! requests (protocol §4), holds a complete request until the bytes after it say whether the
//! client pads (waiting a grace time for a partly arrived block), and passes a large send's
//! content through without buffering it. It owns no socket, file or clock: the connection
//! feeds it what it reads and asks for the next event, saying what time it is.

use std::ops::Range;
use std::time::{Duration, Instant};

use crate::protocol::frame::FatalReason;
use crate::protocol::padding::{self, Padding};
use crate::protocol::{
    Code, Frame, FrameDecoder, RequestCode, RequestHeader, SendHead, Step, REQUEST_HEADER_LEN,
};

/// Input buffers larger than this are given back once empty (after a large request).
const INPUT_KEEP_CAPACITY: usize = 64 << 10;

/// What the reader has for the connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event<'a> {
    /// Nothing to do until more bytes arrive.
    NeedMore,
    /// A complete request whose padding cannot be told yet: ask again when bytes arrive or
    /// at `until`, when the grace time ends.
    Undecided {
        until: Instant,
    },
    /// A request to serve; its body is [`RequestReader::body`] until the next event. A padded
    /// client gets a padded reply and then the close; the reader reads nothing more.
    Request {
        header: RequestHeader,
        code: Code,
        padded: bool,
    },
    /// A request whose declared size does not fit its code, or an unknown code: its bytes are
    /// consumed; answer 9000.
    Rejected {
        header: RequestHeader,
        padded: bool,
    },
    /// Framing that cannot be trusted: answer 9000 and close. The reader reads nothing more.
    Fatal {
        header: RequestHeader,
        reason: FatalReason,
    },
    /// The head of a send whose content is too large to buffer; the content follows as
    /// [`Event::UploadBytes`], then [`Event::UploadEnd`].
    UploadStart {
        header: RequestHeader,
        code: RequestCode,
        head: SendHead,
    },
    UploadBytes(&'a [u8]),
    /// The upload's content is whole.
    UploadEnd {
        padded: bool,
    },
}

enum Phase {
    /// Reading request headers and bodies.
    Requests,
    /// A large send's content passing through, `remaining` bytes of it still to come.
    Upload { remaining: u64 },
    /// A complete request of `len` bytes at the start of the input (0 for an upload, whose
    /// content has passed), held until its padding is known or the grace time ends `until`.
    Held {
        request: Complete,
        len: usize,
        until: Option<Instant>,
    },
    /// Nothing more is read: a padded request was served, the framing failed, or the
    /// connection is closing.
    Stopped,
}

/// A complete request whose padding decides how it is answered.
#[derive(Clone, Copy)]
enum Complete {
    Request { header: RequestHeader, code: Code },
    Rejected { header: RequestHeader },
    Upload,
}

/// What to do with the input when the next event is asked for: the slice the last event
/// lent out may be dropped only then.
#[derive(Clone, Copy)]
enum Settle {
    Nothing,
    Consume(usize),
    /// Consume, and the request is done: the next one starts after it.
    Finish(usize),
    Stop,
}

pub(crate) struct RequestReader {
    input: Vec<u8>,
    /// `input[start..]` is not yet consumed.
    start: usize,
    /// Stream offset of `input[start]`.
    offset: u64,
    /// Stream offset where the request being read began.
    request_start: u64,
    decoder: FrameDecoder,
    phase: Phase,
    settle: Settle,
    /// Where in `input` the body of the last [`Event::Request`] is; empty otherwise.
    body: Range<usize>,
    peer_closed: bool,
    padding_grace: Duration,
}

impl RequestReader {
    pub fn new(decoder: FrameDecoder, padding_grace: Duration) -> RequestReader {
        RequestReader {
            input: Vec::new(),
            start: 0,
            offset: 0,
            request_start: 0,
            decoder,
            phase: Phase::Requests,
            settle: Settle::Nothing,
            body: 0..0,
            peer_closed: false,
            padding_grace,
        }
    }

    /// Adds bytes read from the connection. Once stopped, they are dropped.
    pub fn feed(&mut self, bytes: &[u8]) {
        if matches!(self.phase, Phase::Stopped) {
            return;
        }
        self.input.extend_from_slice(bytes);
    }

    /// Upload content at the start of `bytes` that can go to its sink without being copied
    /// into the input buffer (an upload in progress, nothing buffered before it), and the
    /// rest, to [`feed`](Self::feed).
    pub fn take_upload_bytes<'b>(&mut self, bytes: &'b [u8]) -> (&'b [u8], &'b [u8]) {
        self.apply_settle();
        match &mut self.phase {
            Phase::Upload { remaining } if self.start == self.input.len() => {
                let taken = bytes
                    .len()
                    .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                *remaining -= taken as u64;
                self.offset += taken as u64;
                bytes.split_at(taken)
            }
            _ => (&[], bytes),
        }
    }

    /// The peer has finished sending: a held request is decided now.
    pub fn close_input(&mut self) {
        self.peer_closed = true;
    }

    /// Reads nothing more and drops what is buffered.
    pub fn stop(&mut self) {
        self.phase = Phase::Stopped;
        self.settle = Settle::Nothing;
        self.body = 0..0;
        self.input = Vec::new();
        self.start = 0;
    }

    /// The body of the request the last event announced ([`Event::Request`]); it stays in the
    /// buffer until the next event is asked for. Lent separately from the event, so that a
    /// caller can hand it on after deciding, without a borrow, what the event needs.
    pub fn body(&self) -> &[u8] {
        &self.input[self.body.clone()]
    }

    /// Whether bytes or a held request wait to be read.
    pub fn has_buffered(&self) -> bool {
        self.unread() > 0 || matches!(self.phase, Phase::Held { .. })
    }

    /// Whether part of a request (not an upload's content) has arrived and the rest has not.
    pub fn has_partial_request(&self) -> bool {
        match self.phase {
            Phase::Requests => self.unread() > 0 || self.decoder.is_skipping(),
            Phase::Held { request, .. } => !matches!(request, Complete::Upload),
            Phase::Upload { .. } | Phase::Stopped => false,
        }
    }

    /// Whether the reader waits for upload content with nothing buffered: the next bytes
    /// read are bulk work.
    pub fn awaits_upload_bytes(&self) -> bool {
        matches!(self.phase, Phase::Upload { remaining } if remaining > 0) && self.unread() == 0
    }

    pub fn is_holding(&self) -> bool {
        matches!(self.phase, Phase::Held { .. })
    }

    /// Bytes buffered and not yet read; those the last event lent out count as read.
    pub fn unread(&self) -> usize {
        let lent = match self.settle {
            Settle::Consume(n) | Settle::Finish(n) => n,
            Settle::Nothing => 0,
            Settle::Stop => return 0,
        };
        self.input.len() - self.start - lent
    }

    /// The next event, at time `now`.
    pub fn next(&mut self, now: Instant) -> Event<'_> {
        self.apply_settle();
        loop {
            match &mut self.phase {
                Phase::Stopped => return Event::NeedMore,
                Phase::Upload { remaining: 0 } => self.hold(Complete::Upload, 0),
                Phase::Upload { remaining } => {
                    let available = self.input.len() - self.start;
                    if available == 0 {
                        return Event::NeedMore;
                    }
                    let taken = available.min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                    *remaining -= taken as u64;
                    self.settle = Settle::Consume(taken);
                    return Event::UploadBytes(&self.input[self.start..self.start + taken]);
                }
                Phase::Held { .. } => return self.classify_held(now),
                Phase::Requests => match self.decoder.decode(&self.input[self.start..]) {
                    Step::NeedMore => return Event::NeedMore,
                    Step::Discarded(n) => self.consume(n),
                    Step::Frame {
                        frame: Frame::Fatal { header, reason },
                        ..
                    } => {
                        self.stop();
                        return Event::Fatal { header, reason };
                    }
                    Step::Frame {
                        frame: Frame::Upload { header, code, head },
                        len,
                    } => {
                        self.consume(len);
                        self.phase = Phase::Upload {
                            remaining: u64::from(head.content_len),
                        };
                        return Event::UploadStart { header, code, head };
                    }
                    Step::Frame {
                        frame: Frame::Request { header, code, .. },
                        len,
                    } => self.hold(Complete::Request { header, code }, len),
                    Step::Frame {
                        frame: Frame::Rejected { header },
                        len,
                    } => self.hold(Complete::Rejected { header }, len),
                },
            }
        }
    }

    fn hold(&mut self, request: Complete, len: usize) {
        self.phase = Phase::Held {
            request,
            len,
            until: None,
        };
    }

    /// Decides whether the client of the held request pads, from the bytes after it.
    fn classify_held(&mut self, now: Instant) -> Event<'_> {
        let Phase::Held {
            request,
            len,
            until,
        } = &mut self.phase
        else {
            return Event::NeedMore;
        };
        let (request, len) = (*request, *len);
        let until = *until.get_or_insert(now + self.padding_grace);
        let end = self.offset + len as u64;
        let following = &self.input[self.start + len..];
        let closed = self.peer_closed || now >= until;
        // Extension clients never pad (protocol §E0): their requests are served at once.
        let classified = match request {
            Complete::Request {
                code: Code::Extension(_),
                ..
            } => Padding::Exact,
            _ => padding::classify(self.request_start, end, following, closed),
        };
        let padded = match classified {
            Padding::Undecided => return Event::Undecided { until },
            Padding::Exact => {
                self.phase = Phase::Requests;
                self.settle = Settle::Finish(len);
                false
            }
            // The padding, and anything after it, is never parsed: the client sends one
            // request per connection.
            Padding::Padded => {
                self.phase = Phase::Stopped;
                self.settle = Settle::Stop;
                true
            }
        };
        match request {
            Complete::Request { header, code } => {
                self.body = self.start + REQUEST_HEADER_LEN..self.start + len;
                Event::Request {
                    header,
                    code,
                    padded,
                }
            }
            Complete::Rejected { header } => Event::Rejected { header, padded },
            Complete::Upload => Event::UploadEnd { padded },
        }
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        self.offset += n as u64;
    }

    /// Drops what the last event lent out, and gives back buffer space.
    fn apply_settle(&mut self) {
        self.body = 0..0;
        match std::mem::replace(&mut self.settle, Settle::Nothing) {
            Settle::Nothing => {}
            Settle::Consume(n) => self.consume(n),
            Settle::Finish(n) => {
                self.consume(n);
                self.request_start = self.offset;
            }
            Settle::Stop => self.stop(),
        }
        if self.start == self.input.len() {
            self.input.clear();
            self.start = 0;
            if self.input.capacity() > INPUT_KEEP_CAPACITY {
                self.input.shrink_to(INPUT_KEEP_CAPACITY);
            }
        } else if self.start > self.input.len() / 2 {
            self.input.drain(..self.start);
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests;
