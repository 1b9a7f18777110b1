//! Typed lines, read in a thread of their own (started when the first line is wanted), so that
//! a live command can wait for the server and for the user at once, and the console reads
//! from the same source before and after it.

use std::cell::{Cell, OnceCell};
use std::fmt;
use std::io::{self, BufRead};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::Duration;

use super::error::ClientError;

type Source = Box<dyn BufRead + Send>;

/// What the user types, line by line.
pub struct Lines {
    /// The input, until the thread that reads it starts.
    source: Cell<Option<Source>>,
    receiver: OnceCell<Receiver<io::Result<String>>>,
}

/// What [`Lines::wait`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Typed {
    Line(String),
    /// The input ended (or failed, which ends it too).
    End,
    /// Nothing within the wait.
    Nothing,
}

impl fmt::Debug for Lines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Lines")
    }
}

impl Lines {
    /// The lines of `input`; nothing is read before a line is wanted.
    pub fn new(input: impl BufRead + Send + 'static) -> Lines {
        Lines {
            source: Cell::new(Some(Box::new(input))),
            receiver: OnceCell::new(),
        }
    }

    fn receiver(&self) -> &Receiver<io::Result<String>> {
        self.receiver.get_or_init(|| {
            let source = self.source.take();
            spawn(source.unwrap_or_else(|| Box::new(io::empty())))
        })
    }

    /// The next line, without its ending; `None` at the end of the input.
    pub fn next(&self) -> Result<Option<String>, ClientError> {
        match self.receiver().recv() {
            Ok(line) => line.map(Some).map_err(ClientError::Input),
            Err(_) => Ok(None),
        }
    }

    /// A line typed within `wait`, if any.
    pub fn wait(&self, wait: Duration) -> Result<Typed, ClientError> {
        match self.receiver().recv_timeout(wait) {
            Ok(line) => line.map(Typed::Line).map_err(ClientError::Input),
            Err(RecvTimeoutError::Timeout) => Ok(Typed::Nothing),
            Err(RecvTimeoutError::Disconnected) => Ok(Typed::End),
        }
    }
}

/// Reads `input` in a new thread, one line at a time, until it ends or fails.
fn spawn(mut input: Source) -> Receiver<io::Result<String>> {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || loop {
        let mut line = String::new();
        let read = match input.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => Ok(line.trim_end_matches(['\r', '\n']).to_owned()),
            Err(error) => Err(error),
        };
        let failed = read.is_err();
        if sender.send(read).is_err() || failed {
            return;
        }
    });
    receiver
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn lines_come_without_their_endings_then_the_end() {
        let lines = Lines::new(Cursor::new(b"one\r\ntwo\nthree".to_vec()));
        assert_eq!(lines.next().expect("read"), Some("one".to_owned()));
        let long = Duration::from_secs(5);
        assert_eq!(lines.wait(long).expect("read"), Typed::Line("two".into()));
        assert_eq!(lines.next().expect("read"), Some("three".to_owned()));
        assert_eq!(lines.next().expect("read"), None);
        assert_eq!(lines.wait(long).expect("read"), Typed::End);
    }
}
