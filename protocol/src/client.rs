//! The client side of the wire format: requests encoded by a client and replies it decodes.
//!
//! Shared by the `messageu-client`, the load generator and the tests, so that every tool
//! speaks one codec. Decoding never panics: a server may send anything.

use byteorder::{ByteOrder, LittleEndian};

use super::codes::{Edition, Operation, ERROR_REPLY_CODE};
use super::header::{ReplyHeader, RequestHeader, REQUEST_HEADER_LEN};
use super::request::{encode_name, SEND_HEADER_LEN};
use super::types::{ClientId, MessageId, PublicKey, NAME_FIELD_LEN, PUBLIC_KEY_LEN};

/// The version byte our clients put in request headers.
pub const CLIENT_VERSION: u8 = 2;
pub use super::replies::{
    ListedClient, LISTED_CLIENT_LEN, PULLED_MESSAGE_HEADER_LEN as PULLED_HEADER_LEN,
};

/// The 23-byte header of a request from `caller`.
pub fn request_header(
    edition: Edition,
    operation: Operation,
    caller: ClientId,
    payload_size: u32,
) -> [u8; REQUEST_HEADER_LEN] {
    RequestHeader {
        client_id: caller,
        version: CLIENT_VERSION,
        code: edition.request_code(operation),
        payload_size,
    }
    .encode()
}

/// A whole register request. The caller id is ignored by servers: zeros, as clients send.
pub fn register_request(edition: Edition, name: &str, key: &PublicKey) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(REQUEST_HEADER_LEN + NAME_FIELD_LEN + PUBLIC_KEY_LEN);
    let payload = (NAME_FIELD_LEN + PUBLIC_KEY_LEN) as u32;
    bytes.extend_from_slice(&request_header(
        edition,
        Operation::Register,
        ClientId([0; 16]),
        payload,
    ));
    encode_name(name, &mut bytes);
    bytes.extend_from_slice(&key.0);
    bytes
}

/// A list or pull request: a header with no payload.
pub fn bare_request(edition: Edition, operation: Operation, caller: ClientId) -> Vec<u8> {
    request_header(edition, operation, caller, 0).to_vec()
}

/// A public-key request for `target`.
pub fn public_key_request(edition: Edition, caller: ClientId, target: ClientId) -> Vec<u8> {
    let mut bytes = request_header(edition, Operation::PublicKey, caller, 16).to_vec();
    bytes.extend_from_slice(&target.0);
    bytes
}

/// Everything of a send request before its content: header and 21-byte message header.
/// Large contents are then written straight from their source, never copied into one buffer.
pub fn send_request_head(
    edition: Edition,
    caller: ClientId,
    to: ClientId,
    kind: u8,
    content_len: u32,
) -> Vec<u8> {
    let payload = (SEND_HEADER_LEN as u64 + u64::from(content_len)) as u32;
    let mut bytes = Vec::with_capacity(REQUEST_HEADER_LEN + SEND_HEADER_LEN);
    bytes.extend_from_slice(&request_header(
        edition,
        Operation::SendMessage,
        caller,
        payload,
    ));
    bytes.extend_from_slice(&to.0);
    bytes.push(kind);
    bytes.extend_from_slice(&content_len.to_le_bytes());
    bytes
}

/// The largest content whose send request's payload size (21 + N) still fits in a u32.
pub const MAX_SEND_CONTENT: u32 = u32::MAX - SEND_HEADER_LEN as u32;

/// A whole send request with `content`, which must not exceed [`MAX_SEND_CONTENT`].
pub fn send_request(
    edition: Edition,
    caller: ClientId,
    to: ClientId,
    kind: u8,
    content: &[u8],
) -> Vec<u8> {
    let mut bytes = send_request_head(edition, caller, to, kind, content.len() as u32);
    bytes.extend_from_slice(content);
    bytes
}

/// Why a reply is not the one a request called for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("server responded with an error")]
    ServerError,
    #[error("reply code {actual}, expected {expected}")]
    UnexpectedCode { expected: u16, actual: u16 },
    #[error("reply payload is {actual} bytes, expected {expected}")]
    WrongLength { expected: String, actual: usize },
    #[error("a client name in the reply has no terminating NUL")]
    NameNotTerminated,
    #[error("pulled message {index} is cut short")]
    TruncatedMessage { index: usize },
}

