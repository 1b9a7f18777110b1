use super::*;
use crate::protocol::ClientId;

const MAX: u32 = 1 << 20;
const THRESHOLD: u32 = 100;
const GRACE: Duration = Duration::from_millis(200);

/// An event with what it carries copied out, so that runs can be compared.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Request {
        code: u16,
        body: Vec<u8>,
        padded: bool,
    },
    Rejected {
        code: u16,
        padded: bool,
    },
    Fatal(FatalReason),
    UploadStart {
        content_len: u32,
    },
    Upload(Vec<u8>),
    UploadEnd {
        padded: bool,
    },
}

fn reader() -> RequestReader {
    RequestReader::new(FrameDecoder::new(MAX, THRESHOLD), GRACE)
}

/// Drains the events available at `now`; returns whether the reader waits on padding.
fn drain(reader: &mut RequestReader, now: Instant, seen: &mut Vec<Seen>) -> bool {
    loop {
        let event = match reader.next(now) {
            Event::NeedMore => return false,
            Event::Undecided { until } => {
                assert!(until > now);
                return true;
            }
            Event::Request { header, padded, .. } => Seen::Request {
                code: header.code,
                body: reader.body().to_vec(),
                padded,
            },
            Event::Rejected { header, padded } => Seen::Rejected {
                code: header.code,
                padded,
            },
            Event::Fatal { reason, .. } => Seen::Fatal(reason),
            Event::UploadStart { head, .. } => Seen::UploadStart {
                content_len: head.content_len,
            },
            Event::UploadBytes(bytes) => Seen::Upload(bytes.to_vec()),
            Event::UploadEnd { padded } => Seen::UploadEnd { padded },
        };
        push_merged(seen, event);
    }
}

/// Upload bytes in one piece however they arrived.
fn push_merged(seen: &mut Vec<Seen>, event: Seen) {
    if let (Some(Seen::Upload(earlier)), Seen::Upload(more)) = (seen.last_mut(), &event) {
        earlier.extend_from_slice(more);
    } else {
        seen.push(event);
    }
}

/// Feeds `stream` in the pieces `splits` cuts it into, as a connection would (upload
/// content straight to its sink when it can); returns every event.
fn run(stream: &[u8], cuts: &[usize]) -> Vec<Seen> {
    let mut reader = reader();
    let now = Instant::now();
    let mut seen = Vec::new();
    let mut from = 0;
    for &to in cuts.iter().chain(std::iter::once(&stream.len())) {
        let (direct, rest) = reader.take_upload_bytes(&stream[from..to]);
        if !direct.is_empty() {
            push_merged(&mut seen, Seen::Upload(direct.to_vec()));
        }
        reader.feed(rest);
        drain(&mut reader, now, &mut seen);
        from = to;
    }
    reader.close_input();
    drain(&mut reader, now, &mut seen);
    seen
}

fn request(caller: u8, code: u16, declared: u32, body: &[u8]) -> Vec<u8> {
    let header = RequestHeader {
        client_id: ClientId([caller; 16]),
        version: 2,
        code,
        payload_size: declared,
    };
    [&header.encode()[..], body].concat()
}

fn send_body(content: &[u8]) -> Vec<u8> {
    let mut body = vec![5; 16];
    body.push(4);
    body.extend_from_slice(&(content.len() as u32).to_le_bytes());
    body.extend_from_slice(content);
    body
}

