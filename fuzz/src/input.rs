//! The input layout of the stream targets: an option byte, the chunk sizes the stream is cut
//! into, then the stream itself.
//!
//! | bytes | meaning |
//! |---|---|
//! | 1 | options, read by each target its own way |
//! | 1 | `k`: how many chunk sizes follow (taken modulo 9, so 0 to 8) |
//! | k | chunk sizes: byte `b` means `b + 1` bytes; they repeat until the stream is used up |
//! | rest | the byte stream a client sends |
//!
//! No chunk sizes means the whole stream in one piece.

/// At most this many chunk sizes, so that most of a mutated input stays stream.
pub const MAX_CHUNK_SIZES: usize = 8;

#[derive(Debug, Clone, Copy)]
pub struct StreamInput<'a> {
    pub options: u8,
    chunk_sizes: &'a [u8],
    pub stream: &'a [u8],
}

impl<'a> StreamInput<'a> {
    /// `None` for inputs too short to hold the layout; the targets skip those.
    pub fn parse(data: &'a [u8]) -> Option<StreamInput<'a>> {
        let (&options, rest) = data.split_first()?;
        let (&count, rest) = rest.split_first()?;
        let (chunk_sizes, stream) =
            rest.split_at_checked(usize::from(count) % (MAX_CHUNK_SIZES + 1))?;
        Some(StreamInput {
            options,
            chunk_sizes,
            stream,
        })
    }

    /// Lays out an input; `chunk_sizes` are byte counts from 1 to 256.
    pub fn encode(options: u8, chunk_sizes: &[usize], stream: &[u8]) -> Vec<u8> {
        assert!(chunk_sizes.len() <= MAX_CHUNK_SIZES, "too many chunk sizes");
        let mut data = vec![options, chunk_sizes.len() as u8];
        for &size in chunk_sizes {
            assert!((1..=256).contains(&size), "chunk size {size} out of range");
            data.push((size - 1) as u8);
        }
        data.extend_from_slice(stream);
        data
    }

    /// The lengths of the chunks `stream_len` bytes are cut into.
    pub fn chunk_lens(&self, stream_len: usize) -> Vec<usize> {
        if self.chunk_sizes.is_empty() {
            return vec![stream_len];
        }
        let mut lens = Vec::new();
        let mut left = stream_len;
        for &size in self.chunk_sizes.iter().cycle() {
            if left == 0 {
                break;
            }
            let len = left.min(usize::from(size) + 1);
            lens.push(len);
            left -= len;
        }
        lens
    }

    /// `bytes` (the stream, or a same-length rewrite of it) cut into the chosen chunks.
    pub fn chunks<'b>(&self, bytes: &'b [u8]) -> Vec<&'b [u8]> {
        let mut rest = bytes;
        self.chunk_lens(bytes.len())
            .into_iter()
            .map(|len| {
                let (chunk, tail) = rest.split_at(len);
                rest = tail;
                chunk
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_round_trips_and_chunk_sizes_repeat() {
        let data = StreamInput::encode(7, &[1, 3], b"abcdefghij");
        let input = StreamInput::parse(&data).expect("valid layout");
        assert_eq!(input.options, 7);
        assert_eq!(input.stream, b"abcdefghij");
        let chunks = input.chunks(input.stream);
        assert_eq!(chunks, [&b"a"[..], b"bcd", b"e", b"fgh", b"i", b"j"]);
    }

    #[test]
    fn no_chunk_sizes_means_one_chunk() {
        let data = StreamInput::encode(0, &[], b"abc");
        let input = StreamInput::parse(&data).expect("valid layout");
        assert_eq!(input.chunks(input.stream), [&b"abc"[..]]);
        assert_eq!(StreamInput::parse(&[0]).map(|input| input.stream), None);
    }
}
