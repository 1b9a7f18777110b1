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
mod tests {
    use super::*;
    use crate::types::ClientId;

    const MAX: u32 = 1 << 20;
    const THRESHOLD: u32 = 1 << 16;

    fn request_frame(code: u16, payload_size: u32, body_len: usize) -> Frame {
        Frame::Request {
            header: header(code, payload_size),
            code: Code::from_wire(code).unwrap(),
            body_len,
        }
    }

    fn header(code: u16, payload_size: u32) -> RequestHeader {
        RequestHeader {
            client_id: ClientId([9; 16]),
            version: 2,
            code,
            payload_size,
        }
    }

    fn request(code: u16, payload_size: u32, body: &[u8]) -> Vec<u8> {
        let mut bytes = header(code, payload_size).encode().to_vec();
        bytes.extend_from_slice(body);
        bytes
    }

    fn send_body(content: &[u8]) -> Vec<u8> {
        let mut body = vec![5; 16];
        body.push(3);
        body.extend_from_slice(&(content.len() as u32).to_le_bytes());
        body.extend_from_slice(content);
        body
    }

    /// Feeds `bytes` one at a time and collects every frame, as a dribbling client would.
    fn dribble(bytes: &[u8]) -> Vec<(Frame, usize)> {
        let mut decoder = FrameDecoder::new(MAX, THRESHOLD);
        let mut pending = Vec::new();
        let mut frames = Vec::new();
        for &byte in bytes {
            pending.push(byte);
            loop {
                match decoder.decode(&pending) {
                    Step::NeedMore => break,
                    Step::Discarded(n) => drop(pending.drain(..n)),
                    Step::Frame { frame, len } => {
                        pending.drain(..len);
                        frames.push((frame, len));
                    }
                }
            }
        }
        frames
    }

    #[test]
    fn waits_for_a_whole_header() {
        let bytes = request(601, 0, &[]);
        assert_eq!(
            FrameDecoder::new(MAX, THRESHOLD).decode(&bytes[..22]),
            Step::NeedMore
        );
    }

    #[test]
    fn list_and_pull_have_no_body() {
        for code in [601, 604, 1001, 1104, 701] {
            let bytes = request(code, 0, &[]);
            let step = FrameDecoder::new(MAX, THRESHOLD).decode(&bytes);
            assert_eq!(
                step,
                Step::Frame {
                    frame: request_frame(code, 0, 0),
                    len: 23
                }
            );
        }
    }

    #[test]
    fn public_key_with_size_zero_still_reads_the_target() {
        let bytes = request(602, 0, &[1; 16]);
        let mut decoder = FrameDecoder::new(MAX, THRESHOLD);
        assert_eq!(decoder.decode(&bytes[..38]), Step::NeedMore);
        assert_eq!(
            decoder.decode(&bytes),
            Step::Frame {
                frame: request_frame(602, 0, 16),
                len: 39
            }
        );
    }

    #[test]
    fn send_is_framed_by_content_size_for_both_declared_sizes() {
        let content = b"hello";
        for declared in [21 + 5, 24 + 5] {
            let mut bytes = request(603, declared, &send_body(content));
            bytes.extend_from_slice(&request(604, 0, &[]));
            let frames = dribble(&bytes);
            assert_eq!(frames.len(), 2, "declared {declared}");
            assert_eq!(frames[0], (request_frame(603, declared, 26), 49));
            assert!(matches!(frames[1].0, Frame::Request { body_len: 0, .. }));
        }
    }

    #[test]
    fn send_with_a_short_declared_size_is_fatal_at_once() {
        let bytes = request(1103, 20, &[]);
        assert_eq!(
            FrameDecoder::new(MAX, THRESHOLD).decode(&bytes),
            fatal(header(1103, 20), FatalReason::SendTooShort(20))
        );
    }

    #[test]
    fn send_with_a_mismatched_size_is_fatal() {
        let bytes = request(603, 21 + 6, &send_body(b"hello"));
        assert_eq!(
            FrameDecoder::new(MAX, THRESHOLD).decode(&bytes),
            fatal(
                header(603, 27),
                FatalReason::SendSizeMismatch {
                    declared: 27,
                    content: 5
                }
            )
        );
    }

