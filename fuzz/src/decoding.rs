//! Drives `FrameDecoder` the way `src/server/connection.rs` does, and checks every step
//! against protocol §4 and §E0 as stated in `docs/protocol.md`, independently of `frame.rs`.
//!
//! The connection keeps the unconsumed bytes, asks the decoder what the next step is, drops
//! what a `Discarded` or a frame covers, streams the content of an `Upload` past the decoder,
//! stops at a `Fatal` frame, and classifies the bytes after each request for padding.

use std::ops::RangeInclusive;

use messageu::protocol::frame::{FatalReason, MAX_FIXED_PAYLOAD};
use messageu::protocol::padding::{self, Padding};
use messageu::protocol::request::{REGISTER_PAYLOAD_LEN, SEND_HEADER_LEN};
use messageu::protocol::{
    Code, Extension, ExtensionRequest, Frame, FrameDecoder, MalformedRequest, Operation, Request,
    RequestCode, RequestHeader, SendHead, Step, MAX_CONTENT_LEN, REQUEST_HEADER_LEN,
};

/// The decoder's two settings (`Config::max_payload`, `Config::spool_threshold`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_payload: u32,
    pub spool_threshold: u32,
}

impl Limits {
    /// Buffered bytes at which the decoder must have produced something: the largest body it
    /// may wait for whole is a register's 415 bytes or a send below the spool threshold. Any
    /// more would mean buffering what a client merely announced.
    fn buffer_bound(self) -> u64 {
        let largest_send = (SEND_HEADER_LEN as u64 + u64::from(self.spool_threshold))
            .min(u64::from(self.max_payload));
        REQUEST_HEADER_LEN as u64 + largest_send.max(REGISTER_PAYLOAD_LEN as u64)
    }
}

/// A request as the stream delimits it, answered by one reply: `start..end` are stream
/// offsets, including skipped payloads and an upload's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    pub frame: Frame,
    pub start: u64,
    pub end: u64,
}

/// Everything a stream decoded to.
#[derive(Debug)]
pub struct Decoded {
    pub served: Vec<Served>,
    /// Stream bytes consumed: served, skipped, or streamed into an unfinished upload.
    pub consumed: u64,
    /// For each served request, the padding decision made from the bytes that had arrived
    /// when it was complete (`padding::classify` with the peer still sending).
    pub early_padding: Vec<EarlyPadding>,
}

#[derive(Debug, Clone, Copy)]
pub struct EarlyPadding {
    pub decision: Padding,
    /// How many bytes after the request had arrived.
    pub seen: usize,
}

/// One connection's decoding state, fed chunk by chunk.
pub struct Decoding {
    limits: Limits,
    decoder: FrameDecoder,
    /// Bytes received and not yet consumed.
    pending: Vec<u8>,
    /// Stream offset of `pending[0]`.
    offset: u64,
    /// Stream offset where the request being decoded began.
    request_start: u64,
    /// The request header of a request whose first bytes were already dropped as skipped.
    skipped_head: Vec<u8>,
    /// An upload whose content is arriving, and its content bytes still to come.
    upload: Option<(Frame, u64)>,
    /// A fatal frame was served: the rest of the stream is never decoded.
    stopped: bool,
    decoded: Decoded,
}

impl Decoding {
    pub fn new(limits: Limits) -> Decoding {
        Decoding {
            limits,
            decoder: FrameDecoder::new(limits.max_payload, limits.spool_threshold),
            pending: Vec::new(),
            offset: 0,
            request_start: 0,
            skipped_head: Vec::new(),
            upload: None,
            stopped: false,
            decoded: Decoded {
                served: Vec::new(),
                consumed: 0,
                early_padding: Vec::new(),
            },
        }
    }

    /// Decodes `stream` arriving in one piece.
    pub fn whole(stream: &[u8], limits: Limits) -> Decoded {
        let mut decoding = Decoding::new(limits);
        decoding.feed(stream);
        decoding.finish()
    }

    pub fn finish(mut self) -> Decoded {
        self.decoded.consumed = self.offset;
        self.decoded
    }

