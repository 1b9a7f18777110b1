//! The frames of a subscribed connection (protocol §E5). Pushes (2600–2699) come between
//! replies at any time, before the subscribe reply too, so every frame's header is read and
//! the frame sorted by its code: a push is kept for whoever waits for pushes, any other frame
//! answers the oldest request. Bytes are gathered in a [`FrameBuffer`] as they arrive, so a
//! read that times out in the middle of a frame loses nothing. [`Seen`] remembers the
//! messages handled, since one may come again after a reconnection (at least once delivery).

use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{self, Read, Write};
use std::time::Instant;

use super::error::ClientError;
use super::transport::{socket_error, Reply};
use messageu_protocol::client::{pulled_messages, PulledMessage};
use messageu_protocol::push::PUSH_CODES;
use messageu_protocol::{ClientId, MessageId, PushCode, Receipt, ReplyHeader, REPLY_HEADER_LEN};

/// How much one read takes from the socket at most.
const READ_CHUNK: usize = 64 * 1024;
/// How many handled messages are remembered while their acknowledgement is not confirmed:
/// many times the server's window of unacknowledged pushes (256).
const REMEMBERED: usize = 4096;

/// Bytes received and not yet taken as whole frames.
#[derive(Debug, Default)]
pub struct FrameBuffer {
    bytes: Vec<u8>,
}

impl FrameBuffer {
    pub fn extend(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    /// The next frame, once its header and its whole payload have arrived.
    pub fn next_frame(&mut self) -> Option<Reply> {
        let header: &[u8; REPLY_HEADER_LEN] =
            self.bytes.get(..REPLY_HEADER_LEN)?.try_into().ok()?;
        let header = ReplyHeader::parse(header);
        let end = REPLY_HEADER_LEN.checked_add(usize::try_from(header.payload_size).ok()?)?;
        if self.bytes.len() < end {
            return None;
        }
        let rest = self.bytes.split_off(end);
        let mut payload = std::mem::replace(&mut self.bytes, rest);
        payload.drain(..REPLY_HEADER_LEN);
        Some(Reply { header, payload })
    }
}

/// A message pushed to this client: one message in a pull reply's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedMessage {
    pub from: ClientId,
    pub id: MessageId,
    pub kind: u8,
    payload: Vec<u8>,
    /// Where the content starts in `payload`.
    content_at: usize,
}

impl PushedMessage {
    /// Reads a 2600's payload: exactly one whole message.
    fn parse(payload: Vec<u8>) -> Option<PushedMessage> {
        let mut messages = pulled_messages(&payload);
        let first = messages.next()?.ok()?;
        if messages.next().is_some() {
            return None;
        }
        let (from, id, kind) = (first.from, first.id, first.kind);
        let content_at = payload.len() - first.content.len();
        Some(PushedMessage {
            from,
            id,
            kind,
            payload,
            content_at,
        })
    }

    /// The message as a pull reply would have carried it.
    pub fn as_pulled(&self) -> PulledMessage<'_> {
        PulledMessage {
            from: self.from,
            id: self.id,
            kind: self.kind,
            content: &self.payload[self.content_at..],
        }
    }
}

/// A frame of a subscribed connection, sorted by its code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Message(PushedMessage),
    Receipt(Receipt),
    /// A push this client does not know (a later version's, or a receipt of a kind it does
    /// not know): ignored, as protocol §E5 and §E7 ask.
    OtherPush(u16),
    /// The reply to the oldest unanswered request.
    Reply(Reply),
}

impl Incoming {
    pub fn sort(frame: Reply) -> Result<Incoming, ClientError> {
        let code = frame.header.code;
        if !PUSH_CODES.contains(&code) {
            return Ok(Incoming::Reply(frame));
        }
        Ok(match PushCode::from_wire(code) {
            Some(PushCode::Message) => PushedMessage::parse(frame.payload)
                .map(Incoming::Message)
                .ok_or(ClientError::MalformedPush { code })?,
            Some(PushCode::Receipt) => {
                Receipt::parse(&frame.payload).map_or(Incoming::OtherPush(code), Incoming::Receipt)
            }
            None => Incoming::OtherPush(code),
        })
    }
}

