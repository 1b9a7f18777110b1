//! Register: a new client under a unique name, with a fresh random id.

use super::{Context, Handler, HandlerError, Response};
use crate::protocol::request::Register;
use crate::protocol::Reply;

impl Handler for Register {
    fn handle(self, ctx: &mut Context<'_>) -> Result<Response, HandlerError> {
        let id = ctx
            .store
            .register_client(&self.name, &self.public_key, ctx.now)?;
        let mut reply = Reply::with_capacity(ctx.code.reply_code(), id.0.len());
        reply.payload().extend_from_slice(&id.0);
        Ok(Response::new(reply))
    }
}
