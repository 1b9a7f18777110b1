//! A connection's outbox: replies staged until the commit that holds their writes is durable,
//! then released in order and written into any [`Write`] within a budget, large contents
//! streamed from their readers a chunk at a time. It knows which pulled messages each reply
//! delivers and reports them once that reply is written whole. It owns no socket: the
//! connection hands it one, tests a `Vec<u8>`.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::time::Instant;

use super::deliveries::Deliveries;
use crate::protocol::{Content, EncodedReply, ErrorForm, Reason, Refusal, Reply};
use crate::store::Delivered;

/// Bytes of a streamed content read per write.
const STREAM_CHUNK: usize = 256 << 10;
/// Most reply buffers handed to one vectored write.
const MAX_WRITE_SLICES: usize = 64;

/// A reply produced but not yet released.
struct Staged {
    reply: EncodedReply,
    delivered: Vec<Delivered>,
    padded: bool,
    /// How a 9000 that replaces the reply is laid out: as the connection's were when the
    /// request was answered.
    errors: ErrorForm,
    /// Bytes it will take in the output.
    len: u64,
    /// The commit whose durability it waits for; `None` until its round commits.
    epoch: Option<u64>,
}

/// A released piece of a reply, and the messages its reply delivers once this, its last
/// piece, is written whole.
struct Outgoing {
    /// A streamed content's `len` counts the bytes still to be read from its reader.
    data: Content,
    delivered: Vec<Delivered>,
}

/// How a call to [`Outbox::write_to`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    /// Everything released is written.
    All,
    /// The writer would block: wait for it to become writable.
    WouldBlock,
    /// The budget is spent with output left: no readiness event will come, call again.
    BudgetSpent,
}

/// How the round that staged replies ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RoundEnd {
    /// Committed as commit `epoch`: its replies go out once that commit is durable.
    Committed(u64),
    /// Rolled back: its replies become 9000, released with the commits durable through
    /// `durable`.
    RolledBack { durable: u64 },
}

/// What a reply waits for before it may go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Awaits {
    /// Its round's commit, made durable: it tells of what the round wrote or read.
    Round,
    /// The flush of commit `epoch` (perhaps done already), not its round's: it tells only of
    /// writes committed by then (a pull's messages, from a store whose pulls write nothing).
    Durable(u64),
}

/// How the log flush that made commits durable went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flush {
    Succeeded,
    Failed,
}

pub(crate) struct Outbox {
    /// Replies not yet released: those of the current round, then those whose commit waits
    /// for its flush, in request order.
    staged: VecDeque<Staged>,
    staged_len: u64,
    /// Staged replies of the current round that wait for its commit: the last ones of
    /// `staged` without an epoch.
    unsealed: usize,
    output: VecDeque<Outgoing>,
    /// Bytes of `output.front()` already written, when it holds bytes.
    output_offset: usize,
    output_len: u64,
    /// A chunk of the stream at the front of the output, read but not yet all written.
    chunk: Vec<u8>,
    chunk_written: usize,
    /// When the output last made progress, or became non-empty.
    last_progress: Instant,
}

impl Outbox {
    pub fn new(now: Instant) -> Outbox {
        Outbox {
            staged: VecDeque::new(),
            staged_len: 0,
            unsealed: 0,
            output: VecDeque::new(),
            output_offset: 0,
            output_len: 0,
            chunk: Vec::new(),
            chunk_written: 0,
            last_progress: now,
        }
    }

    /// Bytes released and not yet written.
    pub fn unwritten(&self) -> u64 {
        self.output_len
    }

    /// Bytes released or staged and not yet written.
    pub fn queued(&self) -> u64 {
        self.output_len + self.staged_len
    }

    /// Nothing staged and nothing to write.
    pub fn is_empty(&self) -> bool {
        self.output_len == 0 && self.staged.is_empty()
    }

    /// When the output last made progress, or became non-empty.
    pub fn last_progress(&self) -> Instant {
        self.last_progress
    }

