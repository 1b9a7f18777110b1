//! What the simulated clients ask for, and how every reply is checked against what was asked.

use std::collections::HashMap;
use std::ops::Range;
use std::time::Instant;

use messageu_protocol::client::{
    bare_request, check_reply_code, parse_client_list, parse_public_key, parse_registered,
    parse_sent, public_key_request, pulled_messages, register_request, send_request, PulledMessage,
    ReplyError,
};
use messageu_protocol::{ClientId, Edition, MessageType, Operation, PublicKey, PUBLIC_KEY_LEN};

use crate::driver::ReplyView;
use crate::ledger::{Ledger, Receipt, Via};
use crate::record::{self, Stamp};

/// The operations each client repeats, in order, for the whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mix {
    /// Send a message to a random other client, then pull the own queue.
    SendPull,
    /// Only send; the queues are drained at the end.
    Send,
    /// Ask for a random other client's public key.
    Pubkey,
    /// List the clients.
    List,
    /// Senders send to recipients that log in (protocol §E3), subscribe and acknowledge what
    /// is pushed to them (§E5); send-pull with as many clients runs beside it for comparison.
    Push,
}

impl Mix {
    pub fn cycle(self) -> &'static [Operation] {
        match self {
            Mix::SendPull => &[Operation::SendMessage, Operation::PullMessages],
            Mix::Send => &[Operation::SendMessage],
            Mix::Pubkey => &[Operation::PublicKey],
            Mix::List => &[Operation::ListClients],
            Mix::Push => &[Operation::SendMessage],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mix::SendPull => "send-pull",
            Mix::Send => "send",
            Mix::Pubkey => "pubkey",
            Mix::List => "list",
            Mix::Push => "push",
        }
    }
}

/// The name a run registers its client `index` under; `run` keeps runs against one server apart.
pub fn client_name(run: u32, index: u32) -> String {
    format!("bench-{run:08x}-{index}")
}

/// The 160-byte key the benchmark registers for client `index`: DER-like ends, a distinct middle.
pub fn client_key(index: u32) -> PublicKey {
    let mut key = [0; PUBLIC_KEY_LEN];
    key[..3].copy_from_slice(&[0x30, 0x81, 0x9d]);
    for (position, byte) in key[3..PUBLIC_KEY_LEN - 3].iter_mut().enumerate() {
        *byte = (index as usize).wrapping_mul(31).wrapping_add(position) as u8;
    }
    key[3..7].copy_from_slice(&index.to_le_bytes());
    key[PUBLIC_KEY_LEN - 3..].copy_from_slice(&[0x02, 0x01, 0x11]);
    PublicKey(key)
}

/// The ids the server gave the clients, by client index.
#[derive(Debug, Clone)]
pub struct Directory {
    ids: Vec<ClientId>,
    index_of: HashMap<ClientId, u32>,
}

impl Directory {
    pub fn new(ids: Vec<ClientId>) -> Directory {
        let index_of = ids
            .iter()
            .enumerate()
            .map(|(index, id)| (*id, index as u32))
            .collect();
        Directory { ids, index_of }
    }

    pub fn len(&self) -> u32 {
        self.ids.len() as u32
    }

    pub fn id(&self, index: u32) -> ClientId {
        self.ids[index as usize]
    }

    pub fn index_of(&self, id: &ClientId) -> Option<u32> {
        self.index_of.get(id).copied()
    }
}

/// What a request's reply must show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Registered,
    Listed,
    Key { target: u32 },
    Sent { stamp: Stamp, destination: u32 },
    Pulled,
}

/// One encoded request and what its reply must show.
#[derive(Debug, Clone)]
pub struct Request {
    pub operation: Operation,
    pub bytes: Vec<u8>,
    pub expect: Expect,
}

/// Why a reply is not the one its request called for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Reply(#[from] ReplyError),
    #[error("the reply names client {actual}, the request {expected}")]
    WrongClient {
        expected: ClientId,
        actual: ClientId,
    },
    #[error("the public key of client {0} is not the one it registered")]
    WrongKey(u32),
}

impl CheckError {
    /// The server refused the request with 9000, as opposed to answering it wrongly.
    pub fn is_refusal(&self) -> bool {
        matches!(self, CheckError::Reply(ReplyError::ServerError))
    }
}

/// A register request for client `index` of run `run`.
pub fn register(edition: Edition, run: u32, index: u32) -> Request {
    Request {
        operation: Operation::Register,
        bytes: register_request(edition, &client_name(run, index), &client_key(index)),
        expect: Expect::Registered,
    }
}

/// The id a register reply gives.
pub fn registered(edition: Edition, reply: &ReplyView<'_>) -> Result<ClientId, CheckError> {
    check_reply_code(edition, Operation::Register, &reply.header)?;
    Ok(parse_registered(reply.payload)?)
}

