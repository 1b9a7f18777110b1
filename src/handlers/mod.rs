//! Request handlers: one file per operation behind the [`Handler`] trait. Handlers see only
//! the store and the server's delivery bookkeeping, never sockets, and answer with typed
//! replies: only [`crate::protocol`] knows their bytes.

mod list_clients;
mod public_key;
mod pull_messages;
mod register;
mod send_message;

use std::time::SystemTime;

use crate::protocol::{Answer, ClientId, MalformedRequest, Operation, Reply, Request, RequestCode};
use crate::server::Deliveries;
use crate::store::{Delivered, PullBudget, Store, StoreError};

pub use send_message::{finish_upload, start_upload};

/// What a handler works with while serving one request.
pub struct Context<'a> {
    pub store: &'a mut dyn Store,
    /// Messages in delivery: those in pull replies not yet written whole may be in no second
    /// pull reply.
    pub deliveries: &'a mut Deliveries,
    /// How much one pull reply carries (a larger single message goes alone).
    pub pull_budget: PullBudget,
    pub now: SystemTime,
    /// The client id of the request header.
    pub caller: ClientId,
    /// The client version byte of the request header.
    pub client_version: u8,
    /// The request's code: its operation, and the edition its reply is answered in.
    pub code: RequestCode,
}

/// A handler's answer: the reply, and the messages it delivers, which the server deletes once
/// the whole reply has been written to the socket.
#[derive(Debug)]
pub struct Response {
    pub reply: Reply,
    pub delivered: Vec<Delivered>,
}

impl Response {
    pub fn new(reply: Reply) -> Response {
        Response {
            reply,
            delivered: Vec::new(),
        }
    }

    pub fn error() -> Response {
        Response::new(Reply::Error)
    }
}

impl Context<'_> {
    /// The request's successful reply: `answer`, in the request's edition.
    pub fn reply(&self, answer: Answer) -> Reply {
        Reply::Success {
            edition: self.code.edition,
            answer,
        }
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
    #[error("cannot write the uploaded content: {0}")]
    Upload(std::io::Error),
}

impl HandlerError {
    /// Whether the connection must close after the 9000 reply: the request's bytes were not
    /// read, so the stream cannot be trusted to continue with a request.
    pub fn closes_connection(&self) -> bool {
        matches!(self, HandlerError::Store(StoreError::NoSpace { .. }))
    }
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
    if code.operation != Operation::Register {
        check_caller(ctx)?;
    }
    match request {
        Request::Register(request) => request.handle(ctx),
        Request::ListClients(request) => request.handle(ctx),
        Request::PublicKey(request) => request.handle(ctx),
        Request::SendMessage(request) => request.handle(ctx),
        Request::PullMessages(request) => request.handle(ctx),
    }
}

/// Fails unless the caller is registered, and records that it was seen.
fn check_caller(ctx: &mut Context<'_>) -> Result<(), HandlerError> {
    if ctx.store.touch_client(ctx.caller, ctx.now)? {
        Ok(())
    } else {
        Err(HandlerError::UnknownCaller(ctx.caller))
    }
}
