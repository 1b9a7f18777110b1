//! Database failover under load: two server binaries share a PostgreSQL primary that has a
//! synchronous standby (`common::pg_pair`), their `--db` naming both hosts with
//! `target_session_attrs=read-write`. Client threads send and pull through both nodes; the
//! primary is killed (SIGKILL to all its processes), the standby promoted, and the load goes
//! on through the nodes' own reconnection, with no restart. Then every queue is drained:
//! every acknowledged send must have been delivered, intact; duplicates, the 9000s of the
//! outage and how long the clients saw it are reported.
//!
//! Always on PostgreSQL, whatever `MESSAGEU_TEST_STORE` says; it never skips.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::crash::content::{
    message_content, message_kind, Delivery, MessageKey, SPOOL_THRESHOLD,
};
use common::crash::{edition_of, Connection};
use common::pg_pair::ReplicatedPair;
use common::*;
use messageu::protocol::client::{bare_request, parse_sent, pulled_messages, send_request};
use messageu::protocol::{ClientId, Operation, ERROR_REPLY_CODE};

const DATABASE: &str = "messageu";
const CLIENTS: usize = 8;
/// Load before the kill, between the kill and the promotion, and after it.
const BEFORE_KILL: Duration = Duration::from_millis(1500);
const BEFORE_PROMOTION: Duration = Duration::from_millis(500);
const AFTER_PROMOTION: Duration = Duration::from_millis(2500);
/// A client that got a 9000 waits this long before its next request.
const PAUSE_AFTER_ERROR: Duration = Duration::from_millis(5);
/// The test's bound, well under a minute.
const DEADLINE: Duration = Duration::from_secs(50);

/// What a request of a load client came to.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Acknowledged {
        id: u32,
        at: Instant,
    },
    /// 9000: nothing acknowledged.
    Refused {
        at: Instant,
    },
    /// The connection failed before the reply: the message may or may not be stored.
    Unanswered,
}

/// One load client: sends to random others and pulls its own queue, through one node.
struct LoadClient {
    me: usize,
    node: SocketAddr,
    rng: Rng,
    /// Every send, indexed by sequence number, with its recipient.
    sends: Vec<(usize, Outcome)>,
    pulls_refused: Vec<Instant>,
    deliveries: Vec<Delivery>,
    reconnections: usize,
}

impl LoadClient {
    fn run(mut self, ids: &[ClientId], stop: &AtomicBool) -> LoadClient {
        let mut connection = None;
        while !stop.load(Ordering::SeqCst) {
            let open = match connection.take() {
                Some(open) => Ok(open),
                None => Connection::open(self.node, 0),
            };
            let Ok(mut open) = open else {
                self.reconnections += 1;
                thread::sleep(PAUSE_AFTER_ERROR);
                continue;
            };
            let refused = self.send(&mut open, ids).and_then(|sent| {
                let pulled = self.pull(&mut open, ids)?;
                Ok(!sent || pulled.is_none())
            });
            match refused {
                Ok(refused) => {
                    connection = Some(open);
                    if refused {
                        thread::sleep(PAUSE_AFTER_ERROR);
                    }
                }
                Err(_) => self.reconnections += 1,
            }
        }
        self
    }

    /// Sends the next message to a random other client; returns whether it was acknowledged.
    fn send(&mut self, connection: &mut Connection, ids: &[ClientId]) -> std::io::Result<bool> {
        let key = MessageKey {
            sender: self.me,
            seq: self.sends.len() as u32,
        };
        let to = (self.me + 1 + self.rng.below(CLIENTS - 1)) % CLIENTS;
        let edition = edition_of(self.me);
        let request = send_request(
            edition,
            ids[self.me],
            ids[to],
            message_kind(key),
            &message_content(key),
        );
        self.sends.push((to, Outcome::Unanswered));
        let (header, payload) = connection.call(&request)?;
        let at = Instant::now();
        let outcome = if header.code == ERROR_REPLY_CODE {
            Outcome::Refused { at }
        } else {
            assert_eq!(header.code, edition.reply_code(Operation::SendMessage));
            let (destination, id) = parse_sent(&payload).expect("a well-formed send reply");
            assert_eq!(destination, ids[to], "acknowledged for its recipient");
            Outcome::Acknowledged { id: id.0, at }
        };
        self.sends[key.seq as usize].1 = outcome;
        Ok(matches!(outcome, Outcome::Acknowledged { .. }))
    }