/// Builds the requests of registered clients and checks their replies.
#[derive(Debug)]
pub struct Workload {
    pub edition: Edition,
    /// The run tag the clients registered under.
    pub run: u32,
    /// Content bytes of every message sent.
    pub size: usize,
    pub directory: Directory,
    /// The clients messages are sent to.
    pub destinations: Range<u32>,
    /// Whether replies are checked beyond their code: off against the floor, whose replies
    /// have the right sizes but no content.
    pub verified: bool,
}

impl Workload {
    /// The request of `operation` by client `me`; a send takes the next of `next_seq`.
    pub fn request(
        &self,
        operation: Operation,
        me: u32,
        rng: &mut fastrand::Rng,
        next_seq: &mut u64,
    ) -> Request {
        let caller = self.directory.id(me);
        let (bytes, expect) = match operation {
            Operation::Register => return register(self.edition, self.run, me),
            Operation::ListClients => (
                bare_request(self.edition, operation, caller),
                Expect::Listed,
            ),
            Operation::PullMessages => return self.pull(me),
            Operation::PublicKey => {
                let target = self.other_than(me, rng);
                (
                    public_key_request(self.edition, caller, self.directory.id(target)),
                    Expect::Key { target },
                )
            }
            Operation::SendMessage => {
                let destination = self.other_than(me, rng);
                let stamp = Stamp {
                    sender: me,
                    seq: *next_seq,
                };
                *next_seq += 1;
                let content = record::encode(stamp, self.size);
                (
                    send_request(
                        self.edition,
                        caller,
                        self.directory.id(destination),
                        MessageType::Text as u8,
                        &content,
                    ),
                    Expect::Sent { stamp, destination },
                )
            }
        };
        Request {
            operation,
            bytes,
            expect,
        }
    }

    /// A pull of client `me`'s queue.
    pub fn pull(&self, me: u32) -> Request {
        Request {
            operation: Operation::PullMessages,
            bytes: bare_request(self.edition, Operation::PullMessages, self.directory.id(me)),
            expect: Expect::Pulled,
        }
    }

    /// A random destination other than `me`; `me` itself when it is the only one.
    fn other_than(&self, me: u32, rng: &mut fastrand::Rng) -> u32 {
        let Range { start, end } = self.destinations;
        let mine = self.destinations.contains(&me);
        let others = (end - start).saturating_sub(u32::from(mine));
        if others == 0 {
            return me;
        }
        let pick = start + rng.u32(0..others);
        if mine && pick >= me {
            pick + 1
        } else {
            pick
        }
    }

    /// Checks the reply to `request` by client `me`, recording sends and deliveries in `ledger`.
    pub fn check(
        &self,
        request: &Request,
        me: u32,
        reply: &ReplyView<'_>,
        now: Instant,
        ledger: &mut Ledger,
    ) -> Result<(), CheckError> {
        check_reply_code(self.edition, request.operation, &reply.header)?;
        if !self.verified {
            return Ok(());
        }
        match request.expect {
            Expect::Registered => parse_registered(reply.payload).map(drop)?,
            Expect::Listed => parse_client_list(reply.payload).map(drop)?,
            Expect::Key { target } => {
                let (id, key) = parse_public_key(reply.payload)?;
                self.expect_client(target, id)?;
                if key != client_key(target) {
                    return Err(CheckError::WrongKey(target));
                }
            }
            Expect::Sent { stamp, destination } => {
                let (to, id) = parse_sent(reply.payload)?;
                self.expect_client(destination, to)?;
                ledger.acknowledged(stamp, destination, id, now);
            }
            Expect::Pulled => {
                for message in pulled_messages(reply.payload) {
                    deliver(&self.directory, &message?, me, Via::Pull, now, ledger);
                }
            }
        }
        Ok(())
    }

    fn expect_client(&self, expected: u32, actual: ClientId) -> Result<(), CheckError> {
        let expected = self.directory.id(expected);
        if actual == expected {
            Ok(())
        } else {
            Err(CheckError::WrongClient { expected, actual })
        }
    }
}

