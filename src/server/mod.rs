//! The event loop: one mio poll, edge-triggered, serving every connection and committing the
//! writes of each round of ready events as one transaction before releasing their replies.

mod admission;
mod commit;
mod connection;
mod deliveries;
mod durability;
mod effects;
mod notices;
mod outbox;
mod pacer;
mod presence;
mod reader;
mod replies;
mod serving;
mod shutdown;
mod sync;
mod timers;
mod waiters;

use std::collections::HashMap;
use std::io;
use std::mem;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::auth::ProofLimiter;
use crate::config::Config;
use crate::config::Database;
use crate::http::{self, HttpServer};
use crate::metrics::summary::{self, Summary};
use crate::metrics::Metrics;
use crate::store::{PostgresStore, SqliteStore, Store, StoreError};
use admission::{listen_on, Throttled};
use commit::CommitPipeline;
use connection::{Connection, Unpark};
pub use deliveries::Deliveries;
use pacer::BulkPacer;
pub use presence::PresenceTracker;
use serving::{Core, TurnTime};
pub use shutdown::ShutdownHandle;
use sync::Syncer;
use timers::Timers;
use waiters::Waiters;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX);
/// Bytes read from a socket per call.
const READ_CHUNK: usize = 256 << 10;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot open the database {path} ({source})")]
    Database { path: String, source: StoreError },
    #[error("cannot listen on {addr} ({source})")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("event loop failure: {0}")]
    Io(#[from] io::Error),
    #[error("cannot close the database: {0}")]
    Close(StoreError),
    #[error("cannot serve metrics on {addr} ({source})")]
    Metrics { addr: SocketAddr, source: io::Error },
}

pub struct Server {
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    shutdown: ShutdownHandle,
    connections: Slab<Connection>,
    core: Core,
    accept_paused_until: Option<Instant>,
    shutdown_deadline: Option<Instant>,
    /// Connections to serve again without waiting for an event.
    needs_service: Vec<usize>,
    /// Bulk transfers to serve again once the pacer lets them.
    bulk_waiting: Vec<usize>,
    /// Numbers connections, so that a finished sync finds its own connection even if its
    /// slab key has been reused.
    next_serial: u64,
    /// Open connections per peer address, for the per-address cap.
    per_ip: HashMap<IpAddr, usize>,
    next_sweep: Instant,
    refusals: Throttled,
    evictions: Throttled,
    /// The operators' HTTP endpoint, with `--metrics`.
    http: Option<HttpServer>,
}

impl Server {
    /// Binds the listening socket, then opens the database: a server that cannot listen
    /// leaves no database or spool folder behind.
    pub fn bind(config: Config) -> Result<Server, ServerError> {
        let listener = listen_on(config.listen)?;
        Server::assemble(config, listener, |config| {
            let database_error = |source| ServerError::Database {
                path: config.database.to_string(),
                source,
            };
            match &config.database {
                Database::Sqlite(path) => {
                    let mut store =
                        SqliteStore::open(path, config.durability, config.min_free_space)
                            .map_err(database_error)?;
                    if let Some(bytes) = config.max_db_size {
                        store.limit_size(bytes).map_err(database_error)?;
                    }
                    Ok(Box::new(store))
                }
                Database::Postgres(conninfo) => {
                    if config.max_db_size.is_some() {
                        log::warn!("--max-db-size applies to SQLite only; ignored");
                    }
                    let mut store =
                        PostgresStore::open(conninfo, config.durability).map_err(database_error)?;
                    store.set_claim_lease(config.claim_lease);
                    Ok(Box::new(store))
                }
            }
        })
    }

    /// Binds the listening socket for a server on `store`: another backend, or one wrapped
    /// to inject faults in tests.
    pub fn bind_with_store(config: Config, store: Box<dyn Store>) -> Result<Server, ServerError> {
        let listener = listen_on(config.listen)?;
        Server::assemble(config, listener, |_| Ok(store))
    }

