//! Long-poll pull (protocol §E6): a pull that, finding nothing for the caller, waits. The
//! handler answers at once when messages wait (or the wait asked is 0), and otherwise tells
//! the server to park the request until its capped deadline; the server comes back with
//! [`long_poll_woken`] once a message for the caller is durable, or answers
//! [`long_poll_ended`] when the wait is over.

use std::time::Duration;

use super::pull_messages::take_queued;
use super::{check_caller, Context, HandlerError, Outcome, Parked, Response};
use crate::protocol::{ExtensionAnswer, QueuedMessage, Reply};
use crate::store::Delivered;

/// A long-poll, with the wait the client asked for.
pub(super) struct LongPoll {
    pub wait: Duration,
}

impl LongPoll {
    pub(super) fn handle(self, ctx: &mut Context<'_>) -> Result<Outcome, HandlerError> {
        check_caller(ctx)?;
        let (messages, delivered) = take_queued(ctx)?;
        let wait = self.wait.min(ctx.long_poll_limit);
        if !messages.is_empty() || wait.is_zero() {
            return Ok(Outcome::Answer(answer(messages, delivered)));
        }
        Ok(Outcome::Park(Parked {
            caller: ctx.caller,
            until: ctx.clock + wait,
        }))
    }
}

/// A message for the parked caller became durable: answers with what a pull finds now,
/// which is nothing if another connection took the messages first. The caller is checked
/// again: its owner may have protected the account meanwhile.
pub fn long_poll_woken(ctx: &mut Context<'_>) -> Result<Response, HandlerError> {
    check_caller(ctx)?;
    let (messages, delivered) = take_queued(ctx)?;
    Ok(answer(messages, delivered))
}

/// The wait ended without a message (its deadline, the client's close, shutdown): the empty
/// answer.
pub fn long_poll_ended() -> Response {
    answer(Vec::new(), Vec::new())
}

/// A 2506 carrying `messages`, which are in flight as `delivered`.
fn answer(messages: Vec<QueuedMessage>, delivered: Vec<Delivered>) -> Response {
    Response {
        delivered,
        ..Response::new(Reply::Extension(ExtensionAnswer::LongPoll(messages)))
    }
}
