//! One benchmark invocation: the server session (register, timed loads, drain, judge; in
//! [`crate::session`]) and the floor session (the same timed loads against the echo server),
//! alternated round by round so that both sides of each ratio see the same moment of a noisy
//! machine.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use messageu_protocol::{ClientId, Edition};

use crate::accounts::AccountError;
use crate::driver::{ConnStyle, Driver};
use crate::floor::{self, Floor};
use crate::ledger::Verdict;
use crate::session::{drivers, timed_load, ServerSession};
use crate::stats::{OpStats, Stats};
use crate::workload::{Directory, Mix, Workload};

/// Everything a run is asked to do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The server, or several nodes of it sharing one database: client `i` talks to
    /// `addrs[i % addrs.len()]`. Never empty.
    pub addrs: Vec<SocketAddr>,
    pub edition: Edition,
    pub clients: u32,
    pub mix: Mix,
    /// Content bytes per message.
    pub size: usize,
    pub style: ConnStyle,
    /// Load before the first measured window of each side.
    pub warmup: Duration,
    /// Length of each measured window.
    pub duration: Duration,
    /// Measured windows per side, alternating server and floor.
    pub rounds: u32,
    /// Event-loop threads of the generator.
    pub threads: usize,
    /// How long a request may wait for its whole reply.
    pub timeout: Duration,
    /// The server's process, for its CPU time and peak memory.
    pub server_pid: Option<u32>,
}

impl Plan {
    /// The first server: the one the push mix and the idle subscribers use.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// The servers, comma-separated, for reports.
    pub fn addrs_text(&self) -> String {
        let addrs: Vec<String> = self.addrs.iter().map(ToString::to_string).collect();
        addrs.join(",")
    }
}

