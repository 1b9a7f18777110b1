//! The client directory: every registered client's id and name by registration position,
//! as the list reply sends them, kept compact (a name is its bytes, not its 255-byte field)
//! and shared. Entries live in chunks behind `Arc`s: a snapshot for a list reply clones the
//! chunk pointers and no entry, and a registration or deletion copies at most the one chunk
//! a snapshot still shares. A [`ListReader`] encodes a snapshot into the reply's wire bytes
//! as the socket accepts them, so that a list reply costs neither a copy of the list nor a
//! stall of the loop while it is built, however many clients there are. I/O-free.

use std::io::{self, Read};
use std::sync::Arc;

use crate::protocol::replies::LISTED_CLIENT_LEN;
use crate::protocol::request::encode_name;
use crate::protocol::{ClientId, Content, ContentReader};

/// Entries per chunk: a chunk copied on a change is about 40 KiB.
const CHUNK_ENTRIES: usize = 1024;
/// The most entries a list reply can carry: its payload size is a u32 (about 15.8 million;
/// the oldest registrations are listed).
const MAX_LISTED: usize = u32::MAX as usize / LISTED_CLIENT_LEN;

/// One client of the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its registration position (never given twice).
    pub position: u64,
    pub id: ClientId,
    pub name: String,
}

/// Entries in position order, their names end to end.
#[derive(Debug, Clone, Default)]
struct Chunk {
    positions: Vec<u64>,
    ids: Vec<ClientId>,
    /// Where each entry's name ends in `names`.
    ends: Vec<u32>,
    names: String,
}

impl Chunk {
    fn len(&self) -> usize {
        self.ids.len()
    }

    fn name(&self, index: usize) -> &str {
        let start = if index == 0 {
            0
        } else {
            self.ends[index - 1] as usize
        };
        &self.names[start..self.ends[index] as usize]
    }

    fn entry(&self, index: usize) -> Entry {
        Entry {
            position: self.positions[index],
            id: self.ids[index],
            name: self.name(index).to_owned(),
        }
    }

    /// Rebuilt with `entry` inserted at `index` (`Some`), or without the entry at `index`.
    fn rebuilt(&self, index: usize, entry: Option<&Entry>) -> Chunk {
        let mut chunk = Chunk::default();
        for i in 0..=self.len() {
            if i == index {
                match entry {
                    Some(entry) => chunk.push(entry.position, entry.id, &entry.name),
                    None => continue,
                }
            }
            if i < self.len() {
                chunk.push(self.positions[i], self.ids[i], self.name(i));
            }
        }
        chunk
    }

    fn push(&mut self, position: u64, id: ClientId, name: &str) {
        self.positions.push(position);
        self.ids.push(id);
        self.names.push_str(name);
        self.ends.push(self.names.len() as u32);
    }
}

/// Every registered client by position. Cloning it is a snapshot.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    chunks: Vec<Arc<Chunk>>,
    len: usize,
}

impl Directory {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a client at `position`: after every other (a registration), or back where it
    /// was (an undone deletion).
    pub fn insert(&mut self, position: u64, id: ClientId, name: &str) {
        self.len += 1;
        let last_position = self
            .chunks
            .last()
            .and_then(|chunk| chunk.positions.last().copied());
        if last_position.is_none_or(|last| last < position) {
            match self.chunks.last_mut() {
                Some(last) if last.len() < CHUNK_ENTRIES => {
                    Arc::make_mut(last).push(position, id, name)
                }
                _ => {
                    let mut chunk = Chunk::default();
                    chunk.push(position, id, name);
                    self.chunks.push(Arc::new(chunk));
                }
            }
            return;
        }
        let at = self.chunk_of(position);
        let chunk = &self.chunks[at];
        let index = chunk.positions.partition_point(|&p| p < position);
        let entry = Entry {
            position,
            id,
            name: name.to_owned(),
        };
        self.chunks[at] = Arc::new(chunk.rebuilt(index, Some(&entry)));
    }

    /// Removes the client at `position`; returns it.
    pub fn remove(&mut self, position: u64) -> Option<Entry> {
        let at = self.chunk_of(position);
        let chunk = self.chunks.get(at)?;
        let index = chunk.positions.binary_search(&position).ok()?;
        let entry = chunk.entry(index);
        if chunk.len() == 1 {
            self.chunks.remove(at);
        } else {
            self.chunks[at] = Arc::new(chunk.rebuilt(index, None));
        }
        self.len -= 1;
        Some(entry)
    }

    /// The chunk that holds `position`, or would.
    fn chunk_of(&self, position: u64) -> usize {
        let after = self
            .chunks
            .partition_point(|chunk| chunk.positions.first().is_some_and(|&p| p <= position));
        after.saturating_sub(1)
    }

    /// Whether a client is at `position`.
    pub fn contains(&self, position: u64) -> bool {
        self.chunks
            .get(self.chunk_of(position))
            .is_some_and(|chunk| chunk.positions.binary_search(&position).is_ok())
    }

    /// The list reply's entries for a caller at `except` (if it is listed): every other
    /// client, encoded as the reply is written.
    pub fn listing(&self, except: Option<u64>) -> Content {
        let except = except.filter(|&position| self.contains(position));
        let count = (self.len - usize::from(except.is_some())).min(MAX_LISTED);
        let len = (count * LISTED_CLIENT_LEN) as u64;
        let reader = ListReader {
            chunks: self.chunks.clone(),
            except,
            left: count,
            chunk: 0,
            index: 0,
            pending: Vec::with_capacity(LISTED_CLIENT_LEN),
            pending_at: 0,
        };
        Content::Streamed {
            reader: ContentReader::new(reader),
            len,
        }
    }
}

