use std::io::{Seek, Write};

use super::*;
use crate::protocol::{Answer, ClientId, ContentReader, Edition, MessageId, QueuedMessage};
use crate::server::deliveries::delivered as ids;

const ERROR: [u8; 7] = [2, 0x28, 0x23, 0, 0, 0, 0];
/// The 7-byte reply header and the 25-byte header of a pulled message.
const PULL_HEADERS_LEN: usize = 7 + 25;

/// A pull reply carrying one message per content.
fn pulled(contents: Vec<Content>) -> EncodedReply {
    let messages = contents
        .into_iter()
        .map(|content| QueuedMessage {
            id: MessageId(1),
            from: ClientId([1; 16]),
            kind: 3,
            content,
        })
        .collect();
    let reply = Reply::Success {
        edition: Edition::Y2022,
        answer: Answer::Pulled(messages),
    };
    reply.encode(ErrorForm::Bare)
}

/// A pull reply carrying `content`, in memory.
fn reply(content: &[u8]) -> EncodedReply {
    pulled(vec![Content::Inline(content.to_vec())])
}

fn wire(content: &[u8]) -> Vec<u8> {
    reply(content).into_wire(false).0
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
    assert!(outbox.stage(
        reply(b"first"),
        ids(&[]),
        false,
        ErrorForm::Bare,
        Awaits::Round
    ));
    assert!(!outbox.stage(
        reply(b"second"),
        ids(&[]),
        false,
        ErrorForm::Bare,
        Awaits::Round
    ));
    assert_eq!(drain(&mut outbox).0, b"");
    outbox.seal(RoundEnd::Committed(1), &mut deliveries);
    assert!(outbox.awaits_flush());
    // The next round's reply opens a new run.
    assert!(outbox.stage(
        reply(b"third"),
        ids(&[]),
        false,
        ErrorForm::Bare,
        Awaits::Round
    ));
    outbox.release_through(0, Flush::Succeeded, &mut deliveries);
    assert_eq!(drain(&mut outbox).0, b"");
    outbox.release_through(1, Flush::Succeeded, &mut deliveries);
    let expected = [wire(b"first"), wire(b"second")].concat();
    assert_eq!(drain(&mut outbox).0, expected);
    assert!(!outbox.awaits_flush());
    outbox.seal(RoundEnd::Committed(2), &mut deliveries);
    outbox.release_through(2, Flush::Succeeded, &mut deliveries);
    assert_eq!(drain(&mut outbox).0, wire(b"third"));
    assert!(outbox.is_empty());
}

#[test]
fn a_reply_that_waits_for_no_round_goes_out_at_once_but_behind_earlier_ones() {
    let mut outbox = Outbox::new(Instant::now());
    let mut deliveries = Deliveries::default();
    let bare = ErrorForm::Bare;
    assert!(outbox.stage(reply(b"pulled"), ids(&[]), false, bare, Awaits::Durable(4)));
    outbox.release_through(4, Flush::Succeeded, &mut deliveries);
    assert_eq!(
        drain(&mut outbox).0,
        wire(b"pulled"),
        "before its round's commit"
    );

    // Behind a reply that waits for the round, it waits too; the round's seal and rollback
    // leave it as it is.
    assert!(outbox.stage(reply(b"sent"), ids(&[]), false, bare, Awaits::Round));
    assert!(outbox.stage(reply(b"again"), ids(&[]), false, bare, Awaits::Durable(4)));
    assert!(!outbox.stage(reply(b"sent2"), ids(&[]), false, bare, Awaits::Round));
    outbox.release_through(4, Flush::Succeeded, &mut deliveries);
    assert_eq!(drain(&mut outbox).0, b"");
    outbox.seal(RoundEnd::RolledBack { durable: 4 }, &mut deliveries);
    outbox.release_through(4, Flush::Succeeded, &mut deliveries);
    let expected = [ERROR.to_vec(), wire(b"again"), ERROR.to_vec()].concat();
    assert_eq!(drain(&mut outbox).0, expected);
    assert!(outbox.is_empty());
}

#[test]
fn a_round_that_failed_to_commit_or_flush_answers_9000_and_frees_its_messages() {
    let mut outbox = Outbox::new(Instant::now());
    let mut deliveries = Deliveries::default();
    deliveries.start(&ids(&[1, 2]));
    outbox.stage(
        reply(b"pulled"),
        ids(&[1]),
        true,
        ErrorForm::Bare,
        Awaits::Round,
    );
    outbox.seal(RoundEnd::RolledBack { durable: 1 }, &mut deliveries);
    outbox.release_through(1, Flush::Succeeded, &mut deliveries);
    let mut padded_error = ERROR.to_vec();
    padded_error.resize(1024, 0);
    assert_eq!(drain(&mut outbox), (padded_error, vec![]));
    assert!(!deliveries.is_in_flight(MessageId(1)));
    assert!(deliveries.is_in_flight(MessageId(2)));

    outbox.stage(
        reply(b"pulled"),
        ids(&[2]),
        false,
        ErrorForm::Bare,
        Awaits::Round,
    );
    outbox.seal(RoundEnd::Committed(2), &mut deliveries);
    outbox.release_through(2, Flush::Failed, &mut deliveries);
    assert_eq!(drain(&mut outbox), (ERROR.to_vec(), vec![]));
    assert!(!deliveries.is_in_flight(MessageId(2)));
}

