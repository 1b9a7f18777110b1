//! The extension operations' payloads (protocol part II): typed request bodies
//! ([`ExtensionRequest::parse`]), typed answers and their encoders ([`ExtensionAnswer`]),
//! the proof of key possession ([`proof`]), and the parsers a client reads the replies with.
//! The accounts extensions' bodies (§E8) are laid out in [`super::accounts`].

use std::fmt;

use std::time::Duration;

use byteorder::{ByteOrder, LittleEndian};
use sha2::{Digest, Sha256};

use super::accounts::{
    AccountPage, ListAccounts, QueueStatus, LIST_ACCOUNTS_FIXED_LEN, LIST_ACCOUNTS_MAX_LEN,
    UNSEND_REQUEST_LEN,
};
use super::codes::Extension;
use super::header::RequestHeader;
use super::push::{parse_acknowledge, ACKNOWLEDGE_MAX_LEN, ACKNOWLEDGE_MIN_LEN, COUNT_REPLY_LEN};
use super::reason::{encode_string, parse_string};
use super::replies::{pulled, QueuedMessage};
use super::reply::EncodedReply;
use super::request::MalformedRequest;
use super::types::{ClientId, MessageId};

/// The extension version this server speaks (protocol §E2).
pub const EXTENSION_VERSION: u16 = 1;
/// A hello's payload: the client's extension version (u16), then a reserved u16.
pub const HELLO_REQUEST_LEN: usize = 4;
/// The random secret a challenge carries (protocol §E3).
pub const SECRET_LEN: usize = 32;
/// A challenge reply: the secret, RSA-OAEP encrypted to a 1024-bit key.
pub const CHALLENGE_LEN: usize = 128;
/// A prove payload: SHA-256 of the proof input.
pub const PROOF_LEN: usize = 32;
/// A protect payload: the wanted [`Protection`].
pub const PROTECT_REQUEST_LEN: usize = 1;
/// A long-poll payload: the longest wait in ms (u32).
pub const LONG_POLL_REQUEST_LEN: usize = 4;
/// What a proof hashes before the secret and the id.
const PROOF_CONTEXT: &[u8] = b"MessageU proof v1";

/// The answer to a challenge: SHA-256(`"MessageU proof v1"` ‖ secret ‖ client id).
pub type Proof = [u8; PROOF_LEN];

/// Computes the proof for `secret` and the id it was drawn for (protocol §E3).
pub fn proof(secret: &[u8; SECRET_LEN], id: ClientId) -> Proof {
    let mut hash = Sha256::new();
    hash.update(PROOF_CONTEXT);
    hash.update(secret);
    hash.update(id.0);
    hash.finalize().into()
}

/// Whether an account refuses requests naming it from connections not authenticated as it
/// (protocol §E4). The values are the protect payload's byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protection {
    #[default]
    Open = 0,
    Protected = 1,
}

impl Protection {
    pub fn from_byte(byte: u8) -> Option<Protection> {
        match byte {
            0 => Some(Protection::Open),
            1 => Some(Protection::Protected),
            _ => None,
        }
    }
}

/// A decoded extension request body.
#[derive(Debug, PartialEq, Eq)]
pub enum ExtensionRequest {
    /// The extension version the client speaks (the reserved u16 is ignored).
    Hello {
        version: u16,
    },
    Challenge,
    Prove(Proof),
    Protect(Protection),
    Subscribe,
    /// The message ids a subscriber acknowledges.
    Acknowledge(Vec<MessageId>),
    /// A pull that waits up to `wait` for the first message (the server caps it).
    LongPoll {
        wait: Duration,
    },
    ListAccounts(ListAccounts),
    QueueStatus,
    Unsend(MessageId),
    DeleteAccount,
}

/// The payload sizes an extension request may declare (protocol §E0): the framing takes a
/// request of such a size whole, and skips any other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadSize {
    Exact(usize),
    /// A payload with a string in it: from the string's shortest to its longest.
    Between {
        min: usize,
        max: usize,
    },
}

impl PayloadSize {
    pub const fn allows(self, size: usize) -> bool {
        match self {
            PayloadSize::Exact(exact) => size == exact,
            PayloadSize::Between { min, max } => min <= size && size <= max,
        }
    }
}

