//! Bounded spinning on shared memory, and the policy that keeps it from
//! making the machine slower.
//!
//! A waiter spins for at most its budget before it sleeps in `futex`. The
//! default budget, [`DEFAULT_SPIN`](crate::config::DEFAULT_SPIN), is about what a sleep and a wake-up
//! cost across two vCPUs (40 to 50 µs measured on the 2-vCPU machines this
//! project runs on; see `docs/benchmarks.md`): spinning for as long as a
//! wake-up would cost never loses more than a factor of two against the
//! best choice made in hindsight, and it catches every answer that comes
//! faster than a wake-up could.
//!
//! Spinning takes a core. A process spins on at most one thread fewer than
//! the machine has cores (at least one), so that the peer and the rest of
//! the process keep a core to run on; a waiter that finds the spinners at
//! that limit sleeps at once. Under a fan-out of many concurrent calls, all
//! but one waiter go straight to sleep.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How often a spinner checks its socket for a hang-up.
const LIVENESS_EVERY: Duration = Duration::from_millis(1);

/// Threads of this process spinning now.
static SPINNERS: AtomicUsize = AtomicUsize::new(0);

/// The most threads of this process that may spin at once.
fn max_spinners() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(|| {
        std::thread::available_parallelism()
            .map(|n| n.get().saturating_sub(1).max(1))
            .unwrap_or(1)
    })
}

/// A place among the spinners, given back on drop.
struct SpinPermit;

impl SpinPermit {
    fn take() -> Option<SpinPermit> {
        let max = max_spinners();
        SPINNERS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| SpinPermit)
    }
}

impl Drop for SpinPermit {
    fn drop(&mut self) {
        SPINNERS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How a spin ended.
pub(crate) enum Spun<T> {
    /// `check` found what was waited for.
    Found(T),
    /// `stop` said to stop (the peer hung up).
    Stopped,
    /// The budget ran out, or spinning was not allowed: sleep instead.
    GaveUp,
}

/// Spins on `check` for up to `budget` (and not past `until`), asking
/// `stop` about once a millisecond whether to stop. Returns at once with
/// `GaveUp` when the budget is zero or the spinners are at their limit.
pub(crate) fn spin_until<T>(
    budget: Duration,
    until: Instant,
    mut check: impl FnMut() -> Option<T>,
    mut stop: impl FnMut() -> bool,
) -> Spun<T> {
    if let Some(found) = check() {
        return Spun::Found(found);
    }
    if budget.is_zero() {
        return Spun::GaveUp;
    }
    let Some(_permit) = SpinPermit::take() else {
        return Spun::GaveUp;
    };
    let start = Instant::now();
    let end = (start + budget).min(until);
    let mut next_check = start + LIVENESS_EVERY;
    loop {
        for _ in 0..64 {
            if let Some(found) = check() {
                return Spun::Found(found);
            }
            std::hint::spin_loop();
        }
        let now = Instant::now();
        if now >= end {
            return Spun::GaveUp;
        }
        if now >= next_check {
            if stop() {
                return Spun::Stopped;
            }
            next_check = now + LIVENESS_EVERY;
        }
    }
}

/// Whether a waiter should spin, learned from how its recent waits went:
/// spinning pays off only when answers (or the next request) come within
/// the budget. After a wait that had to sleep, the waiter sleeps at once
/// for a while, and tries spinning again every so often.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpinHabit {
    cold: u32,
}

/// After how many sleeping waits a cold waiter tries spinning again.
const RETRY_SPIN_EVERY: u32 = 16;

impl SpinHabit {
    /// A waiter that starts out spinning.
    pub fn new() -> SpinHabit {
        SpinHabit { cold: 0 }
    }

    /// The budget to spin for this wait: `budget`, or zero while cold.
    pub fn budget(&self, budget: Duration) -> Duration {
        if self.cold == 0 || self.cold.is_multiple_of(RETRY_SPIN_EVERY) {
            budget
        } else {
            Duration::ZERO
        }
    }

    /// Records how long the wait took against the budget.
    pub fn learn(&mut self, waited: Duration, budget: Duration) {
        if waited <= budget {
            self.cold = 0;
        } else {
            self.cold = self.cold.wrapping_add(1).max(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spinning_finds_stops_and_gives_up() {
        let far = Instant::now() + Duration::from_secs(10);
        let mut n = 0;
        let found = spin_until(
            Duration::from_secs(5),
            far,
            || {
                n += 1;
                (n == 1000).then_some(n)
            },
            || false,
        );
        assert!(matches!(found, Spun::Found(1000)));
        let t = Instant::now();
        let gave_up = spin_until(Duration::from_millis(5), far, || None::<()>, || false);
        assert!(matches!(gave_up, Spun::GaveUp));
        assert!(t.elapsed() >= Duration::from_millis(5));
        let stopped = spin_until(Duration::from_secs(5), far, || None::<()>, || true);
        assert!(matches!(stopped, Spun::Stopped));
        assert!(matches!(
            spin_until(Duration::ZERO, far, || None::<()>, || false),
            Spun::GaveUp
        ));
    }

    #[test]
    fn a_waiter_that_keeps_sleeping_stops_spinning_and_tries_again_later() {
        let budget = Duration::from_micros(50);
        let mut habit = SpinHabit::new();
        assert_eq!(habit.budget(budget), budget);
        habit.learn(Duration::from_millis(3), budget);
        assert_eq!(habit.budget(budget), Duration::ZERO);
        let tries = (0..RETRY_SPIN_EVERY * 2)
            .filter(|_| {
                let spun = !habit.budget(budget).is_zero();
                habit.learn(Duration::from_millis(3), budget);
                spun
            })
            .count();
        assert_eq!(tries, 2);
        habit.learn(Duration::from_micros(3), budget);
        assert_eq!(habit.budget(budget), budget);
    }
}
