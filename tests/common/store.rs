//! Which store the end-to-end tests' servers run on, and what those tests may ask of it from
//! outside, the same way on both backends: SQLite (a database file and its spool folder), or
//! with `MESSAGEU_TEST_STORE=postgres` a schema of the throwaway cluster
//! (`tests/common/postgres.rs`), named after the test's folder.

use std::fs;
use std::path::{Path, PathBuf};

use messageu::config::Database;

use super::postgres;

/// The store of a server whose folder is `dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestStore {
    /// The database file; its large contents are files in `<file>.spool`.
    Sqlite(PathBuf),
    /// The schema its tables are in.
    Postgres(String),
}

/// Whether this run's servers use PostgreSQL (`MESSAGEU_TEST_STORE=postgres`).
pub fn on_postgres() -> bool {
    match std::env::var("MESSAGEU_TEST_STORE").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("MESSAGEU_TEST_STORE is sqlite or postgres, not {other}"),
    }
}

/// True, with a note, when this run is on PostgreSQL and the test cannot run there (`why`:
/// it is about what only the SQLite store has);
/// docs/testing.md lists these tests.
pub fn skip_on_postgres(why: &str) -> bool {
    let skip = on_postgres();
    if skip {
        eprintln!("not run on PostgreSQL: {why}");
    }
    skip
}

impl TestStore {
    /// The store of a server in `dir` whose SQLite database would be `dir/<file>`.
    pub fn in_dir(dir: &Path, file: &str) -> TestStore {
        if !on_postgres() {
            return TestStore::Sqlite(dir.join(file));
        }
        let tag: String = dir
            .file_name()
            .map(|name| {
                name.as_encoded_bytes()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect()
            })
            .unwrap_or_default();
        TestStore::Postgres(format!("server_{tag}"))
    }

    /// The database setting of a server on it.
    pub fn database(&self) -> Database {
        match self {
            TestStore::Sqlite(path) => Database::Sqlite(path.clone()),
            TestStore::Postgres(schema) => Database::Postgres(postgres::server_schema_url(schema)),
        }
    }

    /// The binary's `--db` argument for it.
    pub fn db_arg(&self) -> String {
        match self.database() {
            Database::Sqlite(path) => path.to_str().expect("a UTF-8 path").to_owned(),
            // The URL itself: the setting's Display describes it without secrets.
            Database::Postgres(url) => url,
        }
    }

    /// The sizes of the large contents stored (spool files, or `contents` rows with their
    /// chunks' bytes), in no order. On SQLite this includes an upload's file as it fills.
    pub fn large_contents(&self) -> Vec<u64> {
        match self {
            TestStore::Sqlite(path) => fs::read_dir(spool_dir(path))
                .map(|entries| {
                    entries
                        .map(|entry| entry.and_then(|e| e.metadata()).map_or(0, |m| m.len()))
                        .collect()
                })
                .unwrap_or_default(),
            TestStore::Postgres(schema) => postgres::server_schema_query(
                schema,
                "SELECT coalesce(sum(octet_length(k.Data)), 0) FROM contents c \
                 LEFT JOIN content_chunks k ON k.Key = c.Key GROUP BY c.Key",
            )
            .lines()
            .map(|size| size.parse().expect("a content's size"))
            .collect(),
        }
    }

    /// Makes every large content a day older. A start of the PostgreSQL store removes the
    /// contents no message names only once they are old enough (an upload of another server
    /// on the database may still be waiting for its message's round): this lets a test see
    /// that removal without waiting. The SQLite store removes them at any start.
    pub fn backdate_contents(&self) {
        if let TestStore::Postgres(schema) = self {
            postgres::server_schema_query(
                schema,
                "UPDATE contents SET Stored = Stored - interval '1 day'",
            );
        }
    }

    /// Whether part of an upload has been written: a spool file with bytes in it, or a
    /// transaction that has written chunk rows (which no other session can see before it
    /// commits, but which holds its lock on the table until it ends).
    pub fn upload_written(&self) -> bool {
        match self {
            TestStore::Sqlite(_) => self.large_contents().iter().any(|&len| len > 0),
            TestStore::Postgres(schema) => {
                postgres::server_schema_query(
                    schema,
                    "SELECT count(*) FROM pg_locks \
                     WHERE relation = 'content_chunks'::regclass AND mode = 'RowExclusiveLock'",
                ) != "0"
            }
        }
    }
}

/// The spool folder of the SQLite database `path`.
fn spool_dir(path: &Path) -> PathBuf {
    let mut dir = path.as_os_str().to_owned();
    dir.push(".spool");
    PathBuf::from(dir)
}
