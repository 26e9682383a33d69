//! Admission, shared by the servers of the local and direct transports:
//! the accept loop, a cap on the connections open at once, a bound on the
//! calls that run at once, and a budget for the warnings that refused peers
//! cause, so that a flood of bad connections cannot flood the log too.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{CallError, ErrorCode, RuntimeError};

mod shares;

pub(crate) use shares::{Share, Shares};

/// A server's accept thread. Dropping it stops the thread and joins it
/// (connections in progress finish on their own threads).
pub(crate) struct AcceptThread {
    stop: Arc<AtomicBool>,
    /// A second descriptor of the listening socket, to wake the loop.
    wake: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

impl AcceptThread {
    /// Runs `accept_loop(listener, stop)` on a thread named `name`.
    pub fn spawn<L: AsFd + Send + 'static>(
        name: String,
        listener: L,
        accept_loop: impl FnOnce(L, Arc<AtomicBool>) + Send + 'static,
    ) -> Result<AcceptThread, RuntimeError> {
        let wake = listener
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| RuntimeError::Io {
                path: format!("the listening socket of {name}").into(),
                source,
            })?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || accept_loop(listener, flag))
            .map_err(|source| RuntimeError::Spawn {
                what: "the accept thread",
                source,
            })?;
        Ok(AcceptThread {
            stop,
            wake,
            thread: Some(thread),
        })
    }
}

impl Drop for AcceptThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop: on Linux, shutting down a listening socket
        // for reading makes a blocked (and every later) `accept` fail at
        // once. Unlike connecting to a Unix socket's path, this works when
        // the path was removed or replaced.
        if let Err(e) = rustix::net::shutdown(&self.wake, rustix::net::Shutdown::Read) {
            tracing::warn!("cannot shut the listening socket down: {e}");
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Accepts connections from `incoming` and hands each to `admit`, until
/// `stop` is set (checked after every accept, so whoever sets it wakes the
/// loop by shutting the listening socket down). A failed accept (out of
/// descriptors, say) is logged within `warnings` and retried after a pause.
pub(crate) fn accept_until<S>(
    incoming: impl Iterator<Item = io::Result<S>>,
    stop: &AtomicBool,
    warnings: &WarnBudget,
    mut admit: impl FnMut(S),
) {
    for conn in incoming {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match conn {
            Ok(s) => admit(s),
            Err(e) => {
                if warnings.allow().is_some() {
                    tracing::warn!("accept failed: {e}");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// The connections a server has open, up to a cap.
pub(crate) struct Connections {
    open: Arc<AtomicUsize>,
    max: usize,
}

/// One admitted connection; it counts as open until dropped.
pub(crate) struct ConnectionSlot(Arc<AtomicUsize>);

impl Connections {
    /// At most `max` (at least one) open at once.
    pub fn new(max: usize) -> Connections {
        Connections {
            open: Arc::new(AtomicUsize::new(0)),
            max: max.max(1),
        }
    }

    /// A slot for one more connection, or `None` at the cap.
    pub fn admit(&self) -> Option<ConnectionSlot> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(ConnectionSlot(self.open.clone()))
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A counting semaphore bounding concurrent calls.
pub(crate) struct Slots {
    state: Mutex<SlotState>,
    cv: Condvar,
}

struct SlotState {
    free: usize,
    /// Callers waiting for a slot: a release wakes one only when there is
    /// one (waking costs a syscall even with nobody to wake).
    waiting: usize,
}

impl Slots {
    /// `n` slots (at least one).
    pub fn new(n: usize) -> Slots {
        Slots {
            state: Mutex::new(SlotState {
                free: n.max(1),
                waiting: 0,
            }),
            cv: Condvar::new(),
        }
    }

    /// Takes a slot, waiting for one at most `wait`: how long it waited
    /// (zero when a slot was free, and then the clock is not read), or
    /// `None` if none freed.
    pub fn acquire(&self, wait: Duration) -> Option<Duration> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut waited = Duration::ZERO;
        if s.free == 0 {
            let started = Instant::now();
            s.waiting += 1;
            s = self
                .cv
                .wait_timeout_while(s, wait, |s| s.free == 0)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            s.waiting -= 1;
            if s.free == 0 {
                return None;
            }
            waited = started.elapsed();
        }
        s.free -= 1;
        Some(waited)
    }

    /// Gives a slot back.
    pub fn release(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.free += 1;
        let wake = s.waiting > 0;
        drop(s);
        if wake {
            self.cv.notify_one();
        }
    }
}

/// What a server's call takes before it runs: a call slot and, while its
/// request's payload is still arriving, one of the places for such
/// requests ([`Shares::half_of`] the slots, and fewer per peer). A slow
/// sender holds its slot while its payload streams into the callee; this
/// keeps slow senders, and any one peer, from holding every slot.
pub(crate) struct CallSlots<K: Copy + Eq + std::hash::Hash> {
    slots: Slots,
    arriving: Shares<K>,
}

/// Why a call was not admitted in time.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Busy {
    /// Every call slot stayed taken.
    Slots,
    /// The places for payloads still arriving stayed taken: `cap` in all,
    /// `per_peer` for one peer.
    Arriving { cap: usize, per_peer: usize },
}

impl Busy {
    /// The refusal of a call of `function` that found it busy; `peer` says
    /// what one peer is ("caller process", "address").
    pub fn refusal(self, function: &str, peer: &str) -> CallError {
        let why = match self {
            Busy::Slots => "no call slot freed within the timeout".to_string(),
            Busy::Arriving { cap, per_peer } => format!(
                "{cap} payloads are still arriving ({per_peer} from one {peer} at most), and \
                 none finished within the timeout"
            ),
        };
        CallError::new(
            ErrorCode::ResourceLimit,
            format!("'{function}' is busy: {why}"),
        )
    }
}

/// An admitted call: its slot, given back when dropped, and its place
/// among the arriving payloads, which the exchange drops once the payload
/// is in.
pub(crate) struct Admitted<'a, K: Copy + Eq + std::hash::Hash> {
    slots: &'a Slots,
    /// The place among arriving payloads (for a payload still arriving).
    pub arrival: Option<Share<K>>,
    /// How long the call waited for its slot.
    pub queued: Duration,
}

impl<K: Copy + Eq + std::hash::Hash> CallSlots<K> {
    /// `n` call slots (at least one).
    pub fn new(n: usize) -> CallSlots<K> {
        CallSlots {
            slots: Slots::new(n),
            arriving: Shares::half_of(n),
        }
    }

    /// Admits a call of `peer` whose payload is still `arriving` (or not),
    /// waiting at most `wait` in all.
    pub fn admit(&self, peer: K, arriving: bool, wait: Duration) -> Result<Admitted<'_, K>, Busy> {
        // A complete request, the common case, reads no clock here.
        let (arrival, left) = if arriving {
            let until = Instant::now() + wait;
            let share = self.arriving.take(peer, wait).ok_or(Busy::Arriving {
                cap: self.arriving.cap(),
                per_peer: self.arriving.per_peer(),
            })?;
            (Some(share), until.saturating_duration_since(Instant::now()))
        } else {
            (None, wait)
        };
        let queued = self.slots.acquire(left).ok_or(Busy::Slots)?;
        Ok(Admitted {
            slots: &self.slots,
            arrival,
            queued,
        })
    }
}

impl<K: Copy + Eq + std::hash::Hash> Drop for Admitted<'_, K> {
    fn drop(&mut self) {
        self.slots.release();
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
