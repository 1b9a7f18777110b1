//! A live subscription (protocol §E5, §E7): a connection of its own, logged in and
//! subscribed, that yields each message once, as it arrives, and each delivery receipt;
//! acknowledges the messages the caller says it has handled; and, when the connection drops,
//! reconnects, logs in and subscribes again by itself, waiting a little longer after each
//! failed attempt. Requests other than the subscription's (sends, keys) go through the
//! session's own connection.

use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use super::error::ClientError;
use super::extensions::{self, Login, ServerKind};
use super::identity::ServerAddress;
use super::push_frames::{Frames, Incoming, PushedMessage, Seen};
use super::session::Session;
use super::transport::{connect, IO_TIMEOUT};
use messageu_protocol::extension::extension_request;
use messageu_protocol::push::{acknowledge_payload, MAX_ACKNOWLEDGED};
use messageu_protocol::{Extension, Features, MessageId, Receipt};

/// The first wait before reconnecting; it doubles after each failed attempt, up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
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
    /// The connection dropped (or a new one failed); the next attempt comes after `retry_in`.
    Lost {
        error: ClientError,
        retry_in: Duration,
    },
    /// Connected, logged in and subscribed again.
    Reconnected,
}

/// A subscription that lasts across connections.
#[derive(Debug)]
pub struct Subscription {
    /// What needs the subscription, for the error a server without push delivery gets.
    command: &'static str,
    server: ServerAddress,
    login: Login,
    /// `None` while waiting to reconnect.
    connection: Option<Frames<TcpStream>>,
    /// The wait before the next attempt to reconnect, and when it ends.
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
        let (server, login) = session.subscriber()?;
        let connection = open(&server, &login, command)?;
        Ok(Subscription {
            command,
            server,
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

    /// A failure of the connection is reported and repaired later; any other ends it all.
    fn lost(&mut self, error: ClientError) -> Result<Option<Event>, ClientError> {
        if !is_connection_loss(&error) {
            return Err(error);
        }
        self.connection = None;
        self.unacknowledged.clear();
        let retry_in = self.backoff;
        self.retry_at = Instant::now() + retry_in;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        Ok(Some(Event::Lost { error, retry_in }))
    }

    fn reconnect(&mut self, wait: Duration) -> Result<Option<Event>, ClientError> {
        let until_retry = self.retry_at.saturating_duration_since(Instant::now());
        if !until_retry.is_zero() {
            thread::sleep(until_retry.min(wait));
            return Ok(None);
        }
        match open(&self.server, &self.login, self.command) {
            Ok(connection) => {
                self.connection = Some(connection);
                self.backoff = FIRST_BACKOFF;
                self.heard_at = Instant::now();
                Ok(Some(Event::Reconnected))
            }
            Err(error) => self.lost(error),
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

/// Whether `error` is the connection's, not the server's answer or this client's.
fn is_connection_loss(error: &ClientError) -> bool {
    matches!(
        error,
        ClientError::Connect { .. }
            | ClientError::Connection(_)
            | ClientError::ClosedEarly
            | ClientError::Timeout(_)
            | ClientError::Dropped(_)
            | ClientError::UnaskedReply { .. }
    )
}
