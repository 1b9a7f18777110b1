//! Server settings and the port files of protocol §8.

use std::fmt;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::store::{Durability, DEFAULT_CLAIM_LEASE};

/// The port every edition's server uses when no port file says otherwise.
pub const DEFAULT_PORT: u16 = 1357;
/// Port files, in the order they are read: the current name, then older editions' name.
pub const PORT_FILES: [&str; 2] = ["myport.info", "port.info"];
/// The protocol's own limit: a payload size is a u32.
pub const DEFAULT_MAX_PAYLOAD: u32 = u32::MAX;
/// Send contents above this are streamed to a spool file instead of buffered.
pub const DEFAULT_SPOOL_THRESHOLD: u32 = 256 << 10;
/// Free disk space that uploads must leave, for the database and the rest of the system.
pub const DEFAULT_MIN_FREE_SPACE: u64 = 128 << 20;
/// How often the summary line is logged, in seconds.
pub const DEFAULT_STATS_INTERVAL: u64 = 60;
/// How long a challenge can be answered (protocol §E3).
pub const CHALLENGE_LIFETIME: Duration = Duration::from_secs(30);
/// The longest wait of a long-poll, announced in the hello (protocol §E6).
pub const DEFAULT_LONG_POLL_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database: Database,
    pub durability: Durability,
    /// Largest payload a request may declare; larger ones are refused unread.
    pub max_payload: u32,
    /// Send contents larger than this are streamed into a spool file as they arrive; smaller
    /// ones are buffered and stored in their row.
    pub spool_threshold: u32,
    /// Free disk space an upload must leave; one that would not is refused before its
    /// content is read.
    pub min_free_space: u64,
    /// Open connections at most. At the cap, the longest-idle connection is closed to make
    /// room for a new one; with none idle, the new one is accepted and closed at once.
    pub max_connections: usize,
    /// How long to wait for the rest of a partly arrived block of padding (protocol §4.3).
    pub padding_grace: Duration,
    /// How long a connection being closed may keep sending before it is dropped, so that a
    /// final reply is not destroyed by a reset.
    pub linger: Duration,
    /// How long shutdown waits for produced replies to be written.
    pub shutdown_grace: Duration,
    /// How long a started request may take to arrive whole (for a large upload: how long its
    /// content may stall), and how long unread replies may wait for the client to read on;
    /// past it the connection is closed.
    pub request_timeout: Duration,
    /// How long a connection that has not yet completed a request may stay silent before it
    /// is closed. Once one has, it is never closed for idling: persistent clients connect
    /// once per session (protocol §4 rule 4).
    pub idle_timeout: Duration,
    /// Open connections from one IP address at most; more are accepted and closed at once.
    pub max_connections_per_ip: usize,
    /// A cap on the database file's size, in bytes: sends that would pass it are refused.
    pub max_db_size: Option<u64>,
    /// Where to serve `/metrics` and `/health` over HTTP; `None`: nowhere.
    pub metrics: Option<SocketAddr>,
    /// How often to log the summary line; zero: never.
    pub stats_interval: Duration,
    /// How long a challenge can be answered (protocol §E3: 30 s; shorter in tests).
    pub challenge_lifetime: Duration,
    /// The longest a long-poll waits for a message (protocol §E6); longer waits asked are
    /// cut to it. Zero answers every long-poll at once, like a pull.
    pub long_poll_limit: Duration,
    /// How long a pull reply's claim holds its messages against servers sharing a
    /// PostgreSQL database if this server dies while writing it.
    pub claim_lease: Duration,
}

impl Config {
    /// Defaults for a server on `listen` with its database at `database`.
    pub fn new(listen: SocketAddr, database: impl Into<Database>) -> Config {
        Config {
            listen,
            database: database.into(),
            durability: Durability::Full,
            max_payload: DEFAULT_MAX_PAYLOAD,
            spool_threshold: DEFAULT_SPOOL_THRESHOLD,
            min_free_space: DEFAULT_MIN_FREE_SPACE,
            max_connections: 10_000,
            padding_grace: Duration::from_millis(200),
            linger: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(600),
            max_connections_per_ip: usize::MAX,
            max_db_size: None,
            metrics: None,
            stats_interval: Duration::from_secs(DEFAULT_STATS_INTERVAL),
            challenge_lifetime: CHALLENGE_LIFETIME,
            long_poll_limit: DEFAULT_LONG_POLL_LIMIT,
            claim_lease: DEFAULT_CLAIM_LEASE,
        }
    }

    /// A server on an ephemeral loopback port, for tests and benchmarks.
    pub fn loopback(database: impl Into<Database>) -> Config {
        Config::new(
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            database,
        )
    }
}

/// Where the server keeps its state: `--db`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// An SQLite database file, created if missing, with its spool folder beside it.
    Sqlite(PathBuf),
    /// A PostgreSQL database, by its libpq connection string (URL or key=value).
    Postgres(String),
}

/// The keywords a libpq key=value connection string may start with.
const CONNINFO_KEYWORDS: [&str; 12] = [
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "options",
    "application_name",
    "sslmode",
    "connect_timeout",
    "target_session_attrs",
    "keepalives",
];

impl Database {
    /// A `postgres://` or `postgresql://` URL, or a libpq key=value string (`host=… dbname=…`),
    /// names a PostgreSQL database; anything else is an SQLite file's path.
    pub fn parse(text: &str) -> Database {
        let url = ["postgres://", "postgresql://"]
            .iter()
            .any(|scheme| text.starts_with(scheme));
        let key_value = text
            .split_once('=')
            .is_some_and(|(key, _)| CONNINFO_KEYWORDS.contains(&key.trim()));
        if url || key_value {
            Database::Postgres(text.to_owned())
        } else {
            Database::Sqlite(PathBuf::from(text))
        }
    }

