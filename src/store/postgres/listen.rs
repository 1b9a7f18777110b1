//! The listening thread: a connection of its own that LISTENs on the news channel and hands
//! what other servers say to the server's loop, waking it. If its connection breaks it
//! connects again (every 250 ms at most, as the database may be failing over) and tells
//! the loop that news may have been missed meanwhile. It stops when the [`NewsFeed`] is
//! dropped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Config, NoTls};

use super::notify::{decode, listen_statement};
use crate::store::{News, NewsFeed};

/// How often the thread looks whether it should stop, while no news comes.
const STOP_CHECK: Duration = Duration::from_millis(200);
/// The least time between two attempts to connect.
const RECONNECT_INTERVAL: Duration = Duration::from_millis(250);
/// After this long without news the connection is checked with a round trip: a database
/// host gone without closing it (powered off, cut off) leaves it silent, not closed.
const LIVENESS_CHECK: Duration = Duration::from_secs(5);

/// Starts listening on `channel` for the news of servers other than `node`; `wake` wakes
/// the loop.
pub(super) fn start(
    config: Config,
    channel: String,
    node: i64,
    wake: Box<dyn Fn() + Send>,
) -> std::io::Result<NewsFeed> {
    let (sender, items) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let listener = Listener {
        config,
        channel,
        node,
        wake,
        sender,
        stop: Arc::clone(&stop),
    };
    thread::Builder::new()
        .name("news-listen".into())
        .spawn(move || listener.run())?;
    Ok(NewsFeed::new(items, stop))
}

/// Why listening ended.
enum Ended {
    /// The feed was dropped, or the loop has gone.
    Stopped,
    Lost(String),
}

struct Listener {
    config: Config,
    channel: String,
    node: i64,
    wake: Box<dyn Fn() + Send>,
    sender: Sender<News>,
    stop: Arc<AtomicBool>,
}

impl Listener {
    fn run(self) {
        let mut first = true;
        let mut last_attempt: Option<Instant> = None;
        while !self.stopped() {
            if let Some(at) = last_attempt {
                thread::sleep(RECONNECT_INTERVAL.saturating_sub(at.elapsed()));
            }
            last_attempt = Some(Instant::now());
            let mut client = match self.connect() {
                Ok(client) => client,
                Err(error) => {
                    log::warn!("cannot listen for other servers' news: {error}");
                    continue;
                }
            };
            if !first {
                log::info!("listening for other servers' news again");
                // Whatever was said while not listening is lost.
                if !self.tell(vec![News::Missed]) {
                    return;
                }
            }
            first = false;
            match self.listen(&mut client) {
                Ended::Stopped => return,
                Ended::Lost(why) => {
                    log::warn!("lost the connection that hears other servers' news: {why}");
                }
            }
        }
    }

    fn connect(&self) -> Result<Client, postgres::Error> {
        let mut client = self.config.connect(NoTls)?;
        client.batch_execute(&listen_statement(&self.channel))?;
        Ok(client)
    }

    /// Hands on what comes until the connection breaks or the feed is dropped.
    fn listen(&self, client: &mut Client) -> Ended {
        let mut heard_from = Instant::now();
        while !self.stopped() {
            let mut heard = Vec::new();
            let mut notifications = client.notifications();
            // Up to STOP_CHECK for the first, then whatever else is buffered.
            let first = notifications.timeout_iter(STOP_CHECK).next();
            let rest = match first {
                Ok(Some(notification)) => {
                    self.note(notification.payload(), &mut heard);
                    let mut buffered = notifications.iter();
                    loop {
                        match buffered.next() {
                            Ok(Some(more)) => self.note(more.payload(), &mut heard),
                            Ok(None) => break Ok(()),
                            Err(error) => break Err(error),
                        }
                    }
                }
                Ok(None) => Ok(()),
                Err(error) => Err(error),
            };
            if let Err(error) = rest {
                return Ended::Lost(error.to_string());
            }
            drop(notifications);
            if client.is_closed() {
                return Ended::Lost("the database closed it".into());
            }
            if !heard.is_empty() {
                heard_from = Instant::now();
            } else if heard_from.elapsed() >= LIVENESS_CHECK {
                if let Err(error) = client.is_valid(LIVENESS_CHECK) {
                    return Ended::Lost(error.to_string());
                }
                heard_from = Instant::now();
            }
            if !heard.is_empty() && !self.tell(heard) {
                return Ended::Stopped;
            }
        }
        Ended::Stopped
    }

    /// Keeps the news of a payload, unless this server sent it.
    fn note(&self, payload: &str, heard: &mut Vec<News>) {
        match decode(payload) {
            Some((node, news)) if node != self.node => heard.extend(news),
            Some(_) => {}
            None => log::debug!("ignored a notification that is not MessageU news"),
        }
    }

    /// Hands `news` to the loop; false once the loop has gone.
    fn tell(&self, news: Vec<News>) -> bool {
        for item in news {
            if self.sender.send(item).is_err() {
                return false;
            }
        }
        (self.wake)();
        true
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}
