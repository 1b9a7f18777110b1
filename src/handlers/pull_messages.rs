//! Pull waiting messages: the caller's queue in send order, as many whole messages as fit the
//! reply cap. They are not deleted here: the server deletes them once the whole reply has been
//! written, and until then no other pull reply carries them.

use super::{Context, Handler, HandlerError, Response};
use crate::protocol::request::PullMessages;
use crate::protocol::Reply;
use crate::store::PULLED_MESSAGE_HEADER_LEN;

impl Handler for PullMessages {
    fn handle(self, ctx: &mut Context<'_>) -> Result<Response, HandlerError> {
        let in_flight = &*ctx.in_flight;
        let messages = ctx
            .store
            .queued_messages(ctx.caller, ctx.max_pull_reply, &|id| {
                in_flight.contains(&id)
            })?;
        let size = messages
            .iter()
            .map(|m| PULLED_MESSAGE_HEADER_LEN + m.content.len())
            .sum();
        let mut reply = Reply::with_capacity(ctx.reply_code, size);
        let payload = reply.payload();
        let mut delivered = Vec::with_capacity(messages.len());
        for message in &messages {
            payload.extend_from_slice(&message.from.0);
            payload.extend_from_slice(&message.id.0.to_le_bytes());
            payload.push(message.kind);
            payload.extend_from_slice(&(message.content.len() as u32).to_le_bytes());
            payload.extend_from_slice(&message.content);
            delivered.push(message.id);
        }
        ctx.in_flight.extend(delivered.iter().copied());
        Ok(Response { reply, delivered })
    }
}
