//! The event loop: one mio poll, edge-triggered, serving every connection and committing the
//! writes of each round of ready events as one transaction before releasing their replies.

mod connection;
mod durability;
mod pacer;
mod shutdown;
mod sync;
mod timers;

use std::collections::{HashMap, HashSet};
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
use crate::handlers::{self, Context, HandlerError, Response};
use crate::protocol::{ClientId, MessageId, RequestCode, SendHead};
use crate::store::{Committed, PullBudget, SqliteStore, Store, StoreError, Upload};
use connection::{Connection, Timeouts};
use durability::{Flushed, Flusher};
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
/// How long a failed deletion of delivered messages waits before it is retried.
const DELETE_RETRY: Duration = Duration::from_millis(100);
/// Connections the kernel may hold before they are accepted (capped by `somaxconn`). The
/// usual 128 overflows when hundreds of clients connect at once; the overflowing ones then
/// wait a whole second for the SYN to be sent again.
const LISTEN_BACKLOG: i32 = 4096;
/// Bounds of how often connections are checked for timeouts.
const SWEEP_MIN: Duration = Duration::from_millis(10);
const SWEEP_MAX: Duration = Duration::from_secs(1);
/// How often refused connections are reported in the log, so that a flood of connections
/// does not become a flood of log lines.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Content bytes one pull reply holds in memory (contents stored in rows); spooled contents
/// are streamed from their files and do not count.
const PULL_MEMORY_BUDGET: u64 = 16 << 20;

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
}

/// The server state that request handling reaches: everything but the sockets.
struct Core {
    config: Config,
    store: Box<dyn Store>,
    timers: Timers,
    /// Messages in pull replies not yet written whole.
    in_flight: HashSet<MessageId>,
    syncer: Syncer,
    pacer: BulkPacer,
}

/// The writes and staged replies of one round of ready events (group commit).
#[derive(Default)]
struct Batch {
    open: bool,
    /// Connections that staged replies in this batch.
    touched: Vec<usize>,
}

/// What a connection needs from the server while it serves requests.
pub(crate) struct Env<'a> {
    core: &'a mut Core,
    batch: &'a mut Batch,
    now: Instant,
    wall_clock: SystemTime,
}

impl Env<'_> {
    /// Runs one request inside the batch's transaction; any failure becomes a 9000 reply.
    fn serve(
        &mut self,
        code: RequestCode,
        caller: ClientId,
        body: &[u8],
        peer: SocketAddr,
    ) -> Response {
        self.run(code, caller, peer, |ctx| {
            handlers::dispatch(ctx, code, body)
        })
    }

    /// Stores the message of an upload whose content is whole and durable.
    fn finish_upload(
        &mut self,
        code: RequestCode,
        caller: ClientId,
        head: &SendHead,
        upload: Upload,
        peer: SocketAddr,
    ) -> Response {
        self.run(code, caller, peer, |ctx| {
            handlers::finish_upload(ctx, head, upload)
        })
    }

    /// Checks a large send from its head and opens its spool file. No transaction: the
    /// content is written outside the batches, which go on committing meanwhile.
    fn start_upload(
        &mut self,
        code: RequestCode,
        caller: ClientId,
        head: &SendHead,
    ) -> Result<Upload, HandlerError> {
        handlers::start_upload(&mut self.context(code, caller), head)
    }

    fn run(
        &mut self,
        code: RequestCode,
        caller: ClientId,
        peer: SocketAddr,
        handle: impl FnOnce(&mut Context<'_>) -> Result<Response, HandlerError>,
    ) -> Response {
        if !self.batch.open {
            if let Err(error) = self.core.store.begin_batch() {
                log::warn!("{peer}: cannot start a transaction: {error}");
                return Response::error();
            }
            self.batch.open = true;
        }
        // A handler that panics fails its request, not the server.
        let outcome =
            panic::catch_unwind(AssertUnwindSafe(|| handle(&mut self.context(code, caller))));
        let operation = code.operation;
        let edition = code.edition.name();
        match outcome {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                log::warn!("{peer}: {operation:?} (edition {edition}): {error}");
                Response::error()
            }
            Err(_) => {
                log::error!("{peer}: {operation:?} (edition {edition}): the handler panicked");
                Response::error()
            }
        }
    }

    fn context(&mut self, code: RequestCode, caller: ClientId) -> Context<'_> {
        Context {
            store: &mut *self.core.store,
            in_flight: &mut self.core.in_flight,
            pull_budget: PullBudget {
                payload: u64::from(self.core.config.max_payload),
                in_memory: PULL_MEMORY_BUDGET,
            },
            now: self.wall_clock,
            caller,
            reply_code: code.reply_code(),
        }
    }
}

