//! News between servers sharing the database, as NOTIFY payloads on the channel of their
//! schema (`messageu.SCHEMA`, so that deployments in other schemas of the database hear
//! none of it): sent in
//! the round's transaction (PostgreSQL delivers a transaction's notifications when, and only
//! if, it commits: by then the round is durable), heard by `listen.rs`.
//!
//! A payload is text, at most [`MAX_PAYLOAD`] bytes (PostgreSQL's limit is 8,000): its first
//! line is the sending server's number, then one line per item:
//! `q TO` (a message for TO is stored), `r SENDER RECIPIENT ID HOW AT` (a receipt: message
//! ID, delivered to RECIPIENT, 1 acknowledged or 2 pulled, at AT milliseconds since the Unix
//! epoch) and `d ID` (an account deleted); client ids in 32 hex digits. The encoding and
//! decoding are I/O-free.

use std::fmt::Write;

use super::PostgresStore;
use crate::protocol::{ClientId, Delivery, MessageId, Receipt};
use crate::store::{News, StoreError};

/// The longest channel name PostgreSQL takes whole (`NOTIFY` refuses a longer one, `LISTEN`
/// cuts it short).
const MAX_CHANNEL_LEN: usize = 63;

/// The channel of the servers whose tables are in `schema`: named after it, or after a hash
/// of a name too long for a channel.
pub(super) fn channel(schema: &str) -> String {
    let named = format!("messageu.{schema}");
    if named.len() <= MAX_CHANNEL_LEN {
        return named;
    }
    // FNV-1a: the same on every server, whatever its build.
    let hash = schema
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    format!("messageu.{hash:016x}")
}

/// `LISTEN` on `channel`, the name quoted.
pub(super) fn listen_statement(channel: &str) -> String {
    format!("LISTEN \"{}\"", channel.replace('"', "\"\""))
}

/// The longest payload sent: within PostgreSQL's 8,000 bytes.
const MAX_PAYLOAD: usize = 7_900;

impl PostgresStore {
    /// `Store::tell_others`: in the round, so sent once it commits.
    pub(super) fn tell(&mut self, news: &[News]) -> Result<(), StoreError> {
        let payloads = encode(self.claims.node, news);
        if payloads.is_empty() {
            return Ok(());
        }
        self.run(|store| {
            store.conn.execute(
                "SELECT pg_notify($2, payload) FROM unnest($1::text[]) AS payload",
                &[&payloads, &store.channel],
            )?;
            Ok(())
        })
    }
}

/// The payloads that carry `news` from server `node`; none for no news.
pub(super) fn encode(node: i64, news: &[News]) -> Vec<String> {
    let mut payloads = Vec::new();
    let mut payload = String::new();
    let mut line = String::new();
    for item in news {
        line.clear();
        match item {
            News::Queued(to) => write!(line, "q {to}"),
            News::Receipt(sender, receipt) => write!(
                line,
                "r {sender} {} {} {} {}",
                receipt.recipient, receipt.id.0, receipt.how as u8, receipt.at_ms
            ),
            News::AccountDeleted(id) => write!(line, "d {id}"),
            // Only the listening side knows it missed something.
            News::Missed => continue,
        }
        .expect("writing to a String cannot fail");
        if !payload.is_empty() && payload.len() + 1 + line.len() > MAX_PAYLOAD {
            payloads.push(std::mem::take(&mut payload));
        }
        if payload.is_empty() {
            write!(payload, "{node}").expect("writing to a String cannot fail");
        }
        payload.push('\n');
        payload.push_str(&line);
    }
    if !payload.is_empty() {
        payloads.push(payload);
    }
    payloads
}

/// The sending server and the news of a payload; `None` if it is not one of ours. Lines
/// this server does not understand (a newer server's) are skipped.
pub(super) fn decode(payload: &str) -> Option<(i64, Vec<News>)> {
    let mut lines = payload.lines();
    let node = lines.next()?.parse().ok()?;
    let news = lines.filter_map(decode_item).collect();
    Some((node, news))
}

fn decode_item(line: &str) -> Option<News> {
    let mut fields = line.split(' ');
    let kind = fields.next()?;
    let item = match kind {
        "q" => News::Queued(client_id(fields.next()?)?),
        "d" => News::AccountDeleted(client_id(fields.next()?)?),
        "r" => {
            let sender = client_id(fields.next()?)?;
            let recipient = client_id(fields.next()?)?;
            let id = MessageId(fields.next()?.parse().ok()?);
            let how = Delivery::from_byte(fields.next()?.parse().ok()?)?;
            let at_ms = fields.next()?.parse().ok()?;
            News::Receipt(
                sender,
                Receipt {
                    id,
                    recipient,
                    how,
                    at_ms,
                },
            )
        }
        _ => return None,
    };
    fields.next().is_none().then_some(item)
}

fn client_id(hex: &str) -> Option<ClientId> {
    if hex.len() != 32 || !hex.is_ascii() {
        return None;
    }
    let mut id = [0; 16];
    for (byte, pair) in id.iter_mut().zip(hex.as_bytes().chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(ClientId(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(id: u32) -> News {
        News::Receipt(
            ClientId([0xab; 16]),
            Receipt {
                id: MessageId(id),
                recipient: ClientId([1; 16]),
                how: Delivery::Pulled,
                at_ms: 1_764_000_000_123,
            },
        )
    }

    #[test]
    fn news_comes_back_as_it_went() {
        let news = vec![
            News::Queued(ClientId([7; 16])),
            receipt(4_000_000_000),
            News::AccountDeleted(ClientId([0xfe; 16])),
        ];
        let payloads = encode(42, &news);
        assert_eq!(payloads.len(), 1);
        assert_eq!(decode(&payloads[0]), Some((42, news)));
    }

    #[test]
    fn much_news_is_split_into_payloads_postgresql_takes() {
        let news: Vec<News> = (0..1_000).map(receipt).collect();
        let payloads = encode(-3, &news);
        assert!(payloads.len() > 1);
        assert!(payloads.iter().all(|payload| payload.len() <= MAX_PAYLOAD));
        let heard: Vec<News> = payloads
            .iter()
            .flat_map(|payload| {
                let (node, news) = decode(payload).unwrap();
                assert_eq!(node, -3);
                news
            })
            .collect();
        assert_eq!(heard, news);
    }

    #[test]
    fn a_schemas_channel_is_quoted_for_listen() {
        assert_eq!(channel("public"), "messageu.public");
        let long = "s".repeat(60);
        assert!(channel(&long).len() <= MAX_CHANNEL_LEN);
        assert_eq!(channel(&long), channel(&long), "the same on every server");
        assert_ne!(channel(&long), channel(&"t".repeat(60)));
        assert_eq!(
            listen_statement("messageu.a\"b"),
            "LISTEN \"messageu.a\"\"b\""
        );
    }

    #[test]
    fn no_news_sends_nothing() {
        assert!(encode(1, &[]).is_empty());
        assert!(encode(1, &[News::Missed]).is_empty());
    }

    #[test]
    fn lines_not_understood_are_skipped_and_foreign_payloads_refused() {
        let payload = format!(
            "5\nq {}\nz something newer\nq 12\nr 1 2\nq {} extra",
            ClientId([9; 16]),
            ClientId([8; 16])
        );
        assert_eq!(
            decode(&payload),
            Some((5, vec![News::Queued(ClientId([9; 16]))]))
        );
        assert_eq!(decode("hello"), None);
        assert_eq!(decode(""), None);
    }
}