impl fmt::Display for PayloadSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PayloadSize::Exact(exact) => write!(f, "{exact}"),
            PayloadSize::Between { min, max } => write!(f, "{min} to {max}"),
        }
    }
}

impl Extension {
    /// The payload sizes of the request (protocol §E0: never padded, never larger).
    pub const fn payload_size(self) -> PayloadSize {
        match self {
            Extension::Hello => PayloadSize::Exact(HELLO_REQUEST_LEN),
            Extension::Challenge
            | Extension::Subscribe
            | Extension::QueueStatus
            | Extension::DeleteAccount => PayloadSize::Exact(0),
            Extension::Prove => PayloadSize::Exact(PROOF_LEN),
            Extension::Protect => PayloadSize::Exact(PROTECT_REQUEST_LEN),
            Extension::ListAccounts => PayloadSize::Between {
                min: LIST_ACCOUNTS_FIXED_LEN,
                max: LIST_ACCOUNTS_MAX_LEN,
            },
            Extension::Unsend => PayloadSize::Exact(UNSEND_REQUEST_LEN),
            Extension::Acknowledge => PayloadSize::Between {
                min: ACKNOWLEDGE_MIN_LEN,
                max: ACKNOWLEDGE_MAX_LEN,
            },
            Extension::LongPoll => PayloadSize::Exact(LONG_POLL_REQUEST_LEN),
        }
    }
}

impl ExtensionRequest {
    /// Decodes the body the framing delimited for `extension`.
    pub fn parse(extension: Extension, body: &[u8]) -> Result<ExtensionRequest, MalformedRequest> {
        if !extension.payload_size().allows(body.len()) {
            return Err(MalformedRequest::ExtensionLength {
                extension,
                expected: extension.payload_size(),
                actual: body.len(),
            });
        }
        Ok(match extension {
            Extension::Hello => ExtensionRequest::Hello {
                version: LittleEndian::read_u16(&body[..2]),
            },
            Extension::Challenge => ExtensionRequest::Challenge,
            Extension::Prove => {
                let mut proof = [0; PROOF_LEN];
                proof.copy_from_slice(body);
                ExtensionRequest::Prove(proof)
            }
            Extension::Protect => ExtensionRequest::Protect(
                Protection::from_byte(body[0])
                    .ok_or(MalformedRequest::UnknownProtection(body[0]))?,
            ),
            Extension::Subscribe => ExtensionRequest::Subscribe,
            Extension::Acknowledge => ExtensionRequest::Acknowledge(parse_acknowledge(body)?),
            Extension::LongPoll => ExtensionRequest::LongPoll {
                wait: Duration::from_millis(u64::from(LittleEndian::read_u32(body))),
            },
            Extension::ListAccounts => ExtensionRequest::ListAccounts(ListAccounts::parse(body)?),
            Extension::QueueStatus => ExtensionRequest::QueueStatus,
            Extension::Unsend => ExtensionRequest::Unsend(MessageId(LittleEndian::read_u32(body))),
            Extension::DeleteAccount => ExtensionRequest::DeleteAccount,
        })
    }
}

/// What the hello reply tells (protocol §E2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    pub version: u16,
    pub features: Features,
    pub max_payload: u32,
    pub max_pull_reply: u32,
    /// 0 while long-poll is not served.
    pub max_long_poll_ms: u32,
    /// The most accounts a list page holds; 0 while account listing is not served.
    pub max_list_page: u16,
    pub server_name: String,
    pub server_version: String,
}

/// The hello's feature bits: a bit per served group of operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Features(pub u32);

impl Features {
    /// Challenge and prove (1501, 1502).
    pub const AUTHENTICATION: Features = Features(1 << 0);
    /// Protect (1503).
    pub const PROTECTION: Features = Features(1 << 1);
    /// Subscribe and acknowledge (1504, 1505), pushed messages (2600).
    pub const PUSH: Features = Features(1 << 2);
    /// Long-poll pull (1506).
    pub const LONG_POLL: Features = Features(1 << 3);
    /// Delivery receipts (2601).
    pub const RECEIPTS: Features = Features(1 << 4);
    /// List accounts (1507).
    pub const ACCOUNTS: Features = Features(1 << 5);
    /// Queue status (1508).
    pub const QUEUE_STATUS: Features = Features(1 << 6);
    /// Unsend (1509).
    pub const UNSEND: Features = Features(1 << 7);
    /// Delete account (1510).
    pub const ACCOUNT_DELETION: Features = Features(1 << 8);

