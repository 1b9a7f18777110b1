//! List clients: every registered client except the caller, in registration order.

use super::{Context, Handler, HandlerError, Response};
use crate::protocol::request::ListClients;
use crate::protocol::{Answer, ListedClient, RequestCode};

impl Handler for ListClients {
    fn handle(self, ctx: &mut Context<'_>, code: RequestCode) -> Result<Response, HandlerError> {
        let mut clients = Vec::new();
        ctx.store.list_clients(ctx.caller, &mut |id, name| {
            clients.push(ListedClient {
                id,
                name: name.to_owned(),
            })
        })?;
        Ok(Response::classic(code, Answer::Clients(clients)))
    }
}
