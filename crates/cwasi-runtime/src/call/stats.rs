//! What a route counts of its calls: calls, failures by code, bytes each
//! way, and a latency histogram, per edge (caller → callee) and mode (a
//! route whose path changes keeps one set per mode it used). The
//! per-hop timings of `cwasi run` and the Prometheus metrics read them.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::transport::PathCounts;
use crate::config::Mode;
use crate::error::ErrorCode;

/// Upper bounds of the latency histogram's buckets, in seconds: from a small
/// embedded call to a call timeout, about three per decade. A call slower
/// than the last bound is counted only in the total.
pub const LATENCY_BUCKETS_SECONDS: [f64; 17] = [
    0.000_001,
    0.000_002_5,
    0.000_005,
    0.000_01,
    0.000_025,
    0.000_05,
    0.000_1,
    0.000_25,
    0.000_5,
    0.001,
    0.002_5,
    0.005,
    0.01,
    0.025,
    0.1,
    1.0,
    10.0,
];

/// The same bounds in nanoseconds, compared against a call's time without
/// a float conversion.
const LATENCY_BUCKETS_NANOS: [u64; 17] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    100_000_000,
    1_000_000_000,
    10_000_000_000,
];

/// How many ABI error codes there are (`-1` to `-13`).
const CODES: usize = 13;

/// One embedded call in this many is timed. Two clock reads cost about a
/// sixth of a 64 B embedded call; a sample keeps the mean without that
/// cost. Calls over any other transport take microseconds or more, and
/// every one of them is timed.
pub(super) const EMBEDDED_TIMED_ONE_IN: u32 = 8;

/// The first calls of every edge are all timed, so that a run of a few
/// calls has times too (the sample would often have none).
pub(super) const FIRST_CALLS_TIMED: u32 = 16;

thread_local! {
    /// This thread's sampling state (xorshift32): random, so that no
    /// pattern of calls across edges can hide one edge from the sample.
    static SAMPLER: Cell<u32> = const { Cell::new(0x9E37_79B9) };
}

/// Counters of the calls along one edge (caller → callee).
pub(super) struct HopStats {
    caller: String,
    target: String,
    mode: Mode,
    /// Times one call in this many (1: every call).
    timed_one_in: u32,
    /// How many of the first calls are still to be timed, whatever the
    /// sample says.
    first_left: AtomicU32,
    /// One lock per call instead of several atomic additions: two atomic
    /// operations where a 64 B embedded call takes a few hundred
    /// nanoseconds in all.
    counters: Mutex<HopCounters>,
}

/// What every call updates comes first, in one cache line; the buckets
/// (one timed call in eight, embedded) and the failures by code after it.
#[derive(Default)]
#[repr(C)]
struct HopCounters {
    calls: u64,
    failures: u64,
    bytes_in: u64,
    bytes_out: u64,
    timed: u64,
    nanos: u64,
    max_nanos: u64,
    /// Timed calls per latency bucket (not cumulative).
    buckets: [u64; LATENCY_BUCKETS_NANOS.len()],
    /// By code: index `-code - 1`.
    failures_by_code: [u64; CODES],
}

impl HopStats {
    pub(super) fn new(caller: &str, target: &str, mode: Mode) -> HopStats {
        HopStats {
            caller: caller.to_string(),
            target: target.to_string(),
            mode,
            timed_one_in: match mode {
                Mode::Embedded => EMBEDDED_TIMED_ONE_IN,
                _ => 1,
            },
            first_left: AtomicU32::new(FIRST_CALLS_TIMED),
            counters: Mutex::new(HopCounters::default()),
        }
    }

    /// The edge these count: caller, callee and mode.
    pub(super) fn edge(&self) -> (&str, &str, Mode) {
        (&self.caller, &self.target, self.mode)
    }

