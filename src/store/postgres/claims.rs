//! Claims (migration 0002): the messages a pull reply of this server carries, held against the
//! servers sharing the database, so that a message is delivered by one pull reply whatever
//! server each pull goes through. A claim is a row of `claims` naming this server's number,
//! written in the pull's round (so it holds from that round's commit, before the reply goes
//! out) and deleted with its message. It lasts a lease: renewed while the reply is written,
//! dropped once it is given up, and left to expire if this server dies, after which another
//! server may deliver the message (at least once, never lost).
//!
//! Claiming never waits for another server's transaction: the messages' rows are locked with
//! `SKIP LOCKED`, so a message another server is claiming at that moment is left out, those
//! another server holds a live claim on are not locked at all, and a claim of another server
//! committed meanwhile is honoured by the upsert, which sees the newest row.
//!
//! Renewal runs with the loop's turns, which come at least once a second: a lease of a few
//! seconds (the default is 10) leaves room for that; the tests' 1 s leases serve replies
//! written at once.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::PostgresStore;
use crate::protocol::{MessageId, QueuedMessage};
use crate::store::StoreError;

/// How long a claim holds unless renewed, by default: how long the messages a crashed server
/// was delivering wait before another server (or the same one, restarted) delivers them.
pub const DEFAULT_CLAIM_LEASE: Duration = Duration::from_secs(10);

/// This server's claims: its number and the lease.
pub(super) struct Claims {
    pub node: i64,
    lease: Duration,
    renewed: Instant,
}

impl Claims {
    pub fn new(node: i64) -> Claims {
        Claims {
            node,
            lease: DEFAULT_CLAIM_LEASE,
            renewed: Instant::now(),
        }
    }

    fn lease_seconds(&self) -> f64 {
        self.lease.as_secs_f64()
    }

    /// Whether the claims are due for renewal: a third of the lease has passed.
    fn renewal_due(&self, now: Instant) -> bool {
        now.duration_since(self.renewed) >= self.lease / 3
    }
}

impl PostgresStore {
    /// Sets how long a claim holds unless renewed: how long the messages of a server that
    /// died wait before another server may deliver them.
    pub fn set_claim_lease(&mut self, lease: Duration) {
        self.claims.lease = lease;
    }

    /// `Store::claim_messages`: the messages this server now holds, in their order.
    pub(super) fn claim(
        &mut self,
        messages: Vec<QueuedMessage>,
    ) -> Result<Vec<QueuedMessage>, StoreError> {
        if messages.is_empty() {
            return Ok(messages);
        }
        let ids: Vec<i64> = messages.iter().map(|m| i64::from(m.id.0)).collect();
        let (node, lease) = (self.claims.node, self.claims.lease_seconds());
        let claimed = self.run(|store| {
            let rows = store.conn.query(
                "WITH locked AS (SELECT m.ID FROM messages m WHERE m.ID = ANY($1) \
                                 AND NOT EXISTS (SELECT 1 FROM claims c WHERE c.ID = m.ID \
                                                 AND c.Node <> $2 AND c.Until >= now()) \
                                 FOR UPDATE OF m SKIP LOCKED) \
                 INSERT INTO claims (ID, Node, Until) \
                 SELECT ID, $2, now() + make_interval(secs => $3) FROM locked \
                 ON CONFLICT (ID) DO UPDATE SET Node = EXCLUDED.Node, Until = EXCLUDED.Until \
                 WHERE claims.Node = EXCLUDED.Node OR claims.Until < now() \
                 RETURNING ID",
                &[&ids, &node, &lease],
            )?;
            rows.iter()
                .map(|row| row.try_get::<_, i64>(0))
                .collect::<Result<HashSet<i64>, _>>()
                .map_err(StoreError::from)
        })?;
        if claimed.len() < messages.len() {
            log::debug!(
                "{} of {} messages are being delivered by another server",
                messages.len() - claimed.len(),
                messages.len()
            );
        }
        Ok(messages
            .into_iter()
            .filter(|message| claimed.contains(&i64::from(message.id.0)))
            .collect())
    }

    /// Lets every claim of this server go: it stops, and delivers nothing more.
    pub(super) fn release_claims(&mut self) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM claims WHERE Node = $1", &[&self.claims.node])?;
        Ok(())
    }

    /// `Store::renew_claims`: at most every third of the lease, outside any round, renews
    /// the claims of the messages still in flight here and drops this server's others (their
    /// replies were given up), so that other servers may deliver those at once.
    pub(super) fn renew(
        &mut self,
        now: Instant,
        in_flight: &mut dyn Iterator<Item = MessageId>,
    ) -> Result<(), StoreError> {
        if self.in_batch || !self.claims.renewal_due(now) {
            return Ok(());
        }
        let held: Vec<i64> = in_flight.map(|id| i64::from(id.0)).collect();
        let (node, lease) = (self.claims.node, self.claims.lease_seconds());
        self.conn.execute(
            "WITH renewed AS (UPDATE claims SET Until = now() + make_interval(secs => $3) \
                              WHERE Node = $1 AND ID = ANY($2)) \
             DELETE FROM claims WHERE Node = $1 AND NOT (ID = ANY($2))",
            &[&node, &held, &lease],
        )?;
        // Only once done: a failed renewal is tried again at the next turn.
        self.claims.renewed = now;
        Ok(())
    }
}
