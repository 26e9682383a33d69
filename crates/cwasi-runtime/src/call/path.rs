//! One way a route reaches its callee ([`Path`]): a transport, its mode
//! and endpoint, its counters, and how many of the route's calls it takes
//! at once before they spill; and how a call picks one ([`NextPath`],
//! [`Again`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::stats::HopStats;
use super::transport::Transport;
use crate::config::Mode;

/// A path for a route, as whoever chose it built it.
pub(crate) struct PathSpec {
    /// The mode it is.
    pub mode: Mode,
    /// What it reaches (its mode and endpoint, such as a socket or a set of
    /// nodes), so that a new selection of the same path keeps the
    /// transport and its connections.
    pub key: String,
    /// Its client.
    pub transport: Box<dyn Transport>,
    /// How many of the route's calls it takes at once before further ones
    /// spill to the route's spill path (its server's call slots); `None`:
    /// no bound.
    pub capacity: Option<usize>,
}

/// One way to reach the callee, installed in a route.
pub(crate) struct Path {
    /// See [`PathSpec::key`].
    pub key: String,
    /// The mode it is.
    pub mode: Mode,
    pub(super) transport: Box<dyn Transport>,
    pub(super) stats: Arc<HopStats>,
    pub(super) capacity: Option<usize>,
    /// The route's calls on this path now (counted only with a capacity).
    in_flight: AtomicUsize,
}

impl Path {
    /// `spec`, counted in `stats` (its mode's counters on the route).
    pub(super) fn installed(spec: PathSpec, stats: Arc<HopStats>) -> Arc<Path> {
        Arc::new(Path {
            key: spec.key,
            mode: spec.mode,
            transport: spec.transport,
            stats,
            capacity: spec.capacity,
            in_flight: AtomicUsize::new(0),
        })
    }

    /// Whether the route's own calls fill this path's capacity, or its
    /// callee said it is saturated (calls from others fill it). Only a
    /// path with a capacity spills, so only such a path asks.
    pub(super) fn is_full(&self) -> bool {
        self.capacity.is_some_and(|c| {
            self.in_flight.load(Ordering::Relaxed) >= c || self.transport.saturated()
        })
    }

    /// Counts a call on this path until the returned token is dropped.
    pub(super) fn enter(self: &Arc<Self>) -> InFlight {
        if self.capacity.is_none() {
            return InFlight(None);
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Some(self.clone()))
    }
}

/// The path a call takes, as `Route::next_path` read it.
pub(super) enum NextPath<'a> {
    /// The route's embedded path, which never changes.
    Fixed(&'a Arc<Path>),
    /// The current path, borrowed from the route.
    Current(arc_swap::Guard<Arc<Path>>),
    /// The spill path.
    Spill(Arc<Path>),
}

impl std::ops::Deref for NextPath<'_> {
    type Target = Arc<Path>;
    fn deref(&self) -> &Arc<Path> {
        match self {
            NextPath::Fixed(p) => p,
            NextPath::Current(p) => p,
            NextPath::Spill(p) => p,
        }
    }
}

/// Where a call that nothing ran is made again.
#[derive(Clone, Copy)]
pub(super) enum Again {
    /// On the route's spill path: the path it failed on was full.
    Spill,
    /// On the route's path, which a re-selection just changed.
    Anywhere,
}

/// A call counted on a path with a capacity, until dropped.
pub(super) struct InFlight(Option<Arc<Path>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            p.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
