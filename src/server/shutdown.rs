//! How the operator stops the server: `q` and Enter on standard input, SIGINT or SIGTERM.
//! Each sets one flag and wakes the event loop, which then shuts down gracefully.

use std::io::{self, BufRead};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use mio::Waker;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// A cloneable request to stop the server.
#[derive(Clone)]
pub struct ShutdownHandle {
    requested: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl ShutdownHandle {
    pub(crate) fn new(waker: Arc<Waker>) -> ShutdownHandle {
        ShutdownHandle {
            requested: Arc::new(AtomicBool::new(false)),
            waker,
        }
    }

    /// Asks the event loop to shut down; it finishes what it has started first.
    pub fn shutdown(&self) {
        self.requested.store(true, Ordering::SeqCst);
        if let Err(error) = self.waker.wake() {
            log::error!("cannot wake the event loop: {error}");
        }
    }

    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Stops the server when a line reading `q` arrives on standard input. End of input does
    /// not stop it: the server may run with no terminal.
    pub fn watch_stdin(&self) -> io::Result<()> {
        let handle = self.clone();
        thread::Builder::new().name("stdin".into()).spawn(move || {
            for line in io::stdin().lock().lines() {
                match line {
                    Ok(line) if line.trim() == "q" => {
                        log::info!("q typed: shutting down");
                        handle.shutdown();
                        return;
                    }
                    // Only an exact q stops, so a stray word cannot; say so rather than
                    // leave the operator waiting.
                    Ok(line) if !line.trim().is_empty() => {
                        log::warn!("{:?} ignored: type q and Enter to stop", line.trim());
                    }
                    Ok(_) => {}
                    Err(error) => {
                        log::warn!("standard input unreadable ({error}); type q no longer works");
                        return;
                    }
                }
            }
            log::debug!("standard input closed; the server keeps running");
        })?;
        Ok(())
    }

    /// Stops the server on SIGINT or SIGTERM.
    pub fn watch_signals(&self) -> io::Result<()> {
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        let handle = self.clone();
        thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                if let Some(signal) = signals.forever().next() {
                    log::info!("signal {signal} received: shutting down");
                    handle.shutdown();
                }
            })?;
        Ok(())
    }
}
