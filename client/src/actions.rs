//! The things a user can ask for, performed and reported the same way whether they come from
//! the console's menu or from a subcommand.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::chat::chat;
use super::error::ClientError;
use super::input::Lines;
use super::received::console_text;
use super::session::Session;
use super::watch::watch;
use messageu_protocol::{MessageId, Presence, Protection};

/// One user request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Register {
        name: String,
    },
    ListClients,
    GetPublicKey {
        name: String,
    },
    RequestSymmetricKey {
        name: String,
    },
    SendSymmetricKey {
        name: String,
    },
    SendText {
        name: String,
        text: String,
    },
    SendFile {
        name: String,
        path: PathBuf,
    },
    /// Pull and print the waiting messages, as the console does or as JSON lines; with
    /// `wait`, wait up to that long for the first one (protocol §E6).
    Pull {
        json: bool,
        wait: Option<Duration>,
    },
    /// Protect this client's account, or stop protecting it (protocol §E4).
    Protect(Protection),
    /// List the accounts whose name matches a pattern (protocol §E8).
    Accounts {
        pattern: String,
    },
    /// Show what waits for this client, per sender.
    Status,
    /// Take back a message this client sent that still waits.
    Unsend {
        id: MessageId,
    },
    /// Delete this client's account on the server.
    DeleteAccount,
    /// Print each message as it is pushed (protocol §E5), as the console does or as JSON
    /// lines, and the receipts of the messages sent (§E7): until interrupted, or with
    /// `until_line` until a line is typed.
    Watch {
        json: bool,
        until_line: bool,
    },
    /// Converse with a peer live: typed lines go out, its messages come in as they arrive.
    Chat {
        name: String,
    },
}

/// Performs `action` and writes what it did to `out`; what the user types is read from
/// `lines` (by chat and the console's watch only). The progress bar of a file sent or a large
/// pull is drawn only if standard output is a terminal.
pub fn perform(
    session: &mut Session,
    action: &Action,
    lines: &Lines,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    let report = match action {
        Action::Register { name } => {
            let id = session.register(name)?;
            format!("Registered as {name}, client id {id}\n")
        }
        Action::ListClients => session
            .list_clients()?
            .iter()
            .map(|client| format!("{}\n", client.name))
            .collect(),
        Action::GetPublicKey { name } => {
            session.fetch_public_key(name)?;
            format!("Public key of {name} received\n")
        }
        Action::RequestSymmetricKey { name } => {
            session.request_symmetric_key(name)?;
            format!("Request for symmetric key sent to {name}\n")
        }
        Action::SendSymmetricKey { name } => {
            session.send_symmetric_key(name)?;
            format!("Symmetric key sent to {name}\n")
        }
        Action::SendText { name, text } => {
            let id = session.send_text(name, text)?;
            format!("Message {} sent to {name}\n", id.0)
        }
        Action::SendFile { name, path } => {
            let bar = progress_bar();
            let sent = session.send_file(name, path, |done, total| show(&bar, done, total));
            bar.finish_and_clear();
            sent?;
            format!("File {} sent to {name}\n", path.display())
        }
        Action::Pull { json, wait } => {
            let bar = progress_bar();
            let pulled = session.pull(*wait, |done, total| {
                // Most replies arrive at once; a bar would only flicker.
                if total >= PULL_PROGRESS_FROM {
                    show(&bar, done, total);
                }
            });
            bar.finish_and_clear();
            let messages = pulled?;
            if *json {
                messages
                    .iter()
                    .map(|message| format!("{}\n", message.to_json()))
                    .collect()
            } else {
                console_text(&messages)
            }
        }
        Action::Protect(protection) => {
            session.protect(*protection)?;
            match protection {
                Protection::Protected => {
                    "Account protected: only clients holding its key are served\n"
                }
                Protection::Open => "Account no longer protected\n",
            }
            .to_owned()
        }
        Action::Accounts { pattern } => session
            .list_accounts(pattern)?
            .iter()
            .map(|account| {
                let online = match account.presence {
                    Presence::Online => "online",
                    Presence::Offline => "offline",
                };
                let seen = account.last_seen_ms / 1000;
                format!(
                    "{} ({online}, last seen at Unix time {seen})\n",
                    account.name
                )
            })
            .collect(),
        Action::Status => {
            let status = session.queue_status()?;
            let mut report = format!(
                "{} messages waiting, {} bytes\n",
                status.messages, status.bytes
            );
            for sender in &status.senders {
                let from = session
                    .peer_name(sender.from)
                    .unwrap_or_else(|| sender.from.to_string());
                report.push_str(&format!("  {}: {}\n", from, sender.messages));
            }
            report
        }
        Action::Unsend { id } => {
            session.unsend(*id)?;
            format!("Message {} taken back\n", id.0)
        }
        Action::DeleteAccount => {
            session.delete_account()?;
            "Account deleted on the server; me.info names it no more (remove it to register \
             again from this folder)\n"
                .to_owned()
        }
        Action::Watch { json, until_line } => {
            return watch(session, *json, out, until_line.then_some(lines))
        }
        Action::Chat { name } => return chat(session, name, lines, out),
    };
    out.write_all(report.as_bytes())
        .and_then(|()| out.flush())
        .map_err(ClientError::Output)
}

/// A pull reply this large shows a progress bar while it arrives.
const PULL_PROGRESS_FROM: u64 = 1 << 20;

fn show(bar: &ProgressBar, done: u64, total: u64) {
    bar.set_length(total);
    bar.set_position(done);
}

/// A bar on standard output when it is a terminal; otherwise one that draws nothing.
fn progress_bar() -> ProgressBar {
    if !std::io::stdout().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout());
    if let Ok(style) =
        ProgressStyle::with_template("{wide_bar} {bytes}/{total_bytes} {bytes_per_sec} {eta}")
    {
        bar.set_style(style);
    }
    bar
}
