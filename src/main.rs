//! `messageu-server`: command line, logging and start-up/shutdown wiring only.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use messageu::config::{self, PortSource};
use messageu::protocol::Edition;
use messageu::store::Durability;
use messageu::{Config, Server};

/// A MessageU server: store-and-forward for end-to-end encrypted chat, compatible with the
/// clients of every edition (2021, 2022-23, 2024-25, 2026). Type q and Enter to stop it.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// TCP port. Default: the number in myport.info (or port.info) in the working directory,
    /// else 1357. Use 0 for any free port (the log says which).
    #[arg(long)]
    port: Option<u16>,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    bind: IpAddr,
    /// SQLite database file, created if missing.
    #[arg(long, default_value = "defensive.db")]
    db: PathBuf,
    /// full: every acknowledged write is on disk before its reply (the log is flushed after
    /// each commit that holds one). normal: survives a crash of the server but may lose the
    /// last commits on a power cut; faster.
    #[arg(long, value_enum, default_value = "full")]
    durability: Durability,
    /// Largest request payload in bytes; larger ones are refused (9000) and the connection
    /// closed, unread. Also the most message bytes one pull reply carries.
    #[arg(long, default_value_t = config::DEFAULT_MAX_PAYLOAD)]
    max_payload: u32,
    /// Send contents above this many bytes are streamed to a spool file beside the database
    /// as they arrive, instead of buffered and stored in their row.
    #[arg(long, default_value_t = config::DEFAULT_SPOOL_THRESHOLD)]
    spool_threshold: u32,
    /// Free disk space in bytes that uploads must leave; a send whose content would not is
    /// refused (9000) before its content is read.
    #[arg(long, default_value_t = config::DEFAULT_MIN_FREE_SPACE)]
    min_free_space: u64,
    /// Most open client connections. At the cap, the longest-idle connection is closed to make
    /// room for a new one (logged); with none idle, the new one is closed at once. Default: as
    /// many as the file-descriptor limit allows, after raising the soft limit to the hard one.
    #[arg(long)]
    max_connections: Option<usize>,
    /// Most open connections from one IP address; more are accepted and closed at once.
    /// Default: no limit, since clients behind one NAT share an address.
    #[arg(long)]
    max_connections_per_ip: Option<usize>,
    /// Seconds a started request may take to arrive whole (a large upload: may stall), and
    /// replies may wait unread, before the connection is closed.
    #[arg(long, default_value_t = 30)]
    request_timeout: u64,
    /// Seconds a connection that has not yet completed a request may stay silent before it
    /// is closed. A connection that has completed one is never closed for idling.
    #[arg(long, default_value_t = 600)]
    idle_timeout: u64,
    /// Cap on the database file's size in bytes; sends that would pass it get 9000 while
    /// everything else goes on. Default: limited only by the disk (and --min-free-space).
    #[arg(long)]
    max_db_size: Option<u64>,
    /// Serve Prometheus metrics (GET /metrics) and a health check (GET /health) over HTTP
    /// on this host:port, e.g. 127.0.0.1:9100. Default: off.
    #[arg(long, value_name = "ADDR", value_parser = resolve)]
    metrics: Option<SocketAddr>,
    /// Seconds between summary lines in the log (connections, requests, messages, queue,
    /// database size); 0 turns them off.
    #[arg(long, value_name = "SECONDS", default_value_t = config::DEFAULT_STATS_INTERVAL)]
    stats_interval: u64,
}

/// Descriptors kept for the database, its journal, the poll, logging and standard streams.
const RESERVED_DESCRIPTORS: u64 = 32;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("messageu-server: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), messageu::server::ServerError> {
    let port = cli.port.unwrap_or_else(|| {
        let (port, source) = config::port_from_files(std::path::Path::new("."));
        match source {
            PortSource::File(path) => log::info!("port {port} from {}", path.display()),
            PortSource::Default(reason) => log::warn!("{reason}; using the default port {port}"),
        }
        port
    });
    let mut config = Config::new(SocketAddr::new(cli.bind, port), cli.db);
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

    let server = Server::bind(config.clone())?;
    let shutdown = server.shutdown_handle();
    shutdown.watch_signals()?;
    shutdown.watch_stdin()?;
    let editions: Vec<_> = Edition::ALL
        .iter()
        .map(|edition| format!("{} ({}..)", edition.name(), edition.request_base()))
        .collect();
    log::info!(
        "listening on {}, database {} (durability {}), editions {}; type q and Enter to stop",
        server.local_addr(),
        config.database.display(),
        config.durability,
        editions.join(", ")
    );
    server.run()
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

/// A `host:port` as the command line gives it: an address, or a name such as localhost.
fn resolve(text: &str) -> Result<SocketAddr, String> {
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
        assert_eq!(resolve("127.0.0.1:9100"), Ok(([127, 0, 0, 1], 9100).into()));
        assert!(resolve("localhost:9100").is_ok_and(|addr| addr.ip().is_loopback()));
        assert!(resolve("127.0.0.1").is_err());
        assert!(resolve("9100").is_err());
    }
}
