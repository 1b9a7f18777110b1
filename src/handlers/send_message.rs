//! Send message: store an opaque message for a registered destination. The reply is released
//! only after the batch's transaction commits, so an acknowledged message is durable.
//!
//! A large content is an upload in two halves: [`start_upload`] checks the request from its
//! head and begins the content in the store, the server streams the content into it, and
//! [`finish_upload`] stores the message once the content is whole and durable.

use super::{check_caller, Context, Effect, Handler, HandlerError, Response};
use crate::protocol::request::SendMessage;
use crate::protocol::{Answer, ClientId, MessageType, RequestCode, SendHead};
use crate::store::{ContentSink, LargeContent, NewContent, NewMessage};

impl Handler for SendMessage<'_> {
    fn handle(self, ctx: &mut Context<'_>, code: RequestCode) -> Result<Response, HandlerError> {
        check_destination(ctx, self.to)?;
        store(
            ctx,
            code,
            self.to,
            self.kind,
            NewContent::Inline(self.content),
        )
    }
}

/// Checks a large send from its head, before any content is read, and begins the content
/// in the store: the sink it streams into.
pub fn start_upload(ctx: &mut Context<'_>, head: &SendHead) -> Result<ContentSink, HandlerError> {
    head.kind()?;
    check_caller(ctx)?;
    check_destination(ctx, head.to)?;
    Ok(ctx.store.begin_content(u64::from(head.content_len))?)
}

/// Stores a large send whose content has been streamed whole and made durable.
pub fn finish_upload(
    ctx: &mut Context<'_>,
    code: RequestCode,
    head: &SendHead,
    content: LargeContent,
) -> Result<Response, HandlerError> {
    // The destination may have deleted its account while the content was streaming in.
    check_destination(ctx, head.to)?;
    store(ctx, code, head.to, head.kind()?, NewContent::Large(content))
}

fn check_destination(ctx: &mut Context<'_>, to: ClientId) -> Result<(), HandlerError> {
    if ctx.store.client_exists(to)? {
        Ok(())
    } else {
        Err(HandlerError::UnknownClient(to))
    }
}

fn store(
    ctx: &mut Context<'_>,
    code: RequestCode,
    to: ClientId,
    kind: MessageType,
    content: NewContent<'_>,
) -> Result<Response, HandlerError> {
    let id = ctx.store.insert_message(NewMessage {
        to,
        from: ctx.caller,
        kind,
        content,
    })?;
    Ok(Response::classic(code, Answer::Sent { to, id }).with_effect(Effect::Queued { to, id }))
}
