//! What the crash campaigns send: contents that say which send they are and carry a checksum,
//! so that a delivery is matched to its send and a corrupted one is recognised.

use crate::common::Rng;
use messageu::protocol::ClientId;

/// One send attempt: the sending client's index and its sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageKey {
    pub sender: usize,
    pub seq: u32,
}

/// Sender index (2 bytes) and sequence number (4) open every content.
const KEY_LEN: usize = 6;
const CHECKSUM_LEN: usize = 8;
/// Below the 64 KiB contents, so that those are streamed into spool files.
pub const SPOOL_THRESHOLD: usize = 32 << 10;

pub fn message_kind(key: MessageKey) -> u8 {
    1 + (key.seq % 4) as u8
}

/// The content of `key`'s message: the key, filler derived from it, and a checksum. Mostly
/// small; now and then 64 KiB, so that some replies and pushes take several writes to send and
/// some contents go through the spool (the server runs with a lower spool threshold).
pub fn message_content(key: MessageKey) -> Vec<u8> {
    let mut rng = Rng::new(((key.sender as u64) << 32) | u64::from(key.seq));
    let filler = if rng.below(32) == 0 {
        64 << 10
    } else {
        rng.below(2048)
    };
    let mut content = Vec::with_capacity(KEY_LEN + filler + CHECKSUM_LEN);
    content.extend_from_slice(&(key.sender as u16).to_le_bytes());
    content.extend_from_slice(&key.seq.to_le_bytes());
    content.extend((0..filler).map(|_| rng.next() as u8));
    content.extend_from_slice(&checksum(&content).to_le_bytes());
    content
}

/// FNV-1a.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The message a delivered content is, if it is exactly the content of one a campaign can
/// send.
fn identify(content: &[u8]) -> Option<MessageKey> {
    let body = content.get(..content.len().checked_sub(CHECKSUM_LEN)?)?;
    if body.len() < KEY_LEN || checksum(body).to_le_bytes() != content[body.len()..] {
        return None;
    }
    let key = MessageKey {
        sender: usize::from(u16::from_le_bytes([body[0], body[1]])),
        seq: u32::from_le_bytes([body[2], body[3], body[4], body[5]]),
    };
    (message_content(key) == content).then_some(key)
}

/// One delivered message, pulled or pushed; `key` is `None` when its content is no message
/// ever sent.
pub struct Delivery {
    pub from: ClientId,
    pub id: u32,
    pub kind: u8,
    pub key: Option<MessageKey>,
}

impl Delivery {
    /// A delivery of a message in the pull layout (a pull reply's, or a push's).
    pub fn of(message: &messageu::protocol::client::PulledMessage<'_>) -> Delivery {
        Delivery {
            from: message.from,
            id: message.id.0,
            kind: message.kind,
            key: identify(message.content),
        }
    }
}
