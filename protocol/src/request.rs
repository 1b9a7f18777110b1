//! Typed request bodies (protocol §3), decoded from a framed request.

use byteorder::{ByteOrder, LittleEndian};

use super::codes::{Edition, Extension, Operation, RequestCode};
use super::extension::PayloadSize;
use super::pattern::PatternError;
use super::types::{ClientId, MessageType, PublicKey, NAME_FIELD_LEN, PUBLIC_KEY_LEN};

pub const REGISTER_PAYLOAD_LEN: usize = NAME_FIELD_LEN + PUBLIC_KEY_LEN;
pub const PUBLIC_KEY_REQUEST_LEN: usize = 16;
/// Destination id (16), message type (1), content size (4).
pub const SEND_HEADER_LEN: usize = 21;

/// Register a new client under `name`.
#[derive(Debug, PartialEq, Eq)]
pub struct Register {
    pub name: String,
    pub public_key: PublicKey,
}

/// List every other registered client.
#[derive(Debug, PartialEq, Eq)]
pub struct ListClients;

/// Fetch the public key of `target`.
#[derive(Debug, PartialEq, Eq)]
pub struct GetPublicKey {
    pub target: ClientId,
}

/// How a public-key reply is laid out (protocol §4 rule 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyReplyLayout {
    /// The target id, then its key: 176 bytes.
    IdAndKey,
    /// The key alone, 160 bytes: one published 2024–25 client, the only one sending client
    /// version 1, reads the key from the start of the payload.
    KeyOnly,
}

impl KeyReplyLayout {
    pub fn for_request(code: RequestCode, client_version: u8) -> KeyReplyLayout {
        if code.edition == Edition::Y2024 && client_version == 1 {
            KeyReplyLayout::KeyOnly
        } else {
            KeyReplyLayout::IdAndKey
        }
    }
}

/// Store a message for `to`. The content borrows the connection's buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct SendMessage<'a> {
    pub to: ClientId,
    pub kind: MessageType,
    pub content: &'a [u8],
}

/// The 21-byte message header of a send, before the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendHead {
    pub to: ClientId,
    /// The type byte as sent; checked by [`SendHead::kind`].
    pub kind: u8,
    pub content_len: u32,
}

impl SendHead {
    /// Reads the first 21 bytes of `bytes`, which the caller has checked are there.
    pub fn parse(bytes: &[u8]) -> SendHead {
        SendHead {
            to: client_id(&bytes[..16]),
            kind: bytes[16],
            content_len: LittleEndian::read_u32(&bytes[17..21]),
        }
    }

    pub fn kind(&self) -> Result<MessageType, MalformedRequest> {
        MessageType::try_from(self.kind).map_err(MalformedRequest::UnknownMessageType)
    }
}

/// Pull the caller's waiting messages.
#[derive(Debug, PartialEq, Eq)]
pub struct PullMessages;

/// A decoded request body, one variant per operation.
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    Register(Register),
    ListClients(ListClients),
    PublicKey(GetPublicKey),
    SendMessage(SendMessage<'a>),
    PullMessages(PullMessages),
}

/// Why a framed body is not a valid request; answered with 9000.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedRequest {
    #[error("the name field has no terminating NUL")]
    NameNotTerminated,
    #[error("the name is empty")]
    EmptyName,
    #[error("the name contains a byte that is not printable ASCII: {0:#04x}")]
    NameNotPrintable(u8),
    #[error("unknown message type {0}")]
    UnknownMessageType(u8),
    #[error("the body is {actual} bytes, {operation} needs {expected}")]
    WrongLength {
        operation: Operation,
        expected: usize,
        actual: usize,
    },
    #[error("the body is {actual} bytes, {extension} needs {expected}")]
    ExtensionLength {
        extension: Extension,
        expected: PayloadSize,
        actual: usize,
    },
    #[error("unknown protection {0}: 0 stops it, 1 protects")]
    UnknownProtection(u8),
    #[error("a {pattern}-byte pattern does not fill a {payload}-byte list-accounts payload")]
    PatternLength { pattern: usize, payload: usize },
    #[error("the pattern is not UTF-8")]
    NotUtf8,
    #[error(transparent)]
    BadPattern(#[from] PatternError),
    #[error("a page of 0 accounts")]
    EmptyPage,
    #[error("a count of {count} message ids does not fill a {payload}-byte acknowledge payload")]
    AcknowledgeLength { count: usize, payload: usize },
}

