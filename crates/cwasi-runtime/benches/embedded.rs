//! Embedded-mode benchmark (issue "Foundation").
//!
//! For 64 B, 1 MiB, 10 MiB and 100 MiB it measures, in one process and one
//! run:
//!
//! - `memcpy`: copying the bytes from one warm `Vec` into another,
//!   preallocated and warm;
//! - `host->guest`: `Runtime::call_into(.., "discard", ..)`, which copies the
//!   request from host memory into the callee's linear memory;
//! - `guest->guest`: the `bench_caller` entry calling `discard` in a loop,
//!   each call copying the payload from the caller's linear memory into the
//!   callee's, as timed by the host around each call (`Runtime::hops`).
//!
//! and prints the ratios to memcpy and whether this run met the targets
//! (64 B call <= 1 us; <= 1.5x memcpy at >= 1 MiB). It never asserts on
//! time. See docs/benchmarks.md.
//!
//! `cargo bench -p cwasi-runtime --bench embedded` runs it in full;
//! append `-- --quick` for a shorter, noisier run, and/or size filters such
//! as `-- 64B 1MiB` to run only those sizes. Without `--bench` (as
//! `cargo test --benches` runs it) it does one smoke pass whose figures mean
//! nothing.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cwasi_runtime::{FunctionSpec, HopReport, Runtime};
use test_programs_artifacts as progs;

const MIB: usize = 1 << 20;
const SIZES: [usize; 4] = [64, MIB, 10 * MIB, 100 * MIB];

/// The 64 B call target, in nanoseconds.
const SMALL_CALL_TARGET_NS: f64 = 1_000.0;
/// The largest ratio to memcpy allowed from [`LARGE_FROM`] bytes up.
const LARGE_RATIO_TARGET: f64 = 1.5;
const LARGE_FROM: usize = MIB;

const NAMESPACE: &str = "default";
const CALLER: &str = "bench_caller";
/// The same program with zero iterations: what a `bench_caller` run costs
/// besides its calls (instantiation, building the payload).
const IDLE_CALLER: &str = "bench_caller_idle";
const CALLEE: &str = "discard";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Profile {
    Full,
    Quick,
    Smoke,
}

/// The command line: `--bench` (added by `cargo bench`), `--quick`, and
/// optional size filters such as `64B` or `1MiB` (default: every size).
struct Args {
    profile: Profile,
    sizes: Vec<usize>,
}

impl Args {
    fn parse() -> Args {
        let mut bench = false;
        let mut quick = false;
        let mut filters = Vec::new();
        for arg in std::env::args().skip(1) {
            match arg.as_str() {
                "--bench" => bench = true,
                "--quick" => quick = true,
                flag if flag.starts_with('-') => {
                    eprintln!("embedded bench: ignoring unknown flag {flag:?}")
                }
                filter => filters.push(filter.replace(' ', "").to_ascii_lowercase()),
            }
        }
        let sizes: Vec<usize> = SIZES
            .into_iter()
            .filter(|&size| {
                let label = size_label(size).replace(' ', "").to_ascii_lowercase();
                filters.is_empty() || filters.contains(&label)
            })
            .collect();
        if sizes.is_empty() {
            eprintln!("embedded bench: no size matches {filters:?} (sizes: 64B 1MiB 10MiB 100MiB)");
            std::process::exit(64);
        }
        let profile = match (bench, quick) {
            (false, _) => Profile::Smoke,
            (true, true) => Profile::Quick,
            (true, false) => Profile::Full,
        };
        Args { profile, sizes }
    }
}

