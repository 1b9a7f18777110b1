//! Request and reply headers (protocol §2). All integers are little-endian.

use byteorder::{ByteOrder, LittleEndian};

use super::types::ClientId;

pub const REQUEST_HEADER_LEN: usize = 23;
pub const REPLY_HEADER_LEN: usize = 7;

/// The fixed 23-byte header in front of every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    /// Register: ignored; list, public key: the caller; send: the sender; pull: the recipient.
    pub client_id: ClientId,
    /// Clients send 1 or 2; any value is accepted.
    pub version: u8,
    pub code: u16,
    pub payload_size: u32,
}

impl RequestHeader {
    pub fn parse(bytes: &[u8; REQUEST_HEADER_LEN]) -> RequestHeader {
        let mut client_id = [0; 16];
        client_id.copy_from_slice(&bytes[..16]);
        RequestHeader {
            client_id: ClientId(client_id),
            version: bytes[16],
            code: LittleEndian::read_u16(&bytes[17..19]),
            payload_size: LittleEndian::read_u32(&bytes[19..23]),
        }
    }

    /// Parses the header at the start of `bytes`, if all of it is there.
    pub fn parse_prefix(bytes: &[u8]) -> Option<RequestHeader> {
        bytes
            .get(..REQUEST_HEADER_LEN)
            .and_then(|head| head.try_into().ok())
            .map(RequestHeader::parse)
    }

    pub fn encode(&self) -> [u8; REQUEST_HEADER_LEN] {
        let mut bytes = [0; REQUEST_HEADER_LEN];
        bytes[..16].copy_from_slice(&self.client_id.0);
        bytes[16] = self.version;
        LittleEndian::write_u16(&mut bytes[17..19], self.code);
        LittleEndian::write_u32(&mut bytes[19..23], self.payload_size);
        bytes
    }
}

/// The fixed 7-byte header in front of every reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyHeader {
    pub version: u8,
    pub code: u16,
    pub payload_size: u32,
}

impl ReplyHeader {
    pub fn parse(bytes: &[u8; REPLY_HEADER_LEN]) -> ReplyHeader {
        ReplyHeader {
            version: bytes[0],
            code: LittleEndian::read_u16(&bytes[1..3]),
            payload_size: LittleEndian::read_u32(&bytes[3..7]),
        }
    }

    pub fn encode(&self) -> [u8; REPLY_HEADER_LEN] {
        let mut bytes = [0; REPLY_HEADER_LEN];
        bytes[0] = self.version;
        LittleEndian::write_u16(&mut bytes[1..3], self.code);
        LittleEndian::write_u32(&mut bytes[3..7], self.payload_size);
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_header_layout_is_little_endian_and_packed() {
        let header = RequestHeader {
            client_id: ClientId([7; 16]),
            version: 2,
            code: 603,
            payload_size: 0x0102_0304,
        };
        let bytes = header.encode();
        assert_eq!(&bytes[16..], &[2, 0x5b, 0x02, 0x04, 0x03, 0x02, 0x01]);
        assert_eq!(RequestHeader::parse(&bytes), header);
        assert_eq!(RequestHeader::parse_prefix(&bytes[..22]), None);
    }

    #[test]
    fn reply_header_layout() {
        let header = ReplyHeader {
            version: 2,
            code: 9000,
            payload_size: 5,
        };
        assert_eq!(header.encode(), [2, 0x28, 0x23, 5, 0, 0, 0]);
        assert_eq!(ReplyHeader::parse(&header.encode()), header);
    }
}
