//! The replies of protocol §3, typed: what a handler answers ([`Reply`]), and one encoder per
//! operation that turns it into bytes and streamed contents ([`Reply::encode`]). Handlers say
//! what to answer, and only this module knows the payload layouts; the client codec
//! ([`super::client`]) decodes them with the same constants.

use super::codes::{Edition, Operation, ERROR_REPLY_CODE};
use super::content::Content;
use super::extension::ExtensionAnswer;
use super::reason::{ErrorForm, Refusal};
use super::reply::EncodedReply;
use super::request::{encode_name, KeyReplyLayout};
use super::types::{ClientId, MessageId, PublicKey, NAME_FIELD_LEN, PUBLIC_KEY_LEN};

/// One entry of a list reply: the client's id and its NUL-terminated name field.
pub const LISTED_CLIENT_LEN: usize = 16 + NAME_FIELD_LEN;
/// Sender id (16), message id (4), type (1) and content size (4), in front of each pulled
/// message's content.
pub const PULLED_MESSAGE_HEADER_LEN: usize = 16 + 4 + 1 + 4;
/// Destination id (16) and message id (4).
const SENT_LEN: usize = 16 + 4;

/// What a request is answered with.
#[derive(Debug)]
pub enum Reply {
    /// The operation's answer, coded in the request's edition.
    Success { edition: Edition, answer: Answer },
    /// An extension operation's answer (protocol part II).
    Extension(ExtensionAnswer),
    /// 9000, the same in every edition: the request could not be honoured, for this reason
    /// (sent only on a connection that said hello, protocol §E1).
    Error(Refusal),
}

/// The successful answer of each operation.
#[derive(Debug)]
pub enum Answer {
    /// Register: the new client's id.
    Registered(ClientId),
    /// List: every other client, in registration order: their entries (16-byte id, 255-byte
    /// name field each) in wire form, in memory or streamed as the reply is written.
    Clients(Content),
    /// Public key: the target's key, laid out as its requester reads it. Boxed so that every
    /// reply, moved several times on its way to the outbox, stays a few words long.
    PublicKey {
        target: ClientId,
        key: Box<PublicKey>,
        layout: KeyReplyLayout,
    },
    /// Send: the destination and the new message's id.
    Sent { to: ClientId, id: MessageId },
    /// Pull: whole messages, in send order.
    Pulled(Vec<QueuedMessage>),
}

/// One entry of a list reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedClient {
    pub id: ClientId,
    /// The name; a client decodes it up to its NUL, bytes that are not UTF-8 replaced, since
    /// it is only shown.
    pub name: String,
}

/// A message from a recipient's queue, as a pull reply carries it.
#[derive(Debug)]
pub struct QueuedMessage {
    pub id: MessageId,
    pub from: ClientId,
    /// The type byte as stored; a database adopted from another server may hold any value.
    pub kind: u8,
    pub content: Content,
}

impl Answer {
    pub fn operation(&self) -> Operation {
        match self {
            Answer::Registered(_) => Operation::Register,
            Answer::Clients(_) => Operation::ListClients,
            Answer::PublicKey { .. } => Operation::PublicKey,
            Answer::Sent { .. } => Operation::SendMessage,
            Answer::Pulled(_) => Operation::PullMessages,
        }
    }
}

impl Reply {
    /// The header and payload, in wire order; a 9000 laid out in `errors`.
    pub fn encode(self, errors: ErrorForm) -> EncodedReply {
        let (edition, answer) = match self {
            Reply::Error(refusal) => return error(&refusal, errors),
            Reply::Extension(answer) => return answer.encode(),
            Reply::Success { edition, answer } => (edition, answer),
        };
        let code = edition.reply_code(answer.operation());
        match answer {
            Answer::Registered(id) => registered(code, id),
            Answer::Clients(entries) => client_list(code, entries),
            Answer::PublicKey {
                target,
                key,
                layout,
            } => public_key(code, target, &key, layout),
            Answer::Sent { to, id } => sent(code, to, id),
            Answer::Pulled(messages) => pulled(code, messages),
        }
    }
}

