//! Discovery: where functions are served, from the two sources a runtime
//! has. The node directory ([`NodeDirectory`], this node's live records)
//! and the cluster registry ([`ClusterRegistry`], other nodes'
//! announcements) both implement [`Discovery`]: a lookup of one function,
//! and events that say when what the source knows may have changed. The
//! router asks the sources and decides; the sources know nothing of routes.
//!
//! ```text
//! router ──find──▶ Discovery ◀── NodeDirectory   (inotify on *.json)
//!    ▲                       ◀── ClusterRegistry (SUBSCRIBE cwasi:placement)
//!    └──── Events::wait ◀──── watch ────┘
//! ```
//!
//! Events only wake the router's placement watcher, which then looks again
//! with `find`; an event that is lost costs time, not correctness, since
//! the watcher also looks every 500 ms.

mod cluster;
mod events;
mod node;

pub(crate) use cluster::ClusterRegistry;
pub(crate) use events::Events;

use crate::deadline::Deadline;
use crate::error::CallError;

/// One source of where functions are served.
pub(crate) trait Discovery: Send + Sync {
    /// What the source says about one place a function is served.
    type Found;

    /// Where `name` is served now, as the source says by `deadline`.
    fn find(&self, name: &str, deadline: Deadline) -> Result<Vec<Self::Found>, CallError>;

    /// Drops what the source remembers about `name`, so that the next
    /// `find` asks afresh: a call found nothing where it said.
    fn forget(&self, _name: &str) {}

    /// Starts waking `events` whenever where functions are served may have
    /// changed, until `events` is closed. An error says that this source
    /// cannot send events; its changes are then seen by periodic looks.
    fn watch(&self, events: &Events) -> std::io::Result<()>;

    /// The source, for logs: which directory, which registry.
    fn describe(&self) -> String;
}

#[cfg(doc)]
use crate::node_dir::NodeDirectory;