    /// Whether the next write sends a streamed content: bulk work.
    pub fn writes_stream_next(&self) -> bool {
        matches!(
            self.output.front(),
            Some(Outgoing {
                data: Content::Streamed { .. },
                ..
            })
        )
    }

    /// Stages a reply of the current round, with the messages it delivers, behind every reply
    /// staged before it. Returns whether the caller must remember the outbox for the round's
    /// end: to seal it (its first reply waiting for the round), or to release it (a reply
    /// waiting for nothing more).
    pub fn stage(
        &mut self,
        reply: EncodedReply,
        delivered: Vec<Delivered>,
        padded: bool,
        errors: ErrorForm,
        awaits: Awaits,
    ) -> bool {
        let epoch = match awaits {
            Awaits::Round => None,
            Awaits::Durable(epoch) => Some(epoch),
        };
        let first = epoch.is_some() || self.unsealed == 0;
        if epoch.is_none() {
            self.unsealed += 1;
        }
        let len = reply.encoded_len();
        self.staged_len += len;
        self.staged.push_back(Staged {
            reply,
            delivered,
            padded,
            errors,
            len,
            epoch,
        });
        first
    }

    /// Ties the current round's replies to its commit once the round's fate is known: as
    /// produced if it committed, as 9000 if it did not (their writes are gone, their messages
    /// stay queued). They are released once that commit is durable.
    pub fn seal(&mut self, end: RoundEnd, deliveries: &mut Deliveries) {
        let epoch = match end {
            RoundEnd::Committed(epoch) | RoundEnd::RolledBack { durable: epoch } => epoch,
        };
        // The round's are the last ones, among which those that wait for no round are sealed
        // already.
        let round = self
            .staged
            .iter_mut()
            .rev()
            .filter(|staged| staged.epoch.is_none());
        for staged in round.take(std::mem::take(&mut self.unsealed)) {
            staged.epoch = Some(epoch);
            if let RoundEnd::RolledBack { .. } = end {
                deliveries.give_up(&std::mem::take(&mut staged.delivered));
                staged.reply = storage_failure(staged.errors);
            }
        }
    }

    /// Releases, in order, the replies whose commit is durable through `durable`. If that
    /// flush failed, they become 9000: their writes may not survive a power cut.
    pub fn release_through(&mut self, durable: u64, flush: Flush, deliveries: &mut Deliveries) {
        while self
            .staged
            .front()
            .is_some_and(|staged| staged.epoch.is_some_and(|epoch| epoch <= durable))
        {
            let Some(staged) = self.staged.pop_front() else {
                break;
            };
            self.staged_len -= staged.len;
            match flush {
                Flush::Succeeded => self.release(staged.reply, staged.delivered, staged.padded),
                Flush::Failed => {
                    deliveries.give_up(&staged.delivered);
                    let reply = storage_failure(staged.errors);
                    self.release(reply, Vec::new(), staged.padded);
                }
            }
        }
    }

    /// Whether sealed replies wait for a commit to become durable.
    pub fn awaits_flush(&self) -> bool {
        self.staged
            .front()
            .is_some_and(|staged| staged.epoch.is_some())
    }

    /// Queues a reply for writing at once, after everything released before it; its
    /// delivered messages ride on its last piece.
    pub fn release(&mut self, reply: EncodedReply, delivered: Vec<Delivered>, padded: bool) {
        let (head, tail) = reply.into_wire(padded);
        self.push(Content::Inline(head));
        // An empty part would never be written whole.
        for part in tail.into_iter().filter(|part| !part.is_empty()) {
            self.push(part);
        }
        if let Some(last) = self.output.back_mut() {
            last.delivered = delivered;
        }
    }

    fn push(&mut self, data: Content) {
        if self.output.is_empty() {
            self.last_progress = Instant::now();
        }
        self.output_len += data.len();
        self.output.push_back(Outgoing {
            data,
            delivered: Vec::new(),
        });
    }

