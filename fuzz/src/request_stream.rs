//! Target `request_stream`: a byte stream, cut into chunks, through the request decoder as the
//! server's connection drives it (see [`crate::decoding`]). No I/O.
//!
//! Options byte: bits 0–2 pick `max_payload`, bits 3–5 the spool threshold, from tables that
//! include the edges (0, a register's size, `u32::MAX`) and the server's defaults.

use messageu::protocol::padding::{self, Padding};

use crate::decoding::{Decoded, Decoding, Limits};
use crate::input::StreamInput;

pub const MAX_PAYLOADS: [u32; 8] = [0, 20, 415, 1024, 4096, 64 << 10, 1 << 20, u32::MAX];
pub const SPOOL_THRESHOLDS: [u32; 8] = [0, 1, 16, 100, 1024, 4096, 64 << 10, u32::MAX];

/// The options byte choosing `MAX_PAYLOADS[max_payload]` and `SPOOL_THRESHOLDS[threshold]`.
pub fn options(max_payload: usize, threshold: usize) -> u8 {
    assert!(max_payload < 8 && threshold < 8);
    (max_payload | threshold << 3) as u8
}

pub fn limits(options: u8) -> Limits {
    Limits {
        max_payload: MAX_PAYLOADS[usize::from(options & 7)],
        spool_threshold: SPOOL_THRESHOLDS[usize::from(options >> 3 & 7)],
    }
}

pub fn check(data: &[u8]) {
    let Some(input) = StreamInput::parse(data) else {
        return;
    };
    let limits = limits(input.options);
    let whole = Decoding::whole(input.stream, limits);
    let mut split = Decoding::new(limits);
    for chunk in input.chunks(input.stream) {
        split.feed(chunk);
    }
    let split = split.finish();

    assert_eq!(whole.served, split.served, "framing depends on the split");
    assert_eq!(
        whole.consumed, split.consumed,
        "consumption depends on the split"
    );
    check_contiguous(&whole);
    check_early_padding(&split, input.stream);
}

/// Every byte up to the last request belongs to exactly one request.
fn check_contiguous(decoded: &Decoded) {
    let mut end = 0;
    for served in &decoded.served {
        assert_eq!(served.start, end, "a gap or overlap before {served:?}");
        assert!(served.end > served.start, "an empty request: {served:?}");
        end = served.end;
    }
    assert!(end <= decoded.consumed);
}

/// A padding decision taken from part of what follows a request must be the one the whole
/// rest of the stream leads to; only "undecided", or "exact" with nothing seen yet, may change.
fn check_early_padding(split: &Decoded, stream: &[u8]) {
    for (served, early) in split.served.iter().zip(&split.early_padding) {
        let rest = &stream[served.end as usize..];
        let last = padding::classify(served.start, served.end, rest, true);
        match early.decision {
            Padding::Undecided => {}
            Padding::Exact if early.seen == 0 => {}
            decision => assert_eq!(
                decision, last,
                "padding decided early as {decision:?} from {} bytes, from the whole stream \
                 {last:?}: {served:?}",
                early.seen
            ),
        }
    }
}
