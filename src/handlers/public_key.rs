//! Public key: the 160-byte key a client registered with.

use super::{Context, Handler, HandlerError, Response};
use crate::protocol::request::GetPublicKey;
use crate::protocol::Reply;

impl Handler for GetPublicKey {
    fn handle(self, ctx: &mut Context<'_>) -> Result<Response, HandlerError> {
        let key = ctx
            .store
            .public_key(self.target)?
            .ok_or(HandlerError::UnknownClient(self.target))?;
        let mut reply = Reply::with_capacity(ctx.reply_code, self.target.0.len() + key.0.len());
        reply.payload().extend_from_slice(&self.target.0);
        reply.payload().extend_from_slice(&key.0);
        Ok(Response::new(reply))
    }
}
