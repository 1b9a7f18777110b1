//! The command line.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use messageu_protocol::Edition;

use crate::driver::ConnStyle;
use crate::idle::IdlePlan;
use crate::record::RECORD_LEN;
use crate::run::Plan;
use crate::workload::Mix;

/// Load generator for any MessageU server: throughput, latency per operation and exactly-once
/// delivery, each result also as a ratio to a do-nothing echo server (the floor) measured in
/// the same run. Exits 1 if any acknowledged message was lost, duplicated or corrupted.
#[derive(Debug, Parser)]
#[command(name = "messageu-bench", version)]
pub struct Cli {
    /// The server to load, e.g. 127.0.0.1:1357; or several nodes sharing one database,
    /// comma-separated: the clients are spread over them round robin, each sending and
    /// pulling through its own node (send-pull, send, pubkey and list only).
    #[arg(
        long,
        value_name = "HOST:PORT[,HOST:PORT...]",
        value_delimiter = ',',
        required_unless_present = "markdown_header"
    )]
    pub addr: Vec<SocketAddr>,
    /// Protocol edition of every request.
    #[arg(long, value_enum, default_value = "2024")]
    pub edition: EditionArg,
    /// Concurrent clients, each with its own connection and one request outstanding.
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub clients: u32,
    /// What each client repeats.
    #[arg(long, value_enum, default_value = "send-pull")]
    pub mix: Mix,
    /// Seconds measured in each window.
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = seconds)]
    pub duration: Duration,
    /// Measured windows against the server, each followed by one against the floor; ratios
    /// are the median over rounds, so that both sides of each see the same machine load.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
    /// Seconds of load before measuring.
    #[arg(long, value_name = "SECONDS", default_value = "1", value_parser = seconds)]
    pub warmup: Duration,
    /// Content bytes of every message (at least 20: sender, sequence number and checksum).
    #[arg(long, value_name = "BYTES", default_value_t = 100, value_parser = clap::value_parser!(u32).range(RECORD_LEN as i64..))]
    pub size: u32,
    /// Open a new connection for every request.
    #[arg(long)]
    pub conn_per_request: bool,
    /// Zero-pad every request to a multiple of 1024 bytes and read padded replies, as some
    /// clients do (implies a connection per request).
    #[arg(long)]
    pub padded: bool,
    /// The server's process id: its CPU time and peak resident memory are reported.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Event-loop threads of the generator.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub threads: u32,
    /// Seconds a request may wait for its whole reply before it counts as an error.
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = seconds)]
    pub timeout: Duration,
    /// Skip the floor run (no ratios).
    #[arg(long)]
    pub no_floor: bool,
    /// Print markdown table rows on standard output (the report goes to standard error).
    #[arg(long)]
    pub markdown: bool,
    /// What the markdown rows say in the durability column.
    #[arg(long, value_name = "LABEL", default_value = "-")]
    pub durability_label: String,
    /// Print the markdown table header and exit.
    #[arg(long)]
    pub markdown_header: bool,
    /// Instead of a load: open this many connections that log in and subscribe (protocol
    /// §E5), stay idle, then send one message; report the server's memory, its CPU time while
    /// idle and how soon the message is pushed.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub idle_subscribers: Option<u32>,
    /// The ids the idle connections share, round robin.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub idle_ids: u32,
    /// Seconds the subscribed connections stay idle.
    #[arg(long, value_name = "SECONDS", default_value = "3", value_parser = seconds)]
    pub idle_seconds: Duration,
}

/// The editions by the year that opens them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EditionArg {
    #[value(name = "2021")]
    Y2021,
    #[value(name = "2022", alias = "2022-23")]
    Y2022,
    #[value(name = "2024", alias = "2024-25")]
    Y2024,
    #[value(name = "2026")]
    Y2026,
}

impl From<EditionArg> for Edition {
    fn from(edition: EditionArg) -> Edition {
        match edition {
            EditionArg::Y2021 => Edition::Y2021,
            EditionArg::Y2022 => Edition::Y2022,
            EditionArg::Y2024 => Edition::Y2024,
            EditionArg::Y2026 => Edition::Y2026,
        }
    }
}

fn seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(seconds).map_err(|error| format!("{text:?}: {error}"))
}

