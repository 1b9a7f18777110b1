//! The crash-campaign harness (`tests/crash.rs`, `tests/crash_push.rs`): the server binary
//! runs under load from client threads, is killed with SIGKILL at random moments and
//! restarted on the same database, again and again; then the load stops, every client drains
//! its queue, and a clean stop and restart must leave nothing queued. Each campaign brings its
//! load (a [`Load`]: how a client uses a connection and drains) and its checks; the harness
//! owns the server generations, the reconnecting client loop, the sends and the checks every
//! campaign makes of them (an acknowledged send is delivered intact).
//!
//! Longer campaigns are a matter of environment variables: `CRASH_KILLS`, `CRASH_CLIENTS`,
//! `CRASH_SEED` (from the clock by default, printed). The seed fixes the kill delays,
//! recipients and contents; thread timing still varies between runs.

pub mod content;
pub mod server;
pub mod tally;

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use messageu::protocol::client::{check_reply_code, parse_sent, send_request};
use messageu::protocol::{
    ClientId, Edition, Operation, PushCode, ReplyHeader, REPLY_HEADER_LEN, SERVER_VERSION,
};

use crate::common::{on_postgres, Rng, EDITIONS, IO_TIMEOUT};
use content::{message_content, message_kind, MessageKey};
use server::{assert_queues_empty_after_restart, kill_and_restart, start_server, stop_server};

/// How long a load client waits before asking again for a server that is being restarted.
const RECONNECT_PAUSE: Duration = Duration::from_millis(2);
/// The load's last server runs this long before the load stops and the queues are drained.
const FINAL_RUN: Duration = Duration::from_millis(500);
/// Far more than a campaign ever queues for one client: a larger announced frame is garbage,
/// and is not allocated.
const MAX_FRAME: u32 = 256 << 20;
/// Violations shown in a failure message; the count says how many there were.
const SHOWN: usize = 10;

/// The knobs of a campaign, from the environment.
pub struct Settings {
    pub kills: usize,
    pub clients: usize,
    pub seed: u64,
}

impl Settings {
    /// The settings the environment asks for, or the campaign's defaults.
    pub fn from_env(kills: usize, clients: usize) -> Settings {
        let clock_seed = || {
            let now = SystemTime::now().duration_since(UNIX_EPOCH);
            now.map_or(1, |since| since.as_nanos() as u64)
        };
        let settings = Settings {
            kills: env_number("CRASH_KILLS").map_or(kills, |kills| kills as usize),
            clients: env_number("CRASH_CLIENTS").map_or(clients, |clients| clients as usize),
            seed: env_number("CRASH_SEED").unwrap_or_else(clock_seed),
        };
        assert!(
            (2..=u16::MAX as usize).contains(&settings.clients),
            "CRASH_CLIENTS must be 2..=65535: every client sends to another"
        );
        settings
    }

    /// Generous against hangs: a kill costs about half a second; the default campaigns stay
    /// well within the three minutes CI allows.
    fn deadline(&self, from: Instant) -> Instant {
        from + Duration::from_secs(60) + Duration::from_secs(2) * self.kills as u32
    }
}

/// The command line that repeats a campaign's choices.
impl fmt::Display for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CRASH_SEED={} CRASH_KILLS={} CRASH_CLIENTS={}",
            self.seed, self.kills, self.clients
        )
    }
}

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {value:?}")),
    )
}

/// Where the load finds the server: one generation per start, and its address, or none
/// while that generation is being killed.
struct Target {
    generation: usize,
    addr: Option<SocketAddr>,
}

/// What the load clients share with the test's main thread.
pub struct Shared {
    pub ids: Vec<ClientId>,
    target: Mutex<Target>,
    stop: AtomicBool,
}

impl Shared {
    /// Called before a kill: failures from then on are the kill's doing.
    fn withdraw(&self) {
        self.target.lock().unwrap().addr = None;
    }

    fn publish(&self, generation: usize, addr: SocketAddr) {
        *self.target.lock().unwrap() = Target {
            generation,
            addr: Some(addr),
        };
    }

    pub fn current(&self) -> Option<(usize, SocketAddr)> {
        let target = self.target.lock().unwrap();
        target.addr.map(|addr| (target.generation, addr))
    }

    fn is_live(&self, generation: usize) -> bool {
        self.current().is_some_and(|(live, _)| live == generation)
    }
}

/// Stops the load when the main thread leaves, even by a failed assertion.
struct StopOnDrop<'a>(&'a Shared);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::SeqCst);
    }
}

/// A connection to one server generation. Every failure means the connection is gone.
pub struct Connection {
    stream: TcpStream,
    pub generation: usize,
    /// Pushes (protocol §E5) read while waiting for a reply, oldest first.
    pushes: VecDeque<(PushCode, Vec<u8>)>,
}

