//! The MessageU wire format (`docs/protocol.md`): pure encoding and decoding, no I/O.
//!
//! Everything here works on byte slices so that it can be unit-tested without sockets and
//! reused by clients and benchmarks.

pub mod accounts;
pub mod client;
pub mod codes;
pub mod content;
pub mod extension;
pub mod frame;
pub mod header;
pub mod padding;
pub mod pattern;
pub mod push;
pub mod reason;
pub mod replies;
pub mod reply;
pub mod request;
pub mod types;

pub use accounts::{
    AccountCursor, AccountPage, ListAccounts, ListedAccount, Presence, QueueStatus, SenderCount,
};
pub use codes::{
    Code, Edition, Extension, Operation, RequestCode, ERROR_REPLY_CODE, SERVER_VERSION,
};
pub use content::{Content, ContentReader};
pub use extension::{Capabilities, ExtensionAnswer, ExtensionRequest, Features, Protection};
pub use frame::{Frame, FrameDecoder, Step, MAX_CONTENT_LEN};
pub use header::{ReplyHeader, RequestHeader, REPLY_HEADER_LEN, REQUEST_HEADER_LEN};
pub use padding::{Padding, BLOCK_LEN};
pub use pattern::NamePattern;
pub use push::{Delivery, Push, PushCode, Receipt};
pub use reason::{ErrorForm, Reason, Refusal};
pub use replies::{Answer, ListedClient, QueuedMessage, Reply};
pub use reply::EncodedReply;
pub use request::{MalformedRequest, Request, SendHead};
pub use types::{
    unix_millis, ClientId, MessageId, MessageType, PublicKey, NAME_FIELD_LEN, PUBLIC_KEY_LEN,
};
