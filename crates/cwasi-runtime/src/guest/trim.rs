//! Giving memory back when a served function is idle. A call with a large
//! payload grows the callee instance's linear memory, and a linear memory
//! never shrinks: pooled as it is, the instance would hold what its largest
//! call needed for the life of the server. So a served function has an
//! idle trimmer: once no call has grown an instance beyond
//! `Limits::max_idle_growth_bytes` for `Limits::idle_trim_after`, it drops
//! the pooled instances that did (their memory is unmapped), and asks the C
//! allocator to return the free pages of its heaps. Calls in a burst keep
//! their warm instances; the check costs a call one relaxed atomic add, and
//! only when its instance grew that much.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::function::Function;

/// The thread that trims a served function's pool when it is idle; dropping
/// it stops the thread.
pub(crate) struct IdleTrimmer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// What the trimmer saw of the function's large calls.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Watch {
    /// The count of oversized releases at the last look.
    seen: u64,
    /// The count at the last trim.
    trimmed: u64,
}

impl Watch {
    /// Whether to trim now, given the count now; a look once per idle
    /// period. A count that moved since the last look means a large call in
    /// that period: not idle yet. One that stood still since the last look,
    /// but moved since the last trim, means large calls that are over.
    fn look(&mut self, now: u64) -> bool {
        if now != self.seen {
            self.seen = now;
            return false;
        }
        if now == self.trimmed {
            return false;
        }
        self.trimmed = now;
        true
    }
}

impl IdleTrimmer {
    /// Starts trimming `function`'s pool (`Limits::idle_trim_after` is the
    /// idle period); `None` if the thread cannot be started, which costs
    /// memory only.
    pub fn start(function: Arc<Function>) -> Option<IdleTrimmer> {
        let period = function
            .limits()
            .idle_trim_after
            .max(Duration::from_millis(10));
        let (stop, stopped) = mpsc::channel::<()>();
        let name = function.spec.name.clone();
        let thread = std::thread::Builder::new()
            .name("cwasi-trim".into())
            .spawn(move || {
                let mut watch = Watch::default();
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
                    if watch.look(function.oversized_released()) {
                        trim(&function);
                    }
                }
            });
        match thread {
            Ok(thread) => Some(IdleTrimmer {
                stop: Some(stop),
                thread: Some(thread),
            }),
            Err(e) => {
                tracing::warn!(function = %name, "no idle trimmer: {e}");
                None
            }
        }
    }
}

impl Drop for IdleTrimmer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Drops `function`'s oversized pooled instances, then returns the
/// allocator's free memory to the system.
fn trim(function: &Function) {
    let dropped = function.drop_oversized_idle();
    release_free_heap();
    tracing::debug!(function = %function.spec.name, dropped, "idle: trimmed the instance pool");
}

/// Returns the free pages of the C allocator's heaps to the system. Host
/// buffers above glibc's mmap threshold are unmapped when freed, but that
/// threshold rises with the sizes freed (up to 32 MiB), so after large
/// calls their buffers come from the heaps, whose free pages stay resident
/// until trimmed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_heap() {
    // SAFETY: `malloc_trim` takes no pointers and may be called at any
    // time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_heap() {}

#[cfg(test)]
mod tests {
    use super::Watch;

    #[test]
    fn trims_once_after_large_calls_stop_and_not_during_them() {
        let mut w = Watch::default();
        // (count at this look, trim?)
        let table = [
            (0, false), // nothing large yet
            (0, false),
            (3, false), // large calls in this period
            (5, false), // still going
            (5, true),  // a quiet period after them: trim
            (5, false), // nothing new since
            (6, false), // one more
            (6, true),  // quiet again
            (6, false),
        ];
        for (i, (now, trim)) in table.into_iter().enumerate() {
            assert_eq!(w.look(now), trim, "look {i} at count {now}: {w:?}");
        }
    }
}
