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

mod callers;
mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use callers::{runtime_for, CALLEE, CALLER, IDLE_CALLER, NAMESPACE};
use common::{fmt_ns, measure, median, op, size_label, verdict, Args, Profile, Settings, MIB};
use cwasi_runtime::{HopReport, Runtime};

const SIZES: [usize; 4] = [64, MIB, 10 * MIB, 100 * MIB];

/// The 64 B call target, in nanoseconds.
const SMALL_CALL_TARGET_NS: f64 = 1_000.0;
/// The largest ratio to memcpy allowed from [`LARGE_FROM`] bytes up.
const LARGE_RATIO_TARGET: f64 = 1.5;
const LARGE_FROM: usize = MIB;

/// Sampling of memcpy and host->guest (interleaved) per size.
fn settings(profile: Profile) -> Settings {
    Settings::for_profile(
        profile,
        Duration::from_secs(3),
        5,
        Duration::from_millis(500),
    )
}

/// Measured `bench_caller` runs per size (after one warm-up run).
fn gg_runs(profile: Profile) -> usize {
    match profile {
        Profile::Full => 5,
        Profile::Quick => 3,
        Profile::Smoke => 1,
    }
}

/// Calls `bench_caller` makes per run, for a payload of `size` bytes.
fn gg_iterations(profile: Profile, size: usize) -> u64 {
    match (profile, size) {
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
        // Embedded hops time a random sample of their calls.
        let timed = (now.timed - prev.timed).max(1);
        run_means_ns.push((now.total - prev.total).as_nanos() as f64 / timed as f64);
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

fn bench_size(profile: Profile, s: &Settings, size: usize) -> Row {
    let calls = gg_iterations(profile, size);
    let rt = runtime_for(size, calls);

    let src: Vec<u8> = (0..size).map(|i| (i * 31 + 7) as u8).collect();
    let mut dst = vec![1u8; size];
    let mut resp = Vec::new();
    let [memcpy, h2g] = measure(
        s,
        [
            op(|| black_box(&mut dst[..]).copy_from_slice(black_box(&src[..]))),
            op(|| {
                rt.call_into(NAMESPACE, CALLEE, black_box(&src[..]), &mut resp)
                    .expect("host -> discard call failed");
            }),
        ],
    );
    assert!(resp.is_empty(), "discard answered with data");
    drop((src, dst));

    let gg = guest_to_guest(&rt, gg_runs(profile), calls);
    let guest_to_guest = median(&gg.run_means_ns);

    let gbps = |ns: f64| size as f64 / ns;
    println!("{}:", size_label(size));
    memcpy.print("memcpy", size, "copies");
    h2g.print("host->guest", size, "calls");
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

fn main() {
    let (Args { profile, sizes }, _) = Args::parse("embedded", &SIZES, &[]);
    let settings = settings(profile);
    common::print_banner(
        "CWASI embedded-mode benchmark (issue \"Foundation\")",
        profile,
    );

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
    common::print_footer(started);
}
