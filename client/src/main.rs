//! `messageu-client`: command line only; the client itself is `messageu::client`.

use std::io::{self, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use messageu_client::input::Lines;
use messageu_client::servers::Servers;
use messageu_client::{
    console, edition_from_year, perform, Action, ClientError, ConnectionMode, Session,
    SessionOptions,
};
use messageu_protocol::{Edition, MessageId, Protection};

/// A MessageU client: end-to-end encrypted messages through any MessageU server, compatible
/// with the C++ clients. With no command it runs the interactive menu.
#[derive(Debug, Parser)]
#[command(name = "messageu-client", version)]
struct Cli {
    /// Request codes of this edition: 2021, 2022 (or 2023), 2025 (or 2024), 2026.
    #[arg(long, global = true, value_name = "YEAR", default_value = "2025", value_parser = parse_edition)]
    edition: Edition,
    /// The server as host:port, or several nodes of one service as host:port,host:port
    /// (tried in turn when one fails); overrides server.info.
    #[arg(long, global = true, value_name = "HOST:PORT[,...]", value_parser = parse_servers)]
    server: Option<Servers>,
    /// The folder of me.info, server.info and peers.json.
    #[arg(long, global = true, value_name = "FOLDER", default_value = ".")]
    dir: PathBuf,
    /// Where received files are saved [default: downloads in the --dir folder].
    #[arg(long, global = true, value_name = "DIR")]
    downloads: Option<PathBuf>,
    /// Pad requests with zeros to a multiple of 1024 bytes, one connection per request.
    #[arg(long, global = true, conflicts_with = "reconnect")]
    padded: bool,
    /// Open a new connection for each request.
    #[arg(long, global = true)]
    reconnect: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Register NAME with a new key pair; writes me.info.
    Register { name: String },
    /// List the other registered clients.
    List,
    /// Fetch NAME's public key.
    GetKey { name: String },
    /// Ask NAME for a symmetric key.
    RequestKey { name: String },
    /// Send NAME a new symmetric key (fetch their public key first).
    SendKey { name: String },
    /// Send NAME an encrypted text.
    SendText { name: String, text: String },
    /// Send NAME an encrypted file.
    SendFile { name: String, path: PathBuf },
    /// Print the waiting messages, decrypted.
    Pull {
        /// One JSON object per message.
        #[arg(long)]
        json: bool,
        /// Wait up to SECONDS for the first message if none waits (needs a server with the
        /// extensions; it may wait less).
        #[arg(long, value_name = "SECONDS")]
        wait: Option<u64>,
    },
    /// Protect this account: the server then serves its requests only on connections that
    /// prove to hold its key (this client logs in by itself). Needs a server with the
    /// extensions.
    Protect,
    /// Stop protecting this account.
    Unprotect,
    /// List the accounts whose name matches PATTERN (`*` any run, `?` one character, `\`
    /// escapes), with when each was last seen and whether it is online. Needs a server with
    /// the extensions.
    Accounts {
        #[arg(default_value = "*")]
        pattern: String,
    },
    /// Show how many messages wait, per sender, without pulling them. Needs a server with the
    /// extensions.
    Status,
    /// Take back message ID, sent by this client and not yet pulled. Needs a server with the
    /// extensions.
    Unsend { id: u32 },
    /// Delete this account on the server: its waiting messages go, its name becomes free.
    /// Needs a server with the extensions.
    DeleteAccount,
    /// Print each message the moment it arrives (as pull does), and the delivery receipts of
    /// the messages sent, until interrupted; reconnects by itself. Needs a server with push
    /// delivery.
    Watch {
        /// One JSON object per line: messages as pull --json prints them, receipts with
        /// "event": "receipt".
        #[arg(long)]
        json: bool,
    },
    /// Chat live with NAME: each line typed is sent, their messages show as they arrive;
    /// the end of input ends it. Exchanges a symmetric key first if none is shared. Needs a
    /// server with push delivery.
    Chat { name: String },
}

impl From<Command> for Action {
    fn from(command: Command) -> Action {
        match command {
            Command::Register { name } => Action::Register { name },
            Command::List => Action::ListClients,
            Command::GetKey { name } => Action::GetPublicKey { name },
            Command::RequestKey { name } => Action::RequestSymmetricKey { name },
            Command::SendKey { name } => Action::SendSymmetricKey { name },
            Command::SendText { name, text } => Action::SendText { name, text },
            Command::SendFile { name, path } => Action::SendFile { name, path },
            Command::Pull { json, wait } => Action::Pull {
                json,
                wait: wait.map(Duration::from_secs),
            },
            Command::Protect => Action::Protect(Protection::Protected),
            Command::Unprotect => Action::Protect(Protection::Open),
            Command::Accounts { pattern } => Action::Accounts { pattern },
            Command::Status => Action::Status,
            Command::Unsend { id } => Action::Unsend { id: MessageId(id) },
            Command::DeleteAccount => Action::DeleteAccount,
            Command::Watch { json } => Action::Watch {
                json,
                until_line: false,
            },
            Command::Chat { name } => Action::Chat { name },
        }
    }
}

fn parse_edition(year: &str) -> Result<Edition, String> {
    edition_from_year(year).ok_or_else(|| "use 2021, 2022, 2023, 2024, 2025 or 2026".to_owned())
}

fn parse_servers(text: &str) -> Result<Servers, String> {
    Servers::parse_list(text).map_err(|error| error.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("messageu-client: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), ClientError> {
    let mode = if cli.padded {
        ConnectionMode::Padded
    } else if cli.reconnect {
        ConnectionMode::Reconnect
    } else {
        ConnectionMode::Persistent
    };
    let mut session = Session::open(SessionOptions {
        edition: cli.edition,
        mode,
        server: cli.server,
        dir: cli.dir,
        downloads: cli.downloads,
    })?;
    // Standard input through a buffer of its own: the console and chat read it in a thread.
    let input = BufReader::new(io::stdin());
    match cli.command {
        Some(command) => perform(
            &mut session,
            &command.into(),
            &Lines::new(input),
            &mut io::stdout().lock(),
        ),
        None => console::run(&mut session, input, io::stdout().lock()),
    }
}
