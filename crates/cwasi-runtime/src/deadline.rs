//! Time in one place: the [`Deadline`] every call carries through every hop,
//! and the named grace periods the transports add to it.
//!
//! A deadline is set once, by the entry (its entry timeout) or by an
//! incoming request (what its caller had left), and passed down: a nested
//! call gets the earlier of its own call timeout and what is left of its
//! caller's deadline, so a chain of calls never outlives its first caller.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The instant by which a call must be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(Instant);

/// Longest time a deadline can lie ahead (about 30 years): later ones are
/// clamped to it, so that `Instant` arithmetic never overflows.
const FAR: Duration = Duration::from_secs(1 << 30);

impl Deadline {
    /// `timeout` from now.
    pub fn after(timeout: Duration) -> Deadline {
        Deadline::at(Instant::now(), timeout)
    }

    /// `timeout` from `now` (a caller that has read the clock already).
    pub fn at(now: Instant, timeout: Duration) -> Deadline {
        Deadline(now.checked_add(timeout.min(FAR)).unwrap_or(now))
    }

    /// The deadline of a call made now, with its own `timeout`, by a caller
    /// whose deadline is `self`: whichever comes first.
    pub fn nested(self, timeout: Duration) -> Deadline {
        self.nested_at(Instant::now(), timeout)
    }

    /// [`Deadline::nested`] for a call made at `now` (a caller that has read
    /// the clock already).
    pub fn nested_at(self, now: Instant, timeout: Duration) -> Deadline {
        self.min(Deadline::at(now, timeout))
    }

    /// Time left, zero once passed.
    pub fn remaining(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// Whether the deadline has passed.
    pub fn is_expired(self) -> bool {
        Instant::now() >= self.0
    }

    /// The instant itself.
    pub fn instant(self) -> Instant {
        self.0
    }

    /// The deadline as wall-clock milliseconds since the Unix epoch, for
    /// peers on other nodes (whose monotonic clocks differ from ours).
    pub fn to_unix_ms(self) -> u64 {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        (wall + self.remaining()).as_millis() as u64
    }

    /// A deadline given as wall-clock milliseconds since the Unix epoch; one
    /// in the past is already expired.
    pub fn from_unix_ms(ms: u64) -> Deadline {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Deadline::after(Duration::from_millis(ms).saturating_sub(wall))
    }
}

/// A clock that a background thread reads once per tick: what an untimed
/// call computes its callee's deadline from, with one atomic load instead
/// of a clock read (about 25 ns here, a tenth of a 64 B embedded call).
///
/// Deadlines are enforced by the engine's epoch, one tick at a time, so a
/// reading up to a tick old loses nothing. It is never ahead of the real
/// clock: a deadline computed from it can only come early, by the tick.
/// Once its thread has stopped, it reads the real clock.
#[derive(Clone)]
pub(crate) struct TickClock(Arc<TickClockInner>);

struct TickClockInner {
    base: Instant,
    /// The last reading, in nanoseconds after `base`.
    last_ns: AtomicU64,
    ticking: AtomicBool,
}

impl TickClock {
    /// A clock that reads the real clock until [`TickClock::tick`] is called.
    pub fn new() -> TickClock {
        TickClock(Arc::new(TickClockInner {
            base: Instant::now(),
            last_ns: AtomicU64::new(0),
            ticking: AtomicBool::new(false),
        }))
    }

    /// The time as of the last tick, or the real time if nothing ticks.
    pub fn now(&self) -> Instant {
        if !self.0.ticking.load(Ordering::Acquire) {
            return Instant::now();
        }
        self.0.base + Duration::from_nanos(self.0.last_ns.load(Ordering::Relaxed))
    }

    /// Reads the real clock, for [`TickClock::now`] until the next tick.
    pub fn tick(&self) {
        let ns = self.0.base.elapsed().as_nanos() as u64;
        self.0.last_ns.fetch_max(ns, Ordering::Relaxed);
        self.0.ticking.store(true, Ordering::Release);
    }

