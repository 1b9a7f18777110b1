//! The content of every benchmark message: who sent it and its sequence number, laid out so
//! that a changed, missing or extra byte anywhere in it is caught on delivery.
//!
//! Layout (little-endian): magic (4) | sender index (4) | sequence number (8) | checksum of
//! those and the length (4) | filler derived from sender and sequence up to the content size.

use byteorder::{ByteOrder, LittleEndian};

/// The smallest content that holds a record.
pub const RECORD_LEN: usize = 20;
const MAGIC: [u8; 4] = *b"MUB1";

/// Identifies one sent message: its sender's index and the sender's sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stamp {
    pub sender: u32,
    pub seq: u64,
}

/// Why a content is not one the benchmark wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Garbled {
    #[error("content of {0} bytes is shorter than a record")]
    TooShort(usize),
    #[error("the record's magic or checksum is wrong")]
    BadHeader,
    #[error("the filler after the record differs from what was sent")]
    BadFiller,
}

/// The content of `size` bytes (at least [`RECORD_LEN`]) carrying `stamp`.
pub fn encode(stamp: Stamp, size: usize) -> Vec<u8> {
    let size = size.max(RECORD_LEN);
    let mut content = vec![0; size];
    content[..4].copy_from_slice(&MAGIC);
    LittleEndian::write_u32(&mut content[4..8], stamp.sender);
    LittleEndian::write_u64(&mut content[8..16], stamp.seq);
    LittleEndian::write_u32(&mut content[16..20], checksum(stamp, size));
    fill(stamp, &mut content[RECORD_LEN..]);
    content
}

/// The stamp of a content written by [`encode`], if every byte of it is as written.
pub fn decode(content: &[u8]) -> Result<Stamp, Garbled> {
    if content.len() < RECORD_LEN {
        return Err(Garbled::TooShort(content.len()));
    }
    let stamp = Stamp {
        sender: LittleEndian::read_u32(&content[4..8]),
        seq: LittleEndian::read_u64(&content[8..16]),
    };
    if content[..4] != MAGIC
        || LittleEndian::read_u32(&content[16..20]) != checksum(stamp, content.len())
    {
        return Err(Garbled::BadHeader);
    }
    let mut expected = vec![0; content.len() - RECORD_LEN];
    fill(stamp, &mut expected);
    if expected != content[RECORD_LEN..] {
        return Err(Garbled::BadFiller);
    }
    Ok(stamp)
}

/// SplitMix64: a cheap, well-mixed step, enough to make every stamp's bytes distinct.
fn mix(mut state: u64) -> u64 {
    state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    state = (state ^ (state >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    state = (state ^ (state >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    state ^ (state >> 31)
}

fn seed(stamp: Stamp) -> u64 {
    mix(u64::from(stamp.sender) ^ mix(stamp.seq))
}

/// Covers the length too, so that a truncated or extended content fails even with no filler.
fn checksum(stamp: Stamp, size: usize) -> u32 {
    mix(seed(stamp) ^ size as u64) as u32
}

fn fill(stamp: Stamp, filler: &mut [u8]) {
    let mut state = seed(stamp);
    for chunk in filler.chunks_mut(8) {
        state = mix(state);
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAMP: Stamp = Stamp { sender: 42, seq: 7 };

    #[test]
    fn records_round_trip_at_every_size() {
        for size in [RECORD_LEN, 21, 100, 4096] {
            let content = encode(STAMP, size);
            assert_eq!(content.len(), size);
            assert_eq!(decode(&content), Ok(STAMP));
        }
    }

    #[test]
    fn different_stamps_give_different_contents() {
        let other = Stamp { seq: 8, ..STAMP };
        assert_ne!(encode(STAMP, 100), encode(other, 100));
        assert_eq!(decode(&encode(other, 100)), Ok(other));
    }

    #[test]
    fn any_changed_byte_is_caught() {
        let content = encode(STAMP, 64);
        for index in 0..content.len() {
            let mut changed = content.clone();
            changed[index] ^= 0x01;
            assert!(decode(&changed).is_err(), "byte {index}");
        }
    }

    #[test]
    fn truncated_or_extended_contents_are_caught() {
        let content = encode(STAMP, 100);
        assert_eq!(decode(&content[..99]), Err(Garbled::BadHeader));
        assert_eq!(decode(&content[..10]), Err(Garbled::TooShort(10)));
        let mut longer = content.clone();
        longer.push(0);
        assert_eq!(decode(&longer), Err(Garbled::BadHeader));
        assert_eq!(
            decode(&encode(STAMP, RECORD_LEN)[..RECORD_LEN - 1]),
            Err(Garbled::TooShort(19))
        );
    }
}
