//! The one caller-side call path. A [`Route`] is how one caller reaches one
//! callee, chosen once: it checks the call against the limits, derives what
//! the callee gets (depth, deadline), calls its transport and records its own
//! counters. The guest's `cwasi.call`, `call_start`/`call_wait` and
//! `func_connect`, and the host's `Runtime::call`, are thin adapters over it.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{check_depth, CallMeta, CallerIo};
use crate::config::{Limits, Mode};
use crate::deadline::TickClock;
use crate::error::{CallError, ErrorCode};
use crate::transport::{PathCounts, PendingCall, Transport};

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
        let depth = check_depth(from.depth + 1, &self.limits)?;
        Ok(CallMeta {
            depth,
            deadline: from.deadline.nested_at(now, self.limits.call_timeout),
            issued: now,
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
        let meta = self.callee_meta(from, request_len, now)?;
        let mut counting = CountingIo { io, len: 0 };
        let result = self
            .transport
            .call(&mut counting, &meta)
            .map_err(|e| past_deadline(e, &meta));
        let started = timed.then_some(now);
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
                self.stats.record(Some(started), request_len, 0, false);
                Err(past_deadline(e, &meta))
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
        self.route.stats.record(
            Some(self.started),
            self.request_len,
            counting.len,
            result.is_ok(),
        );
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

/// One embedded call in this many is timed. Two clock reads cost about a
/// sixth of a 64 B embedded call; a sample keeps the mean without that
/// cost. Calls over any other transport take microseconds or more, and
/// every one of them is timed.
const EMBEDDED_TIMED_ONE_IN: u32 = 8;

thread_local! {
    /// This thread's sampling state (xorshift32): random, so that no
    /// pattern of calls across edges can hide one edge from the sample.
    static SAMPLER: Cell<u32> = const { Cell::new(0x9E37_79B9) };
}

/// Counters of the calls along one edge (caller → callee).
struct HopStats {
    caller: String,
    target: String,
    mode: Mode,
    /// Times one call in this many (1: every call).
    timed_one_in: u32,
    /// One lock per call instead of four atomic additions: two atomic
    /// operations where a 64 B embedded call takes a few hundred
    /// nanoseconds in all.
    counters: Mutex<HopCounters>,
}

#[derive(Default)]
struct HopCounters {
    calls: u64,
    failures: u64,
    timed: u64,
    nanos: u64,
    max_nanos: u64,
    bytes_in: u64,
    bytes_out: u64,
}

impl HopStats {
    fn new(caller: &str, target: &str, mode: Mode) -> HopStats {
        HopStats {
            caller: caller.to_string(),
            target: target.to_string(),
            mode,
            timed_one_in: match mode {
                Mode::Embedded => EMBEDDED_TIMED_ONE_IN,
                _ => 1,
            },
            counters: Mutex::new(HopCounters::default()),
        }
    }

    /// Whether the call about to be made is timed.
    fn time_this_call(&self) -> bool {
        if self.timed_one_in <= 1 {
            return true;
        }
        let draw = SAMPLER
            .try_with(|s| {
                let mut x = s.get();
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                s.set(x);
                x
            })
            .unwrap_or(0);
        draw.is_multiple_of(self.timed_one_in)
    }

    /// Counts one call; `started` is when it started, if it was timed.
    fn record(&self, started: Option<Instant>, request: usize, response: usize, ok: bool) {
        let ns = started.map(|t| t.elapsed().as_nanos() as u64);
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        c.calls += 1;
        c.failures += u64::from(!ok);
        if let Some(ns) = ns {
            c.timed += 1;
            c.nanos = c.nanos.saturating_add(ns);
            c.max_nanos = c.max_nanos.max(ns);
        }
        c.bytes_in = c.bytes_in.saturating_add(request as u64);
        c.bytes_out = c.bytes_out.saturating_add(response as u64);
    }

    fn report(&self) -> HopReport {
        let c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        HopReport {
            caller: self.caller.clone(),
            target: self.target.clone(),
            mode: self.mode,
            calls: c.calls,
            failures: c.failures,
            timed: c.timed,
            total: Duration::from_nanos(c.nanos),
            max: Duration::from_nanos(c.max_nanos),
            bytes_in: c.bytes_in,
            bytes_out: c.bytes_out,
            paths: PathCounts::default(),
        }
    }
}

/// A snapshot of one edge's counters, for per-hop timings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
    /// Calls that were timed: every call, but one embedded call in eight
    /// (a random sample), since two clock reads are a sixth of a small
    /// embedded call.
    pub timed: u64,
    /// Total time inside the timed calls, as the caller saw it.
    pub total: Duration,
    /// The slowest timed call.
    pub max: Duration,
    /// Request bytes sent.
    pub bytes_in: u64,
    /// Response bytes received.
    pub bytes_out: u64,
    /// Calls retried on another node, and calls that fell back to the
    /// broker (remote-direct routes only).
    pub paths: PathCounts,
}

impl HopReport {
    /// The mean time of a call, from the timed ones; `None` before any.
    pub fn mean(&self) -> Option<Duration> {
        let nanos = self.total.as_nanos().checked_div(u128::from(self.timed))?;
        Some(Duration::from_nanos(nanos as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_embedded_call_in_eight_is_timed_and_every_other_call() {
        let embedded = HopStats::new("a", "b", Mode::Embedded);
        let local = HopStats::new("a", "c", Mode::Local);
        let n = 80_000;
        for _ in 0..n {
            let t = embedded.time_this_call();
            embedded.record(t.then(Instant::now), 64, 8, true);
            assert!(local.time_this_call());
        }
        let r = embedded.report();
        assert_eq!((r.calls, r.bytes_in, r.bytes_out), (n, 64 * n, 8 * n));
        let expected = n / u64::from(EMBEDDED_TIMED_ONE_IN);
        assert!(
            r.timed.abs_diff(expected) < expected / 10,
            "{} of {n} calls timed, expected about {expected}",
            r.timed
        );
        assert!(r.mean().is_some());
        assert_eq!(local.report().mean(), None);
    }
}
