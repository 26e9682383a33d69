//! Remote-mode benchmark (issue "Remote mode").
//!
//! It starts its own `redis-server` (on a free loopback port, through
//! `test_support::RedisServer`) and two "nodes" in this process, each a
//! runtime with its own broker client (`BrokerConfig.node` "node1" or
//! "node2") and its own temporary node directory:
//!
//! - node2 has `discard` loaded in namespace "bench-b" and serves it
//!   (`Runtime::serve`), so it consumes the function's Redis stream and
//!   announces it in the cluster registry;
//! - node1 loads nothing; the host calls `discard` from namespace "bench-a",
//!   and the selector picks remote mode (checked once with `explain`).
//!
//! For 64 B, 1 KiB, 64 KiB, 1 MiB, 10 MiB and 100 MiB it measures, in
//! alternating batches:
//!
//! - `memcpy`: copying the payload into a warm, preallocated `Vec`, for
//!   orientation;
//! - `remote`: `Runtime::call_into` on node1: the payload goes caller ->
//!   Redis stream (from `PAYLOAD_KEY_MIN` on, a key of its own that the
//!   stream entry names) -> node2's consumer -> `discard`'s linear memory,
//!   and an empty reply comes back through a reply key;
//! - `raw`: the same hand-off done by hand with the `redis` crate, as a
//!   platform does it today: `SET` of a key with the payload on one plain
//!   synchronous connection, then `GET` of it on a second one (the
//!   receiver's), both from the benchmark thread.
//!
//! It prints remote / raw and whether it is within the target (at most 1.2x)
//! for each size, and never asserts on time. After the timed part of each
//! size it makes one more, untimed pass of each socket column to show where
//! the time goes: CPU time and context switches per operation of each group
//! of threads (ours and redis-server's, from `/proc/<pid>/task/*/schedstat`
//! and `status`) and the Redis commands each operation runs (`INFO
//! commandstats`). See docs/benchmarks.md.
//!
//! Placement (`benches/placement`, shared with local.rs): by default every
//! thread of this process and redis-server run on one CPU, so that every
//! Redis round trip of either column costs the same (a switch between
//! threads on that CPU, no wake-up of another CPU). Three parties (caller,
//! Redis, server) cannot each have a CPU of their own on this 2-vCPU
//! machine; unpinned, redis-server sometimes shares the benchmark thread's
//! CPU and sometimes not, and the raw figure at 64 B then moves between
//! about 36 us and 130 us. `--split` puts the benchmark thread and node1's
//! threads on one CPU and node2's threads on the other, with redis-server
//! unpinned, or pinned with either side by `--redis-with-caller` or
//! `--redis-with-server`; `--no-pin` leaves everything to the scheduler.
//!
//! `cargo bench -p cwasi-runtime --bench remote` runs it in full; append
//! `-- --quick` for a shorter, noisier run, and/or size filters such as
//! `-- 64B 10MiB` to run only those sizes. Without `--bench` (as
//! `cargo test --benches` runs it) it does one smoke pass whose figures mean
//! nothing.

mod common;
mod placement;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{fmt_ns, measure, op, size_label, verdict, Args, Profile, Settings, KIB, MIB};
use cwasi_runtime::broker::{Broker, BrokerConfig};
use cwasi_runtime::HOST_CALLER;
use cwasi_runtime::{FunctionSpec, Mode, NodeDirectory, Runtime, ServeHandle, ServeOptions};
use placement::{affinity, Placement};
use test_programs_artifacts as progs;
use test_support::RedisServer;

const SIZES: [usize; 6] = [64, KIB, 64 * KIB, MIB, 10 * MIB, 100 * MIB];

/// The largest remote / raw ratio allowed, at every size.
const RATIO_TARGET: f64 = 1.2;

