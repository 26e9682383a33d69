//! The one caller-side call path. A [`Route`] is how one caller reaches one
//! callee: it checks the call against the limits, derives what the callee
//! gets (depth, deadline), calls its current [`Path`]'s transport and
//! records the counters and span of the path actually taken. The guest's
//! `cwasi.call`, `call_start`/`call_wait` and `func_connect`, and the host's
//! `Runtime::call`, are thin adapters over it.
//!
//! A route's path can change: whoever chose it (the router) re-selects off
//! the hot path when the callee's placement changes, and publishes the new
//! path atomically ([`Route::switch_to`]); a warm call reads it without a
//! lock. A call that failed before any callee took it
//! ([`CallError::nothing_ran`]) asks for a re-selection ([`Reselect`]) and
//! is made again on the new path, within its deadline. A route may also
//! hold a spill path: where calls go while the current path's call slots
//! are all taken by this route's own calls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use arc_swap::{ArcSwap, ArcSwapOption};

use super::path::{Again, InFlight, NextPath};
pub(crate) use super::path::{Path, PathSpec};
use super::stats::{HopReport, HopStats};
use super::transport::PendingCall;
use super::{check_depth, CallMeta, CallerIo};
use crate::config::{Limits, Mode};
use crate::deadline::{Deadline, TickClock};
use crate::error::{CallError, ErrorCode};
use crate::trace::CallSpan;

/// How many times one call is made again on another path after nothing
/// ran: enough for a callee that moved twice while the call was made.
pub(crate) const MAX_REROUTES: u32 = 2;

/// The edge a route serves: who calls whom, from which namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Edge {
    /// The calling function (or the host).
    pub caller: String,
    /// The caller's namespace.
    pub namespace: String,
    /// The called function.
    pub target: String,
}

/// What chose a route's path and can choose again: the seam through which
/// a route, which knows neither the selector nor where functions are,
/// asks for a new path.
pub(crate) trait Reselect: Send + Sync {
    /// Looks again at where `route`'s callee is, after a call on the path
    /// `failed_key` failed with `why` before anything ran, by `deadline`;
    /// true if the route now has another path to try.
    fn reselect_after_failure(
        &self,
        route: &Route,
        failed_key: &str,
        why: &CallError,
        deadline: Deadline,
    ) -> bool;

    /// Notes that the callee of `route` denied a call (`why` names the
    /// caller and the policy), for `--explain`.
    fn denied(&self, route: &Route, why: &CallError);
}

/// How one caller reaches one callee: one path at a time, which can change.
pub(crate) struct Route {
    edge: Edge,
    /// The path of a route that starts embedded: the callee runs in this
    /// process, so the path never changes, and a call reads it without
    /// the atomic swap's bookkeeping (a sixth of a small embedded call).
    fixed: Option<Arc<Path>>,
    current: ArcSwap<Path>,
    /// Where calls go while the current path is full, if anywhere.
    spill: ArcSwapOption<Path>,
    /// Whether `spill` holds a path: what a warm call reads (a relaxed
    /// load, where the `ArcSwapOption` costs a guard).
    spills: AtomicBool,
    /// The counters of every mode this route has used, so that a switch
    /// keeps what the earlier paths counted.
    stats: Mutex<Vec<Arc<HopStats>>>,
    limits: Arc<Limits>,
    /// What an untimed call reads the time from.
    clock: TickClock,
    /// Who chooses a new path when a call found nothing at the current one.
    reselect: Option<Weak<dyn Reselect>>,
    /// What the current path was chosen from (a fingerprint of the
    /// placement facts), held while a new path is chosen, so that one
    /// re-selection runs at a time.
    placement: Mutex<u64>,
    /// Path changes so far.
    switches: AtomicU64,
    /// Calls made again on another path after nothing ran.
    rerouted: AtomicU64,
    /// Calls that went to the spill path.
    spilled: AtomicU64,
}

impl Route {
    /// A route for `edge` that starts on `path` (spilling to `spill` while
    /// it is full), and asks `reselect`, if any, for a new path when a call
    /// finds none; the number with it is the fingerprint of the placement
    /// the paths were chosen from.
    pub fn new(
        edge: Edge,
        path: PathSpec,
        spill: Option<PathSpec>,
        limits: Arc<Limits>,
        clock: TickClock,
        reselect: Option<(Weak<dyn Reselect>, u64)>,
    ) -> Route {
        let (reselect, placement) = match reselect {
            Some((r, placement)) => (Some(r), placement),
            None => (None, 0),
        };
        let stats = Arc::new(HopStats::new(&edge.caller, &edge.target, path.mode));
        let first = Path::installed(path, stats.clone());
        let route = Route {
            fixed: (first.mode == Mode::Embedded).then(|| first.clone()),
            current: ArcSwap::new(first),
            spill: ArcSwapOption::empty(),
            spills: AtomicBool::new(false),
            edge,
            stats: Mutex::new(vec![stats]),
            limits,
            clock,
            reselect,
            placement: Mutex::new(placement),
            switches: AtomicU64::new(0),
            rerouted: AtomicU64::new(0),
            spilled: AtomicU64::new(0),
        };
        route.set_spill(spill);
        route
    }

