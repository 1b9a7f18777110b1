//! The interactive console of protocol §6: the C++ clients' menu, then this client's own
//! entries (the extensions, numbered from 60), read from any `BufRead` and written to any
//! `Write`, so that it can be driven through pipes.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use super::actions::{perform, Action};
use super::error::ClientError;
use super::input::Lines;
use super::session::Session;
use messageu_protocol::{Edition, MessageId, Protection};

/// The menu's entries: their number in the 2021 numbering (the others add 100) and label.
const MENU: [(u16, Choice, &str); 16] = [
    (10, Choice::Register, "Register"),
    (20, Choice::ListClients, "Request for clients list"),
    (30, Choice::GetPublicKey, "Request for public key"),
    (40, Choice::Pull, "Request for waiting messages"),
    (50, Choice::SendText, "Send a text message"),
    (
        51,
        Choice::RequestSymmetricKey,
        "Send a request for symmetric key",
    ),
    (52, Choice::SendSymmetricKey, "Send your symmetric key"),
    (53, Choice::SendFile, "Send a file"),
    (60, Choice::Watch, "Watch for messages as they arrive"),
    (61, Choice::Chat, "Chat live with a client"),
    (70, Choice::Accounts, "List accounts"),
    (71, Choice::Status, "Show the waiting messages' status"),
    (72, Choice::Unsend, "Take back a sent message"),
    (73, Choice::Protect, "Protect your account"),
    (74, Choice::Unprotect, "Stop protecting your account"),
    (75, Choice::DeleteAccount, "Delete your account"),
];
const EXIT: u16 = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Choice {
    Register,
    ListClients,
    GetPublicKey,
    Pull,
    SendText,
    RequestSymmetricKey,
    SendSymmetricKey,
    SendFile,
    Watch,
    Chat,
    Accounts,
    Status,
    Unsend,
    Protect,
    Unprotect,
    DeleteAccount,
}

/// The number a menu entry has in `edition`: 2021 uses 10…53, later editions 110…153.
fn menu_number(edition: Edition, number_2021: u16) -> u16 {
    match edition {
        Edition::Y2021 => number_2021,
        Edition::Y2022 | Edition::Y2024 | Edition::Y2026 => number_2021 + 100,
    }
}

/// Runs the menu until the user chooses 0 or the input ends. Failed operations are reported
/// on `output` and the menu goes on; only failing to write `output` ends it with an error.
pub fn run(
    session: &mut Session,
    input: impl BufRead + Send + 'static,
    mut output: impl Write,
) -> Result<(), ClientError> {
    let input = Lines::new(input);
    let edition = session.edition();
    loop {
        write_menu(&mut output, edition)?;
        let Some(line) = read_line(&input, &mut output, "?")? else {
            return Ok(());
        };
        let chosen = line.trim().parse::<u16>().ok();
        if chosen == Some(EXIT) {
            return Ok(());
        }
        let choice = MENU
            .iter()
            .find(|(number, ..)| chosen == Some(menu_number(edition, *number)))
            .map(|&(_, choice, _)| choice);
        let Some(choice) = choice else {
            say(&mut output, "Invalid choice, try again.")?;
            continue;
        };
        if choice == Choice::Register {
            // Say so before asking for a name, as the C++ clients do.
            if let Err(error) = session.check_can_register() {
                say(&mut output, &error.to_string())?;
                continue;
            }
        }
        let Some(action) = ask_action(choice, &input, &mut output)? else {
            return Ok(());
        };
        loop {
            match perform(session, &action, &input, &mut output) {
                Ok(()) => break,
                Err(ClientError::Output(error)) => return Err(ClientError::Output(error)),
                // Sending again could deliver the message twice: only the user can judge.
                Err(error @ ClientError::SendUnconfirmed { .. }) => {
                    say(&mut output, &error.to_string())?;
                    let answer = read_line(&input, &mut output, "Send it again? (y/n)")?;
                    if !answer.is_some_and(|answer| answer.trim().eq_ignore_ascii_case("y")) {
                        break;
                    }
                }
                Err(error) => {
                    say(&mut output, &error.to_string())?;
                    break;
                }
            }
        }
    }
}

