//! One benchmark invocation: the run against the server (register, load, drain, judge), then
//! the same load against the floor, with the CPU both sides used.

use std::io;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use messageu::protocol::{ClientId, Edition, ReplyHeader, REPLY_HEADER_LEN, SERVER_VERSION};

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
    pub warmup: Duration,
    pub duration: Duration,
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
#[derive(Debug)]
pub struct LoadOutcome {
    pub stats: Stats,
    /// Clients with at least one successful reply in the window.
    pub served: usize,
    pub window: Duration,
    /// Wall time of the whole load phase (warm-up and the last replies included).
    pub elapsed: Duration,
    /// CPU time of the generator's event loops over `elapsed`.
    pub generator_cpu: Duration,
}

/// The run against the server.
#[derive(Debug)]
pub struct ServerRun {
    pub registration: Duration,
    pub load: LoadOutcome,
    pub verdict: Verdict,
    pub drain_errors: u64,
    /// Server CPU time over the load phase, if its pid was given.
    pub server_cpu: Option<io::Result<Duration>>,
    pub peak_rss: Option<io::Result<u64>>,
}

/// The same load against the floor.
#[derive(Debug)]
pub struct FloorRun {
    pub load: LoadOutcome,
    /// CPU time of the floor's thread, over the whole floor run.
    pub floor_cpu: Duration,
}

/// Registers the clients, applies the load, drains every queue and judges delivery.
pub fn against_server(plan: &Plan) -> Result<ServerRun, RunError> {
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

    let workload = Workload {
        edition: plan.edition,
        run,
        size: plan.size,
        directory: Directory::new(ids),
        verified: true,
    };
    let server_cpu_before = plan.server_pid.map(|pid| (pid, procstat::process_cpu(pid)));
    let (load, mut ledger) = timed_load(plan, &workload, &mut drivers)?;
    let server_cpu = server_cpu_before
        .map(|(pid, before)| Ok(procstat::process_cpu(pid)?.saturating_sub(before?)));

    let drains = in_parallel(&mut drivers, |_, slots| Drain::new(&workload, slots))?;
    let mut drain_errors = 0;
    for (drain, _) in drains {
        drain_errors += drain.errors;
        ledger.merge(drain.ledger);
    }
    Ok(ServerRun {
        registration,
        load,
        verdict: ledger.verdict(),
        drain_errors,
        server_cpu,
        peak_rss: plan.server_pid.map(procstat::peak_rss),
    })
}

/// Applies the same load to the floor, whose replies mirror the sizes `server` saw.
pub fn against_floor(plan: &Plan, server: &Stats) -> Result<FloorRun, RunError> {
    let workload = Workload {
        edition: plan.edition,
        run: 0,
        size: plan.size,
        directory: Directory::new((0..plan.clients).map(|_| ClientId::random()).collect()),
        verified: false,
    };
    let mut replies = floor::Replies::new(plan.style == ConnStyle::Padded);
    let mut rng = fastrand::Rng::new();
    for &operation in plan.mix.cycle() {
        let request_len = workload.request(operation, 0, &mut rng, &mut 0).bytes.len();
        let reply_len = server
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
        replies.insert(request_len, reply);
    }
    let floor = Floor::start(replies).map_err(RunError::Floor)?;
    let mut drivers = drivers(plan, floor.addr())?;
    let measured = timed_load(plan, &workload, &mut drivers);
    drop(drivers);
    let floor_cpu = floor.stop().map_err(RunError::Floor)?;
    Ok(FloorRun {
        load: measured?.0,
        floor_cpu,
    })
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

/// Warm-up, then the measured window; returns the measurements and the sends' ledger.
fn timed_load(
    plan: &Plan,
    workload: &Workload,
    drivers: &mut [Driver],
) -> Result<(LoadOutcome, Ledger), RunError> {
    let started = Instant::now();
    let window = Window {
        start: started + plan.warmup,
        end: started + plan.warmup + plan.duration,
    };
    let seed = fastrand::u64(..);
    let loads = in_parallel(drivers, |loop_number, slots| {
        Load::new(
            workload,
            plan.mix.cycle(),
            window,
            slots,
            seed ^ loop_number as u64,
        )
    })?;
    let elapsed = started.elapsed();
    let mut outcome = LoadOutcome {
        stats: Stats::default(),
        served: 0,
        window: window.length(),
        elapsed,
        generator_cpu: Duration::ZERO,
    };
    let mut ledger = Ledger::default();
    for (load, cpu) in loads {
        outcome.stats.merge(&load.stats);
        outcome.served += load.served();
        outcome.generator_cpu += cpu;
        ledger.merge(load.ledger);
    }
    Ok((outcome, ledger))
}

/// Runs a phase made by `make(loop number, clients of the loop)` on every driver at once;
/// returns each phase with the CPU time its thread used.
fn in_parallel<P: Phase + Send>(
    drivers: &mut [Driver],
    make: impl Fn(usize, usize) -> P,
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