impl Connection {
    pub fn open(addr: SocketAddr, generation: usize) -> io::Result<Connection> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            generation,
            pushes: VecDeque::new(),
        })
    }

    fn read_frame(&mut self) -> io::Result<(ReplyHeader, Vec<u8>)> {
        let mut header = [0; REPLY_HEADER_LEN];
        self.stream.read_exact(&mut header)?;
        let header = ReplyHeader::parse(&header);
        if header.payload_size > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("frame announces {} bytes", header.payload_size),
            ));
        }
        let mut payload = vec![0; header.payload_size as usize];
        self.stream.read_exact(&mut payload)?;
        Ok((header, payload))
    }

    /// Writes a request and reads its whole reply; pushes that come first are kept for
    /// [`next_push`](Self::next_push).
    pub fn call(&mut self, request: &[u8]) -> io::Result<(ReplyHeader, Vec<u8>)> {
        self.stream.write_all(request)?;
        loop {
            let (header, payload) = self.read_frame()?;
            match PushCode::from_wire(header.code) {
                Some(push) => self.pushes.push_back((push, payload)),
                None => return Ok((header, payload)),
            }
        }
    }

    /// The oldest push read and not taken yet, if any.
    pub fn take_push(&mut self) -> Option<(PushCode, Vec<u8>)> {
        self.pushes.pop_front()
    }

    /// The next push: one read already, or the next frame, which must be a push since no
    /// request is unanswered.
    pub fn next_push(&mut self) -> io::Result<(PushCode, Vec<u8>)> {
        if let Some(push) = self.take_push() {
            return Ok(push);
        }
        let (header, payload) = self.read_frame()?;
        let push = PushCode::from_wire(header.code).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("frame {} answers no request and is no push", header.code),
            )
        })?;
        Ok((push, payload))
    }
}

/// Checks that a reply answers `operation`; the error says how it does not.
pub fn answers(edition: Edition, operation: Operation, header: &ReplyHeader) -> Result<(), String> {
    if header.version != SERVER_VERSION {
        return Err(format!("server version {}", header.version));
    }
    check_reply_code(edition, operation, header).map_err(|error| error.to_string())
}

/// Each client speaks one edition for its classic requests, so that every edition is under
/// load.
pub fn edition_of(client: usize) -> Edition {
    EDITIONS[client % EDITIONS.len()]
}

/// What became of a send attempt.
pub enum Outcome {
    Acknowledged {
        id: u32,
        at: Instant,
        generation: usize,
    },
    /// The connection failed before the reply arrived: the message may or may not be stored.
    Unacknowledged,
    /// The server answered, but not with an acknowledgement of this message.
    Rejected(String),
}

pub struct SendRecord {
    pub to: usize,
    pub outcome: Outcome,
}

/// What every load client has: its index, its random choices, its sends and what it saw go
/// wrong.
pub struct Agent {
    pub me: usize,
    pub edition: Edition,
    pub rng: Rng,
    /// Every send attempt, indexed by sequence number.
    pub sends: Vec<SendRecord>,
    /// Replies that break the contract, and failures of connections to a live server.
    pub violations: Vec<String>,
}