/// The namespace the host calls from, on node1.
const CALLER_NS: &str = "bench-a";
/// The namespace of the served `discard`, on node2.
const SERVED_NS: &str = "bench-b";
const TARGET: &str = "discard";
const CALLER_NODE: &str = "node1";
const SERVER_NODE: &str = "node2";
/// With `--split`: flags that pin redis-server where the calling or the
/// serving threads go (by default it is not pinned then).
const REDIS_WITH_CALLER: &str = "--redis-with-caller";
const REDIS_WITH_SERVER: &str = "--redis-with-server";
/// The key of the raw baseline.
const RAW_KEY: &str = "cwasi-bench:raw";

fn settings(profile: Profile) -> Settings {
    Settings::for_profile(
        profile,
        Duration::from_secs(6),
        10,
        Duration::from_millis(800),
    )
}

/// How long the untimed pass of each socket column runs, per size (at least
/// 3 operations, except in a smoke pass).
fn usage_pass(profile: Profile) -> Duration {
    match profile {
        Profile::Full => Duration::from_secs(1),
        Profile::Quick => Duration::from_millis(200),
        Profile::Smoke => Duration::ZERO,
    }
}

/// The two node directories of this run, under a fresh directory of the
/// system's temporary directory; removed when dropped (also on a panic).
struct TempRoot(PathBuf);

impl TempRoot {
    fn create() -> TempRoot {
        let root = std::env::temp_dir().join(format!("cwasi-bench-remote-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("create the benchmark directory");
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))
            .expect("restrict the benchmark directory");
        TempRoot(root)
    }

