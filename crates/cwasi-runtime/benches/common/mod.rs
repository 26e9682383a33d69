//! Harness code shared by the hand-written benchmarks (`embedded.rs`,
//! `local.rs`): the command line, timing in alternating batches, statistics
//! and formatting. See docs/benchmarks.md.

use std::time::{Duration, Instant};

/// Sizes are named as `cwasi bench` names them. (Not every benchmark uses
/// every name, and each compiles this module on its own.)
#[allow(unused_imports)]
pub use cwasi_bench::{size_label, KIB, MIB};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Full,
    Quick,
    Smoke,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Full => "full",
            Profile::Quick => "quick (--quick)",
            Profile::Smoke => "smoke (no --bench: one pass, figures are meaningless)",
        }
    }
}

/// The command line: `--bench` (added by `cargo bench`), `--quick`, flags
/// of the benchmark itself, and optional size filters such as `64B` or
/// `1MiB` (default: every size).
pub struct Args {
    pub profile: Profile,
    pub sizes: Vec<usize>,
}

impl Args {
    /// Parses the arguments of the benchmark `bench`, whose sizes are `all`
    /// and whose own flags are `own_flags`; also returns which of those
    /// were given.
    pub fn parse(bench: &str, all: &[usize], own_flags: &[&str]) -> (Args, Vec<String>) {
        let mut is_bench = false;
        let mut quick = false;
        let mut flags = Vec::new();
        let mut filters = Vec::new();
        for arg in std::env::args().skip(1) {
            match arg.as_str() {
                "--bench" => is_bench = true,
                "--quick" => quick = true,
                flag if own_flags.contains(&flag) => flags.push(flag.to_string()),
                flag if flag.starts_with('-') => {
                    eprintln!("{bench} bench: ignoring unknown flag {flag:?}")
                }
                filter => filters.push(filter.replace(' ', "").to_ascii_lowercase()),
            }
        }
        let compact = |size: usize| size_label(size).replace(' ', "");
        let sizes: Vec<usize> = all
            .iter()
            .copied()
            .filter(|&size| {
                filters.is_empty() || filters.contains(&compact(size).to_ascii_lowercase())
            })
            .collect();
        if sizes.is_empty() {
            let known: Vec<String> = all.iter().map(|&s| compact(s)).collect();
            eprintln!(
                "{bench} bench: no size matches {filters:?} (sizes: {})",
                known.join(" ")
            );
            std::process::exit(64);
        }
        let profile = match (is_bench, quick) {
            (false, _) => Profile::Smoke,
            (true, true) => Profile::Quick,
            (true, false) => Profile::Full,
        };
        (Args { profile, sizes }, flags)
    }
}

/// How long [`measure`] spends on each size.
pub struct Settings {
    /// Time each measured operation runs before sampling starts.
    pub warmup: Duration,
    /// Time spent sampling (all operations of a size, interleaved).
    pub budget: Duration,
    /// Samples taken even if the budget runs out first.
    pub min_samples: usize,
    /// Length a timed batch aims at, so that timer overhead is negligible.
    pub sample_target: Duration,
}

impl Settings {
    /// The usual settings of a profile: a full run warms up for 0.5 s and
    /// samples for `full_budget` (at least `full_min_samples`); a quick run
    /// warms up for 0.1 s and samples for `quick_budget` (at least 3); a
    /// smoke pass does neither. Batches aim at 1 ms.
    pub fn for_profile(
        profile: Profile,
        full_budget: Duration,
        full_min_samples: usize,
        quick_budget: Duration,
    ) -> Settings {
        let (warmup, budget, min_samples) = match profile {
            Profile::Full => (Duration::from_millis(500), full_budget, full_min_samples),
            Profile::Quick => (Duration::from_millis(100), quick_budget, 3),
            Profile::Smoke => return Settings::smoke(),
        };
        Settings {
            warmup,
            budget,
            min_samples,
            sample_target: Duration::from_millis(1),
        }
    }

    /// The settings of a smoke pass: no warm-up, one sample of one run.
    pub fn smoke() -> Settings {
        Settings {
            warmup: Duration::ZERO,
            budget: Duration::ZERO,
            min_samples: 1,
            sample_target: Duration::ZERO,
        }
    }
}

/// Per-operation times (ns) of the timed batches of one measurement.
pub struct Samples {
    pub per_op_ns: Vec<f64>,
    pub batch: u64,
}

