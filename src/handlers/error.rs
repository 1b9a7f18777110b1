//! Why a request was answered with 9000, and the reason an extended connection is told
//! (protocol §E1).

use crate::auth::{ProofFailure, RateLimited, SealError};
use crate::protocol::{ClientId, MalformedRequest, MessageId, Reason, Refusal};
use crate::store::StoreError;

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
    #[error("{0} is protected and the connection is not authenticated as it")]
    Protected(ClientId),
    #[error("the connection is not authenticated as {0}")]
    NotAuthenticated(ClientId),
    #[error("bad proof: {0}")]
    BadProof(#[from] ProofFailure),
    #[error("too many failed proofs; retry in {} s", .0.retry_after.as_secs())]
    RateLimited(RateLimited),
    #[error("cannot challenge {id}: {error}")]
    BadKey { id: ClientId, error: SealError },
    #[error("{0:?} does not wait, or was sent by another client")]
    UnknownMessage(MessageId),
    #[error("{0:?} is being delivered")]
    InDelivery(MessageId),
}

impl HandlerError {
    /// Whether the connection must close after the 9000 reply: the request's bytes were not
    /// read, so the stream cannot be trusted to continue with a request.
    pub fn closes_connection(&self) -> bool {
        matches!(self, HandlerError::Store(StoreError::NoSpace { .. }))
    }

    /// What an extended connection is told.
    pub fn refusal(&self) -> Refusal {
        let reason = match self {
            HandlerError::Malformed(_) => Reason::Malformed,
            HandlerError::UnknownCaller(_) => Reason::UnknownCaller,
            HandlerError::UnknownClient(_) => Reason::UnknownClient,
            HandlerError::Store(StoreError::NameTaken) => Reason::NameTaken,
            HandlerError::Store(StoreError::NoSpace { .. }) => Reason::NoSpace,
            HandlerError::Store(_) | HandlerError::Upload(_) => Reason::Internal,
            HandlerError::Protected(_) => Reason::Protected,
            HandlerError::NotAuthenticated(_) => Reason::NotAuthenticated,
            HandlerError::BadProof(_) => Reason::BadProof,
            HandlerError::RateLimited(limited) => {
                // Whole seconds, rounded up: retrying after them is never too early.
                let seconds = limited.retry_after.as_millis().div_ceil(1000);
                return Refusal::explained(
                    Reason::RateLimited,
                    format!("too many failed proofs; try again in {seconds} s"),
                );
            }
            HandlerError::BadKey { .. } => Reason::BadKey,
            HandlerError::UnknownMessage(_) => Reason::UnknownMessage,
            HandlerError::InDelivery(_) => Reason::InDelivery,
        };
        Refusal::new(reason)
    }
}
