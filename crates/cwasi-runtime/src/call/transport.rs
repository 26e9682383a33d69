//! The seam between a route and a data path: what every transport's client
//! implements ([`Transport`], [`PendingCall`]), defined on the caller's
//! side so that the route depends on this contract and the transports (the
//! `transport/` folder) depend on the route's types, never the other way.

use std::sync::mpsc;

use super::{deliver, CallMeta, CallerIo, VecIo};
use crate::deadline::ANSWER_GRACE;
use crate::error::{CallError, ErrorCode};

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
    /// Whether the callee said it is saturated (its last answers waited
    /// for a call slot longer than this caller's threshold): a route with
    /// somewhere to spill sends its next calls there. Never, for
    /// transports whose callee says nothing of its queue.
    fn saturated(&self) -> bool {
        false
    }
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

/// Runs `call` (a whole call, due by `meta`'s deadline) on a worker thread
/// named `name`: how a transport whose calls cannot be split into a send
/// and a receive starts one.
pub(crate) fn on_worker(
    name: String,
    meta: CallMeta,
    call: impl FnOnce() -> Result<Vec<u8>, CallError> + Send + 'static,
) -> Result<Box<dyn PendingCall>, CallError> {
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let _ = tx.send(call());
        })
        .map_err(|e| {
            CallError::new(
                ErrorCode::ResourceLimit,
                format!("cannot start a worker thread: {e}"),
            )
        })?;
    Ok(Box::new(WorkerPending { rx, meta }))
}

/// Starts `call` on a worker thread named `name`, with its own copy of the
/// request in `io`: how a transport starts a call that it may make more
/// than once (on another node, or on another path).
pub(crate) fn start_copied(
    name: String,
    io: &mut dyn CallerIo,
    meta: CallMeta,
    call: impl FnOnce(&mut dyn CallerIo, &CallMeta) -> Result<(), CallError> + Send + 'static,
) -> Result<Box<dyn PendingCall>, CallError> {
    let request = io.request().to_vec();
    on_worker(name, meta, move || {
        let mut io = VecIo {
            request: &request,
            response: Vec::new(),
        };
        call(&mut io, &meta).map(|()| io.response)
    })
}

/// A call running on a worker thread; its answer is taken when the caller
/// waits. The worker's own bounds end at the call's deadline and grace, so
/// this wait only guards against a worker that never reports.
struct WorkerPending {
    rx: mpsc::Receiver<Result<Vec<u8>, CallError>>,
    meta: CallMeta,
}

impl PendingCall for WorkerPending {
    fn wait(self: Box<Self>, io: &mut dyn CallerIo) -> Result<(), CallError> {
        let response = self
            .rx
            .recv_timeout(self.meta.deadline.remaining() + ANSWER_GRACE + ANSWER_GRACE)
            .map_err(|_| CallError::new(ErrorCode::Timeout, "the remote call did not finish"))??;
        deliver(io, &response)
    }
}
