//! Messages: inserting them under fresh 32-bit ids, a recipient's queue within a pull's
//! budget and per sender, deleting delivered, acknowledged and unsent ones with their
//! large contents (in the same transaction), and the queue counts.

use postgres::Row;

use super::clients::client_id;
use super::conn::Conn;
use super::contents::ChunkReader;
use super::PostgresStore;
use crate::protocol::{ClientId, MessageId};
use crate::store::{
    Acknowledged, Content, Delivered, NewContent, NewMessage, PullBudget, QueueStats,
    QueuedMessage, SenderQueue, StoreError, UnsendOutcome,
};

/// How many taken message ids an insert steps over before giving up.
const MESSAGE_ID_ATTEMPTS: u32 = 1 << 16;

/// A queued message as the first pass of a pull sees it, before its content is read.
struct Waiting {
    id: MessageId,
    from: ClientId,
    kind: u8,
    len: u64,
    /// Its large content's key; `None`: the content is in its row.
    large: Option<String>,
}

impl PostgresStore {
    /// `Store::insert_message`: ids come from the database's sequence; one another message
    /// holds (after wrap-around) is stepped over without a failed statement.
    pub(super) fn insert(&mut self, message: NewMessage<'_>) -> Result<MessageId, StoreError> {
        let (content, large, len): (&[u8], _, _) = match &message.content {
            NewContent::Inline(bytes) => (bytes, None, bytes.len() as u64),
            NewContent::Large(content) => (&[], Some(content.key()), content.len()),
        };
        let size = large.map(|_| len as i64);
        let id = self.run(|store| {
            for _ in 0..MESSAGE_ID_ATTEMPTS {
                let inserted = store.conn.query_opt(
                    "INSERT INTO messages \
                     (ID, ToClient, FromClient, Type, Content, SpoolFile, SpoolSize) \
                     VALUES (nextval('message_ids') % 4294967295 + 1, $1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (ID) DO NOTHING RETURNING ID",
                    &[
                        &&message.to.0[..],
                        &&message.from.0[..],
                        &i32::from(message.kind as u8),
                        &content,
                        &large,
                        &size,
                    ],
                )?;
                if let Some(row) = inserted {
                    return message_id(row.try_get(0)?);
                }
            }
            Err(StoreError::IdsExhausted)
        })?;
        self.batch_queue.stored += 1;
        self.batch_queue.stored_bytes += len;
        if let NewContent::Large(content) = message.content {
            self.batch_contents.push(content);
        }
        Ok(id)
    }

    /// `Store::queued_messages`: the queue's sizes first, then the contents of the
    /// messages that fit, so that no content beyond the budget crosses the network. Messages
    /// another server's pull reply holds (`claims.rs`) are left out.
    pub(super) fn queued(
        &mut self,
        to: ClientId,
        budget: PullBudget,
        skip: &dyn Fn(MessageId) -> bool,
    ) -> Result<Vec<QueuedMessage>, StoreError> {
        self.run(|store| {
            let rows = store.conn.query(
                "SELECT ID, FromClient, Type, length(Content), SpoolFile, SpoolSize \
                 FROM messages m WHERE ToClient = $1 \
                 AND NOT EXISTS (SELECT 1 FROM claims c WHERE c.ID = m.ID \
                                 AND c.Node <> $2 AND c.Until >= now()) \
                 ORDER BY Seq",
                &[&&to.0[..], &store.claims.node],
            )?;
            let mut chosen = Vec::new();
            let mut filling = budget.filling();
            for row in &rows {
                let waiting = waiting(row)?;
                if skip(waiting.id) {
                    continue;
                }
                if !filling.take(waiting.len, waiting.large.is_none()) {
                    break;
                }
                chosen.push(waiting);
            }
            store.with_contents(chosen)
        })
    }

