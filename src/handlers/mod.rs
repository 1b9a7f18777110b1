//! Request handlers: one file per operation, behind the [`Handler`] trait for the classic
//! operations and [`ExtensionHandler`] for the extensions (`hello.rs`, `challenge.rs`,
//! `prove.rs`, `protect.rs`, `subscribe.rs`, `acknowledge.rs`, `long_poll.rs`, `accounts.rs`,
//! `queue_status.rs`, `unsend.rs`, `delete_account.rs`). Handlers see only the store, the server's delivery bookkeeping, who
//! is online and the connection's session, never sockets, and answer with typed replies:
//! only [`crate::protocol`] knows their bytes. A request comes to an [`Outcome`]: a response
//! now, or, for a long-poll that finds nothing, a wait the server keeps; a response may carry
//! an [`Effect`] on the server's state beyond the store, which the server applies.

mod accounts;
mod acknowledge;
mod challenge;
mod delete_account;
mod error;
mod hello;
mod list_clients;
mod long_poll;
mod protect;
mod prove;
mod public_key;
mod pull_messages;
mod queue_status;
mod register;
mod send_message;
mod subscribe;
mod unsend;

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use crate::auth::{ProofLimiter, Session};
use crate::protocol::{
    Answer, ClientId, Code, Extension, ExtensionRequest, MessageId, Operation, Protection, Reason,
    Receipt, Refusal, Reply, Request, RequestCode,
};
use crate::server::{Deliveries, PresenceTracker};
use crate::store::{Delivered, PullBudget, Store};

pub use error::HandlerError;
pub use long_poll::{long_poll_ended, long_poll_woken};
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
    /// The connection's session: its error form, challenge and authenticated id.
    pub session: &'a mut Session,
    /// Failed proofs of the whole server, per id and per address.
    pub proofs: &'a mut ProofLimiter,
    /// The ids served lately, for the account list's online flag.
    pub presence: &'a mut PresenceTracker,
    /// The address of the connection's peer.
    pub peer: IpAddr,
    /// The monotonic time, for challenges and the proof limits.
    pub clock: Instant,
    /// How long a challenge can be answered.
    pub challenge_lifetime: Duration,
    /// The longest wait of a long-poll (protocol §E6).
    pub long_poll_limit: Duration,
}

/// A handler's answer: the reply, and the messages it delivers, which the server deletes once
/// the whole reply has been written to the socket.
#[derive(Debug)]
pub struct Response {
    pub reply: Reply,
    pub delivered: Vec<Delivered>,
    pub effect: Option<Effect>,
}

/// What a successful request changes beyond the store, for the server to apply.
#[derive(Debug)]
pub enum Effect {
    /// A message was queued for `to`: those waiting for it are woken, and its subscribers get
    /// it, once the round's commit is durable.
    Queued { to: ClientId, id: MessageId },
    /// The connection subscribes as `id` (protocol §E5).
    Subscribed(ClientId),
    /// The connection's caller acknowledged `ids`; `receipts` (with each message's sender) go
    /// to the senders' subscriptions once the deletion is durable (protocol §E7).
    Acknowledged {
        ids: Vec<MessageId>,
        receipts: Vec<(ClientId, Receipt)>,
    },
    /// The account `id` is deleted: its subscriptions end.
    AccountDeleted(ClientId),
}

impl Response {
    pub fn new(reply: Reply) -> Response {
        Response {
            reply,
            delivered: Vec::new(),
            effect: None,
        }
    }

    /// This response, with `effect`.
    pub fn with_effect(self, effect: Effect) -> Response {
        Response {
            effect: Some(effect),
            ..self
        }
    }

    /// A 9000 response, for `reason` with its usual text.
    pub fn refused(reason: Reason) -> Response {
        Response::error(Refusal::new(reason))
    }

    /// A 9000 response, for `refusal`.
    pub fn error(refusal: Refusal) -> Response {
        Response::new(Reply::Error(refusal))
    }

    /// A successful classic request's response: `answer`, in the request's edition.
    pub fn classic(code: RequestCode, answer: Answer) -> Response {
        Response::new(Reply::Success {
            edition: code.edition,
            answer,
        })
    }
}

/// What a request comes to.
#[derive(Debug)]
pub enum Outcome {
    /// Answer now.
    Answer(Response),
    /// A long-poll found nothing waiting: the server keeps the request until a message for
    /// its caller is durable, or until `until`.
    Park(Parked),
}

/// A long-poll's wait (protocol §E6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parked {
    pub caller: ClientId,
    pub until: Instant,
}

