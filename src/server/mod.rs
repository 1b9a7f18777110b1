//! The event loop: one mio poll, edge-triggered, serving every connection and committing the
//! writes of each round of ready events as one transaction before releasing their replies.

mod commit;
mod connection;
mod deliveries;
mod durability;
mod env;
mod outbox;
mod pacer;
mod reader;
mod shutdown;
mod sync;
mod timers;

use std::collections::HashMap;
use std::io;
use std::mem;
use std::net::{IpAddr, SocketAddr};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::config::Config;
use crate::http::{self, HttpServer};
use crate::metrics::summary::{self, Summary};
use crate::metrics::Metrics;
use crate::store::{SqliteStore, Store, StoreError};
use commit::CommitPipeline;
use connection::{Connection, Timeouts};
pub use deliveries::Deliveries;
use env::{Core, Env};
use pacer::BulkPacer;
pub use shutdown::ShutdownHandle;
use sync::Syncer;
use timers::Timers;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX);
/// Bytes read from a socket per call.
const READ_CHUNK: usize = 256 << 10;
/// How long accepting pauses when the process is out of file descriptors or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Connections the kernel may hold before they are accepted (capped by `somaxconn`). The
/// usual 128 overflows when hundreds of clients connect at once; the overflowing ones then
/// wait a whole second for the SYN to be sent again.
const LISTEN_BACKLOG: i32 = 4096;
/// Bounds of how often connections are checked for timeouts.
const SWEEP_MIN: Duration = Duration::from_millis(10);
const SWEEP_MAX: Duration = Duration::from_secs(1);
/// How often refused connections are reported in the log, so that a flood of connections
/// does not become a flood of log lines.
const THROTTLED_LOG_INTERVAL: Duration = Duration::from_secs(1);

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

/// Events of one kind (refused or evicted connections) since the last log line about them,
/// so that a flood of connections logs one line a second, not one per connection.
#[derive(Default)]
struct Throttled {
    count: u64,
    last_logged: Option<Instant>,
}

impl Throttled {
    /// Counts one event; returns how many to report when a log line is due.
    fn note(&mut self, now: Instant) -> Option<u64> {
        self.count += 1;
        let due = self
            .last_logged
            .is_none_or(|at| now.saturating_duration_since(at) >= THROTTLED_LOG_INTERVAL);
        due.then(|| {
            self.last_logged = Some(now);
            mem::take(&mut self.count)
        })
    }
}

