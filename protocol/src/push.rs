//! Push delivery (protocol §E5, §E7): the acknowledge request's payload, the subscribe and
//! acknowledge answers, and the frames a server sends without a request on a subscribed
//! connection (a message, 2600; a delivery receipt, 2601), with the parsers a client reads
//! them with.

use std::ops::RangeInclusive;

use byteorder::{ByteOrder, LittleEndian};

use super::replies::{pulled, QueuedMessage};
use super::reply::EncodedReply;
use super::request::MalformedRequest;
use super::types::{ClientId, MessageId};

/// The most message ids one acknowledge request carries.
pub const MAX_ACKNOWLEDGED: usize = 8192;
/// An acknowledge payload: a u32 count, then that many u32 message ids.
pub const ACKNOWLEDGE_MIN_LEN: usize = 4;
pub const ACKNOWLEDGE_MAX_LEN: usize = ACKNOWLEDGE_MIN_LEN + 4 * MAX_ACKNOWLEDGED;
/// A receipt: message id (4), recipient (16), how (1), time (8).
pub const RECEIPT_LEN: usize = 4 + 16 + 1 + 8;
/// The subscribe and acknowledge replies: one u32.
pub const COUNT_REPLY_LEN: usize = 4;

/// The reply codes of pushes (protocol §E5): a frame with one answers no request, and a
/// client ignores one whose code it does not know.
pub const PUSH_CODES: RangeInclusive<u16> = 2600..=2699;

/// The code of each frame a server pushes (protocol §E5: 2600–2699 are pushes). Each
/// variant's value is its code, defined here only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PushCode {
    Message = 2600,
    Receipt = 2601,
}

impl PushCode {
    pub fn from_wire(code: u16) -> Option<PushCode> {
        [PushCode::Message, PushCode::Receipt]
            .into_iter()
            .find(|push| *push as u16 == code)
    }

    pub const fn to_wire(self) -> u16 {
        self as u16
    }
}

/// How a message reached its recipient, as a receipt tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// The recipient acknowledged it after a push.
    Acknowledged = 1,
    /// A pull (or long-poll) reply carrying it was written whole.
    Pulled = 2,
}

impl Delivery {
    pub fn from_byte(byte: u8) -> Option<Delivery> {
        match byte {
            1 => Some(Delivery::Acknowledged),
            2 => Some(Delivery::Pulled),
            _ => None,
        }
    }
}

/// A delivery receipt (protocol §E7), pushed to the sender's subscribed connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    pub id: MessageId,
    pub recipient: ClientId,
    pub how: Delivery,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
}

impl Receipt {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.0.to_le_bytes());
        out.extend_from_slice(&self.recipient.0);
        out.push(self.how as u8);
        out.extend_from_slice(&self.at_ms.to_le_bytes());
    }

    /// Reads a receipt frame's payload; bytes after the fields of version 1 are ignored.
    pub fn parse(payload: &[u8]) -> Option<Receipt> {
        let fixed = payload.get(..RECEIPT_LEN)?;
        Some(Receipt {
            id: MessageId(LittleEndian::read_u32(&fixed[0..4])),
            recipient: ClientId::from_slice(&fixed[4..20])?,
            how: Delivery::from_byte(fixed[20])?,
            at_ms: LittleEndian::read_u64(&fixed[21..29]),
        })
    }
}

/// A frame pushed on a subscribed connection.
#[derive(Debug)]
pub enum Push {
    /// One message for the subscriber, in the layout of a pull reply's message.
    Message(QueuedMessage),
    Receipt(Receipt),
}

impl Push {
    pub fn code(&self) -> PushCode {
        match self {
            Push::Message(_) => PushCode::Message,
            Push::Receipt(_) => PushCode::Receipt,
        }
    }

    pub fn encode(self) -> EncodedReply {
        let code = self.code().to_wire();
        match self {
            Push::Message(message) => pulled(code, vec![message]),
            Push::Receipt(receipt) => {
                let mut frame = EncodedReply::with_capacity(code, RECEIPT_LEN);
                receipt.encode(frame.payload());
                frame
            }
        }
    }
}

