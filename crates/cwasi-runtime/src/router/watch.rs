//! Placement events: the thread that keeps a runtime's routes on their
//! callees' best paths. It watches the node directory with inotify, so a
//! record that appears or goes is seen within milliseconds, and looks at
//! every route's placement again every [`RECONCILE_EVERY`] as well: the
//! cluster registry's changes (a node that announces or withdraws a
//! function, or a data address), and the backstop for events that were
//! lost (an overflowing queue, a directory that could not be watched).
//!
//! A look that finds the same placement as before costs a directory read
//! (and a registry lookup for a route to another node) and changes
//! nothing; only a changed placement runs the selector again.

use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Weak;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};

use super::RuntimeRouter;

/// How often every route's placement is looked at again, events or not:
/// the bound on how late a change in the cluster registry is seen.
pub const RECONCILE_EVERY: Duration = Duration::from_millis(500);

/// How long one look at the registry may take before it is given up (the
/// route keeps its path until the next look).
pub(super) const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the watcher waits for an event before it checks whether its
/// runtime is still there.
const WAKE_EVERY: Duration = Duration::from_millis(100);

/// Starts the watcher of `router`'s routes, with `dir` (the node
/// directory), if any, watched for records that come and go. The thread
/// ends within [`WAKE_EVERY`] of the router's end.
pub(super) fn spawn(router: Weak<RuntimeRouter>, dir: Option<PathBuf>) -> std::io::Result<()> {
    let events = dir.and_then(|d| match watch_records(&d) {
        Ok(fd) => Some(fd),
        Err(e) => {
            tracing::warn!(
                "cannot watch the node directory {}: {e}; its changes are seen within {RECONCILE_EVERY:?}",
                d.display()
            );
            None
        }
    });
    std::thread::Builder::new()
        .name("cwasi-placement".into())
        .spawn(move || run(&router, events.as_ref()))?;
    Ok(())
}

/// An inotify descriptor watching `dir` for records written, renamed in
/// and out, and removed.
fn watch_records(dir: &Path) -> std::io::Result<OwnedFd> {
    let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
    inotify::add_watch(
        &fd,
        dir,
        WatchFlags::CREATE
            | WatchFlags::CLOSE_WRITE
            | WatchFlags::MOVED_TO
            | WatchFlags::MOVED_FROM
            | WatchFlags::DELETE,
    )?;
    Ok(fd)
}

/// The watcher's loop: reconcile on a record event, and every
/// [`RECONCILE_EVERY`] regardless.
fn run(router: &Weak<RuntimeRouter>, events: Option<&OwnedFd>) {
    let mut last = Instant::now();
    loop {
        let changed = match events {
            Some(fd) => records_changed(fd, WAKE_EVERY),
            None => {
                std::thread::sleep(WAKE_EVERY);
                false
            }
        };
        let Some(router) = router.upgrade() else {
            return;
        };
        if changed || last.elapsed() >= RECONCILE_EVERY {
            router.reconcile();
            last = Instant::now();
        }
    }
}

/// Waits up to `wait` for events on the node directory and reads them all;
/// true if one was about a record (or events were lost).
fn records_changed(fd: &OwnedFd, wait: Duration) -> bool {
    let timeout = Timespec {
        tv_sec: 0,
        tv_nsec: i64::from(wait.subsec_nanos()),
    };
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    match poll(&mut fds, Some(&timeout)) {
        Ok(0) => return false,
        Ok(_) => {}
        Err(e) => {
            tracing::debug!("waiting for node directory events: {e}");
            std::thread::sleep(wait);
            return false;
        }
    }
    let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
    let mut reader = inotify::Reader::new(fd, &mut buf);
    let mut changed = false;
    // Until the queue is empty (the descriptor does not block).
    while let Ok(event) = reader.next() {
        let record = event
            .file_name()
            .is_some_and(|n| n.to_bytes().ends_with(b".json"));
        changed |= record || event.events().contains(ReadFlags::QUEUE_OVERFLOW);
    }
    changed
}
