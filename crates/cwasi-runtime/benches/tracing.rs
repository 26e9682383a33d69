//! What tracing costs an embedded 64 B call (issue "Operations").
//!
//! In one process and one run: the `bench_caller` entry calls `discard`
//! with 64 B in a loop, first in rounds with no tracer installed, then in
//! rounds that alternate tracing off (the tracer paused: no span is made;
//! the call's trace context passes through) and on (every call makes
//! a client and a callee span, exported over OTLP/HTTP by the binaries'
//! exporter, `cwasi-trace`, to a receiver in this process). The per-call
//! time of a round is its wall time, less that of the same entry making no
//! calls, over the calls it made. It prints both, their ratio, and how many
//! of the spans made reached the receiver (the SDK's batch queue holds 2048
//! and drops what does not fit, by design). It never asserts on time.
//!
//! `cargo bench -p cwasi-runtime --bench tracing` runs it in full; append
//! `-- --quick` for a shorter run. Without `--bench` it does one smoke pass
//! whose figures mean nothing. See docs/benchmarks.md.

mod callers;
// The shared harness; this bench uses part of it.
#[allow(dead_code)]
mod common;

use std::time::{Duration, Instant};

use callers::{runtime_for, CALLER, IDLE_CALLER};
use common::{fmt_ns, median, print_banner, print_footer, Args, Profile};
use cwasi_runtime::trace::set_tracing_paused;
use cwasi_runtime::Runtime;
use test_support::otlp::OtlpReceiver;

const SIZE: usize = 64;

/// Rounds of (off, on), and calls per `bench_caller` run.
fn plan(profile: Profile) -> (usize, u64) {
    match profile {
        Profile::Full => (10, 20_000),
        Profile::Quick => (4, 5_000),
        Profile::Smoke => (1, 10),
    }
}

/// Runs an entry; returns its wall time in nanoseconds.
fn run(rt: &Runtime, name: &str) -> f64 {
    let start = Instant::now();
    match rt.run_entry(name) {
        Ok(0) => start.elapsed().as_nanos() as f64,
        Ok(code) => panic!("{name} exited with code {code}"),
        Err(e) => panic!("{name} failed: {e}"),
    }
}

/// Per-call nanoseconds of one round: a run with calls, less one without.
fn per_call(rt: &Runtime, calls: u64) -> f64 {
    let idle = run(rt, IDLE_CALLER);
    let busy = run(rt, CALLER);
    (busy - idle).max(0.0) / calls as f64
}

fn main() {
    let (args, _) = Args::parse("tracing", &[SIZE], &[]);
    let started = Instant::now();
    print_banner(
        "tracing: embedded 64 B calls, tracing off and on",
        args.profile,
    );
    let (rounds, calls) = plan(args.profile);
    let rt = runtime_for(SIZE, calls);
    // First with no tracer installed at all (as without
    // OTEL_EXPORTER_OTLP_ENDPOINT); it cannot be uninstalled, so these
    // rounds come first rather than alternated.
    per_call(&rt, calls);
    let none: Vec<f64> = (0..rounds).map(|_| per_call(&rt, calls)).collect();
    let receiver = OtlpReceiver::start();
    let url = format!("{}/v1/traces", receiver.endpoint());
    let export = cwasi_trace::TraceExport::to_url(&url, "cwasi-bench").expect("an exporter");
    // Warm-up, both ways.
    for paused in [true, false] {
        set_tracing_paused(paused);
        per_call(&rt, calls);
    }
    let (mut off, mut on) = (Vec::new(), Vec::new());
    let mut made = 0u64;
    for _ in 0..rounds {
        set_tracing_paused(true);
        off.push(per_call(&rt, calls));
        set_tracing_paused(false);
        on.push(per_call(&rt, calls));
        // A client and a callee span per call, and one per entry run.
        made += 2 * calls + 2;
    }
    export.flush();
    drop(export);
    let received = receiver
        .wait_for(Duration::from_secs(5), |s| s.len() as u64 >= made)
        .len();
    println!("round  off (ns/call)  on (ns/call)  on/off");
    for (i, (a, b)) in off.iter().zip(&on).enumerate() {
        println!(
            "{:>5}  {:>13}  {:>12}  {:>6.2}",
            i + 1,
            fmt_ns(*a),
            fmt_ns(*b),
            b / a
        );
    }
    let ratios: Vec<f64> = off.iter().zip(&on).map(|(a, b)| b / a).collect();
    println!(
        "median {:>13}  {:>12}  {:>6.2}",
        fmt_ns(median(&off)),
        fmt_ns(median(&on)),
        median(&ratios)
    );
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "min    {:>13}  {:>12}  {:>6.2}",
        fmt_ns(min(&off)),
        fmt_ns(min(&on)),
        min(&on) / min(&off)
    );
    println!(
        "no tracer installed (rounds before the others): median {}, min {} per call",
        fmt_ns(median(&none)),
        fmt_ns(min(&none))
    );
    println!(
        "spans: {made} made while on (warm-up excluded), {received} of all reached the receiver"
    );
    print_footer(started);
}
