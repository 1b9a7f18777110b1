//! Public key: the 160-byte key a client registered with, after the target's id unless the
//! requesting client reads the key alone (protocol §4 rule 7).

use super::{Context, Handler, HandlerError, Response};
use crate::protocol::request::{GetPublicKey, KeyReplyLayout};
use crate::protocol::{Answer, RequestCode};

impl Handler for GetPublicKey {
    fn handle(self, ctx: &mut Context<'_>, code: RequestCode) -> Result<Response, HandlerError> {
        let key = ctx
            .store
            .public_key(self.target)?
            .ok_or(HandlerError::UnknownClient(self.target))?;
        let layout = KeyReplyLayout::for_request(code, ctx.client_version);
        Ok(Response::classic(
            code,
            Answer::PublicKey {
                target: self.target,
                key: Box::new(key),
                layout,
            },
        ))
    }
}