/// Decodes an acknowledge payload: its count must fill it exactly.
pub fn parse_acknowledge(body: &[u8]) -> Result<Vec<MessageId>, MalformedRequest> {
    let (count, ids) =
        body.split_at_checked(ACKNOWLEDGE_MIN_LEN)
            .ok_or(MalformedRequest::AcknowledgeLength {
                count: 0,
                payload: body.len(),
            })?;
    let count = LittleEndian::read_u32(count) as usize;
    if count.checked_mul(4) != Some(ids.len()) {
        return Err(MalformedRequest::AcknowledgeLength {
            count,
            payload: body.len(),
        });
    }
    Ok(ids
        .chunks_exact(4)
        .map(|id| MessageId(LittleEndian::read_u32(id)))
        .collect())
}

/// An acknowledge request's payload for `ids`, at most [`MAX_ACKNOWLEDGED`] of them (a caller
/// sends more in several requests).
pub fn acknowledge_payload(ids: &[MessageId]) -> Vec<u8> {
    let ids = &ids[..ids.len().min(MAX_ACKNOWLEDGED)];
    let mut payload = Vec::with_capacity(ACKNOWLEDGE_MIN_LEN + 4 * ids.len());
    payload.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    for id in ids {
        payload.extend_from_slice(&id.0.to_le_bytes());
    }
    payload
}

/// Reads a subscribe or acknowledge reply's count.
pub fn parse_count(payload: &[u8]) -> Option<u32> {
    payload.get(..COUNT_REPLY_LEN).map(LittleEndian::read_u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::pulled_messages;
    use crate::Content;

    #[test]
    fn acknowledge_payloads_round_trip_and_must_be_filled_by_their_count() {
        let ids = [MessageId(1), MessageId(0xdead_beef)];
        let payload = acknowledge_payload(&ids);
        assert_eq!(payload.len(), 12);
        assert_eq!(parse_acknowledge(&payload), Ok(ids.to_vec()));
        assert_eq!(parse_acknowledge(&[0; 4]), Ok(Vec::new()));
        assert!(parse_acknowledge(&payload[..11]).is_err());
        assert!(parse_acknowledge(&[3, 0, 0, 0, 1, 0, 0, 0]).is_err());
        assert!(
            parse_acknowledge(&[0xff; 8]).is_err(),
            "a count that overflows"
        );
        assert!(parse_acknowledge(&[]).is_err());
    }

    #[test]
    fn a_pushed_message_is_2600_with_one_message_in_the_pull_layout() {
        let push = Push::Message(QueuedMessage {
            id: MessageId(9),
            from: ClientId([4; 16]),
            kind: 3,
            content: Content::Inline(b"hello".to_vec()),
        });
        let (wire, tail) = push.encode().into_wire(false);
        assert!(tail.is_empty());
        assert_eq!(&wire[..7], &[2, 0x28, 0x0a, 30, 0, 0, 0]);
        let messages: Vec<_> = pulled_messages(&wire[7..]).collect();
        assert_eq!(messages.len(), 1);
        let message = messages[0].clone().expect("a whole message");
        assert_eq!(
            (message.id, message.from, message.kind, message.content),
            (MessageId(9), ClientId([4; 16]), 3, &b"hello"[..])
        );
    }

    #[test]
    fn a_receipt_is_2601_and_parses_back() {
        let receipt = Receipt {
            id: MessageId(77),
            recipient: ClientId([8; 16]),
            how: Delivery::Pulled,
            at_ms: 1_700_000_000_123,
        };
        let (wire, _) = Push::Receipt(receipt).encode().into_wire(false);
        assert_eq!(&wire[..7], &[2, 0x29, 0x0a, 29, 0, 0, 0]);
        assert_eq!(wire[7 + 20], 2);
        assert_eq!(Receipt::parse(&wire[7..]), Some(receipt));
        assert_eq!(Receipt::parse(&wire[7..35]), None, "cut short");
        let mut unknown = wire[7..].to_vec();
        unknown[20] = 9;
        assert_eq!(Receipt::parse(&unknown), None, "an unknown delivery");
        assert_eq!(PushCode::from_wire(2601), Some(PushCode::Receipt));
        assert_eq!(PushCode::from_wire(2602), None);
    }
}
