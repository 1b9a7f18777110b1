//! Schema migrations: the numbered files of `migrations/`, applied in order at start-up and
//! tracked with `PRAGMA user_version`.
//!
//! A database another MessageU server created is adopted, but only after a trial run of
//! the migrations on a copy of its schema (in memory) shows that the result has every
//! table and column this server uses: a database that does not fit is left untouched.

use rusqlite::{Connection, OptionalExtension};

use super::StoreError;

/// Every migration, in order; migration `i` (from 0) brings the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_initial.sql"),
    include_str!("../../migrations/0002_spool.sql"),
    include_str!("../../migrations/0003_protection.sql"),
    include_str!("../../migrations/0004_accounts.sql"),
    include_str!("../../migrations/0005_message_ids.sql"),
    include_str!("../../migrations/0006_spool_index.sql"),
];

/// What makes a database unusable by this server, found before anything is changed.
#[derive(Debug, thiserror::Error)]
pub enum SchemaMismatch {
    #[error("{name} is a {found}, not a {expected}")]
    WrongKind {
        name: String,
        found: String,
        expected: String,
    },
    #[error("table {0} is missing")]
    MissingTable(String),
    #[error("table {table} has no column {column}")]
    MissingColumn { table: String, column: String },
    #[error("column {table}.{column} is {declared}, which cannot hold the blobs stored there")]
    NotBlob {
        table: String,
        column: String,
        declared: String,
    },
    #[error("migration {version} fails on it ({source})")]
    MigrationFails {
        version: usize,
        source: rusqlite::Error,
    },
}

/// Brings the schema up to date, after [`check`] has passed. Each migration runs in its own
/// transaction with its version bump, so a crash leaves the database at a whole version.
pub fn apply(conn: &mut Connection) -> Result<(), StoreError> {
    let found = version(conn)?;
    run(conn, found, MIGRATIONS.len(), |version| {
        log::info!("database schema migrated to version {version}")
    })
    .map_err(|(_, error)| error.into())
}

/// Whether the migrations can bring this database up to date into a schema this server can
/// use. Reads only: a database that fails is left byte for byte as it was.
pub fn check(conn: &Connection) -> Result<(), StoreError> {
    let found = version(conn)?;
    let objects = schema(&migrated_to(MIGRATIONS.len())?)?;
    // A copy of the objects the migrations create or change, as this database has them.
    let mut trial = Connection::open_in_memory()?;
    for object in schema(conn)? {
        let wanted = objects
            .iter()
            .find(|wanted| wanted.name.eq_ignore_ascii_case(&object.name));
        let Some(wanted) = wanted else {
            continue;
        };
        if !object.kind.eq_ignore_ascii_case(&wanted.kind) {
            return Err(SchemaMismatch::WrongKind {
                name: object.name,
                found: object.kind,
                expected: wanted.kind.clone(),
            }
            .into());
        }
        trial.execute_batch(&object.sql)?;
    }
    trial.pragma_update(None, "user_version", found as i64)?;
    let migrated = run(&mut trial, found, MIGRATIONS.len(), |_| {});
    // The trial stopped at the version before a failed migration (rolled back); its tables
    // must have that version's columns, and adopted tables at least the first migration's.
    // A missing column is named before the failed migration: it says more.
    let reached = match &migrated {
        Ok(()) => MIGRATIONS.len(),
        Err((failed, _)) => failed - 1,
    };
    let expected = migrated_to(reached.max(1))?;
    for table in objects.iter().filter(|object| object.kind == "table") {
        compare_columns(&expected, &trial, &table.name, migrated.is_ok())?;
    }
    migrated.map_err(|(version, source)| SchemaMismatch::MigrationFails { version, source })?;
    Ok(())
}

/// A new in-memory database at schema `version`.
fn migrated_to(version: usize) -> Result<Connection, StoreError> {
    let mut conn = Connection::open_in_memory()?;
    run(&mut conn, 0, version, |_| {}).map_err(|(_, error)| error)?;
    Ok(conn)
}

/// The schema version, refused if newer than the migrations know.
fn version(conn: &Connection) -> Result<usize, StoreError> {
    let supported = MIGRATIONS.len() as i64;
    let found: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if found > supported {
        return Err(StoreError::SchemaTooNew { found, supported });
    }
    // A negative user_version was set by another program: no migration has run.
    Ok(usize::try_from(found).unwrap_or(0))
}

/// Runs the migrations after version `from` up to version `to`, calling `done` with each
/// version reached; a failure names the version that failed.
fn run(
    conn: &mut Connection,
    from: usize,
    to: usize,
    mut done: impl FnMut(usize),
) -> Result<(), (usize, rusqlite::Error)> {
    for (index, sql) in MIGRATIONS[..to].iter().enumerate().skip(from) {
        let version = index + 1;
        let mut migrate = || -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", version as i64)?;
            tx.commit()
        };
        migrate().map_err(|error| (version, error))?;
        done(version);
    }
    Ok(())
}

/// A table, index, view or trigger of a schema.
struct Object {
    kind: String,
    name: String,
    sql: String,
}

/// The schema's objects, in the order they were created.
fn schema(conn: &Connection) -> rusqlite::Result<Vec<Object>> {
    let mut query = conn.prepare(
        "SELECT type, name, sql FROM sqlite_master \
         WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY rowid",
    )?;
    let objects = query.query_map([], |row| {
        Ok(Object {
            kind: row.get(0)?,
            name: row.get(1)?,
            sql: row.get(2)?,
        })
    })?;
    objects.collect()
}

/// A column of a table.
struct Column {
    name: String,
    declared: String,
    primary_key: bool,
}

