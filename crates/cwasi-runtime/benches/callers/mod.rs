//! The guest-to-guest set-up shared by `embedded.rs` and `tracing.rs`: the
//! `bench_caller` entry calling `discard` in a loop, and the same entry
//! making no calls, to subtract what a run costs besides its calls.

use std::path::PathBuf;

use cwasi_runtime::{FunctionSpec, Runtime};
use test_programs_artifacts as progs;

pub const NAMESPACE: &str = "default";
pub const CALLER: &str = "bench_caller";
/// The same program with zero iterations: what a `bench_caller` run costs
/// besides its calls (instantiation, building the payload).
pub const IDLE_CALLER: &str = "bench_caller_idle";
pub const CALLEE: &str = "discard";

/// `discard`, `bench_caller` making `calls` calls of `size` bytes to it,
/// and `bench_caller_idle`, all embedded in one runtime.
pub fn runtime_for(size: usize, calls: u64) -> Runtime {
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
