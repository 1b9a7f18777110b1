//! Hello (protocol §E2): the connection becomes extended (its 9000s carry reasons from now
//! on), and learns what this server serves and its limits.

use super::accounts::MAX_LIST_PAGE;
use super::{Context, ExtensionHandler, HandlerError, Response};
use crate::protocol::extension::EXTENSION_VERSION;
use crate::protocol::{Capabilities, ExtensionAnswer, Features, Reply};

/// The groups of operations served: only these bits are announced.
const FEATURES: Features = Features::AUTHENTICATION
    .with(Features::PROTECTION)
    .with(Features::PUSH)
    .with(Features::LONG_POLL)
    .with(Features::RECEIPTS)
    .with(Features::ACCOUNTS)
    .with(Features::QUEUE_STATUS)
    .with(Features::UNSEND)
    .with(Features::ACCOUNT_DELETION);
/// The name the hello gives: the server binary's.
const SERVER_NAME: &str = "messageu-server";

/// A hello, with the extension version the client speaks. Any version is answered with the
/// server's: the client adapts to it.
pub(super) struct Hello {
    pub version: u16,
}

impl ExtensionHandler for Hello {
    fn handle(self, ctx: &mut Context<'_>) -> Result<Response, HandlerError> {
        log::debug!("hello from a client of extension version {}", self.version);
        ctx.session.greet();
        let max_payload = u32::try_from(ctx.pull_budget.payload).unwrap_or(u32::MAX);
        let capabilities = Capabilities {
            version: EXTENSION_VERSION,
            features: FEATURES,
            max_payload,
            max_pull_reply: max_payload,
            max_long_poll_ms: u32::try_from(ctx.long_poll_limit.as_millis()).unwrap_or(u32::MAX),
            max_list_page: MAX_LIST_PAGE,
            server_name: SERVER_NAME.to_owned(),
            server_version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        Ok(Response::new(Reply::Extension(ExtensionAnswer::Hello(
            Box::new(capabilities),
        ))))
    }
}
