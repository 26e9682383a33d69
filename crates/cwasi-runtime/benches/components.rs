//! Components against core modules, embedded (issue "Components").
//!
//! For 64 B, 1 MiB and 10 MiB it measures, in one process and one run, a
//! guest calling an echo guest in a loop, the payload going both ways:
//!
//! - `core`: the `bench_caller` entry (core ABI, wasm32-wasip1) calling
//!   `echo`;
//! - `component`: `component_entry --bench` (wit-bindgen, wasm32-wasip2)
//!   calling `component_echo` through `cwasi:function/invoke`.
//!
//! Each run of each entry is timed by the wall clock, less a run of the
//! same entry making no calls, per call; the two kinds alternate, so that
//! both see the same machine. It prints the ratio and whether this run met
//! the targets (a 64 B component call <= 2 us; components <= 1.5x core
//! modules at 10 MiB). It never asserts on time. See docs/benchmarks.md.
//!
//! `cargo bench -p cwasi-runtime --bench components` runs it in full;
//! append `-- --quick` for a shorter, noisier run, and/or size filters such
//! as `-- 64B`. Without `--bench` it does one smoke pass.

// Only the argument parsing and the printing of the shared harness.
#[allow(dead_code)]
mod common;

use std::path::PathBuf;
use std::time::Instant;

use common::{fmt_ns, median, size_label, verdict, Args, Profile, MIB};
use cwasi_runtime::{FunctionSpec, Runtime};
use test_programs_artifacts as progs;

const SIZES: [usize; 3] = [64, MIB, 10 * MIB];
const NAMESPACE: &str = "default";

/// The 64 B component call target, in nanoseconds.
const SMALL_CALL_TARGET_NS: f64 = 2_000.0;
/// The largest ratio of component to core calls at 10 MiB.
const LARGE_RATIO_TARGET: f64 = 1.5;

/// Measured runs of each entry per size (after one warm-up run).
fn runs(profile: Profile) -> usize {
    match profile {
        Profile::Full => 7,
        Profile::Quick => 3,
        Profile::Smoke => 1,
    }
}

/// Calls per run, for a payload of `size` bytes.
fn iterations(profile: Profile, size: usize) -> u64 {
    match (profile, size) {
        (Profile::Full, s) if s <= 64 => 20_000,
        (Profile::Full, s) if s <= MIB => 200,
        (Profile::Full, _) => 40,
        (Profile::Quick, s) if s <= 64 => 2_000,
        (Profile::Quick, s) if s <= MIB => 40,
        (Profile::Quick, _) => 10,
        (Profile::Smoke, _) => 2,
    }
}

/// The two callers, each with an idle twin, and the two echoes.
fn runtime_for(size: usize, calls: u64) -> Runtime {
    let spec = |name: &str, module: &str, args: Vec<String>| {
        let mut s = FunctionSpec::new(name, NAMESPACE, PathBuf::from(module));
        s.args = args;
        s
    };
    let core_args = |n: u64| vec![size.to_string(), n.to_string(), "echo".to_string()];
    let component_args = |n: u64| {
        vec![
            "--bench".to_string(),
            size.to_string(),
            n.to_string(),
            "component_echo".to_string(),
        ]
    };
    Runtime::builder()
        .function(spec("echo", progs::ECHO, vec![]))
        .function(spec("component_echo", progs::COMPONENT_ECHO, vec![]))
        .function(spec("core", progs::BENCH_CALLER, core_args(calls)))
        .function(spec("core_idle", progs::BENCH_CALLER, core_args(0)))
        .function(spec(
            "component",
            progs::COMPONENT_ENTRY,
            component_args(calls),
        ))
        .function(spec(
            "component_idle",
            progs::COMPONENT_ENTRY,
            component_args(0),
        ))
        .build()
        .expect("build the benchmark runtime")
}

/// Runs an entry and returns how long it took, in nanoseconds; any failure
/// aborts the benchmark (a correctness check, not a timing one).
fn run_entry(rt: &Runtime, name: &str) -> f64 {
    let start = Instant::now();
    match rt.run_entry(name) {
        Ok(0) => start.elapsed().as_nanos() as f64,
        Ok(code) => panic!("{name} exited with code {code} (see its output above)"),
        Err(e) => panic!("{name} failed: {e}"),
    }
}

/// Per-call times of both kinds, from alternating runs.
struct Row {
    size: usize,
    core: f64,
    component: f64,
}

fn bench_size(profile: Profile, size: usize) -> Row {
    let calls = iterations(profile, size);
    let rt = runtime_for(size, calls);
    for name in ["core_idle", "core", "component_idle", "component"] {
        run_entry(&rt, name);
    }
    let per_call = |kind: &str, out: &mut Vec<f64>| {
        let idle = run_entry(&rt, &format!("{kind}_idle"));
        let busy = run_entry(&rt, kind);
        out.push((busy - idle).max(0.0) / calls as f64);
    };
    let (mut core, mut component) = (Vec::new(), Vec::new());
    for _ in 0..runs(profile) {
        per_call("core", &mut core);
        per_call("component", &mut component);
    }
    let row = Row {
        size,
        core: median(&core),
        component: median(&component),
    };
    let list = |v: &[f64]| {
        v.iter()
            .map(|&ns| fmt_ns(ns))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "{}: {} runs x {calls} calls; core {}, component {}",
        size_label(size),
        core.len(),
        list(&core),
        list(&component)
    );
    row
}

fn main() {
    let (Args { profile, sizes }, _) = Args::parse("components", &SIZES, &[]);
    common::print_banner(
        "CWASI components against core modules, embedded (issue \"Components\")",
        profile,
    );
    let started = Instant::now();
    let rows: Vec<Row> = sizes.iter().map(|&s| bench_size(profile, s)).collect();

    println!();
    println!(
        "{:>8} | {:>12} | {:>12} | {:>16}",
        "size", "core", "component", "component/core"
    );
    println!("{:->8}-|-{:->12}-|-{:->12}-|-{:->16}", "", "", "", "");
    for r in &rows {
        println!(
            "{:>8} | {:>12} | {:>12} | {:>15.2}x",
            size_label(r.size),
            fmt_ns(r.core),
            fmt_ns(r.component),
            r.component / r.core
        );
    }
    println!();
    println!("targets (printed, never asserted):");
    for r in rows.iter().filter(|r| r.size == 64) {
        println!(
            "  64 B component call <= 2 us: {} {}",
            fmt_ns(r.component),
            verdict(r.component <= SMALL_CALL_TARGET_NS)
        );
    }
    for r in rows.iter().filter(|r| r.size == 10 * MIB) {
        let ratio = r.component / r.core;
        println!(
            "  10 MiB component <= {LARGE_RATIO_TARGET}x core: {ratio:.2}x {}",
            verdict(ratio <= LARGE_RATIO_TARGET)
        );
    }
    common::print_footer(started);
}
