//! Reply encoding (protocol §2, §3): a header and a payload in one buffer, so a reply is
//! written to the socket without another copy.

use super::codes::{ERROR_REPLY_CODE, SERVER_VERSION};
use super::header::{ReplyHeader, REPLY_HEADER_LEN};
use super::padding::reply_padding;

/// An encoded reply: the 7-byte header followed by the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    bytes: Vec<u8>,
}

impl Reply {
    /// Starts a reply with `code`; append the payload with [`Reply::payload`].
    pub fn new(code: u16) -> Reply {
        Reply::with_capacity(code, 0)
    }

    pub fn with_capacity(code: u16, payload_capacity: usize) -> Reply {
        let mut bytes = Vec::with_capacity(REPLY_HEADER_LEN + payload_capacity);
        bytes.extend_from_slice(&header(code, 0).encode());
        Reply { bytes }
    }

    /// The 9000 reply: payload size 0.
    pub fn error() -> Reply {
        Reply::new(ERROR_REPLY_CODE)
    }

    /// The payload, to append to.
    pub fn payload(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// Header and payload bytes so far (without padding).
    pub fn encoded_len(&self) -> usize {
        self.bytes.len()
    }

    /// The wire bytes, with the payload size filled in and, for padded clients, zeros up to a
    /// whole number of 1024-byte blocks. The payload size must fit in a u32: callers bound it.
    pub fn into_bytes(mut self, padded: bool) -> Vec<u8> {
        self.fill_in_size(0);
        if padded {
            let padding = reply_padding(self.bytes.len());
            self.bytes.resize(self.bytes.len() + padding, 0);
        }
        self.bytes
    }

    /// The first bytes of a reply whose payload goes on with `tail_len` bytes streamed from
    /// elsewhere; the sender appends those, then any padding. The whole payload size must fit
    /// in a u32: callers bound it.
    pub fn into_head(mut self, tail_len: u64) -> Vec<u8> {
        self.fill_in_size(tail_len);
        self.bytes
    }

    fn fill_in_size(&mut self, tail_len: u64) {
        let payload_size = (self.bytes.len() - REPLY_HEADER_LEN) as u64 + tail_len;
        let code = u16::from_le_bytes([self.bytes[1], self.bytes[2]]);
        self.bytes[..REPLY_HEADER_LEN].copy_from_slice(&header(code, payload_size as u32).encode());
    }
}

fn header(code: u16, payload_size: u32) -> ReplyHeader {
    ReplyHeader {
        version: SERVER_VERSION,
        code,
        payload_size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_reply_is_seven_bytes() {
        assert_eq!(
            Reply::error().into_bytes(false),
            vec![2, 0x28, 0x23, 0, 0, 0, 0]
        );
    }

    #[test]
    fn payload_size_is_filled_in() {
        let mut reply = Reply::new(2100);
        reply.payload().extend_from_slice(&[1; 16]);
        let bytes = reply.into_bytes(false);
        assert_eq!(&bytes[..7], &[2, 0x34, 0x08, 16, 0, 0, 0]);
        assert_eq!(bytes.len(), 23);
    }

    #[test]
    fn a_head_declares_the_streamed_tail_too() {
        let mut reply = Reply::new(2104);
        reply.payload().extend_from_slice(&[1; 25]);
        let head = reply.into_head(1 << 30);
        assert_eq!(head.len(), 32);
        assert_eq!(&head[3..7], &((1u32 << 30) + 25).to_le_bytes());
    }

    #[test]
    fn padded_replies_fill_whole_blocks() {
        let mut reply = Reply::new(2101);
        reply.payload().extend_from_slice(&[1; 2000]);
        let bytes = reply.into_bytes(true);
        assert_eq!(bytes.len(), 2048);
        assert_eq!(&bytes[3..7], &2000u32.to_le_bytes());
        assert!(bytes[2007..].iter().all(|&b| b == 0));
    }
}
