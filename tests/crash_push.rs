//! Crash safety under push delivery (protocol §E5): the server binary runs under load where
//! every client is authenticated (§E3) and subscribed, sends to the others and acknowledges
//! what is pushed to it; now and then a client drops its connection with pushed messages
//! unacknowledged. The server is killed with SIGKILL at random moments and restarted on the
//! same database, again and again (the harness is `common::crash`); clients reconnect, log in
//! and subscribe again. At the end each client subscribes and acknowledges everything left.
//!
//! Checked: every acknowledged send is pushed to its recipient intact; every push that was
//! not acknowledged on its connection is pushed again (nothing is lost with a dropped or
//! killed subscriber); a message whose acknowledgement was answered is never pushed again (the
//! deletion was durable); acknowledgements delete exactly what they list; receipts (§E7) name
//! messages their sender sent. Duplicates (pushes again) are counted by cause.
//!
//! Longer campaigns are a matter of environment variables (defaults in brackets):
//! `CRASH_KILLS` [20], `CRASH_CLIENTS` [10], `CRASH_SEED` [from the clock, printed].
//!
//!     CRASH_KILLS=200 cargo test --release --test crash_push -- --nocapture

mod common;
mod owners;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use common::crash::content::{Delivery, MessageKey};
use common::crash::tally::Tally;
use common::crash::{run_campaign, Agent, Campaign, Connection, Load, Outcome, Settings, Shared};
use common::*;
use messageu::protocol::client::pulled_messages;
use messageu::protocol::codes::Extension;
use messageu::protocol::extension::{extension_request, hello_payload};
use messageu::protocol::push::{acknowledge_payload, parse_count};
use messageu::protocol::{ClientId, MessageId, PushCode, Receipt, Refusal, SERVER_VERSION};
use owners::{register_owner, Owner};

/// How often a round ends by dropping the connection with pushed messages unacknowledged.
const DROP_PERCENT: usize = 2;

/// How far the acknowledgement of a push got on the connection it came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Acked {
    /// Never sent: the connection ended first.
    Not,
    /// Sent, and the connection ended before its reply.
    Unanswered,
    /// Answered: the deletion is durable.
    Answered,
}

/// One message pushed to this client.
struct PushRecord {
    delivery: Delivery,
    /// The connection it came on, as an index into the client's connections.
    connection: usize,
    acked: Acked,
}

/// How one of a client's connections ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Still in use.
    Open,
    /// Dropped on purpose, with pushes unacknowledged.
    Dropped,
    /// Failed: the server was killed.
    Failed,
    /// Closed when the load stopped.
    Stopped,
}

/// One registered client: a thread that sends to random others and acknowledges what is
/// pushed to it, reconnecting after every kill and every drop, and records all of it.
struct PushClient {
    agent: Agent,
    owner: Owner,
    pushes: Vec<PushRecord>,
    /// How each connection ended, in order; the last is the current one.
    connections: Vec<Ending>,
    /// The pushes on the current connection not acknowledged yet, as indices into `pushes`.
    pending: Vec<usize>,
    receipts: Vec<Receipt>,
}

impl Load for PushClient {
    fn agent(&self) -> &Agent {
        &self.agent
    }

    fn agent_mut(&mut self) -> &mut Agent {
        &mut self.agent
    }

    /// Logs in and subscribes; the previous connection, if still open, failed.
    fn open(&mut self, connection: &mut Connection, _: &Shared) -> io::Result<()> {
        if let Some(last @ Ending::Open) = self.connections.last_mut() {
            *last = Ending::Failed;
        }
        self.connections.push(Ending::Open);
        self.pending.clear();
        self.log_in(connection)?;
        self.subscribe(connection).map(drop)
    }

    /// One to three sends; then the pushes that came are acknowledged, or, now and then, only
    /// half of them before the connection is dropped.
    fn round(&mut self, connection: &mut Connection, shared: &Shared) -> io::Result<bool> {
        let sends = 1 + self.agent.rng.below(3);
        let sent = (0..sends).try_for_each(|_| self.agent.send(connection, shared));
        // What came before a failure was read, and is recorded.
        self.take_pushes(connection);
        sent?;
        if !self.pending.is_empty() && self.agent.rng.chance(DROP_PERCENT) {
            let half = self.pending.len() / 2;
            self.acknowledge(connection, half)?;
            *self.connections.last_mut().expect("a connection") = Ending::Dropped;
            return Ok(false);
        }
        self.acknowledge(connection, self.pending.len())?;
        Ok(true)
    }