    /// Takes the next bytes of the stream and decodes as far as they allow.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.stopped {
            return;
        }
        self.pending.extend_from_slice(chunk);
        loop {
            if let Some((frame, remaining)) = self.upload.as_mut() {
                let taken = self
                    .pending
                    .len()
                    .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                *remaining -= taken as u64;
                let (frame, whole) = (*frame, *remaining == 0);
                self.consume(taken);
                if !whole {
                    return;
                }
                self.upload = None;
                self.serve(frame, 0);
                continue;
            }
            match self.decoder.decode(&self.pending) {
                Step::NeedMore => {
                    assert!(
                        (self.pending.len() as u64) < self.limits.buffer_bound(),
                        "NeedMore with {} bytes buffered, bound {} ({:?}), at stream offset {}",
                        self.pending.len(),
                        self.limits.buffer_bound(),
                        self.limits,
                        self.offset
                    );
                    return;
                }
                Step::Discarded(n) => {
                    assert!(
                        n > 0 && n <= self.pending.len(),
                        "Discarded({n}) of a {}-byte buffer",
                        self.pending.len()
                    );
                    self.consume(n);
                }
                Step::Frame { frame, len } => {
                    assert!(
                        len > 0 && len <= self.pending.len(),
                        "frame of {len} bytes from a {}-byte buffer: {frame:?}",
                        self.pending.len()
                    );
                    let head = if self.skipped_head.is_empty() {
                        &self.pending
                    } else {
                        &self.skipped_head
                    };
                    assert_eq!(
                        RequestHeader::parse_prefix(head),
                        Some(frame_header(&frame)),
                        "the frame's header is not the request's first bytes: {frame:?}"
                    );
                    check_frame(&frame, len, &self.pending, self.limits);
                    match frame {
                        Frame::Upload { head, .. } => {
                            self.consume(len);
                            self.upload = Some((frame, u64::from(head.content_len)));
                        }
                        Frame::Fatal { .. } => {
                            self.serve(frame, len);
                            self.stopped = true;
                            return;
                        }
                        Frame::Request { .. } | Frame::Rejected { .. } => self.serve(frame, len),
                    }
                }
            }
        }
    }

    /// Records a request whose bytes end `len` bytes into the pending input, and consumes them.
    fn serve(&mut self, frame: Frame, len: usize) {
        let end = self.offset + len as u64;
        let following = &self.pending[len..];
        self.decoded.early_padding.push(EarlyPadding {
            decision: padding::classify(self.request_start, end, following, false),
            seen: following.len(),
        });
        self.decoded.served.push(Served {
            frame,
            start: self.request_start,
            end,
        });
        if let Frame::Rejected { header } = frame {
            let declared_end =
                self.request_start + REQUEST_HEADER_LEN as u64 + u64::from(header.payload_size);
            assert_eq!(
                end, declared_end,
                "a rejected request's declared bytes are not all dropped"
            );
        }
        self.consume(len);
        self.request_start = end;
        self.skipped_head.clear();
    }

    fn consume(&mut self, n: usize) {
        let head_missing = REQUEST_HEADER_LEN.saturating_sub(self.skipped_head.len());
        self.skipped_head
            .extend_from_slice(&self.pending[..n.min(head_missing)]);
        self.pending.drain(..n);
        self.offset += n as u64;
    }
}

/// Whether a send's declared payload size frames `content` bytes (protocol §4.2).
fn declared_fits(declared: u32, content: u32) -> bool {
    let exact = SEND_HEADER_LEN as u64 + u64::from(content);
    u64::from(declared) == exact || u64::from(declared) == exact + 3
}

/// Whether §4 lets a request of `operation` declaring `size` be framed (not sends: those are
/// framed by their content size).
fn size_fits(operation: Operation, size: u32) -> bool {
    match operation {
        Operation::Register => size as usize == REGISTER_PAYLOAD_LEN,
        Operation::ListClients | Operation::PullMessages => size == 0,
        Operation::PublicKey => size == 0 || size == 16,
        Operation::SendMessage => true,
    }
}

/// The payload sizes §E2–§E8 give each extension request: list accounts carries a pattern of
/// up to 255 bytes after its 2-byte length, then a u64 cursor and a u16 page size; acknowledge
/// a u32 count and up to 8,192 u32 ids.
fn extension_sizes(extension: Extension) -> RangeInclusive<u32> {
    match extension {
        Extension::Hello | Extension::Unsend | Extension::LongPoll => 4..=4,
        Extension::Challenge
        | Extension::QueueStatus
        | Extension::DeleteAccount
        | Extension::Subscribe => 0..=0,
        Extension::Acknowledge => 4..=4 + 4 * 8192,
        Extension::Prove => 32..=32,
        Extension::Protect => 1..=1,
        Extension::ListAccounts => 12..=12 + 255,
    }
}

fn frame_header(frame: &Frame) -> RequestHeader {
    match *frame {
        Frame::Request { header, .. }
        | Frame::Upload { header, .. }
        | Frame::Rejected { header }
        | Frame::Fatal { header, .. } => header,
    }
}

