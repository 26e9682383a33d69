//! [`Fallback`]: one path, and a path of last resort for the calls that
//! the first one could not deliver. The router composes remote-direct with
//! the broker this way ("direct, else broker"); neither client knows of the
//! other.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::call::{CallMeta, CallerIo};
use crate::error::CallError;
use crate::transport::{start_copied, PathCounts, PendingCall, Transport};

/// Says that the calls left the first path for the last resort, or came
/// back (for `--explain` and the logs); given the line to report.
pub(crate) type PathReport = Arc<dyn Fn(String) + Send + Sync>;

/// Calls through `first`; a call that nothing ran there (no node could be
/// reached) is made through `then`. A call that may have run on `first` is
/// never made again.
pub(crate) struct Fallback(Arc<Inner>);

struct Inner {
    name: String,
    first: Box<dyn Transport>,
    then: Box<dyn Transport>,
    /// What `first` and `then` are, for the report: "remote-direct",
    /// "remote-broker".
    labels: (&'static str, &'static str),
    on_then: AtomicBool,
    report: PathReport,
    via_then: AtomicU64,
}

impl Fallback {
    /// `first`, else `then`, for calls to `name`; `labels` name the two in
    /// `report`'s lines.
    pub fn new(
        name: &str,
        first: Box<dyn Transport>,
        then: Box<dyn Transport>,
        labels: (&'static str, &'static str),
        report: PathReport,
    ) -> Fallback {
        Fallback(Arc::new(Inner {
            name: name.to_string(),
            first,
            then,
            labels,
            on_then: AtomicBool::new(false),
            report,
            via_then: AtomicU64::new(0),
        }))
    }
}

impl Inner {
    fn call(&self, io: &mut dyn CallerIo, call: &CallMeta) -> Result<(), CallError> {
        let (first, then) = self.labels;
        match self.first.call(io, call) {
            Ok(()) => {
                if self.on_then.swap(false, Ordering::Relaxed) {
                    (self.report)(format!("{first} again: it answers"));
                }
                Ok(())
            }
            Err(e) if e.nothing_ran() && !call.deadline.is_expired() => {
                if !self.on_then.swap(true, Ordering::Relaxed) {
                    (self.report)(format!("{then} (fell back from {first}: {})", e.message));
                }
                self.via_then.fetch_add(1, Ordering::Relaxed);
                self.then.call(io, call)
            }
            Err(e) => Err(e),
        }
    }
}

impl Transport for Fallback {
    fn call(&self, io: &mut dyn CallerIo, call: &CallMeta) -> Result<(), CallError> {
        self.0.call(io, call)
    }

    fn start(
        &self,
        io: &mut dyn CallerIo,
        call: &CallMeta,
    ) -> Result<Box<dyn PendingCall>, CallError> {
        // The call may be made again on the second path.
        let inner = self.0.clone();
        let name = format!("cwasi-call-{}", inner.name);
        start_copied(name, io, *call, move |io, call| inner.call(io, call))
    }

    fn paths(&self) -> PathCounts {
        let first = self.0.first.paths();
        PathCounts {
            retried: first.retried,
            via_broker: first.via_broker + self.0.via_then.load(Ordering::Relaxed),
        }
    }
}