impl Cli {
    /// The run the options ask for; an error if they contradict each other.
    pub fn plan(&self) -> Result<Plan, String> {
        if self.addr.is_empty() {
            return Err("--addr is required".into());
        }
        let single = self.mix == Mix::Push || self.idle_subscribers.is_some();
        if single && self.addr.len() > 1 {
            return Err(
                "the push mix and the idle subscribers take one --addr: a node pushes only the \
                 messages sent through it"
                    .into(),
            );
        }
        let style = if self.padded {
            ConnStyle::Padded
        } else if self.conn_per_request {
            ConnStyle::PerRequest
        } else {
            ConnStyle::Persistent
        };
        Ok(Plan {
            addrs: self.addr.clone(),
            edition: self.edition.into(),
            clients: self.clients,
            mix: self.mix,
            size: self.size as usize,
            style,
            warmup: self.warmup,
            duration: self.duration,
            rounds: self.rounds,
            threads: self.threads as usize,
            timeout: self.timeout,
            server_pid: self.server_pid,
        })
    }

    /// The idle-subscribers measurement, if asked for.
    pub fn idle_plan(&self) -> Option<IdlePlan> {
        self.idle_subscribers.map(|connections| IdlePlan {
            connections: connections as usize,
            ids: self.idle_ids.min(connections) as usize,
            idle: self.idle_seconds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("messageu-bench").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_make_a_persistent_send_pull_run() {
        let cli = parse(&["--addr", "127.0.0.1:1357"]).expect("valid");
        let plan = cli.plan().expect("consistent");
        assert_eq!(plan.addrs, ["127.0.0.1:1357".parse().expect("address")]);
        assert_eq!(plan.clients, 50);
        assert_eq!(plan.mix, Mix::SendPull);
        assert_eq!(plan.style, ConnStyle::Persistent);
        assert_eq!(plan.edition, Edition::Y2024);
        assert_eq!(plan.duration, Duration::from_secs(5));
    }

    #[test]
    fn padded_wins_over_conn_per_request_and_editions_take_their_names() {
        let cli = parse(&[
            "--addr",
            "127.0.0.1:1",
            "--padded",
            "--conn-per-request",
            "--edition",
            "2022-23",
            "--duration",
            "0.5",
        ])
        .expect("valid");
        let plan = cli.plan().expect("consistent");
        assert_eq!(plan.style, ConnStyle::Padded);
        assert_eq!(plan.edition, Edition::Y2022);
        assert_eq!(plan.duration, Duration::from_millis(500));
    }

    #[test]
    fn out_of_range_values_are_refused() {
        assert!(parse(&["--addr", "127.0.0.1:1", "--clients", "0"]).is_err());
        assert!(parse(&["--addr", "127.0.0.1:1", "--clients", "10001"]).is_err());
        assert!(parse(&["--addr", "127.0.0.1:1", "--size", "19"]).is_err());
        assert!(parse(&["--addr", "127.0.0.1:1", "--duration", "-1"]).is_err());
        assert!(
            parse(&["--clients", "5"]).is_err(),
            "an address is required"
        );
        assert!(parse(&["--markdown-header"]).is_ok());
    }

    #[test]
    fn several_addresses_are_nodes_for_the_loads_but_not_for_push_or_idle() {
        let cli =
            parse(&["--addr", "127.0.0.1:1,127.0.0.1:2", "--addr", "127.0.0.1:3"]).expect("valid");
        let plan = cli.plan().expect("consistent");
        assert_eq!(plan.addrs.len(), 3);
        assert_eq!(plan.addr(), "127.0.0.1:1".parse().expect("address"));
        assert_eq!(plan.addrs_text(), "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3");
        for extra in [["--mix", "push"], ["--idle-subscribers", "10"]] {
            let mut args = vec!["--addr", "127.0.0.1:1,127.0.0.1:2"];
            args.extend(extra);
            let cli = parse(&args).expect("valid syntax");
            assert!(cli.plan().is_err(), "{extra:?} with two addresses");
        }
        assert!(parse(&["--addr", "127.0.0.1:1,nonsense"]).is_err());
    }

    #[test]
    fn idle_subscribers_share_at_most_as_many_ids_as_connections() {
        let cli = parse(&["--addr", "127.0.0.1:1", "--idle-subscribers", "50"]).expect("valid");
        let idle = cli.idle_plan().expect("asked for");
        assert_eq!((idle.connections, idle.ids), (50, 50));
        assert_eq!(idle.idle, Duration::from_secs(3));
        let cli = parse(&["--addr", "127.0.0.1:1"]).expect("valid");
        assert!(cli.idle_plan().is_none());
    }
}
