//! The rounds' connection, kept up across database failures: [`Link`] owns the connection
//! the rounds' transactions run on and whether the database is lost. A connection that broke
//! (the server died, or a failover moved the primary elsewhere) is found closed after its
//! failed statement; where no transaction is open, the next round replaces it with one the
//! pool makes from the same connection string, whose hosts and
//! `target_session_attrs=read-write` find the primary wherever it now runs. Statements are
//! prepared again on the new connection (the cache belongs to the connection).
//!
//! A transaction never moves to a new connection: what the round wrote before the break died
//! with the old one, so the round fails as a whole (its replies become 9000, nothing they
//! stand for was acknowledged) and the next round begins on the new connection.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Instant;

use super::conn::{Conn, Pool, REDIAL_INTERVAL};
use crate::store::StoreError;

/// What [`Link::ensure`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Checked {
    /// The connection is the one of before.
    Same,
    /// It was lost and is replaced: what was read from the database before may be stale.
    Renewed,
}

/// The rounds' connection and its replacement when lost.
pub(super) struct Link {
    conn: Conn,
    pool: Arc<Pool>,
    /// When the loss of the connection was noticed; `None` while it is up.
    lost_since: Option<Instant>,
}

impl Link {
    pub fn new(conn: Conn, pool: Arc<Pool>) -> Link {
        Link {
            conn,
            pool,
            lost_since: None,
        }
    }

    /// Replaces a closed connection by a new one; to be called where no transaction is open.
    /// While none can be made, answers [`StoreError::Disconnected`] (the pool tries again
    /// at most every [`REDIAL_INTERVAL`]). Logs a line when the loss is noticed and one when
    /// the database is back.
    pub fn ensure(&mut self) -> Result<Checked, StoreError> {
        if !self.conn.is_closed() {
            return Ok(Checked::Same);
        }
        let dialed = self.pool.dial();
        let since = *self.lost_since.get_or_insert_with(|| {
            match &dialed {
                Ok(_) => log::warn!("lost the connection to the database"),
                Err(error) => log::warn!(
                    "lost the connection to the database ({}); reconnecting every {} ms",
                    with_causes(error),
                    REDIAL_INTERVAL.as_millis()
                ),
            }
            Instant::now()
        });
        let conn = dialed.map_err(|error| {
            if !matches!(error, StoreError::Disconnected) {
                log::debug!("cannot reconnect to the database: {error}");
            }
            StoreError::Disconnected
        })?;
        self.conn = conn;
        self.lost_since = None;
        // Made to the database that was lost, they would fail the next contents.
        self.pool.forget_idle();
        log::info!(
            "connected to the database again, {:.2} s after the connection was lost",
            since.elapsed().as_secs_f64()
        );
        Ok(Checked::Renewed)
    }
}

/// An error and its causes, which the `postgres` crate's errors do not show themselves.
fn with_causes(error: &StoreError) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(error) = cause {
        text = format!("{text}: {error}");
        cause = error.source();
    }
    text
}

/// The statements of the rounds run on the current connection.
impl Deref for Link {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        &self.conn
    }
}

impl DerefMut for Link {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.conn
    }
}

#[cfg(test)]
#[path = "link_tests.rs"]
mod tests;