impl Agent {
    pub fn new(me: usize, seed: u64) -> Agent {
        Agent {
            me,
            edition: edition_of(me),
            rng: Rng::new(seed ^ (me as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            sends: Vec::new(),
            violations: Vec::new(),
        }
    }

    /// Sends the next message to a random other client and records what became of it.
    pub fn send(&mut self, connection: &mut Connection, shared: &Shared) -> io::Result<()> {
        let key = MessageKey {
            sender: self.me,
            seq: self.sends.len() as u32,
        };
        let clients = shared.ids.len();
        let to = (self.me + 1 + self.rng.below(clients - 1)) % clients;
        let request = send_request(
            self.edition,
            shared.ids[self.me],
            shared.ids[to],
            message_kind(key),
            &message_content(key),
        );
        // Recorded before the request goes out: a kill may leave it stored but unanswered.
        self.sends.push(SendRecord {
            to,
            outcome: Outcome::Unacknowledged,
        });
        let (header, payload) = connection.call(&request)?;
        let at = Instant::now();
        let acknowledged = answers(self.edition, Operation::SendMessage, &header)
            .and_then(|()| parse_sent(&payload).map_err(|error| error.to_string()));
        self.sends[key.seq as usize].outcome = match acknowledged {
            Ok((destination, id)) if destination == shared.ids[to] => Outcome::Acknowledged {
                id: id.0,
                at,
                generation: connection.generation,
            },
            Ok((destination, _)) => {
                Outcome::Rejected(format!("acknowledged for {destination}, not client {to}"))
            }
            Err(reason) => Outcome::Rejected(reason),
        };
        Ok(())
    }

    /// A failure is expected once the server is being killed, and a violation before; a
    /// reply that breaks the contract (`InvalidData`) is a violation whenever it came.
    fn connection_failed(&mut self, generation: usize, error: &io::Error, shared: &Shared) {
        if error.kind() == io::ErrorKind::InvalidData || shared.is_live(generation) {
            self.violations.push(format!(
                "client {}: connection to the live server generation {generation} failed: {error}",
                self.me
            ));
        }
    }
}

/// How a campaign's clients load the server.
pub trait Load: Send + 'static {
    fn agent(&self) -> &Agent;
    fn agent_mut(&mut self) -> &mut Agent;
    /// Readies a new connection (logs in and subscribes, say).
    fn open(&mut self, connection: &mut Connection, shared: &Shared) -> io::Result<()>;
    /// One round of requests; `Ok(false)` drops the connection on purpose.
    fn round(&mut self, connection: &mut Connection, shared: &Shared) -> io::Result<bool>;
    /// Takes every message left for this client, from the last server, which is not killed.
    fn drain(&mut self, shared: &Shared, deadline: Instant);
}

/// Runs rounds until told to stop, reconnecting after every kill and every dropped connection.
fn run<L: Load>(mut load: L, shared: &Shared) -> L {
    let mut connection = None;
    while !shared.stop.load(Ordering::SeqCst) {
        let Some(mut open) = connection.take().or_else(|| connect(&mut load, shared)) else {
            thread::sleep(RECONNECT_PAUSE);
            continue;
        };
        match load.round(&mut open, shared) {
            Ok(keep) => connection = keep.then_some(open),
            Err(error) => load
                .agent_mut()
                .connection_failed(open.generation, &error, shared),
        }
    }
    load
}

fn connect<L: Load>(load: &mut L, shared: &Shared) -> Option<Connection> {
    let (generation, addr) = shared.current()?;
    Connection::open(addr, generation)
        .and_then(|mut connection| load.open(&mut connection, shared).map(|()| connection))
        .map_err(|error| {
            load.agent_mut()
                .connection_failed(generation, &error, shared)
        })
        .ok()
}

/// A finished campaign: its clients' records and how long each server generation ran.
pub struct Campaign<L> {
    pub clients: Vec<L>,
    pub ids: Vec<ClientId>,
    pub lifetimes: Vec<Duration>,
    pub elapsed: Duration,
}

/// Runs a campaign: starts the server, registers the clients with `register` (their ids and
/// their loads), kills and restarts the server under their load, stops the load, drains every
/// queue, and checks that a clean stop leaves nothing behind.
pub fn run_campaign<L: Load>(
    settings: &Settings,
    register: impl FnOnce(SocketAddr) -> (Vec<ClientId>, Vec<L>),
) -> Campaign<L> {
    let began = Instant::now();
    let deadline = settings.deadline(began);
    let dir = tempfile::tempdir().expect("temporary directory");

    let server = start_server(dir.path(), 0, settings);
    let (ids, loads) = register(server.addr);
    let shared = Arc::new(Shared {
        ids,
        target: Mutex::new(Target {
            generation: 0,
            addr: Some(server.addr),
        }),
        stop: AtomicBool::new(false),
    });
    let stop_load = StopOnDrop(&shared);
    let threads: Vec<_> = loads
        .into_iter()
        .map(|load| {
            let shared = Arc::clone(&shared);
            thread::spawn(move || run(load, &shared))
        })
        .collect();

    let (mut server, mut lifetimes) =
        kill_and_restart(server, dir.path(), &shared, settings, deadline);
    thread::sleep(FINAL_RUN);
    lifetimes.push(FINAL_RUN);
    drop(stop_load);
    let mut clients: Vec<L> = threads
        .into_iter()
        .enumerate()
        .map(|(me, thread)| {
            thread
                .join()
                .unwrap_or_else(|_| panic!("load client {me} panicked; {settings}"))
        })
        .collect();
    // On PostgreSQL what the killed generations had claimed for their pull replies (a
    // reply written whole before the kill, whose deletion never committed, say) is held
    // until those claims lapse; then it is delivered again, a duplicate.
    if on_postgres() {
        thread::sleep(server::CLAIM_LEASE);
    }
    for client in &mut clients {
        client.drain(&shared, deadline);
    }
    let last = settings.kills;
    stop_server(&mut server, last, settings);
    assert_queues_empty_after_restart(dir.path(), last + 1, &shared, settings);
    Campaign {
        clients,
        ids: shared.ids.clone(),
        lifetimes,
        elapsed: began.elapsed(),
    }
}

pub fn assert_none(problems: &[String], what: &str, settings: &Settings) {
    assert!(
        problems.is_empty(),
        "{} {what}; {settings}; first ones:\n{}",
        problems.len(),
        problems[..problems.len().min(SHOWN)].join("\n")
    );
}
