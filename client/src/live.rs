//! A live subscription (protocol §E5, §E7): a connection of its own, logged in and
//! subscribed, that yields each message once, as it arrives, and each delivery receipt;
//! acknowledges the messages the caller says it has handled; and, when the connection drops,
//! reconnects to the next node of the service ([`Servers`]), logs in and subscribes again by
//! itself, waiting a little longer after each round of the nodes that all failed. Messages
//! pushed again after a reconnection, by the same node or another on the same database, are
//! recognised and not shown twice. Requests other than the subscription's (sends, keys) go
//! through the session's own connection.

use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use super::error::ClientError;
use super::extensions::{self, Login, ServerKind};
use super::identity::ServerAddress;
use super::push_frames::{Frames, Incoming, PushedMessage, Seen};
use super::servers::Servers;
use super::session::Session;
use super::transport::{connect, IO_TIMEOUT};
use messageu_protocol::extension::extension_request;
use messageu_protocol::push::{acknowledge_payload, MAX_ACKNOWLEDGED};
use messageu_protocol::{Extension, Features, MessageId, Receipt};

/// The wait after a round of the nodes in which none could be subscribed to; it doubles after
/// each such round, up to [`MAX_BACKOFF`]. A lost connection is followed by a round at once.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A connection silent this long is asked something, so that one that died without a close
/// (a lost network) is noticed within [`IO_TIMEOUT`] more.
const PROBE_AFTER: Duration = Duration::from_secs(60);

/// What a subscription has to tell.
#[derive(Debug)]
pub enum Event {
    /// A message not handled before: the caller handles it, then calls
    /// [`Subscription::handled`].
    Message(PushedMessage),
    /// A message this client sent reached its recipient.
    Receipt(Receipt),
    /// The connection to `server` dropped; the next node is tried at once.
    Lost {
        server: ServerAddress,
        error: ClientError,
    },
    /// No node could be subscribed to; the next round comes after `retry_in`.
    Unreachable {
        error: ClientError,
        retry_in: Duration,
    },
    /// Connected to `server`, logged in and subscribed again.
    Reconnected { server: ServerAddress },
}

/// A subscription that lasts across connections.
#[derive(Debug)]
pub struct Subscription {
    /// What needs the subscription, for the error a server without push delivery gets.
    command: &'static str,
    /// The nodes, the one subscribed to (or to try next) current.
    servers: Servers,
    login: Login,
    /// `None` while waiting to reconnect.
    connection: Option<Frames<TcpStream>>,
    /// The wait after the next round that fails, and when the next round may start.
    backoff: Duration,
    retry_at: Instant,
    seen: Seen,
    /// Handled and not yet acknowledged on the current connection.
    unacknowledged: Vec<MessageId>,
    /// When the connection last showed it was alive.
    heard_at: Instant,
}

impl Subscription {
    /// Connects, logs in as the session's client and subscribes.
    pub fn start(session: &Session, command: &'static str) -> Result<Subscription, ClientError> {
        let (mut servers, login) = session.subscriber()?;
        let connection = servers.try_each(|server| open(server, &login, command))?;
        Ok(Subscription {
            command,
            servers,
            login,
            connection: Some(connection),
            backoff: FIRST_BACKOFF,
            retry_at: Instant::now(),
            seen: Seen::default(),
            unacknowledged: Vec::new(),
            heard_at: Instant::now(),
        })
    }

    /// The next event, waiting up to `wait` for one; `None` if none came. A message handled
    /// before (delivered again after a reconnection) is acknowledged again, not shown.
    pub fn next(&mut self, wait: Duration) -> Result<Option<Event>, ClientError> {
        let Some(connection) = self.connection.as_mut() else {
            return self.reconnect(wait);
        };
        let polled = connection
            .stream()
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .map_err(ClientError::Connection)
            .and_then(|()| connection.next_push());
        match polled {
            Ok(Some(Incoming::Message(message))) => {
                self.heard_at = Instant::now();
                if self.seen.contains(&message) {
                    self.unacknowledged.push(message.id);
                    return Ok(None);
                }
                Ok(Some(Event::Message(message)))
            }
            Ok(Some(Incoming::Receipt(receipt))) => {
                self.heard_at = Instant::now();
                Ok(Some(Event::Receipt(receipt)))
            }
            Ok(Some(Incoming::OtherPush(_) | Incoming::Reply(_))) => {
                self.heard_at = Instant::now();
                Ok(None)
            }
            Ok(None) if self.heard_at.elapsed() >= PROBE_AFTER => self.acknowledge(),
            Ok(None) => Ok(None),
            Err(error) => self.lost(error),
        }
    }