    /// Writes released replies into `out` until it would block or `budget` bytes are written.
    /// The messages of every reply written whole are delivered.
    pub fn write_to(
        &mut self,
        out: &mut impl Write,
        mut budget: usize,
        deliveries: &mut Deliveries,
    ) -> io::Result<Written> {
        let pending = self.output_len;
        let outcome = loop {
            if self.output_len == 0 {
                break Ok(Written::All);
            }
            if budget == 0 {
                break Ok(Written::BudgetSpent);
            }
            let written = if self.writes_stream_next() {
                self.write_stream_chunk(out)
            } else {
                self.write_bytes(out)
            };
            match written {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    self.advance(n, deliveries);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    break Ok(Written::WouldBlock)
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => break Err(error),
            }
        };
        if self.output_len < pending {
            self.last_progress = Instant::now();
        }
        outcome
    }

    /// One vectored write of the byte pieces at the front of the output.
    fn write_bytes(&mut self, out: &mut impl Write) -> io::Result<usize> {
        let mut slices = [IoSlice::new(&[]); MAX_WRITE_SLICES];
        let mut count = 0;
        for (index, outgoing) in self.output.iter().take(MAX_WRITE_SLICES).enumerate() {
            let Content::Inline(bytes) = &outgoing.data else {
                break;
            };
            let skip = if index == 0 { self.output_offset } else { 0 };
            slices[index] = IoSlice::new(&bytes[skip..]);
            count += 1;
        }
        out.write_vectored(&slices[..count])
    }

    /// Writes from the stream at the front of the output, reading its next chunk when the
    /// last one has been written.
    fn write_stream_chunk(&mut self, out: &mut impl Write) -> io::Result<usize> {
        if self.chunk_written == self.chunk.len() {
            let Some(Outgoing {
                data:
                    Content::Streamed {
                        reader,
                        len: remaining,
                    },
                ..
            }) = self.output.front_mut()
            else {
                return Ok(0);
            };
            let len =
                usize::try_from(*remaining).map_or(STREAM_CHUNK, |left| left.min(STREAM_CHUNK));
            self.chunk.resize(len, 0);
            // A short content means it changed under us: the reply cannot be finished.
            reader.read_exact(&mut self.chunk)?;
            *remaining -= len as u64;
            self.chunk_written = 0;
        }
        out.write(&self.chunk[self.chunk_written..])
    }

    /// Drops `n` written bytes from the output; the messages of replies now written whole are
    /// delivered.
    fn advance(&mut self, mut n: usize, deliveries: &mut Deliveries) {
        self.output_len -= n as u64;
        while n > 0 {
            let Some(front) = self.output.front_mut() else {
                break;
            };
            let finished = match &front.data {
                Content::Inline(bytes) => {
                    let left = bytes.len() - self.output_offset;
                    let taken = n.min(left);
                    self.output_offset += taken;
                    n -= taken;
                    taken == left
                }
                Content::Streamed { len: remaining, .. } => {
                    self.chunk_written += n;
                    n = 0;
                    *remaining == 0 && self.chunk_written == self.chunk.len()
                }
            };
            if !finished {
                break;
            }
            if let Some(done) = self.output.pop_front() {
                deliveries.delivered(done.delivered);
            }
            self.output_offset = 0;
            self.chunk.clear();
            self.chunk_written = 0;
        }
        if self.output.is_empty() && self.chunk.capacity() > 0 {
            self.chunk = Vec::new();
        }
    }

    /// Makes the messages of replies never written whole pullable again; returns whether
    /// there were any in released replies.
    pub fn abandon(self, deliveries: &mut Deliveries) -> bool {
        for staged in &self.staged {
            deliveries.give_up(&staged.delivered);
        }
        let mut lost = false;
        for outgoing in &self.output {
            lost |= !outgoing.delivered.is_empty();
            deliveries.give_up(&outgoing.delivered);
        }
        lost
    }
}

/// The 9000 that replaces a reply whose writes were lost or may not be durable.
fn storage_failure(errors: ErrorForm) -> EncodedReply {
    Reply::Error(Refusal::new(Reason::Internal)).encode(errors)
}

#[cfg(test)]
mod tests;
