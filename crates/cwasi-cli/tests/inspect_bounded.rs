//! `cwasi inspect` reads a module as `run` and `serve` do (issue
//! "Hardening, second round"): a device, a FIFO and a file over the module
//! limit are refused at once, with a clear error, before anything large is
//! read. One test in its own binary, so that the peak memory of this
//! process's children is that of these `cwasi inspect` runs alone.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{run_with_timeout, Scratch};

/// Far above what a refusal needs; a `cwasi inspect` that blocks on a FIFO
/// or reads a device without end is killed at this limit, and fails.
const LIMIT: Duration = Duration::from_secs(20);
/// The most memory a refused `cwasi inspect` may take, in KiB (about what
/// it takes to start).
const MAX_RSS_KIB: i64 = 50 << 10;

/// The peak resident memory of the children this process has waited for.
fn children_peak_rss_kib() -> i64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a `rusage` into the pointer it is given.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage");
    // SAFETY: initialised by the successful call above.
    unsafe { usage.assume_init() }.ru_maxrss
}

#[test]
fn inspect_refuses_devices_fifos_and_oversized_files_at_once() {
    let scratch = Scratch::new("inspect-bounded");
    let fifo = scratch.0.join("module.fifo");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    let big = scratch.0.join("big.wasm");
    // 300 MB, sparse: over the 256 MiB module limit.
    std::fs::File::create(&big)
        .unwrap()
        .set_len(300_000_000)
        .unwrap();
    let cases = [
        ("/dev/zero".to_string(), "not a regular file"),
        (fifo.display().to_string(), "not a regular file"),
        (big.display().to_string(), "over the limit"),
    ];
    for (path, why) in &cases {
        let out = run_with_timeout(
            Command::new(env!("CARGO_BIN_EXE_cwasi")).args(["inspect", path]),
            LIMIT,
        );
        assert_eq!(out.code, Some(1), "{path}: {}", out.stderr);
        assert!(
            out.stderr.contains("cwasi: error:") && out.stderr.contains(why),
            "{path}: {}",
            out.stderr
        );
    }
    let peak = children_peak_rss_kib();
    assert!(
        peak < MAX_RSS_KIB,
        "a refused inspect took {peak} KiB of memory"
    );
}
