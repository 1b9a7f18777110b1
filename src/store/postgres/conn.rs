//! One connection to PostgreSQL with its prepared statements cached (each statement is
//! prepared once per connection, so that running it costs one round trip), and the pool of
//! connections that large contents are written and read on, beside the batch's.

use std::collections::HashMap;
use std::sync::Mutex;

use postgres::types::ToSql;
use postgres::{Client, Config, NoTls, Row, Statement};

use crate::store::Durability;

/// Parameters of a statement.
pub(super) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Idle connections the pool keeps for the next content.
const IDLE_CONNECTIONS: usize = 4;

pub(super) struct Conn {
    client: Client,
    statements: HashMap<&'static str, Statement>,
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
        })
    }

    fn statement(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql)?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }

    /// Runs a statement; returns the rows it changed.
    pub fn execute(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<u64, postgres::Error> {
        let statement = self.statement(sql)?;
        self.client.execute(&statement, params)
    }

    pub fn query(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Vec<Row>, postgres::Error> {
        let statement = self.statement(sql)?;
        self.client.query(&statement, params)
    }

    pub fn query_opt(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Option<Row>, postgres::Error> {
        let statement = self.statement(sql)?;
        self.client.query_opt(&statement, params)
    }

    pub fn query_one(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Row, postgres::Error> {
        let statement = self.statement(sql)?;
        self.client.query_one(&statement, params)
    }

    /// Runs statements without parameters (transaction control, migrations).
    pub fn batch(&mut self, sql: &str) -> Result<(), postgres::Error> {
        self.client.batch_execute(sql)
    }

    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

/// Connections for large contents: each upload holds one for its transaction, each reader
/// one while it reads; given back, a few are kept for the next.
pub(super) struct Pool {
    config: Config,
    durability: Durability,
    idle: Mutex<Vec<Conn>>,
}

impl Pool {
    pub fn new(config: Config, durability: Durability) -> Pool {
        Pool {
            config,
            durability,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The database's connection settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// An idle connection, or a new one.
    pub fn take(&self) -> Result<Conn, postgres::Error> {
        let idle = self.idle().pop();
        match idle {
            Some(conn) if !conn.is_closed() => Ok(conn),
            _ => Conn::connect(&self.config, self.durability),
        }
    }

    /// A connection back, outside any transaction.
    pub fn give_back(&self, conn: Conn) {
        let mut idle = self.idle();
        if !conn.is_closed() && idle.len() < IDLE_CONNECTIONS {
            idle.push(conn);
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        // A panic while holding the lock leaves a list of connections, still usable.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
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