impl Server {
    /// Binds the listening socket, then opens the database: a server that cannot listen
    /// leaves no database or spool folder behind.
    pub fn bind(config: Config) -> Result<Server, ServerError> {
        let listener = listen_on(config.listen)?;
        Server::assemble(config, listener, |config| {
            let database_error = |source| ServerError::Database {
                path: config.database.display().to_string(),
                source,
            };
            let mut store =
                SqliteStore::open(&config.database, config.durability, config.min_free_space)
                    .map_err(database_error)?;
            if let Some(bytes) = config.max_db_size {
                store.limit_size(bytes).map_err(database_error)?;
            }
            Ok(Box::new(store))
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
        let metrics = Arc::new(Metrics::new(&config.database));
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
                syncer: Syncer::start(waker)?,
                pacer: BulkPacer::new(Instant::now()),
                metrics,
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

    /// One round: serve ready connections, commit, release and write the replies.
    fn turn(&mut self, events: &Events, scratch: &mut [u8]) {
        let now = Instant::now();
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
        // Decided once per turn, so that every bulk transfer ready now gets its slice, not
        // only the first one.
        let bulk_allowed = self.core.pacer.may_run(now);
        let mut bulk_time = Duration::ZERO;
        let mut env = Env {
            core: &mut self.core,
            now,
            wall_clock: SystemTime::now(),
        };
        let synced: Vec<_> = env.core.syncer.finished().collect();
        for synced in synced {
            let key = synced.key;
            match self.connections.get_mut(key) {
                Some(connection) if connection.serial() == synced.serial => {
                    connection.on_synced(synced, &mut env);
                    ready.push(key);
                }
                // The client left before its upload was stored: dropping it removes the file.
                _ => drop(synced),
            }
        }
        for &key in &ready {
            if let Some(connection) = self.connections.get_mut(key) {
                let bulk = connection.bulk_reading();
                if bulk && !bulk_allowed {
                    continue;
                }
                let started = bulk.then(Instant::now);
                // A bug that client input reaches closes that connection, not the server.
                let served = panic::catch_unwind(AssertUnwindSafe(|| {
                    connection.on_readable(&mut env, scratch)
                }));
                if served.is_err() {
                    log::error!("{}: internal error; closing", connection.peer());
                    connection.force_close();
                }
                if let Some(started) = started {
                    bulk_time += started.elapsed();
                }
            }
        }
        let expired = env.core.timers.expired(now);
        for &key in &expired {
            if let Some(connection) = self.connections.get_mut(key) {
                connection.on_deadline(&mut env, now);
            }
        }
        ready.extend(expired);
        if now >= self.next_sweep {
            ready.extend(self.sweep(now));
        }
        // After the ready connections are served: one whose request has just arrived is not
        // idle, and must not be closed to make room for a newcomer.
        if accept_ready {
            self.accept(now);
        }

        let round = self
            .core
            .pipeline
            .commit(&mut self.core.deliveries, &self.core.metrics, now);
        let durable = self.core.pipeline.durable_epoch();
        for &key in &round.touched {
            if let Some(connection) = self.connections.get_mut(key) {
                let deliveries = &mut self.core.deliveries;
                let committed = round.epoch.is_some();
                connection.seal(round.epoch.unwrap_or(durable), committed, deliveries);
                connection.release_through(durable, true, deliveries);
                if connection.awaits_flush() {
                    self.core.pipeline.await_flush(key);
                }
            }
        }
        ready.extend(round.touched);
        ready.extend(self.release_flushed());
        ready.extend(writable);
        self.flush_and_sweep(ready, now, bulk_allowed, bulk_time);
    }

    /// Releases the replies that finished flushes made durable (or fails them, if a flush
    /// failed). Returns the connections that got output.
    fn release_flushed(&mut self) -> Vec<usize> {
        let mut released = Vec::new();
        for flushed in self.core.pipeline.finished_flushes(&self.core.metrics) {
            let ok = flushed.result.is_ok();
            let waiting = self.core.pipeline.take_awaiting();
            for &key in &waiting {
                if let Some(connection) = self.connections.get_mut(key) {
                    connection.release_through(flushed.through, ok, &mut self.core.deliveries);
                    if connection.awaits_flush() {
                        self.core.pipeline.await_flush(key);
                    }
                }
            }
            released.extend(waiting);
        }
        released
    }

    /// Writes what each connection has released, reregisters interest, and removes the
    /// connections that closed. Bulk writes follow the turn's admission, `bulk_allowed`, like
    /// its bulk reads, which took `bulk_time`; the pacer is charged for both at once.
    fn flush_and_sweep(
        &mut self,
        mut keys: Vec<usize>,
        now: Instant,
        bulk_allowed: bool,
        mut bulk_time: Duration,
    ) {
        keys.sort_unstable();
        keys.dedup();
        let linger_until = now + self.core.config.linger;
        let mut closed = Vec::new();
        let mut wanting = Vec::new();
        for key in keys {
            let Some(connection) = self.connections.get_mut(key) else {
                continue;
            };
            let bulk = connection.bulk_writing();
            if bulk && !bulk_allowed {
                wait_for_pacer(&mut self.bulk_waiting, key);
                continue;
            }
            let started = bulk.then(Instant::now);
            connection.flush(
                &mut self.core.deliveries,
                &mut self.core.timers,
                linger_until,
            );
            if let Some(started) = started {
                bulk_time += started.elapsed();
            }
            if connection.is_closed() {
                closed.push(key);
                continue;
            }
            if let Err(error) = connection.update_interest(self.poll.registry()) {
                log::warn!(
                    "{}: cannot watch the connection: {error}",
                    connection.peer()
                );
                closed.push(key);
                continue;
            }
            if connection.wants_service() {
                wanting.push((key, connection.is_bulk()));
            }
        }
        let done = Instant::now();
        self.core.pacer.ran(bulk_time, done);
        let bulk_allowed = self.core.pacer.may_run(done);
        for (key, bulk) in wanting {
            if bulk && !bulk_allowed {
                wait_for_pacer(&mut self.bulk_waiting, key);
            } else {
                self.needs_service.push(key);
            }
        }
        for key in closed {
            self.remove(key);
        }
    }

    /// Forgets a connection: its address's count, its registration, and the messages its
    /// unwritten replies carried, which become pullable again.
    fn remove(&mut self, key: usize) {
        let mut connection = self.connections.remove(key);
        self.core.metrics.connection_closed(connection.kind());
        let ip = connection.peer().ip();
        if let Some(count) = self.per_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                self.per_ip.remove(&ip);
            }
        }
        if let Err(error) = self.poll.registry().deregister(connection.socket()) {
            log::debug!("deregister: {error}");
        }
        connection.abandon(&mut self.core.deliveries);
    }

    /// At the connection cap, closes the connection idle the longest to make room for
    /// `newcomer`; returns whether there was one.
    fn make_room(&mut self, now: Instant, newcomer: SocketAddr) -> bool {
        let idlest = self
            .connections
            .iter()
            .filter_map(|(key, connection)| Some((connection.idle_since()?, key)))
            .min();
        let Some((since, key)) = idlest else {
            return false;
        };
        if let Some(count) = self.evictions.note(now) {
            log::info!(
                "connection cap ({}) reached: closed {}, idle for {:.1} s, to admit {newcomer} \
                 ({count} idle connections closed for room since the last report)",
                self.core.config.max_connections,
                self.connections[key].peer(),
                now.saturating_duration_since(since).as_secs_f64()
            );
        }
        self.remove(key);
        true
    }

    fn refuse(&mut self, now: Instant, peer: SocketAddr, reason: &str) {
        self.core.metrics.connection_refused();
        if let Some(count) = self.refusals.note(now) {
            log::warn!("{peer}: refused, {reason} ({count} refused since the last report)");
        }
    }

    /// Closes the connections that are too slow or too quiet; returns their keys.
    fn sweep(&mut self, now: Instant) -> Vec<usize> {
        let limits = Timeouts {
            request: self.core.config.request_timeout,
            idle: self.core.config.idle_timeout,
        };
        self.next_sweep = now + (limits.request.min(limits.idle) / 4).clamp(SWEEP_MIN, SWEEP_MAX);
        let mut closed = Vec::new();
        for (key, connection) in self.connections.iter_mut() {
            if let Some(reason) = connection.timed_out(now, limits) {
                log::debug!("{}: closing: {reason}", connection.peer());
                connection.force_close();
                closed.push(key);
            }
        }
        if !closed.is_empty() {
            log::info!("closed {} slow or idle connections", closed.len());
        }
        closed
    }

    fn accept(&mut self, now: Instant) {
        self.accept_paused_until = None;
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((socket, peer)) => {
                    let from_peer = self.per_ip.get(&peer.ip()).copied().unwrap_or(0);
                    if from_peer >= self.core.config.max_connections_per_ip {
                        self.refuse(now, peer, "per-address cap reached");
                        continue;
                    }
                    if self.connections.len() >= self.core.config.max_connections
                        && !self.make_room(now, peer)
                    {
                        self.refuse(now, peer, "connection cap reached, none idle");
                        continue;
                    }
                    if let Err(error) = socket.set_nodelay(true) {
                        log::debug!("{peer}: TCP_NODELAY: {error}");
                    }
                    let entry = self.connections.vacant_entry();
                    let key = entry.key();
                    self.next_serial += 1;
                    let mut connection = Connection::new(
                        socket,
                        key,
                        self.next_serial,
                        peer,
                        &self.core.config,
                        now,
                    );
                    let registry = self.poll.registry();
                    match registry.register(connection.socket(), Token(key), Interest::READABLE) {
                        Ok(()) => {
                            entry.insert(connection);
                            *self.per_ip.entry(peer.ip()).or_default() += 1;
                            self.core.metrics.connection_opened();
                            log::debug!("{peer}: connected");
                        }
                        Err(error) => log::warn!("{peer}: cannot watch the connection: {error}"),
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    // Out of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) or anything
                    // else: the pending connections stay in the backlog; try again shortly
                    // instead of spinning on the error.
                    log::warn!("accept failed: {error}; pausing accepts");
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        let deletions_at = self.core.deliveries.due_at(now);
        if !self.needs_service.is_empty() || deletions_at.is_some_and(|at| at <= now) {
            return Some(Duration::ZERO);
        }
        [
            self.core.timers.next(),
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

/// Queues a bulk transfer until the pacer lets bulk work run, once.
fn wait_for_pacer(waiting: &mut Vec<usize>, key: usize) {
    if !waiting.contains(&key) {
        waiting.push(key);
    }
}

fn listen_on(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    listen(addr).map_err(|source| ServerError::Listen { addr, source })
}

/// A non-blocking listening socket on `addr` with a deep accept queue.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    // A restarted server must not wait for the old connections' TIME_WAIT to end.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into()))
}
