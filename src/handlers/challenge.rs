//! Challenge (protocol §E3): 32 random bytes kept on this connection for the header's id,
//! sent back encrypted to that id's registered key. Refused while the id or the peer address
//! has failed too many proofs.

use super::{Context, ExtensionHandler, HandlerError, Response};
use crate::auth::{draw_secret, seal};
use crate::protocol::{ExtensionAnswer, Reply};

pub(super) struct Challenge;

impl ExtensionHandler for Challenge {
    fn handle(self, ctx: &mut Context<'_>) -> Result<Response, HandlerError> {
        let id = ctx.caller;
        ctx.proofs
            .check(id, ctx.peer, ctx.clock)
            .map_err(HandlerError::RateLimited)?;
        let key = ctx
            .store
            .public_key(id)?
            .ok_or(HandlerError::UnknownCaller(id))?;
        let secret = draw_secret();
        let sealed = seal(&secret, &key).map_err(|error| HandlerError::BadKey { id, error })?;
        ctx.session
            .challenge(id, secret, ctx.clock, ctx.challenge_lifetime);
        Ok(Response::new(Reply::Extension(ExtensionAnswer::Challenge(
            Box::new(sealed),
        ))))
    }
}