    fn node(&self, node: &str) -> NodeDirectory {
        NodeDirectory::open(&self.0.join(node)).expect("create a node directory")
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn broker(url: &str, node: &str) -> Arc<Broker> {
    Broker::new(BrokerConfig::new(url, node)).expect("create a broker client")
}

/// The two nodes. Fields drop in order: the caller first, then the serving
/// handle (which stops the consumers and unannounces `discard`), then the
/// server.
struct Nodes {
    /// node1: loads nothing, reaches `discard` through the broker.
    caller: Runtime,
    _serving: ServeHandle,
    /// node2: `discard` loaded in "bench-b", served.
    _server: Runtime,
}

impl Nodes {
    /// Starts node2 (its threads on the serving CPU), then node1, and waits
    /// until node1 sees `discard` announced.
    fn start(url: &str, root: &TempRoot, placement: Placement) -> Nodes {
        placement.enter_server();
        let server_dir = root.node(SERVER_NODE);
        let server = Runtime::builder()
            .node_directory(server_dir.clone())
            .broker(broker(url, SERVER_NODE))
            .function(FunctionSpec::new(
                TARGET,
                SERVED_NS,
                PathBuf::from(progs::DISCARD),
            ))
            .build()
            .expect("build node2's runtime");
        let serving = server
            .serve(TARGET, &server_dir, ServeOptions::default())
            .expect("serve discard on node2");
        placement.enter_caller();
        let caller = Runtime::builder()
            .node_directory(root.node(CALLER_NODE))
            .broker(broker(url, CALLER_NODE))
            .build()
            .expect("build node1's runtime");
        let nodes = Nodes {
            caller,
            _serving: serving,
            _server: server,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let selection = loop {
            match nodes.caller.explain(CALLER_NS, TARGET) {
                Ok(s) => break s,
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "node1 never saw discard announced: {e}"
                ),
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(
            selection.mode,
            Mode::RemoteBroker,
            "node1 is not in remote mode: {selection}"
        );
        println!("selector, node1, caller namespace '{CALLER_NS}': {selection}");
        nodes
    }

    fn call(&self, payload: &[u8], response: &mut Vec<u8>) {
        self.caller
            .call_into(CALLER_NS, TARGET, payload, response)
            .expect("remote call failed");
    }

    /// Checks that the host's calls all went by remote mode and none failed.
    fn check_hop(&self) {
        let hop = self
            .caller
            .hops()
            .into_iter()
            .find(|h| h.caller == HOST_CALLER && h.target == TARGET)
            .expect("no host -> discard hop was recorded");
        assert_eq!(
            hop.mode,
            Mode::RemoteBroker,
            "host -> discard took the wrong path"
        );
        assert!(
            hop.calls > 0 && hop.failures == 0,
            "host -> discard calls failed"
        );
    }
}

/// The raw baseline: a sender's and a receiver's plain synchronous
/// connection.
struct Raw {
    sender: redis::Connection,
    receiver: redis::Connection,
}

impl Raw {
    fn connect(url: &str) -> Raw {
        let client = redis::Client::open(url).expect("raw: client");
        Raw {
            sender: client.get_connection().expect("raw: sender connection"),
            receiver: client.get_connection().expect("raw: receiver connection"),
        }
    }

    /// SET on the sender's connection, then GET on the receiver's.
    fn hand_off(&mut self, payload: &[u8]) -> Vec<u8> {
        redis::cmd("SET")
            .arg(RAW_KEY)
            .arg(payload)
            .exec(&mut self.sender)
            .expect("raw: SET");
        redis::cmd("GET")
            .arg(RAW_KEY)
            .query(&mut self.receiver)
            .expect("raw: GET")
    }
}

/// An administrative connection to the benchmark's redis-server, for the
/// usage passes.
struct Admin {
    conn: redis::Connection,
    pid: u32,
}

impl Admin {
    fn connect(url: &str) -> Admin {
        let mut conn = redis::Client::open(url)
            .and_then(|c| c.get_connection())
            .expect("admin connection");
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query(&mut conn)
            .expect("INFO server");
        let pid = info
            .lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|p| p.trim().parse().ok())
            .expect("redis-server's process_id");
        Admin { conn, pid }
    }

    fn reset_stats(&mut self) {
        redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .exec(&mut self.conn)
            .expect("CONFIG RESETSTAT");
    }

    /// Calls and microseconds spent in each command since the last reset,
    /// from `INFO commandstats`.
    fn command_stats(&mut self) -> BTreeMap<String, (u64, u64)> {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut self.conn)
            .expect("INFO commandstats");
        let mut out = BTreeMap::new();
        for line in info.lines() {
            let Some((name, fields)) = line
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            let field = |k: &str| {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(k)?.strip_prefix('='))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            if !name.starts_with("config") && name != "info" {
                out.insert(name.to_ascii_uppercase(), (field("calls"), field("usec")));
            }
        }
        out
    }
}

/// What the threads of one group have used so far.
#[derive(Clone, Copy, Default)]
struct ThreadUse {
    /// CPU time, in ns (`schedstat`).
    cpu_ns: u64,
    /// Context switches, voluntary or not (`status`).
    switches: u64,
}

/// What the threads of process `pid` have used, summed per group: the
/// thread name without a trailing `-<n>`, the main thread of this process
/// as "bench thread", and every thread of another process under `label`.
fn use_by_group(pid: u32, label: Option<&str>) -> BTreeMap<String, ThreadUse> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let read = |f: &str| std::fs::read_to_string(path.join(f)).unwrap_or_default();
        let cpu_ns: u64 = read("schedstat")
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let switches: u64 = read("status")
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        let name = match label {
            Some(l) => l.to_string(),
            None if task.file_name().to_str() == Some(pid.to_string().as_str()) => {
                "bench thread".to_string()
            }
            None => {
                let comm = read("comm").trim().to_string();
                match comm.rsplit_once('-') {
                    Some((base, n)) if n.bytes().all(|b| b.is_ascii_digit()) => base.to_string(),
                    _ => comm,
                }
            }
        };
        let u: &mut ThreadUse = out.entry(name).or_default();
        u.cpu_ns += cpu_ns;
        u.switches += switches;
    }
    out
}

/// Where the time of one operation went, from an untimed pass.
struct Usage {
    ops: u64,
    wall_ns: f64,
    /// CPU time (ns) and context switches per operation, per group of
    /// threads.
    threads: Vec<(String, f64, f64)>,
    /// Redis commands per operation, and the time Redis spent inside them
    /// per operation (ns).
    commands: Vec<(String, f64, f64)>,
}

