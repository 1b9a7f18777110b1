//! What this server knows of clients, so that the caller and destination checks of a round's
//! requests need no round trip to the database, and list replies no reading of every client.
//! Servers sharing the database keep it true with the two counters of `client_changes`
//! (migrations 0003 and 0004), raised in the transactions that change clients and read by
//! every round with its `BEGIN`:
//!
//! - `Version` (account deletions, protection changes): a round that finds it moved starts
//!   the checks from nothing. A client not known is looked up (a registration through
//!   another server is found then). Ids looked up and not found are kept too (a bounded
//!   number): ids are drawn at random by the registering server, so a client cannot hold one
//!   before its registration commits, and one asking under an id never registered (a
//!   flood of them, say) costs nothing after the first time.
//! - `Listed` (registrations, account deletions): the client list last read serves list
//!   replies until a round finds it moved.
//!
//! Nothing learnt from this server's own undone writes may stay: a rolled-back round starts
//! both from nothing; a failed request that changed clients forgets what was learnt during
//! it (what was known before it still holds once its writes are undone, since every write
//! forgets the entry it changes). I/O-free.

use std::collections::{HashMap, HashSet};

use crate::protocol::{ClientId, Content, Protection};
use crate::store::directory::Directory;

/// Ids known not to be registered, at most: past it, they are forgotten and learnt again.
const UNREGISTERED_KEPT: usize = 4096;

/// The two counters, as read with a round's `BEGIN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Counters {
    pub version: i64,
    pub listed: i64,
}

impl Counters {
    /// The `BEGIN`'s reading: both counters in one text field, `"<Version> <Listed>"`.
    pub fn parse(text: &str) -> Option<Counters> {
        let (version, listed) = text.split_once(' ')?;
        Some(Counters {
            version: version.parse().ok()?,
            listed: listed.parse().ok()?,
        })
    }
}

/// What the caller and destination checks know of an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Known {
    Registered(Protection),
    Unregistered,
}

/// Which counters a round raises with its COMMIT.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Raise {
    /// A protection changed or an account was deleted.
    pub version: bool,
    /// A client was registered or an account deleted.
    pub listed: bool,
}

