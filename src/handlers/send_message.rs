//! Send message: store an opaque message for a registered destination. The reply is released
//! only after the batch's transaction commits, so an acknowledged message is durable.

use super::{Context, Handler, HandlerError, Response};
use crate::protocol::request::SendMessage;
use crate::protocol::Reply;
use crate::store::NewMessage;

impl Handler for SendMessage<'_> {
    fn handle(self, ctx: &mut Context<'_>) -> Result<Response, HandlerError> {
        if !ctx.store.client_exists(self.to)? {
            return Err(HandlerError::UnknownClient(self.to));
        }
        let id = ctx.store.insert_message(NewMessage {
            to: self.to,
            from: ctx.caller,
            kind: self.kind,
            content: self.content,
        })?;
        let mut reply = Reply::with_capacity(ctx.reply_code, 20);
        reply.payload().extend_from_slice(&self.to.0);
        reply.payload().extend_from_slice(&id.0.to_le_bytes());
        Ok(Response::new(reply))
    }
}