    /// The chosen messages with their contents: rows' read in one query, large ones opened
    /// for streaming.
    fn with_contents(&mut self, chosen: Vec<Waiting>) -> Result<Vec<QueuedMessage>, StoreError> {
        let inline: Vec<i64> = chosen
            .iter()
            .filter(|waiting| waiting.large.is_none())
            .map(|waiting| i64::from(waiting.id.0))
            .collect();
        let mut contents = std::collections::HashMap::new();
        if !inline.is_empty() {
            let rows = self.conn.query(
                "SELECT ID, Content FROM messages WHERE ID = ANY($1)",
                &[&inline],
            )?;
            for row in rows {
                contents.insert(row.try_get::<_, i64>(0)?, row.try_get::<_, Vec<u8>>(1)?);
            }
        }
        let mut messages = Vec::with_capacity(chosen.len());
        for waiting in chosen {
            let content = match waiting.large {
                Some(key) => Content::Streamed {
                    reader: ChunkReader::open(&self.pool, key, waiting.len)?,
                    len: waiting.len,
                },
                None => match contents.remove(&i64::from(waiting.id.0)) {
                    Some(bytes) => Content::Inline(bytes),
                    // Deleted meanwhile through a server sharing the database.
                    None => continue,
                },
            };
            messages.push(QueuedMessage {
                id: waiting.id,
                from: waiting.from,
                kind: waiting.kind,
                content,
            });
        }
        Ok(messages)
    }

    /// `Store::delete_messages`: one statement for the whole pull.
    pub(super) fn delete_delivered(
        &mut self,
        messages: &[Delivered],
    ) -> Result<Vec<MessageId>, StoreError> {
        self.run(|store| {
            let ids: Vec<i64> = messages.iter().map(|m| i64::from(m.id.0)).collect();
            let rows = store.conn.query(
                "WITH gone AS (DELETE FROM messages WHERE ID = ANY($1) RETURNING ID, SpoolFile), \
                      removed AS (DELETE FROM contents WHERE Key IN (SELECT SpoolFile FROM gone)) \
                 SELECT ID FROM gone",
                &[&ids],
            )?;
            let mut deleted = Vec::with_capacity(rows.len());
            for row in rows {
                let id = message_id(row.try_get(0)?)?;
                let len = messages
                    .iter()
                    .find(|message| message.id == id)
                    .map_or(0, |message| message.len);
                store.batch_queue.delivered += 1;
                store.batch_queue.delivered_bytes += len;
                deleted.push(id);
            }
            Ok(deleted)
        })
    }

    /// `Store::acknowledge_messages`: returned in the order asked. A message another
    /// transaction holds (another server deleting it for the same id's other device) is
    /// left to it rather than waited for.
    pub(super) fn acknowledge(
        &mut self,
        to: ClientId,
        ids: &[MessageId],
    ) -> Result<Vec<Acknowledged>, StoreError> {
        self.run(|store| {
            let asked: Vec<i64> = ids.iter().map(|id| i64::from(id.0)).collect();
            let rows = store.conn.query(
                "WITH gone AS (DELETE FROM messages WHERE ID IN \
                                   (SELECT ID FROM messages WHERE ID = ANY($1) AND ToClient = $2 \
                                    FOR UPDATE SKIP LOCKED) \
                               RETURNING ID, FromClient, SpoolFile, \
                                         coalesce(SpoolSize, length(Content)) AS len), \
                      removed AS (DELETE FROM contents WHERE Key IN (SELECT SpoolFile FROM gone)) \
                 SELECT ID, FromClient, len FROM gone ORDER BY array_position($1, ID)",
                &[&asked, &&to.0[..]],
            )?;
            let mut deleted = Vec::with_capacity(rows.len());
            for row in rows {
                deleted.push(Acknowledged {
                    id: message_id(row.try_get(0)?)?,
                    from: client_id(row.try_get(1)?)?,
                });
                store.batch_queue.delivered += 1;
                store.batch_queue.delivered_bytes += size(row.try_get(2)?)?;
            }
            Ok(deleted)
        })
    }

    /// `Store::queue_of`.
    pub(super) fn senders_to(&mut self, to: ClientId) -> Result<Vec<SenderQueue>, StoreError> {
        self.run(|store| {
            let rows = store.conn.query(
                "SELECT FromClient, count(*), \
                        sum(coalesce(SpoolSize, length(Content)))::bigint \
                 FROM messages WHERE ToClient = $1 \
                 GROUP BY FromClient ORDER BY count(*) DESC, min(Seq)",
                &[&&to.0[..]],
            )?;
            let mut senders = Vec::with_capacity(rows.len());
            for row in rows {
                senders.push(SenderQueue {
                    from: client_id(row.try_get(0)?)?,
                    messages: size(row.try_get(1)?)?,
                    bytes: size(row.try_get(2)?)?,
                });
            }
            Ok(senders)
        })
    }

