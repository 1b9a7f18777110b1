//! Sharing the event loop between bulk transfers and everyone else.
//!
//! A client streaming a 4 GiB file could take every turn's time, and with it the CPU and
//! the disk that the other clients' small requests need. While other requests are being
//! served, bulk work (an upload's content, a spooled reply) may use at most a set share of
//! the loop's time: after each bulk slice, bulk waits in proportion to what the slice took.
//! With no one else active, bulk transfers run at full speed. The pacer also sizes the
//! steps in which an upload is written back early: large while the disk is free, small while
//! others' log flushes would queue behind them.

use std::time::{Duration, Instant};

/// Bulk work waits this many times as long as it ran, while others are active: it gets
/// 1 / (1 + this) of the loop's time.
const WAIT_PER_BULK_TIME: u32 = 3;
/// Other clients count as active for this long after their last request.
const ACTIVE_WINDOW: Duration = Duration::from_millis(5);
/// The disk counts as free once no other request has been served for this long: longer
/// than the others' pauses while their log flush is slow.
const QUIET_FOR_DISK: Duration = Duration::from_millis(50);
/// Bytes of an upload written back at once while the disk is free: few, large flushes.
const WRITEBACK_STEP_FREE: u64 = 8 << 20;
/// The same while others use the disk: their log flushes queue behind each step (a 1 GiB
/// final flush held them for 0.4 s), so steps stay small.
const WRITEBACK_STEP_SHARED: u64 = 1 << 20;

#[derive(Debug)]
pub(crate) struct BulkPacer {
    /// When a request other than a bulk transfer was last served.
    last_request: Option<Instant>,
    /// Bulk work waits until then while others are active.
    resume_at: Instant,
}

impl BulkPacer {
    pub fn new(now: Instant) -> BulkPacer {
        BulkPacer {
            last_request: None,
            resume_at: now,
        }
    }

    /// A request other than a bulk transfer was served at `now`.
    pub fn saw_request(&mut self, now: Instant) {
        self.last_request = Some(now);
    }

    fn others_active(&self, now: Instant) -> bool {
        self.quiet_for(now) < ACTIVE_WINDOW
    }

    /// How many bytes an upload lets arrive between early writebacks at `now`.
    pub fn writeback_step(&self, now: Instant) -> u64 {
        if self.quiet_for(now) >= QUIET_FOR_DISK {
            WRITEBACK_STEP_FREE
        } else {
            WRITEBACK_STEP_SHARED
        }
    }

    fn quiet_for(&self, now: Instant) -> Duration {
        self.last_request
            .map_or(Duration::MAX, |at| now.saturating_duration_since(at))
    }

    /// Whether bulk work may run at `now`.
    pub fn may_run(&self, now: Instant) -> bool {
        now >= self.resume_at || !self.others_active(now)
    }

    /// When bulk work that may not run now may run: when its wait ends, or when the others
    /// have gone quiet.
    pub fn wake_at(&self) -> Instant {
        let quiet_at = self
            .last_request
            .map_or(self.resume_at, |at| at + ACTIVE_WINDOW);
        self.resume_at.min(quiet_at)
    }

    /// Bulk work ran for `time`, ending at `now`. A wait already earned is never shortened.
    pub fn ran(&mut self, time: Duration, now: Instant) {
        if !time.is_zero() && self.others_active(now) {
            self.resume_at = self.resume_at.max(now + time * WAIT_PER_BULK_TIME);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pacer and a clock: `at(n)` is n ms after the pacer's start.
    fn pacer() -> (BulkPacer, impl Fn(u64) -> Instant) {
        let start = Instant::now();
        (BulkPacer::new(start), move |ms| {
            start + Duration::from_millis(ms)
        })
    }

    #[test]
    fn bulk_runs_freely_while_no_one_else_is_active() {
        let (mut pacer, at) = pacer();
        pacer.ran(Duration::from_millis(10), at(10));
        assert!(pacer.may_run(at(10)));
    }

    #[test]
    fn bulk_waits_in_proportion_to_its_work_while_others_are_active() {
        let (mut pacer, at) = pacer();
        pacer.saw_request(at(1));
        pacer.ran(Duration::from_millis(1), at(2));
        assert!(!pacer.may_run(at(3)));
        pacer.saw_request(at(4));
        assert!(!pacer.may_run(at(4)));
        assert_eq!(pacer.wake_at(), at(5));
        assert!(pacer.may_run(at(5)));
    }

    #[test]
    fn a_short_slice_never_shortens_a_longer_wait() {
        let (mut pacer, at) = pacer();
        pacer.saw_request(at(0));
        pacer.ran(Duration::from_millis(3), at(3));
        pacer.ran(Duration::from_millis(1), at(4));
        pacer.saw_request(at(10));
        assert!(!pacer.may_run(at(11)));
        assert!(pacer.may_run(at(12)));
    }

    #[test]
    fn bulk_resumes_once_the_others_go_quiet() {
        let (mut pacer, at) = pacer();
        pacer.saw_request(at(0));
        pacer.ran(Duration::from_millis(4), at(4));
        assert!(!pacer.may_run(at(4)));
        assert_eq!(pacer.wake_at(), at(5));
        assert!(pacer.may_run(at(5)));
    }

    #[test]
    fn writeback_steps_are_large_only_after_a_longer_quiet() {
        let (mut pacer, at) = pacer();
        assert_eq!(pacer.writeback_step(at(0)), WRITEBACK_STEP_FREE);
        pacer.saw_request(at(0));
        assert!(pacer.may_run(at(10)));
        assert_eq!(pacer.writeback_step(at(10)), WRITEBACK_STEP_SHARED);
        assert_eq!(pacer.writeback_step(at(50)), WRITEBACK_STEP_FREE);
    }
}
