//! The data paths between functions, each a client/server pair in a folder
//! of its own: [`embedded`] (the callee runs in this process, so the client
//! is the whole path), [`local`] (Unix socket and shared memory),
//! [`direct`] (TCP to another node, mutual TLS) and [`remote`] (the
//! broker). A route holds one client; servers answer with the one
//! callee-side path of `guest::invoke`, admitting calls through
//! [`admission`].

pub(crate) mod admission;
pub mod direct;
pub(crate) mod embedded;
pub(crate) mod local;
pub mod remote;

use crate::call::{CallMeta, CallerIo};
use crate::error::CallError;

/// The client side of one data path to one callee.
pub(crate) trait Transport: Send + Sync {
    /// Makes a blocking call; `call` is what the callee gets (its depth and
    /// deadline).
    fn call(&self, io: &mut dyn CallerIo, call: &CallMeta) -> Result<(), CallError>;
    /// Starts a call that runs concurrently with the caller. The request is
    /// taken before this returns.
    fn start(
        &self,
        io: &mut dyn CallerIo,
        call: &CallMeta,
    ) -> Result<Box<dyn PendingCall>, CallError>;
    /// How often calls left their first path (retries, the broker as a
    /// fallback); nothing for transports with one path.
    fn paths(&self) -> PathCounts {
        PathCounts::default()
    }
}

/// What a transport with more than one path did, for the hop report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathCounts {
    /// Calls retried once on another node after a connection was lost.
    pub retried: u64,
    /// Calls that went through the broker because no node could be
    /// reached directly.
    pub via_broker: u64,
}

/// A started call.
pub(crate) trait PendingCall: Send {
    /// Waits for the call and delivers its response into `io`.
    fn wait(self: Box<Self>, io: &mut dyn CallerIo) -> Result<(), CallError>;
}