/// Asks for what `choice` needs; `None` if the input ended first.
fn ask_action(
    choice: Choice,
    input: &Lines,
    output: &mut impl Write,
) -> Result<Option<Action>, ClientError> {
    let action = match choice {
        Choice::Register => {
            read_line(input, output, "Enter your name:")?.map(|name| Action::Register { name })
        }
        Choice::ListClients => Some(Action::ListClients),
        Choice::Pull => Some(Action::Pull {
            json: false,
            wait: None,
        }),
        Choice::GetPublicKey => read_line(input, output, "Enter the client's name:")?
            .map(|name| Action::GetPublicKey { name }),
        Choice::RequestSymmetricKey => read_line(input, output, "Enter the recipient's name:")?
            .map(|name| Action::RequestSymmetricKey { name }),
        Choice::SendSymmetricKey => read_line(input, output, "Enter the recipient's name:")?
            .map(|name| Action::SendSymmetricKey { name }),
        Choice::SendText => match read_line(input, output, "Enter the recipient's name:")? {
            Some(name) => read_line(input, output, "Enter the message:")?
                .map(|text| Action::SendText { name, text }),
            None => None,
        },
        Choice::SendFile => match read_line(input, output, "Enter the recipient's name:")? {
            Some(name) => {
                read_line(input, output, "Enter the file path:")?.map(|path| Action::SendFile {
                    name,
                    path: PathBuf::from(path),
                })
            }
            None => None,
        },
        Choice::Watch => {
            say(output, "Watching; press Enter to return to the menu.")?;
            Some(Action::Watch {
                json: false,
                until_line: true,
            })
        }
        Choice::Chat => read_line(
            input,
            output,
            "Enter the client's name (/quit ends the chat):",
        )?
        .map(|name| Action::Chat { name }),
        Choice::Accounts => {
            read_line(input, output, "Enter a name pattern (* for all):")?.map(|pattern| {
                let pattern = match pattern.trim() {
                    "" => "*".to_owned(),
                    _ => pattern,
                };
                Action::Accounts { pattern }
            })
        }
        Choice::Status => Some(Action::Status),
        Choice::Unsend => loop {
            let Some(id) = read_line(input, output, "Enter the message id:")? else {
                break None;
            };
            match id.trim().parse() {
                Ok(id) => break Some(Action::Unsend { id: MessageId(id) }),
                Err(_) => say(output, "Invalid message id, try again.")?,
            }
        },
        Choice::Protect => Some(Action::Protect(Protection::Protected)),
        Choice::Unprotect => Some(Action::Protect(Protection::Open)),
        Choice::DeleteAccount => {
            read_line(input, output, "Delete your account on the server? (y/n)")?
                .filter(|answer| answer.trim().eq_ignore_ascii_case("y"))
                .map(|_| Action::DeleteAccount)
        }
    };
    Ok(action)
}

fn write_menu(output: &mut impl Write, edition: Edition) -> Result<(), ClientError> {
    let mut menu = String::from("\nMessageU client at your service.\n\n");
    for (number, _, label) in MENU {
        menu.push_str(&format!("{}) {label}\n", menu_number(edition, number)));
    }
    menu.push_str(&format!("{EXIT}) Exit client\n"));
    output
        .write_all(menu.as_bytes())
        .map_err(ClientError::Output)
}

/// Shows `prompt` and reads one line without its line ending; `None` at the end of input.
fn read_line(
    input: &Lines,
    output: &mut impl Write,
    prompt: &str,
) -> Result<Option<String>, ClientError> {
    say(output, prompt)?;
    input.next()
}

fn say(output: &mut impl Write, line: &str) -> Result<(), ClientError> {
    writeln!(output, "{line}")
        .and_then(|()| output.flush())
        .map_err(ClientError::Output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{ServerAddress, ME_INFO};
    use crate::servers::Servers;
    use crate::session::SessionOptions;
    use crate::transport::ConnectionMode;
    use crate::vectors;

    /// Runs the console offline (nothing here reaches the server) on `input`.
    fn console(edition: Edition, me_info: Option<&str>, input: &str) -> String {
        let dir = tempfile::tempdir().expect("temporary directory");
        if let Some(who) = me_info {
            std::fs::write(
                dir.path().join(ME_INFO),
                vectors::read(&format!("{who}.me.info")),
            )
            .expect("me.info written");
        }
        let mut session = Session::open(SessionOptions {
            edition,
            mode: ConnectionMode::Persistent,
            server: Some(Servers::one(ServerAddress {
                host: "127.0.0.1".into(),
                port: 9,
            })),
            dir: dir.path().to_owned(),
            downloads: None,
        })
        .expect("session");
        let mut output = Vec::new();
        let input = std::io::Cursor::new(input.to_owned());
        run(&mut session, input, &mut output).expect("console runs");
        String::from_utf8(output).expect("text")
    }

    #[test]
    fn the_menu_is_numbered_per_edition() {
        let menu = console(Edition::Y2021, None, "0\n");
        assert!(menu.contains("10) Register\n20) Request for clients list\n"));
        assert!(menu.contains("53) Send a file\n60) Watch for messages as they arrive\n"));
        assert!(menu.contains("75) Delete your account\n0) Exit client\n"));
        for edition in [Edition::Y2022, Edition::Y2024, Edition::Y2026] {
            let menu = console(edition, None, "0\n");
            assert!(menu.contains("\n110) Register\n"), "{edition:?}");
            assert!(
                menu.contains("\n152) Send your symmetric key\n"),
                "{edition:?}"
            );
            assert!(
                menu.contains("\n161) Chat live with a client\n"),
                "{edition:?}"
            );
        }
    }

    #[test]
    fn other_numbers_are_refused_and_the_end_of_input_exits() {
        let output = console(Edition::Y2024, None, "10\nabc\n");
        assert_eq!(output.matches("Invalid choice, try again.").count(), 2);
        assert_eq!(output.matches("at your service").count(), 3);
        let output = console(Edition::Y2021, None, "110\n");
        assert!(output.contains("Invalid choice"));
    }

    #[test]
    fn registering_again_is_refused_before_asking_for_a_name() {
        let output = console(Edition::Y2024, Some("alice"), "110\n0\n");
        assert!(output.contains("already registered"), "{output}");
        assert!(!output.contains("Enter your name"));
    }

    #[test]
    fn a_peer_never_listed_is_reported_when_the_list_cannot_be_had() {
        let output = console(Edition::Y2024, Some("bob"), "152\nalice\n0\n");
        assert!(output.contains("Enter the recipient's name:"));
        assert!(output.contains("cannot connect to 127.0.0.1:9"), "{output}");
    }
}
