//! The accounts extensions (protocol §E8) as this client uses them: listing accounts by
//! pattern, the queue status, unsend and deleting this client's account, each on a server that
//! offers it ([`ClientError::NotOffered`] otherwise).

use super::error::ClientError;
use super::session::Session;
use messageu_protocol::accounts::unsend_payload;
use messageu_protocol::{
    AccountCursor, AccountPage, Extension, Features, ListAccounts, ListedAccount, MessageId,
    NamePattern, QueueStatus,
};

impl Session {
    /// Every account whose name matches `pattern`, in registration order, page after page.
    pub fn list_accounts(&mut self, pattern: &str) -> Result<Vec<ListedAccount>, ClientError> {
        let pattern = NamePattern::parse(pattern)?;
        let mut accounts = Vec::new();
        let mut after = AccountCursor::START;
        loop {
            let request = ListAccounts {
                pattern: pattern.clone(),
                after,
                // The server gives at most its own limit.
                page_size: u16::MAX,
            };
            let extension = Extension::ListAccounts;
            let payload = self.extension_call(extension, Features::ACCOUNTS, &request.encode())?;
            let page =
                AccountPage::parse(&payload).ok_or(ClientError::MalformedReply { extension })?;
            accounts.extend(page.accounts);
            match page.next {
                Some(next) => after = next,
                None => return Ok(accounts),
            }
        }
    }

    /// What waits for this client, per sender, without pulling it.
    pub fn queue_status(&mut self) -> Result<QueueStatus, ClientError> {
        let extension = Extension::QueueStatus;
        let payload = self.extension_call(extension, Features::QUEUE_STATUS, &[])?;
        QueueStatus::parse(&payload).ok_or(ClientError::MalformedReply { extension })
    }

    /// Takes back message `id`, sent by this client and still waiting.
    pub fn unsend(&mut self, id: MessageId) -> Result<(), ClientError> {
        self.extension_call(Extension::Unsend, Features::UNSEND, &unsend_payload(id))
            .map(drop)
    }

    /// Deletes this client's account on the server (its files here are kept).
    pub fn delete_account(&mut self) -> Result<(), ClientError> {
        self.extension_call(Extension::DeleteAccount, Features::ACCOUNT_DELETION, &[])
            .map(drop)
    }
}
