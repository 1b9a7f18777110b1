//! What a well-formed reply stream is (protocol §2–§4), checked with the client-side parsers
//! of `messageu::protocol::client`.

use messageu::protocol::push::COUNT_REPLY_LEN;
use messageu::protocol::client::{
    parse_client_list, parse_public_key, parse_registered, parse_sent, pulled_messages,
    LISTED_CLIENT_LEN,
};
use messageu::protocol::extension::{parse_capabilities, CHALLENGE_LEN};
use messageu::protocol::padding::reply_padding;
use messageu::protocol::{
    AccountPage, Edition, Extension, MessageType, Operation, QueueStatus, Refusal, ReplyHeader,
    ERROR_REPLY_CODE, REPLY_HEADER_LEN, SERVER_VERSION,
};

/// One reply as it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub code: u16,
    pub payload_len: usize,
}

/// The replies one connection received, in order.
#[derive(Debug)]
pub struct ReplyStream {
    pub replies: Vec<Received>,
    /// The last reply was zero-padded to whole 1024-byte blocks (padded clients only).
    pub padded: bool,
}

/// The operation a success reply code answers, in whichever edition uses it.
pub fn reply_operation(code: u16) -> Option<Operation> {
    Edition::ALL.into_iter().find_map(|edition| {
        Operation::ALL
            .into_iter()
            .find(|&operation| edition.reply_code(operation) == code)
    })
}

/// Splits everything a connection received, up to the server's close, into replies: whole,
/// well-formed replies, the last one possibly followed by the zeros that pad it to whole
/// blocks, and nothing else. `max_payload` is the server's pull reply cap.
pub fn parse_reply_stream(bytes: &[u8], max_payload: u32) -> Result<ReplyStream, String> {
    let mut replies = Vec::new();
    let mut rest = bytes;
    let mut last_len = 0;
    // After a hello's reply, every 9000 carries a reason (protocol §E1).
    let mut extended = false;
    while let Some(&first) = rest.first() {
        let at = bytes.len() - rest.len();
        // A reply begins with version 2, so a zero can only be the padding of the last one.
        if first == 0 && !replies.is_empty() {
            let padding = reply_padding(last_len);
            if rest.len() != padding || rest.iter().any(|&byte| byte != 0) {
                return Err(format!(
                    "{} bytes at offset {at} after a {last_len}-byte reply, not its {padding} \
                     bytes of zero padding",
                    rest.len()
                ));
            }
            return Ok(ReplyStream {
                replies,
                padded: true,
            });
        }
        let (head, after) = rest
            .split_first_chunk::<REPLY_HEADER_LEN>()
            .ok_or_else(|| format!("a reply header cut short at offset {at}: {rest:02x?}"))?;
        let header = ReplyHeader::parse(head);
        let (payload, after) = after
            .split_at_checked(header.payload_size as usize)
            .ok_or_else(|| {
                format!(
                    "reply at offset {at} ({header:?}) cut short: {} payload bytes",
                    after.len()
                )
            })?;
        check_reply(&header, payload, max_payload, extended)
            .map_err(|error| format!("reply at offset {at} ({header:?}): {error}"))?;
        extended |= header.code == Extension::Hello.reply_code();
        replies.push(Received {
            code: header.code,
            payload_len: payload.len(),
        });
        last_len = REPLY_HEADER_LEN + payload.len();
        rest = after;
    }
    Ok(ReplyStream {
        replies,
        padded: false,
    })
}

/// Checks one reply: version 2, a known code, a payload that code's parser accepts; a 9000
/// is bare unless the connection is `extended`, and then carries a reason.
fn check_reply(
    header: &ReplyHeader,
    payload: &[u8],
    max_payload: u32,
    extended: bool,
) -> Result<(), String> {
    if header.version != SERVER_VERSION {
        return Err(format!("version {}", header.version));
    }
    if header.code == ERROR_REPLY_CODE {
        return match (extended, payload.len()) {
            (false, 0) => Ok(()),
            (false, len) => Err(format!("an error reply with a {len}-byte payload")),
            (true, _) => Refusal::parse(payload)
                .map(drop)
                .ok_or_else(|| format!("an error reply without a reason: {payload:02x?}")),
        };
    }
    if let Some(extension) = Extension::ALL
        .into_iter()
        .find(|extension| extension.reply_code() == header.code)
    {
        return check_extension_reply(extension, payload, max_payload);
    }
    let operation =
        reply_operation(header.code).ok_or_else(|| format!("unknown code {}", header.code))?;
    let parsed = match operation {
        Operation::Register => parse_registered(payload).map(drop),
        Operation::PublicKey => parse_public_key(payload).map(drop),
        Operation::SendMessage => parse_sent(payload).map(drop),
        Operation::ListClients => parse_client_list(payload).map(drop),
        Operation::PullMessages => return check_pull(payload, max_payload),
    };
    parsed.map_err(|error| error.to_string())?;
    match operation {
        Operation::ListClients => check_names(payload),
        _ => Ok(()),
    }
}