    /// Everything that binds a port comes first, and the store last, so that a failed start
    /// creates no database.
    fn assemble(
        config: Config,
        mut listener: TcpListener,
        open_store: impl FnOnce(&Config) -> Result<Box<dyn Store>, ServerError>,
    ) -> Result<Server, ServerError> {
        let poll = Poll::new()?;
        let local_addr = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let shutdown = ShutdownHandle::new(Arc::clone(&waker));
        let metrics = Arc::new(Metrics::new(config.database.sqlite_path()));
        let http = config
            .metrics
            .map(|addr| {
                http::serve(addr, Arc::clone(&metrics), shutdown.clone())
                    .map_err(|source| ServerError::Metrics { addr, source })
            })
            .transpose()?;
        let store = open_store(&config)?;
        metrics.set_queue(store.queue());
        Ok(Server {
            poll,
            listener: Some(listener),
            local_addr,
            shutdown,
            connections: Slab::new(),
            core: Core {
                config,
                pipeline: CommitPipeline::start(store, Arc::clone(&waker))?,
                deliveries: Deliveries::default(),
                timers: Timers::default(),
                waiters: Waiters::default(),
                syncer: Syncer::start(waker)?,
                pacer: BulkPacer::new(Instant::now()),
                proofs: ProofLimiter::default(),
                presence: PresenceTracker::default(),
                metrics,
                push_due: Vec::new(),
                ended_subscriptions: Vec::new(),
            },
            accept_paused_until: None,
            shutdown_deadline: None,
            needs_service: Vec::new(),
            bulk_waiting: Vec::new(),
            next_serial: 0,
            per_ip: HashMap::new(),
            next_sweep: Instant::now(),
            refusals: Throttled::default(),
            evictions: Throttled::default(),
            http,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// The address `/metrics` and `/health` are served on, if they are.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(HttpServer::local_addr)
    }

    /// Serves until shut down, then writes produced replies (for a bounded time), commits
    /// the last deletions and closes the database.
    pub fn run(mut self) -> Result<(), ServerError> {
        summary::log_limits(&self.core.config);
        if let Some(addr) = self.metrics_addr() {
            log::info!("metrics on http://{addr}/metrics, health check on http://{addr}/health");
        }
        let metrics = Arc::clone(&self.core.metrics);
        let _summary = Summary::start(metrics, self.core.config.stats_interval)?;
        let mut events = Events::with_capacity(1024);
        let mut scratch = vec![0; READ_CHUNK];
        loop {
            let now = Instant::now();
            if self.shutdown.is_requested() && self.shutdown_deadline.is_none() {
                self.begin_shutdown(now);
            }
            if let Some(deadline) = self.shutdown_deadline {
                if self.connections.is_empty() || now >= deadline {
                    break;
                }
            }
            match self.poll.poll(&mut events, self.poll_timeout(now)) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error.into()),
            }
            self.turn(&events, &mut scratch);
        }
        self.finish()
    }

    /// One round, in order: what the poll found ready; finished upload syncs, their
    /// messages stored; the ready connections read and served; expired deadlines and
    /// long-polls; the timeout sweep; new connections; the commit, its replies sealed and
    /// the durable ones released, long-polls woken for the messages now durable (served next
    /// turn), pushes and receipts released; then everything released written.
    fn turn(&mut self, events: &Events, scratch: &mut [u8]) {
        let time = TurnTime {
            now: Instant::now(),
            wall: SystemTime::now(),
        };
        let now = time.now;
        let Polled {
            mut ready,
            writable,
            accept_ready,
        } = self.polled(events, now);
        // Decided once per turn, so that every bulk transfer ready now gets its slice, not
        // only the first one.
        let bulk_allowed = self.core.pacer.may_run(now);
        ready.extend(self.store_synced_uploads(time, scratch));
        let bulk_time = self.serve_ready(&ready, bulk_allowed, time, scratch);
        ready.extend(self.expire_deadlines(time, scratch));
        ready.extend(self.end_waits(time, scratch));
        if now >= self.next_sweep {
            ready.extend(self.sweep(now));
        }
        // After the ready connections are served: one whose request has just arrived is not
        // idle, and must not be closed to make room for a newcomer.
        if accept_ready {
            self.accept(now);
        }
        ready.extend(self.commit_round(now));
        ready.extend(self.release_flushed());
        ready.extend(self.tell_durable());
        ready.extend(writable);
        self.write_out(ready, now, bulk_allowed, bulk_time);
    }