/// Checks a frame the decoder found in the first `len` bytes of `buf` against protocol §4.
/// Only a rejected request can have had its first bytes dropped before.
fn check_frame(frame: &Frame, len: usize, buf: &[u8], limits: Limits) {
    let header = frame_header(frame);
    let served = Code::from_wire(header.code);
    let code = RequestCode::from_wire(header.code);
    let operation = code.map(|code| code.operation);
    let extension = Extension::from_wire(header.code);
    let declared = header.payload_size;
    let within_limit = declared <= limits.max_payload;
    // The send-message header after the request header, when it has arrived.
    let send_head = buf
        .get(REQUEST_HEADER_LEN..REQUEST_HEADER_LEN + SEND_HEADER_LEN)
        .map(SendHead::parse);
    match *frame {
        Frame::Request {
            code: framed_code,
            body_len,
            ..
        } => {
            assert_eq!(Some(framed_code), served, "{frame:?}");
            assert_eq!(len, REQUEST_HEADER_LEN + body_len, "{frame:?}");
            assert!(within_limit, "framed above the limit: {frame:?}");
            let body = &buf[REQUEST_HEADER_LEN..len];
            let framed_code = match framed_code {
                Code::Classic(code) => code,
                Code::Extension(extension) => {
                    assert!(extension_sizes(extension).contains(&declared), "{frame:?}");
                    assert_eq!(body_len as u32, declared, "{frame:?}");
                    check_extension_body(extension, body);
                    return;
                }
            };
            if framed_code.operation == Operation::SendMessage {
                let head = send_head.expect("a framed send has its message header");
                assert_eq!(body_len, SEND_HEADER_LEN + head.content_len as usize);
                assert!(declared_fits(declared, head.content_len), "{frame:?}");
                assert!(head.content_len <= limits.spool_threshold, "{frame:?}");
            } else {
                assert!(size_fits(framed_code.operation, declared), "{frame:?}");
            }
            check_body(framed_code, body);
        }
        Frame::Upload { head, .. } => {
            assert_eq!(operation, Some(Operation::SendMessage), "{frame:?}");
            assert_eq!(len, REQUEST_HEADER_LEN + SEND_HEADER_LEN, "{frame:?}");
            assert_eq!(Some(head), send_head, "{frame:?}");
            assert!(within_limit, "framed above the limit: {frame:?}");
            assert!(declared_fits(declared, head.content_len), "{frame:?}");
            assert!(head.content_len > limits.spool_threshold, "{frame:?}");
            assert!(head.content_len <= MAX_CONTENT_LEN, "{frame:?}");
        }
        Frame::Rejected { .. } => {
            assert!(within_limit, "skipped above the limit: {frame:?}");
            assert!(
                operation.is_none_or(|operation| operation != Operation::SendMessage
                    && !size_fits(operation, declared)
                    && declared <= MAX_FIXED_PAYLOAD),
                "a request §4 frames or refuses was rejected: {frame:?}"
            );
            assert!(
                extension.is_none_or(|extension| !extension_sizes(extension).contains(&declared)
                    && declared <= MAX_FIXED_PAYLOAD),
                "a request §E0 frames or refuses was rejected: {frame:?}"
            );
        }
        Frame::Fatal { reason, .. } => {
            assert_eq!(len, REQUEST_HEADER_LEN, "{frame:?}");
            match reason {
                FatalReason::PayloadTooLarge(size) => {
                    assert!(size == declared && !within_limit, "{frame:?}");
                }
                FatalReason::SendTooShort(size) => assert!(
                    operation == Some(Operation::SendMessage)
                        && within_limit
                        && size == declared
                        && (size as usize) < SEND_HEADER_LEN,
                    "{frame:?}"
                ),
                FatalReason::SendSizeMismatch {
                    declared: size,
                    content,
                } => assert!(
                    operation == Some(Operation::SendMessage)
                        && within_limit
                        && size == declared
                        && send_head.map(|head| head.content_len) == Some(content)
                        && !declared_fits(declared, content),
                    "{frame:?}"
                ),
                FatalReason::FixedSizeTooLarge {
                    operation: refused,
                    declared: size,
                } => assert!(
                    operation == Some(refused)
                        && refused != Operation::SendMessage
                        && within_limit
                        && size == declared
                        && size > MAX_FIXED_PAYLOAD,
                    "{frame:?}"
                ),
                FatalReason::ExtensionTooLarge {
                    extension: refused,
                    declared: size,
                } => assert!(
                    extension == Some(refused)
                        && within_limit
                        && size == declared
                        && size > MAX_FIXED_PAYLOAD,
                    "{frame:?}"
                ),
                FatalReason::ContentUndeliverable(content) => assert!(
                    operation == Some(Operation::SendMessage)
                        && within_limit
                        && send_head.map(|head| head.content_len) == Some(content)
                        && declared_fits(declared, content)
                        && content > MAX_CONTENT_LEN,
                    "{frame:?}"
                ),
            }
        }
    }
}

/// An extension body parses, or fails for what it says, never for its length.
fn check_extension_body(extension: Extension, body: &[u8]) {
    if let Err(error @ MalformedRequest::ExtensionLength { .. }) =
        ExtensionRequest::parse(extension, body)
    {
        panic!("framing and parsing disagree on a {extension:?} body: {error}")
    }
}

/// A framed body parses, or fails for what it says, never for its length: framing and
/// parsing must agree on where a body ends.
fn check_body(code: RequestCode, body: &[u8]) {
    match Request::parse(code, body) {
        Ok(request) => {
            let operation = match request {
                Request::Register(_) => Operation::Register,
                Request::ListClients(_) => Operation::ListClients,
                Request::PublicKey(_) => Operation::PublicKey,
                Request::SendMessage(send) => {
                    assert_eq!(send.content, &body[SEND_HEADER_LEN..]);
                    Operation::SendMessage
                }
                Request::PullMessages(_) => Operation::PullMessages,
            };
            assert_eq!(operation, code.operation);
        }
        Err(error @ MalformedRequest::WrongLength { .. }) => {
            panic!("framing and parsing disagree on a {code:?} body: {error}")
        }
        Err(_) => {}
    }
}
