//! Serving what connections yield: each request run inside the round's transaction under its
//! own request mark, so that a failed request undoes only its own writes, with panics caught
//! and the request counted in the metrics; large sends opened, handed to the `content-sync`
//! worker, and stored once durable; long-polls parked and, once woken or over, answered.
//! The loop's only way to the handlers. Owns the server's limits on failed proofs of key
//! possession and the record of who is online.

use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::commit::CommitPipeline;
use super::connection::{Answered, Connection, LargeSend, Unpark, Work};
use super::deliveries::Deliveries;
use super::outbox::Awaits;
use super::pacer::BulkPacer;
use super::presence::PresenceTracker;
use super::sync::{Synced, Syncer};
use super::timers::Timers;
use super::waiters::Waiters;
use crate::auth::{ProofLimiter, Session};
use crate::config::Config;
use crate::handlers::{self, Context, HandlerError, HandlerOutput, Outcome, Response};
use crate::metrics::{ErrorCause, Metrics};
use crate::protocol::{
    Code, Extension, Operation, Reason, Refusal, Reply, RequestCode, RequestHeader,
};
use crate::store::{ContentSink, PullBudget, Store, StoreError};

/// Content bytes one pull reply holds in memory (contents stored in rows); large contents
/// are streamed and do not count.
const PULL_MEMORY_BUDGET: u64 = 16 << 20;

/// The server state that serving reaches: everything but the sockets.
pub(crate) struct Core {
    pub config: Config,
    pub pipeline: CommitPipeline,
    pub deliveries: Deliveries,
    pub timers: Timers,
    /// Parked long-polls, by the recipient they wait for.
    pub waiters: Waiters,
    pub syncer: Syncer,
    pub pacer: BulkPacer,
    /// Failed proofs per id and per address, across connections.
    pub proofs: ProofLimiter,
    /// The ids served lately, and subscribed, across connections.
    pub presence: PresenceTracker,
    pub metrics: Arc<Metrics>,
    /// Subscribed connections that may push: just subscribed, or acknowledged.
    pub push_due: Vec<usize>,
    /// Connections whose subscription ended with its account, elsewhere.
    pub ended_subscriptions: Vec<usize>,
}

/// When a turn runs: the monotonic time for deadlines and pacing, the wall-clock time for
/// what is stored.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TurnTime {
    pub now: Instant,
    pub wall: SystemTime,
}

impl Core {
    /// Does the work of `connection`'s current pass until there is none. A bug that client
    /// input reaches closes that connection, not the server.
    pub fn serve(&mut self, connection: &mut Connection, time: TurnTime, scratch: &mut [u8]) {
        let served = panic::catch_unwind(AssertUnwindSafe(|| {
            self.serve_pass(connection, time, scratch);
        }));
        if served.is_err() {
            log::error!("{}: internal error; closing", connection.peer());
            connection.force_close();
        }
    }

