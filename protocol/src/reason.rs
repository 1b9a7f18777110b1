//! Why a request failed (protocol §E1): the [`Reason`] codes, and the form a 9000 reply takes
//! on a connection ([`ErrorForm`]): bare for classic clients, with the reason once the client
//! has said hello.

use std::borrow::Cow;

use byteorder::{ByteOrder, LittleEndian};

/// Why a request got 9000. Each variant's value is its wire code, defined here only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Malformed = 1,
    UnknownCaller = 2,
    UnknownClient = 3,
    NameTaken = 4,
    NotAuthenticated = 5,
    Protected = 6,
    BadProof = 7,
    RateLimited = 8,
    TooLarge = 9,
    NoSpace = 10,
    UnknownMessage = 11,
    InDelivery = 12,
    Framing = 13,
    UnknownRequest = 14,
    Internal = 15,
    BadKey = 16,
}

impl Reason {
    pub const ALL: [Reason; 16] = [
        Reason::Malformed,
        Reason::UnknownCaller,
        Reason::UnknownClient,
        Reason::NameTaken,
        Reason::NotAuthenticated,
        Reason::Protected,
        Reason::BadProof,
        Reason::RateLimited,
        Reason::TooLarge,
        Reason::NoSpace,
        Reason::UnknownMessage,
        Reason::InDelivery,
        Reason::Framing,
        Reason::UnknownRequest,
        Reason::Internal,
        Reason::BadKey,
    ];

    pub const fn code(self) -> u16 {
        self as u16
    }

    /// Decodes a wire code; a client treats `None` like [`Reason::Internal`].
    pub fn from_code(code: u16) -> Option<Reason> {
        Reason::ALL.into_iter().find(|reason| reason.code() == code)
    }

    /// The reason's name, as the specification's table gives it.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::UnknownCaller => "unknown-caller",
            Reason::UnknownClient => "unknown-client",
            Reason::NameTaken => "name-taken",
            Reason::NotAuthenticated => "not-authenticated",
            Reason::Protected => "protected",
            Reason::BadProof => "bad-proof",
            Reason::RateLimited => "rate-limited",
            Reason::TooLarge => "too-large",
            Reason::NoSpace => "no-space",
            Reason::UnknownMessage => "unknown-message",
            Reason::InDelivery => "in-delivery",
            Reason::Framing => "framing",
            Reason::UnknownRequest => "unknown-request",
            Reason::Internal => "internal",
            Reason::BadKey => "bad-key",
        }
    }

    /// The text sent with the reason when nothing more specific is said.
    pub const fn description(self) -> &'static str {
        match self {
            Reason::Malformed => "the payload does not have the operation's layout",
            Reason::UnknownCaller => "the header's client id is not registered",
            Reason::UnknownClient => "the target or destination is not registered",
            Reason::NameTaken => "the name is already registered",
            Reason::NotAuthenticated => "the operation needs an authenticated connection",
            Reason::Protected => {
                "the account is protected and this connection is not authenticated as it"
            }
            Reason::BadProof => "the challenge's answer was wrong, expired or absent",
            Reason::RateLimited => "too many failed proofs",
            Reason::TooLarge => "a declared size passes a limit",
            Reason::NoSpace => "the server cannot store it now",
            Reason::UnknownMessage => "no such message waits",
            Reason::InDelivery => "the message is being delivered",
            Reason::Framing => "framing that cannot be trusted",
            Reason::UnknownRequest => "a request code this server does not serve",
            Reason::Internal => "a failure of the server's own; retrying may help",
            Reason::BadKey => "the registered public key is not an RSA-1024 X.509 key",
        }
    }
}

/// A 9000 reply's reason and its text for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub text: Cow<'static, str>,
}

impl Refusal {
    /// `reason` with its usual text.
    pub fn new(reason: Reason) -> Refusal {
        Refusal {
            reason,
            text: Cow::Borrowed(reason.description()),
        }
    }

    /// `reason` with a text saying more (when to retry, ...).
    pub fn explained(reason: Reason, text: String) -> Refusal {
        Refusal {
            reason,
            text: Cow::Owned(text),
        }
    }

    /// The 9000 payload on an extended connection: u16 reason code, then the text as a
    /// string (u16 length and UTF-8 bytes), cut to what a u16 length can say.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.reason.code().to_le_bytes());
        encode_string(&self.text, out);
    }

    /// Reads a 9000 payload of an extended connection: the reason code (unknown codes kept
    /// as they are) and the text.
    pub fn parse(payload: &[u8]) -> Option<(u16, String)> {
        let code = LittleEndian::read_u16(payload.get(..2)?);
        let (text, rest) = parse_string(&payload[2..])?;
        rest.is_empty().then_some((code, text))
    }
}

/// How a connection's 9000 replies are laid out (protocol §E1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorForm {
    /// No payload, as every classic client expects: the connection has sent no hello.
    #[default]
    Bare,
    /// A [`Refusal`]'s reason and text: the connection has said hello.
    WithReason,
}

/// Appends a protocol string: u16 byte length, then the UTF-8 bytes, cut at a character
/// boundary to at most 65,535 bytes.
pub fn encode_string(text: &str, out: &mut Vec<u8>) {
    let mut len = text.len().min(usize::from(u16::MAX));
    while !text.is_char_boundary(len) {
        len -= 1;
    }
    out.extend_from_slice(&(len as u16).to_le_bytes());
    out.extend_from_slice(&text.as_bytes()[..len]);
}

/// Reads a protocol string at the start of `bytes`; returns it and the bytes after it.
pub fn parse_string(bytes: &[u8]) -> Option<(String, &[u8])> {
    let len = usize::from(LittleEndian::read_u16(bytes.get(..2)?));
    let text = bytes.get(2..2 + len)?;
    let text = String::from_utf8(text.to_vec()).ok()?;
    Some((text, &bytes[2 + len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_match_the_specification_table() {
        for (index, reason) in Reason::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(reason.code()), index + 1);
            assert_eq!(Reason::from_code(reason.code()), Some(reason));
        }
        assert_eq!(Reason::RateLimited.name(), "rate-limited");
        assert_eq!(Reason::from_code(0), None);
        assert_eq!(Reason::from_code(17), None);
    }

    #[test]
    fn a_refusal_encodes_its_code_then_its_text() {
        let mut out = Vec::new();
        Refusal::explained(Reason::BadProof, "no".into()).encode(&mut out);
        assert_eq!(out, [7, 0, 2, 0, b'n', b'o']);
        assert_eq!(Refusal::parse(&out), Some((7, "no".to_owned())));
        assert_eq!(Refusal::parse(&out[..5]), None);
    }

    #[test]
    fn long_strings_are_cut_at_a_character_boundary() {
        let text = "é".repeat(40_000);
        let mut out = Vec::new();
        encode_string(&text, &mut out);
        let (parsed, rest) = parse_string(&out).expect("a string");
        assert!(rest.is_empty());
        assert_eq!(parsed.len(), 65_534);
    }
}
