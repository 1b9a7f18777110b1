//! The accounts extensions' bodies (protocol §E8): the list-accounts request and the page it
//! is answered with, the queue status, the unsend request; each laid out (encode) and read
//! (parse) here only, for the server and its clients alike.

use byteorder::{ByteOrder, LittleEndian};

use super::pattern::{NamePattern, MAX_PATTERN_LEN};
use super::reason::{encode_string, parse_string};
use super::request::MalformedRequest;
use super::types::{ClientId, MessageId};

/// A list-accounts payload without its pattern's bytes: the pattern's u16 length, the u64
/// cursor, the u16 page size.
pub const LIST_ACCOUNTS_FIXED_LEN: usize = 2 + 8 + 2;
/// The longest list-accounts payload: the fixed fields and the longest pattern.
pub const LIST_ACCOUNTS_MAX_LEN: usize = LIST_ACCOUNTS_FIXED_LEN + MAX_PATTERN_LEN;
/// An unsend payload: the message id.
pub const UNSEND_REQUEST_LEN: usize = 4;
/// A page's next cursor (u64) and count (u16), before its entries.
const PAGE_HEAD_LEN: usize = 8 + 2;
/// An account entry without its name's bytes: id, name length, last seen, presence.
const ACCOUNT_FIXED_LEN: usize = 16 + 2 + 8 + 1;
/// A queue status without its senders: messages (u32), bytes (u64), senders (u16).
const QUEUE_STATUS_HEAD_LEN: usize = 4 + 8 + 2;
/// One sender of a queue status: its id and how many of its messages wait.
const SENDER_COUNT_LEN: usize = 16 + 4;

/// Where a page of accounts starts: after the account at this position in registration
/// order. Positions are never reused, so a cursor stays valid while accounts come and go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountCursor(pub u64);

impl AccountCursor {
    /// The first page.
    pub const START: AccountCursor = AccountCursor(0);
}

/// List accounts (1507): those whose name matches, a page at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListAccounts {
    pub pattern: NamePattern,
    pub after: AccountCursor,
    /// At least 1; the server gives at most its own limit (the hello's).
    pub page_size: u16,
}

impl ListAccounts {
    /// Reads a payload: the pattern must fill it up to the fixed fields.
    pub fn parse(body: &[u8]) -> Result<ListAccounts, MalformedRequest> {
        let pattern_len = body
            .get(..2)
            .map_or(0, |len| usize::from(LittleEndian::read_u16(len)));
        if LIST_ACCOUNTS_FIXED_LEN + pattern_len != body.len() {
            return Err(MalformedRequest::PatternLength {
                pattern: pattern_len,
                payload: body.len(),
            });
        }
        let (pattern, rest) = body[2..].split_at(pattern_len);
        let pattern = std::str::from_utf8(pattern).map_err(|_| MalformedRequest::NotUtf8)?;
        let page_size = LittleEndian::read_u16(&rest[8..10]);
        if page_size == 0 {
            return Err(MalformedRequest::EmptyPage);
        }
        Ok(ListAccounts {
            pattern: NamePattern::parse(pattern)?,
            after: AccountCursor(LittleEndian::read_u64(&rest[..8])),
            page_size,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut payload = Vec::with_capacity(LIST_ACCOUNTS_FIXED_LEN + self.pattern.text().len());
        encode_string(self.pattern.text(), &mut payload);
        payload.extend_from_slice(&self.after.0.to_le_bytes());
        payload.extend_from_slice(&self.page_size.to_le_bytes());
        payload
    }
}

/// Whether an account's id has been active lately (protocol §E8). The values are the wire's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Offline = 0,
    Online = 1,
}

/// One account of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedAccount {
    pub id: ClientId,
    pub name: String,
    /// Milliseconds since the Unix epoch; 0 if the server has no record of it.
    pub last_seen_ms: u64,
    pub presence: Presence,
}

/// The answer to a list-accounts request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountPage {
    /// Where the next page starts; `None` (0 on the wire) when no more accounts match.
    pub next: Option<AccountCursor>,
    pub accounts: Vec<ListedAccount>,
}

impl AccountPage {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.next.map_or(0, |cursor| cursor.0).to_le_bytes());
        // The server caps a page far below u16::MAX entries.
        out.extend_from_slice(&(self.accounts.len() as u16).to_le_bytes());
        for account in &self.accounts {
            out.extend_from_slice(&account.id.0);
            encode_string(&account.name, out);
            out.extend_from_slice(&account.last_seen_ms.to_le_bytes());
            out.push(account.presence as u8);
        }
    }

    /// The payload's size before encoding.
    pub fn encoded_len(&self) -> usize {
        let names: usize = self.accounts.iter().map(|account| account.name.len()).sum();
        PAGE_HEAD_LEN + self.accounts.len() * ACCOUNT_FIXED_LEN + names
    }

    /// Reads a list-accounts reply's payload.
    pub fn parse(payload: &[u8]) -> Option<AccountPage> {
        let head = payload.get(..PAGE_HEAD_LEN)?;
        let next = match LittleEndian::read_u64(&head[..8]) {
            0 => None,
            cursor => Some(AccountCursor(cursor)),
        };
        let count = LittleEndian::read_u16(&head[8..10]);
        let mut rest = &payload[PAGE_HEAD_LEN..];
        let mut accounts = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let id = ClientId::from_slice(rest.get(..16)?)?;
            let (name, after) = parse_string(&rest[16..])?;
            let fixed = after.get(..9)?;
            let presence = match fixed[8] {
                0 => Presence::Offline,
                1 => Presence::Online,
                _ => return None,
            };
            accounts.push(ListedAccount {
                id,
                name,
                last_seen_ms: LittleEndian::read_u64(&fixed[..8]),
                presence,
            });
            rest = &after[9..];
        }
        rest.is_empty().then_some(AccountPage { next, accounts })
    }
}

