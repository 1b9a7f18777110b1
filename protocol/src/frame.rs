//! Request framing (protocol §4): where one request ends and the next begins.
//!
//! A strict "header, then payload size bytes" loop breaks real clients, so the body length
//! depends on the operation: public-key requests may declare size 0 and still carry the
//! 16-byte target, and send-message bodies are framed by their content size whatever the
//! declared size says (21 + N or 24 + N). The decoder is incremental and never allocates:
//! the caller keeps the bytes and asks again when more have arrived. A send whose content is
//! too large to buffer is framed as an [`Frame::Upload`]: only its head, with the content left
//! for the caller to stream to storage. Extension requests (protocol §E0) have none of these
//! quirks: their payload size is exact, and at most [`MAX_FIXED_PAYLOAD`].

use super::codes::{Code, Extension, Operation, RequestCode};
use super::header::{RequestHeader, REQUEST_HEADER_LEN};
use super::reason::Reason;
use super::replies::PULLED_MESSAGE_HEADER_LEN;
use super::request::{SendHead, PUBLIC_KEY_REQUEST_LEN, REGISTER_PAYLOAD_LEN, SEND_HEADER_LEN};

/// The largest payload a register, list, public-key, pull or extension request may declare:
/// far beyond any it could need (415 bytes at most), so a larger one is refused at once,
/// whatever the maximum for sends (protocol §4 rule 6, §E0).
pub const MAX_FIXED_PAYLOAD: u32 = 64 << 10;

/// Bytes some clients declare beyond the send-message header: their struct had 3 alignment
/// bytes that they never send.
const SEND_ALIGNMENT_SLACK: u64 = 3;

/// One request's worth of framing, found at the start of the buffer given to
/// [`FrameDecoder::decode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A complete request of a known code: the header, then `body_len` bytes of body.
    Request {
        header: RequestHeader,
        code: Code,
        body_len: usize,
    },
    /// The 44-byte head of a send whose content exceeds the buffering threshold. The next
    /// `head.content_len` bytes of the stream are its content: the caller consumes them
    /// before decoding again.
    Upload {
        header: RequestHeader,
        code: RequestCode,
        head: SendHead,
    },
    /// A request whose declared size does not fit its code (or an unknown code); its declared
    /// bytes have been consumed. Reply 9000; the connection stays usable.
    Rejected { header: RequestHeader },
    /// Framing that cannot be trusted. Reply 9000 and close the connection.
    Fatal {
        header: RequestHeader,
        reason: FatalReason,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FatalReason {
    #[error("declared payload size {0} exceeds the configured maximum")]
    PayloadTooLarge(u32),
    #[error("send-message payload size {0} is below the 21-byte message header")]
    SendTooShort(u32),
    #[error(
        "send-message payload size {declared} matches neither 21 + {content} nor 24 + {content}"
    )]
    SendSizeMismatch { declared: u32, content: u32 },
    #[error("content size {0} leaves no room for the pull reply's 25-byte message header")]
    ContentUndeliverable(u32),
    #[error("declared payload size {declared} is far beyond any {operation:?} request's")]
    FixedSizeTooLarge { operation: Operation, declared: u32 },
    #[error("declared payload size {declared} is far beyond any {extension} request's")]
    ExtensionTooLarge { extension: Extension, declared: u32 },
}

impl FatalReason {
    /// The reason an extended connection is told (protocol §E1).
    pub fn reason(self) -> Reason {
        match self {
            FatalReason::PayloadTooLarge(_)
            | FatalReason::FixedSizeTooLarge { .. }
            | FatalReason::ExtensionTooLarge { .. }
            | FatalReason::ContentUndeliverable(_) => Reason::TooLarge,
            FatalReason::SendTooShort(_) | FatalReason::SendSizeMismatch { .. } => Reason::Framing,
        }
    }
}

/// The largest content a pull reply can carry: its payload size (25 + N) is a u32.
pub const MAX_CONTENT_LEN: u32 = u32::MAX - PULLED_MESSAGE_HEADER_LEN as u32;

/// The outcome of one call to [`FrameDecoder::decode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing can be decided until more bytes arrive.
    NeedMore,
    /// This many leading bytes belong to a rejected request and can be dropped; no frame yet.
    Discarded(usize),
    /// A frame that occupies the first `len` bytes of the buffer.
    Frame { frame: Frame, len: usize },
}

/// How the body of a request is delimited, decided from its header alone.
enum BodyRule {
    Exact(Code, usize),
    /// A fixed-size operation announcing far more than it could need.
    Refuse(FatalReason),
    SendMessage(RequestCode),
    Skip,
}

/// Incremental request decoder for one connection.
#[derive(Debug)]
pub struct FrameDecoder {
    max_payload: u32,
    /// Send contents larger than this are framed as uploads instead of buffered whole.
    upload_threshold: u32,
    /// A rejected request whose declared bytes are still being dropped as they arrive, so
    /// that the server never buffers what a client merely announced.
    skipping: Option<(RequestHeader, u32)>,
}

impl FrameDecoder {
    pub fn new(max_payload: u32, upload_threshold: u32) -> FrameDecoder {
        FrameDecoder {
            max_payload,
            upload_threshold,
            skipping: None,
        }
    }

    /// Whether the decoder is inside a rejected request, dropping its declared bytes.
    pub fn is_skipping(&self) -> bool {
        self.skipping.is_some()
    }