impl Profile {
    fn name(self) -> &'static str {
        match self {
            Profile::Full => "full",
            Profile::Quick => "quick (--quick)",
            Profile::Smoke => "smoke (no --bench: one pass, figures are meaningless)",
        }
    }

    fn settings(self) -> Settings {
        match self {
            Profile::Full => Settings {
                warmup: Duration::from_millis(500),
                budget: Duration::from_secs(3),
                min_samples: 5,
                sample_target: Duration::from_millis(1),
                gg_runs: 5,
            },
            Profile::Quick => Settings {
                warmup: Duration::from_millis(100),
                budget: Duration::from_millis(500),
                min_samples: 3,
                sample_target: Duration::from_millis(1),
                gg_runs: 3,
            },
            Profile::Smoke => Settings {
                warmup: Duration::ZERO,
                budget: Duration::ZERO,
                min_samples: 1,
                sample_target: Duration::ZERO,
                gg_runs: 1,
            },
        }
    }

    /// Calls `bench_caller` makes per run, for a payload of `size` bytes.
    fn gg_iterations(self, size: usize) -> u64 {
        match (self, size) {
            (Profile::Full, s) if s <= 64 => 20_000,
            (Profile::Full, s) if s <= MIB => 200,
            (Profile::Full, s) if s <= 10 * MIB => 50,
            (Profile::Full, _) => 10,
            (Profile::Quick, s) if s <= 64 => 2_000,
            (Profile::Quick, s) if s <= MIB => 40,
            (Profile::Quick, s) if s <= 10 * MIB => 10,
            (Profile::Quick, _) => 3,
            (Profile::Smoke, _) => 2,
        }
    }
}

struct Settings {
    /// Time each measured operation runs before sampling starts.
    warmup: Duration,
    /// Time spent sampling memcpy and host->guest (interleaved) per size.
    budget: Duration,
    /// Samples taken even if the budget runs out first.
    min_samples: usize,
    /// Length a timed batch aims at, so that timer overhead is negligible.
    sample_target: Duration,
    /// Measured `bench_caller` runs per size (after one warm-up run).
    gg_runs: usize,
}

/// Per-operation times (ns) of the timed batches of one measurement.
struct Samples {
    per_op_ns: Vec<f64>,
    batch: u64,
}