    /// Subscribes once more and acknowledges every message that waits, as they come.
    fn drain(&mut self, shared: &Shared, deadline: Instant) {
        let me = self.agent.me;
        if let Some(last @ Ending::Open) = self.connections.last_mut() {
            *last = Ending::Stopped;
        }
        self.connections.push(Ending::Open);
        self.pending.clear();
        let (generation, addr) = shared.current().expect("the last server is published");
        let mut connection = Connection::open(addr, generation)
            .unwrap_or_else(|error| panic!("client {me}: cannot connect to drain: {error}"));
        self.log_in(&mut connection)
            .unwrap_or_else(|error| panic!("client {me}: cannot log in to drain: {error}"));
        let waiting = self
            .subscribe(&mut connection)
            .unwrap_or_else(|error| panic!("client {me}: cannot subscribe to drain: {error}"));
        // Pushes may come before the subscribe reply, and while acknowledging.
        let first = self.pushes.len();
        while self.pushes.len() - first < waiting as usize || !self.pending.is_empty() {
            assert!(
                Instant::now() < deadline,
                "client {me}: queue never drained"
            );
            if self.pending.is_empty() {
                let push = connection.next_push().unwrap_or_else(|error| {
                    panic!(
                        "client {me}: {} of {waiting} waiting messages pushed, then {error}",
                        self.pushes.len() - first
                    )
                });
                self.record_push(push);
            }
            self.acknowledge(&mut connection, self.pending.len())
                .unwrap_or_else(|error| panic!("client {me}: acknowledge while draining: {error}"));
        }
    }
}

impl PushClient {
    fn id(&self) -> ClientId {
        self.owner.id
    }

    /// Sends an extension request and reads its reply, which must be its success.
    fn call(
        &mut self,
        connection: &mut Connection,
        extension: Extension,
        payload: &[u8],
    ) -> io::Result<Vec<u8>> {
        let request = extension_request(extension, self.id(), payload);
        let reply = connection.call(&request);
        self.take_pushes(connection);
        let (header, payload) = reply?;
        if header.version == SERVER_VERSION && header.code == extension.reply_code() {
            return Ok(payload);
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "client {}: {extension} answered with {} version {} ({:?})",
                self.agent.me,
                header.code,
                header.version,
                Refusal::parse(&payload)
            ),
        ))
    }

    /// Hello, challenge, prove (§E3).
    fn log_in(&mut self, connection: &mut Connection) -> io::Result<()> {
        self.call(connection, Extension::Hello, &hello_payload())?;
        let challenge = self.call(connection, Extension::Challenge, &[])?;
        let proof = self.owner.answer(&challenge).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "a challenge that does not open")
        })?;
        self.call(connection, Extension::Prove, &proof).map(drop)
    }

    /// Subscribes; returns how many messages wait.
    fn subscribe(&mut self, connection: &mut Connection) -> io::Result<u32> {
        let reply = self.call(connection, Extension::Subscribe, &[])?;
        parse_count(&reply)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "a short subscribe reply"))
    }

    /// Records the pushes read so far (each call does, whatever became of it).
    fn take_pushes(&mut self, connection: &mut Connection) {
        while let Some(push) = connection.take_push() {
            self.record_push(push);
        }
    }

    fn record_push(&mut self, (code, payload): (PushCode, Vec<u8>)) {
        let me = self.agent.me;
        match code {
            PushCode::Message => {
                let mut messages = pulled_messages(&payload);
                match (messages.next(), messages.next()) {
                    (Some(Ok(message)), None) => {
                        self.pending.push(self.pushes.len());
                        self.pushes.push(PushRecord {
                            delivery: Delivery::of(&message),
                            connection: self.connections.len() - 1,
                            acked: Acked::Not,
                        });
                    }
                    _ => self.agent.violations.push(format!(
                        "client {me}: a push that is not one whole message ({} bytes)",
                        payload.len()
                    )),
                }
            }
            PushCode::Receipt => match Receipt::parse(&payload) {
                Some(receipt) => self.receipts.push(receipt),
                None => self
                    .agent
                    .violations
                    .push(format!("client {me}: a malformed receipt {payload:?}")),
            },
        }
    }

    /// Acknowledges the first `count` pending pushes; every one must be deleted.
    fn acknowledge(&mut self, connection: &mut Connection, count: usize) -> io::Result<()> {
        if count == 0 {
            return Ok(());
        }
        let acked: Vec<usize> = self.pending.drain(..count).collect();
        let ids: Vec<MessageId> = acked
            .iter()
            .map(|&push| MessageId(self.pushes[push].delivery.id))
            .collect();
        for &push in &acked {
            self.pushes[push].acked = Acked::Unanswered;
        }
        let reply = self.call(
            connection,
            Extension::Acknowledge,
            &acknowledge_payload(&ids),
        )?;
        for &push in &acked {
            self.pushes[push].acked = Acked::Answered;
        }
        // Each was pushed on this connection and not acknowledged: each waits until now.
        if parse_count(&reply) != Some(ids.len() as u32) {
            self.agent.violations.push(format!(
                "client {}: acknowledging {} pushed messages deleted {:?}",
                self.agent.me,
                ids.len(),
                parse_count(&reply)
            ));
        }
        Ok(())
    }
}

