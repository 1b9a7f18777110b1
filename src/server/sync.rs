//! Making uploaded contents durable off the event loop. Making a large content durable can
//! take seconds (flushing a spool file, for the SQLite store); the `content-sync` worker does
//! it while the loop serves everyone else, then hands the content back and wakes the loop.
//! The store's early writeback keeps what is left for it small.

use std::io;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use mio::Waker;

use crate::store::{ContentSink, LargeContent};
use crate::worker::{ToLoop, Worker};

/// A finished sync, addressed to the connection that started it.
pub(crate) struct Synced {
    pub key: usize,
    /// Tells a connection from a later one that reused its slab key.
    pub serial: u64,
    /// The durable content, or why it could not be made so (the content is then removed).
    pub content: io::Result<LargeContent>,
}

/// A content to make durable, and the connection to tell.
struct Job {
    key: usize,
    serial: u64,
    sink: ContentSink,
}

pub(crate) struct Syncer {
    worker: Worker<Job>,
    done: Receiver<Synced>,
}

impl Syncer {
    pub fn start(waker: Arc<Waker>) -> io::Result<Syncer> {
        let (to_loop, done) = ToLoop::channel(waker);
        let worker = Worker::start("content-sync", move |jobs: Receiver<Job>| {
            for Job { key, serial, sink } in jobs {
                let synced = Synced {
                    key,
                    serial,
                    content: sink.make_durable(),
                };
                // The loop is gone only at exit; the content is then removed, or left for
                // start-up to remove.
                if !to_loop.send(synced) {
                    return;
                }
            }
        })?;
        Ok(Syncer { worker, done })
    }

    /// Queues the content written into `sink` to be made durable. If the worker has ended,
    /// the content is dropped (and so removed) and an error returned.
    pub fn sync(&self, key: usize, serial: u64, sink: ContentSink) -> io::Result<()> {
        let job = Job { key, serial, sink };
        self.worker
            .send(job)
            .map_err(|_| io::Error::other("the content-sync worker has ended"))
    }

    /// The syncs finished since the last call.
    pub fn finished(&self) -> impl Iterator<Item = Synced> + '_ {
        self.done.try_iter()
    }
}