/// Checks that `header` answers `operation` in `edition`.
pub fn check_reply_code(
    edition: Edition,
    operation: Operation,
    header: &ReplyHeader,
) -> Result<(), ReplyError> {
    let expected = edition.reply_code(operation);
    match header.code {
        code if code == expected => Ok(()),
        ERROR_REPLY_CODE => Err(ReplyError::ServerError),
        actual => Err(ReplyError::UnexpectedCode { expected, actual }),
    }
}

fn exact<const N: usize>(payload: &[u8]) -> Result<&[u8; N], ReplyError> {
    payload.try_into().map_err(|_| ReplyError::WrongLength {
        expected: N.to_string(),
        actual: payload.len(),
    })
}

fn client_id(bytes: &[u8]) -> ClientId {
    let mut id = [0; 16];
    id.copy_from_slice(&bytes[..16]);
    ClientId(id)
}

/// The id a register reply assigns.
pub fn parse_registered(payload: &[u8]) -> Result<ClientId, ReplyError> {
    Ok(ClientId(*exact::<16>(payload)?))
}

/// The entries of a list reply, in the server's order.
pub fn parse_client_list(payload: &[u8]) -> Result<Vec<ListedClient>, ReplyError> {
    if !payload.len().is_multiple_of(LISTED_CLIENT_LEN) {
        return Err(ReplyError::WrongLength {
            expected: format!("a multiple of {LISTED_CLIENT_LEN}"),
            actual: payload.len(),
        });
    }
    payload
        .chunks_exact(LISTED_CLIENT_LEN)
        .map(|entry| {
            let field = &entry[16..];
            let end = field
                .iter()
                .position(|&b| b == 0)
                .ok_or(ReplyError::NameNotTerminated)?;
            Ok(ListedClient {
                id: client_id(entry),
                name: String::from_utf8_lossy(&field[..end]).into_owned(),
            })
        })
        .collect()
}

/// The id and key of a public-key reply.
pub fn parse_public_key(payload: &[u8]) -> Result<(ClientId, PublicKey), ReplyError> {
    let bytes = exact::<{ 16 + PUBLIC_KEY_LEN }>(payload)?;
    let mut key = [0; PUBLIC_KEY_LEN];
    key.copy_from_slice(&bytes[16..]);
    Ok((client_id(bytes), PublicKey(key)))
}

/// The destination and message id of a send reply.
pub fn parse_sent(payload: &[u8]) -> Result<(ClientId, MessageId), ReplyError> {
    let bytes = exact::<20>(payload)?;
    Ok((
        client_id(bytes),
        MessageId(LittleEndian::read_u32(&bytes[16..])),
    ))
}

/// One message of a pull reply, borrowing the reply's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PulledMessage<'a> {
    pub from: ClientId,
    pub id: MessageId,
    /// The type byte as sent; clients decide what an unknown type means.
    pub kind: u8,
    pub content: &'a [u8],
}

/// Iterates over the messages of a pull reply; yields an error, then stops, at a cut-short one.
pub fn pulled_messages(payload: &[u8]) -> PulledMessages<'_> {
    PulledMessages {
        rest: payload,
        index: 0,
    }
}

/// See [`pulled_messages`].
pub struct PulledMessages<'a> {
    rest: &'a [u8],
    index: usize,
}