    #[test]
    fn oversized_payloads_are_fatal_without_waiting_for_them() {
        let bytes = request(603, MAX + 1, &[]);
        assert_eq!(
            FrameDecoder::new(MAX, THRESHOLD).decode(&bytes),
            fatal(header(603, MAX + 1), FatalReason::PayloadTooLarge(MAX + 1))
        );
    }

    #[test]
    fn fixed_size_requests_announcing_more_than_64_kib_are_fatal_at_once() {
        let decoder = || FrameDecoder::new(u32::MAX, THRESHOLD);
        for code in [600, 601, 602, 604, 1000, 1101, 702] {
            let operation = RequestCode::from_wire(code).unwrap().operation;
            for declared in [MAX_FIXED_PAYLOAD + 1, u32::MAX] {
                let bytes = request(code, declared, &[]);
                let reason = FatalReason::FixedSizeTooLarge {
                    operation,
                    declared,
                };
                assert_eq!(
                    decoder().decode(&bytes),
                    fatal(header(code, declared), reason)
                );
            }
            // Up to 64 KiB is still consumed and rejected, keeping the connection.
            let bytes = request(code, MAX_FIXED_PAYLOAD, &[]);
            assert_eq!(
                decoder().decode(&bytes),
                Step::Discarded(REQUEST_HEADER_LEN)
            );
        }
        // Sends and unknown codes follow their own rules.
        assert_eq!(
            decoder().decode(&request(603, u32::MAX, &[])),
            Step::NeedMore
        );
        let unknown = request(4242, u32::MAX, &[]);
        assert_eq!(
            decoder().decode(&unknown),
            Step::Discarded(REQUEST_HEADER_LEN)
        );
    }

    #[test]
    fn wrong_sizes_and_unknown_codes_are_skipped_then_rejected() {
        let mut bytes = request(601, 10, &[7; 10]);
        bytes.extend_from_slice(&request(4242, 3, &[1, 2, 3]));
        bytes.extend_from_slice(&request(600, 0, &[]));
        bytes.extend_from_slice(&request(602, 5, &[0; 5]));
        bytes.extend_from_slice(&request(601, 0, &[]));
        let frames = dribble(&bytes);
        let kinds: Vec<_> = frames.iter().map(|(frame, _)| *frame).collect();
        assert_eq!(
            kinds,
            vec![
                Frame::Rejected {
                    header: header(601, 10)
                },
                Frame::Rejected {
                    header: header(4242, 3)
                },
                Frame::Rejected {
                    header: header(600, 0)
                },
                Frame::Rejected {
                    header: header(602, 5)
                },
                request_frame(601, 0, 0),
            ]
        );
    }

    #[test]
    fn skipping_reports_progress_without_buffering() {
        let mut decoder = FrameDecoder::new(MAX, THRESHOLD);
        let bytes = request(601, 1000, &[0; 100]);
        assert_eq!(decoder.decode(&bytes), Step::Discarded(123));
        assert_eq!(decoder.decode(&[]), Step::NeedMore);
        assert_eq!(decoder.decode(&[0; 899]), Step::Discarded(899));
        assert_eq!(
            decoder.decode(&[0, 1, 2]),
            Step::Frame {
                frame: Frame::Rejected {
                    header: header(601, 1000)
                },
                len: 1
            }
        );
    }

    #[test]
    fn large_sends_are_framed_as_uploads_after_their_head() {
        let content_len = THRESHOLD + 1;
        let mut bytes = request(603, 21 + content_len, &send_body(&[]));
        bytes[23 + 17..23 + 21].copy_from_slice(&content_len.to_le_bytes());
        let mut decoder = FrameDecoder::new(MAX, THRESHOLD);
        assert_eq!(decoder.decode(&bytes[..43]), Step::NeedMore);
        assert_eq!(
            decoder.decode(&bytes),
            Step::Frame {
                frame: Frame::Upload {
                    header: header(603, 21 + content_len),
                    code: RequestCode::from_wire(603).unwrap(),
                    head: SendHead {
                        to: ClientId([5; 16]),
                        kind: 3,
                        content_len,
                    },
                },
                len: 44
            }
        );
    }

