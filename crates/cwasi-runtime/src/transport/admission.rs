//! Admission, shared by the servers of the local and direct transports: a
//! bound on the calls that run at once, and a budget for the warnings that
//! refused peers cause, so that a flood of bad connections cannot flood the
//! log too.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// A counting semaphore bounding concurrent calls.
pub(crate) struct Slots {
    free: Mutex<usize>,
    cv: Condvar,
}

impl Slots {
    /// `n` slots (at least one).
    pub fn new(n: usize) -> Slots {
        Slots {
            free: Mutex::new(n.max(1)),
            cv: Condvar::new(),
        }
    }

    /// Takes a slot, waiting for one at most `wait`; `false` if none freed.
    pub fn acquire(&self, wait: Duration) -> bool {
        let guard = self.free.lock().unwrap_or_else(|p| p.into_inner());
        let (mut free, _) = self
            .cv
            .wait_timeout_while(guard, wait, |f| *f == 0)
            .unwrap_or_else(|p| p.into_inner());
        if *free == 0 {
            return false;
        }
        *free -= 1;
        true
    }

    /// Gives a slot back.
    pub fn release(&self) {
        *self.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.cv.notify_one();
    }
}

/// Warnings about refused peers, at most [`WarnBudget::PER_WINDOW`] per
/// window: a flood of bad connections must not flood the log too.
#[derive(Default)]
pub(crate) struct WarnBudget(Mutex<Option<WarnWindow>>);

struct WarnWindow {
    started: Instant,
    logged: u32,
    suppressed: u64,
}

impl WarnBudget {
    const PER_WINDOW: u32 = 10;
    const WINDOW: Duration = Duration::from_secs(10);

    /// `Some(n)` if a warning may be logged now, with `n` the warnings
    /// suppressed before it; `None` if this one is suppressed.
    pub fn allow(&self) -> Option<u64> {
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let window = w.get_or_insert(WarnWindow {
            started: now,
            logged: 0,
            suppressed: 0,
        });
        if now.duration_since(window.started) >= Self::WINDOW {
            window.started = now;
            window.logged = 0;
        }
        if window.logged >= Self::PER_WINDOW {
            window.suppressed += 1;
            return None;
        }
        window.logged += 1;
        Some(std::mem::take(&mut window.suppressed))
    }
}
