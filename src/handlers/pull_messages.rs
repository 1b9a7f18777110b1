//! Pull waiting messages: the caller's queue in send order, as many whole messages as fit the
//! reply budget. They are not deleted here: the server deletes them once the whole reply has
//! been written, and until then no other pull reply carries them. Spooled contents are
//! streamed as the socket accepts them. The long-poll (`long_poll.rs`) pulls the same way.

use super::{Context, Handler, HandlerError, Response};
use crate::protocol::request::PullMessages;
use crate::protocol::{Answer, Content, QueuedMessage, RequestCode};
use crate::store::Delivered;

impl Handler for PullMessages {
    fn handle(self, ctx: &mut Context<'_>, code: RequestCode) -> Result<Response, HandlerError> {
        let (messages, delivered) = take_queued(ctx)?;
        Ok(Response {
            delivered,
            ..Response::classic(code, Answer::Pulled(messages))
        })
    }
}

/// The caller's queued messages that fit a reply, leaving out those in flight, and puts them
/// in flight, claimed against servers sharing the store: the reply carrying them is the only
/// one until it is written or given up.
pub(super) fn take_queued(
    ctx: &mut Context<'_>,
) -> Result<(Vec<QueuedMessage>, Vec<Delivered>), HandlerError> {
    let deliveries = &*ctx.deliveries;
    let messages = ctx
        .store
        .queued_messages(ctx.caller, ctx.pull_budget, &|id| {
            deliveries.is_in_flight(id)
        })?;
    let messages = ctx.store.claim_messages(messages)?;
    let delivered: Vec<Delivered> = messages
        .iter()
        .map(|message| Delivered {
            id: message.id,
            len: message.content.len(),
            stored_apart: matches!(message.content, Content::Streamed { .. }),
            from: message.from,
            to: ctx.caller,
        })
        .collect();
    ctx.deliveries.start(&delivered);
    Ok((messages, delivered))
}