pub struct Server {
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    shutdown: ShutdownHandle,
    connections: Slab<Connection>,
    core: Core,
    /// Messages whose pull reply was written whole, to delete in the next batch.
    delivered: Vec<MessageId>,
    delete_retry_at: Option<Instant>,
    accept_paused_until: Option<Instant>,
    shutdown_deadline: Option<Instant>,
    /// Connections to serve again without waiting for an event.
    needs_service: Vec<usize>,
    /// Bulk transfers to serve again once the pacer lets them.
    bulk_waiting: Vec<usize>,
    /// Numbers connections, so that a finished sync finds its own connection even if its
    /// slab key has been reused.
    next_serial: u64,
    flusher: Flusher,
    /// The last commit that needs a flush to be durable (numbered from 1), and the last one
    /// known durable.
    committed_epoch: u64,
    durable_epoch: u64,
    /// Connections whose replies wait for a flush.
    awaiting_flush: Vec<usize>,
    /// Open connections per peer address, for the per-address cap.
    per_ip: HashMap<IpAddr, usize>,
    next_sweep: Instant,
    refusals: Refusals,
}

/// Connections refused since the last log line about them.
#[derive(Default)]
struct Refusals {
    count: u64,
    last_logged: Option<Instant>,
}

impl Refusals {
    fn note(&mut self, now: Instant, peer: SocketAddr, reason: &str) {
        self.count += 1;
        if self
            .last_logged
            .is_none_or(|at| now.saturating_duration_since(at) >= REFUSAL_LOG_INTERVAL)
        {
            log::warn!(
                "{peer}: refused, {reason} ({} refused since the last report)",
                self.count
            );
            self.count = 0;
            self.last_logged = Some(now);
        }
    }
}

impl Server {
    /// Binds the listening socket, then opens the database: a server that cannot listen
    /// leaves no database or spool folder behind.
    pub fn bind(config: Config) -> Result<Server, ServerError> {
        let listener = listen_on(config.listen)?;
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
        Server::assemble(config, listener, Box::new(store))
    }

    /// Binds the listening socket for a server on `store`: another backend, or one wrapped
    /// to inject faults in tests.
    pub fn bind_with_store(config: Config, store: Box<dyn Store>) -> Result<Server, ServerError> {
        let listener = listen_on(config.listen)?;
        Server::assemble(config, listener, store)
    }

