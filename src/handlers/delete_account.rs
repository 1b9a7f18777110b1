//! Delete account (protocol §E8), on a connection authenticated as it: the client, its queue
//! and the queue's stored contents go; messages it sent stay deliverable; its name is free
//! again and its id never given out again. The connection's authentication ends; other
//! connections authenticated as it fail their next request as it, since the id is unknown.
//! Its subscriptions end, on every connection.

use super::{
    check_authenticated_caller, Context, Effect, ExtensionHandler, HandlerError, Response,
};
use crate::protocol::{ExtensionAnswer, Reply};

pub(super) struct DeleteAccount;

impl ExtensionHandler for DeleteAccount {
    fn handle(self, ctx: &mut Context<'_>) -> Result<Response, HandlerError> {
        check_authenticated_caller(ctx)?;
        ctx.store.delete_client(ctx.caller)?;
        ctx.presence.forget(ctx.caller);
        ctx.session.sign_out();
        log::debug!("{}: deleted account {}", ctx.peer, ctx.caller);
        Ok(
            Response::new(Reply::Extension(ExtensionAnswer::AccountDeleted))
                .with_effect(Effect::AccountDeleted(ctx.caller)),
        )
    }
}
