//! The data paths between functions, each a client/server pair in a folder
//! of its own: [`embedded`] (the callee runs in this process, so the client
//! is the whole path), [`local`] (Unix socket and shared memory) and
//! [`remote`] (the broker). A route holds one client; servers answer with
//! the one callee-side path of `guest::invoke`.

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
}

/// A started call.
pub(crate) trait PendingCall: Send {
    /// Waits for the call and delivers its response into `io`.
    fn wait(self: Box<Self>, io: &mut dyn CallerIo) -> Result<(), CallError>;
}