/// 9000: bare, or with the refusal's reason and text.
fn error(refusal: &Refusal, errors: ErrorForm) -> EncodedReply {
    match errors {
        ErrorForm::Bare => EncodedReply::with_capacity(ERROR_REPLY_CODE, 0),
        ErrorForm::WithReason => {
            let mut reply = EncodedReply::with_capacity(ERROR_REPLY_CODE, 4 + refusal.text.len());
            refusal.encode(reply.payload());
            reply
        }
    }
}

/// Register: the new client's id.
fn registered(code: u16, id: ClientId) -> EncodedReply {
    let mut reply = EncodedReply::with_capacity(code, id.0.len());
    reply.payload().extend_from_slice(&id.0);
    reply
}

/// List: an entry per client.
fn client_list(code: u16, entries: Content) -> EncodedReply {
    let mut reply = EncodedReply::with_capacity(code, 0);
    reply.push_content(entries);
    reply
}

/// The list entries of `clients`, in wire form.
pub fn client_entries(clients: &[ListedClient]) -> Content {
    let mut entries = Vec::with_capacity(clients.len() * LISTED_CLIENT_LEN);
    for client in clients {
        entries.extend_from_slice(&client.id.0);
        encode_name(&client.name, &mut entries);
    }
    Content::Inline(entries)
}

/// Public key: the target's id and key, or the key alone for the client that reads it so
/// (protocol §4 rule 7).
fn public_key(
    code: u16,
    target: ClientId,
    key: &PublicKey,
    layout: KeyReplyLayout,
) -> EncodedReply {
    let mut reply = EncodedReply::with_capacity(code, target.0.len() + PUBLIC_KEY_LEN);
    if layout == KeyReplyLayout::IdAndKey {
        reply.payload().extend_from_slice(&target.0);
    }
    reply.payload().extend_from_slice(&key.0);
    reply
}

/// Send: the destination and the new message's id.
fn sent(code: u16, to: ClientId, id: MessageId) -> EncodedReply {
    let mut reply = EncodedReply::with_capacity(code, SENT_LEN);
    reply.payload().extend_from_slice(&to.0);
    reply.payload().extend_from_slice(&id.0.to_le_bytes());
    reply
}

/// Pull (and long-poll, protocol §E6): each message's header, then its content, copied if
/// in memory, else streamed.
pub(super) fn pulled(code: u16, messages: Vec<QueuedMessage>) -> EncodedReply {
    let in_memory = messages
        .iter()
        .map(|message| match &message.content {
            Content::Inline(bytes) => PULLED_MESSAGE_HEADER_LEN + bytes.len(),
            Content::Streamed { .. } => PULLED_MESSAGE_HEADER_LEN,
        })
        .sum();
    let mut reply = EncodedReply::with_capacity(code, in_memory);
    for message in messages {
        // The store returns no content that a u32 cannot size: sends are refused above that.
        let len = message.content.len() as u32;
        pulled_message_header(reply.payload(), message.from, message.id, message.kind, len);
        reply.push_content(message.content);
    }
    reply
}

