//! One connection to PostgreSQL with its prepared statements cached (each statement is
//! prepared once per connection, so that running it costs one round trip), and the pool that
//! makes every connection after the first: those large contents are written and read on,
//! and the new ones that replace a lost connection of the rounds (`link.rs`). Its attempts
//! are rate-limited, so that a database that is down costs the event loop a short connect
//! now and then, not one per request.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use postgres::error::Severity;
use postgres::types::ToSql;
use postgres::{Client, Config, NoTls, Row, Statement};

use crate::store::{Durability, StoreError};

/// Parameters of a statement.
pub(super) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Idle connections the pool keeps for the next content.
const IDLE_CONNECTIONS: usize = 4;

/// After a failed attempt to connect, none is made before this has passed.
pub(super) const REDIAL_INTERVAL: Duration = Duration::from_millis(250);

/// The longest one attempt waits for each host: connections are made on the event loop's
/// thread, which serves no one meanwhile. A shorter `connect_timeout` of the connection
/// string is kept.
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) struct Conn {
    client: Client,
    statements: HashMap<&'static str, Statement>,
    /// A statement failed with an error that ends the session (the server terminated it: a
    /// FATAL error arrives before the socket is seen closed).
    ended: bool,
}

impl Conn {
    /// Connects, and sets the durability of commits: with durability full a COMMIT returns
    /// once it is on disk (synchronous_commit on, PostgreSQL's default, set here in case the
    /// database or role says otherwise); with normal it may return before.
    pub fn connect(config: &Config, durability: Durability) -> Result<Conn, postgres::Error> {
        let mut client = config.connect(NoTls)?;
        client.batch_execute(match durability {
            Durability::Full => "SET synchronous_commit = on",
            Durability::Normal => "SET synchronous_commit = off",
        })?;
        Ok(Conn {
            client,
            statements: HashMap::new(),
            ended: false,
        })
    }

    fn statement(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql);
        let statement = self.noted(statement)?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }

    /// `result`, noting whether its error ended the session.
    fn noted<T>(&mut self, result: Result<T, postgres::Error>) -> Result<T, postgres::Error> {
        if let Err(error) = &result {
            let fatal = error.as_db_error().is_some_and(|db| {
                matches!(
                    db.parsed_severity(),
                    Some(Severity::Fatal | Severity::Panic)
                )
            });
            self.ended |= fatal || error.is_closed();
        }
        result
    }

    /// Runs a statement; returns the rows it changed.
    pub fn execute(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<u64, postgres::Error> {
        let statement = self.statement(sql)?;
        let result = self.client.execute(&statement, params);
        self.noted(result)
    }

    pub fn query(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Vec<Row>, postgres::Error> {
        let statement = self.statement(sql)?;
        let result = self.client.query(&statement, params);
        self.noted(result)
    }

    pub fn query_opt(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Option<Row>, postgres::Error> {
        let statement = self.statement(sql)?;
        let result = self.client.query_opt(&statement, params);
        self.noted(result)
    }

    pub fn query_one(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Row, postgres::Error> {
        let statement = self.statement(sql)?;
        let result = self.client.query_one(&statement, params);
        self.noted(result)
    }

    /// Runs statements without parameters in one round trip; returns the first column of the
    /// last row they return, if any.
    pub fn batch_value(&mut self, sql: &str) -> Result<Option<String>, postgres::Error> {
        let messages = self.client.simple_query(sql);
        let messages = self.noted(messages)?;
        Ok(messages.iter().rev().find_map(|message| match message {
            postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        }))
    }

    /// Runs statements without parameters (transaction control, migrations).
    pub fn batch(&mut self, sql: &str) -> Result<(), postgres::Error> {
        let result = self.client.batch_execute(sql);
        self.noted(result)
    }

    /// Whether the session is over: closed, or ended by the server.
    pub fn is_closed(&self) -> bool {
        self.ended || self.client.is_closed()
    }
}

/// Makes new connections, rate-limited, and keeps a few idle ones for large contents: each
/// upload holds one for its transaction, each reader one while it reads.
pub(super) struct Pool {
    /// The connection string's, with a connect timeout of at most [`DIAL_TIMEOUT`].
    config: Config,
    durability: Durability,
    idle: Mutex<Vec<Conn>>,
    /// When the last attempt to connect failed, if the last attempt failed.
    failed_at: Mutex<Option<Instant>>,
}

impl Pool {
    pub fn new(mut config: Config, durability: Durability) -> Pool {
        let timeout = config
            .get_connect_timeout()
            .map_or(DIAL_TIMEOUT, |timeout| (*timeout).min(DIAL_TIMEOUT));
        config.connect_timeout(timeout);
        Pool {
            config,
            durability,
            idle: Mutex::new(Vec::new()),
            failed_at: Mutex::new(None),
        }
    }

    /// The database's connection settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// An idle connection, or a new one.
    pub fn take(&self) -> Result<Conn, StoreError> {
        let idle = lock(&self.idle).pop();
        match idle {
            Some(conn) if !conn.is_closed() => Ok(conn),
            _ => self.dial(),
        }
    }

    /// A new connection; [`StoreError::Disconnected`] without trying while the last attempt
    /// failed less than [`REDIAL_INTERVAL`] ago.
    pub fn dial(&self) -> Result<Conn, StoreError> {
        let last_failure = *lock(&self.failed_at);
        if last_failure.is_some_and(|at| at.elapsed() < REDIAL_INTERVAL) {
            return Err(StoreError::Disconnected);
        }
        let dialed = Conn::connect(&self.config, self.durability);
        *lock(&self.failed_at) = dialed.is_err().then(Instant::now);
        Ok(dialed?)
    }

    /// A connection back, outside any transaction.
    pub fn give_back(&self, conn: Conn) {
        let mut idle = lock(&self.idle);
        if !conn.is_closed() && idle.len() < IDLE_CONNECTIONS {
            idle.push(conn);
        }
    }

    /// Drops the idle connections: made to a database since lost, they would fail the next
    /// contents.
    pub fn forget_idle(&self) {
        lock(&self.idle).clear();
    }
}

/// A panic while holding one of the pool's locks leaves its value usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Conn {
    /// Runs a query whose rows are read as they arrive, so that a caller that stops early
    /// holds no more than it read.
    pub fn query_iter<'a>(
        &'a mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<postgres::RowIter<'a>, postgres::Error> {
        let statement = self.statement(sql)?;
        self.client.query_raw(&statement, params.iter().copied())
    }
}
