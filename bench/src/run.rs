//! One benchmark invocation: the server session (register, timed loads, drain, judge) and the
//! floor session (the same timed loads against the echo server), which `main` alternates
//! round by round so that both sides of each ratio see the same moment of a noisy machine.

use std::io;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use messageu_protocol::{ClientId, Edition, ReplyHeader, REPLY_HEADER_LEN, SERVER_VERSION};

use crate::driver::{ConnStyle, Driver, Phase};
use crate::floor::{self, Floor};
use crate::ledger::{Ledger, Verdict};
use crate::phases::{Drain, Load, Registration};
use crate::procstat;
use crate::stats::{Stats, Window};
use crate::workload::{Directory, Mix, Workload};

/// Everything a run is asked to do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub addr: SocketAddr,
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

/// The registered clients of the server under test.
struct ServerSession<'p> {
    plan: &'p Plan,
    drivers: Vec<Driver>,
    workload: Workload,
    ledger: Ledger,
    next_seqs: Vec<Vec<u64>>,
    /// How long registering every client took.
    registration: Duration,
}

impl<'p> ServerSession<'p> {
    /// Connects and registers every client under names unique to this run.
    fn register(plan: &'p Plan) -> Result<ServerSession<'p>, RunError> {
        let run = fastrand::u32(..);
        let mut drivers = drivers(plan, plan.addr)?;
        let started = Instant::now();
        let registrations = in_parallel(&mut drivers, |_, slots| {
            Registration::new(plan.edition, run, slots)
        })?;
        let registration = started.elapsed();
        let mut ids = vec![ClientId::default(); plan.clients as usize];
        let mut failures = Vec::new();
        for (registered, _) in registrations {
            for (index, id) in registered.ids {
                ids[index as usize] = id;
            }
            failures.extend(registered.failures);
        }
        if let Some((index, reason)) = failures.first().cloned() {
            return Err(RunError::Registration {
                failed: failures.len(),
                clients: plan.clients,
                index,
                reason,
            });
        }
        let next_seqs = drivers.iter().map(|driver| vec![0; driver.len()]).collect();
        Ok(ServerSession {
            plan,
            drivers,
            workload: Workload {
                edition: plan.edition,
                run,
                size: plan.size,
                directory: Directory::new(ids),
                verified: true,
            },
            ledger: Ledger::default(),
            next_seqs,
            registration,
        })
    }

    /// One measured window after `warmup`.
    fn load(&mut self, warmup: Duration) -> Result<LoadOutcome, RunError> {
        let pid = self.plan.server_pid;
        let cpu_before = pid.map(procstat::process_cpu);
        let (outcome, ledger) = timed_load(
            self.plan,
            &self.workload,
            &mut self.drivers,
            &mut self.next_seqs,
            warmup,
        )?;
        self.ledger.merge(ledger);
        let subject_cpu = pid.zip(cpu_before).and_then(|(pid, before)| {
            let cpu = procstat::process_cpu(pid).ok()?;
            Some(cpu.saturating_sub(before.ok()?))
        });
        Ok(LoadOutcome {
            subject_cpu,
            ..outcome
        })
    }

    /// Every client pulls until its queue is empty; then the ledger is judged.
    fn drain(mut self) -> Result<Delivery, RunError> {
        let workload = &self.workload;
        let drains = in_parallel(&mut self.drivers, |_, slots| Drain::new(workload, slots))?;
        let mut drain_errors = 0;
        for (drain, _) in drains {
            drain_errors += drain.errors;
            self.ledger.merge(drain.ledger);
        }
        Ok(Delivery {
            verdict: self.ledger.verdict(),
            drain_errors,
            peak_rss: self.plan.server_pid.map(procstat::peak_rss),
        })
    }

    /// The reply sizes the floor mirrors: the mean the server sent for each operation.
    fn floor_replies(&self, measured: &Stats) -> Result<floor::Replies, RunError> {
        let plan = self.plan;
        let mut replies = floor::Replies::new(plan.style == ConnStyle::Padded);
        let mut rng = fastrand::Rng::new();
        for &operation in plan.mix.cycle() {
            let request = self.workload.request(operation, 0, &mut rng, &mut 0);
            let reply_len = measured
                .op(operation)
                .mean_reply_len()
                .ok_or(RunError::NothingToMirror(plan.mix.name()))?;
            let mut reply = ReplyHeader {
                version: SERVER_VERSION,
                code: plan.edition.reply_code(operation),
                payload_size: (reply_len - REPLY_HEADER_LEN) as u32,
            }
            .encode()
            .to_vec();
            reply.resize(reply_len, 0);
            replies.insert(request.bytes.len(), reply);
        }
        Ok(replies)
    }
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
        let drivers = drivers(plan, floor.addr())?;
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
                verified: false,
            },
            next_seqs,
        })
    }

    /// One measured window after `warmup`.
    fn load(&mut self, warmup: Duration) -> Result<LoadOutcome, RunError> {
        let cpu_before = self.floor.cpu();
        let (outcome, _) = timed_load(
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

/// The generator's event loops, each owning every `threads`-th client.
fn drivers(plan: &Plan, target: SocketAddr) -> Result<Vec<Driver>, RunError> {
    let threads = plan.threads.clamp(1, plan.clients.max(1) as usize) as u32;
    (0..threads)
        .map(|first| {
            let indices = (first..plan.clients).step_by(threads as usize);
            Driver::new(target, plan.style, plan.timeout, indices).map_err(RunError::Setup)
        })
        .collect()
}

/// `warmup`, then one measured window; returns the measurements and the sends' ledger.
fn timed_load(
    plan: &Plan,
    workload: &Workload,
    drivers: &mut [Driver],
    next_seqs: &mut [Vec<u64>],
    warmup: Duration,
) -> Result<(LoadOutcome, Ledger), RunError> {
    let started = Instant::now();
    let window = Window {
        start: started + warmup,
        end: started + warmup + plan.duration,
    };
    let seed = fastrand::u64(..);
    let loads = in_parallel(drivers, |loop_number, _| {
        Load::new(
            workload,
            plan.mix.cycle(),
            window,
            std::mem::take(&mut next_seqs[loop_number]),
            seed ^ loop_number as u64,
        )
    })?;
    let mut outcome = LoadOutcome {
        stats: Stats::default(),
        served: 0,
        window: window.length(),
        elapsed: started.elapsed(),
        generator_cpu: Duration::ZERO,
        subject_cpu: None,
    };
    let mut ledger = Ledger::default();
    for (loop_number, (mut load, cpu)) in loads.into_iter().enumerate() {
        outcome.stats.merge(&load.stats);
        outcome.served += load.served();
        outcome.generator_cpu += cpu;
        ledger.merge(std::mem::take(&mut load.ledger));
        next_seqs[loop_number] = load.into_next_seqs();
    }
    Ok((outcome, ledger))
}

/// Runs a phase made by `make(loop number, clients of the loop)` on every driver at once;
/// returns each phase with the CPU time its thread used.
fn in_parallel<P: Phase + Send>(
    drivers: &mut [Driver],
    mut make: impl FnMut(usize, usize) -> P,
) -> Result<Vec<(P, Duration)>, RunError> {
    thread::scope(|scope| {
        let handles: Vec<_> = drivers
            .iter_mut()
            .enumerate()
            .map(|(loop_number, driver)| {
                let mut phase = make(loop_number, driver.len());
                scope.spawn(move || -> io::Result<(P, Duration)> {
                    let cpu_before = procstat::thread_cpu()?;
                    driver.run(&mut phase)?;
                    Ok((phase, procstat::thread_cpu()? - cpu_before))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| match handle.join() {
                Ok(result) => result.map_err(RunError::Loop),
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}