/// How many of a sender's messages wait for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderCount {
    pub from: ClientId,
    pub messages: u32,
}

/// The answer to a queue-status request: what waits for the caller, and from whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStatus {
    pub messages: u32,
    /// Their content bytes.
    pub bytes: u64,
    /// Most messages first; at most u16::MAX senders.
    pub senders: Vec<SenderCount>,
}

impl QueueStatus {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.messages.to_le_bytes());
        out.extend_from_slice(&self.bytes.to_le_bytes());
        // The server caps the senders at u16::MAX.
        out.extend_from_slice(&(self.senders.len() as u16).to_le_bytes());
        for sender in &self.senders {
            out.extend_from_slice(&sender.from.0);
            out.extend_from_slice(&sender.messages.to_le_bytes());
        }
    }

    pub fn encoded_len(&self) -> usize {
        QUEUE_STATUS_HEAD_LEN + self.senders.len() * SENDER_COUNT_LEN
    }

    /// Reads a queue-status reply's payload.
    pub fn parse(payload: &[u8]) -> Option<QueueStatus> {
        let head = payload.get(..QUEUE_STATUS_HEAD_LEN)?;
        let count = usize::from(LittleEndian::read_u16(&head[12..14]));
        let entries = &payload[QUEUE_STATUS_HEAD_LEN..];
        if entries.len() != count * SENDER_COUNT_LEN {
            return None;
        }
        let senders = entries
            .chunks_exact(SENDER_COUNT_LEN)
            .map(|entry| SenderCount {
                from: ClientId::from_slice(&entry[..16]).unwrap_or_default(),
                messages: LittleEndian::read_u32(&entry[16..]),
            })
            .collect();
        Some(QueueStatus {
            messages: LittleEndian::read_u32(&head[..4]),
            bytes: LittleEndian::read_u64(&head[4..12]),
            senders,
        })
    }
}

/// An unsend request's payload.
pub fn unsend_payload(id: MessageId) -> [u8; UNSEND_REQUEST_LEN] {
    id.0.to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(pattern: &str, after: u64, page_size: u16) -> ListAccounts {
        ListAccounts {
            pattern: NamePattern::parse(pattern).expect("pattern"),
            after: AccountCursor(after),
            page_size,
        }
    }

    #[test]
    fn a_list_request_round_trips_and_its_pattern_must_fill_the_payload() {
        let request = list("a*", 7, 50);
        let payload = request.encode();
        assert_eq!(payload, [2, 0, b'a', b'*', 7, 0, 0, 0, 0, 0, 0, 0, 50, 0]);
        assert_eq!(ListAccounts::parse(&payload), Ok(request));
        let mut short = payload.clone();
        short[0] = 3;
        assert!(matches!(
            ListAccounts::parse(&short),
            Err(MalformedRequest::PatternLength { .. })
        ));
        let mut empty_page = list("a*", 7, 1).encode();
        empty_page[12] = 0;
        assert_eq!(
            ListAccounts::parse(&empty_page),
            Err(MalformedRequest::EmptyPage)
        );
        let mut not_utf8 = payload.clone();
        not_utf8[2] = 0xff;
        assert_eq!(
            ListAccounts::parse(&not_utf8),
            Err(MalformedRequest::NotUtf8)
        );
        let escape = [1, 0, b'\\', 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        assert!(matches!(
            ListAccounts::parse(&escape),
            Err(MalformedRequest::BadPattern(_))
        ));
    }

    #[test]
    fn a_page_round_trips() {
        let page = AccountPage {
            next: Some(AccountCursor(9)),
            accounts: vec![
                ListedAccount {
                    id: ClientId([1; 16]),
                    name: "alice".into(),
                    last_seen_ms: 1_700_000_000_000,
                    presence: Presence::Online,
                },
                ListedAccount {
                    id: ClientId([2; 16]),
                    name: "bob".into(),
                    last_seen_ms: 0,
                    presence: Presence::Offline,
                },
            ],
        };
        let mut payload = Vec::new();
        page.encode(&mut payload);
        assert_eq!(payload.len(), page.encoded_len());
        assert_eq!(&payload[..10], &[9, 0, 0, 0, 0, 0, 0, 0, 2, 0]);
        assert_eq!(AccountPage::parse(&payload), Some(page));
        assert_eq!(AccountPage::parse(&payload[..payload.len() - 1]), None);
        let last = AccountPage {
            next: None,
            accounts: Vec::new(),
        };
        let mut payload = Vec::new();
        last.encode(&mut payload);
        assert_eq!(payload, [0; 10]);
        assert_eq!(AccountPage::parse(&payload), Some(last));
    }

    #[test]
    fn a_queue_status_round_trips() {
        let status = QueueStatus {
            messages: 3,
            bytes: 300,
            senders: vec![
                SenderCount {
                    from: ClientId([1; 16]),
                    messages: 2,
                },
                SenderCount {
                    from: ClientId([2; 16]),
                    messages: 1,
                },
            ],
        };
        let mut payload = Vec::new();
        status.encode(&mut payload);
        assert_eq!(payload.len(), status.encoded_len());
        assert_eq!(&payload[..14], &[3, 0, 0, 0, 44, 1, 0, 0, 0, 0, 0, 0, 2, 0]);
        assert_eq!(QueueStatus::parse(&payload), Some(status));
        assert_eq!(QueueStatus::parse(&payload[..payload.len() - 1]), None);
    }
}
