//! A message's content on its way out: bytes in memory, or a large content streamed from
//! storage as the socket accepts it, so that a 4 GiB message is never held in memory. One
//! type for the store's read side, the pulled messages of a reply, the parts of an encoded
//! reply and the outbox.

use std::fmt;
use std::io::{self, Read};

/// Bytes in memory, or `len` bytes to read from `reader`.
#[derive(Debug)]
pub enum Content {
    Inline(Vec<u8>),
    Streamed { reader: ContentReader, len: u64 },
}

impl Content {
    pub fn len(&self) -> u64 {
        match self {
            Content::Inline(bytes) => bytes.len() as u64,
            Content::Streamed { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A large content, read as the reply that carries it is written. Where it comes from is the
/// store's (a spool file for SQLite).
pub struct ContentReader(Box<dyn Read + Send>);

impl ContentReader {
    pub fn new(reader: impl Read + Send + 'static) -> ContentReader {
        ContentReader(Box::new(reader))
    }
}

impl Read for ContentReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl fmt::Debug for ContentReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ContentReader")
    }
}
