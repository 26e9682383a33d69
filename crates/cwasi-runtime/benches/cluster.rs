//! The broker path on one Redis against a Redis Cluster (issue "Redis
//! Cluster"), in one process and one run: a caller's `Broker::call` to an
//! echo served by a `StreamServer` (8 consumers), one call after another,
//! at 64 B, 64 KiB and 1 MiB, through
//!
//! - `standalone`: one redis-server;
//! - `cluster`: 3 masters and 3 replicas, the stream on one of them;
//! - `cluster+wait`: the same with `CWASI_REDIS_WAIT=1` (the request is on
//!   a replica before the caller waits for the answer).
//!
//! The three alternate, round after round, and the median of the rounds'
//! per-call times is printed with the ratios to standalone. It never
//! asserts on time. See docs/benchmarks.md.
//!
//! `cargo bench -p cwasi-runtime --bench cluster` runs it in full; append
//! `-- --quick` for a shorter run. Without `--bench` it does one smoke
//! pass.

// Only the argument parsing and the printing of the shared harness.
#[allow(dead_code)]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{fmt_ns, median, size_label, Args, Profile, MIB};
use cwasi_runtime::broker::{Broker, BrokerConfig, Handler, RequestMeta, StreamServer};
use cwasi_runtime::Deadline;
use test_support::{RedisCluster, RedisServer};

const SIZES: [usize; 3] = [64, 64 << 10, MIB];
const CONSUMERS: usize = 8;

/// Rounds per size, and calls per round.
fn plan(profile: Profile, size: usize) -> (usize, usize) {
    let calls = match (profile, size) {
        (Profile::Full, s) if s <= 64 => 2_000,
        (Profile::Full, s) if s <= 64 << 10 => 500,
        (Profile::Full, _) => 100,
        (Profile::Quick, s) if s <= 64 => 300,
        (Profile::Quick, _) => 50,
        (Profile::Smoke, _) => 3,
    };
    let rounds = match profile {
        Profile::Full => 7,
        Profile::Quick => 3,
        Profile::Smoke => 1,
    };
    (rounds, calls)
}

/// An echo served on `url` (a comma-separated list for a cluster).
fn serve(url: &str) -> StreamServer {
    let broker = Broker::new(BrokerConfig::new(url, "server")).expect("a server broker");
    let handler: Handler = Arc::new(|req: &[u8], _meta: RequestMeta| Ok(req.to_vec()));
    StreamServer::start(
        broker,
        "bench",
        "echo",
        "{}".into(),
        CONSUMERS,
        Duration::from_secs(10),
        handler,
    )
    .expect("start the stream server")
}

/// A caller of `url`, waiting for `replicas` replicas if not 0.
fn caller(url: &str, replicas: u32) -> Arc<Broker> {
    let mut config = BrokerConfig::new(url, "caller");
    config.wait_replicas = replicas;
    config.wait_timeout = Duration::from_secs(1);
    Broker::new(config).expect("a caller broker")
}

/// Per-call time of `calls` calls of `size` bytes, in nanoseconds.
fn round(b: &Broker, size: usize, calls: usize) -> f64 {
    let payload = vec![7u8; size];
    let start = Instant::now();
    for _ in 0..calls {
        let meta = RequestMeta::new(Deadline::after(Duration::from_secs(10)), 1);
        let r = b
            .call("bench", "echo", &payload, meta, 2 * size + 64)
            .expect("a benchmark call failed");
        assert_eq!(r.len(), size);
    }
    start.elapsed().as_nanos() as f64 / calls as f64
}

fn main() {
    let (Args { profile, sizes }, _) = Args::parse("cluster", &SIZES, &[]);
    common::print_banner(
        "CWASI broker path: one Redis against a Redis Cluster (issue \"Redis Cluster\")",
        profile,
    );
    let started = Instant::now();
    let single = RedisServer::start();
    let cluster = RedisCluster::start(3, 1);
    let _servers = (serve(&single.url()), serve(&cluster.url()));
    let kinds: [(&str, Arc<Broker>); 3] = [
        ("standalone", caller(&single.url(), 0)),
        ("cluster", caller(&cluster.url(), 0)),
        ("cluster+wait", caller(&cluster.url(), 1)),
    ];
    // Warm-up: connections, consumer groups, announcements.
    for (_, b) in &kinds {
        round(b, 64, 20);
    }
    let mut rows = Vec::new();
    for &size in &sizes {
        let (rounds, calls) = plan(profile, size);
        let mut times = vec![Vec::new(); kinds.len()];
        for _ in 0..rounds {
            for (i, (_, b)) in kinds.iter().enumerate() {
                times[i].push(round(b, size, calls));
            }
        }
        let medians: Vec<f64> = times.iter().map(|t| median(t)).collect();
        println!(
            "{}: {rounds} rounds x {calls} calls: {}",
            size_label(size),
            kinds
                .iter()
                .zip(&medians)
                .map(|((k, _), m)| format!("{k} {}", fmt_ns(*m)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        rows.push((size, medians));
    }
    println!();
    println!(
        "{:>8} | {:>12} | {:>12} | {:>13} | {:>16} | {:>16}",
        "size", "standalone", "cluster", "cluster+wait", "cluster/single", "+wait/single"
    );
    println!(
        "{:->8}-|-{:->12}-|-{:->12}-|-{:->13}-|-{:->16}-|-{:->16}",
        "", "", "", "", "", ""
    );
    for (size, m) in &rows {
        println!(
            "{:>8} | {:>12} | {:>12} | {:>13} | {:>15.2}x | {:>15.2}x",
            size_label(*size),
            fmt_ns(m[0]),
            fmt_ns(m[1]),
            fmt_ns(m[2]),
            m[1] / m[0],
            m[2] / m[0]
        );
    }
    common::print_footer(started);
}
