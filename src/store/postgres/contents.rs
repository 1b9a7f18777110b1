//! The PostgreSQL store's large contents, kept in the database: a `contents` row each and
//! its bytes in `content_chunks` rows of [`CHUNK`] bytes, so that memory stays bounded by a
//! chunk in both directions.
//!
//! An [`Upload`] writes its content in a transaction of its own, on a connection of the
//! [`Pool`], while the rounds' transactions commit on the batch's; `make_durable` commits it.
//! Its message then names it in `SpoolFile`; a content whose message does not commit is
//! deleted when its upload is dropped, and one left behind by a crash in between is deleted
//! at the next start once it is old enough (`remove_strays`). A [`ChunkReader`] reads a
//! stored content back a chunk at a time.

use std::io::{self, Read};
use std::sync::Arc;

use super::conn::{Conn, Pool};
use crate::store::{ContentReader, PendingContent, StoreError};

/// Bytes per chunk row: large enough that a round trip per chunk costs little, small enough
/// to hold one in memory per upload and per reader.
pub(super) const CHUNK: usize = 256 << 10;

/// Starts an upload of `len` bytes: its transaction and its `contents` row.
pub(super) fn start(pool: &Arc<Pool>, len: u64) -> Result<Upload, StoreError> {
    let mut conn = pool.take()?;
    let key = uuid::Uuid::new_v4().simple().to_string();
    conn.batch("BEGIN")?;
    let size = i64::try_from(len).map_err(|_| StoreError::Corrupt("content length"))?;
    let started = conn.execute(
        "INSERT INTO contents (Key, Size) VALUES ($1, $2)",
        &[&key, &size],
    );
    if let Err(error) = started {
        // The connection is dropped: it is in a failed transaction.
        return Err(error.into());
    }
    Ok(Upload {
        pool: Arc::clone(pool),
        conn: Some(conn),
        key,
        len,
        next_seq: 0,
        buffer: Vec::new(),
        state: UploadState::Writing,
    })
}

/// Where an upload is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UploadState {
    /// Its transaction is open: dropped now, it rolls back.
    Writing,
    /// Committed, not yet named by a committed message: dropped now, it is deleted.
    Durable,
    /// Its message has committed: it belongs to the message.
    Kept,
}

/// A content being written in its own transaction. Dropped before it is kept, it leaves
/// nothing behind.
pub(super) struct Upload {
    pool: Arc<Pool>,
    /// `None` once a failure has left it unusable.
    conn: Option<Conn>,
    key: String,
    len: u64,
    next_seq: i32,
    /// Bytes not yet written as a chunk: less than [`CHUNK`].
    buffer: Vec<u8>,
    state: UploadState,
}

impl Upload {
    fn conn(&mut self) -> io::Result<&mut Conn> {
        self.conn
            .as_mut()
            .ok_or_else(|| io::Error::other("the content's connection failed earlier"))
    }

    /// Writes `bytes` as the next chunk row.
    fn write_chunk(&mut self, bytes: &[u8]) -> io::Result<()> {
        let (key, seq) = (self.key.clone(), self.next_seq);
        let written = self.conn()?.execute(
            "INSERT INTO content_chunks (Key, Seq, Data) VALUES ($1, $2, $3)",
            &[&key, &seq, &bytes],
        );
        if let Err(error) = written {
            self.conn = None;
            return Err(io::Error::other(error));
        }
        self.next_seq += 1;
        Ok(())
    }
}

impl PendingContent for Upload {
    fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.buffer.is_empty() && bytes.len() >= CHUNK {
                // Whole chunks go from the caller's buffer, uncopied.
                let (chunk, rest) = bytes.split_at(CHUNK);
                self.write_chunk(chunk)?;
                bytes = rest;
                continue;
            }
            let take = bytes.len().min(CHUNK - self.buffer.len());
            self.buffer.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.buffer.len() == CHUNK {
                let chunk = std::mem::take(&mut self.buffer);
                self.write_chunk(&chunk)?;
                self.buffer = chunk;
                self.buffer.clear();
            }
        }
        Ok(())
    }

    /// Writes the last chunk and commits: with synchronous_commit on, durable once COMMIT
    /// returns.
    fn make_durable(&mut self) -> io::Result<()> {
        if !self.buffer.is_empty() {
            let chunk = std::mem::take(&mut self.buffer);
            self.write_chunk(&chunk)?;
        }
        let key = self.key.clone();
        let conn = self.conn()?;
        let committed = conn
            .execute(
                "UPDATE contents SET Stored = clock_timestamp() WHERE Key = $1",
                &[&key],
            )
            .and_then(|_| conn.batch("COMMIT"));
        if let Err(error) = committed {
            self.conn = None;
            return Err(io::Error::other(error));
        }
        self.state = UploadState::Durable;
        Ok(())
    }

    fn key(&self) -> &str {
        &self.key
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn keep(mut self: Box<Self>) {
        self.state = UploadState::Kept;
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            // A failed connection rolled back or lost the transaction; a committed content
            // left behind is removed at a later start.
            return;
        };
        let undone = match self.state {
            UploadState::Writing => conn.batch("ROLLBACK"),
            UploadState::Durable => conn
                .execute("DELETE FROM contents WHERE Key = $1", &[&self.key])
                .map(drop),
            UploadState::Kept => Ok(()),
        };
        match undone {
            Ok(()) => self.pool.give_back(conn),
            Err(error) => log::warn!("cannot remove content {}: {error}", self.key),
        }
    }
}

/// Reads a stored content a chunk at a time, on a connection of the pool.
pub(super) struct ChunkReader {
    pool: Arc<Pool>,
    conn: Option<Conn>,
    key: String,
    next_seq: i32,
    /// Bytes still to read after those in `chunk`.
    left: u64,
    chunk: Vec<u8>,
    read: usize,
}

impl ChunkReader {
    pub fn open(pool: &Arc<Pool>, key: String, len: u64) -> Result<ContentReader, StoreError> {
        Ok(ContentReader::new(ChunkReader {
            pool: Arc::clone(pool),
            conn: Some(pool.take()?),
            key,
            next_seq: 0,
            left: len,
            chunk: Vec::new(),
            read: 0,
        }))
    }

    fn fetch(&mut self) -> io::Result<()> {
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| io::Error::other("the content's connection failed earlier"))?;
        let row = conn.query_opt(
            "SELECT Data FROM content_chunks WHERE Key = $1 AND Seq = $2",
            &[&self.key, &self.next_seq],
        );
        let data: Vec<u8> = match row {
            Ok(Some(row)) => row.try_get(0).map_err(io::Error::other)?,
            Ok(None) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("content {} is cut short", self.key),
                ))
            }
            Err(error) => {
                self.conn = None;
                return Err(io::Error::other(error));
            }
        };
        if data.is_empty() || data.len() as u64 > self.left {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("content {} has a chunk of the wrong size", self.key),
            ));
        }
        self.left -= data.len() as u64;
        self.chunk = data;
        self.read = 0;
        self.next_seq += 1;
        Ok(())
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.read == self.chunk.len() {
            if self.left == 0 || buf.is_empty() {
                return Ok(0);
            }
            self.fetch()?;
        }
        let n = buf.len().min(self.chunk.len() - self.read);
        buf[..n].copy_from_slice(&self.chunk[self.read..self.read + n]);
        self.read += n;
        Ok(n)
    }
}

impl Drop for ChunkReader {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.give_back(conn);
        }
    }
}
