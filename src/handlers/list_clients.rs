//! List clients: every registered client except the caller, in registration order, as the
//! store's directory gives them: encoded as the reply is written, with no copy of the list.

use super::{Context, Handler, HandlerError, Response};
use crate::protocol::request::ListClients;
use crate::protocol::{Answer, RequestCode};

impl Handler for ListClients {
    fn handle(self, ctx: &mut Context<'_>, code: RequestCode) -> Result<Response, HandlerError> {
        let entries = ctx.store.client_list(ctx.caller)?;
        Ok(Response::classic(code, Answer::Clients(entries)))
    }
}
