//! Making uploaded contents durable off the event loop. Flushing a large spool file can take
//! seconds; a thread per finished upload does it while the loop serves everyone else, then
//! hands the upload back and wakes the loop.

use std::io;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread;

use mio::Waker;

use crate::store::Upload;

/// A finished sync, addressed to the connection that started it.
pub(crate) struct Synced {
    pub key: usize,
    /// Tells a connection from a later one that reused its slab key.
    pub serial: u64,
    pub upload: Upload,
    pub result: io::Result<()>,
}

pub(crate) struct Syncer {
    done_tx: Sender<Synced>,
    done_rx: Receiver<Synced>,
    waker: Arc<Waker>,
}

impl Syncer {
    pub fn new(waker: Arc<Waker>) -> Syncer {
        let (done_tx, done_rx) = mpsc::channel();
        Syncer {
            done_tx,
            done_rx,
            waker,
        }
    }

    /// Syncs `upload` on a new thread. If no thread can be started, the upload is dropped
    /// (its file removed) and the error returned.
    pub fn sync(&self, key: usize, serial: u64, upload: Upload) -> io::Result<()> {
        let done_tx = self.done_tx.clone();
        let waker = Arc::clone(&self.waker);
        thread::Builder::new()
            .name("spool-sync".into())
            .spawn(move || {
                let result = upload.sync();
                let synced = Synced {
                    key,
                    serial,
                    upload,
                    result,
                };
                // The loop is gone only at exit; the upload's file is then removed, or left
                // for start-up to remove.
                if done_tx.send(synced).is_ok() {
                    if let Err(error) = waker.wake() {
                        log::error!("cannot wake the event loop: {error}");
                    }
                }
            })
            .map(drop)
    }

    /// The syncs finished since the last call.
    pub fn finished(&self) -> impl Iterator<Item = Synced> + '_ {
        self.done_rx.try_iter()
    }
}
