//! `chat NAME`: a live conversation. Each typed line goes out as a text to NAME; the messages
//! pushed to this client are shown as they arrive (NAME's as `NAME: text`, anyone else's
//! marked as outside the chat) and acknowledged once shown. Ends at the end of the input, or
//! at a line `/quit` (which returns the console to its menu).
//!
//! The key exchange happens on the way when no symmetric key is shared with NAME yet. Of the
//! two clients, the one with the lower id makes the key and sends it; the other asks for one
//! and keeps what is typed until it comes. A request for a key from NAME is answered with the
//! key already shared (a new one only if there is none), so that both chats, started in any
//! order, end up with the same key.

use std::collections::VecDeque;
use std::io::Write;
use std::time::Duration;

use super::error::ClientError;
use super::input::{Lines, Typed};
use super::live::{Event, Subscription};
use super::received::{Content, Received};
use super::session::Session;
use super::watch::{report, POLL};
use messageu_protocol::ClientId;

/// The line that ends a chat, as the end of the input does.
const QUIT: &str = "/quit";

/// Chats with `name` until `lines` ends or has [`QUIT`].
pub fn chat(
    session: &mut Session,
    name: &str,
    lines: &Lines,
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    let mut live = Subscription::start(session, "chat")?;
    let peer = session.peer_id(name)?;
    let mut keyed = start_key_exchange(session, name, peer, out)?;
    say(
        out,
        &format!("chatting with {name}: each line you type is sent; {QUIT} or the end of input (Ctrl-D) ends the chat"),
    )?;
    let mut typed = VecDeque::new();
    loop {
        let wait = if live.has_unacknowledged() {
            Duration::ZERO
        } else {
            POLL
        };
        match live.next(wait)? {
            Some(Event::Message(message)) => {
                for received in session.receive_all(&[message.as_pulled()])? {
                    say(out, &shown(&received, peer))?;
                    if received.from == peer {
                        keyed |= answer_key_exchange(session, name, &received, out)?;
                    }
                }
                live.handled(&message);
            }
            // Only watch shows receipts: in a conversation they would be noise.
            Some(Event::Receipt(_)) => {}
            Some(event) => report(&event),
            None if live.has_unacknowledged() => {
                if let Some(event) = live.acknowledge()? {
                    report(&event);
                }
            }
            None => {}
        }
        match lines.wait(Duration::ZERO)? {
            Typed::Line(line) if line.is_empty() => {}
            Typed::Line(line) if line != QUIT => typed.push_back(line),
            Typed::Nothing => {}
            Typed::Line(_) | Typed::End => {
                if !typed.is_empty() {
                    let unsent = typed.len();
                    say(
                        out,
                        &format!("{unsent} lines not sent: no key from {name} yet"),
                    )?;
                }
                if let Some(event) = live.acknowledge()? {
                    report(&event);
                }
                return Ok(());
            }
        }
        while let Some(line) = typed.front().filter(|_| keyed) {
            if let Err(error) = session.send_text(name, line) {
                say(out, &format!("not sent: {error}"))?;
            }
            typed.pop_front();
        }
    }
}

/// Whether a key is shared with `peer` now; if not, the exchange is started.
fn start_key_exchange(
    session: &mut Session,
    name: &str,
    peer: ClientId,
    out: &mut dyn Write,
) -> Result<bool, ClientError> {
    if session
        .known_peer(peer)
        .is_some_and(|known| known.symmetric_key.is_some())
    {
        return Ok(true);
    }
    if session.subscriber()?.1.id < peer {
        fetch_public_key(session, name, peer)?;
        session.send_symmetric_key(name)?;
        say(out, &format!("sent {name} a new symmetric key"))?;
        Ok(true)
    } else {
        session.request_symmetric_key(name)?;
        say(
            out,
            &format!("asked {name} for a symmetric key: what you type is sent once it arrives"),
        )?;
        Ok(false)
    }
}

/// Answers the peer's key request; whether a key is shared now.
fn answer_key_exchange(
    session: &mut Session,
    name: &str,
    received: &Received,
    out: &mut dyn Write,
) -> Result<bool, ClientError> {
    match received.content {
        Content::KeyReceived => Ok(true),
        Content::KeyRequest => {
            fetch_public_key(session, name, received.from)?;
            session.resend_symmetric_key(name)?;
            say(out, &format!("sent {name} our symmetric key"))?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

fn fetch_public_key(session: &mut Session, name: &str, peer: ClientId) -> Result<(), ClientError> {
    if session
        .known_peer(peer)
        .is_some_and(|known| known.public_key.is_some())
    {
        return Ok(());
    }
    session.fetch_public_key(name)
}

/// `bob: the text`; the peer's key exchange in words; anything else in brackets (a saved
/// file's path, `[can't decrypt message]`); from anyone but the peer, marked so.
fn shown(received: &Received, peer: ClientId) -> String {
    let name = &received.from_name;
    if received.from != peer {
        return match &received.content {
            Content::Text(text) => format!("{name} (not in this chat): {text}"),
            other => format!("{name} (not in this chat): [{other}]"),
        };
    }
    match &received.content {
        Content::Text(text) => format!("{name}: {text}"),
        Content::KeyRequest => format!("{name} asked for a symmetric key"),
        Content::KeyReceived => format!("{name}'s symmetric key received"),
        other => format!("{name}: [{other}]"),
    }
}

fn say(out: &mut dyn Write, line: &str) -> Result<(), ClientError> {
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(ClientError::Output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use messageu_protocol::MessageId;

    #[test]
    fn the_peer_speaks_plainly_and_others_are_marked() {
        let peer = ClientId([1; 16]);
        let text = Received {
            from: peer,
            from_name: "bob".into(),
            id: MessageId(3),
            kind: 3,
            content: Content::Text("hi".into()),
        };
        assert_eq!(shown(&text, peer), "bob: hi");
        let key = Received {
            kind: 2,
            content: Content::KeyReceived,
            ..text.clone()
        };
        assert_eq!(shown(&key, peer), "bob's symmetric key received");
        let file = Received {
            kind: 4,
            content: Content::Undecryptable,
            ..text.clone()
        };
        assert_eq!(shown(&file, peer), "bob: [can't decrypt message]");
        let other = Received {
            from: ClientId([2; 16]),
            from_name: "carol".into(),
            ..text
        };
        assert_eq!(shown(&other, peer), "carol (not in this chat): hi");
    }
}
