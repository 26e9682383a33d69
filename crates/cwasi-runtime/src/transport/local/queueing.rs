//! [`QueueSignal`]: what a local server said about its queue, as one
//! caller heard it. Every answer through the call slot says how long its
//! request waited for one of the server's call slots (`RESP_QUEUED_US`).
//! Over the caller's threshold, the server counts as saturated: calls
//! that would wait there spill to the route's next path. That catches the
//! load other callers put on the server, which the route's own count of
//! its calls cannot see.
//!
//! A saturated server gets no calls from this caller, so it would never be
//! heard again: every [`RECHECK`], one call (the first to claim it) goes to
//! it anyway, asking not to be queued. A server that is still full
//! declines it at once (nothing ran, and the route spills the call); one
//! with a free slot runs it, and its answer says the queue has drained.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a saturated server is left alone before one call checks on it.
pub const RECHECK: Duration = Duration::from_millis(100);

/// The last queueing delay heard from one server, against a threshold.
pub(crate) struct QueueSignal {
    /// Over this many microseconds of queueing, the server is saturated;
    /// `u32::MAX`: never.
    threshold_us: u32,
    /// The queueing delay of the last answer, in microseconds.
    last_us: AtomicU32,
    /// When it was heard (or a recheck was claimed), in microseconds on
    /// [`now_us`]'s clock; kept only while the server queues, so a warm
    /// call that did not queue reads no clock.
    heard_at: AtomicU64,
    /// A recheck was claimed and no call has been sent as one yet.
    recheck: AtomicBool,
}

/// Microseconds since the first use of this clock in this process.
fn now_us() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

impl QueueSignal {
    /// A signal that says saturated over `threshold` of queueing (`None`:
    /// never).
    pub fn new(threshold: Option<Duration>) -> QueueSignal {
        let threshold_us = threshold.map_or(u32::MAX, |t| {
            u32::try_from(t.as_micros()).unwrap_or(u32::MAX - 1)
        });
        QueueSignal {
            threshold_us,
            last_us: AtomicU32::new(0),
            heard_at: AtomicU64::new(0),
            recheck: AtomicBool::new(false),
        }
    }

    /// Notes the queueing delay `queued_us` of an answer.
    pub fn heard(&self, queued_us: u32) {
        let before = self.last_us.load(Ordering::Relaxed);
        if queued_us == 0 && before == 0 {
            return;
        }
        self.last_us.store(queued_us, Ordering::Relaxed);
        if queued_us > self.threshold_us {
            self.heard_at.store(now_us(), Ordering::Relaxed);
        }
    }

    /// Whether calls should not go to the server now: its last answer
    /// queued over the threshold, less than [`RECHECK`] ago. Once that is
    /// older, one caller claims the recheck (and is told to go), and the
    /// others keep away until its answer comes or another [`RECHECK`]
    /// passes.
    pub fn saturated(&self) -> bool {
        if self.last_us.load(Ordering::Relaxed) <= self.threshold_us {
            return false;
        }
        let at = self.heard_at.load(Ordering::Relaxed);
        let now = now_us();
        if now.saturating_sub(at) < RECHECK.as_micros() as u64 {
            return true;
        }
        let claimed = self
            .heard_at
            .compare_exchange(at, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
        if claimed {
            self.recheck.store(true, Ordering::Relaxed);
        }
        !claimed
    }

    /// Whether the next call is the recheck (which asks the server not to
    /// queue it); true once per claimed recheck.
    pub fn take_recheck(&self) -> bool {
        self.recheck.load(Ordering::Relaxed) && self.recheck.swap(false, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queueing_over_the_threshold_saturates_until_a_recheck_hears_it_drained() {
        let s = QueueSignal::new(Some(Duration::from_millis(1)));
        assert!(!s.saturated(), "nothing heard yet");
        s.heard(0);
        s.heard(999);
        assert!(!s.saturated(), "under the threshold");
        s.heard(1_001);
        assert!(s.saturated(), "over the threshold");
        assert!(s.saturated(), "still, within the recheck interval");
        assert!(!s.take_recheck(), "no recheck claimed yet");
        std::thread::sleep(RECHECK + Duration::from_millis(5));
        assert!(!s.saturated(), "one call claims the recheck");
        assert!(s.saturated(), "the others keep away meanwhile");
        assert!(s.take_recheck(), "the next call is the recheck");
        assert!(!s.take_recheck(), "once");
        s.heard(u32::MAX);
        assert!(s.saturated(), "declined: still full");
        std::thread::sleep(RECHECK + Duration::from_millis(5));
        assert!(!s.saturated(), "the next recheck");
        s.heard(0);
        assert!(!s.saturated(), "the recheck found the queue drained");
    }

    #[test]
    fn without_a_threshold_nothing_saturates() {
        let s = QueueSignal::new(None);
        s.heard(u32::MAX);
        assert!(!s.saturated());
    }
}
