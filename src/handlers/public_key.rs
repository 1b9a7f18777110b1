//! Public key: the 160-byte key a client registered with, after the target's id unless the
//! requesting client reads the key alone (protocol §4 rule 7).

use super::{Context, Handler, HandlerError, Response};
use crate::protocol::request::{GetPublicKey, KeyReplyLayout};
use crate::protocol::Reply;

impl Handler for GetPublicKey {
    fn handle(self, ctx: &mut Context<'_>) -> Result<Response, HandlerError> {
        let key = ctx
            .store
            .public_key(self.target)?
            .ok_or(HandlerError::UnknownClient(self.target))?;
        let mut reply =
            Reply::with_capacity(ctx.code.reply_code(), self.target.0.len() + key.0.len());
        if KeyReplyLayout::for_request(ctx.code, ctx.client_version) == KeyReplyLayout::IdAndKey {
            reply.payload().extend_from_slice(&self.target.0);
        }
        reply.payload().extend_from_slice(&key.0);
        Ok(Response::new(reply))
    }
}
