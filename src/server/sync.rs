//! Making uploaded contents durable off the event loop. Flushing a large spool file can take
//! seconds; the `spool-sync` worker does it while the loop serves everyone else, then hands
//! the upload back and wakes the loop. Early writeback keeps what is left for it small.

use std::io;
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;

use mio::Waker;

use crate::store::Upload;
use crate::worker::Worker;

/// A finished sync, addressed to the connection that started it.
pub(crate) struct Synced {
    pub key: usize,
    /// Tells a connection from a later one that reused its slab key.
    pub serial: u64,
    pub upload: Upload,
    pub result: io::Result<()>,
}

/// An upload to sync, and the connection to tell.
struct Job {
    key: usize,
    serial: u64,
    upload: Upload,
}

pub(crate) struct Syncer {
    worker: Worker<Job>,
    done: Receiver<Synced>,
}

impl Syncer {
    pub fn start(waker: Arc<Waker>) -> io::Result<Syncer> {
        let (report, done) = mpsc::channel();
        let worker = Worker::start("spool-sync", move |jobs: Receiver<Job>| {
            for Job {
                key,
                serial,
                upload,
            } in jobs
            {
                let result = upload.sync();
                let synced = Synced {
                    key,
                    serial,
                    upload,
                    result,
                };
                // The loop is gone only at exit; the upload's file is then removed, or left
                // for start-up to remove.
                if report.send(synced).is_err() {
                    return;
                }
                if let Err(error) = waker.wake() {
                    log::error!("cannot wake the event loop: {error}");
                }
            }
        })?;
        Ok(Syncer { worker, done })
    }

    /// Queues `upload` to be made durable. If the worker has ended, the upload is dropped
    /// (its file removed) and an error returned.
    pub fn sync(&self, key: usize, serial: u64, upload: Upload) -> io::Result<()> {
        let job = Job {
            key,
            serial,
            upload,
        };
        self.worker
            .send(job)
            .map_err(|_| io::Error::other("the spool-sync worker has ended"))
    }

    /// The syncs finished since the last call.
    pub fn finished(&self) -> impl Iterator<Item = Synced> + '_ {
        self.done.try_iter()
    }
}