    /// The edge this route serves.
    pub fn edge(&self) -> &Edge {
        &self.edge
    }

    /// The path calls take now.
    pub fn path(&self) -> Arc<Path> {
        self.current.load_full()
    }

    /// The fingerprint of the placement the current path was chosen from,
    /// locked: whoever holds it is the one re-selecting. Waits for another
    /// re-selection until `deadline` at most (`None` then).
    pub fn placement_by(&self, deadline: Deadline) -> Option<MutexGuard<'_, u64>> {
        loop {
            match self.placement.try_lock() {
                Ok(guard) => return Some(guard),
                Err(std::sync::TryLockError::Poisoned(p)) => return Some(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) if deadline.is_expired() => return None,
                Err(std::sync::TryLockError::WouldBlock) => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        }
    }

    /// The path calls spill to while the current one is full, if any.
    pub fn spill_path(&self) -> Option<Arc<Path>> {
        self.spill.load_full()
    }

    /// Installs `spec` with the counters of its mode (kept across switches).
    fn install(&self, spec: PathSpec) -> Arc<Path> {
        let stats = {
            let mut all = self.stats.lock().unwrap_or_else(|p| p.into_inner());
            match all.iter().find(|s| s.edge().2 == spec.mode) {
                Some(s) => s.clone(),
                None => {
                    let s = Arc::new(HopStats::new(
                        &self.edge.caller,
                        &self.edge.target,
                        spec.mode,
                    ));
                    all.push(s.clone());
                    s
                }
            }
        };
        Path::installed(spec, stats)
    }

    /// Makes `spec` the path of the calls from now on; calls under way
    /// finish on the old one, which is dropped after them. A route that
    /// started embedded keeps its path.
    pub fn switch_to(&self, spec: PathSpec) {
        if self.fixed.is_some() {
            tracing::warn!(caller = %self.edge.caller, target = %self.edge.target, "an embedded route keeps its path; not switched to {}", spec.key);
            return;
        }
        self.current.store(self.install(spec));
        self.switches.fetch_add(1, Ordering::Relaxed);
    }

    /// Makes `spec` the path calls spill to while the current one is full
    /// (`None`: they wait for it instead).
    pub fn set_spill(&self, spec: Option<PathSpec>) {
        self.spills.store(spec.is_some(), Ordering::Relaxed);
        self.spill.store(spec.map(|s| self.install(s)));
    }