fn columns(conn: &Connection, table: &str) -> rusqlite::Result<Vec<Column>> {
    let mut query = conn.prepare("SELECT name, type, pk FROM pragma_table_info(?1)")?;
    let columns = query.query_map([table], |row| {
        Ok(Column {
            name: row.get(0)?,
            declared: row.get(1)?,
            primary_key: row.get::<_, i64>(2)? != 0,
        })
    })?;
    columns.collect()
}

/// Checks that `table` of `trial` has every column it has in `expected`, and that those
/// `expected` declares BLOB can hold a blob. An absent table is an error if `must_exist`.
fn compare_columns(
    expected: &Connection,
    trial: &Connection,
    table: &str,
    must_exist: bool,
) -> Result<(), StoreError> {
    let found = columns(trial, table)?;
    if found.is_empty() {
        return match must_exist {
            true => Err(SchemaMismatch::MissingTable(table.to_owned()).into()),
            false => Ok(()),
        };
    }
    let (without_rowid, strict): (bool, bool) = trial
        .query_row(
            "SELECT wr, strict FROM pragma_table_list(?1) WHERE schema = 'main'",
            [table],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?
        .unwrap_or_default();
    let primary_keys = found.iter().filter(|column| column.primary_key).count();
    for wanted in columns(expected, table)? {
        let column = found
            .iter()
            .find(|column| column.name.eq_ignore_ascii_case(&wanted.name))
            .ok_or_else(|| SchemaMismatch::MissingColumn {
                table: table.to_owned(),
                column: wanted.name.clone(),
            })?;
        if !wanted.declared.eq_ignore_ascii_case("BLOB") {
            continue;
        }
        let declared = &column.declared;
        // An INTEGER PRIMARY KEY is the rowid itself: a blob in it is a datatype mismatch.
        let rowid = !without_rowid
            && column.primary_key
            && primary_keys == 1
            && declared.eq_ignore_ascii_case("INTEGER");
        let strict_non_blob = strict
            && !["BLOB", "ANY"]
                .iter()
                .any(|t| declared.eq_ignore_ascii_case(t));
        let shape = if rowid {
            format!("{declared} PRIMARY KEY (the rowid)")
        } else if strict_non_blob {
            format!("{declared} in a STRICT table")
        } else {
            continue;
        };
        return Err(SchemaMismatch::NotBlob {
            table: table.to_owned(),
            column: column.name.clone(),
            declared: shape,
        }
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_applied_once_and_versioned() {
        let mut conn = Connection::open_in_memory().unwrap();
        apply(&mut conn).unwrap();
        apply(&mut conn).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name IN ('clients', 'messages', 'messages_to_client')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 3);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        assert!(matches!(
            apply(&mut conn),
            Err(StoreError::SchemaTooNew { found: 99, .. })
        ));
    }

    /// What `check` says of a database made by `sql`.
    fn check_after(sql: &str) -> Result<(), StoreError> {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(sql).unwrap();
        check(&conn)
    }

    fn mismatch(sql: &str) -> String {
        match check_after(sql) {
            Err(StoreError::Incompatible(mismatch)) => mismatch.to_string(),
            other => panic!("{sql}: {other:?}"),
        }
    }

    #[test]
    fn a_database_of_another_server_with_the_specified_columns_is_adopted() {
        check_after(
            "CREATE TABLE Clients (id BLOB PRIMARY KEY, UserName TEXT, PublicKey BLOB, \
             LastSeen TEXT, Extra TEXT);
             CREATE TABLE messages (ID INTEGER PRIMARY KEY AUTOINCREMENT, ToClient BLOB, \
             FromClient BLOB, Type INTEGER, Content BLOB);
             CREATE TABLE unrelated (x);",
        )
        .unwrap();
        check_after("").unwrap();
    }

    #[test]
    fn a_missing_column_is_named_even_where_a_migration_would_fail_first() {
        let clients = "CREATE TABLE clients (ID BLOB PRIMARY KEY, UserName TEXT, LastSeen TEXT)";
        assert_eq!(mismatch(clients), "table clients has no column PublicKey");
        // The index on ToClient fails before the columns could be compared.
        let messages = "CREATE TABLE messages (ID INTEGER, FromClient BLOB, Type INTEGER)";
        assert_eq!(mismatch(messages), "table messages has no column ToClient");
    }

    #[test]
    fn a_wrong_kind_or_shape_is_named() {
        assert_eq!(
            mismatch("CREATE VIEW clients AS SELECT 1 AS ID"),
            "clients is a view, not a table"
        );
        assert_eq!(
            mismatch(
                "CREATE TABLE clients (ID INTEGER PRIMARY KEY, UserName TEXT, \
                 PublicKey BLOB, LastSeen TEXT)"
            ),
            "column clients.ID is INTEGER PRIMARY KEY (the rowid), which cannot hold the \
             blobs stored there"
        );
        assert_eq!(
            mismatch(
                "CREATE TABLE clients (ID BLOB PRIMARY KEY, UserName TEXT, \
                 PublicKey TEXT, LastSeen TEXT) STRICT"
            ),
            "column clients.PublicKey is TEXT in a STRICT table, which cannot hold the \
             blobs stored there"
        );
    }

    #[test]
    fn a_migration_that_would_fail_is_named() {
        let message = mismatch(
            "CREATE TABLE messages (ID INTEGER, ToClient BLOB, FromClient BLOB, \
             Type INTEGER, Content BLOB, SpoolFile TEXT)",
        );
        assert!(
            message.starts_with("migration 2 fails on it ("),
            "{message}"
        );
        assert!(message.contains("SpoolFile"), "{message}");
    }

    #[test]
    fn checking_changes_nothing() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE clients (ID BLOB)")
            .unwrap();
        assert!(check(&conn).is_err());
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tables, 1);
        assert_eq!(version(&conn).unwrap(), 0);
    }
}