    /// Pulls once; returns how many messages came, or `None` for a 9000.
    fn pull(
        &mut self,
        connection: &mut Connection,
        ids: &[ClientId],
    ) -> std::io::Result<Option<usize>> {
        let edition = edition_of(self.me);
        let request = bare_request(edition, Operation::PullMessages, ids[self.me]);
        let (header, payload) = connection.call(&request)?;
        if header.code == ERROR_REPLY_CODE {
            self.pulls_refused.push(Instant::now());
            return Ok(None);
        }
        assert_eq!(header.code, edition.reply_code(Operation::PullMessages));
        let before = self.deliveries.len();
        for message in pulled_messages(&payload) {
            self.deliveries.push(Delivery::of(
                &message.expect("a well-formed pulled message"),
            ));
        }
        Ok(Some(self.deliveries.len() - before))
    }

    /// Pulls until the queue is empty.
    fn drain(&mut self, ids: &[ClientId], deadline: Instant) {
        let mut connection = Connection::open(self.node, 0).expect("connect to drain");
        loop {
            assert!(
                Instant::now() < deadline,
                "client {}: queue never drained",
                self.me
            );
            match self
                .pull(&mut connection, ids)
                .expect("pull while draining")
            {
                Some(0) => return,
                Some(_) => {}
                None => thread::sleep(PAUSE_AFTER_ERROR),
            }
        }
    }
}

/// What the records prove.
#[derive(Debug, Default)]
struct Findings {
    acknowledged: usize,
    lost: Vec<String>,
    corrupted: Vec<String>,
    duplicates: usize,
    unacknowledged_delivered: usize,
    refused: usize,
    refused_before_kill: usize,
}

fn judge(clients: &[LoadClient], ids: &[ClientId], kill_at: Instant) -> Findings {
    let mut findings = Findings::default();
    let mut delivered = std::collections::HashMap::<MessageKey, usize>::new();
    for client in clients {
        for message in &client.deliveries {
            let Some(key) = message.key else {
                findings
                    .corrupted
                    .push(format!("client {}: a content never sent", client.me));
                continue;
            };
            let (to, outcome) = clients[key.sender].sends[key.seq as usize];
            let id_differs =
                matches!(outcome, Outcome::Acknowledged { id, .. } if id != message.id);
            if to != client.me
                || message.from != ids[key.sender]
                || message.kind != message_kind(key)
                || id_differs
            {
                findings.corrupted.push(format!(
                    "client {}: {key:?} is not what was sent",
                    client.me
                ));
                continue;
            }
            *delivered.entry(key).or_default() += 1;
        }
    }
    findings.duplicates = delivered.values().map(|count| count - 1).sum();
    for client in clients {
        for (seq, (_, outcome)) in client.sends.iter().enumerate() {
            let key = MessageKey {
                sender: client.me,
                seq: seq as u32,
            };
            let was_delivered = delivered.contains_key(&key);
            match outcome {
                Outcome::Acknowledged { id, .. } => {
                    findings.acknowledged += 1;
                    if !was_delivered {
                        findings.lost.push(format!("{key:?}, id {id}"));
                    }
                }
                Outcome::Refused { .. } | Outcome::Unanswered => {
                    findings.unacknowledged_delivered += usize::from(was_delivered);
                }
            }
        }
        let refusals = client
            .sends
            .iter()
            .filter_map(|(_, outcome)| match outcome {
                Outcome::Refused { at } => Some(*at),
                _ => None,
            });
        for at in refusals.chain(client.pulls_refused.iter().copied()) {
            findings.refused += 1;
            findings.refused_before_kill += usize::from(at < kill_at);
        }
    }
    findings
}

/// The longest wait between two acknowledgements of each client: the outage as it saw it.
fn longest_gaps(clients: &[LoadClient]) -> Vec<Duration> {
    clients
        .iter()
        .map(|client| {
            let acknowledged: Vec<Instant> = client
                .sends
                .iter()
                .filter_map(|(_, outcome)| match outcome {
                    Outcome::Acknowledged { at, .. } => Some(*at),
                    _ => None,
                })
                .collect();
            let gaps = acknowledged.windows(2).map(|pair| pair[1] - pair[0]);
            gaps.max().unwrap_or_default()
        })
        .collect()
}

/// Whether every client had a send acknowledged after `since`.
fn all_acknowledged_after(clients: &[LoadClient], since: Instant) -> bool {
    clients.iter().all(|client| {
        client
            .sends
            .iter()
            .any(|(_, outcome)| matches!(outcome, Outcome::Acknowledged { at, .. } if *at > since))
    })
}

