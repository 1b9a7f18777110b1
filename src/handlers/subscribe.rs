//! Subscribe (protocol §E5), on a connection authenticated as the caller: answers how many
//! messages wait, and asks the server to push the caller's messages on this connection from
//! now on, the waiting ones first.

use super::{
    check_authenticated_caller, Context, Effect, ExtensionHandler, HandlerError, Response,
};
use crate::protocol::{ExtensionAnswer, Reply};

pub(super) struct Subscribe;

impl ExtensionHandler for Subscribe {
    fn handle(self, ctx: &mut Context<'_>) -> Result<Response, HandlerError> {
        check_authenticated_caller(ctx)?;
        let waiting: u64 = ctx
            .store
            .queue_of(ctx.caller)?
            .iter()
            .map(|sender| sender.messages)
            .sum();
        let waiting = u32::try_from(waiting).unwrap_or(u32::MAX);
        Ok(
            Response::new(Reply::Extension(ExtensionAnswer::Subscribed { waiting }))
                .with_effect(Effect::Subscribed(ctx.caller)),
        )
    }
}