impl Samples {
    fn sorted(&self) -> Vec<f64> {
        let mut v = self.per_op_ns.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    fn median(&self) -> f64 {
        median(&self.per_op_ns)
    }

    fn min(&self) -> f64 {
        self.sorted()[0]
    }

    fn p90(&self) -> f64 {
        let v = self.sorted();
        v[((v.len() - 1) as f64 * 0.9).round() as usize]
    }
}

fn median(values: &[f64]) -> f64 {
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

/// Runs `f` for at least `warmup` (and at least 3 times); returns the
/// estimated time per run, in ns.
fn warm_up<F: FnMut()>(f: &mut F, warmup: Duration) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while n < 3 || start.elapsed() < warmup {
        f();
        n += 1;
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn batch_for(per_op_ns: f64, target: Duration) -> u64 {
    ((target.as_nanos() as f64 / per_op_ns.max(1.0)).ceil() as u64).max(1)
}

/// Measures `a` and `b` in alternating batches, so that both see the same
/// machine (the box is shared, and its load drifts).
fn measure_pair<A: FnMut(), B: FnMut()>(s: &Settings, mut a: A, mut b: B) -> (Samples, Samples) {
    let batch_a = batch_for(warm_up(&mut a, s.warmup), s.sample_target);
    let batch_b = batch_for(warm_up(&mut b, s.warmup), s.sample_target);
    let (mut sa, mut sb) = (Vec::new(), Vec::new());
    let start = Instant::now();
    while sa.len() < s.min_samples || start.elapsed() < s.budget {
        sa.push(time_batch(&mut a, batch_a));
        sb.push(time_batch(&mut b, batch_b));
    }
    (
        Samples {
            per_op_ns: sa,
            batch: batch_a,
        },
        Samples {
            per_op_ns: sb,
            batch: batch_b,
        },
    )
}

/// What the guest->guest measurement gives for one size.
struct GuestToGuest {
    /// Mean time per call of each measured run, from the hop counters.
    run_means_ns: Vec<f64>,
    /// Per-call time from wall clock: (run with calls - run without) / calls.
    wall_per_call_ns: f64,
    calls_per_run: u64,
}

fn edge(rt: &Runtime) -> HopReport {
    let hop = rt
        .hops()
        .into_iter()
        .find(|h| h.caller == CALLER && h.target == CALLEE)
        .expect("no bench_caller -> discard hop was recorded");
    assert_eq!(hop.failures, 0, "bench_caller -> discard calls failed");
    hop
}

/// Runs an entry and returns how long it took; any failure aborts the
/// benchmark (a correctness check, not a timing one).
fn run_entry(rt: &Runtime, name: &str) -> Duration {
    let start = Instant::now();
    match rt.run_entry(name) {
        Ok(0) => start.elapsed(),
        Ok(code) => panic!("{name} exited with code {code} (see its output above)"),
        Err(e) => panic!("{name} failed: {e}"),
    }
}

fn guest_to_guest(rt: &Runtime, runs: usize, calls_per_run: u64) -> GuestToGuest {
    // Warm-up: instantiates `discard` (then pooled) and touches the memory
    // its allocator hands out for the request.
    run_entry(rt, IDLE_CALLER);
    run_entry(rt, CALLER);
    let mut prev = edge(rt);
    let mut run_means_ns = Vec::new();
    let (mut busy, mut idle) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        idle.push(run_entry(rt, IDLE_CALLER).as_nanos() as f64);
        busy.push(run_entry(rt, CALLER).as_nanos() as f64);
        let now = edge(rt);
        let calls = now.calls - prev.calls;
        assert_eq!(
            calls, calls_per_run,
            "bench_caller made an unexpected number of calls"
        );
        run_means_ns.push((now.total - prev.total).as_nanos() as f64 / calls as f64);
        prev = now;
    }
    GuestToGuest {
        run_means_ns,
        wall_per_call_ns: (median(&busy) - median(&idle)) / calls_per_run as f64,
        calls_per_run,
    }
}

struct Row {
    size: usize,
    memcpy: f64,
    host_to_guest: f64,
    guest_to_guest: f64,
}

fn runtime_for(size: usize, calls: u64) -> Runtime {
    let caller_spec = |name: &str, calls: u64| {
        let mut spec = FunctionSpec::new(name, NAMESPACE, PathBuf::from(progs::BENCH_CALLER));
        spec.args = vec![size.to_string(), calls.to_string(), CALLEE.to_string()];
        spec
    };
    Runtime::builder()
        .function(FunctionSpec::new(
            CALLEE,
            NAMESPACE,
            PathBuf::from(progs::DISCARD),
        ))
        .function(caller_spec(CALLER, calls))
        .function(caller_spec(IDLE_CALLER, 0))
        .build()
        .expect("build the benchmark runtime")
}

fn bench_size(profile: Profile, s: &Settings, size: usize) -> Row {
    let calls = profile.gg_iterations(size);
    let rt = runtime_for(size, calls);

    let src: Vec<u8> = (0..size).map(|i| (i * 31 + 7) as u8).collect();
    let mut dst = vec![1u8; size];
    let mut resp = Vec::new();
    let (memcpy, h2g) = measure_pair(
        s,
        || black_box(&mut dst[..]).copy_from_slice(black_box(&src[..])),
        || {
            rt.call_into(NAMESPACE, CALLEE, black_box(&src[..]), &mut resp)
                .expect("host -> discard call failed");
        },
    );
    assert!(resp.is_empty(), "discard answered with data");
    drop((src, dst));

    let gg = guest_to_guest(&rt, s.gg_runs, calls);
    let guest_to_guest = median(&gg.run_means_ns);

    let gbps = |ns: f64| size as f64 / ns;
    println!("{}:", size_label(size));
    println!(
        "  memcpy        median {:>9}  min {:>9}  p90 {:>9}  {:>6.2} GB/s  ({} samples x {} copies)",
        fmt_ns(memcpy.median()),
        fmt_ns(memcpy.min()),
        fmt_ns(memcpy.p90()),
        gbps(memcpy.median()),
        memcpy.per_op_ns.len(),
        memcpy.batch
    );
    println!(
        "  host->guest   median {:>9}  min {:>9}  p90 {:>9}  {:>6.2} GB/s  ({} samples x {} calls)",
        fmt_ns(h2g.median()),
        fmt_ns(h2g.min()),
        fmt_ns(h2g.p90()),
        gbps(h2g.median()),
        h2g.per_op_ns.len(),
        h2g.batch
    );
    let run_means: Vec<String> = gg.run_means_ns.iter().map(|&ns| fmt_ns(ns)).collect();
    println!(
        "  guest->guest  median {:>9}  {:>6.2} GB/s  (hop mean per call, {} runs x {} calls: {})",
        fmt_ns(guest_to_guest),
        gbps(guest_to_guest),
        gg.run_means_ns.len(),
        gg.calls_per_run,
        run_means.join(", ")
    );
    println!(
        "  guest->guest  wall clock per call, incl. guest side of the call: {}",
        fmt_ns(gg.wall_per_call_ns)
    );

    Row {
        size,
        memcpy: memcpy.median(),
        host_to_guest: h2g.median(),
        guest_to_guest,
    }
}

fn size_label(size: usize) -> String {
    if size >= MIB && size.is_multiple_of(MIB) {
        format!("{} MiB", size / MIB)
    } else {
        format!("{size} B")
    }
}

fn fmt_ns(ns: f64) -> String {
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

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn main() {
    let Args { profile, sizes } = Args::parse();
    let settings = profile.settings();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("CWASI embedded-mode benchmark (issue \"Foundation\")");
    println!("profile: {}", profile.name());
    println!(
        "cpus: {cpus}, load average (1/5/15 min) at start: {}",
        load_average()
    );
    println!();

    let started = Instant::now();
    let rows: Vec<Row> = sizes
        .iter()
        .map(|&size| bench_size(profile, &settings, size))
        .collect();

    println!();
    println!(
        "{:>8} | {:>10} | {:>12} | {:>13} | {:>19} | {:>18}",
        "size",
        "memcpy",
        "host->guest",
        "guest->guest",
        "guest->guest/memcpy",
        "host->guest/memcpy"
    );
    println!(
        "{:->8}-|-{:->10}-|-{:->12}-|-{:->13}-|-{:->19}-|-{:->18}",
        "", "", "", "", "", ""
    );
    for r in &rows {
        println!(
            "{:>8} | {:>10} | {:>12} | {:>13} | {:>18.2}x | {:>17.2}x",
            size_label(r.size),
            fmt_ns(r.memcpy),
            fmt_ns(r.host_to_guest),
            fmt_ns(r.guest_to_guest),
            r.guest_to_guest / r.memcpy,
            r.host_to_guest / r.memcpy
        );
    }

    println!();
    println!("targets (printed, never asserted):");
    let mut all_met = true;
    for r in rows.iter().filter(|r| r.size == 64) {
        let gg = r.guest_to_guest <= SMALL_CALL_TARGET_NS;
        let hg = r.host_to_guest <= SMALL_CALL_TARGET_NS;
        all_met &= gg && hg;
        println!(
            "  64 B call <= 1 us: guest->guest {} {}, host->guest {} {}",
            fmt_ns(r.guest_to_guest),
            verdict(gg),
            fmt_ns(r.host_to_guest),
            verdict(hg)
        );
    }
    for r in rows.iter().filter(|r| r.size >= LARGE_FROM) {
        let (gg, hg) = (r.guest_to_guest / r.memcpy, r.host_to_guest / r.memcpy);
        let (gg_ok, hg_ok) = (gg <= LARGE_RATIO_TARGET, hg <= LARGE_RATIO_TARGET);
        all_met &= gg_ok && hg_ok;
        println!(
            "  {} <= {LARGE_RATIO_TARGET}x memcpy: guest->guest {gg:.2}x {}, host->guest {hg:.2}x {}",
            size_label(r.size),
            verdict(gg_ok),
            verdict(hg_ok)
        );
    }
    println!(
        "  this run: {}",
        if all_met {
            "all targets met"
        } else {
            "some targets MISSED"
        }
    );
    println!();
    println!(
        "took {:.1} s; load average at end: {}",
        started.elapsed().as_secs_f64(),
        load_average()
    );
}
