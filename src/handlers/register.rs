//! Register: a new client under a unique name, with a fresh random id.

use super::{Context, Handler, HandlerError, Response};
use crate::protocol::request::Register;
use crate::protocol::{Answer, RequestCode};

impl Handler for Register {
    fn handle(self, ctx: &mut Context<'_>, code: RequestCode) -> Result<Response, HandlerError> {
        let id = ctx
            .store
            .register_client(&self.name, &self.public_key, ctx.now)?;
        Ok(Response::classic(code, Answer::Registered(id)))
    }
}
