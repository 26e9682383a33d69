//! [`Events`]: the wake-up a discovery source gives the placement watcher.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// A wake-up shared by the placement watcher (which waits on it) and the
/// discovery sources' event threads (which wake it). Wake-ups that come
/// while nobody waits are kept as one: the watcher looks at everything
/// again, so it never needs to know how many changes there were.
#[derive(Clone, Default)]
pub(crate) struct Events(Arc<Shared>);

#[derive(Default)]
struct Shared {
    pending: Mutex<bool>,
    woken: Condvar,
    closed: AtomicBool,
}

impl Events {
    /// A new wake-up, open, with nothing pending.
    pub fn new() -> Events {
        Events::default()
    }

    /// Says that placement may have changed.
    pub fn wake(&self) {
        *self.0.pending.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.0.woken.notify_all();
    }

    /// Waits up to `timeout` for a wake-up; true if there was one (since
    /// the last wait), which it consumes.
    pub fn wait(&self, timeout: Duration) -> bool {
        let pending = self.0.pending.lock().unwrap_or_else(|p| p.into_inner());
        let (mut pending, _) = self
            .0
            .woken
            .wait_timeout_while(pending, timeout, |p| !*p)
            .unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *pending)
    }

    /// Tells the sources' event threads to end: the watcher is gone.
    pub fn close(&self) {
        self.0.closed.store(true, Ordering::Relaxed);
    }

    /// Whether the watcher is gone (an event thread then ends).
    pub fn is_closed(&self) -> bool {
        self.0.closed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_wake_up_is_kept_until_waited_for_and_counted_once() {
        let e = Events::new();
        assert!(!e.wait(Duration::from_millis(1)));
        e.wake();
        e.wake();
        assert!(e.wait(Duration::from_millis(1)));
        assert!(!e.wait(Duration::from_millis(1)));
    }

    #[test]
    fn a_wake_up_from_another_thread_ends_the_wait() {
        let e = Events::new();
        let other = e.clone();
        let started = Instant::now();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            other.wake();
        });
        assert!(e.wait(Duration::from_secs(10)));
        assert!(started.elapsed() < Duration::from_secs(10));
        t.join().unwrap();
        assert!(!e.is_closed());
        e.close();
        assert!(e.is_closed());
    }
}
