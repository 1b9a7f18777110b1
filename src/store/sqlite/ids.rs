//! Message ids that are never given twice: ids come from a sequence (wire id = sequence mod
//! 4,294,967,295, plus 1, so 1 to u32::MAX, wrapping), reserved in blocks whose end is stored
//! in the round's transaction (`message_ids`). After a restart the sequence resumes at the
//! stored end: ids reserved and not used are skipped, none is given again (until the wrap).
//! A round that rolls back takes its reservation with it, so the next id reserves anew.

use crate::protocol::MessageId;

/// Ids reserved by one write of the mark: a restart skips at most this many.
const BLOCK: u64 = 1 << 16;
/// Wire ids run 1..=u32::MAX.
const WIRE_IDS: u64 = u32::MAX as u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MessageIds {
    /// The sequence number of the next candidate id.
    next: u64,
    /// Reserved up to here (exclusive), as the round's transaction has it.
    reserved: u64,
    /// Reserved up to here as the last commit left it.
    committed: u64,
}

/// A candidate id, and the reservation mark to store first, if the candidate passes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Candidate {
    pub id: MessageId,
    pub reserve: Option<u64>,
}

impl MessageIds {
    /// Resumes after a stored reservation mark, or, for a database without one, after the id
    /// of the most recently stored message.
    pub fn resume(mark: Option<u64>, last_id: Option<u32>) -> MessageIds {
        let next = mark.unwrap_or_else(|| last_id.map_or(0, u64::from));
        MessageIds {
            next,
            reserved: next,
            committed: next,
        }
    }

    /// The next candidate id; it is used up whether or not it is free.
    pub fn next(&mut self) -> Candidate {
        let sequence = self.next;
        self.next += 1;
        let reserve = (sequence >= self.reserved).then(|| {
            self.reserved = sequence + BLOCK;
            self.reserved
        });
        Candidate {
            id: MessageId((sequence % WIRE_IDS) as u32 + 1),
            reserve,
        }
    }

    /// The round committed: its reservation is stored.
    pub fn committed(&mut self) {
        self.committed = self.reserved;
    }

    /// The round rolled back, and its reservation with it.
    pub fn rolled_back(&mut self) {
        self.reserved = self.committed;
    }

    /// Starts numbering at wire id `id` (tests of collisions and the wrap).
    #[cfg(test)]
    pub fn jump_to(&mut self, id: u32) {
        self.next = u64::from(id) - 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_reserved_a_block_at_a_time_and_resume_past_the_mark() {
        let mut ids = MessageIds::resume(None, None);
        let first = ids.next();
        assert_eq!(
            first,
            Candidate {
                id: MessageId(1),
                reserve: Some(BLOCK)
            }
        );
        assert_eq!(
            ids.next(),
            Candidate {
                id: MessageId(2),
                reserve: None
            }
        );
        ids.committed();
        let resumed = MessageIds::resume(Some(BLOCK), Some(2)).next();
        assert_eq!(
            resumed.id,
            MessageId(BLOCK as u32 + 1),
            "the block's rest is skipped"
        );
        assert_eq!(MessageIds::resume(None, Some(41)).next().id, MessageId(42));
    }

    #[test]
    fn a_rolled_back_reservation_is_made_again() {
        let mut ids = MessageIds::resume(Some(10), None);
        assert_eq!(ids.next().reserve, Some(10 + BLOCK));
        ids.rolled_back();
        let again = ids.next();
        assert_eq!(
            again,
            Candidate {
                id: MessageId(12),
                reserve: Some(11 + BLOCK)
            }
        );
        ids.committed();
        assert_eq!(ids.next().reserve, None);
    }

    #[test]
    fn wire_ids_wrap_past_u32_max_to_1() {
        let mut ids = MessageIds::resume(Some(WIRE_IDS - 1), None);
        assert_eq!(ids.next().id, MessageId(u32::MAX));
        assert_eq!(ids.next().id, MessageId(1));
    }
}
