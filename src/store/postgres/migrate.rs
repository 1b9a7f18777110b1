//! The PostgreSQL store's schema migrations: the numbered files of `migrations/postgres/`,
//! applied in order at start-up, each in its own transaction with its row in
//! `schema_migrations`. Servers sharing a database take an advisory lock first, so that one
//! migrates and the others find it done.

use super::conn::Conn;
use crate::store::StoreError;

/// Every migration, in order; migration `i` (from 0) brings the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/postgres/0001_initial.sql"),
    include_str!("../../../migrations/postgres/0002_claims.sql"),
    include_str!("../../../migrations/postgres/0003_client_changes.sql"),
    include_str!("../../../migrations/postgres/0004_listed.sql"),
];

/// The advisory lock the migrations hold: any constant of this server's own.
const MIGRATION_LOCK: i64 = 0x4d65_7373_6167_6555; // "MessageU"

/// Brings the schema up to date; refuses a schema newer than this server knows.
pub(super) fn apply(conn: &mut Conn) -> Result<(), StoreError> {
    conn.batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (\
             Version INTEGER PRIMARY KEY, \
             Applied TIMESTAMPTZ NOT NULL DEFAULT now())",
    )?;
    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let version = index as i32 + 1;
        conn.batch("BEGIN")?;
        let migrated = migrate(conn, version, sql);
        match migrated {
            Ok(true) => {
                conn.batch("COMMIT")?;
                log::info!("database schema migrated to version {version}");
            }
            Ok(false) => conn.batch("COMMIT")?,
            Err(error) => {
                // The migration's error says more than a failed rollback's would.
                let _ = conn.batch("ROLLBACK");
                return Err(error);
            }
        }
    }
    Ok(())
}

/// Runs migration `version` unless it has run; returns whether it ran.
fn migrate(conn: &mut Conn, version: i32, sql: &str) -> Result<bool, StoreError> {
    conn.query_one("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    let found: i32 = conn
        .query_one(
            "SELECT coalesce(max(Version), 0) FROM schema_migrations",
            &[],
        )?
        .try_get(0)?;
    let supported = MIGRATIONS.len() as i32;
    if found > supported {
        return Err(StoreError::SchemaTooNew {
            found: found.into(),
            supported: supported.into(),
        });
    }
    if found >= version {
        return Ok(false);
    }
    conn.batch(sql)?;
    conn.execute(
        "INSERT INTO schema_migrations (Version) VALUES ($1)",
        &[&version],
    )?;
    Ok(true)
}

/// The schema version the migrations bring a database to.
#[cfg(test)]
pub(super) fn latest() -> i32 {
    MIGRATIONS.len() as i32
}
