//! Protect or unprotect (protocol §E4): the caller's account, on a connection authenticated
//! as it. The change is durable before its reply goes out, like a registration.

use super::{check_authenticated_caller, Context, ExtensionHandler, HandlerError, Response};
use crate::protocol::{ExtensionAnswer, Protection, Reply};

pub(super) struct Protect(pub Protection);

impl ExtensionHandler for Protect {
    fn handle(self, ctx: &mut Context<'_>) -> Result<Response, HandlerError> {
        check_authenticated_caller(ctx)?;
        ctx.store.set_protection(ctx.caller, self.0)?;
        Ok(Response::new(Reply::Extension(ExtensionAnswer::Protection)))
    }
}