/// A subscribed connection's frames: requests go out, and whatever comes back is sorted into
/// replies and pushes. The stream's read timeout says how long a read may wait for a push.
#[derive(Debug)]
pub struct Frames<S> {
    stream: S,
    buffer: FrameBuffer,
    /// Pushes read while a reply was awaited, in the order they came.
    pushes: VecDeque<Incoming>,
}

impl<S: Read + Write> Frames<S> {
    pub fn new(stream: S) -> Frames<S> {
        Frames {
            stream,
            buffer: FrameBuffer::default(),
            pushes: VecDeque::new(),
        }
    }

    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// Sends `request` and reads frames until its reply, which must come by `deadline`;
    /// pushes that come meanwhile are kept for [`Frames::next_push`]. Only one request is
    /// outstanding at a time, so the first frame that is not a push is its reply.
    pub fn call(&mut self, request: &[u8], deadline: Instant) -> Result<Reply, ClientError> {
        self.stream
            .write_all(request)
            .and_then(|()| self.stream.flush())
            .map_err(socket_error)?;
        loop {
            while let Some(frame) = self.buffer.next_frame() {
                match Incoming::sort(frame)? {
                    Incoming::Reply(reply) => return Ok(reply),
                    push => self.pushes.push_back(push),
                }
            }
            if !self.read_more()? && Instant::now() >= deadline {
                return Err(socket_error(io::ErrorKind::TimedOut.into()));
            }
        }
    }

    /// The next push: one kept while a reply was awaited, or one read now; `None` if none
    /// came within the stream's read timeout. With no request outstanding, a frame that is
    /// not a push means the connection is out of step.
    pub fn next_push(&mut self) -> Result<Option<Incoming>, ClientError> {
        if let Some(push) = self.pushes.pop_front() {
            return Ok(Some(push));
        }
        loop {
            if let Some(frame) = self.buffer.next_frame() {
                return match Incoming::sort(frame)? {
                    Incoming::Reply(reply) => Err(ClientError::UnaskedReply {
                        code: reply.header.code,
                    }),
                    push => Ok(Some(push)),
                };
            }
            if !self.read_more()? {
                return Ok(None);
            }
        }
    }

    /// Reads what has arrived into the buffer; `false` if the read timed out first.
    fn read_more(&mut self) -> Result<bool, ClientError> {
        let mut chunk = vec![0; READ_CHUNK];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err(ClientError::ClosedEarly),
            Ok(read) => {
                self.buffer.extend(&chunk[..read]);
                Ok(true)
            }
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(false)
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(error) => Err(socket_error(error)),
        }
    }
}

/// The messages handled and not yet known to be acknowledged: only those can come again
/// (after a reconnection). Ids alone do not tell them apart, since the server may give an id
/// again once its message is deleted (protocol §3.4, after a restart with empty queues), so
/// each is remembered with the rest of what makes it: sender, type and content.
#[derive(Debug, Default)]
pub struct Seen {
    order: VecDeque<MessageId>,
    handled: HashMap<MessageId, Fingerprint>,
}

/// What tells a message delivered again from another one under the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    from: ClientId,
    kind: u8,
    len: usize,
    hash: u64,
}

impl Fingerprint {
    fn of(message: &PushedMessage) -> Fingerprint {
        let content = message.as_pulled().content;
        let mut hasher = DefaultHasher::new();
        content.hash(&mut hasher);
        Fingerprint {
            from: message.from,
            kind: message.kind,
            len: content.len(),
            hash: hasher.finish(),
        }
    }
}

