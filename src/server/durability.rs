//! Making commits durable off the event loop (pipelined group commit). A commit that holds
//! acknowledged writes is flushed to disk by this thread while the loop goes on serving the
//! next round; the replies of that commit are released when the flush reports back. A flush
//! covers every commit made before it, so requests that pile up while one runs are answered
//! by a single following flush.

use std::io;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Waker;

use crate::store::LogFlush;
use crate::worker::{ToLoop, Worker};

/// A flush that ran: every commit numbered up to `through` is durable if `result` is Ok.
pub(crate) struct Flushed {
    pub through: u64,
    pub result: io::Result<()>,
    pub took: Duration,
}

/// The `log-flush` worker and the flushes it has finished.
pub(crate) struct Flusher {
    worker: Option<Worker<(u64, LogFlush)>>,
    done: Receiver<Flushed>,
}

impl Flusher {
    pub fn start(waker: Arc<Waker>) -> io::Result<Flusher> {
        let (to_loop, done) = ToLoop::channel(waker);
        let worker = Worker::start("log-flush", move |pending: Receiver<(u64, LogFlush)>| {
            while let Ok(mut newest) = pending.recv() {
                // Later commits are covered by a flush started after them: take the newest.
                while let Ok(later) = pending.try_recv() {
                    newest = later;
                }
                let (through, flush) = newest;
                let started = Instant::now();
                let result = flush.run();
                let flushed = Flushed {
                    through,
                    result,
                    took: started.elapsed(),
                };
                if !to_loop.send(flushed) {
                    return;
                }
            }
        })?;
        Ok(Flusher {
            worker: Some(worker),
            done,
        })
    }

    /// Asks for commit `epoch` (and all before it) to be made durable.
    pub fn request(&self, epoch: u64, flush: LogFlush) {
        if let Some(worker) = &self.worker {
            // The worker ends only when the flusher is dropped.
            let _ = worker.send((epoch, flush));
        }
    }

    /// The flushes finished since the last call, oldest first.
    pub fn finished(&self) -> impl Iterator<Item = Flushed> + '_ {
        self.done.try_iter()
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            worker.finish();
        }
    }
}
