//! `messageu-server`: command line, logging and start-up/shutdown wiring only.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use messageu::config::{self, Database, PortSource};
use messageu::protocol::Edition;
use messageu::server::ServerError;
use messageu::store::{Durability, DEFAULT_CLAIM_LEASE};
use messageu::{Config, Server};

/// A MessageU server: store-and-forward for end-to-end encrypted chat, compatible with the
/// clients of every edition (2021, 2022-23, 2024-25, 2026). Type q and Enter to stop it.
#[derive(Debug, Parser)]
#[command(name = "messageu-server", version)]
struct Cli {
    /// TCP port. Default: the number in myport.info (or port.info) in the working directory,
    /// else 1357. Use 0 for any free port (the log says which).
    #[arg(long, value_name = "PORT")]
    port: Option<u16>,
    /// Address or host name to listen on; a host name listens on the first of its addresses
    /// that can be bound. The default listens on every network interface.
    #[arg(long, value_name = "HOST", default_value = "0.0.0.0")]
    bind: String,
    /// SQLite database file, created if missing; or a PostgreSQL database: a postgres:// URL
    /// or a libpq key=value string (several hosts and target_session_attrs=read-write
    /// allowed), whose tables are created if missing.
    #[arg(long, value_name = "PATH|URL", default_value = "defensive.db", value_parser = parse_database)]
    db: Database,
    /// full: every acknowledged write is on disk before its reply (the log is flushed after
    /// each commit that holds one). normal: survives a crash of the server but may lose the
    /// last commits on a power cut; faster.
    #[arg(long, value_name = "full|normal", default_value = "full", value_parser = str::parse::<Durability>)]
    durability: Durability,
    /// Largest request payload in bytes; larger ones are refused (9000) and the connection
    /// closed, unread. Also the most message bytes one pull reply carries.
    #[arg(long, value_name = "BYTES", default_value_t = config::DEFAULT_MAX_PAYLOAD)]
    max_payload: u32,
    /// Send contents above this many bytes are streamed to a spool file beside the database
    /// as they arrive, instead of buffered and stored in their row.
    #[arg(long, value_name = "BYTES", default_value_t = config::DEFAULT_SPOOL_THRESHOLD)]
    spool_threshold: u32,
    /// Free disk space in bytes that uploads must leave; a send whose content would not is
    /// refused (9000) before its content is read. More than the file system holds is refused
    /// at start.
    #[arg(long, value_name = "BYTES", default_value_t = config::DEFAULT_MIN_FREE_SPACE)]
    min_free_space: u64,
    /// Most open client connections. At the cap, the longest-idle connection is closed to make
    /// room for a new one (logged); with none idle, the new one is closed at once. Default: as
    /// many as the file-descriptor limit allows, after raising the soft limit to the hard one.
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Most open connections from one IP address; more are accepted and closed at once.
    /// Default: no limit, since clients behind one NAT share an address.
    #[arg(long, value_name = "N")]
    max_connections_per_ip: Option<usize>,
    /// Seconds a started request may take to arrive whole (a large upload: may stall), and
    /// replies may wait unread, before the connection is closed.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    request_timeout: u64,
    /// Seconds a connection that has not yet completed a request may stay silent before it
    /// is closed. A connection that has completed one is never closed for idling.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    idle_timeout: u64,
    /// Cap on the database file's size in bytes; sends that would pass it get 9000 while
    /// everything else goes on. Default: limited only by the disk (and --min-free-space).
    #[arg(long, value_name = "BYTES")]
    max_db_size: Option<u64>,
    /// Serve Prometheus metrics (GET /metrics) and a health check (GET /health) over HTTP
    /// on this host:port, e.g. 127.0.0.1:9100. Default: off.
    #[arg(long, value_name = "ADDR", value_parser = host_and_port)]
    metrics: Option<SocketAddr>,
    /// With PostgreSQL: seconds a pull reply's claim on its messages holds if this server
    /// dies while writing it; after that, another server sharing the database may deliver
    /// them. Renewed while the reply is being written.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_CLAIM_LEASE.as_secs_f64(), value_parser = claim_lease)]
    claim_lease: f64,
    /// Seconds between summary lines in the log (connections, requests, messages, queue,
    /// database size); 0 turns them off.
    #[arg(long, value_name = "SECONDS", default_value_t = config::DEFAULT_STATS_INTERVAL)]
    stats_interval: u64,
}

/// Why the server could not start or stopped with a failure.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("cannot resolve --bind {host} ({source})")]
    Resolve { host: String, source: io::Error },
    #[error("cannot resolve --bind {0} (it has no address)")]
    NoAddress(String),
    #[error(transparent)]
    Server(#[from] ServerError),
}

