//! Large contents, whatever keeps them: the types the server and the handlers see, and the
//! traits a backend implements behind them.
//!
//! A file message's content may be 4 GiB: it is streamed to storage as it arrives, outside
//! the rounds' transactions, and streamed back out as the reply that carries it is written.
//! Its life, in the types of this module:
//!
//! 1. [`ContentStore::begin_content`] takes a content of a given length, or refuses it with
//!    `NoSpace`, and gives a [`ContentSink`];
//! 2. the connection writes the arriving bytes into the sink (and, every so many bytes, gives
//!    the backend the chance to start making them durable early);
//! 3. once the content is whole, [`ContentSink::make_durable`] runs off the event loop (it
//!    can take seconds) and gives a [`LargeContent`];
//! 4. the store's `insert_message` takes it in `NewContent::Large`: it belongs to its message
//!    once the batch commits, and is removed if the batch does not;
//! 5. a pull reply reads it back through a [`ContentReader`](crate::protocol::ContentReader).
//!
//! Dropping a content anywhere before step 4's commit removes it. The SQLite backend keeps
//! contents as files in a spool folder beside the database (`sqlite/spool.rs`); the
//! PostgreSQL backend keeps them in the database as chunked rows, written by the sink in a
//! transaction of its own, committed by `make_durable`, named by the message row, and read a
//! chunk at a time by the reader (`postgres/contents.rs`). Nothing here names a file.

use std::io;

use super::StoreError;

/// Where a backend keeps large contents: the start of each one.
pub trait ContentStore {
    /// Takes a content of `len` bytes, to be written outside any transaction so that other
    /// requests commit while it arrives. Fails with `NoSpace` when the backend cannot take it.
    fn begin_content(&mut self, len: u64) -> Result<ContentSink, StoreError>;
}

/// One large content as a backend keeps it, from its first byte until the message that names
/// it commits. Dropped before [`PendingContent::keep`], it removes what it stored.
pub trait PendingContent: Send {
    /// Appends the next bytes; the caller never passes more than the content's length.
    fn write(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// A hint, once `step` more bytes may have arrived: the backend may start making what it
    /// has durable while the rest arrives, so that [`PendingContent::make_durable`] has little
    /// left to do. The caller picks the step; doing nothing is correct.
    fn write_back_early(&mut self, step: u64) {
        let _ = step;
    }
    /// Makes the whole content durable. Slow for large contents: the server runs it off the
    /// event loop, on another thread.
    fn make_durable(&mut self) -> io::Result<()>;
    /// The backend's name for the content, which its message row stores.
    fn key(&self) -> &str;
    /// The content's length in bytes.
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The message naming the content has committed: the content now belongs to it.
    fn keep(self: Box<Self>);
}

/// A large content being written as it arrives. Dropped, it is removed.
pub struct ContentSink(Box<dyn PendingContent>);

impl ContentSink {
    pub fn new(content: impl PendingContent + 'static) -> ContentSink {
        ContentSink(Box::new(content))
    }

    /// Appends the next bytes of the content; never more than it has left.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write(bytes)
    }

    /// See [`PendingContent::write_back_early`].
    pub fn write_back_early(&mut self, step: u64) {
        self.0.write_back_early(step)
    }

    /// Makes the whole content durable, ready for its message. Slow: to run off the event
    /// loop. On failure the content is dropped, and so removed.
    pub fn make_durable(mut self) -> io::Result<LargeContent> {
        self.0.make_durable()?;
        Ok(LargeContent(self.0))
    }
}

/// A whole, durable large content, waiting for the message that names it: what the store's
/// `insert_message` takes. Kept if that message's batch commits; dropped (and so removed) if
/// not.
pub struct LargeContent(Box<dyn PendingContent>);

impl LargeContent {
    /// The backend's name for the content.
    pub(crate) fn key(&self) -> &str {
        self.0.key()
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Its message has committed: the content belongs to it now.
    pub(crate) fn keep(self) {
        self.0.keep()
    }
}
