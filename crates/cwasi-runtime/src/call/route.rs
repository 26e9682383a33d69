//! The one caller-side call path. A [`Route`] is how one caller reaches one
//! callee, chosen once: it checks the call against the limits, derives what
//! the callee gets (depth, deadline), calls its transport and records its own
//! counters. The guest's `cwasi.call`, `call_start`/`call_wait` and
//! `func_connect`, and the host's `Runtime::call`, are thin adapters over it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{CallMeta, CallerIo};
use crate::config::{Limits, Mode};
use crate::error::{CallError, ErrorCode};
use crate::transport::{PendingCall, Transport};

/// How one caller reaches one callee: chosen once, then reused.
pub(crate) struct Route {
    transport: Box<dyn Transport>,
    limits: Arc<Limits>,
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
    ) -> Route {
        Route {
            transport,
            limits,
            stats: HopStats::new(caller, target, mode),
        }
    }

    /// What the callee of a call made by a caller running under `from` gets:
    /// one level deeper, and its own call timeout or what is left of the
    /// caller's deadline, whichever ends first.
    fn callee_meta(
        &self,
        from: &CallMeta,
        request_len: usize,
        now: Instant,
    ) -> Result<CallMeta, CallError> {
        let max = self.limits.max_payload_bytes;
        if request_len > max {
            return Err(CallError::too_large("request", request_len, max));
        }
        let depth = from.depth + 1;
        if depth > self.limits.max_call_depth {
            return Err(CallError::new(
                ErrorCode::ResourceLimit,
                format!(
                    "call depth {depth} is over the limit of {}",
                    self.limits.max_call_depth
                ),
            ));
        }
        Ok(CallMeta {
            depth,
            deadline: from.deadline.nested_at(now, self.limits.call_timeout),
            issued: now,
        })
    }

    /// Makes a blocking call on behalf of a caller running under `from`.
    pub fn call(&self, io: &mut dyn CallerIo, from: &CallMeta) -> Result<(), CallError> {
        let started = Instant::now();
        let request_len = io.request().len();
        let meta = self.callee_meta(from, request_len, started)?;
        let mut counting = CountingIo { io, len: 0 };
        let result = self
            .transport
            .call(&mut counting, &meta)
            .map_err(|e| past_deadline(e, &meta));
        self.stats
            .record(started, request_len, counting.len, result.is_ok());
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
        let meta = self.callee_meta(from, request_len, started)?;
        match self.transport.start(io, &meta) {
            Ok(pending) => Ok(StartedCall {
                pending,
                route: self.clone(),
                meta,
                started,
                request_len,
            }),
            Err(e) => {
                self.stats.record(started, request_len, 0, false);
                Err(past_deadline(e, &meta))
            }
        }
    }

    /// A snapshot of this edge's counters.
    pub fn report(&self) -> HopReport {
        self.stats.report()
    }
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
}

impl StartedCall {
    /// Waits for the answer, delivers it into `io` and records the call.
    pub fn wait(self, io: &mut dyn CallerIo) -> Result<(), CallError> {
        let mut counting = CountingIo { io, len: 0 };
        let result = self
            .pending
            .wait(&mut counting)
            .map_err(|e| past_deadline(e, &self.meta));
        self.route
            .stats
            .record(self.started, self.request_len, counting.len, result.is_ok());
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

/// Counters of the calls along one edge (caller → callee).
struct HopStats {
    caller: String,
    target: String,
    mode: Mode,
    calls: AtomicU64,
    failures: AtomicU64,
    nanos: AtomicU64,
    max_nanos: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl HopStats {
    fn new(caller: &str, target: &str, mode: Mode) -> HopStats {
        HopStats {
            caller: caller.to_string(),
            target: target.to_string(),
            mode,
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            nanos: AtomicU64::new(0),
            max_nanos: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        }
    }

    fn record(&self, started: Instant, request: usize, response: usize, ok: bool) {
        let ns = started.elapsed().as_nanos() as u64;
        self.calls.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        self.nanos.fetch_add(ns, Ordering::Relaxed);
        // Most calls set no new maximum: a load, not a read-modify-write.
        if ns > self.max_nanos.load(Ordering::Relaxed) {
            self.max_nanos.fetch_max(ns, Ordering::Relaxed);
        }
        self.bytes_in.fetch_add(request as u64, Ordering::Relaxed);
        self.bytes_out.fetch_add(response as u64, Ordering::Relaxed);
    }

    fn report(&self) -> HopReport {
        HopReport {
            caller: self.caller.clone(),
            target: self.target.clone(),
            mode: self.mode,
            calls: self.calls.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            total: Duration::from_nanos(self.nanos.load(Ordering::Relaxed)),
            max: Duration::from_nanos(self.max_nanos.load(Ordering::Relaxed)),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
        }
    }
}

/// A snapshot of one edge's counters, for per-hop timings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopReport {
    /// The calling function.
    pub caller: String,
    /// The called function.
    pub target: String,
    /// The data path used.
    pub mode: Mode,
    /// Calls made.
    pub calls: u64,
    /// Calls that failed.
    pub failures: u64,
    /// Total time inside calls, as the caller saw it.
    pub total: Duration,
    /// The slowest call.
    pub max: Duration,
    /// Request bytes sent.
    pub bytes_in: u64,
    /// Response bytes received.
    pub bytes_out: u64,
}
