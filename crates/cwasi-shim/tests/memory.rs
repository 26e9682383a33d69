//! The memory of a served function goes back when it is idle:
//! a container serving `echo` under `containerd-shim-cwasi-v1` takes 100
//! calls of 10 MiB from another container (local mode), and 5 s after
//! them its process's resident set is back within 10 MiB of what it was
//! before the first call. The figures (RSS and PSS before, at the peak,
//! right after and after the idle time) are printed; `--nocapture` shows
//! them. Needs root and the Debian packages containerd and runc, as the
//! other shim tests: without them the test fails.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cwasi_oci::ImageKind;
use test_programs_artifacts as progs;
use test_support::memory::{largest_mappings, pss_of_all, shim_family, task_pid, Memory};

mod common;

use common::{image, mount, node_dir, run, serve, start_containerd, text};

const TEN_MIB: &str = "10485760";
const CALLS: &str = "100";
/// How far above its idle resident set before the calls the server may
/// stay once idle again.
const SLACK_KIB: u64 = 10 << 10;
/// How long the server is left idle after the calls.
const IDLE: Duration = Duration::from_secs(5);

/// Reads the memory of `pid` until `done`, every 20 ms; returns the reading
/// with the largest resident set.
fn sample_peak(pid: u32, done: &AtomicBool) -> Memory {
    let mut peak = Memory::of(pid);
    while !done.load(Ordering::Relaxed) {
        let now = Memory::of(pid);
        if now.rss_kib > peak.rss_kib {
            peak = now;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    peak
}

#[test]
fn a_served_function_gives_its_memory_back_when_idle() {
    let c = start_containerd();
    let echo = image(&c, progs::ECHO, "echo", ImageKind::Plain);
    let producer = image(&c, progs::PRODUCER, "producer", ImageKind::Plain);
    let node = node_dir(&c, "node");
    let m = mount(&node);

    let opts = ["--mount", &m, "--env", "CWASI_NAMESPACE=team-a"];
    serve(&c, "echo-mem", &opts, &echo, &node, "echo@team-a.json");
    let pid = task_pid(&c, "echo-mem");
    // Registered means loaded and listening; give its threads a moment to
    // settle before the reading.
    std::thread::sleep(Duration::from_secs(1));
    let before = Memory::of(pid);
    let family = shim_family(pid);
    let family_before = pss_of_all(&family);
    eprintln!("served echo (pid {pid}), idle, before any call: {before}");
    eprintln!(
        "the served function's {} processes (its shim and what it started: {family:?}): \
         PSS {:.1} MiB in all, idle before any call",
        family.len(),
        family_before as f64 / 1024.0
    );

    // Another namespace: every call goes through the socket and the shared
    // region (local mode), into the served container's instance.
    let done = AtomicBool::new(false);
    let (out, peak) = std::thread::scope(|s| {
        let sampler = s.spawn(|| sample_peak(pid, &done));
        let out = run(
            &c,
            "caller-mem",
            &[
                "--mount",
                &m,
                "--env",
                "CWASI_NAMESPACE=team-b",
                "--env",
                "CWASI_EXPLAIN=1",
            ],
            &producer,
            &["/producer.wasm", TEN_MIB, "echo", "echo", CALLS],
        );
        done.store(true, Ordering::Relaxed);
        (out, sampler.join().expect("the sampler"))
    });
    let after_calls = Memory::of(pid);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("ok size={TEN_MIB}"))
            && all.contains(&format!("calls={CALLS}")),
        "{all}"
    );
    assert!(all.contains("producer -> echo: local ("), "{all}");
    eprintln!("after {CALLS} calls of 10 MiB: peak {peak}");
    eprintln!("after {CALLS} calls of 10 MiB: right after {after_calls}");

    std::thread::sleep(IDLE);
    let idle = Memory::of(pid);
    eprintln!("after {CALLS} calls of 10 MiB: after {IDLE:?} idle {idle}");
    eprintln!(
        "the served function's {} processes: PSS {:.1} MiB in all after {IDLE:?} idle \
         (before the calls: {:.1} MiB)",
        family.len(),
        pss_of_all(&family) as f64 / 1024.0,
        family_before as f64 / 1024.0
    );
    eprintln!("its largest mappings now:\n{}", largest_mappings(pid, 8));
    eprintln!(
        "change over the idle reading before the calls: RSS {:+.1} MiB, PSS {:+.1} MiB",
        idle.rss_mib() - before.rss_mib(),
        idle.pss_mib() - before.pss_mib()
    );
    assert!(
        idle.rss_kib <= before.rss_kib + SLACK_KIB,
        "the served function kept {:.1} MiB more than before the calls (allowed: {} MiB)\n\
         before: {before}\nidle after: {idle}\nits largest mappings:\n{}",
        idle.rss_mib() - before.rss_mib(),
        SLACK_KIB >> 10,
        largest_mappings(pid, 12)
    );
    // The server still answers after its instances were trimmed.
    let out = run(
        &c,
        "caller-mem-again",
        &["--mount", &m, "--env", "CWASI_NAMESPACE=team-b"],
        &producer,
        &["/producer.wasm", "1024", "echo", "echo"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}
