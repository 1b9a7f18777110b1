//! Request handlers: one file per operation behind the [`Handler`] trait. Handlers see only
//! the store and the server's delivery bookkeeping, never sockets.

mod list_clients;
mod public_key;
mod pull_messages;
mod register;
mod send_message;

use std::collections::HashSet;
use std::time::SystemTime;

use crate::protocol::{
    ClientId, MalformedRequest, MessageId, Operation, Reply, Request, RequestCode,
};
use crate::store::{Store, StoreError};

/// What a handler works with while serving one request.
pub struct Context<'a> {
    pub store: &'a mut dyn Store,
    /// Messages sitting in pull replies that are not yet fully written: no second pull reply
    /// may carry them.
    pub in_flight: &'a mut HashSet<MessageId>,
    /// The most bytes of messages one pull reply carries (a larger single message goes alone).
    pub max_pull_reply: usize,
    pub now: SystemTime,
    /// The client id of the request header.
    pub caller: ClientId,
    /// The code of a successful reply, in the request's edition.
    pub reply_code: u16,
}

/// A handler's answer: the reply, and the messages it delivers, which the server deletes once
/// the whole reply has been written to the socket.
#[derive(Debug)]
pub struct Response {
    pub reply: Reply,
    pub delivered: Vec<MessageId>,
}

impl Response {
    pub fn new(reply: Reply) -> Response {
        Response {
            reply,
            delivered: Vec::new(),
        }
    }

    pub fn error() -> Response {
        Response::new(Reply::error())
    }
}

/// Why a request was answered with 9000.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("malformed request: {0}")]
    Malformed(#[from] MalformedRequest),
    #[error("unknown caller {0}")]
    UnknownCaller(ClientId),
    #[error("unknown client {0}")]
    UnknownClient(ClientId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One operation's logic.
pub trait Handler {
    fn handle(self, ctx: &mut Context<'_>) -> Result<Response, HandlerError>;
}

/// Decodes a framed request body and runs its handler. Every operation but register needs a
/// registered caller, whose LastSeen it updates.
pub fn dispatch(
    ctx: &mut Context<'_>,
    code: RequestCode,
    body: &[u8],
) -> Result<Response, HandlerError> {
    let request = Request::parse(code, body)?;
    if code.operation != Operation::Register && !ctx.store.touch_client(ctx.caller, ctx.now)? {
        return Err(HandlerError::UnknownCaller(ctx.caller));
    }
    match request {
        Request::Register(request) => request.handle(ctx),
        Request::ListClients(request) => request.handle(ctx),
        Request::PublicKey(request) => request.handle(ctx),
        Request::SendMessage(request) => request.handle(ctx),
        Request::PullMessages(request) => request.handle(ctx),
    }
}