    /// Sorts the poll's events: connections to read (with those due for service again),
    /// connections to write, and whether to accept.
    fn polled(&mut self, events: &Events, now: Instant) -> Polled {
        let mut ready = mem::take(&mut self.needs_service);
        if self.core.pacer.may_run(now) {
            ready.append(&mut self.bulk_waiting);
        }
        let mut writable = Vec::new();
        let mut accept_ready = self.accept_paused_until.is_some_and(|until| until <= now);
        for event in events {
            match event.token() {
                LISTENER => accept_ready = true,
                WAKER => {}
                Token(key) => {
                    let Some(connection) = self.connections.get_mut(key) else {
                        continue;
                    };
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        connection.mark_readable();
                        ready.push(key);
                    }
                    if event.is_writable() {
                        writable.push(key);
                    }
                }
            }
        }
        ready.sort_unstable();
        ready.dedup();
        Polled {
            ready,
            writable,
            accept_ready,
        }
    }

    /// Stores the messages of the uploads whose sync finished, and serves what followed them
    /// on their connections. Returns those connections.
    fn store_synced_uploads(&mut self, time: TurnTime, scratch: &mut [u8]) -> Vec<usize> {
        let finished: Vec<_> = self.core.syncer.finished().collect();
        let mut stored = Vec::new();
        for synced in finished {
            let key = synced.key;
            match self.connections.get_mut(key) {
                Some(connection) if connection.serial() == synced.serial => {
                    self.core.store_synced(connection, synced, time, scratch);
                    stored.push(key);
                }
                // The client left before its upload was stored: dropping it removes the file.
                _ => drop(synced),
            }
        }
        stored
    }

    /// Reads and serves the `ready` connections; bulk transfers only if `bulk_allowed`.
    /// Returns the time the bulk reads took.
    fn serve_ready(
        &mut self,
        ready: &[usize],
        bulk_allowed: bool,
        time: TurnTime,
        scratch: &mut [u8],
    ) -> Duration {
        let mut bulk_time = Duration::ZERO;
        for &key in ready {
            let Some(connection) = self.connections.get_mut(key) else {
                continue;
            };
            let bulk = connection.bulk_reading();
            if bulk && !bulk_allowed {
                continue;
            }
            let started = bulk.then(Instant::now);
            connection.start_turn();
            self.core.serve(connection, time, scratch);
            if let Some(started) = started {
                bulk_time += started.elapsed();
            }
        }
        bulk_time
    }

    /// Serves the connections whose deadline passed: padding grace times end, lingering
    /// ends. Returns them.
    fn expire_deadlines(&mut self, time: TurnTime, scratch: &mut [u8]) -> Vec<usize> {
        let expired = self.core.timers.expired(time.now);
        for &key in &expired {
            if let Some(connection) = self.connections.get_mut(key) {
                connection.on_deadline(time.now);
                self.core.serve(connection, time, scratch);
            }
        }
        expired
    }

    /// Answers the long-polls whose wait ended, empty. Returns them.
    fn end_waits(&mut self, time: TurnTime, scratch: &mut [u8]) -> Vec<usize> {
        let ended = self.core.waiters.expired(time.now);
        for &key in &ended {
            if let Some(connection) = self.connections.get_mut(key) {
                connection.unpark(Unpark::Empty);
                self.core.serve(connection, time, scratch);
            }
        }
        ended
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        let deletions_at = self.core.deliveries.due_at(now);
        if !self.needs_service.is_empty() || deletions_at.is_some_and(|at| at <= now) {
            return Some(Duration::ZERO);
        }
        [
            self.core.timers.next(),
            self.core.waiters.next_deadline(),
            Some(self.next_sweep).filter(|_| !self.connections.is_empty()),
            self.accept_paused_until,
            self.shutdown_deadline,
            deletions_at,
            Some(self.core.pacer.wake_at()).filter(|_| !self.bulk_waiting.is_empty()),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|at| at.saturating_duration_since(now))
    }

    fn begin_shutdown(&mut self, now: Instant) {
        log::info!(
            "shutting down: no new connections; finishing {} open ones",
            self.connections.len()
        );
        if let Some(mut listener) = self.listener.take() {
            if let Err(error) = self.poll.registry().deregister(&mut listener) {
                log::debug!("deregister listener: {error}");
            }
        }
        self.shutdown_deadline = Some(now + self.core.config.shutdown_grace);
        let keys: Vec<usize> = self.connections.iter().map(|(key, _)| key).collect();
        for &key in &keys {
            self.connections[key].begin_shutdown();
        }
        self.needs_service.extend(keys);
    }

    /// Commits the last deletions and closes the database.
    fn finish(mut self) -> Result<(), ServerError> {
        for (_, connection) in mem::take(&mut self.connections) {
            connection.abandon(&mut self.core.deliveries);
        }
        let deliveries = &mut self.core.deliveries;
        deliveries.retry_now();
        if deliveries.undeleted() > 0 {
            self.core
                .pipeline
                .commit(deliveries, &self.core.metrics, Instant::now());
        }
        if deliveries.undeleted() > 0 {
            log::error!(
                "{} delivered messages could not be deleted and will be delivered again",
                deliveries.undeleted()
            );
        }
        self.core.pipeline.close().map_err(ServerError::Close)?;
        log::info!("stopped");
        Ok(())
    }
}

/// What a poll found ready.
struct Polled {
    /// Connections to read and serve.
    ready: Vec<usize>,
    writable: Vec<usize>,
    accept_ready: bool,
}
