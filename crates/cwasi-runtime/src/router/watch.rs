//! Placement events: the thread that keeps a runtime's routes on their
//! callees' best paths. The discovery sources wake it (`discovery`): the
//! node directory's inotify events, so a record that appears or goes is
//! seen within milliseconds, and the cluster registry's placement events,
//! so a node that announces or withdraws a function, or a data address, is
//! seen within a round trip through Redis. It also looks at every route's
//! placement every [`RECONCILE_EVERY`], events or not: the backstop for
//! events that were lost (an overflowing queue, a subscriber that could
//! not subscribe, a server that died without withdrawing).
//!
//! A look that finds the same placement as before costs a directory read
//! (and a registry lookup for a route to another node) and changes
//! nothing; only a changed placement runs the selector again.

use std::sync::Weak;
use std::time::{Duration, Instant};

use super::{RuntimeRouter, Sources};
use crate::discovery::Events;

/// How often every route's placement is looked at again, events or not:
/// the bound on how late a change is seen when its event is lost.
pub const RECONCILE_EVERY: Duration = Duration::from_millis(500);

/// How long one look at the registry may take before it is given up (the
/// route keeps its path until the next look).
pub(super) const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the watcher waits for an event before it checks whether its
/// runtime is still there.
const WAKE_EVERY: Duration = Duration::from_millis(100);

/// Starts the watcher of `router`'s routes, woken by the events of
/// `sources` (those that can send events). The thread ends within
/// [`WAKE_EVERY`] of the router's end, and ends the sources' event
/// threads with it.
pub(super) fn spawn(router: Weak<RuntimeRouter>, sources: &Sources) -> std::io::Result<()> {
    let events = Events::new();
    let here = sources
        .here
        .as_ref()
        .map(|s| (s.watch(&events), s.describe()));
    let elsewhere = sources
        .elsewhere
        .as_ref()
        .map(|s| (s.watch(&events), s.describe()));
    for (watched, source) in here.into_iter().chain(elsewhere) {
        if let Err(e) = watched {
            tracing::warn!(
                "cannot follow the changes of {source}: {e}; they are seen within {RECONCILE_EVERY:?}"
            );
        }
    }
    let spawned = std::thread::Builder::new()
        .name("cwasi-placement".into())
        .spawn({
            let events = events.clone();
            move || run(&router, &events)
        });
    if spawned.is_err() {
        events.close();
    }
    spawned.map(|_| ())
}

/// The watcher's loop: reconcile on an event, and every
/// [`RECONCILE_EVERY`] regardless.
fn run(router: &Weak<RuntimeRouter>, events: &Events) {
    let mut last = Instant::now();
    loop {
        let changed = events.wait(WAKE_EVERY);
        let Some(router) = router.upgrade() else {
            events.close();
            return;
        };
        if changed || last.elapsed() >= RECONCILE_EVERY {
            router.reconcile();
            last = Instant::now();
        }
    }
}