/// A persistent client's session: every kind of request, pipelined.
fn session() -> (Vec<u8>, Vec<Seen>) {
    let register = [vec![b'a'; 10], vec![0; 245], vec![0x30; 160]].concat();
    let small = send_body(b"hello");
    let large: Vec<u8> = (0..=255).cycle().take(1000).collect();
    let large_send = send_body(&large);
    let parts = [
        request(1, 600, 415, &register),
        request(1, 601, 0, &[]),
        request(1, 602, 0, &[7; 16]),
        request(1, 603, small.len() as u32 + 3, &small),
        request(1, 601, 10, &[9; 10]),
        request(1, 4242, 3, &[1, 2, 3]),
        request(1, 1103, large_send.len() as u32, &large_send[..21]),
        large.clone(),
        request(1, 704, 0, &[]),
    ];
    let expected = vec![
        Seen::Request {
            code: 600,
            body: register,
            padded: false,
        },
        Seen::Request {
            code: 601,
            body: vec![],
            padded: false,
        },
        Seen::Request {
            code: 602,
            body: vec![7; 16],
            padded: false,
        },
        Seen::Request {
            code: 603,
            body: small,
            padded: false,
        },
        Seen::Rejected {
            code: 601,
            padded: false,
        },
        Seen::Rejected {
            code: 4242,
            padded: false,
        },
        Seen::UploadStart { content_len: 1000 },
        Seen::Upload(large),
        Seen::UploadEnd { padded: false },
        Seen::Request {
            code: 704,
            body: vec![],
            padded: false,
        },
    ];
    (parts.concat(), expected)
}

#[test]
fn a_pipelined_session_reads_the_same_whole_byte_by_byte_and_in_random_splits() {
    let (stream, expected) = session();
    assert_eq!(run(&stream, &[]), expected);
    let every_byte: Vec<usize> = (1..stream.len()).collect();
    assert_eq!(run(&stream, &every_byte), expected);
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for _ in 0..200 {
        let mut cuts: Vec<usize> = (0..8)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % stream.len() as u64) as usize
            })
            .collect();
        cuts.sort_unstable();
        assert_eq!(run(&stream, &cuts), expected, "cuts {cuts:?}");
    }
}

#[test]
fn a_request_followed_by_zeros_to_the_block_boundary_is_padded_and_ends_reading() {
    let mut stream = request(0, 1001, 0, &[]);
    stream.resize(1024, 0);
    stream.extend_from_slice(&request(1, 1001, 0, &[]));
    let padded = Seen::Request {
        code: 1001,
        body: vec![],
        padded: true,
    };
    assert_eq!(run(&stream, &[]), vec![padded.clone()]);
    // Two blocks of padding for a larger request, cut anywhere after the request.
    let register = [vec![b'b'; 3], vec![0; 252], vec![0x30; 160]].concat();
    let mut stream = request(0, 1100, 415, &register);
    stream.resize(2048, 0);
    let expected = vec![Seen::Request {
        code: 1100,
        body: register,
        padded: true,
    }];
    assert_eq!(run(&stream, &[500, 1500]), expected);
}

#[test]
fn an_extension_request_is_never_padded_nor_held_for_its_padding() {
    // A hello at the start of the stream, followed by zeros: served at once, exactly; the
    // zeros are then framed as what they are.
    let hello = request(0, 1500, 4, &[1, 0, 0, 0]);
    let mut reader = reader();
    let mut seen = Vec::new();
    reader.feed(&hello);
    reader.feed(&[0; 10]);
    assert!(!drain(&mut reader, Instant::now(), &mut seen), "not held");
    assert_eq!(
        seen,
        vec![Seen::Request {
            code: 1500,
            body: vec![1, 0, 0, 0],
            padded: false,
        }]
    );
    let mut stream = hello;
    stream.resize(1024, 0);
    assert_eq!(run(&stream, &[])[0], seen[0]);
}

