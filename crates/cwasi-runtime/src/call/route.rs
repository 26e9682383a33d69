//! The one caller-side call path. A [`Route`] is how one caller reaches one
//! callee, chosen once: it checks the call against the limits, derives what
//! the callee gets (depth, deadline), calls its transport and records its own
//! counters and span. The guest's `cwasi.call`, `call_start`/`call_wait` and
//! `func_connect`, and the host's `Runtime::call`, are thin adapters over it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::stats::{HopReport, HopStats};
use super::transport::{PendingCall, Transport};
use super::{check_depth, CallMeta, CallerIo};
use crate::config::{Limits, Mode};
use crate::deadline::TickClock;
use crate::error::{CallError, ErrorCode};
use crate::trace::CallSpan;

/// How one caller reaches one callee: chosen once, then reused.
pub(crate) struct Route {
    transport: Box<dyn Transport>,
    limits: Arc<Limits>,
    /// What an untimed call reads the time from.
    clock: TickClock,
    stats: HopStats,
}

impl Route {
    /// A route through `transport`, for the edge `caller` → `target`.
    pub fn new(
        caller: &str,
        target: &str,
        mode: Mode,
        transport: Box<dyn Transport>,
        limits: Arc<Limits>,
        clock: TickClock,
    ) -> Route {
        Route {
            transport,
            limits,
            clock,
            stats: HopStats::new(caller, target, mode),
        }
    }

    /// The caller's span of a call, if this process traces.
    fn span(&self, from: &CallMeta, request_len: usize) -> Option<CallSpan> {
        let (caller, target, mode) = self.stats.edge();
        CallSpan::client(&from.trace, caller, target, mode, request_len)
    }

    /// What the callee of a call made by a caller running under `from` gets:
    /// one level deeper, its own call timeout or what is left of the
    /// caller's deadline, whichever ends first, and the call's span (or the
    /// caller's trace context, untouched) as its parent.
    fn callee_meta(
        &self,
        from: &CallMeta,
        request_len: usize,
        now: Instant,
        span: Option<&CallSpan>,
    ) -> Result<CallMeta, CallError> {
        let max = self.limits.max_payload_bytes;
        if request_len > max {
            return Err(CallError::too_large("request", request_len, max));
        }
        let depth = check_depth(from.depth + 1, &self.limits)?;
        Ok(CallMeta {
            depth,
            deadline: from.deadline.nested_at(now, self.limits.call_timeout),
            issued: now,
            trace: span.map_or(from.trace, CallSpan::context),
        })
    }

    /// Makes a blocking call on behalf of a caller running under `from`.
    pub fn call(&self, io: &mut dyn CallerIo, from: &CallMeta) -> Result<(), CallError> {
        let timed = self.stats.time_this_call();
        let now = if timed {
            Instant::now()
        } else {
            self.clock.now()
        };
        let request_len = io.request().len();
        let span = self.span(from, request_len);
        let meta = match self.callee_meta(from, request_len, now, span.as_ref()) {
            Ok(meta) => meta,
            Err(e) => return Err(end_span(span, 0, e)),
        };
        let mut counting = CountingIo { io, len: 0 };
        let result = self
            .transport
            .call(&mut counting, &meta)
            .map_err(|e| past_deadline(e, &meta));
        let started = timed.then_some(now);
        self.stats
            .record(started, request_len, counting.len, outcome(&result));
        if let Some(span) = span {
            span.end(counting.len, result.as_ref().map(|_| ()));
        }
        result
    }

    /// Starts a call that runs while the caller goes on; the request is
    /// taken before this returns.
    pub fn start(
        self: &Arc<Self>,
        io: &mut dyn CallerIo,
        from: &CallMeta,
    ) -> Result<StartedCall, CallError> {
        let started = Instant::now();
        let request_len = io.request().len();
        let span = self.span(from, request_len);
        let meta = match self.callee_meta(from, request_len, started, span.as_ref()) {
            Ok(meta) => meta,
            Err(e) => return Err(end_span(span, 0, e)),
        };
        match self.transport.start(io, &meta) {
            Ok(pending) => Ok(StartedCall {
                pending,
                route: self.clone(),
                meta,
                started,
                request_len,
                span,
            }),
            Err(e) => {
                self.stats
                    .record(Some(started), request_len, 0, Err(e.code));
                Err(end_span(span, 0, past_deadline(e, &meta)))
            }
        }
    }

    /// A snapshot of this edge's counters.
    pub fn report(&self) -> HopReport {
        let mut r = self.stats.report();
        r.paths = self.transport.paths();
        r
    }
}

/// Ends a call's span, if it has one, with the error `e`; returns `e`.
fn end_span(span: Option<CallSpan>, response_len: usize, e: CallError) -> CallError {
    if let Some(span) = span {
        span.end(response_len, Err(&e));
    }
    e
}

/// A call's outcome as the counters take it.
fn outcome(result: &Result<(), CallError>) -> Result<(), ErrorCode> {
    result.as_ref().map(|_| ()).map_err(|e| e.code)
}

/// A failure that arrives once the callee's deadline has passed is reported
/// as the timeout it is: the callee (or one of its own callees) ran out of
/// the caller's time, whatever error that turned into on the way back.
fn past_deadline(e: CallError, meta: &CallMeta) -> CallError {
    if e.is_timeout() || !meta.deadline.is_expired() {
        return e;
    }
    CallError::new(
        ErrorCode::Timeout,
        format!("no answer within the caller's deadline ({})", e.message),
    )
}

/// A call started with [`Route::start`], waited with [`StartedCall::wait`].
pub(crate) struct StartedCall {
    pending: Box<dyn PendingCall>,
    route: Arc<Route>,
    meta: CallMeta,
    started: Instant,
    request_len: usize,
    span: Option<CallSpan>,
}

impl StartedCall {
    /// Waits for the answer, delivers it into `io` and records the call.
    pub fn wait(self, io: &mut dyn CallerIo) -> Result<(), CallError> {
        let mut counting = CountingIo { io, len: 0 };
        let result = self
            .pending
            .wait(&mut counting)
            .map_err(|e| past_deadline(e, &self.meta));
        self.route.stats.record(
            Some(self.started),
            self.request_len,
            counting.len,
            outcome(&result),
        );
        if let Some(span) = self.span {
            span.end(counting.len, result.as_ref().map(|_| ()));
        }
        result
    }
}

/// Remembers the response length a transport asked room for.
struct CountingIo<'a> {
    io: &'a mut dyn CallerIo,
    len: usize,
}

impl CallerIo for CountingIo<'_> {
    fn request(&self) -> &[u8] {
        self.io.request()
    }
    fn response_buffer(&mut self, len: usize) -> Result<&mut [u8], CallError> {
        self.len = len;
        self.io.response_buffer(len)
    }
    fn take_response(&mut self, response: Vec<u8>) -> Result<(), CallError> {
        self.len = response.len();
        self.io.take_response(response)
    }
}

/// An instance's routes by target name: a warm call does one hash lookup
/// and takes no lock.
#[derive(Default)]
pub(crate) struct RouteCache(HashMap<Box<str>, Arc<Route>>);

impl RouteCache {
    /// The route to `target`, from the cache or from `resolve` (then kept).
    pub fn get_or_resolve(
        &mut self,
        target: &str,
        resolve: impl FnOnce() -> Result<Arc<Route>, CallError>,
    ) -> Result<Arc<Route>, CallError> {
        if let Some(r) = self.0.get(target) {
            return Ok(r.clone());
        }
        let route = resolve()?;
        self.0.insert(target.into(), route.clone());
        Ok(route)
    }
}