impl Usage {
    fn print(&self, name: &str) {
        let cpu: Vec<String> = self
            .threads
            .iter()
            .map(|(g, ns, _)| format!("{g} {}", fmt_ns(*ns)))
            .collect();
        let total: f64 = self.threads.iter().map(|(_, ns, _)| ns).sum();
        let switches: Vec<String> = self
            .threads
            .iter()
            .filter(|(_, _, n)| *n >= 0.05)
            .map(|(g, _, n)| format!("{g} {n:.1}"))
            .collect();
        let all_switches: f64 = self.threads.iter().map(|(_, _, n)| n).sum();
        let count: f64 = self.commands.iter().map(|(_, n, _)| n).sum();
        let inside: f64 = self.commands.iter().map(|(_, _, ns)| ns).sum();
        let commands: Vec<String> = self
            .commands
            .iter()
            .map(|(c, n, ns)| format!("{c} {n:.1} ({})", fmt_ns(*ns)))
            .collect();
        println!(
            "  {name:<13} wall {} per op ({} ops); CPU per op {} = {}",
            fmt_ns(self.wall_ns),
            self.ops,
            fmt_ns(total),
            cpu.join(" + ")
        );
        println!(
            "  {:<13} context switches per op {all_switches:.1} = {}",
            "",
            switches.join(" + ")
        );
        println!(
            "  {:<13} Redis commands per op {count:.1}, {} inside them: {}",
            "",
            fmt_ns(inside),
            commands.join(", ")
        );
    }
}

/// Runs `f` for `duration` (at least 3 times, once in a smoke pass) and
/// reports the CPU time and context switches of this process's and
/// redis-server's threads, and the Redis commands, per run.
fn usage(admin: &mut Admin, duration: Duration, mut f: impl FnMut()) -> Usage {
    let snapshot = |admin: &Admin| {
        let mut all = use_by_group(std::process::id(), None);
        all.extend(use_by_group(admin.pid, Some("redis-server")));
        all
    };
    let min_ops = if duration.is_zero() { 1 } else { 3 };
    admin.reset_stats();
    let before = snapshot(admin);
    let start = Instant::now();
    let mut ops = 0u64;
    while ops < min_ops || start.elapsed() < duration {
        f();
        ops += 1;
    }
    let wall = start.elapsed();
    let after = snapshot(admin);
    let stats = admin.command_stats();
    let per_op = |v: u64| v as f64 / ops as f64;
    let threads = after
        .into_iter()
        .filter_map(|(group, a)| {
            let b = before.get(&group).copied().unwrap_or_default();
            let cpu = a.cpu_ns.saturating_sub(b.cpu_ns);
            let switches = a.switches.saturating_sub(b.switches);
            // Leave out groups that were idle (under 0.1% of the pass).
            (cpu as f64 > wall.as_nanos() as f64 * 1e-3)
                .then(|| (group, per_op(cpu), per_op(switches)))
        })
        .collect();
    Usage {
        ops,
        wall_ns: wall.as_nanos() as f64 / ops as f64,
        threads,
        commands: stats
            .into_iter()
            .map(|(c, (calls, us))| (c, per_op(calls), per_op(us * 1000)))
            .collect(),
    }
}

struct Row {
    size: usize,
    memcpy: f64,
    remote: f64,
    raw: f64,
}

impl Row {
    fn ratio(&self) -> f64 {
        self.remote / self.raw
    }
}

