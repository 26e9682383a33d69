//! Choosing among the nodes that serve a callee: power of two choices over
//! each node's load as this caller sees it, its calls in flight there and
//! an exponentially weighted moving average (EWMA) of their latency. Two
//! nodes drawn at random, the less loaded one taken: it avoids a slow or
//! busy node without the herding of always taking the least loaded one.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// The weight of a new latency sample in the average: 1/8.
const EWMA_SHIFT: u32 = 3;

/// One node's load, as this caller sees it.
#[derive(Debug, Default)]
pub(crate) struct Load {
    in_flight: AtomicUsize,
    /// Nanoseconds; 0 until the first call returns.
    ewma_nanos: AtomicU64,
}

impl Load {
    /// Counts a call in flight until the returned guard is dropped.
    pub fn begin(&self) -> Busy<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(self)
    }

    /// Takes a call's latency into the average (updates from concurrent
    /// calls may overwrite each other: it is an estimate).
    pub fn record(&self, took: Duration) {
        let sample = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let old = self.ewma_nanos.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            let delta = (i128::from(sample) - i128::from(old)) >> EWMA_SHIFT;
            (i128::from(old) + delta).clamp(1, i128::from(u64::MAX)) as u64
        };
        self.ewma_nanos.store(new, Ordering::Relaxed);
    }

    /// The expected wait of one more call: (calls in flight + 1) × average
    /// latency. A node not measured yet counts as fast, so it gets tried.
    pub fn score(&self) -> u128 {
        let n = self.in_flight.load(Ordering::Relaxed) as u128 + 1;
        n * u128::from(self.ewma_nanos.load(Ordering::Relaxed).max(1))
    }

    /// The average latency so far, if any call returned.
    #[cfg(test)]
    pub fn average(&self) -> Option<Duration> {
        let n = self.ewma_nanos.load(Ordering::Relaxed);
        (n > 0).then(|| Duration::from_nanos(n))
    }
}

/// A call counted in flight on a node.
pub(crate) struct Busy<'a>(&'a Load);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Of `items`, the less loaded (by `score`) of two drawn with the random
/// number `draw`; the only one when there is one.
pub(crate) fn two_choices<T>(items: &[T], score: impl Fn(&T) -> u128, draw: u64) -> Option<&T> {
    let n = items.len() as u64;
    match n {
        0 => None,
        1 => items.first(),
        _ => {
            let a = draw % n;
            let b = (a + 1 + (draw >> 32) % (n - 1)) % n;
            let (a, b) = (&items[a as usize], &items[b as usize]);
            Some(if score(b) < score(a) { b } else { a })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_less_loaded_of_two_is_taken_and_never_the_same_twice() {
        let scores = [10u128, 5, 20];
        for draw in 0..1000u64 {
            let draw = draw.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let got = *two_choices(&scores, |s| *s, draw).unwrap();
            // The worst of three is never taken: it loses to either other.
            assert_ne!(got, 20, "draw {draw}");
        }
        assert_eq!(two_choices(&[7u128], |s| *s, 3), Some(&7));
        assert_eq!(two_choices::<u128>(&[], |s| *s, 3), None);
    }

    #[test]
    fn two_items_are_always_compared() {
        for draw in 0..100u64 {
            assert_eq!(two_choices(&[3u128, 1], |s| *s, draw << 17), Some(&1));
        }
    }

    #[test]
    fn load_counts_calls_in_flight_and_averages_latency() {
        let load = Load::default();
        assert_eq!(load.score(), 1, "an unmeasured idle node is the best");
        load.record(Duration::from_micros(800));
        assert_eq!(load.average(), Some(Duration::from_micros(800)));
        let idle = load.score();
        {
            let _a = load.begin();
            let _b = load.begin();
            assert_eq!(load.score(), idle * 3);
        }
        assert_eq!(load.score(), idle);
        for _ in 0..64 {
            load.record(Duration::from_micros(100));
        }
        let avg = load.average().unwrap();
        assert!(avg < Duration::from_micros(110), "{avg:?}");
    }
}