    fn serve_pass(&mut self, connection: &mut Connection, time: TurnTime, scratch: &mut [u8]) {
        let key = connection.key();
        let peer = connection.peer();
        loop {
            let writeback_step = self.pacer.writeback_step(time.now);
            let Some(work) = connection.next_work(time.now, writeback_step, scratch) else {
                return;
            };
            let answered = match work {
                Work::Request {
                    header,
                    code,
                    body,
                    padded,
                    session,
                } => {
                    self.pacer.saw_request(time.now);
                    let request = Served {
                        code,
                        header: &header,
                        peer,
                        session,
                        tally: Tally::Request,
                    };
                    match self.run(request, time, |ctx| handlers::dispatch(ctx, code, body)) {
                        Outcome::Answer(mut response) => {
                            if let Some(effect) = response.effect.take() {
                                self.apply(effect, connection);
                            }
                            let awaits = self.awaits(code, &response);
                            connection.answer(response, padded, awaits)
                        }
                        Outcome::Park(parked) => {
                            self.waiters.park(key, parked.caller, parked.until);
                            connection.park(header)
                        }
                    }
                }
                Work::Unparked {
                    header,
                    unpark,
                    session,
                } => {
                    self.waiters.forget(key);
                    let response = match unpark {
                        Unpark::Pull => {
                            let request = Served {
                                code: Code::Extension(Extension::LongPoll),
                                header: &header,
                                peer,
                                session,
                                tally: Tally::Resumed,
                            };
                            self.run(request, time, handlers::long_poll_woken)
                        }
                        Unpark::Empty => handlers::long_poll_ended(),
                    };
                    let awaits = self.awaits(Code::Extension(Extension::LongPoll), &response);
                    connection.answer_parked(response, awaits)
                }
                Work::Rejected { padded, reason } => {
                    self.metrics.error(ErrorCause::Rejected);
                    self.pacer.saw_request(time.now);
                    connection.answer(Response::refused(reason), padded, Awaits::Round)
                }
                Work::Fatal { reason } => {
                    self.metrics.error(ErrorCause::Framing);
                    connection.close_with_error(Refusal::new(reason))
                }
                Work::UploadStart(send) => {
                    let sink = self.open_upload(&send, connection.session_mut(), peer, time);
                    connection.upload_opened(send, sink)
                }
                Work::UploadComplete(upload) => {
                    let started = self.syncer.sync(key, connection.serial(), upload);
                    connection.sync_started(started)
                }
                Work::UploadFailed { padded, refusal } => {
                    connection.answer(Response::error(refusal), padded, Awaits::Round)
                }
                Work::Wait { until } => {
                    self.timers.schedule(until, key);
                    Answered::default()
                }
            };
            self.record(key, answered);
        }
    }

    /// An upload's content is durable (or failed to become so): stores its message, answers,
    /// and serves the requests that followed it.
    pub fn store_synced(
        &mut self,
        connection: &mut Connection,
        synced: Synced,
        time: TurnTime,
        scratch: &mut [u8],
    ) {
        let Some(send) = connection.syncing_send() else {
            return;
        };
        let peer = connection.peer();
        let mut response = match synced.content {
            Ok(content) => {
                let request = Served {
                    code: Code::Classic(send.code),
                    header: &send.header,
                    peer,
                    session: connection.session_mut(),
                    tally: Tally::Request,
                };
                self.run(request, time, |ctx| {
                    handlers::finish_upload(ctx, send.code, &send.head, content)
                })
            }
            Err(error) => {
                log::error!("{peer}: cannot make an upload durable: {error}");
                self.metrics.error(ErrorCause::Upload);
                Response::refused(Reason::Internal)
            }
        };
        if let Some(effect) = response.effect.take() {
            self.apply(effect, connection);
        }
        let answered = connection.upload_stored(response);
        self.record(connection.key(), answered);
        self.serve(connection, time, scratch);
    }

    /// What a request's reply waits for before it goes out: a pull's (or a long-poll's that
    /// delivers), from a store whose pulls only read, tells of nothing its round wrote, only
    /// of the messages it carries, so it waits for their flushes alone; every other reply
    /// waits for its round.
    fn awaits(&self, code: Code, response: &Response) -> Awaits {
        let pull = matches!(
            code,
            Code::Classic(RequestCode {
                operation: Operation::PullMessages,
                ..
            })
        );
        let pulled =
            (pull || !response.delivered.is_empty()) && !matches!(response.reply, Reply::Error(_));
        if pulled {
            self.pipeline.delivery_awaits(&response.delivered)
        } else {
            Awaits::Round
        }
    }

    /// Keeps what an answer changed: the connection joins the round, or changes kind.
    fn record(&mut self, key: usize, answered: Answered) {
        if answered.opens_round {
            self.pipeline.touched(key);
        }
        if let Some((from, to)) = answered.classified {
            self.metrics.connection_classified(from, to);
        }
    }

    /// Checks a large send from its head and begins its content in the store. No
    /// transaction: the content is written outside the rounds, which go on committing
    /// meanwhile.
    fn open_upload(
        &mut self,
        send: &LargeSend,
        session: &mut Session,
        peer: SocketAddr,
        time: TurnTime,
    ) -> Result<ContentSink, HandlerError> {
        let request = Served {
            code: Code::Classic(send.code),
            header: &send.header,
            peer,
            session,
            tally: Tally::Request,
        };
        let mut ctx = context(
            self.pipeline.store(),
            &mut self.deliveries,
            &mut self.proofs,
            &mut self.presence,
            &self.config,
            time,
            request,
        );
        let upload = handlers::start_upload(&mut ctx, &send.head);
        if let Err(error) = &upload {
            self.metrics.error(ErrorCause::of(error));
        }
        upload
    }

