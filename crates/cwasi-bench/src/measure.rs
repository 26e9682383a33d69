//! Timing one operation: warm-up, then samples until a time budget and a
//! minimum count are both met, with statistics over the samples.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::BenchError;

/// Operations faster than this are timed in batches, so that reading the
/// clock (~20-40 ns) does not distort them; a sample is then the mean of a
/// batch.
const BATCH_TARGET: Duration = Duration::from_micros(20);

/// How long one measurement runs.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Time the operation runs untimed first (at least one run).
    pub warmup: Duration,
    /// Time spent taking samples.
    pub time: Duration,
    /// Samples taken even if the time runs out first.
    pub min_samples: usize,
    /// Samples after which sampling stops even if time is left, which bounds
    /// memory on very fast operations.
    pub max_samples: usize,
}

/// The samples of one measurement.
#[derive(Debug, Clone)]
pub struct Samples {
    /// Time per operation of each sample, in ns, sorted.
    sorted_ns: Vec<f64>,
    /// Operations run while sampling (not in the warm-up).
    pub ops: u64,
    /// Operations run in the warm-up.
    pub warm_ops: u64,
    /// Wall-clock time of the sampling phase.
    pub wall: Duration,
    /// Operations per sample (1 unless the operation is batched).
    pub batch: u64,
}

impl Samples {
    /// The median time per operation, in ns.
    pub fn median(&self) -> f64 {
        percentile(&self.sorted_ns, 0.5)
    }

    /// The 99th percentile, in ns (the largest sample if there are fewer
    /// than 100).
    pub fn p99(&self) -> f64 {
        percentile(&self.sorted_ns, 0.99)
    }

    /// The mean time per operation over the sampling phase, wall clock.
    pub fn mean(&self) -> f64 {
        self.wall.as_nanos() as f64 / self.ops.max(1) as f64
    }

    /// Number of samples.
    pub fn count(&self) -> usize {
        self.sorted_ns.len()
    }
}

/// The `q` quantile (0..=1) of sorted values, by the nearest-rank method;
/// NaN if there are none.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Fails with [`BenchError::Interrupted`] once `stop` is set.
pub fn check_stop(stop: &AtomicBool) -> Result<(), BenchError> {
    if stop.load(Ordering::Relaxed) {
        return Err(BenchError::Interrupted);
    }
    Ok(())
}

/// Measures `op`: warms it up, sizes batches, then samples within `budget`.
/// The first error aborts the measurement, and so does `stop`.
pub fn measure(
    budget: &Budget,
    stop: &AtomicBool,
    mut op: impl FnMut() -> Result<(), BenchError>,
) -> Result<Samples, BenchError> {
    let start = Instant::now();
    let mut warm_runs = 0u64;
    while warm_runs == 0 || start.elapsed() < budget.warmup {
        check_stop(stop)?;
        op()?;
        warm_runs += 1;
    }
    let per_op = start.elapsed().as_nanos() as f64 / warm_runs as f64;
    let batch = if per_op > 0.0 {
        ((BATCH_TARGET.as_nanos() as f64 / per_op).ceil() as u64).max(1)
    } else {
        1
    };
    let mut samples = Vec::new();
    let mut ops = 0u64;
    let start = Instant::now();
    while samples.len() < budget.min_samples.max(1)
        || (start.elapsed() < budget.time && samples.len() < budget.max_samples)
    {
        check_stop(stop)?;
        let t = Instant::now();
        for _ in 0..batch {
            black_box(op()?);
        }
        samples.push(t.elapsed().as_nanos() as f64 / batch as f64);
        ops += batch;
    }
    let wall = start.elapsed();
    samples.sort_by(f64::total_cmp);
    Ok(Samples {
        sorted_ns: samples,
        ops,
        warm_ops: warm_runs,
        wall,
        batch,
    })
}

/// Times `op` once after each of `calls` pauses of `gap` (one warm-up
/// call first): what a call costs when the other side has gone to sleep.
pub fn after_idle(
    gap: Duration,
    calls: usize,
    stop: &AtomicBool,
    mut op: impl FnMut() -> Result<(), BenchError>,
) -> Result<Samples, BenchError> {
    op()?;
    let mut samples = Vec::with_capacity(calls);
    let start = Instant::now();
    for _ in 0..calls.max(1) {
        check_stop(stop)?;
        std::thread::sleep(gap);
        let t = Instant::now();
        black_box(op()?);
        samples.push(t.elapsed().as_nanos() as f64);
    }
    let wall = start.elapsed();
    samples.sort_by(f64::total_cmp);
    Ok(Samples {
        ops: samples.len() as u64,
        sorted_ns: samples,
        warm_ops: 1,
        wall,
        batch: 1,
    })
}

/// Waits `window` doing nothing (checking `stop` every 100 ms): one
/// "operation" that lasts the window, so that CPU per operation is the CPU
/// used while idle.
pub fn idle(window: Duration, stop: &AtomicBool) -> Result<Samples, BenchError> {
    let start = Instant::now();
    while start.elapsed() < window {
        check_stop(stop)?;
        std::thread::sleep((window - start.elapsed().min(window)).min(Duration::from_millis(100)));
    }
    let wall = start.elapsed();
    Ok(Samples {
        sorted_ns: vec![wall.as_nanos() as f64],
        ops: 1,
        warm_ops: 0,
        wall,
        batch: 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn measures_within_budget_and_stops_on_error() {
        let budget = Budget {
            warmup: Duration::from_millis(5),
            time: Duration::from_millis(20),
            min_samples: 3,
            max_samples: 1000,
        };
        let go = AtomicBool::new(false);
        let s = measure(&budget, &go, || {
            std::thread::sleep(Duration::from_micros(100));
            Ok(())
        })
        .unwrap();
        assert!(s.count() >= 3 && s.batch == 1);
        assert!(s.median() >= 100_000.0 && s.p99() >= s.median());
        let fast = measure(&budget, &go, || Ok(())).unwrap();
        assert!(fast.batch > 1 && fast.count() <= 1000);
        let mut n = 0;
        let err = measure(&budget, &go, || {
            n += 1;
            if n > 2 {
                Err(BenchError::op("test", "boom"))
            } else {
                Ok(())
            }
        });
        assert!(err.is_err());
    }

    #[test]
    fn after_idle_pauses_before_each_call_and_idle_watches_a_window() {
        let go = AtomicBool::new(false);
        let mut calls = 0;
        let started = Instant::now();
        let s = after_idle(Duration::from_millis(20), 3, &go, || {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!((calls, s.count(), s.ops), (4, 3, 3));
        assert!(started.elapsed() >= Duration::from_millis(60));
        assert!(s.median() < 20e6, "the pause is not timed");
        let w = idle(Duration::from_millis(30), &go).unwrap();
        assert_eq!(w.ops, 1);
        assert!(w.wall >= Duration::from_millis(30));
    }

    #[test]
    fn stops_when_asked() {
        let budget = Budget {
            warmup: Duration::from_secs(60),
            time: Duration::from_secs(60),
            min_samples: 1_000_000,
            max_samples: usize::MAX,
        };
        let stop = AtomicBool::new(false);
        let mut n = 0;
        let r = measure(&budget, &stop, || {
            n += 1;
            if n == 10 {
                stop.store(true, Ordering::Relaxed);
            }
            Ok(())
        });
        assert!(matches!(r, Err(BenchError::Interrupted)), "{:?}", r.err());
        assert_eq!(n, 10);
    }
}
