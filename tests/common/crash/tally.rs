//! The checks every crash campaign makes of its records: each delivery is exactly a message
//! sent to its recipient, each acknowledged send was delivered, and every server generation
//! that ran long enough served.

use std::time::Duration;

use messageu::protocol::ClientId;

use super::content::{message_kind, Delivery, MessageKey};
use super::{assert_none, Load, Outcome, SendRecord, Settings};

/// A server that ran this long must have acknowledged sends: it restarted and it serves.
const SURE_TO_SERVE: Duration = Duration::from_millis(500);

/// What a campaign's records prove about its sends and deliveries.
#[derive(Default)]
pub struct Tally {
    pub acknowledged: usize,
    pub unacknowledged: usize,
    pub delivered_unacknowledged: usize,
    /// Distinct messages delivered, acknowledged or not.
    pub delivered: usize,
    /// Acknowledged messages never delivered.
    pub lost: Vec<String>,
    /// Deliveries that are not what was sent: content, sender, type, id or recipient.
    pub corrupted: Vec<String>,
    /// Other breaches of the contract.
    pub violations: Vec<String>,
}

impl Tally {
    /// A tally that starts with what the clients saw go wrong.
    pub fn new<L: Load>(clients: &[L]) -> Tally {
        let violations = clients
            .iter()
            .flat_map(|client| client.agent().violations.iter().cloned())
            .collect();
        Tally {
            violations,
            ..Tally::default()
        }
    }

    /// Checks a delivery to client `me` against its send; returns the message's key when it
    /// is the message that was sent, and records a corruption otherwise.
    pub fn check_delivery<L: Load>(
        &mut self,
        clients: &[L],
        ids: &[ClientId],
        me: usize,
        message: &Delivery,
    ) -> Option<MessageKey> {
        let Some(key) = message.key else {
            self.corrupted.push(format!(
                "client {me} got message id {} with a content never sent",
                message.id
            ));
            return None;
        };
        let sent = clients.get(key.sender);
        let Some(send) = sent.and_then(|sender| sender.agent().sends.get(key.seq as usize)) else {
            self.corrupted
                .push(format!("client {me} got {key:?}, which was never sent"));
            return None;
        };
        if let Some(wrong) = mismatch(me, message, key, send, ids) {
            self.corrupted
                .push(format!("client {me} got {key:?}: {wrong}"));
            return None;
        }
        Some(key)
    }

    /// Tallies every send: an acknowledged one must have been delivered, a rejected one is a
    /// violation.
    pub fn check_sends<L: Load>(&mut self, clients: &[L], delivered: impl Fn(&MessageKey) -> bool) {
        for client in clients {
            let agent = client.agent();
            for (seq, send) in agent.sends.iter().enumerate() {
                let key = MessageKey {
                    sender: agent.me,
                    seq: seq as u32,
                };
                let was_delivered = delivered(&key);
                self.delivered += usize::from(was_delivered);
                match &send.outcome {
                    Outcome::Acknowledged { id, generation, .. } => {
                        self.acknowledged += 1;
                        if !was_delivered {
                            self.lost.push(format!(
                                "{key:?} to client {}, id {id}, acknowledged by generation \
                                 {generation}",
                                send.to
                            ));
                        }
                    }
                    Outcome::Unacknowledged => {
                        self.unacknowledged += 1;
                        self.delivered_unacknowledged += usize::from(was_delivered);
                    }
                    Outcome::Rejected(reason) => self.violations.push(format!(
                        "client {}: send {seq} rejected: {reason}",
                        agent.me
                    )),
                }
            }
        }
    }

    /// Every server that ran long enough acknowledged sends: it restarted and served.
    pub fn check_every_long_run_served<L: Load>(&mut self, clients: &[L], lifetimes: &[Duration]) {
        let mut acknowledged = vec![0; lifetimes.len()];
        for send in clients.iter().flat_map(|client| &client.agent().sends) {
            if let Outcome::Acknowledged { generation, .. } = send.outcome {
                acknowledged[generation] += 1;
            }
        }
        for (generation, lifetime) in lifetimes.iter().enumerate() {
            if *lifetime >= SURE_TO_SERVE && acknowledged[generation] == 0 {
                self.violations.push(format!(
                    "server generation {generation} ran {lifetime:?} and acknowledged nothing"
                ));
            }
        }
    }

    /// The sends and deliveries, in a sentence.
    pub fn summary(&self) -> String {
        format!(
            "{} sends acknowledged, {} unacknowledged ({} of those delivered anyway); {} messages \
             delivered, {} lost, {} corrupted",
            self.acknowledged,
            self.unacknowledged,
            self.delivered_unacknowledged,
            self.delivered,
            self.lost.len(),
            self.corrupted.len(),
        )
    }

    /// Fails on a lost or corrupted message, a violation, or a load that hardly ran.
    pub fn assert_sound(&self, settings: &Settings) {
        assert_none(&self.lost, "acknowledged messages lost", settings);
        assert_none(&self.corrupted, "corrupted deliveries", settings);
        assert_none(&self.violations, "contract violations", settings);
        assert!(
            self.acknowledged >= settings.kills,
            "only {} sends acknowledged: the load hardly ran; {settings}",
            self.acknowledged
        );
    }
}

/// How a delivery differs from its send, if it does.
fn mismatch(
    me: usize,
    message: &Delivery,
    key: MessageKey,
    send: &SendRecord,
    ids: &[ClientId],
) -> Option<String> {
    if send.to != me {
        return Some(format!("it was sent to client {}", send.to));
    }
    if message.from != ids[key.sender] {
        return Some(format!("sender {}", message.from));
    }
    if message.kind != message_kind(key) {
        return Some(format!("type {}", message.kind));
    }
    match send.outcome {
        Outcome::Acknowledged { id, .. } if id != message.id => {
            Some(format!("id {}, acknowledged as {id}", message.id))
        }
        _ => None,
    }
}
