//! News between servers sharing a store: what one server's committed round means for the
//! connections of the others (a queue grew, a receipt is owed, an account is gone), and the
//! feed a server hears them on. The store carries them (PostgreSQL: NOTIFY in the round's
//! transaction, so they go out only if and when it commits); the server acts on them as on
//! its own durable notices.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;

use crate::protocol::{ClientId, Receipt};

/// One item of news.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum News {
    /// A message for this client is durably stored.
    Queued(ClientId),
    /// This receipt is owed to the message's sender, the first field (protocol §E7).
    Receipt(ClientId, Receipt),
    /// This account was deleted: its sessions end.
    AccountDeleted(ClientId),
    /// News may have been lost (the feed's connection broke and was made again): every
    /// queue may have grown.
    Missed,
}

/// The news a server hears from the others, arriving from a thread of the store's, which
/// stops when this is dropped.
pub struct NewsFeed {
    items: Receiver<News>,
    stop: Arc<AtomicBool>,
    /// The thread ended (it logged why); its end was told as missed news.
    ended: bool,
}

impl NewsFeed {
    pub fn new(items: Receiver<News>, stop: Arc<AtomicBool>) -> NewsFeed {
        NewsFeed {
            items,
            stop,
            ended: false,
        }
    }

    /// The news arrived since the last call.
    pub fn take(&mut self) -> Vec<News> {
        let mut news = Vec::new();
        loop {
            match self.items.try_recv() {
                Ok(item) => news.push(item),
                Err(TryRecvError::Empty) => return news,
                // Whatever the thread would have said from now on is missed.
                Err(TryRecvError::Disconnected) => {
                    if !self.ended {
                        self.ended = true;
                        news.push(News::Missed);
                    }
                    return news;
                }
            }
        }
    }
}

impl Drop for NewsFeed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
