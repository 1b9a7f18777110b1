//! Everything that can make a client operation fail, each with a one-line message.

use std::io;
use std::path::PathBuf;

use super::crypto::CryptoError;
use super::identity::FileFormatError;
use super::servers::NodeFailures;
use super::state::DamagedState;
use messageu_protocol::client::ReplyError;
use messageu_protocol::pattern::PatternError;
use messageu_protocol::{ClientId, Extension, Operation};

/// Why an operation failed. The message of a 9000 reply begins with the console's
/// `server responded with an error`, then says what the server may have objected to.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Reply(#[from] ReplyError),
    /// A 9000; a server that serves the extensions says why (protocol §E1).
    #[error("server responded with an error: {}{}", likely_causes(*.operation), said(.reason))]
    Refused {
        operation: Operation,
        reason: Option<String>,
    },
    #[error("the server answered {extension} with code {code}")]
    UnexpectedReply { extension: Extension, code: u16 },
    #[error("the server refused {extension}: {reason}")]
    ExtensionRefused {
        extension: Extension,
        reason: String,
    },
    #[error("cannot log in: the server's challenge does not open with our key")]
    LoginFailed,
    #[error("the server does not offer account protection (a classic MessageU server)")]
    NoProtection,
    #[error(
        "the server cannot wait for messages (a classic MessageU server): pull without --wait"
    )]
    NoLongPoll,
    #[error(
        "{command} needs a server with push delivery (MessageU extensions); {}",
        if *.classic { "this server is classic" } else { "this server does not offer it" }
    )]
    NoPush {
        command: &'static str,
        classic: bool,
    },
    #[error("the server pushed a {code} frame that does not have its layout")]
    MalformedPush { code: u16 },
    #[error("the server sent a reply (code {code}) to no request on the subscribed connection")]
    UnaskedReply { code: u16 },
    #[error("the server does not offer {} (a classic MessageU server, or an older one)", .0.name())]
    NotOffered(Extension),
    #[error("the server's {extension} reply does not have its layout")]
    MalformedReply { extension: Extension },
    #[error("invalid pattern: {0}")]
    BadPattern(#[from] PatternError),
    #[error("the reply names client {actual}, but the request was for {expected}")]
    ReplyForOtherClient {
        expected: ClientId,
        actual: ClientId,
    },
    #[error("cannot connect to {server}: {source}")]
    Connect { server: String, source: io::Error },
    #[error("the server did not answer within {0} seconds")]
    Timeout(u64),
    #[error("the server closed the connection before its reply was complete")]
    ClosedEarly,
    #[error("connection to the server failed: {0}")]
    Connection(#[source] io::Error),
    /// The request was sent (at least in part) and its connection failed before the whole
    /// reply came: the server may or may not have acted on it.
    #[error("no reply from {server} ({cause}); the request was not sent again")]
    ReplyLost {
        server: String,
        cause: Box<ClientError>,
    },
    #[error("every server failed: {0}")]
    EveryServerFailed(NodeFailures),
    #[error(
        "the connection to {server} failed before it confirmed the message to {to}: the \
         message may or may not have been stored, and was not sent again"
    )]
    SendUnconfirmed { to: String, server: String },
    #[error(
        "the connection to {server} failed before the pull's reply was complete: messages in \
         that reply may be lost (a classic pull deletes them once they are sent); pull again \
         for those still waiting"
    )]
    PullUnconfirmed { server: String },
    #[error("{path}: {source}")]
    File { path: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    BadFile {
        path: PathBuf,
        source: FileFormatError,
    },
    #[error("{path}: the file changed while it was being sent")]
    FileChanged { path: PathBuf },
    #[error("{path}: {len} bytes is more than one message can carry")]
    FileTooLarge { path: PathBuf, len: u64 },
    #[error("the folder {0} does not exist (--dir names the folder of me.info and server.info)")]
    NoFolder(PathBuf),
    #[error("{0} is not a folder (--dir names the folder of me.info and server.info)")]
    NotAFolder(PathBuf),
    #[error("no server address: write host:port to {0} or pass --server")]
    NoServer(PathBuf),
    #[error("already registered: {0} exists")]
    AlreadyRegistered(PathBuf),
    #[error("not registered: {0} not found (register first)")]
    NotRegistered(PathBuf),
    #[error("invalid name {0:?}: use 1 to 254 printable ASCII characters")]
    InvalidName(String),
    #[error("no client named {0:?} (the list of clients does not have it)")]
    UnknownPeer(String),
    #[error("no public key of {0} yet: request it first")]
    NoPublicKey(String),
    #[error("no symmetric key shared with {0} yet: send yours or ask for theirs first")]
    NoSymmetricKey(String),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    BadState(#[from] DamagedState),
    #[error("reading the input failed: {0}")]
    Input(#[source] io::Error),
    #[error("writing the output failed: {0}")]
    Output(#[source] io::Error),
}

impl ClientError {
    /// Whether this is a failure of the connection (or of every node's), which another
    /// attempt, or another node, may not have: not the server's answer nor this client's.
    pub fn is_connection_failure(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. }
                | ClientError::Connection(_)
                | ClientError::ClosedEarly
                | ClientError::Timeout(_)
                | ClientError::ReplyLost { .. }
                | ClientError::EveryServerFailed(_)
                | ClientError::UnaskedReply { .. }
        )
    }
}

/// The server's own reason, when it gave one.
fn said(reason: &Option<String>) -> String {
    reason
        .as_ref()
        .map(|reason| format!(" (the server says: {reason})"))
        .unwrap_or_default()
}

/// What a 9000 reply to `operation` most likely means (protocol §3); the reply says no more.
fn likely_causes(operation: Operation) -> String {
    const UNKNOWN_CALLER: &str = "the server may not know this client's id (me.info from \
        another server, or its database was reset: register again from a new folder)";
    match operation {
        Operation::Register => "the name may be taken, or refused by the server".to_owned(),
        Operation::ListClients | Operation::PullMessages => UNKNOWN_CALLER.to_owned(),
        Operation::PublicKey => {
            format!("the client asked about may no longer be registered, or {UNKNOWN_CALLER}")
        }
        Operation::SendMessage => format!(
            "the recipient may no longer be registered, the content may be larger than the \
             server accepts, the server may be out of space, or {UNKNOWN_CALLER}"
        ),
    }
}