/// Why a message was pushed again: how its previous push ended.
#[derive(Debug, Default)]
struct Duplicates {
    /// Its connection failed in a kill before the acknowledgement was sent.
    killed: usize,
    /// Its acknowledgement was sent, and the kill came before the answer.
    unanswered: usize,
    /// Its connection was dropped on purpose before acknowledging it (every such push must
    /// come again: one that does not is lost).
    dropped: usize,
    /// The load stopped before acknowledging it.
    stopped: usize,
}

impl Duplicates {
    fn total(&self) -> usize {
        self.killed + self.unanswered + self.dropped + self.stopped
    }
}

/// What the campaign's records prove.
struct Findings {
    tally: Tally,
    pushes: usize,
    duplicates: Duplicates,
    receipts: usize,
}

impl Findings {
    fn new(campaign: &Campaign<PushClient>) -> Findings {
        let clients = &campaign.clients;
        let mut findings = Findings {
            tally: Tally::new(clients),
            pushes: 0,
            duplicates: Duplicates::default(),
            receipts: 0,
        };
        let mut delivered = HashMap::new();
        for client in clients {
            let pushes = findings.check_pushes(client, clients, &campaign.ids);
            findings.check_redeliveries(client, &pushes);
            delivered.extend(pushes);
            findings.check_receipts(client, &campaign.ids);
        }
        findings
            .tally
            .check_sends(clients, |key| delivered.contains_key(key));
        findings
            .tally
            .check_every_long_run_served(clients, &campaign.lifetimes);
        findings
    }

    /// Checks every message pushed to `client` against its send; returns each message's
    /// pushes, as indices into the client's.
    fn check_pushes(
        &mut self,
        client: &PushClient,
        clients: &[PushClient],
        ids: &[ClientId],
    ) -> HashMap<MessageKey, Vec<usize>> {
        let mut pushes: HashMap<MessageKey, Vec<usize>> = HashMap::new();
        for (index, push) in client.pushes.iter().enumerate() {
            self.pushes += 1;
            let me = client.agent.me;
            if let Some(key) = self.tally.check_delivery(clients, ids, me, &push.delivery) {
                pushes.entry(key).or_default().push(index);
            }
        }
        pushes
    }