    /// The caller has handled (shown, saved) `message`: it is acknowledged with the next
    /// [`Subscription::acknowledge`], and not shown again if it comes again.
    pub fn handled(&mut self, message: &PushedMessage) {
        self.seen.insert(message);
        self.unacknowledged.push(message.id);
    }

    /// Acknowledges the messages handled since the last time (or, with none, checks that the
    /// connection is alive). Those the connection drops with come again, and are then
    /// acknowledged without being shown.
    pub fn acknowledge(&mut self) -> Result<Option<Event>, ClientError> {
        let Some(connection) = self.connection.as_mut() else {
            return Ok(None);
        };
        // Waiting for pushes may have left a short timeout; the reply gets the usual one.
        if let Err(error) = connection.stream().set_read_timeout(Some(IO_TIMEOUT)) {
            return self.lost(ClientError::Connection(error));
        }
        let mut batches: Vec<&[MessageId]> = self.unacknowledged.chunks(MAX_ACKNOWLEDGED).collect();
        if batches.is_empty() {
            batches.push(&[]);
        }
        for ids in batches {
            let request = extension_request(
                Extension::Acknowledge,
                self.login.id,
                &acknowledge_payload(ids),
            );
            let answered = connection
                .call(&request, Instant::now() + IO_TIMEOUT)
                .and_then(|reply| extensions::expect(&reply, Extension::Acknowledge));
            if let Err(error) = answered {
                return self.lost(error);
            }
        }
        self.seen.acknowledged(&self.unacknowledged);
        self.unacknowledged.clear();
        self.heard_at = Instant::now();
        Ok(None)
    }

    /// Whether handled messages wait to be acknowledged.
    pub fn has_unacknowledged(&self) -> bool {
        !self.unacknowledged.is_empty()
    }

    /// A failure of the connection is reported, and repaired by the next call, from the next
    /// node; any other ends it all.
    fn lost(&mut self, error: ClientError) -> Result<Option<Event>, ClientError> {
        if !error.is_connection_failure() {
            return Err(error);
        }
        self.connection = None;
        self.unacknowledged.clear();
        let server = self.servers.current().clone();
        self.servers.advance();
        self.retry_at = Instant::now();
        Ok(Some(Event::Lost { server, error }))
    }

    /// A round of the nodes, from the current one, once the wait after the last failed round
    /// is over.
    fn reconnect(&mut self, wait: Duration) -> Result<Option<Event>, ClientError> {
        let until_retry = self.retry_at.saturating_duration_since(Instant::now());
        if !until_retry.is_zero() {
            thread::sleep(until_retry.min(wait));
            return Ok(None);
        }
        let (login, command) = (&self.login, self.command);
        match self.servers.try_each(|server| open(server, login, command)) {
            Ok(connection) => {
                self.connection = Some(connection);
                self.backoff = FIRST_BACKOFF;
                self.heard_at = Instant::now();
                let server = self.servers.current().clone();
                Ok(Some(Event::Reconnected { server }))
            }
            Err(error) if error.is_connection_failure() => {
                let retry_in = self.backoff;
                self.retry_at = Instant::now() + retry_in;
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                Ok(Some(Event::Unreachable { error, retry_in }))
            }
            Err(error) => Err(error),
        }
    }
}

/// A new connection: hello, log-in, subscribe.
fn open(
    server: &ServerAddress,
    login: &Login,
    command: &'static str,
) -> Result<Frames<TcpStream>, ClientError> {
    let mut stream = connect(server)?;
    match extensions::open(&mut stream, Some(login))? {
        ServerKind::Extended(features) if features.has(Features::PUSH) => {}
        kind => {
            return Err(ClientError::NoPush {
                command,
                classic: !matches!(kind, ServerKind::Extended(_)),
            })
        }
    }
    let mut frames = Frames::new(stream);
    let subscribe = extension_request(Extension::Subscribe, login.id, &[]);
    let reply = frames.call(&subscribe, Instant::now() + IO_TIMEOUT)?;
    extensions::expect(&reply, Extension::Subscribe)?;
    Ok(frames)
}
