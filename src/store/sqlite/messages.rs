//! Messages: inserting them under fresh ids, a recipient's queue within a pull's budget and
//! per sender, deleting delivered, acknowledged and unsent ones (their spool files removed once the
//! deletion commits), and the queue counts.

use rusqlite::{ffi, params, Connection, OptionalExtension};

use super::clients::client_id;
use super::SqliteStore;
use crate::protocol::replies::PULLED_MESSAGE_HEADER_LEN;
use crate::protocol::{ClientId, MessageId};
use crate::store::{
    Acknowledged, Content, ContentReader, Delivered, NewContent, NewMessage, PullBudget,
    QueueStats, QueuedMessage, SenderQueue, StoreError, UnsendOutcome,
};

/// How many taken message ids an insert steps over before giving up.
const MESSAGE_ID_ATTEMPTS: u32 = 1 << 16;

impl SqliteStore {
    /// `Store::insert_message`.
    pub(super) fn insert(&mut self, message: NewMessage<'_>) -> Result<MessageId, StoreError> {
        let content_bytes = match &message.content {
            NewContent::Inline(bytes) => bytes.len() as u64,
            NewContent::Large(content) => content.len(),
        };
        let id = self.run(|store| {
            let row_bytes = match &message.content {
                NewContent::Inline(bytes) => bytes.len() as u64,
                NewContent::Large(_) => 0,
            };
            store.ensure_room(row_bytes + PULLED_MESSAGE_HEADER_LEN as u64)?;
            for _ in 0..MESSAGE_ID_ATTEMPTS {
                let candidate = store.message_ids.next();
                if let Some(mark) = candidate.reserve {
                    store
                        .conn
                        .prepare_cached(
                            "INSERT OR REPLACE INTO message_ids (rowid, Reserved) VALUES (1, ?1)",
                        )?
                        .execute([mark])?;
                }
                if store.try_insert_message(candidate.id.0, &message)? {
                    store.batch_acknowledges = true;
                    return Ok(candidate.id);
                }
            }
            Err(StoreError::IdsExhausted)
        })?;
        self.batch_queue.stored += 1;
        self.batch_queue.stored_bytes += content_bytes;
        if let Some(request) = &mut self.request {
            request.messages.push(id);
        }
        if let NewContent::Large(content) = message.content {
            self.batch_contents.push(content);
        }
        Ok(id)
    }

    /// `Store::queued_messages`.
    pub(super) fn queued(
        &mut self,
        to: ClientId,
        budget: PullBudget,
        skip: &dyn Fn(MessageId) -> bool,
    ) -> Result<Vec<QueuedMessage>, StoreError> {
        self.run(|store| {
            // length(Content) comes from the record header; the content itself is read only
            // for messages that fit the budget.
            let mut query = store.conn.prepare_cached(
                "SELECT ID, FromClient, Type, length(Content), Content, SpoolFile, SpoolSize \
                 FROM messages WHERE ToClient = ?1 ORDER BY rowid",
            )?;
            let mut rows = query.query([&to.0[..]])?;
            let mut messages = Vec::new();
            let mut filling = budget.filling();
            while let Some(row) = rows.next()? {
                let id = MessageId(row.get(0)?);
                if skip(id) {
                    continue;
                }
                let spool_file: Option<String> = row.get(5)?;
                let content_len = match spool_file {
                    Some(_) => row.get::<_, u64>(6)?,
                    None => row.get::<_, u64>(3)?,
                };
                if !filling.take(content_len, spool_file.is_none()) {
                    break;
                }
                let content = match spool_file {
                    Some(name) => Content::Streamed {
                        reader: ContentReader::new(store.spool.open_content(&name)?),
                        len: content_len,
                    },
                    None => Content::Inline(row.get_ref(4)?.as_blob()?.to_vec()),
                };
                messages.push(QueuedMessage {
                    id,
                    from: client_id(row.get_ref(1)?.as_blob()?)?,
                    kind: row.get(2)?,
                    content,
                });
            }
            Ok(messages)
        })
    }

    /// `Store::delete_messages`.
    pub(super) fn delete_delivered(
        &mut self,
        messages: &[Delivered],
    ) -> Result<Vec<MessageId>, StoreError> {
        self.run(|store| {
            // The sizes come with the ids: returning length(Content) here cost about 4,000
            // instructions a send-pull request under callgrind. Only a content stored apart
            // has a spool file to return: RETURNING collects its rows in a temporary table,
            // which cost a third of a small message's deletion.
            let mut deleted = Vec::with_capacity(messages.len());
            for message in messages {
                let gone = if message.stored_apart {
                    let mut delete = store
                        .conn
                        .prepare_cached("DELETE FROM messages WHERE ID = ?1 RETURNING SpoolFile")?;
                    let spool_file = delete
                        .query_row([message.id.0], |row| row.get::<_, Option<String>>(0))
                        .optional()?;
                    let gone = spool_file.is_some();
                    store.batch_removals.extend(spool_file.flatten());
                    gone
                } else {
                    let mut delete = store
                        .conn
                        .prepare_cached("DELETE FROM messages WHERE ID = ?1")?;
                    delete.execute([message.id.0])? == 1
                };
                if gone {
                    store.batch_queue.delivered += 1;
                    store.batch_queue.delivered_bytes += message.len;
                    deleted.push(message.id);
                }
            }
            Ok(deleted)
        })
    }