    pub const fn with(self, other: Features) -> Features {
        Features(self.0 | other.0)
    }

    pub const fn has(self, feature: Features) -> bool {
        self.0 & feature.0 == feature.0
    }
}

/// The successful answer of each extension operation; its reply code is the request's + 1000.
#[derive(Debug)]
pub enum ExtensionAnswer {
    /// Boxed so that every reply stays a few words long.
    Hello(Box<Capabilities>),
    /// The secret, encrypted to the id's key.
    Challenge(Box<[u8; CHALLENGE_LEN]>),
    Proved,
    Protection,
    /// Subscribed: how many messages wait for the subscriber now.
    Subscribed {
        waiting: u32,
    },
    /// How many of the acknowledged messages were deleted.
    Acknowledged {
        deleted: u32,
    },
    /// A long-poll's messages, in the pull layout; none when the wait ended without one.
    LongPoll(Vec<QueuedMessage>),
    /// Boxed, as the others, so that every reply stays a few words long.
    Accounts(Box<AccountPage>),
    QueueStatus(Box<QueueStatus>),
    Unsent,
    AccountDeleted,
}

impl ExtensionAnswer {
    pub fn extension(&self) -> Extension {
        match self {
            ExtensionAnswer::Hello(_) => Extension::Hello,
            ExtensionAnswer::Challenge(_) => Extension::Challenge,
            ExtensionAnswer::Proved => Extension::Prove,
            ExtensionAnswer::Protection => Extension::Protect,
            ExtensionAnswer::Subscribed { .. } => Extension::Subscribe,
            ExtensionAnswer::Acknowledged { .. } => Extension::Acknowledge,
            ExtensionAnswer::LongPoll(_) => Extension::LongPoll,
            ExtensionAnswer::Accounts(_) => Extension::ListAccounts,
            ExtensionAnswer::QueueStatus(_) => Extension::QueueStatus,
            ExtensionAnswer::Unsent => Extension::Unsend,
            ExtensionAnswer::AccountDeleted => Extension::DeleteAccount,
        }
    }

    pub(super) fn encode(self) -> EncodedReply {
        let code = self.extension().reply_code();
        match self {
            ExtensionAnswer::Hello(capabilities) => {
                let mut reply = EncodedReply::with_capacity(code, 64);
                encode_capabilities(&capabilities, reply.payload());
                reply
            }
            ExtensionAnswer::Challenge(sealed) => {
                let mut reply = EncodedReply::with_capacity(code, CHALLENGE_LEN);
                reply.payload().extend_from_slice(&sealed[..]);
                reply
            }
            ExtensionAnswer::Accounts(page) => {
                let mut reply = EncodedReply::with_capacity(code, page.encoded_len());
                page.encode(reply.payload());
                reply
            }
            ExtensionAnswer::LongPoll(messages) => pulled(code, messages),
            ExtensionAnswer::Subscribed { waiting: count }
            | ExtensionAnswer::Acknowledged { deleted: count } => {
                let mut reply = EncodedReply::with_capacity(code, COUNT_REPLY_LEN);
                reply.payload().extend_from_slice(&count.to_le_bytes());
                reply
            }
            ExtensionAnswer::QueueStatus(status) => {
                let mut reply = EncodedReply::with_capacity(code, status.encoded_len());
                status.encode(reply.payload());
                reply
            }
            ExtensionAnswer::Proved
            | ExtensionAnswer::Protection
            | ExtensionAnswer::Unsent
            | ExtensionAnswer::AccountDeleted => EncodedReply::with_capacity(code, 0),
        }
    }
}