#[test]
fn a_9000_replacing_a_reply_of_an_extended_connection_says_internal() {
    let mut outbox = Outbox::new(Instant::now());
    let mut deliveries = Deliveries::default();
    outbox.stage(
        reply(b"sent"),
        ids(&[]),
        false,
        ErrorForm::WithReason,
        Awaits::Round,
    );
    outbox.seal(RoundEnd::RolledBack { durable: 1 }, &mut deliveries);
    outbox.release_through(1, Flush::Succeeded, &mut deliveries);
    let out = drain(&mut outbox).0;
    assert_eq!(&out[1..3], &ERROR[1..3]);
    assert_eq!(Refusal::parse(&out[7..]).map(|(code, _)| code), Some(15));
}

#[test]
fn a_large_content_is_streamed_then_padded() {
    let content: Vec<u8> = (0..=255).cycle().take(3 * STREAM_CHUNK / 2).collect();
    let mut file = tempfile::tempfile().expect("temporary file");
    file.write_all(&content).expect("write");
    file.rewind().expect("rewind");
    let reply = pulled(vec![
        Content::Streamed {
            reader: ContentReader::new(file),
            len: content.len() as u64,
        },
        Content::Inline(b"after".to_vec()),
    ]);
    let mut outbox = Outbox::new(Instant::now());
    outbox.release(reply, ids(&[7]), true);
    assert!(!outbox.writes_stream_next());
    let (out, delivered) = drain(&mut outbox);
    let streamed_at = PULL_HEADERS_LEN;
    let after_at = streamed_at + content.len() + 25;
    let payload_len = after_at + 5 - 7;
    assert_eq!(&out[..3], &[2, 0x38, 0x08]);
    assert_eq!(&out[3..7], &(payload_len as u32).to_le_bytes());
    assert_eq!(
        &out[streamed_at - 4..streamed_at],
        &(content.len() as u32).to_le_bytes()
    );
    assert_eq!(&out[streamed_at..streamed_at + content.len()], &content[..]);
    assert_eq!(&out[after_at..7 + payload_len], b"after");
    assert_eq!(out.len() % 1024, 0);
    assert!(out[7 + payload_len..].iter().all(|&byte| byte == 0));
    assert_eq!(delivered, ids(&[7]));
}

#[test]
fn writes_stop_at_the_budget_and_at_a_full_writer_and_deliver_only_whole_replies() {
    let mut outbox = Outbox::new(Instant::now());
    outbox.release(reply(&[5; 100]), ids(&[1, 2]), false);
    outbox.release(reply(&[6; 100]), ids(&[3]), false);
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
    assert_eq!(
        outbox.unwritten(),
        2 * (PULL_HEADERS_LEN as u64 + 100) - 150
    );
    out.capacity = usize::MAX;
    let written = outbox.write_to(&mut out, 1000, &mut deliveries);
    assert_eq!(written.expect("write"), Written::All);
    assert_eq!(deliveries.take_due(Instant::now()), ids(&[3]));
    let expected = [wire(&[5; 100]), wire(&[6; 100])].concat();
    assert_eq!(out.taken, expected);
}

#[test]
fn a_reply_no_request_produced_goes_after_what_was_released_and_before_what_is_staged() {
    let mut outbox = Outbox::new(Instant::now());
    let mut deliveries = Deliveries::default();
    outbox.release(reply(b"released"), ids(&[]), false);
    outbox.stage(
        reply(b"staged"),
        ids(&[]),
        false,
        ErrorForm::Bare,
        Awaits::Round,
    );
    outbox.release(reply(b"pushed"), ids(&[]), false);
    outbox.seal(RoundEnd::Committed(1), &mut deliveries);
    outbox.release_through(1, Flush::Succeeded, &mut deliveries);
    let expected = [wire(b"released"), wire(b"pushed"), wire(b"staged")].concat();
    assert_eq!(drain(&mut outbox).0, expected);
}

#[test]
fn abandoning_frees_the_messages_of_replies_not_written_whole() {
    let mut deliveries = Deliveries::default();
    deliveries.start(&ids(&[1, 2, 3]));
    let mut outbox = Outbox::new(Instant::now());
    outbox.stage(
        reply(b"staged"),
        ids(&[1]),
        false,
        ErrorForm::Bare,
        Awaits::Round,
    );
    assert!(
        !outbox.abandon(&mut deliveries),
        "nothing released was lost"
    );
    let mut outbox = Outbox::new(Instant::now());
    outbox.release(reply(b"released"), ids(&[2]), false);
    assert!(outbox.abandon(&mut deliveries));
    let still: Vec<bool> = [1, 2, 3]
        .map(|id| deliveries.is_in_flight(MessageId(id)))
        .to_vec();
    assert_eq!(still, [false, false, true]);
}
