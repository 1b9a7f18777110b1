use std::io::{Seek, Write};

use super::*;
use crate::protocol::MessageId;
use crate::server::deliveries::delivered as ids;

const ERROR: [u8; 7] = [2, 0x28, 0x23, 0, 0, 0, 0];

/// A reply with `code` and `payload`, delivering `delivered`.
fn response(code: u16, payload: &[u8], delivered: &[u32]) -> Response {
    let mut reply = Reply::new(code);
    reply.payload().extend_from_slice(payload);
    let mut response = Response::new(reply);
    response.delivered = ids(delivered);
    response
}

fn wire(code: u16, payload: &[u8]) -> Vec<u8> {
    let mut reply = Reply::new(code);
    reply.payload().extend_from_slice(payload);
    reply.into_bytes(false)
}

/// Writes everything released into a vector; returns the bytes and the delivered ids.
fn drain(outbox: &mut Outbox) -> (Vec<u8>, Vec<Delivered>) {
    let (mut out, mut deliveries) = (Vec::new(), Deliveries::default());
    let written = outbox.write_to(&mut out, usize::MAX, &mut deliveries);
    assert_eq!(written.expect("a vector takes everything"), Written::All);
    (out, deliveries.take_due(Instant::now()))
}

/// A writer that takes at most `per_call` bytes a call and `capacity` in all, then blocks.
struct Throttled {
    taken: Vec<u8>,
    per_call: usize,
    capacity: usize,
}

