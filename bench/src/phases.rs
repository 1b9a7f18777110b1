//! The three stages of a run against a server: register every client, apply the load for a
//! timed window, then drain every queue so that the ledger can be judged.

use std::time::{Duration, Instant};

use messageu_protocol::{ClientId, Edition, Operation};

use crate::driver::{ClientRef, Failure, Phase, ReplyView};
use crate::ledger::Ledger;
use crate::stats::{ErrorKind, Stats, Window};
use crate::workload::{self, CheckError, Expect, Request, Workload};

/// Consecutive failed pulls after which a client's drain gives up (its messages count as lost).
const DRAIN_ATTEMPTS: u32 = 5;

/// Registers each client once under a name unique to the run.
pub struct Registration {
    edition: Edition,
    run: u32,
    asked: Vec<bool>,
    /// The ids given, by client index.
    pub ids: Vec<(u32, ClientId)>,
    /// Why registrations failed, by client index.
    pub failures: Vec<(u32, String)>,
}

impl Registration {
    pub fn new(edition: Edition, run: u32, clients: usize) -> Registration {
        Registration {
            edition,
            run,
            asked: vec![false; clients],
            ids: Vec::with_capacity(clients),
            failures: Vec::new(),
        }
    }
}

impl Phase for Registration {
    fn next_request(&mut self, client: ClientRef, _now: Instant) -> Option<Request> {
        let asked = std::mem::replace(&mut self.asked[client.slot], true);
        (!asked).then(|| workload::register(self.edition, self.run, client.index))
    }

    fn finish(
        &mut self,
        client: ClientRef,
        _request: Request,
        outcome: Result<ReplyView<'_>, Failure>,
        _latency: Duration,
        _now: Instant,
    ) {
        let registered = outcome
            .map_err(|failure| failure.to_string())
            .and_then(|reply| {
                workload::registered(self.edition, &reply).map_err(|error| error.to_string())
            });
        match registered {
            Ok(id) => self.ids.push((client.index, id)),
            Err(error) => self.failures.push((client.index, error)),
        }
    }
}

struct LoadClient {
    cursor: usize,
    served: bool,
}

/// The timed load: each client repeats the mix's operations until the window ends.
pub struct Load<'a> {
    workload: &'a Workload,
    cycle: &'static [Operation],
    window: Window,
    rng: fastrand::Rng,
    clients: Vec<LoadClient>,
    /// Each client's next send sequence number, carried from one round to the next.
    next_seqs: Vec<u64>,
    pub stats: Stats,
    pub ledger: Ledger,
}

impl<'a> Load<'a> {
    pub fn new(
        workload: &'a Workload,
        cycle: &'static [Operation],
        window: Window,
        next_seqs: Vec<u64>,
        seed: u64,
    ) -> Load<'a> {
        Load {
            workload,
            cycle,
            window,
            rng: fastrand::Rng::with_seed(seed),
            clients: next_seqs
                .iter()
                .map(|_| LoadClient {
                    cursor: 0,
                    served: false,
                })
                .collect(),
            next_seqs,
            stats: Stats::default(),
            ledger: Ledger::default(),
        }
    }

    /// Clients that had at least one successful reply in the window.
    pub fn served(&self) -> usize {
        self.clients.iter().filter(|client| client.served).count()
    }

    /// The sequence numbers the clients' next sends take.
    pub fn into_next_seqs(self) -> Vec<u64> {
        self.next_seqs
    }
}

impl Phase for Load<'_> {
    fn next_request(&mut self, client: ClientRef, now: Instant) -> Option<Request> {
        if now >= self.window.end {
            return None;
        }
        let state = &mut self.clients[client.slot];
        let operation = self.cycle[state.cursor % self.cycle.len()];
        state.cursor += 1;
        Some(self.workload.request(
            operation,
            client.index,
            &mut self.rng,
            &mut self.next_seqs[client.slot],
        ))
    }

    fn finish(
        &mut self,
        client: ClientRef,
        request: Request,
        outcome: Result<ReplyView<'_>, Failure>,
        latency: Duration,
        now: Instant,
    ) {
        let checked = match outcome {
            Ok(reply) => self
                .workload
                .check(&request, client.index, &reply, now, &mut self.ledger)
                .map(|()| reply.len())
                .map_err(|error| error_kind(&error)),
            Err(failure) => Err(failure.kind()),
        };
        let stats = self.stats.op_mut(request.operation);
        match checked {
            Ok(reply_len) if self.window.contains(now) => {
                stats.record(latency, reply_len);
                self.clients[client.slot].served = true;
            }
            Ok(_) => {}
            Err(kind) => {
                stats.errors[kind as usize] += 1;
                if let Expect::Sent { stamp, .. } = request.expect {
                    self.ledger.unacknowledged(stamp);
                }
            }
        }
    }
}

fn error_kind(error: &CheckError) -> ErrorKind {
    if error.is_refusal() {
        ErrorKind::Refused
    } else {
        ErrorKind::Malformed
    }
}

/// Every client pulls until its queue is empty, recording what it receives.
pub struct Drain<'a> {
    workload: &'a Workload,
    failed_attempts: Vec<u32>,
    emptied: Vec<bool>,
    pub ledger: Ledger,
    /// Pulls that failed.
    pub errors: u64,
}

impl<'a> Drain<'a> {
    pub fn new(workload: &'a Workload, clients: usize) -> Drain<'a> {
        Drain {
            workload,
            failed_attempts: vec![0; clients],
            emptied: vec![false; clients],
            ledger: Ledger::default(),
            errors: 0,
        }
    }
}

impl Phase for Drain<'_> {
    fn next_request(&mut self, client: ClientRef, _now: Instant) -> Option<Request> {
        let gave_up = self.failed_attempts[client.slot] >= DRAIN_ATTEMPTS;
        (!self.emptied[client.slot] && !gave_up).then(|| self.workload.pull(client.index))
    }

    fn finish(
        &mut self,
        client: ClientRef,
        request: Request,
        outcome: Result<ReplyView<'_>, Failure>,
        _latency: Duration,
        now: Instant,
    ) {
        let checked = outcome.map_err(drop).and_then(|reply| {
            self.workload
                .check(&request, client.index, &reply, now, &mut self.ledger)
                .map(|()| reply.payload.is_empty())
                .map_err(drop)
        });
        match checked {
            Ok(empty) => {
                self.emptied[client.slot] = empty;
                self.failed_attempts[client.slot] = 0;
            }
            Err(()) => {
                self.errors += 1;
                self.failed_attempts[client.slot] += 1;
            }
        }
    }
}