    /// `Store::acknowledge_messages`.
    pub(super) fn acknowledge(
        &mut self,
        to: ClientId,
        ids: &[MessageId],
    ) -> Result<Vec<Acknowledged>, StoreError> {
        self.run(|store| {
            store.savepoint_request()?;
            let mut delete = store.conn.prepare_cached(
                "DELETE FROM messages WHERE ID = ?1 AND ToClient = ?2 \
                 RETURNING FromClient, SpoolFile, coalesce(SpoolSize, length(Content))",
            )?;
            let mut deleted = Vec::new();
            for &id in ids {
                let mut rows = delete.query(params![id.0, &to.0[..]])?;
                while let Some(row) = rows.next()? {
                    deleted.push(Acknowledged {
                        id,
                        from: client_id(row.get_ref(0)?.as_blob()?)?,
                    });
                    if let Some(name) = row.get::<_, Option<String>>(1)? {
                        store.batch_removals.push(name);
                    }
                    store.batch_queue.delivered += 1;
                    store.batch_queue.delivered_bytes += row.get::<_, u64>(2)?;
                }
            }
            if !deleted.is_empty() {
                store.batch_acknowledges = true;
            }
            Ok(deleted)
        })
    }

    /// `Store::queue_of`.
    pub(super) fn senders_to(&mut self, to: ClientId) -> Result<Vec<SenderQueue>, StoreError> {
        self.run(|store| {
            let mut query = store.conn.prepare_cached(
                "SELECT FromClient, count(*), sum(coalesce(SpoolSize, length(Content))) \
                 FROM messages WHERE ToClient = ?1 \
                 GROUP BY FromClient ORDER BY count(*) DESC, min(rowid)",
            )?;
            let mut rows = query.query([&to.0[..]])?;
            let mut senders = Vec::new();
            while let Some(row) = rows.next()? {
                senders.push(SenderQueue {
                    from: client_id(row.get_ref(0)?.as_blob()?)?,
                    messages: row.get(1)?,
                    bytes: row.get(2)?,
                });
            }
            Ok(senders)
        })
    }

    /// `Store::unsend_message`: under a savepoint, so that the request's undo can bring the
    /// message back. The reply waits for the deletion to be durable.
    pub(super) fn unsend(
        &mut self,
        from: ClientId,
        id: MessageId,
        in_flight: &dyn Fn(MessageId) -> bool,
    ) -> Result<UnsendOutcome, StoreError> {
        self.run(|store| {
            let found = store
                .conn
                .prepare_cached(
                    "SELECT SpoolFile, coalesce(SpoolSize, length(Content)) FROM messages \
                     WHERE ID = ?1 AND FromClient = ?2",
                )?
                .query_row(params![id.0, &from.0[..]], |row| {
                    Ok((row.get::<_, Option<String>>(0)?, row.get::<_, u64>(1)?))
                })
                .optional()?;
            let Some((spool_file, len)) = found else {
                return Ok(UnsendOutcome::NotWaiting);
            };
            if in_flight(id) {
                return Ok(UnsendOutcome::InDelivery);
            }
            store.savepoint_request()?;
            store
                .conn
                .prepare_cached("DELETE FROM messages WHERE ID = ?1")?
                .execute([id.0])?;
            store.batch_removals.extend(spool_file);
            store.batch_queue.withdrawn += 1;
            store.batch_queue.withdrawn_bytes += len;
            store.batch_acknowledges = true;
            Ok(UnsendOutcome::Deleted)
        })
    }

    fn try_insert_message(
        &mut self,
        id: u32,
        message: &NewMessage<'_>,
    ) -> Result<bool, StoreError> {
        let mut insert = self.conn.prepare_cached(
            "INSERT INTO messages (ID, ToClient, FromClient, Type, Content, SpoolFile, SpoolSize) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        let (content, spool_file, spool_size): (&[u8], _, _) = match &message.content {
            NewContent::Inline(bytes) => (bytes, None, None),
            NewContent::Large(content) => (&[], Some(content.key()), Some(content.len())),
        };
        inserted_unless_id_taken(insert.execute(params![
            id,
            &message.to.0[..],
            &message.from.0[..],
            message.kind as u8,
            content,
            spool_file,
            spool_size
        ]))
    }
}

/// The queue counts: one pass over the table (at start-up, in the background), so that later
/// they are kept as writes commit instead of counted.
pub(super) fn count_queue(conn: &Connection) -> Result<QueueStats, StoreError> {
    let (messages, bytes) = conn.query_row(
        "SELECT count(*), coalesce(sum(coalesce(SpoolSize, length(Content))), 0) FROM messages",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    Ok(QueueStats {
        messages,
        bytes,
        ..QueueStats::default()
    })
}

/// Whether an insert succeeded (`true`) or found its id taken (`false`). Other constraint
/// failures, such as a column an adopted database requires, are errors: retrying them with
/// another id would never succeed.
pub(super) fn inserted_unless_id_taken(
    result: rusqlite::Result<usize>,
) -> Result<bool, StoreError> {
    match result {
        Ok(_) => Ok(true),
        Err(rusqlite::Error::SqliteFailure(error, _))
            if error.extended_code == ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                || error.extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE =>
        {
            Ok(false)
        }
        Err(error) => Err(error.into()),
    }
}