fn encode_capabilities(capabilities: &Capabilities, out: &mut Vec<u8>) {
    out.extend_from_slice(&capabilities.version.to_le_bytes());
    out.extend_from_slice(&capabilities.features.0.to_le_bytes());
    out.extend_from_slice(&capabilities.max_payload.to_le_bytes());
    out.extend_from_slice(&capabilities.max_pull_reply.to_le_bytes());
    out.extend_from_slice(&capabilities.max_long_poll_ms.to_le_bytes());
    out.extend_from_slice(&capabilities.max_list_page.to_le_bytes());
    encode_string(&capabilities.server_name, out);
    encode_string(&capabilities.server_version, out);
}

/// Reads a hello reply's payload; fields past the ones of version 1 are ignored.
pub fn parse_capabilities(payload: &[u8]) -> Option<Capabilities> {
    let fixed = payload.get(..20)?;
    let (server_name, rest) = parse_string(&payload[20..])?;
    let (server_version, _) = parse_string(rest)?;
    Some(Capabilities {
        version: LittleEndian::read_u16(&fixed[0..2]),
        features: Features(LittleEndian::read_u32(&fixed[2..6])),
        max_payload: LittleEndian::read_u32(&fixed[6..10]),
        max_pull_reply: LittleEndian::read_u32(&fixed[10..14]),
        max_long_poll_ms: LittleEndian::read_u32(&fixed[14..18]),
        max_list_page: LittleEndian::read_u16(&fixed[18..20]),
        server_name,
        server_version,
    })
}

/// A hello request's payload.
pub fn hello_payload() -> [u8; HELLO_REQUEST_LEN] {
    let mut payload = [0; HELLO_REQUEST_LEN];
    payload[..2].copy_from_slice(&EXTENSION_VERSION.to_le_bytes());
    payload
}

/// A long-poll request's payload: `wait` in ms, saturated at the u32 range.
pub fn long_poll_payload(wait: Duration) -> [u8; LONG_POLL_REQUEST_LEN] {
    u32::try_from(wait.as_millis())
        .unwrap_or(u32::MAX)
        .to_le_bytes()
}

/// The version byte extension clients send (protocol §E0: the server ignores it).
const EXTENSION_CLIENT_VERSION: u8 = 3;