    /// Runs one request inside the round's transaction; any failure becomes a 9000 reply.
    fn run<T: HandlerOutput>(
        &mut self,
        request: Served<'_>,
        time: TurnTime,
        handle: impl FnOnce(&mut Context<'_>) -> Result<T, HandlerError>,
    ) -> T {
        let (code, peer, request_tally) = (request.code, request.peer, request.tally);
        let store = match self.pipeline.round() {
            Ok(store) => store,
            Err(error) => {
                // While the database is lost the store logs the loss once, not each request.
                if !matches!(error, StoreError::Disconnected) {
                    log::warn!("{peer}: cannot start a transaction: {error}");
                }
                return Response::refused(Reason::Internal).into();
            }
        };
        if let Err(error) = store.begin_request() {
            log::warn!("{peer}: cannot start a request's writes: {error}");
            return Response::refused(Reason::Internal).into();
        }
        let started = Instant::now();
        let mut ctx = context(
            store,
            &mut self.deliveries,
            &mut self.proofs,
            &mut self.presence,
            &self.config,
            time,
            request,
        );
        // A handler that panics fails its request, not the server; either way, a failed
        // request's writes are undone and the rest of the round's are kept.
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| handle(&mut ctx)));
        let Context {
            store, deliveries, ..
        } = ctx;
        let (output, error) = match outcome {
            Ok(Ok(output)) => match store.commit_request() {
                Ok(()) => (output, None),
                Err(error) => {
                    if let Some(response) = output.response() {
                        deliveries.give_up(&response.delivered);
                    }
                    log::warn!("{peer}: {code}: {error}");
                    let failed: T = Response::refused(Reason::Internal).into();
                    (failed, Some(ErrorCause::Storage))
                }
            },
            Ok(Err(error)) => {
                log::warn!("{peer}: {code}: {error}");
                let failed: T = Response::error(error.refusal()).into();
                (failed, Some(ErrorCause::of(&error)))
            }
            Err(_) => {
                log::error!("{peer}: {code}: the handler panicked");
                let failed: T = Response::refused(Reason::Internal).into();
                (failed, Some(ErrorCause::Panic))
            }
        };
        if error.is_some() {
            store.rollback_request();
        }
        match request_tally {
            Tally::Request => self.metrics.request(code, started.elapsed(), error),
            Tally::Resumed => {
                if let Some(cause) = error {
                    self.metrics.error(cause);
                }
            }
        }
        output
    }
}

/// A request to run, and the connection it came on.
struct Served<'a> {
    code: Code,
    header: &'a RequestHeader,
    peer: SocketAddr,
    session: &'a mut Session,
    tally: Tally,
}

/// Whether running a request counts it in the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tally {
    /// A request served for the first time.
    Request,
    /// A parked long-poll answered once woken: counted when it parked; only a failure counts.
    Resumed,
}

/// What a handler works with for one request.
fn context<'a>(
    store: &'a mut dyn Store,
    deliveries: &'a mut Deliveries,
    proofs: &'a mut ProofLimiter,
    presence: &'a mut PresenceTracker,
    config: &Config,
    time: TurnTime,
    request: Served<'a>,
) -> Context<'a> {
    Context {
        store,
        deliveries,
        pull_budget: PullBudget {
            payload: u64::from(config.max_payload),
            in_memory: PULL_MEMORY_BUDGET,
            messages: usize::MAX,
        },
        now: time.wall,
        caller: request.header.client_id,
        client_version: request.header.version,
        session: request.session,
        proofs,
        presence,
        peer: request.peer.ip(),
        clock: time.now,
        challenge_lifetime: config.challenge_lifetime,
        long_poll_limit: config.long_poll_limit,
    }
}