    /// `Store::unsend_message`.
    pub(super) fn unsend(
        &mut self,
        from: ClientId,
        id: MessageId,
        in_flight: &dyn Fn(MessageId) -> bool,
    ) -> Result<UnsendOutcome, StoreError> {
        self.run(|store| {
            let found = store.conn.query_opt(
                "SELECT 1 FROM messages WHERE ID = $1 AND FromClient = $2",
                &[&i64::from(id.0), &&from.0[..]],
            )?;
            if found.is_none() {
                return Ok(UnsendOutcome::NotWaiting);
            }
            if in_flight(id) {
                return Ok(UnsendOutcome::InDelivery);
            }
            // Held: another transaction has the row (a server sharing the database claiming
            // or deleting it), or a pull reply of another server has claimed it.
            let held = store.conn.query_opt(
                "SELECT EXISTS (SELECT 1 FROM claims c WHERE c.ID = m.ID \
                                AND c.Node <> $2 AND c.Until >= now()) \
                 FROM messages m WHERE ID = $1 FOR UPDATE OF m SKIP LOCKED",
                &[&i64::from(id.0), &store.claims.node],
            )?;
            match held {
                // Deleted meanwhile through a server sharing the database.
                None => return Ok(UnsendOutcome::NotWaiting),
                Some(row) if row.try_get::<_, bool>(0)? => return Ok(UnsendOutcome::InDelivery),
                Some(_) => {}
            }
            let row = store.conn.query_one(
                "WITH gone AS (DELETE FROM messages WHERE ID = $1 AND FromClient = $2 \
                               RETURNING SpoolFile, coalesce(SpoolSize, length(Content)) AS len), \
                      removed AS (DELETE FROM contents WHERE Key IN (SELECT SpoolFile FROM gone)) \
                 SELECT count(*), coalesce(sum(len), 0)::bigint FROM gone",
                &[&i64::from(id.0), &&from.0[..]],
            )?;
            let (count, bytes) = count_and_bytes(&row)?;
            if count == 0 {
                // Deleted meanwhile by a server sharing the database.
                return Ok(UnsendOutcome::NotWaiting);
            }
            store.batch_queue.withdrawn += count;
            store.batch_queue.withdrawn_bytes += bytes;
            Ok(UnsendOutcome::Deleted)
        })
    }
}

fn waiting(row: &Row) -> Result<Waiting, StoreError> {
    let large: Option<String> = row.try_get(4)?;
    let len = match large {
        Some(_) => size(row.try_get::<_, Option<i64>>(5)?.unwrap_or_default())?,
        None => size(row.try_get::<_, i32>(3)?.into())?,
    };
    let kind: i32 = row.try_get(2)?;
    Ok(Waiting {
        id: message_id(row.try_get(0)?)?,
        from: client_id(row.try_get(1)?)?,
        kind: u8::try_from(kind).map_err(|_| StoreError::Corrupt("message type"))?,
        len,
        large,
    })
}

/// The count and bytes of a `SELECT count(*), sum(len)` over deleted messages.
pub(super) fn count_and_bytes(row: &Row) -> Result<(u64, u64), StoreError> {
    Ok((size(row.try_get(0)?)?, size(row.try_get(1)?)?))
}

fn size(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt("size"))
}

fn message_id(value: i64) -> Result<MessageId, StoreError> {
    u32::try_from(value)
        .map(MessageId)
        .map_err(|_| StoreError::Corrupt("message id"))
}

/// The queue counts at start-up.
pub(super) fn count_queue(conn: &mut Conn) -> Result<QueueStats, StoreError> {
    let row = conn.query_one(
        "SELECT count(*), coalesce(sum(coalesce(SpoolSize, length(Content))), 0)::bigint \
         FROM messages",
        &[],
    )?;
    let (messages, bytes) = count_and_bytes(&row)?;
    Ok(QueueStats {
        messages,
        bytes,
        ..QueueStats::default()
    })
}

#[cfg(test)]
impl PostgresStore {
    /// Makes `id` the next message id drawn (tests of collisions and the wrap).
    pub(super) fn jump_to_message_id(&mut self, id: u32) {
        self.conn
            .execute(
                "SELECT setval('message_ids', $1, false)",
                &[&(i64::from(id) - 1)],
            )
            .unwrap();
    }
}