/// Waits until the promoted standby holds no message: the deletions of the drains' last
/// pulls commit in the nodes' next rounds.
fn wait_until_empty(pair: &ReplicatedPair, deadline: Instant) {
    loop {
        let left = pair.standby_sql(DATABASE, "SELECT count(*) FROM messages");
        if left == "0" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{left} messages left after the drains"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn start_node(dir: &Path, index: usize, db: &str) -> BinaryServer {
    let dir = dir.join(format!("node{index}"));
    std::fs::create_dir(&dir).expect("the node's folder");
    let threshold = SPOOL_THRESHOLD.to_string();
    let args = [
        "--db",
        db,
        "--durability",
        "full",
        "--spool-threshold",
        &threshold,
    ];
    BinaryServer::start(&dir, &args)
}

fn log_lines(node: &BinaryServer, sign: &str) -> usize {
    node.log_text()
        .lines()
        .filter(|line| line.contains(sign))
        .count()
}

#[test]
fn killing_the_primary_and_promoting_the_standby_loses_no_acknowledged_message() {
    let began = Instant::now();
    let mut pair = ReplicatedPair::start(DATABASE);
    assert_eq!(pair.standby_state(), "sync");
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = pair.conninfo(DATABASE);
    let mut nodes = [
        start_node(dir.path(), 0, &db),
        start_node(dir.path(), 1, &db),
    ];
    let mut registrar = Client::connect(nodes[0].addr);
    let ids: Arc<Vec<ClientId>> = Arc::new(
        (0..CLIENTS)
            .map(|index| registrar.register(edition_of(index), &format!("client {index}")))
            .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|me| {
            let client = LoadClient {
                me,
                node: nodes[me % nodes.len()].addr,
                rng: Rng::new(me as u64 + 1),
                sends: Vec::new(),
                pulls_refused: Vec::new(),
                deliveries: Vec::new(),
                reconnections: 0,
            };
            let (ids, stop) = (Arc::clone(&ids), Arc::clone(&stop));
            thread::spawn(move || client.run(&ids, &stop))
        })
        .collect();

    thread::sleep(BEFORE_KILL);
    let kill_at = Instant::now();
    pair.kill_primary();
    thread::sleep(BEFORE_PROMOTION);
    pair.promote_standby();
    let promoted_at = Instant::now();
    thread::sleep(AFTER_PROMOTION);
    stop.store(true, Ordering::SeqCst);
    let mut clients: Vec<LoadClient> = threads
        .into_iter()
        .map(|thread| thread.join().expect("a load client panicked"))
        .collect();
    let deadline = began + DEADLINE;
    for client in &mut clients {
        client.drain(&ids, deadline);
    }

    for (index, node) in nodes.iter_mut().enumerate() {
        assert!(node.is_running(), "node {index} died: {}", node.log_text());
        assert_eq!(
            (
                log_lines(node, "lost the connection to the database"),
                log_lines(node, "connected to the database again")
            ),
            (1, 1),
            "node {index} logs the loss and the return once each: {}",
            node.log_text()
        );
    }
    let findings = judge(&clients, &ids, kill_at);
    let gaps = longest_gaps(&clients);
    eprintln!(
        "db failover: {} sends acknowledged, {} lost, {} corrupted, {} duplicate deliveries, {} \
         unacknowledged sends delivered anyway; {} requests answered 9000 ({} before the kill), \
         {} client reconnections; promoted {:.2?} after the kill; the longest wait between two \
         acknowledgements of a client {:.2?} (of the client that waited least {:.2?}); {:.1?} \
         in all",
        findings.acknowledged,
        findings.lost.len(),
        findings.corrupted.len(),
        findings.duplicates,
        findings.unacknowledged_delivered,
        findings.refused,
        findings.refused_before_kill,
        clients
            .iter()
            .map(|client| client.reconnections)
            .sum::<usize>(),
        promoted_at - kill_at,
        gaps.iter().max().copied().unwrap_or_default(),
        gaps.iter().min().copied().unwrap_or_default(),
        began.elapsed(),
    );
    assert!(
        findings.lost.is_empty(),
        "acknowledged messages lost: {:?}",
        findings.lost
    );
    assert!(
        findings.corrupted.is_empty(),
        "corrupted deliveries: {:?}",
        findings.corrupted
    );
    assert_eq!(findings.refused_before_kill, 0, "9000s before the kill");
    assert!(findings.refused > 0, "the outage was seen");
    assert!(
        all_acknowledged_after(&clients, promoted_at),
        "every client's sends are acknowledged again after the promotion, with no restart"
    );
    wait_until_empty(&pair, deadline);
    assert!(began.elapsed() < DEADLINE, "took {:.1?}", began.elapsed());
}