/// Why a run could not be carried out (as opposed to what it measured).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot set up an event loop: {0}")]
    Setup(io::Error),
    #[error("an event loop failed: {0}")]
    Loop(io::Error),
    #[error("{failed} of {clients} registrations failed; client {index}: {reason}")]
    Registration {
        failed: usize,
        clients: u32,
        index: u32,
        reason: String,
    },
    #[error("cannot run the floor server: {0}")]
    Floor(io::Error),
    #[error("no {0} request succeeded in the window, so the floor cannot mirror its replies")]
    NothingToMirror(&'static str),
    #[error("cannot make the recipients' accounts: {0}")]
    Accounts(#[from] AccountError),
    #[error("the send failed: {0}")]
    Send(String),
    #[error("{failed} of {connections} connections did not subscribe; first: {first}")]
    Subscribe {
        failed: usize,
        connections: usize,
        first: String,
    },
}

/// What one timed load measured.
#[derive(Debug, Clone)]
pub struct LoadOutcome {
    pub stats: Stats,
    /// Clients with at least one successful reply in the window.
    pub served: usize,
    pub window: Duration,
    /// Wall time of the whole load (warm-up and the last replies included).
    pub elapsed: Duration,
    /// CPU time of the generator's event loops over `elapsed`.
    pub generator_cpu: Duration,
    /// CPU time of the loaded side (server process, floor thread) over `elapsed`, if known.
    pub subject_cpu: Option<Duration>,
}

impl LoadOutcome {
    /// All rounds as one: counts and times added, latencies merged, served the fewest.
    pub fn combine(rounds: &[LoadOutcome]) -> Option<LoadOutcome> {
        let (first, rest) = rounds.split_first()?;
        let mut combined = first.clone();
        for round in rest {
            combined.stats.merge(&round.stats);
            combined.served = combined.served.min(round.served);
            combined.window += round.window;
            combined.elapsed += round.elapsed;
            combined.generator_cpu += round.generator_cpu;
            combined.subject_cpu = combined
                .subject_cpu
                .zip(round.subject_cpu)
                .map(|(a, b)| a + b);
        }
        Some(combined)
    }
}

/// How delivery went, judged after the final drain.
#[derive(Debug)]
pub struct Delivery {
    pub verdict: Verdict,
    /// From each send's reply to its message's delivery, for the messages sent and delivered
    /// inside a measured window.
    pub delays: OpStats,
    pub drain_errors: u64,
    pub peak_rss: Option<io::Result<u64>>,
}

/// Everything one invocation measured.
#[derive(Debug)]
pub struct Measured {
    pub registration: Duration,
    /// Each round's window against the server.
    pub server: Vec<LoadOutcome>,
    /// Each round's window against the floor; empty without a floor.
    pub floor: Vec<LoadOutcome>,
    /// Why the floor could not be measured, if it was asked for.
    pub floor_error: Option<RunError>,
    pub delivery: Delivery,
}

/// Registers the clients, then alternates a window against the server with one against the
/// floor for every round, then drains the queues and judges delivery.
pub fn measure(plan: &Plan, with_floor: bool) -> Result<Measured, RunError> {
    let mut server = ServerSession::register(plan)?;
    let mut server_rounds = Vec::new();
    let mut floor_rounds = Vec::new();
    let mut floor: Option<FloorSession> = None;
    let mut floor_error = None;
    for round in 0..plan.rounds {
        let warmup = if round == 0 {
            plan.warmup
        } else {
            Duration::ZERO
        };
        let outcome = server.load(warmup)?;
        if with_floor && floor.is_none() && floor_error.is_none() {
            match server
                .floor_replies(&outcome.stats)
                .and_then(|replies| FloorSession::start(plan, replies))
            {
                Ok(started) => floor = Some(started),
                Err(error) => floor_error = Some(error),
            }
        }
        server_rounds.push(outcome);
        if let Some(session) = floor.as_mut() {
            let floor_warmup = if floor_rounds.is_empty() {
                plan.warmup
            } else {
                Duration::ZERO
            };
            match session.load(floor_warmup) {
                Ok(outcome) => floor_rounds.push(outcome),
                Err(error) => {
                    floor_error = Some(error);
                    break;
                }
            }
        }
    }
    if let Some(session) = floor {
        if let Err(error) = session.stop() {
            floor_error.get_or_insert(error);
        }
    }
    Ok(Measured {
        registration: server.registration,
        server: server_rounds,
        floor: floor_rounds,
        floor_error,
        delivery: server.drain()?,
    })
}
/// The same clients against the floor.
struct FloorSession<'p> {
    plan: &'p Plan,
    floor: Floor,
    drivers: Vec<Driver>,
    workload: Workload,
    next_seqs: Vec<Vec<u64>>,
}

impl<'p> FloorSession<'p> {
    /// Starts the floor with `replies`; its clients have random ids (nothing is registered).
    fn start(plan: &'p Plan, replies: floor::Replies) -> Result<FloorSession<'p>, RunError> {
        let floor = Floor::start(replies).map_err(RunError::Floor)?;
        let drivers = drivers(plan, &[floor.addr()])?;
        let next_seqs = drivers.iter().map(|driver| vec![0; driver.len()]).collect();
        Ok(FloorSession {
            plan,
            floor,
            drivers,
            workload: Workload {
                edition: plan.edition,
                run: 0,
                size: plan.size,
                directory: Directory::new((0..plan.clients).map(|_| ClientId::random()).collect()),
                destinations: 0..plan.clients,
                verified: false,
            },
            next_seqs,
        })
    }

    /// One measured window after `warmup`.
    fn load(&mut self, warmup: Duration) -> Result<LoadOutcome, RunError> {
        let cpu_before = self.floor.cpu();
        let (outcome, _, _) = timed_load(
            self.plan,
            &self.workload,
            &mut self.drivers,
            &mut self.next_seqs,
            warmup,
        )?;
        let subject_cpu = match (cpu_before, self.floor.cpu()) {
            (Ok(before), Ok(after)) => Some(after.saturating_sub(before)),
            _ => None,
        };
        Ok(LoadOutcome {
            subject_cpu,
            ..outcome
        })
    }

    fn stop(self) -> Result<(), RunError> {
        drop(self.drivers);
        self.floor.stop().map_err(RunError::Floor)
    }
}