    /// Stops serving ticks: [`TickClock::now`] reads the real clock again.
    pub fn stop(&self) {
        self.0.ticking.store(false, Ordering::Release);
    }
}

/// How long a caller waits past its deadline for the callee's own timeout
/// error to arrive, before it reports the timeout itself: the callee is
/// interrupted at the same deadline, and its answer is more precise.
pub const ANSWER_GRACE: Duration = Duration::from_secs(2);

/// How long a local connection may take to be opened, and one frame to be
/// written, before the peer counts as unreachable.
pub const LOCAL_IO_TIMEOUT: Duration = Duration::from_secs(5);

/// How long each phase of a request to a local server may take once the
/// request has begun: the rest of its header, its target name, an inline
/// payload, each progress count of a pipelined payload (and the first frame
/// of a connection). Peers on one node send a phase in microseconds; one
/// that stalls this long is cut off with an error frame.
pub const LOCAL_PHASE_TIMEOUT: Duration = Duration::from_secs(2);

/// The slowest a request's payload may arrive at, by default, in bytes per
/// second (`cwasi serve --min-payload-kib-per-sec`): 256 KiB/s, 2 Mbit/s.
pub const DEFAULT_MIN_PAYLOAD_RATE: u64 = 256 << 10;

/// How long a payload of `len` bytes may take to arrive at a server, from
/// its request's header on: one phase, plus its length at `min_rate` bytes
/// per second. A slow sender that keeps each phase alive with a trickle is
/// cut off at this budget.
pub fn payload_budget(len: u64, min_rate: u64) -> Duration {
    LOCAL_PHASE_TIMEOUT + Duration::from_secs_f64(len as f64 / min_rate.max(1) as f64)
}

/// How long past the call timeout a broker consumer holds a request before
/// another consumer may take it over (its lease), and how long a request's
/// payload key outlives the request's deadline: nodes' clocks may differ by
/// this much.
pub const LEASE_GRACE: Duration = Duration::from_secs(5);

/// One broker round trip that is not a blocking wait.
pub const BROKER_OP_TIMEOUT: Duration = Duration::from_secs(5);

/// Opening a connection to the broker.
pub const BROKER_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a reply waits in the broker for its caller.
pub const REPLY_TTL: Duration = Duration::from_secs(120);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nested_deadline_never_outlives_its_caller() {
        let outer = Deadline::after(Duration::from_millis(200));
        assert_eq!(outer.nested(Duration::from_secs(30)), outer);
        let inner = outer.nested(Duration::from_millis(10));
        assert!(inner < outer);
        assert!(outer.remaining() <= Duration::from_millis(200));
    }

    #[test]
    fn huge_timeouts_do_not_overflow() {
        let d = Deadline::after(Duration::MAX);
        assert!(d.remaining() > Duration::from_secs(3600));
        assert!(!d.is_expired());
    }

    #[test]
    fn the_tick_clock_is_never_ahead_and_reads_the_real_clock_when_stopped() {
        let clock = TickClock::new();
        let before = Instant::now();
        assert!(
            clock.now() >= before,
            "an unticked clock reads the real clock"
        );
        clock.tick();
        let ticked = clock.now();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(clock.now(), ticked, "between ticks the reading stands");
        assert!(ticked <= Instant::now());
        clock.tick();
        assert!(clock.now() >= ticked + Duration::from_millis(20));
        clock.stop();
        let stopped = clock.now();
        assert!(stopped >= before + Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(2));
        assert!(
            clock.now() > stopped,
            "a stopped clock reads the real clock"
        );
    }

    #[test]
    fn wall_clock_round_trip() {
        let d = Deadline::after(Duration::from_secs(10));
        let back = Deadline::from_unix_ms(d.to_unix_ms());
        let diff = back.remaining().abs_diff(d.remaining());
        assert!(diff < Duration::from_millis(50), "{diff:?}");
        assert!(Deadline::from_unix_ms(1).is_expired());
    }
}