/// A snapshot's entries in wire form (protocol §2: 16-byte id, 255-byte name field), made as
/// they are read.
struct ListReader {
    chunks: Vec<Arc<Chunk>>,
    except: Option<u64>,
    /// Entries still to encode.
    left: usize,
    chunk: usize,
    index: usize,
    /// The entry being read, when a read ended inside it.
    pending: Vec<u8>,
    pending_at: usize,
}

impl ListReader {
    /// Encodes the next listed entry into `pending`; false at the end.
    fn next_entry(&mut self) -> bool {
        if self.left == 0 {
            return false;
        }
        loop {
            let Some(chunk) = self.chunks.get(self.chunk) else {
                return false;
            };
            if self.index == chunk.len() {
                self.chunk += 1;
                self.index = 0;
                continue;
            }
            let index = self.index;
            self.index += 1;
            if Some(chunk.positions[index]) == self.except {
                continue;
            }
            self.pending.clear();
            self.pending.extend_from_slice(&chunk.ids[index].0);
            encode_name(chunk.name(index), &mut self.pending);
            self.pending_at = 0;
            self.left -= 1;
            return true;
        }
    }
}

impl Read for ListReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut written = 0;
        while written < buf.len() {
            if self.pending_at == self.pending.len() && !self.next_entry() {
                break;
            }
            let take = (self.pending.len() - self.pending_at).min(buf.len() - written);
            buf[written..written + take]
                .copy_from_slice(&self.pending[self.pending_at..self.pending_at + take]);
            self.pending_at += take;
            written += take;
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::client::parse_client_list;

    fn id(n: u64) -> ClientId {
        let mut id = [0x11; 16];
        id[..8].copy_from_slice(&n.to_le_bytes());
        ClientId(id)
    }

    fn directory(positions: impl IntoIterator<Item = u64>) -> Directory {
        let mut directory = Directory::default();
        for position in positions {
            directory.insert(position, id(position), &format!("client {position}"));
        }
        directory
    }

    /// The listing's bytes, read in reads of `step` bytes; checks its declared length.
    fn read_all(content: Content, step: usize) -> Vec<u8> {
        let Content::Streamed { mut reader, len } = content else {
            panic!("a streamed listing");
        };
        let mut bytes = Vec::new();
        let mut buf = vec![0; step];
        loop {
            let n = reader.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&buf[..n]);
        }
        assert_eq!(bytes.len() as u64, len, "as long as declared");
        bytes
    }

    fn listed_positions(bytes: &[u8]) -> Vec<u64> {
        parse_client_list(bytes)
            .unwrap()
            .iter()
            .map(|client| {
                let position = u64::from_le_bytes(client.id.0[..8].try_into().unwrap());
                assert_eq!(client.name, format!("client {position}"));
                position
            })
            .collect()
    }

    #[test]
    fn a_listing_is_every_client_but_the_caller_in_wire_form_whatever_the_reads() {
        let directory = directory(1..=3000);
        for step in [1, 7, LISTED_CLIENT_LEN, 64 * 1024] {
            let listed = listed_positions(&read_all(directory.listing(Some(1500)), step));
            let expected: Vec<u64> = (1..=3000).filter(|&p| p != 1500).collect();
            assert_eq!(listed, expected, "reads of {step}");
        }
        let everyone = listed_positions(&read_all(directory.listing(None), 4096));
        assert_eq!(everyone.len(), 3000);
        let unknown = listed_positions(&read_all(directory.listing(Some(99_999)), 4096));
        assert_eq!(
            unknown.len(),
            3000,
            "a caller not listed takes nothing away"
        );
    }

    #[test]
    fn a_snapshot_stays_as_it_was_while_the_directory_changes() {
        let mut directory = directory(1..=2500);
        let snapshot = directory.listing(None);
        directory.insert(2501, id(2501), "client 2501");
        assert_eq!(directory.remove(7).map(|entry| entry.position), Some(7));
        assert_eq!(directory.remove(7), None);
        assert_eq!(listed_positions(&read_all(snapshot, 1000)).len(), 2500);
        let now = listed_positions(&read_all(directory.listing(None), 1000));
        assert_eq!(now.len(), 2500);
        assert!(!now.contains(&7) && now.contains(&2501));
    }

    #[test]
    fn an_undone_deletion_goes_back_where_it_was() {
        let mut directory = directory([1, 2, 5, 9]);
        let entry = directory.remove(5).unwrap();
        directory.insert(entry.position, entry.id, &entry.name);
        let listed = listed_positions(&read_all(directory.listing(None), 271));
        assert_eq!(listed, vec![1, 2, 5, 9]);
        for position in [1, 2, 5, 9] {
            directory.remove(position).unwrap();
        }
        assert!(directory.is_empty());
        assert!(read_all(directory.listing(None), 10).is_empty());
        directory.insert(3, id(3), "client 3");
        assert!(directory.contains(3) && !directory.contains(1));
    }

    #[test]
    fn deletions_and_insertions_across_chunks_keep_the_order() {
        let mut directory = directory((1..=5000).map(|p| p * 2));
        for position in (2..=10_000).step_by(6) {
            directory.remove(position).unwrap();
        }
        for position in (1..=9_999).step_by(1000) {
            directory.insert(position, id(position), &format!("client {position}"));
        }
        let listed = listed_positions(&read_all(directory.listing(None), 5000));
        let mut expected: Vec<u64> = (1..=5000)
            .map(|p| p * 2)
            .filter(|p| (p - 2) % 6 != 0)
            .collect();
        expected.extend((1..=9_999).step_by(1000));
        expected.sort_unstable();
        assert_eq!(listed, expected);
        assert_eq!(directory.len(), expected.len());
    }
}
