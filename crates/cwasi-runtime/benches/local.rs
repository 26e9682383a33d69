//! Local-mode benchmark (issue "Local mode").
//!
//! For 64 B, 1 KiB, 64 KiB, 1 MiB, 10 MiB and 100 MiB it measures, in one
//! process and one run, in alternating batches:
//!
//! - `memcpy`: copying the payload into a warm, preallocated `Vec`;
//! - `embedded`: `Runtime::call_into` of `discard` on a runtime that has it
//!   loaded in the caller's namespace (one copy into the callee's memory);
//! - `local`: `Runtime::call_into` of `discard` from a runtime whose caller
//!   namespace ("bench-a") differs from the served function's ("bench-b"),
//!   so the selector routes the call to local mode: a real Unix socket to a
//!   `Runtime::serve` running in this same process, in a temporary node
//!   directory, with its own wasm store. From 64 KiB up the payload goes
//!   through the connection's shared memory region;
//! - `raw UDS`: a bare socket round trip doing the socket work of a one-way
//!   hand-off: a 32-byte header and the payload through a
//!   `UnixStream::pair()` to an echo thread that reads them into a warm
//!   buffer and answers with a 32-byte header (the payload goes through the
//!   socket buffer: two kernel copies, so at large sizes it is no floor).
//!
//! It prints the ratios of local to the others and whether this run met the
//! targets (local <= 2x memcpy at 10 MiB; local <= 2x raw UDS at 64 B). It
//! never asserts on time. See docs/benchmarks.md.
//!
//! Threads are pinned: the calling thread on one CPU, the serving threads
//! (the runtime's server, the raw echo) on another, so that every round trip
//! wakes a thread on the other CPU in both socket columns. Left to the
//! scheduler, the two pairs of threads are sometimes on one CPU, sometimes on
//! two, and a round trip costs about 12 us or 25-45 us accordingly, so the
//! 64 B ratio would depend on where the threads landed. `--same-cpu` puts
//! every thread on one CPU; `--no-pin` leaves placement to the scheduler
//! (`benches/placement`, shared with the remote-mode benchmark).
//!
//! `cargo bench -p cwasi-runtime --bench local` runs it in full; append
//! `-- --quick` for a shorter, noisier run, and/or size filters such as
//! `-- 64B 10MiB` to run only those sizes. Without `--bench` (as
//! `cargo test --benches` runs it) it does one smoke pass whose figures mean
//! nothing.

mod common;
mod placement;