/// What a handler run gives back: a [`Response`], or an [`Outcome`] that may be a wait. The
/// server needs the response's bookkeeping either way, and makes one of a failure.
pub trait HandlerOutput: From<Response> {
    /// The response, unless the request waits.
    fn response(&self) -> Option<&Response>;
}

impl HandlerOutput for Response {
    fn response(&self) -> Option<&Response> {
        Some(self)
    }
}

impl From<Response> for Outcome {
    fn from(response: Response) -> Outcome {
        Outcome::Answer(response)
    }
}

impl HandlerOutput for Outcome {
    fn response(&self) -> Option<&Response> {
        match self {
            Outcome::Answer(response) => Some(response),
            Outcome::Park(_) => None,
        }
    }
}

/// One classic operation's logic; `code` says the edition its reply is answered in.
pub trait Handler {
    fn handle(self, ctx: &mut Context<'_>, code: RequestCode) -> Result<Response, HandlerError>;
}

/// One extension operation's logic.
pub trait ExtensionHandler {
    fn handle(self, ctx: &mut Context<'_>) -> Result<Response, HandlerError>;
}

/// Decodes a framed request body and runs its handler. Every operation but register, hello,
/// challenge and prove needs a registered caller (whose LastSeen it updates), and, if its
/// account is protected, a connection authenticated as it.
pub fn dispatch(ctx: &mut Context<'_>, code: Code, body: &[u8]) -> Result<Outcome, HandlerError> {
    match code {
        Code::Classic(code) => dispatch_classic(ctx, code, body).map(Outcome::Answer),
        Code::Extension(extension) => dispatch_extension(ctx, extension, body),
    }
}

fn dispatch_classic(
    ctx: &mut Context<'_>,
    code: RequestCode,
    body: &[u8],
) -> Result<Response, HandlerError> {
    let request = Request::parse(code, body)?;
    if code.operation != Operation::Register {
        check_caller(ctx)?;
    }
    match request {
        Request::Register(request) => request.handle(ctx, code),
        Request::ListClients(request) => request.handle(ctx, code),
        Request::PublicKey(request) => request.handle(ctx, code),
        Request::SendMessage(request) => request.handle(ctx, code),
        Request::PullMessages(request) => request.handle(ctx, code),
    }
}

fn dispatch_extension(
    ctx: &mut Context<'_>,
    extension: Extension,
    body: &[u8],
) -> Result<Outcome, HandlerError> {
    let response = match ExtensionRequest::parse(extension, body)? {
        ExtensionRequest::Hello { version } => hello::Hello { version }.handle(ctx),
        ExtensionRequest::Challenge => challenge::Challenge.handle(ctx),
        ExtensionRequest::Prove(proof) => prove::Prove(proof).handle(ctx),
        ExtensionRequest::Protect(protection) => protect::Protect(protection).handle(ctx),
        ExtensionRequest::Subscribe => subscribe::Subscribe.handle(ctx),
        ExtensionRequest::Acknowledge(ids) => acknowledge::Acknowledge(ids).handle(ctx),
        ExtensionRequest::ListAccounts(request) => request.handle(ctx),
        ExtensionRequest::QueueStatus => queue_status::GetQueueStatus.handle(ctx),
        ExtensionRequest::Unsend(id) => unsend::Unsend(id).handle(ctx),
        ExtensionRequest::DeleteAccount => delete_account::DeleteAccount.handle(ctx),
        ExtensionRequest::LongPoll { wait } => return long_poll::LongPoll { wait }.handle(ctx),
    };
    response.map(Outcome::Answer)
}

/// Fails unless the caller is registered and, if its account is protected, the connection
/// is authenticated as it; records that it was seen, and, if served, that it is online.
fn check_caller(ctx: &mut Context<'_>) -> Result<(), HandlerError> {
    match ctx.store.touch_client(ctx.caller, ctx.now)? {
        None => Err(HandlerError::UnknownCaller(ctx.caller)),
        Some(Protection::Protected) if ctx.session.authenticated() != Some(ctx.caller) => {
            Err(HandlerError::Protected(ctx.caller))
        }
        Some(_) => {
            ctx.presence.saw(ctx.caller, ctx.clock);
            Ok(())
        }
    }
}

/// Fails unless the connection is authenticated as the caller (protocol §E3), then checks
/// the caller as [`check_caller`] does.
fn check_authenticated_caller(ctx: &mut Context<'_>) -> Result<(), HandlerError> {
    if ctx.session.authenticated() != Some(ctx.caller) {
        return Err(HandlerError::NotAuthenticated(ctx.caller));
    }
    check_caller(ctx)
}
