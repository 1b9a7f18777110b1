//! Unsend (protocol §E8): the sender deletes a message of its own that still waits, unless a
//! pull reply carrying it is being written or a push of it is unacknowledged. The deletion is durable before the reply.

use super::{check_caller, Context, ExtensionHandler, HandlerError, Response};
use crate::protocol::{ExtensionAnswer, MessageId, Reply};
use crate::store::UnsendOutcome;

pub(super) struct Unsend(pub MessageId);

impl ExtensionHandler for Unsend {
    fn handle(self, ctx: &mut Context<'_>) -> Result<Response, HandlerError> {
        check_caller(ctx)?;
        let deliveries = &*ctx.deliveries;
        let outcome = ctx
            .store
            .unsend_message(ctx.caller, self.0, &|id| deliveries.is_in_delivery(id))?;
        match outcome {
            UnsendOutcome::Deleted => Ok(Response::new(Reply::Extension(ExtensionAnswer::Unsent))),
            UnsendOutcome::NotWaiting => Err(HandlerError::UnknownMessage(self.0)),
            UnsendOutcome::InDelivery => Err(HandlerError::InDelivery(self.0)),
        }
    }
}