    /// The path the next call takes: the current one, or the spill path
    /// while the current one is full.
    /// The common case (the current path) is read without touching its
    /// reference count.
    fn next_path(&self) -> NextPath<'_> {
        if let Some(fixed) = &self.fixed {
            return NextPath::Fixed(fixed);
        }
        let current = self.current.load();
        // Only a path with a capacity spills, and it asks whether it is
        // full only when there is somewhere to spill to: asking may claim
        // a recheck of a saturated server, which only a route that can
        // spill the declined call may send.
        if current.capacity.is_some() && self.spills.load(Ordering::Relaxed) {
            if let Some(spill) = &*self.spill.load() {
                if current.is_full() {
                    self.spilled.fetch_add(1, Ordering::Relaxed);
                    return NextPath::Spill(Arc::clone(spill));
                }
            }
        }
        NextPath::Current(current)
    }

    /// The caller's span of a call on `path`, if this process traces.
    fn span(&self, path: &Path, from: &CallMeta, request_len: usize) -> Option<CallSpan> {
        CallSpan::client(
            &from.trace,
            &self.edge.caller,
            &self.edge.target,
            path.mode,
            request_len,
        )
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

    /// Where a call on `path` that failed with `e` is made again, if it
    /// is: nothing ran, it has tries and time left, and either the path
    /// was full (`RESOURCE_LIMIT`: a declined recheck, a connection over
    /// the server's cap) and the route has a spill path, or a
    /// re-selection found another path.
    fn reroute(&self, path: &Path, e: &CallError, tries: u32, deadline: Deadline) -> Option<Again> {
        if !e.nothing_ran() || tries >= MAX_REROUTES || deadline.is_expired() {
            return None;
        }
        let full = e.code == ErrorCode::ResourceLimit;
        let again = match &*self.spill.load() {
            Some(spill) if full && !std::ptr::eq(&**spill, path) => Again::Spill,
            _ => {
                let reselect = self.reselect.as_ref().and_then(Weak::upgrade)?;
                reselect
                    .reselect_after_failure(self, &path.key, e, deadline)
                    .then_some(Again::Anywhere)?
            }
        };
        self.rerouted.fetch_add(1, Ordering::Relaxed);
        Some(again)
    }

    /// The path a call made again takes: the spill path, or whichever
    /// [`Route::next_path`] gives.
    fn path_again(&self, again: Option<Again>) -> NextPath<'_> {
        // The first try reads nothing more than `next_path` does.
        if let Some(Again::Spill) = again {
            if let Some(spill) = self.spill.load_full() {
                self.spilled.fetch_add(1, Ordering::Relaxed);
                return NextPath::Spill(spill);
            }
        }
        self.next_path()
    }

    /// Makes a blocking call on behalf of a caller running under `from`.
    pub fn call(&self, io: &mut dyn CallerIo, from: &CallMeta) -> Result<(), CallError> {
        let mut tries = 0;
        let mut again = None;
        loop {
            let path = self.path_again(again);
            let _counted = path.enter();
            let timed = tries > 0 || path.stats.time_this_call();
            let now = if timed {
                Instant::now()
            } else {
                self.clock.now()
            };
            let request_len = io.request().len();
            let span = self.span(&path, from, request_len);
            let meta = match self.callee_meta(from, request_len, now, span.as_ref()) {
                Ok(meta) => meta,
                Err(e) => return Err(end_span(span, 0, e)),
            };
            let mut counting = CountingIo {
                io: &mut *io,
                len: 0,
            };
            let result = path
                .transport
                .call(&mut counting, &meta)
                .map_err(|e| past_deadline(e, &meta));
            let response_len = counting.len;
            if let Err(e) = &result {
                again = self.reroute(&path, e, tries, meta.deadline);
                if again.is_some() {
                    end_span(span, 0, e.clone());
                    tries += 1;
                    continue;
                }
            }
            if let Err(e) = &result {
                self.note_denied(e);
            }
            let started = timed.then_some(now);
            path.stats
                .record(started, request_len, response_len, outcome(&result));
            if let Some(span) = span {
                span.end(response_len, result.as_ref().map(|_| ()));
            }
            return result;
        }
    }

    /// Starts a call that runs while the caller goes on; the request is
    /// taken before this returns.
    pub fn start(&self, io: &mut dyn CallerIo, from: &CallMeta) -> Result<StartedCall, CallError> {
        let mut tries = 0;
        let mut again = None;
        loop {
            let path = Arc::clone(&self.path_again(again));
            let counted = path.enter();
            let started = Instant::now();
            let request_len = io.request().len();
            let span = self.span(&path, from, request_len);
            let meta = match self.callee_meta(from, request_len, started, span.as_ref()) {
                Ok(meta) => meta,
                Err(e) => return Err(end_span(span, 0, e)),
            };
            match path.transport.start(io, &meta) {
                Ok(pending) => {
                    return Ok(StartedCall {
                        pending,
                        _counted: counted,
                        path,
                        meta,
                        started,
                        request_len,
                        span,
                    })
                }
                Err(e) => {
                    again = self.reroute(&path, &e, tries, meta.deadline);
                    if again.is_some() {
                        end_span(span, 0, e);
                        tries += 1;
                        continue;
                    }
                    self.note_denied(&e);
                    path.stats
                        .record(Some(started), request_len, 0, Err(e.code));
                    return Err(end_span(span, 0, past_deadline(e, &meta)));
                }
            }
        }
    }

    /// Tells the router of a call its callee denied, if `e` is that.
    fn note_denied(&self, e: &CallError) {
        if e.code != ErrorCode::Denied {
            return;
        }
        if let Some(router) = self.reselect.as_ref().and_then(Weak::upgrade) {
            router.denied(self, e);
        }
    }

    /// A snapshot of this edge's counters: one report per mode it used,
    /// the current one first.
    pub fn reports(&self) -> Vec<HopReport> {
        let current = self.current.load();
        let all = self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut out: Vec<HopReport> = all
            .iter()
            .map(|s| {
                let mut r = s.report();
                r.current = Arc::ptr_eq(s, &current.stats);
                if r.current {
                    r.path = Some(current.key.clone());
                    r.paths = current.transport.paths();
                    r.switches = self.switches.load(Ordering::Relaxed);
                    r.rerouted = self.rerouted.load(Ordering::Relaxed);
                    r.spilled = self.spilled.load(Ordering::Relaxed);
                }
                r
            })
            .collect();
        out.sort_by_key(|r| !r.current);
        out
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
    /// The path it was started on, whose counters it goes to.
    path: Arc<Path>,
    /// Counts it on that path until it is waited for.
    _counted: InFlight,
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
        self.path.stats.record(
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
