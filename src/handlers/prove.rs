//! Prove (protocol §E3): the answer to this connection's challenge, which it uses up. Right,
//! the connection is authenticated as the header's id; wrong (or no challenge, or expired),
//! the failure counts against the id and the peer address.

use super::{Context, ExtensionHandler, HandlerError, Response};
use crate::protocol::extension::Proof;
use crate::protocol::{ExtensionAnswer, Reply};

pub(super) struct Prove(pub Proof);

impl ExtensionHandler for Prove {
    fn handle(self, ctx: &mut Context<'_>) -> Result<Response, HandlerError> {
        if let Err(failure) = ctx.session.prove(ctx.caller, &self.0, ctx.clock) {
            ctx.proofs.failed(ctx.caller, ctx.peer, ctx.clock);
            return Err(failure.into());
        }
        log::debug!("{}: authenticated as {}", ctx.peer, ctx.caller);
        Ok(Response::new(Reply::Extension(ExtensionAnswer::Proved)))
    }
}
