//! Request and reply codes of the four yearly editions (protocol §1), and of the extensions
//! (protocol part II, §E0).

use std::fmt;

/// The server version byte of every reply.
pub const SERVER_VERSION: u8 = 2;

/// The reply code for any request the server cannot honour, in every edition.
pub const ERROR_REPLY_CODE: u16 = 9000;

/// A yearly edition of the protocol. Editions differ only in their codes, and their request
/// codes do not overlap, so one server answers each request in the request's own edition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Edition {
    Y2021,
    Y2022,
    Y2024,
    Y2026,
}

/// The five operations of the protocol, numbered as the offset from an edition's base code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Register = 0,
    ListClients = 1,
    PublicKey = 2,
    SendMessage = 3,
    PullMessages = 4,
}

impl Operation {
    pub const ALL: [Operation; 5] = [
        Operation::Register,
        Operation::ListClients,
        Operation::PublicKey,
        Operation::SendMessage,
        Operation::PullMessages,
    ];

    fn from_offset(offset: u16) -> Option<Operation> {
        Operation::ALL.get(usize::from(offset)).copied()
    }

    /// The operation's name in logs and metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            Operation::Register => "register",
            Operation::ListClients => "list",
            Operation::PublicKey => "public-key",
            Operation::SendMessage => "send",
            Operation::PullMessages => "pull",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Edition {
    pub const ALL: [Edition; 4] = [
        Edition::Y2021,
        Edition::Y2022,
        Edition::Y2024,
        Edition::Y2026,
    ];

    /// The request code of `Register` in this edition; the others follow it.
    pub const fn request_base(self) -> u16 {
        match self {
            Edition::Y2021 => 1000,
            Edition::Y2022 => 1100,
            Edition::Y2024 => 600,
            Edition::Y2026 => 700,
        }
    }

    /// The reply code of `Register` in this edition; the others follow it.
    pub const fn reply_base(self) -> u16 {
        match self {
            Edition::Y2021 => 2000,
            _ => 2100,
        }
    }

    pub const fn request_code(self, operation: Operation) -> u16 {
        self.request_base() + operation as u16
    }

    pub const fn reply_code(self, operation: Operation) -> u16 {
        self.reply_base() + operation as u16
    }

    /// The edition's name as users know it.
    pub const fn name(self) -> &'static str {
        match self {
            Edition::Y2021 => "2021",
            Edition::Y2022 => "2022-23",
            Edition::Y2024 => "2024-25",
            Edition::Y2026 => "2026",
        }
    }
}

impl fmt::Display for Edition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A request code that names a known operation in a known edition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestCode {
    pub edition: Edition,
    pub operation: Operation,
}

impl RequestCode {
    /// Decodes a wire code; `None` for a code no edition uses.
    pub fn from_wire(code: u16) -> Option<RequestCode> {
        Edition::ALL.into_iter().find_map(|edition| {
            let offset = code.checked_sub(edition.request_base())?;
            Operation::from_offset(offset).map(|operation| RequestCode { edition, operation })
        })
    }

    pub const fn to_wire(self) -> u16 {
        self.edition.request_code(self.operation)
    }

    /// The code of a successful reply to this request.
    pub const fn reply_code(self) -> u16 {
        self.edition.reply_code(self.operation)
    }
}

/// What an operator reads: the operation and its edition, e.g. `list (2024-25)`.
impl fmt::Display for RequestCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.operation, self.edition)
    }
}

/// What an extension's reply code adds to its request code (protocol §E0).
const EXTENSION_REPLY_OFFSET: u16 = 1000;

/// The extension operations this server serves (protocol part II), beside the editions'
/// classic [`Operation`]s. Each variant's value is its request code, defined here only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Extension {
    Hello = 1500,
    Challenge = 1501,
    Prove = 1502,
    Protect = 1503,
    Subscribe = 1504,
    Acknowledge = 1505,
    LongPoll = 1506,
    ListAccounts = 1507,
    QueueStatus = 1508,
    Unsend = 1509,
    DeleteAccount = 1510,
}

impl Extension {
    pub const ALL: [Extension; 11] = [
        Extension::Hello,
        Extension::Challenge,
        Extension::Prove,
        Extension::Protect,
        Extension::Subscribe,
        Extension::Acknowledge,
        Extension::LongPoll,
        Extension::ListAccounts,
        Extension::QueueStatus,
        Extension::Unsend,
        Extension::DeleteAccount,
    ];

    /// Decodes a wire code; `None` for a code that is no served extension.
    pub fn from_wire(code: u16) -> Option<Extension> {
        Extension::ALL
            .into_iter()
            .find(|extension| extension.to_wire() == code)
    }