fn bench_size(
    profile: Profile,
    nodes: &Nodes,
    raw: &mut Raw,
    admin: &mut Admin,
    size: usize,
) -> Row {
    let s = settings(profile);
    let src: Vec<u8> = (0..size).map(|i| (i * 31 + 7) as u8).collect();
    let mut dst = vec![1u8; size];
    let mut resp = Vec::new();
    // Each path moves the payload correctly (untimed).
    assert_eq!(raw.hand_off(&src), src, "raw: GET returned other bytes");
    nodes.call(&src, &mut resp);
    assert!(resp.is_empty(), "discard answered with data");

    let [memcpy, remote, raw_s] = measure(
        &s,
        [
            op(|| black_box(&mut dst[..]).copy_from_slice(black_box(&src[..]))),
            op(|| nodes.call(black_box(&src[..]), &mut resp)),
            op(|| {
                black_box(raw.hand_off(black_box(&src[..])));
            }),
        ],
    );
    assert!(resp.is_empty(), "discard answered with data");
    nodes.check_hop();

    println!("{}:", size_label(size));
    memcpy.print("memcpy", size, "copies");
    remote.print("remote", size, "calls");
    raw_s.print("raw SET+GET", size, "hand-offs");
    let pass = usage_pass(profile);
    usage(admin, pass, || nodes.call(black_box(&src[..]), &mut resp)).print("remote");
    usage(admin, pass, || {
        black_box(raw.hand_off(black_box(&src[..])));
    })
    .print("raw SET+GET");

    Row {
        size,
        memcpy: memcpy.median(),
        remote: remote.median(),
        raw: raw_s.median(),
    }
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:>8} | {:>10} | {:>11} | {:>10} | {:>10} | {:>13}",
        "size",
        "memcpy",
        "raw SET+GET",
        "remote",
        "remote/raw",
        format!("target <={RATIO_TARGET}x")
    );
    println!(
        "{:->8}-|-{:->10}-|-{:->11}-|-{:->10}-|-{:->10}-|-{:->13}",
        "", "", "", "", "", ""
    );
    for r in rows {
        println!(
            "{:>8} | {:>10} | {:>11} | {:>10} | {:>9.2}x | {:>13}",
            size_label(r.size),
            fmt_ns(r.memcpy),
            fmt_ns(r.raw),
            fmt_ns(r.remote),
            r.ratio(),
            verdict(r.ratio() <= RATIO_TARGET)
        );
    }
    let missed: Vec<String> = rows
        .iter()
        .filter(|r| r.ratio() > RATIO_TARGET)
        .map(|r| size_label(r.size))
        .collect();
    println!();
    println!(
        "target (printed, never asserted): remote <= {RATIO_TARGET}x raw SET+GET at every size"
    );
    if missed.is_empty() {
        println!("  this run: met at every measured size");
    } else {
        println!("  this run: MISSED at {}", missed.join(", "));
    }
}

fn main() {
    let own_flags: Vec<&str> = placement::FLAGS
        .into_iter()
        .chain([REDIS_WITH_CALLER, REDIS_WITH_SERVER])
        .collect();
    let (Args { profile, sizes }, flags) = Args::parse("remote", &SIZES, &own_flags);
    common::print_banner(
        "CWASI remote-mode benchmark (issue \"Remote mode\")",
        profile,
    );
    let placement = Placement::from_flags(&flags, "--same-cpu");
    let flag = |f: &str| flags.iter().any(|g| g == f);
    // redis-server inherits the CPUs of this thread.
    let redis_place = match placement {
        Placement::Same(_) => {
            placement.enter_caller();
            "pinned with every other thread"
        }
        Placement::Split { .. } if flag(REDIS_WITH_CALLER) => {
            placement.enter_caller();
            "pinned with the calling thread"
        }
        Placement::Split { .. } if flag(REDIS_WITH_SERVER) => {
            placement.enter_server();
            "pinned with the serving threads"
        }
        _ => "not pinned",
    };
    let redis = RedisServer::start();
    println!("redis-server: {} ({redis_place})", redis.url());
    println!("placement: {}", placement.describe());
    let root = TempRoot::create();
    println!(
        "node directories: {}/{{{CALLER_NODE},{SERVER_NODE}}}",
        root.0.display()
    );

    let started = Instant::now();
    // Leaves this thread on the calling CPU.
    let nodes = Nodes::start(&redis.url(), &root, placement);
    let mut raw = Raw::connect(&redis.url());
    let mut admin = Admin::connect(&redis.url());
    let runtime_threads = |name: &str| name.starts_with("cwasi-");
    println!("threads: {}", affinity::threads(runtime_threads));
    println!();

    let rows: Vec<Row> = sizes
        .iter()
        .map(|&size| bench_size(profile, &nodes, &mut raw, &mut admin, size))
        .collect();
    print_table(&rows);
    drop(nodes);
    drop(root);
    common::print_footer(started);
}