impl Write for Throttled {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let room = self.capacity - self.taken.len();
        if room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = bytes.len().min(self.per_call).min(room);
        self.taken.extend_from_slice(&bytes[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn staged_replies_wait_for_their_commit_to_be_durable_and_keep_request_order() {
    let mut outbox = Outbox::new(Instant::now());
    let mut deliveries = Deliveries::default();
    assert!(outbox.stage(response(2101, b"first", &[]), false));
    assert!(!outbox.stage(response(2104, b"second", &[]), false));
    assert_eq!(drain(&mut outbox).0, b"");
    outbox.seal(1, true, &mut deliveries);
    assert!(outbox.awaits_flush());
    // The next round's reply opens a new run.
    assert!(outbox.stage(response(2102, b"third", &[]), false));
    outbox.release_through(0, true, &mut deliveries);
    assert_eq!(drain(&mut outbox).0, b"");
    outbox.release_through(1, true, &mut deliveries);
    let expected = [wire(2101, b"first"), wire(2104, b"second")].concat();
    assert_eq!(drain(&mut outbox).0, expected);
    assert!(!outbox.awaits_flush());
    outbox.seal(2, true, &mut deliveries);
    outbox.release_through(2, true, &mut deliveries);
    assert_eq!(drain(&mut outbox).0, wire(2102, b"third"));
    assert!(outbox.is_empty());
}

#[test]
fn a_round_that_failed_to_commit_or_flush_answers_9000_and_frees_its_messages() {
    let mut outbox = Outbox::new(Instant::now());
    let mut deliveries = Deliveries::default();
    deliveries.start(&ids(&[1, 2]));
    outbox.stage(response(2104, b"pulled", &[1]), true);
    outbox.seal(1, false, &mut deliveries);
    outbox.release_through(1, true, &mut deliveries);
    let mut padded_error = ERROR.to_vec();
    padded_error.resize(1024, 0);
    assert_eq!(drain(&mut outbox), (padded_error, vec![]));
    assert!(!deliveries.is_in_flight(MessageId(1)));
    assert!(deliveries.is_in_flight(MessageId(2)));

    outbox.stage(response(2104, b"pulled", &[2]), false);
    outbox.seal(2, true, &mut deliveries);
    outbox.release_through(2, false, &mut deliveries);
    assert_eq!(drain(&mut outbox), (ERROR.to_vec(), vec![]));
    assert!(!deliveries.is_in_flight(MessageId(2)));
}

#[test]
fn a_large_content_is_streamed_then_padded() {
    let content: Vec<u8> = (0..=255).cycle().take(3 * STREAM_CHUNK / 2).collect();
    let mut file = tempfile::tempfile().expect("temporary file");
    file.write_all(&content).expect("write");
    file.rewind().expect("rewind");
    let mut reply = Reply::new(2104);
    reply.payload().extend_from_slice(b"message header");
    let mut response = Response::new(reply);
    response.tail = vec![
        Part::Stream {
            reader: ContentReader::new(file),
            len: content.len() as u64,
        },
        Part::Bytes(b"after".to_vec()),
    ];
    response.delivered = ids(&[7]);
    let mut outbox = Outbox::new(Instant::now());
    outbox.release(response, true);
    assert!(!outbox.writes_stream_next());
    let (out, delivered) = drain(&mut outbox);
    let payload_len = 14 + content.len() + 5;
    assert_eq!(&out[..3], &[2, 0x38, 0x08]);
    assert_eq!(&out[3..7], &(payload_len as u32).to_le_bytes());
    assert_eq!(&out[7..21], b"message header");
    assert_eq!(&out[21..21 + content.len()], &content[..]);
    assert_eq!(&out[21 + content.len()..7 + payload_len], b"after");
    assert_eq!(out.len() % 1024, 0);
    assert!(out[7 + payload_len..].iter().all(|&byte| byte == 0));
    assert_eq!(delivered, ids(&[7]));
}

#[test]
fn writes_stop_at_the_budget_and_at_a_full_writer_and_deliver_only_whole_replies() {
    let mut outbox = Outbox::new(Instant::now());
    outbox.release(response(2104, &[5; 100], &[1, 2]), false);
    outbox.release(response(2104, &[6; 100], &[3]), false);
    let mut out = Throttled {
        taken: Vec::new(),
        per_call: 30,
        capacity: 150,
    };
    let mut deliveries = Deliveries::default();
    let written = outbox.write_to(&mut out, 60, &mut deliveries);
    assert_eq!(written.expect("write"), Written::BudgetSpent);
    assert_eq!(
        (out.taken.len(), deliveries.take_due(Instant::now())),
        (60, vec![])
    );
    let written = outbox.write_to(&mut out, 1000, &mut deliveries);
    assert_eq!(written.expect("write"), Written::WouldBlock);
    assert_eq!(
        deliveries.take_due(Instant::now()),
        ids(&[1, 2]),
        "only the first reply is whole"
    );
    assert_eq!(outbox.unwritten(), 214 - 150);
    out.capacity = usize::MAX;
    let written = outbox.write_to(&mut out, 1000, &mut deliveries);
    assert_eq!(written.expect("write"), Written::All);
    assert_eq!(deliveries.take_due(Instant::now()), ids(&[3]));
    let expected = [wire(2104, &[5; 100]), wire(2104, &[6; 100])].concat();
    assert_eq!(out.taken, expected);
}

#[test]
fn a_reply_no_request_produced_goes_after_what_was_released_and_before_what_is_staged() {
    let mut outbox = Outbox::new(Instant::now());
    let mut deliveries = Deliveries::default();
    outbox.release(response(2101, b"released", &[]), false);
    outbox.stage(response(2104, b"staged", &[]), false);
    outbox.release(response(2999, b"pushed", &[]), false);
    outbox.seal(1, true, &mut deliveries);
    outbox.release_through(1, true, &mut deliveries);
    let expected = [
        wire(2101, b"released"),
        wire(2999, b"pushed"),
        wire(2104, b"staged"),
    ]
    .concat();
    assert_eq!(drain(&mut outbox).0, expected);
}

#[test]
fn abandoning_frees_the_messages_of_replies_not_written_whole() {
    let mut deliveries = Deliveries::default();
    deliveries.start(&ids(&[1, 2, 3]));
    let mut outbox = Outbox::new(Instant::now());
    outbox.stage(response(2104, b"staged", &[1]), false);
    assert!(
        !outbox.abandon(&mut deliveries),
        "nothing released was lost"
    );
    let mut outbox = Outbox::new(Instant::now());
    outbox.release(response(2104, b"released", &[2]), false);
    assert!(outbox.abandon(&mut deliveries));
    let still: Vec<bool> = [1, 2, 3]
        .map(|id| deliveries.is_in_flight(MessageId(id)))
        .to_vec();
    assert_eq!(still, [false, false, true]);
}
