//! The data paths between functions. One trait, one implementation per mode;
//! the selector picks which one a call takes.

pub(crate) mod embedded;
pub(crate) mod local;
pub(crate) mod remote;
pub(crate) mod shm;
pub mod wire;

use std::sync::Arc;

use crate::error::CallError;
use crate::runtime::RuntimeInner;

/// The caller's side of a call: where the request is and where the response
/// goes. For a guest caller both are its linear memory, so a transport can
/// copy straight from one guest memory to another without a buffer between.
pub(crate) trait CallerIo {
    /// The request bytes.
    fn request(&self) -> &[u8];
    /// Makes room for a response of `len` bytes in the caller and returns it.
    /// The buffer may be shorter than `len` (the prototype's `func_connect`
    /// truncates); the transport fills it with the response's first bytes.
    fn response_buffer(&mut self, len: usize) -> Result<&mut [u8], CallError>;
}

/// What a transport needs to know about the call being made.
pub(crate) struct CallContext<'a> {
    /// The runtime the caller lives in.
    pub runtime: &'a Arc<RuntimeInner>,
    /// The callee's nesting depth.
    pub depth: u32,
}

/// A way to reach one callee.
pub(crate) trait Transport: Send + Sync {
    /// Makes a blocking call.
    fn call(&self, ctx: &CallContext<'_>, io: &mut dyn CallerIo) -> Result<(), CallError>;
    /// Starts a call that runs concurrently with the caller. The request is
    /// taken before this returns.
    fn start(
        &self,
        ctx: &CallContext<'_>,
        io: &mut dyn CallerIo,
    ) -> Result<Box<dyn PendingCall>, CallError>;
}

/// A started call.
pub(crate) trait PendingCall: Send {
    /// Waits for the call and delivers its response into `io`.
    fn wait(self: Box<Self>, io: &mut dyn CallerIo) -> Result<(), CallError>;
}

/// A host-side caller: the request is a byte slice and the response a `Vec`.
pub(crate) struct VecIo<'a> {
    pub request: &'a [u8],
    pub response: Vec<u8>,
}

impl CallerIo for VecIo<'_> {
    fn request(&self) -> &[u8] {
        self.request
    }

    fn response_buffer(&mut self, len: usize) -> Result<&mut [u8], CallError> {
        self.response.clear();
        self.response.resize(len, 0);
        Ok(&mut self.response)
    }
}
