//! List clients: every registered client except the caller, in registration order.

use super::{Context, Handler, HandlerError, Response};
use crate::protocol::request::{encode_name, ListClients};
use crate::protocol::Reply;

impl Handler for ListClients {
    fn handle(self, ctx: &mut Context<'_>) -> Result<Response, HandlerError> {
        let mut reply = Reply::new(ctx.code.reply_code());
        let payload = reply.payload();
        ctx.store.list_clients(ctx.caller, &mut |id, name| {
            payload.extend_from_slice(&id.0);
            encode_name(name, payload);
        })?;
        Ok(Response::new(reply))
    }
}
