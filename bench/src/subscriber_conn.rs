//! One subscribed connection of the push mix: what it waits for, where it is in its login,
//! its buffers and the acknowledgements it owes; and the non-blocking socket reads and writes
//! the loops in `subscribers.rs` drive it with.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::Instant;

use messageu_protocol::extension::extension_request;
use messageu_protocol::{Extension, MessageId, Refusal, ERROR_REPLY_CODE};
use mio::net::TcpStream;

use crate::accounts::Account;

/// A request whose reply has not come yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Awaiting {
    Hello,
    Challenge,
    Prove,
    Subscribe,
    /// An acknowledgement listing this many ids.
    Acknowledge(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Not connected yet: waits for a login slot.
    Waiting,
    /// Connected at `since`; hello, challenge, prove and subscribe under way.
    LoggingIn {
        since: Instant,
    },
    Subscribed,
    /// Given up, its socket closed.
    Failed,
}

pub(crate) struct Conn {
    pub(crate) account: usize,
    pub(crate) socket: Option<TcpStream>,
    pub(crate) connected: bool,
    pub(crate) stage: Stage,
    pub(crate) input: Vec<u8>,
    pub(crate) output: Vec<u8>,
    pub(crate) awaiting: VecDeque<Awaiting>,
    pub(crate) to_acknowledge: Vec<MessageId>,
}

impl Conn {
    pub(crate) fn new(account: usize) -> Conn {
        Conn {
            account,
            socket: None,
            connected: false,
            stage: Stage::Waiting,
            input: Vec::new(),
            output: Vec::new(),
            awaiting: VecDeque::new(),
            to_acknowledge: Vec::new(),
        }
    }

    pub(crate) fn request(
        &mut self,
        awaiting: Awaiting,
        extension: Extension,
        account: &Account,
        body: &[u8],
    ) {
        self.output
            .extend(extension_request(extension, account.id, body));
        self.awaiting.push_back(awaiting);
    }
}

/// Why a connection was given up.
pub(crate) type Failure = String;

/// A refusal's reason, or the unexpected code.
pub(crate) fn refused(extension: Extension, code: u16, payload: &[u8]) -> Failure {
    match Refusal::parse(payload).filter(|_| code == ERROR_REPLY_CODE) {
        Some((reason, text)) => format!("{extension:?} refused: {text} (reason {reason})"),
        None => format!("{extension:?} answered with code {code}"),
    }
}

/// Reads until the socket would block; true if the server closed its side.
pub(crate) fn read_available(
    socket: &mut TcpStream,
    input: &mut Vec<u8>,
    scratch: &mut [u8],
) -> Result<bool, Failure> {
    loop {
        match socket.read(scratch) {
            Ok(0) => return Ok(true),
            Ok(read) => input.extend_from_slice(&scratch[..read]),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(format!("read: {error}")),
        }
    }
}

/// Writes until the output is empty or the socket would block.
pub(crate) fn write_available(socket: &mut TcpStream, output: &mut Vec<u8>) -> Result<(), Failure> {
    let mut written = 0;
    let result = loop {
        if written == output.len() {
            break Ok(());
        }
        match socket.write(&output[written..]) {
            Ok(0) => break Err("the connection closed while writing".into()),
            Ok(count) => written += count,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break Ok(()),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => break Err(format!("write: {error}")),
        }
    };
    output.drain(..written);
    result
}