    fn assemble(
        config: Config,
        mut listener: TcpListener,
        store: Box<dyn Store>,
    ) -> Result<Server, ServerError> {
        let poll = Poll::new()?;
        let local_addr = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok(Server {
            poll,
            listener: Some(listener),
            local_addr,
            shutdown: ShutdownHandle::new(Arc::clone(&waker)),
            flusher: Flusher::start(Arc::clone(&waker))?,
            committed_epoch: 0,
            durable_epoch: 0,
            awaiting_flush: Vec::new(),
            connections: Slab::new(),
            core: Core {
                config,
                store,
                timers: Timers::default(),
                in_flight: HashSet::new(),
                syncer: Syncer::new(waker),
                pacer: BulkPacer::new(Instant::now()),
            },
            delivered: Vec::new(),
            delete_retry_at: None,
            accept_paused_until: None,
            shutdown_deadline: None,
            needs_service: Vec::new(),
            bulk_waiting: Vec::new(),
            next_serial: 0,
            per_ip: HashMap::new(),
            next_sweep: Instant::now(),
            refusals: Refusals::default(),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Serves until shut down, then writes produced replies (for a bounded time), commits
    /// the last deletions and closes the database.
    pub fn run(mut self) -> Result<(), ServerError> {
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
        if accept_ready {
            self.accept(now);
        }

        ready.sort_unstable();
        ready.dedup();
        // Decided once per turn, so that every bulk transfer ready now gets its slice, not
        // only the first one.
        let bulk_allowed = self.core.pacer.may_run(now);
        let mut bulk_time = Duration::ZERO;
        let mut batch = Batch::default();
        let mut env = Env {
            core: &mut self.core,
            batch: &mut batch,
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

        let epoch = self.commit(&mut batch, now);
        for &key in &batch.touched {
            if let Some(connection) = self.connections.get_mut(key) {
                let in_flight = &mut self.core.in_flight;
                let committed = epoch.is_some();
                connection.seal(epoch.unwrap_or(self.durable_epoch), committed, in_flight);
                connection.release_through(self.durable_epoch, true, in_flight);
                if connection.awaits_flush() {
                    self.awaiting_flush.push(key);
                }
            }
        }
        ready.extend(batch.touched);
        let flushed: Vec<Flushed> = self.flusher.finished().collect();
        for flushed in flushed {
            ready.extend(self.on_flushed(flushed));
        }
        ready.extend(writable);
        self.flush_and_sweep(ready, now, bulk_allowed, bulk_time);
    }

    /// A log flush finished: releases the replies it made durable (or fails them, if it
    /// failed). Returns the connections that got output.
    fn on_flushed(&mut self, flushed: Flushed) -> Vec<usize> {
        let ok = match flushed.result {
            Ok(()) => true,
            Err(error) => {
                log::error!("cannot flush the database log; the replies it covers fail: {error}");
                false
            }
        };
        self.durable_epoch = self.durable_epoch.max(flushed.through);
        let mut released = mem::take(&mut self.awaiting_flush);
        released.sort_unstable();
        released.dedup();
        for &key in &released {
            if let Some(connection) = self.connections.get_mut(key) {
                connection.release_through(flushed.through, ok, &mut self.core.in_flight);
                if connection.awaits_flush() {
                    self.awaiting_flush.push(key);
                }
            }
        }
        released
    }

    /// Deletes the messages delivered since the last round and commits the batch. Returns
    /// the epoch whose flush the batch's replies wait for, `None` if it did not commit. A
    /// batch without acknowledged writes waits for nothing: what it read may still be in a
    /// flush, but only a power cut could undo that, and then its writer was never told it
    /// succeeded.
    fn commit(&mut self, batch: &mut Batch, now: Instant) -> Option<u64> {
        let due = self.delete_retry_at.is_none_or(|at| at <= now);
        let deleting = if due {
            mem::take(&mut self.delivered)
        } else {
            Vec::new()
        };
        let deleted = !deleting.is_empty() && self.delete_in_batch(batch, &deleting);
        let epoch = if !batch.open {
            Some(self.durable_epoch)
        } else {
            match self.core.store.commit_batch() {
                Ok(Committed::Durable) => Some(self.durable_epoch),
                Ok(Committed::AfterFlush(flush)) => {
                    self.committed_epoch += 1;
                    self.flusher.request(self.committed_epoch, flush);
                    Some(self.committed_epoch)
                }
                Err(error) => {
                    let replies = batch.touched.len();
                    log::error!(
                        "commit failed, replies on {replies} connections become errors: {error}"
                    );
                    None
                }
            }
        };
        let committed = epoch.is_some();
        if committed && deleted {
            for id in &deleting {
                self.core.in_flight.remove(id);
            }
            self.delete_retry_at = None;
        } else if !deleting.is_empty() {
            // Still in flight, so not pulled again; retried shortly.
            self.delivered.extend(deleting);
            self.delete_retry_at = Some(now + DELETE_RETRY);
        }
        epoch
    }

    fn delete_in_batch(&mut self, batch: &mut Batch, ids: &[MessageId]) -> bool {
        let store = &mut self.core.store;
        let result = if batch.open {
            Ok(())
        } else {
            store.begin_batch()
        };
        batch.open |= result.is_ok();
        match result.and_then(|()| store.delete_messages(ids)) {
            Ok(()) => true,
            Err(error) => {
                log::error!("cannot delete {} delivered messages: {error}", ids.len());
                false
            }
        }
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
            connection.flush(&mut self.delivered, &mut self.core.timers, linger_until);
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
            let mut connection = self.connections.remove(key);
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
            connection.abandon(&mut self.core.in_flight);
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
        let Some(listener) = self.listener.as_ref() else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((socket, peer)) => {
                    let config = &self.core.config;
                    let from_peer = self.per_ip.get(&peer.ip()).copied().unwrap_or(0);
                    if self.connections.len() >= config.max_connections {
                        self.refusals.note(now, peer, "connection cap reached");
                        continue;
                    }
                    if from_peer >= config.max_connections_per_ip {
                        self.refusals.note(now, peer, "per-address cap reached");
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
        let deletions_due =
            !self.delivered.is_empty() && self.delete_retry_at.is_none_or(|at| at <= now);
        if !self.needs_service.is_empty() || deletions_due {
            return Some(Duration::ZERO);
        }
        [
            self.core.timers.next(),
            Some(self.next_sweep).filter(|_| !self.connections.is_empty()),
            self.accept_paused_until,
            self.shutdown_deadline,
            self.delete_retry_at.filter(|_| !self.delivered.is_empty()),
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
            connection.abandon(&mut self.core.in_flight);
        }
        self.delete_retry_at = None;
        let mut batch = Batch::default();
        if !self.delivered.is_empty() && self.commit(&mut batch, Instant::now()).is_none() {
            log::error!(
                "{} delivered messages could not be deleted and will be delivered again",
                self.delivered.len()
            );
        }
        self.core.store.close().map_err(ServerError::Close)?;
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
