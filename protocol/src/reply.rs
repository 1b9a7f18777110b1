//! Encoded replies (protocol §2, §3): the header and the payload's bytes in one buffer, so
//! that a reply is written to the socket without another copy, and, for a pull reply carrying
//! large contents, the rest of its payload as parts streamed after them.

use super::codes::SERVER_VERSION;
use super::content::Content;
use super::header::{ReplyHeader, REPLY_HEADER_LEN};
use super::padding::reply_padding;

/// A reply in wire order: the 7-byte header and payload bytes, then the payload's streamed
/// contents and the bytes between them. Made by [`super::Reply::encode`].
#[derive(Debug)]
pub struct EncodedReply {
    head: Vec<u8>,
    tail: Vec<Content>,
}

impl EncodedReply {
    /// Starts a reply with `code`; the encoders append its payload.
    pub(super) fn with_capacity(code: u16, payload_capacity: usize) -> EncodedReply {
        let mut head = Vec::with_capacity(REPLY_HEADER_LEN + payload_capacity);
        head.extend_from_slice(&header(code, 0).encode());
        EncodedReply {
            head,
            tail: Vec::new(),
        }
    }

    /// Where the next payload bytes go: the head until a content is streamed, then the bytes
    /// part after that content.
    pub(super) fn payload(&mut self) -> &mut Vec<u8> {
        if let Some(Content::Streamed { .. }) = self.tail.last() {
            self.tail.push(Content::Inline(Vec::new()));
        }
        match self.tail.last_mut() {
            Some(Content::Inline(bytes)) => bytes,
            _ => &mut self.head,
        }
    }

    /// Appends a content to the payload: copied if in memory, else streamed in its turn.
    pub(super) fn push_content(&mut self, content: Content) {
        match content {
            Content::Inline(bytes) => self.payload().extend_from_slice(&bytes),
            streamed @ Content::Streamed { .. } => self.tail.push(streamed),
        }
    }

    /// Header and payload bytes (without padding).
    pub fn encoded_len(&self) -> u64 {
        self.head.len() as u64 + self.tail.iter().map(Content::len).sum::<u64>()
    }

    /// The wire bytes: the head, with the payload size filled in, and the parts that follow
    /// it, with, for padded clients, zeros up to a whole number of 1024-byte blocks. The
    /// payload size must fit in a u32: the encoders' callers bound it.
    pub fn into_wire(mut self, padded: bool) -> (Vec<u8>, Vec<Content>) {
        let len = self.encoded_len();
        let payload_size = len - REPLY_HEADER_LEN as u64;
        let code = u16::from_le_bytes([self.head[1], self.head[2]]);
        self.head[..REPLY_HEADER_LEN].copy_from_slice(&header(code, payload_size as u32).encode());
        let padding = if padded {
            reply_padding(len as usize)
        } else {
            0
        };
        if self.tail.is_empty() {
            self.head.resize(self.head.len() + padding, 0);
        } else if padding > 0 {
            self.tail.push(Content::Inline(vec![0; padding]));
        }
        (self.head, self.tail)
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
    use crate::codes::ERROR_REPLY_CODE;
    use crate::content::ContentReader;

    #[test]
    fn error_reply_is_seven_bytes() {
        let (head, tail) = EncodedReply::with_capacity(ERROR_REPLY_CODE, 0).into_wire(false);
        assert_eq!(head, vec![2, 0x28, 0x23, 0, 0, 0, 0]);
        assert!(tail.is_empty());
    }

    #[test]
    fn payload_size_is_filled_in() {
        let mut reply = EncodedReply::with_capacity(2100, 0);
        reply.payload().extend_from_slice(&[1; 16]);
        let (bytes, _) = reply.into_wire(false);
        assert_eq!(&bytes[..7], &[2, 0x34, 0x08, 16, 0, 0, 0]);
        assert_eq!(bytes.len(), 23);
    }

    #[test]
    fn a_head_declares_the_streamed_tail_too() {
        let mut reply = EncodedReply::with_capacity(2104, 0);
        reply.payload().extend_from_slice(&[1; 25]);
        reply.push_content(Content::Streamed {
            reader: ContentReader::new(std::io::empty()),
            len: 1 << 30,
        });
        reply.payload().extend_from_slice(b"after");
        assert_eq!(reply.encoded_len(), 32 + (1 << 30) + 5);
        let (head, tail) = reply.into_wire(false);
        assert_eq!(head.len(), 32);
        assert_eq!(&head[3..7], &((1u32 << 30) + 25 + 5).to_le_bytes());
        assert!(matches!(
            &tail[..],
            [Content::Streamed { len: 0x4000_0000, .. }, Content::Inline(after)]
                if after == b"after"
        ));
    }

    #[test]
    fn padded_replies_fill_whole_blocks() {
        let mut reply = EncodedReply::with_capacity(2101, 0);
        reply.payload().extend_from_slice(&[1; 2000]);
        let (bytes, _) = reply.into_wire(true);
        assert_eq!(bytes.len(), 2048);
        assert_eq!(&bytes[3..7], &2000u32.to_le_bytes());
        assert!(bytes[2007..].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_streamed_reply_is_padded_after_its_last_part() {
        let mut reply = EncodedReply::with_capacity(2104, 0);
        reply.payload().extend_from_slice(&[1; 25]);
        reply.push_content(Content::Streamed {
            reader: ContentReader::new(std::io::empty()),
            len: 1000,
        });
        let (head, tail) = reply.into_wire(true);
        assert_eq!(head.len(), 32);
        assert!(matches!(
            &tail[..],
            [Content::Streamed { len: 1000, .. }, Content::Inline(zeros)]
                if zeros.len() == 2048 - 1032 && zeros.iter().all(|&b| b == 0)
        ));
    }
}