impl Seen {
    /// Whether `message` was handled already (and is delivered again).
    pub fn contains(&self, message: &PushedMessage) -> bool {
        self.handled.get(&message.id) == Some(&Fingerprint::of(message))
    }

    pub fn insert(&mut self, message: &PushedMessage) {
        if self
            .handled
            .insert(message.id, Fingerprint::of(message))
            .is_none()
        {
            self.order.push_back(message.id);
        }
        // Acknowledgements lost with a connection leave ids that never come back: the oldest
        // go first.
        if self.order.len() > REMEMBERED {
            if let Some(oldest) = self.order.pop_front() {
                self.handled.remove(&oldest);
            }
        }
    }

    /// The server confirmed it deleted `ids`: they cannot come again.
    pub fn acknowledged(&mut self, ids: &[MessageId]) {
        for id in ids {
            self.handled.remove(id);
        }
        self.order.retain(|id| self.handled.contains_key(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use messageu_protocol::push::acknowledge_payload;
    use messageu_protocol::{Delivery, Push, QueuedMessage};
    use std::time::Duration;

    fn message(id: u32, text: &[u8]) -> Vec<u8> {
        let push = Push::Message(QueuedMessage {
            id: MessageId(id),
            from: ClientId([4; 16]),
            kind: 3,
            content: messageu_protocol::Content::Inline(text.to_vec()),
        });
        push.encode().into_wire(false).0
    }

    fn receipt(id: u32) -> Vec<u8> {
        let push = Push::Receipt(Receipt {
            id: MessageId(id),
            recipient: ClientId([8; 16]),
            how: Delivery::Acknowledged,
            at_ms: 1_700_000_000_123,
        });
        push.encode().into_wire(false).0
    }

    fn frame(code: u16, payload: &[u8]) -> Vec<u8> {
        let header = ReplyHeader {
            version: 2,
            code,
            payload_size: payload.len() as u32,
        };
        [&header.encode()[..], payload].concat()
    }

    /// A connection whose reads hand over `chunk` bytes at most, then time out once the
    /// script is spent (or close, if `closes`); what is written is kept.
    struct Scripted {
        incoming: VecDeque<u8>,
        chunk: usize,
        closes: bool,
        written: Vec<u8>,
    }

    impl Scripted {
        fn new(incoming: &[&[u8]], chunk: usize) -> Scripted {
            Scripted {
                incoming: incoming.concat().into(),
                chunk,
                closes: false,
                written: Vec::new(),
            }
        }
    }

    impl Read for Scripted {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.incoming.is_empty() {
                return if self.closes {
                    Ok(0)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                };
            }
            let len = buf.len().min(self.chunk).min(self.incoming.len());
            for (at, byte) in self.incoming.drain(..len).enumerate() {
                buf[at] = byte;
            }
            Ok(len)
        }
    }

    impl Write for Scripted {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[test]
    fn pushes_before_a_reply_are_kept_in_order_and_frames_split_anywhere_are_whole() {
        let subscribed = frame(2504, &2u32.to_le_bytes());
        for chunk in [1, 3, 7, 1000] {
            let stream = Scripted::new(
                &[
                    &message(1, b"one"),
                    &receipt(9),
                    &subscribed,
                    &message(2, b"two"),
                ],
                chunk,
            );
            let mut frames = Frames::new(stream);
            let reply = frames.call(b"subscribe", soon()).expect("the reply");
            assert_eq!(reply.header.code, 2504, "chunk {chunk}");
            assert_eq!(reply.payload, 2u32.to_le_bytes());
            assert_eq!(frames.stream().written, b"subscribe");
            let mut pushes = Vec::new();
            while let Some(push) = frames.next_push().expect("pushes") {
                pushes.push(push);
            }
            let ids: Vec<_> = pushes
                .iter()
                .map(|push| match push {
                    Incoming::Message(message) => ("message", message.id.0),
                    Incoming::Receipt(receipt) => ("receipt", receipt.id.0),
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(ids, [("message", 1), ("receipt", 9), ("message", 2)]);
            let Incoming::Message(first) = &pushes[0] else {
                unreachable!()
            };
            assert_eq!(first.as_pulled().content, b"one");
            assert_eq!(first.as_pulled().from, ClientId([4; 16]));
        }
    }

    #[test]
    fn a_push_cut_short_waits_for_its_bytes() {
        let whole = message(5, &[7; 100]);
        let mut frames = Frames::new(Scripted::new(&[&whole[..50]], 1000));
        assert_eq!(frames.next_push().expect("no error"), None);
        frames.stream.incoming.extend(&whole[50..]);
        let Some(Incoming::Message(pushed)) = frames.next_push().expect("whole") else {
            panic!("a message")
        };
        assert_eq!(pushed.as_pulled().content, [7; 100]);
    }

    #[test]
    fn unknown_pushes_are_passed_over_and_malformed_messages_refused() {
        let mut unknown_receipt = receipt(3);
        unknown_receipt[7 + 20] = 9;
        let stream = Scripted::new(&[&frame(2650, b"later"), &unknown_receipt], 1000);
        let mut frames = Frames::new(stream);
        assert_eq!(
            frames.next_push().expect("ignored"),
            Some(Incoming::OtherPush(2650))
        );
        assert_eq!(
            frames.next_push().expect("ignored"),
            Some(Incoming::OtherPush(2601))
        );
        let two = [&message(1, b"a")[7..], &message(2, b"b")[7..]].concat();
        for payload in [&b"short"[..], &two] {
            let mut frames = Frames::new(Scripted::new(&[&frame(2600, payload)], 1000));
            let error = frames.next_push().expect_err("malformed");
            assert!(matches!(error, ClientError::MalformedPush { code: 2600 }));
        }
    }

    #[test]
    fn a_reply_to_no_request_or_a_close_is_an_error() {
        let mut frames = Frames::new(Scripted::new(&[&frame(2505, &[0; 4])], 1000));
        let error = frames.next_push().expect_err("out of step");
        assert!(matches!(error, ClientError::UnaskedReply { code: 2505 }));

        let mut closing = Scripted::new(&[&message(1, b"x")[..10]], 1000);
        closing.closes = true;
        let mut frames = Frames::new(closing);
        let error = frames.next_push().expect_err("closed");
        assert!(matches!(error, ClientError::ClosedEarly));

        let mut frames = Frames::new(Scripted::new(&[], 1000));
        let request = acknowledge_payload(&[MessageId(1)]);
        let error = frames.call(&request, Instant::now()).expect_err("no reply");
        assert!(matches!(error, ClientError::Timeout(_)));
    }

    fn pushed(id: u32, text: &[u8]) -> PushedMessage {
        let mut buffer = FrameBuffer::default();
        buffer.extend(&message(id, text));
        let frame = buffer.next_frame().expect("a whole frame");
        match Incoming::sort(frame).expect("a message") {
            Incoming::Message(message) => message,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn handled_messages_are_known_again_until_acknowledged() {
        let mut seen = Seen::default();
        let first = pushed(1, b"hello");
        seen.insert(&first);
        seen.insert(&first);
        assert!(seen.contains(&first));
        assert!(!seen.contains(&pushed(2, b"hello")));
        // An id given again (after a restart) to another message.
        assert!(!seen.contains(&pushed(1, b"other")));
        seen.acknowledged(&[MessageId(1)]);
        assert!(!seen.contains(&first));
        assert!(seen.order.is_empty());
        for id in 1..=REMEMBERED as u32 + 1 {
            seen.insert(&pushed(id, b"x"));
        }
        assert!(!seen.contains(&pushed(1, b"x")), "the oldest is forgotten");
        assert!(seen.contains(&pushed(2, b"x")));
        assert_eq!(seen.order.len(), REMEMBERED);
    }
}
