//! The successful replies of protocol §3, one encoder per operation: handlers say what to
//! answer, and only this module knows the bytes. The client codec ([`super::client`])
//! decodes the same layouts with the same constants.

use super::codes::RequestCode;
use super::reply::Reply;
use super::request::{encode_name, KeyReplyLayout};
use super::types::{ClientId, MessageId, PublicKey, NAME_FIELD_LEN, PUBLIC_KEY_LEN};

/// One entry of a list reply: the client's id and its NUL-terminated name field.
pub const LISTED_CLIENT_LEN: usize = 16 + NAME_FIELD_LEN;
/// Sender id (16), message id (4), type (1) and content size (4), in front of each pulled
/// message's content.
pub const PULLED_MESSAGE_HEADER_LEN: usize = 16 + 4 + 1 + 4;
/// Destination id (16) and message id (4).
const SENT_LEN: usize = 16 + 4;

/// Register: the new client's id.
pub fn registered(code: RequestCode, id: ClientId) -> Reply {
    let mut reply = Reply::with_capacity(code.reply_code(), id.0.len());
    reply.payload().extend_from_slice(&id.0);
    reply
}

/// Public key: the target's id and key, or the key alone for the client that reads it so
/// (protocol §4 rule 7).
pub fn public_key(
    code: RequestCode,
    target: ClientId,
    key: &PublicKey,
    layout: KeyReplyLayout,
) -> Reply {
    let mut reply = Reply::with_capacity(code.reply_code(), target.0.len() + PUBLIC_KEY_LEN);
    if layout == KeyReplyLayout::IdAndKey {
        reply.payload().extend_from_slice(&target.0);
    }
    reply.payload().extend_from_slice(&key.0);
    reply
}

/// Send: the destination and the new message's id.
pub fn sent(code: RequestCode, to: ClientId, id: MessageId) -> Reply {
    let mut reply = Reply::with_capacity(code.reply_code(), SENT_LEN);
    reply.payload().extend_from_slice(&to.0);
    reply.payload().extend_from_slice(&id.0.to_le_bytes());
    reply
}

/// A list reply, built a client at a time.
pub struct ClientList(Reply);

impl ClientList {
    pub fn new(code: RequestCode) -> ClientList {
        ClientList(Reply::new(code.reply_code()))
    }

    pub fn push(&mut self, id: ClientId, name: &str) {
        let payload = self.0.payload();
        payload.extend_from_slice(&id.0);
        encode_name(name, payload);
    }

    pub fn finish(self) -> Reply {
        self.0
    }
}

/// The header in front of a pulled message's content; the content follows it, in the reply or
/// streamed after it.
pub fn pulled_message_header(out: &mut Vec<u8>, from: ClientId, id: MessageId, kind: u8, len: u32) {
    out.extend_from_slice(&from.0);
    out.extend_from_slice(&id.0.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(&len.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{parse_client_list, parse_public_key, parse_registered, parse_sent};
    use crate::codes::{Edition, Operation};

    fn code(operation: Operation) -> RequestCode {
        RequestCode {
            edition: Edition::Y2022,
            operation,
        }
    }

    /// The payload of a reply, after its 7-byte header.
    fn payload(reply: Reply) -> Vec<u8> {
        reply.into_bytes(false)[7..].to_vec()
    }

    #[test]
    fn each_reply_decodes_with_the_client_codec() {
        let id = ClientId([7; 16]);
        let key = PublicKey([3; PUBLIC_KEY_LEN]);
        assert_eq!(
            parse_registered(&payload(registered(code(Operation::Register), id))),
            Ok(id)
        );
        let with_id = payload(public_key(
            code(Operation::PublicKey),
            id,
            &key,
            KeyReplyLayout::IdAndKey,
        ));
        assert_eq!(parse_public_key(&with_id), Ok((id, key.clone())));
        let alone = payload(public_key(
            code(Operation::PublicKey),
            id,
            &key,
            KeyReplyLayout::KeyOnly,
        ));
        assert_eq!(alone, key.0);
        let sent_reply = payload(sent(code(Operation::SendMessage), id, MessageId(9)));
        assert_eq!(parse_sent(&sent_reply), Ok((id, MessageId(9))));
        let mut list = ClientList::new(code(Operation::ListClients));
        list.push(id, "Michael Jackson");
        list.push(ClientId([8; 16]), "b");
        let listed = payload(list.finish());
        assert_eq!(listed.len(), 2 * LISTED_CLIENT_LEN);
        let clients = parse_client_list(&listed).expect("a list");
        assert_eq!(
            (clients[0].id, clients[0].name.as_str()),
            (id, "Michael Jackson")
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