/// An extension reply's payload: the hello's capabilities, a sealed challenge, a long-poll's
/// messages (a pull's layout), a page of accounts, a queue status, a count, or nothing.
fn check_extension_reply(
    extension: Extension,
    payload: &[u8],
    max_payload: u32,
) -> Result<(), String> {
    let fits = match extension {
        Extension::Hello => parse_capabilities(payload).is_some(),
        Extension::Challenge => payload.len() == CHALLENGE_LEN,
        Extension::ListAccounts => AccountPage::parse(payload).is_some(),
        Extension::QueueStatus => QueueStatus::parse(payload).is_some(),
        Extension::Subscribe | Extension::Acknowledge => payload.len() == COUNT_REPLY_LEN,
        Extension::Prove | Extension::Protect | Extension::Unsend | Extension::DeleteAccount => {
            payload.is_empty()
        }
        Extension::LongPoll => return check_pull(payload, max_payload),
    };
    if fits {
        Ok(())
    } else {
        Err(format!("a {extension} reply of {} bytes", payload.len()))
    }
}

/// Listed names are what registration accepts: 1–254 printable ASCII characters, then a NUL
/// and zeros.
fn check_names(payload: &[u8]) -> Result<(), String> {
    for (index, entry) in payload.chunks_exact(LISTED_CLIENT_LEN).enumerate() {
        let field = &entry[16..];
        let end = field
            .iter()
            .position(|&byte| byte == 0)
            .unwrap_or(field.len());
        let name = &field[..end];
        if name.is_empty() || !name.iter().all(|byte| (b' '..=b'~').contains(byte)) {
            return Err(format!("listed client {index} has the name {name:02x?}"));
        }
        if field[end..].iter().any(|&byte| byte != 0) {
            return Err(format!("listed client {index}: bytes after the name's NUL"));
        }
    }
    Ok(())
}

/// Pulled messages are whole and of the four types; a reply carries at most `max_payload`
/// bytes, unless it is one larger message alone.
fn check_pull(payload: &[u8], max_payload: u32) -> Result<(), String> {
    let mut messages = 0;
    for message in pulled_messages(payload) {
        let message = message.map_err(|error| error.to_string())?;
        MessageType::try_from(message.kind)
            .map_err(|kind| format!("pulled message {messages} has type {kind}"))?;
        messages += 1;
    }
    if payload.len() > max_payload as usize && messages > 1 {
        return Err(format!(
            "a {}-byte pull reply of {messages} messages exceeds the {max_payload}-byte cap",
            payload.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seeds::reply;

    #[test]
    fn replies_and_the_padding_of_the_last_are_accepted() {
        let mut bytes = reply(2100, &[7; 16]);
        bytes.extend_from_slice(&reply(9000, &[]));
        bytes.resize(bytes.len() + 1024 - 7, 0);
        let stream = parse_reply_stream(&bytes, 1 << 16).expect("well-formed");
        assert!(stream.padded);
        assert_eq!(
            stream.replies,
            [
                Received {
                    code: 2100,
                    payload_len: 16
                },
                Received {
                    code: 9000,
                    payload_len: 0
                }
            ]
        );
    }

    #[test]
    fn malformed_replies_are_refused() {
        let refused = |bytes: &[u8]| parse_reply_stream(bytes, 1 << 16).is_err();
        assert!(refused(&reply(2100, &[7; 15])));
        assert!(refused(&reply(9000, &[1])));
        assert!(refused(&reply(2105, &[])));
        assert!(refused(&reply(2103, &[0; 20])[..26]));
        let mut pull = vec![1; 16];
        pull.extend_from_slice(&[0, 0, 0, 0, 9, 0, 0, 0, 0]);
        assert!(refused(&reply(2104, &pull)));
        let mut padded_twice = reply(9000, &[]);
        padded_twice.resize(2048, 0);
        assert!(refused(&padded_twice));
    }
}
