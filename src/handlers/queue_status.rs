//! Queue status (protocol §E8): how many messages wait for the caller, their bytes, and how
//! many from each sender, without pulling them.

use super::{check_caller, Context, ExtensionHandler, HandlerError, Response};
use crate::protocol::{ExtensionAnswer, QueueStatus, Reply, SenderCount};

pub(super) struct GetQueueStatus;

impl ExtensionHandler for GetQueueStatus {
    fn handle(self, ctx: &mut Context<'_>) -> Result<Response, HandlerError> {
        check_caller(ctx)?;
        let senders = ctx.store.queue_of(ctx.caller)?;
        let messages: u64 = senders.iter().map(|sender| sender.messages).sum();
        let bytes: u64 = senders.iter().map(|sender| sender.bytes).sum();
        // The wire's counts are a u32 and a u16 of senders: beyond them, the most it can say.
        let wire_count = |count: u64| u32::try_from(count).unwrap_or(u32::MAX);
        let senders = senders
            .iter()
            .take(usize::from(u16::MAX))
            .map(|sender| SenderCount {
                from: sender.from,
                messages: wire_count(sender.messages),
            })
            .collect();
        let status = QueueStatus {
            messages: wire_count(messages),
            bytes,
            senders,
        };
        Ok(Response::new(Reply::Extension(
            ExtensionAnswer::QueueStatus(Box::new(status)),
        )))
    }
}
