//! List accounts (protocol §E8): the registered accounts whose name matches a pattern, in
//! registration order, a page at a time, each with when it was last seen and whether it is
//! online.

use std::ops::ControlFlow;

use super::{check_caller, Context, ExtensionHandler, HandlerError, Response};
use crate::protocol::{
    unix_millis, AccountCursor, AccountPage, ExtensionAnswer, ListAccounts, ListedAccount, Reply,
};

/// The most accounts a page holds, whatever the request asks (announced in the hello): about
/// 28 KiB of names at most.
pub(super) const MAX_LIST_PAGE: u16 = 100;

impl ExtensionHandler for ListAccounts {
    fn handle(self, ctx: &mut Context<'_>) -> Result<Response, HandlerError> {
        check_caller(ctx)?;
        let page_size = usize::from(self.page_size.min(MAX_LIST_PAGE));
        let mut accounts = Vec::with_capacity(page_size);
        let mut last_listed = self.after;
        let mut next = None;
        let (presence, clock) = (&*ctx.presence, ctx.clock);
        ctx.store.accounts_after(self.after.0, &mut |account| {
            if !self.pattern.matches(account.name) {
                return ControlFlow::Continue(());
            }
            if accounts.len() == page_size {
                // One more matches: the next page starts after the last one listed.
                next = Some(last_listed);
                return ControlFlow::Break(());
            }
            let last_seen_ms = account.last_seen.map_or(0, unix_millis);
            accounts.push(ListedAccount {
                id: account.id,
                name: account.name.to_owned(),
                last_seen_ms,
                presence: presence.presence(account.id, clock),
            });
            last_listed = AccountCursor(account.position);
            ControlFlow::Continue(())
        })?;
        let page = AccountPage { next, accounts };
        Ok(Response::new(Reply::Extension(ExtensionAnswer::Accounts(
            Box::new(page),
        ))))
    }
}
