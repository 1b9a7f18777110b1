//! What this server knows of registered clients (protection, by id), so that the caller and
//! destination checks of a round's requests need no round trip to the database. Servers
//! sharing the database keep it true with the `client_changes` counter (migration 0003):
//! account deletions and protection changes raise it in their transaction, each round reads
//! it with its `BEGIN`, and a round that finds it moved starts from nothing. A client not
//! known is looked up (a registration through another server is found then). Anything this
//! server undoes (a failed request, a rolled-back round) also starts it from nothing, so that
//! nothing it learnt from its own undone writes stays. I/O-free.

use std::collections::HashMap;

use crate::protocol::{ClientId, Protection};

#[derive(Debug, Default)]
pub(super) struct KnownClients {
    clients: HashMap<ClientId, Protection>,
    /// The `client_changes` counter they were read under; `None` before the first round.
    version: Option<i64>,
}

impl KnownClients {
    /// A round began with the counter at `version`.
    pub fn round_began(&mut self, version: i64) {
        if self.version != Some(version) {
            self.clients.clear();
            self.version = Some(version);
        }
    }

    pub fn get(&self, id: ClientId) -> Option<Protection> {
        self.clients.get(&id).copied()
    }

    /// `id` is registered with `protection`, as read in this round.
    pub fn learn(&mut self, id: ClientId, protection: Protection) {
        self.clients.insert(id, protection);
    }

    /// `id` changed in this round (deleted, protection changed): read it again.
    pub fn changed(&mut self, id: ClientId) {
        self.clients.remove(&id);
    }

    /// Something was undone: nothing learnt may stay.
    pub fn forget_all(&mut self) {
        self.clients.clear();
        self.version = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: ClientId = ClientId([1; 16]);

    #[test]
    fn what_is_known_lasts_while_the_counter_stands_still() {
        let mut known = KnownClients::default();
        known.round_began(3);
        known.learn(ALICE, Protection::Open);
        known.round_began(3);
        assert_eq!(known.get(ALICE), Some(Protection::Open));
        known.round_began(4);
        assert_eq!(known.get(ALICE), None, "a change somewhere: start again");
        known.learn(ALICE, Protection::Protected);
        known.changed(ALICE);
        assert_eq!(known.get(ALICE), None);
        known.learn(ALICE, Protection::Open);
        known.forget_all();
        known.round_began(4);
        assert_eq!(
            known.get(ALICE),
            None,
            "forgotten even under the same counter"
        );
    }
}
