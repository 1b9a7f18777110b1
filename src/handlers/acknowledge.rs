//! Acknowledge (protocol §E5), on a connection authenticated as the caller: deletes the listed
//! messages that wait for it, pushed or not, and answers how many; the deletion is durable
//! before the reply. Each deleted message's sender is owed a receipt (§E7).

use super::{
    check_authenticated_caller, Context, Effect, ExtensionHandler, HandlerError, Response,
};
use crate::protocol::{unix_millis, Delivery, ExtensionAnswer, MessageId, Receipt, Reply};

pub(super) struct Acknowledge(pub Vec<MessageId>);

impl ExtensionHandler for Acknowledge {
    fn handle(self, ctx: &mut Context<'_>) -> Result<Response, HandlerError> {
        check_authenticated_caller(ctx)?;
        let deleted = ctx.store.acknowledge_messages(ctx.caller, &self.0)?;
        let at_ms = unix_millis(ctx.now);
        let receipts = deleted
            .iter()
            .map(|message| {
                let receipt = Receipt {
                    id: message.id,
                    recipient: ctx.caller,
                    how: Delivery::Acknowledged,
                    at_ms,
                };
                (message.from, receipt)
            })
            .collect();
        // At most 8,192 ids are acknowledged at once.
        let answer = ExtensionAnswer::Acknowledged {
            deleted: deleted.len() as u32,
        };
        Ok(
            Response::new(Reply::Extension(answer)).with_effect(Effect::Acknowledged {
                ids: self.0,
                receipts,
            }),
        )
    }
}