    /// The SQLite file, if that is the database.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Database::Sqlite(path) => Some(path),
            Database::Postgres(_) => None,
        }
    }
}

impl From<PathBuf> for Database {
    fn from(path: PathBuf) -> Database {
        Database::Sqlite(path)
    }
}

/// For logs and errors: a PostgreSQL database by its name and hosts, never its password.
impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let conninfo = match self {
            Database::Sqlite(path) => return write!(f, "{}", path.display()),
            Database::Postgres(conninfo) => conninfo,
        };
        let Ok(config) = conninfo.parse::<postgres::Config>() else {
            return f.write_str("PostgreSQL (an invalid connection string)");
        };
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|host| match host {
                postgres::config::Host::Tcp(name) => name.clone(),
                postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        let name = config
            .get_dbname()
            .or(config.get_user())
            .unwrap_or("postgres");
        write!(f, "PostgreSQL database {name} on {}", hosts.join(","))
    }
}

/// Where the port came from, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSource {
    File(PathBuf),
    /// No usable port file: the default, with the reason for the warning.
    Default(String),
}

/// The port to listen on, and the port files that were present but unusable: each of those
/// deserves a warning even when another file supplied the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortChoice {
    pub port: u16,
    pub source: PortSource,
    pub problems: Vec<String>,
}

/// Reads the port from `myport.info`, else `port.info`, in `dir`. A file that is missing,
/// unreadable or holds no valid port is passed over for the next; the default comes last.
pub fn port_from_files(dir: &Path) -> PortChoice {
    let mut problems = Vec::new();
    for name in PORT_FILES {
        let path = dir.join(name);
        match fs::read_to_string(&path) {
            Ok(text) => match parse_port(&text) {
                Some(port) => {
                    return PortChoice {
                        port,
                        source: PortSource::File(path),
                        problems,
                    }
                }
                None => problems.push(format!("{} holds no valid port", path.display())),
            },
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => problems.push(format!("cannot read {} ({error})", path.display())),
        }
    }
    let reason = if problems.is_empty() {
        format!("neither {} nor {} found", PORT_FILES[0], PORT_FILES[1])
    } else {
        "no port file holds a valid port".to_owned()
    };
    PortChoice {
        port: DEFAULT_PORT,
        source: PortSource::Default(reason),
        problems,
    }
}

/// One line with a decimal port from 1 to 65535; surrounding white space is allowed.
fn parse_port(text: &str) -> Option<u16> {
    text.trim().parse().ok().filter(|&port| port != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn databases_are_postgres_urls_or_conninfo_strings_else_paths() {
        let postgres = |text: &str| Database::Postgres(text.to_owned());
        for text in [
            "postgres://u:secret@db1,db2/messageu?target_session_attrs=read-write",
            "postgresql:///messageu",
            "host=db1,db2 dbname=messageu target_session_attrs=read-write",
            "dbname=messageu",
        ] {
            assert_eq!(Database::parse(text), postgres(text));
        }
        for text in [
            "defensive.db",
            "/var/lib/messageu/server.db",
            "a=b.db",
            "postgres.db",
        ] {
            assert_eq!(Database::parse(text), Database::Sqlite(PathBuf::from(text)));
        }
        let url = Database::parse("postgres://u:secret@db1,db2/messageu");
        assert_eq!(url.to_string(), "PostgreSQL database messageu on db1,db2");
        assert_eq!(
            Database::parse("x.db").sqlite_path(),
            Some(Path::new("x.db"))
        );
    }

    #[test]
    fn ports_parse_from_one_decimal_line() {
        assert_eq!(parse_port("1234\n"), Some(1234));
        assert_eq!(parse_port(" 8080 \r\n"), Some(8080));
        assert_eq!(parse_port("0"), None);
        assert_eq!(parse_port("65536"), None);
        assert_eq!(parse_port("port=1"), None);
        assert_eq!(parse_port(""), None);
    }

    #[test]
    fn myport_info_wins_then_port_info_then_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let choice = port_from_files(dir.path());
        assert_eq!(choice.port, DEFAULT_PORT);
        assert!(matches!(choice.source, PortSource::Default(_)));
        assert!(choice.problems.is_empty());
        fs::write(dir.path().join("port.info"), "2222").unwrap();
        assert_eq!(port_from_files(dir.path()).port, 2222);
        fs::write(dir.path().join("myport.info"), "3333\n").unwrap();
        let choice = port_from_files(dir.path());
        assert_eq!(choice.port, 3333);
        assert_eq!(
            choice.source,
            PortSource::File(dir.path().join("myport.info"))
        );
    }

    #[test]
    fn an_invalid_myport_info_is_reported_and_port_info_used() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("myport.info"), "junk").unwrap();
        fs::write(dir.path().join("port.info"), "2222\n").unwrap();
        let choice = port_from_files(dir.path());
        assert_eq!(choice.port, 2222);
        assert_eq!(
            choice.source,
            PortSource::File(dir.path().join("port.info"))
        );
        assert_eq!(choice.problems.len(), 1, "{:?}", choice.problems);
        assert!(choice.problems[0].contains("myport.info holds no valid port"));
    }

    #[test]
    fn unusable_port_files_fall_back_to_the_default_with_every_problem() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("myport.info"), "0").unwrap();
        fs::create_dir(dir.path().join("port.info")).unwrap();
        let choice = port_from_files(dir.path());
        assert_eq!(choice.port, DEFAULT_PORT);
        assert!(matches!(choice.source, PortSource::Default(_)));
        assert_eq!(choice.problems.len(), 2, "{:?}", choice.problems);
        assert!(
            choice.problems[1].contains("cannot read"),
            "{:?}",
            choice.problems
        );
    }
}
