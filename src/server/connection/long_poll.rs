//! A connection's parked long-poll (protocol §E6): the request waits for a message for its
//! caller, and nothing behind it is served until it is answered. The connection keeps the
//! request and how it is to be answered; the loop's `Waiters` keep what it waits for and
//! until when, and unpark it. Bytes still arrive meanwhile, up to a bound, so that the
//! client's close is seen: it ends the wait.

use super::work::{After, Answered};
use super::{Connection, State};
use crate::handlers::Response;
use crate::protocol::RequestHeader;
use crate::server::outbox::Awaits;

/// Bytes of later requests read while a long-poll is parked; past them the socket is left
/// unread until the answer.
const PARKED_INPUT_LIMIT: usize = 64 << 10;

/// How a parked long-poll is to be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unpark {
    /// A message for its caller is durable: answer with what a pull finds now.
    Pull,
    /// The wait is over without one (its deadline, the client's close, shutdown): answer
    /// empty.
    Empty,
}

/// The long-poll a connection has parked.
#[derive(Debug, Clone, Copy)]
pub(super) struct Parked {
    pub(super) header: RequestHeader,
    /// Set once the request is to be answered.
    pub(super) unpark: Option<Unpark>,
}

impl Connection {
    /// The request of the last [`super::Work::Request`] waits: it counts as served, and
    /// nothing behind it is served until [`Connection::answer_parked`].
    pub fn park(&mut self, header: RequestHeader) -> Answered {
        let classified = self.count_request(false);
        self.parked = Some(Parked {
            header,
            unpark: None,
        });
        Answered {
            opens_round: false,
            classified,
        }
    }

    /// The parked long-poll is to be answered `how` (the first reason given wins), in a pass
    /// that starts now. Nothing happens without one.
    pub fn unpark(&mut self, how: Unpark) {
        let Some(parked) = self.parked.as_mut() else {
            return;
        };
        parked.unpark.get_or_insert(how);
        if self.state != State::Closed {
            self.start_serving(After::Done);
        }
    }

    /// How the parked long-poll is to be answered now, if it is: as unparked, or empty once
    /// the client has closed its side.
    pub(super) fn unparked(&self) -> Option<(RequestHeader, Unpark)> {
        let parked = self.parked?;
        let how = parked
            .unpark
            .or(self.peer_closed.then_some(Unpark::Empty))?;
        Some((parked.header, how))
    }

    /// Answers the parked long-poll of [`super::Work::Unparked`]; what was behind it is
    /// served next.
    pub fn answer_parked(&mut self, response: Response, awaits: Awaits) -> Answered {
        self.parked = None;
        Answered {
            opens_round: self.stage(response, false, awaits),
            classified: None,
        }
    }

    /// Whether reading must wait for the parked long-poll's answer: enough of what follows
    /// it is buffered.
    pub(super) fn parked_input_full(&self) -> bool {
        self.parked.is_some() && self.reader.unread() >= PARKED_INPUT_LIMIT
    }
}
