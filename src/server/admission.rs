//! Admission and dismissal of connections: the listening socket, accepting within the
//! connection caps (closing the longest-idle connection to make room at the cap), the sweep
//! that closes slow or silent connections, and the removal of a closed one.

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Interest, Token};

use super::connection::{Connection, Timeouts};
use super::{Server, ServerError};

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

/// Events of one kind (refused or evicted connections) since the last log line about them,
/// so that a flood of connections logs one line a second, not one per connection.
#[derive(Default)]
pub(super) struct Throttled {
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
    /// Forgets a connection: its address's count, its registration, its long-poll's wait, its
    /// subscription, and the messages its unwritten replies carried, which become pullable
    /// again.
    pub(super) fn remove(&mut self, key: usize) {
        let mut connection = self.connections.remove(key);
        self.core.waiters.forget(key);
        if let Some(id) = self.core.waiters.unsubscribe(key) {
            self.core.presence.unsubscribed(id);
        }
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
    pub(super) fn make_room(&mut self, now: Instant, newcomer: SocketAddr) -> bool {
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

    pub(super) fn refuse(&mut self, now: Instant, peer: SocketAddr, reason: &str) {
        self.core.metrics.connection_refused();
        if let Some(count) = self.refusals.note(now) {
            log::warn!("{peer}: refused, {reason} ({count} refused since the last report)");
        }
    }

    /// Closes the connections that are too slow or too quiet; returns their keys.
    pub(super) fn sweep(&mut self, now: Instant) -> Vec<usize> {
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

    pub(super) fn accept(&mut self, now: Instant) {
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
}

pub(super) fn listen_on(addr: SocketAddr) -> Result<TcpListener, ServerError> {
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
