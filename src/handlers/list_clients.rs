//! List clients: every registered client except the caller, in registration order.

use super::{Context, Handler, HandlerError, Response};
use crate::protocol::replies::ClientList;
use crate::protocol::request::ListClients;

impl Handler for ListClients {
    fn handle(self, ctx: &mut Context<'_>) -> Result<Response, HandlerError> {
        let mut list = ClientList::new(ctx.code);
        ctx.store
            .list_clients(ctx.caller, &mut |id, name| list.push(id, name))?;
        Ok(Response::new(list.finish()))
    }
}
