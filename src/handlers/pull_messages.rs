//! Pull waiting messages: the caller's queue in send order, as many whole messages as fit the
//! reply budget. They are not deleted here: the server deletes them once the whole reply has
//! been written, and until then no other pull reply carries them. Spooled contents become
//! file parts of the reply, streamed as the socket accepts them.

use super::{Context, Handler, HandlerError, Part, Response};
use crate::protocol::replies::{pulled_message_header, PULLED_MESSAGE_HEADER_LEN};
use crate::protocol::request::PullMessages;
use crate::protocol::Reply;
use crate::store::{Delivered, StoredContent};

impl Handler for PullMessages {
    fn handle(self, ctx: &mut Context<'_>) -> Result<Response, HandlerError> {
        let deliveries = &*ctx.deliveries;
        let messages = ctx
            .store
            .queued_messages(ctx.caller, ctx.pull_budget, &|id| {
                deliveries.is_in_flight(id)
            })?;
        let in_memory = messages
            .iter()
            .map(|m| match &m.content {
                StoredContent::Inline(bytes) => PULLED_MESSAGE_HEADER_LEN + bytes.len(),
                StoredContent::Streamed { .. } => PULLED_MESSAGE_HEADER_LEN,
            })
            .sum();
        let mut payload = Payload {
            reply: Reply::with_capacity(ctx.code.reply_code(), in_memory),
            tail: Vec::new(),
        };
        let mut delivered = Vec::with_capacity(messages.len());
        for message in messages {
            let bytes = payload.bytes();
            let len = message.content.len();
            // The store returns no content that a u32 cannot size: sends are refused above
            // that.
            pulled_message_header(bytes, message.from, message.id, message.kind, len as u32);
            match message.content {
                StoredContent::Inline(content) => bytes.extend_from_slice(&content),
                StoredContent::Streamed { reader, len } => {
                    payload.tail.push(Part::Stream { reader, len })
                }
            }
            delivered.push(Delivered {
                id: message.id,
                len,
            });
        }
        ctx.deliveries.start(&delivered);
        Ok(Response {
            reply: payload.reply,
            tail: payload.tail,
            delivered,
        })
    }
}

/// A pull reply's payload as it is built: bytes go to the reply until the first file part,
/// then to byte parts between file parts.
struct Payload {
    reply: Reply,
    tail: Vec<Part>,
}

impl Payload {
    fn bytes(&mut self) -> &mut Vec<u8> {
        if let Some(Part::Stream { .. }) = self.tail.last() {
            self.tail.push(Part::Bytes(Vec::new()));
        }
        match self.tail.last_mut() {
            Some(Part::Bytes(bytes)) => bytes,
            _ => self.reply.payload(),
        }
    }
}
