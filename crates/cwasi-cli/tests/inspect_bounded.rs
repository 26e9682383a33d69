//! `cwasi inspect` reads a module as `run` and `serve` do (issue
//! "Hardening, second round"): a device, a FIFO and a file over the module
//! limit are refused at once, with a clear error, before anything large is
//! read; and a large valid module is inspected within about twice its
//! size. One test in its own binary, so that the peak memory of this
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

    // A valid module of 100 MiB (one memory, and one data segment that
    // fills it) is inspected within about twice its size: it is read and
    // validated, not compiled.
    const DATA: usize = 100 << 20;
    let valid = scratch.0.join("large.wasm");
    std::fs::write(&valid, large_module(DATA)).unwrap();
    let out = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_cwasi")).args(["inspect", &valid.display().to_string()]),
        LIMIT,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("digest:"), "{}", out.stdout);
    let peak = children_peak_rss_kib();
    let most = 2 * (DATA as i64 >> 10) + MAX_RSS_KIB;
    println!("cwasi inspect of a 100 MiB module: peak RSS {peak} KiB");
    assert!(peak < most, "the peak RSS was {peak} KiB, over {most} KiB");
}

/// A valid core module of a little over `data` bytes: a memory of that
/// size, and an active data segment that fills it.
fn large_module(data: usize) -> Vec<u8> {
    fn leb(mut n: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    fn section(id: u8, content: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        leb(content.len() as u64, out);
        out.extend_from_slice(content);
    }
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    // Memory: one, of `data` bytes in 64 KiB pages.
    let mut memory = vec![1u8, 0];
    leb(data.div_ceil(1 << 16) as u64, &mut memory);
    section(5, &memory, &mut module);
    // Data: one active segment at offset 0 (i32.const 0, end).
    let mut segment = vec![1u8, 0, 0x41, 0, 0x0b];
    leb(data as u64, &mut segment);
    segment.resize(segment.len() + data, 0x5a);
    section(11, &segment, &mut module);
    module
}