    pub const fn to_wire(self) -> u16 {
        self as u16
    }

    /// The code of a successful reply to this request.
    pub const fn reply_code(self) -> u16 {
        self.to_wire() + EXTENSION_REPLY_OFFSET
    }

    /// The operation's name in logs and metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            Extension::Hello => "hello",
            Extension::Challenge => "challenge",
            Extension::Prove => "prove",
            Extension::Protect => "protect",
            Extension::Subscribe => "subscribe",
            Extension::Acknowledge => "acknowledge",
            Extension::LongPoll => "long-poll",
            Extension::ListAccounts => "accounts",
            Extension::QueueStatus => "queue-status",
            Extension::Unsend => "unsend",
            Extension::DeleteAccount => "delete-account",
        }
    }
}

impl fmt::Display for Extension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (extension)", self.name())
    }
}

/// A request code this server serves: a classic operation in its edition, or an extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    Classic(RequestCode),
    Extension(Extension),
}

impl Code {
    /// Decodes a wire code; `None` for a code this server does not serve.
    pub fn from_wire(code: u16) -> Option<Code> {
        RequestCode::from_wire(code)
            .map(Code::Classic)
            .or_else(|| Extension::from_wire(code).map(Code::Extension))
    }

    pub const fn to_wire(self) -> u16 {
        match self {
            Code::Classic(code) => code.to_wire(),
            Code::Extension(extension) => extension.to_wire(),
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Code::Classic(code) => code.fmt(f),
            Code::Extension(extension) => extension.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_of_every_edition_round_trips() {
        for edition in Edition::ALL {
            for operation in Operation::ALL {
                let code = RequestCode { edition, operation };
                assert_eq!(RequestCode::from_wire(code.to_wire()), Some(code));
            }
        }
    }

    #[test]
    fn codes_match_the_specification_table() {
        let register = |code| RequestCode::from_wire(code).map(|c| (c.edition, c.operation));
        assert_eq!(register(1000), Some((Edition::Y2021, Operation::Register)));
        assert_eq!(
            register(1104),
            Some((Edition::Y2022, Operation::PullMessages))
        );
        assert_eq!(register(602), Some((Edition::Y2024, Operation::PublicKey)));
        assert_eq!(
            register(703),
            Some((Edition::Y2026, Operation::SendMessage))
        );
        assert_eq!(Edition::Y2021.reply_code(Operation::PullMessages), 2004);
        assert_eq!(Edition::Y2026.reply_code(Operation::Register), 2100);
    }

    #[test]
    fn codes_display_as_operators_read_them() {
        let code = |wire| RequestCode::from_wire(wire).map(|code| code.to_string());
        assert_eq!(code(601).as_deref(), Some("list (2024-25)"));
        assert_eq!(code(1102).as_deref(), Some("public-key (2022-23)"));
        assert_eq!(code(1000).as_deref(), Some("register (2021)"));
        assert_eq!(code(704).as_deref(), Some("pull (2026)"));
        assert_eq!(Operation::SendMessage.to_string(), "send");
    }

    #[test]
    fn unknown_codes_are_rejected() {
        for code in [
            0,
            599,
            605,
            699,
            705,
            999,
            1005,
            1099,
            1105,
            2100,
            9000,
            u16::MAX,
        ] {
            assert_eq!(RequestCode::from_wire(code), None, "code {code}");
        }
    }

    #[test]
    fn extension_codes_match_the_specification_table() {
        let codes: Vec<_> = Extension::ALL
            .map(|extension| (extension.to_wire(), extension.reply_code()))
            .into();
        assert_eq!(
            codes,
            vec![
                (1500, 2500),
                (1501, 2501),
                (1502, 2502),
                (1503, 2503),
                (1504, 2504),
                (1505, 2505),
                (1506, 2506),
                (1507, 2507),
                (1508, 2508),
                (1509, 2509),
                (1510, 2510),
            ]
        );
        for extension in Extension::ALL {
            let code = Code::Extension(extension);
            assert_eq!(Code::from_wire(code.to_wire()), Some(code));
            assert_eq!(RequestCode::from_wire(code.to_wire()), None);
        }
        for unserved in [1499, 1511, 2600] {
            assert_eq!(Code::from_wire(unserved), None, "{unserved} is not served");
        }
        assert_eq!(
            Code::from_wire(601).map(|code| code.to_string()).as_deref(),
            Some("list (2024-25)")
        );
        assert_eq!(Extension::Prove.to_string(), "prove (extension)");
    }
}