/// Records a message delivered to client `receiver` at `at` (the messages of a pull reply
/// before a cut-short one count).
pub fn deliver(
    directory: &Directory,
    message: &PulledMessage<'_>,
    receiver: u32,
    via: Via,
    at: Instant,
    ledger: &mut Ledger,
) {
    match record::decode(message.content) {
        Ok(stamp) => ledger.received(Receipt {
            stamp,
            receiver,
            id: message.id,
            envelope_matches: message.kind == MessageType::Text as u8
                && directory.index_of(&message.from) == Some(stamp.sender),
            via,
            at,
        }),
        Err(_) => ledger.garbled(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use messageu_protocol::ReplyHeader;

    fn workload_of(clients: u32) -> Workload {
        Workload {
            edition: Edition::Y2024,
            run: 1,
            size: 100,
            directory: Directory::new((0..clients).map(|i| ClientId([i as u8; 16])).collect()),
            destinations: 0..clients,
            verified: true,
        }
    }

    fn reply(workload: &Workload, operation: Operation, payload: &[u8]) -> ReplyHeader {
        ReplyHeader {
            version: 2,
            code: workload.edition.reply_code(operation),
            payload_size: payload.len() as u32,
        }
    }

    #[test]
    fn random_peers_are_never_the_caller() {
        let workload = workload_of(3);
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..200 {
            assert_ne!(workload.other_than(1, &mut rng), 1);
        }
        assert_eq!(workload_of(1).other_than(0, &mut rng), 0);
    }

    #[test]
    fn sends_go_to_the_destinations_only() {
        let mut workload = workload_of(6);
        workload.destinations = 3..6;
        let mut rng = fastrand::Rng::with_seed(5);
        let mut seen = [false; 6];
        for _ in 0..200 {
            seen[workload.other_than(0, &mut rng) as usize] = true;
            assert_ne!(workload.other_than(4, &mut rng), 4);
        }
        assert_eq!(seen, [false, false, false, true, true, true]);
    }

    #[test]
    fn an_acknowledged_send_then_its_pull_is_exactly_once() {
        let workload = workload_of(2);
        let mut rng = fastrand::Rng::with_seed(7);
        let mut seq = 0;
        let mut ledger = Ledger::default();
        let send = workload.request(Operation::SendMessage, 0, &mut rng, &mut seq);
        assert_eq!(seq, 1);
        let Expect::Sent { stamp, destination } = send.expect else {
            panic!("a send expects an acknowledgement");
        };
        assert_eq!(destination, 1);

        let mut sent = workload.directory.id(1).0.to_vec();
        sent.extend_from_slice(&9u32.to_le_bytes());
        let view = ReplyView {
            header: reply(&workload, Operation::SendMessage, &sent),
            payload: &sent,
        };
        workload
            .check(&send, 0, &view, Instant::now(), &mut ledger)
            .expect("valid ack");

        let mut pulled = workload.directory.id(0).0.to_vec();
        pulled.extend_from_slice(&9u32.to_le_bytes());
        pulled.push(MessageType::Text as u8);
        pulled.extend_from_slice(&100u32.to_le_bytes());
        pulled.extend_from_slice(&record::encode(stamp, 100));
        let pull = workload.request(Operation::PullMessages, 1, &mut rng, &mut seq);
        let view = ReplyView {
            header: reply(&workload, Operation::PullMessages, &pulled),
            payload: &pulled,
        };
        workload
            .check(&pull, 1, &view, Instant::now(), &mut ledger)
            .expect("valid pull");
        let verdict = ledger.verdict();
        assert!(verdict.is_exactly_once(), "{verdict:?}");
        assert_eq!(verdict.delivered, 1);

        // The same message from the wrong sender id is corrupted and a second delivery.
        pulled[..16].copy_from_slice(&workload.directory.id(1).0);
        let view = ReplyView {
            header: reply(&workload, Operation::PullMessages, &pulled),
            payload: &pulled,
        };
        workload
            .check(&pull, 1, &view, Instant::now(), &mut ledger)
            .expect("well-formed");
        let verdict = ledger.verdict();
        assert_eq!((verdict.corrupted, verdict.duplicated), (1, 1));
    }

    #[test]
    fn wrong_keys_and_refusals_are_told_apart() {
        let workload = workload_of(2);
        let mut rng = fastrand::Rng::with_seed(3);
        let mut ledger = Ledger::default();
        let request = workload.request(Operation::PublicKey, 0, &mut rng, &mut 0);
        let mut payload = workload.directory.id(1).0.to_vec();
        payload.extend_from_slice(&client_key(0).0);
        let view = ReplyView {
            header: reply(&workload, Operation::PublicKey, &payload),
            payload: &payload,
        };
        assert_eq!(
            workload.check(&request, 0, &view, Instant::now(), &mut ledger),
            Err(CheckError::WrongKey(1))
        );
        let refused = ReplyView {
            header: ReplyHeader {
                version: 2,
                code: 9000,
                payload_size: 0,
            },
            payload: &[],
        };
        let error = workload
            .check(&request, 0, &refused, Instant::now(), &mut ledger)
            .expect_err("9000");
        assert!(error.is_refusal());
    }

    #[test]
    fn keys_differ_per_client_and_look_like_der() {
        assert_ne!(client_key(1), client_key(2));
        assert_eq!(&client_key(5).0[..3], &[0x30, 0x81, 0x9d]);
        assert_ne!(client_name(1, 2), client_name(2, 2));
    }
}
