//! Who is online (protocol §E8): the ids a connection is subscribed as (§E5), or has made a
//! request as within the last minute. I/O-free, the time passed in; owned by `Core` and lent to the handlers, which
//! record each served caller and read it for the account list.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::protocol::{ClientId, Presence};

/// How long after its last request an id counts as online.
pub const ONLINE_WINDOW: Duration = Duration::from_secs(60);

/// When each recently active id made its last request.
#[derive(Debug, Default)]
pub struct PresenceTracker {
    last_request: HashMap<ClientId, Instant>,
    /// How many connections are subscribed as each id.
    subscribed: HashMap<ClientId, usize>,
    /// When ids silent for a whole window are next dropped: the map holds only the ids
    /// active in about the last two windows.
    next_sweep: Option<Instant>,
}

impl PresenceTracker {
    /// A connection made a request as `id` at `now`, and was served as it.
    pub fn saw(&mut self, id: ClientId, now: Instant) {
        self.last_request.insert(id, now);
        if self.next_sweep.is_none_or(|at| at <= now) {
            self.last_request
                .retain(|_, seen| now.saturating_duration_since(*seen) <= ONLINE_WINDOW);
            self.next_sweep = Some(now + ONLINE_WINDOW);
        }
    }

    /// A connection subscribed as `id`.
    pub fn subscribed(&mut self, id: ClientId) {
        *self.subscribed.entry(id).or_default() += 1;
    }

    /// A connection subscribed as `id` is subscribed no more.
    pub fn unsubscribed(&mut self, id: ClientId) {
        if let Some(count) = self.subscribed.get_mut(&id) {
            *count -= 1;
            if *count == 0 {
                self.subscribed.remove(&id);
            }
        }
    }

    /// Whether a connection is subscribed as `id`, or made a request as it within
    /// [`ONLINE_WINDOW`] before `now`.
    pub fn presence(&self, id: ClientId, now: Instant) -> Presence {
        if self.subscribed.contains_key(&id) {
            return Presence::Online;
        }
        match self.last_request.get(&id) {
            Some(seen) if now.saturating_duration_since(*seen) <= ONLINE_WINDOW => Presence::Online,
            _ => Presence::Offline,
        }
    }

    /// The account is gone, and its subscriptions with it.
    pub fn forget(&mut self, id: ClientId) {
        self.last_request.remove(&id);
        self.subscribed.remove(&id);
    }

    /// How many ids are remembered.
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.last_request.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: ClientId = ClientId([1; 16]);
    const BOB: ClientId = ClientId([2; 16]);

    #[test]
    fn a_subscribed_id_is_online_while_any_of_its_subscriptions_lasts() {
        let long_after = Instant::now() + ONLINE_WINDOW * 10;
        let mut tracker = PresenceTracker::default();
        tracker.subscribed(ALICE);
        tracker.subscribed(ALICE);
        tracker.unsubscribed(ALICE);
        assert_eq!(tracker.presence(ALICE, long_after), Presence::Online);
        tracker.unsubscribed(ALICE);
        assert_eq!(tracker.presence(ALICE, long_after), Presence::Offline);
        tracker.subscribed(BOB);
        tracker.forget(BOB);
        tracker.unsubscribed(BOB);
        assert_eq!(tracker.presence(BOB, long_after), Presence::Offline);
    }

    #[test]
    fn an_id_is_online_for_a_minute_after_its_last_request() {
        let start = Instant::now();
        let mut tracker = PresenceTracker::default();
        assert_eq!(tracker.presence(ALICE, start), Presence::Offline);
        tracker.saw(ALICE, start);
        assert_eq!(tracker.presence(ALICE, start), Presence::Online);
        assert_eq!(tracker.presence(BOB, start), Presence::Offline);
        let edge = start + ONLINE_WINDOW;
        assert_eq!(tracker.presence(ALICE, edge), Presence::Online);
        let after = edge + Duration::from_millis(1);
        assert_eq!(tracker.presence(ALICE, after), Presence::Offline);
        // A new request starts the minute again.
        tracker.saw(ALICE, after);
        assert_eq!(
            tracker.presence(ALICE, after + ONLINE_WINDOW),
            Presence::Online
        );
        tracker.forget(ALICE);
        assert_eq!(tracker.presence(ALICE, after), Presence::Offline);
    }

    #[test]
    fn silent_ids_are_dropped_once_a_window_has_passed() {
        let start = Instant::now();
        let mut tracker = PresenceTracker::default();
        tracker.saw(ALICE, start);
        tracker.saw(BOB, start + Duration::from_secs(30));
        assert_eq!(tracker.remembered(), 2);
        // Alice has been silent longer than a window at the next sweep; Bob has not.
        let sweep = start + ONLINE_WINDOW + Duration::from_secs(1);
        tracker.saw(BOB, sweep);
        assert_eq!(tracker.remembered(), 1);
        assert_eq!(tracker.presence(ALICE, sweep), Presence::Offline);
        assert_eq!(tracker.presence(BOB, sweep), Presence::Online);
    }
}