impl Raise {
    /// The COMMIT, with the counters' update riding along: raised last, so that the
    /// counters' row is held for the COMMIT alone and two servers' rounds never wait on each
    /// other holding it.
    pub fn commit(self) -> &'static str {
        match (self.version, self.listed) {
            (false, false) => "COMMIT",
            (true, false) => "UPDATE client_changes SET Version = Version + 1; COMMIT",
            (false, true) => "UPDATE client_changes SET Listed = Listed + 1; COMMIT",
            (true, true) => {
                "UPDATE client_changes SET Version = Version + 1, Listed = Listed + 1; COMMIT"
            }
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct KnownClients {
    clients: HashMap<ClientId, Protection>,
    unregistered: HashSet<ClientId>,
    /// The counters as the round began; `None` before the first round or after an undo.
    counters: Option<Counters>,
    list: Option<KnownList>,
    /// What the request being served has learnt, forgotten if it is undone.
    request: Option<Learnt>,
}

/// What a request learnt, and whether it changed clients.
#[derive(Debug, Default)]
struct Learnt {
    ids: Vec<ClientId>,
    list: bool,
    changed: bool,
}

/// The client list as read, with each listed client's position.
#[derive(Debug)]
struct KnownList {
    directory: Directory,
    positions: HashMap<ClientId, u64>,
    /// `Listed` as it was read under.
    listed: i64,
}

impl KnownClients {
    /// A round began with the counters at `counters`.
    pub fn round_began(&mut self, counters: Counters) {
        let version = self.counters.map(|known| known.version);
        if version != Some(counters.version) {
            self.clients.clear();
            self.unregistered.clear();
        }
        self.counters = Some(counters);
    }

    pub fn get(&self, id: ClientId) -> Option<Known> {
        if self.unregistered.contains(&id) {
            return Some(Known::Unregistered);
        }
        self.clients
            .get(&id)
            .map(|&protection| Known::Registered(protection))
    }

    /// What a lookup of `id` found in this round.
    pub fn learn(&mut self, id: ClientId, found: Known) {
        if let Some(learnt) = &mut self.request {
            learnt.ids.push(id);
        }
        match found {
            Known::Registered(protection) => {
                self.unregistered.remove(&id);
                self.clients.insert(id, protection);
            }
            Known::Unregistered => {
                if self.unregistered.len() >= UNREGISTERED_KEPT {
                    self.unregistered.clear();
                }
                self.unregistered.insert(id);
            }
        }
    }

    /// `id` changed in this round (deleted, protection changed): read it again.
    pub fn changed(&mut self, id: ClientId) {
        self.note_change();
        self.clients.remove(&id);
    }

    /// The round registered or deleted a client: the list is read again.
    pub fn list_changed(&mut self) {
        self.note_change();
        self.list = None;
    }

    fn note_change(&mut self) {
        if let Some(learnt) = &mut self.request {
            learnt.changed = true;
        }
    }

    /// The list reply for `caller`, if the list known is current.
    pub fn listing(&self, caller: ClientId) -> Option<Content> {
        let listed = self.counters?.listed;
        let list = self.list.as_ref().filter(|list| list.listed == listed)?;
        let except = list.positions.get(&caller).copied();
        Some(list.directory.listing(except))
    }

    /// The list as this round read it.
    pub fn listed(&mut self, directory: Directory, positions: HashMap<ClientId, u64>) {
        if let Some(learnt) = &mut self.request {
            learnt.list = true;
        }
        if let Some(counters) = self.counters {
            self.list = Some(KnownList {
                directory,
                positions,
                listed: counters.listed,
            });
        }
    }

    /// A request begins: what it learns is noted.
    pub fn request_began(&mut self) {
        self.request = Some(Learnt::default());
    }

    /// The request's writes are kept, and so is what it learnt.
    pub fn request_kept(&mut self) {
        self.request = None;
    }

    /// The request's writes are undone: what it learnt may tell of them, if it changed
    /// clients.
    pub fn request_undone(&mut self) {
        let Some(learnt) = self.request.take().filter(|learnt| learnt.changed) else {
            return;
        };
        for id in learnt.ids {
            self.clients.remove(&id);
            self.unregistered.remove(&id);
        }
        if learnt.list {
            self.list = None;
        }
    }

    /// The round was undone: nothing learnt may stay.
    pub fn forget_all(&mut self) {
        self.request = None;
        self.clients.clear();
        self.unregistered.clear();
        self.counters = None;
        self.list = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: ClientId = ClientId([1; 16]);
    const BOB: ClientId = ClientId([2; 16]);

    fn counters(version: i64, listed: i64) -> Counters {
        Counters { version, listed }
    }

    fn list_of(known: &KnownClients, caller: ClientId) -> Option<u64> {
        known.listing(caller).map(|content| content.len())
    }

    #[test]
    fn what_is_known_lasts_while_the_counter_stands_still() {
        let mut known = KnownClients::default();
        known.round_began(counters(3, 0));
        known.learn(ALICE, Known::Registered(Protection::Open));
        known.learn(BOB, Known::Unregistered);
        known.round_began(counters(3, 9));
        assert_eq!(known.get(ALICE), Some(Known::Registered(Protection::Open)));
        assert_eq!(
            known.get(BOB),
            Some(Known::Unregistered),
            "registrations change no check"
        );
        known.round_began(counters(4, 9));
        assert_eq!(known.get(ALICE), None, "a change somewhere: start again");
        assert_eq!(known.get(BOB), None);
        known.learn(ALICE, Known::Registered(Protection::Protected));
        known.changed(ALICE);
        assert_eq!(known.get(ALICE), None);
        known.learn(ALICE, Known::Registered(Protection::Open));
        known.forget_all();
        known.round_began(counters(4, 9));
        assert_eq!(
            known.get(ALICE),
            None,
            "forgotten even under the same counter"
        );
    }

    #[test]
    fn an_undone_request_forgets_what_it_learnt_alone() {
        let mut known = KnownClients::default();
        known.round_began(counters(0, 0));
        known.request_began();
        known.learn(ALICE, Known::Registered(Protection::Open));
        known.request_kept();
        known.request_began();
        known.learn(BOB, Known::Unregistered);
        known.request_undone();
        assert_eq!(
            known.get(BOB),
            Some(Known::Unregistered),
            "it changed no client"
        );
        known.request_began();
        known.list_changed();
        known.learn(BOB, Known::Registered(Protection::Open));
        known.listed(Directory::default(), HashMap::new());
        known.request_undone();
        assert_eq!(known.get(ALICE), Some(Known::Registered(Protection::Open)));
        assert_eq!(known.get(BOB), None, "perhaps its own undone registration");
        assert!(known.listing(ALICE).is_none());
    }

    #[test]
    fn unregistered_ids_kept_are_bounded() {
        let mut known = KnownClients::default();
        known.round_began(counters(0, 0));
        for n in 0..=UNREGISTERED_KEPT as u32 {
            let mut id = [0; 16];
            id[..4].copy_from_slice(&n.to_le_bytes());
            known.learn(ClientId(id), Known::Unregistered);
        }
        assert!(known.unregistered.len() <= UNREGISTERED_KEPT);
        known.learn(BOB, Known::Unregistered);
        known.learn(BOB, Known::Registered(Protection::Open));
        assert_eq!(known.get(BOB), Some(Known::Registered(Protection::Open)));
    }

    #[test]
    fn the_list_serves_until_listed_moves() {
        let mut known = KnownClients::default();
        known.round_began(counters(0, 5));
        assert_eq!(list_of(&known, ALICE), None, "nothing read yet");
        let mut directory = Directory::default();
        directory.insert(1, ALICE, "alice");
        directory.insert(2, BOB, "bob");
        let positions = HashMap::from([(ALICE, 1), (BOB, 2)]);
        known.listed(directory, positions);
        assert_eq!(list_of(&known, ALICE), Some(271), "all but the caller");
        assert_eq!(list_of(&known, ClientId([9; 16])), Some(542));
        known.round_began(counters(1, 5));
        assert_eq!(
            list_of(&known, ALICE),
            Some(271),
            "protection changes leave it"
        );
        known.round_began(counters(1, 6));
        assert_eq!(list_of(&known, ALICE), None, "a registration somewhere");
        known.listed(Directory::default(), HashMap::new());
        known.list_changed();
        assert_eq!(
            list_of(&known, ALICE),
            None,
            "this round's own registration"
        );
    }
}
