//! The caller's side of a call, whatever the transport: where the request is
//! and where the response goes ([`CallerIo`]), what travels with every call
//! ([`CallMeta`]), the route that makes it ([`route`]), and the contract of the data paths
//! it calls through ([`transport`], implemented by the `transport/` folder).

pub(crate) mod path;
pub(crate) mod route;
pub(crate) mod stats;
pub(crate) mod transport;

use std::time::{Duration, Instant};

use crate::config::{FunctionSpec, Limits};
use crate::deadline::Deadline;
use crate::error::{CallError, ErrorCode};
use crate::identity::CallerIdentity;
use crate::trace::TraceContext;

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
    /// Takes a response that is already a host buffer (a component
    /// callee's): a caller that returns a host buffer itself keeps it and
    /// copies nothing; any other copies it in.
    fn take_response(&mut self, response: Vec<u8>) -> Result<(), CallError> {
        deliver(self, &response)
    }
}

/// Copies `response` into the caller, as much as its buffer takes.
pub(crate) fn deliver<Io: CallerIo + ?Sized>(
    io: &mut Io,
    response: &[u8],
) -> Result<(), CallError> {
    let dst = io.response_buffer(response.len())?;
    let n = dst.len().min(response.len());
    dst[..n].copy_from_slice(&response[..n]);
    Ok(())
}

/// What travels with every call to the callee, across every transport: how
/// deep it is nested, by when it must be answered, and the trace it is part
/// of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CallMeta {
    /// The callee's nesting depth (an entry is 0, what it calls 1, ...).
    pub depth: u32,
    /// When the callee must have answered.
    pub deadline: Deadline,
    /// When this was made, so that arming the callee's timer needs no
    /// second clock read (it is off by the microseconds since).
    pub issued: Instant,
    /// The trace and the parent span of what runs under this (for a
    /// callee, its caller's span); [`TraceContext::NONE`] when untraced.
    pub trace: TraceContext,
}

impl CallMeta {
    /// A call at `depth` due `timeout` from now.
    pub fn after(depth: u32, timeout: Duration) -> CallMeta {
        let issued = Instant::now();
        CallMeta {
            depth,
            deadline: Deadline::at(issued, timeout),
            issued,
            trace: TraceContext::NONE,
        }
    }

    /// The same call, under the span `trace`.
    pub fn traced(self, trace: TraceContext) -> CallMeta {
        CallMeta { trace, ..self }
    }

    /// The same call, as of now (after a wait, so that the callee's timer
    /// is armed with what is really left).
    pub fn reissued(self) -> CallMeta {
        CallMeta {
            issued: Instant::now(),
            ..self
        }
    }

    /// Time left of the deadline when this was made.
    pub fn budget(&self) -> Duration {
        self.deadline
            .instant()
            .saturating_duration_since(self.issued)
    }

    /// What the callee of a request from another process gets, once the
    /// callee's policy admitted its caller ([`admit`]): the depth the
    /// caller sent (0, from a caller that sets none, is read as 1),
    /// refused past `limits.max_call_depth`; and the earlier of this side's
    /// call timeout and the caller's deadline, if it sent one; under the
    /// caller's span.
    pub fn incoming(
        request: Incoming<'_>,
        callee: &FunctionSpec,
        limits: &Limits,
    ) -> Result<CallMeta, CallError> {
        admit(request.caller, callee)?;
        let depth = check_depth(request.depth.max(1), limits)?;
        let issued = Instant::now();
        let own = Deadline::at(issued, limits.call_timeout);
        Ok(CallMeta {
            depth,
            deadline: request.deadline.map_or(own, |d| d.min(own)),
            issued,
            trace: request.trace,
        })
    }
}

/// What a request from another process says about its call, as its
/// transport read and authenticated it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Incoming<'a> {
    /// The callee's depth, as the caller sent it.
    pub depth: u32,
    /// The caller's deadline, if it sent one.
    pub deadline: Option<Deadline>,
    /// The caller's span.
    pub trace: TraceContext,
    /// Who calls, as far as the transport proved it.
    pub caller: &'a CallerIdentity,
}

/// The one admission check of every call, on every path: whether the
/// callee's policy allows `caller`. The servers make it through
/// [`CallMeta::incoming`]; the embedded transport, whose callee runs in
/// the caller's process, makes it directly.
#[inline]
pub(crate) fn admit(caller: &CallerIdentity, callee: &FunctionSpec) -> Result<(), CallError> {
    callee.policy.admit(caller, &callee.name).inspect_err(|e| {
        tracing::info!(caller = %caller, function = %callee.name, "call denied: {}", e.message);
    })
}

/// `depth`, if it is within `limits.max_call_depth`: one check, for a call
/// made here and for one that arrives from another process.
pub(crate) fn check_depth(depth: u32, limits: &Limits) -> Result<u32, CallError> {
    if depth > limits.max_call_depth {
        return Err(CallError::new(
            ErrorCode::ResourceLimit,
            format!(
                "call depth {depth} is over the limit of {}",
                limits.max_call_depth
            ),
        ));
    }
    Ok(depth)
}

/// A host-side caller: the request is a byte slice and the response a `Vec`.
pub(crate) struct VecIo<'a> {
    /// The request.
    pub request: &'a [u8],
    /// The response, resized to fit.
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

    fn take_response(&mut self, response: Vec<u8>) -> Result<(), CallError> {
        self.response = response;
        Ok(())
    }
}