use std::hint::black_box;
use std::io::{self, IoSlice, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{fmt_ns, measure, op, size_label, verdict, Args, Profile, Settings, KIB, MIB};
use cwasi_runtime::wire::{Header, Kind, HEADER_LEN};
use cwasi_runtime::HOST_CALLER;
use cwasi_runtime::{FunctionSpec, Mode, NodeDirectory, Runtime, ServeHandle, ServeOptions};
use placement::{affinity, Placement};
use test_programs_artifacts as progs;

const SIZES: [usize; 6] = [64, KIB, 64 * KIB, MIB, 10 * MIB, 100 * MIB];

/// The size at which local is compared to memcpy, and the largest ratio
/// allowed there.
const MEMCPY_TARGET_SIZE: usize = 10 * MIB;
const MEMCPY_RATIO_TARGET: f64 = 2.0;
/// The size at which local is compared to the raw socket round trip, and the
/// largest ratio allowed there.
const UDS_TARGET_SIZE: usize = 64;
const UDS_RATIO_TARGET: f64 = 2.0;

/// The namespace the host calls from.
const CALLER_NS: &str = "bench-a";
/// The namespace of the served `discard`.
const SERVED_NS: &str = "bench-b";
const TARGET: &str = "discard";

fn settings(profile: Profile) -> Settings {
    Settings::for_profile(
        profile,
        Duration::from_secs(5),
        10,
        Duration::from_millis(500),
    )
}

/// The node directory of this run: a fresh directory under the system's
/// temporary directory, removed when dropped (also on a panic).
struct TempNodeDir {
    root: PathBuf,
    dir: NodeDirectory,
}

impl TempNodeDir {
    fn create() -> TempNodeDir {
        let root = std::env::temp_dir().join(format!("cwasi-bench-local-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = NodeDirectory::open(&root).expect("create the node directory");
        TempNodeDir { root, dir }
    }
}

impl Drop for TempNodeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The three runtimes of one size. Fields drop in order: the callers first
/// (closing their connections), then the server.
struct Runtimes {
    /// Has `discard` loaded in the caller's namespace: embedded.
    embedded: Runtime,
    /// Loads nothing; reaches the served `discard` in local mode.
    client: Runtime,
    serving: ServeHandle,
    /// Has `discard` loaded in "bench-b" and serves it.
    _server: Runtime,
}

impl Runtimes {
    /// Starts the server (its threads on the serving CPU), then the callers.
    fn start(nodes: &TempNodeDir, placement: Placement) -> Runtimes {
        let discard =
            |namespace: &str| FunctionSpec::new(TARGET, namespace, PathBuf::from(progs::DISCARD));
        placement.enter_server();
        let server = Runtime::builder()
            .node_directory(nodes.dir.clone())
            .function(discard(SERVED_NS))
            .build()
            .expect("build the server runtime");
        let serving = server
            .serve(TARGET, &nodes.dir, ServeOptions::default())
            .expect("serve discard");
        placement.enter_caller();
        let client = Runtime::builder()
            .node_directory(nodes.dir.clone())
            .build()
            .expect("build the client runtime");
        let embedded = Runtime::builder()
            .node_directory(nodes.dir.clone())
            .function(discard(CALLER_NS))
            .build()
            .expect("build the embedded runtime");
        Runtimes {
            embedded,
            client,
            serving,
            _server: server,
        }
    }

    /// Checks that each caller takes the path it is meant to measure.
    fn check_modes(&self, print: bool) {
        let local = self
            .client
            .explain(CALLER_NS, TARGET)
            .expect("explain the local call");
        assert_eq!(
            local.mode,
            Mode::Local,
            "the client is not in local mode: {local}"
        );
        let embedded = self
            .embedded
            .explain(CALLER_NS, TARGET)
            .expect("explain the embedded call");
        assert_eq!(
            embedded.mode,
            Mode::Embedded,
            "the embedded runtime is not in embedded mode: {embedded}"
        );
        if print {
            println!("selector, caller namespace '{CALLER_NS}':");
            println!("  client runtime:   {local}");
            println!("  embedded runtime: {embedded}");
            println!(
                "  served socket:    {}",
                self.serving.record().socket.display()
            );
            println!();
        }
    }
}

/// Checks, after measuring, that the host's calls all went by `mode` and
/// none failed.
fn check_hop(rt: &Runtime, mode: Mode) {
    let hop = rt
        .hops()
        .into_iter()
        .find(|h| h.caller == HOST_CALLER && h.target == TARGET)
        .expect("no host -> discard hop was recorded");
    assert_eq!(hop.mode, mode, "host -> discard took the wrong path");
    assert!(
        hop.calls > 0 && hop.failures == 0,
        "host -> discard calls failed"
    );
}

/// The raw baseline: one end of a `UnixStream::pair()`, the other served by
/// a thread that reads a 32-byte header and the payload it announces into a
/// warm buffer, then answers with a 32-byte header.
struct RawEcho {
    stream: UnixStream,
    echo: Option<JoinHandle<()>>,
    next_id: u64,
}

impl RawEcho {
    fn start(size: usize) -> RawEcho {
        let (stream, mut far) = UnixStream::pair().expect("socket pair");
        let echo = std::thread::Builder::new()
            .name("raw-uds-echo".into())
            .spawn(move || {
                let mut buf = vec![1u8; size];
                let mut head = [0u8; HEADER_LEN];
                // Ends when the bench side closes the stream.
                while far.read_exact(&mut head).is_ok() {
                    let h = Header::decode(&head, u64::MAX).expect("raw echo: bad header");
                    far.read_exact(&mut buf[..h.payload_len as usize])
                        .expect("raw echo: payload");
                    far.write_all(&Header::new(Kind::Response, h.id).encode())
                        .expect("raw echo: reply");
                }
            })
            .expect("start the echo thread");
        RawEcho {
            stream,
            echo: Some(echo),
            next_id: 1,
        }
    }

    fn round_trip(&mut self, payload: &[u8]) {
        let mut h = Header::new(Kind::Request, self.next_id);
        self.next_id += 1;
        h.payload_len = payload.len() as u64;
        let head = h.encode();
        write_all_vectored(
            &mut self.stream,
            &mut [IoSlice::new(&head), IoSlice::new(payload)],
        )
        .expect("raw UDS: send");
        let mut reply = [0u8; HEADER_LEN];
        self.stream.read_exact(&mut reply).expect("raw UDS: reply");
    }
}

impl Drop for RawEcho {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        if let Some(t) = self.echo.take() {
            let _ = t.join();
        }
    }
}

fn write_all_vectored(w: &mut impl Write, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !bufs.is_empty() {
        match w.write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The shared-memory mappings of this process (client and server side of
/// the connection both map it here), as "count x size".
fn shm_mappings() -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let sizes: Vec<String> = maps
        .lines()
        .filter(|l| l.contains("cwasi-shm"))
        .filter_map(|l| {
            let (lo, hi) = l.split_whitespace().next()?.split_once('-')?;
            let len = usize::from_str_radix(hi, 16).ok()? - usize::from_str_radix(lo, 16).ok()?;
            Some(size_label(len))
        })
        .collect();
    if sizes.is_empty() {
        "none (payload inline in the socket)".into()
    } else {
        format!("{} mappings: {}", sizes.len(), sizes.join(", "))
    }
}

struct Row {
    size: usize,
    memcpy: f64,
    embedded: f64,
    local: f64,
    raw_uds: f64,
}

fn bench_size(
    s: &Settings,
    nodes: &TempNodeDir,
    placement: Placement,
    size: usize,
    first: bool,
) -> Row {
    let rts = Runtimes::start(nodes, placement);
    rts.check_modes(first);
    placement.enter_server();
    let mut raw = RawEcho::start(size);
    placement.enter_caller();

    let src: Vec<u8> = (0..size).map(|i| (i * 31 + 7) as u8).collect();
    let mut dst = vec![1u8; size];
    let (mut resp_e, mut resp_l) = (Vec::new(), Vec::new());
    let [memcpy, embedded, local, raw_uds] = measure(
        s,
        [
            op(|| black_box(&mut dst[..]).copy_from_slice(black_box(&src[..]))),
            op(|| {
                rts.embedded
                    .call_into(CALLER_NS, TARGET, black_box(&src[..]), &mut resp_e)
                    .expect("embedded call failed");
            }),
            op(|| {
                rts.client
                    .call_into(CALLER_NS, TARGET, black_box(&src[..]), &mut resp_l)
                    .expect("local call failed");
            }),
            op(|| raw.round_trip(black_box(&src[..]))),
        ],
    );
    assert!(
        resp_e.is_empty() && resp_l.is_empty(),
        "discard answered with data"
    );
    check_hop(&rts.embedded, Mode::Embedded);
    check_hop(&rts.client, Mode::Local);
    if first {
        let serving = |name: &str| {
            matches!(name, "cwasi-conn" | "raw-uds-echo") || name.starts_with("cwasi-serve")
        };
        println!("threads: {}", affinity::threads(serving));
        println!();
    }

    println!("{}:", size_label(size));
    memcpy.print("memcpy", size, "copies");
    embedded.print("embedded", size, "calls");
    local.print("local", size, "calls");
    raw_uds.print("raw UDS", size, "round trips");
    println!("  shared region: {}", shm_mappings());

    Row {
        size,
        memcpy: memcpy.median(),
        embedded: embedded.median(),
        local: local.median(),
        raw_uds: raw_uds.median(),
    }
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:>8} | {:>10} | {:>10} | {:>10} | {:>10} | {:>13} | {:>13} | {:>14}",
        "size",
        "memcpy",
        "embedded",
        "local",
        "raw UDS",
        "local/memcpy",
        "local/raw UDS",
        "local/embedded"
    );
    println!(
        "{:->8}-|-{:->10}-|-{:->10}-|-{:->10}-|-{:->10}-|-{:->13}-|-{:->13}-|-{:->14}",
        "", "", "", "", "", "", "", ""
    );
    for r in rows {
        println!(
            "{:>8} | {:>10} | {:>10} | {:>10} | {:>10} | {:>12.2}x | {:>12.2}x | {:>13.2}x",
            size_label(r.size),
            fmt_ns(r.memcpy),
            fmt_ns(r.embedded),
            fmt_ns(r.local),
            fmt_ns(r.raw_uds),
            r.local / r.memcpy,
            r.local / r.raw_uds,
            r.local / r.embedded
        );
    }
}

fn print_targets(rows: &[Row]) {
    println!();
    println!("targets (printed, never asserted):");
    let find = |size: usize| rows.iter().find(|r| r.size == size);
    let mut all_met = true;
    match find(MEMCPY_TARGET_SIZE) {
        Some(r) => {
            let ratio = r.local / r.memcpy;
            let ok = ratio <= MEMCPY_RATIO_TARGET;
            all_met &= ok;
            println!(
                "  {}: local <= {MEMCPY_RATIO_TARGET}x memcpy: local {} / memcpy {} = {ratio:.2}x {}",
                size_label(r.size),
                fmt_ns(r.local),
                fmt_ns(r.memcpy),
                verdict(ok)
            );
        }
        None => println!(
            "  {}: local <= {MEMCPY_RATIO_TARGET}x memcpy: not measured in this run",
            size_label(MEMCPY_TARGET_SIZE)
        ),
    }
    match find(UDS_TARGET_SIZE) {
        Some(r) => {
            let ratio = r.local / r.raw_uds;
            let ok = ratio <= UDS_RATIO_TARGET;
            all_met &= ok;
            println!(
                "  {}: local <= {UDS_RATIO_TARGET}x raw UDS round trip: local {} / raw UDS {} = {ratio:.2}x {}",
                size_label(r.size),
                fmt_ns(r.local),
                fmt_ns(r.raw_uds),
                verdict(ok)
            );
        }
        None => println!(
            "  {}: local <= {UDS_RATIO_TARGET}x raw UDS round trip: not measured in this run",
            size_label(UDS_TARGET_SIZE)
        ),
    }
    println!(
        "  this run: {}",
        if all_met {
            "all measured targets met"
        } else {
            "some targets MISSED"
        }
    );
}

fn main() {
    let (Args { profile, sizes }, flags) = Args::parse("local", &SIZES, &placement::FLAGS);
    let settings = settings(profile);
    common::print_banner("CWASI local-mode benchmark (issue \"Local mode\")", profile);
    let placement = Placement::from_flags(&flags, "--split");
    println!("placement: {}", placement.describe());
    let nodes = TempNodeDir::create();
    println!(
        "node directory: {} (server and clients share this process)",
        nodes.root.display()
    );

    let started = Instant::now();
    let rows: Vec<Row> = sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| bench_size(&settings, &nodes, placement, size, i == 0))
        .collect();

    print_table(&rows);
    print_targets(&rows);
    drop(nodes);
    common::print_footer(started);
}