/// The header in front of a pulled message's content.
fn pulled_message_header(out: &mut Vec<u8>, from: ClientId, id: MessageId, kind: u8, len: u32) {
    out.extend_from_slice(&from.0);
    out.extend_from_slice(&id.0.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(&len.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::client::{
        parse_client_list, parse_public_key, parse_registered, parse_sent, pulled_messages,
    };
    use crate::content::ContentReader;
    use crate::reason::Reason;

    /// The code and payload of an answer in the 2022-23 edition, all in memory.
    fn encode(answer: Answer) -> (u16, Vec<u8>) {
        let reply = Reply::Success {
            edition: Edition::Y2022,
            answer,
        };
        let (head, tail) = reply.encode(ErrorForm::WithReason).into_wire(false);
        assert!(tail.is_empty());
        (u16::from_le_bytes([head[1], head[2]]), head[7..].to_vec())
    }

    #[test]
    fn each_reply_decodes_with_the_client_codec() {
        let id = ClientId([7; 16]);
        let key = PublicKey([3; PUBLIC_KEY_LEN]);
        let (code, registered) = encode(Answer::Registered(id));
        assert_eq!((code, parse_registered(&registered)), (2100, Ok(id)));
        let with_id = encode(Answer::PublicKey {
            target: id,
            key: Box::new(key.clone()),
            layout: KeyReplyLayout::IdAndKey,
        });
        assert_eq!(
            (with_id.0, parse_public_key(&with_id.1)),
            (2102, Ok((id, key.clone())))
        );
        let alone = encode(Answer::PublicKey {
            target: id,
            key: Box::new(key.clone()),
            layout: KeyReplyLayout::KeyOnly,
        });
        assert_eq!(alone.1, key.0);
        let (code, sent) = encode(Answer::Sent {
            to: id,
            id: MessageId(9),
        });
        assert_eq!((code, parse_sent(&sent)), (2103, Ok((id, MessageId(9)))));
        let listed = vec![
            ListedClient {
                id,
                name: "Michael Jackson".to_owned(),
            },
            ListedClient {
                id: ClientId([8; 16]),
                name: "b".to_owned(),
            },
        ];
        let (code, payload) = encode(Answer::Clients(client_entries(&listed)));
        assert_eq!(code, 2101);
        assert_eq!(payload.len(), 2 * LISTED_CLIENT_LEN);
        assert_eq!(parse_client_list(&payload), Ok(listed));
    }

    #[test]
    fn the_edition_decides_the_code_and_an_error_is_9000_in_every_edition() {
        let reply = Reply::Success {
            edition: Edition::Y2021,
            answer: Answer::Pulled(Vec::new()),
        };
        let (head, _) = reply.encode(ErrorForm::Bare).into_wire(false);
        assert_eq!(head, [2, 0xd4, 0x07, 0, 0, 0, 0]);
        let refusal = || Reply::Error(Refusal::new(Reason::UnknownCaller));
        let (head, _) = refusal().encode(ErrorForm::Bare).into_wire(false);
        assert_eq!(head, [2, 0x28, 0x23, 0, 0, 0, 0]);
        let (head, _) = refusal().encode(ErrorForm::WithReason).into_wire(false);
        let text = Reason::UnknownCaller.description();
        assert_eq!(
            &head[..9],
            &[2, 0x28, 0x23, 4 + text.len() as u8, 0, 0, 0, 2, 0]
        );
        assert_eq!(Refusal::parse(&head[7..]), Some((2, text.to_owned())));
    }

    #[test]
    fn a_pull_reply_streams_large_contents_between_its_bytes() {
        let message = |id, content| QueuedMessage {
            id: MessageId(id),
            from: ClientId([id as u8; 16]),
            kind: 3,
            content,
        };
        let reply = Reply::Success {
            edition: Edition::Y2024,
            answer: Answer::Pulled(vec![
                message(1, Content::Inline(b"small".to_vec())),
                message(
                    2,
                    Content::Streamed {
                        reader: ContentReader::new(&b"large"[..]),
                        len: 5,
                    },
                ),
                message(3, Content::Inline(b"last".to_vec())),
            ]),
        };
        let (mut wire, tail) = reply.encode(ErrorForm::Bare).into_wire(false);
        assert_eq!(
            tail.len(),
            2,
            "the streamed content, then the bytes after it"
        );
        for part in tail {
            match part {
                Content::Inline(bytes) => wire.extend_from_slice(&bytes),
                Content::Streamed { mut reader, .. } => {
                    reader.read_to_end(&mut wire).expect("read");
                }
            }
        }
        assert_eq!(&wire[..3], &[2, 0x38, 0x08]);
        assert_eq!(&wire[3..7], &(wire.len() as u32 - 7).to_le_bytes());
        let pulled: Vec<_> = pulled_messages(&wire[7..])
            .map(|message| message.map(|m| (m.id, m.from, m.kind, m.content.to_vec())))
            .collect();
        assert_eq!(
            pulled,
            vec![
                Ok((MessageId(1), ClientId([1; 16]), 3, b"small".to_vec())),
                Ok((MessageId(2), ClientId([2; 16]), 3, b"large".to_vec())),
                Ok((MessageId(3), ClientId([3; 16]), 3, b"last".to_vec())),
            ]
        );
    }

    #[test]
    fn a_pulled_message_header_is_25_bytes_in_wire_order() {
        let mut out = Vec::new();
        pulled_message_header(&mut out, ClientId([1; 16]), MessageId(0x0403_0201), 3, 5);
        assert_eq!(out.len(), PULLED_MESSAGE_HEADER_LEN);
        assert_eq!(&out[16..], &[1, 2, 3, 4, 3, 5, 0, 0, 0]);
    }
}
