//! Target `reply_parser`: arbitrary bytes through the client-side reply parsers, as a client
//! reads whatever a server (or an attacker in its place) sends. The first 7 bytes are the
//! reply header, the rest its payload; every parser sees every payload.

use messageu::protocol::client::{
    check_reply_code, parse_client_list, parse_public_key, parse_registered, parse_sent,
    pulled_messages, ReplyError, LISTED_CLIENT_LEN, PULLED_HEADER_LEN,
};
use messageu::protocol::{
    Edition, Operation, ReplyHeader, ERROR_REPLY_CODE, NAME_FIELD_LEN, PUBLIC_KEY_LEN,
    REPLY_HEADER_LEN,
};

pub fn check(data: &[u8]) {
    let Some((head, payload)) = data.split_first_chunk::<REPLY_HEADER_LEN>() else {
        return;
    };
    let header = ReplyHeader::parse(head);
    assert_eq!(header.encode(), *head, "a reply header does not round-trip");
    check_codes(&header);
    check_fixed_size(payload);
    check_list(payload);
    check_pull(payload);
}

/// Every edition and operation accepts exactly its own reply code and tells 9000 apart.
fn check_codes(header: &ReplyHeader) {
    for edition in Edition::ALL {
        for operation in Operation::ALL {
            let expected = edition.reply_code(operation);
            let outcome = check_reply_code(edition, operation, header);
            let wanted = match header.code {
                code if code == expected => Ok(()),
                ERROR_REPLY_CODE => Err(ReplyError::ServerError),
                actual => Err(ReplyError::UnexpectedCode { expected, actual }),
            };
            assert_eq!(outcome, wanted, "{edition:?} {operation:?} {header:?}");
        }
    }
}

/// Register, public-key and send replies parse exactly at their sizes, into their bytes.
fn check_fixed_size(payload: &[u8]) {
    match parse_registered(payload) {
        Ok(id) => assert_eq!(id.0[..], *payload),
        Err(_) => assert_ne!(payload.len(), 16),
    }
    match parse_public_key(payload) {
        Ok((id, key)) => {
            assert_eq!(id.0[..], payload[..16]);
            assert_eq!(key.0[..], payload[16..]);
        }
        Err(_) => assert_ne!(payload.len(), 16 + PUBLIC_KEY_LEN),
    }
    match parse_sent(payload) {
        Ok((id, message)) => {
            assert_eq!(id.0[..], payload[..16]);
            assert_eq!(message.0.to_le_bytes(), payload[16..]);
        }
        Err(_) => assert_ne!(payload.len(), 20),
    }
}

/// A list parses entry by entry, each name the bytes before its NUL.
fn check_list(payload: &[u8]) {
    let entries = payload.chunks_exact(LISTED_CLIENT_LEN);
    match parse_client_list(payload) {
        Ok(listed) => {
            assert!(entries.remainder().is_empty());
            assert_eq!(listed.len(), entries.len());
            for (client, entry) in listed.iter().zip(entries) {
                assert_eq!(client.id.0[..], entry[..16]);
                let name_len = entry[16..].iter().position(|&byte| byte == 0);
                assert!(name_len.is_some_and(|len| len < NAME_FIELD_LEN));
                assert!(!client.name.contains('\0'));
            }
        }
        Err(ReplyError::WrongLength { .. }) => assert!(!entries.remainder().is_empty()),
        Err(ReplyError::NameNotTerminated) => {
            assert!(entries.clone().any(|entry| !entry[16..].contains(&0)))
        }
        Err(error) => panic!("unexpected list error {error:?}"),
    }
}

/// Pulled messages tile the payload in order, each content inside it; a cut-short message
/// ends the iteration with one error.
fn check_pull(payload: &[u8]) {
    let mut offset = 0;
    let mut messages = pulled_messages(payload);
    for (index, message) in messages.by_ref().enumerate() {
        assert!(
            index <= payload.len() / PULLED_HEADER_LEN,
            "more messages than headers fit"
        );
        match message {
            Ok(message) => {
                let head = &payload[offset..offset + PULLED_HEADER_LEN];
                assert_eq!(message.from.0[..], head[..16]);
                assert_eq!(message.id.0.to_le_bytes(), head[16..20]);
                assert_eq!(message.kind, head[20]);
                let content_start = offset + PULLED_HEADER_LEN;
                let content_end = content_start + message.content.len();
                assert_eq!(
                    message.content.as_ptr_range(),
                    payload[content_start..content_end].as_ptr_range(),
                    "message {index}'s content is not the payload's bytes after its header"
                );
                offset = content_end;
            }
            Err(error) => {
                assert_eq!(error, ReplyError::TruncatedMessage { index });
                let rest = &payload[offset..];
                let whole = rest.get(21..25).is_some_and(|size| {
                    let size = u32::from_le_bytes([size[0], size[1], size[2], size[3]]);
                    size as usize <= rest.len() - PULLED_HEADER_LEN
                });
                assert!(!whole, "message {index} is whole but reported cut short");
                offset = payload.len();
                break;
            }
        }
    }
    assert_eq!(offset, payload.len(), "pulled messages left bytes unread");
    assert!(messages.next().is_none(), "messages after a cut-short one");
}