#[test]
fn part_of_a_padding_block_waits_for_the_rest_the_grace_time_or_the_close() {
    let mut stream = request(0, 604, 0, &[]);
    stream.resize(600, 0);
    let start = Instant::now();
    let padded = vec![Seen::Request {
        code: 604,
        body: vec![],
        padded: true,
    }];
    for ending in ["more zeros", "grace", "close"] {
        let mut reader = reader();
        let mut seen = Vec::new();
        reader.feed(&stream);
        assert!(drain(&mut reader, start, &mut seen), "undecided");
        assert!(reader.is_holding() && seen.is_empty());
        match ending {
            "more zeros" => {
                reader.feed(&[0; 424]);
                drain(&mut reader, start, &mut seen);
            }
            "grace" => {
                assert!(drain(&mut reader, start + GRACE / 2, &mut seen));
                drain(&mut reader, start + GRACE, &mut seen);
            }
            _ => {
                reader.close_input();
                drain(&mut reader, start, &mut seen);
            }
        }
        assert_eq!(seen, padded, "{ending}");
    }
    // A non-zero byte before the boundary is a pipelined request after all.
    let mut reader = reader();
    let mut seen = Vec::new();
    reader.feed(&stream);
    assert!(drain(&mut reader, start, &mut seen));
    reader.feed(&[1]);
    drain(&mut reader, start, &mut seen);
    assert_eq!(
        seen[0],
        Seen::Request {
            code: 604,
            body: vec![],
            padded: false,
        }
    );
}

#[test]
fn a_request_not_starting_on_a_block_boundary_is_never_taken_for_padded() {
    let mut stream = request(1, 601, 0, &[]);
    stream.extend_from_slice(&request(0, 600, 415, &[0; 415]));
    stream.resize(2048, 0);
    let seen = run(&stream, &[]);
    assert_eq!(
        seen[1],
        Seen::Request {
            code: 600,
            body: vec![0; 415],
            padded: false,
        }
    );
    // The zeros after it are read as requests (declared size 0, code 0: rejected).
    assert!(seen[2..].iter().all(|seen| *seen
        == Seen::Rejected {
            code: 0,
            padded: false
        }));
}

#[test]
fn a_padded_upload_is_padded_when_its_content_has_passed() {
    let content = vec![0x77; 1000];
    let body = send_body(&content);
    let mut stream = request(3, 703, body.len() as u32 + 3, &body);
    stream.resize(2048, 0);
    let expected = vec![
        Seen::UploadStart { content_len: 1000 },
        Seen::Upload(content),
        Seen::UploadEnd { padded: true },
    ];
    assert_eq!(run(&stream, &[]), expected);
    assert_eq!(run(&stream, &[44, 300]), expected);
}

#[test]
fn untrustworthy_framing_is_fatal_and_nothing_after_it_is_read() {
    let mut stream = request(1, 603, 20, &[]);
    stream.extend_from_slice(&request(1, 601, 0, &[]));
    assert_eq!(
        run(&stream, &[]),
        vec![Seen::Fatal(FatalReason::SendTooShort(20))]
    );
    let mut reader = reader();
    reader.feed(&request(1, 600, u32::MAX, &[]));
    assert!(matches!(reader.next(Instant::now()), Event::Fatal { .. }));
    reader.feed(&request(1, 601, 0, &[]));
    assert_eq!(reader.next(Instant::now()), Event::NeedMore);
    assert!(!reader.has_buffered());
}

#[test]
fn the_reader_says_what_it_waits_for() {
    let mut reader = reader();
    let now = Instant::now();
    reader.feed(&request(1, 601, 0, &[])[..10]);
    assert_eq!(reader.next(now), Event::NeedMore);
    assert!(reader.has_partial_request() && reader.has_buffered());
    let content = [5; 200];
    let body = send_body(&content);
    reader.feed(&request(1, 601, 0, &[])[10..]);
    reader.feed(&request(1, 603, body.len() as u32, &body[..21]));
    assert!(matches!(reader.next(now), Event::Request { .. }));
    assert!(matches!(reader.next(now), Event::UploadStart { .. }));
    assert!(!reader.has_partial_request());
    assert!(reader.awaits_upload_bytes());
    let (direct, rest) = reader.take_upload_bytes(&content);
    assert_eq!((direct.len(), rest.len()), (200, 0));
    assert!(!reader.awaits_upload_bytes());
    assert_eq!(reader.next(now), Event::UploadEnd { padded: false });
    assert!(!reader.has_buffered());
}
