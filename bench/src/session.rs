//! The registered clients of the server under test (register, timed loads, drain, judge),
//! and the generator's event loops every session runs its phases on.

use std::io;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use messageu_protocol::{ClientId, ReplyHeader, REPLY_HEADER_LEN, SERVER_VERSION};

use crate::driver::{ConnStyle, Driver, Phase};
use crate::floor;
use crate::ledger::Ledger;
use crate::phases::{Drain, Load, Registration};
use crate::procstat;
use crate::run::{Delivery, LoadOutcome, Plan, RunError};
use crate::stats::{Stats, Window};
use crate::workload::{Directory, Workload};

/// The registered clients of the server under test.
pub struct ServerSession<'p> {
    plan: &'p Plan,
    drivers: Vec<Driver>,
    /// Loops owning clients that only receive (the push mix's recipients), for the drain.
    receivers: Vec<Driver>,
    workload: Workload,
    ledger: Ledger,
    next_seqs: Vec<Vec<u64>>,
    /// The measured windows so far.
    windows: Vec<Window>,
    /// How long registering every client took.
    pub registration: Duration,
}

impl<'p> ServerSession<'p> {
    /// Connects and registers every client under names unique to this run.
    pub fn register(plan: &'p Plan) -> Result<ServerSession<'p>, RunError> {
        let run = fastrand::u32(..);
        let mut drivers = drivers(plan, &plan.addrs)?;
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
            receivers: Vec::new(),
            workload: Workload {
                edition: plan.edition,
                run,
                size: plan.size,
                destinations: 0..plan.clients,
                directory: Directory::new(ids),
                verified: true,
            },
            ledger: Ledger::default(),
            next_seqs,
            windows: Vec::new(),
            registration,
        })
    }

    /// The run tag the clients registered under.
    pub fn run_tag(&self) -> u32 {
        self.workload.run
    }

    pub fn directory(&self) -> &Directory {
        &self.workload.directory
    }

    /// Makes the clients with `ids`, registered elsewhere, the only destinations of sends;
    /// they take the indices after the senders', and their queues are drained with the rest.
    pub fn add_recipients(&mut self, ids: &[ClientId]) -> Result<(), RunError> {
        let senders = self.workload.directory.len();
        let mut all: Vec<ClientId> = (0..senders)
            .map(|index| self.workload.directory.id(index))
            .collect();
        all.extend_from_slice(ids);
        self.workload.directory = Directory::new(all);
        let recipients = senders..senders + ids.len() as u32;
        self.workload.destinations = recipients.clone();
        self.receivers = vec![Driver::new(
            &[self.plan.addr()],
            self.plan.style,
            self.plan.timeout,
            recipients,
        )
        .map_err(RunError::Setup)?];
        Ok(())
    }

    /// Sends acknowledged so far.
    pub fn acknowledged(&self) -> u64 {
        self.ledger.verdict().acknowledged
    }

    /// Adds what the recipients recorded.
    pub fn merge(&mut self, ledger: Ledger) {
        self.ledger.merge(ledger);
    }

    /// One measured window after `warmup`.
    pub fn load(&mut self, warmup: Duration) -> Result<LoadOutcome, RunError> {
        let pid = self.plan.server_pid;
        let cpu_before = pid.map(procstat::process_cpu);
        let (outcome, ledger, window) = timed_load(
            self.plan,
            &self.workload,
            &mut self.drivers,
            &mut self.next_seqs,
            warmup,
        )?;
        self.ledger.merge(ledger);
        self.windows.push(window);
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
    pub fn drain(mut self) -> Result<Delivery, RunError> {
        let workload = &self.workload;
        let mut drain_errors = 0;
        for drivers in [&mut self.drivers, &mut self.receivers] {
            for (drain, _) in in_parallel(drivers, |_, slots| Drain::new(workload, slots))? {
                drain_errors += drain.errors;
                self.ledger.merge(drain.ledger);
            }
        }
        Ok(Delivery {
            verdict: self.ledger.verdict(),
            delays: self.ledger.delivery_delays(&self.windows),
            drain_errors,
            peak_rss: self.plan.server_pid.map(procstat::peak_rss),
        })
    }

    /// The reply sizes the floor mirrors: the mean the server sent for each operation.
    pub fn floor_replies(&self, measured: &Stats) -> Result<floor::Replies, RunError> {
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

/// The generator's event loops, each owning every `threads`-th client; client `i` talks to
/// `targets[i % targets.len()]`.
pub fn drivers(plan: &Plan, targets: &[SocketAddr]) -> Result<Vec<Driver>, RunError> {
    let threads = plan.threads.clamp(1, plan.clients.max(1) as usize) as u32;
    (0..threads)
        .map(|first| {
            let indices = (first..plan.clients).step_by(threads as usize);
            Driver::new(targets, plan.style, plan.timeout, indices).map_err(RunError::Setup)
        })
        .collect()
}

/// `warmup`, then one measured window; returns the measurements, the sends' ledger and the
/// window.
pub fn timed_load(
    plan: &Plan,
    workload: &Workload,
    drivers: &mut [Driver],
    next_seqs: &mut [Vec<u64>],
    warmup: Duration,
) -> Result<(LoadOutcome, Ledger, Window), RunError> {
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
    Ok((outcome, ledger, window))
}

/// Runs a phase made by `make(loop number, clients of the loop)` on every driver at once;
/// returns each phase with the CPU time its thread used.
pub fn in_parallel<P: Phase + Send>(
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