    /// Whether the call about to be made is timed.
    pub(super) fn time_this_call(&self) -> bool {
        if self.timed_one_in <= 1 {
            return true;
        }
        // After the first calls this is one relaxed load of a word no
        // call writes any more.
        if self.first_left.load(Ordering::Relaxed) > 0 {
            let taken = self
                .first_left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            if taken.is_ok() {
                return true;
            }
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

    /// Counts one call; `started` is when it started, if it was timed, and
    /// `outcome` its error code if it failed.
    pub(super) fn record(
        &self,
        started: Option<Instant>,
        request: usize,
        response: usize,
        outcome: Result<(), ErrorCode>,
    ) {
        let ns = started.map(|t| t.elapsed().as_nanos() as u64);
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        c.calls += 1;
        if let Err(code) = outcome {
            c.failures += 1;
            let index = usize::try_from(-(code as i32) - 1)
                .unwrap_or(0)
                .min(CODES - 1);
            c.failures_by_code[index] += 1;
        }
        if let Some(ns) = ns {
            c.timed += 1;
            c.nanos = c.nanos.saturating_add(ns);
            c.max_nanos = c.max_nanos.max(ns);
            if let Some(b) = LATENCY_BUCKETS_NANOS.iter().position(|&le| ns <= le) {
                c.buckets[b] += 1;
            }
        }
        c.bytes_in = c.bytes_in.saturating_add(request as u64);
        c.bytes_out = c.bytes_out.saturating_add(response as u64);
    }

    pub(super) fn report(&self) -> HopReport {
        let c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let failures_by_code = c
            .failures_by_code
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .filter_map(|(i, &n)| Some((ErrorCode::from_raw(-(i as i32) - 1)?, n)))
            .collect();
        HopReport {
            caller: self.caller.clone(),
            target: self.target.clone(),
            mode: self.mode,
            calls: c.calls,
            failures: c.failures,
            failures_by_code,
            timed: c.timed,
            total: Duration::from_nanos(c.nanos),
            max: Duration::from_nanos(c.max_nanos),
            latency_buckets: c.buckets.to_vec(),
            bytes_in: c.bytes_in,
            bytes_out: c.bytes_out,
            paths: PathCounts::default(),
            current: true,
            path: None,
            switches: 0,
            rerouted: 0,
            spilled: 0,
        }
    }
}

/// A snapshot of one edge's counters, for per-hop timings and metrics.
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
    /// The failed calls by error code (codes that occurred only).
    pub failures_by_code: Vec<(ErrorCode, u64)>,
    /// Calls that were timed: every call, but one embedded call in eight
    /// (a random sample), since two clock reads are a sixth of a small
    /// embedded call.
    pub timed: u64,
    /// Total time inside the timed calls, as the caller saw it.
    pub total: Duration,
    /// The slowest timed call.
    pub max: Duration,
    /// Timed calls per bucket of [`LATENCY_BUCKETS_SECONDS`] (each counts
    /// the calls above the previous bound, up to its own); the calls above
    /// the last bound are `timed` minus their sum.
    pub latency_buckets: Vec<u64>,
    /// Request bytes sent.
    pub bytes_in: u64,
    /// Response bytes received.
    pub bytes_out: u64,
    /// Calls retried on another node, and calls that fell back to the
    /// broker (remote-direct routes only).
    pub paths: PathCounts,
    /// Whether this is the edge's path now: an edge whose callee moved has
    /// one report per mode it used, and only the current one is `true`.
    pub current: bool,
    /// What the current path reaches (`local <socket>`, `remote-direct
    /// '<node>' at <address>`, ...), on the current report.
    pub path: Option<String>,
    /// How often the edge's path changed (on its current report).
    pub switches: u64,
    /// Calls that failed before any callee took them and were made again
    /// on another path (on its current report).
    pub rerouted: u64,
    /// Calls sent to the spill path because the current one was full (on
    /// its current report; they are counted under the spill path's mode).
    pub spilled: u64,
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
            embedded.record(t.then(Instant::now), 64, 8, Ok(()));
            assert!(local.time_this_call());
        }
        let r = embedded.report();
        assert_eq!((r.calls, r.bytes_in, r.bytes_out), (n, 64 * n, 8 * n));
        let expected = n / u64::from(EMBEDDED_TIMED_ONE_IN) + u64::from(FIRST_CALLS_TIMED);
        assert!(
            r.timed.abs_diff(expected) < expected / 10,
            "{} of {n} calls timed, expected about {expected}",
            r.timed
        );
        assert_eq!(r.latency_buckets.iter().sum::<u64>(), r.timed);
        assert!(r.mean().is_some());
        assert_eq!(local.report().mean(), None);
    }

    #[test]
    fn the_first_calls_of_an_embedded_edge_are_all_timed() {
        let embedded = HopStats::new("a", "b", Mode::Embedded);
        for _ in 0..FIRST_CALLS_TIMED {
            assert!(embedded.time_this_call());
        }
        let timed = (0..8000).filter(|_| embedded.time_this_call()).count();
        assert!(timed < 2000, "{timed} of 8000 later calls timed");
    }

    #[test]
    fn the_bounds_in_seconds_and_nanoseconds_agree() {
        for (s, ns) in LATENCY_BUCKETS_SECONDS.iter().zip(LATENCY_BUCKETS_NANOS) {
            assert_eq!((s * 1e9).round() as u64, ns);
        }
    }

    #[test]
    fn failures_are_counted_by_code_and_latencies_by_bucket() {
        let s = HopStats::new("a", "b", Mode::Local);
        let now = Instant::now();
        s.record(Some(now), 1, 0, Err(ErrorCode::Timeout));
        s.record(Some(now), 1, 0, Err(ErrorCode::Timeout));
        s.record(None, 1, 0, Err(ErrorCode::NotCallable));
        s.record(None, 1, 2, Ok(()));
        let r = s.report();
        assert_eq!((r.calls, r.failures, r.timed), (4, 3, 2));
        assert_eq!(
            r.failures_by_code,
            vec![(ErrorCode::Timeout, 2), (ErrorCode::NotCallable, 1)]
        );
        assert_eq!(r.latency_buckets.len(), LATENCY_BUCKETS_SECONDS.len());
        assert_eq!(r.latency_buckets.iter().sum::<u64>(), 2);
    }
}