/// Descriptors kept for the database, its journal, the poll, logging and standard streams.
const RESERVED_DESCRIPTORS: u64 = 32;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version.
        Err(error) if !error.use_stderr() => error.exit(),
        // One line like every start-up error, instead of clap's message and usage.
        Err(error) => {
            let message = error.to_string();
            let problem = message.lines().next().unwrap_or_default();
            let problem = problem.strip_prefix("error: ").unwrap_or(problem);
            eprintln!("messageu-server: invalid command line ({problem}; see --help)");
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("messageu-server: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    let port = cli.port.unwrap_or_else(|| {
        let choice = config::port_from_files(Path::new("."));
        for problem in &choice.problems {
            log::warn!("{problem}");
        }
        match choice.source {
            PortSource::File(path) => log::info!("port {} from {}", choice.port, path.display()),
            PortSource::Default(reason) => {
                log::warn!("{reason}; using the default port {}", choice.port)
            }
        }
        choice.port
    });
    let addrs = resolve(&cli.bind, port)?;
    let mut config = Config::new(addrs[0], cli.db);
    config.durability = cli.durability;
    config.max_payload = cli.max_payload;
    config.spool_threshold = cli.spool_threshold;
    config.min_free_space = cli.min_free_space;
    config.max_connections = cli.max_connections.unwrap_or_else(connection_limit);
    config.max_connections_per_ip = cli.max_connections_per_ip.unwrap_or(usize::MAX);
    config.request_timeout = Duration::from_secs(cli.request_timeout);
    config.idle_timeout = Duration::from_secs(cli.idle_timeout);
    config.max_db_size = cli.max_db_size;
    config.metrics = cli.metrics;
    config.stats_interval = Duration::from_secs(cli.stats_interval);
    config.claim_lease = Duration::from_secs_f64(cli.claim_lease);

    let server = bind_any(config.clone(), &addrs)?;
    let shutdown = server.shutdown_handle();
    shutdown.watch_signals().map_err(ServerError::Io)?;
    shutdown.watch_stdin().map_err(ServerError::Io)?;
    let editions: Vec<_> = Edition::ALL
        .iter()
        .map(|edition| format!("{} ({}..)", edition.name(), edition.request_base()))
        .collect();
    log::info!(
        "listening on {}, database {} (durability {}), editions {}; type q and Enter to stop",
        server.local_addr(),
        config.database,
        config.durability,
        editions.join(", ")
    );
    Ok(server.run()?)
}

/// The addresses of `host` (an IP address or a host name), never empty.
fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, Error> {
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|source| Error::Resolve {
            host: host.to_owned(),
            source,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(Error::NoAddress(host.to_owned()));
    }
    Ok(addrs)
}

/// Starts a server on the first of `addrs` that can be bound: `localhost` may name an IPv6
/// address on a machine without IPv6. Nothing is opened before a bind succeeds.
fn bind_any(mut config: Config, addrs: &[SocketAddr]) -> Result<Server, ServerError> {
    for &addr in &addrs[..addrs.len() - 1] {
        config.listen = addr;
        match Server::bind(config.clone()) {
            Err(ServerError::Listen { addr, source }) => {
                log::warn!("cannot listen on {addr} ({source}); trying the next address")
            }
            result => return result,
        }
    }
    config.listen = addrs[addrs.len() - 1];
    Server::bind(config)
}

/// Raises the soft descriptor limit to the hard one and leaves room for the server's own
/// files, so that accepting never runs the process out of descriptors.
fn connection_limit() -> usize {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit.saturating_sub(RESERVED_DESCRIPTORS).max(1) as usize,
        Err(error) => {
            log::warn!("cannot read the descriptor limit ({error}); allowing 1000 connections");
            1000
        }
    }
}

fn parse_database(text: &str) -> Result<Database, String> {
    Ok(Database::parse(text))
}

/// A claim lease: a positive number of seconds, at most a day.
fn claim_lease(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds > 0.0 && seconds <= 86_400.0 => Ok(seconds),
        _ => Err(format!(
            "{text} is not a number of seconds above 0 and at most 86400"
        )),
    }
}

/// A `host:port` as the command line gives it: an address, or a name such as localhost.
fn host_and_port(text: &str) -> Result<SocketAddr, String> {
    let mut addrs = text
        .to_socket_addrs()
        .map_err(|error| format!("not a host:port ({error})"))?;
    addrs.next().ok_or_else(|| format!("{text} has no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_addresses_are_host_and_port() {
        assert_eq!(
            host_and_port("127.0.0.1:9100"),
            Ok(([127, 0, 0, 1], 9100).into())
        );
        assert!(host_and_port("localhost:9100").is_ok_and(|addr| addr.ip().is_loopback()));
        assert!(host_and_port("127.0.0.1").is_err());
        assert!(host_and_port("9100").is_err());
    }
}
