//! Request and reply codes of the four yearly editions (protocol §1).

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
}