impl Samples {
    fn sorted(&self) -> Vec<f64> {
        let mut v = self.per_op_ns.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    pub fn median(&self) -> f64 {
        median(&self.per_op_ns)
    }

    pub fn min(&self) -> f64 {
        self.sorted()[0]
    }

    pub fn p90(&self) -> f64 {
        let v = self.sorted();
        v[((v.len() - 1) as f64 * 0.9).round() as usize]
    }

    /// One line: median, min, p90, throughput for `size` bytes, and how the
    /// samples were taken (`unit`: what one operation is, e.g. "calls").
    pub fn print(&self, name: &str, size: usize, unit: &str) {
        println!(
            "  {name:<13} median {:>9}  min {:>9}  p90 {:>9}  {:>6.2} GB/s  ({} samples x {} {unit})",
            fmt_ns(self.median()),
            fmt_ns(self.min()),
            fmt_ns(self.p90()),
            size as f64 / self.median(),
            self.per_op_ns.len(),
            self.batch
        );
    }
}

pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    assert!(n > 0, "median of no samples");
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs `f` `n` times and returns the time per run, in ns.
#[inline(never)]
fn time_batch<F: FnMut()>(f: &mut F, n: u64) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

/// An operation to measure. The loop of a batch is compiled for the closure
/// itself; only the call per batch goes through a pointer.
pub struct Op<'a> {
    run_batch: Box<dyn FnMut(u64) -> f64 + 'a>,
}

/// Wraps one run of an operation for [`measure`].
pub fn op<'a>(mut f: impl FnMut() + 'a) -> Op<'a> {
    Op {
        run_batch: Box::new(move |n| time_batch(&mut f, n)),
    }
}

impl Op<'_> {
    /// Runs the operation for at least `warmup` and at least 3 times, in
    /// batches that double; returns the time per run of the last batch, in
    /// ns (the first, cold runs do not count in it).
    fn warm_up(&mut self, warmup: Duration) -> f64 {
        let start = Instant::now();
        let (mut n, mut runs) = (1u64, 0u64);
        loop {
            let per_op = (self.run_batch)(n);
            runs += n;
            let elapsed = start.elapsed();
            if runs >= 3 && elapsed >= warmup {
                return per_op;
            }
            // Double, but do not overshoot the warm-up by much.
            let left = warmup.saturating_sub(elapsed).as_nanos() as f64;
            n = (n * 2).min((left / per_op.max(1.0)).ceil() as u64).max(1);
        }
    }
}

fn batch_for(per_op_ns: f64, target: Duration) -> u64 {
    ((target.as_nanos() as f64 / per_op_ns.max(1.0)).ceil() as u64).max(1)
}

/// Measures the operations in alternating batches (one batch of each in
/// turn, over and over), so that all see the same machine: the box is
/// shared, and its load drifts. Each is warmed up first, then its batch is
/// sized to take about `sample_target`.
pub fn measure<const N: usize>(s: &Settings, mut ops: [Op<'_>; N]) -> [Samples; N] {
    let batches: Vec<u64> = ops
        .iter_mut()
        .map(|o| batch_for(o.warm_up(s.warmup), s.sample_target))
        .collect();
    let mut samples: [Vec<f64>; N] = std::array::from_fn(|_| Vec::new());
    let start = Instant::now();
    while samples[0].len() < s.min_samples || start.elapsed() < s.budget {
        for ((o, &n), out) in ops.iter_mut().zip(&batches).zip(samples.iter_mut()) {
            out.push((o.run_batch)(n));
        }
    }
    let mut samples = samples.into_iter();
    std::array::from_fn(|i| Samples {
        per_op_ns: samples.next().expect("one sample list per operation"),
        batch: batches[i],
    })
}

pub fn fmt_ns(ns: f64) -> String {
    if ns < 1_000.0 {
        format!("{ns:.1} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.2} us", ns / 1e3)
    } else if ns < 1_000_000_000.0 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

pub fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The banner every benchmark starts with.
pub fn print_banner(title: &str, profile: Profile) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("{title}");
    println!("profile: {}", profile.name());
    println!(
        "cpus: {cpus}, load average (1/5/15 min) at start: {}",
        load_average()
    );
    println!();
}

/// The line every benchmark ends with.
pub fn print_footer(started: Instant) {
    println!();
    println!(
        "took {:.1} s; load average at end: {}",
        started.elapsed().as_secs_f64(),
        load_average()
    );
}