impl<'a> Request<'a> {
    /// Decodes the body that the framing layer delimited for this request code.
    pub fn parse(code: RequestCode, body: &'a [u8]) -> Result<Request<'a>, MalformedRequest> {
        let expect = |expected: usize| {
            if body.len() == expected {
                Ok(())
            } else {
                Err(MalformedRequest::WrongLength {
                    operation: code.operation,
                    expected,
                    actual: body.len(),
                })
            }
        };
        match code.operation {
            Operation::Register => {
                expect(REGISTER_PAYLOAD_LEN)?;
                let (name, key) = body.split_at(NAME_FIELD_LEN);
                let name = parse_name(name)?;
                let mut public_key = [0; PUBLIC_KEY_LEN];
                public_key.copy_from_slice(key);
                Ok(Request::Register(Register {
                    name,
                    public_key: PublicKey(public_key),
                }))
            }
            Operation::ListClients => expect(0).map(|()| Request::ListClients(ListClients)),
            Operation::PullMessages => expect(0).map(|()| Request::PullMessages(PullMessages)),
            Operation::PublicKey => {
                expect(PUBLIC_KEY_REQUEST_LEN)?;
                Ok(Request::PublicKey(GetPublicKey {
                    target: client_id(body),
                }))
            }
            Operation::SendMessage => {
                if body.len() < SEND_HEADER_LEN {
                    return Err(MalformedRequest::WrongLength {
                        operation: code.operation,
                        expected: SEND_HEADER_LEN,
                        actual: body.len(),
                    });
                }
                let (head, content) = body.split_at(SEND_HEADER_LEN);
                let head = SendHead::parse(head);
                expect(SEND_HEADER_LEN + head.content_len as usize)?;
                Ok(Request::SendMessage(SendMessage {
                    to: head.to,
                    kind: head.kind()?,
                    content,
                }))
            }
        }
    }
}

fn client_id(bytes: &[u8]) -> ClientId {
    let mut id = [0; 16];
    id.copy_from_slice(&bytes[..16]);
    ClientId(id)
}

/// A name is the bytes before the first NUL: 1 to 254 printable ASCII characters (spaces
/// included). Bytes after the NUL are ignored, since some clients leave garbage there.
fn parse_name(field: &[u8]) -> Result<String, MalformedRequest> {
    let end = field
        .iter()
        .position(|&byte| byte == 0)
        .ok_or(MalformedRequest::NameNotTerminated)?;
    let name = &field[..end];
    if name.is_empty() {
        return Err(MalformedRequest::EmptyName);
    }
    if let Some(&byte) = name.iter().find(|byte| !(b' '..=b'~').contains(*byte)) {
        return Err(MalformedRequest::NameNotPrintable(byte));
    }
    Ok(name.iter().map(|&byte| char::from(byte)).collect())
}

/// Encodes a name into its 255-byte NUL-terminated, zero-filled wire field. Names longer than
/// 254 bytes are cut so that the terminator always fits.
pub fn encode_name(name: &str, out: &mut Vec<u8>) {
    let bytes = &name.as_bytes()[..name.len().min(NAME_FIELD_LEN - 1)];
    out.extend_from_slice(bytes);
    out.resize(out.len() + NAME_FIELD_LEN - bytes.len(), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(operation: Operation) -> RequestCode {
        RequestCode {
            edition: Edition::Y2024,
            operation,
        }
    }

    fn register_body(name: &[u8]) -> Vec<u8> {
        let mut body = name.to_vec();
        body.resize(NAME_FIELD_LEN, 0);
        body.extend_from_slice(&[0x30; PUBLIC_KEY_LEN]);
        body
    }

    #[test]
    fn register_accepts_spaces_and_ignores_bytes_after_the_nul() {
        let mut body = register_body(b"Michael Jackson");
        body[200] = 0xff;
        let request = Request::parse(code(Operation::Register), &body).unwrap();
        assert_eq!(
            request,
            Request::Register(Register {
                name: "Michael Jackson".into(),
                public_key: PublicKey([0x30; PUBLIC_KEY_LEN])
            })
        );
    }

    #[test]
    fn register_accepts_a_254_character_name() {
        let body = register_body(&[b'x'; 254]);
        assert!(Request::parse(code(Operation::Register), &body).is_ok());
    }

    #[test]
    fn register_rejects_bad_names() {
        let parse = |body: Vec<u8>| Request::parse(code(Operation::Register), &body).unwrap_err();
        assert_eq!(parse(register_body(b"")), MalformedRequest::EmptyName);
        assert_eq!(
            parse(register_body(&[b'x'; 255])),
            MalformedRequest::NameNotTerminated
        );
        assert_eq!(
            parse(register_body(b"tab\there")),
            MalformedRequest::NameNotPrintable(b'\t')
        );
        assert_eq!(
            parse(register_body(&[0xc3, 0xa9])),
            MalformedRequest::NameNotPrintable(0xc3)
        );
    }

    #[test]
    fn send_message_borrows_its_content() {
        let mut body = vec![4; 16];
        body.push(4);
        body.extend_from_slice(&3u32.to_le_bytes());
        body.extend_from_slice(b"abc");
        let request = Request::parse(code(Operation::SendMessage), &body).unwrap();
        assert_eq!(
            request,
            Request::SendMessage(SendMessage {
                to: ClientId([4; 16]),
                kind: MessageType::File,
                content: b"abc"
            })
        );
        body[16] = 5;
        assert_eq!(
            Request::parse(code(Operation::SendMessage), &body),
            Err(MalformedRequest::UnknownMessageType(5))
        );
    }

    #[test]
    fn bodies_of_the_wrong_length_are_malformed() {
        assert!(Request::parse(code(Operation::ListClients), &[0]).is_err());
        assert!(Request::parse(code(Operation::PublicKey), &[0; 15]).is_err());
        assert!(Request::parse(code(Operation::SendMessage), &[0; 20]).is_err());
    }

    #[test]
    fn names_encode_to_a_zero_filled_field() {
        let mut out = Vec::new();
        encode_name("bob", &mut out);
        assert_eq!(out.len(), NAME_FIELD_LEN);
        assert_eq!(&out[..4], b"bob\0");
        assert!(out[3..].iter().all(|&b| b == 0));
    }

    #[test]
    fn only_version_1_of_the_2024_edition_gets_the_key_alone() {
        for edition in Edition::ALL {
            let code = RequestCode {
                edition,
                operation: Operation::PublicKey,
            };
            for version in [0, 1, 2, 3, 255] {
                let expected = if edition == Edition::Y2024 && version == 1 {
                    KeyReplyLayout::KeyOnly
                } else {
                    KeyReplyLayout::IdAndKey
                };
                assert_eq!(KeyReplyLayout::for_request(code, version), expected);
            }
        }
    }
}