    #[test]
    fn contents_no_pull_reply_could_carry_are_fatal() {
        let content_len = MAX_CONTENT_LEN + 1;
        let mut bytes = request(603, 21 + content_len, &send_body(&[]));
        bytes[23 + 17..23 + 21].copy_from_slice(&content_len.to_le_bytes());
        assert_eq!(
            FrameDecoder::new(u32::MAX, THRESHOLD).decode(&bytes),
            fatal(
                header(603, 21 + content_len),
                FatalReason::ContentUndeliverable(content_len)
            )
        );
    }

    #[test]
    fn pipelined_requests_of_every_kind_split_anywhere() {
        let mut bytes = request(600, 415, &[b'a'; 415]);
        bytes.extend_from_slice(&request(602, 16, &[1; 16]));
        bytes.extend_from_slice(&request(603, 21, &send_body(b"")));
        bytes.extend_from_slice(&request(704, 0, &[]));
        let lens: Vec<_> = dribble(&bytes).into_iter().map(|(_, len)| len).collect();
        assert_eq!(lens, vec![438, 39, 44, 23]);
    }

    #[test]
    fn extension_requests_are_framed_by_their_exact_size() {
        let mut bytes = request(1500, 4, &[1, 0, 0, 0]);
        bytes.extend_from_slice(&request(1501, 0, &[]));
        bytes.extend_from_slice(&request(1502, 32, &[7; 32]));
        bytes.extend_from_slice(&request(1503, 1, &[1]));
        // List accounts: any size from the fixed fields to the longest pattern.
        bytes.extend_from_slice(&request(1507, 12, &[0; 12]));
        bytes.extend_from_slice(&request(1507, 267, &[0; 267]));
        bytes.extend_from_slice(&request(1509, 4, &[0; 4]));
        bytes.extend_from_slice(&request(1507, 268, &[0; 268]));
        bytes.extend_from_slice(&request(1507, 11, &[0; 11]));
        // A wrong size is skipped and rejected, the connection going on.
        bytes.extend_from_slice(&request(1502, 31, &[7; 31]));
        bytes.extend_from_slice(&request(1503, 0, &[]));
        // Codes of the extension range not served are unknown codes.
        bytes.extend_from_slice(&request(1504, 2, &[0; 2]));
        let frames: Vec<_> = dribble(&bytes)
            .into_iter()
            .map(|(frame, _)| frame)
            .collect();
        let rejected = |code, size| Frame::Rejected {
            header: header(code, size),
        };
        assert_eq!(
            frames,
            vec![
                request_frame(1500, 4, 4),
                request_frame(1501, 0, 0),
                request_frame(1502, 32, 32),
                request_frame(1503, 1, 1),
                request_frame(1507, 12, 12),
                request_frame(1507, 267, 267),
                request_frame(1509, 4, 4),
                rejected(1507, 268),
                rejected(1507, 11),
                rejected(1502, 31),
                rejected(1503, 0),
                rejected(1504, 2),
            ]
        );
    }

    #[test]
    fn extension_requests_announcing_more_than_64_kib_are_fatal_at_once() {
        let decoder = || FrameDecoder::new(u32::MAX, THRESHOLD);
        for extension in Extension::ALL {
            let code = extension.to_wire();
            for declared in [MAX_FIXED_PAYLOAD + 1, u32::MAX] {
                let reason = FatalReason::ExtensionTooLarge {
                    extension,
                    declared,
                };
                assert_eq!(
                    decoder().decode(&request(code, declared, &[])),
                    fatal(header(code, declared), reason)
                );
                assert_eq!(reason.reason(), Reason::TooLarge);
            }
            assert_eq!(
                decoder().decode(&request(code, MAX_FIXED_PAYLOAD, &[])),
                Step::Discarded(REQUEST_HEADER_LEN)
            );
        }
    }
}