    /// Looks at the unconsumed bytes of the stream and says what the next step is. The caller
    /// drops the bytes a returned `Discarded` or `Frame` covers before calling again.
    pub fn decode(&mut self, buf: &[u8]) -> Step {
        if self.skipping.is_some() {
            return self.skip(buf, 0);
        }
        let Some(header) = RequestHeader::parse_prefix(buf) else {
            return Step::NeedMore;
        };
        if header.payload_size > self.max_payload {
            return fatal(header, FatalReason::PayloadTooLarge(header.payload_size));
        }
        match body_rule(&header) {
            BodyRule::Refuse(reason) => fatal(header, reason),
            BodyRule::Exact(code, body_len) => exact(header, code, body_len, buf),
            BodyRule::SendMessage(code) => send_message(header, code, buf, self.upload_threshold),
            BodyRule::Skip if header.payload_size == 0 => Step::Frame {
                frame: Frame::Rejected { header },
                len: REQUEST_HEADER_LEN,
            },
            BodyRule::Skip => {
                self.skipping = Some((header, header.payload_size));
                self.skip(&buf[REQUEST_HEADER_LEN..], REQUEST_HEADER_LEN)
            }
        }
    }

    fn skip(&mut self, buf: &[u8], already: usize) -> Step {
        let Some((header, remaining)) = self.skipping.as_mut() else {
            return Step::NeedMore;
        };
        let taken = buf.len().min(*remaining as usize);
        *remaining -= taken as u32;
        let len = already + taken;
        if *remaining == 0 {
            let header = *header;
            self.skipping = None;
            return Step::Frame {
                frame: Frame::Rejected { header },
                len,
            };
        }
        match len {
            0 => Step::NeedMore,
            len => Step::Discarded(len),
        }
    }
}

fn body_rule(header: &RequestHeader) -> BodyRule {
    match Code::from_wire(header.code) {
        Some(Code::Classic(code)) => classic_body_rule(header, code),
        Some(Code::Extension(extension)) => extension_body_rule(header, extension),
        None => BodyRule::Skip,
    }
}

fn classic_body_rule(header: &RequestHeader, code: RequestCode) -> BodyRule {
    let size = header.payload_size as usize;
    let exact = |len| BodyRule::Exact(Code::Classic(code), len);
    match (code.operation, size) {
        (Operation::Register, REGISTER_PAYLOAD_LEN) => exact(REGISTER_PAYLOAD_LEN),
        (Operation::ListClients | Operation::PullMessages, 0) => exact(0),
        // Size 0 is a quirk of some clients: the target id follows the header anyway.
        (Operation::PublicKey, 0 | PUBLIC_KEY_REQUEST_LEN) => exact(PUBLIC_KEY_REQUEST_LEN),
        (Operation::SendMessage, _) => BodyRule::SendMessage(code),
        _ if header.payload_size > MAX_FIXED_PAYLOAD => {
            BodyRule::Refuse(FatalReason::FixedSizeTooLarge {
                operation: code.operation,
                declared: header.payload_size,
            })
        }
        _ => BodyRule::Skip,
    }
}

/// Extension payloads have one of their operation's sizes; another size up to 64 KiB is
/// skipped and rejected, a larger one is fatal.
fn extension_body_rule(header: &RequestHeader, extension: Extension) -> BodyRule {
    let size = header.payload_size as usize;
    if extension.payload_size().allows(size) {
        BodyRule::Exact(Code::Extension(extension), size)
    } else if header.payload_size > MAX_FIXED_PAYLOAD {
        BodyRule::Refuse(FatalReason::ExtensionTooLarge {
            extension,
            declared: header.payload_size,
        })
    } else {
        BodyRule::Skip
    }
}

fn fatal(header: RequestHeader, reason: FatalReason) -> Step {
    Step::Frame {
        frame: Frame::Fatal { header, reason },
        len: REQUEST_HEADER_LEN,
    }
}

fn exact(header: RequestHeader, code: Code, body_len: usize, buf: &[u8]) -> Step {
    let len = REQUEST_HEADER_LEN + body_len;
    if buf.len() < len {
        return Step::NeedMore;
    }
    Step::Frame {
        frame: Frame::Request {
            header,
            code,
            body_len,
        },
        len,
    }
}

fn send_message(
    header: RequestHeader,
    code: RequestCode,
    buf: &[u8],
    upload_threshold: u32,
) -> Step {
    let declared = header.payload_size;
    if (declared as usize) < SEND_HEADER_LEN {
        return fatal(header, FatalReason::SendTooShort(declared));
    }
    let Some(send_header) = buf.get(REQUEST_HEADER_LEN..REQUEST_HEADER_LEN + SEND_HEADER_LEN)
    else {
        return Step::NeedMore;
    };
    let head = SendHead::parse(send_header);
    let content = head.content_len;
    let exact_size = SEND_HEADER_LEN as u64 + u64::from(content);
    if u64::from(declared) != exact_size && u64::from(declared) != exact_size + SEND_ALIGNMENT_SLACK
    {
        return fatal(header, FatalReason::SendSizeMismatch { declared, content });
    }
    if content > MAX_CONTENT_LEN {
        return fatal(header, FatalReason::ContentUndeliverable(content));
    }
    if content > upload_threshold {
        return Step::Frame {
            frame: Frame::Upload { header, code, head },
            len: REQUEST_HEADER_LEN + SEND_HEADER_LEN,
        };
    }
    // exact_size <= declared <= max_payload, so it fits in usize.
    exact(header, Code::Classic(code), exact_size as usize, buf)
}

#[cfg(test)]
mod tests;