    /// A message comes again only after a push that was not acknowledged, or whose
    /// acknowledgement was never answered, on an earlier connection; and a push not
    /// acknowledged must come again.
    fn check_redeliveries(
        &mut self,
        client: &PushClient,
        pushes: &HashMap<MessageKey, Vec<usize>>,
    ) {
        let me = client.agent.me;
        for (key, indices) in pushes {
            let records: Vec<&PushRecord> = indices.iter().map(|&i| &client.pushes[i]).collect();
            for pair in records.windows(2) {
                let (before, again) = (pair[0], pair[1]);
                let ending = client.connections[before.connection];
                let cause = match (before.acked, ending) {
                    _ if again.connection == before.connection => {
                        Err("pushed twice on one connection")
                    }
                    (Acked::Answered, _) => {
                        Err("pushed again after its acknowledgement was answered")
                    }
                    (Acked::Unanswered, _) => Ok(&mut self.duplicates.unanswered),
                    (Acked::Not, Ending::Failed) => Ok(&mut self.duplicates.killed),
                    (Acked::Not, Ending::Dropped) => Ok(&mut self.duplicates.dropped),
                    (Acked::Not, Ending::Stopped) => Ok(&mut self.duplicates.stopped),
                    (Acked::Not, Ending::Open) => Err("pushed again while its connection was open"),
                };
                match cause {
                    Ok(count) => *count += 1,
                    Err(wrong) => self.tally.violations.push(format!(
                        "client {me}: {key:?} {wrong} (connections {} and {})",
                        before.connection, again.connection
                    )),
                }
            }
            let last = records.last().expect("every key was pushed");
            if last.acked == Acked::Not {
                self.tally.lost.push(format!(
                    "client {me}: {key:?} pushed on connection {} ({:?}), never acknowledged, \
                     never pushed again",
                    last.connection, client.connections[last.connection]
                ));
            }
        }
    }

    /// A receipt names a recipient this client sent to, and a message id it was given for it
    /// (or a send whose answer was lost).
    fn check_receipts(&mut self, client: &PushClient, ids: &[ClientId]) {
        let agent = &client.agent;
        for receipt in &client.receipts {
            self.receipts += 1;
            let sent = agent.sends.iter().any(|send| {
                ids[send.to] == receipt.recipient
                    && match send.outcome {
                        Outcome::Acknowledged { id, .. } => id == receipt.id.0,
                        Outcome::Unacknowledged => true,
                        Outcome::Rejected(_) => false,
                    }
            });
            if !sent {
                self.tally.violations.push(format!(
                    "client {}: a receipt for a message it did not send: {receipt:?}",
                    agent.me
                ));
            }
        }
    }
}

fn register_clients(addr: SocketAddr, settings: &Settings) -> (Vec<ClientId>, Vec<PushClient>) {
    let mut registrar = Client::connect(addr);
    let clients: Vec<PushClient> = (0..settings.clients)
        .map(|me| PushClient {
            agent: Agent::new(me, settings.seed),
            owner: register_owner(&mut registrar, &format!("client {me}")),
            pushes: Vec::new(),
            connections: Vec::new(),
            pending: Vec::new(),
            receipts: Vec::new(),
        })
        .collect();
    (clients.iter().map(PushClient::id).collect(), clients)
}

#[test]
fn sigkill_under_push_load_loses_nothing_and_never_pushes_an_answered_acknowledgement() {
    let settings = Settings::from_env(20, 10);
    eprintln!("push crash campaign: {settings}");
    let campaign = run_campaign(&settings, |addr| register_clients(addr, &settings));
    let findings = Findings::new(&campaign);
    let connections: usize = campaign.clients.iter().map(|c| c.connections.len()).sum();
    let drops: usize = campaign
        .clients
        .iter()
        .flat_map(|client| &client.connections)
        .filter(|&&ending| ending == Ending::Dropped)
        .count();
    eprintln!(
        "push crash campaign: {} SIGKILLs in {:.1?}; {}; {} pushes, {} duplicates {:?}; {} \
         connections, {drops} dropped on purpose leaving {} pushes unacknowledged, all pushed \
         again; {} receipts; {settings}",
        settings.kills,
        campaign.elapsed,
        findings.tally.summary(),
        findings.pushes,
        findings.duplicates.total(),
        findings.duplicates,
        connections,
        findings.duplicates.dropped,
        findings.receipts,
    );
    findings.tally.assert_sound(&settings);
    assert!(
        findings.duplicates.dropped > 0,
        "no connection was dropped with pushes unacknowledged: the load hardly ran; {settings}"
    );
    assert!(
        findings.receipts > 0,
        "no receipt came to the subscribed senders; {settings}"
    );
}
