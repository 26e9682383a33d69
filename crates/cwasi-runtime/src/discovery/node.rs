//! The node directory as a discovery source: its live records, and inotify
//! events for records written, renamed and removed, so that a replica that
//! starts or stops on this node is seen within milliseconds.

use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};

use super::{Discovery, Events};
use crate::deadline::Deadline;
use crate::error::CallError;
use crate::node_dir::{EndpointRecord, NodeDirectory};

/// How long the event thread waits for inotify before it checks whether
/// its watcher is still there.
const WAKE_EVERY: Duration = Duration::from_millis(100);

impl Discovery for NodeDirectory {
    type Found = EndpointRecord;

    /// The live records of `name`, in every namespace: a directory read,
    /// which never waits on anything else, so `deadline` does not matter.
    fn find(&self, name: &str, _deadline: Deadline) -> Result<Vec<EndpointRecord>, CallError> {
        Ok(self.lookup_any(name))
    }

    fn watch(&self, events: &Events) -> std::io::Result<()> {
        let fd = watch_records(self.root())?;
        let events = events.clone();
        std::thread::Builder::new()
            .name("cwasi-dir-events".into())
            .spawn(move || {
                while !events.is_closed() {
                    if records_changed(&fd, WAKE_EVERY) {
                        events.wake();
                    }
                }
            })?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("the node directory {}", self.root().display())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_written_wakes_the_watcher_and_other_files_do_not() {
        let root = std::env::temp_dir().join(format!("cwasi-dir-events-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = NodeDirectory::open(&root).unwrap();
        let events = Events::new();
        dir.watch(&events).unwrap();
        std::fs::write(dir.root().join("x.sock.tmp"), b"").unwrap();
        assert!(!events.wait(Duration::from_millis(300)), "not a record");
        std::fs::write(dir.root().join("f@a.json"), b"{}").unwrap();
        assert!(events.wait(Duration::from_secs(5)), "a record was written");
        events.close();
        let _ = std::fs::remove_dir_all(&root);
    }
}
