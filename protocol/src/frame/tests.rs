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