/// A whole extension request: header (with `caller`) and `payload`, whose size it declares.
pub fn extension_request(extension: Extension, caller: ClientId, payload: &[u8]) -> Vec<u8> {
    let header = RequestHeader {
        client_id: caller,
        version: EXTENSION_CLIENT_VERSION,
        code: extension.to_wire(),
        payload_size: payload.len() as u32,
    };
    let mut bytes = header.encode().to_vec();
    bytes.extend_from_slice(payload);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::pulled_messages;
    use crate::reason::ErrorForm;
    use crate::{Content, MessageId, Reply};

    #[test]
    fn requests_parse_only_at_their_exact_size() {
        let parse = ExtensionRequest::parse;
        assert_eq!(
            parse(Extension::Hello, &hello_payload()),
            Ok(ExtensionRequest::Hello { version: 1 })
        );
        assert_eq!(
            parse(Extension::Challenge, &[]),
            Ok(ExtensionRequest::Challenge)
        );
        assert_eq!(
            parse(Extension::Prove, &[7; 32]),
            Ok(ExtensionRequest::Prove([7; 32]))
        );
        assert_eq!(
            parse(Extension::Protect, &[1]),
            Ok(ExtensionRequest::Protect(Protection::Protected))
        );
        assert_eq!(
            parse(Extension::Protect, &[2]),
            Err(MalformedRequest::UnknownProtection(2))
        );
        assert_eq!(
            parse(
                Extension::LongPoll,
                &long_poll_payload(Duration::from_secs(2))
            ),
            Ok(ExtensionRequest::LongPoll {
                wait: Duration::from_millis(2000)
            })
        );
        assert_eq!(long_poll_payload(Duration::MAX), [0xff; 4]);
        assert!(parse(Extension::LongPoll, &[0; 3]).is_err());
        assert_eq!(
            parse(Extension::Unsend, &[1, 2, 0, 0]),
            Ok(ExtensionRequest::Unsend(MessageId(0x201)))
        );
        assert_eq!(
            parse(Extension::QueueStatus, &[]),
            Ok(ExtensionRequest::QueueStatus)
        );
        assert_eq!(
            parse(Extension::DeleteAccount, &[]),
            Ok(ExtensionRequest::DeleteAccount)
        );
        assert!(matches!(
            parse(
                Extension::ListAccounts,
                &[1, 0, b'*', 0, 0, 0, 0, 0, 0, 0, 0, 5, 0]
            ),
            Ok(ExtensionRequest::ListAccounts(ListAccounts {
                page_size: 5,
                ..
            }))
        ));
        assert!(parse(Extension::Prove, &[7; 31]).is_err());
        assert!(parse(Extension::Challenge, &[0]).is_err());
        assert!(parse(Extension::ListAccounts, &[0; 11]).is_err());
        assert!(parse(Extension::Unsend, &[0; 5]).is_err());
        assert_eq!(
            parse(Extension::Subscribe, &[]),
            Ok(ExtensionRequest::Subscribe)
        );
        assert_eq!(
            parse(Extension::Acknowledge, &[1, 0, 0, 0, 7, 0, 0, 0]),
            Ok(ExtensionRequest::Acknowledge(vec![MessageId(7)]))
        );
        assert!(parse(Extension::Acknowledge, &[2, 0, 0, 0, 7, 0, 0, 0]).is_err());
        assert!(parse(Extension::Acknowledge, &[0; ACKNOWLEDGE_MAX_LEN + 4]).is_err());
    }

    #[test]
    fn the_hello_reply_decodes_with_the_client_parser() {
        let capabilities = Capabilities {
            version: 1,
            features: Features::AUTHENTICATION.with(Features::PROTECTION),
            max_payload: 1 << 20,
            max_pull_reply: 1 << 20,
            max_long_poll_ms: 0,
            max_list_page: 0,
            server_name: "messageu-server".into(),
            server_version: "0.1.0".into(),
        };
        let reply = Reply::Extension(ExtensionAnswer::Hello(Box::new(capabilities.clone())));
        let (wire, _) = reply.encode(ErrorForm::WithReason).into_wire(false);
        assert_eq!(&wire[..3], &[2, 0xc4, 0x09]);
        assert_eq!(&wire[7..13], &[1, 0, 3, 0, 0, 0]);
        assert_eq!(wire.len(), 7 + 20 + 2 + 15 + 2 + 5);
        assert_eq!(parse_capabilities(&wire[7..]), Some(capabilities));
    }

    #[test]
    fn a_long_poll_reply_is_2506_in_the_pull_layout() {
        let message = QueuedMessage {
            id: MessageId(5),
            from: ClientId([1; 16]),
            kind: 3,
            content: Content::Inline(b"hi".to_vec()),
        };
        let reply = Reply::Extension(ExtensionAnswer::LongPoll(vec![message]));
        let (wire, tail) = reply.encode(ErrorForm::Bare).into_wire(false);
        assert!(tail.is_empty());
        assert_eq!(&wire[..7], &[2, 0xca, 0x09, 27, 0, 0, 0]);
        let pulled: Vec<_> = pulled_messages(&wire[7..])
            .map(|message| message.map(|m| (m.id, m.from, m.content.to_vec())))
            .collect();
        assert_eq!(
            pulled,
            vec![Ok((MessageId(5), ClientId([1; 16]), b"hi".to_vec()))]
        );
        let empty = Reply::Extension(ExtensionAnswer::LongPoll(Vec::new()));
        let (wire, _) = empty.encode(ErrorForm::Bare).into_wire(false);
        assert_eq!(wire, [2, 0xca, 0x09, 0, 0, 0, 0]);
    }

    #[test]
    fn the_proof_hashes_context_secret_and_id() {
        let secret = [1; SECRET_LEN];
        let mut input = b"MessageU proof v1".to_vec();
        input.extend_from_slice(&secret);
        input.extend_from_slice(&[2; 16]);
        let expected: [u8; 32] = Sha256::digest(&input).into();
        assert_eq!(proof(&secret, ClientId([2; 16])), expected);
        assert_ne!(proof(&secret, ClientId([3; 16])), expected);
    }
}
