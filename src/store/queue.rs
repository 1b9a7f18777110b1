//! The queue counts a batch changes: kept aside until it commits, then applied to the
//! [`QueueStats`] every backend keeps.

use super::QueueStats;

/// Messages a batch stores and deletes, applied to the queue counts if it commits.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct QueueChange {
    pub stored: u64,
    pub stored_bytes: u64,
    pub delivered: u64,
    pub delivered_bytes: u64,
    /// Deleted undelivered: unsent, or queued for a deleted account.
    pub withdrawn: u64,
    pub withdrawn_bytes: u64,
}

impl QueueChange {
    /// Adds `other`'s messages to these.
    pub fn add(&mut self, other: QueueChange) {
        self.stored += other.stored;
        self.stored_bytes += other.stored_bytes;
        self.delivered += other.delivered;
        self.delivered_bytes += other.delivered_bytes;
        self.withdrawn += other.withdrawn;
        self.withdrawn_bytes += other.withdrawn_bytes;
    }

    /// Applies a committed batch's change to `queue`.
    pub fn apply(self, queue: &mut QueueStats) {
        queue.messages =
            (queue.messages + self.stored).saturating_sub(self.delivered + self.withdrawn);
        queue.bytes = (queue.bytes + self.stored_bytes)
            .saturating_sub(self.delivered_bytes + self.withdrawn_bytes);
        queue.stored += self.stored;
        queue.delivered += self.delivered;
    }
}
