//! Detection of zero-padded clients (protocol §4.3).
//!
//! Some clients pad every request with zeros to a multiple of 1024 bytes, open a new
//! connection per request and expect a reply padded the same way, then the server's close.
//! Persistent clients must instead get exact replies. The only evidence is what follows a
//! request on the wire, so the decision is made from the bytes already received.

/// The block size padded clients pad requests and replies to.
pub const BLOCK_LEN: u64 = 1024;

/// What the bytes after a request say about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// Serve exactly: nothing (or a non-zero byte) follows before the block boundary.
    Exact,
    /// The client pads: discard the padding, pad the reply, close after writing it.
    Padded,
    /// Only zeros so far, and the block is not complete: wait a short grace time for the rest.
    Undecided,
}

/// Classifies the bytes `following` a request that began at stream offset `start` and ended at
/// `end`. `closed` says the peer has finished sending, so nothing more will arrive.
///
/// A padded client's request always begins on a block boundary (offset 0 of its connection),
/// so a request that did not is never taken for a padded one: that keeps a persistent client
/// whose next request happens to begin with zeros (a register's client id) from being misread.
pub fn classify(start: u64, end: u64, following: &[u8], closed: bool) -> Padding {
    let into_block = end % BLOCK_LEN;
    if !start.is_multiple_of(BLOCK_LEN) || into_block == 0 {
        return Padding::Exact;
    }
    let padding_len = (BLOCK_LEN - into_block) as usize;
    let seen = &following[..following.len().min(padding_len)];
    if seen.is_empty() || seen.iter().any(|&byte| byte != 0) {
        return Padding::Exact;
    }
    if seen.len() == padding_len || closed {
        Padding::Padded
    } else {
        Padding::Undecided
    }
}

/// The number of zero bytes that bring a reply of `len` bytes to a whole number of blocks.
pub fn reply_padding(len: usize) -> usize {
    let rest = len as u64 % BLOCK_LEN;
    if rest == 0 {
        0
    } else {
        (BLOCK_LEN - rest) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_block_of_zeros_means_padded() {
        assert_eq!(classify(0, 23, &[0; 1001], false), Padding::Padded);
        assert_eq!(classify(0, 23, &[0; 3000], false), Padding::Padded);
        assert_eq!(
            classify(2048, 2048 + 438, &[0; 586], false),
            Padding::Padded
        );
    }

    #[test]
    fn nothing_after_the_request_means_exact() {
        assert_eq!(classify(0, 23, &[], false), Padding::Exact);
    }

    #[test]
    fn a_non_zero_byte_before_the_boundary_means_a_pipelined_request() {
        let mut next = vec![0; 16];
        next.push(2);
        assert_eq!(classify(0, 23, &next, false), Padding::Exact);
    }

    #[test]
    fn partial_zeros_wait_unless_the_peer_closed() {
        assert_eq!(classify(0, 23, &[0; 500], false), Padding::Undecided);
        assert_eq!(classify(0, 23, &[0; 500], true), Padding::Padded);
    }

    #[test]
    fn requests_not_starting_on_a_boundary_are_exact() {
        assert_eq!(classify(23, 46, &[0; 1000], false), Padding::Exact);
    }

    #[test]
    fn requests_ending_on_a_boundary_are_exact() {
        assert_eq!(classify(0, 1024, &[0; 1024], false), Padding::Exact);
    }

    #[test]
    fn replies_are_padded_to_whole_blocks() {
        assert_eq!(reply_padding(7), 1017);
        assert_eq!(reply_padding(1024), 0);
        assert_eq!(reply_padding(1025), 1023);
    }
}
