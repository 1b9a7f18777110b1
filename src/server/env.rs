//! Serving one request: the round's transaction, a request mark around the handler so that
//! a failed request undoes only its own writes, panics caught, and the request counted in
//! the metrics. [`Env`] is what a connection reaches of the server while it serves.

use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::commit::CommitPipeline;
use super::deliveries::Deliveries;
use super::pacer::BulkPacer;
use super::sync::Syncer;
use super::timers::Timers;
use crate::config::Config;
use crate::handlers::{self, Context, HandlerError, Response};
use crate::metrics::{ErrorCause, Metrics};
use crate::protocol::{RequestCode, RequestHeader, SendHead};
use crate::store::{ContentSink, LargeContent, PullBudget, Store};

/// Content bytes one pull reply holds in memory (contents stored in rows); large contents
/// are streamed and do not count.
const PULL_MEMORY_BUDGET: u64 = 16 << 20;

/// The server state that request handling reaches: everything but the sockets.
pub(crate) struct Core {
    pub config: Config,
    pub pipeline: CommitPipeline,
    pub deliveries: Deliveries,
    pub timers: Timers,
    pub syncer: Syncer,
    pub pacer: BulkPacer,
    pub metrics: Arc<Metrics>,
}

/// What a connection needs from the server while it serves requests.
pub(crate) struct Env<'a> {
    pub core: &'a mut Core,
    pub now: Instant,
    pub wall_clock: SystemTime,
}

impl Env<'_> {
    /// Runs one request inside the batch's transaction; any failure becomes a 9000 reply.
    pub fn serve(
        &mut self,
        code: RequestCode,
        header: &RequestHeader,
        body: &[u8],
        peer: SocketAddr,
    ) -> Response {
        self.run(code, header, peer, |ctx| {
            handlers::dispatch(ctx, code, body)
        })
    }

    /// Stores the message of an upload whose content is whole and durable.
    pub fn finish_upload(
        &mut self,
        code: RequestCode,
        header: &RequestHeader,
        head: &SendHead,
        content: LargeContent,
        peer: SocketAddr,
    ) -> Response {
        self.run(code, header, peer, |ctx| {
            handlers::finish_upload(ctx, head, content)
        })
    }

    /// Checks a large send from its head and begins its content in the store. No
    /// transaction: the content is written outside the rounds, which go on committing
    /// meanwhile.
    pub fn start_upload(
        &mut self,
        code: RequestCode,
        header: &RequestHeader,
        head: &SendHead,
    ) -> Result<ContentSink, HandlerError> {
        let core = &mut *self.core;
        let mut ctx = context(
            core.pipeline.store(),
            &mut core.deliveries,
            &core.config,
            self.wall_clock,
            code,
            header,
        );
        let upload = handlers::start_upload(&mut ctx, head);
        if let Err(error) = &upload {
            self.core.metrics.error(ErrorCause::of(error));
        }
        upload
    }

    /// Counts a 9000 reply that no handler produced.
    pub fn count_error(&self, cause: ErrorCause) {
        self.core.metrics.error(cause);
    }

    fn run(
        &mut self,
        code: RequestCode,
        header: &RequestHeader,
        peer: SocketAddr,
        handle: impl FnOnce(&mut Context<'_>) -> Result<Response, HandlerError>,
    ) -> Response {
        let core = &mut *self.core;
        let store = match core.pipeline.round() {
            Ok(store) => store,
            Err(error) => {
                log::warn!("{peer}: cannot start a transaction: {error}");
                return Response::error();
            }
        };
        if let Err(error) = store.begin_request() {
            log::warn!("{peer}: cannot start a request's writes: {error}");
            return Response::error();
        }
        let started = Instant::now();
        let mut ctx = context(
            store,
            &mut core.deliveries,
            &core.config,
            self.wall_clock,
            code,
            header,
        );
        // A handler that panics fails its request, not the server; either way, a failed
        // request's writes are undone and the rest of the round's are kept.
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| handle(&mut ctx)));
        let Context {
            store, deliveries, ..
        } = ctx;
        let (response, error) = match outcome {
            Ok(Ok(response)) => match store.commit_request() {
                Ok(()) => (response, None),
                Err(error) => {
                    deliveries.give_up(&response.delivered);
                    log::warn!("{peer}: {code}: {error}");
                    (Response::error(), Some(ErrorCause::Storage))
                }
            },
            Ok(Err(error)) => {
                log::warn!("{peer}: {code}: {error}");
                (Response::error(), Some(ErrorCause::of(&error)))
            }
            Err(_) => {
                log::error!("{peer}: {code}: the handler panicked");
                (Response::error(), Some(ErrorCause::Panic))
            }
        };
        if error.is_some() {
            store.rollback_request();
        }
        core.metrics.request(code, started.elapsed(), error);
        response
    }
}

/// What a handler works with for one request.
fn context<'a>(
    store: &'a mut dyn Store,
    deliveries: &'a mut Deliveries,
    config: &Config,
    now: SystemTime,
    code: RequestCode,
    header: &RequestHeader,
) -> Context<'a> {
    Context {
        store,
        deliveries,
        pull_budget: PullBudget {
            payload: u64::from(config.max_payload),
            in_memory: PULL_MEMORY_BUDGET,
        },
        now,
        caller: header.client_id,
        client_version: header.version,
        code,
    }
}