impl<'a> Iterator for PulledMessages<'a> {
    type Item = Result<PulledMessage<'a>, ReplyError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let index = self.index;
        self.index += 1;
        let truncated = ReplyError::TruncatedMessage { index };
        let Some((head, body)) = self.rest.split_at_checked(PULLED_HEADER_LEN) else {
            self.rest = &[];
            return Some(Err(truncated));
        };
        let size = LittleEndian::read_u32(&head[21..25]) as usize;
        let Some((content, rest)) = body.split_at_checked(size) else {
            self.rest = &[];
            return Some(Err(truncated));
        };
        self.rest = rest;
        Some(Ok(PulledMessage {
            from: client_id(head),
            id: MessageId(LittleEndian::read_u32(&head[16..20])),
            kind: head[20],
            content,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Request;
    use crate::{RequestCode, REPLY_HEADER_LEN};

    fn parse_own(bytes: &[u8]) -> (RequestHeader, Request<'_>) {
        let header = RequestHeader::parse_prefix(bytes).expect("header");
        let code = RequestCode::from_wire(header.code).expect("known code");
        let request = Request::parse(code, &bytes[REQUEST_HEADER_LEN..]).expect("valid body");
        (header, request)
    }

    #[test]
    fn encoded_requests_parse_as_the_server_reads_them() {
        let me = ClientId([7; 16]);
        let you = ClientId([9; 16]);
        for edition in Edition::ALL {
            let register = register_request(edition, "Michael Jackson", &PublicKey([3; 160]));
            let (header, request) = parse_own(&register);
            assert_eq!(header.payload_size, 415);
            assert!(matches!(request, Request::Register(r) if r.name == "Michael Jackson"));

            let key = public_key_request(edition, me, you);
            let (header, request) = parse_own(&key);
            assert_eq!(header.client_id, me);
            assert!(matches!(request, Request::PublicKey(k) if k.target == you));

            let send = send_request(edition, me, you, 3, b"hello");
            let (header, request) = parse_own(&send);
            assert_eq!(header.payload_size, 26);
            assert!(matches!(request, Request::SendMessage(s) if s.content == b"hello"));

            for operation in [Operation::ListClients, Operation::PullMessages] {
                let bare = bare_request(edition, operation, me);
                assert_eq!(bare.len(), REQUEST_HEADER_LEN);
                assert_eq!(
                    parse_own(&bare).0.code,
                    edition.request_code(operation),
                    "{edition:?}"
                );
            }
        }
    }

    #[test]
    fn reply_codes_are_checked_per_edition() {
        let header = |code| ReplyHeader {
            version: 2,
            code,
            payload_size: 0,
        };
        assert_eq!(
            check_reply_code(Edition::Y2024, Operation::SendMessage, &header(2103)),
            Ok(())
        );
        assert_eq!(
            check_reply_code(Edition::Y2021, Operation::SendMessage, &header(9000)),
            Err(ReplyError::ServerError)
        );
        assert_eq!(
            check_reply_code(Edition::Y2021, Operation::SendMessage, &header(2104)),
            Err(ReplyError::UnexpectedCode {
                expected: 2003,
                actual: 2104
            })
        );
        assert_eq!(REPLY_HEADER_LEN, 7);
    }

    #[test]
    fn fixed_size_replies_reject_other_lengths() {
        assert_eq!(parse_registered(&[5; 16]), Ok(ClientId([5; 16])));
        assert!(parse_registered(&[5; 15]).is_err());
        let mut sent = vec![1; 16];
        sent.extend_from_slice(&77u32.to_le_bytes());
        assert_eq!(parse_sent(&sent), Ok((ClientId([1; 16]), MessageId(77))));
        assert!(parse_sent(&sent[1..]).is_err());
        let mut key = vec![2; 16];
        key.extend_from_slice(&[4; 160]);
        assert_eq!(
            parse_public_key(&key),
            Ok((ClientId([2; 16]), PublicKey([4; 160])))
        );
        assert!(parse_public_key(&key[..175]).is_err());
    }

    #[test]
    fn client_lists_need_whole_entries_and_terminated_names() {
        let mut payload = vec![1; 16];
        encode_name("bob", &mut payload);
        let listed = parse_client_list(&payload).expect("one entry");
        assert_eq!(listed[0].name, "bob");
        assert_eq!(listed[0].id, ClientId([1; 16]));
        assert!(parse_client_list(&payload[..270]).is_err());
        payload[16..].fill(b'x');
        assert_eq!(
            parse_client_list(&payload),
            Err(ReplyError::NameNotTerminated)
        );
        assert_eq!(parse_client_list(&[]), Ok(vec![]));
    }

    #[test]
    fn pulled_messages_are_split_and_truncation_is_reported() {
        let mut payload = Vec::new();
        for (id, content) in [(1u32, &b"ab"[..]), (2, &b""[..])] {
            payload.extend_from_slice(&[8; 16]);
            payload.extend_from_slice(&id.to_le_bytes());
            payload.push(3);
            payload.extend_from_slice(&(content.len() as u32).to_le_bytes());
            payload.extend_from_slice(content);
        }
        let messages: Vec<_> = pulled_messages(&payload).collect();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].as_ref().map(|m| m.content), Ok(&b"ab"[..]));
        assert_eq!(messages[1].as_ref().map(|m| m.id), Ok(MessageId(2)));

        let cut: Vec<_> = pulled_messages(&payload[..26]).collect();
        assert_eq!(cut.len(), 1);
        assert_eq!(cut[0], Err(ReplyError::TruncatedMessage { index: 0 }));
        assert_eq!(pulled_messages(&payload[..10]).count(), 1);
    }
}
